//! The job queue's contract: the [`JobQueue`] operations and the jobs they move.
//!
//! It lives with the storage traits because every store is also a queue (the `jobs` table
//! is part of the schema, and [`SyncStore`](super::SyncStore) includes [`JobQueue`]); the
//! backends' implementations and the worker are in [`queue`](crate::queue), which
//! re-exports all of this.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connector::Progress;
use crate::error::{Error, Result};

/// The default `timeout_ms` of a job: ten minutes.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// The default number of attempts before a job fails for good.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The largest page [`JobQueue::list_jobs`] returns.
pub(crate) const MAX_JOBS_PAGE: u32 = 100;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for `run_after` and a worker.
    Pending,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished with a result.
    Completed,
    /// Failed for good (attempts exhausted or not retryable).
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl JobStatus {
    /// The status as stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => {
                return Err(Error::Storage {
                    message: format!("unknown job status {other:?} in the jobs table"),
                    source: None,
                });
            }
        })
    }

    /// Whether the job is finished (completed, failed or cancelled).
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The workspace the job belongs to.
    pub workspace_id: Uuid,
    /// Which handler runs it (e.g. [`SYNC_JOB`](crate::queue::SYNC_JOB)).
    pub job_type: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this instant (`None`: now).
    pub run_after: Option<DateTime<Utc>>,
    /// Attempts before the job fails for good.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// At most one pending-or-running job per workspace holds a given key.
    pub unique_key: Option<String>,
}

impl NewJob {
    /// A job with priority 0, no delay, [`DEFAULT_MAX_ATTEMPTS`], [`DEFAULT_JOB_TIMEOUT`] and
    /// no unique key.
    pub fn new(
        workspace_id: Uuid,
        job_type: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        NewJob {
            workspace_id,
            job_type: job_type.into(),
            payload,
            priority: 0,
            run_after: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: DEFAULT_JOB_TIMEOUT,
            unique_key: None,
        }
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Delays the job until `at`.
    pub fn run_after(mut self, at: DateTime<Utc>) -> Self {
        self.run_after = Some(at);
        self
    }

    /// Sets the attempt limit (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the deduplication key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub(crate) fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    pub(crate) fn max_attempts_i32(&self) -> i32 {
        i32::try_from(self.max_attempts).unwrap_or(i32::MAX).max(1)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Handler name.
    pub job_type: String,
    /// State.
    pub status: JobStatus,
    /// Priority (higher first).
    pub priority: i32,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Latest progress report.
    pub progress: Option<Progress>,
    /// Handler output, once completed.
    pub result: Option<serde_json::Value>,
    /// Final error, once failed.
    pub error: Option<String>,
    /// Attempts started so far (counted at claim).
    pub attempts: u32,
    /// Attempt limit.
    pub max_attempts: u32,
    /// Error of the latest failed attempt.
    pub last_error: Option<String>,
    /// Deduplication key.
    pub unique_key: Option<String>,
    /// Worker holding the lease.
    pub locked_by: Option<String>,
    /// When the lease ends unless renewed.
    pub locked_until: Option<DateTime<Utc>>,
    /// When a cancellation was requested while running.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// When enqueued.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Not before this instant.
    pub run_after: DateTime<Utc>,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Job {
    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease was extended; carry on.
    Extended,
    /// Someone asked to cancel the job: stop and report it cancelled.
    CancelRequested,
    /// The worker no longer holds the job (its lease expired and it was rescued, or it
    /// finished elsewhere): stop without touching it.
    Lost,
}

/// The queue operations, implemented by both storage backends.
///
/// Every operation that names a job by id for a caller (get, list, cancel) is scoped by
/// workspace, so a job id from another workspace is simply not found. Operations a worker
/// performs on its own claimed job (heartbeat, complete, fail, snooze, release, progress)
/// require the worker's id to match `locked_by`, so a worker whose lease expired cannot
/// overwrite the outcome of the worker that rescued the job.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// The queue's notion of now (the store's clock): retry and snooze times are computed
    /// from it, so they compare correctly with `run_after`.
    fn now(&self) -> DateTime<Utc>;

    /// Enqueues a job. With a `unique_key` already held by a pending or running job of the
    /// workspace, fails with [`Error::Conflict`](crate::Error::Conflict) naming that job.
    async fn enqueue(&self, job: NewJob) -> Result<Job>;

    /// Claims up to `limit` due pending jobs of the given types (highest priority, then
    /// oldest `run_after`, then oldest), marks them running under `worker_id` with a lease
    /// of `lease`, and counts an attempt for each.
    async fn claim(
        &self,
        worker_id: &str,
        job_types: &[String],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Job>>;

    /// Extends the lease of a running job held by `worker_id`.
    async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration) -> Result<Heartbeat>;

    /// Marks a job completed with its result. False if `worker_id` no longer holds it.
    async fn complete(
        &self,
        job_id: Uuid,
        worker_id: &str,
        result: serde_json::Value,
    ) -> Result<bool>;

    /// Completes several running jobs of `worker_id` at once (the worker batches the
    /// completions that arrive while one write is in flight, so a busy worker commits once
    /// per batch, not once per job). Returns the ids that were completed; a job no longer
    /// held by `worker_id` is left alone, as with [`complete`](Self::complete).
    async fn complete_many(
        &self,
        worker_id: &str,
        jobs: Vec<(Uuid, serde_json::Value)>,
    ) -> Result<Vec<Uuid>> {
        complete_each(self, worker_id, jobs).await
    }

    /// Records a failed attempt: back to pending at `retry_at` while attempts remain (and
    /// `retry_at` is given), else failed for good. Returns the new status, or `None` if
    /// `worker_id` no longer holds the job.
    async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Option<JobStatus>>;

    /// Reschedules a running job at `until` without consuming an attempt (a rate limit or
    /// an exhausted quota). False if `worker_id` no longer holds it.
    async fn snooze(
        &self,
        job_id: Uuid,
        worker_id: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool>;

    /// Hands a running job back to the queue without consuming an attempt (graceful
    /// shutdown). False if `worker_id` no longer holds it.
    async fn release(&self, job_id: Uuid, worker_id: &str) -> Result<bool>;

    /// Marks a cancelled running job as cancelled (the worker stopped it).
    async fn mark_cancelled(&self, job_id: Uuid, worker_id: &str) -> Result<bool>;

    /// Cancels a job: a pending job becomes cancelled at once; a running job gets a
    /// cancellation request its worker sees at its next heartbeat. Returns the status after
    /// the call, or `None` when the workspace has no such job.
    async fn cancel(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<JobStatus>>;

    /// Cancels the workspace's pending or running jobs whose payload runs the sync `sync_id`
    /// (their run was failed as stale). Returns how many were affected.
    async fn cancel_jobs_for_sync(&self, workspace_id: Uuid, sync_id: Uuid) -> Result<u64>;

    /// Stores a running job's progress.
    async fn update_progress(
        &self,
        job_id: Uuid,
        worker_id: &str,
        progress: &Progress,
    ) -> Result<()>;

    /// A job of the workspace.
    async fn get_job(&self, workspace_id: Uuid, job_id: Uuid) -> Result<Option<Job>>;

    /// The workspace's jobs, newest first, `limit` (1 to 100) from `offset`.
    async fn list_jobs(&self, workspace_id: Uuid, limit: u32, offset: u32) -> Result<Vec<Job>>;

    /// The workspace's jobs, newest first, `limit` (1 to 100) of those strictly older than
    /// `before` in `(created_at, id)` order (from the newest when `None`): a keyset page that
    /// jobs enqueued meanwhile never shift.
    async fn list_jobs_before(
        &self,
        workspace_id: Uuid,
        limit: u32,
        before: Option<(DateTime<Utc>, Uuid)>,
    ) -> Result<Vec<Job>>;

    /// Running jobs whose lease expired (their worker died) go back to pending, or to failed
    /// once their attempts are used up. Returns how many were rescued.
    async fn rescue_expired(&self) -> Result<u64>;

    /// Deletes finished jobs that finished before `before`. Returns how many.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64>;

    /// A [`JobNotifier`] that wakes this queue's idle workers when a job is enqueued, or
    /// `None` when the backend has no notifications and workers poll (SQLite). On Postgres
    /// it `LISTEN`s on a connection of the store's pool, held while the notifier lives (see
    /// [`PgJobNotifier`](crate::queue::PgJobNotifier)). A [`Worker`](crate::queue::Worker)
    /// asks for one when built with [`listen`](crate::queue::Worker::listen).
    async fn notifier(&self) -> Result<Option<Arc<dyn JobNotifier>>> {
        Ok(None)
    }
}

/// [`JobQueue::complete_many`] one job at a time, for backends without a batched statement.
pub(crate) async fn complete_each<Q: JobQueue + ?Sized>(
    queue: &Q,
    worker_id: &str,
    jobs: Vec<(Uuid, serde_json::Value)>,
) -> Result<Vec<Uuid>> {
    let mut done = Vec::with_capacity(jobs.len());
    for (id, result) in jobs {
        if queue.complete(id, worker_id, result).await? {
            done.push(id);
        }
    }
    Ok(done)
}

/// Wakes idle workers when a job is enqueued (Postgres `LISTEN`); backends without it poll.
#[async_trait]
pub trait JobNotifier: Send + Sync {
    /// Waits until a job may have been enqueued, or `max` elapsed.
    async fn wait(&self, max: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names() {
        for s in [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(JobStatus::parse("paused").is_err());
        assert!(JobStatus::Cancelled.is_finished());
        assert!(!JobStatus::Running.is_finished());
    }

    #[test]
    fn new_job_defaults() {
        let j = NewJob::new(Uuid::nil(), "sync", serde_json::json!({})).max_attempts(0);
        assert_eq!(j.max_attempts, 1);
        assert_eq!(j.timeout_ms(), 600_000);
        assert_eq!(j.priority, 0);
    }
}
