//! The pipelined store sink a connector writes its pages into during a run.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use crate::capture::{CaptureSummary, RecordFailure};
use crate::connector::{Checkpoint, ProgressReporter, RecordBatch, RecordSink, WriteCounts};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Record, RecordKind};
use crate::store::rows::validate_link_set;
use crate::store::{SyncStore, validate_record};

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
pub(super) struct StoreSink {
    store: Arc<dyn SyncStore>,
    workspace_id: Uuid,
    source: ConnectorKind,
    batch_size: usize,
    /// The last checkpoint that is durable.
    pub(super) durable: Checkpoint,
    /// Rows of the primary tables (every table but `deal_contacts`).
    pub(super) counts: WriteCounts,
    /// Deal-contact links.
    link_counts: WriteCounts,
    /// Records handed to the store, by table.
    pub(super) by_table: BTreeMap<String, u64>,
    /// The run's per-record failures and successes.
    pub(super) failures: CaptureSummary,
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
    /// A sink writing `source`'s records of a workspace in chunks of `batch_size`, starting
    /// from the `durable` checkpoint, with nothing written or failed yet.
    pub(super) fn new(
        store: Arc<dyn SyncStore>,
        workspace_id: Uuid,
        source: ConnectorKind,
        batch_size: usize,
        durable: Checkpoint,
        progress: Option<ProgressReporter>,
    ) -> Self {
        StoreSink {
            store,
            workspace_id,
            source,
            batch_size,
            durable,
            counts: WriteCounts::default(),
            link_counts: WriteCounts::default(),
            by_table: BTreeMap::new(),
            failures: CaptureSummary::default(),
            progress,
            in_flight: None,
        }
    }

    /// Waits for the page in flight, if any; its counts are added and its checkpoint becomes
    /// the durable one.
    pub(super) async fn settle(&mut self) -> Result<WriteCounts> {
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
            link_sets,
            failures,
        } = batch;
        self.failures.record_failures(failures);
        // A contact set the store would refuse is dropped (its links stay), not the page.
        let mut valid_sets = Vec::with_capacity(link_sets.len());
        for set in link_sets {
            match validate_link_set(&set) {
                Ok(()) => valid_sets.push(set),
                Err(e) => self.failures.record_failures([RecordFailure::new(
                    Some(set.deal_source_id.clone()),
                    e.to_string(),
                )]),
            }
        }
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
        // Deletions and contact sets go in the last chunk, after every link of the page.
        let mut deletions = Some(deletions);
        let mut link_sets = Some(valid_sets);
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
                    link_sets: if is_last {
                        link_sets.take().unwrap_or_default()
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
                    // Deletions and links removed by contact sets (in the last chunk) count as
                    // archived records.
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
