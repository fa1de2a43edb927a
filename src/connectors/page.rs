//! One page of a stream on its way to the sink: the per-record capture and the write that
//! every connector's page loop uses (see `docs/connectors.md`, "A pass, page by page").

use crate::capture::transform_with_error_capture;
use crate::connector::{Checkpoint, RecordBatch, RecordSink, SyncContext, SyncReport};
use crate::error::Result;
use crate::model::Record;

/// Transforms one page of provider items into a batch.
///
/// Each item becomes zero or more records (a deal and its contact links, say). An item that
/// fails is captured as a [`RecordFailure`](crate::capture::RecordFailure) with the id
/// `id_of` reads from it before the transform consumes it (or, failing that, the id its
/// decode error names) and the page goes on: one bad record never aborts its batch.
pub(crate) fn capture_page<I, R>(
    items: impl IntoIterator<Item = I>,
    id_of: impl Fn(&I) -> Option<String>,
    transform: impl FnMut(I) -> Result<R>,
) -> RecordBatch
where
    R: IntoIterator<Item = Record>,
{
    let captured = transform_with_error_capture(items, id_of, transform);
    RecordBatch {
        records: captured.succeeded.into_iter().flatten().collect(),
        deletions: Vec::new(),
        link_sets: Vec::new(),
        failures: captured.failed,
    }
}

/// Hands a page to the sink with the checkpoint that is true once the page is stored, counts
/// it in `report` and publishes progress (`message`).
///
/// `records_fetched` counts the records read from the provider; link rows built from them
/// ([`Record::DealContact`]) are not counted. `records_failed` counts the captured failures.
pub(crate) async fn write_page(
    sink: &mut dyn RecordSink,
    batch: RecordBatch,
    checkpoint: &Checkpoint,
    report: &mut SyncReport,
    ctx: &SyncContext,
    message: &str,
) -> Result<()> {
    report.records_fetched += batch
        .records
        .iter()
        .filter(|r| !matches!(r, Record::DealContact(_)))
        .count() as u64;
    report.records_failed += batch.failures.len() as u64;
    sink.write(batch, checkpoint).await?;
    ctx.progress().report(report.records_fetched, None, message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::MemorySink;
    use crate::error::Error;
    use crate::model::{Account, ConnectorKind, SyncMode};
    use uuid::Uuid;

    fn account(id: &str) -> Record {
        Account::new(Uuid::nil(), ConnectorKind::Hubspot, id).into()
    }

    #[tokio::test]
    async fn a_page_keeps_its_good_records_and_names_its_bad_ones() {
        let items = ["1", "bad", "2", ""];
        let batch = capture_page(
            items,
            |s| (!s.is_empty()).then(|| s.to_string()),
            |s| match s {
                "1" | "2" => Ok(vec![account(s), account(&format!("{s}b"))]),
                _ => Err(Error::decode(Some("from-error"), "unreadable")),
            },
        );
        assert_eq!(batch.records.len(), 4);
        let ids: Vec<_> = batch
            .failures
            .iter()
            .map(|f| f.record_id.as_deref())
            .collect();
        assert_eq!(ids, [Some("bad"), Some("from-error")]);

        let ctx = SyncContext::new(Uuid::nil(), SyncMode::Initial);
        let mut report = SyncReport::default();
        let mut sink = MemorySink::new();
        let cp = Checkpoint::default();
        write_page(&mut sink, batch, &cp, &mut report, &ctx, "test: written")
            .await
            .unwrap();
        assert_eq!((report.records_fetched, report.records_failed), (4, 2));
        assert_eq!(sink.batches.len(), 1);
        assert_eq!(ctx.progress().latest().message, "test: written");
    }
}
