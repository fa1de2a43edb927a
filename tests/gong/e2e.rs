//! End to end: Gong simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pandora_sync::hooks::{BuiltinHooksConfig, InternalFilter};
use pandora_sync::model::{Conversation, RecordKind};
use pandora_sync::orchestrator::ConnectorResult;
use pandora_sync::simulator::{FaultConfig, GongAffiliation, GongSim, GongSimConfig, NewGongCall};
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

fn fast_config() -> serde_json::Value {
    json!({"rate_limit": {"max_requests": 100000, "window_ms": 1000}})
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

async fn setup(env: &Env, sim: &GongSim, config: serde_json::Value) -> (Uuid, Orchestrator) {
    let ws = Uuid::new_v4();
    let creds = Credentials::from_json(json!({
        "access_key": sim.config().access_key,
        "access_key_secret": sim.config().access_key_secret,
    }))
    .unwrap();
    env.store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Gong, "api_key")
                .with_credentials(creds)
                .with_config(config),
        )
        .await
        .unwrap();
    let registry =
        ConnectorRegistry::builtin(&BTreeMap::from([(ConnectorKind::Gong, sim.base_url())]));
    (ws, Orchestrator::new(env.store.clone(), registry))
}

async fn sync(o: &Orchestrator, ws: Uuid) -> ConnectorResult {
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors.len(), 1);
    r.connectors[0].clone()
}

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
            out.insert(c.meta.source_id.clone(), c);
        }
        if done {
            return out;
        }
    }
}

/// The database holds exactly the simulator's calls of `hosts`, field by field.
async fn assert_equals_truth(env: &Env, ws: Uuid, sim: &GongSim, hosts: &[String]) {
    let now = sim.config().now;
    let truth = sim.truth_calls(now - days(365), now + days(1), hosts);
    let rows = stored(&env.store, ws).await;
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        truth.iter().map(|c| c.id.clone()).collect::<BTreeSet<_>>(),
        "exactly the tracked users' calls"
    );
    for call in &truth {
        assert_conversation(&rows[&call.id], call, sim);
    }
}

pub async fn initial_sync_equals_truth_for_tracked_users(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 5,
        calls: 500,
        days: 60,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let users = sim.users();
    sim.deactivate_user(&users[4].id);
    let tracked = [
        users[0].id.clone(),
        users[1].id.clone(),
        users[4].id.clone(),
    ];
    let mut config = fast_config();
    config["tracked_users"] = json!([users[0].email.to_uppercase(), users[1].id, users[4].email]);
    let (ws, o) = setup(&env, &sim, config).await;
    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Initial, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    let want = sim
        .truth_calls(sim.config().now - days(90), sim.config().now, &tracked)
        .len() as u64;
    assert!(want > 0 && want < 500);
    assert_eq!(c.counts.inserted, want);
    assert_eq!(c.records_by_table["conversations"], want);
    assert_eq!(
        c.requests,
        1 + want.div_ceil(100),
        "a users page, then the pages of all tracked users' calls together"
    );
    assert_equals_truth(&env, ws, &sim, &tracked).await;

    // The connection keeps one stream per tracked user, and the company's request count of
    // the day (the daily quota, kept with the connection).
    let row = env
        .store
        .get_connection(ws, ConnectorKind::Gong)
        .await
        .unwrap()
        .unwrap();
    let checkpoint = row.checkpoint().unwrap();
    let streams: BTreeSet<String> = checkpoint.streams.keys().cloned().collect();
    let mut want_streams: BTreeSet<String> = tracked.iter().map(|u| format!("calls:{u}")).collect();
    want_streams.insert("gong:requests".to_owned());
    assert_eq!(streams, want_streams);
    let quota = &checkpoint.streams["gong:requests"].extra;
    assert!(quota["used"].as_u64().unwrap() > tracked.len() as u64);

    // A second run is incremental and changes nothing.
    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(c.counts.written(), 0, "{:?}", c.counts);
    assert!(c.counts.unchanged > 0, "the overlap window is re-read");
    assert_equals_truth(&env, ws, &sim, &tracked).await;
}

pub async fn incremental_writes_exactly_the_added_and_changed_calls(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 3,
        calls: 400,
        days: 60,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let users = sim.users();
    sim.deactivate_user(&users[2].id);
    let tracked = [users[0].id.clone(), users[1].id.clone()];
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let c = sync(&o, ws).await;
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_equals_truth(&env, ws, &sim, &tracked).await;

    // Gong calls change after they happen; new ones arrive (one from an untracked user).
    let now = sim.config().now;
    sim.add_call(NewGongCall::new(
        users[0].id.clone(),
        now - chrono::Duration::minutes(30),
    ))
    .unwrap();
    sim.add_call(NewGongCall::new(users[1].id.clone(), now - days(2)).title("Logged late"))
        .unwrap();
    sim.add_call(NewGongCall::new(
        users[2].id.clone(),
        now - chrono::Duration::minutes(10),
    ))
    .unwrap();
    let recent = sim.truth_calls(now - days(7), now, &tracked);
    assert!(recent.len() >= 12);
    sim.modify_call(&recent[1].id, |c| {
        c.title = format!("{} (follow-up)", c.title)
    });
    sim.modify_call(&recent[5].id, |c| {
        let mut guest = c.parties[0].clone();
        guest.id = "1".into();
        guest.email = Some("late.joiner@guest.example".into());
        guest.name = Some("Late Joiner".into());
        guest.user_id = None;
        guest.affiliation = pandora_sync::simulator::GongAffiliation::External;
        c.parties.push(guest);
    });
    sim.modify_call(&recent[11].id, |c| {
        c.duration += 90;
        c.title = "Re-titled".into();
    });
    sim.counters().reset();

    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(
        c.counts.inserted, 2,
        "the two new calls of tracked users: {:?}",
        c.counts
    );
    assert_eq!(
        c.counts.updated, 3,
        "the three changed calls: {:?}",
        c.counts
    );
    assert!(
        c.counts.unchanged > 0,
        "the rest of the overlap window is re-read, unchanged"
    );
    assert_equals_truth(&env, ws, &sim, &tracked).await;
    // Only the requests the windows need: one users page and one calls page for both
    // users (`primaryUserIds` takes a list).
    let counts = sim.counters().snapshot();
    assert_eq!(counts.get("GET /v2/users"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("POST /v2/calls/extensive"),
        Some(&1),
        "{counts:?}"
    );
}

pub async fn empty_range_completes_cleanly(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 3,
        calls: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    for mode in [SyncMode::Initial, SyncMode::Incremental] {
        let c = sync(&o, ws).await;
        assert_eq!(
            (c.mode, c.status),
            (mode, SyncStatus::Completed),
            "{:?}",
            c.error
        );
        assert_eq!(c.counts.written(), 0);
        assert_eq!(c.errors.total, 0);
        assert!(c.error.is_none() && !c.rate_limited);
    }
    assert_eq!(
        sim.counters().get("POST /v2/calls/extensive"),
        2,
        "one 404 per run for all users"
    );
    assert!(stored(&env.store, ws).await.is_empty());
    let history = env
        .store
        .sync_history(ws, Some(ConnectorKind::Gong), 10)
        .await
        .unwrap();
    assert!(
        history.iter().all(|h| h.status == SyncStatus::Completed),
        "{history:?}"
    );
}

pub async fn rate_limit_storms_lose_nothing(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 3,
        calls: 450,
        days: 60,
        rate_limits: true,
        retry_after: Duration::from_secs(1),
        faults: FaultConfig {
            rate_limit_rate: 0.2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let tracked = sim.active_user_ids();
    // The client allows more than Gong's 3 per second, so Gong's own limit answers too.
    let config = json!({"rate_limit": {"max_requests": 20, "window_ms": 1000}});
    let (ws, o) = setup(&env, &sim, config).await;
    // A storm longer than the retries: the first run stops, rate limited (a job would be
    // snoozed, not failed).
    sim.burst_429(5);
    let first = sync(&o, ws).await;
    assert!(first.rate_limited, "{first:?}");
    assert!(first.retry_after_ms.is_some());
    let mut retries = first.retries;
    let mut done = false;
    for _ in 0..6 {
        let c = sync(&o, ws).await;
        retries += c.retries;
        if c.status == SyncStatus::Completed {
            done = true;
            break;
        }
        assert!(
            c.rate_limited,
            "only rate limits may stop a run: {:?}",
            c.error
        );
    }
    assert!(done, "a run completes");
    assert!(retries > 0, "the storm was retried through");
    assert_equals_truth(&env, ws, &sim, &tracked).await;
}

/// The daily request count is kept with the connection through the store: a later run
/// that would pass the limit stops before its first request, as rate limited (snoozed), and
/// leaves the stored count as it was.
pub async fn the_daily_count_survives_between_runs(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 2,
        calls: 100,
        days: 30,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    // users + one page for both users = 2 requests for the first run.
    let mut config = fast_config();
    config["daily_limit"] = json!(2);
    let (ws, o) = setup(&env, &sim, config).await;
    let first = sync(&o, ws).await;
    assert_eq!(first.status, SyncStatus::Completed, "{:?}", first.error);
    let used = |env: &Env| {
        let store = env.store.clone();
        async move {
            let row = store
                .get_connection(ws, ConnectorKind::Gong)
                .await
                .unwrap()
                .unwrap();
            let cp = row.checkpoint().unwrap();
            cp.streams["gong:requests"].extra["used"].clone()
        }
    };
    assert_eq!(used(&env).await, json!(2));

    sim.counters().reset();
    let second = sync(&o, ws).await;
    assert!(second.rate_limited, "a quota stop is snoozed: {second:?}");
    assert!(
        second.error.as_deref().unwrap_or("").contains("quota"),
        "{:?}",
        second.error
    );
    assert_eq!(sim.counters().total(), 0, "no request past the limit");
    assert_eq!(used(&env).await, json!(2));
}

/// One owner per column: the connector writes the participants' `is_internal` (Gong's
/// `affiliation`), the internal-filter hook `conversations.is_internal` (from the internal
/// domains, here the connection's `internal_domains`). A party whose affiliation and
/// domain disagree keeps the connector's flag, so a resync that re-reads the call stores
/// nothing and the hook flips nothing back.
pub async fn is_internal_has_one_owner_per_column(env: Env) {
    let sim = GongSim::start(GongSimConfig {
        users: 2,
        calls: 60,
        days: 20,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let now = sim.config().now;
    let domain = sim.config().internal_domain.clone();
    // A colleague Gong does not know (affiliation Unknown) on the company's domain.
    let call = sim.truth_calls(now - days(5), now, &[])[0].id.clone();
    sim.modify_call(&call, |c| {
        let mut p = c.parties[0].clone();
        p.id = "2".into();
        p.email = Some(format!("colleague@{domain}"));
        p.name = Some("Colleague".into());
        p.user_id = None;
        p.speaker_id = None;
        p.affiliation = GongAffiliation::Unknown;
        c.parties.push(p);
    });
    let mut config = fast_config();
    config["internal_domains"] = json!([domain]);
    let (ws, o) = setup(&env, &sim, config).await;
    let o = o.with_builtin_hooks(BuiltinHooksConfig::default());

    let first = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(first.connectors[0].status, SyncStatus::Completed);
    let filter = first
        .hooks
        .iter()
        .find(|h| h.name == InternalFilter::NAME)
        .unwrap();
    assert!(filter.error.is_none(), "{filter:?}");
    let rows = stored(&env.store, ws).await;
    assert!(
        rows.values().all(|c| c.is_internal.is_some()),
        "the filter decided every conversation"
    );
    let colleague = rows[&call]
        .participants
        .iter()
        .find(|p| p.email.as_deref() == Some(&format!("colleague@{domain}")))
        .unwrap();
    assert!(
        !colleague.is_internal,
        "the connector's flag (affiliation Unknown) stays"
    );

    // A resync re-reads the overlap (the changed call included): nothing is written.
    let second = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &second.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert!(c.counts.unchanged > 0);
    assert_eq!(c.counts.written(), 0, "no ping-pong: {:?}", c.counts);
    assert_eq!(
        stored(&env.store, ws).await,
        rows,
        "the hook flipped nothing back"
    );
}
