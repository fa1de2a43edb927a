//! Issue 11, Gong part: live changes between pages and between an interrupted run and its
//! resume, expiring cursors, repair passes, source totals, the persisted daily quota and
//! absurd stored dates (connector against the simulator, into an in-memory sink).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::connector::{MemorySink, WriteCounts};
use pandora_sync::connectors::gong::{GongConfig, GongConnector, GongCredentials};
use pandora_sync::model::{Conversation, RecordKind};
use pandora_sync::simulator::{GongSim, GongSimConfig, NewGongCall};
use pandora_sync::{
    Checkpoint, Error, Record, RecordBatch, RecordSink, SyncCapable, SyncContext, SyncMode,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

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

fn ctx(mode: SyncMode, at: DateTime<Utc>, previous: Option<&Checkpoint>) -> SyncContext {
    SyncContext::new(Uuid::from_u128(78), mode)
        .with_started_at(at)
        .with_previous(previous.cloned().unwrap_or_default())
}

fn latest(sink: &MemorySink) -> BTreeMap<String, Conversation> {
    sink.records()
        .filter_map(|r| match r {
            Record::Conversation(c) => Some((c.meta.source_id.clone(), c.clone())),
            _ => None,
        })
        .collect()
}

fn ids(sink: &MemorySink) -> BTreeSet<String> {
    latest(sink).into_keys().collect()
}

fn truth(sim: &GongSim, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeSet<String> {
    sim.truth_calls(from, to, &[])
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// A sink that runs `hook` before storing each batch that carries records (with the
/// number of such batches stored so far), and fails the write numbered `die_at`, if any,
/// like a crash between pages.
struct Hooked<F: FnMut(usize) + Send> {
    inner: MemorySink,
    pages: usize,
    die_at: Option<usize>,
    hook: F,
}

impl<F: FnMut(usize) + Send> Hooked<F> {
    fn new(die_at: Option<usize>, hook: F) -> Self {
        Hooked {
            inner: MemorySink::new(),
            pages: 0,
            die_at,
            hook,
        }
    }
}

#[async_trait]
impl<F: FnMut(usize) + Send> RecordSink for Hooked<F> {
    async fn write(
        &mut self,
        batch: RecordBatch,
        checkpoint: &Checkpoint,
    ) -> pandora_sync::Result<WriteCounts> {
        if !batch.records.is_empty() {
            if self.die_at == Some(self.pages) {
                return Err(Error::storage("killed", std::io::Error::other("crash")));
            }
            (self.hook)(self.pages);
            self.pages += 1;
        }
        self.inner.write(batch, checkpoint).await
    }
}

/// Case 2: a call added between the crash and the resume, below the stored cursor and
/// inside the interrupted pass's window, is stored by the resumed run's follow-up pass,
/// because the resumed pass finishes with its own window (watermark capped at its own
/// start minus the lag) instead of the resuming run's.
#[tokio::test]
async fn a_call_added_below_the_cursor_between_crash_and_resume_is_stored() {
    let sim = GongSim::start(sim_config(1, 0, 30)).await.unwrap();
    let user = sim.active_user_ids().remove(0);
    let t1 = now();
    // 150 calls in the four minutes before the first run: two pages.
    for i in 0..150 {
        sim.add_call(NewGongCall::new(
            user.clone(),
            t1 - chrono::Duration::seconds(240) + chrono::Duration::seconds(i),
        ))
        .unwrap();
    }
    // No overlap: the watermark alone says where the next pass starts.
    let c = connector(&sim, json!({"overlap_days": 0}));
    let mut sink = Hooked::new(Some(1), |_| {});
    let err = c
        .sync(&ctx(SyncMode::Initial, t1, None), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    let checkpoint = sink.inner.last_checkpoint().unwrap().clone();
    // The batched pass in progress has a stream of its own with its exact filter.
    let stream = checkpoint.stream("gong:pass:0").unwrap();
    assert!(stream.cursor.is_some(), "interrupted after page 1");
    assert_eq!(
        stream.pass_started_at,
        Some(t1),
        "the pass carries its window"
    );
    assert_eq!(stream.extra["users"], json!([user]));
    assert_eq!(stream.extra["kind"], json!("main"));
    assert_eq!(stream.extra["window_to"], json!("2025-03-01T12:00:00Z"));
    assert!(
        checkpoint
            .stream(&format!("calls:{user}"))
            .is_none_or(|s| s.cursor.is_none()),
        "no cursor in the user's stream"
    );

    // Between the crash and the resume: a call below the cursor (page 1 ended at
    // t1 - 141 s), inside the pass's window.
    let late = sim
        .add_call(NewGongCall::new(
            user.clone(),
            t1 - chrono::Duration::seconds(180),
        ))
        .unwrap();

    let t2 = t1 + chrono::Duration::hours(1);
    let mut next = MemorySink::new();
    c.sync(
        &ctx(SyncMode::Incremental, t2, Some(&checkpoint)),
        &mut next,
    )
    .await
    .unwrap();
    assert!(
        ids(&next).contains(&late),
        "the late call was skipped for good"
    );
    let mut all = ids(&sink.inner);
    all.extend(ids(&next));
    assert_eq!(all, truth(&sim, t1 - days(90), t2), "nothing lost");
    let s = next
        .last_checkpoint()
        .unwrap()
        .stream(&format!("calls:{user}"))
        .unwrap();
    assert!(s.cursor.is_none() && s.pass_started_at.is_none());
    assert!(
        next.last_checkpoint()
            .unwrap()
            .stream("gong:pass:0")
            .is_none(),
        "the finished pass's stream is gone"
    );
}

/// Case 2, old checkpoints: a cursor stored with the connector-specific
/// `window_from`/`window_to` keys is migrated (the pass ends with `window_to` as its start).
#[tokio::test]
async fn an_old_checkpoint_window_is_read_and_migrated() {
    let sim = GongSim::start(sim_config(1, 250, 60)).await.unwrap();
    let user = sim.active_user_ids().remove(0);
    let c = connector(&sim, json!({}));
    // Page 1 of the initial pass, the way the previous release stored it.
    let mut first = Hooked::new(Some(1), |_| {});
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut first)
        .await
        .unwrap_err();
    // Page 1 of the initial pass, the way an earlier release stored it: the cursor and the
    // window in the user's own stream (`window_from`, `window_to`).
    let mut cp = first.inner.last_checkpoint().unwrap().clone();
    let pass = cp.streams.remove("gong:pass:0").unwrap();
    assert_eq!(pass.pass_started_at, Some(now()));
    let s = cp.stream_mut(&format!("calls:{user}"));
    s.cursor = pass.cursor.clone();
    s.extra
        .insert("window_from".into(), pass.extra["window_from"].clone());
    s.extra
        .insert("window_to".into(), json!("2025-03-01T12:00:00Z"));
    let cp = Checkpoint::from_json(&cp.to_json()).unwrap();

    let mut next = MemorySink::new();
    c.sync(
        &ctx(SyncMode::Incremental, now() + days(1), Some(&cp)),
        &mut next,
    )
    .await
    .unwrap();
    let mut all = ids(&first.inner);
    all.extend(ids(&next));
    assert_eq!(all, truth(&sim, now() - days(90), now() + days(1)));
    // The resumed pass checkpointed its pages in the new shape: a single-user pass stream.
    let resumed = &next.batches[0].1;
    let s = resumed.stream(&format!("calls:{user}")).unwrap();
    assert!(s.cursor.is_none() && s.pass_started_at.is_none());
    assert!(!s.extra.contains_key("window_to") && !s.extra.contains_key("window_from"));
    if let Some(p) = resumed.stream("gong:pass:0") {
        assert_eq!(p.pass_started_at, Some(now()));
        assert_eq!(p.extra["users"], json!([user]));
    }
    // Finished with its own window: the watermark is capped at its start minus the lag.
    let end = next.last_checkpoint().unwrap();
    assert!(end.watermark(&format!("calls:{user}")).unwrap() <= now() + days(1));
}

/// Case 1 for Gong: calls added and changed inside the window while a pass pages through
/// it. The extensive endpoint's cursor is opaque; the simulator's is a key (start time,
/// id), so no call that existed throughout the pass is skipped and every change made
/// after a page was served is read by the pass or the next run's overlap.
#[tokio::test]
async fn changes_between_pages_skip_nothing() {
    let sim = GongSim::start(sim_config(2, 600, 60)).await.unwrap();
    let users = sim.active_user_ids();
    let before = truth(&sim, now() - days(90), now());
    let c = connector(&sim, json!({}));
    let added = std::sync::Mutex::new(Vec::new());
    let mut sink = Hooked::new(None, |page| {
        // Before each stored page: a call early in the window (below every cursor), one
        // late in it (ahead), and a changed title on an early call.
        let early = now() - days(59) + chrono::Duration::seconds(i64::try_from(page).unwrap());
        let late = now()
            - chrono::Duration::hours(1)
            - chrono::Duration::seconds(i64::try_from(page).unwrap());
        for (i, at) in [early, late].into_iter().enumerate() {
            let host = users[(page + i) % users.len()].clone();
            let id = sim.add_call(NewGongCall::new(host, at)).unwrap();
            added.lock().unwrap().push(id);
        }
        let first = sim.truth_calls(now() - days(60), now(), &[])[page]
            .id
            .clone();
        sim.modify_call(&first, |c| c.title = format!("changed {page}"));
    });
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    let first = ids(&sink.inner);
    assert!(
        first.is_superset(&before),
        "a call present throughout was skipped"
    );

    // The next run reads everything the pass could not see yet.
    let mut next = MemorySink::new();
    let cp = sink.inner.last_checkpoint().unwrap().clone();
    c.sync(
        &ctx(SyncMode::Incremental, now() + days(1), Some(&cp)),
        &mut next,
    )
    .await
    .unwrap();
    let mut rows = latest(&sink.inner);
    rows.extend(latest(&next));
    let now_truth = truth(&sim, now() - days(90), now() + days(1));
    let late: BTreeSet<_> = added
        .lock()
        .unwrap()
        .iter()
        .filter(|id| sim.call(id).unwrap().started >= now() - days(14))
        .cloned()
        .collect();
    assert!(
        rows.keys()
            .cloned()
            .collect::<BTreeSet<_>>()
            .is_superset(&late)
    );
    // Everything inside the overlap carries its latest version.
    for call in sim.truth_calls(now() - days(14), now() + days(1), &[]) {
        assert_eq!(rows[&call.id].title.as_deref(), Some(call.title.as_str()));
    }
    assert!(now_truth.len() > before.len());
}

/// Case 1 for Gong: a cursor that expires in the middle of a pass (not only a stored one)
/// restarts the window instead of failing the user.
#[tokio::test]
async fn a_cursor_expiring_mid_pass_restarts_the_window() {
    let sim = GongSim::start(sim_config(1, 350, 60)).await.unwrap();
    let c = connector(&sim, json!({}));
    let mut sink = Hooked::new(None, |page| {
        if page == 1 {
            sim.expire_cursors();
        }
    });
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    assert_eq!(report.details["users_failed"], 0);
    assert_eq!(ids(&sink.inner), truth(&sim, now() - days(90), now()));
}

/// The users listing (not checkpointed) starts again when Gong rejects its cursor.
#[tokio::test]
async fn a_users_cursor_expiring_mid_listing_lists_again() {
    let sim = GongSim::start(sim_config(150, 300, 30)).await.unwrap();
    let c = connector(&sim, json!({}));
    // The first users page is served, then its cursor expires.
    sim.expire_cursors_after(1);
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap();
    assert_eq!(report.details["users_tracked"], 150);
    assert_eq!(report.details["users_failed"], 0);
    assert_eq!(ids(&sink), truth(&sim, now() - days(90), now()));
    assert_eq!(
        sim.counters().get("GET /v2/users"),
        4,
        "page 1, rejected page 2, pages 1 and 2"
    );
}

/// A cursor that keeps expiring does not loop forever: the user fails after a bounded
/// number of restarts.
#[tokio::test]
async fn a_cursor_that_always_expires_fails_the_user_without_looping() {
    let sim = GongSim::start(sim_config(1, 350, 60)).await.unwrap();
    let c = connector(&sim, json!({}));
    let mut sink = Hooked::new(None, |_| sim.expire_cursors());
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { status: 400, .. }), "{err}");
    assert!(sim.counters().get("POST /v2/calls/extensive") < 20);
}

/// Repair and reconciliation: a stream flagged `repair` is read in full over the initial
/// window, the flag is cleared when that pass ends, and the pass reports Gong's
/// `records.totalRecords` for the stream.
#[tokio::test]
async fn a_repair_pass_reads_the_initial_window_and_reports_the_total() {
    let sim = GongSim::start(sim_config(2, 400, 80)).await.unwrap();
    let users = sim.active_user_ids();
    let c = connector(&sim, json!({}));
    let mut initial = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut initial)
        .await
        .unwrap();
    // A full (initial) pass reports the totals of every user's window.
    let totals: BTreeMap<String, u64> = report
        .source_totals
        .iter()
        .map(|t| {
            assert_eq!(t.kind, RecordKind::Conversation);
            (t.stream.clone(), t.total)
        })
        .collect();
    for u in &users {
        let want = sim.truth_calls(now() - days(90), now(), std::slice::from_ref(u));
        assert_eq!(totals[&format!("calls:{u}")], want.len() as u64);
    }

    let mut cp = initial.last_checkpoint().unwrap().clone();
    cp.stream_mut(&format!("calls:{}", users[0])).repair = true;
    let at = now() + days(2);
    let mut sink = MemorySink::new();
    let report = c
        .sync(&ctx(SyncMode::Incremental, at, Some(&cp)), &mut sink)
        .await
        .unwrap();
    let got = ids(&sink);
    let want: BTreeSet<String> = sim
        .truth_calls(at - days(90), at, std::slice::from_ref(&users[0]))
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        got.is_superset(&want),
        "the repair pass reads the whole window"
    );
    let end = sink.last_checkpoint().unwrap();
    assert!(!end.stream(&format!("calls:{}", users[0])).unwrap().repair);
    assert_eq!(
        report.source_totals.len(),
        1,
        "only the full pass reports a total: {:?}",
        report.source_totals
    );
    assert_eq!(
        report.source_totals[0].stream,
        format!("calls:{}", users[0])
    );
    assert_eq!(report.source_totals[0].total, want.len() as u64);

    // An incremental run reads the overlap only and reports no total.
    let mut plain = MemorySink::new();
    let r = c
        .sync(&ctx(SyncMode::Incremental, at, Some(end)), &mut plain)
        .await
        .unwrap();
    assert!(r.source_totals.is_empty());

    // A backfill run honours a repair flag too.
    let mut cp = plain.last_checkpoint().unwrap_or(end).clone();
    cp.stream_mut(&format!("calls:{}", users[1])).repair = true;
    let mut back = MemorySink::new();
    let r = c
        .sync(&ctx(SyncMode::Backfill, at, Some(&cp)), &mut back)
        .await
        .unwrap();
    let streams: Vec<_> = r.source_totals.iter().map(|t| t.stream.clone()).collect();
    assert_eq!(streams, [format!("calls:{}", users[1])]);
    let end = back.last_checkpoint().unwrap();
    assert!(!end.stream(&format!("calls:{}", users[1])).unwrap().repair);
}

/// Case 8: a stored watermark at the edge of the representable range (DB state, or a
/// huge watermark lag) does not overflow `watermark - overlap`.
#[tokio::test]
async fn absurd_stored_dates_do_not_overflow() {
    let sim = GongSim::start(sim_config(1, 50, 30)).await.unwrap();
    let user = sim.active_user_ids().remove(0);
    let c = connector(&sim, json!({}));
    let mut cp = Checkpoint::default();
    cp.stream_mut(&format!("calls:{user}")).watermark = Some(DateTime::<Utc>::MIN_UTC);
    let mut sink = MemorySink::new();
    let r = c
        .sync(&ctx(SyncMode::Incremental, now(), Some(&cp)), &mut sink)
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(ids(&sink), truth(&sim, now() - days(90), now()));

    // A lag larger than the calendar: the cap is the earliest instant; the next run
    // starts from there without overflowing.
    let huge = ctx(SyncMode::Initial, now(), None).with_lag(std::time::Duration::MAX);
    let mut first = MemorySink::new();
    c.sync(&huge, &mut first).await.unwrap();
    let cp = first.last_checkpoint().unwrap().clone();
    let mut again = MemorySink::new();
    c.sync(
        &ctx(SyncMode::Incremental, now(), Some(&cp)).with_lag(std::time::Duration::MAX),
        &mut again,
    )
    .await
    .unwrap();

    // Backfill from a covered_from at the edge of the range.
    let mut cp = Checkpoint::default();
    let s = cp.stream_mut(&format!("calls:{user}"));
    s.extra
        .insert("covered_from".into(), json!("0001-01-01T00:00:00Z"));
    s.watermark = Some(now());
    let mut back = MemorySink::new();
    c.sync(&ctx(SyncMode::Backfill, now(), Some(&cp)), &mut back)
        .await
        .unwrap();
}

/// Case 5: the daily request count is kept with the connection (in the checkpoint, with
/// its UTC day); a run that would exceed it stops with `QuotaExhausted` carrying the next
/// UTC midnight, after committing its checkpoint, and a run on the next day goes on.
#[tokio::test]
async fn the_daily_quota_is_counted_across_runs() {
    let sim = GongSim::start(sim_config(1, 250, 60)).await.unwrap();
    // users + 3 pages = 4 requests for the initial run.
    let c = connector(&sim, json!({"daily_limit": 8}));
    let mut first = MemorySink::new();
    c.sync(&ctx(SyncMode::Initial, now(), None), &mut first)
        .await
        .unwrap();
    let cp = first.last_checkpoint().unwrap().clone();
    let quota = cp
        .stream("gong:requests")
        .expect("the count is checkpointed");
    assert_eq!(quota.extra["day"], json!("2025-03-01"));
    assert_eq!(quota.extra["used"], json!(4));

    // Second run the same day: users + the overlap's pages.
    sim.counters().reset();
    let mut second = MemorySink::new();
    c.sync(
        &ctx(
            SyncMode::Incremental,
            now() + chrono::Duration::hours(1),
            Some(&cp),
        ),
        &mut second,
    )
    .await
    .unwrap();
    let cp = second.last_checkpoint().unwrap().clone();
    let used = 4 + sim.counters().total();
    assert_eq!(
        cp.stream("gong:requests").unwrap().extra["used"],
        json!(used)
    );
    assert!(used < 8);

    // A third run would pass 8: it stops, and commits its checkpoint with the count.
    sim.counters().reset();
    let mut third = MemorySink::new();
    let err = c
        .sync(
            &ctx(
                SyncMode::Initial,
                now() + chrono::Duration::hours(2),
                Some(&cp),
            ),
            &mut third,
        )
        .await
        .unwrap_err();
    match &err {
        Error::QuotaExhausted {
            resets_at: Some(at),
            ..
        } => assert_eq!(*at, Utc.with_ymd_and_hms(2025, 3, 2, 0, 0, 0).unwrap()),
        other => panic!("expected a quota stop, got {other}"),
    }
    let stopped = third.last_checkpoint().expect("committed before stopping");
    assert_eq!(
        stopped.stream("gong:requests").unwrap().extra["used"],
        json!(8)
    );
    assert!(sim.counters().get("POST /v2/calls/extensive") <= 2);

    // The next UTC day starts from zero.
    let mut fourth = MemorySink::new();
    c.sync(
        &ctx(
            SyncMode::Incremental,
            Utc.with_ymd_and_hms(2025, 3, 2, 0, 0, 5).unwrap(),
            Some(stopped),
        ),
        &mut fourth,
    )
    .await
    .unwrap();
    let q = fourth
        .last_checkpoint()
        .unwrap()
        .stream("gong:requests")
        .unwrap()
        .clone();
    assert_eq!(q.extra["day"], json!("2025-03-02"));
    let used = q.extra["used"].as_u64().unwrap();
    assert!(used > 0 && used < 8, "{used}");
}

/// A Gong 429 with `Retry-After` is a rate limit (snoozed), not a quota stop, and it is
/// not counted against the day beyond the requests made.
#[tokio::test]
async fn a_gong_429_is_a_rate_limit_not_a_quota() {
    let sim = GongSim::start(GongSimConfig {
        // Longer than the retry budget (5 minutes): the request gives up at once.
        retry_after: std::time::Duration::from_secs(400),
        ..sim_config(1, 50, 30)
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    sim.burst_429(100);
    let err = c
        .sync(&ctx(SyncMode::Initial, now(), None), &mut MemorySink::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 400),
        "{err}"
    );
}
