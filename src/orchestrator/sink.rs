//! The pipelined store sink a connector writes its pages into during a run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use crate::capture::{CaptureSummary, RecordFailure};
use crate::connector::{
    Checkpoint, DealContactSet, Deletion, ProgressReporter, RecordBatch, RecordSink, WriteCounts,
};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, Record, RecordKind};
use crate::store::rows::validate_link_set;
use crate::store::{SyncStore, validate_record};

/// Pages of at most `batch_size` records arriving less than this apart are grouped into
/// one commit (with the checkpoint of the group's last page).
const GROUP_LINGER: Duration = Duration::from_millis(100);

/// A group is committed once its first page is this old.
const GROUP_MAX_AGE: Duration = Duration::from_secs(1);

/// A group is committed once it holds this many records...
const GROUP_RECORDS: usize = 20_000;

/// ... or about this many bytes (transcripts, document texts), whichever comes first.
const GROUP_BYTES: usize = 32 << 20;

/// A group holding this many records is committed as soon as no write is in flight: the
/// store starts on the first pages at once instead of idling until a whole group has
/// come, and groups grow towards [`GROUP_RECORDS`] only while the store is behind.
const GROUP_EARLY_RECORDS: usize = 4_000;

/// The store-backed sink: validates, applies computed fields, and commits records with
/// their checkpoint in `write_batch`es.
///
/// Small pages arriving in quick succession are grouped: a page of at most `batch_size`
/// records that comes less than [`GROUP_LINGER`] after the previous `write` returned (the
/// connector's own time per page, not the time a write made it wait) waits for the next,
/// until the group holds [`GROUP_RECORDS`] records or about [`GROUP_BYTES`], it holds
/// [`GROUP_EARLY_RECORDS`] and no write is in flight, a page is larger than `batch_size`,
/// the group's first page is [`GROUP_MAX_AGE`] old, or [`RecordSink::flush`] /
/// [`StoreSink::settle`] is called. A group is committed in one
/// transaction per table kind (records, then deal-contact links) and the last of them
/// carries the checkpoint of the group's last page, so a checkpoint is never committed
/// before the records it covers, and a crash loses only uncommitted pages, which the next
/// run fetches again from the durable checkpoint. Fewer, larger commits are what keeps
/// SQLite's I/O per record low (one page write per page of rows instead of one per row of
/// every index the rows touch). Pages larger than `batch_size` are split into chunks of
/// `batch_size`; chunks before the last carry the previous (still true) durable checkpoint.
///
/// Writes are pipelined: a group is written by a task while the connector fetches the
/// next pages. At most one group is in flight; launching the next (and
/// [`RecordSink::flush`], and [`StoreSink::settle`] at the end of a run, whatever its
/// outcome) waits for it, so a store error reaches the connector a group later at most and
/// the run's result always includes every committed page. Dropping the sink (the sync
/// future was dropped) aborts the write in flight, whose transaction then rolls back, and
/// drops the pages not yet launched: records and checkpoint still commit together or not
/// at all.
///
/// Counting (the success threshold, `records_synced`, progress) covers records of the
/// primary tables only: [`RecordKind::DealContact`] links are stored in chunks of their own
/// after the group's records and counted apart, so five links per deal do not turn a 10 %
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
    /// Small pages waiting to be committed together.
    pending: Option<Pending>,
    /// When the previous [`RecordSink::write`] returned.
    last_return: Option<Instant>,
}

/// Pages written but not launched yet: their records, links and deletions in page order,
/// and the checkpoint of the last of them.
struct Pending {
    primary: Vec<Record>,
    links: Vec<Record>,
    deletions: Vec<Deletion>,
    link_sets: Vec<DealContactSet>,
    checkpoint: Checkpoint,
    since: Instant,
    /// Roughly how much memory the records take ([`approx_bytes`]).
    bytes: usize,
}

/// One `write_batch` of a launch.
type Part = (RecordBatch, Checkpoint, bool);

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
            pending: None,
            last_return: None,
        }
    }

    /// Commits the pages not launched yet and waits for them (and the group in flight);
    /// their counts are added and the last page's checkpoint becomes the durable one.
    pub(super) async fn settle(&mut self) -> Result<WriteCounts> {
        let mut total = self.launch_pending().await?;
        total += self.wait_in_flight().await?;
        Ok(total)
    }

    /// Launches the pending pages, if any, as one group (after the group in flight, whose
    /// counts it returns).
    async fn launch_pending(&mut self) -> Result<WriteCounts> {
        let Some(p) = self.pending.take() else {
            return Ok(WriteCounts::default());
        };
        let previous = self.wait_in_flight().await?;
        let parts = split(
            vec![(p.primary, false), (p.links, true)],
            p.deletions,
            p.link_sets,
            usize::MAX,
            &self.durable,
            &p.checkpoint,
        );
        self.spawn(parts, p.checkpoint);
        Ok(previous)
    }

    /// Starts writing `parts` (after the group in flight has settled); `checkpoint` becomes
    /// durable when they are committed.
    fn spawn(&mut self, parts: Vec<Part>, checkpoint: Checkpoint) {
        let store = self.store.clone();
        let (ws, source) = (self.workspace_id, self.source);
        let task = tokio::spawn(
            async move {
                let mut page = PageCounts::default();
                for (part, cp, is_link) in parts {
                    let c = store.write_batch(ws, source, &part, &cp).await?;
                    // Deletions (in the last part) count as archived records.
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
        self.in_flight = Some(InFlight { task, checkpoint });
    }

    /// Waits for the group in flight, if any; its counts are added and its checkpoint
    /// becomes the durable one.
    async fn wait_in_flight(&mut self) -> Result<WriteCounts> {
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
        let written = self.accept(batch, checkpoint).await;
        // The connector's own time between pages (fetch, transform) runs from here: a page
        // that waited for a slow write is not, for that, a page that came late.
        self.last_return = Some(Instant::now());
        written
    }

    /// Commits the pages not launched yet and waits for them: when it returns `Ok`, every
    /// page written so far and its checkpoint are committed.
    async fn flush(&mut self) -> Result<()> {
        self.settle().await.map(|_| ())
    }
}

impl StoreSink {
    /// [`RecordSink::write`] without the bookkeeping of when it returned.
    async fn accept(&mut self, batch: RecordBatch, checkpoint: &Checkpoint) -> Result<WriteCounts> {
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
        // Counted by kind first: one map entry (and one table-name string) per kind and
        // page, not per record.
        let mut kinds: Vec<(RecordKind, u64)> = Vec::new();
        for r in &good {
            let kind = r.kind();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        for (kind, n) in kinds {
            *self.by_table.entry(kind.table().to_owned()).or_insert(0) += n;
        }
        let (links, primary): (Vec<Record>, Vec<Record>) = good
            .into_iter()
            .partition(|r| r.kind() == RecordKind::DealContact);
        self.failures.succeeded += primary.len() as u64;

        let now = Instant::now();
        let quick = self
            .last_return
            .is_some_and(|t| now.duration_since(t) < GROUP_LINGER);
        let size = self.batch_size.max(1);
        let small = primary.len() + links.len() <= size;
        let mut previous = WriteCounts::default();
        if small {
            let p = self.pending.get_or_insert_with(|| Pending {
                primary: Vec::new(),
                links: Vec::new(),
                deletions: Vec::new(),
                link_sets: Vec::new(),
                checkpoint: Checkpoint::default(),
                since: now,
                bytes: 0,
            });
            p.bytes += primary
                .iter()
                .chain(&links)
                .map(approx_bytes)
                .sum::<usize>();
            p.primary.extend(primary);
            p.links.extend(links);
            p.deletions.extend(deletions);
            p.link_sets.extend(valid_sets);
            p.checkpoint = checkpoint.clone();
            // Deletions and contact sets group too: they are applied after every record and
            // link of the group, and both are version-safe in any order (an archive never
            // passes a newer `source_updated_at`; a deal's last contact set wins).
            let held = p.primary.len() + p.links.len();
            let full = held >= GROUP_RECORDS
                || p.bytes >= GROUP_BYTES
                || now.duration_since(p.since) >= GROUP_MAX_AGE;
            let idle = self.in_flight.as_ref().is_none_or(|f| f.task.is_finished());
            if full || !quick || (idle && held >= GROUP_EARLY_RECORDS) {
                previous += self.launch_pending().await?;
            }
            // A finished group's counts are reported at once.
            if self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.task.is_finished())
            {
                previous += self.wait_in_flight().await?;
            }
            return Ok(previous);
        }

        // A large page: the pending pages go first, then this page in chunks.
        previous += self.launch_pending().await?;
        previous += self.wait_in_flight().await?;
        let parts = split(
            vec![(primary, false), (links, true)],
            deletions,
            valid_sets,
            size,
            &self.durable,
            checkpoint,
        );
        self.spawn(parts, checkpoint.clone());
        Ok(previous)
    }
}

/// Splits records (then links) into `write_batch`es of at most `size` records; the last
/// carries the deletions, the deals' contact sets (after every link) and `checkpoint`, the others `durable` (the checkpoint that holds
/// already), so the checkpoint never runs ahead of the data.
fn split(
    kinds: Vec<(Vec<Record>, bool)>,
    deletions: Vec<Deletion>,
    link_sets: Vec<DealContactSet>,
    size: usize,
    durable: &Checkpoint,
    checkpoint: &Checkpoint,
) -> Vec<Part> {
    let mut chunks: Vec<(Vec<Record>, bool)> = Vec::new();
    for (records, is_link) in kinds {
        let mut iter = records.into_iter().peekable();
        while iter.peek().is_some() {
            chunks.push((iter.by_ref().take(size).collect(), is_link));
        }
    }
    if chunks.is_empty() {
        chunks.push((Vec::new(), false));
    }
    let last = chunks.len() - 1;
    let mut deletions = Some(deletions);
    let mut link_sets = Some(link_sets);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, (records, is_link))| {
            let is_last = i == last;
            let part = RecordBatch {
                records,
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
                durable.clone()
            };
            (part, cp, is_link)
        })
        .collect()
}

/// A rough size of a record in memory: a fixed allowance, its custom fields, and its long
/// texts (what makes a page of conversations or documents large).
fn approx_bytes(r: &Record) -> usize {
    let texts = match r {
        Record::Conversation(c) => {
            c.summary.as_ref().map_or(0, String::len)
                + c.transcript.as_ref().map_or(0, String::len)
                + c.participants.len() * 128
        }
        Record::Document(d) => d.content_text.as_ref().map_or(0, String::len),
        _ => 0,
    };
    1_024 + r.meta().map_or(0, |m| m.custom_fields.len() * 64) + texts
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::model::Contact;
    use crate::store::SqliteStore;

    fn page(ws: Uuid, p: usize) -> RecordBatch {
        RecordBatch::new(
            (0..100)
                .map(|i| Contact::new(ws, ConnectorKind::Hubspot, (p * 100 + i).to_string()).into())
                .collect(),
        )
    }

    /// Quick pages are grouped until [`GROUP_EARLY_RECORDS`]; with no write in flight that
    /// group goes at once (not at [`GROUP_RECORDS`]), and every record is committed once.
    #[tokio::test]
    async fn a_group_goes_early_while_the_store_is_idle() {
        let ws = Uuid::new_v4();
        let store: Arc<dyn SyncStore> = Arc::new(SqliteStore::memory_with_hubspot(ws).await);
        let mut sink = StoreSink::new(
            store,
            ws,
            ConnectorKind::Hubspot,
            100,
            Checkpoint::default(),
            None,
        );
        let pages = GROUP_EARLY_RECORDS / 100;
        const { assert!(GROUP_EARLY_RECORDS < GROUP_RECORDS) };
        // The first page of a run is never quick: it goes alone.
        let mut inserted = sink
            .write(page(ws, 0), &Checkpoint::default())
            .await
            .unwrap()
            .inserted;
        inserted += sink.settle().await.unwrap().inserted;
        for p in 1..pages {
            inserted += sink
                .write(page(ws, p), &Checkpoint::default())
                .await
                .unwrap()
                .inserted;
            assert!(sink.in_flight.is_none(), "launched after {p} quick pages");
        }
        inserted += sink
            .write(page(ws, pages), &Checkpoint::default())
            .await
            .unwrap()
            .inserted;
        assert!(
            sink.in_flight.is_some(),
            "the idle store got the group at once"
        );
        assert!(sink.pending.is_none());
        inserted += sink
            .write(page(ws, pages + 1), &Checkpoint::default())
            .await
            .unwrap()
            .inserted;
        inserted += sink.settle().await.unwrap().inserted;
        assert_eq!(inserted, (GROUP_EARLY_RECORDS + 200) as u64);
    }
}
