//! Failing the `sync_log` row of a run whose future was dropped.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::Error;
use crate::model::ConnectorKind;
use crate::store::{ConnectionStatus, SyncErrors, SyncOutcome, SyncStatus, SyncStore};

/// Fails a `sync_log` row whose run was dropped before it recorded its outcome (the sync
/// future was dropped: a job abandoned after its timeout, a host that stopped waiting), so
/// no `running` row outlives its run. Disarmed once the outcome is recorded.
pub(super) struct RunGuard {
    store: Arc<dyn SyncStore>,
    workspace_id: Uuid,
    sync_id: Uuid,
    connector: Option<ConnectorKind>,
    armed: bool,
}

impl RunGuard {
    /// An armed guard of the row `sync_id` (and of the connection of `connector`, when the
    /// row is one connector's).
    pub(super) fn new(
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

    /// The outcome is recorded: dropping the guard does nothing any more.
    pub(super) fn disarm(&mut self) {
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
