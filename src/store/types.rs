//! The values the store traits take and return.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crypto::{Credentials, SealedCredentials};
use crate::capture::{MAX_KEPT_FAILURES, RecordFailure};
use crate::connector::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, SyncMode};

/// A sync that has been `running` (since `started_at`) or `pending` (since it was created)
/// for longer than this is stale: its process died or hung, or its job never ran it (see [`SyncLogStore::fail_stale_syncs`](super::SyncLogStore::fail_stale_syncs)).
pub const STALE_SYNC_AFTER: Duration = Duration::from_secs(60 * 60);

/// The default lease of a SQLite workspace lock; the guard renews it every third of that.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(60);

/// The largest page [`RecordStore::list_records`](super::RecordStore::list_records) and
/// [`SyncLogStore::sync_history`](super::SyncLogStore::sync_history) return.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite (embedded), through [`SqliteStore`](crate::SqliteStore).
    Sqlite,
    /// PostgreSQL, through [`PgStore`](crate::PgStore).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value as stored in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::config(format!(
                        concat!("unknown ", $what, " {:?}; valid values are: {}"),
                        other,
                        [$($text),*].join(", ")
                    ))),
                }
            }
        }
    };
}

text_enum!(
    /// The state of a connection (`connections.status`).
    ConnectionStatus, "connection status" {
        /// Created, never synced.
        Pending => "pending",
        /// A sync is running.
        Syncing => "syncing",
        /// The last sync finished (`completed` or `completed_with_errors`).
        Synced => "synced",
        /// The last sync failed; see `error_message`.
        Error => "error",
        /// Paused by the host: the scheduler skips it.
        Disabled => "disabled",
    }
);

text_enum!(
    /// The state of a sync run (`sync_log.status`).
    SyncStatus, "sync status" {
        /// Created, waiting for a worker.
        Pending => "pending",
        /// Running.
        Running => "running",
        /// Finished with every record stored.
        Completed => "completed",
        /// Finished; some records failed but the success rate met the threshold.
        CompletedWithErrors => "completed_with_errors",
        /// Failed (or was found stale).
        Failed => "failed",
    }
);

impl SyncStatus {
    /// Whether the run is over.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            SyncStatus::Completed | SyncStatus::CompletedWithErrors | SyncStatus::Failed
        )
    }
}

/// A new row for `connections`.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// The workspace.
    pub workspace_id: Uuid,
    /// The connector.
    pub connector: ConnectorKind,
    /// How it authenticates, e.g. `api_key`, `oauth2`, `basic`.
    pub auth_method: String,
    /// Its secrets; sealed with the store's [`Keyring`](crate::Keyring) before they are written.
    pub credentials: Option<Credentials>,
    /// Non-secret settings (a JSON object).
    pub config: serde_json::Value,
}

impl NewConnection {
    /// A connection with no credentials and an empty config.
    pub fn new(
        workspace_id: Uuid,
        connector: ConnectorKind,
        auth_method: impl Into<String>,
    ) -> Self {
        NewConnection {
            workspace_id,
            connector,
            auth_method: auth_method.into(),
            credentials: None,
            config: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the config.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }
}

/// A row of `connections`. Credentials stay sealed; open them with
/// [`ConnectionStore::credentials`](super::ConnectionStore::credentials).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectionRow {
    /// Row id.
    pub id: Uuid,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The connector (`connector_name`).
    pub connector: ConnectorKind,
    /// How it authenticates.
    pub auth_method: String,
    /// The sealed credentials, when any were stored.
    pub credentials: Option<SealedCredentials>,
    /// Non-secret settings.
    pub config: serde_json::Value,
    /// Status.
    pub status: ConnectionStatus,
    /// When the last sync finished.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The sync cursor: `{"streams": {...}}` (written by
    /// [`RecordStore::write_batch`](super::RecordStore::write_batch)) plus the orchestrator's
    /// members.
    pub sync_cursor: Option<serde_json::Value>,
    /// Why the last sync failed.
    pub error_message: Option<String>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

impl ConnectionRow {
    /// The stream checkpoints stored in `sync_cursor` (empty when there are none).
    ///
    /// # Errors
    /// [`Error::Decode`] when `sync_cursor.streams` is not a valid checkpoint.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        match &self.sync_cursor {
            Some(cursor @ serde_json::Value::Object(map)) if map.contains_key("streams") => {
                Checkpoint::from_json(cursor)
            }
            _ => Ok(Checkpoint::default()),
        }
    }
}

/// The `errors` column of a sync run: the first [`MAX_KEPT_FAILURES`] failed records, with
/// their ids, and how many failed in total; plus, when they apply, the rate limit that
/// stopped the run, the reconciliation of provider totals with stored rows, and warnings.
///
/// ```json
/// {"total": 2, "failures": [{"record_id": "42", "message": "…"}],
///  "rate_limited": {"provider": "hubspot", "resets_at": "2024-06-02T00:00:00Z"},
///  "reconciliation": [{"stream": "contacts", "kind": "contact", "source_total": 100,
///                      "stored": 90, "in_flight": 0, "failed": 0, "repair": true}],
///  "warnings": ["contacts: the provider reports 100 live records, 90 are stored"]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncErrors {
    /// How many records failed.
    pub total: u64,
    /// The first failures (at most [`MAX_KEPT_FAILURES`]).
    pub failures: Vec<RecordFailure>,
    /// The rate limit or quota that stopped the run (its checkpoint is kept; the job is
    /// rescheduled after it), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<RateLimitStop>,
    /// Provider totals compared with the rows stored, per stream read in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reconciliation: Vec<Reconciliation>,
    /// Problems that did not fail the run (e.g. a reconciliation gap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A run stopped by a provider's rate limit or exhausted quota (DESIGN 4.6): not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitStop {
    /// The provider that stopped the run.
    pub provider: String,
    /// `true` for an exhausted (daily) quota, `false` for a plain rate limit.
    pub quota: bool,
    /// How long the provider asked to wait, in milliseconds, when it said (rate limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// When the quota resets, when the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<DateTime<Utc>>,
}

/// What [`RecordStore::count_live_records`](super::RecordStore::count_live_records) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Live (not archived) rows of the workspace, source and kind.
    pub live: u64,
    /// Those of them whose `source_updated_at` is at or after the time asked about.
    pub updated_since: u64,
}

/// One stream's provider total against the rows stored after a full pass.
///
/// The tolerance is `in_flight + failed`: `in_flight` counts the stored live rows of the
/// kind whose `source_updated_at` is at or after the pass's start, i.e. records that changed
/// at the provider while the pass ran (created, modified, or deleted ones the provider's
/// total may or may not include); `failed` counts the run's per-record failures (captured
/// and reported, not silently lost). A gap `source_total − stored` larger than the tolerance
/// sets `repair`: a warning, and the stream's checkpoint is flagged so the next sync runs a
/// repairing full pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// The checkpoint stream.
    pub stream: String,
    /// The record kind the stream stores.
    pub kind: crate::model::RecordKind,
    /// Live records the provider reported.
    pub source_total: u64,
    /// Live (not archived) rows stored for the workspace, source and kind.
    pub stored: u64,
    /// Stored rows changed since the pass started (see the type's docs).
    pub in_flight: u64,
    /// Records of the run that failed (see the type's docs).
    #[serde(default)]
    pub failed: u64,
    /// Whether a repairing full pass was scheduled.
    pub repair: bool,
}

impl SyncErrors {
    /// The errors of a run: keeps the first [`MAX_KEPT_FAILURES`] of `failures`, with their
    /// messages redacted of anything that looks like a credential; `total` is at
    /// least `failures.len()`.
    pub fn new(failures: &[RecordFailure], total: u64) -> Self {
        let kept: Vec<RecordFailure> = failures
            .iter()
            .take(MAX_KEPT_FAILURES)
            .map(|f| RecordFailure {
                record_id: f.record_id.clone(),
                message: crate::error::redact_secrets(&f.message),
            })
            .collect();
        let len = u64::try_from(failures.len()).unwrap_or(u64::MAX);
        SyncErrors {
            total: total.max(len),
            failures: kept,
            ..SyncErrors::default()
        }
    }

    /// The same errors with failure messages redacted and cut to [`MAX_KEPT_FAILURES`],
    /// keeping the rate-limit stop, reconciliation and (redacted) warnings.
    pub fn sanitized(&self) -> Self {
        SyncErrors {
            rate_limited: self.rate_limited.clone(),
            reconciliation: self.reconciliation.clone(),
            warnings: self
                .warnings
                .iter()
                .map(|w| crate::error::redact_secrets(w))
                .collect(),
            ..SyncErrors::new(&self.failures, self.total)
        }
    }
}

/// How a sync run ended, for [`SyncLogStore::finish_sync`](super::SyncLogStore::finish_sync).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// `Completed`, `CompletedWithErrors` or `Failed`.
    pub status: SyncStatus,
    /// Records written.
    pub records_synced: u64,
    /// Failed records (only the first [`MAX_KEPT_FAILURES`] are kept) and the total.
    pub errors: SyncErrors,
    /// Why the run failed, for a `Failed` run (redacted before it is stored).
    pub error_message: Option<String>,
}

/// A row of `sync_log`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SyncLogEntry {
    /// Row id (the sync id).
    pub id: Uuid,
    /// The workspace.
    pub workspace_id: Uuid,
    /// The connector, or `None` for a run over every connector of the workspace.
    pub connector: Option<ConnectorKind>,
    /// The mode, or `None` while it is not decided.
    pub sync_type: Option<SyncMode>,
    /// Status.
    pub status: SyncStatus,
    /// Records written.
    pub records_synced: u64,
    /// Failed records.
    pub errors: Option<SyncErrors>,
    /// Why the run failed.
    pub error_message: Option<String>,
    /// How long the run took, once finished.
    pub duration_ms: Option<u64>,
    /// When the run was created, then when it started running.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
}

/// Which rows [`RecordStore::list_records`](super::RecordStore::list_records) returns:
/// a page ordered by row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    /// Only rows from this connector.
    pub source: Option<ConnectorKind>,
    /// Only rows whose id is greater than this (the last id of the previous page).
    pub after: Option<Uuid>,
    /// At most this many rows (capped at 1,000).
    pub limit: u32,
    /// Whether to include soft-deleted rows.
    pub include_archived: bool,
}

impl Default for RecordQuery {
    fn default() -> Self {
        RecordQuery {
            source: None,
            after: None,
            limit: 100,
            include_archived: true,
        }
    }
}

impl RecordQuery {
    /// The first page of up to `limit` rows, archived ones included.
    pub fn new(limit: u32) -> Self {
        RecordQuery {
            limit,
            ..Default::default()
        }
    }

    /// Only rows from `source`.
    pub fn source(mut self, source: ConnectorKind) -> Self {
        self.source = Some(source);
        self
    }

    /// The page after the row with id `after`.
    pub fn after(mut self, after: Uuid) -> Self {
        self.after = Some(after);
        self
    }

    /// Leaves soft-deleted rows out.
    pub fn live_only(mut self) -> Self {
        self.include_archived = false;
        self
    }

    pub(crate) fn capped_limit(&self) -> i64 {
        i64::from(self.limit.min(MAX_PAGE))
    }
}

/// Parses an optional stored name into an enum, with a clear error for unknown values.
pub(crate) fn parse_opt<T: FromStr<Err = Error>>(value: Option<String>) -> Result<Option<T>> {
    value.map(|v| v.parse()).transpose()
}

/// A `u64` from a stored non-negative `BIGINT`.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::decode(None, format!("negative {what}: {value}")))
}
