//! The Gong sync: tracked users, then one stream of calls per user (`calls:<userId>`),
//! read through `/v2/calls/extensive` by start-time window.
//!
//! Stream state (in [`StreamCheckpoint`]):
//! - `watermark`: the newest `metaData.started` stored (capped at the sync's start minus the
//!   lag). The extensive endpoint filters on the start time only, so that is the one
//!   usable watermark; calls change after they start, which the overlap window covers.
//! - `cursor`, `pass_started_at` and `extra.window_from`: the page cursor of a pass in
//!   progress and the exact filter it belongs to (a Gong cursor is only valid for its
//!   query): `[window_from, pass_started_at)`, so a resumed pass sends the same filter and
//!   finishes with its own window (its watermark capped at its own start minus the lag);
//!   the follow-up pass of the resuming run covers what changed since. Checkpoints of
//!   earlier releases kept the upper bound as `extra.window_to`; it is migrated when read.
//! - `repair`: a full pass over the initial window is due (reconciliation found a gap); it
//!   is cleared when such a pass, begun by this run, finishes.
//! - `extra.covered_from`: every call of the user that started from this instant up to the
//!   watermark has been read; backfill walks it further back.
//! - `extra.backfill_cursor` / `backfill_from` / `backfill_to`: a backfill slice in
//!   progress.
//!
//! The company's daily request count lives in the stream [`QUOTA_STREAM`] (`extra.day`, the
//! UTC day, and `extra.used`), so it is committed with every page and survives between
//! runs (see [`DailyQuota`]).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::GongConfig;
use super::client::GongClient;
use super::transform;
use super::types::{CallsFilter, CallsPage, CallsRequest, ContentSelector, GongUser};
use crate::capture::RecordFailure;
use crate::connector::{
    Checkpoint, RecordBatch, RecordSink, SourceTotal, StreamCheckpoint, SyncContext, SyncReport,
};
use crate::connectors::page::{capture_page, write_page};
use crate::connectors::quota::DailyQuota;
use crate::error::{Error, Result};
use crate::model::{Record, RecordKind};
use crate::sanitize;

/// Backfill walks history in slices of this many days, one checkpoint per page.
pub(crate) const BACKFILL_SLICE_DAYS: i64 = 30;

/// Gong's documented default: 10,000 requests per day per company.
pub(crate) const DEFAULT_DAILY_LIMIT: u32 = 10_000;

/// The checkpoint stream holding the company's request count of the day.
pub(crate) const QUOTA_STREAM: &str = "gong:requests";

/// How often one pass may restart its window after Gong rejects its cursor (expired).
const MAX_CURSOR_RESTARTS: u32 = 2;

const WINDOW_FROM: &str = "window_from";
/// Where earlier releases kept a pass's upper bound (now `pass_started_at`).
const WINDOW_TO: &str = "window_to";
const COVERED_FROM: &str = "covered_from";
const BACKFILL_CURSOR: &str = "backfill_cursor";
const BACKFILL_FROM: &str = "backfill_from";
const BACKFILL_TO: &str = "backfill_to";

/// What a sync run does per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Initial,
    Incremental,
    Backfill,
}

/// A user whose calls are synced.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub id: String,
    pub email: Option<String>,
}

/// A `tracked_users` entry resolved against `/v2/users`.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    User(Tracked),
    /// A configured email or id no Gong user has.
    Missing(String),
}

/// Which part of a user's stream a pass moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Initial and incremental windows: watermark and page cursor.
    Main,
    /// Backfill slices.
    Backfill,
}

/// `[from, to)` on the call start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct UserStats {
    calls: u64,
    failed: u64,
    pages: u64,
}

/// The stream of a user's calls.
pub(crate) fn stream_name(user_id: &str) -> String {
    format!("calls:{user_id}")
}

fn fmt(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whole seconds: Gong filters take second precision, and a stored window must round-trip.
fn floor_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn days(n: u32) -> chrono::Duration {
    chrono::Duration::days(i64::from(n))
}

/// The earliest instant a window starts at: Gong holds no call before it, and a window
/// reaching further back (from an absurd stored date) is read from here.
fn earliest() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// `t − d`, never before [`earliest`] (and never overflowing, whatever `t` is).
fn back(t: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    t.checked_sub_signed(d)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .max(earliest())
}

/// Moves a checkpoint of an earlier release onto the shared pass window: the pass in
/// progress kept its upper bound in `extra.window_to`, now `pass_started_at`.
pub(crate) fn migrate(s: &mut StreamCheckpoint) {
    if let Some(to) = extra_time(s, WINDOW_TO)
        && s.cursor.is_some()
        && s.pass_started_at.is_none()
    {
        s.pass_started_at = Some(to);
    }
    s.extra.remove(WINDOW_TO);
}

fn extra_time(s: &StreamCheckpoint, key: &str) -> Option<DateTime<Utc>> {
    s.extra
        .get(key)
        .and_then(Value::as_str)
        .and_then(sanitize::datetime_str)
}

/// Errors that stop the whole sync instead of one user: rate limits and quotas (the job is
/// snoozed and resumes from the checkpoint), cancellation, storage, rejected credentials.
fn stops_the_sync(e: &Error) -> bool {
    e.is_snooze()
        || matches!(
            e,
            Error::Cancelled | Error::Storage { .. } | Error::AuthFailed { .. } | Error::Config(_)
        )
}

/// A 4xx other than 429: what Gong answers a cursor it no longer accepts.
fn is_client_error(e: &Error) -> bool {
    matches!(e, Error::Api { status, .. } if (400..500).contains(status) && *status != 429)
}

/// Whether a listing whose page read with `cursor` failed with `e` starts again from its
/// first page: Gong rejected the cursor (expired, or stored by an earlier run), and the
/// listing has not restarted [`MAX_CURSOR_RESTARTS`] times yet.
fn may_restart(e: &Error, cursor: Option<&str>, restarts: u32) -> bool {
    cursor.is_some() && is_client_error(e) && restarts < MAX_CURSOR_RESTARTS
}

pub(crate) struct Syncer<'a> {
    pub(crate) client: &'a GongClient,
    pub(crate) config: &'a GongConfig,
    pub(crate) ctx: &'a SyncContext,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) report: SyncReport,
    pub(crate) by_user: Map<String, Value>,
    pub(crate) users_tracked: u64,
    pub(crate) users_failed: u64,
    /// User id → email, from `/v2/users` (the host's address when its party is missing).
    emails: HashMap<String, String>,
    /// The company's requests of the day, kept with the connection.
    quota: DailyQuota,
    /// Whether the checkpoint holds a request count not written to the sink yet.
    quota_dirty: bool,
}

impl<'a> Syncer<'a> {
    pub(crate) fn new(
        client: &'a GongClient,
        config: &'a GongConfig,
        ctx: &'a SyncContext,
        mut checkpoint: Checkpoint,
    ) -> Self {
        for (name, s) in checkpoint.streams.iter_mut() {
            if name.starts_with("calls:") {
                migrate(s);
            }
        }
        let quota = DailyQuota::load(
            &checkpoint,
            QUOTA_STREAM,
            "gong",
            config.daily_limit.unwrap_or(DEFAULT_DAILY_LIMIT),
            ctx.started_at(),
            client.stats(),
        );
        Syncer {
            client,
            config,
            ctx,
            checkpoint,
            quota,
            quota_dirty: false,
            report: SyncReport::default(),
            by_user: Map::new(),
            users_tracked: 0,
            users_failed: 0,
            emails: HashMap::new(),
        }
    }

    /// Every user of the company through `/v2/users`, then the tracked ones: the active
    /// users, or the configured emails and ids (inactive ones included: they were asked for).
    pub(crate) async fn tracked_users(&mut self) -> Result<Vec<Resolved>> {
        let mut all: Vec<GongUser> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut restarts = 0;
        loop {
            self.ctx.check_cancelled()?;
            let client = self.client;
            let page = match self.counted(client.users_page(cursor.as_deref())).await {
                Ok(p) => p,
                Err(e) if may_restart(&e, cursor.as_deref(), restarts) => {
                    // The listing is not checkpointed: start it again.
                    tracing::warn!(error = %e, "Gong rejected the users cursor; listing again");
                    restarts += 1;
                    cursor = None;
                    all.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let next = page.next_cursor().map(str::to_owned);
            for raw in &page.users {
                match GongUser::from_json(raw) {
                    Some(u) => all.push(u),
                    None => tracing::warn!("skipping a Gong user without an id"),
                }
            }
            match next {
                None => break,
                Some(n) if cursor.as_deref() == Some(n.as_str()) => {
                    return Err(Error::decode(
                        None,
                        "Gong returned the same users cursor twice; stopping instead of looping",
                    ));
                }
                Some(n) => cursor = Some(n),
            }
        }
        self.emails = all
            .iter()
            .filter_map(|u| Some((u.id.clone(), u.email.clone()?)))
            .collect();
        let tracked = |u: &GongUser| {
            Resolved::User(Tracked {
                id: u.id.clone(),
                email: u.email.clone(),
            })
        };
        if self.config.tracked_users.is_empty() {
            return Ok(all.iter().filter(|u| u.active).map(tracked).collect());
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for entry in &self.config.tracked_users {
            let found = if entry.contains('@') {
                all.iter().find(|u| u.has_email(entry))
            } else {
                all.iter().find(|u| u.id == *entry)
            };
            match found {
                Some(u) if seen.insert(u.id.clone()) => out.push(tracked(u)),
                Some(_) => {}
                None => out.push(Resolved::Missing(entry.clone())),
            }
        }
        Ok(out)
    }

    /// Syncs every tracked user. A user that fails is recorded (in `by_user` and as a
    /// failure in the batch) and the others go on, unless the error stops the sync (rate
    /// limit, quota, cancellation, storage, credentials) or every user failed.
    pub(crate) async fn run(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<()> {
        match self.run_users(mode, sink).await {
            Ok(()) => {
                // Commit the day's count with the last checkpoint.
                if self.quota_dirty {
                    sink.write(RecordBatch::default(), &self.checkpoint).await?;
                }
                Ok(())
            }
            Err(e) => {
                // Whatever stopped the run, the requests it made count against the day: commit
                // the checkpoint (what it holds is stored already) unless storage is failing.
                if self.quota_dirty
                    && !matches!(e, Error::Storage { .. })
                    && let Err(w) = sink.write(RecordBatch::default(), &self.checkpoint).await
                {
                    tracing::warn!(error = %w, "could not commit the Gong checkpoint after a stop");
                }
                Err(e)
            }
        }
    }

    /// Sends one request against the day's count: `Err(QuotaExhausted)` without sending when
    /// one more request would pass the day's limit; afterwards the requests made (retries
    /// too) are counted and the count put in the checkpoint.
    async fn counted<T>(&mut self, request: impl Future<Output = Result<T>>) -> Result<T> {
        self.quota.before_request(self.client.stats())?;
        let result = request.await;
        self.quota.charge(self.client.stats());
        self.quota.store(&mut self.checkpoint);
        self.quota_dirty = true;
        result
    }

    async fn run_users(&mut self, mode: Mode, sink: &mut dyn RecordSink) -> Result<()> {
        let users = self.tracked_users().await?;
        self.users_tracked = users.len() as u64;
        let mut first_error: Option<Error> = None;
        for entry in users {
            self.ctx.check_cancelled()?;
            let user = match entry {
                Resolved::User(u) => u,
                Resolved::Missing(name) => {
                    let e = Error::config(format!(
                        "tracked user {name:?} is not a user of this Gong company"
                    ));
                    self.user_failed(&name, None, &UserStats::default(), &e, sink)
                        .await?;
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let mut stats = UserStats::default();
            let span = tracing::info_span!("gong_user", user = %user.id);
            let result = self
                .sync_user(&user, mode, &mut stats, sink)
                .instrument(span)
                .await;
            match result {
                Ok(()) => {
                    let mut entry = self.user_entry(&user.id, user.email.as_deref(), &stats);
                    entry.insert("status".into(), json!("completed"));
                    self.by_user.insert(user.id.clone(), Value::Object(entry));
                }
                Err(e) if stops_the_sync(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(user = %user.id, error = %e, "gong user failed; continuing with the others");
                    self.user_failed(&user.id, user.email.as_deref(), &stats, &e, sink)
                        .await?;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if self.users_failed == self.users_tracked => Err(e),
            _ => Ok(()),
        }
    }

    fn user_entry(&self, id: &str, email: Option<&str>, stats: &UserStats) -> Map<String, Value> {
        let mut entry = Map::new();
        entry.insert("email".into(), json!(email));
        entry.insert("calls".into(), json!(stats.calls));
        entry.insert("failed_records".into(), json!(stats.failed));
        entry.insert("pages".into(), json!(stats.pages));
        if let Some(s) = self.checkpoint.stream(&stream_name(id)) {
            entry.insert("watermark".into(), json!(s.watermark));
            if let Some(c) = s.extra.get(COVERED_FROM) {
                entry.insert("covered_from".into(), c.clone());
            }
        }
        entry
    }

    /// Records a failed user: in `by_user`, and as a failure the sync log keeps.
    async fn user_failed(
        &mut self,
        id: &str,
        email: Option<&str>,
        stats: &UserStats,
        error: &Error,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        self.users_failed += 1;
        let mut entry = self.user_entry(id, email, stats);
        entry.insert("status".into(), json!("failed"));
        entry.insert("error".into(), json!(error.to_string()));
        self.by_user.insert(id.to_owned(), Value::Object(entry));
        let batch = RecordBatch {
            failures: vec![RecordFailure::new(
                Some(format!("user:{id}")),
                format!("gong user {id}: {error}"),
            )],
            ..Default::default()
        };
        sink.write(batch, &self.checkpoint).await?;
        self.quota_dirty = false;
        Ok(())
    }

    async fn sync_user(
        &mut self,
        user: &Tracked,
        mode: Mode,
        stats: &mut UserStats,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let start = floor_secs(self.ctx.started_at());
        match mode {
            Mode::Initial => {
                let w = Window {
                    from: back(start, days(self.config.initial_days)),
                    to: start,
                };
                self.pass(user, Pass::Main, w, None, stats, sink).await
            }
            Mode::Incremental => self.incremental(user, start, stats, sink).await,
            Mode::Backfill => {
                let name = stream_name(&user.id);
                let (covered, repair) = self
                    .checkpoint
                    .stream(&name)
                    .map_or((None, false), |s| (extra_time(s, COVERED_FROM), s.repair));
                if covered.is_none() || repair {
                    // Nothing read yet: the initial window first, so the covered history
                    // is one piece reaching up to now. A repair is due: that pass too.
                    self.incremental(user, start, stats, sink).await?;
                }
                self.backfill(user, start, stats, sink).await
            }
        }
    }

    /// Finishes an interrupted pass (same filter, stored cursor), then reads from the
    /// watermark minus the overlap (or the initial window, for a user never read) up to
    /// the sync's start.
    async fn incremental(
        &mut self,
        user: &Tracked,
        start: DateTime<Utc>,
        stats: &mut UserStats,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let name = stream_name(&user.id);
        let (interrupted, watermark) = match self.checkpoint.stream(&name) {
            Some(s) => {
                let window = match (&s.cursor, extra_time(s, WINDOW_FROM), s.pass_started_at) {
                    (Some(c), Some(from), Some(started)) => Some((
                        Window {
                            from,
                            to: floor_secs(started),
                        },
                        c.clone(),
                    )),
                    _ => None,
                };
                (window, s.watermark)
            }
            None => (None, None),
        };
        if let Some((w, cursor)) = interrupted {
            self.pass(user, Pass::Main, w, Some(cursor), stats, sink)
                .await?;
        }
        let (watermark, repair) = self
            .checkpoint
            .stream(&name)
            .map_or((watermark, false), |s| {
                (s.watermark.or(watermark), s.repair)
            });
        let full = back(start, days(self.config.initial_days));
        let from = match watermark {
            Some(w) => floor_secs(back(w, days(self.config.overlap_days))),
            None => full,
        };
        // A repairing pass reads the whole initial window.
        let from = if repair { from.min(full) } else { from };
        if from >= start {
            return Ok(());
        }
        self.pass(
            user,
            Pass::Main,
            Window { from, to: start },
            None,
            stats,
            sink,
        )
        .await
    }

    /// Walks the user's history back from `covered_from` in 30-day slices down to
    /// `backfill_days` before the sync's start, resuming a slice in progress first.
    async fn backfill(
        &mut self,
        user: &Tracked,
        start: DateTime<Utc>,
        stats: &mut UserStats,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let name = stream_name(&user.id);
        let horizon = back(start, days(self.config.backfill_days));
        let in_progress = self.checkpoint.stream(&name).and_then(|s| {
            let cursor = s.extra.get(BACKFILL_CURSOR)?.as_str()?.to_owned();
            Some((
                Window {
                    from: extra_time(s, BACKFILL_FROM)?,
                    to: extra_time(s, BACKFILL_TO)?,
                },
                cursor,
            ))
        });
        if let Some((w, cursor)) = in_progress {
            self.pass(user, Pass::Backfill, w, Some(cursor), stats, sink)
                .await?;
        }
        loop {
            let covered = self
                .checkpoint
                .stream(&name)
                .and_then(|s| extra_time(s, COVERED_FROM))
                .unwrap_or_else(|| back(start, days(self.config.initial_days)));
            if covered <= horizon {
                return Ok(());
            }
            let from = back(covered, chrono::Duration::days(BACKFILL_SLICE_DAYS)).max(horizon);
            self.pass(
                user,
                Pass::Backfill,
                Window { from, to: covered },
                None,
                stats,
                sink,
            )
            .await?;
            let moved = self
                .checkpoint
                .stream(&name)
                .and_then(|s| extra_time(s, COVERED_FROM))
                .is_some_and(|c| c <= from);
            if !moved {
                return Err(Error::decode(
                    None,
                    "gong backfill did not advance; stopping instead of looping",
                ));
            }
        }
    }

    /// Reads one window of a user's calls page by page, one checkpoint per page.
    async fn pass(
        &mut self,
        user: &Tracked,
        kind: Pass,
        w: Window,
        mut cursor: Option<String>,
        stats: &mut UserStats,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let name = stream_name(&user.id);
        if kind == Pass::Main
            && cursor.is_none()
            && let Some(s) = self.checkpoint.streams.get_mut(&name)
        {
            // A new pass: nothing of an earlier one applies.
            s.cursor = None;
            s.pass_started_at = None;
        }
        // Whether this run read the window from its first page (Gong's total then describes
        // exactly what the pass read), and the total of the last page.
        let mut from_first_page = cursor.is_none();
        let mut total: Option<u64> = None;
        let mut restarts = 0;
        loop {
            self.ctx.check_cancelled()?;
            let req = CallsRequest {
                cursor: cursor.as_deref(),
                filter: CallsFilter {
                    from_date_time: fmt(w.from),
                    to_date_time: fmt(w.to),
                    primary_user_ids: vec![user.id.as_str()],
                    workspace_id: self.config.workspace_id.as_deref(),
                },
                content_selector: ContentSelector::default(),
            };
            let client = self.client;
            let page = match self.counted(client.calls_page(&req)).await {
                Ok(p) => p,
                Err(e) if may_restart(&e, cursor.as_deref(), restarts) => {
                    // A cursor Gong no longer accepts (stored by an earlier run, or expired
                    // during this pass): read the window again from its start. Calls already
                    // stored are left alone by the store.
                    tracing::warn!(user = %user.id, error = %e, "Gong cursor rejected; restarting the window");
                    restarts += 1;
                    cursor = None;
                    from_first_page = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            stats.pages += 1;
            total = page.total().or(total);
            let next = page.next_cursor().map(str::to_owned);
            if next.is_some() && next == cursor {
                return Err(Error::decode(
                    None,
                    "Gong returned the same calls cursor twice; stopping instead of looping",
                ));
            }
            let (batch, started) = self.transform_page(page);
            stats.calls += batch.records.len() as u64;
            stats.failed += batch.failures.len() as u64;
            // A pass over the whole initial window, read from its first page by this run:
            // Gong's total describes exactly that range, and it repairs the stream.
            let full = from_first_page
                && w.to.signed_duration_since(w.from) >= days(self.config.initial_days);
            let s = self.checkpoint.stream_mut(&name);
            match (kind, &next) {
                (Pass::Main, Some(c)) => {
                    started.iter().for_each(|t| s.observe(*t));
                    // A new pass takes this run's start; a resumed one keeps its own.
                    s.begin_pass(self.ctx);
                    s.cursor = Some(c.clone());
                    s.extra.insert(WINDOW_FROM.into(), json!(fmt(w.from)));
                }
                (Pass::Main, None) => {
                    started.iter().for_each(|t| s.observe(*t));
                    // Ends with the pass's own window; when it was begun by an earlier run,
                    // the caller's follow-up pass covers what changed since.
                    let resumed = s.finish_pass_in(self.ctx);
                    s.extra.remove(WINDOW_FROM);
                    lower_covered_from(s, w.from);
                    if full {
                        s.repair = false;
                        if let Some(total) = total {
                            self.report.source_totals.retain(|t| t.stream != name);
                            self.report.source_totals.push(SourceTotal {
                                stream: name.clone(),
                                kind: RecordKind::Conversation,
                                total,
                            });
                        }
                    }
                    if resumed {
                        tracing::debug!(user = %user.id, "resumed Gong pass finished with its own window");
                    }
                }
                (Pass::Backfill, Some(c)) => {
                    s.extra.insert(BACKFILL_CURSOR.into(), json!(c));
                    s.extra.insert(BACKFILL_FROM.into(), json!(fmt(w.from)));
                    s.extra.insert(BACKFILL_TO.into(), json!(fmt(w.to)));
                }
                (Pass::Backfill, None) => {
                    for k in [BACKFILL_CURSOR, BACKFILL_FROM, BACKFILL_TO] {
                        s.extra.remove(k);
                    }
                    lower_covered_from(s, w.from);
                }
            }
            self.write(sink, batch).await?;
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Decodes and transforms one page; failures are captured with their ids. Returns the
    /// start times of the stored calls (the watermark's source).
    fn transform_page(&self, page: CallsPage) -> (RecordBatch, Vec<DateTime<Utc>>) {
        let ws = self.ctx.workspace_id();
        let mut started = Vec::with_capacity(page.calls.len());
        let batch = capture_page(page.calls, transform::call_id, |raw| {
            let c = transform::decode(raw)
                .and_then(|c| transform::conversation(ws, &c, &self.emails))?;
            started.extend(c.started_at);
            Ok([Record::from(c)])
        });
        (batch, started)
    }

    async fn write(&mut self, sink: &mut dyn RecordSink, batch: RecordBatch) -> Result<()> {
        write_page(
            sink,
            batch,
            &self.checkpoint,
            &mut self.report,
            self.ctx,
            "gong: calls written",
        )
        .await?;
        self.quota_dirty = false;
        Ok(())
    }
}

/// `covered_from` becomes `from` when that reaches further back.
fn lower_covered_from(s: &mut StreamCheckpoint, from: DateTime<Utc>) {
    if extra_time(s, COVERED_FROM).is_none_or(|c| from < c) {
        s.extra.insert(COVERED_FROM.into(), json!(fmt(from)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::quota::next_utc_midnight;
    use chrono::TimeZone;

    #[test]
    fn covered_from_only_moves_back() {
        let t = |d| Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap();
        let mut s = StreamCheckpoint::default();
        lower_covered_from(&mut s, t(10));
        assert_eq!(extra_time(&s, COVERED_FROM), Some(t(10)));
        lower_covered_from(&mut s, t(20));
        assert_eq!(extra_time(&s, COVERED_FROM), Some(t(10)));
        lower_covered_from(&mut s, t(2));
        assert_eq!(s.extra[COVERED_FROM], json!("2024-01-02T00:00:00Z"));
    }

    #[test]
    fn which_errors_stop_the_sync() {
        assert!(stops_the_sync(&Error::RateLimited {
            provider: "gong".into(),
            retry_after: None
        }));
        assert!(stops_the_sync(&Error::QuotaExhausted {
            provider: "gong".into(),
            resets_at: None
        }));
        assert!(stops_the_sync(&Error::Cancelled));
        assert!(!stops_the_sync(&Error::api("gong", 500, "boom")));
        assert!(!stops_the_sync(&Error::decode(None, "bad page")));
        assert!(is_client_error(&Error::api(
            "gong",
            400,
            "cursor is invalid"
        )));
        assert!(!is_client_error(&Error::api("gong", 429, "")));
        assert!(!is_client_error(&Error::api("gong", 503, "")));
    }

    proptest::proptest! {
        #[test]
        fn date_arithmetic_on_any_instant_never_overflows(
            secs in proptest::num::i64::ANY,
            n in 0u32..=u32::MAX,
        ) {
            // Any instant chrono can hold (the checkpoint's range), any day count.
            let t = DateTime::from_timestamp(secs % 8_000_000_000_000, 0)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            for edge in [t, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let b = back(edge, days(n));
                proptest::prop_assert!(b >= earliest());
                proptest::prop_assert!(b <= edge.max(earliest()));
                let _ = floor_secs(b);
                proptest::prop_assert!(next_utc_midnight(edge) >= edge);
            }
        }
    }

    #[test]
    fn old_windows_migrate_to_the_shared_pass_start() {
        let to = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let mut s = StreamCheckpoint {
            cursor: Some("c".into()),
            ..Default::default()
        };
        s.extra
            .insert(WINDOW_FROM.into(), json!("2024-12-01T12:00:00Z"));
        s.extra
            .insert(WINDOW_TO.into(), json!("2025-03-01T12:00:00Z"));
        migrate(&mut s);
        assert_eq!(s.pass_started_at, Some(to));
        assert!(!s.extra.contains_key(WINDOW_TO) && s.extra.contains_key(WINDOW_FROM));
        // No pass in progress: the stale key goes, nothing else changes.
        let mut idle = StreamCheckpoint::default();
        idle.extra.insert(WINDOW_TO.into(), json!("garbage"));
        migrate(&mut idle);
        assert_eq!(idle, StreamCheckpoint::default());
    }

    #[test]
    fn windows_are_whole_seconds() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 9, 30, 15).unwrap()
            + chrono::Duration::milliseconds(750);
        assert_eq!(fmt(floor_secs(t)), "2024-05-01T09:30:15Z");
    }
}
