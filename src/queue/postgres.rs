//! [`JobQueue`] on Postgres: `FOR UPDATE SKIP LOCKED` claims, `NOTIFY` from the enqueue
//! transaction, and a `LISTEN`ing [`PgJobNotifier`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgListener, PgRow};
use uuid::Uuid;

use super::{
    EndedJob, Heartbeat, Job, JobNotifier, JobQueue, JobStatus, MAX_JOBS_PAGE, NewJob, job_sync_id,
};
use crate::connector::Progress;
use crate::error::{Error, Result};
use crate::store::PgStore;

/// The channel enqueues `NOTIFY` and workers `LISTEN` on.
pub const JOBS_CHANNEL: &str = "pandora_sync_jobs";

const COLUMNS: &str = "id, workspace_id, job_type, status, priority, payload, progress, result, error, \
     attempts, max_attempts, last_error, unique_key, locked_by, locked_until, cancel_requested_at, \
     created_at, started_at, completed_at, run_after, timeout_ms";

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::storage(what, e)
}

fn count(v: i32) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The sync run of an ending job row (`status, workspace_id, job_type, payload`).
fn ended_job(r: &PgRow) -> Option<EndedJob> {
    let status: String = r.try_get("status").ok()?;
    let job_type: String = r.try_get("job_type").ok()?;
    let payload: serde_json::Value = r.try_get("payload").ok()?;
    Some(EndedJob {
        workspace_id: r.try_get("workspace_id").ok()?,
        sync_id: job_sync_id(&job_type, &payload)?,
        finished: JobStatus::parse(&status).is_ok_and(JobStatus::is_finished),
    })
}

impl PgStore {
    /// Ends the `sync_log` rows of jobs that just ended (see the module docs of
    /// [`queue`](super)). A failure is logged: the job's own update already committed, and
    /// the staleness rule fails the row later.
    async fn end_job_syncs(&self, rows: &[PgRow], reason: &str) {
        for ended in rows.iter().filter_map(ended_job) {
            if let Err(e) = self
                .fail_active_sync(ended.workspace_id, ended.sync_id, reason, ended.finished)
                .await
            {
                tracing::warn!(error = %e, sync_id = %ended.sync_id, "ending a job's sync run failed");
            }
        }
    }
}

fn row_to_job(r: &PgRow) -> Result<Job> {
    let status: String = r.try_get("status").map_err(db("reading a job"))?;
    let progress: Option<serde_json::Value> = r.try_get("progress").map_err(db("reading a job"))?;
    Ok(Job {
        id: r.try_get("id").map_err(db("reading a job"))?,
        workspace_id: r.try_get("workspace_id").map_err(db("reading a job"))?,
        job_type: r.try_get("job_type").map_err(db("reading a job"))?,
        status: JobStatus::parse(&status)?,
        priority: r.try_get("priority").map_err(db("reading a job"))?,
        payload: r.try_get("payload").map_err(db("reading a job"))?,
        progress: progress
            .map(serde_json::from_value::<Progress>)
            .transpose()
            .map_err(|e| Error::storage("invalid progress in the jobs table", e))?,
        result: r.try_get("result").map_err(db("reading a job"))?,
        error: r.try_get("error").map_err(db("reading a job"))?,
        attempts: count(r.try_get("attempts").map_err(db("reading a job"))?),
        max_attempts: count(r.try_get("max_attempts").map_err(db("reading a job"))?),
        last_error: r.try_get("last_error").map_err(db("reading a job"))?,
        unique_key: r.try_get("unique_key").map_err(db("reading a job"))?,
        locked_by: r.try_get("locked_by").map_err(db("reading a job"))?,
        locked_until: r.try_get("locked_until").map_err(db("reading a job"))?,
        cancel_requested_at: r
            .try_get("cancel_requested_at")
            .map_err(db("reading a job"))?,
        created_at: r.try_get("created_at").map_err(db("reading a job"))?,
        started_at: r.try_get("started_at").map_err(db("reading a job"))?,
        completed_at: r.try_get("completed_at").map_err(db("reading a job"))?,
        run_after: r.try_get("run_after").map_err(db("reading a job"))?,
        timeout_ms: u64::try_from(
            r.try_get::<i64, _>("timeout_ms")
                .map_err(db("reading a job"))?,
        )
        .unwrap_or(0),
    })
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl JobQueue for PgStore {
    fn now(&self) -> DateTime<Utc> {
        PgStore::now(self)
    }

    async fn enqueue(&self, job: NewJob) -> Result<Job> {
        let now = JobQueue::now(self);
        let mut tx = self.pool().begin().await.map_err(db("enqueueing a job"))?;
        let sql = format!(
            "INSERT INTO jobs (id, workspace_id, job_type, status, priority, payload, attempts, \
             max_attempts, unique_key, created_at, run_after, timeout_ms) \
             VALUES ($1, $2, $3, 'pending', $4, $5, 0, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(job.workspace_id)
            .bind(&job.job_type)
            .bind(job.priority)
            .bind(&job.payload)
            .bind(job.max_attempts_i32())
            .bind(job.unique_key.as_deref())
            .bind(now)
            .bind(job.run_after.unwrap_or(now))
            .bind(job.timeout_ms())
            .fetch_one(&mut *tx)
            .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if crate::store::is_unique_violation(&e) => {
                drop(tx);
                let holder: Option<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE workspace_id = $1 AND unique_key = $2 \
                     AND status IN ('pending', 'running') LIMIT 1",
                )
                .bind(job.workspace_id)
                .bind(job.unique_key.as_deref())
                .fetch_optional(self.pool())
                .await
                .map_err(db("looking up the conflicting job"))?;
                return Err(Error::Conflict {
                    message: format!(
                        "a {} job with key {:?} is already pending or running",
                        job.job_type,
                        job.unique_key.as_deref().unwrap_or("")
                    ),
                    running_id: holder,
                });
            }
            Err(e) => return Err(Error::storage("enqueueing a job", e)),
        };
        // Sent at commit, so a woken worker finds the row.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOBS_CHANNEL)
            .bind(&job.job_type)
            .execute(&mut *tx)
            .await
            .map_err(db("notifying workers"))?;
        tx.commit().await.map_err(db("enqueueing a job"))?;
        row_to_job(&row)
    }

    async fn claim(
        &self,
        worker_id: &str,
        job_types: &[String],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Job>> {
        if job_types.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let now = JobQueue::now(self);
        // Lock due candidates, skipping rows other workers hold; keep one per workspace and
        // type (the unique running index allows one); count the attempt at claim.
        let sql = format!(
            "WITH candidates AS ( \
               SELECT id, workspace_id, job_type, priority, run_after, created_at FROM jobs j \
               WHERE status = 'pending' AND run_after <= $3 AND job_type = ANY($4) \
                 AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.status = 'running' \
                   AND r.workspace_id = j.workspace_id AND r.job_type = j.job_type) \
               ORDER BY priority DESC, run_after, created_at \
               LIMIT $5 FOR UPDATE SKIP LOCKED \
             ), picked AS ( \
               SELECT id FROM ( \
                 SELECT id, ROW_NUMBER() OVER (PARTITION BY workspace_id, job_type \
                   ORDER BY priority DESC, run_after, created_at) AS rn FROM candidates) c \
               WHERE rn = 1 \
             ) \
             UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
               locked_until = $2, heartbeat_at = $3, started_at = $3, cancel_requested_at = NULL \
             FROM picked WHERE jobs.id = picked.id \
             RETURNING {}",
            COLUMNS
                .split(", ")
                .map(|c| format!("jobs.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker_id)
            .bind(lease_end(now, lease))
            .bind(now)
            .bind(job_types)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await;
        let rows = match claimed {
            Ok(rows) => rows,
            // Another worker claimed a job of the same workspace and type at the same
            // moment: the unique running index refused ours. Nothing was changed; try later.
            Err(e) if crate::store::is_unique_violation(&e) => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage("claiming jobs", e)),
        };
        let mut jobs = rows.iter().map(row_to_job).collect::<Result<Vec<_>>>()?;
        jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_after.cmp(&b.run_after))
                .then(a.created_at.cmp(&b.created_at))
        });
        Ok(jobs)
    }

    async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration) -> Result<Heartbeat> {
        let now = JobQueue::now(self);
        let row: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "UPDATE jobs SET locked_until = $1, heartbeat_at = $2 \
             WHERE id = $3 AND locked_by = $4 AND status = 'running' RETURNING cancel_requested_at",
        )
        .bind(lease_end(now, lease))
        .bind(now)
        .bind(job_id)
        .bind(worker_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db("heartbeating a job"))?;
        Ok(match row {
            None => Heartbeat::Lost,
            Some(Some(_)) => Heartbeat::CancelRequested,
            Some(None) => Heartbeat::Extended,
        })
    }

    async fn complete(
        &self,
        job_id: Uuid,
        worker_id: &str,
        result: serde_json::Value,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'completed', result = $1, completed_at = $2, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = $3 AND locked_by = $4 AND status = 'running'",
        )
        .bind(result)
        .bind(JobQueue::now(self))
        .bind(job_id)
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("completing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_many(
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
        .map_err(db("completing jobs"))
    }

    async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Option<JobStatus>> {
        let row = sqlx::query(
            "UPDATE jobs SET \
               status = CASE WHEN $1::timestamptz IS NOT NULL AND attempts < max_attempts THEN 'pending' ELSE 'failed' END, \
               error = CASE WHEN $1::timestamptz IS NOT NULL AND attempts < max_attempts THEN error ELSE $2 END, \
               completed_at = CASE WHEN $1::timestamptz IS NOT NULL AND attempts < max_attempts THEN NULL ELSE $3 END, \
               run_after = COALESCE($1::timestamptz, run_after), last_error = $2, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = $4 AND locked_by = $5 AND status = 'running' \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(retry_at)
        .bind(crate::redact_secrets(error))
        .bind(JobQueue::now(self))
        .bind(job_id)
        .bind(worker_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db("failing a job"))?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status").map_err(db("failing a job"))?;
        let status = JobStatus::parse(&status)?;
        if status == JobStatus::Failed {
            self.end_job_syncs(&[row], &format!("job failed: {error}"))
                .await;
        }
        Ok(Some(status))
    }

    async fn snooze(
        &self,
        job_id: Uuid,
        worker_id: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = GREATEST(attempts - 1, 0), run_after = $1, \
               last_error = $2, locked_by = NULL, locked_until = NULL \
             WHERE id = $3 AND locked_by = $4 AND status = 'running'",
        )
        .bind(until)
        .bind(crate::redact_secrets(reason))
        .bind(job_id)
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("snoozing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, job_id: Uuid, worker_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = GREATEST(attempts - 1, 0), run_after = $1, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = $2 AND locked_by = $3 AND status = 'running'",
        )
        .bind(JobQueue::now(self))
        .bind(job_id)
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("releasing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_cancelled(&self, job_id: Uuid, worker_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_at = $1, error = 'cancelled', \
               locked_by = NULL, locked_until = NULL \
             WHERE id = $2 AND locked_by = $3 AND status = 'running' \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(JobQueue::now(self))
        .bind(job_id)
        .bind(worker_id)
        .fetch_all(self.pool())
        .await
        .map_err(db("cancelling a job"))?;
        self.end_job_syncs(&done, "job cancelled").await;
        Ok(done.len() == 1)
    }

    async fn cancel(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<JobStatus>> {
        let row = sqlx::query(
            "UPDATE jobs SET \
               cancel_requested_at = CASE WHEN status = 'running' THEN COALESCE(cancel_requested_at, $1) ELSE cancel_requested_at END, \
               completed_at = CASE WHEN status = 'pending' THEN $1 ELSE completed_at END, \
               error = CASE WHEN status = 'pending' THEN 'cancelled' ELSE error END, \
               status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END \
             WHERE workspace_id = $2 AND id = $3 RETURNING status, workspace_id, job_type, payload",
        )
        .bind(JobQueue::now(self))
        .bind(workspace_id)
        .bind(job_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db("cancelling a job"))?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status").map_err(db("cancelling a job"))?;
        let status = JobStatus::parse(&status)?;
        if status == JobStatus::Cancelled {
            self.end_job_syncs(&[row], "job cancelled before it ran")
                .await;
        }
        Ok(Some(status))
    }

    async fn cancel_jobs_for_sync(&self, workspace_id: Uuid, sync_id: Uuid) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET \
               cancel_requested_at = CASE WHEN status = 'running' THEN COALESCE(cancel_requested_at, $1) ELSE cancel_requested_at END, \
               completed_at = CASE WHEN status = 'pending' THEN $1 ELSE completed_at END, \
               error = CASE WHEN status = 'pending' THEN 'cancelled: its sync run was failed as stale' ELSE error END, \
               status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END \
             WHERE workspace_id = $2 AND status IN ('pending', 'running') \
               AND payload->>'sync_id' = $3",
        )
        .bind(JobQueue::now(self))
        .bind(workspace_id)
        .bind(sync_id.to_string())
        .execute(self.pool())
        .await
        .map_err(db("cancelling a stale sync's jobs"))?;
        Ok(done.rows_affected())
    }

    async fn update_progress(
        &self,
        job_id: Uuid,
        worker_id: &str,
        progress: &Progress,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET progress = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'",
        )
        .bind(serde_json::to_value(progress)?)
        .bind(job_id)
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("storing job progress"))?;
        Ok(())
    }

    async fn get_job(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE workspace_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(job_id)
            .fetch_optional(self.pool())
            .await
            .map_err(db("reading a job"))?;
        row.as_ref().map(row_to_job).transpose()
    }

    async fn list_jobs(&self, workspace_id: Uuid, limit: u32, offset: u32) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE workspace_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(i64::from(limit.clamp(1, MAX_JOBS_PAGE)))
            .bind(i64::from(offset))
            .fetch_all(self.pool())
            .await
            .map_err(db("listing jobs"))?;
        rows.iter().map(row_to_job).collect()
    }

    async fn rescue_expired(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET \
               status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
               error = CASE WHEN attempts >= max_attempts THEN 'lease expired: the worker stopped heartbeating' ELSE error END, \
               completed_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
               last_error = 'lease expired: the worker stopped heartbeating', \
               run_after = $1, locked_by = NULL, locked_until = NULL \
             WHERE status = 'running' AND locked_until < $1 \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(JobQueue::now(self))
        .fetch_all(self.pool())
        .await
        .map_err(db("rescuing expired jobs"))?;
        self.end_job_syncs(&done, "interrupted: its worker stopped heartbeating")
            .await;
        Ok(u64::try_from(done.len()).unwrap_or(u64::MAX))
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1",
        )
        .bind(before)
        .execute(self.pool())
        .await
        .map_err(db("pruning jobs"))?;
        Ok(done.rows_affected())
    }
}

/// Wakes workers on `NOTIFY pandora_sync_jobs` (sent by every enqueue). Behind a
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
            .map_err(db("listening for jobs"))?;
        listener
            .listen(JOBS_CHANNEL)
            .await
            .map_err(db("listening for jobs"))?;
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
