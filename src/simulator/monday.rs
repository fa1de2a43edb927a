//! monday.com simulator: `POST /v2` GraphQL over the schema subset a connector uses.
//!
//! Queries are parsed with `graphql-parser` and executed against the simulator's boards,
//! so clients may phrase them as they like: variables (with defaults), inline arguments,
//! aliases, named and inline fragments, `__typename`. What is served (see
//! `reference/provider-apis.md` sections 5, 7 and 10):
//!
//! - `boards(ids, limit, page, state)` (page from 1, 25 by default, at most 100 a page)
//!   with `id name state board_kind type updated_at url items_count`, `columns { id title
//!   type settings_str }` (column ids differ per board: `status`, `color_mk…`, `person`,
//!   `people_mk…`, `date4`, `date_mk…`), `groups { id title position }`,
//!   `items_page(limit, cursor, query_params)` and `activity_logs(from, to, limit, page)`
//!   (newest first, `created_at` in units of 1e-7 s, `archive_pulse` / `delete_pulse`
//!   events with the item in `data.pulse_id`);
//! - `items_page` / `next_items_page(limit, cursor)`: at most 500 items a page, active items
//!   only, `cursor: null` at the end; a cursor lives 60 minutes from the first request
//!   ([`MondaySimConfig::cursor_ttl`]) and dies early on [`MondaySim::expire_cursors`] or
//!   [`MondaySim::expire_cursors_after`]: then `CursorExpiredError`. Without `order_by`
//!   items come in no stable order; `query_params` rules on `__last_updated__`
//!   (`greater_than_or_equals` / `greater_than` / `lower_than_or_equal` / `lower_than` with
//!   `["EXACT", ts]` or `[ts]`, and `between [from, to]`), `ids`, `groups`, and `order_by
//!   [{column_id: "__last_updated__", direction}]` are honoured;
//! - `items(ids, limit)` with item `state` (`active`, `archived`, `deleted`);
//! - `users(ids, limit, page)` with `id name email enabled`; `me`;
//! - `complexity { before after query reset_in_x_seconds }`, the per-minute budget (10M by
//!   default; the window starts with the first call and resets 60 s later) and its errors:
//!   HTTP 200 with `errors[].extensions.code = "COMPLEXITY_BUDGET_EXHAUSTED"` and
//!   `retry_in_seconds` (API-Version 2025-01 and later), the legacy top-level
//!   `"error_code": "ComplexityException"` form for older versions;
//! - mutations `create_item`, `change_multiple_column_values` (`name` renames),
//!   `change_simple_column_value`, `change_column_value`, `archive_item`, `delete_item`:
//!   column values JSON-encoded per column type; an unknown status label is a
//!   `ColumnValueException` unless `create_labels_if_missing: true`;
//! - `Authorization: <token>` (or `Bearer <token>`), anything else is HTTP 401; the
//!   `API-Version` header is recorded per request (missing: the current version applies);
//! - `DAILY_LIMIT_EXCEEDED` past [`MondaySimConfig::daily_limit`]; application errors as
//!   HTTP 200 with `errors[]`; faults from [`FaultConfig`] with monday's bodies.
//!
//! Complexity costs are an approximation of monday's (a list field costs its page size
//! times its children; `create_item` 10,000 points, other mutations 1,000), not its exact
//! numbers. Items are held in memory (a workspace of a few thousand tasks), unlike the CRM
//! simulators that generate records from the seed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::post;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use graphql_parser::query::{
    Definition, Document, Field, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
    TypeCondition, VariableDefinition,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    Common, FaultConfig, Injected, RequestCounters, SimServer, decide, dropped_response, lock, mix,
};

/// The API version applied when a request sends no `API-Version` header.
pub const MONDAY_CURRENT_API_VERSION: &str = "2025-10";
const BOARD_BASE: u64 = 4_100_000_000;
const ITEM_BASE: u64 = 5_200_000_000;
const USER_BASE: u64 = 61_000_000;
const MAX_ITEMS_PAGE: u64 = 500;
const MAX_BOARDS_PAGE: u64 = 100;

/// Configuration of a [`MondaySim`].
#[derive(Debug, Clone)]
pub struct MondaySimConfig {
    /// Seed of the generated data and of fault decisions.
    pub seed: u64,
    /// Seeded boards.
    pub boards: u32,
    /// Items on each seeded board (but the first).
    pub items_per_board: u32,
    /// Items on the first board (cursor paging needs more than 500).
    pub first_board_items: u32,
    /// Seeded users.
    pub users: u32,
    /// Seeded items were created and updated in the `days` days before `now` minus an hour.
    pub days: u32,
    /// The instant seeded data leads up to.
    pub now: DateTime<Utc>,
    /// The API token accepted in `Authorization`.
    pub api_token: String,
    /// The account id in error bodies and `me`.
    pub account_id: u64,
    /// The complexity budget per minute (personal tokens: 10M).
    pub complexity_per_minute: u64,
    /// The complexity window: the budget resets this long after the first call of a
    /// window (monday: 60 s; shorter in tests).
    pub complexity_window: Duration,
    /// How long a cursor lives after the first request (monday: 60 minutes).
    pub cursor_ttl: Duration,
    /// Requests per UTC day before `DAILY_LIMIT_EXCEEDED`; `None`: no limit.
    pub daily_limit: Option<u64>,
    /// Injected faults.
    pub faults: FaultConfig,
}

impl Default for MondaySimConfig {
    fn default() -> Self {
        let now = Utc::now();
        MondaySimConfig {
            seed: 7,
            boards: 4,
            items_per_board: 12,
            first_board_items: 12,
            users: 6,
            days: 60,
            now: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
            api_token: "sim-monday-api-token".into(),
            account_id: 9_876_543,
            complexity_per_minute: 10_000_000,
            complexity_window: Duration::from_secs(60),
            cursor_ttl: Duration::from_secs(60 * 60),
            daily_limit: None,
            faults: FaultConfig::default(),
        }
    }
}

/// A user of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MondaySimUser {
    /// User id (numeric string).
    pub id: String,
    /// Full name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// What a column holds, as the simulator renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Name,
    Status,
    Priority,
    People,
    Date,
    Text,
    Numbers,
}

/// A board column.
#[derive(Debug, Clone, PartialEq)]
pub struct MondaySimColumn {
    /// Column id (per board).
    pub id: String,
    /// Title.
    pub title: String,
    /// monday's column type (`status`, `people`, `date`, `text`, `numbers`, `name`).
    pub kind: String,
    /// The column's settings (`settings_str` parsed).
    pub settings: Value,
    role: Role,
}

/// A group of a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MondaySimGroup {
    /// Group id.
    pub id: String,
    /// Title.
    pub title: String,
}

/// A board.
#[derive(Debug, Clone, PartialEq)]
pub struct MondaySimBoard {
    /// Board id (numeric string).
    pub id: String,
    /// Name.
    pub name: String,
    /// `active`, `archived` or `deleted`.
    pub state: String,
    /// Columns, in board order.
    pub columns: Vec<MondaySimColumn>,
    /// Groups, in board order.
    pub groups: Vec<MondaySimGroup>,
    /// The task status column's labels by index.
    pub status_labels: BTreeMap<u32, String>,
    /// The indexes of the status column's done labels (`done_colors`).
    pub done_indexes: Vec<u32>,
    /// Last change on the board.
    pub updated_at: DateTime<Utc>,
}

impl MondaySimBoard {
    fn column(&self, role: Role) -> Option<&MondaySimColumn> {
        self.columns.iter().find(|c| c.role == role)
    }

    /// The id of the task status column.
    pub fn status_column_id(&self) -> Option<&str> {
        self.column(Role::Status).map(|c| c.id.as_str())
    }

    /// The id of the people column.
    pub fn people_column_id(&self) -> Option<&str> {
        self.column(Role::People).map(|c| c.id.as_str())
    }

    /// The id of the due-date column.
    pub fn date_column_id(&self) -> Option<&str> {
        self.column(Role::Date).map(|c| c.id.as_str())
    }

    fn group_title(&self, id: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.title.as_str())
    }
}

/// An item's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MondayItemState {
    /// Listed by `items_page`.
    Active,
    /// Archived: only `items(ids)` shows it.
    Archived,
    /// Deleted: only `items(ids)` shows it.
    Deleted,
}

impl MondayItemState {
    /// `active`, `archived`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            MondayItemState::Active => "active",
            MondayItemState::Archived => "archived",
            MondayItemState::Deleted => "deleted",
        }
    }
}

/// An item (the truth the connector's `tasks` rows are compared with).
#[derive(Debug, Clone, PartialEq)]
pub struct MondaySimItem {
    /// Item id (numeric string).
    pub id: String,
    /// Its board's id.
    pub board_id: String,
    /// Its group's id.
    pub group_id: String,
    /// Name (the task title).
    pub name: String,
    /// State.
    pub state: MondayItemState,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed (what `__last_updated__` filters on).
    pub updated_at: DateTime<Utc>,
    /// Status label index, when set.
    pub status_index: Option<u32>,
    /// When the status last changed (`changed_at` in the status value).
    pub status_changed_at: Option<DateTime<Utc>>,
    /// Priority label index (boards with a priority column).
    pub priority_index: Option<u32>,
    /// The people column's user ids, in order.
    pub people: Vec<String>,
    /// Due date.
    pub due: Option<NaiveDate>,
    /// The text column.
    pub notes: Option<String>,
    /// The numbers column.
    pub amount: Option<i64>,
}

/// One request as the simulator received it.
#[derive(Debug, Clone)]
pub struct MondaySimRequest {
    /// The `query` text.
    pub query: String,
    /// The `variables` object (`null` when none).
    pub variables: Value,
    /// The `API-Version` header, when sent.
    pub api_version: Option<String>,
    /// `query` or `mutation` (empty when unparsable or rejected before parsing).
    pub operation: String,
    /// When it arrived.
    pub at: Instant,
    /// `ok`, or the error code it was answered with.
    pub outcome: String,
}

#[derive(Debug, Clone)]
struct ActivityLog {
    id: String,
    event: String,
    item_id: String,
    item_name: String,
    group_id: String,
    at: DateTime<Utc>,
}

#[derive(Debug)]
struct Cursor {
    board_id: String,
    remaining: VecDeque<String>,
    issued: Instant,
    epoch: u64,
}

#[derive(Debug, Default)]
struct Data {
    users: Vec<MondaySimUser>,
    boards: Vec<MondaySimBoard>,
    items: BTreeMap<u64, MondaySimItem>,
    logs: BTreeMap<String, Vec<ActivityLog>>,
    next_item: u64,
    cursors: HashMap<String, Cursor>,
    cursor_seq: u64,
    /// Cursors issued before this epoch are expired.
    epoch: u64,
    /// Cursor pages left before every cursor expires (`Some(0)`: the next one).
    expire_after: Option<u64>,
    window_start: Option<Instant>,
    used: u64,
    day: Option<NaiveDate>,
    day_count: u64,
    log: Vec<MondaySimRequest>,
}

#[derive(Debug)]
struct Inner {
    cfg: MondaySimConfig,
    common: Arc<Common>,
    data: Mutex<Data>,
    log_seq: AtomicU64,
}

/// A fake monday.com account on loopback (see the module docs for what it serves).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use pandora_sync::simulator::{MondaySim, MondaySimConfig};
///
/// let sim = MondaySim::start(MondaySimConfig { boards: 2, items_per_board: 5, first_board_items: 7, ..Default::default() }).await?;
/// assert_eq!(sim.boards().len(), 2);
/// assert_eq!(sim.items().len(), 12);
/// let resp = reqwest::Client::new()
///     .post(format!("{}/v2", sim.base_url()))
///     .header("Authorization", &sim.config().api_token)
///     .header("API-Version", "2025-10")
///     .json(&serde_json::json!({"query": "query ($n: Int) { boards(limit: $n) { id name } }", "variables": {"n": 1}}))
///     .send().await.unwrap();
/// let body: serde_json::Value = resp.json().await.unwrap();
/// assert_eq!(body["data"]["boards"].as_array().unwrap().len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MondaySim {
    inner: Arc<Inner>,
    server: SimServer,
}

const FIRST: [&str; 10] = [
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Edsger", "Margaret", "Ken", "Radia", "Donald",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Dijkstra", "Hamilton", "Thompson",
    "Perlman", "Knuth",
];
const TOPICS: [&str; 8] = [
    "Follow up with",
    "Send proposal to",
    "Prepare demo for",
    "Renewal call with",
    "Security review for",
    "Kickoff with",
    "Negotiate terms with",
    "QBR deck for",
];
const COMPANIES: [&str; 10] = [
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell",
    "Vandelay",
];
const BOARD_NAMES: [&str; 6] = [
    "Sales pipeline tasks",
    "Customer onboarding",
    "Renewals",
    "Partner deals",
    "Marketing requests",
    "Support escalations",
];

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[usize::try_from(h % list.len() as u64).unwrap_or(0)]
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1_000))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Parses monday's timestamp forms: RFC 3339, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD`.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn status_settings(labels: &BTreeMap<u32, String>, done: &[u32]) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({"labels": labels, "done_colors": done, "hide_footer": false})
}

impl Inner {
    fn h(&self, salt: u64, index: u64, k: u64) -> u64 {
        mix(self.cfg.seed, salt * 1_000 + k, index)
    }

    fn seed(&self) -> Data {
        let cfg = &self.cfg;
        let mut data = Data {
            next_item: 1,
            ..Default::default()
        };
        for i in 0..u64::from(cfg.users) {
            let first = pick(&FIRST, i);
            let last = pick(&LAST, self.h(1, i, 0));
            data.users.push(MondaySimUser {
                id: (USER_BASE + i * 13).to_string(),
                name: format!("{first} {last}"),
                email: format!(
                    "{}.{}{i}@pandora-demo.example",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
            });
        }
        for b in 0..u64::from(cfg.boards) {
            let board = self.seed_board(b);
            let n = if b == 0 {
                cfg.first_board_items
            } else {
                cfg.items_per_board
            };
            for _ in 0..n {
                let id = data.next_item;
                data.next_item += 1;
                let item = self.seed_item(&board, id, &data.users);
                data.items.insert(ITEM_BASE + id, item);
            }
            data.boards.push(board);
        }
        data
    }

    fn seed_board(&self, b: u64) -> MondaySimBoard {
        let (labels, done): (Vec<(u32, &str)>, Vec<u32>) = match b % 3 {
            0 => (
                vec![(0, "Working on it"), (1, "Done"), (2, "Stuck"), (5, "")],
                vec![1],
            ),
            1 => (
                vec![
                    (0, "Not started"),
                    (1, "In progress"),
                    (2, "Blocked"),
                    (3, "Complete"),
                ],
                vec![3],
            ),
            _ => (
                vec![(0, "Open"), (1, "Waiting"), (2, "Won"), (3, "Closed")],
                vec![2, 3],
            ),
        };
        let labels: BTreeMap<u32, String> =
            labels.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        let suffix = |what: &str| format!("{what}_mk{}{:x}", b, self.h(2, b, 0) % 4096);
        let mut columns = vec![MondaySimColumn {
            id: "name".into(),
            title: "Name".into(),
            kind: "name".into(),
            settings: json!({}),
            role: Role::Name,
        }];
        let priority_labels: BTreeMap<u32, String> = [(0, "High"), (1, "Medium"), (2, "Low")]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        if b % 4 == 1 {
            // A second status column before the task status: found by title and settings.
            columns.push(MondaySimColumn {
                id: suffix("color"),
                title: "Priority".into(),
                kind: "status".into(),
                settings: status_settings(&priority_labels, &[]),
                role: Role::Priority,
            });
        }
        columns.push(MondaySimColumn {
            id: if b.is_multiple_of(2) {
                "status".into()
            } else {
                format!("color_mk{b}st")
            },
            title: "Status".into(),
            kind: "status".into(),
            settings: status_settings(&labels, &done),
            role: Role::Status,
        });
        columns.push(MondaySimColumn {
            id: if b.is_multiple_of(2) {
                "person".into()
            } else {
                suffix("people")
            },
            title: "Owner".into(),
            kind: "people".into(),
            settings: json!({}),
            role: Role::People,
        });
        columns.push(MondaySimColumn {
            id: if b.is_multiple_of(3) {
                "date4".into()
            } else {
                suffix("date")
            },
            title: "Due date".into(),
            kind: "date".into(),
            settings: json!({}),
            role: Role::Date,
        });
        columns.push(MondaySimColumn {
            id: suffix("text"),
            title: "Notes".into(),
            kind: "text".into(),
            settings: json!({}),
            role: Role::Text,
        });
        if b % 2 == 1 {
            columns.push(MondaySimColumn {
                id: suffix("numeric"),
                title: "Deal size".into(),
                kind: "numbers".into(),
                settings: json!({"unit": {"symbol": "$"}}),
                role: Role::Numbers,
            });
        }
        let groups = [
            ("topics", "This week"),
            ("group_title", "Next week"),
            ("new_group", "Backlog"),
        ]
        .iter()
        .enumerate()
        .map(|(k, (id, title))| MondaySimGroup {
            id: if k == 0 {
                (*id).to_owned()
            } else {
                format!("{id}{}", b)
            },
            title: (*title).to_owned(),
        })
        .collect();
        MondaySimBoard {
            id: (BOARD_BASE + b * 1_000).to_string(),
            name: format!("{} {}", pick(&BOARD_NAMES, b), b + 1),
            state: "active".into(),
            columns,
            groups,
            status_labels: labels,
            done_indexes: done,
            updated_at: self.cfg.now - chrono::Duration::hours(2),
        }
    }

    fn seed_item(&self, board: &MondaySimBoard, n: u64, users: &[MondaySimUser]) -> MondaySimItem {
        let h = |k| self.h(3, n, k);
        let span = u64::from(self.cfg.days.max(1)) * 86_400;
        let end = self.cfg.now - chrono::Duration::hours(1);
        let created = end - secs(span) + secs(h(1) % span);
        let updated = created + secs(h(2) % ((end - created).num_seconds().unsigned_abs().max(1)));
        let keys: Vec<u32> = board.status_labels.keys().copied().collect();
        let status_index = (h(3) % 8 != 0)
            .then(|| keys.get(usize::try_from(h(4) % keys.len().max(1) as u64).unwrap_or(0)))
            .flatten()
            .copied();
        let people = match (users.len(), h(5) % 6) {
            (0, _) | (_, 0) => Vec::new(),
            (len, 1) => vec![
                users[usize::try_from(h(6) % len as u64).unwrap_or(0)]
                    .id
                    .clone(),
                users[usize::try_from((h(6) + 1) % len as u64).unwrap_or(0)]
                    .id
                    .clone(),
            ],
            (len, _) => vec![
                users[usize::try_from(h(6) % len as u64).unwrap_or(0)]
                    .id
                    .clone(),
            ],
        };
        let due = (h(7) % 4 != 0).then(|| {
            (created + chrono::Duration::days(7 + i64::try_from(h(8) % 30).unwrap_or(0)))
                .date_naive()
        });
        let group = &board.groups[usize::try_from(h(9) % board.groups.len() as u64).unwrap_or(0)];
        MondaySimItem {
            id: (ITEM_BASE + n).to_string(),
            board_id: board.id.clone(),
            group_id: group.id.clone(),
            name: format!("{} {} #{n}", pick(&TOPICS, h(10)), pick(&COMPANIES, h(11))),
            state: MondayItemState::Active,
            created_at: created,
            updated_at: updated,
            status_index,
            status_changed_at: status_index.map(|_| updated),
            priority_index: board
                .column(Role::Priority)
                .map(|_| u32::try_from(h(12) % 3).unwrap_or(0)),
            people,
            due,
            notes: (h(13) % 3 == 0).then(|| format!("Notes on #{n}: {}", pick(&COMPANIES, h(14)))),
            amount: board.column(Role::Numbers).and_then(|_| {
                (h(15) % 2 == 0).then(|| i64::try_from(h(16) % 100_000).unwrap_or(0))
            }),
        }
    }
}

/// A GraphQL error: message, `extensions.code`, more extension fields.
#[derive(Debug)]
struct GqlError {
    message: String,
    code: &'static str,
    extra: Map<String, Value>,
}

fn gerr(code: &'static str, message: impl Into<String>) -> GqlError {
    GqlError {
        message: message.into(),
        code,
        extra: Map::new(),
    }
}

type Doc<'q> = Document<'q, String>;
type Sel<'q> = SelectionSet<'q, String>;
type Fld<'q> = Field<'q, String>;
type GValue<'q> = graphql_parser::query::Value<'q, String>;

/// A GraphQL object being resolved.
#[derive(Debug, Clone)]
enum Node {
    Query,
    Mutation,
    Complexity {
        before: u64,
        query: u64,
        reset_in: u64,
    },
    Board(usize),
    Column(usize, usize),
    Group(usize, usize),
    ItemsPage {
        cursor: Option<String>,
        items: Vec<u64>,
    },
    Item(u64),
    ColumnValue(u64, usize),
    User(usize),
    Me,
    Log(usize, usize),
}

impl Node {
    fn type_name(&self) -> &'static str {
        match self {
            Node::Query => "Query",
            Node::Mutation => "Mutation",
            Node::Complexity { .. } => "Complexity",
            Node::Board(_) => "Board",
            Node::Column(..) => "Column",
            Node::Group(..) => "Group",
            Node::ItemsPage { .. } => "ItemsResponse",
            Node::Item(_) => "Item",
            Node::ColumnValue(..) => "ColumnValue",
            Node::User(_) | Node::Me => "User",
            Node::Log(..) => "ActivityLogType",
        }
    }
}

/// One request's execution over the simulator's data.
struct Exec<'q, 'd> {
    fragments: HashMap<&'q str, &'q FragmentDefinition<'q, String>>,
    vars: Map<String, Value>,
    data: &'d mut Data,
    cfg: &'d MondaySimConfig,
    common: &'d Common,
    now: Instant,
    /// Whether any mutation asked for `create_labels_if_missing`.
    api_version: String,
}

fn cond_matches(cond: &TypeCondition<'_, String>, type_name: &str) -> bool {
    let TypeCondition::On(name) = cond;
    name == type_name || (type_name == "ItemsResponse" && name == "ItemsPage")
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn id_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Null => None,
        Value::Array(a) => Some(a.iter().filter_map(as_u64).map(|n| n.to_string()).collect()),
        other => as_u64(other).map(|n| vec![n.to_string()]),
    }
}

impl<'q> Exec<'q, '_> {
    fn value(&self, v: &GValue<'q>) -> Value {
        use graphql_parser::query::Value as G;
        match v {
            G::Variable(name) => self.vars.get(name.as_str()).cloned().unwrap_or(Value::Null),
            G::Int(n) => n.as_i64().map_or(Value::Null, Value::from),
            G::Float(f) => json!(f),
            G::String(s) => Value::String(s.clone()),
            G::Boolean(b) => Value::Bool(*b),
            G::Null => Value::Null,
            G::Enum(e) => Value::String(e.clone()),
            G::List(l) => Value::Array(l.iter().map(|x| self.value(x)).collect()),
            G::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), self.value(x))).collect())
            }
        }
    }

    fn args(&self, f: &Fld<'q>) -> Map<String, Value> {
        f.arguments
            .iter()
            .map(|(k, v)| (k.clone(), self.value(v)))
            .collect()
    }

    /// Whether `@include(if:)` / `@skip(if:)` keep a selection.
    fn kept(&self, directives: &[graphql_parser::query::Directive<'q, String>]) -> bool {
        directives.iter().all(|d| {
            let cond = d
                .arguments
                .iter()
                .find(|(k, _)| k == "if")
                .map(|(_, v)| self.value(v))
                .and_then(|v| v.as_bool());
            match (d.name.as_str(), cond) {
                ("include", Some(c)) => c,
                ("skip", Some(c)) => !c,
                _ => true,
            }
        })
    }

    fn fields(&self, set: &'q Sel<'q>, type_name: &str, out: &mut Vec<&'q Fld<'q>>) {
        for s in &set.items {
            match s {
                Selection::Field(f) if !self.kept(&f.directives) => {}
                Selection::Field(f) => out.push(f),
                Selection::FragmentSpread(sp) => {
                    if let Some(fr) = self.fragments.get(sp.fragment_name.as_str())
                        && cond_matches(&fr.type_condition, type_name)
                    {
                        self.fields(&fr.selection_set, type_name, out);
                    }
                }
                Selection::InlineFragment(i) => {
                    if i.type_condition
                        .as_ref()
                        .is_none_or(|c| cond_matches(c, type_name))
                    {
                        self.fields(&i.selection_set, type_name, out);
                    }
                }
            }
        }
    }

    fn all_fields(&self, set: &'q Sel<'q>) -> Vec<&'q Fld<'q>> {
        // For the cost estimate: every field of every fragment, whatever its type.
        let mut out = Vec::new();
        for s in &set.items {
            match s {
                Selection::Field(f) if !self.kept(&f.directives) => {}
                Selection::Field(f) => out.push(f),
                Selection::FragmentSpread(sp) => {
                    if let Some(fr) = self.fragments.get(sp.fragment_name.as_str()) {
                        out.extend(self.all_fields(&fr.selection_set));
                    }
                }
                Selection::InlineFragment(i) => out.extend(self.all_fields(&i.selection_set)),
            }
        }
        out
    }

    fn limit(args: &Map<String, Value>, default: u64, max: u64) -> u64 {
        args.get("limit")
            .and_then(as_u64)
            .unwrap_or(default)
            .clamp(1, max)
    }

    /// The estimated cost of a selection (see the module docs).
    fn cost(&self, set: &'q Sel<'q>) -> u64 {
        let mut total: u64 = 0;
        for f in self.all_fields(set) {
            let args = self.args(f);
            let children = self.cost(&f.selection_set);
            let each = 1 + children;
            let ids = |k: &str| id_list(args.get(k)).map(|v| v.len() as u64);
            let c = match f.name.as_str() {
                "complexity" => 0,
                "boards" => {
                    ids("ids").unwrap_or_else(|| Self::limit(&args, 25, MAX_BOARDS_PAGE)) * each
                }
                "items_page" | "next_items_page" => Self::limit(&args, 25, MAX_ITEMS_PAGE) * each,
                // Root `items(ids|limit)`; the `items` of a page are counted by the page.
                "items" if args.contains_key("ids") || args.contains_key("limit") => {
                    ids("ids").unwrap_or_else(|| Self::limit(&args, 25, 100)) * each
                }
                "users" => ids("ids").unwrap_or_else(|| Self::limit(&args, 100, 1_000)) * each,
                "column_values" | "columns" => 10 * each,
                "groups" => 5 * each,
                "activity_logs" => Self::limit(&args, 25, 10_000) * each,
                "create_item" => 10_000 + children,
                "change_multiple_column_values"
                | "change_simple_column_value"
                | "change_column_value"
                | "archive_item"
                | "delete_item" => 1_000 + children,
                _ => each,
            };
            total = total.saturating_add(c);
        }
        total
    }

    fn object(&mut self, node: &Node, set: &'q Sel<'q>) -> Result<Value, GqlError> {
        let mut fields = Vec::new();
        self.fields(set, node.type_name(), &mut fields);
        let mut out = Map::new();
        for f in fields {
            let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
            let v = self.field(node, f)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }

    fn list(&mut self, nodes: Vec<Node>, set: &'q Sel<'q>) -> Result<Value, GqlError> {
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            out.push(self.object(&n, set)?);
        }
        Ok(Value::Array(out))
    }

    fn unknown(node: &Node, name: &str) -> GqlError {
        gerr(
            "undefinedField",
            format!(
                "Field '{name}' doesn't exist on type '{}'",
                node.type_name()
            ),
        )
    }

    fn board_ix(&self, id: &str) -> Option<usize> {
        self.data.boards.iter().position(|b| b.id == id)
    }

    fn item_key(id: &str) -> Option<u64> {
        id.trim().parse().ok()
    }

    fn field(&mut self, node: &Node, f: &'q Fld<'q>) -> Result<Value, GqlError> {
        let name = f.name.as_str();
        if name == "__typename" {
            return Ok(json!(node.type_name()));
        }
        let args = self.args(f);
        let set = &f.selection_set;
        match node.clone() {
            Node::Query | Node::Mutation => self.root_field(node, name, &args, set),
            Node::Complexity {
                before,
                query,
                reset_in,
            } => match name {
                "before" => Ok(json!(before)),
                "query" => Ok(json!(query)),
                "after" => Ok(json!(before.saturating_sub(query))),
                "reset_in_x_seconds" => Ok(json!(reset_in)),
                _ => Err(Self::unknown(node, name)),
            },
            Node::Board(b) => self.board_field(b, node, name, &args, set),
            Node::Column(b, c) => {
                let col = &self.data.boards[b].columns[c];
                match name {
                    "id" => Ok(json!(col.id)),
                    "title" => Ok(json!(col.title)),
                    "type" => Ok(json!(col.kind)),
                    "settings_str" => Ok(json!(col.settings.to_string())),
                    "settings" => Ok(col.settings.clone()),
                    "archived" => Ok(json!(false)),
                    _ => Err(Self::unknown(node, name)),
                }
            }
            Node::Group(b, g) => {
                let group = &self.data.boards[b].groups[g];
                match name {
                    "id" => Ok(json!(group.id)),
                    "title" => Ok(json!(group.title)),
                    "position" => Ok(json!(format!("{}", 65_536 * (g + 1)))),
                    "archived" | "deleted" => Ok(json!(false)),
                    _ => Err(Self::unknown(node, name)),
                }
            }
            Node::ItemsPage { cursor, items } => match name {
                "cursor" => Ok(cursor.map_or(Value::Null, Value::String)),
                "items" => self.list(items.into_iter().map(Node::Item).collect(), set),
                _ => Err(Self::unknown(node, name)),
            },
            Node::Item(key) => self.item_field(key, node, name, set),
            Node::ColumnValue(key, c) => self.column_value_field(key, c, node, name),
            Node::User(u) => {
                let user = &self.data.users[u];
                match name {
                    "id" => Ok(json!(user.id)),
                    "name" => Ok(json!(user.name)),
                    "email" => Ok(json!(user.email)),
                    "enabled" => Ok(json!(true)),
                    _ => Err(Self::unknown(node, name)),
                }
            }
            Node::Me => match name {
                "id" => Ok(json!(self.data.users.first().map(|u| u.id.clone()))),
                "name" => Ok(json!(self.data.users.first().map(|u| u.name.clone()))),
                "email" => Ok(json!(self.data.users.first().map(|u| u.email.clone()))),
                "account" => {
                    Ok(json!({"id": self.cfg.account_id.to_string(), "slug": "pandora-demo"}))
                }
                _ => Err(Self::unknown(node, name)),
            },
            Node::Log(b, l) => {
                let board_id = self.data.boards[b].id.clone();
                let log = self
                    .data
                    .logs
                    .get(&board_id)
                    .and_then(|v| v.get(l))
                    .cloned()
                    .ok_or_else(|| gerr("InternalServerError", "log vanished"))?;
                let tenths = log.at.timestamp() * 10_000_000
                    + i64::from(log.at.timestamp_subsec_nanos() / 100);
                match name {
                    "id" => Ok(json!(log.id)),
                    "event" => Ok(json!(log.event)),
                    "entity" => Ok(json!("pulse")),
                    "created_at" => Ok(json!(tenths.to_string())),
                    "account_id" => Ok(json!(self.cfg.account_id.to_string())),
                    "user_id" => Ok(json!(self.data.users.first().map(|u| u.id.clone()))),
                    "data" => Ok(json!(
                        json!({
                            "board_id": board_id.parse::<u64>().unwrap_or(0),
                            "group_id": log.group_id,
                            "pulse_id": log.item_id.parse::<u64>().unwrap_or(0),
                            "pulse_name": log.item_name,
                        })
                        .to_string()
                    )),
                    _ => Err(Self::unknown(node, name)),
                }
            }
        }
    }

    fn root_field(
        &mut self,
        node: &Node,
        name: &str,
        args: &Map<String, Value>,
        set: &'q Sel<'q>,
    ) -> Result<Value, GqlError> {
        let mutation = matches!(node, Node::Mutation);
        match (mutation, name) {
            (_, "complexity") => Err(gerr("InternalServerError", "complexity resolved early")),
            (false, "boards") => {
                let ids = id_list(args.get("ids"));
                let limit = Self::limit(args, 25, MAX_BOARDS_PAGE);
                let page = args.get("page").and_then(as_u64).unwrap_or(1).max(1);
                let state = args
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("active")
                    .to_owned();
                let matching: Vec<usize> = self
                    .data
                    .boards
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        ids.as_ref().is_none_or(|ids| ids.contains(&b.id))
                            && (state == "all" || b.state == state)
                    })
                    .map(|(i, _)| i)
                    .collect();
                let skip = usize::try_from((page - 1) * limit).unwrap_or(usize::MAX);
                let take = usize::try_from(limit).unwrap_or(usize::MAX);
                let nodes = matching
                    .into_iter()
                    .skip(skip)
                    .take(take)
                    .map(Node::Board)
                    .collect();
                self.list(nodes, set)
            }
            (false, "next_items_page") => {
                let cursor = args
                    .get("cursor")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        gerr(
                            "argumentLiteralsIncompatible",
                            "next_items_page needs a cursor",
                        )
                    })?
                    .to_owned();
                let limit = Self::limit(args, 25, MAX_ITEMS_PAGE);
                let page = self.continue_cursor(&cursor, limit)?;
                self.object(&page, set)
            }
            (false, "items") => {
                let ids = id_list(args.get("ids")).unwrap_or_default();
                if ids.len() > 100 {
                    return Err(gerr(
                        "InvalidArgumentException",
                        "items(ids) takes at most 100 ids",
                    ));
                }
                let nodes = ids
                    .iter()
                    .filter_map(|id| Self::item_key(id))
                    .filter(|k| self.data.items.contains_key(k))
                    .map(Node::Item)
                    .collect();
                self.list(nodes, set)
            }
            (false, "users") => {
                let ids = id_list(args.get("ids"));
                let emails: Option<Vec<String>> =
                    args.get("emails").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|e| e.trim().to_lowercase())
                            .collect()
                    });
                let limit = args.get("limit").and_then(as_u64);
                let page = args.get("page").and_then(as_u64).unwrap_or(1).max(1);
                let matching: Vec<usize> = self
                    .data
                    .users
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| ids.as_ref().is_none_or(|ids| ids.contains(&u.id)))
                    .filter(|(_, u)| {
                        emails
                            .as_ref()
                            .is_none_or(|e| e.contains(&u.email.to_lowercase()))
                    })
                    .map(|(i, _)| i)
                    .collect();
                let nodes: Vec<Node> = match limit {
                    Some(l) => {
                        let l = l.max(1);
                        matching
                            .into_iter()
                            .skip(usize::try_from((page - 1) * l).unwrap_or(usize::MAX))
                            .take(usize::try_from(l).unwrap_or(usize::MAX))
                            .map(Node::User)
                            .collect()
                    }
                    None => matching.into_iter().map(Node::User).collect(),
                };
                self.list(nodes, set)
            }
            (false, "me") => self.object(&Node::Me, set),
            (true, "create_item") => {
                let board = self.arg_board(args)?;
                let name = args
                    .get("item_name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| gerr("argumentLiteralsIncompatible", "item_name is required"))?
                    .to_owned();
                let group_id = match args.get("group_id").and_then(Value::as_str) {
                    Some(g) => {
                        if self.data.boards[board].group_title(g).is_none() {
                            return Err(gerr(
                                "InvalidGroupIdException",
                                format!("Group {g} not found"),
                            ));
                        }
                        g.to_owned()
                    }
                    None => self.data.boards[board]
                        .groups
                        .first()
                        .map(|g| g.id.clone())
                        .unwrap_or_default(),
                };
                let now = whole_seconds(Utc::now());
                let n = self.data.next_item;
                let mut item = MondaySimItem {
                    id: (ITEM_BASE + n).to_string(),
                    board_id: self.data.boards[board].id.clone(),
                    group_id,
                    name,
                    state: MondayItemState::Active,
                    created_at: now,
                    updated_at: now,
                    status_index: None,
                    status_changed_at: None,
                    priority_index: None,
                    people: Vec::new(),
                    due: None,
                    notes: None,
                    amount: None,
                };
                let create_labels = args
                    .get("create_labels_if_missing")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(values) = args.get("column_values") {
                    let values = json_arg(values)?;
                    self.apply_values(board, &mut item, &values, create_labels)?;
                }
                self.data.next_item += 1;
                self.data.items.insert(ITEM_BASE + n, item);
                self.object(&Node::Item(ITEM_BASE + n), set)
            }
            (true, "change_multiple_column_values") => {
                let board = self.arg_board(args)?;
                let key = self.arg_item(args, board)?;
                let values = json_arg(args.get("column_values").unwrap_or(&Value::Null))?;
                let create_labels = args
                    .get("create_labels_if_missing")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let mut item = self.data.items[&key].clone();
                self.apply_values(board, &mut item, &values, create_labels)?;
                item.updated_at = whole_seconds(Utc::now());
                self.data.items.insert(key, item);
                self.object(&Node::Item(key), set)
            }
            (true, "change_simple_column_value" | "change_column_value") => {
                let board = self.arg_board(args)?;
                let key = self.arg_item(args, board)?;
                let column = args
                    .get("column_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| gerr("argumentLiteralsIncompatible", "column_id is required"))?
                    .to_owned();
                let raw = args.get("value").cloned().unwrap_or(Value::Null);
                let value = if name == "change_column_value" {
                    json_arg(&raw)?
                } else {
                    self.simple_value(board, &column, raw.as_str().unwrap_or(""))?
                };
                let create_labels = args
                    .get("create_labels_if_missing")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let mut item = self.data.items[&key].clone();
                let mut values = Map::new();
                values.insert(column, value);
                self.apply_values(board, &mut item, &Value::Object(values), create_labels)?;
                item.updated_at = whole_seconds(Utc::now());
                self.data.items.insert(key, item);
                self.object(&Node::Item(key), set)
            }
            (true, "archive_item" | "delete_item") => {
                let key = args
                    .get("item_id")
                    .and_then(as_u64)
                    .filter(|k| self.data.items.contains_key(k))
                    .ok_or_else(|| gerr("InvalidItemIdException", "Item not found"))?;
                let state = if name == "archive_item" {
                    MondayItemState::Archived
                } else {
                    MondayItemState::Deleted
                };
                set_state(self.data, key, state);
                self.object(&Node::Item(key), set)
            }
            _ => Err(Self::unknown(node, name)),
        }
    }

    fn arg_board(&self, args: &Map<String, Value>) -> Result<usize, GqlError> {
        args.get("board_id")
            .and_then(as_u64)
            .and_then(|id| self.board_ix(&id.to_string()))
            .ok_or_else(|| gerr("InvalidBoardIdException", "Board not found"))
    }

    fn arg_item(&self, args: &Map<String, Value>, board: usize) -> Result<u64, GqlError> {
        args.get("item_id")
            .and_then(as_u64)
            .filter(|k| {
                self.data.items.get(k).is_some_and(|i| {
                    i.board_id == self.data.boards[board].id && i.state != MondayItemState::Deleted
                })
            })
            .ok_or_else(|| gerr("InvalidItemIdException", "Item not found in board"))
    }

    /// A `change_simple_column_value` string as the JSON value of its column.
    fn simple_value(&self, board: usize, column: &str, s: &str) -> Result<Value, GqlError> {
        let col = self.data.boards[board]
            .columns
            .iter()
            .find(|c| c.id == column)
            .ok_or_else(|| {
                gerr(
                    "InvalidColumnIdException",
                    format!("Column {column} not found"),
                )
            })?;
        Ok(match col.role {
            Role::Status | Role::Priority => json!({"label": s}),
            Role::Date => json!({"date": s}),
            Role::People => {
                let ids: Vec<Value> = s
                    .split(',')
                    .filter_map(|p| p.trim().parse::<u64>().ok())
                    .map(|id| json!({"id": id, "kind": "person"}))
                    .collect();
                json!({"personsAndTeams": ids})
            }
            _ => json!(s),
        })
    }

    /// Applies a `column_values` object to an item, as monday validates it.
    fn apply_values(
        &mut self,
        board: usize,
        item: &mut MondaySimItem,
        values: &Value,
        create_labels: bool,
    ) -> Result<(), GqlError> {
        let Some(map) = values.as_object() else {
            return Err(gerr(
                "ColumnValueException",
                "column_values must be a JSON object",
            ));
        };
        for (col_id, v) in map {
            if col_id == "name" {
                let name = v
                    .as_str()
                    .ok_or_else(|| gerr("ColumnValueException", "name must be a string"))?;
                item.name = name.to_owned();
                continue;
            }
            let Some(ci) = self.data.boards[board]
                .columns
                .iter()
                .position(|c| c.id == *col_id)
            else {
                return Err(gerr(
                    "InvalidColumnIdException",
                    format!("This column ID doesn't exist for the board: {col_id}"),
                ));
            };
            let role = self.data.boards[board].columns[ci].role;
            let clear =
                v.is_null() || v.as_str() == Some("") || v.as_object().is_some_and(Map::is_empty);
            match role {
                Role::Status | Role::Priority => {
                    let index = if clear {
                        None
                    } else if let Some(label) = v
                        .get("label")
                        .and_then(Value::as_str)
                        .or_else(|| v.as_str())
                    {
                        Some(self.label_index(board, ci, label, create_labels)?)
                    } else if let Some(ix) = v.get("index").and_then(as_u64) {
                        let ix = u32::try_from(ix)
                            .map_err(|_| gerr("ColumnValueException", "bad index"))?;
                        Some(ix)
                    } else {
                        return Err(gerr(
                            "ColumnValueException",
                            format!("invalid value for status column {col_id}"),
                        ));
                    };
                    if role == Role::Status {
                        if item.status_index != index {
                            item.status_changed_at = index.map(|_| whole_seconds(Utc::now()));
                        }
                        item.status_index = index;
                    } else {
                        item.priority_index = index;
                    }
                }
                Role::People => {
                    let mut people = Vec::new();
                    if !clear {
                        let list = v
                            .get("personsAndTeams")
                            .and_then(Value::as_array)
                            .ok_or_else(|| {
                                gerr("ColumnValueException", "people value needs personsAndTeams")
                            })?;
                        for p in list {
                            let id = p
                                .get("id")
                                .and_then(as_u64)
                                .ok_or_else(|| gerr("ColumnValueException", "person without id"))?;
                            if !self.data.users.iter().any(|u| u.id == id.to_string()) {
                                return Err(gerr(
                                    "ColumnValueException",
                                    format!("User {id} not found"),
                                ));
                            }
                            people.push(id.to_string());
                        }
                    }
                    item.people = people;
                }
                Role::Date => {
                    item.due = if clear {
                        None
                    } else {
                        let d = v
                            .get("date")
                            .and_then(Value::as_str)
                            .or_else(|| v.as_str())
                            .unwrap_or("");
                        Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                            gerr("ColumnValueException", format!("invalid date {d:?}"))
                        })?)
                    };
                }
                Role::Text => {
                    item.notes =
                        (!clear).then(|| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                }
                Role::Numbers => {
                    item.amount = if clear {
                        None
                    } else {
                        Some(
                            as_u64(v)
                                .and_then(|n| i64::try_from(n).ok())
                                .ok_or_else(|| gerr("ColumnValueException", "invalid number"))?,
                        )
                    }
                }
                Role::Name => {
                    let name = v
                        .as_str()
                        .ok_or_else(|| gerr("ColumnValueException", "name must be a string"))?;
                    item.name = name.to_owned();
                }
            }
        }
        Ok(())
    }

    fn label_index(
        &mut self,
        board: usize,
        ci: usize,
        label: &str,
        create: bool,
    ) -> Result<u32, GqlError> {
        let b = &mut self.data.boards[board];
        let labels: BTreeMap<u32, String> = b.columns[ci]
            .settings
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        if let Some((k, _)) = labels
            .iter()
            .find(|(_, v)| v.as_str() == label && !label.is_empty())
        {
            return Ok(*k);
        }
        if !create {
            let known: Vec<&str> = labels
                .values()
                .map(String::as_str)
                .filter(|l| !l.is_empty())
                .collect();
            let mut e = gerr(
                "ColumnValueException",
                format!(
                    "This status label doesn't exist, possible statuses are: {}",
                    known.join(", ")
                ),
            );
            e.extra.insert(
                "error_data".into(),
                json!({"column_value": label, "column_type": "StatusColumn"}),
            );
            return Err(e);
        }
        let next = labels.keys().max().map_or(0, |k| k + 1);
        let mut all = labels;
        all.insert(next, label.to_owned());
        let done: Vec<u32> = b.columns[ci]
            .settings
            .get("done_colors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect()
            })
            .unwrap_or_default();
        b.columns[ci].settings = status_settings(&all, &done);
        if b.columns[ci].role == Role::Status {
            b.status_labels = all;
        }
        Ok(next)
    }

    fn board_field(
        &mut self,
        b: usize,
        node: &Node,
        name: &str,
        args: &Map<String, Value>,
        set: &'q Sel<'q>,
    ) -> Result<Value, GqlError> {
        let board = self.data.boards[b].clone();
        match name {
            "id" => Ok(json!(board.id)),
            "name" => Ok(json!(board.name)),
            "state" => Ok(json!(board.state)),
            "board_kind" => Ok(json!("public")),
            "type" => Ok(json!("board")),
            "updated_at" => Ok(json!(ts(board.updated_at))),
            "url" => Ok(json!(format!(
                "https://pandora-demo.monday.com/boards/{}",
                board.id
            ))),
            "items_count" => Ok(json!(
                self.data
                    .items
                    .values()
                    .filter(|i| i.board_id == board.id && i.state == MondayItemState::Active)
                    .count()
            )),
            "columns" => {
                let nodes = (0..board.columns.len())
                    .map(|c| Node::Column(b, c))
                    .collect();
                self.list(nodes, set)
            }
            "groups" => {
                let nodes = (0..board.groups.len()).map(|g| Node::Group(b, g)).collect();
                self.list(nodes, set)
            }
            "items_page" => {
                let limit = Self::limit(args, 25, MAX_ITEMS_PAGE);
                let page = match args.get("cursor").and_then(Value::as_str) {
                    Some(c) => self.continue_cursor(c, limit)?,
                    None => self.first_page(b, args.get("query_params"), limit)?,
                };
                self.object(&page, set)
            }
            "activity_logs" => {
                let from = args
                    .get("from")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                let to = args.get("to").and_then(Value::as_str).and_then(parse_time);
                let limit = Self::limit(args, 25, 10_000);
                let page = args.get("page").and_then(as_u64).unwrap_or(1).max(1);
                let logs = self.data.logs.get(&board.id).cloned().unwrap_or_default();
                let mut ix: Vec<usize> = (0..logs.len())
                    .filter(|&i| {
                        from.is_none_or(|f| logs[i].at >= f) && to.is_none_or(|t| logs[i].at <= t)
                    })
                    .collect();
                ix.reverse(); // newest first
                let nodes = ix
                    .into_iter()
                    .skip(usize::try_from((page - 1) * limit).unwrap_or(usize::MAX))
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .map(|l| Node::Log(b, l))
                    .collect();
                self.list(nodes, set)
            }
            _ => Err(Self::unknown(node, name)),
        }
    }

    fn item_field(
        &mut self,
        key: u64,
        node: &Node,
        name: &str,
        set: &'q Sel<'q>,
    ) -> Result<Value, GqlError> {
        let item = self
            .data
            .items
            .get(&key)
            .cloned()
            .ok_or_else(|| gerr("InvalidItemIdException", "Item not found"))?;
        let b = self
            .board_ix(&item.board_id)
            .ok_or_else(|| gerr("InvalidBoardIdException", "Board not found"))?;
        let malformed = self.common.is_malformed(0x006d_6f6e, key);
        match name {
            "id" => Ok(json!(item.id)),
            "name" => Ok(json!(item.name)),
            "state" => Ok(json!(item.state.as_str())),
            "created_at" => Ok(json!(ts(item.created_at))),
            "updated_at" if malformed => Ok(json!({"broken": true})),
            "updated_at" => Ok(json!(ts(item.updated_at))),
            "url" | "relative_link" => Ok(json!(format!(
                "https://pandora-demo.monday.com/boards/{}/pulses/{}",
                item.board_id, item.id
            ))),
            "board" => self.object(&Node::Board(b), set),
            "group" => {
                let g = self.data.boards[b]
                    .groups
                    .iter()
                    .position(|g| g.id == item.group_id)
                    .ok_or_else(|| gerr("InternalServerError", "group vanished"))?;
                self.object(&Node::Group(b, g), set)
            }
            "column_values" => {
                let n = self.data.boards[b].columns.len();
                let nodes = (0..n)
                    .filter(|&c| self.data.boards[b].columns[c].role != Role::Name)
                    .map(|c| Node::ColumnValue(key, c))
                    .collect();
                self.list(nodes, set)
            }
            _ => Err(Self::unknown(node, name)),
        }
    }

    fn column_value_field(
        &self,
        key: u64,
        c: usize,
        node: &Node,
        name: &str,
    ) -> Result<Value, GqlError> {
        let item = self
            .data
            .items
            .get(&key)
            .ok_or_else(|| gerr("InvalidItemIdException", "Item not found"))?;
        let b = self
            .board_ix(&item.board_id)
            .ok_or_else(|| gerr("InvalidBoardIdException", "Board not found"))?;
        let board = &self.data.boards[b];
        let col = &board.columns[c];
        let label_of = |ix: Option<u32>| -> Option<String> {
            let ix = ix?;
            col.settings
                .get("labels")
                .and_then(|l| l.get(ix.to_string()))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let changed = item.status_changed_at.map(ts);
        let (text, value): (Option<String>, Option<Value>) = match col.role {
            Role::Name => (Some(item.name.clone()), None),
            Role::Status => (
                label_of(item.status_index),
                item.status_index.map(|i| json!({"index": i, "post_id": null, "changed_at": changed})),
            ),
            Role::Priority => (
                label_of(item.priority_index),
                item.priority_index.map(|i| json!({"index": i, "post_id": null, "changed_at": null})),
            ),
            Role::People => {
                if item.people.is_empty() {
                    (None, None)
                } else {
                    let names: Vec<String> = item
                        .people
                        .iter()
                        .filter_map(|id| self.data.users.iter().find(|u| u.id == *id))
                        .map(|u| u.name.clone())
                        .collect();
                    let ids: Vec<Value> = item
                        .people
                        .iter()
                        .map(|id| json!({"id": id.parse::<u64>().unwrap_or(0), "kind": "person"}))
                        .collect();
                    (Some(names.join(", ")), Some(json!({"personsAndTeams": ids, "changed_at": ts(item.updated_at)})))
                }
            }
            Role::Date => (
                item.due.map(|d| d.to_string()),
                item.due.map(|d| json!({"date": d.to_string(), "icon": null, "changed_at": ts(item.updated_at)})),
            ),
            Role::Text => (item.notes.clone(), item.notes.clone().map(Value::String)),
            Role::Numbers => (
                item.amount.map(|n| n.to_string()),
                item.amount.map(|n| Value::String(n.to_string())),
            ),
        };
        match name {
            "id" => Ok(json!(col.id)),
            "type" => Ok(json!(col.kind)),
            "text" => Ok(text.map_or(Value::Null, Value::String)),
            // `value` is a JSON-encoded string (a JSON scalar), or null when empty.
            "value" => Ok(value.map_or(Value::Null, |v| Value::String(v.to_string()))),
            "column" => Ok(json!({"id": col.id, "title": col.title})),
            _ => Err(Self::unknown(node, name)),
        }
    }

    /// The first page of a board's `items_page`, with a cursor over the rest.
    fn first_page(&mut self, b: usize, qp: Option<&Value>, limit: u64) -> Result<Node, GqlError> {
        let board_id = self.data.boards[b].id.clone();
        let mut matching: Vec<&MondaySimItem> = self
            .data
            .items
            .values()
            .filter(|i| i.board_id == board_id && i.state == MondayItemState::Active)
            .collect();
        let mut ordered = false;
        if let Some(qp) = qp.filter(|v| !v.is_null()) {
            let any = qp.get("operator").and_then(Value::as_str) == Some("or");
            let mut preds: Vec<Predicate> = Vec::new();
            for rule in qp
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                preds.push(rule_predicate(rule)?);
            }
            if let Some(ids) = id_list(qp.get("ids")) {
                preds.push(Box::new(move |i: &MondaySimItem| ids.contains(&i.id)));
            }
            if let Some(groups) = qp.get("groups").and_then(Value::as_array) {
                let groups: Vec<String> = groups
                    .iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect();
                preds.push(Box::new(move |i: &MondaySimItem| {
                    groups.contains(&i.group_id)
                }));
            }
            if !preds.is_empty() {
                matching.retain(|i| {
                    if any {
                        preds.iter().any(|p| p(i))
                    } else {
                        preds.iter().all(|p| p(i))
                    }
                });
            }
            if let Some(order) = qp
                .get("order_by")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                let col = order.get("column_id").and_then(Value::as_str).unwrap_or("");
                let desc = order.get("direction").and_then(Value::as_str) == Some("desc");
                match col {
                    "__last_updated__" => matching.sort_by_key(|i| (i.updated_at, i.id.clone())),
                    "__creation_log__" => matching.sort_by_key(|i| (i.created_at, i.id.clone())),
                    other => {
                        return Err(gerr(
                            "InvalidColumnIdException",
                            format!("cannot order by {other}"),
                        ));
                    }
                }
                if desc {
                    matching.reverse();
                }
                ordered = true;
            }
        }
        if !ordered {
            // No stable order without `order_by`.
            let seed = self.cfg.seed;
            matching.sort_by_key(|i| mix(seed, 0x0d3d, i.id.parse().unwrap_or(0)));
        }
        let mut ids: VecDeque<String> = matching.into_iter().map(|i| i.id.clone()).collect();
        Ok(self.page_from(&board_id, &mut ids, limit, None))
    }

    fn page_from(
        &mut self,
        board_id: &str,
        ids: &mut VecDeque<String>,
        limit: u64,
        reuse: Option<String>,
    ) -> Node {
        let mut items = Vec::new();
        while (items.len() as u64) < limit {
            let Some(id) = ids.pop_front() else { break };
            if let Some(k) = Self::item_key(&id) {
                // Items archived or deleted since the query are left out.
                if self
                    .data
                    .items
                    .get(&k)
                    .is_some_and(|i| i.state == MondayItemState::Active)
                {
                    items.push(k);
                }
            }
        }
        // A cursor lives from the first request of its query: later pages carry the
        // query's issue time and epoch in a new token (monday's cursors encode the position).
        let (issued, epoch) = match reuse.as_ref().and_then(|c| self.data.cursors.remove(c)) {
            Some(c) => (c.issued, c.epoch),
            None => (self.now, self.data.epoch),
        };
        let cursor = if ids.is_empty() {
            None
        } else {
            self.data.cursor_seq += 1;
            let token = format!(
                "MSw{:x}{:016x}",
                self.data.cursor_seq,
                mix(self.cfg.seed, 0xc0, self.data.cursor_seq)
            );
            self.data.cursors.insert(
                token.clone(),
                Cursor {
                    board_id: board_id.to_owned(),
                    remaining: std::mem::take(ids),
                    issued,
                    epoch,
                },
            );
            Some(token)
        };
        Node::ItemsPage { cursor, items }
    }

    fn continue_cursor(&mut self, token: &str, limit: u64) -> Result<Node, GqlError> {
        if let Some(n) = self.data.expire_after {
            if n == 0 {
                self.data.epoch += 1;
                self.data.expire_after = None;
            } else {
                self.data.expire_after = Some(n - 1);
            }
        }
        let expired = |c: &Cursor, data_epoch: u64, now: Instant, ttl: Duration| {
            c.epoch < data_epoch || now.duration_since(c.issued) >= ttl
        };
        let Some(c) = self.data.cursors.get(token) else {
            return Err(cursor_expired());
        };
        if expired(c, self.data.epoch, self.now, self.cfg.cursor_ttl) {
            self.data.cursors.remove(token);
            return Err(cursor_expired());
        }
        let board_id = c.board_id.clone();
        let mut remaining = self
            .data
            .cursors
            .get_mut(token)
            .map(|c| std::mem::take(&mut c.remaining))
            .unwrap_or_default();
        Ok(self.page_from(&board_id, &mut remaining, limit, Some(token.to_owned())))
    }
}

fn cursor_expired() -> GqlError {
    let mut e = gerr(
        "CursorExpiredError",
        "CursorExpiredError: The cursor provided for pagination has expired. Please refresh your query and obtain a new cursor to continue fetching items",
    );
    e.extra.insert("status_code".into(), json!(422));
    e
}

/// A filter over items.
type Predicate = Box<dyn Fn(&MondaySimItem) -> bool>;

/// A `query_params` rule as a predicate (only `__last_updated__` is filterable here).
fn rule_predicate(rule: &Value) -> Result<Predicate, GqlError> {
    let column = rule.get("column_id").and_then(Value::as_str).unwrap_or("");
    let operator = rule
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("any_of");
    if column != "__last_updated__" {
        return Err(gerr(
            "InvalidColumnIdException",
            format!("the simulator filters on __last_updated__ only, not {column:?}"),
        ));
    }
    let values: Vec<DateTime<Utc>> = match rule.get("compare_value") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| *s != "EXACT")
            .filter_map(parse_time)
            .collect(),
        Some(Value::String(s)) => parse_time(s).into_iter().collect(),
        _ => Vec::new(),
    };
    let bad = || {
        gerr(
            "InvalidArgumentException",
            format!("invalid compare_value for {operator} on __last_updated__"),
        )
    };
    let first = *values.first().ok_or_else(bad)?;
    Ok(match operator {
        "greater_than_or_equals" => Box::new(move |i: &MondaySimItem| i.updated_at >= first),
        "greater_than" => Box::new(move |i: &MondaySimItem| i.updated_at > first),
        "lower_than_or_equal" => Box::new(move |i: &MondaySimItem| i.updated_at <= first),
        "lower_than" => Box::new(move |i: &MondaySimItem| i.updated_at < first),
        "between" => {
            let second = *values.get(1).ok_or_else(bad)?;
            Box::new(move |i: &MondaySimItem| i.updated_at >= first && i.updated_at <= second)
        }
        other => {
            return Err(gerr(
                "no_operator_config",
                format!("operator {other} is not supported for __last_updated__"),
            ));
        }
    })
}

/// A JSON argument: monday's `JSON` scalar arrives as a JSON-encoded string.
fn json_arg(v: &Value) -> Result<Value, GqlError> {
    match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            gerr(
                "JsonParseException",
                format!("column_values is not valid JSON: {e}"),
            )
        }),
        Value::Null => Ok(Value::Object(Map::new())),
        other => Ok(other.clone()),
    }
}

fn set_state(data: &mut Data, key: u64, state: MondayItemState) {
    let Some(item) = data.items.get_mut(&key) else {
        return;
    };
    if item.state == state {
        return;
    }
    item.state = state;
    let now = Utc::now();
    item.updated_at = whole_seconds(now);
    let event = match state {
        MondayItemState::Archived => "archive_pulse",
        MondayItemState::Deleted => "delete_pulse",
        MondayItemState::Active => "restore_pulse",
    };
    let log = ActivityLog {
        id: uuid::Uuid::new_v4().to_string(),
        event: event.into(),
        item_id: item.id.clone(),
        item_name: item.name.clone(),
        group_id: item.group_id.clone(),
        at: now,
    };
    data.logs
        .entry(item.board_id.clone())
        .or_default()
        .push(log);
}

fn body_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_body(e: &GqlError, account_id: u64) -> Value {
    let mut ext = Map::new();
    ext.insert("code".into(), json!(e.code));
    ext.extend(e.extra.clone());
    ext.insert("request_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    json!({"data": null, "errors": [{"message": e.message, "locations": [{"line": 1, "column": 1}], "extensions": ext}], "account_id": account_id})
}

async fn graphql(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let now = Instant::now();
    let cfg = &inner.cfg;
    let api_version = headers
        .get("api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query = parsed
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let variables = parsed.get("variables").cloned().unwrap_or(Value::Null);
    let mut entry = MondaySimRequest {
        query: query.clone(),
        variables: variables.clone(),
        api_version: api_version.clone(),
        operation: String::new(),
        at: now,
        outcome: "ok".into(),
    };
    inner.log_seq.fetch_add(1, Ordering::Relaxed);
    let (resp, outcome, operation) =
        answer(&inner, &headers, &query, &variables, api_version, now).await;
    entry.outcome = outcome;
    entry.operation = operation;
    lock(&inner.data).log.push(entry);
    let _ = cfg;
    resp
}

async fn answer(
    inner: &Inner,
    headers: &HeaderMap,
    query: &str,
    variables: &Value,
    api_version: Option<String>,
    now: Instant,
) -> (Response<Body>, String, String) {
    let cfg = &inner.cfg;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    if token != Some(cfg.api_token.as_str()) {
        let body = json!({"errors": [{"message": "Not Authenticated", "extensions": {"code": "UNAUTHENTICATED", "status_code": 401}}], "account_id": null});
        return (
            body_response(StatusCode::UNAUTHORIZED, body),
            "UNAUTHENTICATED".into(),
            String::new(),
        );
    }
    let (injected, latency) = decide(&inner.common);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match injected {
        Injected::None => {}
        Injected::ServerError(code) => {
            let body =
                json!({"error_message": "Internal server error", "status_code": code.as_u16()});
            return (
                body_response(code, body),
                format!("HTTP {}", code.as_u16()),
                String::new(),
            );
        }
        Injected::RateLimited => {
            let body = json!({"errors": [{"message": "Rate Limit Exceeded", "extensions": {"code": "RATE_LIMIT_EXCEEDED", "retry_in_seconds": 1, "status_code": 429}}], "account_id": cfg.account_id});
            let mut resp = body_response(StatusCode::TOO_MANY_REQUESTS, body);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (resp, "RATE_LIMIT_EXCEEDED".into(), String::new());
        }
        Injected::Drop => return (dropped_response(), "dropped".into(), String::new()),
    }
    let version = api_version.unwrap_or_else(|| MONDAY_CURRENT_API_VERSION.to_owned());
    let legacy_errors = version.as_str() < "2025-01";
    let mut data = lock(&inner.data);
    // The daily call limit (UTC days).
    if let Some(limit) = cfg.daily_limit {
        let today = Utc::now().date_naive();
        if data.day != Some(today) {
            data.day = Some(today);
            data.day_count = 0;
        }
        if data.day_count >= limit {
            let body = json!({"errors": [{"message": "Daily limit exceeded", "extensions": {"code": "DAILY_LIMIT_EXCEEDED", "status_code": 429}}], "account_id": cfg.account_id});
            return (
                body_response(StatusCode::TOO_MANY_REQUESTS, body),
                "DAILY_LIMIT_EXCEEDED".into(),
                String::new(),
            );
        }
        data.day_count += 1;
    }
    let doc: Doc<'_> = match graphql_parser::query::parse_query::<String>(query) {
        Ok(d) => d,
        Err(e) => {
            let err = gerr("GRAPHQL_PARSE_FAILED", format!("Parse error: {e}"));
            return (
                body_response(StatusCode::OK, error_body(&err, cfg.account_id)),
                "GRAPHQL_PARSE_FAILED".into(),
                String::new(),
            );
        }
    };
    let mut fragments = HashMap::new();
    let mut operation = None;
    for d in &doc.definitions {
        match d {
            Definition::Fragment(f) => {
                fragments.insert(f.name.as_str(), f);
            }
            Definition::Operation(op) => {
                if operation.is_none() {
                    operation = Some(op);
                }
            }
        }
    }
    let Some(op) = operation else {
        let err = gerr("GRAPHQL_PARSE_FAILED", "no operation in the document");
        return (
            body_response(StatusCode::OK, error_body(&err, cfg.account_id)),
            "GRAPHQL_PARSE_FAILED".into(),
            String::new(),
        );
    };
    let (root, set, var_defs): (Node, &Sel<'_>, &[VariableDefinition<'_, String>]) = match op {
        OperationDefinition::SelectionSet(s) => (Node::Query, s, &[]),
        OperationDefinition::Query(q) => (Node::Query, &q.selection_set, &q.variable_definitions),
        OperationDefinition::Mutation(m) => {
            (Node::Mutation, &m.selection_set, &m.variable_definitions)
        }
        OperationDefinition::Subscription(_) => {
            let err = gerr(
                "GRAPHQL_VALIDATION_FAILED",
                "subscriptions are not supported",
            );
            return (
                body_response(StatusCode::OK, error_body(&err, cfg.account_id)),
                "GRAPHQL_VALIDATION_FAILED".into(),
                String::new(),
            );
        }
    };
    let op_name = if matches!(root, Node::Mutation) {
        "mutation"
    } else {
        "query"
    }
    .to_owned();
    let mut vars = variables.as_object().cloned().unwrap_or_default();
    let mut exec = Exec {
        fragments,
        vars: Map::new(),
        data: &mut data,
        cfg,
        common: &inner.common,
        now,
        api_version: version.clone(),
    };
    for def in var_defs {
        if !vars.contains_key(def.name.as_str())
            && let Some(default) = &def.default_value
        {
            let v = exec.value(default);
            vars.insert(def.name.clone(), v);
        }
    }
    exec.vars = vars;
    // The complexity budget: a window of 60 s from the first call.
    let cost = exec.cost(set);
    let window = cfg.complexity_window;
    let start = match exec.data.window_start {
        Some(s) if now.duration_since(s) < window => s,
        _ => {
            exec.data.window_start = Some(now);
            exec.data.used = 0;
            now
        }
    };
    let reset_in = window.saturating_sub(now.duration_since(start));
    let reset_secs = reset_in.as_secs() + u64::from(reset_in.subsec_nanos() > 0);
    let left = cfg.complexity_per_minute.saturating_sub(exec.data.used);
    if cost > left {
        let body = if legacy_errors {
            json!({"error_code": "ComplexityException", "status_code": 429,
                "error_message": format!("Complexity budget exhausted, query cost {cost} budget remaining {left} out of {} reset in {reset_secs} seconds", cfg.complexity_per_minute),
                "error_data": {}, "errors": [format!("Complexity budget exhausted, query cost {cost} budget remaining {left} out of {} reset in {reset_secs} seconds", cfg.complexity_per_minute)],
                "account_id": cfg.account_id})
        } else {
            json!({"errors": [{"message": "Complexity budget exhausted", "extensions": {"code": "COMPLEXITY_BUDGET_EXHAUSTED",
                "complexity": cost, "complexity_budget_left": left, "complexity_budget_limit": cfg.complexity_per_minute,
                "retry_in_seconds": reset_secs, "status_code": 429}}], "account_id": cfg.account_id})
        };
        let code = if legacy_errors {
            "ComplexityException"
        } else {
            "COMPLEXITY_BUDGET_EXHAUSTED"
        };
        return (body_response(StatusCode::OK, body), code.into(), op_name);
    }
    exec.data.used += cost;
    let complexity = Node::Complexity {
        before: left,
        query: cost,
        reset_in: reset_secs,
    };
    let mut fields = Vec::new();
    exec.fields(set, root.type_name(), &mut fields);
    let mut out = Map::new();
    for f in fields {
        let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
        let v = if f.name == "complexity" {
            exec.object(&complexity, &f.selection_set)
        } else {
            exec.field(&root, f)
        };
        match v {
            Ok(v) => {
                out.insert(key, v);
            }
            Err(e) => {
                let code = e.code.to_owned();
                return (
                    body_response(StatusCode::OK, error_body(&e, cfg.account_id)),
                    code,
                    op_name,
                );
            }
        }
    }
    let _ = &exec.api_version;
    (
        body_response(
            StatusCode::OK,
            json!({"data": out, "account_id": cfg.account_id}),
        ),
        "ok".into(),
        op_name,
    )
}

impl MondaySim {
    /// Seeds the account and starts serving on `127.0.0.1:0`.
    pub async fn start(cfg: MondaySimConfig) -> std::io::Result<MondaySim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let mut inner = Inner {
            cfg,
            common: common.clone(),
            data: Mutex::new(Data::default()),
            log_seq: AtomicU64::new(0),
        };
        inner.data = Mutex::new(inner.seed());
        let inner = Arc::new(inner);
        let router = Router::new()
            .route("/v2", post(graphql))
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        Ok(MondaySim { inner, server })
    }

    /// `http://127.0.0.1:<port>` (the API is `POST /v2`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &MondaySimConfig {
        &self.inner.cfg
    }

    /// Requests served, per route (`"POST /v2"`).
    pub fn counters(&self) -> &RequestCounters {
        &self.inner.common.counters
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// Answers the next `n` requests with monday's 429 "Rate Limit Exceeded".
    pub fn burst_429(&self, n: u64) {
        self.inner.common.burst_429.store(n, Ordering::Relaxed);
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<MondaySimRequest> {
        lock(&self.inner.data).log.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.data).log.clear();
    }

    /// Users.
    pub fn users(&self) -> Vec<MondaySimUser> {
        lock(&self.inner.data).users.clone()
    }

    /// Boards (every state).
    pub fn boards(&self) -> Vec<MondaySimBoard> {
        lock(&self.inner.data).boards.clone()
    }

    /// One board.
    pub fn board(&self, id: &str) -> Option<MondaySimBoard> {
        lock(&self.inner.data)
            .boards
            .iter()
            .find(|b| b.id == id)
            .cloned()
    }

    /// Every item, archived and deleted ones included.
    pub fn items(&self) -> Vec<MondaySimItem> {
        lock(&self.inner.data).items.values().cloned().collect()
    }

    /// One item.
    pub fn item(&self, id: &str) -> Option<MondaySimItem> {
        let key: u64 = id.parse().ok()?;
        lock(&self.inner.data).items.get(&key).cloned()
    }

    /// Whether the item is served malformed (its `updated_at` is not a timestamp).
    pub fn is_malformed(&self, id: &str) -> bool {
        id.parse()
            .is_ok_and(|k| self.inner.common.is_malformed(0x006d_6f6e, k))
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut MondaySimItem, &MondaySimBoard)) -> bool {
        let Ok(key) = id.parse::<u64>() else {
            return false;
        };
        let mut data = lock(&self.inner.data);
        let Some(board) = data
            .items
            .get(&key)
            .and_then(|i| data.boards.iter().find(|b| b.id == i.board_id))
            .cloned()
        else {
            return false;
        };
        let Some(item) = data.items.get_mut(&key) else {
            return false;
        };
        f(item, &board);
        item.updated_at = whole_seconds(Utc::now());
        true
    }

    /// Adds an item to a board's first group; returns its id.
    pub fn add_item(&self, board_id: &str, name: &str) -> Option<String> {
        let mut data = lock(&self.inner.data);
        let board = data.boards.iter().find(|b| b.id == board_id)?.clone();
        let now = whole_seconds(Utc::now());
        let n = data.next_item;
        data.next_item += 1;
        let item = MondaySimItem {
            id: (ITEM_BASE + n).to_string(),
            board_id: board.id.clone(),
            group_id: board.groups.first()?.id.clone(),
            name: name.to_owned(),
            state: MondayItemState::Active,
            created_at: now,
            updated_at: now,
            status_index: board.status_labels.keys().next().copied(),
            status_changed_at: Some(now),
            priority_index: None,
            people: data
                .users
                .first()
                .map(|u| vec![u.id.clone()])
                .unwrap_or_default(),
            due: None,
            notes: None,
            amount: None,
        };
        let id = item.id.clone();
        data.items.insert(ITEM_BASE + n, item);
        Some(id)
    }

    /// Renames an item.
    pub fn rename_item(&self, id: &str, name: &str) -> bool {
        self.change(id, |i, _| i.name = name.to_owned())
    }

    /// Sets an item's status label by index (`None` clears it).
    pub fn set_status_index(&self, id: &str, index: Option<u32>) -> bool {
        self.change(id, |i, _| {
            if i.status_index != index {
                i.status_changed_at = index.map(|_| whole_seconds(Utc::now()));
            }
            i.status_index = index;
        })
    }

    /// Sets an item's people (user ids).
    pub fn set_people(&self, id: &str, people: &[String]) -> bool {
        self.change(id, |i, _| i.people = people.to_vec())
    }

    /// Sets an item's due date.
    pub fn set_due(&self, id: &str, due: Option<NaiveDate>) -> bool {
        self.change(id, |i, _| i.due = due)
    }

    /// Moves an item to another group of its board.
    pub fn move_to_group(&self, id: &str, group_id: &str) -> bool {
        self.change(id, |i, b| {
            if b.groups.iter().any(|g| g.id == group_id) {
                i.group_id = group_id.to_owned();
            }
        })
    }

    /// Archives an item (an `archive_pulse` activity log entry).
    pub fn archive_item(&self, id: &str) -> bool {
        let Ok(key) = id.parse() else { return false };
        let mut data = lock(&self.inner.data);
        if !data.items.contains_key(&key) {
            return false;
        }
        set_state(&mut data, key, MondayItemState::Archived);
        true
    }

    /// Deletes an item (a `delete_pulse` activity log entry; `items(ids)` still shows it
    /// with `state: deleted`).
    pub fn delete_item(&self, id: &str) -> bool {
        let Ok(key) = id.parse() else { return false };
        let mut data = lock(&self.inner.data);
        if !data.items.contains_key(&key) {
            return false;
        }
        set_state(&mut data, key, MondayItemState::Deleted);
        true
    }

    /// Expires every cursor issued so far (`CursorExpiredError` on its next use).
    pub fn expire_cursors(&self) {
        lock(&self.inner.data).epoch += 1;
    }

    /// Expires every cursor when `n` more cursor pages have been served.
    pub fn expire_cursors_after(&self, n: u64) {
        lock(&self.inner.data).expire_after = Some(n);
    }

    /// Spends the complexity budget: the window resets `reset_in` from now.
    pub fn exhaust_complexity(&self, reset_in: Duration) {
        let now = Instant::now();
        let mut data = lock(&self.inner.data);
        let window = self.inner.cfg.complexity_window;
        let elapsed = window.saturating_sub(reset_in);
        data.window_start = Some(now.checked_sub(elapsed).unwrap_or(now));
        data.used = self.inner.cfg.complexity_per_minute;
    }

    /// The status label of an item, from its board's status column.
    pub fn status_label(&self, item: &MondaySimItem) -> Option<String> {
        let board = self.board(&item.board_id)?;
        item.status_index
            .and_then(|i| board.status_labels.get(&i).cloned())
            .filter(|l| !l.is_empty())
    }

    /// Whether an item's status is one of its board's done labels.
    pub fn is_done(&self, item: &MondaySimItem) -> bool {
        self.board(&item.board_id)
            .zip(item.status_index)
            .is_some_and(|(b, i)| b.done_indexes.contains(&i))
    }

    /// The email of a user id.
    pub fn user_email(&self, id: &str) -> Option<String> {
        lock(&self.inner.data)
            .users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.email.clone())
    }
}
