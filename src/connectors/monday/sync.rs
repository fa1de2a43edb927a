//! The monday.com sync: boards (with their columns, groups and the account's users), then
//! each board's items through `items_page` / `next_items_page`, one checkpoint per page.
//!
//! Each board has one stream, `board:<id>` ([`StreamCheckpoint`]):
//! - `watermark`: the newest item `updated_at` stored (capped at the pass's start minus the
//!   lag);
//! - `cursor`: the `items_page` cursor of the pass in progress, `extra.from` the lower bound
//!   that pass filters on (absent for a full pass);
//! - `pass_max_updated_at`: the newest `updated_at` the pass stored. Every pass is ordered
//!   by `__last_updated__` ascending, so when monday answers `CursorExpiredError` (cursors
//!   live 60 minutes) the pass re-queries from that instant (`>=`, never from the start:
//!   the official SDK's recovery) and loses nothing.
//!
//! Passes that start in this run read their first pages together, up to [`BATCH_BOARDS`]
//! boards per request, each board aliased (`b<n>: boards(ids: $b<n>)`) with its own
//! `query_params`; a pass in progress, a recovery and a follow-up pass read alone.
//!
//! A full pass (initial sync, or no watermark yet, or `repair`) filters on
//! `__last_updated__ <= pass start`; an incremental pass on `[watermark − overlap, pass
//! start]`, and reads the board's `activity_logs` for the same window in the same request:
//! its `archive_pulse` / `delete_pulse` events name the items that left `items_page`, and
//! `items(ids)` confirms their `state` (an item restored since is left alone) before they
//! are soft-deleted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::MondayConfig;
use super::client::{MondayClient, is_cursor_expired};
use super::transform::{self, BoardPlan};
use super::types::{
    ActivityLog, BoardPage, BoardsData, FirstPageData, ItemState, ItemsData, ItemsPage,
    NextPageData, UserDef, UsersData,
};
use crate::capture::RecordFailure;
use crate::connector::{Checkpoint, Deletion, RecordBatch, RecordSink, SyncContext, SyncReport};
use crate::connectors::page::{capture_page, write_page};
use crate::error::{Error, Result};
use crate::model::{Record, RecordKind};
use crate::sanitize;

/// Items per `items_page` / `next_items_page` (monday's maximum).
pub(crate) const PAGE_SIZE: u64 = 500;
/// Boards per listing page (monday caps a page at 100).
pub(crate) const BOARDS_PAGE: u64 = 100;
/// Users per listing page.
pub(crate) const USERS_PAGE: u64 = 500;
/// Boards whose first pages share one request (10 pages of 500 items: ~310,000
/// complexity points in the simulator's model, far below monday's 5,000,000 per query).
pub(crate) const BATCH_BOARDS: usize = 10;
/// Activity log entries per page.
const LOGS_PAGE: u64 = 100;
/// `items(ids)` takes at most 100 ids.
const IDS_PER_READ: usize = 100;
/// How far before the watermark an incremental pass starts (`updated_at` has second
/// precision, and items written around the watermark are read again).
pub(crate) const OVERLAP: chrono::Duration = chrono::Duration::minutes(10);
/// How often one pass may recover from an expired cursor before it gives up (each
/// recovery moves forward to the newest `updated_at` stored).
const MAX_RECOVERIES: u32 = 20;
const EXTRA_FROM: &str = "from";

/// Selected for every item read.
pub(crate) const ITEM_FIELDS: &str = "fragment ItemFields on Item { id name state created_at updated_at url group { id title } column_values { id type text value } }";
const COMPLEXITY: &str = "complexity { before after query reset_in_x_seconds }";

fn q(body: &str, fragment: bool) -> String {
    let mut s = body.replace("COMPLEXITY", COMPLEXITY);
    if fragment {
        s.push('\n');
        s.push_str(ITEM_FIELDS);
    }
    s
}

/// What a sync run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Initial,
    Incremental,
}

/// The next whole second at or after `t`.
fn ceil_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    if whole < t {
        whole + chrono::Duration::seconds(1)
    } else {
        whole
    }
}

fn fmt(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Errors that stop the whole sync instead of one board.
fn stops_the_sync(e: &Error) -> bool {
    e.is_snooze()
        || matches!(
            e,
            Error::Cancelled | Error::Storage { .. } | Error::AuthFailed { .. } | Error::Config(_)
        )
}

/// A board's stream.
pub(crate) fn stream_name(board_id: &str) -> String {
    format!("board:{board_id}")
}

/// An activity log's `created_at`: a count of 1e-7 s (17 digits), read leniently.
fn log_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let n: i64 = match v? {
        Value::String(s) => s.trim().parse().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let secs = n.div_euclid(10_000_000);
    let nanos = u32::try_from(n.rem_euclid(10_000_000) * 100).ok()?;
    DateTime::from_timestamp(secs, nanos)
}

/// The item a log entry names (`data.pulse_id`), for archive and delete events.
fn removed_item(log: &ActivityLog) -> Option<(String, DateTime<Utc>)> {
    let event = log.event.as_deref()?;
    if !matches!(
        event,
        "archive_pulse" | "delete_pulse" | "batch_delete_pulses" | "batch_archive_pulses"
    ) {
        return None;
    }
    let data: Value = serde_json::from_str(log.data.as_deref()?).ok()?;
    let id = super::types::id_string(data.get("pulse_id"))?;
    Some((id, log_time(log.created_at.as_ref())?))
}

/// A board's first page, read in a request shared with other boards.
struct Prefetched {
    /// The lower bound that request filtered on (`None`: a full pass).
    lower: Option<DateTime<Utc>>,
    page: ItemsPage,
    logs: Vec<ActivityLog>,
}

pub(crate) struct Syncer<'a> {
    client: &'a MondayClient,
    config: &'a MondayConfig,
    ctx: &'a SyncContext,
    pub checkpoint: Checkpoint,
    pub report: SyncReport,
    pub boards: u64,
    pub boards_failed: Vec<Value>,
    pub deleted: u64,
    pub recoveries: u64,
    pub pages: u64,
}

impl<'a> Syncer<'a> {
    pub(crate) fn new(
        client: &'a MondayClient,
        config: &'a MondayConfig,
        ctx: &'a SyncContext,
        checkpoint: Checkpoint,
    ) -> Self {
        Syncer {
            client,
            config,
            ctx,
            checkpoint,
            report: SyncReport::default(),
            boards: 0,
            boards_failed: Vec::new(),
            deleted: 0,
            recoveries: 0,
            pages: 0,
        }
    }

    pub(crate) async fn run(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<()> {
        let (boards, emails) = discover(self.client, &self.config.boards).await?;
        self.boards = boards.len() as u64;
        // Boards starting a new pass share one request for their first pages, up to
        // `BATCH_BOARDS` at a time (full passes together, incremental ones together, each
        // board under its own alias with its own lower bound); a pass in progress goes on
        // alone.
        let (mut singles, mut full, mut incremental) = (Vec::new(), Vec::new(), Vec::new());
        for plan in &boards {
            let s = self.checkpoint.stream(&stream_name(&plan.id));
            if s.is_some_and(|s| s.cursor.is_some()) {
                singles.push(plan);
            } else if mode == Mode::Initial || s.is_none_or(|s| s.watermark.is_none() || s.repair) {
                full.push((plan, None));
            } else {
                let from = s.and_then(|s| s.watermark).map(|w| w - OVERLAP);
                incremental.push((plan, from));
            }
        }
        let mut failed = 0;
        for plan in singles {
            failed += u64::from(!self.run_board(plan, &emails, mode, None, sink).await?);
        }
        let until = self.ctx.started_at();
        for (group, with_logs) in full
            .chunks(BATCH_BOARDS)
            .map(|g| (g, false))
            .chain(incremental.chunks(BATCH_BOARDS).map(|g| (g, true)))
        {
            let wanted: Vec<(String, Option<DateTime<Utc>>)> =
                group.iter().map(|(p, f)| (p.id.clone(), *f)).collect();
            let mut pages = match first_pages(self.client, &wanted, until, with_logs).await {
                Ok(pages) => pages,
                Err(e) if stops_the_sync(&e) => return Err(e),
                Err(e) => {
                    // Each board of the group is read on its own (and fails on its own).
                    tracing::warn!(error = %e, "monday: a shared first-page request failed");
                    HashMap::new()
                }
            };
            for (plan, lower) in group {
                let first = pages.remove(&plan.id).map(|(page, logs)| Prefetched {
                    lower: *lower,
                    page,
                    logs,
                });
                failed += u64::from(!self.run_board(plan, &emails, mode, first, sink).await?);
            }
        }
        if failed > 0 && failed == boards.len() as u64 {
            return Err(Error::SyncFailed {
                message: format!("every monday board failed ({failed})"),
            });
        }
        Ok(())
    }

    async fn write(&mut self, sink: &mut dyn RecordSink, batch: RecordBatch) -> Result<()> {
        write_page(
            sink,
            batch,
            &self.checkpoint,
            &mut self.report,
            self.ctx,
            "monday: items written",
        )
        .await
    }

    /// Syncs one board; a failure that does not stop the sync is recorded (`Ok(false)`).
    async fn run_board(
        &mut self,
        plan: &BoardPlan,
        emails: &HashMap<String, String>,
        mode: Mode,
        first: Option<Prefetched>,
        sink: &mut dyn RecordSink,
    ) -> Result<bool> {
        match self.board(plan, emails, mode, first, sink).await {
            Ok(()) => Ok(true),
            Err(e) if stops_the_sync(&e) => Err(e),
            Err(e) => {
                tracing::warn!(board = %plan.id, error = %e, "monday: board failed");
                self.boards_failed
                    .push(json!({"board": plan.id, "error": e.to_string()}));
                let batch = RecordBatch {
                    failures: vec![RecordFailure::new(
                        Some(format!("board:{}", plan.id)),
                        e.to_string(),
                    )],
                    ..Default::default()
                };
                self.write(sink, batch).await?;
                Ok(false)
            }
        }
    }

    async fn board(
        &mut self,
        plan: &BoardPlan,
        emails: &HashMap<String, String>,
        mode: Mode,
        mut first: Option<Prefetched>,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let mut full_requested = mode == Mode::Initial;
        loop {
            let resumed = self
                .pass(plan, emails, full_requested, first.take(), sink)
                .await?;
            if !resumed {
                return Ok(());
            }
            // The pass was begun by an earlier run: what changed since that run's start is
            // read by a follow-up pass.
            full_requested = false;
        }
    }

    /// One pass over a board; returns whether it was begun by an earlier run.
    async fn pass(
        &mut self,
        plan: &BoardPlan,
        emails: &HashMap<String, String>,
        full_requested: bool,
        mut first: Option<Prefetched>,
        sink: &mut dyn RecordSink,
    ) -> Result<bool> {
        let stream = stream_name(&plan.id);
        let s = self.checkpoint.stream_mut(&stream);
        let continuing = s.cursor.is_some();
        if continuing {
            first = None;
        }
        let until = s.begin_pass(self.ctx);
        let from = if let Some(f) = &first {
            // The shared first page was read from the group's lower bound.
            match f.lower {
                Some(l) => s.extra.insert(EXTRA_FROM.into(), json!(fmt(l))),
                None => s.extra.remove(EXTRA_FROM),
            };
            f.lower
        } else if continuing {
            s.extra
                .get(EXTRA_FROM)
                .and_then(Value::as_str)
                .and_then(sanitize::datetime_str)
        } else {
            let full = full_requested || s.watermark.is_none() || s.repair;
            let from = if full {
                None
            } else {
                s.watermark.map(|w| w - OVERLAP)
            };
            match from {
                Some(f) => s.extra.insert(EXTRA_FROM.into(), json!(fmt(f))),
                None => s.extra.remove(EXTRA_FROM),
            };
            from
        };
        let repair = s.repair;
        let full = from.is_none();
        let mut cursor = s.cursor.clone();
        let mut lower = from;
        // An incremental pass reads the board's removals with its first page.
        let mut logs_due = !continuing && !full;
        let mut recoveries = 0;
        loop {
            self.ctx.check_cancelled()?;
            let answer = match (&cursor, first.take()) {
                (None, Some(f)) => Ok((f.page, f.logs)),
                (Some(c), _) => next_page(self.client, c).await.map(|p| (p, Vec::new())),
                (None, None) => {
                    // Logs are due only on a pass's first request, where `lower` is `from`.
                    first_page(self.client, &plan.id, lower, until, logs_due).await
                }
            };
            let (page, logs) = match answer {
                Ok(a) => a,
                Err(e) if is_cursor_expired(&e) && recoveries < MAX_RECOVERIES => {
                    recoveries += 1;
                    self.recoveries += 1;
                    let seen = self.checkpoint.stream_mut(&stream).pass_max_updated_at;
                    lower = seen.or(from);
                    tracing::info!(board = %plan.id, from = ?lower, "monday: cursor expired; re-querying from the last updated_at seen");
                    cursor = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.pages += 1;
            let mut deletions = Vec::new();
            if logs_due {
                logs_due = false;
                deletions = self.removals(&plan.id, from, until, logs).await?;
                self.deleted += deletions.len() as u64;
            }
            let next = page.next_cursor().map(str::to_owned);
            if next.is_some() && next == cursor {
                return Err(Error::decode(
                    None,
                    format!(
                        "monday returned the same cursor twice for board {}; stopping instead of looping",
                        plan.id
                    ),
                ));
            }
            let ws = self.ctx.workspace_id();
            let mut batch = capture_page(page.items, transform::item_id, |raw| {
                let item = transform::decode(raw)?;
                Ok([Record::from(transform::task(ws, plan, emails, item)?)])
            });
            batch.deletions = deletions;
            let s = self.checkpoint.stream_mut(&stream);
            s.observe_records(&batch.records);
            let resumed = match &next {
                Some(c) => {
                    s.cursor = Some(c.clone());
                    false
                }
                None => {
                    let resumed = s.finish_pass_in(self.ctx);
                    s.extra.remove(EXTRA_FROM);
                    if repair && full && !resumed {
                        s.repair = false;
                    }
                    resumed
                }
            };
            self.write(sink, batch).await?;
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(resumed),
            }
        }
    }

    /// The items archived or deleted in `[from, until]`, from the board's activity logs,
    /// confirmed by their `state`.
    async fn removals(
        &self,
        board: &str,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        first: Vec<ActivityLog>,
    ) -> Result<Vec<Deletion>> {
        let mut removed: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut logs = first;
        let mut page = 1;
        loop {
            let full = logs.len() as u64 >= LOGS_PAGE;
            for log in &logs {
                if let Some((id, at)) = removed_item(log) {
                    let e = removed.entry(id).or_insert(at);
                    *e = (*e).max(at);
                }
            }
            if !full {
                break;
            }
            page += 1;
            logs = logs_page(self.client, board, from, until, page).await?;
        }
        let mut out = Vec::new();
        let ids: Vec<String> = removed.keys().cloned().collect();
        for chunk in ids.chunks(IDS_PER_READ) {
            let states = item_states(self.client, chunk).await?;
            for id in chunk {
                let gone = states
                    .get(id)
                    .is_none_or(|s| matches!(s.as_deref(), Some("archived" | "deleted")));
                if gone && let Some(at) = removed.get(id) {
                    out.push(Deletion {
                        kind: RecordKind::Task,
                        source_id: id.clone(),
                        deleted_at: *at,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The boards to sync (every active board the token can see, or the configured ones) with
/// their column plans, and the account's users (id → email), read together page by page.
pub(crate) async fn discover(
    client: &MondayClient,
    configured: &[String],
) -> Result<(Vec<BoardPlan>, HashMap<String, String>)> {
    let query = q(
        "query ($ids: [ID!], $limit: Int!, $page: Int!, $users: Int!, $withBoards: Boolean!, $withUsers: Boolean!) {
  COMPLEXITY
  boards(ids: $ids, limit: $limit, page: $page, state: active) @include(if: $withBoards) {
    id name state type columns { id title type settings_str } groups { id title }
  }
  users(limit: $users, page: $page) @include(if: $withUsers) { id email }
}",
        false,
    );
    let ids = (!configured.is_empty()).then(|| json!(configured));
    let mut boards = Vec::new();
    let mut emails = HashMap::new();
    let (mut more_boards, mut more_users) = (true, true);
    let mut page: u64 = 1;
    while more_boards || more_users {
        let data: BoardsData = client
            .graphql(
                &query,
                json!({"ids": ids, "limit": BOARDS_PAGE, "page": page, "users": USERS_PAGE,
                       "withBoards": more_boards, "withUsers": more_users}),
                false,
            )
            .await?;
        if more_boards {
            let got = data.boards.unwrap_or_default();
            more_boards = got.len() as u64 >= BOARDS_PAGE;
            // A board can come back null between listing and reading: skipped.
            for b in got.into_iter().flatten() {
                let kind = b.kind.as_deref().unwrap_or("board");
                if kind == "board" && b.state.as_deref().is_none_or(|s| s == "active") {
                    boards.push(BoardPlan::of(&b));
                }
            }
        }
        if more_users {
            let got = data.users.unwrap_or_default();
            more_users = got.len() as u64 >= USERS_PAGE;
            for u in got {
                if let Ok(u) = serde_json::from_value::<UserDef>(u)
                    && let Some(email) = u
                        .email
                        .map(|e| e.trim().to_owned())
                        .filter(|e| !e.is_empty())
                {
                    emails.insert(u.id, email);
                }
            }
        }
        page += 1;
    }
    boards.sort_by(|a, b| a.id.cmp(&b.id));
    boards.dedup_by(|a, b| a.id == b.id);
    Ok((boards, emails))
}

/// Looks up users by email (the writer's people values).
pub(crate) async fn user_ids(
    client: &MondayClient,
    emails: &[String],
) -> Result<HashMap<String, String>> {
    let query = q(
        "query ($emails: [String], $limit: Int) { COMPLEXITY users(emails: $emails, limit: $limit) { id email } }",
        false,
    );
    let data: UsersData = client
        .graphql(
            &query,
            json!({"emails": emails, "limit": emails.len().max(1)}),
            false,
        )
        .await?;
    Ok(data
        .users
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| serde_json::from_value::<UserDef>(u).ok())
        .filter_map(|u| Some((u.email?.trim().to_lowercase(), u.id)))
        .collect())
}

/// The `query_params` of a pass: `__last_updated__` in `[lower, until]` (the official SDK's
/// rule form), ordered ascending.
fn items_query(lower: Option<DateTime<Utc>>, until: DateTime<Utc>) -> Value {
    let mut rules = Vec::new();
    if let Some(l) = lower {
        rules.push(
            json!({"column_id": "__last_updated__", "compare_value": ["EXACT", fmt(l)],
                          "operator": "greater_than_or_equals", "compare_attribute": "UPDATED_AT"}),
        );
    }
    rules.push(
        json!({"column_id": "__last_updated__", "compare_value": ["EXACT", fmt(until)],
                      "operator": "lower_than_or_equal", "compare_attribute": "UPDATED_AT"}),
    );
    json!({"rules": rules, "operator": "and", "order_by": [{"column_id": "__last_updated__", "direction": "asc"}]})
}

/// A board's first `items_page` from `lower`, with its activity logs from `lower` when
/// `with_logs`.
async fn first_page(
    client: &MondayClient,
    board: &str,
    lower: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    with_logs: bool,
) -> Result<(ItemsPage, Vec<ActivityLog>)> {
    first_pages(client, &[(board.to_owned(), lower)], until, with_logs)
        .await?
        .remove(board)
        .ok_or_else(|| {
            Error::api(
                "monday",
                404,
                &format!("board {board} is gone (deleted, or no longer visible to the token)"),
            )
        })
}

/// The first `items_page` of several boards in one request, each board under its own alias
/// with its own lower bound (`b<n>: boards(ids: $b<n>) { items_page(query_params: $qp<n>) }`:
/// the query text holds only generated names, every value is a variable), each with its own
/// cursor, and the activity logs from the same bound when `with_logs`. A board that comes
/// back `null` (deleted since the listing) is missing from the map.
async fn first_pages(
    client: &MondayClient,
    boards: &[(String, Option<DateTime<Utc>>)],
    until: DateTime<Utc>,
    with_logs: bool,
) -> Result<HashMap<String, (ItemsPage, Vec<ActivityLog>)>> {
    let mut defs =
        String::from("$limit: Int!, $withLogs: Boolean!, $to: ISO8601DateTime, $logLimit: Int");
    let mut body = String::new();
    let mut vars = serde_json::Map::new();
    vars.insert("limit".into(), json!(PAGE_SIZE));
    vars.insert("withLogs".into(), json!(with_logs));
    // Log times are finer than a second: the upper bound is rounded up, so an item
    // removed in the second the sync started is not left for the next run.
    vars.insert("to".into(), json!(fmt(ceil_secs(until))));
    vars.insert("logLimit".into(), json!(LOGS_PAGE));
    for (n, (id, lower)) in boards.iter().enumerate() {
        defs.push_str(&format!(
            ", $b{n}: [ID!], $qp{n}: ItemsQuery, $from{n}: ISO8601DateTime"
        ));
        body.push_str(&format!(
            "  b{n}: boards(ids: $b{n}) {{ id items_page(limit: $limit, query_params: $qp{n}) {{ cursor items {{ ...ItemFields }} }} activity_logs(from: $from{n}, to: $to, limit: $logLimit) @include(if: $withLogs) {{ event data created_at }} }}\n"
        ));
        vars.insert(format!("b{n}"), json!([id]));
        vars.insert(format!("qp{n}"), items_query(*lower, until));
        vars.insert(format!("from{n}"), json!(lower.map(fmt)));
    }
    let query = q(&format!("query ({defs}) {{\n  COMPLEXITY\n{body}}}"), true);
    let data: serde_json::Map<String, Value> =
        client.graphql(&query, Value::Object(vars), false).await?;
    let mut out = HashMap::new();
    for n in 0..boards.len() {
        let Some(v) = data.get(&format!("b{n}")).filter(|v| !v.is_null()) else {
            continue;
        };
        let list: Vec<Option<BoardPage>> = serde_json::from_value(v.clone())
            .map_err(|e| Error::decode(None, format!("unreadable monday board page: {e}")))?;
        for b in list.into_iter().flatten() {
            if let Some(id) = b.id.clone() {
                out.insert(
                    id,
                    (
                        b.items_page.unwrap_or_default(),
                        b.activity_logs.unwrap_or_default(),
                    ),
                );
            }
        }
    }
    Ok(out)
}

async fn next_page(client: &MondayClient, cursor: &str) -> Result<ItemsPage> {
    let query = q(
        "query ($cursor: String!, $limit: Int!) { COMPLEXITY next_items_page(limit: $limit, cursor: $cursor) { cursor items { ...ItemFields } } }",
        true,
    );
    let data: NextPageData = client
        .graphql(&query, json!({"cursor": cursor, "limit": PAGE_SIZE}), false)
        .await?;
    Ok(data.next_items_page.unwrap_or_default())
}

async fn logs_page(
    client: &MondayClient,
    board: &str,
    from: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    page: u64,
) -> Result<Vec<ActivityLog>> {
    let query = q(
        "query ($board: [ID!], $from: ISO8601DateTime, $to: ISO8601DateTime, $limit: Int, $page: Int) {
  COMPLEXITY
  boards(ids: $board) { activity_logs(from: $from, to: $to, limit: $limit, page: $page) { event data created_at } }
}",
        false,
    );
    let data: FirstPageData = client
        .graphql(&query, json!({"board": [board], "from": from.map(fmt), "to": fmt(ceil_secs(until)), "limit": LOGS_PAGE, "page": page}), false)
        .await?;
    Ok(data
        .boards
        .unwrap_or_default()
        .into_iter()
        .next()
        .flatten()
        .and_then(|b| b.activity_logs)
        .unwrap_or_default())
}

/// `items(ids)`: each item's `state` (`active`, `archived`, `deleted`).
async fn item_states(
    client: &MondayClient,
    ids: &[String],
) -> Result<HashMap<String, Option<String>>> {
    let query = q(
        "query ($ids: [ID!], $limit: Int) { COMPLEXITY items(ids: $ids, limit: $limit) { id state } }",
        false,
    );
    let data: ItemsData = client
        .graphql(&query, json!({"ids": ids, "limit": ids.len()}), false)
        .await?;
    Ok(data
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| serde_json::from_value::<ItemState>(v).ok())
        .map(|s| (s.id, s.state))
        .collect())
}

/// Reads items by id with their board (the writer's answers).
pub(crate) async fn items_by_id(client: &MondayClient, ids: &[String]) -> Result<Vec<Value>> {
    let query = q(
        "query ($ids: [ID!]) { COMPLEXITY items(ids: $ids) { ...ItemFields } }",
        true,
    );
    let data: ItemsData = client.graphql(&query, json!({"ids": ids}), false).await?;
    Ok(data.items.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_log_times_and_items() {
        let t = log_time(Some(&json!("17171712000000000"))).unwrap();
        assert_eq!(t.timestamp(), 1_717_171_200);
        let log = ActivityLog {
            event: Some("delete_pulse".into()),
            data: Some("{\"pulse_id\": 123, \"board_id\": 9}".into()),
            created_at: Some(json!("17171712000000000")),
        };
        assert_eq!(removed_item(&log), Some(("123".into(), t)));
        let other = ActivityLog {
            event: Some("update_column_value".into()),
            ..log.clone()
        };
        assert_eq!(removed_item(&other), None);
        assert!(log_time(Some(&json!("x"))).is_none());
    }

    #[test]
    fn items_query_uses_the_sdk_rule_form_ascending() {
        let until = DateTime::from_timestamp(1_717_171_200, 0).unwrap();
        let qp = items_query(Some(until - OVERLAP), until);
        assert_eq!(
            qp["rules"][0]["compare_value"],
            json!(["EXACT", "2024-05-31T15:50:00Z"])
        );
        assert_eq!(qp["rules"][0]["operator"], "greater_than_or_equals");
        assert_eq!(qp["rules"][1]["operator"], "lower_than_or_equal");
        assert_eq!(
            qp["order_by"][0],
            json!({"column_id": "__last_updated__", "direction": "asc"})
        );
        assert_eq!(
            items_query(None, until)["rules"].as_array().unwrap().len(),
            1
        );
    }
}
