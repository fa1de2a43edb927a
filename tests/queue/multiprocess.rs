//! Three workers as three "processes" (each its own tokio runtime on its own thread, with its
//! own connection pool) sharing one Postgres queue; one dies hard mid-way.
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pandora_sync::queue::{
    BackoffPolicy, Job, JobContext, JobHandler, JobQueue, JobStatus, NewJob, Worker, WorkerConfig,
};
use pandora_sync::{Result, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::pg;

const JOBS: usize = 2000;

/// Counts executions per job. The doomed worker's handler, once `freeze` is set, hangs
/// before counting (the process is about to die with these jobs in hand).
struct Probe {
    runs: Arc<Mutex<HashMap<Uuid, u32>>>,
    freeze: Option<Arc<Frozen>>,
}

#[derive(Default)]
struct Frozen {
    on: AtomicBool,
    ids: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl JobHandler for Probe {
    async fn run(&self, job: Job, _ctx: JobContext) -> Result<serde_json::Value> {
        if let Some(f) = &self.freeze
            && f.on.load(Ordering::SeqCst)
        {
            f.ids.lock().unwrap().push(job.id);
            std::future::pending::<()>().await;
        }
        *self.runs.lock().unwrap().entry(job.id).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(serde_json::Value::Null)
    }
}

fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.to_owned(),
        concurrency: 8,
        lease: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        fetch_cooldown: Duration::from_millis(1),
        cancel_grace: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        default_snooze: Duration::from_secs(60),
        backoff: BackoffPolicy::default(),
    }
}

/// One worker "process": its own runtime and pool, until `stop` (graceful) or `kill` (the
/// runtime is dropped with the worker's jobs in hand: no release, no completion).
fn spawn_process(
    schema: String,
    id: &'static str,
    handler: Arc<dyn JobHandler>,
    stop: CancellationToken,
    kill: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = pg::schema_store(&schema, 4).await;
            let queue: Arc<dyn JobQueue> = Arc::new(store);
            let worker = Worker::new(queue)
                .register("tiny", handler)
                .config(config(id));
            tokio::select! {
                r = worker.run(stop) => r.unwrap(),
                () = kill.cancelled() => {}
            }
        });
        rt.shutdown_background();
    })
}

#[test]
fn three_worker_processes_share_one_postgres_and_rescue_a_dead_one() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = main.block_on(pg::new_schema());
    let store = main.block_on(async {
        let s = pg::schema_store(&schema, 4).await;
        s.migrate().await.unwrap();
        s
    });
    let queue: Arc<dyn JobQueue> = Arc::new(store.clone());
    let ids: Vec<(Uuid, Uuid)> = main.block_on(async {
        let mut ids = Vec::with_capacity(JOBS);
        for i in 0..JOBS {
            let ws = Uuid::new_v4();
            let j = queue
                .enqueue(NewJob::new(ws, "tiny", serde_json::json!({ "i": i })))
                .await
                .unwrap();
            ids.push((ws, j.id));
        }
        ids
    });

    let runs: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let frozen = Arc::new(Frozen::default());
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let never = CancellationToken::new();
    let doomed = spawn_process(
        schema.clone(),
        "doomed",
        Arc::new(Probe {
            runs: runs.clone(),
            freeze: Some(frozen.clone()),
        }),
        stop.clone(),
        kill.clone(),
    );
    let survivors: Vec<_> = ["alive-1", "alive-2"]
        .into_iter()
        .map(|id| {
            spawn_process(
                schema.clone(),
                id,
                Arc::new(Probe {
                    runs: runs.clone(),
                    freeze: None,
                }),
                stop.clone(),
                never.clone(),
            )
        })
        .collect();

    main.block_on(async {
        // Mid-way, the doomed worker's handlers hang; once every job it holds is hung (none
        // half-completed), the process dies.
        let mut admin = pg::admin().await;
        let held_sql = format!(
            "SELECT COUNT(*) FROM {schema}.jobs WHERE status = 'running' AND locked_by = 'doomed'"
        );
        for _ in 0..2000 {
            if runs.lock().unwrap().len() >= JOBS / 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        frozen.on.store(true, Ordering::SeqCst);
        for _ in 0..2000 {
            let held: i64 = sqlx::query_scalar(&held_sql)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            let hung = frozen.ids.lock().unwrap().len();
            if hung > 0 && usize::try_from(held).unwrap() == hung {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill.cancel();
        let hung = frozen.ids.lock().unwrap().clone();
        assert!(!hung.is_empty(), "the doomed worker died holding jobs");

        // The leader's maintenance: rescue expired leases until every job ran.
        let mut rescued = 0;
        for _ in 0..1500 {
            rescued += queue.rescue_expired().await.unwrap();
            if runs.lock().unwrap().len() == JOBS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            rescued >= u64::try_from(hung.len()).unwrap(),
            "rescued {rescued} of {} held jobs",
            hung.len()
        );
    });
    stop.cancel();
    doomed.join().unwrap();
    for s in survivors {
        s.join().unwrap();
    }

    main.block_on(async {
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), JOBS, "every job ran");
        assert!(runs.values().all(|n| *n == 1), "a job ran twice");
        let hung: Vec<Uuid> = frozen.ids.lock().unwrap().clone();
        for (ws, id) in &ids {
            let j = queue.get_job(*ws, *id).await.unwrap().unwrap();
            assert_eq!(j.status, JobStatus::Completed, "{id}");
            if hung.contains(id) {
                assert_eq!(j.attempts, 2, "a rescued job shows its second attempt");
                assert_ne!(j.locked_by.as_deref(), Some("doomed"));
            }
        }
        store.close().await;
        pg::drop_schema(&schema).await;
    });
}
