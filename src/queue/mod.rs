//! The job queue: durable jobs in the `jobs` table, claimed with leases, retried with
//! backoff, snoozed on rate limits, cancelled cooperatively, rescued when their worker dies.
//!
//! Every store is also the queue: [`JobQueue`] is part of [`SyncStore`](crate::SyncStore),
//! so the handle [`connect_store`](crate::connect_store) returns feeds the [`Worker`] and
//! the [`Scheduler`](crate::Scheduler) as well as the orchestrator. Both backends implement
//! it with the statements and row decoding they share; each keeps only what its dialect
//! forces:
//! - Postgres claims with a CTE (`FOR UPDATE SKIP LOCKED LIMIT n`) feeding an
//!   `UPDATE … RETURNING`, counts the attempt at claim time, completes batches with
//!   `UNNEST`, and wakes idle workers with `NOTIFY` sent from the enqueue transaction (see
//!   [`JobQueue::notifier`] and [`Worker::listen`]);
//! - SQLite claims with a single-writer `UPDATE … WHERE id IN (SELECT … LIMIT n)
//!   RETURNING` and is polled.
//!
//! At most one pending-or-running job exists per `(workspace_id, unique_key)`: a partial
//! unique index enforces it, so two racing enqueues cannot both win (an enqueue that loses
//! gets [`Error::Conflict`](crate::Error::Conflict) carrying the winner's id).
//!
//! [`Worker`] runs jobs; see its docs for heartbeats, timeouts, panics and shutdown.
//!
//! Every path that ends a [`SYNC_JOB`] ends its `sync_log` row (the payload's `sync_id`)
//! when the handler did not: failed out of attempts or with a final error, cancelled while
//! pending or running, rescued and given up, all fail a still `pending` or `running` row
//! with the reason; a job rescued for another attempt fails its `running` row as
//! interrupted (the next attempt records fresh runs). So no row outlives its job and no
//! workspace stays blocked by a run nobody will finish (DESIGN 4.9).

#[cfg(feature = "postgres")]
mod postgres;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod worker;

use std::time::Duration;

use uuid::Uuid;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{JOBS_CHANNEL, PgJobNotifier};
pub use worker::{JobContext, JobHandler, MAX_QUOTA_WAIT, MAX_RETRY_AFTER, Worker, WorkerConfig};

pub(crate) use crate::store::jobs::MAX_JOBS_PAGE;
pub use crate::store::jobs::{
    DEFAULT_JOB_TIMEOUT, DEFAULT_MAX_ATTEMPTS, Heartbeat, Job, JobNotifier, JobQueue, JobStatus,
    NewJob,
};

/// The `sync_log` row a [`SYNC_JOB`] runs (its payload's `sync_id`); `None` for other jobs.
pub(crate) fn job_sync_id(job_type: &str, payload: &serde_json::Value) -> Option<Uuid> {
    if job_type != SYNC_JOB {
        return None;
    }
    payload
        .get("sync_id")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// A job that just ended (or went back to pending after its worker died), and what that
/// means for its `sync_log` row.
pub(crate) struct EndedJob {
    pub(crate) workspace_id: Uuid,
    pub(crate) sync_id: Uuid,
    /// The job is over for good: a run it never started (`pending`) is failed too.
    pub(crate) finished: bool,
}

/// The job type of a workspace sync.
pub const SYNC_JOB: &str = "sync";

/// Exponential backoff with jitter for failed attempts.
///
/// The delay before retry `n` (1-based) is drawn uniformly from `[d/2, d]` where
/// `d = min(base × factorⁿ⁻¹, max)`: it grows, is capped, and spreads retries of many jobs
/// that failed together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Largest delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(3600),
        }
    }
}

impl BackoffPolicy {
    /// The un-jittered delay before retry `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry `attempt`, with `unit` in `[0, 1)` choosing the jitter.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.ceiling(attempt);
        d / 2 + d.mul_f64(0.5 * unit.clamp(0.0, 1.0))
    }

    /// The delay before retry `attempt`, with random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = BackoffPolicy {
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
        };
        let ceilings: Vec<u64> = (1..=8).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(60));
        for attempt in 1..10 {
            let c = p.ceiling(attempt);
            assert_eq!(p.delay_with(attempt, 0.0), c / 2);
            assert_eq!(p.delay_with(attempt, 1.0), c);
            let d = p.delay(attempt);
            assert!(d >= c / 2 && d <= c, "{d:?} vs {c:?}");
        }
    }
}
