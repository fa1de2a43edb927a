//! What a workspace sync produced: each connector's [`ConnectorResult`], each post-sync
//! hook's [`HookOutcome`], and the [`WorkspaceSyncResult`] holding both (the job's result).
//!
//! These types sit below the orchestrator, which builds them, and the hooks, which read them
//! (a [`SyncCompleted`](crate::hooks::SyncCompleted) event carries the connectors' results):
//! the orchestrator imports the hooks it runs, and the hooks never import the orchestrator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connector::WriteCounts;
use crate::model::{ConnectorKind, SyncMode};
use crate::store::{SyncErrors, SyncStatus};

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

/// The outcome of
/// [`Orchestrator::sync_workspace`](crate::orchestrator::Orchestrator::sync_workspace).
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

/// What one hook did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// The hook's name.
    pub name: String,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
}
