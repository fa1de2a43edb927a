//! The orchestrator: syncs a workspace's connections under its lock, concurrently and in
//! isolation, committing records and checkpoints together, then runs post-sync hooks.
//!
//! ```text
//! sync_workspace(ws)
//!   ├─ take the workspace lock (held elsewhere → Error::Conflict)
//!   ├─ per connection, concurrently (bounded), each isolated from the others' failures:
//!   │    mode: forced, else incremental when a checkpoint is stored, else initial
//!   │    status syncing → connector.sync(ctx, StoreSink) → status synced | error
//!   │    StoreSink: validate records (bad ones become per-record failures), apply computed
//!   │               fields, write_batch(records + checkpoint) in chunks of `batch_size`,
//!   │               in a task, while the connector fetches the next page (one page in
//!   │               flight; the next write, and the end of the run, wait for it)
//!   │    sync_log row: running → completed | completed_with_errors | failed
//!   │      (a rate limit or exhausted quota ends the run cleanly: completed_with_errors
//!   │       with `errors.rate_limited`, checkpoint kept, connection not in error)
//!   │    a backfill when the connector asks for one (`needs_backfill`)
//!   │    reconciliation of the provider's totals with the live rows stored
//!   └─ post-sync hooks (built-ins, then the host's), errors recorded, never fatal
//! ```
//!
//! Counting (the success threshold, `records_synced`, progress) covers records of the
//! primary tables only; deal-contact links are stored with them but counted apart. A run
//! whose future is dropped before it recorded its outcome fails its `sync_log` row as
//! interrupted, so no row stays `running`.
//!
//! # Reconciliation
//!
//! After a successful run, every [`SourceTotal`](crate::SourceTotal) the connector reported
//! (a stream read in full) is compared with the workspace's live rows of that kind from that
//! source, and both numbers go to [`SyncErrors::reconciliation`] (the result and
//! `sync_log.errors`). Tolerance: records change while a pass reads them, so the gap
//! `total − stored` is allowed up to the stored rows modified since the pass started (their
//! `source_updated_at`) plus the records that failed this run (captured, not silent). A
//! larger gap is a warning, and the stream's stored checkpoint gets `repair = true`, so the
//! connector runs a repairing full pass at the next sync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::capture::{CaptureSummary, DEFAULT_SUCCESS_THRESHOLD, RecordFailure};
use crate::connector::{
    Checkpoint, DEFAULT_WATERMARK_LAG, ProgressReporter, RecordBatch, RecordSink, SyncCapable,
    SyncContext, SyncReport, WriteCounts,
};
use crate::error::{Error, Result};
use crate::hooks::{HookOutcome, PostSyncHook, SyncCompleted};
use crate::model::{ConnectorKind, Record, RecordKind, SyncMode};
use crate::queue::{Job, JobContext, JobHandler};
use crate::scheduler::SyncJobPayload;
use crate::store::{
    ConnectionRow, ConnectionStatus, Credentials, RateLimitStop, Reconciliation, SyncErrors,
    SyncOutcome, SyncStatus, SyncStore, WorkspaceLock, validate_record,
};

/// Builds a connector from its connection row and opened credentials.
pub type ConnectorFactory =
    Arc<dyn Fn(&ConnectionRow, Option<&Credentials>) -> Result<Box<dyn SyncCapable>> + Send + Sync>;

/// Turns `connections` rows into connector instances, one factory per connector kind.
///
/// [`ConnectorRegistry::builtin`] registers every connector whose feature is enabled; hosts
/// can [`register`](ConnectorRegistry::register) their own (or fakes, in tests).
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    factories: BTreeMap<ConnectorKind, ConnectorFactory>,
}

impl std::fmt::Debug for ConnectorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorRegistry")
            .field("connectors", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConnectorRegistry {
    /// A registry without connectors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the factory of a connector kind.
    pub fn register(
        mut self,
        kind: ConnectorKind,
        factory: impl Fn(&ConnectionRow, Option<&Credentials>) -> Result<Box<dyn SyncCapable>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.factories.insert(kind, Arc::new(factory));
        self
    }

    /// Every built-in connector whose feature is enabled, talking to the providers' real
    /// hosts; `base_urls` replaces a provider's origin (a simulator, a proxy).
    pub fn builtin(base_urls: &BTreeMap<ConnectorKind, String>) -> Self {
        #[allow(unused_mut)]
        let mut registry = Self::new();
        let _ = base_urls;
        #[cfg(feature = "hubspot")]
        {
            let base = base_urls
                .get(&ConnectorKind::Hubspot)
                .cloned()
                .unwrap_or_else(|| "https://api.hubapi.com".to_owned());
            registry = registry.register(ConnectorKind::Hubspot, move |row, creds| {
                let creds = creds
                    .ok_or_else(|| Error::config("the hubspot connection has no credentials"))?;
                let credentials = crate::HubSpotCredentials::from_lookup(|k| creds.get(k))?;
                let config = crate::HubSpotConfig::from_json(&row.config)?;
                Ok(Box::new(crate::HubSpotConnector::new(
                    &base,
                    credentials,
                    config,
                )?))
            });
        }
        #[cfg(feature = "gong")]
        {
            let base = base_urls
                .get(&ConnectorKind::Gong)
                .cloned()
                .unwrap_or_else(|| "https://api.gong.io".to_owned());
            registry = registry.register(ConnectorKind::Gong, move |row, creds| {
                let creds =
                    creds.ok_or_else(|| Error::config("the gong connection has no credentials"))?;
                let credentials = crate::GongCredentials::from_lookup(|k| creds.get(k))?;
                let config = crate::GongConfig::from_json(&row.config)?;
                Ok(Box::new(crate::GongConnector::new(
                    &base,
                    credentials,
                    config,
                )?))
            });
        }
        registry
    }

    /// Builds the connector of a connection.
    pub fn build(
        &self,
        row: &ConnectionRow,
        credentials: Option<&Credentials>,
    ) -> Result<Box<dyn SyncCapable>> {
        let factory = self.factories.get(&row.connector).ok_or_else(|| {
            Error::config(format!(
                "no connector registered for {} (is its cargo feature enabled?)",
                row.connector
            ))
        })?;
        factory(row, credentials)
    }
}

/// Orchestrator settings.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Records per `write_batch` (larger pages are split).
    pub batch_size: usize,
    /// Connectors synced at once (`None`: all at once; each has its own provider budget).
    pub max_concurrency: Option<usize>,
    /// Success rate at or above which failed records still give `completed_with_errors`.
    pub success_threshold: f64,
    /// Watermark lag: watermarks never pass `sync start − lag`.
    pub watermark_lag: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            batch_size: crate::capture::DEFAULT_BATCH_SIZE,
            max_concurrency: None,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            watermark_lag: DEFAULT_WATERMARK_LAG,
        }
    }
}

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only these connectors (`None`: every enabled connection of the workspace).
    pub connectors: Option<Vec<ConnectorKind>>,
    /// Force a mode (`None`: incremental with a stored checkpoint, else initial).
    pub mode: Option<SyncMode>,
    /// An existing pending `sync_log` row to run (created by a trigger). With one
    /// connector it becomes that connector's row; otherwise it is the umbrella row of the
    /// run and each connector gets its own.
    pub sync_id: Option<Uuid>,
    /// Cancels the sync.
    pub cancel: CancellationToken,
    /// Where progress goes (records written so far across connectors).
    pub progress: Option<ProgressReporter>,
}

/// The outcome of one connector's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorResult {
    /// The connector.
    pub connector: ConnectorKind,
    /// Its `sync_log` row.
    pub sync_id: Uuid,
    /// Final status.
    pub status: SyncStatus,
    /// The mode it ran in.
    pub mode: SyncMode,
    /// Rows of the primary tables written (inserted, updated, unchanged, archived);
    /// deal-contact links are not counted here (see `records_by_table`).
    pub counts: WriteCounts,
    /// Records handed to the store, by table.
    pub records_by_table: BTreeMap<String, u64>,
    /// Failed records (the first 100 with ids) and the total.
    pub errors: SyncErrors,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// HTTP requests made.
    pub requests: u64,
    /// HTTP retries.
    pub retries: u64,
    /// Whether a backfill ran after the sync.
    pub backfilled: bool,
    /// Whether the run stopped on a rate limit or an exhausted quota (its checkpoint is
    /// committed; a later run resumes).
    pub rate_limited: bool,
    /// How long the provider asked to wait, in milliseconds, when it said.
    pub retry_after_ms: Option<u64>,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: u64,
}

/// The outcome of [`Orchestrator::sync_workspace`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceSyncResult {
    /// The workspace.
    pub workspace_id: Uuid,
    /// One result per connector.
    pub connectors: Vec<ConnectorResult>,
    /// What each post-sync hook did.
    pub hooks: Vec<HookOutcome>,
}

impl WorkspaceSyncResult {
    /// The worst status of the run: `failed` if any connector failed, else
    /// `completed_with_errors` if any had errors, else `completed`.
    pub fn status(&self) -> SyncStatus {
        if self
            .connectors
            .iter()
            .any(|c| c.status == SyncStatus::Failed)
        {
            SyncStatus::Failed
        } else if self
            .connectors
            .iter()
            .any(|c| c.status == SyncStatus::CompletedWithErrors)
        {
            SyncStatus::CompletedWithErrors
        } else {
            SyncStatus::Completed
        }
    }

    /// Rows written across connectors.
    pub fn counts(&self) -> WriteCounts {
        let mut total = WriteCounts::default();
        for c in &self.connectors {
            total += c.counts;
        }
        total
    }
}

/// Syncs workspaces. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    store: Arc<dyn SyncStore>,
    registry: Arc<ConnectorRegistry>,
    hooks: Vec<Arc<dyn PostSyncHook>>,
    config: OrchestratorConfig,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("registry", &self.registry)
            .field(
                "hooks",
                &self.hooks.iter().map(|h| h.name()).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}

/// The store-backed sink: validates, applies computed fields, and commits each chunk with
/// its checkpoint in one `write_batch`.
///
/// Writes are pipelined: a page's chunks are written by a task while the connector fetches
/// the next page. At most one page is in flight; the next `write`, [`RecordSink::flush`]
/// (and [`StoreSink::settle`] at the end of a run, whatever its outcome) waits for it, so a
/// store error reaches the connector one page later at most and the run's result always
/// includes every committed page. Dropping the sink (the sync future was dropped) aborts
/// the write in flight, whose transaction then rolls back: records and checkpoint still
/// commit together or not at all.
///
/// Counting (the success threshold, `records_synced`, progress) covers records of the
/// primary tables only: [`RecordKind::DealContact`] links are stored in chunks of their own
/// after the page's records and counted apart, so five links per deal do not turn a 10 %
/// deal failure rate into a success.
struct StoreSink {
    store: Arc<dyn SyncStore>,
    workspace_id: Uuid,
    source: ConnectorKind,
    batch_size: usize,
    /// The last checkpoint that is durable.
    durable: Checkpoint,
    /// Rows of the primary tables (every table but `deal_contacts`).
    counts: WriteCounts,
    /// Deal-contact links.
    link_counts: WriteCounts,
    by_table: BTreeMap<String, u64>,
    failures: CaptureSummary,
    progress: Option<ProgressReporter>,
    in_flight: Option<InFlight>,
}

/// What one page's write did: primary-table rows and links.
#[derive(Debug, Clone, Copy, Default)]
struct PageCounts {
    records: WriteCounts,
    links: WriteCounts,
}

/// A page being written, and the checkpoint it makes durable.
struct InFlight {
    task: tokio::task::JoinHandle<Result<PageCounts>>,
    checkpoint: Checkpoint,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A no-op once the task finished; otherwise its transaction is dropped (rolled back).
        self.task.abort();
    }
}

impl StoreSink {
    /// Waits for the page in flight, if any; its counts are added and its checkpoint becomes
    /// the durable one.
    async fn settle(&mut self) -> Result<WriteCounts> {
        let Some(mut f) = self.in_flight.take() else {
            return Ok(WriteCounts::default());
        };
        let page = match (&mut f.task).await {
            Ok(written) => written?,
            Err(e) => {
                return Err(Error::Storage {
                    message: format!("the batch writer stopped: {e}"),
                    source: None,
                });
            }
        };
        self.durable = std::mem::take(&mut f.checkpoint);
        self.counts += page.records;
        self.link_counts += page.links;
        if let Some(p) = &self.progress {
            p.report(
                self.counts.written() + self.counts.unchanged,
                None,
                format!("{}: records stored", self.source),
            );
        }
        let mut total = page.records;
        total += page.links;
        Ok(total)
    }
}

#[async_trait]
impl RecordSink for StoreSink {
    /// Returns the counts of the previous page (records and links), whose write this call
    /// waited for. The page given here is durable once the next `write` or
    /// [`flush`](RecordSink::flush) returns `Ok`.
    async fn write(&mut self, batch: RecordBatch, checkpoint: &Checkpoint) -> Result<WriteCounts> {
        let RecordBatch {
            records,
            deletions,
            failures,
        } = batch;
        self.failures.record_failures(failures);
        let mut good = Vec::with_capacity(records.len());
        for mut r in records {
            match validate_record(&r) {
                Ok(()) => {
                    crate::hooks::apply_computed_fields(&mut r, Utc::now());
                    good.push(r);
                }
                Err(e) => self
                    .failures
                    .record_failures([RecordFailure::new(Some(r.source_id()), e.to_string())]),
            }
        }
        for r in &good {
            *self
                .by_table
                .entry(r.kind().table().to_owned())
                .or_insert(0) += 1;
        }
        let (links, primary): (Vec<Record>, Vec<Record>) = good
            .into_iter()
            .partition(|r| r.kind() == RecordKind::DealContact);
        self.failures.succeeded += primary.len() as u64;
        let previous = self.settle().await?;

        // Chunks before the last carry the previous (still true) durable checkpoint; the
        // last chunk carries the new one, so the checkpoint never runs ahead of the data.
        // Links come after the page's records, in chunks of their own (counted apart).
        let size = self.batch_size.max(1);
        let mut chunks: Vec<(Vec<Record>, bool)> = Vec::new();
        for (records, is_link) in [(primary, false), (links, true)] {
            let mut iter = records.into_iter().peekable();
            while iter.peek().is_some() {
                chunks.push((iter.by_ref().take(size).collect(), is_link));
            }
        }
        if chunks.is_empty() {
            chunks.push((Vec::new(), false));
        }
        let last = chunks.len() - 1;
        let mut deletions = Some(deletions);
        let parts: Vec<(RecordBatch, Checkpoint, bool)> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, (chunk, is_link))| {
                let is_last = i == last;
                let part = RecordBatch {
                    records: chunk,
                    deletions: if is_last {
                        deletions.take().unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    failures: Vec::new(),
                };
                let cp = if is_last {
                    checkpoint.clone()
                } else {
                    self.durable.clone()
                };
                (part, cp, is_link)
            })
            .collect();
        let store = self.store.clone();
        let (ws, source) = (self.workspace_id, self.source);
        let task = tokio::spawn(
            async move {
                let mut page = PageCounts::default();
                for (part, cp, is_link) in parts {
                    let c = store.write_batch(ws, source, &part, &cp).await?;
                    // Deletions (in the last chunk) count as archived records.
                    page.records.archived += c.archived;
                    let target = if is_link {
                        &mut page.links
                    } else {
                        &mut page.records
                    };
                    target.inserted += c.inserted;
                    target.updated += c.updated;
                    target.unchanged += c.unchanged;
                }
                Ok(page)
            }
            .instrument(tracing::Span::current()),
        );
        self.in_flight = Some(InFlight {
            task,
            checkpoint: checkpoint.clone(),
        });
        Ok(previous)
    }

    /// Waits for the page in flight: when it returns `Ok`, every page written so far and
    /// its checkpoint are committed.
    async fn flush(&mut self) -> Result<()> {
        self.settle().await.map(|_| ())
    }
}

/// Fails a `sync_log` row whose run was dropped before it recorded its outcome (the sync
/// future was dropped: a job abandoned after its timeout, a host that stopped waiting), so
/// no `running` row outlives its run. Disarmed once the outcome is recorded.
struct RunGuard {
    store: Arc<dyn SyncStore>,
    workspace_id: Uuid,
    sync_id: Uuid,
    connector: Option<ConnectorKind>,
    armed: bool,
}

impl RunGuard {
    fn new(
        store: Arc<dyn SyncStore>,
        workspace_id: Uuid,
        sync_id: Uuid,
        connector: Option<ConnectorKind>,
    ) -> Self {
        RunGuard {
            store,
            workspace_id,
            sync_id,
            connector,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(sync_id = %self.sync_id, "a dropped sync run could not be failed: no runtime");
            return;
        };
        let (store, ws, id, connector) = (
            self.store.clone(),
            self.workspace_id,
            self.sync_id,
            self.connector,
        );
        handle.spawn(async move {
            let message = "interrupted: the sync was stopped before it finished";
            let outcome = SyncOutcome {
                status: SyncStatus::Failed,
                records_synced: 0,
                errors: SyncErrors::default(),
                error_message: Some(message.to_owned()),
            };
            match store.finish_sync(ws, id, &outcome).await {
                Ok(()) => {}
                // The outcome was recorded after all (dropped while closing).
                Err(Error::Conflict { .. }) => return,
                Err(e) => {
                    tracing::warn!(error = %e, sync_id = %id, "failing a dropped sync run failed")
                }
            }
            if let Some(kind) = connector {
                let status = store
                    .set_connection_status(ws, kind, ConnectionStatus::Error, Some(message))
                    .await;
                if let Err(e) = status {
                    tracing::warn!(error = %e, "resetting the connection status failed");
                }
            }
        });
    }
}

/// The `rate_limited` outcome of a run stopped by `e` (a snooze error).
fn rate_limit_stop(kind: ConnectorKind, e: &Error) -> RateLimitStop {
    let provider = match e {
        Error::RateLimited { provider, .. }
        | Error::QuotaExhausted { provider, .. }
        | Error::Api { provider, .. } => provider.to_string(),
        _ => kind.to_string(),
    };
    let quota = matches!(e, Error::QuotaExhausted { .. });
    RateLimitStop {
        provider,
        quota,
        retry_after_ms: if quota {
            None
        } else {
            e.retry_after().map(millis)
        },
        resets_at: e.resets_at(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn http_number(report: &SyncReport, key: &str) -> u64 {
    report
        .details
        .get("http")
        .and_then(|h| h.get(key))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

impl Orchestrator {
    /// An orchestrator over `store` building connectors from `registry`, with no hooks.
    pub fn new(store: Arc<dyn SyncStore>, registry: ConnectorRegistry) -> Self {
        Orchestrator {
            store,
            registry: Arc::new(registry),
            hooks: Vec::new(),
            config: OrchestratorConfig::default(),
        }
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: OrchestratorConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a post-sync hook; hooks run in the order added.
    pub fn with_hook(mut self, hook: Arc<dyn PostSyncHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SyncStore> {
        &self.store
    }

    /// Syncs a workspace (see the module docs).
    ///
    /// # Errors
    /// [`Error::Conflict`] when another sync holds the workspace lock; storage errors
    /// reading the connections. A connector's failure is not an error: it is in its
    /// [`ConnectorResult`].
    pub async fn sync_workspace(
        &self,
        workspace_id: Uuid,
        options: SyncOptions,
    ) -> Result<WorkspaceSyncResult> {
        let span = tracing::info_span!("sync", %workspace_id);
        self.sync_workspace_inner(workspace_id, options)
            .instrument(span)
            .await
    }

    async fn sync_workspace_inner(
        &self,
        workspace_id: Uuid,
        options: SyncOptions,
    ) -> Result<WorkspaceSyncResult> {
        let Some(lock) = self.store.try_lock_workspace(workspace_id).await? else {
            let running = self.store.active_syncs(workspace_id).await?;
            return Err(Error::Conflict {
                message: format!("a sync of workspace {workspace_id} is already running"),
                running_id: running
                    .iter()
                    .find(|s| s.status == SyncStatus::Running)
                    .or(running.first())
                    .map(|s| s.id),
            });
        };
        self.run_under(lock, options).await
    }

    /// Syncs a workspace under a lock the caller already holds (taken with
    /// [`LockStore::try_lock_workspace`](crate::LockStore::try_lock_workspace)), e.g. to
    /// write the connection's credentials and config and sync them with no other run in
    /// between. The lock is released when the sync ends.
    ///
    /// # Errors
    /// As [`Orchestrator::sync_workspace`], never [`Error::Conflict`].
    pub async fn sync_workspace_locked(
        &self,
        lock: WorkspaceLock,
        options: SyncOptions,
    ) -> Result<WorkspaceSyncResult> {
        let workspace_id = lock.workspace_id();
        let span = tracing::info_span!("sync", %workspace_id);
        self.run_under(lock, options).instrument(span).await
    }

    async fn run_under(
        &self,
        lock: WorkspaceLock,
        options: SyncOptions,
    ) -> Result<WorkspaceSyncResult> {
        let workspace_id = lock.workspace_id();
        // The lock lost (connection died, lease taken over) cancels the sync.
        let cancel = options.cancel.child_token();
        let lost = lock.lost();
        let watchdog = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                cancel.cancel();
            })
        };
        let result = self.run_locked(workspace_id, &options, &cancel).await;
        watchdog.abort();
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "releasing the workspace lock failed");
        }
        result
    }

    async fn run_locked(
        &self,
        workspace_id: Uuid,
        options: &SyncOptions,
        cancel: &CancellationToken,
    ) -> Result<WorkspaceSyncResult> {
        let connections: Vec<ConnectionRow> = self
            .store
            .list_connections(workspace_id)
            .await?
            .into_iter()
            .filter(|c| c.status != ConnectionStatus::Disabled)
            .filter(|c| {
                options
                    .connectors
                    .as_ref()
                    .is_none_or(|only| only.contains(&c.connector))
            })
            .collect();
        if let Some(only) = &options.connectors {
            for kind in only {
                if !connections.iter().any(|c| c.connector == *kind) {
                    return Err(Error::config(format!(
                        "workspace {workspace_id} has no enabled {kind} connection"
                    )));
                }
            }
        }
        let umbrella = options.sync_id;
        let single = connections.len() == 1;
        let mut umbrella_guard = None;
        if let (Some(id), false) = (umbrella, single) {
            self.store
                .start_sync(workspace_id, id, options.mode)
                .await?;
            umbrella_guard = Some(RunGuard::new(self.store.clone(), workspace_id, id, None));
        }
        let bound = self
            .config
            .max_concurrency
            .unwrap_or(connections.len())
            .max(1);
        let results: Vec<ConnectorResult> = futures_util::stream::iter(connections)
            .map(|row| {
                let sync_id = if single { umbrella } else { None };
                self.run_connector(row, options, sync_id, cancel.clone())
            })
            .buffer_unordered(bound)
            .collect()
            .await;
        let mut results = results;
        results.sort_by_key(|r| r.connector);

        let event = SyncCompleted {
            workspace_id,
            results: results.clone(),
        };
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for hook in &self.hooks {
            let started = Instant::now();
            let outcome = hook
                .after_sync(self.store.as_ref(), &event)
                .instrument(tracing::info_span!("hook", name = hook.name()))
                .await;
            let error = match outcome {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(hook = hook.name(), error = %e, "post-sync hook failed");
                    Some(e.to_string())
                }
            };
            hooks.push(HookOutcome {
                name: hook.name().to_owned(),
                error,
                duration_ms: millis(started.elapsed()),
            });
        }
        let result = WorkspaceSyncResult {
            workspace_id,
            connectors: results,
            hooks,
        };
        if let (Some(id), false) = (umbrella, single) {
            let errors: Vec<RecordFailure> = result
                .connectors
                .iter()
                .flat_map(|c| c.errors.failures.iter().cloned())
                .collect();
            let total: u64 = result.connectors.iter().map(|c| c.errors.total).sum();
            let failed: Vec<String> = result
                .connectors
                .iter()
                .filter_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.connector)))
                .collect();
            let outcome = SyncOutcome {
                status: result.status(),
                records_synced: result.counts().written(),
                errors: SyncErrors::new(&errors, total),
                error_message: (!failed.is_empty()).then(|| failed.join("; ")),
            };
            let finished = self.store.finish_sync(workspace_id, id, &outcome).await;
            if let Some(g) = umbrella_guard.as_mut() {
                g.disarm();
            }
            finished?;
        }
        Ok(result)
    }

    async fn run_connector(
        &self,
        row: ConnectionRow,
        options: &SyncOptions,
        sync_id: Option<Uuid>,
        cancel: CancellationToken,
    ) -> ConnectorResult {
        let kind = row.connector;
        let span = tracing::info_span!("connector", connector = %kind);
        async move {
            let started = Instant::now();
            let workspace_id = row.workspace_id;
            let checkpoint = row.checkpoint();
            let mode = options.mode.unwrap_or(match &checkpoint {
                Ok(c) if !c.is_empty() => SyncMode::Incremental,
                _ => SyncMode::Initial,
            });
            let sync_id = match self.open_log(workspace_id, kind, mode, sync_id).await {
                Ok(id) => id,
                Err(e) => {
                    return ConnectorResult {
                        connector: kind,
                        sync_id: Uuid::nil(),
                        status: SyncStatus::Failed,
                        mode,
                        counts: WriteCounts::default(),
                        records_by_table: BTreeMap::new(),
                        errors: SyncErrors::default(),
                        error: Some(format!("could not record the sync: {e}")),
                        requests: 0,
                        retries: 0,
                        backfilled: false,
                        rate_limited: false,
                        retry_after_ms: None,
                        duration_ms: millis(started.elapsed()),
                    };
                }
            };
            let mut guard = RunGuard::new(self.store.clone(), workspace_id, sync_id, Some(kind));
            let previous = checkpoint.as_ref().cloned().unwrap_or_default();
            let run_started = Utc::now();
            let mut sink = StoreSink {
                store: self.store.clone(),
                workspace_id,
                source: kind,
                batch_size: self.config.batch_size,
                durable: previous.clone(),
                counts: WriteCounts::default(),
                link_counts: WriteCounts::default(),
                by_table: BTreeMap::new(),
                failures: CaptureSummary::default(),
                progress: options.progress.clone(),
                in_flight: None,
            };
            let mut run = self
                .run_connector_sync(&row, checkpoint, mode, &cancel, &mut sink, options)
                .await;
            // The last page may still be in flight: the result counts it, and a store error
            // there fails the run (the connector's own error, if any, stays the reported one).
            if let Err(e) = sink.settle().await {
                if run.is_ok() {
                    run = Err(e);
                } else {
                    tracing::warn!(error = %e, "writing the last page failed too");
                }
            }
            let (report, error, backfilled) = match run {
                Ok((report, backfilled)) => (Some(report), None, backfilled),
                Err(e) => (None, Some(e), false),
            };
            let mut errors = SyncErrors::new(&sink.failures.failures, sink.failures.failed);
            let acceptable = sink.failures.is_acceptable(self.config.success_threshold);
            // A rate limit or an exhausted quota stops the run cleanly (DESIGN 4.6): its
            // checkpoint is committed, and the job resumes it after the limit.
            let stopped = error.as_ref().filter(|e| e.is_snooze());
            errors.rate_limited = stopped.map(|e| rate_limit_stop(kind, e));
            let status = match (&error, acceptable, sink.failures.failed) {
                (Some(e), true, _) if e.is_snooze() => SyncStatus::CompletedWithErrors,
                (Some(_), _, _) | (None, false, _) => SyncStatus::Failed,
                (None, true, 0) => SyncStatus::Completed,
                (None, true, _) => SyncStatus::CompletedWithErrors,
            };
            if let (None, Some(report)) = (&error, &report) {
                let failed = sink.failures.failed;
                self.reconcile(&row, report, &previous, run_started, failed, &mut errors)
                    .await;
            }
            let error_message = match (&error, acceptable) {
                (Some(e), true) if e.is_snooze() => Some(format!(
                    "stopped by {e}; the checkpoint is kept and the sync resumes after the limit"
                )),
                (Some(e), _) => Some(e.to_string()),
                (None, false) => Some(format!(
                    "{} of {} records failed (success rate below {:.0} %)",
                    sink.failures.failed,
                    sink.failures.failed + sink.failures.succeeded,
                    self.config.success_threshold * 100.0
                )),
                (None, true) => None,
            };
            let (requests, retries) = report.as_ref().map_or((0, 0), |r| {
                (http_number(r, "requests"), http_number(r, "retries"))
            });
            let result = ConnectorResult {
                connector: kind,
                sync_id,
                status,
                mode,
                counts: sink.counts,
                records_by_table: sink.by_table,
                errors,
                error: error_message.clone(),
                requests,
                retries,
                backfilled,
                rate_limited: error.as_ref().is_some_and(Error::is_snooze),
                retry_after_ms: error.as_ref().and_then(Error::retry_after).map(millis),
                duration_ms: millis(started.elapsed()),
            };
            self.close_log(&row, &result, report.as_ref(), error.as_ref())
                .await;
            guard.disarm();
            tracing::info!(status = %status, written = result.counts.written(), failed = result.errors.total, "connector sync finished");
            result
        }
        .instrument(span)
        .await
    }

    /// Compares the provider's totals (streams read in full) with the live rows stored,
    /// records both in `errors.reconciliation`, and on a gap beyond the changes made during
    /// the pass (see [`Reconciliation`]) adds a warning and flags the stream for a
    /// repairing full pass (`repair` in the stored checkpoint). Never fails the run: a
    /// store error here becomes a warning.
    async fn reconcile(
        &self,
        row: &ConnectionRow,
        report: &SyncReport,
        previous: &Checkpoint,
        run_started: chrono::DateTime<Utc>,
        failed: u64,
        errors: &mut SyncErrors,
    ) {
        if report.source_totals.is_empty() {
            return;
        }
        let (ws, source) = (row.workspace_id, row.connector);
        let mut repair = Vec::new();
        for t in &report.source_totals {
            // A resumed pass began in an earlier run: its changes count from then.
            let pass_start = previous
                .stream(&t.stream)
                .and_then(|s| s.pass_started_at)
                .map_or(run_started, |p| p.min(run_started));
            let counted = async {
                let stored = self
                    .store
                    .count_live_records(ws, t.kind, source, None)
                    .await?;
                let in_flight = self
                    .store
                    .count_live_records(ws, t.kind, source, Some(pass_start))
                    .await?;
                Ok::<_, Error>((stored, in_flight))
            };
            let (stored, in_flight) = match counted.await {
                Ok(c) => c,
                Err(e) => {
                    errors
                        .warnings
                        .push(format!("{}: reconciliation failed: {e}", t.stream));
                    continue;
                }
            };
            let gap = t.total.saturating_sub(stored);
            let needs_repair = gap > in_flight.saturating_add(failed);
            if needs_repair {
                tracing::warn!(stream = %t.stream, total = t.total, stored, in_flight, "reconciliation gap; a repairing pass runs next sync");
                errors.warnings.push(format!(
                    "{}: the provider reports {} live {} records, {} are stored ({} changed \
                     during the pass); a repairing full pass runs at the next sync",
                    t.stream,
                    t.total,
                    t.kind.table(),
                    stored,
                    in_flight
                ));
                repair.push(t.stream.clone());
            }
            errors.reconciliation.push(Reconciliation {
                stream: t.stream.clone(),
                kind: t.kind,
                source_total: t.total,
                stored,
                in_flight,
                failed,
                repair: needs_repair,
            });
        }
        if repair.is_empty() {
            return;
        }
        let flagged = async {
            let mut checkpoint = self
                .store
                .get_connection(ws, source)
                .await?
                .map(|c| c.checkpoint())
                .transpose()?
                .unwrap_or_default();
            for stream in &repair {
                checkpoint.stream_mut(stream).repair = true;
            }
            let mut members = serde_json::Map::new();
            members.insert("streams".into(), serde_json::to_value(&checkpoint.streams)?);
            self.store.merge_sync_cursor(ws, source, &members).await
        };
        if let Err(e) = flagged.await {
            errors
                .warnings
                .push(format!("scheduling the repairing pass failed: {e}"));
        }
    }

    async fn open_log(
        &self,
        workspace_id: Uuid,
        kind: ConnectorKind,
        mode: SyncMode,
        existing: Option<Uuid>,
    ) -> Result<Uuid> {
        let id = match existing {
            Some(id) => id,
            None => {
                self.store
                    .create_sync(workspace_id, Some(kind), Some(mode))
                    .await?
                    .id
            }
        };
        self.store.start_sync(workspace_id, id, Some(mode)).await?;
        self.store
            .set_connection_status(workspace_id, kind, ConnectionStatus::Syncing, None)
            .await?;
        Ok(id)
    }

    async fn run_connector_sync(
        &self,
        row: &ConnectionRow,
        checkpoint: Result<Checkpoint>,
        mode: SyncMode,
        cancel: &CancellationToken,
        sink: &mut StoreSink,
        options: &SyncOptions,
    ) -> Result<(SyncReport, bool)> {
        let checkpoint = checkpoint?;
        let credentials = self.store.credentials(row)?;
        let connector = self.registry.build(row, credentials.as_ref())?;
        let ctx = SyncContext::new(row.workspace_id, mode)
            .with_previous(checkpoint)
            .with_lag(self.config.watermark_lag)
            .with_cancel(cancel.clone())
            .with_progress(options.progress.clone().unwrap_or_default());
        let report = connector.sync(&ctx, sink).await?;
        let needs_backfill = mode != SyncMode::Backfill
            && report
                .details
                .get("needs_backfill")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
        if needs_backfill {
            // The backfill starts from the durable checkpoint: the main sync's last page first.
            sink.settle().await?;
            let ctx = SyncContext::new(row.workspace_id, SyncMode::Backfill)
                .with_previous(sink.durable.clone())
                .with_lag(self.config.watermark_lag)
                .with_cancel(cancel.clone());
            match connector.backfill_sync(&ctx, sink).await {
                Ok(_) => return Ok((report, true)),
                Err(e) => {
                    tracing::warn!(error = %e, "post-sync backfill failed; it runs again next time")
                }
            }
        }
        Ok((report, false))
    }

    async fn close_log(
        &self,
        row: &ConnectionRow,
        result: &ConnectorResult,
        report: Option<&SyncReport>,
        error: Option<&Error>,
    ) {
        let ws = row.workspace_id;
        let kind = row.connector;
        let now = Utc::now();
        let outcome = SyncOutcome {
            status: result.status,
            records_synced: result.counts.written(),
            errors: result.errors.clone(),
            error_message: result.error.clone(),
        };
        let mut cursor = serde_json::Map::new();
        cursor.insert("lastSyncMode".into(), serde_json::json!(result.mode));
        cursor.insert("lastSyncAt".into(), serde_json::json!(now));
        cursor.insert(
            "lastSyncRecords".into(),
            serde_json::json!(result.counts.written()),
        );
        cursor.insert(
            "usedExportApi".into(),
            serde_json::json!(report.is_some_and(|r| r.used_export_api)),
        );
        // A rate-limited stop is not failed, so the connection is not in error either.
        let (status, message) = if result.status == SyncStatus::Failed {
            (ConnectionStatus::Error, result.error.as_deref())
        } else {
            (ConnectionStatus::Synced, None)
        };
        let steps = async {
            self.store.finish_sync(ws, result.sync_id, &outcome).await?;
            self.store.merge_sync_cursor(ws, kind, &cursor).await?;
            if error.is_none() {
                self.store.set_last_sync_at(ws, kind, now).await?;
            }
            self.store
                .set_connection_status(ws, kind, status, message)
                .await
        };
        if let Err(e) = steps.await {
            tracing::error!(error = %e, "recording the sync's outcome failed");
        }
    }
}

/// Runs [`SYNC_JOB`](crate::queue::SYNC_JOB)s from the worker through the orchestrator.
///
/// Progress goes to the job. A sync with a failed connector returns
/// [`Error::SyncFailed`], so the attempt fails and is retried with backoff; a sync stopped
/// by a rate limit or a daily quota is returned as that error, so the worker snoozes the job
/// (to the quota's reset) instead of failing it; a workspace already syncing is a snooze too
/// (the lock frees up soon). Only a completed (or completed-with-errors) sync completes the
/// job. Each attempt records its own `sync_log` rows: the first uses the trigger's pending
/// row, a retry records fresh ones.
#[derive(Debug, Clone)]
pub struct SyncJobHandler {
    orchestrator: Orchestrator,
}

impl SyncJobHandler {
    /// A handler running syncs on `orchestrator`.
    pub fn new(orchestrator: Orchestrator) -> Self {
        SyncJobHandler { orchestrator }
    }
}

#[async_trait]
impl JobHandler for SyncJobHandler {
    async fn run(&self, job: Job, ctx: JobContext) -> Result<serde_json::Value> {
        let payload: SyncJobPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::config(format!("invalid sync job payload: {e}")))?;
        // A retried job (snoozed, rescued) finds its run already finished: it then records
        // fresh per-connector runs.
        let sync_id = match self
            .orchestrator
            .store()
            .get_sync(job.workspace_id, payload.sync_id)
            .await?
        {
            Some(s) if s.status == SyncStatus::Pending => Some(s.id),
            _ => None,
        };
        let options = SyncOptions {
            connectors: payload.connector.map(|c| vec![c]),
            mode: payload.mode,
            sync_id,
            cancel: ctx.cancel_token().clone(),
            progress: Some(ctx.progress().clone()),
        };
        let result = match self
            .orchestrator
            .sync_workspace(job.workspace_id, options)
            .await
        {
            Ok(r) => r,
            Err(Error::Conflict { message, .. }) => {
                tracing::info!(%message, "workspace busy; snoozing the job");
                return Err(Error::RateLimited {
                    provider: "pandora_sync".into(),
                    retry_after: Some(Duration::from_secs(60)),
                });
            }
            Err(e) => return Err(e),
        };
        job_outcome(result)
    }
}

/// What a finished workspace sync means for its job (DESIGN 4.9): a failed connector fails
/// the attempt (retried with backoff while attempts remain); otherwise a connector stopped
/// by an exhausted quota snoozes the job until the reset, one stopped by a rate limit for
/// its `retry_after` (no attempt spent; the checkpoint is committed, so the next attempt
/// resumes where it stopped); only a completed run completes the job.
fn job_outcome(result: WorkspaceSyncResult) -> Result<serde_json::Value> {
    let failed: Vec<String> = result
        .connectors
        .iter()
        .filter(|c| c.status == SyncStatus::Failed)
        .map(|c| {
            format!(
                "{}: {}",
                c.connector,
                c.error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Error::SyncFailed {
            message: failed.join("; "),
        });
    }
    let limited = result.connectors.iter().filter(|c| c.rate_limited);
    let quota = limited
        .clone()
        .filter_map(|c| {
            c.errors
                .rate_limited
                .as_ref()
                .filter(|r| r.quota)
                .map(|r| (c, r))
        })
        // The latest known reset; an unknown one (next midnight at the latest) wins.
        .max_by_key(|(_, r)| r.resets_at.map_or((1, None), |at| (0, Some(at))));
    if let Some((c, stop)) = quota {
        return Err(Error::QuotaExhausted {
            provider: c.connector.to_string().into(),
            resets_at: stop.resets_at,
        });
    }
    if let Some(c) = limited.max_by_key(|c| c.retry_after_ms) {
        return Err(Error::RateLimited {
            provider: c.connector.to_string().into(),
            retry_after: c.retry_after_ms.map(Duration::from_millis),
        });
    }
    Ok(serde_json::to_value(&result)?)
}
