//! Foundation: the sync traits stream batches with checkpoints into a sink.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use pandora_sync::capture::RecordFailure;
use pandora_sync::connector::{SyncReport, WriteCounts};
use pandora_sync::model::Contact;
use pandora_sync::{
    Checkpoint, ConnectorKind, Error, Record, RecordBatch, RecordSink, Result, SyncCapable,
    SyncContext, SyncMode,
};
use uuid::Uuid;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
}

/// A provider with `n` contacts, modified one minute apart, served `page` at a time in
/// modification order. The page cursor is the offset of the next page.
struct PagedContacts {
    n: usize,
    page: usize,
}

impl PagedContacts {
    async fn run(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
        let mut checkpoint = ctx.previous().clone();
        let start: usize = match checkpoint
            .stream("contacts")
            .and_then(|s| s.cursor.as_deref())
        {
            Some(c) => c.parse().map_err(|_| Error::decode(None, "bad cursor"))?,
            None => 0,
        };
        let mut report = SyncReport::default();
        let mut offset = start;
        while offset < self.n {
            ctx.check_cancelled()?;
            let end = (offset + self.page).min(self.n);
            let mut batch = RecordBatch::default();
            for i in offset..end {
                if i == 4 {
                    // A malformed provider record: captured, not fatal.
                    batch
                        .failures
                        .push(RecordFailure::new(Some(format!("c{i}")), "bad email"));
                    continue;
                }
                let mut c =
                    Contact::new(ctx.workspace_id(), ConnectorKind::Hubspot, format!("c{i}"));
                c.email = Some(format!("p{i}@example.com"));
                c.meta.source_updated_at =
                    Some(base() + Duration::minutes(i64::try_from(i).unwrap()));
                batch.records.push(c.into());
            }
            let stream = checkpoint.stream_mut("contacts");
            stream.observe_records(&batch.records);
            offset = end;
            if offset < self.n {
                stream.cursor = Some(offset.to_string());
            } else {
                stream.finish_pass(ctx.watermark_cap());
            }
            report.records_fetched += batch.records.len() as u64;
            report.records_failed += batch.failures.len() as u64;
            sink.write(batch, &checkpoint).await?;
            ctx.progress()
                .report(offset as u64, Some(self.n as u64), "contacts");
        }
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for PagedContacts {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }
    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, sink).await
    }
    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, sink).await
    }
}

/// A sink that makes each write durable (here: appends to its log) and can fail on a
/// chosen write, storing nothing of that batch.
#[derive(Default)]
struct LogSink {
    writes: Vec<(Vec<String>, Checkpoint)>,
    failures: Vec<RecordFailure>,
    fail_on_write: Option<usize>,
    calls: usize,
}

#[async_trait]
impl RecordSink for LogSink {
    async fn write(&mut self, batch: RecordBatch, checkpoint: &Checkpoint) -> Result<WriteCounts> {
        self.calls += 1;
        if self.fail_on_write == Some(self.calls) {
            return Err(Error::Storage {
                message: "injected".into(),
                source: None,
            });
        }
        let ids: Vec<String> = batch.records.iter().map(Record::source_id).collect();
        self.failures.extend(batch.failures);
        let counts = WriteCounts {
            inserted: ids.len() as u64,
            ..Default::default()
        };
        self.writes.push((ids, checkpoint.clone()));
        Ok(counts)
    }
}

fn ctx(mode: SyncMode, previous: Checkpoint) -> SyncContext {
    SyncContext::new(Uuid::from_u128(1), mode)
        .with_started_at(base() + Duration::days(1))
        .with_previous(previous)
}

#[tokio::test]
async fn three_batches_each_record_once_in_order_with_checkpoint() {
    let connector = PagedContacts { n: 9, page: 3 };
    let mut sink = LogSink::default();
    let ctx = ctx(SyncMode::Initial, Checkpoint::default());
    let progress = ctx.progress().subscribe();
    let report = connector.sync(&ctx, &mut sink).await.unwrap();

    assert_eq!(sink.writes.len(), 3);
    let all: Vec<String> = sink
        .writes
        .iter()
        .flat_map(|(ids, _)| ids.clone())
        .collect();
    let expected: Vec<String> = (0..9)
        .filter(|i| *i != 4)
        .map(|i| format!("c{i}"))
        .collect();
    assert_eq!(all, expected, "every record once, in order");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());

    // Each batch arrived with the checkpoint that holds after it.
    let cursors: Vec<Option<String>> = sink
        .writes
        .iter()
        .map(|(_, c)| c.stream("contacts").unwrap().cursor.clone())
        .collect();
    assert_eq!(cursors, vec![Some("3".into()), Some("6".into()), None]);
    let last = &sink.writes[2].1;
    assert_eq!(
        last.watermark("contacts"),
        Some(base() + Duration::minutes(8))
    );
    assert_eq!(
        sink.writes[0].1.watermark("contacts"),
        None,
        "watermark only moves when the pass ends"
    );

    assert_eq!(report.records_fetched, 8);
    assert_eq!(report.records_failed, 1);
    assert_eq!(
        sink.failures,
        vec![RecordFailure::new(Some("c4".into()), "bad email")]
    );
    assert_eq!(progress.borrow().current, 9);
}

#[tokio::test]
async fn a_failed_write_resumes_from_the_last_durable_checkpoint() {
    let connector = PagedContacts { n: 9, page: 3 };
    let mut sink = LogSink {
        fail_on_write: Some(2),
        ..Default::default()
    };
    let err = connector
        .sync(&ctx(SyncMode::Initial, Checkpoint::default()), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }));
    assert_eq!(sink.writes.len(), 1);
    let durable = sink.writes[0].1.clone();

    let mut resumed = LogSink::default();
    connector
        .sync(&ctx(SyncMode::Initial, durable), &mut resumed)
        .await
        .unwrap();
    let mut all: Vec<String> = sink
        .writes
        .iter()
        .flat_map(|(ids, _)| ids.clone())
        .collect();
    all.extend(resumed.writes.iter().flat_map(|(ids, _)| ids.clone()));
    let expected: Vec<String> = (0..9)
        .filter(|i| *i != 4)
        .map(|i| format!("c{i}"))
        .collect();
    assert_eq!(all, expected, "nothing skipped, nothing duplicated");
}

#[tokio::test]
async fn watermark_capped_by_sync_start_minus_lag() {
    // Records modified after the sync started minus lag: the watermark stops at the cap.
    let connector = PagedContacts { n: 9, page: 5 };
    let mut sink = LogSink::default();
    let ctx = SyncContext::new(Uuid::from_u128(1), SyncMode::Initial)
        .with_started_at(base() + Duration::minutes(6))
        .with_lag(std::time::Duration::from_secs(120));
    connector.sync(&ctx, &mut sink).await.unwrap();
    let wm = sink.writes.last().unwrap().1.watermark("contacts");
    assert_eq!(wm, Some(base() + Duration::minutes(4)));
    assert_eq!(wm, Some(ctx.watermark_cap()));
}

#[tokio::test]
async fn cancellation_stops_between_pages() {
    let connector = PagedContacts { n: 9, page: 3 };
    let ctx = ctx(SyncMode::Incremental, Checkpoint::default());
    ctx.cancel_token().cancel();
    let mut sink = LogSink::default();
    assert!(matches!(
        connector.sync(&ctx, &mut sink).await,
        Err(Error::Cancelled)
    ));
    assert!(sink.writes.is_empty());
}
