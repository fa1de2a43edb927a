//! End to end: Fireflies simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pandora_sync::model::{Conversation, RecordKind};
use pandora_sync::orchestrator::ConnectorResult;
use pandora_sync::simulator::{
    FaultConfig, FirefliesErrorForm, FirefliesSim, FirefliesSimConfig, NewFirefliesTranscript,
};
use pandora_sync::store::{NewConnection, RecordQuery, SyncStatus};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Orchestrator, Record, SyncMode, SyncOptions,
    SyncStore,
};
use serde_json::json;
use uuid::Uuid;

use crate::truth::assert_conversation;

pub use crate::store_env::Env;
#[cfg(feature = "postgres")]
pub use crate::store_env::run_postgres;
#[cfg(feature = "sqlite")]
pub use crate::store_env::run_sqlite;

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

async fn setup(env: &Env, sim: &FirefliesSim, config: serde_json::Value) -> (Uuid, Orchestrator) {
    setup_with_key(env, sim, config, &sim.config().api_key.clone()).await
}

async fn setup_with_key(
    env: &Env,
    sim: &FirefliesSim,
    config: serde_json::Value,
    key: &str,
) -> (Uuid, Orchestrator) {
    let ws = Uuid::new_v4();
    let creds = Credentials::from_json(json!({ "api_key": key })).unwrap();
    env.store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Fireflies, "api_key")
                .with_credentials(creds)
                .with_config(config),
        )
        .await
        .unwrap();
    let registry = ConnectorRegistry::builtin(&BTreeMap::from([(
        ConnectorKind::Fireflies,
        sim.base_url(),
    )]));
    (ws, Orchestrator::new(env.store.clone(), registry))
}

async fn sync(o: &Orchestrator, ws: Uuid) -> ConnectorResult {
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors.len(), 1);
    r.connectors[0].clone()
}

/// Every stored conversation (archived ones too), by source id.
async fn stored(store: &Arc<dyn SyncStore>, ws: Uuid) -> BTreeMap<String, Conversation> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_records(
                ws,
                RecordKind::Conversation,
                &RecordQuery {
                    after,
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let done = page.len() < 1000;
        after = page.last().and_then(|r| r.meta().map(|m| m.id));
        for r in page {
            let Record::Conversation(c) = r else {
                panic!("not a conversation")
            };
            assert!(
                out.insert(c.meta.source_id.clone(), c).is_none(),
                "a transcript stored twice"
            );
        }
        if done {
            return out;
        }
    }
}

fn live(rows: &BTreeMap<String, Conversation>) -> BTreeSet<String> {
    rows.iter()
        .filter(|(_, c)| c.meta.archived_at.is_none())
        .map(|(id, _)| id.clone())
        .collect()
}

/// The database's live rows are exactly the simulator's transcripts, field by field.
async fn assert_equals_truth(env: &Env, ws: Uuid, sim: &FirefliesSim) {
    let truth = sim.transcripts();
    let rows = stored(&env.store, ws).await;
    assert_eq!(
        live(&rows),
        truth.iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>(),
        "exactly the simulator's transcripts"
    );
    let domain = sim.config().internal_domain.clone();
    for t in &truth {
        assert_conversation(&rows[&t.id], t, &domain);
    }
}

fn assert_completed(c: &ConnectorResult) {
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
}

/// 600 transcripts over 180 days: the initial sync stores them field by field; a
/// no-change incremental sync costs one request and writes nothing.
#[allow(clippy::print_stdout)] // the figures the issue asks for, shown with --nocapture
pub async fn initial_sync_equals_truth_and_no_change_incremental_is_cheap(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig::default())
        .await
        .unwrap();
    assert_eq!(sim.transcripts().len(), 600);
    let (ws, o) = setup(&env, &sim, json!({})).await;
    let initial = sync(&o, ws).await;
    assert_completed(&initial);
    assert_eq!(initial.mode, SyncMode::Initial);
    assert_eq!(initial.counts.inserted, 600, "{:?}", initial.counts);
    assert_eq!(initial.counts.unchanged, 0, "no transcript read twice");
    assert_equals_truth(&env, ws, &sim).await;
    // 600 transcripts, 50 a page, each page re-reading its boundary transcript.
    let initial_requests = sim.counters().total();
    assert_eq!(initial.requests, initial_requests);
    assert!(initial_requests <= 14, "{initial_requests} requests");

    sim.counters().reset();
    let again = sync(&o, ws).await;
    assert_completed(&again);
    assert_eq!(again.mode, SyncMode::Incremental);
    assert_eq!(again.counts.written(), 0, "{:?}", again.counts);
    assert_eq!(again.counts.archived, 0);
    let incremental_requests = sim.counters().total();
    assert_eq!(incremental_requests, 1, "the overlap window fits one page");
    println!(
        "fireflies, 600 transcripts: initial sync {initial_requests} requests, no-change incremental {incremental_requests}"
    );
    assert_equals_truth(&env, ws, &sim).await;
}

/// New, late-processed, retitled, summary-finished and deleted transcripts: an incremental
/// sync writes exactly those, with at most half the initial sync's requests.
pub async fn incremental_writes_exactly_the_changed_transcripts(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig::default())
        .await
        .unwrap();
    let now = sim.config().now;
    // Processing when the initial sync runs: a late transcript and an unfinished summary.
    let late = sim.add_transcript(NewFirefliesTranscript {
        processed: false,
        ..NewFirefliesTranscript::at(now - hours(20))
    });
    let pending = sim.add_transcript(NewFirefliesTranscript {
        summary_ready: false,
        ..NewFirefliesTranscript::at(now - hours(10))
    });
    let (ws, o) = setup(&env, &sim, json!({})).await;
    let initial = sync(&o, ws).await;
    assert_completed(&initial);
    let initial_requests = sim.counters().total();
    assert_equals_truth(&env, ws, &sim).await;
    assert_eq!(stored(&env.store, ws).await[&pending].summary, None);

    let recent: Vec<String> = sim
        .transcripts()
        .iter()
        .filter(|t| t.date > now - hours(40) && t.id != pending)
        .map(|t| t.id.clone())
        .collect();
    assert!(recent.len() >= 3, "{recent:?}");
    for k in 0..3 {
        sim.add_transcript(NewFirefliesTranscript::at(
            now - chrono::Duration::minutes(30 - k),
        ));
    }
    assert!(sim.finish_processing(&late));
    assert!(sim.finish_summary(&pending));
    assert!(sim.modify_transcript(&recent[0], |t| t.title = "Renamed after the call".into()));
    assert!(sim.delete_transcript(&recent[1]));

    sim.counters().reset();
    let inc = sync(&o, ws).await;
    assert_completed(&inc);
    assert_eq!(inc.mode, SyncMode::Incremental);
    assert_eq!(inc.counts.inserted, 4, "3 new + 1 late: {:?}", inc.counts);
    assert_eq!(
        inc.counts.updated, 2,
        "retitled + summary: {:?}",
        inc.counts
    );
    assert_eq!(inc.counts.archived, 1, "deleted: {:?}", inc.counts);
    let requests = sim.counters().total();
    assert!(
        requests * 2 <= initial_requests,
        "{requests} incremental vs {initial_requests} initial requests"
    );
    assert_equals_truth(&env, ws, &sim).await;
    let rows = stored(&env.store, ws).await;
    assert!(
        rows[&recent[1]].meta.archived_at.is_some(),
        "soft-deleted, not removed"
    );
    assert_eq!(
        rows[&recent[0]].title.as_deref(),
        Some("Renamed after the call")
    );
    assert!(rows[&pending].summary.is_some());
}

/// Transcripts processed and deleted between page requests, and 55 transcripts on one
/// instant: nothing is lost and nothing is read twice.
pub async fn drift_between_pages_and_one_instant_lose_nothing(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig {
        same_instant: 55,
        ..Default::default()
    })
    .await
    .unwrap();
    let tie = sim.same_instant_ids();
    assert_eq!(tie.len(), 55);
    let before: Vec<String> = sim.transcripts().iter().map(|t| t.id.clone()).collect();
    let now = sim.config().now;
    // After each of the first pages: a new transcript at the head of the list, and one
    // already read deleted (each shifts a `skip` offset by one).
    let read_so_far = Arc::new(Mutex::new(0usize));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let (r, d, ids) = (read_so_far.clone(), deleted.clone(), before.clone());
    sim.after_transcripts_request(move |n, h| {
        if n > 8 {
            return;
        }
        let mut read = r.lock().unwrap();
        *read += 49;
        h.add_transcript(NewFirefliesTranscript::at(
            now - chrono::Duration::minutes(i64::try_from(n).unwrap()),
        ));
        let victim = ids[(*read / 2) + usize::try_from(n).unwrap()].clone();
        if h.delete_transcript(&victim) {
            d.lock().unwrap().push(victim);
        }
    });
    let (ws, o) = setup(&env, &sim, json!({})).await;
    let initial = sync(&o, ws).await;
    assert_completed(&initial);
    sim.clear_hook();
    assert_eq!(
        initial.counts.unchanged, 0,
        "nothing read twice: {:?}",
        initial.counts
    );
    let rows = stored(&env.store, ws).await;
    assert_eq!(initial.counts.inserted, rows.len() as u64);
    let deleted = deleted.lock().unwrap().clone();
    assert!(deleted.len() >= 6, "{deleted:?}");
    for id in &before {
        assert!(
            rows.contains_key(id) || deleted.contains(id),
            "{id} lost by the drift"
        );
    }
    for id in &tie {
        assert!(rows.contains_key(id), "{id} of the one instant lost");
    }
    // Every page was a fresh date-bounded query from offset 0, except inside the instant
    // holding 55 transcripts, which was stepped with overlapping pages.
    let log = sim.transcripts_log();
    let tie_date = sim.transcript(&tie[0]).unwrap().date;
    let stepped: Vec<_> = log.iter().filter(|a| a.skip > 0).collect();
    assert!(!stepped.is_empty(), "{log:?}");
    for a in &stepped {
        assert_eq!(a.skip % 40, 0, "{a:?}");
        assert_eq!(
            a.to,
            Some(tie_date + chrono::Duration::milliseconds(1)),
            "{a:?}"
        );
    }
    assert!(log.iter().all(|a| a.limit == 50));
    // The transcripts added during the pass lie after its start: the next run reads them.
    let inc = sync(&o, ws).await;
    assert_completed(&inc);
    let rows = stored(&env.store, ws).await;
    let truth: BTreeSet<String> = sim.transcripts().iter().map(|t| t.id.clone()).collect();
    // Fireflies reports no deletes: those older than the overlap window stay stored.
    let old_deleted: BTreeSet<String> = deleted.iter().cloned().collect();
    let want: BTreeSet<String> = truth.union(&old_deleted).cloned().collect();
    assert_eq!(live(&rows), want);
    let domain = sim.config().internal_domain.clone();
    for t in sim.transcripts() {
        assert_conversation(&rows[&t.id], &t, &domain);
    }
}

/// 20 % faults (5xx, `too_many_requests` as HTTP 429 and on HTTP 200, dropped
/// connections): every run ends with the pages it committed, and the store ends equal to
/// the truth.
#[allow(clippy::print_stdout)] // the figures, shown with --nocapture
pub async fn faults_lose_nothing(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig {
        faults: FaultConfig {
            server_error_rate: 0.07,
            rate_limit_rate: 0.07,
            drop_rate: 0.06,
            ..Default::default()
        },
        error_form: FirefliesErrorForm::Alternate,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, json!({})).await;
    let mut runs = 0;
    loop {
        runs += 1;
        let c = sync(&o, ws).await;
        if c.status == SyncStatus::Completed {
            break;
        }
        // A fault that outlasted the retries fails the run; the next resumes it.
        assert!(runs < 5, "{:?}", c.error);
    }
    println!(
        "fireflies, 20 % faults: {runs} run(s), {} requests served",
        sim.counters().total()
    );
    assert!(
        sim.counters().total() > 7,
        "faults were injected and retried"
    );
    sim.set_faults(FaultConfig::default());
    assert_equals_truth(&env, ws, &sim).await;
    let c = sync(&o, ws).await;
    assert_completed(&c);
    assert_equals_truth(&env, ws, &sim).await;

    // Transcripts served malformed are captured failures, never taken for deleted.
    sim.set_faults(FaultConfig {
        malformed_rate: 1.0,
        ..Default::default()
    });
    let c = sync(&o, ws).await;
    assert_ne!(c.status, SyncStatus::Completed);
    assert_eq!(c.counts.archived, 0, "{:?}", c.counts);
    assert!(format!("{:?}", c.errors).contains("01H"), "{:?}", c.errors);
    sim.set_faults(FaultConfig::default());
    assert_completed(&sync(&o, ws).await);
    assert_equals_truth(&env, ws, &sim).await;
}

/// A daily quota of 10 requests: the sync stops within a minute with its pages kept, and
/// after the reset the next run finishes with at most half a full sync's requests.
#[allow(clippy::print_stdout)] // the figures, shown with --nocapture
pub async fn daily_quota_stops_and_the_next_day_resumes(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig {
        daily_limit: Some(10),
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, json!({})).await;
    let started = Instant::now();
    let first = sync(&o, ws).await;
    let first_elapsed = started.elapsed();
    assert!(first_elapsed < Duration::from_secs(60), "{first_elapsed:?}");
    assert_ne!(first.status, SyncStatus::Completed);
    assert!(first.rate_limited, "a quota stop: {:?}", first.error);
    assert_eq!(sim.counters().total(), 11, "10 served, the 11th refused");
    let kept = stored(&env.store, ws).await.len();
    assert!(kept >= 9 * 49, "{kept} rows kept");

    sim.reset_daily_quota();
    sim.counters().reset();
    let next = sync(&o, ws).await;
    assert_completed(&next);
    assert_eq!(next.mode, SyncMode::Incremental);
    let requests = sim.counters().total();
    assert!(
        requests <= 7,
        "{requests} requests: half a full sync (13) at most"
    );
    println!(
        "fireflies, daily quota of 10: stopped after {first_elapsed:?} with {kept} rows kept; next day {requests} requests"
    );
    assert_eq!(
        next.counts.inserted,
        600 - kept as u64,
        "nothing read again: {:?}",
        next.counts
    );
    assert_equals_truth(&env, ws, &sim).await;
}

/// A bad key, answered `auth_failed` as HTTP 401 and as HTTP 200: the run fails with a
/// clear message after one attempt, and the key is nowhere in the result or the database.
pub async fn bad_key_fails_cleanly_in_both_forms(env: Env) {
    for form in [FirefliesErrorForm::HttpStatus, FirefliesErrorForm::Http200] {
        let sim = FirefliesSim::start(FirefliesSimConfig {
            error_form: form,
            transcripts: 20,
            ..Default::default()
        })
        .await
        .unwrap();
        let key = "ff-wrong-key-7f3a9c";
        let (ws, o) = setup_with_key(&env, &sim, json!({}), key).await;
        let c = sync(&o, ws).await;
        assert_eq!(c.status, SyncStatus::Failed, "{form:?}");
        let error = c.error.clone().unwrap_or_default();
        assert!(error.to_lowercase().contains("auth"), "{form:?}: {error}");
        assert!(
            sim.counters().total() <= 3,
            "{form:?}: {} attempts",
            sim.counters().total()
        );
        let history = env.store.sync_history(ws, None, 10).await.unwrap();
        let conn = env
            .store
            .get_connection(ws, ConnectorKind::Fireflies)
            .await
            .unwrap()
            .unwrap();
        let everything = format!(
            "{c:?} {history:?} {:?} {:?} {:?}",
            conn.error_message, conn.sync_cursor, conn.config
        );
        assert!(!everything.contains(key), "{form:?}: the key leaked");
        assert!(stored(&env.store, ws).await.is_empty());
    }
}

/// `include_sentences`: the transcript text is read 10 transcripts a request (aliased
/// `transcript(id)` fields), only for new or changed transcripts of each page.
pub async fn sentences_when_configured(env: Env) {
    let sim = FirefliesSim::start(FirefliesSimConfig {
        transcripts: 75,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, json!({"include_sentences": true})).await;
    let c = sync(&o, ws).await;
    assert_completed(&c);
    // Two list pages (50 + 26 with the boundary re-read) and 8 sentence requests.
    assert_eq!(sim.counters().total(), 2 + 5 + 3);
    let rows = stored(&env.store, ws).await;
    assert_eq!(rows.len(), 75);
    for t in sim.transcripts() {
        let want: Vec<String> = t
            .sentences
            .iter()
            .map(|s| format!("{}: {}", s.speaker_name, s.text))
            .collect();
        assert_eq!(
            rows[&t.id].transcript.as_deref(),
            Some(want.join("\n").as_str()),
            "{}",
            t.id
        );
    }
}
