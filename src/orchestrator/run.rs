//! The orchestrator: its settings and hooks, the workspace lock around a run, the
//! connectors run concurrently, then the post-sync hooks.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::guard::RunGuard;
use super::registry::ConnectorRegistry;
use super::{OrchestratorConfig, SyncOptions, millis};
use crate::capture::RecordFailure;
use crate::error::{Error, Result};
use crate::hooks::{BuiltinHooksConfig, PostSyncHook, SyncCompleted, builtin_hooks};
use crate::outcome::{ConnectorResult, HookOutcome, WorkspaceSyncResult};
use crate::store::{
    ConnectionRow, ConnectionStatus, SyncErrors, SyncOutcome, SyncStatus, SyncStore, WorkspaceLock,
};

/// Syncs workspaces. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    pub(super) store: Arc<dyn SyncStore>,
    pub(super) registry: Arc<ConnectorRegistry>,
    pub(super) hooks: Vec<Arc<dyn PostSyncHook>>,
    pub(super) config: OrchestratorConfig,
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

    /// Adds the enabled built-in hooks ([`builtin_hooks`]). Hooks run in the order added, so
    /// call this before adding the host's own hooks with
    /// [`with_hook`](Orchestrator::with_hook): they then see linked, filtered and computed
    /// data.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> pandora_sync::Result<()> {
    /// use std::sync::Arc;
    /// use pandora_sync::{ConnectorRegistry, Orchestrator, SqliteStore, Store};
    /// use pandora_sync::hooks::BuiltinHooksConfig;
    ///
    /// let store = SqliteStore::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// let orchestrator = Orchestrator::new(Arc::new(store), ConnectorRegistry::new())
    ///     .with_builtin_hooks(BuiltinHooksConfig {
    ///         internal_domains: Some(vec!["example.com".into()]),
    ///         ..BuiltinHooksConfig::default()
    ///     });
    /// # let _ = orchestrator; Ok(()) }
    /// # #[cfg(not(feature = "sqlite"))] fn main() {}
    /// ```
    pub fn with_builtin_hooks(self, config: BuiltinHooksConfig) -> Self {
        builtin_hooks(&config)
            .into_iter()
            .fold(self, Orchestrator::with_hook)
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
    /// [`LockStore::try_lock_workspace`](crate::store::LockStore::try_lock_workspace)), e.g. to
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
}
