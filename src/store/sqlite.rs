//! The SQLite backend.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, Row as _};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::clock::{Clock, SystemClock, now_micros};
use super::crypto::{Credentials, Keyring};
use super::lock::{HolderProcess, INTERRUPTED, Liveness, LockBackend, WorkspaceLock, new_holder};
use super::rows::{
    self, RowRead, SQLITE, TableRows, TableSpec, Val, decode_connection, decode_record,
    decode_sync_log, sqlite_ts,
};
use super::types::{
    Backend, ConnectionRow, ConnectionStatus, DEFAULT_LOCK_TTL, MAX_PAGE, NewConnection,
    RecordQuery, SyncLogEntry, SyncOutcome, SyncStatus,
};
use super::{
    ConnectionStore, LockStore, RecordStore, Store, SyncLogStore, check_config, check_outcome,
    count_u64, db_err, is_unique_violation, no_connection, no_keyring, outcome_errors_json, seal,
    to_i64,
};
use crate::connector::{Checkpoint, RecordBatch, WriteCounts};
use crate::error::{Error, Result, redact_secrets};
use crate::model::{ConnectorKind, DealContact, Record, RecordKind, SyncMode};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite's limit on bind parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`) in the
/// SQLite that sqlx bundles (3.32 and later).
const MAX_PARAMS: usize = 32_766;

/// At most this many rows per multi-row statement.
const MAX_ROWS: usize = 1_000;

type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments>;

/// The embedded storage backend: a SQLite file (or `sqlite::memory:`).
///
/// Connections use WAL mode, `synchronous = NORMAL` (a crash can lose the last commits but
/// never splits a batch from its checkpoint), a 10 s busy timeout and foreign keys. Writes
/// take the write lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue instead of
/// failing. An in-memory database lives in one pooled connection that is never closed while
/// the store (or a clone) lives.
///
/// Cloning is cheap: clones share the pool.
///
/// ```
/// use pandora_sync::{RecordStore, SqliteStore, Store};
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

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("keyring", &self.keyring)
            .field("clock", &self.clock)
            .field("lock_ttl", &self.lock_ttl)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `sqlite://path/to/file.db?mode=rwc` (created if missing with `mode=rwc`) or
    /// `sqlite::memory:`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL, [`Error::Storage`] when the file cannot be
    /// opened.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::config(format!("invalid SQLite URL: {e}")))?;
        Self::connect_with(options).await
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
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            SqlitePoolOptions::new().max_connections(8)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(db_err("could not open the SQLite database"))?;
        Ok(Self::from_pool(pool))
    }

    /// A store over an existing pool. The pool's connections should have foreign keys on
    /// and a busy timeout; WAL mode is recommended for files.
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            keyring: None,
            clock: Arc::new(SystemClock),
            lock_ttl: DEFAULT_LOCK_TTL,
        }
    }

    /// Sets the keyring that seals and opens connection credentials.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Sets the clock (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the lease of workspace locks ([`DEFAULT_LOCK_TTL`] by default); the guard
    /// renews it every third of that. A crashed holder blocks the workspace this long for
    /// processes on other hosts; on its own host the lock is taken over at once.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        now_micros(&*self.clock)
    }
}

fn hy(id: Uuid) -> Hyphenated {
    id.hyphenated()
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn bind_val<'q>(q: SqliteQuery<'q>, v: &Val<'_>) -> SqliteQuery<'q> {
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

fn decode_err(col: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::storage(format!("could not read column {col}"), e)
}

impl RowRead for SqliteRow {
    fn text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(decode_err(col))
    }

    fn int(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).map_err(decode_err(col))
    }

    fn float(&self, col: &str) -> Result<Option<f64>> {
        self.try_get(col).map_err(decode_err(col))
    }

    fn boolean(&self, col: &str) -> Result<Option<bool>> {
        self.try_get(col).map_err(decode_err(col))
    }

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

/// Upserts one table's rows; returns (inserted, updated, unchanged).
async fn upsert_table(
    tx: &mut sqlx::SqliteConnection,
    ws: Uuid,
    source: ConnectorKind,
    now: &str,
    t: &TableRows<'_>,
) -> Result<(u64, u64, u64)> {
    let spec: &TableSpec = t.spec;
    let width = spec.columns.len();
    let per = rows_per_statement(width + 3);
    let conflict = rows::upsert_conflict_clause(spec, SQLITE);
    let (mut inserted, mut updated, mut unchanged) = (0u64, 0u64, 0u64);
    for (c, chunk) in t.rows.chunks(per).enumerate() {
        let base = c * per;
        // Which of these rows exist already (to tell inserts from updates).
        let existing_sql = format!(
            "SELECT source_id FROM {} WHERE workspace_id = ? AND source = ? AND source_id IN ({})",
            spec.table,
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(existing_sql))
            .bind(hy(ws))
            .bind(source.as_str());
        for i in 0..chunk.len() {
            q = q.bind(t.source_id(base + i));
        }
        let existing: HashSet<String> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("write_batch: reading existing rows"))?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err("write_batch: reading existing rows"))?;

        let sql = format!(
            "INSERT INTO {} (workspace_id, source, synced_at, {}) VALUES {} {} RETURNING source_id",
            spec.table,
            spec.column_list(),
            tuples(chunk.len(), width + 3),
            conflict
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            q = q.bind(hy(ws)).bind(source.as_str()).bind(now);
            for v in row {
                q = bind_val(q, v);
            }
        }
        let written = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("write_batch: upserting records"))?;
        for r in &written {
            let id: String = r
                .try_get(0)
                .map_err(db_err("write_batch: upserting records"))?;
            if existing.contains(&id) {
                updated += 1;
            } else {
                inserted += 1;
            }
        }
        unchanged += count_u64(chunk.len().saturating_sub(written.len()));
    }
    Ok((inserted, updated, unchanged))
}

async fn upsert_links(
    tx: &mut sqlx::SqliteConnection,
    ws: Uuid,
    source: ConnectorKind,
    now: &str,
    links: &[&DealContact],
) -> Result<(u64, u64, u64)> {
    let (mut inserted, mut updated, mut unchanged) = (0u64, 0u64, 0u64);
    let per = rows_per_statement(6);
    for chunk in links.chunks(per) {
        let existing_sql = format!(
            "SELECT deal_source_id, contact_source_id FROM deal_contacts \
             WHERE workspace_id = ? AND source = ? AND (deal_source_id, contact_source_id) IN (VALUES {})",
            tuples(chunk.len(), 2)
        );
        let mut q = sqlx::query(AssertSqlSafe(existing_sql))
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
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for l in chunk {
            q = q
                .bind(hy(ws))
                .bind(source.as_str())
                .bind(now)
                .bind(l.deal_source_id.as_str())
                .bind(l.contact_source_id.as_str())
                .bind(l.role.as_deref());
        }
        let written = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("write_batch: upserting links"))?;
        for r in &written {
            let key: (String, String) = (
                r.try_get(0)
                    .map_err(db_err("write_batch: upserting links"))?,
                r.try_get(1)
                    .map_err(db_err("write_batch: upserting links"))?,
            );
            if existing.contains(&key) {
                updated += 1;
            } else {
                inserted += 1;
            }
        }
        unchanged += count_u64(chunk.len().saturating_sub(written.len()));
    }
    Ok((inserted, updated, unchanged))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx takes no lock on SQLite; one IMMEDIATE transaction around the whole run makes
        // a second process wait for the first and then find everything applied.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db_err("migrate: acquire"))?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("migrate: begin"))?;
        // `run_direct` is `run` without the `Acquire` indirection, whose higher-ranked
        // lifetime does not satisfy the `Send` bound of an `async_trait` method.
        MIGRATOR
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(|e| Error::storage("migrate: applying the SQLite migrations", e))?;
        tx.commit().await.map_err(db_err("migrate: commit"))?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_err("ping"))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    async fn fetch_connection(
        &self,
        ws: Uuid,
        connector: ConnectorKind,
    ) -> Result<Option<ConnectionRow>> {
        sqlx::query("SELECT * FROM connections WHERE workspace_id = ?1 AND connector_name = ?2")
            .bind(hy(ws))
            .bind(connector.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("get_connection"))?
            .map(|r| decode_connection(&r))
            .transpose()
    }

    /// Runs an UPDATE of one connection row; `no_connection` when it matched nothing.
    async fn update_connection(
        &self,
        ws: Uuid,
        connector: ConnectorKind,
        q: SqliteQuery<'_>,
    ) -> Result<()> {
        let done = q
            .execute(&self.pool)
            .await
            .map_err(db_err("updating a connection"))?;
        if done.rows_affected() == 0 {
            return Err(no_connection(ws, connector));
        }
        Ok(())
    }

    async fn sync_not_updated(&self, ws: Uuid, id: Uuid, what: &str) -> Error {
        match self.get_sync(ws, id).await {
            Ok(Some(entry)) => Error::Conflict {
                message: format!("sync {id} is {} and cannot be {what}", entry.status),
                running_id: Some(id),
            },
            Ok(None) => Error::config(format!("workspace {ws} has no sync {id}")),
            Err(e) => e,
        }
    }
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    async fn create_connection(&self, new: NewConnection) -> Result<ConnectionRow> {
        check_config(&new.config)?;
        let sealed = seal(
            self.keyring.as_ref(),
            new.workspace_id,
            new.connector,
            new.credentials.as_ref(),
        )?;
        let now = sqlite_ts(self.now());
        let row = sqlx::query(
            "INSERT INTO connections (id, workspace_id, connector_name, auth_method, credentials, config, status, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7) RETURNING *",
        )
        .bind(hy(Uuid::new_v4()))
        .bind(hy(new.workspace_id))
        .bind(new.connector.as_str())
        .bind(new.auth_method.as_str())
        .bind(sealed)
        .bind(new.config.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict {
                    message: format!(
                        "workspace {} already has a {} connection",
                        new.workspace_id, new.connector
                    ),
                    running_id: None,
                }
            } else {
                Error::storage("create_connection", e)
            }
        })?;
        decode_connection(&row)
    }

    async fn get_connection(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
    ) -> Result<Option<ConnectionRow>> {
        self.fetch_connection(workspace_id, connector).await
    }

    async fn list_connections(&self, workspace_id: Uuid) -> Result<Vec<ConnectionRow>> {
        sqlx::query("SELECT * FROM connections WHERE workspace_id = ?1 ORDER BY connector_name")
            .bind(hy(workspace_id))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list_connections"))?
            .iter()
            .map(decode_connection)
            .collect()
    }

    async fn delete_connection(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
    ) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM connections WHERE workspace_id = ?1 AND connector_name = ?2")
                .bind(hy(workspace_id))
                .bind(connector.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err("delete_connection"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn workspaces(&self) -> Result<Vec<Uuid>> {
        sqlx::query("SELECT DISTINCT workspace_id FROM connections ORDER BY workspace_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("workspaces"))?
            .iter()
            .map(|r| rows::required(r.uuid("workspace_id")?, "workspace_id"))
            .collect()
    }

    async fn set_connection_status(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        status: ConnectionStatus,
        error_message: Option<&str>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET status = ?3, error_message = ?4, updated_at = ?5 \
             WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .bind(status.as_str())
        .bind(error_message.map(redact_secrets))
        .bind(sqlite_ts(self.now()));
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_last_sync_at(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET last_sync_at = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .bind(sqlite_ts(at))
        .bind(sqlite_ts(self.now()));
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        cursor: Option<&serde_json::Value>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET sync_cursor = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .bind(cursor.map(serde_json::Value::to_string))
        .bind(sqlite_ts(self.now()));
        self.update_connection(workspace_id, connector, q).await
    }

    async fn merge_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        members: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("merge_sync_cursor: begin"))?;
        let row = sqlx::query(
            "SELECT sync_cursor FROM connections WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("merge_sync_cursor: read"))?
        .ok_or_else(|| no_connection(workspace_id, connector))?;
        let mut cursor = match row.json("sync_cursor")? {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for (k, v) in members {
            cursor.insert(k.clone(), v.clone());
        }
        sqlx::query("UPDATE connections SET sync_cursor = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND connector_name = ?2")
            .bind(hy(workspace_id))
            .bind(connector.as_str())
            .bind(serde_json::Value::Object(cursor).to_string())
            .bind(sqlite_ts(self.now()))
            .execute(&mut *tx)
            .await
            .map_err(db_err("merge_sync_cursor: write"))?;
        tx.commit()
            .await
            .map_err(db_err("merge_sync_cursor: commit"))
    }

    async fn set_config(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        config: &serde_json::Value,
    ) -> Result<()> {
        check_config(config)?;
        let q = sqlx::query(
            "UPDATE connections SET config = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .bind(config.to_string())
        .bind(sqlite_ts(self.now()));
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_credentials(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        credentials: Option<&Credentials>,
    ) -> Result<()> {
        let sealed = seal(self.keyring.as_ref(), workspace_id, connector, credentials)?;
        let q = sqlx::query(
            "UPDATE connections SET credentials = ?3, updated_at = ?4 WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(connector.as_str())
        .bind(sealed)
        .bind(sqlite_ts(self.now()));
        self.update_connection(workspace_id, connector, q).await
    }

    async fn reencrypt_credentials(&self, workspace_id: Uuid) -> Result<u64> {
        let keyring = self.keyring.as_ref().ok_or_else(no_keyring)?;
        let mut changed = 0;
        for row in self.list_connections(workspace_id).await? {
            let Some(sealed) = &row.credentials else {
                continue;
            };
            if !keyring.needs_reseal(sealed) {
                continue;
            }
            let open = keyring.open(workspace_id, row.connector, sealed)?;
            let resealed = keyring.seal(workspace_id, row.connector, &open)?;
            let done = sqlx::query(
                "UPDATE connections SET credentials = ?4, updated_at = ?5 \
                 WHERE workspace_id = ?1 AND connector_name = ?2 AND credentials = ?3",
            )
            .bind(hy(workspace_id))
            .bind(row.connector.as_str())
            .bind(sealed.as_stored())
            .bind(resealed.as_stored())
            .bind(sqlite_ts(self.now()))
            .execute(&self.pool)
            .await
            .map_err(db_err("reencrypt_credentials"))?;
            changed += done.rows_affected();
        }
        Ok(changed)
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn write_batch(
        &self,
        workspace_id: Uuid,
        source: ConnectorKind,
        batch: &RecordBatch,
        checkpoint: &Checkpoint,
    ) -> Result<WriteCounts> {
        let prepared = rows::prepare(workspace_id, source, batch)?;
        let now = sqlite_ts(self.now());
        let checkpoint_json = serde_json::to_string(&checkpoint.streams)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("write_batch: begin"))?;
        let mut counts = WriteCounts::default();

        for t in &prepared.tables {
            let (i, u, n) = upsert_table(&mut tx, workspace_id, source, &now, t).await?;
            counts.inserted += i;
            counts.updated += u;
            counts.unchanged += n + t.duplicates;
        }
        if !prepared.links.is_empty() {
            let (i, u, n) =
                upsert_links(&mut tx, workspace_id, source, &now, &prepared.links).await?;
            counts.inserted += i;
            counts.updated += u;
            counts.unchanged += n + prepared.link_duplicates;
        }

        for d in &prepared.deletions {
            for chunk in d.rows.chunks(rows_per_statement(2)) {
                // Parameters in text order: the pairs, then synced_at, workspace, source.
                let sql = format!(
                    "WITH d(source_id, deleted_at) AS (VALUES {values}) \
                     UPDATE {t} SET archived_at = d.deleted_at, synced_at = ? FROM d \
                     WHERE {t}.workspace_id = ? AND {t}.source = ? AND {t}.source_id = d.source_id \
                       AND {t}.archived_at IS NULL \
                       AND ({t}.source_updated_at IS NULL OR {t}.source_updated_at <= d.deleted_at)",
                    values = tuples(chunk.len(), 2),
                    t = d.spec.table,
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (id, at) in chunk {
                    q = q.bind(*id).bind(sqlite_ts(*at));
                }
                q = q
                    .bind(now.as_str())
                    .bind(hy(workspace_id))
                    .bind(source.as_str());
                let done = q
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("write_batch: archiving deleted records"))?;
                counts.archived += done.rows_affected();
            }
        }
        for chunk in prepared.link_deletions.chunks(rows_per_statement(2)) {
            let sql = format!(
                "DELETE FROM deal_contacts WHERE workspace_id = ? AND source = ? \
                 AND (deal_source_id, contact_source_id) IN (VALUES {})",
                tuples(chunk.len(), 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(hy(workspace_id))
                .bind(source.as_str());
            for (deal, contact) in chunk {
                q = q.bind(*deal).bind(*contact);
            }
            let done = q
                .execute(&mut *tx)
                .await
                .map_err(db_err("write_batch: removing links"))?;
            counts.archived += done.rows_affected();
        }

        let done = sqlx::query(
            "UPDATE connections SET sync_cursor = json_set(\
                 CASE WHEN json_type(sync_cursor) = 'object' THEN sync_cursor ELSE '{}' END, \
                 '$.streams', json(?3)), updated_at = ?4 \
             WHERE workspace_id = ?1 AND connector_name = ?2",
        )
        .bind(hy(workspace_id))
        .bind(source.as_str())
        .bind(checkpoint_json)
        .bind(now.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err("write_batch: storing the checkpoint"))?;
        if done.rows_affected() == 0 {
            // Dropping `tx` rolls the batch back.
            return Err(no_connection(workspace_id, source));
        }
        tx.commit().await.map_err(db_err("write_batch: commit"))?;
        tracing::debug!(
            %workspace_id, %source, inserted = counts.inserted, updated = counts.updated,
            unchanged = counts.unchanged, archived = counts.archived, "batch committed"
        );
        Ok(counts)
    }

    async fn get_record(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: ConnectorKind,
        source_id: &str,
    ) -> Result<Option<Record>> {
        let row = if kind == RecordKind::DealContact {
            let (deal, contact) = rows::split_link_id(source_id)?;
            sqlx::query(
                "SELECT * FROM deal_contacts WHERE workspace_id = ?1 AND source = ?2 \
                 AND deal_source_id = ?3 AND contact_source_id = ?4",
            )
            .bind(hy(workspace_id))
            .bind(source.as_str())
            .bind(deal)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await
        } else {
            let sql = format!(
                "SELECT * FROM {} WHERE workspace_id = ?1 AND source = ?2 AND source_id = ?3",
                kind.table()
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(hy(workspace_id))
                .bind(source.as_str())
                .bind(source_id)
                .fetch_optional(&self.pool)
                .await
        }
        .map_err(db_err("get_record"))?;
        row.map(|r| decode_record(kind, &r)).transpose()
    }

    async fn list_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        query: &RecordQuery,
    ) -> Result<Vec<Record>> {
        let mut sql = format!("SELECT * FROM {} WHERE workspace_id = ?1", kind.table());
        if query.source.is_some() {
            sql.push_str(" AND source = ?2");
        }
        if kind == RecordKind::DealContact {
            if query.after.is_some() {
                return Err(Error::unsupported(
                    "list_records after an id",
                    "deal_contacts",
                ));
            }
            sql.push_str(" ORDER BY source, deal_source_id, contact_source_id LIMIT ?4");
        } else {
            if query.after.is_some() {
                sql.push_str(" AND id > ?3");
            }
            if !query.include_archived {
                sql.push_str(" AND archived_at IS NULL");
            }
            sql.push_str(" ORDER BY id LIMIT ?4");
        }
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(hy(workspace_id))
            .bind(query.source.map(ConnectorKind::as_str))
            .bind(query.after.map(hy))
            .bind(query.capped_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list_records"))?;
        rows.iter().map(|r| decode_record(kind, r)).collect()
    }

    async fn count_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: Option<ConnectorKind>,
    ) -> Result<u64> {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE workspace_id = ?1{}",
            kind.table(),
            if source.is_some() {
                " AND source = ?2"
            } else {
                ""
            }
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(hy(workspace_id))
            .bind(source.map(ConnectorKind::as_str))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("count_records"))?;
        super::types::to_u64(n, "count")
    }

    async fn count_live_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: ConnectorKind,
        updated_since: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        let links = kind == RecordKind::DealContact;
        if links && updated_since.is_some() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE workspace_id = ?1 AND source = ?2{}{}",
            kind.table(),
            if links {
                ""
            } else {
                " AND archived_at IS NULL"
            },
            if updated_since.is_some() {
                " AND source_updated_at >= ?3"
            } else {
                ""
            }
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(hy(workspace_id))
            .bind(source.as_str())
            .bind(updated_since.map(sqlite_ts))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("count_live_records"))?;
        super::types::to_u64(n, "count")
    }
}

impl SqliteStore {
    /// Fails the job's run `sync_id` when it is still running (or pending, with
    /// `include_pending`): its job ended without finishing it. Returns whether it changed.
    pub(crate) async fn fail_active_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        reason: &str,
        include_pending: bool,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sync_log SET status = 'failed', error_message = ?3, completed_at = ?4, \
                 duration_ms = MAX(0, CAST(ROUND((julianday(?4) - julianday(started_at)) * 86400000.0) AS INTEGER)) \
             WHERE workspace_id = ?1 AND id = ?2 AND (status = 'running' OR (?5 AND status = 'pending'))",
        )
        .bind(hy(workspace_id))
        .bind(hy(sync_id))
        .bind(redact_secrets(reason))
        .bind(sqlite_ts(self.now()))
        .bind(include_pending)
        .execute(&self.pool)
        .await
        .map_err(db_err("fail_active_sync"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SyncLogStore for SqliteStore {
    async fn create_sync(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        sync_type: Option<SyncMode>,
    ) -> Result<SyncLogEntry> {
        let row = sqlx::query(
            "INSERT INTO sync_log (id, workspace_id, connector_type, sync_type, status, records_synced, started_at) \
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5) RETURNING *",
        )
        .bind(hy(Uuid::new_v4()))
        .bind(hy(workspace_id))
        .bind(connector.map(ConnectorKind::as_str))
        .bind(sync_type.map(SyncMode::as_str))
        .bind(sqlite_ts(self.now()))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err("create_sync"))?;
        decode_sync_log(&row)
    }

    async fn start_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        sync_type: Option<SyncMode>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sync_log SET status = 'running', started_at = ?3, sync_type = COALESCE(?4, sync_type) \
             WHERE workspace_id = ?1 AND id = ?2 AND status = 'pending'",
        )
        .bind(hy(workspace_id))
        .bind(hy(sync_id))
        .bind(sqlite_ts(self.now()))
        .bind(sync_type.map(SyncMode::as_str))
        .execute(&self.pool)
        .await
        .map_err(db_err("start_sync"))?;
        if done.rows_affected() == 0 {
            return Err(self
                .sync_not_updated(workspace_id, sync_id, "started")
                .await);
        }
        Ok(())
    }

    async fn finish_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        outcome: &SyncOutcome,
    ) -> Result<()> {
        check_outcome(outcome)?;
        let done = sqlx::query(
            "UPDATE sync_log SET status = ?3, records_synced = ?4, errors = ?5, error_message = ?6, \
                 completed_at = ?7, \
                 duration_ms = MAX(0, CAST(ROUND((julianday(?7) - julianday(started_at)) * 86400000.0) AS INTEGER)) \
             WHERE workspace_id = ?1 AND id = ?2 AND status IN ('pending', 'running')",
        )
        .bind(hy(workspace_id))
        .bind(hy(sync_id))
        .bind(outcome.status.as_str())
        .bind(to_i64(outcome.records_synced))
        .bind(outcome_errors_json(outcome)?)
        .bind(outcome.error_message.as_deref().map(redact_secrets))
        .bind(sqlite_ts(self.now()))
        .execute(&self.pool)
        .await
        .map_err(db_err("finish_sync"))?;
        if done.rows_affected() == 0 {
            return Err(self
                .sync_not_updated(workspace_id, sync_id, "finished")
                .await);
        }
        Ok(())
    }

    async fn get_sync(&self, workspace_id: Uuid, sync_id: Uuid) -> Result<Option<SyncLogEntry>> {
        sqlx::query("SELECT * FROM sync_log WHERE workspace_id = ?1 AND id = ?2")
            .bind(hy(workspace_id))
            .bind(hy(sync_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("get_sync"))?
            .map(|r| decode_sync_log(&r))
            .transpose()
    }

    async fn sync_history(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        limit: u32,
    ) -> Result<Vec<SyncLogEntry>> {
        let sql = if connector.is_some() {
            "SELECT * FROM sync_log WHERE workspace_id = ?1 AND connector_type = ?2 \
             ORDER BY started_at DESC, id DESC LIMIT ?3"
        } else {
            "SELECT * FROM sync_log WHERE workspace_id = ?1 ORDER BY started_at DESC, id DESC LIMIT ?3"
        };
        sqlx::query(sql)
            .bind(hy(workspace_id))
            .bind(connector.map(ConnectorKind::as_str))
            .bind(i64::from(limit.min(MAX_PAGE)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("sync_history"))?
            .iter()
            .map(decode_sync_log)
            .collect()
    }

    async fn active_syncs(&self, workspace_id: Uuid) -> Result<Vec<SyncLogEntry>> {
        sqlx::query(
            "SELECT * FROM sync_log WHERE workspace_id = ?1 AND status IN ('pending', 'running') \
             ORDER BY started_at DESC, id DESC",
        )
        .bind(hy(workspace_id))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("active_syncs"))?
        .iter()
        .map(decode_sync_log)
        .collect()
    }

    async fn fail_stale_syncs(
        &self,
        workspace_id: Option<Uuid>,
        started_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<Uuid>> {
        let sql = format!(
            "UPDATE sync_log SET status = '{failed}', error_message = ?2, completed_at = ?3, \
                 duration_ms = MAX(0, CAST(ROUND((julianday(?3) - julianday(started_at)) * 86400000.0) AS INTEGER)) \
             WHERE status IN ('{running}', '{pending}') AND started_at < ?1{scope} RETURNING id",
            failed = SyncStatus::Failed.as_str(),
            running = SyncStatus::Running.as_str(),
            pending = SyncStatus::Pending.as_str(),
            scope = if workspace_id.is_some() {
                " AND workspace_id = ?4"
            } else {
                ""
            },
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(sqlite_ts(started_before))
            .bind(redact_secrets(reason))
            .bind(sqlite_ts(self.now()))
            .bind(workspace_id.map(hy))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("fail_stale_syncs"))?;
        let ids = rows
            .iter()
            .map(|r| rows::required(r.uuid("id")?, "id"))
            .collect::<Result<Vec<_>>>()?;
        if !ids.is_empty() {
            tracing::warn!(count = ids.len(), "failed stale syncs");
        }
        Ok(ids)
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
            let ended = sqlx::query(
                "UPDATE sync_log SET status = 'failed', error_message = ?3, completed_at = ?4, \
                     duration_ms = MAX(0, CAST(ROUND((julianday(?4) - julianday(started_at)) * 86400000.0) AS INTEGER)) \
                 WHERE workspace_id = ?1 AND status = 'running' AND lock_holder = ?2 \
                 RETURNING id, connector_type",
            )
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

use super::{DealFieldCounts, EnrichmentStore, InternalCounts, LinkCounts, normalize_domains};

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

#[async_trait]
impl EnrichmentStore for SqliteStore {
    async fn link_conversations(&self, workspace_id: Uuid) -> Result<LinkCounts> {
        let sql = format!(
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
             scored AS (\
                SELECT conversation_id, kind, account_id, source, source_id, \
                       COUNT(DISTINCT ord) AS hits, MIN(ord) AS first_ord \
                FROM matches GROUP BY conversation_id, kind, account_id, source, source_id), \
             best AS (\
                SELECT conversation_id, account_id, source, source_id FROM (\
                    SELECT s.*, ROW_NUMBER() OVER (PARTITION BY conversation_id \
                        ORDER BY kind, hits DESC, first_ord, source, source_id) AS rn \
                    FROM scored s) \
                WHERE rn = 1), \
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
                    OR conversations.linked_deal_id IS NOT t.deal_id)"
        );
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("link_conversations: begin"))?;
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(hy(workspace_id))
            .execute(&mut *tx)
            .await
            .map_err(db_err("link_conversations"))?;
        let (total, accounts, deals): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(linked_account_id), COUNT(linked_deal_id) \
             FROM conversations WHERE workspace_id = ?1 AND archived_at IS NULL",
        )
        .bind(hy(workspace_id))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("link_conversations: counting"))?;
        tx.commit()
            .await
            .map_err(db_err("link_conversations: commit"))?;
        Ok(LinkCounts {
            conversations: super::types::to_u64(total, "count")?,
            linked_accounts: super::types::to_u64(accounts, "count")?,
            linked_deals: super::types::to_u64(deals, "count")?,
            changed: done.rows_affected(),
        })
    }

    async fn mark_internal_conversations(
        &self,
        workspace_id: Uuid,
        internal_domains: &[String],
    ) -> Result<InternalCounts> {
        let domains = normalize_domains(internal_domains);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("mark_internal_conversations: begin"))?;
        let mut changed = 0;
        if !domains.is_empty() {
            let sql = "WITH doms(d) AS (SELECT DISTINCT value FROM json_each(?2)), \
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
                    SELECT id, \
                           MIN(COALESCE(internal, 0)) AS all_internal, \
                           MAX(CASE WHEN internal IS NULL THEN 0 \
                                    WHEN json_type(value, '$.is_internal') \
                                         IS (CASE WHEN internal = 1 THEN 'true' ELSE 'false' END) \
                                    THEN 0 ELSE 1 END) AS flags_changed, \
                           '[' || group_concat(\
                               CASE WHEN internal IS NOT NULL \
                                        THEN json_set(value, '$.is_internal', \
                                             json(CASE WHEN internal = 1 THEN 'true' ELSE 'false' END)) \
                                    WHEN type IN ('object', 'array') THEN json(value) \
                                    WHEN type IN ('true', 'false', 'null') THEN type \
                                    ELSE json_quote(value) END, \
                               ',' ORDER BY ord) || ']' AS participants \
                    FROM flagged GROUP BY id) \
                 UPDATE conversations SET is_internal = agg.all_internal, \
                     participants = CASE WHEN agg.flags_changed = 1 THEN agg.participants \
                                         ELSE conversations.participants END \
                 FROM agg \
                 WHERE conversations.workspace_id = ?1 AND conversations.id = agg.id \
                   AND (conversations.is_internal IS NOT agg.all_internal OR agg.flags_changed = 1)";
            let done = sqlx::query(sql)
                .bind(hy(workspace_id))
                .bind(serde_json::to_string(&domains)?)
                .execute(&mut *tx)
                .await
                .map_err(db_err("mark_internal_conversations"))?;
            changed = done.rows_affected();
        }
        let (total, internal): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN is_internal = 1 THEN 1 ELSE 0 END), 0) \
             FROM conversations WHERE workspace_id = ?1 AND archived_at IS NULL \
               AND (CASE WHEN json_valid(participants) THEN \
                        CASE WHEN json_type(participants) = 'array' \
                             THEN json_array_length(participants) > 0 ELSE 0 END \
                    ELSE 0 END)",
        )
        .bind(hy(workspace_id))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("mark_internal_conversations: counting"))?;
        tx.commit()
            .await
            .map_err(db_err("mark_internal_conversations: commit"))?;
        Ok(InternalCounts {
            conversations: super::types::to_u64(total, "count")?,
            internal: super::types::to_u64(internal, "count")?,
            changed,
        })
    }

    async fn flagged_internal_domains(&self, workspace_id: Uuid) -> Result<Vec<String>> {
        let sql = format!(
            "WITH {SQLITE_PARTICIPANTS_CTE} \
             SELECT DISTINCT domain FROM emails WHERE internal = 1 ORDER BY domain"
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(hy(workspace_id))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("flagged_internal_domains"))
    }

    async fn refresh_deal_fields(
        &self,
        workspace_id: Uuid,
        today: NaiveDate,
    ) -> Result<DealFieldCounts> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("refresh_deal_fields: begin"))?;
        let done = sqlx::query(
            "WITH v AS (\
                SELECT id, \
                       CASE WHEN source_created_at IS NULL THEN NULL ELSE \
                           MAX(0, CAST(round(julianday(\
                               CASE WHEN is_closed = 1 AND close_date IS NOT NULL \
                                    THEN close_date ELSE ?2 END) \
                             - julianday(substr(source_created_at, 1, 10))) AS INTEGER)) \
                       END AS days_open, \
                       CASE WHEN close_date IS NULL THEN NULL ELSE \
                           CAST(round(julianday(close_date) - julianday(?2)) AS INTEGER) \
                       END AS days_to_close \
                FROM deals WHERE workspace_id = ?1 AND archived_at IS NULL) \
             UPDATE deals SET days_open = v.days_open, days_to_close = v.days_to_close \
             FROM v \
             WHERE deals.workspace_id = ?1 AND deals.id = v.id \
               AND (deals.days_open IS NOT v.days_open OR deals.days_to_close IS NOT v.days_to_close)",
        )
        .bind(hy(workspace_id))
        .bind(date_text(today))
        .execute(&mut *tx)
        .await
        .map_err(db_err("refresh_deal_fields"))?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deals WHERE workspace_id = ?1 AND archived_at IS NULL",
        )
        .bind(hy(workspace_id))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err("refresh_deal_fields: counting"))?;
        tx.commit()
            .await
            .map_err(db_err("refresh_deal_fields: commit"))?;
        Ok(DealFieldCounts {
            deals: super::types::to_u64(total, "count")?,
            changed: done.rows_affected(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_tuples() {
        assert_eq!(tuples(2, 2), "(?, ?), (?, ?)");
        assert_eq!(tuples(1, 3), "(?, ?, ?)");
        assert_eq!(rows_per_statement(26), 1000);
        assert_eq!(rows_per_statement(100), 327);
    }
}
