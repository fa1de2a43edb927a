//! The PostgreSQL backend.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Row as _};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::clock::{Clock, SystemClock, now_micros};
use super::crypto::{Credentials, Keyring};
use super::lock::{INTERRUPTED, LockBackend, WorkspaceLock, new_holder};
use super::rows::{
    self, ColType, PG, RowRead, TableRows, Val, decode_connection, decode_record, decode_sync_log,
};
use super::types::{
    Backend, ConnectionRow, ConnectionStatus, MAX_PAGE, NewConnection, RecordQuery, SyncLogEntry,
    SyncOutcome,
};
use super::{
    ConnectionStore, LockStore, RecordStore, Store, SyncLogStore, check_config, check_outcome,
    count_u64, db_err, is_unique_violation, no_connection, no_keyring, outcome_errors_json, seal,
    to_i64,
};
use crate::connector::{Checkpoint, RecordBatch, WriteCounts};
use crate::error::{Error, Result, redact_secrets};
use crate::model::{ConnectorKind, DealContact, Record, RecordKind, SyncMode};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// At most this many rows per `UNNEST` statement (a batch larger than this is written by
/// several statements in the same transaction).
const MAX_ROWS: usize = 5_000;

/// How often a held advisory lock's connection is checked.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(15);

/// Namespace of the advisory lock keys of workspace sync locks.
const LOCK_NAMESPACE: Uuid = Uuid::from_u128(0x2f0c_93b4_51d6_4e0b_a7c8_1e55_90aa_c3d7);

/// The production storage backend: PostgreSQL through sqlx.
///
/// Built from a URL or from the host's own [`PgPool`] (which must come from sqlx 0.9).
/// Batches are upserted with one `INSERT ... SELECT FROM UNNEST(...)` per table; workspace
/// locks are session advisory locks on a dedicated connection.
///
/// Cloning is cheap: clones share the pool.
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgStore {
    pool: PgPool,
    keyring: Option<Keyring>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("keyring", &self.keyring)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects a pool of up to 10 connections to `postgres://...`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL, [`Error::Storage`] when the server cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::config(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options).await
    }

    /// Connects a pool of up to 10 connections with these options.
    ///
    /// # Errors
    /// [`Error::Storage`] when the server cannot be reached.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await
            .map_err(db_err("could not connect to PostgreSQL"))?;
        Ok(Self::from_pool(pool))
    }

    /// A store over the host's pool.
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore {
            pool,
            keyring: None,
            clock: Arc::new(SystemClock),
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

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The advisory lock key (`pg_try_advisory_lock(bigint)`) of a workspace's sync lock,
    /// e.g. to find its holder in `pg_locks`.
    pub fn workspace_lock_key(workspace_id: Uuid) -> i64 {
        let hashed = Uuid::new_v5(&LOCK_NAMESPACE, workspace_id.as_bytes());
        let (hi, lo) = hashed.as_u64_pair();
        i64::from_ne_bytes((hi ^ lo).to_ne_bytes())
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        now_micros(&*self.clock)
    }
}

fn decode_err(col: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::storage(format!("could not read column {col}"), e)
}

impl RowRead for PgRow {
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
        self.try_get(col).map_err(decode_err(col))
    }

    fn date(&self, col: &str) -> Result<Option<NaiveDate>> {
        self.try_get(col).map_err(decode_err(col))
    }

    fn uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.try_get(col).map_err(decode_err(col))
    }

    fn json(&self, col: &str) -> Result<Option<serde_json::Value>> {
        self.try_get::<Option<Json<serde_json::Value>>, _>(col)
            .map(|v| v.map(|j| j.0))
            .map_err(decode_err(col))
    }
}

/// One column of a batch as a Postgres array.
enum Arr<'a> {
    Text(Vec<Option<&'a str>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Ts(Vec<Option<DateTime<Utc>>>),
    Date(Vec<Option<NaiveDate>>),
    Uuid(Vec<Option<Uuid>>),
    Json(Vec<&'a str>),
}

impl<'a> Arr<'a> {
    fn new(ty: ColType, cap: usize) -> Self {
        match ty {
            ColType::Text => Arr::Text(Vec::with_capacity(cap)),
            ColType::Int => Arr::Int(Vec::with_capacity(cap)),
            ColType::Float => Arr::Float(Vec::with_capacity(cap)),
            ColType::Bool => Arr::Bool(Vec::with_capacity(cap)),
            ColType::Ts => Arr::Ts(Vec::with_capacity(cap)),
            ColType::Date => Arr::Date(Vec::with_capacity(cap)),
            ColType::Uuid => Arr::Uuid(Vec::with_capacity(cap)),
            ColType::Json => Arr::Json(Vec::with_capacity(cap)),
        }
    }

    fn push(&mut self, v: &'a Val<'a>) -> Result<()> {
        match (self, v) {
            (Arr::Text(a), Val::Text(x)) => a.push(*x),
            (Arr::Int(a), Val::Int(x)) => a.push(*x),
            (Arr::Float(a), Val::Float(x)) => a.push(*x),
            (Arr::Bool(a), Val::Bool(x)) => a.push(*x),
            (Arr::Ts(a), Val::Ts(x)) => a.push(*x),
            (Arr::Date(a), Val::Date(x)) => a.push(*x),
            (Arr::Uuid(a), Val::Uuid(x)) => a.push(*x),
            (Arr::Json(a), Val::Json(x)) => a.push(x.as_str()),
            _ => return Err(Error::config("internal: column type mismatch")),
        }
        Ok(())
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        match self {
            Arr::Text(a) => q.bind(a),
            Arr::Int(a) => q.bind(a),
            Arr::Float(a) => q.bind(a),
            Arr::Bool(a) => q.bind(a),
            Arr::Ts(a) => q.bind(a),
            Arr::Date(a) => q.bind(a),
            Arr::Uuid(a) => q.bind(a),
            Arr::Json(a) => q.bind(a),
        }
    }
}

fn pg_array_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Text | ColType::Json => "text[]",
        ColType::Int => "int8[]",
        ColType::Float => "float8[]",
        ColType::Bool => "bool[]",
        ColType::Ts => "timestamptz[]",
        ColType::Date => "date[]",
        ColType::Uuid => "uuid[]",
    }
}

/// `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT ...` of a record table.
fn upsert_sql(spec: &rows::TableSpec) -> String {
    let select: Vec<String> = spec
        .columns
        .iter()
        .map(|c| match c.ty {
            ColType::Json => format!("u.{}::jsonb", c.name),
            _ => format!("u.{}", c.name),
        })
        .collect();
    let arrays: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 4, pg_array_type(c.ty)))
        .collect();
    format!(
        "INSERT INTO {t} (workspace_id, source, synced_at, {cols}) \
         SELECT $1, $2, $3, {select} FROM UNNEST({arrays}) AS u({cols}) {conflict} \
         RETURNING (xmax = 0) AS inserted",
        t = spec.table,
        cols = spec.column_list(),
        select = select.join(", "),
        arrays = arrays.join(", "),
        conflict = rows::upsert_conflict_clause(spec, PG),
    )
}

/// Upserts one table's rows; returns (inserted, updated, unchanged).
async fn upsert_table(
    tx: &mut PgConnection,
    ws: Uuid,
    source: ConnectorKind,
    now: DateTime<Utc>,
    t: &TableRows<'_>,
) -> Result<(u64, u64, u64)> {
    let sql = upsert_sql(t.spec);
    let (mut inserted, mut updated, mut unchanged) = (0u64, 0u64, 0u64);
    for chunk in t.rows.chunks(MAX_ROWS) {
        let mut arrays: Vec<Arr<'_>> = t
            .spec
            .columns
            .iter()
            .map(|c| Arr::new(c.ty, chunk.len()))
            .collect();
        for row in chunk {
            for (arr, v) in arrays.iter_mut().zip(row) {
                arr.push(v)?;
            }
        }
        let mut q = sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(ws)
            .bind(source.as_str())
            .bind(now);
        for arr in arrays {
            q = arr.bind(q);
        }
        let written = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("write_batch: upserting records"))?;
        for r in &written {
            let was_insert: bool = r
                .try_get(0)
                .map_err(db_err("write_batch: upserting records"))?;
            if was_insert {
                inserted += 1;
            } else {
                updated += 1;
            }
        }
        unchanged += count_u64(chunk.len().saturating_sub(written.len()));
    }
    Ok((inserted, updated, unchanged))
}

async fn upsert_links(
    tx: &mut PgConnection,
    ws: Uuid,
    source: ConnectorKind,
    now: DateTime<Utc>,
    links: &[&DealContact],
) -> Result<(u64, u64, u64)> {
    let (mut inserted, mut updated, mut unchanged) = (0u64, 0u64, 0u64);
    for chunk in links.chunks(MAX_ROWS) {
        let deals: Vec<&str> = chunk.iter().map(|l| l.deal_source_id.as_str()).collect();
        let contacts: Vec<&str> = chunk.iter().map(|l| l.contact_source_id.as_str()).collect();
        let roles: Vec<Option<&str>> = chunk.iter().map(|l| l.role.as_deref()).collect();
        let written = sqlx::query(
            "INSERT INTO deal_contacts (workspace_id, source, synced_at, deal_source_id, contact_source_id, role) \
             SELECT $1, $2, $3, u.d, u.c, u.r FROM UNNEST($4::text[], $5::text[], $6::text[]) AS u(d, c, r) \
             ON CONFLICT (workspace_id, source, deal_source_id, contact_source_id) DO UPDATE \
             SET role = EXCLUDED.role, synced_at = EXCLUDED.synced_at \
             WHERE deal_contacts.role IS DISTINCT FROM EXCLUDED.role \
             RETURNING (xmax = 0) AS inserted",
        )
        .bind(ws)
        .bind(source.as_str())
        .bind(now)
        .bind(deals)
        .bind(contacts)
        .bind(roles)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err("write_batch: upserting links"))?;
        for r in &written {
            let was_insert: bool = r
                .try_get(0)
                .map_err(db_err("write_batch: upserting links"))?;
            if was_insert {
                inserted += 1;
            } else {
                updated += 1;
            }
        }
        unchanged += count_u64(chunk.len().saturating_sub(written.len()));
    }
    Ok((inserted, updated, unchanged))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db_err("migrate: acquire"))?;
        // `run_direct` is `run` without the `Acquire` indirection, whose higher-ranked
        // lifetime does not satisfy the `Send` bound of an `async_trait` method. It takes
        // sqlx's advisory lock, so concurrent processes apply each migration once.
        MIGRATOR
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(|e| Error::storage("migrate: applying the PostgreSQL migrations", e))
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

impl PgStore {
    async fn update_connection(
        &self,
        ws: Uuid,
        connector: ConnectorKind,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
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
impl ConnectionStore for PgStore {
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
        let row = sqlx::query(
            "INSERT INTO connections (id, workspace_id, connector_name, auth_method, credentials, config, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING *",
        )
        .bind(Uuid::new_v4())
        .bind(new.workspace_id)
        .bind(new.connector.as_str())
        .bind(new.auth_method.as_str())
        .bind(sealed)
        .bind(Json(&new.config))
        .bind(self.now())
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
        sqlx::query("SELECT * FROM connections WHERE workspace_id = $1 AND connector_name = $2")
            .bind(workspace_id)
            .bind(connector.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("get_connection"))?
            .map(|r| decode_connection(&r))
            .transpose()
    }

    async fn list_connections(&self, workspace_id: Uuid) -> Result<Vec<ConnectionRow>> {
        sqlx::query("SELECT * FROM connections WHERE workspace_id = $1 ORDER BY connector_name")
            .bind(workspace_id)
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
            sqlx::query("DELETE FROM connections WHERE workspace_id = $1 AND connector_name = $2")
                .bind(workspace_id)
                .bind(connector.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err("delete_connection"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn workspaces(&self) -> Result<Vec<Uuid>> {
        sqlx::query_scalar("SELECT DISTINCT workspace_id FROM connections ORDER BY workspace_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("workspaces"))
    }

    async fn set_connection_status(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        status: ConnectionStatus,
        error_message: Option<&str>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET status = $3, error_message = $4, updated_at = $5 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(status.as_str())
        .bind(error_message.map(redact_secrets))
        .bind(self.now());
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_last_sync_at(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET last_sync_at = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(at)
        .bind(self.now());
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        cursor: Option<&serde_json::Value>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET sync_cursor = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(cursor.map(Json))
        .bind(self.now());
        self.update_connection(workspace_id, connector, q).await
    }

    async fn merge_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        members: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE connections SET sync_cursor = \
                 (CASE WHEN jsonb_typeof(sync_cursor) = 'object' THEN sync_cursor ELSE '{}'::jsonb END) \
                 || $3::jsonb, updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(Json(members))
        .bind(self.now());
        self.update_connection(workspace_id, connector, q).await
    }

    async fn set_config(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        config: &serde_json::Value,
    ) -> Result<()> {
        check_config(config)?;
        let q = sqlx::query(
            "UPDATE connections SET config = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(Json(config))
        .bind(self.now());
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
            "UPDATE connections SET credentials = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(connector.as_str())
        .bind(sealed)
        .bind(self.now());
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
                "UPDATE connections SET credentials = $4, updated_at = $5 \
                 WHERE workspace_id = $1 AND connector_name = $2 AND credentials = $3",
            )
            .bind(workspace_id)
            .bind(row.connector.as_str())
            .bind(sealed.as_stored())
            .bind(resealed.as_stored())
            .bind(self.now())
            .execute(&self.pool)
            .await
            .map_err(db_err("reencrypt_credentials"))?;
            changed += done.rows_affected();
        }
        Ok(changed)
    }
}

#[async_trait]
impl RecordStore for PgStore {
    async fn write_batch(
        &self,
        workspace_id: Uuid,
        source: ConnectorKind,
        batch: &RecordBatch,
        checkpoint: &Checkpoint,
    ) -> Result<WriteCounts> {
        let prepared = rows::prepare(workspace_id, source, batch)?;
        let now = self.now();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("write_batch: begin"))?;
        let mut counts = WriteCounts::default();

        for t in &prepared.tables {
            let (i, u, n) = upsert_table(&mut tx, workspace_id, source, now, t).await?;
            counts.inserted += i;
            counts.updated += u;
            counts.unchanged += n + t.duplicates;
        }
        if !prepared.links.is_empty() {
            let (i, u, n) =
                upsert_links(&mut tx, workspace_id, source, now, &prepared.links).await?;
            counts.inserted += i;
            counts.updated += u;
            counts.unchanged += n + prepared.link_duplicates;
        }

        for d in &prepared.deletions {
            for chunk in d.rows.chunks(MAX_ROWS) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
                let ats: Vec<DateTime<Utc>> = chunk.iter().map(|(_, at)| *at).collect();
                let sql = format!(
                    "UPDATE {t} SET archived_at = d.deleted_at, synced_at = $3 \
                     FROM UNNEST($4::text[], $5::timestamptz[]) AS d(source_id, deleted_at) \
                     WHERE {t}.workspace_id = $1 AND {t}.source = $2 AND {t}.source_id = d.source_id \
                       AND {t}.archived_at IS NULL \
                       AND ({t}.source_updated_at IS NULL OR {t}.source_updated_at <= d.deleted_at)",
                    t = d.spec.table
                );
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(workspace_id)
                    .bind(source.as_str())
                    .bind(now)
                    .bind(ids)
                    .bind(ats)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("write_batch: archiving deleted records"))?;
                counts.archived += done.rows_affected();
            }
        }
        for chunk in prepared.link_deletions.chunks(MAX_ROWS) {
            let deals: Vec<&str> = chunk.iter().map(|(d, _)| *d).collect();
            let contacts: Vec<&str> = chunk.iter().map(|(_, c)| *c).collect();
            let done = sqlx::query(
                "DELETE FROM deal_contacts AS dc USING UNNEST($3::text[], $4::text[]) AS x(d, c) \
                 WHERE dc.workspace_id = $1 AND dc.source = $2 \
                   AND dc.deal_source_id = x.d AND dc.contact_source_id = x.c",
            )
            .bind(workspace_id)
            .bind(source.as_str())
            .bind(deals)
            .bind(contacts)
            .execute(&mut *tx)
            .await
            .map_err(db_err("write_batch: removing links"))?;
            counts.archived += done.rows_affected();
        }

        let done = sqlx::query(
            "UPDATE connections SET sync_cursor = \
                 (CASE WHEN jsonb_typeof(sync_cursor) = 'object' THEN sync_cursor ELSE '{}'::jsonb END) \
                 || jsonb_build_object('streams', $3::jsonb), updated_at = $4 \
             WHERE workspace_id = $1 AND connector_name = $2",
        )
        .bind(workspace_id)
        .bind(source.as_str())
        .bind(Json(&checkpoint.streams))
        .bind(now)
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
                "SELECT * FROM deal_contacts WHERE workspace_id = $1 AND source = $2 \
                 AND deal_source_id = $3 AND contact_source_id = $4",
            )
            .bind(workspace_id)
            .bind(source.as_str())
            .bind(deal)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await
        } else {
            let sql = format!(
                "SELECT * FROM {} WHERE workspace_id = $1 AND source = $2 AND source_id = $3",
                kind.table()
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(workspace_id)
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
        let mut sql = format!("SELECT * FROM {} WHERE workspace_id = $1", kind.table());
        let mut q_after = None;
        if query.source.is_some() {
            sql.push_str(" AND source = $3");
        }
        if kind == RecordKind::DealContact {
            if query.after.is_some() {
                return Err(Error::unsupported(
                    "list_records after an id",
                    "deal_contacts",
                ));
            }
            sql.push_str(" ORDER BY source, deal_source_id, contact_source_id LIMIT $2");
        } else {
            if let Some(after) = query.after {
                sql.push_str(" AND id > $4");
                q_after = Some(after);
            }
            if !query.include_archived {
                sql.push_str(" AND archived_at IS NULL");
            }
            sql.push_str(" ORDER BY id LIMIT $2");
        }
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(query.capped_limit());
        // Postgres wants every bound parameter used: bind only what the SQL references.
        if let Some(source) = query.source {
            q = q.bind(source.as_str());
        } else if q_after.is_some() {
            q = q.bind(None::<&str>);
        }
        if let Some(after) = q_after {
            q = q.bind(after);
        }
        let rows = q
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
        let n: i64 = if let Some(source) = source {
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE workspace_id = $1 AND source = $2",
                kind.table()
            );
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(workspace_id)
                .bind(source.as_str())
                .fetch_one(&self.pool)
                .await
        } else {
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE workspace_id = $1",
                kind.table()
            );
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(workspace_id)
                .fetch_one(&self.pool)
                .await
        }
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
            "SELECT COUNT(*) FROM {} WHERE workspace_id = $1 AND source = $2{} \
             AND ($3::timestamptz IS NULL{})",
            kind.table(),
            if links {
                ""
            } else {
                " AND archived_at IS NULL"
            },
            if links {
                ""
            } else {
                " OR source_updated_at >= $3"
            }
        );
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(source.as_str())
            .bind(updated_since)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("count_live_records"))?;
        super::types::to_u64(n, "count")
    }
}

/// `duration_ms` from `started_at` to the bound completion time `$n`.
macro_rules! duration_sql {
    ($n:literal) => {
        concat!(
            "GREATEST(0, ROUND(EXTRACT(EPOCH FROM (",
            $n,
            "::timestamptz - started_at)) * 1000))::bigint"
        )
    };
}

impl PgStore {
    /// Fails the job's run `sync_id` when it is still running (or pending, with
    /// `include_pending`): its job ended without finishing it. Returns whether it changed.
    pub(crate) async fn fail_active_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        reason: &str,
        include_pending: bool,
    ) -> Result<bool> {
        let done = sqlx::query(concat!(
            "UPDATE sync_log SET status = 'failed', error_message = $3, completed_at = $4, duration_ms = ",
            duration_sql!("$4"),
            " WHERE workspace_id = $1 AND id = $2 \
               AND (status = 'running' OR ($5 AND status = 'pending'))"
        ))
        .bind(workspace_id)
        .bind(sync_id)
        .bind(redact_secrets(reason))
        .bind(self.now())
        .bind(include_pending)
        .execute(&self.pool)
        .await
        .map_err(db_err("fail_active_sync"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SyncLogStore for PgStore {
    async fn create_sync(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        sync_type: Option<SyncMode>,
    ) -> Result<SyncLogEntry> {
        let row = sqlx::query(
            "INSERT INTO sync_log (id, workspace_id, connector_type, sync_type, status, records_synced, started_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5) RETURNING *",
        )
        .bind(Uuid::new_v4())
        .bind(workspace_id)
        .bind(connector.map(ConnectorKind::as_str))
        .bind(sync_type.map(SyncMode::as_str))
        .bind(self.now())
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
            "UPDATE sync_log SET status = 'running', started_at = $3, sync_type = COALESCE($4, sync_type) \
             WHERE workspace_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(workspace_id)
        .bind(sync_id)
        .bind(self.now())
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
        let done = sqlx::query(concat!(
            "UPDATE sync_log SET status = $3, records_synced = $4, errors = $5::jsonb, \
                 error_message = $6, completed_at = $7, duration_ms = ",
            duration_sql!("$7"),
            " WHERE workspace_id = $1 AND id = $2 AND status IN ('pending', 'running')"
        ))
        .bind(workspace_id)
        .bind(sync_id)
        .bind(outcome.status.as_str())
        .bind(to_i64(outcome.records_synced))
        .bind(outcome_errors_json(outcome)?)
        .bind(outcome.error_message.as_deref().map(redact_secrets))
        .bind(self.now())
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
        sqlx::query("SELECT * FROM sync_log WHERE workspace_id = $1 AND id = $2")
            .bind(workspace_id)
            .bind(sync_id)
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
        let limit = i64::from(limit.min(MAX_PAGE));
        let rows = if let Some(connector) = connector {
            sqlx::query(
                "SELECT * FROM sync_log WHERE workspace_id = $1 AND connector_type = $3 \
                 ORDER BY started_at DESC, id DESC LIMIT $2",
            )
            .bind(workspace_id)
            .bind(limit)
            .bind(connector.as_str())
            .fetch_all(&self.pool)
            .await
        } else {
            sqlx::query(
                "SELECT * FROM sync_log WHERE workspace_id = $1 \
                 ORDER BY started_at DESC, id DESC LIMIT $2",
            )
            .bind(workspace_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
        }
        .map_err(db_err("sync_history"))?;
        rows.iter().map(decode_sync_log).collect()
    }

    async fn active_syncs(&self, workspace_id: Uuid) -> Result<Vec<SyncLogEntry>> {
        sqlx::query(
            "SELECT * FROM sync_log WHERE workspace_id = $1 AND status IN ('pending', 'running') \
             ORDER BY started_at DESC, id DESC",
        )
        .bind(workspace_id)
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
        const SET: &str = concat!(
            "UPDATE sync_log SET status = 'failed', error_message = $2, completed_at = $3, duration_ms = ",
            duration_sql!("$3"),
            " WHERE status IN ('running', 'pending') AND started_at < $1"
        );
        let reason = redact_secrets(reason);
        let ids: Vec<Uuid> = if let Some(ws) = workspace_id {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "{SET} AND workspace_id = $4 RETURNING id"
            )))
            .bind(started_before)
            .bind(reason)
            .bind(self.now())
            .bind(ws)
            .fetch_all(&self.pool)
            .await
        } else {
            sqlx::query_scalar(AssertSqlSafe(format!("{SET} RETURNING id")))
                .bind(started_before)
                .bind(reason)
                .bind(self.now())
                .fetch_all(&self.pool)
                .await
        }
        .map_err(db_err("fail_stale_syncs"))?;
        if !ids.is_empty() {
            tracing::warn!(count = ids.len(), "failed stale syncs");
        }
        Ok(ids)
    }
}

/// A session advisory lock held on a dedicated connection.
#[derive(Debug)]
struct PgSessionLock {
    conn: Arc<Mutex<Option<PgConnection>>>,
    key: i64,
    workspace_id: Uuid,
}

async fn unlock_and_close(conn: &Mutex<Option<PgConnection>>, key: i64) -> Result<()> {
    let Some(mut conn) = conn.lock().await.take() else {
        return Ok(());
    };
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut conn)
        .await;
    // Closing ends the session, which releases the lock even if the unlock failed.
    let closed = conn.close().await;
    unlocked.map_err(db_err("releasing the workspace lock"))?;
    closed.map_err(db_err("closing the workspace lock connection"))
}

#[async_trait]
impl LockBackend for PgSessionLock {
    async fn renew(&self) -> Result<bool> {
        let mut guard = self.conn.lock().await;
        let Some(conn) = guard.as_mut() else {
            return Ok(false);
        };
        // The session holds the lock for as long as it lives: a live session is a held lock.
        if conn.ping().await.is_ok() {
            Ok(true)
        } else {
            guard.take();
            Ok(false)
        }
    }

    async fn release(&self) -> Result<()> {
        unlock_and_close(&self.conn, self.key).await
    }

    fn release_detached(&self) {
        let conn = Arc::clone(&self.conn);
        let (key, ws) = (self.key, self.workspace_id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = unlock_and_close(&conn, key).await {
                        tracing::warn!(workspace_id = %ws, error = %e, "error releasing the workspace lock");
                    }
                });
            }
            Err(_) => {
                // No runtime: dropping the connection closes its socket; the server then ends
                // the session and releases the lock.
                if let Ok(mut guard) = conn.try_lock() {
                    guard.take();
                }
            }
        }
    }
}

#[async_trait]
impl LockStore for PgStore {
    async fn try_lock_workspace(&self, workspace_id: Uuid) -> Result<Option<WorkspaceLock>> {
        let key = Self::workspace_lock_key(workspace_id);
        let options = (*self.pool.connect_options())
            .clone()
            .application_name("pandora_sync workspace lock");
        let mut conn = options
            .connect()
            .await
            .map_err(db_err("connecting for the workspace lock"))?;
        let taken: bool = match sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
        {
            Ok(taken) => taken,
            Err(e) => {
                let _ = conn.close().await;
                return Err(Error::storage("taking the workspace lock", e));
            }
        };
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        // Every run of the workspace holds this lock while it is `running`, and the lock
        // lives exactly as long as its holder's session: a `running` run found now belongs
        // to a holder that died (SIGKILL, crash, lost connection). End it, and its
        // connection's `syncing`, before anyone starts again.
        let ended: std::result::Result<Vec<Uuid>, sqlx::Error> = sqlx::query_scalar(concat!(
            "WITH ended AS (UPDATE sync_log SET status = 'failed', error_message = $2, \
                 completed_at = $3, duration_ms = ",
            duration_sql!("$3"),
            " WHERE workspace_id = $1 AND status = 'running' RETURNING id, connector_type), \
             conns AS (UPDATE connections SET status = 'error', error_message = $2, updated_at = $3 \
                 WHERE workspace_id = $1 AND status = 'syncing' \
                   AND connector_name IN (SELECT connector_type FROM ended)) \
             SELECT id FROM ended"
        ))
        .bind(workspace_id)
        .bind(INTERRUPTED)
        .bind(self.now())
        .fetch_all(&mut conn)
        .await;
        match ended {
            Ok(ids) if !ids.is_empty() => tracing::warn!(
                %workspace_id,
                interrupted = ids.len(),
                "took over the workspace lock of a process that died; its runs are failed as interrupted"
            ),
            Ok(_) => {}
            Err(e) => {
                // Closing the session releases the lock: nobody runs over the dead runs.
                let _ = conn.close().await;
                return Err(Error::storage("ending the runs of a dead lock holder", e));
            }
        }
        let lock = PgSessionLock {
            conn: Arc::new(Mutex::new(Some(conn))),
            key,
            workspace_id,
        };
        Ok(Some(WorkspaceLock::new(
            workspace_id,
            new_holder(),
            Arc::new(lock),
            LOCK_CHECK_EVERY,
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Enrichment (post-sync hooks): set-based statements over one workspace.
// ---------------------------------------------------------------------------------------

use super::{DealFieldCounts, EnrichmentStore, InternalCounts, LinkCounts, normalize_domains};

/// The participants with an email of the workspace's live conversations:
/// `(conversation_id, ord, email, domain, internal)`, email trimmed and lower-cased, domain
/// after the first `@`, `internal` true when the participant's JSON flag is `true`.
const PG_PARTICIPANTS_CTE: &str = "\
    conv AS (\
        SELECT c.id, c.participants FROM conversations c \
        WHERE c.workspace_id = $1 AND c.archived_at IS NULL), \
    raw_parts AS (\
        SELECT conv.id AS conversation_id, p.ord, \
               CASE WHEN jsonb_typeof(p.elem -> 'email') = 'string' \
                    THEN lower(btrim(p.elem ->> 'email')) END AS email, \
               COALESCE(p.elem -> 'is_internal' = 'true'::jsonb, false) AS internal \
        FROM conv CROSS JOIN LATERAL jsonb_array_elements(\
            CASE WHEN jsonb_typeof(conv.participants) = 'array' \
                 THEN conv.participants ELSE '[]'::jsonb END) WITH ORDINALITY AS p(elem, ord) \
        WHERE jsonb_typeof(p.elem) = 'object'), \
    emails AS (\
        SELECT conversation_id, ord, email, substr(email, strpos(email, '@') + 1) AS domain, internal \
        FROM raw_parts \
        WHERE email IS NOT NULL AND strpos(email, '@') > 1 AND strpos(email, '@') < length(email))";

/// Tables the enrichment statements read.
const ENRICHMENT_TABLES: [&str; 4] = ["accounts", "contacts", "deals", "conversations"];

impl PgStore {
    /// Refreshes the planner statistics of the enrichment tables whose statistics are
    /// missing or stale (more than a tenth of their rows changed since the last analyze).
    ///
    /// Post-sync hooks run right after bulk writes, before autovacuum has analyzed the new
    /// rows. With no statistics the planner assumes a handful of rows and picks nested loops
    /// that re-run the contact-account join once per participant: minutes instead of
    /// milliseconds on a workspace of 8,000 contacts. `ANALYZE` samples a bounded number of
    /// rows, so this costs tens of milliseconds. Without the privilege to analyze a table,
    /// Postgres skips it with a warning; that is not an error here either.
    async fn refresh_stale_statistics(&self) -> Result<()> {
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM UNNEST($1::text[]) AS t(name) \
             JOIN pg_stat_user_tables s ON s.relid = to_regclass(t.name) \
             WHERE (s.last_analyze IS NULL AND s.last_autoanalyze IS NULL) \
                OR s.n_mod_since_analyze > GREATEST(500, s.n_live_tup / 10)",
        )
        .bind(&ENRICHMENT_TABLES[..])
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("checking planner statistics"))?;
        // Only names from ENRICHMENT_TABLES are kept; ANALYZE takes no parameters.
        let tables: Vec<&str> = ENRICHMENT_TABLES
            .into_iter()
            .filter(|t| stale.iter().any(|s| s == t))
            .collect();
        if !tables.is_empty() {
            sqlx::query(AssertSqlSafe(format!("ANALYZE {}", tables.join(", "))))
                .execute(&self.pool)
                .await
                .map_err(db_err("refreshing planner statistics"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl EnrichmentStore for PgStore {
    async fn link_conversations(&self, workspace_id: Uuid) -> Result<LinkCounts> {
        self.refresh_stale_statistics().await?;
        let sql = format!(
            "WITH {PG_PARTICIPANTS_CTE}, \
             flagged AS (\
                SELECT e.*, bool_or(NOT internal) OVER (PARTITION BY conversation_id) AS has_external \
                FROM emails e), \
             used AS (\
                SELECT conversation_id, ord, email, domain FROM flagged \
                WHERE NOT internal OR NOT has_external), \
             contact_accounts AS MATERIALIZED (\
                SELECT DISTINCT lower(btrim(ct.email)) AS email, a.id AS account_id, \
                       a.source AS source, a.source_id AS source_id \
                FROM contacts ct \
                JOIN accounts a ON a.workspace_id = ct.workspace_id AND a.source = ct.source \
                     AND a.source_id = ct.account_source_id AND a.archived_at IS NULL \
                WHERE ct.workspace_id = $1 AND ct.archived_at IS NULL \
                  AND ct.email IS NOT NULL AND ct.account_source_id IS NOT NULL), \
             domain_accounts AS MATERIALIZED (\
                SELECT regexp_replace(lower(btrim(a.domain)), '^www\\.', '') AS domain, \
                       a.id AS account_id, a.source AS source, a.source_id AS source_id \
                FROM accounts a \
                WHERE a.workspace_id = $1 AND a.archived_at IS NULL AND a.domain IS NOT NULL), \
             matches AS (\
                SELECT u.conversation_id, 0 AS kind, u.ord, ca.account_id, ca.source, ca.source_id \
                FROM used u JOIN contact_accounts ca ON ca.email = u.email \
                UNION ALL \
                SELECT u.conversation_id, 1 AS kind, u.ord, da.account_id, da.source, da.source_id \
                FROM used u JOIN domain_accounts da ON da.domain = u.domain AND da.domain <> ''), \
             scored AS (\
                SELECT conversation_id, kind, account_id, source, source_id, \
                       COUNT(DISTINCT ord) AS hits, MIN(ord) AS first_ord \
                FROM matches GROUP BY conversation_id, kind, account_id, source, source_id), \
             best AS (\
                SELECT conversation_id, account_id, source, source_id FROM (\
                    SELECT s.*, ROW_NUMBER() OVER (PARTITION BY conversation_id \
                        ORDER BY kind, hits DESC, first_ord, source COLLATE \"C\", \
                                 source_id COLLATE \"C\") AS rn \
                    FROM scored s) r \
                WHERE rn = 1), \
             account_deal AS (\
                SELECT account_id, deal_id FROM (\
                    SELECT b.account_id, d.id AS deal_id, \
                           ROW_NUMBER() OVER (PARTITION BY b.account_id \
                               ORDER BY CASE WHEN d.is_closed THEN 1 ELSE 0 END, \
                                        d.close_date DESC NULLS LAST, \
                                        d.source_id COLLATE \"C\") AS rn \
                    FROM (SELECT DISTINCT account_id, source, source_id FROM best) b \
                    JOIN deals d ON d.workspace_id = $1 AND d.archived_at IS NULL \
                         AND d.source = b.source AND d.account_source_id = b.source_id) r \
                WHERE rn = 1), \
             target AS (\
                SELECT conv.id, b.account_id, ad.deal_id \
                FROM conv \
                LEFT JOIN best b ON b.conversation_id = conv.id \
                LEFT JOIN account_deal ad ON ad.account_id = b.account_id) \
             UPDATE conversations AS c SET linked_account_id = t.account_id, linked_deal_id = t.deal_id \
             FROM target t \
             WHERE c.workspace_id = $1 AND c.id = t.id \
               AND (c.linked_account_id IS DISTINCT FROM t.account_id \
                    OR c.linked_deal_id IS DISTINCT FROM t.deal_id)"
        );
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("link_conversations: begin"))?;
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err("link_conversations"))?;
        let (total, accounts, deals): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(linked_account_id), COUNT(linked_deal_id) \
             FROM conversations WHERE workspace_id = $1 AND archived_at IS NULL",
        )
        .bind(workspace_id)
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
        self.refresh_stale_statistics().await?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("mark_internal_conversations: begin"))?;
        let mut changed = 0;
        if !domains.is_empty() {
            let done = sqlx::query(
                "WITH doms AS (SELECT DISTINCT d FROM UNNEST($2::text[]) AS u(d)), \
                 conv AS (\
                    SELECT c.id, c.participants FROM conversations c \
                    WHERE c.workspace_id = $1 AND c.archived_at IS NULL \
                      AND jsonb_typeof(c.participants) = 'array' \
                      AND jsonb_array_length(\
                          CASE WHEN jsonb_typeof(c.participants) = 'array' \
                               THEN c.participants ELSE '[]'::jsonb END) > 0), \
                 parts AS (\
                    SELECT conv.id, p.ord, p.elem, \
                           CASE WHEN jsonb_typeof(p.elem -> 'email') = 'string' \
                                THEN lower(btrim(p.elem ->> 'email')) END AS email \
                    FROM conv CROSS JOIN LATERAL jsonb_array_elements(\
                        CASE WHEN jsonb_typeof(conv.participants) = 'array' \
                             THEN conv.participants ELSE '[]'::jsonb END) \
                         WITH ORDINALITY AS p(elem, ord)), \
                 domained AS (\
                    SELECT id, ord, elem, \
                           CASE WHEN strpos(email, '@') > 1 AND strpos(email, '@') < length(email) \
                                THEN substr(email, strpos(email, '@') + 1) END AS domain \
                    FROM parts), \
                 flagged AS (\
                    SELECT p.id, p.ord, p.elem, \
                           CASE WHEN p.domain IS NULL THEN NULL ELSE dm.d IS NOT NULL END AS internal \
                    FROM domained p LEFT JOIN doms dm ON dm.d = p.domain), \
                 agg AS (\
                    SELECT id, \
                           bool_and(COALESCE(internal, false)) AS all_internal, \
                           bool_or(internal IS NOT NULL \
                                   AND (elem -> 'is_internal') IS DISTINCT FROM to_jsonb(internal)) \
                               AS flags_changed, \
                           jsonb_agg(CASE WHEN internal IS NULL THEN elem \
                                          ELSE jsonb_set(elem, '{is_internal}', to_jsonb(internal)) END \
                                     ORDER BY ord) AS participants \
                    FROM flagged GROUP BY id) \
                 UPDATE conversations AS c SET is_internal = agg.all_internal, \
                     participants = CASE WHEN agg.flags_changed THEN agg.participants \
                                         ELSE c.participants END \
                 FROM agg \
                 WHERE c.workspace_id = $1 AND c.id = agg.id \
                   AND (c.is_internal IS DISTINCT FROM agg.all_internal OR agg.flags_changed)",
            )
            .bind(workspace_id)
            .bind(&domains[..])
            .execute(&mut *tx)
            .await
            .map_err(db_err("mark_internal_conversations"))?;
            changed = done.rows_affected();
        }
        let (total, internal): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE is_internal) \
             FROM conversations WHERE workspace_id = $1 AND archived_at IS NULL \
               AND jsonb_typeof(participants) = 'array' \
               AND jsonb_array_length(\
                   CASE WHEN jsonb_typeof(participants) = 'array' \
                        THEN participants ELSE '[]'::jsonb END) > 0",
        )
        .bind(workspace_id)
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
            "WITH {PG_PARTICIPANTS_CTE} \
             SELECT DISTINCT domain FROM emails WHERE internal ORDER BY domain"
        );
        let mut domains: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("flagged_internal_domains"))?;
        // Byte order, as on SQLite, whatever the database's collation.
        domains.sort();
        Ok(domains)
    }

    async fn refresh_deal_fields(
        &self,
        workspace_id: Uuid,
        today: NaiveDate,
    ) -> Result<DealFieldCounts> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("refresh_deal_fields: begin"))?;
        let done = sqlx::query(
            "WITH v AS (\
                SELECT id, \
                       CASE WHEN source_created_at IS NULL THEN NULL ELSE \
                           GREATEST(0, \
                               (CASE WHEN is_closed AND close_date IS NOT NULL \
                                     THEN close_date ELSE $2::date END) \
                             - (source_created_at AT TIME ZONE 'UTC')::date)::bigint \
                       END AS days_open, \
                       (close_date - $2::date)::bigint AS days_to_close \
                FROM deals WHERE workspace_id = $1 AND archived_at IS NULL) \
             UPDATE deals AS d SET days_open = v.days_open, days_to_close = v.days_to_close \
             FROM v \
             WHERE d.workspace_id = $1 AND d.id = v.id \
               AND (d.days_open IS DISTINCT FROM v.days_open \
                    OR d.days_to_close IS DISTINCT FROM v.days_to_close)",
        )
        .bind(workspace_id)
        .bind(today)
        .execute(&mut *tx)
        .await
        .map_err(db_err("refresh_deal_fields"))?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deals WHERE workspace_id = $1 AND archived_at IS NULL",
        )
        .bind(workspace_id)
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
    fn lock_keys_are_stable_and_distinct() {
        let a = Uuid::from_u128(1);
        assert_eq!(
            PgStore::workspace_lock_key(a),
            PgStore::workspace_lock_key(a)
        );
        assert_ne!(
            PgStore::workspace_lock_key(a),
            PgStore::workspace_lock_key(Uuid::from_u128(2))
        );
    }

    #[test]
    fn upsert_sql_shape() {
        let sql = upsert_sql(&rows::DEALS);
        assert!(
            sql.contains("FROM UNNEST($4::uuid[], $5::text[], $6::text[]"),
            "{sql}"
        );
        assert!(sql.contains("u.custom_fields::jsonb"), "{sql}");
        assert!(sql.contains("RETURNING (xmax = 0)"), "{sql}");
        assert!(!sql.contains("id = EXCLUDED.id"), "{sql}");
    }
}
