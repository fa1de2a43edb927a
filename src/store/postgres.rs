//! The PostgreSQL backend: what its dialect forces (native UUID, timestamp, date and JSONB
//! parameters; new rows of a batch loaded with a binary `COPY`, the others upserted with
//! `UNNEST` arrays and `xmax` to tell inserts from updates; session advisory locks; the enrichment statements over `jsonb` and planner statistics). The rest
//! is the shared SQL layer of [`super::sql`].

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use futures_util::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{ConnectOptions as _, Connection as _, Row as _};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::clock::Clock;
use super::crypto::Keyring;
use super::lock::{INTERRUPTED, LockBackend, WorkspaceLock, new_holder};
use super::rows::{self, ColType, PG, RowRead, TableRows, Val, decode_err, native_row_reads};
use super::sql::{self, Arg, BatchScope, Enrichment, SqlBackend, Stmt, impl_sql_store};
use super::types::Backend;
use super::{LockStore, count_u64, db_err, is_unique_violation};
use crate::connector::WriteCounts;
use crate::error::{Error, Result};
use crate::model::DealContact;

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// At most this many rows per `UNNEST` statement (a batch larger than this is written by
/// several statements in the same transaction).
const MAX_ROWS: usize = 5_000;

/// A table's rows of a batch are loaded with `COPY` when at least this many of them are not
/// stored yet (below that, the statements around a `COPY` cost more than they save).
const COPY_MIN_ROWS: usize = 32;

/// How often a held advisory lock's connection is checked.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(15);

/// Namespace of the advisory lock keys of workspace sync locks.
const LOCK_NAMESPACE: Uuid = Uuid::from_u128(0x2f0c_93b4_51d6_4e0b_a7c8_1e55_90aa_c3d7);

/// The production storage backend: PostgreSQL through sqlx.
///
/// Built from a URL or from the host's own [`PgPool`] (which must come from sqlx 0.8).
/// A batch's rows that are not stored yet are loaded with one binary `COPY` per table, the
/// others upserted with `INSERT ... SELECT FROM UNNEST(...)`; workspace locks are session
/// advisory locks on a dedicated connection.
///
/// Cloning is cheap: clones share the pool.
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgStore {
    pool: PgPool,
    keyring: Option<Keyring>,
    clock: Arc<dyn Clock>,
}

impl PgStore {
    /// Connects a pool of up to 10 connections to `postgres://...`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL, [`Error::Storage`] when the server cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(sql::parse_url(url, "PostgreSQL")?).await
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

    /// The advisory lock key (`pg_try_advisory_lock(bigint)`) of a workspace's sync lock,
    /// e.g. to find its holder in `pg_locks`.
    pub fn workspace_lock_key(workspace_id: Uuid) -> i64 {
        let hashed = Uuid::new_v5(&LOCK_NAMESPACE, workspace_id.as_bytes());
        let (hi, lo) = hashed.as_u64_pair();
        i64::from_ne_bytes((hi ^ lo).to_ne_bytes())
    }
}

impl_sql_store! {
    store: PgStore,
    db: Postgres,
    backend: Backend::Postgres,
    dialect: PG,
    begin: "BEGIN",
    bind: bind_arg,
    from_pool_doc: "A store over the host's pool.",
    extra: {},
}

/// Binds a statement argument as its native PostgreSQL type (JSON as `jsonb`, a list as
/// `text[]`).
fn bind_arg<'q>(q: PgQuery<'q>, a: Arg<'q>) -> PgQuery<'q> {
    match a {
        Arg::Str(s) => q.bind(s),
        Arg::String(s) => q.bind(s),
        Arg::Int(i) => q.bind(i),
        Arg::Bool(b) => q.bind(b),
        Arg::Ts(t) => q.bind(t),
        Arg::Uuid(u) => q.bind(u),
        Arg::Json(v) => q.bind(v.map(Json)),
        Arg::Texts(list) => q.bind(list),
        Arg::StrList(list) => q.bind(list),
        Arg::TsList(list) => q.bind(list),
        Arg::UuidList(list) => q.bind(list),
        Arg::IntList(list) => q.bind(list),
    }
}

impl RowRead for PgRow {
    native_row_reads!();

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

    fn bind(self, q: PgQuery<'a>) -> PgQuery<'a> {
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

/// The `source_id`s among `ids` that `table` holds for the batch's workspace and source.
fn existing_rows<'a>(
    tx: &'a mut PgConnection,
    at: BatchScope,
    table: &'a str,
    ids: &'a [&'a str],
) -> BoxFuture<'a, Result<HashSet<String>>> {
    Box::pin(async move {
        // One unique-index probe per id: with `source_id = ANY($3)` the planner, believing
        // the table small (statistics lag bulk loads), scans the whole (workspace_id,
        // source) range and filters, once per batch. Not prepared (`persistent(false)`): a
        // cached generic plan made while the table was empty would keep a sequential scan
        // per id as the table grows; an unnamed statement is planned with its current size.
        let sql = format!(
            "SELECT u.id FROM UNNEST($3::text[]) AS u(id) \
             CROSS JOIN LATERAL (SELECT 1 FROM {table} t \
                 WHERE t.workspace_id = $1 AND t.source = $2 AND t.source_id = u.id LIMIT 1) e"
        );
        let found: Vec<String> = sqlx::query_scalar(&sql)
            .persistent(false)
            .bind(at.ws)
            .bind(at.source.as_str())
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("write_batch: reading which rows exist"))?;
        Ok(found.into_iter().collect())
    })
}

/// Whether `table` may hold any of `ids` (values of `column`, the key column after
/// `workspace_id, source`) for the batch's workspace and source: for each length the ids
/// have, one range probe of the unique key between the smallest and the largest of them of
/// that length, in the column's own collation, for a stored id of that length. `false`
/// proves that every id is new (an initial sync's batches are usually past every stored
/// id), so the per-id probe of [`existing_rows`] is skipped.
///
/// By length, because provider ids are mostly numbers in text: a batch of `"1050"` to
/// `"1099"` is past every stored number below 1050, yet its text range holds the stored
/// `"106"` to `"109"`, so one range over the whole batch said "may hold" for nearly every
/// batch of a sync once its ids had more digits than the first ones. A probe of one
/// length steps over the stored ids of other lengths in its range (about a tenth of the
/// range's width).
fn may_hold_any<'a>(
    tx: &'a mut PgConnection,
    at: BatchScope,
    table: &'a str,
    column: &'a str,
    ids: &'a [&'a str],
) -> BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        // One index range scan for the bounds (`LATERAL … LIMIT`, which the planner cannot
        // flatten into a scan of the whole workspace filtered by the bounds); not prepared,
        // for the reason `existing_rows` gives.
        let sql = format!(
            "SELECT EXISTS (SELECT 1 \
                 FROM (SELECT length(u) AS n, min(u) AS lo, max(u) AS hi \
                     FROM UNNEST($3::text[]) AS u GROUP BY length(u)) b \
                 CROSS JOIN LATERAL (SELECT 1 FROM {table} t \
                     WHERE t.workspace_id = $1 AND t.source = $2 \
                         AND t.{column} BETWEEN b.lo AND b.hi \
                         AND length(t.{column}) = b.n LIMIT 1) e)"
        );
        sqlx::query_scalar(&sql)
            .persistent(false)
            .bind(at.ws)
            .bind(at.source.as_str())
            .bind(ids)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("write_batch: reading whether rows exist"))
    })
}

/// Upserts rows `idx` of a table's batch with `UNNEST` statements of at most `MAX_ROWS`
/// rows.
fn upsert_rows<'a>(
    tx: &'a mut PgConnection,
    at: BatchScope,
    t: &'a TableRows<'a>,
    idx: &'a [usize],
    counts: &'a mut WriteCounts,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if idx.is_empty() {
            return Ok(());
        }
        let sql = upsert_sql(t.spec);
        for chunk in idx.chunks(MAX_ROWS) {
            let mut arrays: Vec<Arr<'_>> = t
                .spec
                .columns
                .iter()
                .map(|c| Arr::new(c.ty, chunk.len()))
                .collect();
            for row in chunk.iter().filter_map(|&i| t.rows.get(i)) {
                for (arr, v) in arrays.iter_mut().zip(row) {
                    arr.push(v)?;
                }
            }
            let mut q = sqlx::query(&sql)
                .bind(at.ws)
                .bind(at.source.as_str())
                .bind(at.now);
            for arr in arrays {
                q = arr.bind(q);
            }
            let what = "write_batch: upserting records";
            let written = q.fetch_all(&mut *tx).await.map_err(db_err(what))?;
            let inserted = written.iter().map(|r| r.try_get(0).map_err(db_err(what)));
            sql::tally(counts, chunk.len(), inserted)?;
        }
        Ok(())
    })
}

/// Inserts rows `idx` of a table's batch, none of which is stored yet, with one binary
/// `COPY` under a savepoint.
/// `Ok(false)` when a row of the same key appeared meanwhile (the savepoint is rolled back
/// and nothing of the `COPY` remains).
fn copy_new_rows<'a>(
    tx: &'a mut PgConnection,
    at: BatchScope,
    t: &'a TableRows<'a>,
    idx: &'a [usize],
) -> BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        let data = copy_binary(at, t, idx)?;
        let statement = format!(
            "COPY {} (workspace_id, source, synced_at, {}) FROM STDIN (FORMAT binary)",
            t.spec.table,
            t.spec.column_list()
        );
        copy_in(tx, t.spec.table, &statement, data, idx.len()).await
    })
}

/// Inserts deal-contact links, none of which is stored yet, with one binary `COPY` under a
/// savepoint; `Ok(false)` as for [`copy_new_rows`].
fn copy_new_links<'a>(
    tx: &'a mut PgConnection,
    at: BatchScope,
    links: &'a [&'a DealContact],
) -> BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        let mut out = copy_header(links.len() * 64);
        for l in links {
            out.extend_from_slice(&6i16.to_be_bytes());
            copy_field(&mut out, at.ws.as_bytes())?;
            copy_field(&mut out, at.source.as_str().as_bytes())?;
            copy_ts(&mut out, at.now)?;
            copy_field(&mut out, l.deal_source_id.as_bytes())?;
            copy_field(&mut out, l.contact_source_id.as_bytes())?;
            match &l.role {
                Some(r) => copy_field(&mut out, r.as_bytes())?,
                None => copy_null(&mut out),
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        let statement = "COPY deal_contacts (workspace_id, source, synced_at, deal_source_id, \
                         contact_source_id, role) FROM STDIN (FORMAT binary)";
        copy_in(tx, "deal_contacts", statement, out, links.len()).await
    })
}

/// Runs a binary `COPY … FROM STDIN` of `rows` rows under a savepoint; `Ok(false)` (the
/// savepoint rolled back, nothing of the `COPY` left) when a row's key is stored already.
async fn copy_in(
    tx: &mut PgConnection,
    table: &str,
    statement: &str,
    data: Vec<u8>,
    rows: usize,
) -> Result<bool> {
    const WHAT: &str = "write_batch: copying new records";
    sqlx::query("SAVEPOINT pandora_copy")
        .execute(&mut *tx)
        .await
        .map_err(db_err(WHAT))?;
    let copied = match tx.copy_in_raw(statement).await {
        Ok(mut copy) => {
            let sent = copy.send(data).await.map(|_| ());
            match sent {
                Ok(()) => copy.finish().await,
                Err(e) => {
                    // The connection broke or the server refused the data: end the COPY.
                    let _ = copy
                        .abort("pandora_sync: sending the COPY data failed")
                        .await;
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    };
    match copied {
        Ok(n) => {
            if n != count_u64(rows) {
                return Err(Error::config(format!(
                    "internal: COPY into {table} stored {n} of {rows} rows"
                )));
            }
            // The savepoint is released by the commit (one round trip less per table).
            Ok(true)
        }
        Err(e) if is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT pandora_copy")
                .execute(&mut *tx)
                .await
                .map_err(db_err(WHAT))?;
            Ok(false)
        }
        Err(e) => Err(Error::storage(WHAT, e)),
    }
}

/// The header of `COPY`'s binary format, in a buffer with room for `capacity` more bytes.
fn copy_header(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + capacity);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    out
}

/// One field of a binary `COPY` row: its length, then its bytes.
fn copy_field(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = i32::try_from(bytes.len())
        .map_err(|_| Error::config("a value is too large for PostgreSQL (over 2 GiB)"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A NULL field of a binary `COPY` row.
fn copy_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

/// A `timestamptz` field of a binary `COPY` row.
fn copy_ts(out: &mut Vec<u8>, t: DateTime<Utc>) -> Result<()> {
    let micros = t
        .timestamp_micros()
        .checked_sub(PG_EPOCH_MICROS)
        .ok_or_else(|| Error::config(format!("timestamp {t} is out of PostgreSQL's range")))?;
    copy_field(out, &micros.to_be_bytes())
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 0001-01-01 (CE day 1) to 2000-01-01.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// The rows in `COPY`'s binary format: `workspace_id, source, synced_at`, then the table's
/// columns, each value encoded as PostgreSQL's binary send function would (what sqlx binds).
fn copy_binary(at: BatchScope, t: &TableRows<'_>, idx: &[usize]) -> Result<Vec<u8>> {
    let spec = t.spec;
    let fields = i16::try_from(spec.columns.len() + 3)
        .map_err(|_| Error::config("internal: too many columns"))?;
    let mut out = copy_header(idx.len() * 256);
    for row in idx.iter().filter_map(|&i| t.rows.get(i)) {
        out.extend_from_slice(&fields.to_be_bytes());
        copy_field(&mut out, at.ws.as_bytes())?;
        copy_field(&mut out, at.source.as_str().as_bytes())?;
        copy_ts(&mut out, at.now)?;
        for (col, v) in spec.columns.iter().zip(row.iter()) {
            match v {
                Val::Text(Some(s)) => copy_field(&mut out, s.as_bytes())?,
                Val::Int(Some(i)) => copy_field(&mut out, &i.to_be_bytes())?,
                Val::Float(Some(f)) => copy_field(&mut out, &f.to_bits().to_be_bytes())?,
                Val::Bool(Some(b)) => copy_field(&mut out, &[u8::from(*b)])?,
                Val::Ts(Some(t)) => copy_ts(&mut out, *t)?,
                Val::Date(Some(d)) => {
                    let days = d.num_days_from_ce() - PG_EPOCH_DAYS_FROM_CE;
                    copy_field(&mut out, &days.to_be_bytes())?;
                }
                Val::Uuid(Some(u)) => copy_field(&mut out, u.as_bytes())?,
                Val::Json(s) => {
                    // jsonb's binary form: version 1, then the JSON text.
                    let len = i32::try_from(s.len() + 1).map_err(|_| {
                        Error::config(format!(
                            "{}.{} is too large for PostgreSQL",
                            spec.table, col.name
                        ))
                    })?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.push(1);
                    out.extend_from_slice(s.as_bytes());
                }
                Val::Text(None)
                | Val::Int(None)
                | Val::Float(None)
                | Val::Bool(None)
                | Val::Ts(None)
                | Val::Date(None)
                | Val::Uuid(None) => copy_null(&mut out),
            }
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

#[async_trait]
impl SqlBackend for PgStore {
    fn rows_per_statement(_width: usize) -> usize {
        MAX_ROWS
    }

    async fn migrate_schema(conn: &mut PgConnection) -> Result<()> {
        // sqlx takes an advisory lock: concurrent processes apply each migration once.
        MIGRATOR
            .run_direct(conn)
            .await
            .map_err(|e| Error::storage("migrate: applying the PostgreSQL migrations", e))
    }

    /// Writes one table's rows of a batch: the rows not stored yet with one binary `COPY`
    /// (when there are at least [`COPY_MIN_ROWS`] of them), the rest with the `UNNEST`
    /// upsert, `MAX_ROWS` at a time.
    ///
    /// `COPY` appends new rows in bulk (multi-row heap inserts and fewer WAL records), where
    /// `INSERT ... ON CONFLICT` inserts each row speculatively, checks it, then confirms it;
    /// on an initial sync nearly every row is new. Which rows exist is read first, in the same
    /// transaction (skipped when one range probe of the key shows that none of the batch's
    /// ids can be stored); a row another writer inserts in between makes the `COPY` fail on the
    /// unique key, and the batch then falls back to the upsert for every row (the `COPY` runs
    /// under a savepoint). Rows that exist go through the upsert, whose conflict clause keeps
    /// the no-regress rule; a new row has nothing to regress, so both paths store the same.
    async fn upsert_table(
        tx: &mut PgConnection,
        at: BatchScope,
        t: &TableRows<'_>,
    ) -> Result<WriteCounts> {
        let mut counts = WriteCounts::default();
        let all: Vec<usize> = (0..t.rows.len()).collect();
        if all.len() < COPY_MIN_ROWS {
            upsert_rows(tx, at, t, &all, &mut counts).await?;
            return Ok(counts);
        }
        let ids: Vec<&str> = all.iter().map(|&i| t.source_id(i)).collect();
        let existing = if may_hold_any(tx, at, t.spec.table, "source_id", &ids).await? {
            existing_rows(tx, at, t.spec.table, &ids).await?
        } else {
            HashSet::new()
        };
        let (mut old, mut new) = (Vec::new(), Vec::with_capacity(all.len()));
        for (&i, id) in all.iter().zip(&ids) {
            if existing.contains(*id) {
                old.push(i);
            } else {
                new.push(i);
            }
        }
        if new.len() < COPY_MIN_ROWS {
            upsert_rows(tx, at, t, &all, &mut counts).await?;
            return Ok(counts);
        }
        if copy_new_rows(tx, at, t, &new).await? {
            counts.inserted += count_u64(new.len());
            upsert_rows(tx, at, t, &old, &mut counts).await?;
        } else {
            tracing::debug!(
                table = t.spec.table,
                "rows appeared while the batch was written; upserting every row"
            );
            upsert_rows(tx, at, t, &all, &mut counts).await?;
        }
        Ok(counts)
    }

    /// Upserts the deal-contact links of a batch, `MAX_ROWS` at a time.
    async fn upsert_links(
        tx: &mut PgConnection,
        at: BatchScope,
        links: &[&DealContact],
    ) -> Result<WriteCounts> {
        let mut counts = WriteCounts::default();
        // New links (their deals past every stored link's deal: an initial sync's) go to
        // `COPY`, as new records do; the rest, or all when one appeared meanwhile, upsert.
        if links.len() >= COPY_MIN_ROWS {
            let deals: Vec<&str> = links.iter().map(|l| l.deal_source_id.as_str()).collect();
            if !may_hold_any(tx, at, "deal_contacts", "deal_source_id", &deals).await?
                && copy_new_links(tx, at, links).await?
            {
                counts.inserted += count_u64(links.len());
                return Ok(counts);
            }
        }
        const WHAT: &str = "write_batch: upserting links";
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
            .bind(at.ws)
            .bind(at.source.as_str())
            .bind(at.now)
            .bind(deals)
            .bind(contacts)
            .bind(roles)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err(WHAT))?;
            let inserted = written.iter().map(|r| r.try_get(0).map_err(db_err(WHAT)));
            sql::tally(&mut counts, chunk.len(), inserted)?;
        }
        Ok(counts)
    }

    /// `UNNEST` of the `(source_id, deleted_at)` arrays; each row found by its own
    /// unique-index lookup and updated by `ctid`.
    ///
    /// The planner may not choose how to find the rows: during a bulk load (no statistics)
    /// or for a new workspace in a large table it believes the workspace holds one row, and a
    /// plain `UPDATE … FROM UNNEST` or `DELETE … USING UNNEST` then rescans every row of the
    /// workspace once per element (3 s for 200 links of 60,000). A `LATERAL` subquery with
    /// `LIMIT` is never flattened, so it stays one index probe per element. Rows are located
    /// and changed in one statement under the sync's workspace lock; a row another
    /// transaction changed in between fails the `ctid` recheck and is left to that writer.
    fn archive<'a>(at: BatchScope, table: &str, rows: &'a [(&'a str, DateTime<Utc>)]) -> Stmt<'a> {
        Stmt::new(format!(
            "UPDATE {table} SET archived_at = v.deleted_at, synced_at = $3 \
             FROM (SELECT x.tid, d.deleted_at \
                   FROM UNNEST($4::text[], $5::timestamptz[]) AS d(source_id, deleted_at) \
                   CROSS JOIN LATERAL (SELECT t.ctid AS tid FROM {table} t \
                       WHERE t.workspace_id = $1 AND t.source = $2 AND t.source_id = d.source_id \
                         AND t.archived_at IS NULL \
                         AND (t.source_updated_at IS NULL OR t.source_updated_at <= d.deleted_at) \
                       LIMIT 1) x) v \
             WHERE {table}.ctid = v.tid",
        ))
        .arg(at.ws)
        .arg(at.source)
        .arg(at.now)
        .arg(Arg::StrList(rows.iter().map(|r| r.0).collect()))
        .arg(Arg::TsList(rows.iter().map(|r| r.1).collect()))
    }

    /// One primary-key lookup per `(deal, contact)` pair, deleted by `ctid` (see
    /// [`archive`](Self::archive) for why the plan is spelled out).
    fn unlink<'a>(at: BatchScope, links: &'a [(&'a str, &'a str)]) -> Stmt<'a> {
        Stmt::new(
            "DELETE FROM deal_contacts WHERE ctid = ANY(ARRAY( \
                SELECT x.tid FROM UNNEST($3::text[], $4::text[]) AS p(d, c) \
                CROSS JOIN LATERAL (SELECT i.ctid AS tid FROM deal_contacts i \
                    WHERE i.workspace_id = $1 AND i.source = $2 \
                      AND i.deal_source_id = p.d AND i.contact_source_id = p.c LIMIT 1) x))",
        )
        .arg(at.ws)
        .arg(at.source)
        .arg(Arg::StrList(links.iter().map(|l| l.0).collect()))
        .arg(Arg::StrList(links.iter().map(|l| l.1).collect()))
    }

    fn set_deal_fields(ws: Uuid, fields: &[(Uuid, Option<i64>, Option<i64>)]) -> Stmt<'static> {
        Stmt::new(
            "UPDATE deals AS d SET days_open = v.days_open, days_to_close = v.days_to_close \
             FROM UNNEST($2::uuid[], $3::int8[], $4::int8[]) AS v(id, days_open, days_to_close) \
             WHERE d.workspace_id = $1 AND d.id = v.id",
        )
        .arg(ws)
        .arg(Arg::UuidList(fields.iter().map(|f| f.0).collect()))
        .arg(Arg::IntList(fields.iter().map(|f| f.1).collect()))
        .arg(Arg::IntList(fields.iter().map(|f| f.2).collect()))
    }

    async fn before_enrichment(&self) -> Result<()> {
        self.refresh_stale_statistics().await
    }

    fn enrichment() -> &'static Enrichment {
        &ENRICHMENT
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
        let ended: std::result::Result<Vec<Uuid>, sqlx::Error> =
            sqlx::query_scalar(&format!(
                "WITH ended AS (UPDATE sync_log SET {} \
                     WHERE workspace_id = $1 AND status = 'running' RETURNING id, connector_type), \
                 conns AS (UPDATE connections SET status = 'error', error_message = $2, updated_at = $3 \
                     WHERE workspace_id = $1 AND status = 'syncing' \
                       AND connector_name IN (SELECT connector_type FROM ended)) \
                 SELECT id FROM ended",
                sql::fail_set(&PG, "$2", "$3")
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
            sqlx::query(&format!("ANALYZE {}", tables.join(", ")))
                .execute(&self.pool)
                .await
                .map_err(db_err("refreshing planner statistics"))?;
        }
        Ok(())
    }
}

/// The enrichment statements in PostgreSQL's dialect (`jsonb`).
static ENRICHMENT: LazyLock<Enrichment> = LazyLock::new(|| Enrichment {
    link: format!(
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
             {best}, \
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
                    OR c.linked_deal_id IS DISTINCT FROM t.deal_id)",
        best = sql::best_account_ctes(" COLLATE \"C\""),
    ),
    mark_internal: "WITH doms AS (SELECT DISTINCT d FROM UNNEST($2::text[]) AS u(d)), \
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
                    SELECT id, bool_and(COALESCE(internal, false)) AS all_internal \
                    FROM flagged GROUP BY id) \
                 UPDATE conversations AS c SET is_internal = agg.all_internal \
                 FROM agg \
                 WHERE c.workspace_id = $1 AND c.id = agg.id \
                   AND c.is_internal IS DISTINCT FROM agg.all_internal",
    count_internal: "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE is_internal) AS internal \
             FROM conversations WHERE workspace_id = $1 AND archived_at IS NULL \
               AND jsonb_typeof(participants) = 'array' \
               AND jsonb_array_length(\
                   CASE WHEN jsonb_typeof(participants) = 'array' \
                        THEN participants ELSE '[]'::jsonb END) > 0",
    flagged_domains: format!(
        "WITH {PG_PARTICIPANTS_CTE} \
             SELECT DISTINCT domain FROM emails WHERE internal ORDER BY domain"
    ),
});

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

    /// `false` only when no stored id of the workspace and source lies between the ids'
    /// smallest and largest (so every id is new); ids around stored ones say `true`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::unwrap_used)]
    async fn the_range_probe_is_false_only_for_new_ids() {
        use sqlx::Connection;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TEMPORARY TABLE probe_t (workspace_id uuid, source text, source_id text, \
             UNIQUE (workspace_id, source, source_id))",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let ws = Uuid::from_u128(1);
        for id in ["b", "d"] {
            sqlx::query("INSERT INTO probe_t VALUES ($1, 'hubspot', $2)")
                .bind(ws)
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let at = |ws| BatchScope {
            ws,
            source: crate::model::ConnectorKind::Hubspot,
            now: chrono::Utc::now(),
        };
        // Numbers in text: 1 to 999 stored (besides "b" and "d").
        for n in 1..1000 {
            sqlx::query("INSERT INTO probe_t VALUES ($1, 'hubspot', $2)")
                .bind(ws)
                .bind(n.to_string())
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let (past, longer, spanning) = (
            (1000..1100).map(|n| n.to_string()).collect::<Vec<_>>(),
            (10_000..10_100).map(|n| n.to_string()).collect::<Vec<_>>(),
            (990..1010).map(|n| n.to_string()).collect::<Vec<_>>(),
        );
        for (ids, expected) in [
            (vec!["e", "f"], false),
            (vec!["a"], false),
            (vec!["c"], false),
            (vec!["a", "c"], true),
            (vec!["c", "e"], true),
            (vec!["d"], true),
            // Past every stored number, though "101" to "109" lie in the text range.
            (strs(&past), false),
            (strs(&longer), false),
            // Some are stored (990 to 999).
            (strs(&spanning), true),
            (vec!["1000", "5"], true),
            (vec!["1000", "ab"], false),
        ] {
            let held = may_hold_any(&mut conn, at(ws), "probe_t", "source_id", &ids)
                .await
                .unwrap();
            assert_eq!(held, expected, "{ids:?}");
        }
        let other = may_hold_any(
            &mut conn,
            at(Uuid::from_u128(2)),
            "probe_t",
            "source_id",
            &["b"],
        );
        assert!(
            !other.await.unwrap(),
            "another workspace's ids are not stored"
        );
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
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
