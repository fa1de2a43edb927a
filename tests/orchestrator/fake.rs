//! A fake provider and connector: contacts paged in modification order, resumable from an
//! offset cursor, with injectable failures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::capture::RecordFailure;
use pandora_sync::connector::{DealContactSet, SourceTotal, SyncReport};
use pandora_sync::model::{Contact, Deal, DealContact, RecordKind};
use pandora_sync::{
    Checkpoint, ConnectorKind, Error, RecordBatch, RecordSink, Result, SyncCapable, SyncContext,
    SyncMode, SyncStore,
};

/// The provider's truth: id → (modified at, email).
#[derive(Default)]
pub struct Provider {
    pub records: Mutex<BTreeMap<String, (DateTime<Utc>, String)>>,
}

impl Provider {
    pub fn seeded(n: usize) -> Arc<Self> {
        let p = Provider::default();
        {
            let mut r = p.records.lock().unwrap();
            for i in 0..n {
                let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::minutes(i64::try_from(i).unwrap());
                r.insert(format!("c{i:04}"), (at, format!("p{i}@acme.com")));
            }
        }
        Arc::new(p)
    }

    pub fn set(&self, id: &str, at: DateTime<Utc>, email: &str) {
        self.records
            .lock()
            .unwrap()
            .insert(id.to_owned(), (at, email.to_owned()));
    }
}

type Hook = Arc<dyn Fn(usize) + Send + Sync>;
/// Per run: the mode, the first record read and the pages written.
pub type Runs = Arc<Mutex<Vec<(SyncMode, Option<String>, usize)>>>;

#[derive(Clone)]
pub struct Fake {
    pub kind: ConnectorKind,
    pub provider: Arc<Provider>,
    pub page: usize,
    /// Fail with `error` after writing this many pages (while pages remain).
    pub fail_after_pages: Option<usize>,
    pub error: Arc<dyn Fn() -> Error + Send + Sync>,
    /// Every record whose index is a multiple of this is delivered as a failure.
    pub bad_every: Option<usize>,
    /// Waits here before reading (to prove two connectors run at once).
    pub gate: Option<Arc<tokio::sync::Barrier>>,
    /// Called after each page is written, with the page number (1-based).
    pub after_page: Option<Hook>,
    /// Modes seen and first record of each run.
    pub runs: Runs,
    /// After a full pass, report the provider's total as the records read plus this many.
    pub report_total_extra: Option<u64>,
}

impl Fake {
    pub fn new(kind: ConnectorKind, provider: Arc<Provider>, page: usize) -> Self {
        Fake {
            kind,
            provider,
            page,
            fail_after_pages: None,
            error: Arc::new(|| Error::Transport {
                provider: "fake".into(),
                message: "connection reset".into(),
                source: None,
            }),
            bad_every: None,
            gate: None,
            after_page: None,
            runs: Arc::default(),
            report_total_extra: None,
        }
    }

    async fn run(&self, ctx: &SyncContext, sink: &mut dyn RecordSink) -> Result<SyncReport> {
        if let Some(g) = &self.gate {
            g.wait().await;
        }
        let mut checkpoint = ctx.previous().clone();
        let watermark = checkpoint.watermark("items");
        let offset: usize = checkpoint
            .stream("items")
            .and_then(|s| s.cursor.as_deref())
            .map(|c| c.parse().unwrap())
            .unwrap_or(0);
        let mut list: Vec<(String, DateTime<Utc>, String)> = self
            .provider
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (at, _))| {
                ctx.mode() == SyncMode::Initial || watermark.is_none_or(|w| *at >= w)
            })
            .map(|(id, (at, email))| (id.clone(), *at, email.clone()))
            .collect();
        list.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut report = SyncReport::default();
        let mut pages = 0;
        let mut pos = offset;
        self.runs
            .lock()
            .unwrap()
            .push((ctx.mode(), list.get(offset).map(|r| r.0.clone()), 0));
        while pos < list.len() {
            ctx.check_cancelled()?;
            let end = (pos + self.page).min(list.len());
            let mut batch = RecordBatch::default();
            for (i, (id, at, email)) in list[pos..end].iter().enumerate() {
                if self.bad_every.is_some_and(|n| (pos + i).is_multiple_of(n)) {
                    batch
                        .failures
                        .push(RecordFailure::new(Some(id.clone()), "malformed email"));
                    continue;
                }
                let mut c = Contact::new(ctx.workspace_id(), self.kind, id.clone());
                c.email = Some(email.clone());
                c.meta.source_updated_at = Some(*at);
                batch.records.push(c.into());
            }
            let s = checkpoint.stream_mut("items");
            s.observe_records(&batch.records);
            if end < list.len() {
                s.cursor = Some(end.to_string());
            } else {
                s.finish_pass(ctx.watermark_cap());
            }
            report.records_fetched += batch.records.len() as u64;
            sink.write(batch, &checkpoint).await?;
            pages += 1;
            if let Some(r) = self.runs.lock().unwrap().last_mut() {
                r.2 = pages;
            }
            if let Some(h) = &self.after_page {
                h(pages);
            }
            pos = end;
            if self.fail_after_pages == Some(pages) && pos < list.len() {
                return Err((self.error)());
            }
        }
        if let Some(extra) = self.report_total_extra {
            let total = self.provider.records.lock().unwrap().len() as u64 + extra;
            report.source_totals.push(SourceTotal {
                stream: "items".into(),
                kind: RecordKind::Contact,
                total,
            });
        }
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for Fake {
    fn kind(&self) -> ConnectorKind {
        self.kind
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

/// Deals with five contact links each, one page per ten deals; every deal whose index is a
/// multiple of `bad_every` is a per-record failure (its links are not sent either). With
/// `contacts_left: Some(k)`, a deal has only its first `k` links now: it sends those and its
/// complete contact set.
#[derive(Clone)]
pub struct DealsFake {
    pub deals: usize,
    pub bad_every: usize,
    pub contacts_left: Option<usize>,
}

#[async_trait]
impl SyncCapable for DealsFake {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }
    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let ws = ctx.workspace_id();
        let mut checkpoint = Checkpoint::default();
        for page in 0..self.deals.div_ceil(10) {
            let mut batch = RecordBatch::default();
            for i in page * 10..((page + 1) * 10).min(self.deals) {
                let id = format!("d{i:04}");
                if i % self.bad_every == 0 {
                    batch
                        .failures
                        .push(RecordFailure::new(Some(id), "malformed amount"));
                    continue;
                }
                let mut d = Deal::new(ws, ConnectorKind::Hubspot, id.clone());
                d.name = Some(format!("deal {i}"));
                batch.records.push(d.into());
                let linked = self.contacts_left.unwrap_or(5);
                if self.contacts_left.is_some() {
                    batch.link_sets.push(DealContactSet {
                        deal_source_id: id.clone(),
                        contact_source_ids: (0..linked).map(|c| format!("c{i}-{c}")).collect(),
                    });
                }
                for c in 0..linked {
                    batch.records.push(
                        DealContact {
                            workspace_id: ws,
                            source: ConnectorKind::Hubspot,
                            deal_source_id: id.clone(),
                            contact_source_id: format!("c{i}-{c}"),
                            role: None,
                        }
                        .into(),
                    );
                }
            }
            checkpoint.stream_mut("deals").cursor = Some(page.to_string());
            sink.write(batch, &checkpoint).await?;
        }
        Ok(SyncReport::default())
    }
    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.initial_sync(ctx, sink).await
    }
}

/// What [`FlushProbe`] saw in the store right after `flush` returned.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Seen {
    pub contacts: u64,
    pub checkpoint: Option<Checkpoint>,
}

/// Writes pages of contacts and, after each `flush`, reads the store (as a host connector
/// would before acknowledging a provider cursor).
#[derive(Clone)]
pub struct FlushProbe {
    pub store: Arc<dyn SyncStore>,
    pub pages: usize,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

#[async_trait]
impl SyncCapable for FlushProbe {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }
    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let ws = ctx.workspace_id();
        let mut checkpoint = Checkpoint::default();
        for page in 0..self.pages {
            let mut batch = RecordBatch::default();
            for i in 0..50 {
                let mut c = Contact::new(ws, ConnectorKind::Hubspot, format!("p{page}-{i}"));
                c.email = Some(format!("p{page}-{i}@acme.com"));
                batch.records.push(c.into());
            }
            checkpoint.stream_mut("contacts").cursor = Some(format!("ack-{page}"));
            sink.write(batch, &checkpoint).await?;
            sink.flush().await?;
            let contacts = self
                .store
                .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
                .await?;
            let checkpoint = self
                .store
                .get_connection(ws, ConnectorKind::Hubspot)
                .await?
                .map(|c| c.checkpoint())
                .transpose()?;
            self.seen.lock().unwrap().push(Seen {
                contacts,
                checkpoint,
            });
        }
        Ok(SyncReport::default())
    }
    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.initial_sync(ctx, sink).await
    }
}
