//! End to end: monday simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pandora_sync::model::{RecordKind, Task};
use pandora_sync::orchestrator::ConnectorResult;
use pandora_sync::simulator::{FaultConfig, MondayItemState, MondaySim};
use pandora_sync::store::{NewConnection, RecordQuery, SyncStatus};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Orchestrator, Record, SyncMode, SyncOptions,
    SyncStore,
};
use serde_json::json;
use uuid::Uuid;

use crate::truth::{assert_task, fast, full_sync_requests, workspace};

pub use crate::store_env::Env;
#[cfg(feature = "postgres")]
pub use crate::store_env::run_postgres;
#[cfg(feature = "sqlite")]
pub use crate::store_env::run_sqlite;

async fn setup(env: &Env, sim: &MondaySim, config: serde_json::Value) -> (Uuid, Orchestrator) {
    let ws = Uuid::new_v4();
    let creds = Credentials::from_json(json!({"api_token": sim.config().api_token})).unwrap();
    env.store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Monday, "api_token")
                .with_credentials(creds)
                .with_config(config),
        )
        .await
        .unwrap();
    let registry =
        ConnectorRegistry::builtin(&BTreeMap::from([(ConnectorKind::Monday, sim.base_url())]));
    (ws, Orchestrator::new(env.store.clone(), registry))
}

async fn sync(o: &Orchestrator, ws: Uuid) -> ConnectorResult {
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors.len(), 1);
    r.connectors[0].clone()
}

async fn stored(store: &Arc<dyn SyncStore>, ws: Uuid) -> BTreeMap<String, Task> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_records(
                ws,
                RecordKind::Task,
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
            let Record::Task(t) = r else {
                panic!("not a task")
            };
            out.insert(t.meta.source_id.clone(), t);
        }
        if done {
            return out;
        }
    }
}

/// The database holds every item the simulator ever showed: the active ones equal to the
/// truth field by field, the archived and deleted ones soft-deleted.
async fn assert_equals_truth(env: &Env, ws: Uuid, sim: &MondaySim, removed: &BTreeSet<String>) {
    let rows = stored(&env.store, ws).await;
    let items = sim.items();
    let live: BTreeSet<String> = items
        .iter()
        .filter(|i| i.state == MondayItemState::Active)
        .map(|i| i.id.clone())
        .collect();
    let stored_live: BTreeSet<String> = rows
        .values()
        .filter(|t| t.meta.archived_at.is_none())
        .map(|t| t.meta.source_id.clone())
        .collect();
    let missing: Vec<_> = live.difference(&stored_live).collect();
    let extra: Vec<_> = stored_live.difference(&live).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "live rows: missing {missing:?}, extra {extra:?}"
    );
    let stored_archived: BTreeSet<String> = rows
        .values()
        .filter(|t| t.meta.archived_at.is_some())
        .map(|t| t.meta.source_id.clone())
        .collect();
    assert_eq!(
        &stored_archived, removed,
        "exactly the archived and deleted items are soft-deleted"
    );
    for item in items.iter().filter(|i| i.state == MondayItemState::Active) {
        assert_task(&rows[&item.id], item, sim);
    }
}

pub async fn a_workspace_of_25_boards_equals_the_truth(env: Env) {
    let sim = MondaySim::start(workspace()).await.unwrap();
    let (ws, o) = setup(&env, &sim, fast()).await;
    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Initial, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(c.counts.inserted, 1_250 + 24 * 12);
    assert_eq!(c.requests, full_sync_requests(&sim));
    assert_equals_truth(&env, ws, &sim, &BTreeSet::new()).await;
    let row = env
        .store
        .get_connection(ws, ConnectorKind::Monday)
        .await
        .unwrap()
        .unwrap();
    // The account id its webhooks carry (`accountId`), recorded after the first sync.
    assert_eq!(
        row.sync_cursor.as_ref().unwrap()[pandora_sync::connector::WEBHOOK_ACCOUNT_KEY]["account"],
        json!(sim.config().account_id.to_string())
    );
    let cp = row.checkpoint().unwrap();
    assert_eq!(cp.streams.len(), 25, "one stream per board");
    assert!(
        cp.streams
            .values()
            .all(|s| s.watermark.is_some() && s.cursor.is_none())
    );

    // A second run is incremental, reads one page per board and writes nothing.
    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(c.counts.written(), 0, "{:?}", c.counts);
    assert_eq!(
        c.requests, 4,
        "the listing and three shared first-page requests"
    );
    assert_equals_truth(&env, ws, &sim, &BTreeSet::new()).await;
}

pub async fn incremental_writes_exactly_the_100_changes(env: Env) {
    let sim = MondaySim::start(workspace()).await.unwrap();
    let (ws, o) = setup(&env, &sim, fast()).await;
    let c = sync(&o, ws).await;
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);

    let boards = sim.boards();
    let users = sim.users();
    let mut items = sim.items();
    items.sort_by_key(|i| i.id.clone());
    // Spread the changes over the boards: every 7th item.
    let mut pick = items
        .iter()
        .step_by(7)
        .cloned()
        .collect::<Vec<_>>()
        .into_iter();
    let mut next = || pick.next().unwrap();
    let mut removed = BTreeSet::new();
    for k in 0..20 {
        sim.add_item(&boards[k % boards.len()].id, &format!("New task {k}"))
            .unwrap();
    }
    for k in 0..20 {
        assert!(sim.rename_item(&next().id, &format!("Renamed {k}")));
    }
    for k in 0..15 {
        let i = next();
        let other = users.iter().find(|u| !i.people.contains(&u.id)).unwrap();
        assert!(sim.set_people(
            &i.id,
            &[other.id.clone(), users[k % users.len()].id.clone()][..1 + k % 2]
        ));
    }
    let (mut to_done, mut from_done) = (0, 0);
    while to_done < 10 || from_done < 10 {
        let i = next();
        let b = sim.board(&i.board_id).unwrap();
        if sim.is_done(&i) && from_done < 10 {
            let open = *b
                .status_labels
                .keys()
                .find(|k| !b.done_indexes.contains(k))
                .unwrap();
            assert!(sim.set_status_index(&i.id, Some(open)));
            from_done += 1;
        } else if !sim.is_done(&i) && to_done < 10 {
            assert!(sim.set_status_index(&i.id, Some(b.done_indexes[0])));
            to_done += 1;
        }
    }
    for _ in 0..10 {
        let i = next();
        let b = sim.board(&i.board_id).unwrap();
        let other = b.groups.iter().find(|g| g.id != i.group_id).unwrap();
        assert!(sim.move_to_group(&i.id, &other.id));
    }
    for _ in 0..8 {
        let i = next();
        assert!(sim.archive_item(&i.id));
        removed.insert(i.id);
    }
    for _ in 0..6 {
        let i = next();
        assert!(sim.delete_item(&i.id));
        removed.insert(i.id);
    }
    sim.counters().reset();

    let c = sync(&o, ws).await;
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(c.counts.inserted, 20, "{:?}", c.counts);
    assert_eq!(c.counts.updated, 20 + 15 + 20 + 10, "{:?}", c.counts);
    assert_eq!(c.counts.archived, 14, "{:?}", c.counts);
    let total = (1_250 + 24 * 12) as u64;
    let read = c.counts.inserted + c.counts.updated + c.counts.unchanged;
    assert!(read < total / 2, "read {read} of {total} items");
    assert_equals_truth(&env, ws, &sim, &removed).await;
}

pub async fn faults_lose_nothing(env: Env) {
    let mut cfg = workspace();
    cfg.boards = 8;
    cfg.first_board_items = 1_100;
    let sim = MondaySim::start(cfg).await.unwrap();
    let (ws, o) = setup(&env, &sim, fast()).await;
    sim.set_faults(FaultConfig {
        server_error_rate: 0.05,
        rate_limit_rate: 0.05,
        drop_rate: 0.05,
        ..Default::default()
    });
    let mut done = false;
    for _ in 0..5 {
        let c = sync(&o, ws).await;
        if c.status == SyncStatus::Completed {
            done = true;
            break;
        }
    }
    assert!(done, "a run completes under 15 % faults");
    // Changes under faults too.
    let items = sim.items();
    sim.rename_item(&items[3].id, "Renamed under faults");
    sim.archive_item(&items[7].id);
    let mut done = false;
    for _ in 0..5 {
        if sync(&o, ws).await.status == SyncStatus::Completed {
            done = true;
            break;
        }
    }
    assert!(done);
    sim.set_faults(FaultConfig::default());
    let faulted = sim.requests().iter().filter(|r| r.outcome != "ok").count();
    assert!(faulted > 0, "faults were injected");
    assert_equals_truth(&env, ws, &sim, &BTreeSet::from([items[7].id.clone()])).await;
}

pub async fn expiring_cursors_and_a_spent_budget_lose_nothing(env: Env) {
    let mut cfg = workspace();
    cfg.boards = 4;
    cfg.first_board_items = 1_300;
    let sim = MondaySim::start(cfg).await.unwrap();
    let (ws, o) = setup(&env, &sim, fast()).await;
    // The budget is spent when the sync starts, and every cursor dies after one page.
    let reset = std::time::Duration::from_secs(2);
    let spent_at = tokio::time::Instant::now();
    sim.exhaust_complexity(reset);
    sim.expire_cursors_after(1);
    let c = sync(&o, ws).await;
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    let reqs = sim.requests();
    assert_eq!(reqs[0].outcome, "COMPLEXITY_BUDGET_EXHAUSTED");
    assert!(
        reqs[1..].iter().all(|r| r.at >= spent_at + reset),
        "a request before the reset"
    );
    assert_eq!(
        reqs.iter()
            .filter(|r| r.outcome == "CursorExpiredError")
            .count(),
        1
    );
    assert_eq!(
        reqs.iter().filter(|r| r.outcome != "ok").count(),
        2,
        "no hammering"
    );
    assert_equals_truth(&env, ws, &sim, &BTreeSet::new()).await;
}
