//! The HubSpot sync: list-based full passes, search-based incremental passes paged by
//! `hs_object_id` (keyset, never an offset into a live set), archived records as soft
//! deletes, resumed passes finished in their own window and followed up, and association
//! backfill through the v4 batch endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::Instrument;

use super::HubSpotConfig;
use super::client::{Associations, HubSpotClient};
use super::properties::{self, Discovered, ListRead};
use super::transform::{self, COMPANY_PROPERTIES, CONTACT_PROPERTIES, DEAL_PROPERTIES};
use super::types::{
    Filter, FilterGroup, HsObject, ListPage, Results, SearchRequest, Sort, next_list_cursor, raw_id,
};
use crate::connector::{
    Checkpoint, DealContactSet, RecordBatch, RecordSink, SourceTotal, StreamCheckpoint,
    SyncContext, SyncReport,
};
use crate::connectors::page::{capture_page, write_page};
use crate::error::{Error, Result};
use crate::model::{DealContact, Record, RecordKind, SyncMode};

/// The CRM objects the connector syncs, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Companies,
    Contacts,
    Deals,
}

impl Object {
    pub(crate) const ALL: [Object; 3] = [Object::Companies, Object::Contacts, Object::Deals];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Object::Companies => "companies",
            Object::Contacts => "contacts",
            Object::Deals => "deals",
        }
    }

    /// The table the object's records go to.
    pub(crate) fn kind(self) -> RecordKind {
        match self {
            Object::Companies => RecordKind::Account,
            Object::Contacts => RecordKind::Contact,
            Object::Deals => RecordKind::Deal,
        }
    }

    fn archived_stream(self) -> &'static str {
        match self {
            Object::Companies => "companies_archived",
            Object::Contacts => "contacts_archived",
            Object::Deals => "deals_archived",
        }
    }

    /// Contacts use `lastmodifieddate`; filtering them on `hs_lastmodifieddate` silently
    /// finds nothing.
    pub(crate) fn modified_property(self) -> &'static str {
        match self {
            Object::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }

    pub(crate) fn mapped(self) -> &'static [&'static str] {
        match self {
            Object::Companies => COMPANY_PROPERTIES,
            Object::Contacts => CONTACT_PROPERTIES,
            Object::Deals => DEAL_PROPERTIES,
        }
    }

    fn inline_associations(self) -> &'static [&'static str] {
        match self {
            Object::Companies => &[],
            Object::Contacts => &["companies"],
            Object::Deals => &["companies", "contacts"],
        }
    }
}

/// Search page size (HubSpot's maximum).
const SEARCH_LIMIT: u32 = 200;
/// List page size (HubSpot's maximum).
const LIST_LIMIT: u32 = 100;
/// Inputs per v4 association batch read (HubSpot's maximum).
const ASSOC_CHUNK: usize = 1_000;
/// Checkpoint flag: an inline association block was cut off, so a backfill is needed.
pub(crate) const NEEDS_BACKFILL: &str = "needs_association_backfill";
/// Archived list pages an incremental run reads per object (see [`Syncer::archived_pass`]).
pub(crate) const ARCHIVED_PAGES_PER_RUN: u32 = 10;
/// Checkpoint key: which read the stream's pass in progress is (what its cursor means).
const PASS_KIND: &str = "pass";

/// The read a stream's pass in progress is: a list pass's cursor is HubSpot's list token, a
/// search pass's is the last `hs_object_id` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassKind {
    List,
    Search,
}

impl PassKind {
    fn as_str(self) -> &'static str {
        match self {
            PassKind::List => "list",
            PassKind::Search => "search",
        }
    }
}

/// The kind of the pass in progress, if any. Checkpoints written before the kind was
/// recorded are read by the old rule: no watermark means a list pass.
fn pass_in_progress(s: &StreamCheckpoint) -> Option<PassKind> {
    s.cursor.as_ref()?;
    match s.extra.get(PASS_KIND).and_then(|v| v.as_str()) {
        Some("list") => Some(PassKind::List),
        Some("search") => Some(PassKind::Search),
        _ if s.watermark.is_none() => Some(PassKind::List),
        _ => Some(PassKind::Search),
    }
}

/// Drops the pass in progress (a full pass replaces it).
fn abandon_pass(s: &mut StreamCheckpoint) {
    s.cursor = None;
    s.pass_max_updated_at = None;
    s.pass_started_at = None;
    s.extra.remove(PASS_KIND);
}

/// A result's `id` as a number (`hs_object_id`); `None` when it is not one.
fn numeric_id(raw: &serde_json::value::RawValue) -> Option<u64> {
    raw_id(raw)?.trim().parse().ok()
}

/// How many list pages the reader may hold ahead of the connector (about 100 records each).
const READ_AHEAD: usize = 4;

/// The pages of one list pass, read in order by a task of its own: each page is requested
/// as soon as the previous one's cursor is known, whether or not the connector is done with
/// it, and at most [`READ_AHEAD`] read pages wait. The reader looks only at a page's cursor;
/// the page is parsed by its user (its records are allocated, and released, where they are
/// used). The first error ends the reading. Dropping the reader aborts the read in progress
/// and drops the pages not taken.
struct PageReader {
    pages: tokio::sync::mpsc::Receiver<Result<ListRead>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageReader {
    /// Reads from cursor `after` on, with `read(cursor)` reading one page.
    fn spawn<F, Fut>(after: Option<String>, read: F) -> Self
    where
        F: Fn(Option<String>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<ListRead>> + Send,
    {
        let (tx, pages) = tokio::sync::mpsc::channel(READ_AHEAD);
        let task = tokio::spawn(
            async move {
                let mut after = after;
                loop {
                    let page = read(after.take()).await;
                    // An unreadable body has no cursor: its user fails on it.
                    let next = match &page {
                        Ok(ListRead::Body(body)) => next_list_cursor(body),
                        Ok(ListRead::Page(p)) => p.next_after().map(str::to_owned),
                        Err(_) => None,
                    };
                    // The connector stopped taking pages (it failed or was dropped).
                    if tx.send(page).await.is_err() {
                        return;
                    }
                    match next {
                        Some(a) => after = Some(a),
                        None => return,
                    }
                }
            }
            .in_current_span(),
        );
        PageReader { pages, task }
    }

    /// The next page, parsed; an error when the reader ended early (it never does after the
    /// last page, which the caller knows by its missing cursor).
    async fn next(&mut self, client: &HubSpotClient) -> Result<ListPage> {
        match self.pages.recv().await {
            Some(Ok(ListRead::Body(body))) => ListPage::from_body(&body, |b| client.parse_page(b)),
            Some(Ok(ListRead::Page(page))) => Ok(ListPage::from(page)),
            Some(Err(e)) => Err(e),
            None => Err(Error::Transport {
                provider: "hubspot".into(),
                message: "the page reader stopped before the last page".into(),
                source: None,
            }),
        }
    }
}

impl Drop for PageReader {
    fn drop(&mut self) {
        // A no-op once the reader finished.
        self.task.abort();
    }
}

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a Arc<HubSpotClient>,
    pub(crate) config: &'a HubSpotConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
    /// The properties read per object type in this run (see [`properties`]).
    pub(crate) discovered: Discovered,
    /// Archived list pages read per object type in this run (see [`Syncer::archived_pass`]).
    pub(crate) archived_pages: HashMap<&'static str, u32>,
}

/// A deal–contact link read from the v4 associations endpoint.
fn deal_contact(workspace_id: uuid::Uuid, (deal, contact): (String, String)) -> Record {
    Record::from(DealContact {
        workspace_id,
        source: crate::model::ConnectorKind::Hubspot,
        deal_source_id: deal,
        contact_source_id: contact,
        role: None,
    })
}

/// The complete contact set of each deal whose contacts a v4 batch read read to the end.
fn contact_sets(read: &Associations) -> Vec<DealContactSet> {
    let mut sets: BTreeMap<&str, Vec<String>> = read
        .complete
        .iter()
        .map(|deal| (deal.as_str(), Vec::new()))
        .collect();
    for (deal, contact) in &read.links {
        if let Some(set) = sets.get_mut(deal.as_str()) {
            set.push(contact.clone());
        }
    }
    sets.into_iter()
        .map(|(deal, contacts)| DealContactSet {
            deal_source_id: deal.to_owned(),
            contact_source_ids: contacts,
        })
        .collect()
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

impl Syncer<'_> {
    fn stream(&mut self, name: &str) -> &mut StreamCheckpoint {
        self.checkpoint.stream_mut(name)
    }

    /// Decodes and transforms one page; failures are captured with their ids. Also returns
    /// whether an inline association block was cut off (a backfill is needed).
    ///
    /// `inline_contacts`: the page was read with inline deal → contact associations, so a
    /// deal's block, when not cut off (no `paging.next`), is its complete contact set and
    /// goes into the batch's `link_sets` (HubSpot leaves out an empty block: no block is
    /// the empty set). A cut-off block gives no set: its links are only a part.
    fn transform_page(
        &self,
        obj: Object,
        results: Results,
        inline_contacts: bool,
    ) -> (RecordBatch, bool) {
        let ws = self.ctx.workspace_id();
        let mut truncated_associations = false;
        let mut link_sets = Vec::new();
        let mut each = |o: HsObject| -> Result<Vec<Record>> {
            truncated_associations |= o
                .associations
                .values()
                .any(|b| b.paging.as_ref().is_some_and(|p| p.next.is_some()));
            Ok(match obj {
                Object::Companies => vec![Record::from(transform::company(ws, o)?)],
                Object::Contacts => vec![Record::from(transform::contact(ws, o)?)],
                Object::Deals => {
                    let complete = o
                        .associations
                        .get("contacts")
                        .is_none_or(|b| b.paging.as_ref().is_none_or(|p| p.next.is_none()));
                    let (d, links) = transform::deal(ws, o)?;
                    if inline_contacts && complete {
                        link_sets.push(DealContactSet {
                            deal_source_id: d.meta.source_id.clone(),
                            contact_source_ids: links
                                .iter()
                                .map(|l| l.contact_source_id.clone())
                                .collect(),
                        });
                    }
                    std::iter::once(Record::from(d))
                        .chain(links.into_iter().map(Record::from))
                        .collect()
                }
            })
        };
        // A decode error names the record's id itself (read from the text only on failure).
        let mut batch = match results {
            Results::Decoded(objects) => capture_page(objects, |_| None, &mut each),
            Results::Raw(raw) => capture_page(raw, |_| None, |raw| each(transform::decode(&raw)?)),
        };
        batch.link_sets = link_sets;
        (batch, truncated_associations)
    }

    async fn write(&mut self, sink: &mut dyn RecordSink, batch: RecordBatch) -> Result<()> {
        write_page(
            sink,
            batch,
            &self.checkpoint,
            &mut self.report,
            self.ctx,
            "hubspot: records written",
        )
        .await
    }

    /// Syncs every object: the live records of each (a full list pass when the stream has
    /// no watermark or a repair is due, else an incremental search pass; an interrupted pass
    /// is resumed first), then the archived records of each (search never returns them). A
    /// resumed pass ends with its own window (the start of the run that began it), so one
    /// follow-up pass in this run reads what changed between that start and this run's.
    pub(crate) async fn run(&mut self, sink: &mut dyn RecordSink) -> Result<()> {
        for archived in [false, true] {
            for obj in Object::ALL {
                if self.pass(obj, archived, sink).await? {
                    self.pass(obj, archived, sink).await?;
                }
            }
        }
        Ok(())
    }

    /// One pass over the live or the archived records of `obj`; returns whether it was a
    /// resumed pass (see [`StreamCheckpoint::finish_pass_in`]).
    async fn pass(
        &mut self,
        obj: Object,
        archived: bool,
        sink: &mut dyn RecordSink,
    ) -> Result<bool> {
        if archived {
            self.archived_pass(obj, sink).await
        } else {
            self.object_pass(obj, sink).await
        }
    }

    /// One pass over the live records (list or search, see [`Syncer::run`]); returns whether
    /// it was a resumed pass.
    async fn object_pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<bool> {
        let s = self.stream(obj.path());
        let in_progress = pass_in_progress(s);
        let full = s.watermark.is_none() || s.repair;
        match (in_progress, full) {
            (Some(PassKind::List), _) | (None, true) => self.list_pass(obj, sink).await,
            (Some(PassKind::Search), true) => {
                // A repair is due: the full read replaces the search pass in progress.
                abandon_pass(s);
                self.list_pass(obj, sink).await
            }
            (Some(PassKind::Search), false) | (None, false) => self.search_pass(obj, sink).await,
        }
    }

    /// Full pass over one object through the list endpoint (its `after` is an id cursor:
    /// records changing during the pass do not shift it), resumable from the stored page
    /// cursor. The watermark moves only when the pass ends, since the list is in id order,
    /// not modification order; a repair flag is cleared then, and the provider's total is
    /// reported for reconciliation.
    async fn list_pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<bool> {
        let props = self.wanted_properties(obj).await?;
        let stream = obj.path();
        let ctx = self.ctx;
        let s = self.stream(stream);
        s.begin_pass(ctx);
        s.extra
            .insert(PASS_KIND.into(), json!(PassKind::List.as_str()));
        let after = s.cursor.clone();
        let span = tracing::info_span!("hubspot_list", object = stream);
        // The pages are read by a task of their own, each as soon as its cursor is known,
        // while this one transforms and writes the pages already read: the request chain
        // runs at the provider's pace instead of waiting for this task between pages.
        let client = Arc::clone(self.client);
        let props: Arc<[String]> = props.into();
        async {
            self.ctx.check_cancelled()?;
            let mut reader = PageReader::spawn(after, move |after: Option<String>| {
                let (client, props) = (Arc::clone(&client), Arc::clone(&props));
                async move {
                    properties::list_page_or_body(
                        &client,
                        obj.path(),
                        &props,
                        obj.inline_associations(),
                        after.as_deref(),
                        false,
                    )
                    .await
                }
            });
            loop {
                let page = reader.next(self.client).await?;
                let next = page.next_after;
                let (batch, truncated) = self.transform_page(obj, page.results, true);
                let s = self.stream(stream);
                s.observe_records(&batch.records);
                if truncated {
                    s.extra.insert(NEEDS_BACKFILL.into(), json!(true));
                }
                let resumed = match &next {
                    Some(a) => {
                        s.cursor = Some(a.clone());
                        false
                    }
                    None => {
                        let started = s.pass_started_at.unwrap_or(ctx.started_at());
                        let resumed = s.finish_pass_in(ctx);
                        // A full pass that found nothing dated still read everything up
                        // to its window: later changes are found by search from there,
                        // instead of a full pass (and a total) on every sync of an
                        // empty object.
                        if s.watermark.is_none() {
                            s.watermark = Some(ctx.cap_for(started));
                        }
                        s.extra.remove(PASS_KIND);
                        s.repair = false;
                        resumed
                    }
                };
                self.write(sink, batch).await?;
                if next.is_none() {
                    self.report_total(obj).await?;
                    return Ok(resumed);
                }
                self.ctx.check_cancelled()?;
            }
        }
        .instrument(span)
        .await
    }

    /// The provider's count of live records of `obj` (search without filters, one result,
    /// never archived records), for reconciliation after a full pass.
    async fn report_total(&mut self, obj: Object) -> Result<()> {
        let req = SearchRequest {
            filter_groups: Vec::new(),
            sorts: Vec::new(),
            properties: vec!["hs_object_id".to_owned()],
            limit: 1,
            after: None,
        };
        let page = self.client.search_page(obj.path(), &req).await?;
        match page.total() {
            Ok(total) => self.report.source_totals.push(SourceTotal {
                stream: obj.path().to_owned(),
                kind: obj.kind(),
                total,
            }),
            Err(e) => {
                tracing::warn!(object = obj.path(), error = %e, "HubSpot search total unusable; not reconciled");
            }
        }
        Ok(())
    }

    /// Incremental pass over one object through search: modified in
    /// `[watermark − lookback, pass start]`, sorted by `hs_object_id`. Every page is a fresh
    /// query for `hs_object_id > last id read` (keyset paging): search's `after` is an offset
    /// into a live result set, and a record modified during the pass leaves the set, which
    /// would shift every later offset and skip the record at the next page boundary. A fresh
    /// query per page costs nothing extra and never reaches the 10,000-result cap. The
    /// checkpoint's cursor is the last committed `hs_object_id`, so a resumed pass continues
    /// after it, with its own window.
    async fn search_pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<bool> {
        let stream = obj.path();
        let ctx = self.ctx;
        let lookback = chrono::Duration::from_std(self.config.lookback).unwrap_or_default();
        let props = self.wanted_properties(obj).await?;
        let s = self.stream(stream);
        let Some(watermark) = s.watermark else {
            // Never synced: a full list pass is the only complete read.
            return self.list_pass(obj, sink).await;
        };
        let from = watermark.checked_sub_signed(lookback).unwrap_or(watermark);
        let until = s.begin_pass(ctx);
        s.extra
            .insert(PASS_KIND.into(), json!(PassKind::Search.as_str()));
        let mut last_id: u64 = match s.cursor.as_deref() {
            None => 0,
            Some(c) => c.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(
                    object = stream,
                    cursor = c,
                    "unreadable search cursor in the checkpoint; the pass restarts"
                );
                0
            }),
        };
        let span = tracing::info_span!("hubspot_search", object = stream);
        async {
            loop {
                self.ctx.check_cancelled()?;
                let req = SearchRequest {
                    filter_groups: vec![FilterGroup {
                        filters: vec![
                            Filter {
                                property_name: obj.modified_property().into(),
                                operator: "GTE",
                                value: ms(from),
                            },
                            Filter {
                                property_name: obj.modified_property().into(),
                                operator: "LTE",
                                value: ms(until),
                            },
                            Filter {
                                property_name: "hs_object_id".into(),
                                operator: "GT",
                                value: last_id.to_string(),
                            },
                        ],
                    }],
                    sorts: vec![Sort {
                        property_name: "hs_object_id".into(),
                        direction: "ASCENDING",
                    }],
                    properties: props.clone(),
                    limit: SEARCH_LIMIT,
                    after: None,
                };
                let page = properties::search_page(self.client, obj.path(), &req).await?;
                let more = page.search_has_more()?;
                let page_max_id = page.results.iter().filter_map(|r| numeric_id(r)).max();
                if more {
                    // The next query starts after this page's last id; a page that does not
                    // move it (no numeric ids, or ids not above the floor) would loop.
                    match page_max_id.filter(|m| *m > last_id) {
                        Some(m) => last_id = m,
                        None => {
                            return Err(Error::decode(
                                None,
                                format!(
                                    "HubSpot search page for {stream} announces more results but no hs_object_id above {last_id}"
                                ),
                            ));
                        }
                    }
                }
                let (mut batch, _) = self.transform_page(obj, Results::Raw(page.results), false);
                if obj == Object::Deals {
                    self.attach_deal_associations(&mut batch).await?;
                }
                let s = self.stream(stream);
                s.observe_records(&batch.records);
                let resumed = if more {
                    s.cursor = Some(last_id.to_string());
                    false
                } else {
                    let resumed = s.finish_pass_in(ctx);
                    s.extra.remove(PASS_KIND);
                    resumed
                };
                self.write(sink, batch).await?;
                if !more {
                    return Ok(resumed);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One pass over the archived list (an id cursor, like the live list). The archived list
    /// is neither filterable nor sortable by time, so records archived before the stream's
    /// watermark (minus the lookback) are skipped client-side; the stream's watermark is the
    /// newest `archived_at`, capped by the pass's own window. An incremental run reads at
    /// most [`ARCHIVED_PAGES_PER_RUN`] archived pages per object (a pass and its follow-up
    /// together); a longer list is read on across runs from the stored cursor.
    async fn archived_pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<bool> {
        let limit = match self.ctx.mode() {
            SyncMode::Incremental => ARCHIVED_PAGES_PER_RUN,
            SyncMode::Initial | SyncMode::Backfill => u32::MAX,
        };
        if self.archived_pages.get(obj.path()).copied().unwrap_or(0) >= limit {
            return Ok(false);
        }
        let stream = obj.archived_stream();
        let ctx = self.ctx;
        let props = self.wanted_properties(obj).await?;
        let lookback = chrono::Duration::from_std(self.config.lookback).unwrap_or_default();
        let s = self.stream(stream);
        let since = s
            .watermark
            .map(|w| w.checked_sub_signed(lookback).unwrap_or(w));
        s.begin_pass(ctx);
        let mut after = s.cursor.clone();
        loop {
            self.ctx.check_cancelled()?;
            let read = self.archived_pages.entry(obj.path()).or_insert(0);
            *read += 1;
            let budget_left = *read < limit;
            let page =
                properties::list_page(self.client, obj.path(), &props, &[], after.as_deref(), true)
                    .await?;
            let next = page.next_after().map(str::to_owned);
            let (mut batch, _) = self.transform_page(obj, Results::Raw(page.results), false);
            batch.records.retain(|r| {
                let archived_at = r.meta().and_then(|m| m.archived_at);
                match (since, archived_at) {
                    (Some(s), Some(a)) => a >= s,
                    _ => true,
                }
            });
            let s = self.stream(stream);
            for at in batch.records.iter().filter_map(|r| r.meta()?.archived_at) {
                s.observe(at);
            }
            let resumed = match &next {
                Some(a) => {
                    s.cursor = Some(a.clone());
                    false
                }
                None => s.finish_pass_in(ctx),
            };
            self.write(sink, batch).await?;
            match next {
                Some(_) if !budget_left => {
                    tracing::debug!(
                        object = obj.path(),
                        "archived page budget of this run used; the archived pass goes on next run"
                    );
                    return Ok(false);
                }
                Some(a) => after = Some(a),
                None => return Ok(resumed),
            }
        }
    }

    /// Search results carry no associations: read deal → company and deal → contacts for
    /// the page's deals through the v4 batch endpoint. The contacts of each deal read to the
    /// end are its complete contact set (the batch's `link_sets`).
    async fn attach_deal_associations(&mut self, batch: &mut RecordBatch) -> Result<()> {
        let deal_ids: Vec<String> = batch
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Deal(d) => Some(d.meta.source_id.clone()),
                _ => None,
            })
            .collect();
        if deal_ids.is_empty() {
            return Ok(());
        }
        let companies = self
            .client
            .associations("deals", "companies", &deal_ids)
            .await?;
        let contacts = self
            .client
            .associations("deals", "contacts", &deal_ids)
            .await?;
        let ws = self.ctx.workspace_id();
        for r in &mut batch.records {
            if let Record::Deal(d) = r {
                d.account_source_id = companies
                    .links
                    .iter()
                    .find(|(from, _)| *from == d.meta.source_id)
                    .map(|(_, to)| to.clone());
            }
        }
        batch.link_sets.extend(contact_sets(&contacts));
        batch.records.extend(
            contacts
                .links
                .into_iter()
                .map(|link| deal_contact(ws, link)),
        );
        Ok(())
    }

    /// Association backfill: every deal's contacts through the v4 batch endpoint, 1,000
    /// deals per request, checkpointed by the deal list's page cursor.
    pub(crate) async fn association_backfill(&mut self, sink: &mut dyn RecordSink) -> Result<()> {
        const STREAM: &str = "deal_contacts_backfill";
        let mut after = self.stream(STREAM).cursor.clone();
        let mut pending: Vec<String> = Vec::with_capacity(ASSOC_CHUNK);
        let ws = self.ctx.workspace_id();
        loop {
            self.ctx.check_cancelled()?;
            let page = self
                .client
                .list_page(
                    "deals",
                    &["hs_object_id".to_owned()],
                    &[],
                    after.as_deref(),
                    false,
                )
                .await?;
            let next = page.next_after().map(str::to_owned);
            pending.extend(page.results.iter().filter_map(|r| raw_id(r)));
            // Flush whole chunks (and the rest at the end) so the page cursor stays exact.
            if pending.len() + LIST_LIMIT as usize > ASSOC_CHUNK || next.is_none() {
                let unique: BTreeSet<String> = pending.drain(..).collect();
                let ids: Vec<String> = unique.into_iter().collect();
                let contacts = self.client.associations("deals", "contacts", &ids).await?;
                let mut batch = RecordBatch::new(Vec::new());
                batch.link_sets = contact_sets(&contacts);
                batch.records = contacts
                    .links
                    .into_iter()
                    .map(|link| deal_contact(ws, link))
                    .collect();
                let started = self.ctx.started_at();
                let s = self.stream(STREAM);
                s.cursor = next.clone();
                if next.is_none() {
                    s.extra.insert("completed_at".into(), json!(started));
                    for o in Object::ALL {
                        self.stream(o.path()).extra.remove(NEEDS_BACKFILL);
                    }
                }
                self.write(sink, batch).await?;
            }
            match next {
                Some(a) => after = Some(a),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{ListRead, PageReader, READ_AHEAD, Results};
    use crate::error::{Error, Result};

    /// A list page body with `n` as its only id and `next` as its cursor.
    fn body(n: usize, next: Option<usize>) -> ListRead {
        let paging = next.map_or(String::new(), |a| {
            format!(r#","paging":{{"next":{{"after":"{a}"}}}}"#)
        });
        ListRead::Body(bytes::Bytes::from(format!(
            r#"{{"results":[{{"id":"{n}"}}]{paging}}}"#
        )))
    }

    /// A reader over `pages` pages whose reads are counted; page `fail_at` fails.
    fn reader(pages: usize, fail_at: Option<usize>, reads: Arc<AtomicUsize>) -> PageReader {
        PageReader::spawn(None, move |after: Option<String>| {
            let reads = Arc::clone(&reads);
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let n = after
                    .map_or(Ok(0), |a| a.parse::<usize>())
                    .map_err(|e| Error::decode(None, e.to_string()))?;
                if Some(n) == fail_at {
                    return Err::<ListRead, Error>(Error::decode(None, "page failed"));
                }
                Ok(body(n, (n + 1 < pages).then_some(n + 1)))
            }
        })
    }

    async fn next_id(r: &mut PageReader, client: &super::HubSpotClient) -> Result<String> {
        let page = r.next(client).await?;
        match page.results {
            Results::Decoded(objects) => Ok(objects[0].id.clone()),
            Results::Raw(_) => panic!("a page whose records all read is decoded in one scan"),
        }
    }

    /// A client only used to parse pages (it never sends anything).
    fn client() -> super::HubSpotClient {
        let creds = super::super::HubSpotCredentials::AccessToken("t".to_owned().into());
        super::HubSpotClient::new("http://127.0.0.1:9", &creds, &Default::default())
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    #[tokio::test]
    async fn pages_arrive_in_order_each_read_once() {
        let reads = Arc::new(AtomicUsize::new(0));
        let client = client();
        let mut r = reader(12, None, Arc::clone(&reads));
        for n in 0..12 {
            assert_eq!(next_id(&mut r, &client).await.unwrap(), n.to_string());
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            12,
            "no page read twice or past the last"
        );
    }

    #[tokio::test]
    async fn reading_stays_a_bounded_distance_ahead_and_stops_when_dropped() {
        let reads = Arc::new(AtomicUsize::new(0));
        let client = client();
        let mut r = reader(1_000, None, Arc::clone(&reads));
        next_id(&mut r, &client).await.unwrap();
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let ahead = reads.load(Ordering::SeqCst);
        // The page taken, READ_AHEAD waiting, and one read blocked on the full channel.
        assert!(ahead <= 2 + READ_AHEAD, "{ahead} pages read for one taken");
        drop(r);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            ahead,
            "no read after the reader is dropped"
        );
    }

    #[tokio::test]
    async fn an_error_is_delivered_in_order_and_ends_the_reading() {
        let reads = Arc::new(AtomicUsize::new(0));
        let client = client();
        let mut r = reader(100, Some(3), Arc::clone(&reads));
        for n in 0..3 {
            assert_eq!(next_id(&mut r, &client).await.unwrap(), n.to_string());
        }
        let err = next_id(&mut r, &client).await.unwrap_err();
        assert!(err.to_string().contains("page failed"), "{err}");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            4,
            "nothing read after the failed page"
        );
        let after = next_id(&mut r, &client).await.unwrap_err();
        assert!(
            after.to_string().contains("stopped before the last page"),
            "{after}"
        );
    }
}
