//! Orchestrator behaviour, run on every backend.

use std::sync::Arc;
use std::time::Duration;

use pandora_sync::model::RecordKind;
use pandora_sync::queue::{
    BackoffPolicy, Job, JobHandler, JobStatus, SYNC_JOB, Worker, WorkerConfig,
};
use pandora_sync::store::{Clock, ConnectionStatus, NewConnection, RecordQuery, SyncStatus};
use pandora_sync::{
    Checkpoint, ConnectorKind, ConnectorRegistry, Error, Orchestrator, OrchestratorConfig, Record,
    Scheduler, SchedulerConfig, SyncJobHandler, SyncMode, SyncOptions, SyncStore,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fake::{DealsFake, Fake, FlushProbe, Provider};
use crate::harness::Harness;

async fn connect(store: &Arc<dyn SyncStore>, ws: Uuid, kind: ConnectorKind) {
    store
        .create_connection(NewConnection::new(ws, kind, "api_key"))
        .await
        .unwrap();
}

fn orchestrator(store: &Arc<dyn SyncStore>, fakes: &[Fake]) -> Orchestrator {
    let mut registry = ConnectorRegistry::new();
    for f in fakes {
        let f = f.clone();
        registry = registry.register(f.kind, move |_row, _creds| Ok(Box::new(f.clone())));
    }
    Orchestrator::new(store.clone(), registry).with_config(OrchestratorConfig {
        batch_size: 7, // smaller than the fake's pages: exercises chunking
        ..Default::default()
    })
}

async fn contacts(store: &Arc<dyn SyncStore>, ws: Uuid) -> Vec<Record> {
    store
        .list_records(
            ws,
            RecordKind::Contact,
            &RecordQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

async fn checkpoint(store: &Arc<dyn SyncStore>, ws: Uuid, kind: ConnectorKind) -> Checkpoint {
    store
        .get_connection(ws, kind)
        .await
        .unwrap()
        .unwrap()
        .checkpoint()
        .unwrap()
}

pub async fn initial_then_incremental_and_forced_mode(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let fake = Fake::new(ConnectorKind::Hubspot, Provider::seeded(25), 10);
    let o = orchestrator(&h.store, std::slice::from_ref(&fake));

    let first = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &first.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Initial, SyncStatus::Completed)
    );
    assert_eq!(c.counts.inserted, 25);
    assert_eq!(c.records_by_table.get("contacts"), Some(&25));
    let second = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(second.connectors[0].mode, SyncMode::Incremental);
    let forced = o
        .sync_workspace(
            ws,
            SyncOptions {
                mode: Some(SyncMode::Initial),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(forced.connectors[0].mode, SyncMode::Initial);
    assert_eq!(
        forced.connectors[0].counts.unchanged, 25,
        "same data, nothing rewritten"
    );

    // Status tracking.
    let row = h
        .store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, ConnectionStatus::Synced);
    assert!(row.last_sync_at.is_some());
    let cursor = row.sync_cursor.unwrap();
    assert_eq!(cursor["lastSyncMode"], "initial");
    assert_eq!(cursor["lastSyncRecords"], 0);
    assert_eq!(cursor["usedExportApi"], false);
    assert!(cursor["lastSyncAt"].is_string());
    assert!(cursor["streams"]["items"]["watermark"].is_string());
    let history = h
        .store
        .sync_history(ws, Some(ConnectorKind::Hubspot), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|s| s.status == SyncStatus::Completed));
    let modes: Vec<_> = fake.runs.lock().unwrap().iter().map(|r| r.0).collect();
    assert_eq!(
        modes,
        [SyncMode::Initial, SyncMode::Incremental, SyncMode::Initial]
    );
}

pub async fn failure_after_three_batches_resumes_from_the_fourth(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let provider = Provider::seeded(100);
    let mut failing = Fake::new(ConnectorKind::Hubspot, provider.clone(), 10);
    failing.fail_after_pages = Some(3);
    let o = orchestrator(&h.store, std::slice::from_ref(&failing));
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Failed);
    assert!(c.error.as_deref().unwrap().contains("connection reset"));
    assert_eq!(
        contacts(&h.store, ws).await.len(),
        30,
        "exactly three batches committed"
    );
    let cp = checkpoint(&h.store, ws, ConnectorKind::Hubspot).await;
    assert_eq!(cp.stream("items").unwrap().cursor.as_deref(), Some("30"));
    assert_eq!(cp.watermark("items"), None, "the pass did not finish");
    let row = h
        .store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, ConnectionStatus::Error);
    assert!(row.error_message.unwrap().contains("connection reset"));

    let healthy = Fake::new(ConnectorKind::Hubspot, provider, 10);
    let o = orchestrator(&h.store, std::slice::from_ref(&healthy));
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    let run = healthy.runs.lock().unwrap()[0].clone();
    assert_eq!(
        run.1.as_deref(),
        Some("c0030"),
        "resumed at the fourth batch"
    );
    assert_eq!(run.2, 7, "seven batches left");
    assert_eq!(r.connectors[0].counts.inserted, 70);
    let rows = contacts(&h.store, ws).await;
    assert_eq!(rows.len(), 100, "every record once");
}

pub async fn records_modified_during_a_sync_arrive_next_time(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let provider = Provider::seeded(30);
    let mut fake = Fake::new(ConnectorKind::Hubspot, provider.clone(), 10);
    let p = provider.clone();
    // After the first page, c0001 (already read) changes at the provider.
    fake.after_page = Some(Arc::new(move |page| {
        if page == 1 {
            p.set(
                "c0001",
                chrono::Utc::now() + chrono::Duration::seconds(1),
                "moved@acme.com",
            );
        }
    }));
    let o = orchestrator(&h.store, std::slice::from_ref(&fake));
    o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let stored = h
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "c0001")
        .await
        .unwrap()
        .unwrap();
    let Record::Contact(c) = stored else { panic!() };
    assert_eq!(
        c.email.as_deref(),
        Some("p1@acme.com"),
        "the change came after it was read"
    );
    let wm = checkpoint(&h.store, ws, ConnectorKind::Hubspot)
        .await
        .watermark("items")
        .unwrap();
    assert!(
        wm < chrono::Utc::now(),
        "the watermark is capped below the sync start"
    );

    let plain = Fake::new(ConnectorKind::Hubspot, provider, 10);
    let o = orchestrator(&h.store, std::slice::from_ref(&plain));
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].mode, SyncMode::Incremental);
    let Record::Contact(c) = h
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "c0001")
        .await
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.email.as_deref(), Some("moved@acme.com"));
}

pub async fn connectors_are_isolated_and_concurrent(h: Harness) {
    let ws = Uuid::new_v4();
    for k in [
        ConnectorKind::Hubspot,
        ConnectorKind::Gong,
        ConnectorKind::Monday,
    ] {
        connect(&h.store, ws, k).await;
    }
    // HubSpot and Gong meet at a barrier: run one after the other, they would never pass.
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let mut a = Fake::new(ConnectorKind::Hubspot, Provider::seeded(20), 10);
    a.gate = Some(gate.clone());
    let mut b = Fake::new(ConnectorKind::Gong, Provider::seeded(15), 10);
    b.gate = Some(gate);
    let mut broken = Fake::new(ConnectorKind::Monday, Provider::seeded(15), 5);
    broken.fail_after_pages = Some(1);
    broken.error = Arc::new(|| Error::AuthFailed {
        provider: "monday".into(),
        message: "token revoked".into(),
    });
    let o = orchestrator(&h.store, &[a, b, broken]);
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        o.sync_workspace(ws, SyncOptions::default()),
    )
    .await
    .expect("connectors ran concurrently")
    .unwrap();
    let by: std::collections::BTreeMap<_, _> =
        r.connectors.iter().map(|c| (c.connector, c)).collect();
    assert_eq!(by[&ConnectorKind::Hubspot].status, SyncStatus::Completed);
    assert_eq!(by[&ConnectorKind::Gong].status, SyncStatus::Completed);
    assert_eq!(by[&ConnectorKind::Monday].status, SyncStatus::Failed);
    assert!(
        by[&ConnectorKind::Monday]
            .error
            .as_deref()
            .unwrap()
            .contains("token revoked")
    );
    assert_eq!(r.status(), SyncStatus::Failed);
    assert_eq!(contacts(&h.store, ws).await.len(), 20 + 15 + 5);
}

pub async fn concurrent_sync_of_one_workspace_conflicts(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let mut slow = Fake::new(ConnectorKind::Hubspot, Provider::seeded(5), 10);
    slow.gate = Some(gate.clone());
    let o = orchestrator(&h.store, &[slow]);
    let running = {
        let o = o.clone();
        tokio::spawn(async move { o.sync_workspace(ws, SyncOptions::default()).await })
    };
    // Wait until the first sync holds the lock (its run is recorded as running).
    for _ in 0..3000 {
        if !h.store.active_syncs(ws).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = o
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                running_id: Some(_),
                ..
            }
        ),
        "{err}"
    );
    gate.wait().await;
    let done = running.await.unwrap().unwrap();
    assert_eq!(done.connectors[0].status, SyncStatus::Completed);
    // Another workspace is not blocked.
    let other = Uuid::new_v4();
    connect(&h.store, other, ConnectorKind::Hubspot).await;
    let free = Fake::new(ConnectorKind::Hubspot, Provider::seeded(3), 10);
    orchestrator(&h.store, &[free])
        .sync_workspace(other, SyncOptions::default())
        .await
        .unwrap();
}

pub async fn per_record_failures_and_the_success_threshold(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut few_bad = Fake::new(ConnectorKind::Hubspot, Provider::seeded(100), 25);
    few_bad.bad_every = Some(50); // 2 of 100 fail: 98 % ≥ 95 %
    let r = orchestrator(&h.store, &[few_bad])
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::CompletedWithErrors);
    assert_eq!(c.errors.total, 2);
    let ids: Vec<_> = c
        .errors
        .failures
        .iter()
        .map(|f| f.record_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["c0000", "c0050"]);
    let log = h.store.get_sync(ws, c.sync_id).await.unwrap().unwrap();
    assert_eq!(log.status, SyncStatus::CompletedWithErrors);
    assert_eq!(log.errors.unwrap().total, 2);

    let ws2 = Uuid::new_v4();
    connect(&h.store, ws2, ConnectorKind::Hubspot).await;
    let mut many_bad = Fake::new(ConnectorKind::Hubspot, Provider::seeded(100), 25);
    many_bad.bad_every = Some(10); // 10 % fail
    let r = orchestrator(&h.store, &[many_bad])
        .sync_workspace(ws2, SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Failed);
    assert!(
        r.connectors[0]
            .error
            .as_deref()
            .unwrap()
            .contains("success rate")
    );
}

pub async fn job_handler_runs_triggered_syncs_and_snoozes_rate_limits(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Gong).await;
    let mut limited = Fake::new(ConnectorKind::Gong, Provider::seeded(40), 10);
    limited.fail_after_pages = Some(2);
    limited.error = Arc::new(|| Error::RateLimited {
        provider: "gong".into(),
        retry_after: Some(Duration::from_secs(120)),
    });
    let o = orchestrator(&h.store, &[limited]);
    let scheduler = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    let t = scheduler
        .trigger_sync(ws, Some(ConnectorKind::Gong), None)
        .await
        .unwrap();

    let handler: Arc<dyn JobHandler> = Arc::new(SyncJobHandler::new(o));
    let stop = CancellationToken::new();
    let worker = Worker::new(h.queue.clone())
        .register(SYNC_JOB, handler)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(20),
            ..Default::default()
        });
    let task = tokio::spawn(worker.run(stop.clone()));
    let mut snoozed = None;
    for _ in 0..3000 {
        let j = h.queue.get_job(ws, t.job_id).await.unwrap().unwrap();
        if j.status == JobStatus::Pending && j.last_error.is_some() {
            snoozed = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let j = snoozed.expect("the job was snoozed");
    assert_eq!(
        j.attempts, 0,
        "a rate limit is a snooze, not a failed attempt"
    );
    assert!(j.run_after >= h.queue.now() + chrono::Duration::seconds(100));
    assert_eq!(
        contacts(&h.store, ws).await.len(),
        20,
        "the committed pages stay"
    );
    let run = h.store.get_sync(ws, t.sync_id).await.unwrap().unwrap();
    assert_eq!(run.connector, Some(ConnectorKind::Gong));
    assert_eq!(
        run.status,
        SyncStatus::CompletedWithErrors,
        "this run stopped cleanly on the rate limit; the snoozed job records a new one"
    );
    let stop = run.errors.unwrap().rate_limited.unwrap();
    assert!(!stop.quota);
    assert_eq!(stop.retry_after_ms, Some(120_000));
}

fn worker(
    h: &Harness,
    o: Orchestrator,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<pandora_sync::Result<()>>,
) {
    let handler: Arc<dyn JobHandler> = Arc::new(SyncJobHandler::new(o));
    let stop = CancellationToken::new();
    let worker = Worker::new(h.queue.clone())
        .register(SYNC_JOB, handler)
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(20),
            backoff: BackoffPolicy {
                base: Duration::from_millis(10),
                factor: 1.0,
                max: Duration::from_millis(10),
            },
            ..Default::default()
        });
    (stop.clone(), tokio::spawn(worker.run(stop)))
}

/// Waits (a hang guard, not a timing assertion) until the job satisfies `done`.
async fn wait_job(h: &Harness, ws: Uuid, id: Uuid, done: impl Fn(&Job) -> bool) -> Job {
    for _ in 0..3000 {
        let j = h.queue.get_job(ws, id).await.unwrap().unwrap();
        if done(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the job never reached the expected state");
}

pub async fn a_failed_sync_fails_its_job_attempts_then_the_job(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut broken = Fake::new(ConnectorKind::Hubspot, Provider::seeded(40), 10);
    broken.fail_after_pages = Some(1);
    let scheduler = Scheduler::new(
        h.store.clone(),
        SchedulerConfig {
            max_attempts: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let t = scheduler
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap();
    let (stop, task) = worker(&h, orchestrator(&h.store, &[broken.clone()]));
    let j = wait_job(&h, ws, t.job_id, |j| j.status.is_finished()).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed, "a failed sync fails its job");
    assert_eq!(j.attempts, 2, "retried once, then out of attempts");
    assert!(j.error.unwrap().contains("connection reset"));
    // Each attempt ran the connector once and wrote one sync_log row, both failed.
    assert_eq!(broken.runs.lock().unwrap().len(), 2);
    let history = h.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history.iter().all(|s| s.status == SyncStatus::Failed));
    assert!(history.iter().any(|s| s.id == t.sync_id));
    assert!(h.store.active_syncs(ws).await.unwrap().is_empty());
    // The second attempt resumed from the first one's committed page.
    assert_eq!(contacts(&h.store, ws).await.len(), 20);
}

pub async fn a_quota_stop_ends_cleanly_and_snoozes_to_the_reset(h: Harness) {
    use chrono::{SubsecRound, Timelike};
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let resets_at = (h.queue.now() + chrono::Duration::hours(3)).trunc_subsecs(0);
    let mut limited = Fake::new(ConnectorKind::Hubspot, Provider::seeded(40), 10);
    limited.fail_after_pages = Some(2);
    limited.error = Arc::new(move || Error::QuotaExhausted {
        provider: "hubspot".into(),
        resets_at: Some(resets_at),
    });
    let scheduler = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    let t = scheduler
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap();
    let (stop, task) = worker(&h, orchestrator(&h.store, &[limited.clone()]));
    let j = wait_job(&h, ws, t.job_id, |j| {
        j.status == JobStatus::Pending && j.last_error.is_some()
    })
    .await;
    // Give a looping worker the chance to loop (it must not: the job waits for the reset).
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(j.attempts, 0, "a quota stop spends no attempt");
    assert_eq!(
        j.run_after, resets_at,
        "rescheduled to the provider's reset"
    );
    assert_eq!(limited.runs.lock().unwrap().len(), 1, "no retry loop");
    let history = h.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "one sync_log row: {history:?}");
    let run = &history[0];
    assert_eq!(run.id, t.sync_id);
    assert_eq!(run.status, SyncStatus::CompletedWithErrors);
    let stop = run.errors.clone().unwrap().rate_limited.unwrap();
    assert!(stop.quota);
    assert_eq!(stop.resets_at, Some(resets_at));
    let conn = h
        .store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.status, ConnectionStatus::Synced, "not in error");
    assert_eq!(
        contacts(&h.store, ws).await.len(),
        20,
        "committed pages stay"
    );
    assert_eq!(
        checkpoint(&h.store, ws, ConnectorKind::Hubspot)
            .await
            .stream("items")
            .unwrap()
            .cursor
            .as_deref(),
        Some("20"),
        "the checkpoint is kept"
    );

    // Without a reset time: the next UTC midnight.
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut daily = Fake::new(ConnectorKind::Hubspot, Provider::seeded(40), 10);
    daily.fail_after_pages = Some(1);
    daily.error = Arc::new(|| Error::QuotaExhausted {
        provider: "hubspot".into(),
        resets_at: None,
    });
    let t = scheduler
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap();
    let before = h.queue.now();
    let (stop, task) = worker(&h, orchestrator(&h.store, &[daily]));
    let j = wait_job(&h, ws, t.job_id, |j| {
        j.status == JobStatus::Pending && j.last_error.is_some()
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(j.run_after > before);
    assert!(j.run_after <= before + chrono::Duration::days(1) + chrono::Duration::minutes(1));
    // Within the last minute before midnight the minimum snooze (60 s) wins instead.
    let last_minute = (before.hour(), before.minute()) == (23, 59);
    assert!(
        last_minute
            || (
                j.run_after.hour(),
                j.run_after.minute(),
                j.run_after.second()
            ) == (0, 0, 0),
        "{}",
        j.run_after
    );
}

pub async fn link_rows_do_not_count_toward_the_success_threshold(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let fake = DealsFake {
        deals: 100,
        bad_every: 10,
        contacts_left: None,
    };
    let mut registry = ConnectorRegistry::new();
    registry = registry.register(ConnectorKind::Hubspot, move |_r, _c| {
        Ok(Box::new(fake.clone()))
    });
    let r = Orchestrator::new(h.store.clone(), registry)
        .with_config(OrchestratorConfig {
            batch_size: 7,
            ..Default::default()
        })
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.errors.total, 10);
    assert_eq!(
        c.status,
        SyncStatus::Failed,
        "90 of 100 deals is below 95 %, links or not"
    );
    assert!(
        c.error
            .as_deref()
            .unwrap()
            .contains("10 of 100 records failed")
    );
    assert_eq!(
        c.counts.written(),
        90,
        "records_synced counts deals, not links"
    );
    assert_eq!(c.records_by_table.get("deal_contacts"), Some(&450));
    let log = h.store.get_sync(ws, c.sync_id).await.unwrap().unwrap();
    assert_eq!(log.records_synced, 90);
    assert_eq!(
        h.store
            .count_records(ws, RecordKind::DealContact, None)
            .await
            .unwrap(),
        450,
        "the links are stored"
    );
}

/// Contact sets go with the page's last chunk, after every link of the page: the links a
/// page sends survive their deal's set, the others are removed and counted as archived.
pub async fn contact_sets_remove_links_after_the_pages_chunks(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let run = |contacts_left| {
        let fake = DealsFake {
            deals: 30,
            bad_every: 1000, // only deal 0 fails
            contacts_left,
        };
        let registry = ConnectorRegistry::new().register(ConnectorKind::Hubspot, move |_r, _c| {
            Ok(Box::new(fake.clone()))
        });
        let o = Orchestrator::new(h.store.clone(), registry).with_config(OrchestratorConfig {
            batch_size: 7, // a page of 10 deals and their links is several chunks
            ..Default::default()
        });
        async move { o.sync_workspace(ws, SyncOptions::default()).await.unwrap() }
    };
    let links = || h.store.count_records(ws, RecordKind::DealContact, None);
    let first = run(None).await;
    assert_eq!(first.connectors[0].status, SyncStatus::CompletedWithErrors);
    assert_eq!(links().await.unwrap(), 29 * 5);

    let second = run(Some(2)).await;
    let c = &second.connectors[0];
    assert_eq!(c.status, SyncStatus::CompletedWithErrors, "{:?}", c.error);
    assert_eq!(c.counts.archived, 29 * 3, "removed links count as archived");
    assert_eq!(links().await.unwrap(), 29 * 2);
    for i in 1..30 {
        for (contact, kept) in [(0, true), (1, true), (2, false), (4, false)] {
            let id = format!("d{i:04}:c{i}-{contact}");
            let stored = h
                .store
                .get_record(ws, RecordKind::DealContact, ConnectorKind::Hubspot, &id)
                .await
                .unwrap();
            assert_eq!(stored.is_some(), kept, "{id}");
        }
    }
}

pub async fn flush_makes_every_written_page_durable(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let probe = FlushProbe {
        store: h.store.clone(),
        pages: 4,
        seen: Arc::default(),
    };
    let seen = probe.seen.clone();
    let registry = ConnectorRegistry::new().register(ConnectorKind::Hubspot, move |_r, _c| {
        Ok(Box::new(probe.clone()))
    });
    let r = Orchestrator::new(h.store.clone(), registry)
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (page, s) in seen.iter().enumerate() {
        assert_eq!(s.contacts, 50 * (page as u64 + 1), "page {page}'s records");
        let cursor = s
            .checkpoint
            .as_ref()
            .and_then(|c| c.stream("contacts"))
            .and_then(|s| s.cursor.clone());
        assert_eq!(
            cursor,
            Some(format!("ack-{page}")),
            "page {page}'s checkpoint"
        );
    }
    let mut memory = pandora_sync::connector::MemorySink::new();
    pandora_sync::RecordSink::flush(&mut memory).await.unwrap();
}

pub async fn reconciliation_flags_a_gap_for_a_repairing_pass(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    // The provider reports exactly what was read: no warning, no repair.
    let mut exact = Fake::new(ConnectorKind::Hubspot, Provider::seeded(30), 10);
    exact.report_total_extra = Some(0);
    let r = orchestrator(&h.store, &[exact])
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed);
    assert!(c.errors.warnings.is_empty(), "{:?}", c.errors.warnings);
    assert_eq!(c.errors.reconciliation.len(), 1);
    let rec = &c.errors.reconciliation[0];
    assert_eq!((rec.source_total, rec.stored, rec.repair), (30, 30, false));
    assert!(
        !checkpoint(&h.store, ws, ConnectorKind::Hubspot)
            .await
            .stream("items")
            .unwrap()
            .repair
    );

    // The provider reports 12 more than it served: a warning and a repairing pass.
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut short = Fake::new(ConnectorKind::Hubspot, Provider::seeded(30), 10);
    short.report_total_extra = Some(12);
    let r = orchestrator(&h.store, &[short])
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        c.status,
        SyncStatus::Completed,
        "a gap is a warning, not a failure"
    );
    let rec = &c.errors.reconciliation[0];
    assert_eq!(rec.stream, "items");
    assert_eq!(rec.kind, RecordKind::Contact);
    assert_eq!((rec.source_total, rec.stored, rec.in_flight), (42, 30, 0));
    assert!(rec.repair);
    assert_eq!(c.errors.warnings.len(), 1);
    assert!(
        c.errors.warnings[0].contains("42"),
        "{}",
        c.errors.warnings[0]
    );
    let stream = checkpoint(&h.store, ws, ConnectorKind::Hubspot)
        .await
        .stream("items")
        .cloned()
        .unwrap();
    assert!(stream.repair, "the next sync runs a repairing pass");
    assert!(
        stream.watermark.is_some(),
        "the rest of the checkpoint is kept"
    );
    let log = h.store.get_sync(ws, c.sync_id).await.unwrap().unwrap();
    let errors = log.errors.unwrap();
    assert_eq!(errors.reconciliation, c.errors.reconciliation);
    assert_eq!(errors.warnings, c.errors.warnings);

    // Records that failed (captured and reported) are not a silent gap: no repair.
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut few_bad = Fake::new(ConnectorKind::Hubspot, Provider::seeded(100), 25);
    few_bad.bad_every = Some(50);
    few_bad.report_total_extra = Some(0);
    let r = orchestrator(&h.store, &[few_bad])
        .sync_workspace(ws, SyncOptions::default())
        .await
        .unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::CompletedWithErrors);
    let rec = &c.errors.reconciliation[0];
    assert_eq!((rec.source_total, rec.stored, rec.failed), (100, 98, 2));
    assert!(!rec.repair);
    assert!(c.errors.warnings.is_empty());
}

pub async fn a_dropped_sync_fails_its_running_row(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut stuck = Fake::new(ConnectorKind::Hubspot, Provider::seeded(10), 5);
    // Nobody else ever reaches this barrier: the connector hangs until it is dropped.
    stuck.gate = Some(Arc::new(tokio::sync::Barrier::new(2)));
    let o = orchestrator(&h.store, &[stuck]);
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        o.sync_workspace(ws, SyncOptions::default()),
    )
    .await;
    assert!(dropped.is_err(), "the sync was still running when dropped");
    let mut history = Vec::new();
    for _ in 0..300 {
        history = h.store.sync_history(ws, None, 10).await.unwrap();
        if history.iter().all(|s| s.status.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, SyncStatus::Failed);
    assert!(
        history[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("interrupted")
    );
}

/// The store's clock moves minute by minute through the hours after a daily quota stop
/// (HubSpot's `DAILY` 429: no reset time): the job waits for the next UTC midnight instead
/// of retrying every minute and writing a failed row each time; after midnight it resumes
/// from its checkpoint and completes.
pub async fn a_daily_quota_does_not_loop_and_resumes_after_the_reset(h: Harness) {
    let ws = Uuid::new_v4();
    connect(&h.store, ws, ConnectorKind::Hubspot).await;
    let mut daily = Fake::new(ConnectorKind::Hubspot, Provider::seeded(40), 10);
    daily.fail_after_pages = Some(2);
    daily.error = Arc::new(|| Error::QuotaExhausted {
        provider: "hubspot".into(),
        resets_at: None,
    });
    let scheduler = Scheduler::new(h.store.clone(), SchedulerConfig::default()).unwrap();
    let t = scheduler
        .trigger_sync(ws, Some(ConnectorKind::Hubspot), None)
        .await
        .unwrap();
    let (stop, task) = worker(&h, orchestrator(&h.store, &[daily.clone()]));
    let snoozed = wait_job(&h, ws, t.job_id, |j| {
        j.status == JobStatus::Pending && j.last_error.is_some()
    })
    .await;
    let midnight = (h.clock.now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(
        snoozed.run_after,
        midnight.max(h.clock.now() + chrono::Duration::minutes(1))
    );
    // Two hours (or until just before the reset), a minute at a time, with the worker
    // polling: nothing runs again.
    let minutes = (snoozed.run_after - h.clock.now())
        .num_minutes()
        .clamp(0, 120)
        - 1;
    for _ in 0..minutes {
        h.clock.advance(chrono::Duration::minutes(1));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_eq!(
        daily.runs.lock().unwrap().len(),
        1,
        "no retry before the reset"
    );
    let history = h.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "one sync_log row, not one a minute");
    assert_eq!(history[0].status, SyncStatus::CompletedWithErrors);
    // Past the reset, the job resumes from its checkpoint and completes.
    h.clock
        .set(snoozed.run_after + chrono::Duration::seconds(1));
    let done = wait_job(&h, ws, t.job_id, |j| j.status.is_finished()).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.attempts, 1, "the quota stop spent no attempt");
    let runs = daily.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].1.as_deref(),
        Some("c0020"),
        "resumed where it stopped"
    );
    assert_eq!(contacts(&h.store, ws).await.len(), 40);
    let history = h.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].status, SyncStatus::Completed);
}
