//! The per-workspace sync lock guard, shared by both backends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};

/// What a backend does to keep and give back a lock.
#[async_trait]
pub(crate) trait LockBackend: Send + Sync + fmt::Debug {
    /// Confirms the lock is still held, extending its lease where there is one.
    /// `Ok(false)` when it is lost; `Err` for a failure that may pass (try again).
    async fn renew(&self) -> Result<bool>;

    /// Gives the lock back and waits until others can take it.
    async fn release(&self) -> Result<()>;

    /// Gives the lock back without waiting (from `Drop`).
    fn release_detached(&self);
}

/// A held per-workspace sync lock: while it lives, no other holder (in this process or any
/// other using the same database) gets the lock for the same workspace.
///
/// * Dropping the guard releases the lock (in a background task; [`WorkspaceLock::release`]
///   releases it before returning).
/// * On PostgreSQL the lock is a session advisory lock on a connection the guard owns: if
///   the process dies, the server drops the session and the lock with it.
/// * On SQLite it is a lease row that a background task renews; if the process dies, the
///   lease expires and another holder can take it over.
///
/// A background task checks the lock periodically; when it finds the lock lost (the
/// connection died, the lease was taken over after expiring) it cancels
/// [`WorkspaceLock::lost`], so the sync holding it can stop.
pub struct WorkspaceLock {
    workspace_id: Uuid,
    holder: String,
    lost: CancellationToken,
    backend: Option<Arc<dyn LockBackend>>,
    keeper: Option<JoinHandle<()>>,
}

impl fmt::Debug for WorkspaceLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceLock")
            .field("workspace_id", &self.workspace_id)
            .field("holder", &self.holder)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl WorkspaceLock {
    /// A guard over a lock the backend just took; its keeper checks it every `check_every`.
    pub(crate) fn new(
        workspace_id: Uuid,
        holder: String,
        backend: Arc<dyn LockBackend>,
        check_every: Duration,
    ) -> Self {
        let lost = CancellationToken::new();
        let keeper = {
            let backend = Arc::clone(&backend);
            let lost = lost.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + check_every;
                let mut tick = tokio::time::interval_at(start, check_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match backend.renew().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(%workspace_id, "workspace sync lock lost");
                            lost.cancel();
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(%workspace_id, error = %e, "could not renew the workspace sync lock; retrying");
                        }
                    }
                }
            })
        };
        WorkspaceLock {
            workspace_id,
            holder,
            lost,
            backend: Some(backend),
            keeper: Some(keeper),
        }
    }

    /// The locked workspace.
    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }

    /// Who holds the lock (unique per guard: process id and a random suffix).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lock was found lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// A token cancelled when the lock is found lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Checks now that the lock is still held (and extends a SQLite lease).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the lock is lost (the token of [`WorkspaceLock::lost`] is
    /// then cancelled too); a storage error when the check itself failed.
    pub async fn renew(&self) -> Result<()> {
        let held = match &self.backend {
            Some(backend) if !self.lost.is_cancelled() => backend.renew().await?,
            _ => false,
        };
        if held {
            Ok(())
        } else {
            self.lost.cancel();
            Err(Error::Conflict {
                message: format!("the sync lock of workspace {} was lost", self.workspace_id),
                running_id: None,
            })
        }
    }

    /// Releases the lock; when this returns `Ok`, another holder can take it.
    ///
    /// # Errors
    /// A storage error when the release statement failed (on PostgreSQL the connection is
    /// closed anyway, which releases the lock; on SQLite the lease still expires).
    pub async fn release(mut self) -> Result<()> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        match self.backend.take() {
            Some(backend) => backend.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        if let Some(backend) = self.backend.take() {
            backend.release_detached();
        }
    }
}

/// A unique holder name for a new lock.
pub(crate) fn new_holder() -> String {
    format!("pid-{}-{}", std::process::id(), Uuid::new_v4().simple())
}
