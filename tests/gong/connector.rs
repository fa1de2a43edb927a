//! The Gong connector against the simulator, into an in-memory sink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::connector::{MemorySink, SyncReport, WriteCounts};
use pandora_sync::connectors::gong::{GongConfig, GongConnector, GongCredentials};
use pandora_sync::model::Conversation;
use pandora_sync::simulator::{FaultConfig, GongSim, GongSimConfig, NewGongCall};
use pandora_sync::{
    Checkpoint, Error, Record, RecordBatch, RecordSink, SyncCapable, SyncContext, SyncMode,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::truth::assert_conversation;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

fn sim_config(users: u64, calls: u64, days: u32) -> GongSimConfig {
    GongSimConfig {
        users,
        calls,
        days,
        now: now(),
        rate_limits: false,
        ..Default::default()
    }
}

fn connector(sim: &GongSim, extra: serde_json::Value) -> GongConnector {
    let mut cfg = json!({"rate_limit": {"max_requests": 100000, "window_ms": 1000}});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    GongConnector::new(
        &sim.base_url(),
        GongCredentials::access_key(
            sim.config().access_key.clone(),
            SecretString::from(sim.config().access_key_secret.clone()),
        ),
        GongConfig::from_json(&cfg).unwrap(),
    )
    .unwrap()
}

fn ws() -> Uuid {
    Uuid::from_u128(77)
}

fn ctx(mode: SyncMode, at: DateTime<Utc>, previous: Option<&Checkpoint>) -> SyncContext {
    SyncContext::new(ws(), mode)
        .with_started_at(at)
        .with_previous(previous.cloned().unwrap_or_default())
}

/// The latest version of every conversation written, by id.
fn latest(sink: &MemorySink) -> BTreeMap<String, Conversation> {
    sink.records()
        .filter_map(|r| match r {
            Record::Conversation(c) => Some((c.meta.source_id.clone(), c.clone())),
            _ => None,
        })
        .collect()
}

fn written_ids(sink: &MemorySink) -> Vec<String> {
    sink.records().map(Record::source_id).collect()
}

fn truth_ids(
    sim: &GongSim,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    users: &[String],
) -> BTreeSet<String> {
    sim.truth_calls(from, to, users)
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn initial_sync_reads_the_last_90_days_of_every_active_user() {
    let sim = GongSim::start(sim_config(4, 600, 120)).await.unwrap();
    let users = sim.active_user_ids();
    let c = connector(&sim, json!({}));
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();

    let rows = latest(&sink);
    let want = truth_ids(&sim, now() - days(90), now(), &[]);
    assert!(want.len() < 600, "the window cuts the history");
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(written_ids(&sink).len(), want.len(), "every call once");
    for (id, conv) in &rows {
        assert_conversation(conv, &sim.call(id).unwrap(), &sim);
    }
    assert_eq!(report.records_fetched, want.len() as u64);
    assert_eq!(report.records_failed, 0);

    // Per-user results, one stream per user with its watermark.
    let by_user = &report.details["by_user"];
    assert_eq!(by_user.as_object().unwrap().len(), 4);
    assert_eq!(report.details["users_tracked"], 4);
    assert_eq!(report.details["users_failed"], 0);
    let checkpoint = sink.last_checkpoint().unwrap();
    for u in &users {
        let mine = sim.truth_calls(now() - days(90), now(), std::slice::from_ref(u));
        assert_eq!(by_user[u]["status"], "completed");
        assert_eq!(by_user[u]["calls"], mine.len());
        assert_eq!(by_user[u]["email"], json!(sim.user(u).unwrap().email));
        let s = checkpoint.stream(&format!("calls:{u}")).unwrap();
        let newest = mine.iter().map(|c| c.started).max().unwrap();
        let cap = now() - chrono::Duration::minutes(5);
        assert_eq!(s.watermark, Some(newest.min(cap)));
        assert_eq!(s.cursor, None);
        assert_eq!(s.extra["covered_from"], json!("2024-12-01T12:00:00Z"));
    }
    assert!(report.details["http"]["requests"].as_u64().unwrap() >= 5);
    // One users page, then the pages of all tracked users' calls together (one
    // `primaryUserIds` list): ⌈calls / 100⌉.
    let pages = (want.len() as u64).div_ceil(100);
    assert_eq!(sim.counters().get("POST /v2/calls/extensive"), pages);
    for u in &users {
        assert_eq!(
            by_user[u]["pages"], pages,
            "every page read covered every user"
        );
    }
    assert_eq!(sim.counters().get("GET /v2/users"), 1);
    // Checkpoints are committed per page.
    assert_eq!(sink.batches.len() as u64, pages);
    assert!(
        sink.batches
            .iter()
            .any(|(_, cp)| cp.streams.values().any(|s| s.cursor.is_some())),
        "a mid-pass checkpoint holds the page cursor"
    );
}

#[tokio::test]
async fn tracked_users_by_email_or_id_and_only_those() {
    let sim = GongSim::start(sim_config(5, 400, 60)).await.unwrap();
    let users = sim.users();
    sim.deactivate_user(&users[4].id);
    let c = connector(
        &sim,
        json!({"tracked_users": [users[0].email.to_uppercase(), users[2].id, users[4].email, "ghost@nowhere.example"]}),
    );
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    let tracked = [
        users[0].id.clone(),
        users[2].id.clone(),
        users[4].id.clone(),
    ];
    let rows = latest(&sink);
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(90), now(), &tracked),
        "the configured users, an inactive one included; nobody else"
    );
    let by_user = &report.details["by_user"];
    assert_eq!(by_user["ghost@nowhere.example"]["status"], "failed");
    assert!(
        by_user["ghost@nowhere.example"]["error"]
            .as_str()
            .unwrap()
            .contains("not a user")
    );
    assert_eq!(report.details["users_failed"], 1);
    let failures: Vec<_> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.failures.iter())
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].record_id.as_deref(),
        Some("user:ghost@nowhere.example")
    );

    // By default: the active users only.
    let c = connector(&sim, json!({}));
    let mut sink = MemorySink::new();
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    let active = sim.active_user_ids();
    assert_eq!(active.len(), 4);
    assert_eq!(
        latest(&sink).keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(90), now(), &active)
    );

    // Nobody to track at all that exists: the sync fails.
    let c = connector(&sim, json!({"tracked_users": ["ghost@nowhere.example"]}));
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut MemorySink::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn incremental_rereads_the_overlap_and_picks_up_changes() {
    let sim = GongSim::start(sim_config(3, 500, 80)).await.unwrap();
    let users = sim.users();
    sim.deactivate_user(&users[2].id);
    let c = connector(&sim, json!({}));
    let mut first = MemorySink::new();
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut first)
        .await
        .unwrap();
    let before = latest(&first);
    let checkpoint = first.last_checkpoint().unwrap().clone();

    // After the sync: new calls (one by an untracked user), changed calls (title, parties),
    // and a change older than the overlap window, which Gong offers no way to notice.
    let later = now() + chrono::Duration::hours(6);
    let added = sim
        .add_call(NewGongCall::new(
            users[0].id.clone(),
            now() + chrono::Duration::hours(1),
        ))
        .unwrap();
    let added_old = sim
        .add_call(NewGongCall::new(users[1].id.clone(), now() - days(3)).title("Logged late"))
        .unwrap();
    let untracked = sim
        .add_call(NewGongCall::new(
            users[2].id.clone(),
            now() + chrono::Duration::hours(2),
        ))
        .unwrap();
    let recent: Vec<String> = sim
        .truth_calls(
            now() - days(10),
            now(),
            &users[..2].iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        )
        .into_iter()
        .step_by(5)
        .take(4)
        .map(|c| c.id)
        .collect();
    assert_eq!(recent.len(), 4);
    sim.modify_call(&recent[0], |c| c.title = "Renamed after the call".into());
    sim.modify_call(&recent[1], |c| c.parties.truncate(1));
    sim.modify_call(&recent[2], |c| c.duration += 60);
    sim.modify_call(&recent[3], |c| {
        let mut p = c.parties[0].clone();
        p.email = Some("late.joiner@guest.example".into());
        p.user_id = None;
        p.affiliation = pandora_sync::simulator::GongAffiliation::External;
        c.parties.push(p);
    });
    let ancient = sim.truth_calls(now() - days(70), now() - days(60), &[users[0].id.clone()])[0]
        .id
        .clone();
    sim.modify_call(&ancient, |c| c.title = "Too old to be noticed".into());
    sim.counters().reset();

    let mut sink = MemorySink::new();
    let report = c
        .sync(
            &ctx(SyncMode::Incremental, later, Some(&checkpoint)),
            &mut sink,
        )
        .await
        .unwrap();
    let rows = latest(&sink);
    let changed: BTreeSet<String> = recent
        .iter()
        .cloned()
        .chain([added.clone(), added_old.clone()])
        .collect();
    for id in &changed {
        assert_conversation(&rows[id], &sim.call(id).unwrap(), &sim);
    }
    assert!(!rows.contains_key(&untracked), "not a tracked user");
    assert!(!rows.contains_key(&ancient), "outside the overlap window");
    for (id, conv) in &rows {
        if !changed.contains(id) {
            assert_eq!(Some(conv), before.get(id), "{id} re-read unchanged");
        }
    }
    // Exactly the overlap window per user: from the later of its watermark and the end of
    // the last pass over it (`covered_to`: the pass's start minus the 5-minute lag), minus
    // 14 days; both users share it, so one request reads them.
    let tracked: Vec<String> = users[..2].iter().map(|u| u.id.clone()).collect();
    let mut want = BTreeSet::new();
    for u in &tracked {
        let s = checkpoint.stream(&format!("calls:{u}")).unwrap();
        let covered_to = s.extra["covered_to"].as_str().unwrap();
        let covered_to: DateTime<Utc> = covered_to.parse().unwrap();
        assert_eq!(covered_to, now() - chrono::Duration::minutes(5));
        let from = s.watermark.unwrap().max(covered_to);
        want.extend(truth_ids(
            &sim,
            from - days(14),
            later,
            std::slice::from_ref(u),
        ));
    }
    assert_eq!(sim.counters().get("POST /v2/calls/extensive"), 1);
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(report.details["mode"], "incremental");
    let cp = sink.last_checkpoint().unwrap();
    let wm = cp.watermark(&format!("calls:{}", users[0].id)).unwrap();
    assert_eq!(
        wm,
        now() + chrono::Duration::hours(1),
        "the newest start seen"
    );
}

#[tokio::test]
async fn an_empty_range_is_an_empty_page() {
    let sim = GongSim::start(sim_config(3, 0, 30)).await.unwrap();
    let c = connector(&sim, json!({}));
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    assert_eq!(report.records_fetched, 0);
    assert_eq!(
        sim.counters().get("POST /v2/calls/extensive"),
        1,
        "one 404 for all users"
    );
    assert_eq!(report.details["users_failed"], 0);
    for u in sim.active_user_ids() {
        assert_eq!(report.details["by_user"][&u]["status"], "completed");
        let s = sink
            .last_checkpoint()
            .unwrap()
            .stream(&format!("calls:{u}"))
            .unwrap()
            .clone();
        assert_eq!(s.watermark, None, "nothing seen, nothing claimed");
        assert!(s.extra.contains_key("covered_from"));
    }
    assert_eq!(
        report.details["http"]["failures"], 0,
        "a 404 'No calls found' is an answer"
    );
    // The next run reads from the end of the last pass minus the overlap (one request).
    let checkpoint = sink.last_checkpoint().unwrap().clone();
    let r = c
        .sync(
            &ctx(SyncMode::Incremental, now(), Some(&checkpoint)),
            &mut MemorySink::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.records_fetched, 0);
    assert_eq!(sim.counters().get("POST /v2/calls/extensive"), 2);
}

/// A sink that turns server errors on after its first batch and off after the batch that
/// records the failed users, so exactly the batch being read then fails.
struct FlakyMiddle {
    inner: MemorySink,
    sim: Arc<GongSim>,
    writes: usize,
}

#[async_trait]
impl RecordSink for FlakyMiddle {
    async fn write(
        &mut self,
        batch: RecordBatch,
        checkpoint: &Checkpoint,
    ) -> pandora_sync::Result<WriteCounts> {
        self.writes += 1;
        if self.writes == 1 {
            self.sim.set_faults(FaultConfig {
                server_error_rate: 1.0,
                ..Default::default()
            });
        }
        if !batch.failures.is_empty() {
            self.sim.set_faults(FaultConfig::default());
        }
        self.inner.write(batch, checkpoint).await
    }
}

/// Users are read 100 to a request (`primaryUserIds`); a pass that fails fails the users of
/// its batch, and the other batches go on.
#[tokio::test]
async fn a_failing_batch_does_not_stop_the_others() {
    let sim = Arc::new(GongSim::start(sim_config(150, 600, 30)).await.unwrap());
    let users = sim.active_user_ids();
    assert_eq!(users.len(), 150);
    let (first, second) = users.split_at(100);
    let c = connector(&sim, json!({}));
    let mut sink = FlakyMiddle {
        inner: MemorySink::new(),
        sim: sim.clone(),
        writes: 0,
    };
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    let by_user = &report.details["by_user"];
    for u in first {
        assert_eq!(by_user[u]["status"], "failed", "{u}");
        assert!(
            by_user[u]["error"].as_str().unwrap().contains("HTTP 5"),
            "{}",
            by_user[u]
        );
    }
    for u in second {
        assert_eq!(by_user[u]["status"], "completed", "{u}");
    }
    assert_eq!(report.details["users_failed"], 100);
    // At most 100 ids a request: the first batch's pages, then the second's.
    let log = sim.primary_user_ids_log();
    assert_eq!(log[0].as_deref(), Some(first));
    assert_eq!(log.last().unwrap().as_deref(), Some(second));
    assert!(log.iter().all(|ids| ids.as_ref().unwrap().len() <= 100));
    let rows: BTreeSet<String> = latest(&sink.inner).keys().cloned().collect();
    let second_truth = truth_ids(&sim, now() - days(90), now(), second);
    assert!(rows.is_superset(&second_truth));
    let first_truth = truth_ids(&sim, now() - days(90), now(), first);
    assert!(
        first_truth.len() > 100,
        "the failing batch has more than one page"
    );
    assert!(
        rows.difference(&second_truth)
            .all(|id| first_truth.contains(id)),
        "only the failed batch's first page besides"
    );
    let failures: BTreeSet<String> = sink
        .inner
        .batches
        .iter()
        .flat_map(|(b, _)| &b.failures)
        .map(|f| f.record_id.clone().unwrap())
        .collect();
    assert_eq!(
        failures,
        first.iter().map(|u| format!("user:{u}")).collect()
    );
    assert!(report.details["http"]["retries"].as_u64().unwrap() >= 3);
    // The failed batch's pass stays in progress (its own stream), so the next run resumes
    // it and stores every call of those users.
    let cp = sink.inner.last_checkpoint().unwrap().clone();
    let in_progress: Vec<_> = cp
        .streams
        .iter()
        .filter(|(_, s)| s.cursor.is_some())
        .collect();
    assert_eq!(in_progress.len(), 1, "{:?}", cp.streams.keys());
    assert!(in_progress[0].0.starts_with("gong:pass:"));
    assert_eq!(in_progress[0].1.extra["users"], json!(first));
    let mut next = MemorySink::new();
    c.sync(&ctx(SyncMode::Incremental, now(), Some(&cp)), &mut next)
        .await
        .unwrap();
    let mut all = rows;
    all.extend(latest(&next).into_keys());
    assert!(all.is_superset(&first_truth));
}

#[tokio::test]
async fn a_rate_limit_stops_the_sync_and_the_next_run_resumes() {
    let sim = GongSim::start(GongSimConfig {
        retry_after: std::time::Duration::ZERO,
        ..sim_config(3, 700, 30)
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    // A sink that starts a 429 storm longer than the retries while storing the second page.
    struct Storm<'a> {
        inner: MemorySink,
        sim: &'a GongSim,
    }
    #[async_trait]
    impl RecordSink for Storm<'_> {
        async fn write(
            &mut self,
            batch: RecordBatch,
            checkpoint: &Checkpoint,
        ) -> pandora_sync::Result<WriteCounts> {
            if self.inner.batches.len() == 1 {
                self.sim.burst_429(4);
            }
            self.inner.write(batch, checkpoint).await
        }
    }
    let mut sink = Storm {
        inner: MemorySink::new(),
        sim: &sim,
    };
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap_err();
    assert!(
        err.is_snooze(),
        "a rate limit propagates so the job is snoozed: {err}"
    );
    let checkpoint = sink.inner.last_checkpoint().unwrap().clone();
    let resumed: Vec<_> = checkpoint
        .streams
        .values()
        .filter(|s| s.cursor.is_some())
        .collect();
    assert_eq!(resumed.len(), 1, "stopped in the middle of a user's pass");
    assert_eq!(
        resumed[0].pass_started_at,
        Some(now()),
        "the pass keeps its window"
    );

    sim.counters().reset();
    let mut next = MemorySink::new();
    c.sync(
        &ctx(
            SyncMode::Incremental,
            now() + chrono::Duration::minutes(1),
            Some(&checkpoint),
        ),
        &mut next,
    )
    .await
    .unwrap();
    let mut all = latest(&sink.inner);
    all.extend(latest(&next));
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(90), now(), &[]),
        "nothing lost"
    );
}

#[tokio::test]
async fn backfill_walks_history_in_30_day_slices() {
    let sim = GongSim::start(sim_config(2, 800, 200)).await.unwrap();
    let users = sim.active_user_ids();
    let c = connector(&sim, json!({"initial_days": 30, "backfill_days": 150}));
    let mut initial = MemorySink::new();
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut initial)
        .await
        .unwrap();
    assert_eq!(
        latest(&initial).keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(30), now(), &[])
    );
    let checkpoint = initial.last_checkpoint().unwrap().clone();
    sim.counters().reset();
    let mut sink = MemorySink::new();
    let report = c
        .sync(
            &ctx(SyncMode::Backfill, now(), Some(&checkpoint)),
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(
        latest(&sink).keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(150), now() - days(30), &[]),
        "exactly the history before the initial window, down to backfill_days"
    );
    assert_eq!(
        written_ids(&sink).len(),
        latest(&sink).len(),
        "every call once"
    );
    // Four 30-day slices per user, each a checkpoint of its own; watermarks untouched.
    assert!(sim.counters().get("POST /v2/calls/extensive") >= 8);
    let cp = sink.last_checkpoint().unwrap();
    for u in &users {
        let s = cp.stream(&format!("calls:{u}")).unwrap();
        assert_eq!(s.extra["covered_from"], json!("2024-10-02T12:00:00Z"));
        assert!(!s.extra.contains_key("backfill_cursor"));
        assert_eq!(s.watermark, checkpoint.watermark(&format!("calls:{u}")));
        assert_eq!(
            report.details["by_user"][u]["covered_from"],
            json!("2024-10-02T12:00:00Z")
        );
    }
    // Done: another backfill only lists the users.
    sim.counters().reset();
    let mut again = MemorySink::new();
    let r = c
        .sync(&ctx(SyncMode::Backfill, now(), Some(cp)), &mut again)
        .await
        .unwrap();
    assert_eq!(r.records_fetched, 0);
    assert_eq!(sim.counters().get("POST /v2/calls/extensive"), 0);

    // A backfill for a user never synced reads its initial window first.
    let mut fresh = MemorySink::new();
    c.sync(&ctx(SyncMode::Backfill, now(), None), &mut fresh)
        .await
        .unwrap();
    assert_eq!(
        latest(&fresh).keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(150), now(), &[])
    );
}

#[tokio::test]
async fn a_stored_cursor_gong_rejects_restarts_its_window() {
    let sim = GongSim::start(sim_config(1, 150, 30)).await.unwrap();
    let user = sim.active_user_ids().remove(0);
    let c = connector(&sim, json!({}));
    let mut checkpoint = Checkpoint::default();
    let s = checkpoint.stream_mut(&format!("calls:{user}"));
    s.cursor = Some("expired-cursor".into());
    s.extra
        .insert("window_from".into(), json!("2024-12-01T12:00:00Z"));
    s.extra
        .insert("window_to".into(), json!("2025-03-01T12:00:00Z"));
    let mut sink = MemorySink::new();
    let report = c
        .sync(
            &ctx(SyncMode::Incremental, now(), Some(&checkpoint)),
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(report.details["by_user"][&user]["status"], "completed");
    assert_eq!(
        latest(&sink).keys().cloned().collect::<BTreeSet<_>>(),
        truth_ids(&sim, now() - days(90), now(), &[])
    );
}

/// A sink that fails its second write, like a crash between pages.
struct DiesOnSecondWrite(MemorySink);

#[async_trait]
impl RecordSink for DiesOnSecondWrite {
    async fn write(
        &mut self,
        batch: RecordBatch,
        checkpoint: &Checkpoint,
    ) -> pandora_sync::Result<WriteCounts> {
        if self.0.batches.len() == 1 {
            return Err(Error::storage(
                "disk full",
                std::io::Error::other("simulated"),
            ));
        }
        self.0.write(batch, checkpoint).await
    }
}

#[tokio::test]
async fn a_crash_between_pages_resumes_from_the_page_cursor() {
    let sim = GongSim::start(sim_config(1, 350, 60)).await.unwrap();
    let c = connector(&sim, json!({}));
    let mut sink = DiesOnSecondWrite(MemorySink::new());
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Storage { .. }),
        "storage errors stop the sync: {err}"
    );
    let checkpoint = sink.0.last_checkpoint().unwrap().clone();
    sim.counters().reset();
    let mut next = MemorySink::new();
    let report: SyncReport = c
        .sync(
            &ctx(SyncMode::Incremental, now(), Some(&checkpoint)),
            &mut next,
        )
        .await
        .unwrap();
    let mut all = latest(&sink.0);
    all.extend(latest(&next));
    assert_eq!(all.len(), 350);
    // Resumed at page 2 (3 requests to finish the pass), then the overlap window.
    assert!(report.records_fetched >= 250);
    assert!(!latest(&next).contains_key(&sim.truth_calls(now() - days(90), now(), &[])[0].id));
}

#[tokio::test]
async fn malformed_calls_are_captured_with_their_ids() {
    let sim = GongSim::start(GongSimConfig {
        faults: FaultConfig {
            malformed_rate: 0.1,
            ..Default::default()
        },
        ..sim_config(2, 200, 30)
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    let bad: BTreeSet<String> = sim
        .calls()
        .map(|c| c.id)
        .filter(|id| sim.is_malformed(id))
        .collect();
    assert!(!bad.is_empty());
    let failed: BTreeSet<String> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.failures.iter())
        .map(|f| f.record_id.clone().unwrap())
        .collect();
    assert_eq!(failed, bad);
    assert_eq!(report.records_failed, bad.len() as u64);
    assert_eq!(report.records_fetched, 200 - bad.len() as u64);
    assert_eq!(report.details["users_failed"], 0);
}

#[tokio::test]
async fn bad_credentials_fail_the_sync() {
    let sim = GongSim::start(sim_config(1, 10, 30)).await.unwrap();
    let c = GongConnector::new(
        &sim.base_url(),
        GongCredentials::access_key("wrong", SecretString::from("nope")),
        GongConfig::default(),
    )
    .unwrap();
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut MemorySink::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    assert!(
        GongConnector::new(
            "ftp://x",
            GongCredentials::access_key("a", SecretString::from("b")),
            GongConfig::default()
        )
        .is_err()
    );
}

/// Issue 13: 20 tracked users, nothing changed. The calls of all of them are read with one
/// `primaryUserIds` list, so a sync makes one request per page of calls plus the users
/// listing (it made one request per user before: 21 for an unchanged incremental run).
#[tokio::test]
async fn twenty_users_cost_one_request_per_page_of_calls() {
    let sim = GongSim::start(sim_config(20, 400, 120)).await.unwrap();
    let users = sim.active_user_ids();
    assert_eq!(users.len(), 20);
    let c = connector(&sim, json!({}));
    let mut first = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut first)
        .await
        .unwrap();
    let want = truth_ids(&sim, now() - days(90), now(), &users);
    let pages = (want.len() as u64).div_ceil(100);
    assert!(pages >= 3, "{pages}");
    assert_eq!(
        sim.counters().snapshot(),
        BTreeMap::from([
            ("GET /v2/users".to_owned(), 1),
            ("POST /v2/calls/extensive".to_owned(), pages),
        ])
    );
    assert_eq!(report.details["http"]["requests"], 1 + pages);
    // Every request asked for all 20 users at once.
    let tracked: BTreeSet<String> = users.iter().cloned().collect();
    let log = sim.primary_user_ids_log();
    assert_eq!(log.len() as u64, pages);
    for ids in &log {
        let ids = ids.as_ref().unwrap();
        assert_eq!(ids.len(), 20);
        assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), tracked);
    }
    assert_eq!(
        latest(&first).keys().cloned().collect::<BTreeSet<_>>(),
        want
    );
    // Per-user results, derived from the calls' hosts.
    let by_user = &report.details["by_user"];
    assert_eq!(by_user.as_object().unwrap().len(), 20);
    let cp = first.last_checkpoint().unwrap().clone();
    let totals: BTreeMap<String, u64> = report
        .source_totals
        .iter()
        .map(|t| (t.stream.clone(), t.total))
        .collect();
    for u in &users {
        let mine = sim.truth_calls(now() - days(90), now(), std::slice::from_ref(u));
        assert_eq!(by_user[u]["status"], "completed");
        assert_eq!(by_user[u]["calls"], mine.len(), "{u}");
        assert_eq!(by_user[u]["failed_records"], 0);
        assert_eq!(by_user[u]["pages"], pages);
        assert_eq!(totals[&format!("calls:{u}")], mine.len() as u64, "{u}");
        let s = cp.stream(&format!("calls:{u}")).unwrap();
        let newest = mine.iter().map(|c| c.started).max();
        assert_eq!(
            s.watermark,
            newest.map(|n| n.min(now() - chrono::Duration::minutes(5)))
        );
        assert_eq!(by_user[u]["watermark"], json!(s.watermark));
    }

    // Nothing changed: the users listing and the pages of the shared overlap window.
    sim.counters().reset();
    let later = now() + chrono::Duration::hours(1);
    let mut second = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Incremental, later, Some(&cp)), &mut second)
        .await
        .unwrap();
    let overlap = truth_ids(
        &sim,
        now() - chrono::Duration::minutes(5) - days(14),
        later,
        &users,
    );
    let pages = (overlap.len() as u64).div_ceil(100).max(1);
    assert_eq!(pages, 1, "{} calls in the overlap", overlap.len());
    assert_eq!(
        sim.counters().snapshot(),
        BTreeMap::from([
            ("GET /v2/users".to_owned(), 1),
            ("POST /v2/calls/extensive".to_owned(), pages),
        ]),
        "2 requests where one per user made 21"
    );
    assert_eq!(
        latest(&second).keys().cloned().collect::<BTreeSet<_>>(),
        overlap
    );
    assert_eq!(report.details["users_failed"], 0);
    for u in &users {
        assert_eq!(report.details["by_user"][u]["status"], "completed");
    }
}
