//! The SQL layer both backends share: statement text, parameters, and the implementations
//! of [`ConnectionStore`](super::ConnectionStore), [`RecordStore`](super::RecordStore),
//! [`SyncLogStore`](super::SyncLogStore) and [`EnrichmentStore`](super::EnrichmentStore),
//! written once over [`SqlBackend`].
//!
//! A backend ([`SqliteStore`](crate::SqliteStore), [`PgStore`](crate::PgStore)) implements
//! [`SqlBackend`] with only what its dialect forces: how a parameter is encoded (UUIDs,
//! timestamps, dates and JSON are text on SQLite, native types on PostgreSQL), how a write
//! transaction begins, the bulk statements of a batch (multi-row `VALUES` on SQLite,
//! `UNNEST` arrays on PostgreSQL), a few expressions ([`Dialect`]) and the enrichment
//! statements, which lean on each database's JSON functions. [`impl_sql_store!`] then
//! derives the store traits from it.
//!
//! Statement text uses numbered `$n` parameters, which both databases accept (SQLite binds
//! `$n` to the n-th argument; a repeated `$n` is the same parameter).

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::crypto::{Credentials, Keyring};
use super::rows::{self, Dialect, PreparedBatch, RowRead, TableRows, required};
use super::types::{
    Backend, ConnectionRow, ConnectionStatus, LiveCounts, MAX_PAGE, NewConnection, RecordQuery,
    SyncLogEntry, SyncOutcome, to_u64,
};
use super::{
    DealFieldCounts, InternalCounts, LinkCounts, check_config, check_outcome, db_err,
    is_unique_violation, no_connection, no_keyring, normalize_domains, outcome_errors_json, seal,
    to_i64,
};
use crate::connector::{Checkpoint, RecordBatch, WriteCounts};
use crate::error::{Error, Result, redact_secrets};
use crate::model::{ConnectorKind, Deal, DealContact, Record, RecordKind, SyncMode};

/// One statement parameter; each backend encodes it the way its schema stores the type.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Str(Option<&'a str>),
    String(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Ts(Option<DateTime<Utc>>),
    Uuid(Option<Uuid>),
    Json(Option<serde_json::Value>),
    /// A list of texts (a JSON array on SQLite, `text[]` on PostgreSQL).
    Texts(&'a [String]),
    /// The lists below are array parameters of PostgreSQL's `UNNEST` batches (on SQLite,
    /// JSON arrays of the values as SQLite stores them).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    StrList(Vec<&'a str>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    TsList(Vec<DateTime<Utc>>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    UuidList(Vec<Uuid>),
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    IntList(Vec<Option<i64>>),
}

impl From<Uuid> for Arg<'_> {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Str(Some(v))
    }
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::String(Some(v))
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Ts(Some(v))
    }
}

impl From<ConnectorKind> for Arg<'_> {
    fn from(v: ConnectorKind) -> Self {
        Arg::Str(Some(v.as_str()))
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

/// A statement and its arguments, in `$n` order.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub sql: String,
    pub args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    /// A statement whose text already numbers its parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Adds the next argument.
    pub fn arg(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends `sql` followed by a new parameter `$n` bound to `arg`.
    pub fn push_param(&mut self, sql: &str, arg: impl Into<Arg<'a>>) {
        self.args.push(arg.into());
        let _ = write!(self.sql, "{sql}${}", self.args.len());
    }
}

/// What a statement run returned.
pub(crate) struct Ran<R> {
    pub rows_affected: u64,
    pub rows: Vec<R>,
}

/// A database transaction of backend `S`.
pub(crate) type Tx<S> = sqlx::Transaction<'static, <S as StoreFields>::Db>;

/// A database connection of backend `S`.
pub(crate) type Conn<S> = <<S as StoreFields>::Db as sqlx::Database>::Connection;

/// What a batch is written for: the workspace, the source and the batch's `synced_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchScope {
    pub ws: Uuid,
    pub source: ConnectorKind,
    pub now: DateTime<Utc>,
}

/// The plumbing every SQL store has, the same code for each sqlx driver:
/// [`impl_sql_store!`] implements it.
#[async_trait::async_trait]
pub(crate) trait StoreFields: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: sqlx::Database;
    /// Its rows.
    type Row: RowRead + Send;
    /// Which backend this is.
    const BACKEND: Backend;
    /// The dialect's spelling of the shared expressions.
    const DIALECT: Dialect;

    fn pool(&self) -> &sqlx::Pool<Self::Db>;
    fn keyring(&self) -> Option<&Keyring>;
    /// Now, truncated to what the database stores (microseconds).
    fn now(&self) -> DateTime<Utc>;

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite, which takes the write lock
    /// up front, so concurrent writers queue instead of failing).
    async fn begin(&self, what: &'static str) -> Result<Tx<Self>>;

    /// Runs a statement on a connection; `rows`: whether to collect the rows it returns.
    async fn run(
        conn: &mut Conn<Self>,
        what: &'static str,
        stmt: Stmt<'_>,
        rows: bool,
    ) -> Result<Ran<Self::Row>>;
}

/// What differs between the SQL backends; everything else is written once in this module.
#[async_trait::async_trait]
pub(crate) trait SqlBackend: StoreFields {
    /// How many rows of `width` parameters one bulk statement takes.
    fn rows_per_statement(width: usize) -> usize;

    /// Creates or upgrades the schema, on a connection of its own.
    async fn migrate_schema(conn: &mut Conn<Self>) -> Result<()>;

    /// Upserts one table's rows of a batch; the counts of what it wrote.
    async fn upsert_table(
        conn: &mut Conn<Self>,
        at: BatchScope,
        t: &TableRows<'_>,
    ) -> Result<WriteCounts>;

    /// Upserts the deal-contact links of a batch; the counts of what it wrote.
    async fn upsert_links(
        conn: &mut Conn<Self>,
        at: BatchScope,
        links: &[&DealContact],
    ) -> Result<WriteCounts>;

    /// Soft-deletes rows of `table`: `(source_id, deleted_at)`, at most
    /// [`rows_per_statement(2)`](SqlBackend::rows_per_statement).
    fn archive<'a>(at: BatchScope, table: &str, rows: &'a [(&'a str, DateTime<Utc>)]) -> Stmt<'a>;

    /// Removes deal-contact links `(deal, contact)`, at most `rows_per_statement(2)`.
    fn unlink<'a>(at: BatchScope, links: &'a [(&'a str, &'a str)]) -> Stmt<'a>;

    /// Sets `days_open` and `days_to_close` of deals by id, at most `rows_per_statement(3)`.
    fn set_deal_fields(ws: Uuid, fields: &[(Uuid, Option<i64>, Option<i64>)]) -> Stmt<'static>;

    /// Runs before the enrichment statements (PostgreSQL refreshes planner statistics).
    async fn before_enrichment(&self) -> Result<()> {
        Ok(())
    }

    /// The enrichment statements; see [`Enrichment`].
    fn enrichment() -> &'static Enrichment;
}

/// Adds the outcome of one upsert statement over `rows` rows to `counts`: each row it
/// returned is an insert (`true`) or an update; the rows it did not return were unchanged.
pub(crate) fn tally(
    counts: &mut WriteCounts,
    rows: usize,
    returned: impl ExactSizeIterator<Item = Result<bool>>,
) -> Result<()> {
    counts.unchanged += super::count_u64(rows.saturating_sub(returned.len()));
    for inserted in returned {
        if inserted? {
            counts.inserted += 1;
        } else {
            counts.updated += 1;
        }
    }
    Ok(())
}

/// Runs `make(chunk)` for each chunk of `items` of at most `rows_per_statement(width)`,
/// in the transaction; returns how many rows they changed in all.
async fn bulk<'a, S: SqlBackend, T: Sync>(
    tx: &mut Tx<S>,
    what: &'static str,
    items: &'a [T],
    width: usize,
    make: impl Fn(&'a [T]) -> Stmt<'a> + Send,
) -> Result<u64> {
    let mut changed = 0;
    for chunk in statement_chunks(items, S::rows_per_statement(width)) {
        changed += execute_in::<S>(tx, what, make(chunk)).await?;
    }
    Ok(changed)
}

/// `items` in chunks for multi-row statements of at most `max` rows, whose sizes are powers
/// of two: as many of the largest such size as fit, then the rest by its binary digits. A
/// statement's text depends on its row count, and every prepared statement stays in its
/// connection's cache (a thousand-row one holds hundreds of KiB of program), so the sizes
/// come from a set of at most `log2(max) + 1` instead of one new size for the last rows of
/// every batch.
pub(crate) fn statement_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let per = 1usize << (usize::BITS - 1 - max.max(1).leading_zeros());
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= per {
            per
        } else {
            1usize << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Parses a database URL into connect options.
pub(crate) fn parse_url<O: FromStr<Err = sqlx::Error>>(url: &str, database: &str) -> Result<O> {
    O::from_str(url).map_err(|e| Error::config(format!("invalid {database} URL: {e}")))
}

/// The statements of [`EnrichmentStore`](super::EnrichmentStore), in each dialect (they use
/// its JSON functions), over `$1` = the workspace.
#[derive(Debug)]
pub(crate) struct Enrichment {
    /// Links conversations (an UPDATE).
    pub link: String,
    /// Marks conversations internal (an UPDATE); `$2` = the internal domains.
    pub mark_internal: &'static str,
    /// Counts `(total, internal)`: live conversations with participants.
    pub count_internal: &'static str,
    /// Selects `domain`: the flagged internal domains.
    pub flagged_domains: String,
}

/// Runs a statement on the pool.
pub(crate) async fn run<S: SqlBackend>(
    s: &S,
    what: &'static str,
    stmt: Stmt<'_>,
    rows: bool,
) -> Result<Ran<S::Row>> {
    let mut conn = s.pool().acquire().await.map_err(db_err(what))?;
    S::run(&mut conn, what, stmt, rows).await
}

/// Runs a statement on the pool and returns how many rows it changed.
async fn execute<S: SqlBackend>(s: &S, what: &'static str, stmt: Stmt<'_>) -> Result<u64> {
    Ok(run(s, what, stmt, false).await?.rows_affected)
}

/// Runs a statement on the pool and returns its rows.
async fn fetch<S: SqlBackend>(s: &S, what: &'static str, stmt: Stmt<'_>) -> Result<Vec<S::Row>> {
    Ok(run(s, what, stmt, true).await?.rows)
}

/// Runs a statement on the pool and decodes each row it returns.
async fn fetch_as<S: SqlBackend, T>(
    s: &S,
    what: &'static str,
    stmt: Stmt<'_>,
    decode: impl Fn(&S::Row) -> Result<T> + Send,
) -> Result<Vec<T>> {
    fetch(s, what, stmt).await?.iter().map(decode).collect()
}

/// Runs a statement on the pool and decodes the first row it returns, if any.
async fn fetch_first<S: SqlBackend, T>(
    s: &S,
    what: &'static str,
    stmt: Stmt<'_>,
    decode: impl Fn(&S::Row) -> Result<T> + Send,
) -> Result<Option<T>> {
    fetch(s, what, stmt).await?.first().map(decode).transpose()
}

/// Runs a statement in a transaction and returns its rows.
async fn fetch_in<S: SqlBackend>(
    tx: &mut Tx<S>,
    what: &'static str,
    stmt: Stmt<'_>,
) -> Result<Vec<S::Row>> {
    Ok(S::run(tx, what, stmt, true).await?.rows)
}

/// Runs a statement in a transaction and returns how many rows it changed.
async fn execute_in<S: SqlBackend>(
    tx: &mut Tx<S>,
    what: &'static str,
    stmt: Stmt<'_>,
) -> Result<u64> {
    Ok(S::run(tx, what, stmt, false).await?.rows_affected)
}

async fn commit<S: SqlBackend>(tx: Tx<S>, what: &'static str) -> Result<()> {
    tx.commit().await.map_err(db_err(what))
}

/// The first row's integer column `col` as a count.
fn count_of(rows: &[impl RowRead], col: &str) -> Result<u64> {
    let n = rows.first().map(|r| r.int(col)).transpose()?.flatten();
    to_u64(n.unwrap_or(0), "count")
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

pub(crate) async fn migrate<S: SqlBackend>(s: &S) -> Result<()> {
    let mut conn = s
        .pool()
        .acquire()
        .await
        .map_err(db_err("migrate: acquire"))?;
    S::migrate_schema(&mut conn).await
}

pub(crate) async fn ping<S: SqlBackend>(s: &S) -> Result<()> {
    execute(s, "ping", Stmt::new("SELECT 1")).await.map(|_| ())
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

const CONNECTION_WHERE: &str = " WHERE workspace_id = $1 AND connector_name = $2";

/// `UPDATE connections SET {set}, updated_at = now` of one connection (`$1`, `$2`), with
/// the set's parameters from `$3`.
fn connection_update<'a>(set: &str, ws: Uuid, connector: ConnectorKind) -> Stmt<'a> {
    Stmt::new(format!("UPDATE connections SET {set}{CONNECTION_WHERE}"))
        .arg(ws)
        .arg(connector)
}

/// Runs an UPDATE of one connection row; `no_connection` when it matched nothing.
async fn update_connection<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    stmt: Stmt<'_>,
) -> Result<()> {
    if execute(s, "updating a connection", stmt).await? == 0 {
        return Err(no_connection(ws, connector));
    }
    Ok(())
}

pub(crate) async fn create_connection<S: SqlBackend>(
    s: &S,
    new: NewConnection,
) -> Result<ConnectionRow> {
    check_config(&new.config)?;
    let sealed = seal(
        s.keyring(),
        new.workspace_id,
        new.connector,
        new.credentials.as_ref(),
    )?;
    let stmt = Stmt::new(
        "INSERT INTO connections (id, workspace_id, connector_name, auth_method, credentials, config, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING *",
    )
    .arg(Uuid::new_v4())
    .arg(new.workspace_id)
    .arg(new.connector)
    .arg(new.auth_method.as_str())
    .arg(Arg::String(sealed))
    .arg(Arg::Json(Some(new.config.clone())))
    .arg(s.now());
    let rows = match run(s, "create_connection", stmt, true).await {
        Ok(ran) => ran.rows,
        Err(Error::Storage {
            source: Some(source),
            ..
        }) if source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_unique_violation) =>
        {
            return Err(Error::Conflict {
                message: format!(
                    "workspace {} already has a {} connection",
                    new.workspace_id, new.connector
                ),
                running_id: None,
            });
        }
        Err(e) => return Err(e),
    };
    let row = rows
        .first()
        .ok_or_else(|| Error::decode(None, "create_connection returned no row"))?;
    rows::decode_connection(row)
}

pub(crate) async fn get_connection<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
) -> Result<Option<ConnectionRow>> {
    let stmt = Stmt::new(format!("SELECT * FROM connections{CONNECTION_WHERE}"))
        .arg(ws)
        .arg(connector);
    fetch_first(s, "get_connection", stmt, rows::decode_connection).await
}

pub(crate) async fn list_connections<S: SqlBackend>(s: &S, ws: Uuid) -> Result<Vec<ConnectionRow>> {
    let stmt =
        Stmt::new("SELECT * FROM connections WHERE workspace_id = $1 ORDER BY connector_name")
            .arg(ws);
    fetch_as(s, "list_connections", stmt, rows::decode_connection).await
}

pub(crate) async fn delete_connection<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
) -> Result<bool> {
    let stmt = Stmt::new(format!("DELETE FROM connections{CONNECTION_WHERE}"))
        .arg(ws)
        .arg(connector);
    Ok(execute(s, "delete_connection", stmt).await? > 0)
}

pub(crate) async fn workspaces<S: SqlBackend>(s: &S) -> Result<Vec<Uuid>> {
    let stmt = Stmt::new("SELECT DISTINCT workspace_id FROM connections ORDER BY workspace_id");
    fetch_as(s, "workspaces", stmt, |r| {
        required(r.uuid("workspace_id")?, "workspace_id")
    })
    .await
}

pub(crate) async fn set_connection_status<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    status: ConnectionStatus,
    error_message: Option<&str>,
) -> Result<()> {
    let stmt = connection_update(
        "status = $3, error_message = $4, updated_at = $5",
        ws,
        connector,
    )
    .arg(status.as_str())
    .arg(Arg::String(error_message.map(redact_secrets)))
    .arg(s.now());
    update_connection(s, ws, connector, stmt).await
}

/// Sets one column of a connection (and `updated_at`).
pub(crate) async fn set_connection_column<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    column: &'static str,
    value: Arg<'_>,
) -> Result<()> {
    let set = format!("{column} = $3, updated_at = $4");
    let stmt = connection_update(&set, ws, connector)
        .arg(value)
        .arg(s.now());
    update_connection(s, ws, connector, stmt).await
}

pub(crate) async fn set_config<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    config: &serde_json::Value,
) -> Result<()> {
    check_config(config)?;
    set_connection_column(s, ws, connector, "config", Arg::Json(Some(config.clone()))).await
}

pub(crate) async fn set_credentials<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    credentials: Option<&Credentials>,
) -> Result<()> {
    let sealed = seal(s.keyring(), ws, connector, credentials)?;
    set_connection_column(s, ws, connector, "credentials", Arg::String(sealed)).await
}

/// Reads the cursor in a write transaction (the row locked on PostgreSQL), sets the
/// members, and writes it back.
pub(crate) async fn merge_sync_cursor<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: ConnectorKind,
    members: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let mut tx = s.begin("merge_sync_cursor: begin").await?;
    let read = Stmt::new(format!(
        "SELECT sync_cursor FROM connections{CONNECTION_WHERE}{}",
        S::DIALECT.for_update
    ))
    .arg(ws)
    .arg(connector);
    let rows = fetch_in::<S>(&mut tx, "merge_sync_cursor: read", read).await?;
    let row = rows.first().ok_or_else(|| no_connection(ws, connector))?;
    let mut cursor = match row.json("sync_cursor")? {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (k, v) in members {
        cursor.insert(k.clone(), v.clone());
    }
    let write = connection_update("sync_cursor = $3, updated_at = $4", ws, connector)
        .arg(Arg::Json(Some(serde_json::Value::Object(cursor))))
        .arg(s.now());
    execute_in::<S>(&mut tx, "merge_sync_cursor: write", write).await?;
    commit::<S>(tx, "merge_sync_cursor: commit").await
}

pub(crate) async fn reencrypt_credentials<S: SqlBackend>(s: &S, ws: Uuid) -> Result<u64> {
    let keyring = s.keyring().ok_or_else(no_keyring)?;
    let mut changed = 0;
    for row in list_connections(s, ws).await? {
        let Some(sealed) = &row.credentials else {
            continue;
        };
        if !keyring.needs_reseal(sealed) {
            continue;
        }
        let open = keyring.open(ws, row.connector, sealed)?;
        let resealed = keyring.seal(ws, row.connector, &open)?;
        // Only the value read: a row changed meanwhile is left to its writer.
        let stmt = Stmt::new(format!(
            "UPDATE connections SET credentials = $4, updated_at = $5{CONNECTION_WHERE} \
             AND credentials = $3"
        ))
        .arg(ws)
        .arg(row.connector)
        .arg(sealed.as_stored())
        .arg(resealed.as_stored())
        .arg(s.now());
        changed += execute(s, "reencrypt_credentials", stmt).await?;
    }
    Ok(changed)
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

pub(crate) async fn write_batch<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    source: ConnectorKind,
    batch: &RecordBatch,
    checkpoint: &Checkpoint,
) -> Result<WriteCounts> {
    let prepared: PreparedBatch<'_> = rows::prepare(ws, source, batch)?;
    let at = BatchScope {
        ws,
        source,
        now: s.now(),
    };
    let checkpoint = serde_json::to_value(&checkpoint.streams)?;
    let mut tx = s.begin("write_batch: begin").await?;
    if let Some(lock) = S::DIALECT.batch_lock {
        let key = format!("pandora_sync write_batch {ws} {}", source.as_str());
        let stmt = Stmt::new(lock).arg(Arg::String(Some(key)));
        fetch_in::<S>(
            &mut tx,
            "write_batch: waiting for the same source's batch",
            stmt,
        )
        .await?;
    }
    let mut counts = WriteCounts::default();

    for t in &prepared.tables {
        counts += S::upsert_table(&mut tx, at, t).await?;
        counts.unchanged += t.duplicates;
    }
    if !prepared.links.is_empty() {
        counts += S::upsert_links(&mut tx, at, &prepared.links).await?;
        counts.unchanged += prepared.link_duplicates;
    }
    for d in &prepared.deletions {
        let what = "write_batch: archiving deleted records";
        counts.archived += bulk::<S, _>(&mut tx, what, &d.rows, 2, |chunk| {
            S::archive(at, d.spec.table, chunk)
        })
        .await?;
    }
    let (what, links) = ("write_batch: removing links", &prepared.link_deletions);
    counts.archived += bulk::<S, _>(&mut tx, what, links, 2, |chunk| S::unlink(at, chunk)).await?;
    if !prepared.link_sets.is_empty() {
        let what = "write_batch: removing links missing from their deal's contact set";
        counts.archived +=
            execute_in::<S>(&mut tx, what, unlink_missing::<S>(at, &prepared)).await?;
    }

    let stmt = connection_update(
        &format!("sync_cursor = {}, updated_at = $4", S::DIALECT.set_streams),
        ws,
        source,
    )
    .arg(Arg::Json(Some(checkpoint)))
    .arg(at.now);
    if execute_in::<S>(&mut tx, "write_batch: storing the checkpoint", stmt).await? == 0 {
        // Dropping `tx` rolls the batch back.
        return Err(no_connection(ws, source));
    }
    commit::<S>(tx, "write_batch: commit").await?;
    tracing::debug!(
        workspace_id = %ws, %source, inserted = counts.inserted, updated = counts.updated,
        unchanged = counts.unchanged, archived = counts.archived, "batch committed"
    );
    Ok(counts)
}

/// Removes the links of the deals of `prepared.link_sets` whose contact is not in the
/// deal's set (one statement for every set of the batch).
fn unlink_missing<'a, S: SqlBackend>(at: BatchScope, prepared: &'a PreparedBatch<'a>) -> Stmt<'a> {
    let deals: Vec<&str> = prepared
        .link_sets
        .iter()
        .map(|s| s.deal_source_id.as_str())
        .collect();
    let pairs: Vec<serde_json::Value> = prepared
        .link_sets
        .iter()
        .flat_map(|s| {
            s.contact_source_ids
                .iter()
                .map(|c| serde_json::json!([s.deal_source_id, c]))
        })
        .collect();
    Stmt::new(S::DIALECT.unlink_missing)
        .arg(at.ws)
        .arg(at.source)
        .arg(Arg::StrList(deals))
        .arg(Arg::Json(Some(serde_json::Value::Array(pairs))))
}

pub(crate) async fn get_record<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    kind: RecordKind,
    source: ConnectorKind,
    source_id: &str,
) -> Result<Option<Record>> {
    let stmt = if kind == RecordKind::DealContact {
        let (deal, contact) = rows::split_link_id(source_id)?;
        Stmt::new(
            "SELECT * FROM deal_contacts WHERE workspace_id = $1 AND source = $2 \
             AND deal_source_id = $3 AND contact_source_id = $4",
        )
        .arg(ws)
        .arg(source)
        .arg(deal)
        .arg(contact)
    } else {
        Stmt::new(format!(
            "SELECT * FROM {} WHERE workspace_id = $1 AND source = $2 AND source_id = $3",
            kind.table()
        ))
        .arg(ws)
        .arg(source)
        .arg(source_id)
    };
    fetch_first(s, "get_record", stmt, |r| rows::decode_record(kind, r)).await
}

pub(crate) async fn list_records<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    kind: RecordKind,
    query: &RecordQuery,
) -> Result<Vec<Record>> {
    let mut stmt = Stmt::new(format!(
        "SELECT * FROM {} WHERE workspace_id = $1",
        kind.table()
    ))
    .arg(ws);
    if let Some(source) = query.source {
        stmt.push_param(" AND source = ", source);
    }
    if kind == RecordKind::DealContact {
        if query.after.is_some() {
            return Err(Error::unsupported(
                "list_records after an id",
                "deal_contacts",
            ));
        }
        stmt.push_param(
            " ORDER BY source, deal_source_id, contact_source_id LIMIT ",
            query.capped_limit(),
        );
    } else {
        if let Some(after) = query.after {
            stmt.push_param(" AND id > ", after);
        }
        if !query.include_archived {
            stmt.sql.push_str(" AND archived_at IS NULL");
        }
        stmt.push_param(" ORDER BY id LIMIT ", query.capped_limit());
    }
    fetch_as(s, "list_records", stmt, |r| rows::decode_record(kind, r)).await
}

pub(crate) async fn count_records<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    kind: RecordKind,
    source: Option<ConnectorKind>,
) -> Result<u64> {
    let mut stmt = Stmt::new(format!(
        "SELECT COUNT(*) AS n FROM {} WHERE workspace_id = $1",
        kind.table()
    ))
    .arg(ws);
    if let Some(source) = source {
        stmt.push_param(" AND source = ", source);
    }
    count_of(&fetch(s, "count_records", stmt).await?, "n")
}

pub(crate) async fn count_live_records<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    kind: RecordKind,
    source: ConnectorKind,
    updated_since: DateTime<Utc>,
) -> Result<LiveCounts> {
    let stmt = if kind == RecordKind::DealContact {
        Stmt::new(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE false) AS since \
             FROM deal_contacts WHERE workspace_id = $1 AND source = $2",
        )
        .arg(ws)
        .arg(source)
    } else {
        Stmt::new(format!(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE source_updated_at >= $3) AS since \
             FROM {} WHERE workspace_id = $1 AND source = $2 AND archived_at IS NULL",
            kind.table()
        ))
        .arg(ws)
        .arg(source)
        .arg(updated_since)
    };
    let rows = fetch(s, "count_live_records", stmt).await?;
    Ok(LiveCounts {
        live: count_of(&rows, "n")?,
        updated_since: count_of(&rows, "since")?,
    })
}

// ---------------------------------------------------------------------------------------
// Sync log
// ---------------------------------------------------------------------------------------

/// `status = 'failed', error_message = {reason}, completed_at = {at}, duration_ms = ...`:
/// the `SET` of a run that failed (`duration_ms` from `started_at` to `at`).
pub(crate) fn fail_set(d: &Dialect, reason: &str, at: &str) -> String {
    format!(
        "status = 'failed', error_message = {reason}, completed_at = {at}, duration_ms = {}",
        (d.duration_ms)(at)
    )
}

/// Fails the job's run `sync_id` when it is still running (or pending, with
/// `include_pending`): its job ended without finishing it. Returns whether it changed.
pub(crate) async fn fail_active_sync<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    sync_id: Uuid,
    reason: &str,
    include_pending: bool,
) -> Result<bool> {
    let stmt = Stmt::new(format!(
        "UPDATE sync_log SET {} WHERE workspace_id = $1 AND id = $2 \
         AND (status = 'running' OR ($5 AND status = 'pending'))",
        fail_set(&S::DIALECT, "$3", "$4")
    ))
    .arg(ws)
    .arg(sync_id)
    .arg(redact_secrets(reason))
    .arg(s.now())
    .arg(Arg::Bool(Some(include_pending)));
    Ok(execute(s, "fail_active_sync", stmt).await? > 0)
}

async fn sync_not_updated<S: SqlBackend>(s: &S, ws: Uuid, id: Uuid, what: &str) -> Error {
    match get_sync(s, ws, id).await {
        Ok(Some(entry)) => Error::Conflict {
            message: format!("sync {id} is {} and cannot be {what}", entry.status),
            running_id: Some(id),
        },
        Ok(None) => Error::config(format!("workspace {ws} has no sync {id}")),
        Err(e) => e,
    }
}

pub(crate) async fn create_sync<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: Option<ConnectorKind>,
    sync_type: Option<SyncMode>,
) -> Result<SyncLogEntry> {
    let stmt = Stmt::new(
        "INSERT INTO sync_log (id, workspace_id, connector_type, sync_type, status, records_synced, started_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5) RETURNING *",
    )
    .arg(Uuid::new_v4())
    .arg(ws)
    .arg(Arg::Str(connector.map(ConnectorKind::as_str)))
    .arg(Arg::Str(sync_type.map(SyncMode::as_str)))
    .arg(s.now());
    let rows = fetch(s, "create_sync", stmt).await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::decode(None, "create_sync returned no row"))?;
    rows::decode_sync_log(row)
}

pub(crate) async fn start_sync<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    sync_id: Uuid,
    sync_type: Option<SyncMode>,
) -> Result<()> {
    let stmt = Stmt::new(
        "UPDATE sync_log SET status = 'running', started_at = $3, sync_type = COALESCE($4, sync_type) \
         WHERE workspace_id = $1 AND id = $2 AND status = 'pending'",
    )
    .arg(ws)
    .arg(sync_id)
    .arg(s.now())
    .arg(Arg::Str(sync_type.map(SyncMode::as_str)));
    if execute(s, "start_sync", stmt).await? == 0 {
        return Err(sync_not_updated(s, ws, sync_id, "started").await);
    }
    Ok(())
}

pub(crate) async fn finish_sync<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    sync_id: Uuid,
    outcome: &SyncOutcome,
) -> Result<()> {
    check_outcome(outcome)?;
    let errors: serde_json::Value = serde_json::from_str(&outcome_errors_json(outcome)?)?;
    let stmt = Stmt::new(format!(
        "UPDATE sync_log SET status = $3, records_synced = $4, errors = $5, error_message = $6, \
             completed_at = $7, duration_ms = {} \
         WHERE workspace_id = $1 AND id = $2 AND status IN ('pending', 'running')",
        (S::DIALECT.duration_ms)("$7")
    ))
    .arg(ws)
    .arg(sync_id)
    .arg(outcome.status.as_str())
    .arg(to_i64(outcome.records_synced))
    .arg(Arg::Json(Some(errors)))
    .arg(Arg::String(
        outcome.error_message.as_deref().map(redact_secrets),
    ))
    .arg(s.now());
    if execute(s, "finish_sync", stmt).await? == 0 {
        return Err(sync_not_updated(s, ws, sync_id, "finished").await);
    }
    Ok(())
}

pub(crate) async fn get_sync<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    sync_id: Uuid,
) -> Result<Option<SyncLogEntry>> {
    let stmt = Stmt::new("SELECT * FROM sync_log WHERE workspace_id = $1 AND id = $2")
        .arg(ws)
        .arg(sync_id);
    fetch_first(s, "get_sync", stmt, rows::decode_sync_log).await
}

pub(crate) async fn sync_history<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    connector: Option<ConnectorKind>,
    limit: u32,
) -> Result<Vec<SyncLogEntry>> {
    let mut stmt = Stmt::new("SELECT * FROM sync_log WHERE workspace_id = $1").arg(ws);
    if let Some(connector) = connector {
        stmt.push_param(" AND connector_type = ", connector);
    }
    stmt.push_param(
        " ORDER BY started_at DESC, id DESC LIMIT ",
        i64::from(limit.min(MAX_PAGE)),
    );
    fetch_as(s, "sync_history", stmt, rows::decode_sync_log).await
}

pub(crate) async fn active_syncs<S: SqlBackend>(s: &S, ws: Uuid) -> Result<Vec<SyncLogEntry>> {
    let stmt = Stmt::new(
        "SELECT * FROM sync_log WHERE workspace_id = $1 AND status IN ('pending', 'running') \
         ORDER BY started_at DESC, id DESC",
    )
    .arg(ws);
    fetch_as(s, "active_syncs", stmt, rows::decode_sync_log).await
}

pub(crate) async fn fail_stale_syncs<S: SqlBackend>(
    s: &S,
    workspace_id: Option<Uuid>,
    started_before: DateTime<Utc>,
    reason: &str,
) -> Result<Vec<Uuid>> {
    let mut stmt = Stmt::new(format!(
        "UPDATE sync_log SET {} WHERE status IN ('running', 'pending') AND started_at < $1",
        fail_set(&S::DIALECT, "$2", "$3")
    ))
    .arg(started_before)
    .arg(redact_secrets(reason))
    .arg(s.now());
    if let Some(ws) = workspace_id {
        stmt.push_param(" AND workspace_id = ", ws);
    }
    stmt.sql.push_str(" RETURNING id");
    let ids = fetch_as(s, "fail_stale_syncs", stmt, |r| {
        required(r.uuid("id")?, "id")
    })
    .await?;
    if !ids.is_empty() {
        tracing::warn!(count = ids.len(), "failed stale syncs");
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------
// Enrichment
// ---------------------------------------------------------------------------------------

/// Runs `main` (when given) and then `count` in one write transaction.
async fn enrich<S: SqlBackend>(
    s: &S,
    what: &'static str,
    main: Option<Stmt<'_>>,
    count: Stmt<'_>,
) -> Result<(u64, Vec<S::Row>)> {
    let mut tx = s.begin(what).await?;
    let changed = match main {
        Some(main) => execute_in::<S>(&mut tx, what, main).await?,
        None => 0,
    };
    let counted = fetch_in::<S>(&mut tx, what, count).await?;
    commit::<S>(tx, what).await?;
    Ok((changed, counted))
}

/// The entity linker's choice of account, from its `matches` (`conversation_id`, `kind`
/// 0 by contact or 1 by domain, participant `ord`, account `account_id`, `source`,
/// `source_id`): `scored` counts the participants that matched each candidate, `best`
/// keeps one per conversation: by contact first, then the most participants, the earliest
/// participant, the lowest `(source, source_id)` compared with `collate` (byte order).
pub(crate) fn best_account_ctes(collate: &str) -> String {
    format!(
        "scored AS (\
            SELECT conversation_id, kind, account_id, source, source_id, \
                   COUNT(DISTINCT ord) AS hits, MIN(ord) AS first_ord \
            FROM matches GROUP BY conversation_id, kind, account_id, source, source_id), \
         best AS (\
            SELECT conversation_id, account_id, source, source_id FROM (\
                SELECT s.*, ROW_NUMBER() OVER (PARTITION BY conversation_id \
                    ORDER BY kind, hits DESC, first_ord, source{collate}, \
                             source_id{collate}) AS rn \
                FROM scored s) r \
            WHERE rn = 1)"
    )
}

/// Live conversations and their links: `(total, accounts, deals)`.
const COUNT_LINKS: &str = "SELECT COUNT(*) AS total, COUNT(linked_account_id) AS accounts, \
     COUNT(linked_deal_id) AS deals \
     FROM conversations WHERE workspace_id = $1 AND archived_at IS NULL";

pub(crate) async fn link_conversations<S: SqlBackend>(s: &S, ws: Uuid) -> Result<LinkCounts> {
    s.before_enrichment().await?;
    let e = S::enrichment();
    let (changed, rows) = enrich(
        s,
        "link_conversations",
        Some(Stmt::new(e.link.as_str()).arg(ws)),
        Stmt::new(COUNT_LINKS).arg(ws),
    )
    .await?;
    Ok(LinkCounts {
        conversations: count_of(&rows, "total")?,
        linked_accounts: count_of(&rows, "accounts")?,
        linked_deals: count_of(&rows, "deals")?,
        changed,
    })
}

pub(crate) async fn mark_internal_conversations<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    internal_domains: &[String],
) -> Result<InternalCounts> {
    let domains = normalize_domains(internal_domains);
    s.before_enrichment().await?;
    let e = S::enrichment();
    let main =
        (!domains.is_empty()).then(|| Stmt::new(e.mark_internal).arg(ws).arg(Arg::Texts(&domains)));
    let (changed, rows) = enrich(
        s,
        "mark_internal_conversations",
        main,
        Stmt::new(e.count_internal).arg(ws),
    )
    .await?;
    Ok(InternalCounts {
        conversations: count_of(&rows, "total")?,
        internal: count_of(&rows, "internal")?,
        changed,
    })
}

pub(crate) async fn flagged_internal_domains<S: SqlBackend>(
    s: &S,
    ws: Uuid,
) -> Result<Vec<String>> {
    let stmt = Stmt::new(S::enrichment().flagged_domains.as_str()).arg(ws);
    let mut domains = fetch_as(s, "flagged_internal_domains", stmt, |r| {
        required(r.text("domain")?, "domain")
    })
    .await?;
    // Byte order on both backends, whatever the database's collation.
    domains.sort();
    Ok(domains)
}

/// Recomputes the computed fields of the workspace's live deals with the one definition,
/// [`Deal::computed_fields`], and writes those that changed, in one write transaction.
pub(crate) async fn refresh_deal_fields<S: SqlBackend>(
    s: &S,
    ws: Uuid,
    today: NaiveDate,
) -> Result<DealFieldCounts> {
    let mut tx = s.begin("refresh_deal_fields: begin").await?;
    let read = Stmt::new(format!(
        "SELECT id, source_created_at, close_date, is_closed, days_open, days_to_close \
         FROM deals WHERE workspace_id = $1 AND archived_at IS NULL ORDER BY id{}",
        S::DIALECT.for_update
    ))
    .arg(ws);
    let rows = fetch_in::<S>(&mut tx, "refresh_deal_fields", read).await?;
    let mut changed = Vec::new();
    for r in &rows {
        let fields = Deal::computed_fields(
            r.ts("source_created_at")?,
            r.date("close_date")?,
            r.boolean("is_closed")?,
            today,
        );
        if fields != (r.int("days_open")?, r.int("days_to_close")?) {
            changed.push((required(r.uuid("id")?, "id")?, fields.0, fields.1));
        }
    }
    bulk::<S, _>(&mut tx, "refresh_deal_fields", &changed, 3, |chunk| {
        S::set_deal_fields(ws, chunk)
    })
    .await?;
    commit::<S>(tx, "refresh_deal_fields: commit").await?;
    Ok(DealFieldCounts {
        deals: super::count_u64(rows.len()),
        changed: super::count_u64(changed.len()),
    })
}

/// Implements, for a SQL store over the functions of this module: [`StoreFields`] (the
/// plumbing, the same for each sqlx driver), `Debug`, the builder methods both stores share,
/// and [`Store`](super::Store), [`ConnectionStore`](super::ConnectionStore),
/// [`RecordStore`](super::RecordStore), [`SyncLogStore`](super::SyncLogStore) and
/// [`EnrichmentStore`](super::EnrichmentStore). The store has the fields `pool`, `keyring`
/// and `clock` (plus `extra` ones), implements [`SqlBackend`], and `bind` binds an [`Arg`].
macro_rules! impl_sql_store {
    (
        store: $store:ident,
        db: $db:ty,
        backend: $backend:expr,
        dialect: $dialect:expr,
        begin: $begin:literal,
        bind: $bind:path,
        from_pool_doc: $from_pool_doc:literal,
        extra: { $($field:ident: $init:expr),* $(,)? } $(,)?
    ) => {
        impl $store {
            #[doc = $from_pool_doc]
            pub fn from_pool(pool: sqlx::Pool<$db>) -> Self {
                $store {
                    pool,
                    keyring: None,
                    clock: std::sync::Arc::new($crate::store::SystemClock),
                    $($field: $init,)*
                }
            }

            /// Sets the keyring that seals and opens connection credentials.
            pub fn with_keyring(mut self, keyring: $crate::store::Keyring) -> Self {
                self.keyring = Some(keyring);
                self
            }

            /// Sets the clock (a [`ManualClock`](crate::store::ManualClock) in tests).
            pub fn with_clock(
                mut self,
                clock: std::sync::Arc<dyn $crate::store::Clock>,
            ) -> Self {
                self.clock = clock;
                self
            }

            /// The connection pool, for queries of your own.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
                $crate::store::clock::now_micros(&*self.clock)
            }

            /// Fails the job's run `sync_id` when it is still running (or pending, with
            /// `include_pending`): its job ended without finishing it. Returns whether it
            /// changed.
            pub(crate) async fn fail_active_sync(
                &self,
                workspace_id: uuid::Uuid,
                sync_id: uuid::Uuid,
                reason: &str,
                include_pending: bool,
            ) -> $crate::error::Result<bool> {
                $crate::store::sql::fail_active_sync(
                    self,
                    workspace_id,
                    sync_id,
                    reason,
                    include_pending,
                )
                .await
            }
        }

        impl std::fmt::Debug for $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($store))
                    .field("keyring", &self.keyring)
                    .field("clock", &self.clock)
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::sql::StoreFields for $store {
            type Db = $db;
            type Row = <$db as sqlx::Database>::Row;
            const BACKEND: $crate::store::Backend = $backend;
            const DIALECT: $crate::store::rows::Dialect = $dialect;

            fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            fn keyring(&self) -> Option<&$crate::store::Keyring> {
                self.keyring.as_ref()
            }

            fn now(&self) -> chrono::DateTime<chrono::Utc> {
                $crate::store::clock::now_micros(&*self.clock)
            }

            async fn begin(
                &self,
                what: &'static str,
            ) -> $crate::error::Result<$crate::store::sql::Tx<Self>> {
                $crate::store::begin_detached(&self.pool, $begin)
                    .await
                    .map_err($crate::store::db_err(what))
            }

            async fn run(
                conn: &mut <$db as sqlx::Database>::Connection,
                what: &'static str,
                stmt: $crate::store::sql::Stmt<'_>,
                rows: bool,
            ) -> $crate::error::Result<$crate::store::sql::Ran<Self::Row>> {
                let q = sqlx::query(&stmt.sql);
                let q = stmt.args.into_iter().fold(q, $bind);
                let err = $crate::store::db_err;
                Ok(if rows {
                    $crate::store::sql::Ran {
                        rows_affected: 0,
                        rows: q.fetch_all(&mut *conn).await.map_err(err(what))?,
                    }
                } else {
                    let done = q.execute(&mut *conn).await.map_err(err(what))?;
                    $crate::store::sql::Ran {
                        rows_affected: done.rows_affected(),
                        rows: Vec::new(),
                    }
                })
            }
        }

        const _: () = {
            use async_trait::async_trait;
            use chrono::{DateTime, NaiveDate, Utc};
            use uuid::Uuid;

            use $crate::connector::{Checkpoint, RecordBatch, WriteCounts};
            use $crate::error::Result;
            use $crate::model::{ConnectorKind, Record, RecordKind, SyncMode};
            use $crate::store::sql::{self, Arg};
            use $crate::store::{
                Backend, ConnectionRow, ConnectionStatus, ConnectionStore, Credentials,
                DealFieldCounts, EnrichmentStore, InternalCounts, Keyring, LinkCounts,
                NewConnection, RecordQuery, RecordStore, Store, SyncLogEntry, SyncLogStore,
                SyncOutcome,
            };

            #[async_trait]
            impl Store for $store {
                fn backend(&self) -> Backend {
                    <Self as sql::StoreFields>::BACKEND
                }

                async fn migrate(&self) -> Result<()> {
                    sql::migrate(self).await
                }

                async fn ping(&self) -> Result<()> {
                    sql::ping(self).await
                }

                async fn close(&self) {
                    self.pool.close().await;
                }
            }

            #[async_trait]
            impl ConnectionStore for $store {
                fn keyring(&self) -> Option<&Keyring> {
                    self.keyring.as_ref()
                }

                async fn create_connection(&self, new: NewConnection) -> Result<ConnectionRow> {
                    sql::create_connection(self, new).await
                }

                async fn get_connection(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                ) -> Result<Option<ConnectionRow>> {
                    sql::get_connection(self, workspace_id, connector).await
                }

                async fn list_connections(&self, workspace_id: Uuid) -> Result<Vec<ConnectionRow>> {
                    sql::list_connections(self, workspace_id).await
                }

                async fn delete_connection(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                ) -> Result<bool> {
                    sql::delete_connection(self, workspace_id, connector).await
                }

                async fn workspaces(&self) -> Result<Vec<Uuid>> {
                    sql::workspaces(self).await
                }

                async fn set_connection_status(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    status: ConnectionStatus,
                    error_message: Option<&str>,
                ) -> Result<()> {
                    sql::set_connection_status(self, workspace_id, connector, status, error_message)
                        .await
                }

                async fn set_last_sync_at(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    at: DateTime<Utc>,
                ) -> Result<()> {
                    let at = Arg::Ts(Some(at));
                    sql::set_connection_column(self, workspace_id, connector, "last_sync_at", at)
                        .await
                }

                async fn set_sync_cursor(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    cursor: Option<&serde_json::Value>,
                ) -> Result<()> {
                    let cursor = Arg::Json(cursor.cloned());
                    sql::set_connection_column(self, workspace_id, connector, "sync_cursor", cursor)
                        .await
                }

                async fn merge_sync_cursor(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    members: &serde_json::Map<String, serde_json::Value>,
                ) -> Result<()> {
                    sql::merge_sync_cursor(self, workspace_id, connector, members).await
                }

                async fn set_config(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    config: &serde_json::Value,
                ) -> Result<()> {
                    sql::set_config(self, workspace_id, connector, config).await
                }

                async fn set_credentials(
                    &self,
                    workspace_id: Uuid,
                    connector: ConnectorKind,
                    credentials: Option<&Credentials>,
                ) -> Result<()> {
                    sql::set_credentials(self, workspace_id, connector, credentials).await
                }

                async fn reencrypt_credentials(&self, workspace_id: Uuid) -> Result<u64> {
                    sql::reencrypt_credentials(self, workspace_id).await
                }
            }

            #[async_trait]
            impl RecordStore for $store {
                async fn write_batch(
                    &self,
                    workspace_id: Uuid,
                    source: ConnectorKind,
                    batch: &RecordBatch,
                    checkpoint: &Checkpoint,
                ) -> Result<WriteCounts> {
                    sql::write_batch(self, workspace_id, source, batch, checkpoint).await
                }

                async fn get_record(
                    &self,
                    workspace_id: Uuid,
                    kind: RecordKind,
                    source: ConnectorKind,
                    source_id: &str,
                ) -> Result<Option<Record>> {
                    sql::get_record(self, workspace_id, kind, source, source_id).await
                }

                async fn list_records(
                    &self,
                    workspace_id: Uuid,
                    kind: RecordKind,
                    query: &RecordQuery,
                ) -> Result<Vec<Record>> {
                    sql::list_records(self, workspace_id, kind, query).await
                }

                async fn count_records(
                    &self,
                    workspace_id: Uuid,
                    kind: RecordKind,
                    source: Option<ConnectorKind>,
                ) -> Result<u64> {
                    sql::count_records(self, workspace_id, kind, source).await
                }

                async fn count_live_records(
                    &self,
                    workspace_id: Uuid,
                    kind: RecordKind,
                    source: ConnectorKind,
                    updated_since: DateTime<Utc>,
                ) -> Result<$crate::store::LiveCounts> {
                    sql::count_live_records(self, workspace_id, kind, source, updated_since).await
                }
            }

            #[async_trait]
            impl SyncLogStore for $store {
                async fn create_sync(
                    &self,
                    workspace_id: Uuid,
                    connector: Option<ConnectorKind>,
                    sync_type: Option<SyncMode>,
                ) -> Result<SyncLogEntry> {
                    sql::create_sync(self, workspace_id, connector, sync_type).await
                }

                async fn start_sync(
                    &self,
                    workspace_id: Uuid,
                    sync_id: Uuid,
                    sync_type: Option<SyncMode>,
                ) -> Result<()> {
                    sql::start_sync(self, workspace_id, sync_id, sync_type).await
                }

                async fn finish_sync(
                    &self,
                    workspace_id: Uuid,
                    sync_id: Uuid,
                    outcome: &SyncOutcome,
                ) -> Result<()> {
                    sql::finish_sync(self, workspace_id, sync_id, outcome).await
                }

                async fn get_sync(
                    &self,
                    workspace_id: Uuid,
                    sync_id: Uuid,
                ) -> Result<Option<SyncLogEntry>> {
                    sql::get_sync(self, workspace_id, sync_id).await
                }

                async fn sync_history(
                    &self,
                    workspace_id: Uuid,
                    connector: Option<ConnectorKind>,
                    limit: u32,
                ) -> Result<Vec<SyncLogEntry>> {
                    sql::sync_history(self, workspace_id, connector, limit).await
                }

                async fn active_syncs(&self, workspace_id: Uuid) -> Result<Vec<SyncLogEntry>> {
                    sql::active_syncs(self, workspace_id).await
                }

                async fn fail_stale_syncs(
                    &self,
                    workspace_id: Option<Uuid>,
                    started_before: DateTime<Utc>,
                    reason: &str,
                ) -> Result<Vec<Uuid>> {
                    sql::fail_stale_syncs(self, workspace_id, started_before, reason).await
                }
            }

            #[async_trait]
            impl EnrichmentStore for $store {
                async fn link_conversations(&self, workspace_id: Uuid) -> Result<LinkCounts> {
                    sql::link_conversations(self, workspace_id).await
                }

                async fn mark_internal_conversations(
                    &self,
                    workspace_id: Uuid,
                    internal_domains: &[String],
                ) -> Result<InternalCounts> {
                    sql::mark_internal_conversations(self, workspace_id, internal_domains).await
                }

                async fn flagged_internal_domains(
                    &self,
                    workspace_id: Uuid,
                ) -> Result<Vec<String>> {
                    sql::flagged_internal_domains(self, workspace_id).await
                }

                async fn refresh_deal_fields(
                    &self,
                    workspace_id: Uuid,
                    today: NaiveDate,
                ) -> Result<DealFieldCounts> {
                    sql::refresh_deal_fields(self, workspace_id, today).await
                }
            }
        };
    };
}

pub(crate) use impl_sql_store;
