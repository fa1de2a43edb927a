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
//! After a successful run, every [`SourceTotal`](crate::connector::SourceTotal) the
//! connector reported (a stream read in full) is compared with the workspace's live rows of
//! that kind from that source, and both numbers go to
//! [`SyncErrors::reconciliation`](crate::store::SyncErrors::reconciliation) (the result and
//! `sync_log.errors`). Tolerance: records change while a pass reads them, so the gap
//! `total − stored` is allowed up to the stored rows modified since the pass started (their
//! `source_updated_at`) plus the records that failed this run (captured, not silent). A
//! larger gap is a warning, and the stream's stored checkpoint gets `repair = true`, so the
//! connector runs a repairing full pass at the next sync.
//!
//! # Layout
//!
//! `registry` (connector factories), `run` (the orchestrator, the workspace lock and the
//! post-sync hooks), `connector_run` (one connector's run and its `sync_log` row),
//! `reconcile` (provider totals against stored rows), `sink` (the pipelined store sink),
//! `guard` (failing the rows of dropped runs) and `job` (the queue's sync job handler). The
//! results ([`ConnectorResult`], [`WorkspaceSyncResult`]) live in a module below both the
//! orchestrator and the hooks: the orchestrator imports the hooks it runs, and the hooks
//! never import the orchestrator.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::capture::DEFAULT_SUCCESS_THRESHOLD;
use crate::connector::{DEFAULT_WATERMARK_LAG, ProgressReporter};
use crate::model::{ConnectorKind, SyncMode};

mod connector_run;
mod guard;
mod job;
mod reconcile;
mod registry;
mod run;
mod sink;

pub use crate::outcome::{ConnectorResult, WorkspaceSyncResult};
pub use job::SyncJobHandler;
pub use registry::{ConnectorFactory, ConnectorRegistry};
pub use run::Orchestrator;

/// Orchestrator settings.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Records per `write_batch` of a page larger than this (larger pages are split);
    /// smaller pages arriving in quick succession are committed together, up to 20,000
    /// records a commit.
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
/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
