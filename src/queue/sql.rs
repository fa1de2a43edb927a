//! The job queue written once for both backends.
//!
//! The statements use numbered `$n` parameters, which SQLite and PostgreSQL both accept (a
//! number used twice is one parameter on both), and only SQL both dialects agree on. Rows
//! are decoded through [`RowRead`], the store's per-backend column reader. A backend
//! implements [`QueueDb`]: how it encodes an [`Arg`] and runs a statement, its claim
//! statement, and what only it can do (Postgres: `NOTIFY` in the enqueue transaction, an
//! `UNNEST` batch completion, `LISTEN`). [`impl_job_queue!`] then implements
//! [`JobQueue`] for it with the functions of this module.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{EndedJob, Heartbeat, Job, JobNotifier, JobQueue, JobStatus, MAX_JOBS_PAGE, NewJob};
use crate::connector::Progress;
use crate::error::{Error, Result};
use crate::store::rows::{RowRead, required};
use crate::store::{count_u64, db_err, is_unique_violation};

/// The columns of a [`Job`] as every statement returns them. The `INTEGER` columns are
/// read as 64-bit integers on both backends (Postgres would return `int4`).
macro_rules! job_columns {
    () => {
        "id, workspace_id, job_type, status, CAST(priority AS BIGINT) AS priority, payload, \
         progress, result, error, CAST(attempts AS BIGINT) AS attempts, \
         CAST(max_attempts AS BIGINT) AS max_attempts, last_error, unique_key, locked_by, \
         locked_until, cancel_requested_at, created_at, started_at, completed_at, run_after, \
         timeout_ms"
    };
}
pub(super) use job_columns;

/// What a claim sets on the jobs it takes (binds: `$1` worker, `$2` lease end, `$3` now).
macro_rules! claim_update {
    () => {
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
           locked_until = $2, heartbeat_at = $3, started_at = $3, cancel_requested_at = NULL "
    };
}
pub(super) use claim_update;

/// Which pending jobs of `jobs j` are due and free to run (`$3` now): at most one job of a
/// workspace and type runs at once (the unique running index).
macro_rules! claim_due {
    () => {
        "j.status = 'pending' AND j.run_after <= $3 \
           AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.status = 'running' \
             AND r.workspace_id = j.workspace_id AND r.job_type = j.job_type) "
    };
}
pub(super) use claim_due;

/// The claim order: highest priority, then oldest `run_after`, then oldest.
macro_rules! claim_order {
    () => {
        "priority DESC, run_after, created_at"
    };
}
pub(super) use claim_order;

/// The job that holds a unique key (after an enqueue lost the race for it).
const HOLDER: &str = "SELECT id FROM jobs WHERE workspace_id = $1 AND unique_key = $2 \
     AND status IN ('pending', 'running') LIMIT 1";

const HEARTBEAT: &str = "UPDATE jobs SET locked_until = $1, heartbeat_at = $2 \
     WHERE id = $3 AND locked_by = $4 AND status = 'running' RETURNING cancel_requested_at";

const COMPLETE: &str = "UPDATE jobs SET status = 'completed', result = $1, completed_at = $2, \
       locked_by = NULL, locked_until = NULL \
     WHERE id = $3 AND locked_by = $4 AND status = 'running' RETURNING id";

/// `$1`: the retry time, or NULL when the attempt may not be retried.
const FAIL: &str = "UPDATE jobs SET \
       status = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN 'pending' ELSE 'failed' END, \
       error = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN error ELSE $2 END, \
       completed_at = CASE WHEN $1 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE $3 END, \
       run_after = COALESCE($1, run_after), last_error = $2, \
       locked_by = NULL, locked_until = NULL \
     WHERE id = $4 AND locked_by = $5 AND status = 'running' \
     RETURNING status, workspace_id, job_type, payload";

/// Back to pending at `$1` without consuming the attempt; `$2` is the reason (NULL keeps
/// `last_error`).
const SNOOZE: &str = "UPDATE jobs SET status = 'pending', \
       attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, run_after = $1, \
       last_error = COALESCE($2, last_error), locked_by = NULL, locked_until = NULL \
     WHERE id = $3 AND locked_by = $4 AND status = 'running' RETURNING id";

const MARK_CANCELLED: &str = "UPDATE jobs SET status = 'cancelled', completed_at = $1, \
       error = 'cancelled', locked_by = NULL, locked_until = NULL \
     WHERE id = $2 AND locked_by = $3 AND status = 'running' \
     RETURNING status, workspace_id, job_type, payload";

/// Cancels pending jobs at once and asks running ones to stop (`$1` now, `$2` the error
/// of a cancelled pending job); the `WHERE` clause follows.
macro_rules! cancel_update {
    () => {
        "UPDATE jobs SET \
           cancel_requested_at = CASE WHEN status = 'running' \
             THEN COALESCE(cancel_requested_at, $1) ELSE cancel_requested_at END, \
           completed_at = CASE WHEN status = 'pending' THEN $1 ELSE completed_at END, \
           error = CASE WHEN status = 'pending' THEN $2 ELSE error END, \
           status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END "
    };
}

const CANCEL: &str = concat!(
    cancel_update!(),
    "WHERE workspace_id = $3 AND id = $4 RETURNING status, workspace_id, job_type, payload"
);

const CANCEL_FOR_SYNC: &str = concat!(
    cancel_update!(),
    "WHERE workspace_id = $3 AND status IN ('pending', 'running') \
       AND payload ->> 'sync_id' = $4 RETURNING id"
);

const PROGRESS: &str =
    "UPDATE jobs SET progress = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'";

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE workspace_id = $1 AND id = $2"
);

const LIST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
);

const LIST_BEFORE: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE workspace_id = $1 AND (created_at, id) < ($3, $4) \
     ORDER BY created_at DESC, id DESC LIMIT $2"
);

const RESCUE: &str = "UPDATE jobs SET \
       status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
       error = CASE WHEN attempts >= max_attempts THEN $2 ELSE error END, \
       completed_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
       last_error = $2, run_after = $1, locked_by = NULL, locked_until = NULL \
     WHERE status = 'running' AND locked_until < $1 \
     RETURNING status, workspace_id, job_type, payload";

const PRUNE: &str = "DELETE FROM jobs \
     WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1 RETURNING id";

/// Inserts a pending job and returns it.
pub(super) const INSERT: &str = concat!(
    "INSERT INTO jobs (id, workspace_id, job_type, status, priority, payload, attempts, \
       max_attempts, unique_key, created_at, run_after, timeout_ms) \
     VALUES ($1, $2, $3, 'pending', $4, $5, 0, $6, $7, $8, $9, $10) RETURNING ",
    job_columns!()
);

/// The error of a job whose lease ran out.
const LEASE_EXPIRED: &str = "lease expired: the worker stopped heartbeating";

/// A statement argument; each backend encodes it its own way (SQLite stores UUIDs,
/// timestamps and JSON as text).
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Uuid(Uuid),
    Ts(Option<DateTime<Utc>>),
    Text(Option<&'a str>),
    Int(i64),
    Json(&'a serde_json::Value),
    /// A list of strings (a JSON array on SQLite, `text[]` on Postgres).
    Texts(&'a [String]),
}

/// What a backend provides for the shared queue.
#[async_trait]
pub(super) trait QueueDb: JobQueue {
    /// A result row.
    type Row: RowRead + Send + Sync;

    /// The claim statement. Binds: `$1` worker id, `$2` lease end, `$3` now, `$4` the job
    /// types ([`Arg::Texts`]), `$5` the limit. Returns [`job_columns!`].
    const CLAIM: &'static str;

    /// Runs a statement and returns the rows it returned.
    async fn rows(&self, sql: &'static str, args: Vec<Arg<'_>>) -> sqlx::Result<Vec<Self::Row>>;

    /// Fails the `sync_log` row of a job that ended without finishing it.
    async fn end_sync(&self, job: &EndedJob, reason: &str) -> Result<bool>;

    /// Runs [`INSERT`] (Postgres also notifies listening workers in the same transaction).
    async fn insert(&self, args: Vec<Arg<'_>>, _job_type: &str) -> sqlx::Result<Vec<Self::Row>> {
        self.rows(INSERT, args).await
    }

    /// [`JobQueue::complete_many`]; by default one job at a time.
    async fn complete_batch(
        &self,
        worker_id: &str,
        jobs: Vec<(Uuid, serde_json::Value)>,
    ) -> Result<Vec<Uuid>> {
        crate::store::jobs::complete_each(self, worker_id, jobs).await
    }

    /// [`JobQueue::notifier`]; by default none (workers poll).
    async fn listener(&self) -> Result<Option<Arc<dyn JobNotifier>>> {
        Ok(None)
    }
}

/// Decodes a row of [`job_columns!`].
fn decode_job(r: &impl RowRead) -> Result<Job> {
    let int = |col: &str| -> Result<i64> { required(r.int(col)?, col) };
    let count =
        |col: &str| -> Result<u32> { Ok(u32::try_from(int(col)?.max(0)).unwrap_or(u32::MAX)) };
    Ok(Job {
        id: required(r.uuid("id")?, "id")?,
        workspace_id: required(r.uuid("workspace_id")?, "workspace_id")?,
        job_type: required(r.text("job_type")?, "job_type")?,
        status: JobStatus::parse(&required(r.text("status")?, "status")?)?,
        priority: i32::try_from(int("priority")?).unwrap_or(0),
        payload: r.json("payload")?.unwrap_or_default(),
        progress: r
            .json("progress")?
            .map(serde_json::from_value::<Progress>)
            .transpose()
            .map_err(|e| Error::storage("invalid progress in the jobs table", e))?,
        result: r.json("result")?,
        error: r.text("error")?,
        attempts: count("attempts")?,
        max_attempts: count("max_attempts")?,
        last_error: r.text("last_error")?,
        unique_key: r.text("unique_key")?,
        locked_by: r.text("locked_by")?,
        locked_until: r.ts("locked_until")?,
        cancel_requested_at: r.ts("cancel_requested_at")?,
        created_at: required(r.ts("created_at")?, "created_at")?,
        started_at: r.ts("started_at")?,
        completed_at: r.ts("completed_at")?,
        run_after: required(r.ts("run_after")?, "run_after")?,
        timeout_ms: u64::try_from(int("timeout_ms")?).unwrap_or(0),
    })
}

fn decode_jobs<R: RowRead>(rows: &[R]) -> Result<Vec<Job>> {
    rows.iter().map(decode_job).collect()
}

/// The status of a `RETURNING status, …` row.
fn status_of(r: &impl RowRead) -> Result<JobStatus> {
    JobStatus::parse(&required(r.text("status")?, "status")?)
}

/// The sync run of an ending job row (`status, workspace_id, job_type, payload`).
fn ended_job(r: &impl RowRead) -> Option<EndedJob> {
    let status = r.text("status").ok()??;
    let job_type = r.text("job_type").ok()??;
    let payload = r.json("payload").ok()??;
    Some(EndedJob {
        workspace_id: r.uuid("workspace_id").ok()??,
        sync_id: super::job_sync_id(&job_type, &payload)?,
        finished: JobStatus::parse(&status).is_ok_and(JobStatus::is_finished),
    })
}

/// Ends the `sync_log` rows of jobs that just ended (see the module docs of
/// [`queue`](super)). A failure is logged: the job's own update already committed, and the
/// staleness rule fails the row later.
async fn end_job_syncs<D: QueueDb>(db: &D, rows: &[D::Row], reason: &str) {
    for ended in rows.iter().filter_map(ended_job) {
        if let Err(e) = db.end_sync(&ended, reason).await {
            tracing::warn!(error = %e, sync_id = %ended.sync_id, "ending a job's sync run failed");
        }
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

pub(super) async fn enqueue<D: QueueDb>(db: &D, job: NewJob) -> Result<Job> {
    let now = db.now();
    let args = vec![
        Arg::Uuid(Uuid::new_v4()),
        Arg::Uuid(job.workspace_id),
        Arg::Text(Some(&job.job_type)),
        Arg::Int(job.priority.into()),
        Arg::Json(&job.payload),
        Arg::Int(job.max_attempts_i32().into()),
        Arg::Text(job.unique_key.as_deref()),
        Arg::Ts(Some(now)),
        Arg::Ts(Some(job.run_after.unwrap_or(now))),
        Arg::Int(job.timeout_ms()),
    ];
    match db.insert(args, &job.job_type).await {
        Ok(rows) => match rows.first() {
            Some(row) => decode_job(row),
            None => Err(Error::storage("enqueueing a job", sqlx::Error::RowNotFound)),
        },
        Err(e) if is_unique_violation(&e) => {
            let holder = db
                .rows(
                    HOLDER,
                    vec![
                        Arg::Uuid(job.workspace_id),
                        Arg::Text(job.unique_key.as_deref()),
                    ],
                )
                .await
                .map_err(db_err("looking up the conflicting job"))?;
            Err(Error::Conflict {
                message: format!(
                    "a {} job with key {:?} is already pending or running",
                    job.job_type,
                    job.unique_key.as_deref().unwrap_or("")
                ),
                running_id: match holder.first() {
                    Some(row) => row.uuid("id")?,
                    None => None,
                },
            })
        }
        Err(e) => Err(Error::storage("enqueueing a job", e)),
    }
}

pub(super) async fn claim<D: QueueDb>(
    db: &D,
    worker_id: &str,
    job_types: &[String],
    limit: u32,
    lease: Duration,
) -> Result<Vec<Job>> {
    if job_types.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let now = db.now();
    let args = vec![
        Arg::Text(Some(worker_id)),
        Arg::Ts(Some(lease_end(now, lease))),
        Arg::Ts(Some(now)),
        Arg::Texts(job_types),
        Arg::Int(limit.into()),
    ];
    let rows = match db.rows(D::CLAIM, args).await {
        Ok(rows) => rows,
        // Another worker claimed a job of the same workspace and type at the same moment
        // (Postgres): the unique running index refused ours. Nothing was changed; try later.
        Err(e) if is_unique_violation(&e) => return Ok(Vec::new()),
        Err(e) => return Err(Error::storage("claiming jobs", e)),
    };
    let mut jobs = decode_jobs(&rows)?;
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_after.cmp(&b.run_after))
            .then(a.created_at.cmp(&b.created_at))
    });
    Ok(jobs)
}

pub(super) async fn heartbeat<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
    lease: Duration,
) -> Result<Heartbeat> {
    let now = db.now();
    let args = vec![
        Arg::Ts(Some(lease_end(now, lease))),
        Arg::Ts(Some(now)),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    let rows = db
        .rows(HEARTBEAT, args)
        .await
        .map_err(db_err("heartbeating a job"))?;
    Ok(match rows.first() {
        None => Heartbeat::Lost,
        Some(row) if row.ts("cancel_requested_at")?.is_some() => Heartbeat::CancelRequested,
        Some(_) => Heartbeat::Extended,
    })
}

pub(super) async fn complete<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
    result: &serde_json::Value,
) -> Result<bool> {
    let args = vec![
        Arg::Json(result),
        Arg::Ts(Some(db.now())),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    let rows = db
        .rows(COMPLETE, args)
        .await
        .map_err(db_err("completing a job"))?;
    Ok(rows.len() == 1)
}

pub(super) async fn fail<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Option<JobStatus>> {
    let redacted = crate::error::redact_secrets(error);
    let args = vec![
        Arg::Ts(retry_at),
        Arg::Text(Some(&redacted)),
        Arg::Ts(Some(db.now())),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    let rows = db.rows(FAIL, args).await.map_err(db_err("failing a job"))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let status = status_of(row)?;
    if status == JobStatus::Failed {
        end_job_syncs(db, &rows, &format!("job failed: {redacted}")).await;
    }
    Ok(Some(status))
}

/// Snoozes (`reason: Some`) or releases (`None`) a running job.
pub(super) async fn snooze<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
    until: DateTime<Utc>,
    reason: Option<&str>,
) -> Result<bool> {
    let reason = reason.map(crate::error::redact_secrets);
    let args = vec![
        Arg::Ts(Some(until)),
        Arg::Text(reason.as_deref()),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    let what = if reason.is_some() {
        "snoozing a job"
    } else {
        "releasing a job"
    };
    let rows = db.rows(SNOOZE, args).await.map_err(db_err(what))?;
    Ok(rows.len() == 1)
}

pub(super) async fn mark_cancelled<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
) -> Result<bool> {
    let args = vec![
        Arg::Ts(Some(db.now())),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    let rows = db
        .rows(MARK_CANCELLED, args)
        .await
        .map_err(db_err("cancelling a job"))?;
    end_job_syncs(db, &rows, "job cancelled").await;
    Ok(rows.len() == 1)
}

pub(super) async fn cancel<D: QueueDb>(
    db: &D,
    workspace_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobStatus>> {
    let args = vec![
        Arg::Ts(Some(db.now())),
        Arg::Text(Some("cancelled")),
        Arg::Uuid(workspace_id),
        Arg::Uuid(job_id),
    ];
    let rows = db
        .rows(CANCEL, args)
        .await
        .map_err(db_err("cancelling a job"))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let status = status_of(row)?;
    if status == JobStatus::Cancelled {
        end_job_syncs(db, &rows, "job cancelled before it ran").await;
    }
    Ok(Some(status))
}

pub(super) async fn cancel_jobs_for_sync<D: QueueDb>(
    db: &D,
    workspace_id: Uuid,
    sync_id: Uuid,
) -> Result<u64> {
    let sync_id = sync_id.to_string();
    let args = vec![
        Arg::Ts(Some(db.now())),
        Arg::Text(Some("cancelled: its sync run was failed as stale")),
        Arg::Uuid(workspace_id),
        Arg::Text(Some(&sync_id)),
    ];
    let rows = db
        .rows(CANCEL_FOR_SYNC, args)
        .await
        .map_err(db_err("cancelling a stale sync's jobs"))?;
    Ok(count_u64(rows.len()))
}

pub(super) async fn update_progress<D: QueueDb>(
    db: &D,
    job_id: Uuid,
    worker_id: &str,
    progress: &Progress,
) -> Result<()> {
    let progress = serde_json::to_value(progress)?;
    let args = vec![
        Arg::Json(&progress),
        Arg::Uuid(job_id),
        Arg::Text(Some(worker_id)),
    ];
    db.rows(PROGRESS, args)
        .await
        .map_err(db_err("storing job progress"))?;
    Ok(())
}

pub(super) async fn get_job<D: QueueDb>(
    db: &D,
    workspace_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Job>> {
    let args = vec![Arg::Uuid(workspace_id), Arg::Uuid(job_id)];
    let rows = db.rows(GET, args).await.map_err(db_err("reading a job"))?;
    rows.first().map(decode_job).transpose()
}

pub(super) async fn list_jobs<D: QueueDb>(
    db: &D,
    workspace_id: Uuid,
    limit: u32,
    offset: u32,
) -> Result<Vec<Job>> {
    let args = vec![
        Arg::Uuid(workspace_id),
        Arg::Int(limit.clamp(1, MAX_JOBS_PAGE).into()),
        Arg::Int(offset.into()),
    ];
    let rows = db.rows(LIST, args).await.map_err(db_err("listing jobs"))?;
    decode_jobs(&rows)
}

pub(super) async fn list_jobs_before<D: QueueDb>(
    db: &D,
    workspace_id: Uuid,
    limit: u32,
    before: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Vec<Job>> {
    let Some((at, id)) = before else {
        return list_jobs(db, workspace_id, limit, 0).await;
    };
    let args = vec![
        Arg::Uuid(workspace_id),
        Arg::Int(limit.clamp(1, MAX_JOBS_PAGE).into()),
        Arg::Ts(Some(at)),
        Arg::Uuid(id),
    ];
    let rows = db
        .rows(LIST_BEFORE, args)
        .await
        .map_err(db_err("listing jobs"))?;
    decode_jobs(&rows)
}

pub(super) async fn rescue_expired<D: QueueDb>(db: &D) -> Result<u64> {
    let args = vec![Arg::Ts(Some(db.now())), Arg::Text(Some(LEASE_EXPIRED))];
    let rows = db
        .rows(RESCUE, args)
        .await
        .map_err(db_err("rescuing expired jobs"))?;
    end_job_syncs(db, &rows, "interrupted: its worker stopped heartbeating").await;
    Ok(count_u64(rows.len()))
}

pub(super) async fn prune_finished<D: QueueDb>(db: &D, before: DateTime<Utc>) -> Result<u64> {
    let rows = db
        .rows(PRUNE, vec![Arg::Ts(Some(before))])
        .await
        .map_err(db_err("pruning jobs"))?;
    Ok(count_u64(rows.len()))
}

/// Implements [`JobQueue`] for a store that implements [`QueueDb`], with the functions of
/// this module.
macro_rules! impl_job_queue {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::queue::JobQueue for $store {
            fn now(&self) -> chrono::DateTime<chrono::Utc> {
                <$store>::now(self)
            }

            async fn enqueue(
                &self,
                job: $crate::queue::NewJob,
            ) -> $crate::error::Result<$crate::queue::Job> {
                $crate::queue::sql::enqueue(self, job).await
            }

            async fn claim(
                &self,
                worker_id: &str,
                job_types: &[String],
                limit: u32,
                lease: std::time::Duration,
            ) -> $crate::error::Result<Vec<$crate::queue::Job>> {
                $crate::queue::sql::claim(self, worker_id, job_types, limit, lease).await
            }

            async fn heartbeat(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
                lease: std::time::Duration,
            ) -> $crate::error::Result<$crate::queue::Heartbeat> {
                $crate::queue::sql::heartbeat(self, job_id, worker_id, lease).await
            }

            async fn complete(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
                result: serde_json::Value,
            ) -> $crate::error::Result<bool> {
                $crate::queue::sql::complete(self, job_id, worker_id, &result).await
            }

            async fn complete_many(
                &self,
                worker_id: &str,
                jobs: Vec<(uuid::Uuid, serde_json::Value)>,
            ) -> $crate::error::Result<Vec<uuid::Uuid>> {
                $crate::queue::sql::QueueDb::complete_batch(self, worker_id, jobs).await
            }

            async fn fail(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
                error: &str,
                retry_at: Option<chrono::DateTime<chrono::Utc>>,
            ) -> $crate::error::Result<Option<$crate::queue::JobStatus>> {
                $crate::queue::sql::fail(self, job_id, worker_id, error, retry_at).await
            }

            async fn snooze(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
                until: chrono::DateTime<chrono::Utc>,
                reason: &str,
            ) -> $crate::error::Result<bool> {
                $crate::queue::sql::snooze(self, job_id, worker_id, until, Some(reason)).await
            }

            async fn release(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
            ) -> $crate::error::Result<bool> {
                let now = <$store>::now(self);
                $crate::queue::sql::snooze(self, job_id, worker_id, now, None).await
            }

            async fn mark_cancelled(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
            ) -> $crate::error::Result<bool> {
                $crate::queue::sql::mark_cancelled(self, job_id, worker_id).await
            }

            async fn cancel(
                &self,
                workspace_id: uuid::Uuid,
                job_id: uuid::Uuid,
            ) -> $crate::error::Result<Option<$crate::queue::JobStatus>> {
                $crate::queue::sql::cancel(self, workspace_id, job_id).await
            }

            async fn cancel_jobs_for_sync(
                &self,
                workspace_id: uuid::Uuid,
                sync_id: uuid::Uuid,
            ) -> $crate::error::Result<u64> {
                $crate::queue::sql::cancel_jobs_for_sync(self, workspace_id, sync_id).await
            }

            async fn update_progress(
                &self,
                job_id: uuid::Uuid,
                worker_id: &str,
                progress: &$crate::connector::Progress,
            ) -> $crate::error::Result<()> {
                $crate::queue::sql::update_progress(self, job_id, worker_id, progress).await
            }

            async fn get_job(
                &self,
                workspace_id: uuid::Uuid,
                job_id: uuid::Uuid,
            ) -> $crate::error::Result<Option<$crate::queue::Job>> {
                $crate::queue::sql::get_job(self, workspace_id, job_id).await
            }

            async fn list_jobs(
                &self,
                workspace_id: uuid::Uuid,
                limit: u32,
                offset: u32,
            ) -> $crate::error::Result<Vec<$crate::queue::Job>> {
                $crate::queue::sql::list_jobs(self, workspace_id, limit, offset).await
            }

            async fn list_jobs_before(
                &self,
                workspace_id: uuid::Uuid,
                limit: u32,
                before: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
            ) -> $crate::error::Result<Vec<$crate::queue::Job>> {
                $crate::queue::sql::list_jobs_before(self, workspace_id, limit, before).await
            }

            async fn rescue_expired(&self) -> $crate::error::Result<u64> {
                $crate::queue::sql::rescue_expired(self).await
            }

            async fn prune_finished(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<u64> {
                $crate::queue::sql::prune_finished(self, before).await
            }

            async fn notifier(
                &self,
            ) -> $crate::error::Result<Option<std::sync::Arc<dyn $crate::queue::JobNotifier>>> {
                $crate::queue::sql::QueueDb::listener(self).await
            }
        }
    };
}
pub(super) use impl_job_queue;
