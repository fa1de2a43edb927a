//! [`JobQueue`] on SQLite: single-writer `UPDATE … RETURNING` claims, polled.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{EndedJob, Heartbeat, Job, JobQueue, JobStatus, MAX_JOBS_PAGE, NewJob, job_sync_id};
use crate::connector::Progress;
use crate::error::{Error, Result};
use crate::store::SqliteStore;

const COLUMNS: &str = "id, workspace_id, job_type, status, priority, payload, progress, result, error, \
     attempts, max_attempts, last_error, unique_key, locked_by, locked_until, cancel_requested_at, \
     created_at, started_at, completed_at, run_after, timeout_ms";

fn ts(t: DateTime<Utc>) -> String {
    crate::store::sqlite_ts(t)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::Storage {
            message: format!("invalid timestamp {s:?} in the jobs table: {e}"),
            source: None,
        })
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

fn json(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| Error::storage("invalid JSON in the jobs table", e))
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::storage("invalid UUID in the jobs table", e))
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::storage(what, e)
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn row_to_job(r: &SqliteRow) -> Result<Job> {
    let get_s = |c: &str| r.try_get::<String, _>(c).map_err(db("reading a job"));
    let get_os = |c: &str| {
        r.try_get::<Option<String>, _>(c)
            .map_err(db("reading a job"))
    };
    let get_i = |c: &str| r.try_get::<i64, _>(c).map_err(db("reading a job"));
    Ok(Job {
        id: uuid(&get_s("id")?)?,
        workspace_id: uuid(&get_s("workspace_id")?)?,
        job_type: get_s("job_type")?,
        status: JobStatus::parse(&get_s("status")?)?,
        priority: i32::try_from(get_i("priority")?).unwrap_or(0),
        payload: json(Some(get_s("payload")?))?.unwrap_or_default(),
        progress: json(get_os("progress")?)?
            .map(serde_json::from_value::<Progress>)
            .transpose()
            .map_err(|e| Error::storage("invalid progress in the jobs table", e))?,
        result: json(get_os("result")?)?,
        error: get_os("error")?,
        attempts: count(get_i("attempts")?),
        max_attempts: count(get_i("max_attempts")?),
        last_error: get_os("last_error")?,
        unique_key: get_os("unique_key")?,
        locked_by: get_os("locked_by")?,
        locked_until: opt_ts(get_os("locked_until")?)?,
        cancel_requested_at: opt_ts(get_os("cancel_requested_at")?)?,
        created_at: parse_ts(&get_s("created_at")?)?,
        started_at: opt_ts(get_os("started_at")?)?,
        completed_at: opt_ts(get_os("completed_at")?)?,
        run_after: parse_ts(&get_s("run_after")?)?,
        timeout_ms: u64::try_from(get_i("timeout_ms")?).unwrap_or(0),
    })
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The sync run of an ending job row (`status, workspace_id, job_type, payload`).
fn ended_job(r: &SqliteRow) -> Option<EndedJob> {
    let status: String = r.try_get("status").ok()?;
    let job_type: String = r.try_get("job_type").ok()?;
    let payload: String = r.try_get("payload").ok()?;
    let payload: serde_json::Value = serde_json::from_str(&payload).ok()?;
    Some(EndedJob {
        workspace_id: uuid(&r.try_get::<String, _>("workspace_id").ok()?).ok()?,
        sync_id: job_sync_id(&job_type, &payload)?,
        finished: JobStatus::parse(&status).is_ok_and(JobStatus::is_finished),
    })
}

impl SqliteStore {
    /// Ends the `sync_log` rows of jobs that just ended (see the module docs of
    /// [`queue`](super)). A failure is logged: the job's own update already committed, and
    /// the staleness rule fails the row later.
    async fn end_job_syncs(&self, rows: &[SqliteRow], reason: &str) {
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

#[async_trait]
impl JobQueue for SqliteStore {
    fn now(&self) -> DateTime<Utc> {
        SqliteStore::now(self)
    }

    async fn enqueue(&self, job: NewJob) -> Result<Job> {
        let now = JobQueue::now(self);
        let id = Uuid::new_v4();
        let sql = format!(
            "INSERT INTO jobs (id, workspace_id, job_type, status, priority, payload, attempts, \
             max_attempts, unique_key, created_at, run_after, timeout_ms) \
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10) RETURNING {COLUMNS}"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(job.workspace_id.to_string())
            .bind(&job.job_type)
            .bind(i64::from(job.priority))
            .bind(job.payload.to_string())
            .bind(i64::from(job.max_attempts_i32()))
            .bind(job.unique_key.as_deref())
            .bind(ts(now))
            .bind(ts(job.run_after.unwrap_or(now)))
            .bind(job.timeout_ms())
            .fetch_one(self.pool())
            .await;
        match inserted {
            Ok(row) => row_to_job(&row),
            Err(e) if crate::store::is_unique_violation(&e) => {
                let holder: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE workspace_id = ?1 AND unique_key = ?2 \
                     AND status IN ('pending', 'running') LIMIT 1",
                )
                .bind(job.workspace_id.to_string())
                .bind(job.unique_key.as_deref())
                .fetch_optional(self.pool())
                .await
                .map_err(db("looking up the conflicting job"))?;
                Err(Error::Conflict {
                    message: format!(
                        "a {} job with key {:?} is already pending or running",
                        job.job_type,
                        job.unique_key.as_deref().unwrap_or("")
                    ),
                    running_id: holder.as_deref().map(uuid).transpose()?,
                })
            }
            Err(e) => Err(Error::storage("enqueueing a job", e)),
        }
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
        // One statement under SQLite's single writer: pick due jobs (at most one per
        // workspace and type, and none whose workspace already runs that type, matching the
        // unique running index), mark them running, count the attempt.
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = ?1, \
               locked_until = ?2, heartbeat_at = ?3, started_at = ?3, cancel_requested_at = NULL \
             WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT id, priority, run_after, created_at, ROW_NUMBER() OVER ( \
                   PARTITION BY workspace_id, job_type \
                   ORDER BY priority DESC, run_after, created_at) AS rn \
                 FROM jobs j \
                 WHERE status = 'pending' AND run_after <= ?3 \
                   AND job_type IN (SELECT value FROM json_each(?4)) \
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.status = 'running' \
                     AND r.workspace_id = j.workspace_id AND r.job_type = j.job_type)) \
               WHERE rn = 1 \
               ORDER BY priority DESC, run_after, created_at LIMIT ?5) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker_id)
            .bind(ts(lease_end(now, lease)))
            .bind(ts(now))
            .bind(serde_json::to_string(job_types)?)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(db("claiming jobs"))?;
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
        let row: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE jobs SET locked_until = ?1, heartbeat_at = ?2 \
             WHERE id = ?3 AND locked_by = ?4 AND status = 'running' RETURNING cancel_requested_at",
        )
        .bind(ts(lease_end(now, lease)))
        .bind(ts(now))
        .bind(job_id.to_string())
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
            "UPDATE jobs SET status = 'completed', result = ?1, completed_at = ?2, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = ?3 AND locked_by = ?4 AND status = 'running'",
        )
        .bind(result.to_string())
        .bind(ts(JobQueue::now(self)))
        .bind(job_id.to_string())
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("completing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Option<JobStatus>> {
        let error = crate::redact_secrets(error);
        let row = sqlx::query(
            "UPDATE jobs SET \
               status = CASE WHEN ?1 IS NOT NULL AND attempts < max_attempts THEN 'pending' ELSE 'failed' END, \
               error = CASE WHEN ?1 IS NOT NULL AND attempts < max_attempts THEN error ELSE ?2 END, \
               completed_at = CASE WHEN ?1 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE ?3 END, \
               run_after = COALESCE(?1, run_after), last_error = ?2, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = ?4 AND locked_by = ?5 AND status = 'running' \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(retry_at.map(ts))
        .bind(&error)
        .bind(ts(JobQueue::now(self)))
        .bind(job_id.to_string())
        .bind(worker_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db("failing a job"))?;
        let Some(row) = row else { return Ok(None) };
        let status = JobStatus::parse(
            &row.try_get::<String, _>("status")
                .map_err(db("failing a job"))?,
        )?;
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
            "UPDATE jobs SET status = 'pending', attempts = MAX(attempts - 1, 0), run_after = ?1, \
               last_error = ?2, locked_by = NULL, locked_until = NULL \
             WHERE id = ?3 AND locked_by = ?4 AND status = 'running'",
        )
        .bind(ts(until))
        .bind(crate::redact_secrets(reason))
        .bind(job_id.to_string())
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("snoozing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, job_id: Uuid, worker_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'pending', attempts = MAX(attempts - 1, 0), run_after = ?1, \
               locked_by = NULL, locked_until = NULL \
             WHERE id = ?2 AND locked_by = ?3 AND status = 'running'",
        )
        .bind(ts(JobQueue::now(self)))
        .bind(job_id.to_string())
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("releasing a job"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_cancelled(&self, job_id: Uuid, worker_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_at = ?1, error = 'cancelled', \
               locked_by = NULL, locked_until = NULL \
             WHERE id = ?2 AND locked_by = ?3 AND status = 'running' \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(ts(JobQueue::now(self)))
        .bind(job_id.to_string())
        .bind(worker_id)
        .fetch_all(self.pool())
        .await
        .map_err(db("cancelling a job"))?;
        self.end_job_syncs(&done, "job cancelled").await;
        Ok(done.len() == 1)
    }

    async fn cancel(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<JobStatus>> {
        let now = ts(JobQueue::now(self));
        let row = sqlx::query(
            "UPDATE jobs SET \
               cancel_requested_at = CASE WHEN status = 'running' THEN COALESCE(cancel_requested_at, ?1) ELSE cancel_requested_at END, \
               completed_at = CASE WHEN status = 'pending' THEN ?1 ELSE completed_at END, \
               error = CASE WHEN status = 'pending' THEN 'cancelled' ELSE error END, \
               status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END \
             WHERE workspace_id = ?2 AND id = ?3 RETURNING status, workspace_id, job_type, payload",
        )
        .bind(now)
        .bind(workspace_id.to_string())
        .bind(job_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(db("cancelling a job"))?;
        let Some(row) = row else { return Ok(None) };
        let status = JobStatus::parse(
            &row.try_get::<String, _>("status")
                .map_err(db("cancelling a job"))?,
        )?;
        if status == JobStatus::Cancelled {
            self.end_job_syncs(&[row], "job cancelled before it ran")
                .await;
        }
        Ok(Some(status))
    }

    async fn cancel_jobs_for_sync(&self, workspace_id: Uuid, sync_id: Uuid) -> Result<u64> {
        let now = ts(JobQueue::now(self));
        let done = sqlx::query(
            "UPDATE jobs SET \
               cancel_requested_at = CASE WHEN status = 'running' THEN COALESCE(cancel_requested_at, ?1) ELSE cancel_requested_at END, \
               completed_at = CASE WHEN status = 'pending' THEN ?1 ELSE completed_at END, \
               error = CASE WHEN status = 'pending' THEN 'cancelled: its sync run was failed as stale' ELSE error END, \
               status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END \
             WHERE workspace_id = ?2 AND status IN ('pending', 'running') \
               AND json_extract(payload, '$.sync_id') = ?3",
        )
        .bind(now)
        .bind(workspace_id.to_string())
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
            "UPDATE jobs SET progress = ?1 WHERE id = ?2 AND locked_by = ?3 AND status = 'running'",
        )
        .bind(serde_json::to_string(progress)?)
        .bind(job_id.to_string())
        .bind(worker_id)
        .execute(self.pool())
        .await
        .map_err(db("storing job progress"))?;
        Ok(())
    }

    async fn get_job(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE workspace_id = ?1 AND id = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id.to_string())
            .bind(job_id.to_string())
            .fetch_optional(self.pool())
            .await
            .map_err(db("reading a job"))?;
        row.as_ref().map(row_to_job).transpose()
    }

    async fn list_jobs(&self, workspace_id: Uuid, limit: u32, offset: u32) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE workspace_id = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id.to_string())
            .bind(i64::from(limit.clamp(1, MAX_JOBS_PAGE)))
            .bind(i64::from(offset))
            .fetch_all(self.pool())
            .await
            .map_err(db("listing jobs"))?;
        rows.iter().map(row_to_job).collect()
    }

    async fn rescue_expired(&self) -> Result<u64> {
        let now = ts(JobQueue::now(self));
        let done = sqlx::query(
            "UPDATE jobs SET \
               status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
               error = CASE WHEN attempts >= max_attempts THEN 'lease expired: the worker stopped heartbeating' ELSE error END, \
               completed_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END, \
               last_error = 'lease expired: the worker stopped heartbeating', \
               run_after = ?1, locked_by = NULL, locked_until = NULL \
             WHERE status = 'running' AND locked_until < ?1 \
             RETURNING status, workspace_id, job_type, payload",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await
        .map_err(db("rescuing expired jobs"))?;
        self.end_job_syncs(&done, "interrupted: its worker stopped heartbeating")
            .await;
        Ok(count_u64(done.len()))
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < ?1",
        )
        .bind(ts(before))
        .execute(self.pool())
        .await
        .map_err(db("pruning jobs"))?;
        Ok(done.rows_affected())
    }
}
