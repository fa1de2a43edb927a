//! [`JobQueue`](super::JobQueue) on SQLite: single-writer `UPDATE … RETURNING` claims,
//! polled. Everything but the claim statement and the argument encoding is shared
//! ([`sql`](super::sql)).

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};

use super::EndedJob;
use super::sql::{self, Arg, QueueDb, claim_due, claim_order, claim_update, job_columns};
use crate::error::Result;
use crate::store::{SqliteStore, sqlite_ts};

/// Binds the arguments the way the SQLite schema stores them: UUIDs, timestamps and JSON
/// as text.
fn bind<'a>(sql: &'static str, args: Vec<Arg<'a>>) -> Query<'a, Sqlite, SqliteArguments<'a>> {
    args.into_iter().fold(sqlx::query(sql), |q, arg| match arg {
        Arg::Uuid(id) => q.bind(id.hyphenated()),
        Arg::Ts(t) => q.bind(t.map(sqlite_ts)),
        Arg::Text(s) => q.bind(s),
        Arg::Int(n) => q.bind(n),
        Arg::Json(v) => q.bind(v.to_string()),
        Arg::Texts(list) => q.bind(serde_json::Value::from(list.to_vec()).to_string()),
    })
}

#[async_trait]
impl QueueDb for SqliteStore {
    type Row = SqliteRow;

    // One statement under SQLite's single writer (no row locks to skip): pick due jobs, at
    // most one per workspace and type, mark them running, count the attempt. The job types
    // come as a JSON array (SQLite has no arrays).
    const CLAIM: &'static str = concat!(
        claim_update!(),
        "WHERE id IN ( \
           SELECT id FROM ( \
             SELECT id, priority, run_after, created_at, ROW_NUMBER() OVER ( \
               PARTITION BY workspace_id, job_type ORDER BY ",
        claim_order!(),
        ") AS rn FROM jobs j WHERE ",
        claim_due!(),
        "AND j.job_type IN (SELECT value FROM json_each($4))) \
           WHERE rn = 1 ORDER BY ",
        claim_order!(),
        " LIMIT $5) RETURNING ",
        job_columns!()
    );

    async fn rows(&self, sql: &'static str, args: Vec<Arg<'_>>) -> sqlx::Result<Vec<SqliteRow>> {
        bind(sql, args).fetch_all(self.pool()).await
    }

    async fn end_sync(&self, job: &EndedJob, reason: &str) -> Result<bool> {
        self.fail_active_sync(job.workspace_id, job.sync_id, reason, job.finished)
            .await
    }
}

sql::impl_job_queue!(SqliteStore);
