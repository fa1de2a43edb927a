//! What both backends share about record tables: the column list of each table, a record's
//! values in that order, validation, batch preparation (grouping, de-duplication, lock
//! order), the upsert's conflict rule, and decoding rows back into records.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::crypto::SealedCredentials;
use super::types::{ConnectionRow, SyncErrors, SyncLogEntry, parse_opt, to_u64};
use crate::connector::{DealContactSet, Deletion, RecordBatch};
use crate::error::{Error, Result};
use crate::model::{
    Account, ConnectorKind, Contact, Conversation, CustomFields, Deal, DealContact, Document,
    Participant, Record, RecordKind, RecordMeta, Task,
};

/// The SQL type family of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    Text,
    Int,
    Float,
    Bool,
    Ts,
    Date,
    Uuid,
    Json,
}

/// How an update treats a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// The incoming value replaces the stored one.
    Replace,
    /// The incoming value replaces the stored one unless it is NULL. For columns that
    /// post-sync hooks fill in (`linked_account_id`, `linked_deal_id`, `is_internal`), so a
    /// connector that does not know them does not wipe them; and for `documents.content_text`,
    /// so a record sent without its text (a rename, a move, a trashed file) keeps the stored
    /// text (a document whose text became empty carries `""`, not NULL).
    KeepIfNull,
    /// The incoming value replaces the stored one unless it is NULL in an archived row. For
    /// association columns (`account_source_id`): a provider's archived records may carry
    /// no associations (HubSpot's archived list), so the row keeps its last known ones.
    KeepIfNullWhenArchived,
}

/// One column of a record table, beyond the statement-wide `workspace_id`, `source` and
/// `synced_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    pub name: &'static str,
    pub ty: ColType,
    pub merge: Merge,
}

/// A record table: its name and its per-row columns, in value order.
#[derive(Debug)]
pub(crate) struct TableSpec {
    pub kind: RecordKind,
    pub table: &'static str,
    pub columns: &'static [Col],
}

impl TableSpec {
    /// The per-row column names, comma separated.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! col {
    ($name:literal, $ty:ident) => {
        Col {
            name: $name,
            ty: ColType::$ty,
            merge: Merge::Replace,
        }
    };
    ($name:literal, $ty:ident, keep) => {
        Col {
            name: $name,
            ty: ColType::$ty,
            merge: Merge::KeepIfNull,
        }
    };
    ($name:literal, $ty:ident, keep_when_archived) => {
        Col {
            name: $name,
            ty: ColType::$ty,
            merge: Merge::KeepIfNullWhenArchived,
        }
    };
}

macro_rules! table {
    ($static:ident, $kind:ident, $table:literal, [$($col:expr),* $(,)?]) => {
        pub(crate) static $static: TableSpec = TableSpec {
            kind: RecordKind::$kind,
            table: $table,
            columns: &[
                col!("id", Uuid),
                col!("source_id", Text),
                col!("custom_fields", Json),
                col!("source_created_at", Ts),
                col!("source_updated_at", Ts),
                col!("archived_at", Ts),
                $($col),*
            ],
        };
    };
}

/// Index of `source_id` and `source_updated_at` among every table's columns.
const SOURCE_ID: usize = 1;

table!(
    ACCOUNTS,
    Account,
    "accounts",
    [
        col!("name", Text),
        col!("domain", Text),
        col!("industry", Text),
        col!("employee_count", Int),
        col!("annual_revenue", Float),
        col!("owner_id", Text),
    ]
);

table!(
    CONTACTS,
    Contact,
    "contacts",
    [
        col!("email", Text),
        col!("first_name", Text),
        col!("last_name", Text),
        col!("title", Text),
        col!("phone", Text),
        col!("account_source_id", Text, keep_when_archived),
        col!("lifecycle_stage", Text),
        col!("owner_id", Text),
    ]
);

table!(
    DEALS,
    Deal,
    "deals",
    [
        col!("name", Text),
        col!("amount", Float),
        col!("currency", Text),
        col!("stage", Text),
        col!("pipeline", Text),
        col!("close_date", Date),
        col!("probability", Float),
        col!("owner_id", Text),
        col!("account_source_id", Text, keep_when_archived),
        col!("is_closed", Bool),
        col!("is_won", Bool),
        col!("forecast_category", Text),
        col!("days_open", Int),
        col!("days_to_close", Int),
    ]
);

table!(
    CONVERSATIONS,
    Conversation,
    "conversations",
    [
        col!("title", Text),
        col!("started_at", Ts),
        col!("duration_seconds", Int),
        col!("url", Text),
        col!("host_email", Text),
        col!("participants", Json),
        col!("summary", Text),
        col!("transcript", Text),
        col!("is_internal", Bool, keep),
        col!("linked_account_id", Uuid, keep),
        col!("linked_deal_id", Uuid, keep),
    ]
);

table!(
    TASKS,
    Task,
    "tasks",
    [
        col!("board_id", Text),
        col!("board_name", Text),
        col!("group_name", Text),
        col!("title", Text),
        col!("status", Text),
        col!("assignee_email", Text),
        col!("due_date", Date),
        col!("completed_at", Ts),
        col!("url", Text),
    ]
);

table!(
    DOCUMENTS,
    Document,
    "documents",
    [
        col!("title", Text),
        col!("mime_type", Text),
        col!("url", Text),
        col!("owner_email", Text),
        col!("content_text", Text, keep),
        col!("size_bytes", Int),
        col!("parent_id", Text),
    ]
);

/// The record tables with the common columns, in the order a batch writes them (a fixed
/// order, so concurrent writers take row locks in the same order).
pub(crate) static RECORD_TABLES: [&TableSpec; 6] = [
    &ACCOUNTS,
    &CONTACTS,
    &DEALS,
    &CONVERSATIONS,
    &TASKS,
    &DOCUMENTS,
];

/// The spec of a record kind (`None` for `DealContact`, which has its own shape).
pub(crate) fn spec(kind: RecordKind) -> Option<&'static TableSpec> {
    RECORD_TABLES.iter().copied().find(|s| s.kind == kind)
}

/// One column value of a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Ts(Option<DateTime<Utc>>),
    Date(Option<NaiveDate>),
    Uuid(Option<Uuid>),
    /// Serialized JSON text.
    Json(String),
}

impl Val<'_> {
    fn ty(&self) -> ColType {
        match self {
            Val::Text(_) => ColType::Text,
            Val::Int(_) => ColType::Int,
            Val::Float(_) => ColType::Float,
            Val::Bool(_) => ColType::Bool,
            Val::Ts(_) => ColType::Ts,
            Val::Date(_) => ColType::Date,
            Val::Uuid(_) => ColType::Uuid,
            Val::Json(_) => ColType::Json,
        }
    }
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::decode(None, format!("unserializable JSON: {e}")))
}

/// Serializes a JSON column's value for [`values_with`]; with `json` false the text is left
/// empty (validation checks JSON values itself and needs no text).
fn json_val<T: serde::Serialize + ?Sized>(value: &T, json: bool) -> Result<Val<'static>> {
    Ok(Val::Json(if json {
        json_text(value)?
    } else {
        String::new()
    }))
}

fn common<'a>(m: &'a RecordMeta, out: &mut Vec<Val<'a>>, json: bool) -> Result<()> {
    out.push(Val::Uuid(Some(m.id)));
    out.push(Val::Text(Some(&m.source_id)));
    out.push(json_val(&m.custom_fields, json)?);
    out.push(Val::Ts(m.source_created_at));
    out.push(Val::Ts(m.source_updated_at));
    out.push(Val::Ts(m.archived_at));
    Ok(())
}

/// A record's values in its table's column order (`None` for a `DealContact`).
pub(crate) fn values(record: &Record) -> Result<Option<Vec<Val<'_>>>> {
    values_with(record, true)
}

/// [`values`]; with `json` false the JSON columns are left as empty text (not serialized).
fn values_with(record: &Record, json: bool) -> Result<Option<Vec<Val<'_>>>> {
    let mut v = Vec::with_capacity(24);
    match record {
        Record::Account(a) => {
            common(&a.meta, &mut v, json)?;
            v.extend([
                Val::Text(a.name.as_deref()),
                Val::Text(a.domain.as_deref()),
                Val::Text(a.industry.as_deref()),
                Val::Int(a.employee_count),
                Val::Float(a.annual_revenue),
                Val::Text(a.owner_id.as_deref()),
            ]);
        }
        Record::Contact(c) => {
            common(&c.meta, &mut v, json)?;
            v.extend([
                Val::Text(c.email.as_deref()),
                Val::Text(c.first_name.as_deref()),
                Val::Text(c.last_name.as_deref()),
                Val::Text(c.title.as_deref()),
                Val::Text(c.phone.as_deref()),
                Val::Text(c.account_source_id.as_deref()),
                Val::Text(c.lifecycle_stage.as_deref()),
                Val::Text(c.owner_id.as_deref()),
            ]);
        }
        Record::Deal(d) => {
            common(&d.meta, &mut v, json)?;
            v.extend([
                Val::Text(d.name.as_deref()),
                Val::Float(d.amount),
                Val::Text(d.currency.as_deref()),
                Val::Text(d.stage.as_deref()),
                Val::Text(d.pipeline.as_deref()),
                Val::Date(d.close_date),
                Val::Float(d.probability),
                Val::Text(d.owner_id.as_deref()),
                Val::Text(d.account_source_id.as_deref()),
                Val::Bool(d.is_closed),
                Val::Bool(d.is_won),
                Val::Text(d.forecast_category.as_deref()),
                Val::Int(d.days_open),
                Val::Int(d.days_to_close),
            ]);
        }
        Record::Conversation(c) => {
            common(&c.meta, &mut v, json)?;
            v.extend([
                Val::Text(c.title.as_deref()),
                Val::Ts(c.started_at),
                Val::Int(c.duration_seconds),
                Val::Text(c.url.as_deref()),
                Val::Text(c.host_email.as_deref()),
                json_val(&c.participants, json)?,
                Val::Text(c.summary.as_deref()),
                Val::Text(c.transcript.as_deref()),
                Val::Bool(c.is_internal),
                Val::Uuid(c.linked_account_id),
                Val::Uuid(c.linked_deal_id),
            ]);
        }
        Record::Task(t) => {
            common(&t.meta, &mut v, json)?;
            v.extend([
                Val::Text(t.board_id.as_deref()),
                Val::Text(t.board_name.as_deref()),
                Val::Text(t.group_name.as_deref()),
                Val::Text(t.title.as_deref()),
                Val::Text(t.status.as_deref()),
                Val::Text(t.assignee_email.as_deref()),
                Val::Date(t.due_date),
                Val::Ts(t.completed_at),
                Val::Text(t.url.as_deref()),
            ]);
        }
        Record::Document(d) => {
            common(&d.meta, &mut v, json)?;
            v.extend([
                Val::Text(d.title.as_deref()),
                Val::Text(d.mime_type.as_deref()),
                Val::Text(d.url.as_deref()),
                Val::Text(d.owner_email.as_deref()),
                Val::Text(d.content_text.as_deref()),
                Val::Int(d.size_bytes),
                Val::Text(d.parent_id.as_deref()),
            ]);
        }
        Record::DealContact(_) => return Ok(None),
    }
    Ok(Some(v))
}

fn nul_error(record_id: &str, table: &str, column: &str) -> Error {
    Error::decode(
        Some(record_id),
        format!(
            "{table}.{column} contains a NUL character (U+0000), which the database cannot store"
        ),
    )
}

fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => map_has_nul(map),
        _ => false,
    }
}

fn map_has_nul(map: &CustomFields) -> bool {
    map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
}

fn participants_have_nul(ps: &[Participant]) -> bool {
    ps.iter().any(|p| {
        p.email.as_deref().is_some_and(|s| s.contains('\0'))
            || p.name.as_deref().is_some_and(|s| s.contains('\0'))
    })
}

/// Checks that both backends can store `record` exactly: no NUL character in any text or
/// JSON string (PostgreSQL rejects them), and only finite numbers (SQLite turns NaN into
/// NULL). The error is an [`Error::Decode`] naming the record's provider id and the column,
/// so a sink can turn it into a per-record failure.
pub(crate) fn validate(record: &Record) -> Result<()> {
    // The JSON columns are checked value by value below: no need to serialize them.
    let Some(vals) = values_with(record, false)? else {
        if let Record::DealContact(l) = record {
            let id = record.source_id();
            for (col, v) in [
                ("deal_source_id", Some(l.deal_source_id.as_str())),
                ("contact_source_id", Some(l.contact_source_id.as_str())),
                ("role", l.role.as_deref()),
            ] {
                if v.is_some_and(|s| s.contains('\0')) {
                    return Err(nul_error(&id, "deal_contacts", col));
                }
            }
        }
        return Ok(());
    };
    match spec(record.kind()) {
        Some(spec) => check_values(record, spec, &vals),
        None => Ok(()),
    }
}

/// [`validate`] for a record whose values are already computed.
fn check_values(record: &Record, spec: &TableSpec, vals: &[Val<'_>]) -> Result<()> {
    let meta = record.meta();
    let record_id = meta.map_or("", |m| m.source_id.as_str());
    for (col, val) in spec.columns.iter().zip(vals) {
        match val {
            Val::Text(Some(s)) if s.contains('\0') => {
                return Err(nul_error(record_id, spec.table, col.name));
            }
            Val::Float(Some(f)) if !f.is_finite() => {
                return Err(Error::decode(
                    Some(record_id),
                    format!(
                        "{}.{} is {f}, not a finite number; the database stores only finite numbers",
                        spec.table, col.name
                    ),
                ));
            }
            _ => {}
        }
    }
    if meta.is_some_and(|m| map_has_nul(&m.custom_fields)) {
        return Err(nul_error(record_id, spec.table, "custom_fields"));
    }
    if let Record::Conversation(c) = record
        && participants_have_nul(&c.participants)
    {
        return Err(nul_error(record_id, spec.table, "participants"));
    }
    Ok(())
}

/// The rows of one record table in a batch: de-duplicated, sorted by `source_id`.
#[derive(Debug)]
pub(crate) struct TableRows<'a> {
    pub spec: &'static TableSpec,
    pub rows: Vec<Vec<Val<'a>>>,
    /// Records dropped because a newer copy of the same `source_id` was in the batch.
    pub duplicates: u64,
}

impl<'a> TableRows<'a> {
    /// The `source_id` of row `i`.
    pub fn source_id(&self, i: usize) -> &'a str {
        match self.rows.get(i).and_then(|r| r.get(SOURCE_ID)) {
            Some(Val::Text(Some(s))) => s,
            _ => "",
        }
    }
}

/// The soft deletes of one record table: `(source_id, deleted_at)`, de-duplicated (latest
/// time kept) and sorted.
#[derive(Debug)]
pub(crate) struct TableDeletions<'a> {
    pub spec: &'static TableSpec,
    pub rows: Vec<(&'a str, DateTime<Utc>)>,
}

/// A batch split into what each statement writes.
#[derive(Debug, Default)]
pub(crate) struct PreparedBatch<'a> {
    pub tables: Vec<TableRows<'a>>,
    /// Deal-contact links, de-duplicated (last one wins) and sorted.
    pub links: Vec<&'a DealContact>,
    pub link_duplicates: u64,
    pub deletions: Vec<TableDeletions<'a>>,
    /// Links to remove: `(deal_source_id, contact_source_id)`.
    pub link_deletions: Vec<(&'a str, &'a str)>,
    /// Complete contact sets of deals, one per deal (the last one given wins), sorted.
    pub link_sets: Vec<&'a DealContactSet>,
}

/// Checks a deal's contact set: no NUL characters in its ids.
pub(crate) fn validate_link_set(set: &DealContactSet) -> Result<()> {
    let deal = set.deal_source_id.as_str();
    if deal.contains('\0') {
        return Err(nul_error(deal, "deal_contacts", "deal_source_id"));
    }
    if set.contact_source_ids.iter().any(|c| c.contains('\0')) {
        return Err(nul_error(deal, "deal_contacts", "contact_source_id"));
    }
    Ok(())
}

fn owner_error(
    what: &str,
    id: &str,
    ws: Uuid,
    source: ConnectorKind,
    rec_ws: Uuid,
    rec_source: ConnectorKind,
) -> Error {
    Error::config(format!(
        "{what} {id:?} belongs to workspace {rec_ws} / {rec_source}, but the batch is written for workspace {ws} / {source}"
    ))
}

/// Splits, checks and orders a batch. Every record must belong to `(workspace_id, source)`.
pub(crate) fn prepare(
    workspace_id: Uuid,
    source: ConnectorKind,
    batch: &RecordBatch,
) -> Result<PreparedBatch<'_>> {
    type Kept<'a> = (Option<DateTime<Utc>>, Vec<Val<'a>>);
    let mut by_table: HashMap<RecordKind, HashMap<&str, Kept<'_>>> = HashMap::new();
    let mut links: HashMap<(&str, &str), &DealContact> = HashMap::new();
    let mut counts: HashMap<RecordKind, u64> = HashMap::new();
    let mut link_count = 0u64;

    for record in &batch.records {
        match record {
            Record::DealContact(l) => {
                validate(record)?;
                if l.workspace_id != workspace_id || l.source != source {
                    return Err(owner_error(
                        "link",
                        &record.source_id(),
                        workspace_id,
                        source,
                        l.workspace_id,
                        l.source,
                    ));
                }
                link_count += 1;
                links.insert((l.deal_source_id.as_str(), l.contact_source_id.as_str()), l);
            }
            other => {
                let Some(meta) = other.meta() else { continue };
                if meta.workspace_id != workspace_id || meta.source != source {
                    return Err(owner_error(
                        "record",
                        &meta.source_id,
                        workspace_id,
                        source,
                        meta.workspace_id,
                        meta.source,
                    ));
                }
                let Some(spec) = spec(other.kind()) else {
                    continue;
                };
                let vals = values(other)?
                    .ok_or_else(|| Error::config("internal: link in a record table"))?;
                if vals.len() != spec.columns.len()
                    || spec.columns.iter().zip(&vals).any(|(c, v)| c.ty != v.ty())
                {
                    return Err(Error::config(format!(
                        "internal: column mismatch in {}",
                        spec.table
                    )));
                }
                check_values(other, spec, &vals)?;
                *counts.entry(other.kind()).or_default() += 1;
                let slot = by_table.entry(other.kind()).or_default();
                match slot.get(meta.source_id.as_str()) {
                    // Keep the newest copy; on a tie (or no timestamps) the later one wins.
                    Some((kept, _)) if *kept > meta.source_updated_at => {}
                    _ => {
                        slot.insert(meta.source_id.as_str(), (meta.source_updated_at, vals));
                    }
                }
            }
        }
    }

    let mut prepared = PreparedBatch::default();
    for spec in RECORD_TABLES {
        let Some(records) = by_table.remove(&spec.kind) else {
            continue;
        };
        let mut records: Vec<(&str, Kept<'_>)> = records.into_iter().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let total = counts.get(&spec.kind).copied().unwrap_or(0);
        let unique = u64::try_from(records.len()).unwrap_or(u64::MAX);
        let rows: Vec<Vec<Val<'_>>> = records.into_iter().map(|(_, (_, vals))| vals).collect();
        prepared.tables.push(TableRows {
            spec,
            rows,
            duplicates: total.saturating_sub(unique),
        });
    }

    let mut links: Vec<((&str, &str), &DealContact)> = links.into_iter().collect();
    links.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    prepared.link_duplicates =
        link_count.saturating_sub(u64::try_from(links.len()).unwrap_or(u64::MAX));
    prepared.links = links.into_iter().map(|(_, l)| l).collect();

    let mut deletions: HashMap<RecordKind, HashMap<&str, DateTime<Utc>>> = HashMap::new();
    let mut link_deletions: Vec<(&str, &str)> = Vec::new();
    for Deletion {
        kind,
        source_id,
        deleted_at,
    } in &batch.deletions
    {
        if source_id.contains('\0') {
            return Err(nul_error(source_id, kind.table(), "source_id"));
        }
        if *kind == RecordKind::DealContact {
            let Some((deal, contact)) = source_id.split_once(':') else {
                return Err(Error::decode(
                    Some(source_id),
                    "a deal_contacts deletion needs the id \"<deal_source_id>:<contact_source_id>\"",
                ));
            };
            link_deletions.push((deal, contact));
            continue;
        }
        let slot = deletions
            .entry(*kind)
            .or_default()
            .entry(source_id.as_str())
            .or_insert(*deleted_at);
        if *deleted_at > *slot {
            *slot = *deleted_at;
        }
    }
    for spec in RECORD_TABLES {
        if let Some(rows) = deletions.remove(&spec.kind) {
            let mut rows: Vec<(&str, DateTime<Utc>)> = rows.into_iter().collect();
            rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
            prepared.deletions.push(TableDeletions { spec, rows });
        }
    }
    link_deletions.sort_unstable();
    link_deletions.dedup();
    prepared.link_deletions = link_deletions;

    let mut link_sets: HashMap<&str, &DealContactSet> = HashMap::new();
    for set in &batch.link_sets {
        validate_link_set(set)?;
        link_sets.insert(set.deal_source_id.as_str(), set);
    }
    let mut link_sets: Vec<(&str, &DealContactSet)> = link_sets.into_iter().collect();
    link_sets.sort_unstable_by(|a, b| a.0.cmp(b.0));
    prepared.link_sets = link_sets.into_iter().map(|(_, s)| s).collect();
    Ok(prepared)
}

/// How a dialect spells what the shared statements need: the null-safe comparisons, the
/// conflict pseudo-table, row locks, JSON updates and time arithmetic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub excluded: &'static str,
    pub distinct: &'static str,
    pub not_distinct: &'static str,
    /// Appended to a `SELECT` that reads rows the transaction then writes.
    pub for_update: &'static str,
    /// A connection's `sync_cursor` with its `streams` member set to the JSON `$3` (other
    /// members kept; a cursor that is not an object is replaced).
    pub set_streams: &'static str,
    /// `duration_ms` of a `sync_log` row from `started_at` to the timestamp `at` (an
    /// expression or a parameter), never negative.
    pub duration_ms: fn(at: &str) -> String,
    /// Deletes the `deal_contacts` rows of the workspace `$1` and source `$2` whose deal is in
    /// the text list `$3` (an `Arg::StrList`) and whose `(deal_source_id, contact_source_id)`
    /// is not one of the pairs of the JSON array `$4` (of `[deal, contact]`).
    ///
    /// PostgreSQL looks the deals up one at a time (a `LATERAL` with `LIMIT` is never
    /// flattened) and deletes by `ctid`: during a bulk load the table has no statistics, the
    /// planner believes the workspace holds one row, and a plain join or `IN` rescans every
    /// link of the workspace once per deal of the batch (1 s a batch at 45,000 links). SQLite
    /// compares `json_array(…)` texts, both rendered by SQLite, since its row-value `NOT IN`
    /// rescans the subquery for every row.
    pub unlink_missing: &'static str,
    /// Taken by every `write_batch` transaction after it begins, over the text `$1` naming
    /// the workspace and source: concurrent batches of one workspace and source then run
    /// one after the other. PostgreSQL needs it: a record table has two unique keys for one
    /// identity (`id`, derived from the other, and `(workspace_id, source, source_id)`),
    /// `ON CONFLICT` handles only the second, so two transactions inserting the same new
    /// record at once made the later one fail on the first (`23505` on the primary key).
    /// SQLite's write transactions are serialized already (`BEGIN IMMEDIATE`).
    pub batch_lock: Option<&'static str>,
}

#[cfg(feature = "postgres")]
pub(crate) const PG: Dialect = Dialect {
    excluded: "EXCLUDED",
    distinct: "IS DISTINCT FROM",
    not_distinct: "IS NOT DISTINCT FROM",
    for_update: " FOR UPDATE",
    set_streams: "(CASE WHEN jsonb_typeof(sync_cursor) = 'object' THEN sync_cursor ELSE '{}'::jsonb END) \
                  || jsonb_build_object('streams', $3::jsonb)",
    duration_ms: |at| {
        format!(
            "GREATEST(0, ROUND(EXTRACT(EPOCH FROM ({at}::timestamptz - started_at)) * 1000))::bigint"
        )
    },
    unlink_missing: "DELETE FROM deal_contacts WHERE ctid = ANY(ARRAY( \
        SELECT x.ctid FROM UNNEST($3::text[]) AS u(id) \
        CROSS JOIN LATERAL (SELECT i.ctid, i.deal_source_id, i.contact_source_id \
            FROM deal_contacts i WHERE i.workspace_id = $1 AND i.source = $2 \
            AND i.deal_source_id = u.id LIMIT 1000000) x \
        WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements($4::jsonb) AS p \
            WHERE p->>0 = x.deal_source_id AND p->>1 = x.contact_source_id)))",
    batch_lock: Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"),
};

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Dialect = Dialect {
    excluded: "excluded",
    distinct: "IS NOT",
    not_distinct: "IS",
    for_update: "",
    set_streams: "json_set(CASE WHEN json_type(sync_cursor) = 'object' THEN sync_cursor ELSE '{}' END, \
                  '$.streams', json($3))",
    duration_ms: |at| {
        format!(
            "MAX(0, CAST(ROUND((julianday({at}) - julianday(started_at)) * 86400000.0) AS INTEGER))"
        )
    },
    unlink_missing: "DELETE FROM deal_contacts WHERE workspace_id = $1 AND source = $2 \
        AND deal_source_id IN (SELECT value FROM json_each($3)) \
        AND json_array(deal_source_id, contact_source_id) NOT IN \
        (SELECT json_array(json_extract(value, '$[0]'), json_extract(value, '$[1]')) \
         FROM json_each($4))",
    batch_lock: None,
};

/// The value a column gets when a conflicting row is updated.
fn merged(spec: &TableSpec, col: &Col, d: Dialect) -> String {
    match col.merge {
        Merge::Replace => format!("{}.{}", d.excluded, col.name),
        Merge::KeepIfNull => format!(
            "COALESCE({}.{}, {}.{})",
            d.excluded, col.name, spec.table, col.name
        ),
        Merge::KeepIfNullWhenArchived => format!(
            "COALESCE({x}.{c}, CASE WHEN {x}.archived_at IS NOT NULL THEN {t}.{c} END)",
            x = d.excluded,
            c = col.name,
            t = spec.table,
        ),
    }
}

/// `ON CONFLICT ... DO UPDATE SET ... WHERE ...` of a record table's upsert.
///
/// An incoming row replaces the stored one when it is newer (`source_updated_at` later, or
/// the stored one has none), or when it has the same `source_updated_at` but different
/// content (a corrected transform, a computed field). It never replaces a newer row, a row
/// with a timestamp by one without, and it never un-archives a row with a version that is
/// not newer than the archive time. Rows it leaves alone are not returned by `RETURNING`.
pub(crate) fn upsert_conflict_clause(spec: &TableSpec, d: Dialect) -> String {
    let t = spec.table;
    let x = d.excluded;
    let set: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| !matches!(c.name, "id" | "source_id"))
        .map(|c| format!("{} = {}", c.name, merged(spec, c, d)))
        .chain(std::iter::once(format!("synced_at = {x}.synced_at")))
        .collect();
    let changed: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| !matches!(c.name, "id" | "source_id" | "source_updated_at"))
        .map(|c| format!("{t}.{} {} {}", c.name, d.distinct, merged(spec, c, d)))
        .collect();
    format!(
        "ON CONFLICT (workspace_id, source, source_id) DO UPDATE SET {set} \
         WHERE (({t}.source_updated_at IS NULL AND {x}.source_updated_at IS NOT NULL) \
             OR {x}.source_updated_at > {t}.source_updated_at \
             OR ({x}.source_updated_at {nd} {t}.source_updated_at AND ({changed}))) \
           AND NOT ({t}.archived_at IS NOT NULL AND {x}.archived_at IS NULL \
             AND ({x}.source_updated_at IS NULL OR {x}.source_updated_at <= {t}.archived_at))",
        set = set.join(", "),
        nd = d.not_distinct,
        changed = changed.join(" OR "),
    )
}

#[cfg(feature = "sqlite")]
/// Formats a timestamp the way the SQLite schema stores them: UTC, microseconds, fixed
/// width (`2024-05-01T09:30:00.000000Z`), so text order is time order.
pub(crate) fn sqlite_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The error of a column that cannot be read.
pub(crate) fn decode_err(col: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::storage(format!("could not read column {col}"), e)
}

/// The [`RowRead`] methods of the types both drivers decode natively (text, integers,
/// floats, booleans), for a backend's `impl RowRead`.
macro_rules! native_row_reads {
    () => {
        fn text(&self, col: &str) -> Result<Option<String>> {
            self.try_get(col)
                .map_err($crate::store::rows::decode_err(col))
        }

        fn int(&self, col: &str) -> Result<Option<i64>> {
            self.try_get(col)
                .map_err($crate::store::rows::decode_err(col))
        }

        fn float(&self, col: &str) -> Result<Option<f64>> {
            self.try_get(col)
                .map_err($crate::store::rows::decode_err(col))
        }

        fn boolean(&self, col: &str) -> Result<Option<bool>> {
            self.try_get(col)
                .map_err($crate::store::rows::decode_err(col))
        }
    };
}
pub(crate) use native_row_reads;

/// Reads typed columns from a database row by name.
pub(crate) trait RowRead {
    fn text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<Option<i64>>;
    fn float(&self, col: &str) -> Result<Option<f64>>;
    fn boolean(&self, col: &str) -> Result<Option<bool>>;
    fn ts(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn date(&self, col: &str) -> Result<Option<NaiveDate>>;
    fn uuid(&self, col: &str) -> Result<Option<Uuid>>;
    fn json(&self, col: &str) -> Result<Option<serde_json::Value>>;
}

/// A NULL where the schema says NOT NULL.
pub(crate) fn required<T>(value: Option<T>, col: &str) -> Result<T> {
    value.ok_or_else(|| Error::decode(None, format!("column {col} is NULL")))
}

fn decode_meta(r: &impl RowRead) -> Result<RecordMeta> {
    let custom_fields = match r.json("custom_fields")? {
        Some(serde_json::Value::Object(map)) => map,
        Some(serde_json::Value::Null) | None => CustomFields::new(),
        Some(other) => {
            return Err(Error::decode(
                None,
                format!("custom_fields is not an object: {other}"),
            ));
        }
    };
    Ok(RecordMeta {
        id: required(r.uuid("id")?, "id")?,
        workspace_id: required(r.uuid("workspace_id")?, "workspace_id")?,
        source: required(r.text("source")?, "source")?.parse()?,
        source_id: required(r.text("source_id")?, "source_id")?,
        custom_fields,
        source_created_at: r.ts("source_created_at")?,
        source_updated_at: r.ts("source_updated_at")?,
        archived_at: r.ts("archived_at")?,
        synced_at: r.ts("synced_at")?,
    })
}

/// Decodes a row of `kind`'s table.
pub(crate) fn decode_record(kind: RecordKind, r: &impl RowRead) -> Result<Record> {
    Ok(match kind {
        RecordKind::Account => Record::Account(Account {
            meta: decode_meta(r)?,
            name: r.text("name")?,
            domain: r.text("domain")?,
            industry: r.text("industry")?,
            employee_count: r.int("employee_count")?,
            annual_revenue: r.float("annual_revenue")?,
            owner_id: r.text("owner_id")?,
        }),
        RecordKind::Contact => Record::Contact(Contact {
            meta: decode_meta(r)?,
            email: r.text("email")?,
            first_name: r.text("first_name")?,
            last_name: r.text("last_name")?,
            title: r.text("title")?,
            phone: r.text("phone")?,
            account_source_id: r.text("account_source_id")?,
            lifecycle_stage: r.text("lifecycle_stage")?,
            owner_id: r.text("owner_id")?,
        }),
        RecordKind::Deal => Record::Deal(Deal {
            meta: decode_meta(r)?,
            name: r.text("name")?,
            amount: r.float("amount")?,
            currency: r.text("currency")?,
            stage: r.text("stage")?,
            pipeline: r.text("pipeline")?,
            close_date: r.date("close_date")?,
            probability: r.float("probability")?,
            owner_id: r.text("owner_id")?,
            account_source_id: r.text("account_source_id")?,
            is_closed: r.boolean("is_closed")?,
            is_won: r.boolean("is_won")?,
            forecast_category: r.text("forecast_category")?,
            days_open: r.int("days_open")?,
            days_to_close: r.int("days_to_close")?,
        }),
        RecordKind::Conversation => {
            let participants = match r.json("participants")? {
                Some(v @ serde_json::Value::Array(_)) => serde_json::from_value(v)
                    .map_err(|e| Error::decode(None, format!("invalid participants: {e}")))?,
                _ => Vec::new(),
            };
            Record::Conversation(Conversation {
                meta: decode_meta(r)?,
                title: r.text("title")?,
                started_at: r.ts("started_at")?,
                duration_seconds: r.int("duration_seconds")?,
                url: r.text("url")?,
                host_email: r.text("host_email")?,
                participants,
                summary: r.text("summary")?,
                transcript: r.text("transcript")?,
                is_internal: r.boolean("is_internal")?,
                linked_account_id: r.uuid("linked_account_id")?,
                linked_deal_id: r.uuid("linked_deal_id")?,
            })
        }
        RecordKind::Task => Record::Task(Task {
            meta: decode_meta(r)?,
            board_id: r.text("board_id")?,
            board_name: r.text("board_name")?,
            group_name: r.text("group_name")?,
            title: r.text("title")?,
            status: r.text("status")?,
            assignee_email: r.text("assignee_email")?,
            due_date: r.date("due_date")?,
            completed_at: r.ts("completed_at")?,
            url: r.text("url")?,
        }),
        RecordKind::Document => Record::Document(Document {
            meta: decode_meta(r)?,
            title: r.text("title")?,
            mime_type: r.text("mime_type")?,
            url: r.text("url")?,
            owner_email: r.text("owner_email")?,
            content_text: r.text("content_text")?,
            size_bytes: r.int("size_bytes")?,
            parent_id: r.text("parent_id")?,
        }),
        RecordKind::DealContact => Record::DealContact(DealContact {
            workspace_id: required(r.uuid("workspace_id")?, "workspace_id")?,
            source: required(r.text("source")?, "source")?.parse()?,
            deal_source_id: required(r.text("deal_source_id")?, "deal_source_id")?,
            contact_source_id: required(r.text("contact_source_id")?, "contact_source_id")?,
            role: r.text("role")?,
        }),
    })
}

/// Splits a link id `deal:contact` (see [`Record::source_id`]).
pub(crate) fn split_link_id(source_id: &str) -> Result<(&str, &str)> {
    source_id.split_once(':').ok_or_else(|| {
        Error::config(format!(
            "a deal_contacts id is \"<deal_source_id>:<contact_source_id>\", not {source_id:?}"
        ))
    })
}

/// Decodes a row of `connections`.
pub(crate) fn decode_connection(r: &impl RowRead) -> Result<ConnectionRow> {
    Ok(ConnectionRow {
        id: required(r.uuid("id")?, "id")?,
        workspace_id: required(r.uuid("workspace_id")?, "workspace_id")?,
        connector: required(r.text("connector_name")?, "connector_name")?.parse()?,
        auth_method: required(r.text("auth_method")?, "auth_method")?,
        credentials: r.text("credentials")?.map(SealedCredentials::from_stored),
        config: r
            .json("config")?
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
        status: required(r.text("status")?, "status")?.parse()?,
        last_sync_at: r.ts("last_sync_at")?,
        sync_cursor: r.json("sync_cursor")?,
        error_message: r.text("error_message")?,
        created_at: required(r.ts("created_at")?, "created_at")?,
        updated_at: required(r.ts("updated_at")?, "updated_at")?,
    })
}

/// Decodes a row of `sync_log`.
pub(crate) fn decode_sync_log(r: &impl RowRead) -> Result<SyncLogEntry> {
    let errors = r
        .json("errors")?
        .map(serde_json::from_value::<SyncErrors>)
        .transpose()
        .map_err(|e| Error::decode(None, format!("invalid sync_log.errors: {e}")))?;
    Ok(SyncLogEntry {
        id: required(r.uuid("id")?, "id")?,
        workspace_id: required(r.uuid("workspace_id")?, "workspace_id")?,
        connector: parse_opt(r.text("connector_type")?)?,
        sync_type: parse_opt(r.text("sync_type")?)?,
        status: required(r.text("status")?, "status")?.parse()?,
        records_synced: to_u64(r.int("records_synced")?.unwrap_or(0), "records_synced")?,
        errors,
        error_message: r.text("error_message")?,
        duration_ms: r
            .int("duration_ms")?
            .map(|d| to_u64(d, "duration_ms"))
            .transpose()?,
        started_at: required(r.ts("started_at")?, "started_at")?,
        completed_at: r.ts("completed_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ws() -> Uuid {
        Uuid::from_u128(1)
    }

    fn deal(id: &str, day: u32, name: &str) -> Record {
        let mut d = Deal::new(ws(), ConnectorKind::Hubspot, id);
        d.meta.source_updated_at = Some(Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap());
        d.name = Some(name.into());
        d.into()
    }

    /// Validation checks the JSON columns value by value (it does not serialize them): a
    /// NUL in a custom field or a participant is still found and named.
    #[test]
    fn validation_finds_nul_in_json_columns() {
        let mut d = Deal::new(ws(), ConnectorKind::Hubspot, "d");
        d.meta
            .custom_fields
            .insert("k".into(), serde_json::json!({"a": ["x\0"]}));
        let err = validate(&d.into()).unwrap_err();
        assert!(err.to_string().contains("deals.custom_fields"), "{err}");
        let mut c = Conversation::new(ws(), ConnectorKind::Gong, "c");
        c.participants.push(Participant {
            email: None,
            name: Some("a\0b".into()),
            is_internal: false,
        });
        let err = validate(&c.into()).unwrap_err();
        assert!(
            err.to_string().contains("conversations.participants"),
            "{err}"
        );
        let clean: Record = Deal::new(ws(), ConnectorKind::Hubspot, "ok").into();
        assert!(validate(&clean).is_ok());
    }

    #[test]
    fn specs_match_values() {
        let records: Vec<Record> = vec![
            Account::new(ws(), ConnectorKind::Hubspot, "a").into(),
            Contact::new(ws(), ConnectorKind::Hubspot, "c").into(),
            Deal::new(ws(), ConnectorKind::Hubspot, "d").into(),
            Conversation::new(ws(), ConnectorKind::Hubspot, "v").into(),
            Task::new(ws(), ConnectorKind::Hubspot, "t").into(),
            Document::new(ws(), ConnectorKind::Hubspot, "f").into(),
        ];
        for r in &records {
            let s = spec(r.kind()).unwrap();
            assert_eq!(s.table, r.kind().table());
            let vals = values(r).unwrap().unwrap();
            assert_eq!(vals.len(), s.columns.len(), "{}", s.table);
            for (c, v) in s.columns.iter().zip(&vals) {
                assert_eq!(c.ty, v.ty(), "{}.{}", s.table, c.name);
            }
        }
    }

    #[test]
    fn prepare_dedupes_keeping_newest_and_sorts() {
        let batch = RecordBatch::new(vec![
            deal("b", 2, "b-new"),
            deal("a", 1, "a"),
            deal("b", 1, "b-old"),
            deal("c", 1, "c-1"),
            deal("c", 1, "c-2"),
        ]);
        let p = prepare(ws(), ConnectorKind::Hubspot, &batch).unwrap();
        assert_eq!(p.tables.len(), 1);
        let t = &p.tables[0];
        assert_eq!(t.duplicates, 2);
        let ids: Vec<&str> = (0..t.rows.len()).map(|i| t.source_id(i)).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let name_idx = t
            .spec
            .columns
            .iter()
            .position(|c| c.name == "name")
            .unwrap();
        assert_eq!(t.rows[1][name_idx], Val::Text(Some("b-new")));
        assert_eq!(t.rows[2][name_idx], Val::Text(Some("c-2")));
    }

    #[test]
    fn prepare_rejects_foreign_and_unstorable_records() {
        let other = Deal::new(Uuid::from_u128(2), ConnectorKind::Hubspot, "x");
        let err = prepare(
            ws(),
            ConnectorKind::Hubspot,
            &RecordBatch::new(vec![other.into()]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("belongs to workspace"), "{err}");
        let err = prepare(
            ws(),
            ConnectorKind::Gong,
            &RecordBatch::new(vec![deal("a", 1, "x")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("belongs to workspace"), "{err}");

        let err = validate(&deal("a", 1, "nul\0byte")).unwrap_err();
        assert!(matches!(&err, Error::Decode { record_id: Some(id), .. } if id == "a"));
        assert!(err.to_string().contains("deals.name"), "{err}");
        let mut d = Deal::new(ws(), ConnectorKind::Hubspot, "n");
        d.amount = Some(f64::NAN);
        assert!(
            validate(&d.clone().into())
                .unwrap_err()
                .to_string()
                .contains("deals.amount")
        );
        d.amount = Some(f64::MAX);
        d.meta
            .custom_fields
            .insert("k".into(), serde_json::json!({"deep": ["ok", "\u{0}"]}));
        assert!(
            validate(&d.into())
                .unwrap_err()
                .to_string()
                .contains("custom_fields")
        );
        let mut c = Conversation::new(ws(), ConnectorKind::Gong, "v");
        c.participants.push(Participant {
            email: Some("a\0@x".into()),
            name: None,
            is_internal: false,
        });
        assert!(
            validate(&c.into())
                .unwrap_err()
                .to_string()
                .contains("participants")
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn document_text_is_kept_when_a_record_carries_none() {
        let col = DOCUMENTS
            .columns
            .iter()
            .find(|c| c.name == "content_text")
            .unwrap();
        assert_eq!(col.merge, Merge::KeepIfNull);
    }

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let a = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let c = a + chrono::Duration::milliseconds(500);
        assert_eq!(sqlite_ts(a), "2024-01-01T00:00:00.000000Z");
        assert!(sqlite_ts(a) < sqlite_ts(b) && sqlite_ts(b) < sqlite_ts(c));
    }
}
