//! The connector contract: [`SyncCapable`], [`TaskAdapter`], [`DocumentAdapter`], and what
//! they work with ([`SyncContext`], [`RecordSink`], [`RecordBatch`], [`Checkpoint`]).
//!
//! A sync never returns "all the records". It reads the provider page by page and pushes each
//! page into a [`RecordSink`] together with the [`Checkpoint`] that is true once that page is
//! stored. A page and its checkpoint become durable together (the storage backends commit
//! both in one transaction), so a crash at any point resumes from the last committed page:
//! nothing skipped, nothing duplicated, and memory stays flat however many records the
//! provider holds.
//!
//! # What is durable when
//!
//! A sink may pipeline and group: the orchestrator's sink commits pages in the background
//! while the connector fetches the next ones, and commits small pages that arrive in quick
//! succession together, with the checkpoint of the last of them. So when
//! [`RecordSink::write`] returns `Ok`, the page just given (and possibly a few before it)
//! is on its way; when [`RecordSink::flush`] returns `Ok`, every page written so far is
//! durable. A connector that only reads needs neither: a crash loses at most the pages not
//! yet committed, and the stored checkpoint (which never runs ahead of its records) makes
//! the next run read them again. A connector that must *acknowledge* something to the provider once the data is
//! safe (commit a consumer offset, delete a queue message, confirm a cursor that the
//! provider forgets after acknowledgement) calls `flush` first.
//!
//! # Watermarks
//!
//! A stream's watermark is `min(max source_updated_at seen, sync_started_at − lag)`: it comes
//! from the records, never from the wall clock alone, and it is capped so that records
//! written at the provider while the sync ran (or that the provider's search index has not
//! caught up with) are read again next time. [`StreamCheckpoint::observe`] and
//! [`StreamCheckpoint::finish_pass`] implement that rule; [`SyncContext::watermark_cap`]
//! gives the cap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::capture::RecordFailure;
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Record, RecordKind, SyncMode, Task};

/// The default watermark lag: how far behind the sync's start the watermark is capped.
pub const DEFAULT_WATERMARK_LAG: Duration = Duration::from_secs(5 * 60);

/// The position of one stream (e.g. `deals`, `calls:user-42`) of a connector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    /// Everything modified before this instant has been stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<DateTime<Utc>>,
    /// Where the current pass stopped: the provider's page cursor, offset or locator.
    /// `None` when no pass is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The newest `source_updated_at` stored by the pass in progress. It becomes the
    /// watermark (capped) when the pass finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_max_updated_at: Option<DateTime<Utc>>,
    /// The start of the run that began the pass in progress (`None` when no pass is in
    /// progress). The pass reads changes up to this instant and its watermark is capped at
    /// it minus the lag, also when a later run resumes the pass: a resumed pass finishes
    /// with its own window, and a follow-up pass covers what changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_started_at: Option<DateTime<Utc>>,
    /// A full (repairing) pass is due: reconciliation found fewer stored rows than the
    /// provider reports. The connector reads the whole stream next time and clears the flag
    /// when that pass finishes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
    /// Connector-specific state (a Drive start page token, a backfill slice, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl StreamCheckpoint {
    /// Notes a stored record's modification time for the pass in progress.
    pub fn observe(&mut self, updated_at: DateTime<Utc>) {
        if self.pass_max_updated_at.is_none_or(|m| updated_at > m) {
            self.pass_max_updated_at = Some(updated_at);
        }
    }

    /// Notes every stored record's modification time in `records`.
    pub fn observe_records<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        for at in records.into_iter().filter_map(Record::source_updated_at) {
            self.observe(at);
        }
    }

    /// Ends the pass: the watermark becomes `min(max updated_at seen, cap)` unless that is
    /// older than the current watermark (a watermark never moves back), and the cursor is
    /// cleared.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use pandora_sync::connector::StreamCheckpoint;
    ///
    /// let cap = Utc.with_ymd_and_hms(2024, 1, 10, 0, 0, 0).unwrap();
    /// let mut s = StreamCheckpoint::default();
    /// s.observe(Utc.with_ymd_and_hms(2024, 1, 5, 0, 0, 0).unwrap());
    /// s.observe(Utc.with_ymd_and_hms(2024, 1, 20, 0, 0, 0).unwrap()); // written during the sync
    /// s.finish_pass(cap);
    /// assert_eq!(s.watermark, Some(cap));
    /// ```
    pub fn finish_pass(&mut self, cap: DateTime<Utc>) {
        if let Some(seen) = self.pass_max_updated_at.take() {
            let candidate = seen.min(cap);
            if self.watermark.is_none_or(|w| candidate > w) {
                self.watermark = Some(candidate);
            }
        }
        self.cursor = None;
        self.pass_started_at = None;
    }

    /// Starts a pass, or continues the one in progress: returns the start of the run that
    /// began it (the pass's upper bound). A new pass (no cursor stored) takes this run's
    /// start; a resumed pass keeps the window it was begun with.
    pub fn begin_pass(&mut self, ctx: &SyncContext) -> DateTime<Utc> {
        match (self.cursor.is_some(), self.pass_started_at) {
            (true, Some(started)) => started,
            _ => {
                self.pass_started_at = Some(ctx.started_at());
                ctx.started_at()
            }
        }
    }

    /// Ends the pass with the cap of its own window (`pass start − lag`, see
    /// [`StreamCheckpoint::begin_pass`]); returns whether it was begun by an earlier run, in
    /// which case changes made since that run's start are not covered yet and the caller
    /// runs a follow-up pass.
    pub fn finish_pass_in(&mut self, ctx: &SyncContext) -> bool {
        let started = self.pass_started_at.unwrap_or(ctx.started_at());
        let resumed = started < ctx.started_at();
        self.finish_pass(ctx.cap_for(started));
        resumed
    }
}

/// The resumable state of one connector: a [`StreamCheckpoint`] per stream.
///
/// It is stored as the `streams` member of the connection's `sync_cursor` JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Streams by name.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamCheckpoint>,
}

impl Checkpoint {
    /// The named stream's checkpoint, if it has one.
    pub fn stream(&self, name: &str) -> Option<&StreamCheckpoint> {
        self.streams.get(name)
    }

    /// The named stream's checkpoint, created empty when missing.
    pub fn stream_mut(&mut self, name: &str) -> &mut StreamCheckpoint {
        self.streams.entry(name.to_owned()).or_default()
    }

    /// The named stream's watermark.
    pub fn watermark(&self, name: &str) -> Option<DateTime<Utc>> {
        self.stream(name).and_then(|s| s.watermark)
    }

    /// Whether no stream has any state.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The checkpoint as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing this plain data (strings, maps, RFC 3339 dates) into a `Value` cannot
        // fail; fall back to null rather than panic if serde ever says otherwise.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a checkpoint from JSON (e.g. `sync_cursor.streams`'s parent object).
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        Checkpoint::deserialize(value)
            .map_err(|e| Error::decode(None, format!("invalid checkpoint: {e}")))
    }
}

/// A progress update: `{current, total, message}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done so far (records, pages, users, …).
    pub current: u64,
    /// Units expected, when known.
    pub total: Option<u64>,
    /// What is happening now.
    pub message: String,
}

/// Where a connector reports progress; the orchestrator and worker subscribe to it.
///
/// Cloning gives another handle to the same channel. Reporting never blocks.
#[derive(Debug, Clone)]
pub struct ProgressReporter {
    tx: watch::Sender<Progress>,
}

impl Default for ProgressReporter {
    fn default() -> Self {
        ProgressReporter {
            tx: watch::Sender::new(Progress::default()),
        }
    }
}

impl ProgressReporter {
    /// A reporter nobody listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes a progress update.
    pub fn report(&self, current: u64, total: Option<u64>, message: impl Into<String>) {
        self.tx.send_replace(Progress {
            current,
            total,
            message: message.into(),
        });
    }

    /// The latest update.
    pub fn latest(&self) -> Progress {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later update (the latest one at least).
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.tx.subscribe()
    }
}

/// Stores credential values a provider replaced during a run (a rotated OAuth refresh
/// token) with the connection, as soon as the connector sees them: a run killed later
/// still leaves the connection with credentials the provider accepts. The orchestrator
/// sets one on every context; without one, [`SyncContext::update_credentials`] does
/// nothing (the values still reach [`SyncCapable::credential_updates`]).
#[derive(Clone)]
pub struct CredentialUpdater(
    #[allow(clippy::type_complexity)]
    Arc<
        dyn Fn(
                Vec<(String, secrecy::SecretString)>,
            ) -> futures_util::future::BoxFuture<'static, Result<()>>
            + Send
            + Sync,
    >,
);

impl CredentialUpdater {
    /// An updater calling `f` with the `(key, value)` pairs that changed.
    pub fn new(
        f: impl Fn(
            Vec<(String, secrecy::SecretString)>,
        ) -> futures_util::future::BoxFuture<'static, Result<()>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        CredentialUpdater(Arc::new(f))
    }
}

impl std::fmt::Debug for CredentialUpdater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialUpdater")
    }
}

/// What a connector gets to know about the sync it runs.
#[derive(Debug, Clone)]
pub struct SyncContext {
    workspace_id: Uuid,
    mode: SyncMode,
    previous: Checkpoint,
    started_at: DateTime<Utc>,
    lag: Duration,
    cancel: CancellationToken,
    progress: ProgressReporter,
    credentials: Option<CredentialUpdater>,
}

impl SyncContext {
    /// A context for a sync starting now, with no previous checkpoint, the
    /// [`DEFAULT_WATERMARK_LAG`], a fresh cancellation token and progress reporter.
    pub fn new(workspace_id: Uuid, mode: SyncMode) -> Self {
        SyncContext {
            workspace_id,
            mode,
            previous: Checkpoint::default(),
            started_at: Utc::now(),
            lag: DEFAULT_WATERMARK_LAG,
            cancel: CancellationToken::new(),
            progress: ProgressReporter::new(),
            credentials: None,
        }
    }

    /// Sets where credential values the provider replaced during the run are stored.
    pub fn with_credential_updater(mut self, updater: CredentialUpdater) -> Self {
        self.credentials = Some(updater);
        self
    }

    /// Stores credential values the provider replaced (a rotated refresh token) with the
    /// connection now; does nothing without a [`CredentialUpdater`].
    pub async fn update_credentials(
        &self,
        updates: Vec<(String, secrecy::SecretString)>,
    ) -> Result<()> {
        match &self.credentials {
            Some(u) if !updates.is_empty() => (u.0)(updates).await,
            _ => Ok(()),
        }
    }

    /// Sets the checkpoint the previous sync committed.
    pub fn with_previous(mut self, previous: Checkpoint) -> Self {
        self.previous = previous;
        self
    }

    /// Sets the sync's start time (the orchestrator takes it before the first request).
    pub fn with_started_at(mut self, started_at: DateTime<Utc>) -> Self {
        self.started_at = started_at;
        self
    }

    /// Sets the watermark lag.
    pub fn with_lag(mut self, lag: Duration) -> Self {
        self.lag = lag;
        self
    }

    /// Sets the cancellation token.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Sets the progress reporter.
    pub fn with_progress(mut self, progress: ProgressReporter) -> Self {
        self.progress = progress;
        self
    }

    /// The workspace being synced.
    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }

    /// The sync mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// The checkpoint the previous sync committed (empty for a first sync).
    pub fn previous(&self) -> &Checkpoint {
        &self.previous
    }

    /// When this sync started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// The watermark lag.
    pub fn lag(&self) -> Duration {
        self.lag
    }

    /// The newest watermark this sync may commit: `started_at − lag`.
    pub fn watermark_cap(&self) -> DateTime<Utc> {
        self.cap_for(self.started_at)
    }

    /// The watermark cap of a pass begun at `started`: `started − lag`.
    pub fn cap_for(&self, started: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.lag)
            .ok()
            .and_then(|lag| started.checked_sub_signed(lag))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The cancellation token; connectors check it between pages.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// `Err(Error::Cancelled)` once the sync was cancelled.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Where to report progress.
    pub fn progress(&self) -> &ProgressReporter {
        &self.progress
    }
}

/// The member of a connection's `sync_cursor` that holds what its webhooks are matched by:
/// `{"account": "<provider account id>"}` (see [`SyncCapable::webhook_account`]), or a
/// Google Drive push channel.
pub const WEBHOOK_ACCOUNT_KEY: &str = "webhook";

/// The key of a connection's config that lists the workspace's internal email domains
/// (`{"internal_domains": ["example.com"]}`). It belongs to the connection, not to its
/// connector: the internal-filter hook (`hooks::InternalFilter`) reads it, and every
/// connector's config reader ignores it.
pub const INTERNAL_DOMAINS_CONFIG_KEY: &str = "internal_domains";

/// A record deleted at the provider, known only by its id (soft-deleted with `archived_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// The table it lives in.
    pub kind: RecordKind,
    /// The provider id.
    pub source_id: String,
    /// When the provider deleted it (or when the deletion was seen).
    pub deleted_at: DateTime<Utc>,
}

/// The complete contact set of a deal as the provider reports it now: stored links of that
/// deal (same workspace and source) whose contact is not in the set are removed from
/// `deal_contacts`.
///
/// This is the set form of a [`RecordKind::DealContact`] [`Deletion`], for providers that
/// report only a deal's current links (a connector cannot name the link that vanished, as
/// it does not read the store). Send one only when the whole set is known: a set read from
/// a cut-off (paged) association list would remove links that still exist. An empty set
/// removes every link of the deal. The set never adds links (send them as
/// [`Record::DealContact`] records) and never touches a pair it contains, so the links a
/// batch upserts survive when they are in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealContactSet {
    /// The deal's provider id.
    pub deal_source_id: String,
    /// The provider ids of every contact linked to the deal now.
    pub contact_source_ids: Vec<String>,
}

/// One page of work for the sink: records to upsert, records to soft-delete, the complete
/// contact sets of deals, and the records that failed to transform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// Records to upsert (a record with `archived_at` set is stored archived).
    pub records: Vec<Record>,
    /// Records the provider reported deleted.
    pub deletions: Vec<Deletion>,
    /// Complete contact sets of deals: the links of each deal that are not in its set are
    /// removed, after the batch's records are stored (see [`DealContactSet`]).
    #[serde(default)]
    pub link_sets: Vec<DealContactSet>,
    /// Records that could not be transformed, with their ids.
    pub failures: Vec<RecordFailure>,
}

impl RecordBatch {
    /// A batch of records.
    pub fn new(records: Vec<Record>) -> Self {
        RecordBatch {
            records,
            ..Default::default()
        }
    }

    /// Whether the batch carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.deletions.is_empty()
            && self.link_sets.is_empty()
            && self.failures.is_empty()
    }
}

/// What a sink did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCounts {
    /// New rows.
    pub inserted: u64,
    /// Rows that changed.
    pub updated: u64,
    /// Rows left alone (same or older version than stored).
    pub unchanged: u64,
    /// Rows soft-deleted.
    pub archived: u64,
}

impl WriteCounts {
    /// Rows inserted or updated.
    pub fn written(&self) -> u64 {
        self.inserted + self.updated
    }
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.archived += o.archived;
    }
}

/// Where a connector pushes its pages.
///
/// A batch and its checkpoint are always committed together (or not at all), in the order
/// written, but a sink may commit them after `write` returns (see the module docs):
///
/// * when `write` returns `Ok`, the batch is on its way: it is durable once
///   [`flush`](RecordSink::flush) returns `Ok` (a sink may commit it sooner, alone or
///   grouped with the batches around it, always with the checkpoint of the last batch of
///   the commit);
/// * when `write` or `flush` returns `Err`, a batch failed to commit (this one or an earlier
///   one still in flight): the durable checkpoint is the last one before it, and the sync
///   should stop (a restart resumes from there);
/// * a sync that returns without calling `flush` loses nothing: the host settles the sink
///   at the end of the run and reports a failed commit as the run's error.
///
/// Sinks that commit synchronously (e.g. [`MemorySink`]) are durable when `write` returns,
/// and their `flush` does nothing.
#[async_trait]
pub trait RecordSink: Send {
    /// Stores one batch and the checkpoint that holds once it is stored. Returns what the
    /// sink has committed since the previous call (for a synchronous sink, this batch).
    async fn write(&mut self, batch: RecordBatch, checkpoint: &Checkpoint) -> Result<WriteCounts>;

    /// Waits until every batch written so far, with its checkpoint, is durable. Call it
    /// before acknowledging anything to the provider that must not be acknowledged for
    /// data that could still be lost. The default does nothing (a synchronous sink).
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A [`RecordSink`] that keeps every batch in memory, for tests of connectors.
///
/// It counts every record as inserted. It holds everything it is given, so use it for test
/// data, not for real syncs.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Every batch written, in order, with the checkpoint that came with it.
    pub batches: Vec<(RecordBatch, Checkpoint)>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record written, in order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.batches.iter().flat_map(|(b, _)| b.records.iter())
    }

    /// The last checkpoint written.
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.batches.last().map(|(_, c)| c)
    }

    /// The deal–contact links `(deal_source_id, contact_source_id)` that stand after every
    /// batch so far, applied in order as a store applies them: the links written, less
    /// those removed by a [`RecordKind::DealContact`] deletion or a deal's
    /// [`DealContactSet`].
    pub fn links(&self) -> BTreeSet<(String, String)> {
        let mut links = BTreeSet::new();
        for (batch, _) in &self.batches {
            apply_links(&mut links, batch);
        }
        links
    }
}

/// Applies a batch's links, link deletions and contact sets to `links`; returns how many
/// links the contact sets removed.
fn apply_links(links: &mut BTreeSet<(String, String)>, batch: &RecordBatch) -> u64 {
    for r in &batch.records {
        if let Record::DealContact(l) = r {
            links.insert((l.deal_source_id.clone(), l.contact_source_id.clone()));
        }
    }
    for d in &batch.deletions {
        if d.kind != RecordKind::DealContact {
            continue;
        }
        if let Some((deal, contact)) = d.source_id.split_once(':') {
            links.remove(&(deal.to_owned(), contact.to_owned()));
        }
    }
    let mut removed = 0;
    for set in &batch.link_sets {
        let before = links.len();
        links.retain(|(deal, contact)| {
            *deal != set.deal_source_id || set.contact_source_ids.contains(contact)
        });
        removed += (before - links.len()) as u64;
    }
    removed
}

#[async_trait]
impl RecordSink for MemorySink {
    /// Counts every record as inserted, every deletion as archived, and the links a
    /// [`DealContactSet`] removes (from those written before and in this batch) as archived.
    async fn write(&mut self, batch: RecordBatch, checkpoint: &Checkpoint) -> Result<WriteCounts> {
        let unlinked = if batch.link_sets.is_empty() {
            0
        } else {
            apply_links(&mut self.links(), &batch)
        };
        let counts = WriteCounts {
            inserted: batch.records.len() as u64,
            archived: batch.deletions.len() as u64 + unlinked,
            ..Default::default()
        };
        self.batches.push((batch, checkpoint.clone()));
        Ok(counts)
    }

    /// Nothing to wait for: every batch is kept by the time `write` returns.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a connector reports when a sync finishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SyncReport {
    /// Records read from the provider and handed to the sink.
    pub records_fetched: u64,
    /// Records that failed to transform.
    pub records_failed: u64,
    /// Whether a bulk/export API was used instead of the paged REST API.
    pub used_export_api: bool,
    /// Connector-specific detail (e.g. Gong's per-user results).
    pub details: serde_json::Value,
    /// Totals the provider reported for streams read in full during this sync (HubSpot
    /// search `total`, Gong `records.totalRecords`, …); the orchestrator reconciles them
    /// with the rows stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_totals: Vec<SourceTotal>,
}

/// A provider-reported total of a stream, for reconciliation with the rows stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTotal {
    /// The checkpoint stream the total belongs to (its `repair` flag is set on a gap).
    pub stream: String,
    /// The record kind the stream stores.
    pub kind: RecordKind,
    /// The number of live (not archived) records the provider reports.
    pub total: u64,
}

/// A connector that can sync.
///
/// Implement `kind`, `initial_sync` and `incremental_sync`; `backfill_sync` defaults to an
/// [`Error::Unsupported`]. [`SyncCapable::sync`] dispatches on the context's mode.
///
/// # Example: an in-memory connector
///
/// ```
/// use async_trait::async_trait;
/// use pandora_sync::connector::{MemorySink, SyncReport};
/// use pandora_sync::model::Account;
/// use pandora_sync::{
///     ConnectorKind, RecordBatch, RecordSink, Result, SyncCapable, SyncContext, SyncMode,
/// };
///
/// /// Serves fixed account names, two per page.
/// struct Fixed(Vec<&'static str>);
///
/// #[async_trait]
/// impl SyncCapable for Fixed {
///     fn kind(&self) -> ConnectorKind {
///         ConnectorKind::Hubspot
///     }
///
///     async fn initial_sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         let mut checkpoint = ctx.previous().clone();
///         let mut report = SyncReport::default();
///         for (page, names) in self.0.chunks(2).enumerate() {
///             ctx.check_cancelled()?;
///             let records = names
///                 .iter()
///                 .map(|n| {
///                     let mut a = Account::new(ctx.workspace_id(), self.kind(), *n);
///                     a.name = Some(n.to_string());
///                     a.meta.source_updated_at = Some(ctx.started_at());
///                     a.into()
///                 })
///                 .collect::<Vec<_>>();
///             let stream = checkpoint.stream_mut("accounts");
///             stream.observe_records(&records);
///             stream.cursor = Some((page + 1).to_string());
///             report.records_fetched += records.len() as u64;
///             sink.write(RecordBatch::new(records), &checkpoint).await?;
///         }
///         checkpoint.stream_mut("accounts").finish_pass(ctx.watermark_cap());
///         sink.write(RecordBatch::default(), &checkpoint).await?;
///         Ok(report)
///     }
///
///     async fn incremental_sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         self.initial_sync(ctx, sink).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let ctx = SyncContext::new(uuid::Uuid::new_v4(), SyncMode::Initial);
/// let mut sink = MemorySink::new();
/// let report = Fixed(vec!["Acme", "Globex", "Initech"]).sync(&ctx, &mut sink).await?;
/// assert_eq!(report.records_fetched, 3);
/// assert_eq!(sink.batches.len(), 3);
/// let last = sink.last_checkpoint().unwrap();
/// assert_eq!(last.watermark("accounts"), Some(ctx.watermark_cap()));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait SyncCapable: Send + Sync {
    /// Which provider this connector reads.
    fn kind(&self) -> ConnectorKind;

    /// Reads everything (or the connector's initial window) and writes it to `sink`.
    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport>;

    /// Reads what changed since `ctx.previous()`'s watermarks and writes it to `sink`.
    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport>;

    /// Reads history older than the initial window. Unsupported unless overridden.
    async fn backfill_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let _ = (ctx, sink);
        Err(Error::unsupported("backfill_sync", self.kind().as_str()))
    }

    /// Credential values the provider replaced while this connector ran (a rotated OAuth
    /// refresh token), as `(key, value)` pairs of the connection's credentials JSON. The
    /// orchestrator stores them with the connection after every run, finished or not, so
    /// the next run uses them. Empty unless overridden.
    fn credential_updates(&self) -> Vec<(String, secrecy::SecretString)> {
        Vec::new()
    }

    /// The provider account this connection belongs to, as the provider's webhooks name it
    /// (HubSpot's portal id, monday.com's account id), so that a verified webhook event finds
    /// its connection. The orchestrator asks once per connection, after a sync that
    /// finished, and stores the answer in the connection's `sync_cursor` under
    /// [`WEBHOOK_ACCOUNT_KEY`] (`{"account": id}`). `Ok(None)` (the default) for providers
    /// whose webhooks name no account.
    async fn webhook_account(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Runs the sync that `ctx.mode()` names.
    async fn sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
        match ctx.mode() {
            SyncMode::Initial => self.initial_sync(ctx, sink).await,
            SyncMode::Incremental => self.incremental_sync(ctx, sink).await,
            SyncMode::Backfill => self.backfill_sync(ctx, sink).await,
        }
    }
}

/// A task to create with [`TaskAdapter::create_task`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Board to create it on.
    pub board_id: String,
    /// Group (section) within the board; the board's default when `None`.
    pub group_id: Option<String>,
    /// Title.
    pub title: String,
    /// Initial status label.
    pub status: Option<String>,
    /// Assignee's email.
    pub assignee_email: Option<String>,
    /// Due date.
    pub due_date: Option<NaiveDate>,
}

/// Changes for [`TaskAdapter::update_task`]: an absent field (`None`) is left as it is; for
/// the clearable fields `Some(None)` (JSON `null`) clears it.
///
/// ```
/// use pandora_sync::connector::TaskUpdate;
///
/// let u: TaskUpdate = serde_json::from_str(r#"{"status": "Done", "due_date": null}"#)?;
/// assert_eq!(u.status, Some(Some("Done".to_owned())));
/// assert_eq!(u.due_date, Some(None), "null clears");
/// assert_eq!(u.assignee_email, None, "absent leaves it");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// New title (a title cannot be cleared).
    #[serde(default)]
    pub title: Option<String>,
    /// New status label; `Some(None)` clears it.
    #[serde(default, deserialize_with = "present")]
    pub status: Option<Option<String>>,
    /// New assignee's email; `Some(None)` clears it.
    #[serde(default, deserialize_with = "present")]
    pub assignee_email: Option<Option<String>>,
    /// New due date; `Some(None)` clears it.
    #[serde(default, deserialize_with = "present")]
    pub due_date: Option<Option<NaiveDate>>,
}

/// A field that is present: `null` is `Some(None)` (absent fields are `None` by default).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A task connector that can also write tasks back to the provider.
///
/// # Example
///
/// ```
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use pandora_sync::connector::{NewTask, SyncReport, TaskUpdate};
/// use pandora_sync::model::Task;
/// use pandora_sync::{
///     ConnectorKind, Error, RecordBatch, RecordSink, Result, SyncCapable, SyncContext,
///     TaskAdapter,
/// };
/// use uuid::Uuid;
///
/// #[derive(Default)]
/// struct Board(Mutex<Vec<Task>>);
///
/// #[async_trait]
/// impl SyncCapable for Board {
///     fn kind(&self) -> ConnectorKind { ConnectorKind::Monday }
///     async fn initial_sync(&self, _: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         let tasks: Vec<_> = self.0.lock().unwrap().iter().cloned().map(Into::into).collect();
///         let mut report = SyncReport::default();
///         report.records_fetched = tasks.len() as u64;
///         sink.write(RecordBatch::new(tasks), &Default::default()).await?;
///         Ok(report)
///     }
///     async fn incremental_sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         self.initial_sync(ctx, sink).await
///     }
/// }
///
/// #[async_trait]
/// impl TaskAdapter for Board {
///     async fn create_task(&self, ws: Uuid, new: NewTask) -> Result<Task> {
///         let mut tasks = self.0.lock().unwrap();
///         let mut t = Task::new(ws, self.kind(), tasks.len().to_string());
///         t.board_id = Some(new.board_id);
///         t.title = Some(new.title);
///         t.status = new.status;
///         tasks.push(t.clone());
///         Ok(t)
///     }
///     async fn update_task(&self, _ws: Uuid, id: &str, u: TaskUpdate) -> Result<Task> {
///         let mut tasks = self.0.lock().unwrap();
///         let t = tasks.iter_mut().find(|t| t.meta.source_id == id)
///             .ok_or_else(|| Error::config(format!("no task {id}")))?;
///         if let Some(s) = u.status { t.status = s; }
///         if let Some(title) = u.title { t.title = Some(title); }
///         Ok(t.clone())
///     }
///     async fn complete_task(&self, ws: Uuid, id: &str) -> Result<Task> {
///         let update = TaskUpdate { status: Some(Some("Done".into())), ..Default::default() };
///         self.update_task(ws, id, update).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let board = Board::default();
/// let ws = Uuid::new_v4();
/// let t = board.create_task(ws, NewTask { board_id: "b1".into(), title: "Call Acme".into(), ..Default::default() }).await?;
/// let done = board.complete_task(ws, &t.meta.source_id).await?;
/// assert_eq!(done.status.as_deref(), Some("Done"));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait TaskAdapter: SyncCapable {
    /// Creates a task at the provider and returns it as stored there.
    async fn create_task(&self, workspace_id: Uuid, task: NewTask) -> Result<Task>;

    /// Changes a task at the provider.
    async fn update_task(
        &self,
        workspace_id: Uuid,
        source_id: &str,
        update: TaskUpdate,
    ) -> Result<Task>;

    /// Marks a task done at the provider.
    async fn complete_task(&self, workspace_id: Uuid, source_id: &str) -> Result<Task>;
}

/// A document connector that can also fetch a document's text.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use async_trait::async_trait;
/// use pandora_sync::connector::SyncReport;
/// use pandora_sync::model::Document;
/// use pandora_sync::{
///     ConnectorKind, DocumentAdapter, RecordBatch, RecordSink, Result, SyncCapable, SyncContext,
/// };
///
/// struct Files(HashMap<&'static str, &'static str>);
///
/// #[async_trait]
/// impl SyncCapable for Files {
///     fn kind(&self) -> ConnectorKind { ConnectorKind::GoogleDrive }
///     async fn initial_sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         let docs = self.0.keys().map(|id| Document::new(ctx.workspace_id(), self.kind(), *id).into()).collect();
///         sink.write(RecordBatch::new(docs), ctx.previous()).await?;
///         Ok(SyncReport::default())
///     }
///     async fn incremental_sync(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
///         self.initial_sync(ctx, sink).await
///     }
/// }
///
/// #[async_trait]
/// impl DocumentAdapter for Files {
///     async fn fetch_document_text(&self, source_id: &str) -> Result<Option<String>> {
///         Ok(self.0.get(source_id).map(|t| t.to_string()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let files = Files(HashMap::from([("f1", "Q3 plan")]));
/// assert_eq!(files.fetch_document_text("f1").await?.as_deref(), Some("Q3 plan"));
/// assert_eq!(files.fetch_document_text("nope").await?, None);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait DocumentAdapter: SyncCapable {
    /// The document's text, or `None` when it has no text form (an image, a binary file).
    async fn fetch_document_text(&self, source_id: &str) -> Result<Option<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn watermark_is_capped_and_never_regresses() {
        let mut s = StreamCheckpoint::default();
        s.observe(t(3));
        s.observe(t(2));
        s.cursor = Some("p2".into());
        s.finish_pass(t(10));
        assert_eq!(s.watermark, Some(t(3)));
        assert_eq!(s.cursor, None);
        assert_eq!(s.pass_max_updated_at, None);

        // An overlapping pass that only saw older records keeps the watermark.
        s.observe(t(1));
        s.finish_pass(t(10));
        assert_eq!(s.watermark, Some(t(3)));

        // A record newer than the cap only moves the watermark to the cap.
        s.observe(t(20));
        s.finish_pass(t(10));
        assert_eq!(s.watermark, Some(t(10)));

        // A pass that saw nothing keeps the watermark.
        s.finish_pass(t(15));
        assert_eq!(s.watermark, Some(t(10)));
    }

    #[test]
    fn checkpoint_json_round_trip() {
        let mut c = Checkpoint::default();
        assert!(c.is_empty());
        let s = c.stream_mut("deals");
        s.watermark = Some(t(4));
        s.cursor = Some("after=100".into());
        s.extra.insert("token".into(), serde_json::json!("abc"));
        c.stream_mut("contacts");
        let json = c.to_json();
        assert_eq!(json["streams"]["deals"]["cursor"], "after=100");
        assert_eq!(json["streams"]["contacts"], serde_json::json!({}));
        assert_eq!(Checkpoint::from_json(&json).unwrap(), c);
        assert_eq!(c.watermark("deals"), Some(t(4)));
        assert!(Checkpoint::from_json(&serde_json::json!({"streams": 3})).is_err());
        assert_eq!(
            Checkpoint::from_json(&serde_json::json!({})).unwrap(),
            Checkpoint::default()
        );
    }

    #[test]
    fn context_cap_and_cancel() {
        let ctx = SyncContext::new(Uuid::nil(), SyncMode::Incremental)
            .with_started_at(t(10))
            .with_lag(Duration::from_secs(86_400));
        assert_eq!(ctx.watermark_cap(), t(9));
        assert!(ctx.check_cancelled().is_ok());
        ctx.cancel_token().cancel();
        assert!(matches!(ctx.check_cancelled(), Err(Error::Cancelled)));
        let huge = ctx.clone().with_lag(Duration::from_secs(u64::MAX));
        assert_eq!(huge.watermark_cap(), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn progress_reaches_subscribers() {
        let p = ProgressReporter::new();
        let mut rx = p.subscribe();
        p.report(5, Some(10), "deals");
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            Progress {
                current: 5,
                total: Some(10),
                message: "deals".into()
            }
        );
        assert_eq!(p.latest().current, 5);
    }

    struct NoBackfill;

    #[async_trait]
    impl SyncCapable for NoBackfill {
        fn kind(&self) -> ConnectorKind {
            ConnectorKind::Fireflies
        }
        async fn initial_sync(
            &self,
            _: &SyncContext,
            _: &mut dyn RecordSink,
        ) -> Result<SyncReport> {
            Ok(SyncReport::default())
        }
        async fn incremental_sync(
            &self,
            _: &SyncContext,
            _: &mut dyn RecordSink,
        ) -> Result<SyncReport> {
            Ok(SyncReport::default())
        }
    }

    #[tokio::test]
    async fn backfill_defaults_to_unsupported() {
        let ctx = SyncContext::new(Uuid::nil(), SyncMode::Backfill);
        let err = NoBackfill
            .sync(&ctx, &mut MemorySink::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { operation, by } if operation == "backfill_sync" && by == "fireflies"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_sink_applies_contact_sets() {
        let link = |deal: &str, contact: &str| {
            Record::from(crate::model::DealContact {
                workspace_id: Uuid::nil(),
                source: ConnectorKind::Hubspot,
                deal_source_id: deal.into(),
                contact_source_id: contact.into(),
                role: None,
            })
        };
        let pairs = |list: &[(&str, &str)]| -> BTreeSet<(String, String)> {
            list.iter()
                .map(|(d, c)| ((*d).to_owned(), (*c).to_owned()))
                .collect()
        };
        let mut sink = MemorySink::new();
        let cp = Checkpoint::default();
        let first = RecordBatch::new(vec![link("d1", "c1"), link("d1", "c2"), link("d2", "c1")]);
        sink.write(first, &cp).await.unwrap();

        // A new link and its deal's set in one batch: the set keeps it, removes c2.
        let mut batch = RecordBatch::new(vec![link("d1", "c3")]);
        batch.link_sets = vec![DealContactSet {
            deal_source_id: "d1".into(),
            contact_source_ids: vec!["c1".into(), "c3".into()],
        }];
        assert!(!batch.is_empty());
        let counts = sink.write(batch, &cp).await.unwrap();
        assert_eq!((counts.inserted, counts.archived), (1, 1));
        assert_eq!(
            sink.links(),
            pairs(&[("d1", "c1"), ("d1", "c3"), ("d2", "c1")])
        );

        // An empty set removes every link of its deal; a link deletion still works.
        let batch = RecordBatch {
            deletions: vec![Deletion {
                kind: RecordKind::DealContact,
                source_id: "d1:c3".into(),
                deleted_at: t(1),
            }],
            link_sets: vec![DealContactSet {
                deal_source_id: "d2".into(),
                contact_source_ids: Vec::new(),
            }],
            ..Default::default()
        };
        let counts = sink.write(batch, &cp).await.unwrap();
        assert_eq!(counts.archived, 2);
        assert_eq!(sink.links(), pairs(&[("d1", "c1")]));
    }
}
