//! The scheduler: a cron expression run by exactly one process among many, plus the manual
//! trigger behind the HTTP API's `POST /{workspace}/sync`.
//!
//! Leadership is the store's workspace lock taken on a reserved id ([`LEADER_LOCK_ID`]): a
//! session advisory lock on Postgres (released by the server if the leader dies), a renewed
//! lease row on SQLite. Only the leader ticks, rescues expired jobs, fails stale syncs and
//! prunes old jobs. Every enqueue also carries a unique key, so even a leadership change in
//! the middle of a tick cannot enqueue a workspace's sync twice.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{ConnectorKind, SyncMode};
use crate::queue::{NewJob, SYNC_JOB};
use crate::store::{
    ConnectionStatus, STALE_SYNC_AFTER, SyncErrors, SyncOutcome, SyncStatus, SyncStore,
};

/// The default schedule: every day at 02:00 UTC.
pub const DEFAULT_CRON: &str = "0 2 * * *";

/// The reserved lock id whose holder is the scheduler leader (no workspace has it).
pub const LEADER_LOCK_ID: Uuid = Uuid::from_u128(0x5c4e_d01e_0000_4000_8000_0000_0000_1ead);

/// Priority of scheduled syncs.
pub const SCHEDULED_PRIORITY: i32 = 0;

/// Priority of manual syncs (run before scheduled ones).
pub const MANUAL_PRIORITY: i32 = 1;

/// The payload of a [`SYNC_JOB`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJobPayload {
    /// The `sync_log` row this job runs.
    pub sync_id: Uuid,
    /// One connector, or every connector of the workspace.
    #[serde(default)]
    pub connector: Option<ConnectorKind>,
    /// A forced mode, or the orchestrator's decision.
    #[serde(default)]
    pub mode: Option<SyncMode>,
}

/// What a trigger created: the sync run and its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredSync {
    /// The `sync_log` row.
    pub sync_id: Uuid,
    /// The job.
    pub job_id: Uuid,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Syncs enqueued.
    pub enqueued: Vec<TriggeredSync>,
    /// Workspaces skipped because a sync was pending or running.
    pub skipped: Vec<Uuid>,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Cron expression, UTC: five fields (`min hour dom mon dow`), or six/seven with seconds
    /// (and year).
    pub cron: String,
    /// How often a non-leader tries to become leader.
    pub election_interval: Duration,
    /// How often the leader rescues expired jobs and fails stale syncs.
    pub maintenance_interval: Duration,
    /// Finished jobs older than this are pruned.
    pub job_retention: Duration,
    /// Timeout of each sync job.
    pub job_timeout: Duration,
    /// Attempts of each sync job.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            cron: DEFAULT_CRON.into(),
            election_interval: Duration::from_secs(15),
            maintenance_interval: Duration::from_secs(60),
            job_retention: Duration::from_secs(7 * 86_400),
            job_timeout: crate::queue::DEFAULT_JOB_TIMEOUT,
            max_attempts: crate::queue::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// A parsed cron schedule (UTC).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    schedule: cron::Schedule,
}

impl CronSchedule {
    /// Parses a five-field expression (`0 2 * * *`) or one with seconds (and year).
    pub fn parse(expr: &str) -> Result<Self> {
        let fields = expr.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expr}"),
            6 | 7 => expr.to_owned(),
            _ => {
                return Err(Error::config(format!(
                    "invalid cron expression {expr:?}: expected 5 fields (min hour dom mon dow)"
                )));
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| Error::config(format!("invalid cron expression {expr:?}: {e}")))?;
        Ok(CronSchedule {
            expr: expr.to_owned(),
            schedule,
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }
}

/// Enqueues scheduled and manual syncs.
pub struct Scheduler {
    /// The store, which is also the queue the syncs are enqueued on.
    store: Arc<dyn SyncStore>,
    schedule: CronSchedule,
    config: SchedulerConfig,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("cron", &self.schedule.expr())
            .finish_non_exhaustive()
    }
}

fn unique_key(connector: Option<ConnectorKind>) -> String {
    match connector {
        Some(c) => format!("{SYNC_JOB}:{c}"),
        None => format!("{SYNC_JOB}:*"),
    }
}

impl Scheduler {
    /// A scheduler over `store`: it reads connections and `sync_log` there and enqueues
    /// the sync jobs on the same handle (a [`SyncStore`] is also the job queue).
    ///
    /// # Errors
    /// [`Error::Config`] when `config.cron` is not a valid expression.
    pub fn new(store: Arc<dyn SyncStore>, config: SchedulerConfig) -> Result<Self> {
        let schedule = CronSchedule::parse(&config.cron)?;
        Ok(Scheduler {
            store,
            schedule,
            config,
        })
    }

    /// The schedule.
    pub fn schedule(&self) -> &CronSchedule {
        &self.schedule
    }

    async fn enqueue_sync(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        mode: Option<SyncMode>,
        priority: i32,
    ) -> Result<TriggeredSync> {
        let sync = self
            .store
            .create_sync(workspace_id, connector, mode)
            .await?;
        let payload = SyncJobPayload {
            sync_id: sync.id,
            connector,
            mode,
        };
        let job = NewJob::new(workspace_id, SYNC_JOB, serde_json::to_value(&payload)?)
            .priority(priority)
            .max_attempts(self.config.max_attempts)
            .timeout(self.config.job_timeout)
            .unique_key(unique_key(connector));
        match self.store.enqueue(job).await {
            Ok(job) => Ok(TriggeredSync {
                sync_id: sync.id,
                job_id: job.id,
            }),
            Err(e) => {
                // The run will never start: close it so it does not look pending forever.
                let outcome = SyncOutcome {
                    status: SyncStatus::Failed,
                    records_synced: 0,
                    errors: SyncErrors::default(),
                    error_message: Some(format!("not enqueued: {e}")),
                };
                if let Err(close) = self
                    .store
                    .finish_sync(workspace_id, sync.id, &outcome)
                    .await
                {
                    tracing::warn!(error = %close, "closing an unenqueued sync run failed");
                }
                Err(e)
            }
        }
    }

    /// Starts a sync now (priority [`MANUAL_PRIORITY`]).
    ///
    /// The connector must exist and be enabled (without a connector: the workspace must
    /// have an enabled connection), else [`Error::Config`] and nothing is created: a run
    /// that could never start would otherwise block the workspace. Stale runs of the
    /// workspace (running, or pending, for more than an hour) are failed next. Then, if a
    /// sync that overlaps this one (the same connector, or either covering every connector)
    /// is pending or running, the result is [`Error::Conflict`] carrying that run's id (the
    /// HTTP API answers 409).
    pub async fn trigger_sync(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        mode: Option<SyncMode>,
    ) -> Result<TriggeredSync> {
        self.check_syncable(workspace_id, connector).await?;
        let now = self.store.now();
        let stale_before = now - chrono::Duration::from_std(STALE_SYNC_AFTER).unwrap_or_default();
        let failed = self
            .store
            .fail_stale_syncs(
                Some(workspace_id),
                stale_before,
                "stale: running or pending for more than 1 hour; failed before a new trigger",
            )
            .await?;
        if !failed.is_empty() {
            tracing::warn!(%workspace_id, stale = failed.len(), "failed stale syncs");
            // Their jobs' workers are gone: take the jobs back from dead workers, then
            // cancel them so the new trigger is not blocked by a run already given up on.
            self.store.rescue_expired().await?;
            for id in &failed {
                self.store.cancel_jobs_for_sync(workspace_id, *id).await?;
            }
        }
        let active = self.store.active_syncs(workspace_id).await?;
        if let Some(running) = active
            .iter()
            .find(|s| connector.is_none() || s.connector.is_none() || s.connector == connector)
        {
            return Err(Error::Conflict {
                message: format!(
                    "a sync of workspace {workspace_id} is already {}",
                    running.status
                ),
                running_id: Some(running.id),
            });
        }
        self.enqueue_sync(workspace_id, connector, mode, MANUAL_PRIORITY)
            .await
    }

    /// Checks that `connector` (or, with `None`, at least one connector) of the workspace
    /// exists and is enabled.
    async fn check_syncable(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
    ) -> Result<()> {
        match connector {
            Some(kind) => match self.store.get_connection(workspace_id, kind).await? {
                None => Err(Error::config(format!(
                    "workspace {workspace_id} has no {kind} connection"
                ))),
                Some(c) if c.status == ConnectionStatus::Disabled => Err(Error::config(format!(
                    "the {kind} connection of workspace {workspace_id} is disabled"
                ))),
                Some(_) => Ok(()),
            },
            None => {
                let connections = self.store.list_connections(workspace_id).await?;
                if connections
                    .iter()
                    .any(|c| c.status != ConnectionStatus::Disabled)
                {
                    Ok(())
                } else {
                    Err(Error::config(format!(
                        "workspace {workspace_id} has no enabled connection"
                    )))
                }
            }
        }
    }

    /// One tick: for each workspace with enabled connections, skip it when a sync is pending
    /// or running, else create a pending `sync_log` row and a job with priority
    /// [`SCHEDULED_PRIORITY`].
    pub async fn tick(&self) -> Result<TickReport> {
        let mut report = TickReport::default();
        for workspace_id in self.store.workspaces().await? {
            let connections = self.store.list_connections(workspace_id).await?;
            if connections
                .iter()
                .all(|c| c.status == ConnectionStatus::Disabled)
            {
                continue;
            }
            if !self.store.active_syncs(workspace_id).await?.is_empty() {
                report.skipped.push(workspace_id);
                continue;
            }
            match self
                .enqueue_sync(workspace_id, None, None, SCHEDULED_PRIORITY)
                .await
            {
                Ok(t) => report.enqueued.push(t),
                Err(Error::Conflict { .. }) => report.skipped.push(workspace_id),
                Err(e) => {
                    tracing::error!(%workspace_id, error = %e, "scheduling a sync failed");
                }
            }
        }
        tracing::info!(
            enqueued = report.enqueued.len(),
            skipped = report.skipped.len(),
            "scheduler tick"
        );
        Ok(report)
    }

    /// Leader maintenance: rescue jobs whose worker died, fail stale syncs, prune old jobs.
    pub async fn maintain(&self) -> Result<()> {
        let rescued = self.store.rescue_expired().await?;
        let now = self.store.now();
        let stale_before = now - chrono::Duration::from_std(STALE_SYNC_AFTER).unwrap_or_default();
        let stale = self
            .store
            .fail_stale_syncs(
                None,
                stale_before,
                "stale: running or pending for more than 1 hour",
            )
            .await?;
        let keep = chrono::Duration::from_std(self.config.job_retention).unwrap_or_default();
        let pruned = self.store.prune_finished(now - keep).await?;
        if rescued + pruned > 0 || !stale.is_empty() {
            tracing::info!(
                rescued,
                pruned,
                stale = stale.len(),
                "scheduler maintenance"
            );
        }
        Ok(())
    }

    /// Runs until `shutdown` fires: competes for leadership; while leader, ticks at every
    /// fire time of the schedule and runs maintenance.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let span = tracing::info_span!("scheduler", cron = %self.schedule.expr());
        async move {
            while !shutdown.is_cancelled() {
                let lock = match self.store.try_lock_workspace(LEADER_LOCK_ID).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "leader election failed");
                        None
                    }
                };
                let Some(lock) = lock else {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.config.election_interval) => continue,
                    }
                };
                tracing::info!("became scheduler leader");
                let lost = lock.lost();
                self.lead(&shutdown, &lost).await;
                if let Err(e) = lock.release().await {
                    tracing::warn!(error = %e, "releasing leadership failed");
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn lead(&self, shutdown: &CancellationToken, lost: &CancellationToken) {
        let mut maintenance = tokio::time::interval(self.config.maintenance_interval);
        loop {
            let now = self.store.now();
            let Some(next) = self.schedule.next_after(now) else {
                tracing::warn!("the cron schedule has no future fire time");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = lost.cancelled() => return,
                }
            };
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = lost.cancelled() => {
                    tracing::warn!("lost scheduler leadership");
                    return;
                }
                _ = maintenance.tick() => {
                    if let Err(e) = self.maintain().await {
                        tracing::warn!(error = %e, "scheduler maintenance failed");
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if let Err(e) = self.tick().await {
                        tracing::error!(error = %e, "scheduler tick failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_five_fields_default_daily_at_two() {
        let s = CronSchedule::parse(DEFAULT_CRON).unwrap();
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 1, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap())
        );
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2024, 5, 2, 2, 0, 0).unwrap())
        );
        let every_15 = CronSchedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            every_15.next_after(t),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 2, 15, 0).unwrap())
        );
        let seconds = CronSchedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            seconds.next_after(t),
            Some(Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 10).unwrap())
        );
    }

    #[test]
    fn bad_cron_is_a_config_error() {
        for bad in ["", "* *", "61 * * * *", "a b c d e"] {
            assert!(
                matches!(CronSchedule::parse(bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn payload_round_trip() {
        let p = SyncJobPayload {
            sync_id: Uuid::nil(),
            connector: Some(ConnectorKind::GoogleDrive),
            mode: Some(SyncMode::Backfill),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["connector"], "google-drive");
        assert_eq!(serde_json::from_value::<SyncJobPayload>(v).unwrap(), p);
        let t = TriggeredSync {
            sync_id: Uuid::nil(),
            job_id: Uuid::nil(),
        };
        assert!(serde_json::to_value(t).unwrap().get("syncId").is_some());
    }
}
