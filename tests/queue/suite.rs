//! The queue suite: one function per behaviour, run on every backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pandora_sync::queue::{
    BackoffPolicy, Job, JobContext, JobHandler, JobQueue, JobStatus, NewJob, SYNC_JOB, Worker,
    WorkerConfig,
};
use pandora_sync::scheduler::LEADER_LOCK_ID;
use pandora_sync::store::{Clock, ConnectionStatus, NewConnection, SyncStatus};
use pandora_sync::{ConnectorKind, Error, Result, Scheduler, SchedulerConfig, SyncMode};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::Harness;

fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.to_owned(),
        concurrency: 4,
        lease: Duration::from_secs(60),
        heartbeat_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(10),
        fetch_cooldown: Duration::from_millis(1),
        cancel_grace: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        default_snooze: Duration::from_secs(60),
        backoff: BackoffPolicy {
            base: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(600),
        },
    }
}

/// Waits (a hang guard, not a timing assertion) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn job(q: &Arc<dyn JobQueue>, ws: Uuid, id: Uuid) -> Job {
    q.get_job(ws, id).await.unwrap().unwrap()
}

/// Counts runs per job.
#[derive(Default)]
struct Counting(Mutex<HashMap<Uuid, u32>>);

#[async_trait]
impl JobHandler for Counting {
    async fn run(&self, job: Job, _ctx: JobContext) -> Result<serde_json::Value> {
        *self.0.lock().unwrap().entry(job.id).or_insert(0) += 1;
        tokio::task::yield_now().await;
        Ok(serde_json::json!({"ok": job.id}))
    }
}

/// Runs `f` for each job: a handler from a closure.
struct FnHandler<F>(F);

#[async_trait]
impl<F> JobHandler for FnHandler<F>
where
    F: Fn(Job, JobContext) -> futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
        + Send
        + Sync
        + 'static,
{
    async fn run(&self, job: Job, ctx: JobContext) -> Result<serde_json::Value> {
        (self.0)(job, ctx).await
    }
}

fn spawn_worker(
    queue: Arc<dyn JobQueue>,
    job_type: &str,
    handler: Arc<dyn JobHandler>,
    cfg: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<Result<()>>) {
    let stop = CancellationToken::new();
    let worker = Worker::new(queue).register(job_type, handler).config(cfg);
    let task = tokio::spawn(worker.run(stop.clone()));
    (stop, task)
}

pub async fn four_workers_run_every_job_exactly_once(h: Harness) {
    let workspaces: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let ws = workspaces[i % workspaces.len()];
        let j = h
            .queue
            .enqueue(
                NewJob::new(ws, "noop", serde_json::json!({"i": i}))
                    .priority(i32::try_from(i % 3).unwrap()),
            )
            .await
            .unwrap();
        ids.push((ws, j.id));
    }
    let counting = Arc::new(Counting::default());
    let mut workers = Vec::new();
    for (n, queue) in [&h.queue, &h.other_queue, &h.queue, &h.other_queue]
        .into_iter()
        .enumerate()
    {
        workers.push(spawn_worker(
            queue.clone(),
            "noop",
            counting.clone(),
            config(&format!("w{n}")),
        ));
    }
    let c = counting.clone();
    eventually("1000 jobs ran", || {
        let c = c.clone();
        async move { c.0.lock().unwrap().len() == 1000 }
    })
    .await;
    for (stop, task) in workers {
        stop.cancel();
        task.await.unwrap().unwrap();
    }
    let runs = counting.0.lock().unwrap().clone();
    assert_eq!(runs.len(), 1000);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice");
    for (ws, id) in ids {
        let j = job(&h.queue, ws, id).await;
        assert_eq!(j.status, JobStatus::Completed);
        assert_eq!(j.attempts, 1);
        assert_eq!(j.result, Some(serde_json::json!({"ok": id})));
    }
}

pub async fn unique_key_allows_one_active_job(h: Harness) {
    let ws = Uuid::new_v4();
    let first = h
        .queue
        .enqueue(NewJob::new(ws, SYNC_JOB, serde_json::json!({})).unique_key("sync:hubspot"))
        .await
        .unwrap();
    let err = h
        .other_queue
        .enqueue(NewJob::new(ws, SYNC_JOB, serde_json::json!({})).unique_key("sync:hubspot"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { running_id: Some(id), .. } if id == first.id),
        "{err}"
    );
    // Another connector, or another workspace, is fine.
    h.queue
        .enqueue(NewJob::new(ws, SYNC_JOB, serde_json::json!({})).unique_key("sync:gong"))
        .await
        .unwrap();
    h.queue
        .enqueue(
            NewJob::new(Uuid::new_v4(), SYNC_JOB, serde_json::json!({})).unique_key("sync:hubspot"),
        )
        .await
        .unwrap();
    // Once the first finishes, the key is free again.
    let claimed = h
        .queue
        .claim("w", &["sync".into()], 10, Duration::from_secs(60))
        .await
        .unwrap();
    let mine = claimed.iter().find(|j| j.id == first.id).unwrap();
    assert!(
        h.queue
            .complete(mine.id, "w", serde_json::json!(null))
            .await
            .unwrap()
    );
    h.queue
        .enqueue(NewJob::new(ws, SYNC_JOB, serde_json::json!({})).unique_key("sync:hubspot"))
        .await
        .unwrap();
}

pub async fn aborted_worker_job_is_rescued_after_its_lease(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "slow", serde_json::json!({})))
        .await
        .unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let hang: Arc<dyn JobHandler> = Arc::new(FnHandler(move |_job: Job, _ctx: JobContext| {
        let s = s.clone();
        Box::pin(async move {
            s.notify_one();
            std::future::pending::<()>().await;
            Ok(serde_json::Value::Null)
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (_stop, task) = spawn_worker(h.queue.clone(), "slow", hang, config("doomed"));
    started.notified().await;
    task.abort(); // the process dies: no cleanup, no more heartbeats
    let _ = task.await;
    assert_eq!(job(&h.queue, ws, j.id).await.status, JobStatus::Running);
    assert_eq!(
        h.queue.rescue_expired().await.unwrap(),
        0,
        "lease still valid"
    );
    h.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(h.other_queue.rescue_expired().await.unwrap(), 1);
    let rescued = job(&h.queue, ws, j.id).await;
    assert_eq!(rescued.status, JobStatus::Pending);
    assert_eq!(rescued.attempts, 1);
    assert!(rescued.last_error.unwrap().contains("lease expired"));

    let counting = Arc::new(Counting::default());
    let (stop, task) = spawn_worker(
        h.other_queue.clone(),
        "slow",
        counting.clone(),
        config("rescuer"),
    );
    let q = h.queue.clone();
    eventually("the rescued job completes", || {
        let q = q.clone();
        async move { q.get_job(ws, j.id).await.unwrap().unwrap().status == JobStatus::Completed }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let done = job(&h.queue, ws, j.id).await;
    assert_eq!(done.attempts, 2, "the attempt count shows the rescue");
    // The dead worker cannot overwrite the outcome.
    assert!(
        !h.queue
            .complete(j.id, "doomed", serde_json::json!("late"))
            .await
            .unwrap()
    );
}

pub async fn rescue_fails_jobs_out_of_attempts(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "x", serde_json::json!({})).max_attempts(1))
        .await
        .unwrap();
    let claimed = h
        .queue
        .claim("dead", &["x".into()], 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    h.clock.advance(chrono::Duration::seconds(6));
    assert_eq!(h.queue.rescue_expired().await.unwrap(), 1);
    let failed = job(&h.queue, ws, j.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("lease expired"));
}

pub async fn snooze_keeps_the_attempt_count(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "rl", serde_json::json!({})))
        .await
        .unwrap();
    let handler: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        Box::pin(async {
            Err(Error::RateLimited {
                provider: "gong".into(),
                retry_after: Some(Duration::from_secs(30)),
            })
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let claimed_at = h.clock.now();
    let (stop, task) = spawn_worker(h.queue.clone(), "rl", handler, config("w"));
    let q = h.queue.clone();
    eventually("the job is snoozed", || {
        let q = q.clone();
        async move {
            let j = q.get_job(ws, j.id).await.unwrap().unwrap();
            j.status == JobStatus::Pending && j.last_error.is_some()
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let snoozed = job(&h.queue, ws, j.id).await;
    assert_eq!(snoozed.attempts, 0, "a snooze is not an attempt");
    assert_eq!(
        snoozed.run_after,
        claimed_at + chrono::Duration::seconds(30)
    );
    assert!(snoozed.last_error.unwrap().contains("rate limit"));
}

pub async fn failures_back_off_then_fail_for_good(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "flaky", serde_json::json!({})).max_attempts(3))
        .await
        .unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let handler: Arc<dyn JobHandler> = Arc::new(FnHandler(move |_job: Job, _ctx: JobContext| {
        r.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(Error::api("hubspot", 503, "unavailable")) })
            as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (stop, task) = spawn_worker(h.queue.clone(), "flaky", handler, config("w"));
    let policy = config("w").backoff;
    for attempt in 1..=2u32 {
        let q = h.queue.clone();
        eventually("the attempt failed", || {
            let q = q.clone();
            async move {
                let j = q.get_job(ws, j.id).await.unwrap().unwrap();
                j.status == JobStatus::Pending && j.attempts == attempt
            }
        })
        .await;
        let waiting = job(&h.queue, ws, j.id).await;
        let now = h.clock.now();
        let delay = (waiting.run_after - now).to_std().unwrap();
        let ceiling = policy.ceiling(attempt);
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "attempt {attempt}: {delay:?} vs {ceiling:?}"
        );
        assert!(waiting.last_error.as_deref().unwrap().contains("503"));
        // Let the retry come due.
        h.clock
            .advance(chrono::Duration::from_std(ceiling).unwrap());
    }
    let q = h.queue.clone();
    eventually("the job failed for good", || {
        let q = q.clone();
        async move { q.get_job(ws, j.id).await.unwrap().unwrap().status == JobStatus::Failed }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let failed = job(&h.queue, ws, j.id).await;
    assert_eq!(failed.attempts, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(failed.error.unwrap().contains("503"));
    assert!(failed.completed_at.is_some());
}

pub async fn cancel_pending_and_running_jobs(h: Harness) {
    let ws = Uuid::new_v4();
    let pending = h
        .queue
        .enqueue(
            NewJob::new(ws, "loop", serde_json::json!({}))
                .run_after(h.clock.now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        h.queue.cancel(ws, pending.id).await.unwrap(),
        Some(JobStatus::Cancelled)
    );
    assert_eq!(
        h.queue.cancel(Uuid::new_v4(), pending.id).await.unwrap(),
        None,
        "other workspace"
    );

    let running = h
        .queue
        .enqueue(NewJob::new(ws, "loop", serde_json::json!({})))
        .await
        .unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let handler: Arc<dyn JobHandler> = Arc::new(FnHandler(move |_job: Job, ctx: JobContext| {
        let s = s.clone();
        Box::pin(async move {
            s.notify_one();
            ctx.cancel_token().cancelled().await;
            Err(Error::Cancelled)
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (stop, task) = spawn_worker(h.queue.clone(), "loop", handler, config("w"));
    started.notified().await;
    assert_eq!(
        h.other_queue.cancel(ws, running.id).await.unwrap(),
        Some(JobStatus::Running)
    );
    let q = h.queue.clone();
    eventually("the running job stopped as cancelled", || {
        let q = q.clone();
        async move { q.get_job(ws, running.id).await.unwrap().unwrap().status == JobStatus::Cancelled }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(job(&h.queue, ws, running.id).await.attempts, 1);
}

pub async fn timeouts_and_panics_fail_the_attempt(h: Harness) {
    let ws = Uuid::new_v4();
    let slow = h
        .queue
        .enqueue(
            NewJob::new(ws, "slow", serde_json::json!({}))
                .timeout(Duration::from_millis(50))
                .max_attempts(1),
        )
        .await
        .unwrap();
    let boom = h
        .queue
        .enqueue(NewJob::new(Uuid::new_v4(), "boom", serde_json::json!({})).max_attempts(1))
        .await
        .unwrap();
    let stubborn: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        // Ignores cancellation: the worker abandons it after the grace period.
        Box::pin(std::future::pending())
            as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    #[allow(clippy::panic)]
    let panicking: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        Box::pin(async {
            let nonsense: Option<u8> = None;
            if nonsense.is_none() {
                panic!("provider returned nonsense");
            }
            Ok(serde_json::Value::Null)
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let stop = CancellationToken::new();
    let worker = Worker::new(h.queue.clone())
        .register("slow", stubborn)
        .register("boom", panicking)
        .config(config("w"));
    let task = tokio::spawn(worker.run(stop.clone()));
    let q = h.queue.clone();
    let boom_ws = boom.workspace_id;
    eventually("both attempts failed", || {
        let q = q.clone();
        async move {
            q.get_job(ws, slow.id).await.unwrap().unwrap().status == JobStatus::Failed
                && q.get_job(boom_ws, boom.id).await.unwrap().unwrap().status == JobStatus::Failed
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(
        job(&h.queue, ws, slow.id)
            .await
            .error
            .unwrap()
            .contains("timed out")
    );
    let b = job(&h.queue, boom_ws, boom.id).await.error.unwrap();
    assert!(
        b.contains("panicked") && b.contains("provider returned nonsense"),
        "{b}"
    );
}

pub async fn progress_reaches_the_job(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "p", serde_json::json!({})))
        .await
        .unwrap();
    let handler: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, ctx: JobContext| {
        Box::pin(async move {
            ctx.progress().report(40, Some(100), "deals");
            tokio::time::sleep(Duration::from_millis(100)).await;
            ctx.progress().report(100, Some(100), "done");
            Ok(serde_json::json!({}))
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (stop, task) = spawn_worker(h.queue.clone(), "p", handler, config("w"));
    let q = h.queue.clone();
    eventually("the job completed", || {
        let q = q.clone();
        async move { q.get_job(ws, j.id).await.unwrap().unwrap().status == JobStatus::Completed }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let p = job(&h.queue, ws, j.id).await.progress.unwrap();
    assert_eq!(
        (p.current, p.total, p.message.as_str()),
        (100, Some(100), "done")
    );
}

pub async fn jobs_are_scoped_to_their_workspace_and_paginated(h: Harness) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for i in 0..25 {
        h.queue
            .enqueue(NewJob::new(a, "x", serde_json::json!({"i": i})))
            .await
            .unwrap();
        h.clock.advance(chrono::Duration::seconds(1));
    }
    let theirs = h
        .queue
        .enqueue(NewJob::new(b, "x", serde_json::json!({})))
        .await
        .unwrap();
    assert!(
        h.queue.get_job(a, theirs.id).await.unwrap().is_none(),
        "no cross-workspace read"
    );
    let page1 = h.queue.list_jobs(a, 10, 0).await.unwrap();
    let page3 = h.queue.list_jobs(a, 10, 20).await.unwrap();
    assert_eq!(page1.len(), 10);
    assert_eq!(page3.len(), 5);
    assert_eq!(page1[0].payload["i"], 24, "newest first");
    assert_eq!(page3[4].payload["i"], 0);
    assert!(page1.iter().chain(&page3).all(|j| j.workspace_id == a));
    assert_eq!(
        h.queue.list_jobs(a, 1000, 0).await.unwrap().len(),
        25,
        "capped at 100 a page"
    );

    // Keyset pages: what lies after the cursor, unshifted by jobs enqueued meanwhile.
    let first = h.queue.list_jobs_before(a, 10, None).await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].payload["i"], 24);
    h.queue
        .enqueue(NewJob::new(a, "x", serde_json::json!({"i": 25})))
        .await
        .unwrap();
    let last = first.last().unwrap();
    let second = h
        .queue
        .list_jobs_before(a, 10, Some((last.created_at, last.id)))
        .await
        .unwrap();
    let indexes: Vec<i64> = second
        .iter()
        .map(|j| j.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, (5..=14).rev().collect::<Vec<_>>());
    assert!(second.iter().all(|j| j.workspace_id == a));
    let end = second.last().unwrap();
    let rest = h
        .queue
        .list_jobs_before(a, 100, Some((end.created_at, end.id)))
        .await
        .unwrap();
    assert_eq!(rest.len(), 5);
    assert_eq!(rest[4].payload["i"], 0);
}

pub async fn prune_removes_old_finished_jobs(h: Harness) {
    let ws = Uuid::new_v4();
    let old = h
        .queue
        .enqueue(NewJob::new(ws, "x", serde_json::json!({})))
        .await
        .unwrap();
    let claimed = h
        .queue
        .claim("w", &["x".into()], 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed[0].id, old.id);
    h.queue
        .complete(old.id, "w", serde_json::json!(null))
        .await
        .unwrap();
    h.clock.advance(chrono::Duration::days(8));
    let fresh = h
        .queue
        .enqueue(NewJob::new(ws, "x", serde_json::json!({})))
        .await
        .unwrap();
    let cutoff = h.clock.now() - chrono::Duration::days(7);
    assert_eq!(h.queue.prune_finished(cutoff).await.unwrap(), 1);
    assert!(h.queue.get_job(ws, old.id).await.unwrap().is_none());
    assert!(
        h.queue.get_job(ws, fresh.id).await.unwrap().is_some(),
        "pending jobs are kept"
    );
}

async fn workspace_with_connections(h: &Harness) -> Uuid {
    let ws = Uuid::new_v4();
    h.store
        .create_connection(NewConnection::new(ws, ConnectorKind::Hubspot, "api_key"))
        .await
        .unwrap();
    ws
}

pub async fn two_schedulers_enqueue_each_tick_once(h: Harness) {
    let mut wss = Vec::new();
    for _ in 0..5 {
        wss.push(workspace_with_connections(&h).await);
    }
    let a = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    let b = Scheduler::new(h.other_store.clone(), SchedulerConfig::default()).unwrap();
    // Even two schedulers that both believe they lead enqueue each workspace once.
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.enqueued.len() + rb.enqueued.len(), 5);
    for ws in &wss {
        let jobs = h.queue.list_jobs(*ws, 10, 0).await.unwrap();
        assert_eq!(jobs.len(), 1, "one job for {ws}");
        assert_eq!(jobs[0].priority, 0);
        let syncs = h.store.active_syncs(*ws).await.unwrap();
        assert_eq!(syncs.len(), 1);
        assert_eq!(syncs[0].status, SyncStatus::Pending);
        assert_eq!(jobs[0].payload["sync_id"], serde_json::json!(syncs[0].id));
    }
    // The next tick skips workspaces whose sync is still pending.
    let again = a.tick().await.unwrap();
    assert!(again.enqueued.is_empty());
    assert_eq!(again.skipped.len(), 5);
}

pub async fn manual_trigger_conflicts_and_stale_syncs(h: Harness) {
    let ws = workspace_with_connections(&h).await;
    let s = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    let first = s
        .trigger_sync(ws, None, Some(SyncMode::Initial))
        .await
        .unwrap();
    let j = job(&h.queue, ws, first.job_id).await;
    assert_eq!(j.priority, 1);
    let dup = s
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap_err();
    assert!(
        matches!(dup, Error::Conflict { running_id: Some(id), .. } if id == first.sync_id),
        "{dup}"
    );

    // The run starts, then its process dies; two hours later it is stale.
    h.store.start_sync(ws, first.sync_id, None).await.unwrap();
    let claimed = h
        .queue
        .claim("dead", &[SYNC_JOB.into()], 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    h.clock.advance(chrono::Duration::hours(2));
    let second = s.trigger_sync(ws, None, None).await.unwrap();
    assert_ne!(second.sync_id, first.sync_id);
    let stale = h.store.get_sync(ws, first.sync_id).await.unwrap().unwrap();
    assert_eq!(stale.status, SyncStatus::Failed);
    assert!(stale.error_message.unwrap().contains("stale"));
}

pub async fn only_one_scheduler_leads(h: Harness) {
    let leader = h.store.try_lock_workspace(LEADER_LOCK_ID).await.unwrap();
    assert!(leader.is_some());
    assert!(
        h.other_store
            .try_lock_workspace(LEADER_LOCK_ID)
            .await
            .unwrap()
            .is_none()
    );
    leader.unwrap().release().await.unwrap();
    assert!(
        h.other_store
            .try_lock_workspace(LEADER_LOCK_ID)
            .await
            .unwrap()
            .is_some()
    );
}

/// No `sync_log` row of the workspace is pending or running.
async fn no_active_sync(h: &Harness, ws: Uuid) {
    let active = h.store.active_syncs(ws).await.unwrap();
    assert!(active.is_empty(), "left active: {active:?}");
}

pub async fn trigger_validates_the_connector_and_never_wedges(h: Harness) {
    let ws = workspace_with_connections(&h).await;
    let s = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    // A connector the workspace does not have: a clear error, nothing created.
    let missing = s
        .trigger_sync(ws, Some(ConnectorKind::Gong), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, Error::Config(m) if m.contains("no gong connection")),
        "{missing}"
    );
    // A disabled one: the same, with or without naming it.
    h.store
        .set_connection_status(ws, ConnectorKind::Hubspot, ConnectionStatus::Disabled, None)
        .await
        .unwrap();
    let disabled = s
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&disabled, Error::Config(m) if m.contains("disabled")),
        "{disabled}"
    );
    let none = s.trigger_sync(ws, None, None).await.unwrap_err();
    assert!(matches!(none, Error::Config(_)), "{none}");
    assert!(h.store.sync_history(ws, None, 10).await.unwrap().is_empty());
    assert!(h.queue.list_jobs(ws, 10, 0).await.unwrap().is_empty());
    // Enabled again: the next trigger is accepted (nothing was left pending).
    h.store
        .set_connection_status(ws, ConnectorKind::Hubspot, ConnectionStatus::Pending, None)
        .await
        .unwrap();
    s.trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap();
}

pub async fn every_end_of_a_sync_job_ends_its_sync_run(h: Harness) {
    let ws = workspace_with_connections(&h).await;
    let s = Scheduler::new(
        h.store.clone(),
        SchedulerConfig {
            max_attempts: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let run = |id: Uuid| {
        let store = h.store.clone();
        async move { store.get_sync(ws, id).await.unwrap().unwrap() }
    };

    // 1. Cancelled while pending.
    let t = s.trigger_sync(ws, None, None).await.unwrap();
    assert_eq!(
        h.queue.cancel(ws, t.job_id).await.unwrap(),
        Some(JobStatus::Cancelled)
    );
    let r = run(t.sync_id).await;
    assert_eq!(r.status, SyncStatus::Failed);
    assert!(r.error_message.unwrap().contains("cancelled"));
    no_active_sync(&h, ws).await;

    // 2. Out of attempts, failing before the run started (the row was still pending).
    let t = s.trigger_sync(ws, None, None).await.unwrap();
    let failing: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        Box::pin(async {
            Err(Error::Transport {
                provider: "hubspot".into(),
                message: "connection refused".into(),
                source: None,
            })
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (stop, task) = spawn_worker(h.queue.clone(), SYNC_JOB, failing, config("w"));
    let q = h.queue.clone();
    eventually("the job fails for good", || {
        let q = q.clone();
        async move { q.get_job(ws, t.job_id).await.unwrap().unwrap().status == JobStatus::Failed }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let r = run(t.sync_id).await;
    assert_eq!(r.status, SyncStatus::Failed);
    assert!(r.error_message.unwrap().contains("connection refused"));
    no_active_sync(&h, ws).await;

    // 3. Cancelled while running: the worker marks it cancelled.
    let t = s.trigger_sync(ws, None, None).await.unwrap();
    let claimed = h
        .queue
        .claim("w2", &[SYNC_JOB.into()], 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    h.store.start_sync(ws, t.sync_id, None).await.unwrap();
    assert_eq!(
        h.queue.cancel(ws, t.job_id).await.unwrap(),
        Some(JobStatus::Running)
    );
    assert!(h.queue.mark_cancelled(t.job_id, "w2").await.unwrap());
    assert_eq!(run(t.sync_id).await.status, SyncStatus::Failed);
    no_active_sync(&h, ws).await;

    // 4. Its worker died mid-run and it is out of attempts: rescued and given up.
    let t = s.trigger_sync(ws, None, None).await.unwrap();
    h.queue
        .claim("dead", &[SYNC_JOB.into()], 1, Duration::from_secs(5))
        .await
        .unwrap();
    h.store.start_sync(ws, t.sync_id, None).await.unwrap();
    h.clock.advance(chrono::Duration::seconds(6));
    assert_eq!(h.queue.rescue_expired().await.unwrap(), 1);
    assert_eq!(job(&h.queue, ws, t.job_id).await.status, JobStatus::Failed);
    let r = run(t.sync_id).await;
    assert_eq!(r.status, SyncStatus::Failed);
    assert!(r.error_message.unwrap().contains("interrupted"));
    no_active_sync(&h, ws).await;

    // 5. A failed job with a final error (the run never started).
    let t = s.trigger_sync(ws, None, None).await.unwrap();
    h.queue
        .claim("w3", &[SYNC_JOB.into()], 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        h.queue
            .fail(t.job_id, "w3", "configuration error: bad config", None)
            .await
            .unwrap(),
        Some(JobStatus::Failed)
    );
    assert_eq!(run(t.sync_id).await.status, SyncStatus::Failed);
    no_active_sync(&h, ws).await;

    // 6. Timed out on its last attempt (the handler hangs, the run never started).
    let quick = Scheduler::new(
        h.store.clone(),
        SchedulerConfig {
            max_attempts: 1,
            job_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap();
    let t = quick.trigger_sync(ws, None, None).await.unwrap();
    let hang: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        Box::pin(async {
            std::future::pending::<()>().await;
            Ok(serde_json::Value::Null)
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let (stop, task) = spawn_worker(h.queue.clone(), SYNC_JOB, hang, config("w4"));
    let q = h.queue.clone();
    eventually("the job times out for good", || {
        let q = q.clone();
        async move { q.get_job(ws, t.job_id).await.unwrap().unwrap().status == JobStatus::Failed }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let r = run(t.sync_id).await;
    assert_eq!(r.status, SyncStatus::Failed);
    assert!(r.error_message.unwrap().contains("timed out"));
    no_active_sync(&h, ws).await;

    // After all of these, the next trigger is accepted.
    s.trigger_sync(ws, None, None).await.unwrap();
}

pub async fn a_stale_pending_run_does_not_block_the_workspace(h: Harness) {
    let ws = workspace_with_connections(&h).await;
    let s = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    // A run whose job never ran it (no worker for hours).
    let first = s.trigger_sync(ws, None, None).await.unwrap();
    h.clock.advance(chrono::Duration::minutes(30));
    assert!(matches!(
        s.trigger_sync(ws, None, None).await,
        Err(Error::Conflict { .. })
    ));
    h.clock.advance(chrono::Duration::minutes(31));
    let second = s.trigger_sync(ws, None, None).await.unwrap();
    assert_ne!(second.sync_id, first.sync_id);
    let stale = h.store.get_sync(ws, first.sync_id).await.unwrap().unwrap();
    assert_eq!(stale.status, SyncStatus::Failed);
    assert!(stale.error_message.unwrap().contains("stale"));
    assert_eq!(
        job(&h.queue, ws, first.job_id).await.status,
        JobStatus::Cancelled
    );
    // The maintenance pass fails stale pending runs too.
    h.clock.advance(chrono::Duration::minutes(61));
    s.maintain().await.unwrap();
    no_active_sync(&h, ws).await;
}

pub async fn an_enormous_retry_after_is_capped(h: Harness) {
    let ws = Uuid::new_v4();
    let j = h
        .queue
        .enqueue(NewJob::new(ws, "rl", serde_json::json!({})))
        .await
        .unwrap();
    let handler: Arc<dyn JobHandler> = Arc::new(FnHandler(|_job: Job, _ctx: JobContext| {
        Box::pin(async {
            // What a `Retry-After: 9223372036854775` header parses to.
            Err(Error::RateLimited {
                provider: "hubspot".into(),
                retry_after: Some(Duration::from_millis(i64::MAX as u64)),
            })
        }) as futures_util::future::BoxFuture<'static, Result<serde_json::Value>>
    }));
    let claimed_at = h.clock.now();
    let (stop, task) = spawn_worker(h.queue.clone(), "rl", handler, config("w"));
    let q = h.queue.clone();
    eventually("the job is snoozed", || {
        let q = q.clone();
        async move {
            let j = q.get_job(ws, j.id).await.unwrap().unwrap();
            j.status == JobStatus::Pending && j.last_error.is_some()
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let snoozed = job(&h.queue, ws, j.id).await;
    assert_eq!(snoozed.attempts, 0);
    assert_eq!(snoozed.run_after, claimed_at + chrono::Duration::days(1));
}
