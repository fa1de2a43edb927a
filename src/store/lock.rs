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
/// * On SQLite it is a lease row that a background task renews. It records the holder's
///   host, pid and process start time: if the process dies, a process on the same host
///   takes the lock over at once; from another host, once the lease expired.
///
/// Whoever takes the lock over from a dead holder first ends that holder's `running`
/// `sync_log` rows (`failed`, with an `interrupted` message) and sets their connections
/// from `syncing` to `error`; the next sync resumes from the last committed checkpoint.
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

/// The message of a run found `running` under a lock whose holder is dead.
pub(crate) const INTERRUPTED: &str = "interrupted: the process running this sync died before it finished; the next sync resumes from its last checkpoint";

/// Who holds a SQLite lease, and whether that process still runs.
#[cfg(feature = "sqlite")]
mod holder {
    /// The process holding a lock, as recorded with a SQLite lease, so that another process on
    /// the same host can tell at once that the holder is gone (killed, crashed) instead of
    /// waiting out the lease.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct HolderProcess {
        /// The host name (`/proc/sys/kernel/hostname`).
        pub host: String,
        /// The process id.
        pub pid: u32,
        /// `<boot id>/<pid namespace>/<uid>/<start time>`: which boot of the kernel, which pid
        /// namespace the pid belongs to, which user runs it (`/proc` may hide other users'
        /// processes), and when it started (clock ticks since boot, field 22 of
        /// `/proc/<pid>/stat`), so that a reused pid is not mistaken for the holder. `None`
        /// where `/proc` does not tell (not Linux): such holders are only ever waited out.
        pub identity: Option<String>,
    }

    /// What a probe found about a recorded lock holder.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Liveness {
        /// The holder runs, or may: another host, boot, pid namespace or user, no `/proc`.
        Unknown,
        /// The holder is this very process or another live one on this host.
        Alive,
        /// The holder was on this host and has exited (its pid is gone, a zombie, or reused).
        Gone,
    }

    /// The host name, and the `<boot id>/<pid namespace>/<uid>` part of the identities this
    /// process makes; `None` without a readable `/proc`.
    fn this_machine() -> Option<&'static (String, String)> {
        static MACHINE: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
        MACHINE
            .get_or_init(|| {
                let read = |path: &str| {
                    std::fs::read_to_string(path)
                        .ok()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                };
                let host = read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname"))?;
                let boot = read("/proc/sys/kernel/random/boot_id")?;
                let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
                let ns = ns.to_str()?.to_owned();
                let uid = proc_uid()?;
                Some((host, format!("{boot}/{ns}/{uid}")))
            })
            .as_ref()
    }

    /// The user running this process (the owner of `/proc/self`).
    #[cfg(unix)]
    fn proc_uid() -> Option<u32> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }

    #[cfg(not(unix))]
    fn proc_uid() -> Option<u32> {
        None
    }

    /// What `/proc/<pid>/stat` says about a process: `None` when it is gone or a zombie, its
    /// start time otherwise. `Err` when the file cannot be read or parsed for another reason.
    fn proc_start_time(pid: u32) -> std::result::Result<Option<u64>, ()> {
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(()),
        };
        // "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces and parentheses, so the
        // fields are counted from the last ')'. State is field 3, start time field 22.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or(())?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first().ok_or(())?;
        if matches!(*state, "Z" | "X" | "x") {
            return Ok(None);
        }
        fields
            .get(19)
            .and_then(|f| f.parse().ok())
            .map(Some)
            .ok_or(())
    }

    impl HolderProcess {
        /// This process.
        pub(crate) fn current() -> Self {
            let pid = std::process::id();
            match this_machine() {
                Some((host, machine)) => HolderProcess {
                    host: host.clone(),
                    pid,
                    identity: proc_start_time(pid)
                        .ok()
                        .flatten()
                        .map(|start| format!("{machine}/{start}")),
                },
                None => HolderProcess {
                    host: std::env::var("HOSTNAME").unwrap_or_default(),
                    pid,
                    identity: None,
                },
            }
        }

        /// Whether this holder still runs, as far as this process can tell: only a holder
        /// recorded on this host, in this boot and pid namespace, by this user, can be found
        /// [`Liveness::Gone`].
        pub(crate) fn liveness(&self) -> Liveness {
            let (Some((host, machine)), Some(identity)) = (this_machine(), &self.identity) else {
                return Liveness::Unknown;
            };
            let Some((their_machine, start)) = identity.rsplit_once('/') else {
                return Liveness::Unknown;
            };
            if *host != self.host || machine != their_machine {
                return Liveness::Unknown;
            }
            match proc_start_time(self.pid) {
                Ok(None) => Liveness::Gone,
                Ok(Some(now)) if now.to_string() == start => Liveness::Alive,
                // The pid now names another process: the holder exited.
                Ok(Some(_)) => Liveness::Gone,
                Err(()) => Liveness::Unknown,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used)]

        use super::*;

        #[test]
        fn this_process_is_alive() {
            let me = HolderProcess::current();
            assert_eq!(me.pid, std::process::id());
            if cfg!(target_os = "linux") {
                assert!(me.identity.is_some(), "{me:?}");
                assert_eq!(me.liveness(), Liveness::Alive);
            } else {
                assert_eq!(me.liveness(), Liveness::Unknown);
            }
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn an_exited_process_or_a_reused_pid_is_gone() {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let me = HolderProcess::current();
            let machine = this_machine().unwrap().1.clone();
            let start = proc_start_time(child.id()).unwrap().unwrap();
            let holder = HolderProcess {
                host: me.host.clone(),
                pid: child.id(),
                identity: Some(format!("{machine}/{start}")),
            };
            assert_eq!(holder.liveness(), Liveness::Alive);
            // The pid is alive but started at another time: it is not the holder any more.
            let reused = HolderProcess {
                identity: Some(format!("{machine}/{}", start + 1)),
                ..holder.clone()
            };
            assert_eq!(reused.liveness(), Liveness::Gone);
            child.kill().unwrap();
            // Killed but not reaped yet: a zombie holds nothing.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(holder.liveness(), Liveness::Gone);
            child.wait().unwrap();
            assert_eq!(holder.liveness(), Liveness::Gone);
            // Another host, another boot, or nothing recorded: never judged gone.
            for other in [
                HolderProcess {
                    host: format!("{}-elsewhere", me.host),
                    ..holder.clone()
                },
                HolderProcess {
                    identity: Some(format!("another-boot/pid:[1]/0/{start}")),
                    ..holder.clone()
                },
                HolderProcess {
                    identity: Some(format!("{machine}-other-user/{start}")),
                    ..holder.clone()
                },
                HolderProcess {
                    identity: None,
                    ..holder.clone()
                },
            ] {
                assert_eq!(other.liveness(), Liveness::Unknown, "{other:?}");
            }
        }
    }
}
#[cfg(feature = "sqlite")]
pub(crate) use holder::{HolderProcess, Liveness};
