//! The connector against the simulator, into an in-memory sink.

use std::collections::BTreeMap;
use std::time::Duration;

use pandora_sync::connector::{MemorySink, NewTask, TaskUpdate};
use pandora_sync::connectors::monday::{MondayConfig, MondayConnector, MondayCredentials};
use pandora_sync::model::Task;
use pandora_sync::simulator::{MondayItemState, MondaySim, MondaySimConfig};
use pandora_sync::{Error, Record, SyncCapable, SyncContext, SyncMode, TaskAdapter};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::truth::{assert_task, fast, full_sync_requests, workspace};

fn connector(sim: &MondaySim, config: Value) -> MondayConnector {
    MondayConnector::new(
        &sim.base_url(),
        MondayCredentials::api_token(SecretString::from(sim.config().api_token.clone())),
        MondayConfig::from_json(&config).unwrap(),
    )
    .unwrap()
}

fn tasks(sink: &MemorySink) -> BTreeMap<String, Task> {
    sink.records()
        .map(|r| match r {
            Record::Task(t) => (t.meta.source_id.clone(), t.clone()),
            other => panic!("not a task: {other:?}"),
        })
        .collect()
}

fn assert_equals_truth(got: &BTreeMap<String, Task>, sim: &MondaySim) {
    let live: Vec<_> = sim
        .items()
        .into_iter()
        .filter(|i| i.state == MondayItemState::Active)
        .collect();
    assert_eq!(got.len(), live.len(), "one task per active item");
    for item in &live {
        assert_task(&got[&item.id], item, sim);
    }
}

/// An initial sync of 25 boards (1,250 items on one) stores the truth; a no-change
/// incremental reads only the overlap. Prints the request and complexity figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_and_no_change_incremental_costs() {
    let sim = MondaySim::start(workspace()).await.unwrap();
    let c = connector(&sim, fast());
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert_eq!(
        report.details["boards_failed"],
        json!([]),
        "{}",
        report.details
    );
    assert_equals_truth(&tasks(&sink), &sim);
    let requests = sim.requests();
    assert_eq!(requests.len() as u64, full_sync_requests(&sim));
    assert_eq!(
        requests.len(),
        6,
        "1 listing, 3 requests for the first pages of 25 boards, 2 more pages of 1,250 items"
    );
    for r in &requests {
        assert_eq!(
            r.api_version.as_deref(),
            Some("2025-10"),
            "API-Version on every request"
        );
        assert_eq!(r.outcome, "ok");
        assert!(
            r.query.contains("complexity {"),
            "every query reads its complexity"
        );
    }
    let spent = report.details["complexity"]["spent"].as_f64().unwrap();
    assert_eq!(report.details["complexity"]["queries"], 6);
    assert!(spent > 0.0);
    eprintln!(
        "initial: {} requests, complexity {spent}, {} items",
        requests.len(),
        report.records_fetched
    );

    sim.clear_requests();
    let cp = sink.last_checkpoint().unwrap().clone();
    let ctx = SyncContext::new(ctx.workspace_id(), SyncMode::Incremental).with_previous(cp);
    let mut sink2 = MemorySink::new();
    let report = c.sync(&ctx, &mut sink2).await.unwrap();
    let n = sim.requests().len();
    assert_eq!(
        n, 4,
        "the listing and the first pages of ten boards per request"
    );
    let spent = report.details["complexity"]["spent"].as_f64().unwrap();
    eprintln!(
        "no-change incremental: {n} requests, complexity {spent}, {} items re-read (overlap)",
        report.records_fetched
    );
    assert!(
        report.records_fetched < 100,
        "only the overlap is re-read: {}",
        report.records_fetched
    );
    // The incremental passes filter on __last_updated__ through variables, ascending.
    let first_pages: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("items_page("))
        .collect();
    let mut boards_read = 0;
    for r in &first_pages {
        assert_eq!(
            r.variables["withLogs"], true,
            "removals read with the first page"
        );
        for (_, qp) in board_queries(r) {
            boards_read += 1;
            let rules = qp["rules"].as_array().unwrap();
            assert_eq!(rules[0]["operator"], "greater_than_or_equals");
            assert_eq!(rules[0]["compare_value"][0], "EXACT");
            assert_eq!(qp["order_by"][0]["direction"], "asc");
        }
    }
    assert_eq!(boards_read, 25, "each board with its own lower bound");
}

/// The boards a first-page request reads, each with its `query_params` (`$b<n>`, `$qp<n>`).
fn board_queries(r: &pandora_sync::simulator::MondaySimRequest) -> Vec<(String, Value)> {
    (0..)
        .map_while(|n| {
            let id = r.variables.get(format!("b{n}"))?[0].as_str()?.to_owned();
            Some((id, r.variables[format!("qp{n}")].clone()))
        })
        .collect()
}

/// Cursors that expire in the middle of the big board lose nothing, and the pass re-queries
/// from the last `updated_at` it stored, never from the board's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_cursors_lose_nothing() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 2,
        first_board_items: 1_600,
        items_per_board: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    // The first cursor page is served, the second finds every cursor expired.
    sim.expire_cursors_after(1);
    let c = connector(&sim, fast());
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert_equals_truth(&tasks(&sink), &sim);
    assert_eq!(report.details["cursor_recoveries"], 1);
    let outcomes: Vec<_> = sim.requests().iter().map(|r| r.outcome.clone()).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| *o == "CursorExpiredError")
            .count(),
        1
    );
    // The recovery asks for items updated at or after the newest one stored (1,000 read).
    let big = sim.boards()[0].id.clone();
    let firsts: Vec<Value> = sim
        .requests()
        .iter()
        .flat_map(board_queries)
        .filter(|(id, _)| *id == big)
        .map(|(_, qp)| qp)
        .collect();
    assert_eq!(
        firsts.len(),
        2,
        "the first page and one recovery, not a restart"
    );
    assert_eq!(
        firsts[0]["rules"].as_array().unwrap().len(),
        1,
        "the initial pass: upper bound only"
    );
    let recovery = &firsts[1]["rules"][0];
    assert_eq!(recovery["operator"], "greater_than_or_equals");
    let mut items: Vec<_> = sim
        .items()
        .into_iter()
        .filter(|i| i.board_id == big)
        .collect();
    items.sort_by_key(|i| (i.updated_at, i.id.clone()));
    let thousandth = items[999]
        .updated_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(recovery["compare_value"][1], json!(thousandth));
    // Far fewer than a restart: the recovery re-reads from the 1,000th item on.
    assert!(
        report.records_fetched < 1_605 + 50,
        "{}",
        report.records_fetched
    );
}

/// A complexity budget spent before the sync starts: the first answer announces the reset,
/// and nothing is sent before it; the sync completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_waits_for_the_announced_reset() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 2,
        items_per_board: 4,
        first_board_items: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let reset = Duration::from_secs(2);
    let exhausted_at = tokio::time::Instant::now();
    sim.exhaust_complexity(reset);
    let c = connector(&sim, fast());
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    assert_equals_truth(&tasks(&sink), &sim);
    let reqs = sim.requests();
    assert_eq!(reqs[0].outcome, "COMPLEXITY_BUDGET_EXHAUSTED");
    assert_eq!(
        reqs.iter().filter(|r| r.outcome != "ok").count(),
        1,
        "one refusal, no hammering"
    );
    for r in &reqs[1..] {
        assert!(
            r.at >= exhausted_at + reset,
            "a request {:?} before the reset",
            r.at - exhausted_at
        );
    }
    assert_eq!(
        reqs.len(),
        3,
        "the refused listing, the listing again, the first pages of both boards"
    );
}

/// The complexity block paces queries: when the last answer left less than its cost, the
/// next query waits for the reset instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_paced_to_the_budget() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 3,
        items_per_board: 3,
        first_board_items: 1_200,
        complexity_per_minute: 150_000,
        complexity_window: Duration::from_secs(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, fast());
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    // The listing costs ~8,500 points, the shared first pages of three boards ~93,000: what
    // is left of 150,000 after them would not cover another such query, so the next waits
    // for the window to reset.
    let report = tokio::time::timeout(Duration::from_secs(60), c.sync(&ctx, &mut sink))
        .await
        .unwrap()
        .unwrap();
    assert_equals_truth(&tasks(&sink), &sim);
    assert!(
        report.details["complexity"]["paced_waits"]
            .as_u64()
            .unwrap()
            >= 1,
        "{}",
        report.details
    );
    assert!(
        sim.requests().iter().all(|r| r.outcome == "ok"),
        "paced: never refused"
    );
}

/// The daily call limit stops the sync cleanly with the checkpoint of the pages written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_stops_with_the_checkpoint() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 4,
        first_board_items: 1_200,
        daily_limit: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, fast());
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let err = c.sync(&ctx, &mut sink).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExhausted {
                resets_at: Some(_),
                ..
            }
        ),
        "{err}"
    );
    // The listing, the shared first pages, the big board's second page; the fourth request
    // is refused. The big board's two pages are committed with its cursor.
    let cp = sink.last_checkpoint().unwrap();
    let big = &cp.streams[&format!("board:{}", sim.boards()[0].id)];
    assert!(big.cursor.is_some() && big.pass_max_updated_at.is_some());
    assert_eq!(sink.records().count(), 1_000);
    assert_eq!(sim.requests().len(), 4, "no retry of a daily limit");
}

/// A bad token fails at once, without the token anywhere in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_cleanly() {
    let sim = MondaySim::start(MondaySimConfig::default()).await.unwrap();
    let c = MondayConnector::new(
        &sim.base_url(),
        MondayCredentials::api_token(SecretString::from("wrong-s3cret-token")),
        MondayConfig::default(),
    )
    .unwrap();
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let err = c.sync(&ctx, &mut MemorySink::new()).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
    assert_eq!(sim.requests().len(), 1);
}

/// Writes through the trait change the simulator's truth exactly, with values sent as
/// variables; bad input is refused before any mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_trait() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    let ws = Uuid::new_v4();
    // Board 2 (index 1) uses "Complete" as its done label and `color_mk…` column ids.
    let board = sim.boards()[1].clone();
    let user = sim.users()[2].clone();
    let title = "Call \"Acme\" } mutation { delete_item(item_id: 1) { id } }";
    let created = c
        .create_task(
            ws,
            NewTask {
                board_id: board.id.clone(),
                group_id: Some(board.groups[1].id.clone()),
                title: title.into(),
                status: Some("In progress".into()),
                assignee_email: Some(user.email.to_uppercase()),
                due_date: chrono::NaiveDate::from_ymd_opt(2026, 3, 1),
            },
        )
        .await
        .unwrap();
    let item = sim.item(&created.meta.source_id).unwrap();
    assert_eq!(item.name, title, "the name verbatim");
    assert_eq!(item.group_id, board.groups[1].id);
    assert_eq!(sim.status_label(&item).as_deref(), Some("In progress"));
    assert_eq!(item.people, std::slice::from_ref(&user.id));
    assert_eq!(item.due, chrono::NaiveDate::from_ymd_opt(2026, 3, 1));
    assert_task(&created, &item, &sim);

    let updated = c
        .update_task(
            ws,
            &item.id,
            TaskUpdate {
                title: Some("Call Acme back".into()),
                status: Some(Some("Blocked".into())),
                due_date: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let item = sim.item(&item.id).unwrap();
    assert_eq!((item.name.as_str(), item.due), ("Call Acme back", None));
    assert_eq!(sim.status_label(&item).as_deref(), Some("Blocked"));
    assert_eq!(
        item.people,
        std::slice::from_ref(&user.id),
        "absent fields are left alone"
    );
    assert_task(&updated, &item, &sim);

    let done = c.complete_task(ws, &item.id).await.unwrap();
    let item = sim.item(&item.id).unwrap();
    assert_eq!(
        sim.status_label(&item).as_deref(),
        Some("Complete"),
        "the board's done label, not index 1"
    );
    assert!(done.completed_at.is_some());
    assert_task(&done, &item, &sim);

    // Refused before any mutation: an unknown label, an unknown email.
    let before = sim.requests().len();
    let err = c
        .update_task(
            ws,
            &item.id,
            TaskUpdate {
                status: Some(Some("Shipped".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown status label"), "{err}");
    let err = c
        .update_task(
            ws,
            &item.id,
            TaskUpdate {
                assignee_email: Some(Some("nobody@x.com".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nobody@x.com"), "{err}");
    let mutations = sim.requests()[before..]
        .iter()
        .filter(|r| r.operation == "mutation")
        .count();
    assert_eq!(mutations, 0);

    let muts: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == "mutation")
        .collect();
    assert_eq!(muts.len(), 3);
    for m in &muts {
        assert!(
            !m.query.contains("Acme")
                && !m.query.contains("Blocked")
                && !m.query.contains(&user.id),
            "values spliced: {}",
            m.query
        );
        assert!(!m.query.contains("create_labels_if_missing"));
    }
    assert_eq!(muts[0].variables["name"], json!(title));
    let values: Value =
        serde_json::from_str(muts[0].variables["values"].as_str().unwrap()).unwrap();
    let status_col = board.status_column_id().unwrap();
    assert_eq!(values[status_col], json!({"label": "In progress"}));
    assert_eq!(
        values[board.people_column_id().unwrap()],
        json!({"personsAndTeams": [{"id": user.id.parse::<u64>().unwrap(), "kind": "person"}]})
    );
    let values: Value =
        serde_json::from_str(muts[1].variables["values"].as_str().unwrap()).unwrap();
    assert_eq!(
        values[board.date_column_id().unwrap()],
        Value::Null,
        "null clears"
    );
    assert_eq!(values["name"], "Call Acme back");
}

/// A sink that fails (a crash) after `left` batches.
struct Crashing {
    inner: MemorySink,
    left: usize,
}

#[async_trait::async_trait]
impl pandora_sync::RecordSink for Crashing {
    async fn write(
        &mut self,
        batch: pandora_sync::RecordBatch,
        checkpoint: &pandora_sync::Checkpoint,
    ) -> pandora_sync::Result<pandora_sync::connector::WriteCounts> {
        if self.left == 0 {
            return Err(Error::SyncFailed {
                message: "crashed".into(),
            });
        }
        self.left -= 1;
        self.inner.write(batch, checkpoint).await
    }
}

/// A sync killed between pages of the big board resumes from the stored page cursor,
/// finishes the pass with its own window and reads what changed since in a follow-up pass;
/// a cursor that expired while the sync was down is recovered from the last `updated_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_between_pages_resumes() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 2,
        first_board_items: 1_200,
        items_per_board: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, fast());
    let ws = Uuid::new_v4();
    let ctx = SyncContext::new(ws, SyncMode::Initial);
    let mut crashing = Crashing {
        inner: MemorySink::new(),
        left: 1,
    };
    assert!(c.sync(&ctx, &mut crashing).await.is_err());
    let cp = crashing.inner.last_checkpoint().unwrap().clone();
    let big = sim.boards()[0].id.clone();
    let stream = &cp.streams[&format!("board:{big}")];
    assert!(stream.cursor.is_some(), "the page cursor is kept");
    let mut got = tasks(&crashing.inner);
    // While the sync was down: an item changes, and the stored cursor expires.
    let items = sim.items();
    sim.rename_item(&items[10].id, "Changed while down");
    sim.expire_cursors();
    let ctx = SyncContext::new(ws, SyncMode::Incremental)
        .with_previous(cp)
        .with_started_at(chrono::Utc::now() + chrono::Duration::seconds(1));
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert_eq!(report.details["cursor_recoveries"], 1, "{}", report.details);
    got.extend(tasks(&sink));
    assert_equals_truth(&got, &sim);
    // The resumed pass re-read from the last updated_at stored (500 items), not from the
    // start, then a follow-up pass read the rename.
    let reads_of_big = sink
        .records()
        .filter(|r| matches!(r, Record::Task(t) if t.board_id.as_deref() == Some(big.as_str())))
        .count();
    assert!(reads_of_big < 1_200, "{reads_of_big}");
    let cp = sink.last_checkpoint().unwrap();
    assert!(
        cp.streams
            .values()
            .all(|s| s.cursor.is_none() && s.watermark.is_some())
    );
}
