//! Storage: a small base trait ([`Store`]) plus capability traits ([`ConnectionStore`],
//! [`RecordStore`], [`SyncLogStore`], [`LockStore`], [`EnrichmentStore`]), implemented by
//! [`SqliteStore`] (feature `sqlite`) and [`PgStore`] (feature `postgres`). [`SyncStore`] is
//! all of them at once, and the job queue ([`JobQueue`]) too: one `Arc<dyn SyncStore>` (from
//! [`connect_store`]) serves the orchestrator, the worker and the scheduler.
//!
//! The schema is the contract of DESIGN.md 3.3; [`Store::migrate`] creates it from
//! migrations embedded in the binary (one set per backend).
//!
//! # Guarantees
//!
//! * [`RecordStore::write_batch`] commits a batch's upserts, soft deletes, deal-contact links
//!   and the connector's checkpoint in **one transaction**: after an error nothing of the
//!   batch and nothing of the checkpoint is stored.
//! * Upserts are idempotent and never move a row back in time (see
//!   [`RecordStore::write_batch`]).
//! * Every statement is parameterized and scoped by `workspace_id`.
//! * Credentials are sealed with XChaCha20-Poly1305 under the host's [`Keyring`] before they
//!   reach the database, bound to their row, and redacted from `Debug`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connector::{Checkpoint, RecordBatch, WriteCounts};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Record, RecordKind, SyncMode};
use jobs::JobQueue;

mod clock;
mod crypto;
pub(crate) mod jobs;
mod lock;
pub(crate) mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod types;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{Credentials, Keyring, SealedCredentials};
pub use lock::WorkspaceLock;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub(crate) use rows::sqlite_ts;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use types::{
    Backend, ConnectionRow, ConnectionStatus, DEFAULT_LOCK_TTL, LiveCounts, NewConnection,
    RateLimitStop, Reconciliation, RecordQuery, STALE_SYNC_AFTER, SyncErrors, SyncLogEntry,
    SyncOutcome, SyncStatus,
};

/// What every store does: say which backend it is, create its schema, check the database.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The backend behind this store.
    fn backend(&self) -> Backend;

    /// Creates or upgrades the schema with the embedded migrations. Idempotent, and safe
    /// when several processes run it at once (each migration is applied exactly once).
    async fn migrate(&self) -> Result<()>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Closes the connection pool (waits for connections in use to be returned).
    async fn close(&self);
}

/// The `connections` table: one row per (workspace, connector).
#[async_trait]
pub trait ConnectionStore: Store {
    /// The keyring that seals and opens credentials, when the store has one.
    fn keyring(&self) -> Option<&Keyring>;

    /// Creates a connection; its credentials are sealed with [`ConnectionStore::keyring`].
    ///
    /// # Errors
    /// [`Error::Conflict`] when the workspace already has a connection for that connector;
    /// [`Error::Config`] when credentials are given but the store has no keyring, or the
    /// config is not a JSON object.
    async fn create_connection(&self, new: NewConnection) -> Result<ConnectionRow>;

    /// The workspace's connection for `connector`.
    async fn get_connection(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
    ) -> Result<Option<ConnectionRow>>;

    /// The workspace's connections, ordered by connector name.
    async fn list_connections(&self, workspace_id: Uuid) -> Result<Vec<ConnectionRow>>;

    /// Deletes a connection (its synced records and sync history stay). Returns whether it
    /// existed.
    async fn delete_connection(&self, workspace_id: Uuid, connector: ConnectorKind)
    -> Result<bool>;

    /// Every workspace that has at least one connection (for schedulers and key rotation).
    async fn workspaces(&self) -> Result<Vec<Uuid>>;

    /// Sets the status and `error_message` (redacted before it is stored; `None` clears it).
    ///
    /// # Errors
    /// [`Error::Config`] when the connection does not exist (as for every update below).
    async fn set_connection_status(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        status: ConnectionStatus,
        error_message: Option<&str>,
    ) -> Result<()>;

    /// Sets `last_sync_at`.
    async fn set_last_sync_at(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Replaces the whole `sync_cursor` (`None` clears it, so the next sync is initial).
    async fn set_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        cursor: Option<&serde_json::Value>,
    ) -> Result<()>;

    /// Sets top-level members of `sync_cursor` (e.g. `lastSyncMode`), keeping the others
    /// (including the `streams` that [`RecordStore::write_batch`] maintains).
    async fn merge_sync_cursor(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        members: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()>;

    /// Replaces the non-secret config (a JSON object).
    async fn set_config(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        config: &serde_json::Value,
    ) -> Result<()>;

    /// Replaces the credentials (after an OAuth refresh, say), sealed with the current key;
    /// `None` removes them.
    async fn set_credentials(
        &self,
        workspace_id: Uuid,
        connector: ConnectorKind,
        credentials: Option<&Credentials>,
    ) -> Result<()>;

    /// Re-seals, under the keyring's current key, every credential of the workspace sealed
    /// with an older key. Returns how many rows changed. A row changed concurrently (a token
    /// refresh) is left to its writer, which already used the current key.
    ///
    /// # Errors
    /// [`Error::Config`] without a keyring, or when a row cannot be opened with any key.
    async fn reencrypt_credentials(&self, workspace_id: Uuid) -> Result<u64>;

    /// Opens a connection's credentials with the store's keyring.
    ///
    /// # Errors
    /// [`Error::Config`] without a keyring, with an unknown key id, or when the value does
    /// not authenticate (wrong key, tampered, or copied from another row).
    fn credentials(&self, row: &ConnectionRow) -> Result<Option<Credentials>> {
        let Some(sealed) = &row.credentials else {
            return Ok(None);
        };
        let keyring = self.keyring().ok_or_else(no_keyring)?;
        keyring
            .open(row.workspace_id, row.connector, sealed)
            .map(Some)
    }
}

/// The record tables.
#[async_trait]
pub trait RecordStore: Store {
    /// Stores one batch and the connector's checkpoint in one transaction.
    ///
    /// * Records are upserted on `(workspace_id, source, source_id)`, one set-based
    ///   statement per table. A stored row is replaced only by a newer version
    ///   (`source_updated_at` later than the stored one, or the stored one has none) or by
    ///   the same version with different content; an older version, or one without a
    ///   timestamp over one with, is counted `unchanged` and left alone. An archived row is
    ///   only revived by a version newer than its `archived_at`. On conflict the existing
    ///   row keeps its `id`; `synced_at` is set to now. `linked_account_id`,
    ///   `linked_deal_id` and `is_internal` of conversations keep their stored value when
    ///   the incoming one is `None` (post-sync hooks own them).
    /// * A `source_id` that appears twice in the batch is written once (the newest copy);
    ///   the other copies count as `unchanged`.
    /// * Deletions set `archived_at` (soft delete) unless the row is already archived or was
    ///   modified after the deletion; they count as `archived`. A
    ///   [`RecordKind::DealContact`] deletion (id `deal:contact`) removes the link.
    /// * Each [`DealContactSet`](crate::connector::DealContactSet) of `link_sets` then removes the
    ///   stored links of its deal (this workspace and source) whose contact is not in the
    ///   set, counted as `archived` (for a deal with two sets, the last one holds).
    /// * Finally `checkpoint` becomes the `streams` member of the connection's
    ///   `sync_cursor` (other members are kept).
    ///
    /// # Errors
    /// Nothing is stored when any of these fail:
    /// [`Error::Config`] when a record belongs to another workspace or connector, or the
    /// workspace has no connection for `source`; [`Error::Decode`] (naming the record) when a
    /// record cannot be stored exactly (a NUL character in text or in an id of a contact
    /// set, a non-finite number);
    /// [`Error::Storage`] when the database fails.
    async fn write_batch(
        &self,
        workspace_id: Uuid,
        source: ConnectorKind,
        batch: &RecordBatch,
        checkpoint: &Checkpoint,
    ) -> Result<WriteCounts>;

    /// One record by provider id (for a [`RecordKind::DealContact`], the id is
    /// `deal_source_id:contact_source_id`).
    async fn get_record(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: ConnectorKind,
        source_id: &str,
    ) -> Result<Option<Record>>;

    /// A page of a workspace's records, ordered by row id. Deal-contact links have no row
    /// id: they are ordered by deal then contact, and `query.after` is not supported.
    async fn list_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        query: &RecordQuery,
    ) -> Result<Vec<Record>>;

    /// How many rows of `kind` the workspace has (archived ones included).
    async fn count_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: Option<ConnectorKind>,
    ) -> Result<u64>;

    /// How many live (not archived) rows of `kind` the workspace has from `source`, and how
    /// many of those have a `source_updated_at` at or after `updated_since`, in one scan of
    /// the rows, for reconciliation with a provider's total. Deal-contact links have neither
    /// column: every link of the source is live, and none counts as updated.
    async fn count_live_records(
        &self,
        workspace_id: Uuid,
        kind: RecordKind,
        source: ConnectorKind,
        updated_since: DateTime<Utc>,
    ) -> Result<LiveCounts>;
}

/// The `sync_log` table: one row per sync run.
#[async_trait]
pub trait SyncLogStore: Store {
    /// Creates a `pending` run. `connector: None` is a run over every connector;
    /// `sync_type: None` means the mode is decided when it starts.
    async fn create_sync(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        sync_type: Option<SyncMode>,
    ) -> Result<SyncLogEntry>;

    /// Marks a pending run `running` (setting `started_at`, and the mode when given).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the run is not pending; [`Error::Config`] when it does not
    /// exist in the workspace.
    async fn start_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        sync_type: Option<SyncMode>,
    ) -> Result<()>;

    /// Finishes a pending or running run: status, records, errors (the first 100 with ids
    /// and the total), `completed_at` and `duration_ms` (from `started_at`).
    ///
    /// # Errors
    /// [`Error::Config`] when `outcome.status` is not a finished status or the run does not
    /// exist; [`Error::Conflict`] when it already finished.
    async fn finish_sync(
        &self,
        workspace_id: Uuid,
        sync_id: Uuid,
        outcome: &SyncOutcome,
    ) -> Result<()>;

    /// One run.
    async fn get_sync(&self, workspace_id: Uuid, sync_id: Uuid) -> Result<Option<SyncLogEntry>>;

    /// The workspace's runs, newest first, optionally for one connector; at most `limit`
    /// (capped at 1,000).
    async fn sync_history(
        &self,
        workspace_id: Uuid,
        connector: Option<ConnectorKind>,
        limit: u32,
    ) -> Result<Vec<SyncLogEntry>>;

    /// The workspace's pending and running runs, newest first.
    async fn active_syncs(&self, workspace_id: Uuid) -> Result<Vec<SyncLogEntry>>;

    /// Fails every stale run, with `reason` as its error message: a `running` run that
    /// started before `started_before`, or a `pending` one created before it (a pending row's
    /// `started_at` holds its creation time). Callers pass now − [`STALE_SYNC_AFTER`].
    /// `workspace_id: None` cleans every workspace. Returns the ids of the failed runs.
    async fn fail_stale_syncs(
        &self,
        workspace_id: Option<Uuid>,
        started_before: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<Uuid>>;
}

/// The per-workspace sync lock.
#[async_trait]
pub trait LockStore: Store {
    /// Takes the workspace's sync lock if nobody holds it; `Ok(None)` when it is held
    /// elsewhere. See [`WorkspaceLock`] for how long it lasts.
    async fn try_lock_workspace(&self, workspace_id: Uuid) -> Result<Option<WorkspaceLock>>;
}

/// What the entity linker did ([`EnrichmentStore::link_conversations`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkCounts {
    /// Live (not archived) conversations of the workspace.
    pub conversations: u64,
    /// Of those, how many are linked to an account after the run.
    pub linked_accounts: u64,
    /// Of those, how many are linked to a deal after the run.
    pub linked_deals: u64,
    /// Rows whose `linked_account_id` or `linked_deal_id` this run changed (0 on a rerun
    /// over unchanged data).
    pub changed: u64,
}

/// What the internal filter did ([`EnrichmentStore::mark_internal_conversations`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InternalCounts {
    /// Live conversations of the workspace that have at least one participant (the ones
    /// the filter decides).
    pub conversations: u64,
    /// Of those, how many are internal after the run.
    pub internal: u64,
    /// Rows whose `is_internal` this run changed.
    pub changed: u64,
}

/// What the computed-field refresh did ([`EnrichmentStore::refresh_deal_fields`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DealFieldCounts {
    /// Live deals of the workspace, from every source.
    pub deals: u64,
    /// Rows whose `days_open` or `days_to_close` this run changed.
    pub changed: u64,
}

/// Set-based enrichment of stored records, for the built-in post-sync hooks
/// ([`EntityLinker`](crate::hooks::EntityLinker), [`InternalFilter`](crate::hooks::InternalFilter),
/// [`ComputedFields`](crate::hooks::ComputedFields)).
///
/// Every operation is a few parameterized statements over one workspace, in one
/// transaction, never a query per row; archived rows are neither read nor written. Each is
/// idempotent: it only writes rows whose value changes, so a second run over the same data
/// changes nothing (and does not touch `synced_at`).
///
/// # Email and domain matching
///
/// A participant's email is trimmed and lower-cased; its domain is what follows the first
/// `@` (an email without a local part or domain is ignored). Contact emails are trimmed and
/// lower-cased the same way; account domains are trimmed, lower-cased and stripped of a
/// leading `www.`. Lower-casing is Unicode-aware on PostgreSQL and ASCII-only on SQLite
/// (SQLite's `lower`), which only matters for non-ASCII addresses.
#[async_trait]
pub trait EnrichmentStore: Store {
    /// Links every live conversation of the workspace to an account and a deal, writing
    /// `linked_account_id` and `linked_deal_id` (`accounts.id`, `deals.id`).
    ///
    /// * **Participants considered**: those with an email. When any of them is external
    ///   (`is_internal` not `true` in the participants JSON), only the external ones count.
    /// * **Account**: first by contact: the participant's email equals a live contact's
    ///   `email` (case-insensitive), and the contact's `account_source_id` names a live
    ///   account of the contact's own source. Only when no participant matches a contact,
    ///   by domain: the participant's email domain equals a live account's `domain`.
    ///   Among several candidates the one matched by the most participants wins, then the
    ///   one matched by the earliest participant, then the lowest `(source, source_id)`.
    /// * **Deal**: the account's live deals (same source, `account_source_id` = the
    ///   account's `source_id`): open ones (`is_closed` false or null) first, the latest
    ///   `close_date` first (deals without one last), then the lowest `source_id`. So the
    ///   open deal closing last, else the closed deal that closed last.
    ///
    /// The linker owns these two columns: a conversation that matches nothing (any more)
    /// gets `NULL`, so a link to an account or deal archived since is removed.
    async fn link_conversations(&self, workspace_id: Uuid) -> Result<LinkCounts>;

    /// Marks live conversations internal when every participant's email domain is one of
    /// `internal_domains` (compared case-insensitively, exactly: a subdomain is another
    /// domain), and external otherwise, in `conversations.is_internal`.
    ///
    /// * A conversation without participants is left as it is (the connector's value, or
    ///   `NULL`): there is nobody to judge.
    /// * A participant without a usable email is not known to be internal, so its
    ///   conversation is external.
    /// * The participants JSON is never written: each participant's `is_internal` belongs
    ///   to the connector (Gong's party `affiliation`), and the conversation's column to
    ///   this filter. One owner per column, so a re-read of an unchanged call stores
    ///   nothing and the filter does not flip it back afterwards.
    ///
    /// With an empty list nothing is changed (no domain is known to be internal).
    async fn mark_internal_conversations(
        &self,
        workspace_id: Uuid,
        internal_domains: &[String],
    ) -> Result<InternalCounts>;

    /// The email domains of participants that connectors flagged internal
    /// (`is_internal: true`) in the workspace's live conversations, lower-cased, sorted and
    /// without duplicates.
    async fn flagged_internal_domains(&self, workspace_id: Uuid) -> Result<Vec<String>>;

    /// Recomputes `days_open` and `days_to_close` of every live deal of the workspace, from
    /// every source, as [`apply_computed_fields`](crate::hooks::apply_computed_fields) does with
    /// `today` as the current date (UTC):
    ///
    /// * `days_open`: whole days from the `source_created_at` date to the `close_date` when
    ///   the deal is closed and has one, else to `today`; never negative; `NULL` without a
    ///   creation time.
    /// * `days_to_close`: whole days from `today` to `close_date`, negative when overdue;
    ///   `NULL` without a close date.
    async fn refresh_deal_fields(
        &self,
        workspace_id: Uuid,
        today: NaiveDate,
    ) -> Result<DealFieldCounts>;
}

/// Every storage capability and the job queue: the one handle a host opens (see
/// [`connect_store`]) and hands to the orchestrator, the worker and the scheduler as
/// `Arc<dyn SyncStore>`.
///
/// Where a part takes only the queue, the handle converts (trait upcasting):
/// `let queue: Arc<dyn JobQueue> = store.clone();`.
pub trait SyncStore:
    ConnectionStore + RecordStore + SyncLogStore + LockStore + EnrichmentStore + JobQueue
{
}

impl<
    T: ConnectionStore + RecordStore + SyncLogStore + LockStore + EnrichmentStore + JobQueue + ?Sized,
> SyncStore for T
{
}

/// Normalizes an internal domain for [`EnrichmentStore::mark_internal_conversations`]:
/// trimmed, lower-cased, without a leading `@` or a trailing `.`; `None` when nothing that
/// looks like a domain is left (empty, or containing `@`, `/` or whitespace).
pub(crate) fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim();
    let d = d.strip_prefix('@').unwrap_or(d);
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() || d.contains(['@', '/']) || d.chars().any(char::is_whitespace) {
        return None;
    }
    Some(d.to_lowercase())
}

/// Normalized, sorted, deduplicated domains (invalid ones dropped).
pub(crate) fn normalize_domains(domains: &[String]) -> Vec<String> {
    let mut out: Vec<String> = domains.iter().filter_map(|d| normalize_domain(d)).collect();
    out.sort();
    out.dedup();
    out
}

/// Checks that a record can be stored exactly by both backends: no NUL character in its
/// text or JSON, only finite numbers.
///
/// [`RecordStore::write_batch`] runs the same check and refuses the whole batch; a sink can
/// call this first and turn a bad record into a per-record failure instead.
///
/// # Errors
/// [`Error::Decode`] naming the record's provider id and the offending column.
///
/// ```
/// use pandora_sync::ConnectorKind;
/// use pandora_sync::model::Deal;
/// use pandora_sync::store::validate_record;
///
/// let mut deal = Deal::new(uuid::Uuid::new_v4(), ConnectorKind::Hubspot, "42");
/// deal.name = Some("Acme \u{0} renewal".into());
/// let err = validate_record(&deal.into()).unwrap_err();
/// assert!(err.to_string().contains("deals.name"));
/// ```
pub fn validate_record(record: &Record) -> Result<()> {
    rows::validate(record)
}

/// Opens a store from a URL: `sqlite://path?mode=rwc`, `sqlite::memory:` (feature
/// `sqlite`) or `postgres://...` (feature `postgres`), with an optional keyring for
/// credentials. It does not migrate: call [`Store::migrate`].
///
/// The handle is everything the engine needs from the database, the job queue included:
/// build the orchestrator, the worker and the scheduler from it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pandora_sync::Result<()> {
/// use std::sync::Arc;
///
/// use pandora_sync::queue::{JobQueue, JobStatus, SYNC_JOB, Worker};
/// use pandora_sync::store::NewConnection;
/// use pandora_sync::{
///     ConnectorKind, ConnectorRegistry, Orchestrator, Scheduler, SchedulerConfig,
///     SyncJobHandler, connect_store,
/// };
///
/// let store = connect_store("sqlite::memory:", None).await?;
/// store.migrate().await?;
///
/// let registry = ConnectorRegistry::builtin(&Default::default());
/// let orchestrator = Orchestrator::new(store.clone(), registry);
/// let worker = Worker::new(store.clone())
///     .listen() // woken on enqueue where the backend can (Postgres LISTEN); SQLite polls
///     .register(SYNC_JOB, Arc::new(SyncJobHandler::new(orchestrator)));
/// let scheduler = Scheduler::new(store.clone(), SchedulerConfig::default())?;
/// # drop(worker);
///
/// // The scheduler enqueues on the very queue the worker claims from.
/// let workspace = uuid::Uuid::new_v4();
/// store
///     .create_connection(NewConnection::new(workspace, ConnectorKind::Hubspot, "api_key"))
///     .await?;
/// let triggered = scheduler.trigger_sync(workspace, None, None).await?;
/// let queue: Arc<dyn JobQueue> = store.clone();
/// let job = queue.get_job(workspace, triggered.job_id).await?.expect("enqueued");
/// assert_eq!((job.job_type.as_str(), job.status), (SYNC_JOB, JobStatus::Pending));
/// let run = store.get_sync(workspace, triggered.sync_id).await?.expect("recorded");
/// assert_eq!(run.id, triggered.sync_id);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Config`] for an unknown scheme or a backend whose feature is off;
/// [`Error::Storage`] when the database cannot be reached.
pub async fn connect_store(url: &str, keyring: Option<Keyring>) -> Result<Arc<dyn SyncStore>> {
    if url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let store = SqliteStore::connect(url).await?;
            return Ok(Arc::new(match keyring {
                Some(k) => store.with_keyring(k),
                None => store,
            }));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(Error::config(
            "a sqlite: URL needs the `sqlite` feature of pandora_sync",
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = PgStore::connect(url).await?;
            return Ok(Arc::new(match keyring {
                Some(k) => store.with_keyring(k),
                None => store,
            }));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(Error::config(
            "a postgres:// URL needs the `postgres` feature of pandora_sync",
        ));
    }
    let _ = keyring;
    Err(Error::config(
        "unknown database URL: expected sqlite://path, sqlite::memory: or postgres://...",
    ))
}

pub(crate) fn no_keyring() -> Error {
    Error::config("this store has no credential keyring; build it with `.with_keyring(...)`")
}

pub(crate) fn no_connection(workspace_id: Uuid, connector: ConnectorKind) -> Error {
    Error::config(format!(
        "workspace {workspace_id} has no {connector} connection"
    ))
}

/// Begins a transaction on a connection of `pool` in a task of its own, so that a caller
/// dropped mid-`BEGIN` cannot poison the pool.
///
/// sqlx's Postgres `begin` is not cancel-safe: dropped after `BEGIN` went out but before its
/// reply, it hands the connection back to the pool inside a transaction nothing will end
/// (the guard that should roll it back only acts once the transaction is counted). Every
/// later statement on that connection then runs in the stray transaction, invisible to the
/// others, and its locks are held until the connection dies: an aborted sync (a host
/// shutting down, a dropped future) then hangs the next one. In its own task the `BEGIN`
/// always completes; if the caller is gone, the finished transaction is dropped there and
/// rolled back like any other.
pub(crate) async fn begin_detached<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    statement: &'static str,
) -> std::result::Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin_with(statement).await }).await {
        Ok(begun) => begun,
        // Only a panic inside sqlx or a runtime shutting down ends the task early.
        Err(e) => Err(sqlx::Error::Io(std::io::Error::other(e))),
    }
}

/// The error of a failed statement, with what the store was doing.
pub(crate) fn db_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::storage(what, e)
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Seals the credentials of a new or updated connection.
pub(crate) fn seal(
    keyring: Option<&Keyring>,
    workspace_id: Uuid,
    connector: ConnectorKind,
    credentials: Option<&Credentials>,
) -> Result<Option<String>> {
    credentials
        .map(|c| {
            keyring
                .ok_or_else(no_keyring)?
                .seal(workspace_id, connector, c)
                .map(|s| s.as_stored().to_owned())
        })
        .transpose()
}

/// Checks that a connection config is a JSON object.
pub(crate) fn check_config(config: &serde_json::Value) -> Result<()> {
    if config.is_object() {
        Ok(())
    } else {
        Err(Error::config("a connection config must be a JSON object"))
    }
}

/// Checks that a finished outcome has a finished status.
pub(crate) fn check_outcome(outcome: &SyncOutcome) -> Result<()> {
    if outcome.status.is_finished() {
        Ok(())
    } else {
        Err(Error::config(format!(
            "a sync finishes as completed, completed_with_errors or failed, not {}",
            outcome.status
        )))
    }
}

/// The stored `errors` JSON of an outcome.
pub(crate) fn outcome_errors_json(outcome: &SyncOutcome) -> Result<String> {
    serde_json::to_string(&outcome.errors.sanitized()).map_err(Error::from)
}

/// `0..=i64::MAX` from a u64 count.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A u64 count from a row count.
pub(crate) fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(all(test, feature = "postgres"))]
mod begin_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    /// Whether the pool's one connection sits in a transaction that an earlier statement
    /// left open: `SAVEPOINT` is refused outside a transaction block.
    async fn stray_transaction(pool: &sqlx::PgPool) -> bool {
        sqlx::query("SAVEPOINT stray_check")
            .execute(pool)
            .await
            .is_ok()
    }

    /// The cancellation that hung an aborted sync's successor: a `BEGIN` polled once, then
    /// dropped with its caller. With sqlx's own `begin` the connection went back to the
    /// pool inside the transaction; through `begin_detached` it never does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_begin_leaves_no_stray_transaction() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed ({e})"));
        assert!(!stray_transaction(&pool).await, "the check itself");
        // The caller gives up after a few microseconds: some of these land between the
        // BEGIN going out and its reply coming back.
        for i in 0..300u64 {
            let wait = std::time::Duration::from_micros((i * 37) % 1_500);
            let _ = tokio::time::timeout(wait, super::begin_detached(&pool, "BEGIN")).await;
            assert!(
                !stray_transaction(&pool).await,
                "after giving up at {wait:?}"
            );
        }
        // A transaction that begins and is dropped unfinished is rolled back too.
        let tx = super::begin_detached(&pool, "BEGIN").await.unwrap();
        drop(tx);
        assert!(!stray_transaction(&pool).await);
        pool.close().await;
    }
}
