//! The Salesforce sync: one keyset pass per object over `queryAll` ordered by
//! `SystemModstamp, Id`, locators followed while they live and the query restarted from the
//! keyset when one dies, Bulk 2.0 for large full reads, deletes from `IsDeleted`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::Instrument;

use super::SalesforceConfig;
use super::client::{More, SalesforceClient};
use super::transform::{self, Field, Item, Keyset, Object};
use crate::connector::{
    Checkpoint, RecordBatch, RecordSink, SourceTotal, StreamCheckpoint, SyncContext, SyncReport,
};
use crate::connectors::page::{capture_page, write_page};
use crate::error::{Error, Result};

/// Checkpoint key: the pass in progress reads the whole object (no lower bound), so it
/// clears `repair` and reports a total when it ends.
pub(crate) const FULL_PASS: &str = "full";
/// Rows per Bulk results page (`maxRecords`).
pub(crate) const BULK_MAX_RECORDS: u32 = 10_000;
/// Locator deaths in a row without a row read before the pass gives up (each restart is a
/// fresh query from the keyset, so this only trips when the org kills every new locator
/// before its first batch is read).
const MAX_RESTARTS_WITHOUT_PROGRESS: u32 = 3;
/// The longest wait between two polls of a Bulk job.
const MAX_POLL_DELAY: Duration = Duration::from_secs(10);
/// How long a Bulk job may take before the pass falls back to REST.
const MAX_JOB_WAIT: Duration = Duration::from_secs(30 * 60);

/// Where a pass's query starts.
enum Lower {
    /// The whole object.
    All,
    /// `SystemModstamp >= watermark`.
    From(DateTime<Utc>),
    /// Strictly after a committed row.
    After(Keyset),
}

/// The exclusive upper bound of a pass begun at `until`: the end of that second (literals
/// have second precision), so rows changed later in that second are read now and again next
/// time, never skipped.
fn pass_end(until: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(until.timestamp().saturating_add(1), 0).unwrap_or(until)
}

/// Before any Salesforce record: the lower end of a window that has none.
fn beginning() -> DateTime<Utc> {
    DateTime::from_timestamp(915_148_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC) // 1999-01-01
}

/// Whether an error is Salesforce's `QUERY_TIMEOUT` (the query must ask for less).
fn is_query_timeout(e: &Error) -> bool {
    matches!(e, Error::Api { body, .. } if body.contains("QUERY_TIMEOUT"))
}

/// The SOQL of a pass: `fields` of `obj` after `lower` (and at or after `floor`), before
/// `end`, ordered by the keyset. `count` asks `COUNT()` instead.
fn build_query(
    obj: Object,
    fields: &[Field],
    lower: &Lower,
    floor: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    count: bool,
) -> String {
    let mut q = unordered_query(obj, fields, lower, floor, end, count);
    if !count {
        q.push_str(" ORDER BY SystemModstamp ASC, Id ASC");
    }
    q
}

/// [`build_query`] without `ORDER BY`: what a Bulk job is given (ordering disables
/// Salesforce's PK chunking of the job, which then may time out on big objects).
fn unordered_query(
    obj: Object,
    fields: &[Field],
    lower: &Lower,
    floor: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    count: bool,
) -> String {
    let mut conds = Vec::new();
    match lower {
        Lower::All => {}
        Lower::From(t) => conds.push(format!("SystemModstamp >= {}", transform::soql_time(*t))),
        Lower::After(k) => {
            let t = transform::soql_time(k.at);
            conds.push(format!(
                "SystemModstamp >= {t} AND (SystemModstamp > {t} OR Id > {})",
                transform::soql_string(&k.id)
            ));
        }
    }
    if let Some(f) = floor {
        conds.push(format!("SystemModstamp >= {}", transform::soql_time(f)));
    }
    conds.push(format!("SystemModstamp < {}", transform::soql_time(end)));
    let select = if count {
        "COUNT()".to_owned()
    } else {
        fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT {select} FROM {} WHERE {}",
        obj.api_name(),
        conds.join(" AND ")
    )
}

/// The stored cursor of a pass read through a Bulk job: the job and the locator of the
/// next results page (empty for the first). Bulk results come in no particular order, so
/// a pass interrupted there resumes from the job's results (a locator stays re-readable
/// while the job exists), not from a keyset position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BulkCursor {
    pub(crate) job: String,
    pub(crate) locator: Option<String>,
}

impl BulkCursor {
    const PREFIX: &'static str = "bulk:";

    pub(crate) fn encode(&self) -> String {
        format!(
            "{}{}:{}",
            Self::PREFIX,
            self.job,
            self.locator.as_deref().unwrap_or("")
        )
    }

    pub(crate) fn decode(s: &str) -> Option<BulkCursor> {
        let (job, locator) = s.strip_prefix(Self::PREFIX)?.split_once(':')?;
        let safe = |x: &str| {
            x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=-_+/".contains(&b))
        };
        (!job.is_empty() && safe(job) && safe(locator)).then(|| BulkCursor {
            job: job.to_owned(),
            locator: (!locator.is_empty()).then(|| locator.to_owned()),
        })
    }
}

/// The state of one object's pass in this run.
struct Pass {
    obj: Object,
    fields: Vec<Field>,
    until: DateTime<Utc>,
    position: Option<Keyset>,
    /// The live count read before the pass (the reconciliation total when it ends).
    total: Option<u64>,
}

impl Lower {
    /// The earliest `SystemModstamp` the query can return.
    fn at(&self) -> DateTime<Utc> {
        match self {
            Lower::All => beginning(),
            Lower::From(t) => *t,
            Lower::After(k) => k.at,
        }
    }
}

impl Pass {
    fn lower(&self, s: &StreamCheckpoint) -> Lower {
        match (&self.position, s.watermark) {
            (Some(k), _) => Lower::After(k.clone()),
            (None, Some(w)) if !is_full(s) => Lower::From(w),
            _ => Lower::All,
        }
    }
}

fn is_full(s: &StreamCheckpoint) -> bool {
    s.extra.get(FULL_PASS).and_then(Value::as_bool) == Some(true)
}

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a SalesforceClient,
    pub(crate) config: &'a SalesforceConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
    /// Fields read per object in this run (from `describe`).
    pub(crate) fields: HashMap<Object, Vec<Field>>,
    /// Passes that fell back from a failed Bulk job to REST.
    pub(crate) bulk_fallbacks: u64,
    /// Query restarts after a locator died.
    pub(crate) restarts: u64,
    /// Objects whose full pass ended in this run.
    pub(crate) full_ended: Vec<Object>,
    /// Queries that timed out and were asked again for a smaller time slice.
    pub(crate) timeouts: u64,
    /// The last refresh-token rotation stored with the connection.
    pub(crate) stored_rotation: u64,
}

impl Syncer<'_> {
    /// Authenticates, then syncs every object; a pass resumed from an earlier run is
    /// followed by one more pass for what changed since that run began.
    pub(crate) async fn run(&mut self, sink: &mut dyn RecordSink) -> Result<()> {
        self.client.authenticate().await?;
        self.store_rotation().await;
        for obj in Object::ALL {
            let span = tracing::info_span!("salesforce_pass", object = obj.api_name());
            if self.pass(obj, sink).instrument(span.clone()).await? {
                self.pass(obj, sink).instrument(span).await?;
            }
        }
        Ok(())
    }

    /// Stores a refresh token Salesforce rotated to with the connection now (a run killed
    /// later must not leave the connection with a token that no longer works). A failure
    /// is logged: the orchestrator stores it again when the run ends.
    async fn store_rotation(&mut self) {
        let (generation, token) = self.client.rotation();
        let Some(token) = token.filter(|_| generation > self.stored_rotation) else {
            return;
        };
        match self
            .ctx
            .update_credentials(vec![("refresh_token".to_owned(), token)])
            .await
        {
            Ok(()) => self.stored_rotation = generation,
            Err(e) => {
                tracing::warn!(error = %e, "storing the rotated Salesforce refresh token failed")
            }
        }
    }

    async fn fields_of(&mut self, obj: Object) -> Result<Vec<Field>> {
        if let Some(f) = self.fields.get(&obj) {
            return Ok(f.clone());
        }
        let describe = self.client.describe(obj.api_name()).await?;
        let fields = transform::select_fields(obj, &describe)?;
        self.fields.insert(obj, fields.clone());
        Ok(fields)
    }

    /// One pass over `obj`; returns whether it was begun by an earlier run.
    async fn pass(&mut self, obj: Object, sink: &mut dyn RecordSink) -> Result<bool> {
        let fields = self.fields_of(obj).await?;
        let ctx = self.ctx;
        let s = self.checkpoint.stream_mut(obj.stream());
        if s.repair && s.cursor.is_some() && !is_full(s) {
            // A repair is due: a full pass replaces the incremental one in progress.
            s.cursor = None;
            s.pass_started_at = None;
            s.pass_max_updated_at = None;
        }
        let full = s.watermark.is_none() || s.repair || (s.cursor.is_some() && is_full(s));
        let until = s.begin_pass(ctx);
        if full {
            s.extra.insert(FULL_PASS.into(), json!(true));
        }
        let position = s.cursor.as_deref().and_then(Keyset::decode);
        let bulk = s.cursor.as_deref().and_then(BulkCursor::decode);
        let mut pass = Pass {
            obj,
            fields,
            until,
            position,
            total: None,
        };
        if let Some(cursor) = bulk {
            // A pass interrupted inside a Bulk job's results: the rest of them, while the
            // job exists; else the pass starts over.
            match self.bulk_results(&mut pass, cursor, sink).await {
                Ok(resumed) => return self.finished(&pass, resumed).await,
                Err(e @ Error::Api { status: 404, .. }) => {
                    tracing::warn!(error = %e, "Salesforce Bulk job gone; the pass starts over");
                    let s = self.checkpoint.stream_mut(obj.stream());
                    s.cursor = None;
                    s.pass_max_updated_at = None;
                }
                Err(e) => return Err(e),
            }
        }
        if full && pass.position.is_none() {
            let total = self
                .client
                .count(&format!("SELECT COUNT() FROM {}", obj.api_name()), false)
                .await?;
            pass.total = Some(total);
            if total > self.config.bulk_threshold {
                match self.bulk_read(&mut pass, sink).await? {
                    Some(resumed) => return self.finished(&pass, resumed).await,
                    None => {
                        self.bulk_fallbacks += 1;
                    }
                }
            }
        }
        let resumed = self.rest_read(&mut pass, sink).await?;
        self.finished(&pass, resumed).await
    }

    /// After a pass: the reconciliation total of a full pass that ended.
    async fn finished(&mut self, pass: &Pass, resumed: bool) -> Result<bool> {
        if pass.obj == Object::ContactRole || !self.full_ended.contains(&pass.obj) {
            return Ok(resumed);
        }
        let total = match pass.total {
            Some(t) => Some(t),
            None => match self
                .client
                .count(
                    &format!("SELECT COUNT() FROM {}", pass.obj.api_name()),
                    false,
                )
                .await
            {
                Ok(t) => Some(t),
                Err(e) if e.is_snooze() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Salesforce count unusable; not reconciled");
                    None
                }
            },
        };
        if let Some(total) = total {
            self.report.source_totals.push(SourceTotal {
                stream: pass.obj.stream().to_owned(),
                kind: pass.obj.kind(),
                total,
            });
        }
        Ok(resumed)
    }

    /// Transforms and writes one batch of rows; the last batch ends the pass. Returns
    /// whether the keyset moved.
    async fn write_rows(
        &mut self,
        pass: &mut Pass,
        rows: Vec<Value>,
        last: bool,
        bulk: Option<&BulkCursor>,
        sink: &mut dyn RecordSink,
    ) -> Result<(bool, bool)> {
        let ws = self.ctx.workspace_id();
        let before = pass.position.clone();
        if bulk.is_none() {
            for raw in &rows {
                if let Some(k) = Keyset::of(raw)
                    && pass.position.as_ref().is_none_or(|p| k > *p)
                {
                    pass.position = Some(k);
                }
            }
        }
        let mut deletions = Vec::new();
        let mut stamps = Vec::new();
        let (obj, fields) = (pass.obj, &pass.fields);
        let mut batch: RecordBatch = capture_page(rows, transform::row_id, |raw| {
            let at = transform::Keyset::of(&raw).map(|k| k.at);
            let item = transform::transform(ws, obj, fields, raw)?;
            stamps.extend(at);
            Ok(match item {
                Item::Record(r) => Some(*r),
                Item::Deleted(d) => {
                    deletions.push(d);
                    None
                }
            })
        });
        batch.deletions = deletions;
        let ctx = self.ctx;
        let s = self.checkpoint.stream_mut(obj.stream());
        for at in stamps {
            s.observe(at);
        }
        let mut resumed = false;
        if last {
            let full = is_full(s);
            resumed = s.finish_pass_in(ctx);
            if full {
                if s.watermark.is_none() {
                    // An empty object read in full: later changes are found from the
                    // pass's window on.
                    s.watermark = Some(ctx.cap_for(pass.until));
                }
                s.repair = false;
                s.extra.remove(FULL_PASS);
                self.full_ended.push(obj);
            }
        } else if let Some(b) = bulk {
            s.cursor = Some(b.encode());
        } else if let Some(p) = &pass.position {
            s.cursor = Some(p.encode());
        }
        // Before the page: the token the requests of this page rotated to is kept even if
        // the write fails.
        self.store_rotation().await;
        write_page(
            sink,
            batch,
            &self.checkpoint,
            &mut self.report,
            ctx,
            "salesforce: records written",
        )
        .await?;
        Ok((pass.position != before, resumed))
    }

    /// Reads the pass through REST: a query from the keyset position, its locators
    /// followed; a dead locator restarts the query from the position of the last row
    /// written (never from the start, and never twice without progress). A query that
    /// times out (`QUERY_TIMEOUT`, big objects) is asked again for the first half of its
    /// time window, and the pass goes on slice by slice (each twice as wide as the last
    /// that worked) up to its end.
    async fn rest_read(&mut self, pass: &mut Pass, sink: &mut dyn RecordSink) -> Result<bool> {
        let batch = self.config.batch_size;
        let full_end = pass_end(pass.until);
        let mut idle_restarts = 0;
        // The time slice being read, when the whole window timed out: `[from, to)`.
        let mut slice: Option<(Option<DateTime<Utc>>, DateTime<Utc>)> = None;
        'query: loop {
            self.ctx.check_cancelled()?;
            let lower = pass.lower(self.checkpoint.stream_mut(pass.obj.stream()));
            let (floor, end) = slice.unwrap_or((None, full_end));
            let soql = build_query(pass.obj, &pass.fields, &lower, floor, end, false);
            let mut page = match self.client.query(&soql, true, batch).await {
                Ok(page) => page,
                Err(e) if is_query_timeout(&e) => {
                    let from = floor.map_or(lower.at(), |f| f.max(lower.at()));
                    let half = (end - from).num_seconds() / 2;
                    if half < 1 {
                        return Err(e);
                    }
                    let mid = from + chrono::Duration::seconds(half);
                    tracing::info!(%from, %mid, "Salesforce query timed out; reading a smaller time slice");
                    self.timeouts += 1;
                    slice = Some((floor, mid));
                    continue;
                }
                Err(e) => return Err(e),
            };
            loop {
                let next = page.next().map(str::to_owned);
                if next.is_some() && page.records.is_empty() {
                    return Err(Error::decode(
                        None,
                        "Salesforce announced more rows with an empty batch; stopping instead of looping",
                    ));
                }
                let last = next.is_none() && slice.is_none_or(|(_, to)| to >= full_end);
                let (moved, resumed) = self
                    .write_rows(pass, page.records, last, None, sink)
                    .await?;
                if moved {
                    idle_restarts = 0;
                }
                let Some(next) = next else {
                    match slice {
                        Some((from, to)) if to < full_end => {
                            // The next slice, twice as wide, up to the pass's end.
                            let start = from.unwrap_or_else(|| lower.at()).min(to);
                            let next_to = (to + (to - start) * 2).min(full_end);
                            slice = Some((Some(to), next_to));
                            continue 'query;
                        }
                        _ => return Ok(resumed),
                    }
                };
                self.ctx.check_cancelled()?;
                match self.client.query_more(&next, batch).await? {
                    More::Page(p) => page = p,
                    More::Died(reason) => {
                        idle_restarts += 1;
                        self.restarts += 1;
                        if idle_restarts > MAX_RESTARTS_WITHOUT_PROGRESS {
                            return Err(Error::decode(
                                None,
                                format!(
                                    "Salesforce query locators keep dying ({reason}) before any row is read; stopping instead of looping"
                                ),
                            ));
                        }
                        tracing::info!(
                            reason,
                            "Salesforce query locator died; restarting the query from the keyset"
                        );
                        continue 'query;
                    }
                }
            }
        }
    }

    /// Reads the pass through a Bulk 2.0 job (unordered CSV pages by locator, each
    /// committed with the job and the next locator as the stream's cursor). `Ok(None)`
    /// when the job failed (the caller reads through REST instead); `Ok(Some(resumed))`
    /// when the pass ended.
    async fn bulk_read(
        &mut self,
        pass: &mut Pass,
        sink: &mut dyn RecordSink,
    ) -> Result<Option<bool>> {
        let lower = pass.lower(self.checkpoint.stream_mut(pass.obj.stream()));
        let soql = unordered_query(
            pass.obj,
            &pass.fields,
            &lower,
            None,
            pass_end(pass.until),
            false,
        );
        let job = self.client.bulk_create(&soql, true).await?;
        self.report.used_export_api = true;
        let mut delay = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        loop {
            self.ctx.check_cancelled()?;
            let info = self.client.bulk_status(&job.id).await?;
            match info.state.as_str() {
                "JobComplete" => break,
                "Failed" | "Aborted" => {
                    tracing::warn!(
                        job = %job.id,
                        state = %info.state,
                        error = info.error_message.as_deref().unwrap_or(""),
                        "Salesforce Bulk job did not complete; reading through REST instead"
                    );
                    return Ok(None);
                }
                _ => {}
            }
            if waited >= MAX_JOB_WAIT {
                tracing::warn!(job = %job.id, "Salesforce Bulk job too slow; reading through REST instead");
                return Ok(None);
            }
            tokio::time::sleep(delay).await;
            waited += delay;
            delay = (delay * 2).min(MAX_POLL_DELAY);
        }
        let cursor = BulkCursor {
            job: job.id,
            locator: None,
        };
        self.bulk_results(pass, cursor, sink).await.map(Some)
    }

    /// Reads a completed job's results from `cursor` to the end; returns whether the pass
    /// was begun by an earlier run.
    async fn bulk_results(
        &mut self,
        pass: &mut Pass,
        mut cursor: BulkCursor,
        sink: &mut dyn RecordSink,
    ) -> Result<bool> {
        self.report.used_export_api = true;
        loop {
            self.ctx.check_cancelled()?;
            let (csv, next) = self
                .client
                .bulk_results(&cursor.job, cursor.locator.as_deref(), BULK_MAX_RECORDS)
                .await?;
            let rows = transform::parse_csv(&csv, &pass.fields)?;
            drop(csv);
            if next.is_some() && rows.is_empty() {
                return Err(Error::decode(
                    None,
                    "Salesforce Bulk results announced more with an empty page; stopping instead of looping",
                ));
            }
            if next.is_some() && next == cursor.locator {
                return Err(Error::decode(
                    None,
                    "Salesforce Bulk results returned the same locator twice; stopping instead of looping",
                ));
            }
            cursor.locator = next;
            let last = cursor.locator.is_none();
            let (_, resumed) = self
                .write_rows(pass, rows, last, Some(&cursor), sink)
                .await?;
            if last {
                return Ok(resumed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::salesforce::transform::FieldType;

    #[test]
    fn bulk_cursors_round_trip_and_refuse_junk() {
        let c = BulkCursor {
            job: "7505g0000000001SIM".into(),
            locator: Some("MTAwMDA".into()),
        };
        assert_eq!(BulkCursor::decode(&c.encode()), Some(c));
        let first = BulkCursor {
            job: "750x".into(),
            locator: None,
        };
        assert_eq!(BulkCursor::decode(&first.encode()), Some(first));
        for junk in [
            "bulk:",
            "bulk::x",
            "2024-01-01T00:00:00Z|001",
            "bulk:a/../b:x?y",
        ] {
            assert_eq!(BulkCursor::decode(junk), None, "{junk}");
        }
    }

    #[test]
    fn queries_follow_the_keyset() {
        let fields = vec![
            Field {
                name: "Id".into(),
                kind: FieldType::Text,
                custom: false,
            },
            Field {
                name: "SystemModstamp".into(),
                kind: FieldType::Text,
                custom: false,
            },
        ];
        let until = crate::sanitize::datetime_str("2024-06-01T00:00:00.500Z").unwrap();
        let at = crate::sanitize::datetime_str("2024-05-01T10:00:00Z").unwrap();
        let q = build_query(
            Object::Contact,
            &fields,
            &Lower::After(Keyset {
                at,
                id: "0035g0000000009AAA".into(),
            }),
            None,
            pass_end(until),
            false,
        );
        assert_eq!(
            q,
            "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp >= 2024-05-01T10:00:00Z \
             AND (SystemModstamp > 2024-05-01T10:00:00Z OR Id > '0035g0000000009AAA') \
             AND SystemModstamp < 2024-06-01T00:00:01Z ORDER BY SystemModstamp ASC, Id ASC"
        );
        let c = build_query(
            Object::Account,
            &fields,
            &Lower::From(at),
            Some(at),
            pass_end(until),
            true,
        );
        assert_eq!(
            c,
            "SELECT COUNT() FROM Account WHERE SystemModstamp >= 2024-05-01T10:00:00Z AND SystemModstamp >= 2024-05-01T10:00:00Z AND SystemModstamp < 2024-06-01T00:00:01Z"
        );
    }
}
