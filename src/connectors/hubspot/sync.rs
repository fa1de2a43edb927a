//! The HubSpot sync: list-based initial passes, search-based incremental passes with
//! `hs_object_id` re-windowing past the 10,000-result cap, archived records as soft deletes,
//! and association backfill through the v4 batch endpoint.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::Instrument;

use super::HubSpotConfig;
use super::client::HubSpotClient;
use super::transform::{self, COMPANY_PROPERTIES, CONTACT_PROPERTIES, DEAL_PROPERTIES};
use super::types::{Filter, FilterGroup, Page, SearchRequest, Sort};
use crate::capture::RecordFailure;
use crate::connector::{
    Checkpoint, RecordBatch, RecordSink, StreamCheckpoint, SyncContext, SyncReport,
};
use crate::error::Result;
use crate::model::{DealContact, Record};

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

    fn mapped(self) -> &'static [&'static str] {
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

/// The most results one search query may page through.
const SEARCH_CAP: u64 = 10_000;
/// Search page size (HubSpot's maximum).
const SEARCH_LIMIT: u32 = 200;
/// List page size (HubSpot's maximum).
const LIST_LIMIT: u32 = 100;
/// Inputs per v4 association batch read (HubSpot's maximum).
const ASSOC_CHUNK: usize = 1_000;
/// Checkpoint flag: an inline association block was cut off, so a backfill is needed.
const NEEDS_BACKFILL: &str = "needs_association_backfill";

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a HubSpotClient,
    pub(crate) config: &'a HubSpotConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
}

fn properties(obj: Object, config: &HubSpotConfig) -> Vec<String> {
    let mut props: Vec<String> = obj.mapped().iter().map(|p| (*p).to_owned()).collect();
    props.extend(config.extra_properties(obj.path()).iter().cloned());
    props.sort();
    props.dedup();
    props
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

impl Syncer<'_> {
    fn stream(&mut self, name: &str) -> &mut StreamCheckpoint {
        self.checkpoint.stream_mut(name)
    }

    /// Decodes and transforms one page; failures are captured with their ids.
    fn transform_page(&mut self, obj: Object, page: Page, batch: &mut RecordBatch) -> bool {
        let ws = self.ctx.workspace_id();
        let mut truncated_associations = false;
        for raw in page.results {
            let id = raw.get("id").and_then(|v| v.as_str()).map(str::to_owned);
            let result = transform::decode(raw).and_then(|o| {
                truncated_associations |= o
                    .associations
                    .values()
                    .any(|b| b.paging.as_ref().is_some_and(|p| p.next.is_some()));
                match obj {
                    Object::Companies => transform::company(ws, &o).map(|a| vec![Record::from(a)]),
                    Object::Contacts => transform::contact(ws, &o).map(|c| vec![Record::from(c)]),
                    Object::Deals => transform::deal(ws, &o).map(|(d, links)| {
                        std::iter::once(Record::from(d))
                            .chain(links.into_iter().map(Record::from))
                            .collect()
                    }),
                }
            });
            match result {
                Ok(records) => batch.records.extend(records),
                Err(e) => batch.failures.push(RecordFailure::new(
                    id.or_else(|| match &e {
                        crate::Error::Decode { record_id, .. } => record_id.clone(),
                        _ => None,
                    }),
                    e.to_string(),
                )),
            }
        }
        truncated_associations
    }

    async fn write(&mut self, sink: &mut dyn RecordSink, batch: RecordBatch) -> Result<()> {
        self.report.records_fetched += batch
            .records
            .iter()
            .filter(|r| !matches!(r, Record::DealContact(_)))
            .count() as u64;
        self.report.records_failed += batch.failures.len() as u64;
        sink.write(batch, &self.checkpoint).await?;
        self.ctx.progress().report(
            self.report.records_fetched,
            None,
            "hubspot: records written",
        );
        Ok(())
    }

    /// Initial pass over one object through the list endpoint, resumable from the stored
    /// page cursor. The watermark moves only when the pass ends, since the list is in id
    /// order, not modification order.
    pub(crate) async fn list_pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<()> {
        let props = properties(obj, self.config);
        let stream = obj.path();
        let mut after = self.stream(stream).cursor.clone();
        let span = tracing::info_span!("hubspot_list", object = stream);
        async {
            loop {
                self.ctx.check_cancelled()?;
                let page = self
                    .client
                    .list_page(
                        obj.path(),
                        &props,
                        obj.inline_associations(),
                        after.as_deref(),
                        false,
                    )
                    .await?;
                let next = page.next_after().map(str::to_owned);
                let mut batch = RecordBatch::default();
                let truncated = self.transform_page(obj, page, &mut batch);
                let cap = self.ctx.watermark_cap();
                let s = self.stream(stream);
                s.observe_records(&batch.records);
                if truncated {
                    s.extra.insert(NEEDS_BACKFILL.into(), json!(true));
                }
                match &next {
                    Some(a) => s.cursor = Some(a.clone()),
                    None => s.finish_pass(cap),
                }
                self.write(sink, batch).await?;
                match next {
                    Some(a) => after = Some(a),
                    None => return Ok(()),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Incremental pass over one object through search: modified in
    /// `[watermark − lookback, sync start]`, sorted by `hs_object_id`, restarting the query
    /// with `hs_object_id > last` before the 10,000-result cap. The checkpoint's cursor is
    /// the last committed `hs_object_id`, so a resumed pass continues after it.
    pub(crate) async fn search_pass(
        &mut self,
        obj: Object,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let stream = obj.path();
        let Some(watermark) = self.stream(stream).watermark else {
            // Never synced: a full list pass is the only complete read.
            return self.list_pass(obj, sink).await;
        };
        let lookback = chrono::Duration::from_std(self.config.lookback).unwrap_or_default();
        let from = watermark.checked_sub_signed(lookback).unwrap_or(watermark);
        let until = self.ctx.started_at();
        let props = properties(obj, self.config);
        let mut last_id: u64 = self
            .stream(stream)
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let span = tracing::info_span!("hubspot_search", object = stream);
        async {
            // The query's id floor stays fixed while paging with `after`; it moves to the
            // last id seen only when the query restarts (re-windowing or resuming).
            let mut floor = last_id;
            let mut after: Option<u64> = None;
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
                                value: floor.to_string(),
                            },
                        ],
                    }],
                    sorts: vec![Sort {
                        property_name: "hs_object_id".into(),
                        direction: "ASCENDING",
                    }],
                    properties: props.clone(),
                    limit: SEARCH_LIMIT,
                    after: after.map(|a| a.to_string()),
                };
                let page = self.client.search_page(obj.path(), &req).await?;
                let next: Option<u64> = page.next_after().and_then(|a| a.parse().ok());
                let page_max_id = page
                    .results
                    .iter()
                    .filter_map(|r| r.get("id")?.as_str()?.parse::<u64>().ok())
                    .max();
                let mut batch = RecordBatch::default();
                self.transform_page(obj, page, &mut batch);
                if obj == Object::Deals {
                    self.attach_deal_associations(&mut batch).await?;
                }
                if let Some(m) = page_max_id {
                    last_id = last_id.max(m);
                }
                let cap = self.ctx.watermark_cap();
                let s = self.stream(stream);
                s.observe_records(&batch.records);
                let done = next.is_none();
                if done {
                    s.finish_pass(cap);
                } else {
                    s.cursor = Some(last_id.to_string());
                }
                self.write(sink, batch).await?;
                match next {
                    None => return Ok(()),
                    // Re-window before paging past the cap: restart after the last id.
                    Some(n) if n + u64::from(SEARCH_LIMIT) > SEARCH_CAP => {
                        floor = last_id;
                        after = None;
                    }
                    Some(n) => after = Some(n),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Archived records of one object (search never returns them). The archived list is
    /// not filterable by time, so records archived before the stream's watermark (minus the
    /// lookback) are skipped client-side; the stream's watermark is the newest `archived_at`.
    pub(crate) async fn archived_pass(
        &mut self,
        obj: Object,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let stream = obj.archived_stream();
        let props = properties(obj, self.config);
        let lookback = chrono::Duration::from_std(self.config.lookback).unwrap_or_default();
        let since = self
            .stream(stream)
            .watermark
            .map(|w| w.checked_sub_signed(lookback).unwrap_or(w));
        let mut after = self.stream(stream).cursor.clone();
        loop {
            self.ctx.check_cancelled()?;
            let page = self
                .client
                .list_page(obj.path(), &props, &[], after.as_deref(), true)
                .await?;
            let next = page.next_after().map(str::to_owned);
            let mut batch = RecordBatch::default();
            self.transform_page(obj, page, &mut batch);
            batch.records.retain(|r| {
                let archived_at = r.meta().and_then(|m| m.archived_at);
                match (since, archived_at) {
                    (Some(s), Some(a)) => a >= s,
                    _ => true,
                }
            });
            let cap = self.ctx.watermark_cap();
            let s = self.stream(stream);
            for at in batch.records.iter().filter_map(|r| r.meta()?.archived_at) {
                s.observe(at);
            }
            match &next {
                Some(a) => s.cursor = Some(a.clone()),
                None => s.finish_pass(cap),
            }
            self.write(sink, batch).await?;
            match next {
                Some(a) => after = Some(a),
                None => return Ok(()),
            }
        }
    }

    /// Search results carry no associations: read deal → company and deal → contacts for
    /// the page's deals through the v4 batch endpoint.
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
                    .iter()
                    .find(|(from, _)| *from == d.meta.source_id)
                    .map(|(_, to)| to.clone());
            }
        }
        batch
            .records
            .extend(contacts.into_iter().map(|(deal, contact)| {
                Record::from(DealContact {
                    workspace_id: ws,
                    source: crate::model::ConnectorKind::Hubspot,
                    deal_source_id: deal,
                    contact_source_id: contact,
                    role: None,
                })
            }));
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
            pending.extend(
                page.results
                    .iter()
                    .filter_map(|r| r.get("id")?.as_str().map(str::to_owned)),
            );
            // Flush whole chunks (and the rest at the end) so the page cursor stays exact.
            if pending.len() + LIST_LIMIT as usize > ASSOC_CHUNK || next.is_none() {
                let unique: BTreeSet<String> = pending.drain(..).collect();
                let ids: Vec<String> = unique.into_iter().collect();
                let links = self.client.associations("deals", "contacts", &ids).await?;
                let batch = RecordBatch::new(
                    links
                        .into_iter()
                        .map(|(deal, contact)| {
                            Record::from(DealContact {
                                workspace_id: ws,
                                source: crate::model::ConnectorKind::Hubspot,
                                deal_source_id: deal,
                                contact_source_id: contact,
                                role: None,
                            })
                        })
                        .collect(),
                );
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
