//! The worker: claims jobs, runs their handlers concurrently, heartbeats, enforces timeouts,
//! turns panics into failures, and shuts down gracefully.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{BackoffPolicy, Heartbeat, Job, JobNotifier, JobQueue};
use crate::connector::ProgressReporter;
use crate::error::{Error, Result};

/// Runs one job type.
///
/// Return `Ok(result)` to complete the job. An error that
/// [`is_snooze`](crate::Error::is_snooze) (a rate limit, an exhausted quota) snoozes the job
/// until its `retry_after` without consuming an attempt; any other error fails the attempt,
/// which is retried with backoff while attempts remain. A handler must stop soon after
/// [`JobContext::cancel_token`] fires.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs the job.
    async fn run(&self, job: Job, ctx: JobContext) -> Result<serde_json::Value>;
}

/// What a running job gets from its worker.
#[derive(Debug, Clone)]
pub struct JobContext {
    cancel: CancellationToken,
    progress: ProgressReporter,
}

impl JobContext {
    /// Fires when the job is cancelled, timed out, or the worker shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Progress reported here is stored on the job (`{current, total, message}`).
    pub fn progress(&self) -> &ProgressReporter {
        &self.progress
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id, stored in `locked_by` (default: a random UUID).
    pub worker_id: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease taken at claim and renewed by every heartbeat.
    pub lease: Duration,
    /// Time between heartbeats (keep it well under `lease`).
    pub heartbeat_interval: Duration,
    /// Poll interval when idle (jittered ±20 %); with a notifier it is the fallback.
    pub poll_interval: Duration,
    /// After a job finishes while others still run, how long the worker waits before it
    /// claims again, so that one claim fills every slot freed meanwhile instead of one
    /// claim per finished job. An idle worker claims at once.
    pub fetch_cooldown: Duration,
    /// How long a job gets to stop after its timeout fired before it is abandoned.
    pub cancel_grace: Duration,
    /// On shutdown, how long running jobs get to finish before they are released.
    pub shutdown_timeout: Duration,
    /// Delay of default snoozes (a rate limit without `retry_after`).
    pub default_snooze: Duration,
    /// Backoff of failed attempts.
    pub backoff: BackoffPolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: format!("worker-{}", Uuid::new_v4()),
            concurrency: 4,
            lease: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            fetch_cooldown: Duration::from_millis(5),
            cancel_grace: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            default_snooze: Duration::from_secs(60),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Claims and runs jobs from a [`JobQueue`].
///
/// - It claims only job types it has a handler for, up to `concurrency` at once.
/// - Each running job is heartbeated: the lease is extended, a cancellation request is seen
///   within one heartbeat and the handler's token fires; a lost lease stops the job.
/// - `timeout_ms` is enforced: the token fires, the handler gets `cancel_grace` to stop, and
///   the attempt fails as timed out.
/// - A panic inside a handler fails the attempt with the panic message.
/// - [`Worker::run`] returns when its shutdown token fires: it stops claiming, lets running
///   jobs finish until `shutdown_timeout`, then cancels them and releases them back to the
///   queue without consuming their attempt.
pub struct Worker {
    queue: Arc<dyn JobQueue>,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    notifier: Option<Arc<dyn JobNotifier>>,
    /// Ask the queue for a notifier when [`Worker::run`] starts.
    listen: bool,
    config: WorkerConfig,
    /// Set while [`Worker::run`] runs: successful completions go through one batching task.
    completer: Option<mpsc::UnboundedSender<Completion>>,
}

/// A successful job waiting for its completion to be written.
struct Completion {
    job_id: Uuid,
    result: serde_json::Value,
    written: oneshot::Sender<std::result::Result<bool, String>>,
}

/// Most completions written by one statement.
const MAX_COMPLETION_BATCH: usize = 256;

/// Writes completions in batches: whatever arrived while the previous write was in flight
/// goes into the next one (group commit), so a busy worker does not commit once per job.
async fn write_completions(
    queue: Arc<dyn JobQueue>,
    worker_id: String,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETION_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let (jobs, waiters): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|c| ((c.job_id, c.result), (c.job_id, c.written)))
            .unzip();
        match queue.complete_many(&worker_id, jobs).await {
            Ok(done) => {
                for (id, written) in waiters {
                    let _ = written.send(Ok(done.contains(&id)));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, written) in waiters {
                    let _ = written.send(Err(msg.clone()));
                }
            }
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("job_types", &self.handlers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Done(Result<serde_json::Value>),
    Panicked(String),
    TimedOut,
    Lost,
    Shutdown,
}

impl Worker {
    /// A worker on `queue` with default settings and no handlers. The queue is usually the
    /// store handle itself (`Worker::new(store.clone())` with an `Arc<dyn SyncStore>`: a
    /// [`SyncStore`](crate::SyncStore) is a [`JobQueue`]).
    pub fn new(queue: Arc<dyn JobQueue>) -> Self {
        Worker {
            queue,
            handlers: HashMap::new(),
            notifier: None,
            listen: false,
            config: WorkerConfig::default(),
            completer: None,
        }
    }

    /// Registers the handler of a job type.
    pub fn register(mut self, job_type: impl Into<String>, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(job_type.into(), handler);
        self
    }

    /// Wakes the worker when jobs are enqueued (Postgres `LISTEN`).
    pub fn notifier(mut self, notifier: Arc<dyn JobNotifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Wakes the worker through its own queue's notifications: when [`Worker::run`] starts
    /// it asks the queue for a [`JobQueue::notifier`] (a Postgres `LISTEN` on a connection of
    /// the store's pool, held until `run` returns). Where the backend has none (SQLite), or
    /// listening fails, the worker polls every `poll_interval` as without it. A notifier set
    /// with [`Worker::notifier`] takes precedence.
    ///
    /// Behind a transaction-mode pooler (PgBouncer, Supavisor) `LISTEN` does not work:
    /// leave this off there.
    pub fn listen(mut self) -> Self {
        self.listen = true;
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.config.worker_id
    }

    /// Runs until `shutdown` fires (see the type's docs).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let span = tracing::info_span!("worker", worker_id = %self.config.worker_id);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(mut self, shutdown: CancellationToken) -> Result<()> {
        if self.listen && self.notifier.is_none() {
            match self.queue.notifier().await {
                Ok(notifier) => self.notifier = notifier,
                Err(e) => tracing::warn!(error = %e, "listening for jobs failed; polling instead"),
            }
        }
        let (completions, rx) = mpsc::unbounded_channel();
        let completer = tokio::spawn(write_completions(
            self.queue.clone(),
            self.config.worker_id.clone(),
            rx,
        ));
        self.completer = Some(completions);
        let this = Arc::new(self);
        let concurrency = this.config.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let stop_jobs = CancellationToken::new();
        let mut running: JoinSet<()> = JoinSet::new();
        let mut types: Vec<String> = this.handlers.keys().cloned().collect();
        types.sort();

        while !shutdown.is_cancelled() {
            let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            let mut claimed = 0;
            if free > 0 {
                match this
                    .queue
                    .claim(&this.config.worker_id, &types, free, this.config.lease)
                    .await
                {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                // Invariant: we claimed at most `free` jobs; should a permit
                                // be missing anyway, hand the job straight back.
                                let _ = this.queue.release(job.id, &this.config.worker_id).await;
                                continue;
                            };
                            let worker = this.clone();
                            let stop = stop_jobs.clone();
                            running.spawn(async move {
                                worker.run_job(job, stop).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming jobs failed"),
                }
            }
            if claimed > 0 && slots.available_permits() > 0 {
                continue; // there may be more due jobs
            }
            let idle = jittered(this.config.poll_interval);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {
                    if !running.is_empty() && !this.config.fetch_cooldown.is_zero() {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(this.config.fetch_cooldown) => {}
                        }
                    }
                }
                () = wait_for_work(this.notifier.as_deref(), idle), if slots.available_permits() > 0 => {}
                () = tokio::time::sleep(idle), if slots.available_permits() == 0 => {}
            }
        }

        // Graceful shutdown: no more claims; running jobs get until the deadline.
        let deadline = tokio::time::sleep(this.config.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    tracing::warn!(jobs = running.len(), "shutdown deadline passed; releasing running jobs");
                    stop_jobs.cancel();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Every job's completion was written before its task ended; with the last sender
        // gone the completer stops.
        drop(this);
        let _ = completer.await;
        Ok(())
    }

    async fn run_job(self: Arc<Self>, job: Job, stop: CancellationToken) {
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, attempt = job.attempts);
        async {
            let Some(handler) = self.handlers.get(&job.job_type).cloned() else {
                let _ = self
                    .queue
                    .fail(job.id, &self.config.worker_id, "no handler for this job type", None)
                    .await;
                return;
            };
            let cancel = CancellationToken::new();
            let progress = ProgressReporter::new();
            let ctx = JobContext {
                cancel: cancel.clone(),
                progress: progress.clone(),
            };
            let job_id = job.id;
            let attempt = job.attempts;
            let timeout = job.timeout();
            let mut handle = tokio::spawn(async move { handler.run(job, ctx).await });

            let mut beat = tokio::time::interval(self.config.heartbeat_interval);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat.tick().await; // the first tick is immediate
            let mut progress_rx = progress.subscribe();
            let mut cancel_requested = false;
            let timer = tokio::time::sleep(timeout);
            tokio::pin!(timer);

            let outcome = loop {
                tokio::select! {
                    res = &mut handle => break match res {
                        Ok(r) => Outcome::Done(r),
                        Err(e) if e.is_panic() => Outcome::Panicked(panic_message(e.into_panic())),
                        Err(_) => Outcome::Panicked("the job task was aborted".into()),
                    },
                    _ = beat.tick() => {
                        match self.queue.heartbeat(job_id, &self.config.worker_id, self.config.lease).await {
                            Ok(Heartbeat::Extended) => {}
                            Ok(Heartbeat::CancelRequested) => {
                                if !cancel_requested {
                                    tracing::info!("cancellation requested");
                                    cancel_requested = true;
                                    cancel.cancel();
                                }
                            }
                            Ok(Heartbeat::Lost) => {
                                cancel.cancel();
                                break Outcome::Lost;
                            }
                            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                        }
                    }
                    Ok(()) = progress_rx.changed() => {
                        let p = progress_rx.borrow_and_update().clone();
                        if let Err(e) = self.queue.update_progress(job_id, &self.config.worker_id, &p).await {
                            tracing::debug!(error = %e, "progress update failed");
                        }
                    }
                    () = &mut timer => {
                        cancel.cancel();
                        break Outcome::TimedOut;
                    }
                    () = stop.cancelled() => {
                        cancel.cancel();
                        break Outcome::Shutdown;
                    }
                }
            };

            // Give a stopped handler its grace period, then abandon it.
            if matches!(outcome, Outcome::TimedOut | Outcome::Lost | Outcome::Shutdown)
                && tokio::time::timeout(self.config.cancel_grace, &mut handle).await.is_err()
            {
                handle.abort();
            }
            let latest = progress.latest();
            if latest.current > 0 || !latest.message.is_empty() {
                let _ = self.queue.update_progress(job_id, &self.config.worker_id, &latest).await;
            }
            self.finish(job_id, attempt, timeout, outcome, cancel_requested).await;
        }
        .instrument(span)
        .await;
    }

    /// Completes a job through the batching completer (directly when there is none).
    async fn write_completion(&self, job_id: Uuid, result: serde_json::Value) -> Result<()> {
        let w = &self.config.worker_id;
        let Some(completer) = &self.completer else {
            return self.queue.complete(job_id, w, result).await.map(|_| ());
        };
        let (written, outcome) = oneshot::channel();
        let sent = completer.send(Completion {
            job_id,
            result,
            written,
        });
        if let Err(mpsc::error::SendError(c)) = sent {
            return self.queue.complete(c.job_id, w, c.result).await.map(|_| ());
        }
        match outcome.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(msg)) => Err(Error::Storage {
                message: format!("completing jobs: {msg}"),
                source: None,
            }),
            Err(_) => Err(Error::Storage {
                message: "the completion writer stopped".to_owned(),
                source: None,
            }),
        }
    }

    async fn finish(
        &self,
        job_id: Uuid,
        attempt: u32,
        timeout: Duration,
        outcome: Outcome,
        cancel_requested: bool,
    ) {
        let w = &self.config.worker_id;
        let now = self.queue.now();
        let retry_at = add_capped(now, self.config.backoff.delay(attempt), MAX_RETRY_AFTER);
        let done = match outcome {
            Outcome::Done(Ok(result)) => self.write_completion(job_id, result).await,
            Outcome::Done(Err(_)) if cancel_requested => {
                self.queue.mark_cancelled(job_id, w).await.map(|_| ())
            }
            Outcome::Done(Err(e)) if e.is_snooze() => {
                let until = snooze_until(now, &e, self.config.default_snooze);
                tracing::info!(error = %e, until = %until, "snoozing job");
                self.queue
                    .snooze(job_id, w, until, &e.to_string())
                    .await
                    .map(|_| ())
            }
            Outcome::Done(Err(e)) => {
                tracing::warn!(error = %e, "job attempt failed");
                let retry = if e_is_final(&e) { None } else { Some(retry_at) };
                self.queue
                    .fail(job_id, w, &e.to_string(), retry)
                    .await
                    .map(|_| ())
            }
            Outcome::Panicked(msg) => {
                tracing::error!(panic = %msg, "job panicked");
                self.queue
                    .fail(job_id, w, &format!("job panicked: {msg}"), Some(retry_at))
                    .await
                    .map(|_| ())
            }
            Outcome::TimedOut => {
                tracing::warn!(?timeout, "job timed out");
                self.queue
                    .fail(
                        job_id,
                        w,
                        &format!("job timed out after {timeout:?}"),
                        Some(retry_at),
                    )
                    .await
                    .map(|_| ())
            }
            Outcome::Lost => {
                tracing::warn!("lease lost; the job is no longer ours");
                Ok(())
            }
            Outcome::Shutdown => self.queue.release(job_id, w).await.map(|_| ()),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "recording the job's outcome failed; rescue will retry it");
        }
    }
}

/// The longest snooze a provider's `Retry-After` can ask for (a longer one is capped).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The latest a quota reset can reschedule a job (a `resets_at` further away is clamped).
pub const MAX_QUOTA_WAIT: Duration = Duration::from_secs(2 * 86_400);

/// `now + wait`, with `wait` capped at `cap`, never overflowing.
fn add_capped(now: DateTime<Utc>, wait: Duration, cap: Duration) -> DateTime<Utc> {
    let wait = chrono::Duration::from_std(wait.min(cap)).unwrap_or(chrono::Duration::zero());
    now.checked_add_signed(wait).unwrap_or(now)
}

/// The next UTC midnight after `now` (a daily quota of unknown reset is over by then).
fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or_else(|| add_capped(now, MAX_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// When a job stopped by `e` (an error that [`is_snooze`](Error::is_snooze)) runs again.
///
/// - An exhausted quota waits for its `resets_at`, clamped between `now + default_snooze`
///   (a reset already past) and `now +` [`MAX_QUOTA_WAIT`]; without a reset time, until the
///   next UTC midnight (a daily quota is over by then at the latest).
/// - A rate limit waits its `retry_after`, capped at [`MAX_RETRY_AFTER`], or
///   `default_snooze` when the provider did not say.
///
/// The arithmetic is checked: an absurd provider value cannot overflow.
pub(crate) fn snooze_until(
    now: DateTime<Utc>,
    e: &Error,
    default_snooze: Duration,
) -> DateTime<Utc> {
    match e {
        Error::QuotaExhausted { resets_at, .. } => {
            let earliest = add_capped(now, default_snooze, MAX_RETRY_AFTER);
            let latest = add_capped(now, MAX_QUOTA_WAIT, MAX_QUOTA_WAIT);
            match resets_at {
                Some(at) => (*at).clamp(earliest, latest),
                None => next_utc_midnight(now).max(earliest),
            }
        }
        _ => add_capped(
            now,
            e.retry_after().unwrap_or(default_snooze),
            MAX_RETRY_AFTER,
        ),
    }
}

/// Errors that retrying cannot fix: configuration, authentication, unsupported operations.
fn e_is_final(e: &Error) -> bool {
    matches!(
        e,
        Error::Config(_) | Error::AuthFailed { .. } | Error::Unsupported { .. }
    )
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

async fn wait_for_work(notifier: Option<&dyn JobNotifier>, max: Duration) {
    match notifier {
        Some(n) => n.wait(max).await,
        None => tokio::time::sleep(max).await,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn enormous_retry_after_is_capped_not_overflowing() {
        let e = Error::RateLimited {
            provider: "hubspot".into(),
            retry_after: Some(Duration::MAX),
        };
        let until = snooze_until(now(), &e, Duration::from_secs(60));
        assert_eq!(until, now() + chrono::Duration::days(1));
        let ms = Error::RateLimited {
            provider: "hubspot".into(),
            retry_after: Some(Duration::from_millis(i64::MAX as u64)),
        };
        assert_eq!(
            snooze_until(now(), &ms, Duration::from_secs(60)),
            now() + chrono::Duration::days(1)
        );
        let plain = Error::RateLimited {
            provider: "hubspot".into(),
            retry_after: None,
        };
        assert_eq!(
            snooze_until(now(), &plain, Duration::from_secs(60)),
            now() + chrono::Duration::seconds(60)
        );
        assert_eq!(
            add_capped(
                DateTime::<Utc>::MAX_UTC,
                Duration::from_secs(10),
                MAX_RETRY_AFTER
            ),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn quota_waits_for_its_reset_clamped_or_until_utc_midnight() {
        let quota = |resets_at| Error::QuotaExhausted {
            provider: "hubspot".into(),
            resets_at,
        };
        let d = Duration::from_secs(60);
        let reset = now() + chrono::Duration::hours(3);
        assert_eq!(snooze_until(now(), &quota(Some(reset)), d), reset);
        assert_eq!(
            snooze_until(now(), &quota(None), d),
            Utc.with_ymd_and_hms(2024, 6, 2, 0, 0, 0).unwrap()
        );
        assert_eq!(
            snooze_until(now(), &quota(Some(DateTime::<Utc>::MAX_UTC)), d),
            now() + chrono::Duration::days(2)
        );
        assert_eq!(
            snooze_until(now(), &quota(Some(DateTime::<Utc>::MIN_UTC)), d),
            now() + chrono::Duration::seconds(60)
        );
        let late = Utc.with_ymd_and_hms(2024, 6, 1, 23, 59, 30).unwrap();
        assert_eq!(
            snooze_until(late, &quota(None), d),
            late + chrono::Duration::seconds(60)
        );
    }
}
