//! The SQLite backend: what its dialect forces (text encodings of UUIDs, timestamps, dates
//! and JSON; multi-row `VALUES` batches; the `sync_locks` lease; the enrichment statements
//! over `json_each`). The rest is the shared SQL layer of [`super::sql`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::clock::{Clock, now_micros};
use super::crypto::Keyring;
use super::lock::{HolderProcess, INTERRUPTED, Liveness, LockBackend, WorkspaceLock, new_holder};
use super::rows::{self, RowRead, SQLITE, TableRows, TableSpec, Val, native_row_reads, sqlite_ts};
use super::sql::{self, Arg, BatchScope, Enrichment, SqlBackend, Stmt, impl_sql_store};
use super::types::{Backend, DEFAULT_LOCK_TTL};
use super::{LockStore, db_err};
use crate::connector::WriteCounts;
use crate::error::{Error, Result};
use crate::model::DealContact;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite's limit on bind parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`) in the
/// SQLite that sqlx bundles (3.32 and later).
const MAX_PARAMS: usize = 32_766;

/// At most this many rows per multi-row statement.
const MAX_ROWS: usize = 1_500;

/// The page cache of each file connection (`PRAGMA cache_size`; negative: KiB), 16 MiB
/// instead of SQLite's 2 MiB.
const CACHE_SIZE: &str = "-16384";

type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// The embedded storage backend: a SQLite file (or `sqlite::memory:`).
///
/// Connections use WAL mode, `synchronous = NORMAL` (a crash can lose the last commits but
/// never splits a batch from its checkpoint), a 10 s busy timeout, foreign keys, in-memory
/// temporary storage, a 16 MiB page cache, 8 KiB pages for new files and a WAL checkpointed
/// every 16,000 pages (so a page rewritten by several commits reaches the file once; the
/// file is cut back to 64 MiB when the WAL restarts). Writes
/// take the write lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue instead of
/// failing. An in-memory database lives in one pooled connection that is never closed while
/// the store (or a clone) lives.
///
/// Cloning is cheap: clones share the pool.
///
/// ```
/// use pandora_sync::{SqliteStore, Store};
/// use pandora_sync::store::RecordStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> pandora_sync::Result<()> {
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// store.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteStore {
    pool: SqlitePool,
    keyring: Option<Keyring>,
    clock: Arc<dyn Clock>,
    lock_ttl: Duration,
}

impl SqliteStore {
    /// Opens `sqlite://path/to/file.db?mode=rwc` (created if missing with `mode=rwc`) or
    /// `sqlite::memory:`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL, [`Error::Storage`] when the file cannot be
    /// opened.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(sql::parse_url(url, "SQLite")?).await
    }

    /// Opens a database from connect options; the store's pragmas (WAL, synchronous,
    /// busy timeout, foreign keys) are applied on top.
    ///
    /// # Errors
    /// [`Error::Storage`] when the database cannot be opened.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self> {
        let in_memory = options
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-")
            || options.get_filename().as_os_str() == ":memory:";
        let mut options = options
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool_options = if in_memory {
            // One connection that never closes: the database lives exactly as long as it.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            // Statement journals (every multi-row upsert inside a batch transaction has
            // one) stay in memory instead of a temporary file created and unlinked per
            // batch; a larger page cache keeps the indexes' inner pages between batches;
            // 8 KiB pages (new files only) halve the WAL frames of appended rows; a longer
            // WAL between checkpoints writes a page rewritten by several commits once.
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .pragma("temp_store", "memory")
                .pragma("cache_size", CACHE_SIZE)
                .page_size(8192)
                .pragma("wal_autocheckpoint", "16000")
                // The WAL file shrinks back to this after a checkpoint lets it restart.
                .pragma("journal_size_limit", "67108864");
            SqlitePoolOptions::new().max_connections(8)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(db_err("could not open the SQLite database"))?;
        Ok(Self::from_pool(pool))
    }

    /// Sets the lease of workspace locks ([`DEFAULT_LOCK_TTL`] by default); the guard
    /// renews it every third of that. A crashed holder blocks the workspace this long for
    /// processes on other hosts; on its own host the lock is taken over at once.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(30));
        self
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Test support: a migrated in-memory store holding a HubSpot connection of `ws`.
    pub(crate) async fn memory_with_hubspot(ws: Uuid) -> Self {
        use crate::store::{ConnectionStore, NewConnection, Store};
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap_or_else(|e| panic!("in-memory SQLite: {e}"));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
        store
            .create_connection(NewConnection::new(
                ws,
                crate::model::ConnectorKind::Hubspot,
                "private_app",
            ))
            .await
            .unwrap_or_else(|e| panic!("connection: {e}"));
        store
    }

    /// Test support: writes HubSpot `records` of `ws` with an empty checkpoint.
    pub(crate) async fn write_hubspot(
        &self,
        ws: Uuid,
        records: Vec<crate::model::Record>,
    ) -> WriteCounts {
        use crate::store::RecordStore;
        self.write_batch(
            ws,
            crate::model::ConnectorKind::Hubspot,
            &crate::connector::RecordBatch::new(records),
            &crate::connector::Checkpoint::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("write_batch: {e}"))
    }
}

impl_sql_store! {
    store: SqliteStore,
    db: Sqlite,
    backend: Backend::Sqlite,
    dialect: SQLITE,
    begin: "BEGIN IMMEDIATE",
    bind: bind_arg,
    from_pool_doc: "A store over an existing pool. The pool's connections should have foreign keys \
        on and a busy timeout; WAL mode is recommended for files.",
    extra: { lock_ttl: DEFAULT_LOCK_TTL },
}

fn hy(id: Uuid) -> Hyphenated {
    id.hyphenated()
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn bind_val<'q>(q: SqliteQuery<'q>, v: &'q Val<'q>) -> SqliteQuery<'q> {
    match v {
        Val::Text(s) => q.bind(*s),
        Val::Int(i) => q.bind(*i),
        Val::Float(f) => q.bind(*f),
        Val::Bool(b) => q.bind(*b),
        Val::Ts(t) => q.bind(t.map(sqlite_ts)),
        Val::Date(d) => q.bind(d.map(date_text)),
        Val::Uuid(u) => q.bind(u.map(hy)),
        Val::Json(s) => q.bind(s.as_str()),
    }
}

/// Binds a statement argument as the SQLite schema stores it: UUIDs hyphenated, timestamps
/// as [`sqlite_ts`] text, dates as `YYYY-MM-DD`, JSON (and lists) as JSON text.
fn bind_arg<'q>(q: SqliteQuery<'q>, a: Arg<'q>) -> SqliteQuery<'q> {
    match a {
        Arg::Str(s) => q.bind(s),
        Arg::String(s) => q.bind(s),
        Arg::Int(i) => q.bind(i),
        Arg::Bool(b) => q.bind(b),
        Arg::Ts(t) => q.bind(t.map(sqlite_ts)),
        Arg::Uuid(u) => q.bind(u.map(hy)),
        Arg::Json(v) => q.bind(v.map(|v| v.to_string())),
        Arg::Texts(list) => q.bind(serde_json::Value::from(list.to_vec()).to_string()),
        Arg::StrList(list) => q.bind(serde_json::Value::from(list).to_string()),
        Arg::TsList(list) => {
            let list: Vec<String> = list.into_iter().map(sqlite_ts).collect();
            q.bind(serde_json::Value::from(list).to_string())
        }
        Arg::UuidList(list) => {
            let list: Vec<String> = list.into_iter().map(|u| hy(u).to_string()).collect();
            q.bind(serde_json::Value::from(list).to_string())
        }
        Arg::IntList(list) => q.bind(serde_json::Value::from(list).to_string()),
    }
}

impl RowRead for SqliteRow {
    native_row_reads!();
    fn ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.text(col)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        Error::decode(None, format!("{col} is not a timestamp ({s:?}): {e}"))
                    })
            })
            .transpose()
    }

    fn date(&self, col: &str) -> Result<Option<NaiveDate>> {
        self.text(col)?
            .map(|s| {
                NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .map_err(|e| Error::decode(None, format!("{col} is not a date ({s:?}): {e}")))
            })
            .transpose()
    }

    fn uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.text(col)?
            .map(|s| {
                Uuid::parse_str(&s)
                    .map_err(|e| Error::decode(None, format!("{col} is not a UUID ({s:?}): {e}")))
            })
            .transpose()
    }

    fn json(&self, col: &str) -> Result<Option<serde_json::Value>> {
        self.text(col)?
            .map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| Error::decode(None, format!("{col} is not JSON: {e}")))
            })
            .transpose()
    }
}

/// Counts a run of sequential upserts of `rows` rows that raised the table's largest rowid
/// by `rise` (the rows they inserted) and changed `changed` rows (inserted or updated).
fn tally_sequential(counts: &mut WriteCounts, rise: i64, changed: u64, rows: usize) {
    let inserted = u64::try_from(rise).unwrap_or(0);
    counts.inserted += inserted;
    counts.updated += changed.saturating_sub(inserted);
    counts.unchanged += super::count_u64(rows).saturating_sub(changed);
}

/// `rows` tuples of `width` anonymous parameters: `(?, ?), (?, ?)`.
///
/// The multi-row statements use anonymous `?` parameters only: sqlx looks up the name of
/// every parameter, and SQLite's name lookup is linear in the number of numbered ones,
/// which makes `?NNN` quadratic over a statement with thousands of them.
fn tuples(rows: usize, width: usize) -> String {
    let one = format!("({})", vec!["?"; width].join(", "));
    vec![one; rows].join(", ")
}

/// How many rows of `width` parameters fit in one statement (with a few to spare).
fn rows_per_statement(width: usize) -> usize {
    ((MAX_PARAMS - 8) / width.max(1)).clamp(1, MAX_ROWS)
}

/// The multi-row upsert of `rows` rows of `spec`, returning the rows' `source_id`s when
/// `returning`.
fn upsert_sql(spec: &TableSpec, rows: usize, conflict: &str, returning: bool) -> String {
    // The workspace, source and sync time are bound once per statement, not per row
    // (`WHERE true` keeps `ON CONFLICT` from parsing as a join constraint).
    format!(
        "INSERT INTO {} (workspace_id, source, synced_at, {}) \
         SELECT ?, ?, ?, * FROM (VALUES {}) WHERE true {}{}",
        spec.table,
        spec.column_list(),
        tuples(rows, spec.columns.len()),
        conflict,
        if returning {
            " RETURNING source_id"
        } else {
            ""
        }
    )
}

/// `chunk`'s upsert statement `sql` with every argument bound.
fn upsert_query<'q>(
    sql: &'q str,
    at: BatchScope,
    now: &'q str,
    chunk: &'q [Vec<Val<'q>>],
) -> SqliteQuery<'q> {
    let mut q = sqlx::query(sql)
        .bind(hy(at.ws))
        .bind(at.source.as_str())
        .bind(now);
    for row in chunk {
        for v in row {
            q = bind_val(q, v);
        }
    }
    q
}

/// Upserts every row of `t` in statements of [`sql::statement_chunks`]; returns the rows
/// they changed. Building a statement (its text once per chunk size, and its arguments)
/// takes about a quarter of the writer's time, so each is built while SQLite runs the one
/// before on the connection's worker thread, instead of between them.
async fn upsert_sequential(
    tx: &mut SqliteConnection,
    at: BatchScope,
    t: &TableRows<'_>,
    conflict: &str,
    now: &str,
    what: &'static str,
) -> Result<u64> {
    let per = rows_per_statement(t.spec.columns.len());
    let chunks: Vec<_> = sql::statement_chunks(&t.rows, per).collect();
    // Chunk sizes are powers of two: a few texts serve every statement.
    let mut texts: HashMap<usize, String> = HashMap::new();
    for c in &chunks {
        texts
            .entry(c.len())
            .or_insert_with(|| upsert_sql(t.spec, c.len(), conflict, false));
    }
    // Every chunk's size has its text (inserted just above).
    let build = |i: usize| {
        let chunk: &[Vec<Val<'_>>] = chunks.get(i)?;
        Some(upsert_query(texts.get(&chunk.len())?, at, now, chunk))
    };
    let mut changed = 0u64;
    let mut next = build(0);
    let mut i = 0;
    while let Some(q) = next.take() {
        // `biased`: the statement is sent to the worker first, then the next is built.
        let (done, built) = tokio::join!(biased; q.execute(&mut *tx), async { build(i + 1) });
        changed += done.map_err(db_err(what))?.rows_affected();
        next = built;
        i += 1;
    }
    Ok(changed)
}

#[async_trait]
impl SqlBackend for SqliteStore {
    fn rows_per_statement(width: usize) -> usize {
        rows_per_statement(width)
    }

    async fn migrate_schema(conn: &mut SqliteConnection) -> Result<()> {
        // sqlx takes no lock on SQLite; one IMMEDIATE transaction around the whole run makes
        // a second process wait for the first and then find everything applied.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("migrate: begin"))?;
        MIGRATOR
            .run_direct(&mut *tx)
            .await
            .map_err(|e| Error::storage("migrate: applying the SQLite migrations", e))?;
        tx.commit().await.map_err(db_err("migrate: commit"))
    }

    /// Upserts one table's rows of a batch in multi-row statements, telling inserts from
    /// updates without reading anything per row (SQLite has no `xmax`).
    ///
    /// A new row gets the rowid one above the table's largest (no table has AUTOINCREMENT;
    /// nothing deletes inside these statements, and the transaction holds the write lock),
    /// so the rows a run of statements inserted are the rise of `max(rowid)` across the run
    /// (read once before and once after it, not around every statement), and their change
    /// counts hold those and the rows they updated; the rest were unchanged (the no-regress
    /// `WHERE` left them). Only when the largest rowid is within
    /// reach of `i64::MAX` (SQLite then picks rowids at random) are the existing rows read
    /// first instead.
    async fn upsert_table(
        tx: &mut SqliteConnection,
        at: BatchScope,
        t: &TableRows<'_>,
    ) -> Result<WriteCounts> {
        let (ws, source, now) = (at.ws, at.source, sqlite_ts(at.now));
        let now = now.as_str();
        let spec: &TableSpec = t.spec;
        let width = spec.columns.len();
        let per = rows_per_statement(width);
        let conflict = rows::upsert_conflict_clause(spec, SQLITE);
        let max_rowid = format!("SELECT coalesce(max(rowid), 0) FROM {}", spec.table);
        let what = "write_batch: upserting records";
        let mut counts = WriteCounts::default();
        let mut top: i64 = sqlx::query_scalar(&max_rowid)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err(what))?;
        let fits = i64::try_from(t.rows.len())
            .ok()
            .and_then(|n| top.checked_add(n))
            .is_some();
        if fits {
            // The common case: every new row takes the next rowid, so the whole table's
            // rows go in sequential statements, each built while the one before runs.
            let changed = upsert_sequential(tx, at, t, &conflict, now, what).await?;
            let after: i64 = sqlx::query_scalar(&max_rowid)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err(what))?;
            tally_sequential(&mut counts, after - top, changed, t.rows.len());
            return Ok(counts);
        }
        // Rows given to, and changed by, the sequential statements since `top` was read.
        let (mut changed_since_top, mut rows_since_top) = (0u64, 0usize);
        let mut base = 0;
        for chunk in sql::statement_chunks(&t.rows, per) {
            let sequential = i64::try_from(rows_since_top + chunk.len())
                .ok()
                .and_then(|n| top.checked_add(n))
                .is_some();
            // Only when rowids may be random: which of these rows exist already.
            let existing: Option<HashSet<String>> = if sequential {
                None
            } else {
                // The sequential statements before this one are counted first.
                if rows_since_top > 0 {
                    let after: i64 = sqlx::query_scalar(&max_rowid)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err(what))?;
                    tally_sequential(&mut counts, after - top, changed_since_top, rows_since_top);
                    (top, changed_since_top, rows_since_top) = (after, 0, 0);
                }
                let existing_sql = format!(
                    "SELECT source_id FROM {} WHERE workspace_id = ? AND source = ? AND source_id IN ({})",
                    spec.table,
                    vec!["?"; chunk.len()].join(", ")
                );
                let mut q = sqlx::query(&existing_sql)
                    .bind(hy(ws))
                    .bind(source.as_str());
                for i in 0..chunk.len() {
                    q = q.bind(t.source_id(base + i));
                }
                Some(
                    q.fetch_all(&mut *tx)
                        .await
                        .map_err(db_err("write_batch: reading existing rows"))?
                        .iter()
                        .map(|r| r.try_get::<String, _>(0))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(db_err("write_batch: reading existing rows"))?,
                )
            };
            let sql = upsert_sql(spec, chunk.len(), &conflict, existing.is_some());
            let q = upsert_query(&sql, at, now, chunk);
            match existing {
                None => {
                    // Counted once the run of sequential statements ends (see below).
                    changed_since_top += q
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err(what))?
                        .rows_affected();
                    rows_since_top += chunk.len();
                }
                Some(existing) => {
                    let written = q.fetch_all(&mut *tx).await.map_err(db_err(what))?;
                    let inserted = written.iter().map(|r| {
                        let id: String = r.try_get(0).map_err(db_err(what))?;
                        Ok(!existing.contains(&id))
                    });
                    sql::tally(&mut counts, chunk.len(), inserted)?;
                    top = sqlx::query_scalar(&max_rowid)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err(what))?;
                }
            }
            base += chunk.len();
        }
        if rows_since_top > 0 {
            let after: i64 = sqlx::query_scalar(&max_rowid)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err(what))?;
            tally_sequential(&mut counts, after - top, changed_since_top, rows_since_top);
        }
        Ok(counts)
    }

    /// Upserts the deal-contact links of a batch.
    async fn upsert_links(
        tx: &mut SqliteConnection,
        at: BatchScope,
        links: &[&DealContact],
    ) -> Result<WriteCounts> {
        let (ws, source, now) = (at.ws, at.source, sqlite_ts(at.now));
        let now = now.as_str();
        let mut counts = WriteCounts::default();
        let per = rows_per_statement(6);
        for chunk in sql::statement_chunks(links, per) {
            let existing_sql = format!(
                "SELECT deal_source_id, contact_source_id FROM deal_contacts \
                 WHERE workspace_id = ? AND source = ? AND (deal_source_id, contact_source_id) IN (VALUES {})",
                tuples(chunk.len(), 2)
            );
            let mut q = sqlx::query(&existing_sql)
                .bind(hy(ws))
                .bind(source.as_str());
            for l in chunk {
                q = q
                    .bind(l.deal_source_id.as_str())
                    .bind(l.contact_source_id.as_str());
            }
            let mut existing: HashSet<(String, String)> = HashSet::new();
            for r in q
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err("write_batch: reading links"))?
            {
                existing.insert((
                    r.try_get(0).map_err(db_err("write_batch: reading links"))?,
                    r.try_get(1).map_err(db_err("write_batch: reading links"))?,
                ));
            }
            let sql = format!(
                "INSERT INTO deal_contacts (workspace_id, source, synced_at, deal_source_id, contact_source_id, role) \
                 VALUES {} \
                 ON CONFLICT (workspace_id, source, deal_source_id, contact_source_id) DO UPDATE \
                 SET role = excluded.role, synced_at = excluded.synced_at \
                 WHERE deal_contacts.role IS NOT excluded.role \
                 RETURNING deal_source_id, contact_source_id",
                tuples(chunk.len(), 6)
            );
            let mut q = sqlx::query(&sql);
            for l in chunk {
                q = q
                    .bind(hy(ws))
                    .bind(source.as_str())
                    .bind(now)
                    .bind(l.deal_source_id.as_str())
                    .bind(l.contact_source_id.as_str())
                    .bind(l.role.as_deref());
            }
            let what = "write_batch: upserting links";
            let written = q.fetch_all(&mut *tx).await.map_err(db_err(what))?;
            let inserted = written.iter().map(|r| {
                let key: (String, String) = (
                    r.try_get(0).map_err(db_err(what))?,
                    r.try_get(1).map_err(db_err(what))?,
                );
                Ok(!existing.contains(&key))
            });
            sql::tally(&mut counts, chunk.len(), inserted)?;
        }
        Ok(counts)
    }

    /// A `VALUES` list of `(source_id, deleted_at)` pairs; parameters in text order.
    fn archive<'a>(at: BatchScope, table: &str, rows: &'a [(&'a str, DateTime<Utc>)]) -> Stmt<'a> {
        let mut stmt = Stmt::new(format!(
            "WITH d(source_id, deleted_at) AS (VALUES {values}) \
             UPDATE {table} SET archived_at = d.deleted_at, synced_at = ? FROM d \
             WHERE {table}.workspace_id = ? AND {table}.source = ? \
               AND {table}.source_id = d.source_id AND {table}.archived_at IS NULL \
               AND ({table}.source_updated_at IS NULL OR {table}.source_updated_at <= d.deleted_at)",
            values = tuples(rows.len(), 2),
        ));
        for (id, deleted_at) in rows {
            stmt = stmt.arg(*id).arg(*deleted_at);
        }
        stmt.arg(at.now).arg(at.ws).arg(at.source)
    }

    fn unlink<'a>(at: BatchScope, links: &'a [(&'a str, &'a str)]) -> Stmt<'a> {
        let mut stmt = Stmt::new(format!(
            "DELETE FROM deal_contacts WHERE workspace_id = ? AND source = ? \
             AND (deal_source_id, contact_source_id) IN (VALUES {})",
            tuples(links.len(), 2)
        ))
        .arg(at.ws)
        .arg(at.source);
        for (deal, contact) in links {
            stmt = stmt.arg(*deal).arg(*contact);
        }
        stmt
    }

    fn set_deal_fields(ws: Uuid, fields: &[(Uuid, Option<i64>, Option<i64>)]) -> Stmt<'static> {
        let mut stmt = Stmt::new(format!(
            "WITH v(id, days_open, days_to_close) AS (VALUES {}) \
             UPDATE deals SET days_open = v.days_open, days_to_close = v.days_to_close \
             FROM v WHERE deals.workspace_id = ? AND deals.id = v.id",
            tuples(fields.len(), 3)
        ));
        for (id, open, close) in fields {
            stmt = stmt.arg(*id).arg(Arg::Int(*open)).arg(Arg::Int(*close));
        }
        stmt.arg(ws)
    }

    fn enrichment() -> &'static Enrichment {
        &ENRICHMENT
    }
}

/// A lease row in `sync_locks`.
#[derive(Debug)]
struct SqliteLease {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    workspace_id: Uuid,
    holder: String,
    ttl: chrono::Duration,
}

impl SqliteLease {
    async fn delete(pool: &SqlitePool, workspace_id: Uuid, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM sync_locks WHERE workspace_id = ?1 AND holder = ?2")
            .bind(hy(workspace_id))
            .bind(holder)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(db_err("releasing the workspace lock"))
    }
}

#[async_trait]
impl LockBackend for SqliteLease {
    async fn renew(&self) -> Result<bool> {
        let expires = now_micros(&*self.clock) + self.ttl;
        let done = sqlx::query(
            "UPDATE sync_locks SET expires_at = ?3 WHERE workspace_id = ?1 AND holder = ?2",
        )
        .bind(hy(self.workspace_id))
        .bind(self.holder.as_str())
        .bind(sqlite_ts(expires))
        .execute(&self.pool)
        .await
        .map_err(db_err("renewing the workspace lock"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release(&self) -> Result<()> {
        Self::delete(&self.pool, self.workspace_id, &self.holder).await
    }

    fn release_detached(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the lease expires on its own.
        };
        let pool = self.pool.clone();
        let (ws, holder) = (self.workspace_id, self.holder.clone());
        runtime.spawn(async move {
            if let Err(e) = Self::delete(&pool, ws, &holder).await {
                tracing::warn!(workspace_id = %ws, error = %e, "could not release the workspace lock; it will expire");
            }
        });
    }
}

#[async_trait]
impl LockStore for SqliteStore {
    async fn try_lock_workspace(&self, workspace_id: Uuid) -> Result<Option<WorkspaceLock>> {
        let holder = new_holder();
        let me = HolderProcess::current();
        let ttl = chrono::Duration::from_std(self.lock_ttl)
            .map_err(|_| Error::config("the lock lease is too long"))?;
        let now = self.now();
        // One IMMEDIATE transaction: read the lease, judge its holder, take it over and end
        // a dead holder's runs, with no other writer in between.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db_err("taking the workspace lock"))?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("taking the workspace lock"))?;
        let current = sqlx::query(
            "SELECT holder, expires_at, holder_host, holder_pid, holder_process              FROM sync_locks WHERE workspace_id = ?1",
        )
        .bind(hy(workspace_id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("reading the workspace lock"))?;
        // A lease whose holder is gone from this host is free at once; any other, once
        // expired. Only a gone holder's runs are known to be dead.
        let mut dead: Option<(String, HolderProcess)> = None;
        if let Some(row) = &current {
            let held_by = rows::required(row.text("holder")?, "holder")?;
            let expires_at = rows::required(row.ts("expires_at")?, "expires_at")?;
            let recorded = match (
                row.text("holder_host")?,
                row.int("holder_pid")?.and_then(|p| u32::try_from(p).ok()),
            ) {
                (Some(host), Some(pid)) => Some(HolderProcess {
                    host,
                    pid,
                    identity: row.text("holder_process")?,
                }),
                _ => None,
            };
            match recorded {
                Some(p) if p.liveness() == Liveness::Gone => dead = Some((held_by, p)),
                _ if expires_at > now => return Ok(None),
                _ => {}
            }
        }
        sqlx::query(
            "INSERT INTO sync_locks (workspace_id, holder, acquired_at, expires_at, holder_host, holder_pid, holder_process) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (workspace_id) DO UPDATE SET holder = excluded.holder, \
                 acquired_at = excluded.acquired_at, expires_at = excluded.expires_at, \
                 holder_host = excluded.holder_host, holder_pid = excluded.holder_pid, \
                 holder_process = excluded.holder_process",
        )
        .bind(hy(workspace_id))
        .bind(holder.as_str())
        .bind(sqlite_ts(now))
        .bind(sqlite_ts(now + ttl))
        .bind(me.host.as_str())
        .bind(i64::from(me.pid))
        .bind(me.identity.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_err("taking the workspace lock"))?;
        if let Some((dead_holder, process)) = &dead {
            let ended = sqlx::query(&format!(
                "UPDATE sync_log SET {} \
                 WHERE workspace_id = ?1 AND status = 'running' AND lock_holder = ?2 \
                 RETURNING id, connector_type",
                sql::fail_set(&SQLITE, "?3", "?4")
            ))
            .bind(hy(workspace_id))
            .bind(dead_holder.as_str())
            .bind(INTERRUPTED)
            .bind(sqlite_ts(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("ending the runs of a dead lock holder"))?;
            for row in &ended {
                let Some(connector) = row.text("connector_type")? else {
                    continue;
                };
                sqlx::query(
                    "UPDATE connections SET status = 'error', error_message = ?3, updated_at = ?4 \
                     WHERE workspace_id = ?1 AND connector_name = ?2 AND status = 'syncing'",
                )
                .bind(hy(workspace_id))
                .bind(connector)
                .bind(INTERRUPTED)
                .bind(sqlite_ts(now))
                .execute(&mut *tx)
                .await
                .map_err(db_err("ending the runs of a dead lock holder"))?;
            }
            tracing::warn!(
                %workspace_id,
                pid = process.pid,
                host = %process.host,
                interrupted = ended.len(),
                "took over the workspace lock of a process that died; its runs are failed as interrupted"
            );
        }
        tx.commit()
            .await
            .map_err(db_err("taking the workspace lock"))?;
        let lease = SqliteLease {
            pool: self.pool.clone(),
            clock: Arc::clone(&self.clock),
            workspace_id,
            holder: holder.clone(),
            ttl,
        };
        Ok(Some(WorkspaceLock::new(
            workspace_id,
            holder,
            Arc::new(lease),
            self.lock_ttl / 3,
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Enrichment (post-sync hooks): set-based statements over one workspace.
// ---------------------------------------------------------------------------------------

/// A JSON text column as an array to iterate with `json_each` (`[]` when it is not valid
/// JSON or not an array; nested `CASE`s, because SQLite does not promise to short-circuit
/// `AND`).
macro_rules! sqlite_json_array {
    ($col:literal) => {
        concat!(
            "CASE WHEN json_valid(",
            $col,
            ") THEN CASE WHEN json_type(",
            $col,
            ") = 'array' THEN ",
            $col,
            " ELSE '[]' END ELSE '[]' END"
        )
    };
}

/// The participants with an email of the workspace's live conversations:
/// `(conversation_id, ord, email, domain, internal)`, email trimmed and lower-cased, domain
/// after the first `@`, `internal` 1 when the participant's JSON flag is `true`.
const SQLITE_PARTICIPANTS_CTE: &str = concat!(
    "conv AS (\
        SELECT c.id, c.participants FROM conversations c \
        WHERE c.workspace_id = ?1 AND c.archived_at IS NULL), \
     raw_parts AS (\
        SELECT conv.id AS conversation_id, CAST(j.key AS INTEGER) AS ord, \
               CASE WHEN j.type = 'object' THEN \
                   CASE WHEN json_type(j.value, '$.email') = 'text' \
                        THEN lower(trim(json_extract(j.value, '$.email'))) END END AS email, \
               CASE WHEN j.type = 'object' THEN \
                   CASE WHEN json_type(j.value, '$.is_internal') = 'true' THEN 1 ELSE 0 END \
                   ELSE 0 END AS internal \
        FROM conv, json_each(",
    sqlite_json_array!("conv.participants"),
    ") AS j), \
     emails AS (\
        SELECT conversation_id, ord, email, substr(email, instr(email, '@') + 1) AS domain, internal \
        FROM raw_parts \
        WHERE email IS NOT NULL AND instr(email, '@') > 1 AND instr(email, '@') < length(email))"
);

/// The enrichment statements in SQLite's dialect (`json_each`, `json_set`).
static ENRICHMENT: LazyLock<Enrichment> = LazyLock::new(|| Enrichment {
    link: format!(
        "WITH {SQLITE_PARTICIPANTS_CTE}, \
             flagged AS (\
                SELECT e.*, MAX(1 - internal) OVER (PARTITION BY conversation_id) AS has_external \
                FROM emails e), \
             used AS (\
                SELECT conversation_id, ord, email, domain FROM flagged \
                WHERE internal = 0 OR has_external = 0), \
             matches AS (\
                SELECT u.conversation_id AS conversation_id, 0 AS kind, u.ord AS ord, \
                       a.id AS account_id, a.source AS source, a.source_id AS source_id \
                FROM used u \
                JOIN contacts ct ON ct.workspace_id = ?1 AND lower(trim(ct.email)) = u.email \
                     AND ct.archived_at IS NULL AND ct.account_source_id IS NOT NULL \
                JOIN accounts a ON a.workspace_id = ct.workspace_id AND a.source = ct.source \
                     AND a.source_id = ct.account_source_id AND a.archived_at IS NULL \
                UNION ALL \
                SELECT u.conversation_id, 1, u.ord, a.id, a.source, a.source_id \
                FROM used u \
                JOIN accounts a ON a.workspace_id = ?1 AND a.archived_at IS NULL \
                     AND a.domain IS NOT NULL \
                     AND CASE WHEN lower(trim(a.domain)) LIKE 'www.%' \
                              THEN substr(lower(trim(a.domain)), 5) \
                              ELSE lower(trim(a.domain)) END = u.domain), \
             {best}, \
             account_deal AS MATERIALIZED (\
                SELECT account_id, deal_id FROM (\
                    SELECT b.account_id AS account_id, d.id AS deal_id, \
                           ROW_NUMBER() OVER (PARTITION BY b.account_id \
                               ORDER BY CASE WHEN d.is_closed = 1 THEN 1 ELSE 0 END, \
                                        d.close_date DESC NULLS LAST, d.source_id) AS rn \
                    FROM (SELECT DISTINCT account_id, source, source_id FROM best) b \
                    JOIN deals d ON d.workspace_id = ?1 AND d.archived_at IS NULL \
                         AND d.source = b.source AND d.account_source_id = b.source_id) \
                WHERE rn = 1), \
             linked AS (\
                SELECT b.conversation_id AS conversation_id, b.account_id AS account_id, \
                       (SELECT ad.deal_id FROM account_deal ad WHERE ad.account_id = b.account_id) \
                           AS deal_id \
                FROM best b), \
             target AS (\
                SELECT conversation_id AS id, account_id, deal_id FROM linked \
                UNION ALL \
                SELECT conv.id, NULL, NULL FROM conv \
                WHERE conv.id NOT IN (SELECT conversation_id FROM best)) \
             UPDATE conversations SET linked_account_id = t.account_id, linked_deal_id = t.deal_id \
             FROM target t \
             WHERE conversations.workspace_id = ?1 AND conversations.id = t.id \
               AND (conversations.linked_account_id IS NOT t.account_id \
                    OR conversations.linked_deal_id IS NOT t.deal_id)",
        best = sql::best_account_ctes(""),
    ),
    mark_internal: "WITH doms(d) AS (SELECT DISTINCT value FROM json_each(?2)), \
                 conv AS (\
                    SELECT c.id, c.participants FROM conversations c \
                    WHERE c.workspace_id = ?1 AND c.archived_at IS NULL \
                      AND (CASE WHEN json_valid(c.participants) THEN \
                               CASE WHEN json_type(c.participants) = 'array' \
                                    THEN json_array_length(c.participants) > 0 ELSE 0 END \
                           ELSE 0 END)), \
                 parts AS (\
                    SELECT conv.id AS id, CAST(j.key AS INTEGER) AS ord, j.type AS type, \
                           j.value AS value, \
                           CASE WHEN j.type = 'object' THEN \
                               CASE WHEN json_type(j.value, '$.email') = 'text' \
                                    THEN lower(trim(json_extract(j.value, '$.email'))) END \
                           END AS email \
                    FROM conv, json_each(conv.participants) AS j), \
                 domained AS (\
                    SELECT id, ord, type, value, \
                           CASE WHEN instr(email, '@') > 1 AND instr(email, '@') < length(email) \
                                THEN substr(email, instr(email, '@') + 1) END AS domain \
                    FROM parts), \
                 flagged AS (\
                    SELECT p.id, p.ord, p.type, p.value, \
                           CASE WHEN p.domain IS NULL THEN NULL \
                                WHEN dm.d IS NOT NULL THEN 1 ELSE 0 END AS internal \
                    FROM domained p LEFT JOIN doms dm ON dm.d = p.domain), \
                 agg AS (\
                    SELECT id, MIN(COALESCE(internal, 0)) AS all_internal \
                    FROM flagged GROUP BY id) \
                 UPDATE conversations SET is_internal = agg.all_internal \
                 FROM agg \
                 WHERE conversations.workspace_id = ?1 AND conversations.id = agg.id \
                   AND conversations.is_internal IS NOT agg.all_internal",
    count_internal: "SELECT COUNT(*) AS total, \
                    COALESCE(SUM(CASE WHEN is_internal = 1 THEN 1 ELSE 0 END), 0) AS internal \
             FROM conversations WHERE workspace_id = ?1 AND archived_at IS NULL \
               AND (CASE WHEN json_valid(participants) THEN \
                        CASE WHEN json_type(participants) = 'array' \
                             THEN json_array_length(participants) > 0 ELSE 0 END \
                    ELSE 0 END)",
    flagged_domains: format!(
        "WITH {SQLITE_PARTICIPANTS_CTE} \
             SELECT DISTINCT domain FROM emails WHERE internal = 1 ORDER BY domain"
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_chunks_are_powers_of_two_in_order() {
        let items: Vec<u32> = (0..3000).collect();
        let sizes: Vec<usize> = sql::statement_chunks(&items, 1259)
            .map(<[u32]>::len)
            .collect();
        // 3000 = 2 × 1024 + 952, and 952 = 512 + 256 + 128 + 32 + 16 + 8.
        assert_eq!(sizes, [1024, 1024, 512, 256, 128, 32, 16, 8]);
        let joined: Vec<u32> = sql::statement_chunks(&items, 1259)
            .flatten()
            .copied()
            .collect();
        assert_eq!(joined, items);
        assert_eq!(sql::statement_chunks(&items[..0], 10).count(), 0);
        let ones: Vec<usize> = sql::statement_chunks(&items[..3], 0)
            .map(<[u32]>::len)
            .collect();
        assert_eq!(ones, [1, 1, 1]);
    }

    #[test]
    fn anonymous_tuples() {
        assert_eq!(tuples(2, 2), "(?, ?), (?, ?)");
        assert_eq!(tuples(1, 3), "(?, ?, ?)");
        assert_eq!(rows_per_statement(26), 1259);
        assert_eq!(rows_per_statement(100), 327);
    }

    /// The statement cache stays bounded whatever the batch sizes: after batches that used
    /// every chunk size (the powers of two up to the full one), batches of other sizes add
    /// no prepared statement (each would hold a program of its size in every connection).
    #[tokio::test]
    async fn the_statement_cache_is_bounded_whatever_the_batch_sizes() {
        use sqlx::Connection as _;

        use crate::model::{ConnectorKind, Contact, Record};

        let ws = Uuid::from_u128(6);
        let store = SqliteStore::memory_with_hubspot(ws).await;
        let per = rows_per_statement(16);
        let mut next = 0usize;
        let mut write = async |n: usize| {
            let records: Vec<Record> = (next..next + n)
                .map(|i| Contact::new(ws, ConnectorKind::Hubspot, i.to_string()).into())
                .collect();
            next += n;
            store.write_hubspot(ws, records).await;
        };
        let cached = async || store.pool.acquire().await.unwrap().cached_statements_size();
        let full = 1 << (usize::BITS - 1 - per.leading_zeros());
        write(2 * full - 1).await;
        let every_size = cached().await;
        for n in [7, 11, full + 13, 2 * full + 17, 19, 1] {
            write(n).await;
        }
        assert_eq!(cached().await, every_size);
    }

    /// Inserts and updates are told apart by the rise of `max(rowid)`, and by reading the
    /// existing rows first once rowids may be random (the largest is near `i64::MAX`).
    #[tokio::test]
    async fn write_counts_tell_inserts_from_updates_on_both_paths() {
        use crate::model::{ConnectorKind, Contact, Record};

        let ws = Uuid::from_u128(5);
        let store = SqliteStore::memory_with_hubspot(ws).await;
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let contact = |id: &str, minutes: i64| -> Record {
            let mut c = Contact::new(ws, ConnectorKind::Hubspot, id);
            c.meta.source_updated_at = Some(t0 + chrono::Duration::minutes(minutes));
            c.into()
        };
        let write = |records: Vec<Record>| store.write_hubspot(ws, records);
        let c = write(vec![contact("1", 0), contact("2", 0)]).await;
        assert_eq!((c.inserted, c.updated, c.unchanged), (2, 0, 0));
        let c = write(vec![contact("1", 1), contact("2", 0), contact("3", 0)]).await;
        assert_eq!((c.inserted, c.updated, c.unchanged), (1, 1, 1));

        // SQLite picks random rowids once the largest is i64::MAX.
        sqlx::query("UPDATE contacts SET rowid = ? WHERE source_id = '3'")
            .bind(i64::MAX - 1)
            .execute(&store.pool)
            .await
            .unwrap();
        let c = write(vec![
            contact("1", 1),
            contact("2", 2),
            contact("4", 0),
            contact("5", 0),
            contact("6", 0),
        ])
        .await;
        assert_eq!((c.inserted, c.updated, c.unchanged), (3, 1, 1));
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 6);
    }
}
