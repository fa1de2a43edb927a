//! [`JobQueue`](super::JobQueue) on Postgres: `FOR UPDATE SKIP LOCKED` claims, `NOTIFY`
//! from the enqueue transaction, `UNNEST` batch completions, and a `LISTEN`ing
//! [`PgJobNotifier`]. Everything else is shared ([`sql`](super::sql)).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgListener, PgRow};
use sqlx::query::Query;
use uuid::Uuid;

use super::sql::{self, Arg, QueueDb, claim_due, claim_order, claim_update, job_columns};
use super::{EndedJob, JobNotifier, JobQueue};
use crate::error::Result;
use crate::store::{PgStore, db_err};

/// The channel enqueues `NOTIFY` and workers `LISTEN` on.
pub const JOBS_CHANNEL: &str = "pandora_sync_jobs";

/// Binds the arguments as their native Postgres types.
fn bind<'a>(sql: &'static str, args: Vec<Arg<'a>>) -> Query<'a, Postgres, PgArguments> {
    args.into_iter().fold(sqlx::query(sql), |q, arg| match arg {
        Arg::Uuid(id) => q.bind(id),
        Arg::Ts(t) => q.bind(t),
        Arg::Text(s) => q.bind(s),
        Arg::Int(n) => q.bind(n),
        Arg::Json(v) => q.bind(v),
        Arg::Texts(list) => q.bind(list),
    })
}

#[async_trait]
impl QueueDb for PgStore {
    type Row = PgRow;

    // Lock due candidates, skipping rows other workers hold (row locks cannot be taken in
    // the query that numbers the rows, hence the two steps); keep one per workspace and type
    // (the unique running index allows one); count the attempt at claim.
    const CLAIM: &'static str = concat!(
        "WITH candidates AS ( \
           SELECT id, workspace_id, job_type, priority, run_after, created_at FROM jobs j WHERE ",
        claim_due!(),
        "AND j.job_type = ANY($4) ORDER BY ",
        claim_order!(),
        " LIMIT $5 FOR UPDATE SKIP LOCKED \
         ), picked AS ( \
           SELECT id FROM ( \
             SELECT id, ROW_NUMBER() OVER (PARTITION BY workspace_id, job_type ORDER BY ",
        claim_order!(),
        ") AS rn FROM candidates) c \
           WHERE rn = 1 \
         ) ",
        claim_update!(),
        "WHERE id IN (SELECT id FROM picked) RETURNING ",
        job_columns!()
    );

    async fn rows(&self, sql: &'static str, args: Vec<Arg<'_>>) -> sqlx::Result<Vec<PgRow>> {
        bind(sql, args).fetch_all(self.pool()).await
    }

    async fn insert(&self, args: Vec<Arg<'_>>, job_type: &str) -> sqlx::Result<Vec<PgRow>> {
        let mut tx = crate::store::begin_detached(self.pool(), "BEGIN").await?;
        let rows = bind(sql::INSERT, args).fetch_all(&mut *tx).await?;
        // Sent at commit, so a woken worker finds the row.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOBS_CHANNEL)
            .bind(job_type)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn end_sync(&self, job: &EndedJob, reason: &str) -> Result<bool> {
        self.fail_active_sync(job.workspace_id, job.sync_id, reason, job.finished)
            .await
    }

    async fn complete_batch(
        &self,
        worker_id: &str,
        jobs: Vec<(Uuid, serde_json::Value)>,
    ) -> Result<Vec<Uuid>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, results): (Vec<Uuid>, Vec<serde_json::Value>) = jobs.into_iter().unzip();
        sqlx::query_scalar(
            "UPDATE jobs SET status = 'completed', result = u.result, completed_at = $3, \
               locked_by = NULL, locked_until = NULL \
             FROM UNNEST($1::uuid[], $2::jsonb[]) AS u(id, result) \
             WHERE jobs.id = u.id AND jobs.locked_by = $4 AND jobs.status = 'running' \
             RETURNING jobs.id",
        )
        .bind(&ids)
        .bind(&results)
        .bind(JobQueue::now(self))
        .bind(worker_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("completing jobs"))
    }

    async fn listener(&self) -> Result<Option<Arc<dyn JobNotifier>>> {
        Ok(Some(Arc::new(PgJobNotifier::connect(self).await?)))
    }
}

sql::impl_job_queue!(PgStore);

/// Wakes workers on `NOTIFY pandora_sync_jobs` (sent by every enqueue). A
/// [`Worker`](super::Worker) built with [`listen`](super::Worker::listen) gets one from its
/// store ([`JobQueue::notifier`]); build one yourself only to share or test it. Behind a
/// transaction-mode pooler (PgBouncer, Supavisor) `LISTEN` does not work: run workers
/// without a notifier there, and they poll.
pub struct PgJobNotifier {
    listener: tokio::sync::Mutex<PgListener>,
}

impl std::fmt::Debug for PgJobNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJobNotifier")
            .field("channel", &JOBS_CHANNEL)
            .finish()
    }
}

impl PgJobNotifier {
    /// Listens on the store's database (a dedicated connection).
    pub async fn connect(store: &PgStore) -> Result<Self> {
        let mut listener = PgListener::connect_with(store.pool())
            .await
            .map_err(db_err("listening for jobs"))?;
        listener
            .listen(JOBS_CHANNEL)
            .await
            .map_err(db_err("listening for jobs"))?;
        Ok(PgJobNotifier {
            listener: tokio::sync::Mutex::new(listener),
        })
    }
}

#[async_trait]
impl JobNotifier for PgJobNotifier {
    async fn wait(&self, max: Duration) {
        let mut listener = self.listener.lock().await;
        match tokio::time::timeout(max, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "job notification listener failed; polling until it reconnects");
                drop(listener);
                tokio::time::sleep(max).await;
            }
        }
    }
}
