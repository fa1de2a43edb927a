//! The Gong sync: tracked users, then their calls through `/v2/calls/extensive` by
//! start-time window, **batched**: one request per page of calls for up to
//! [`MAX_PRIMARY_USER_IDS`] users at once (`filter.primaryUserIds` takes a list and filters
//! on the call's host), with the per-user results derived from the calls (a call's host is
//! its `metaData.primaryUserId`).
//!
//! Per-user state stays in one stream per user, `calls:<userId>` ([`StreamCheckpoint`]):
//! - `watermark`: the newest `metaData.started` of the user's calls stored (capped at the
//!   pass's start minus the lag). The extensive endpoint filters on the start time only,
//!   so that is the one usable watermark; calls change after they start, which the overlap
//!   window covers.
//! - `extra.covered_to`: the end of the last finished main pass over the user (its start
//!   minus the lag). An incremental sync reads the user from the later of `watermark` and
//!   `covered_to`, minus the overlap, so a user without recent calls is not read from far
//!   back on every run, and every user of a batch read together shares one window.
//! - `repair`: a full pass over the initial window is due (reconciliation found a gap); it
//!   is cleared when such a pass, begun by this run, finishes.
//! - `extra.covered_from`: every call of the user that started from this instant up to
//!   `covered_to` has been read; backfill walks it further back.
//!
//! A batched pass in progress lives in a stream of its own, `gong:pass:<n>`: its page
//! `cursor`, and the exact filter that cursor belongs to (a Gong cursor is only valid for
//! its query): `extra.users` (the `primaryUserIds` sent), `extra.kind` (`main` or
//! `backfill`), `extra.window_from` and `extra.window_to`, and for a main pass
//! `pass_started_at` (its upper bound, the start of the run that began it). A resumed pass
//! sends the same filter and finishes with its own window; the follow-up pass of the
//! resuming run covers what changed since. The stream is removed when the pass ends.
//! Checkpoints of earlier releases kept one pass per user in `calls:<userId>` (`cursor`,
//! `extra.window_from`, `extra.window_to` or `pass_started_at`, and
//! `extra.backfill_cursor` / `backfill_from` / `backfill_to`); they are migrated into
//! single-user passes when read ([`migrate_checkpoint`]).
//!
//! The company's daily request count lives in the stream [`QUOTA_STREAM`] (`extra.day`, the
//! UTC day, and `extra.used`), so it is committed with every page and survives between
//! runs (see [`DailyQuota`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::GongConfig;
use super::client::GongClient;
use super::transform;
use super::types::{CallsFilter, CallsPage, CallsRequest, ContentSelector, GongUser, id_string};
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

/// The most user ids one request sends in `filter.primaryUserIds`. Gong documents no
/// maximum for the list (the public API spec and SDKs give none); 100 is the size of every
/// Gong page and of the `callIds` batches other integrations send, a conservative bound
/// that keeps a request body small. More tracked users are read in several batches.
pub(crate) const MAX_PRIMARY_USER_IDS: usize = 100;

/// The checkpoint stream holding the company's request count of the day.
pub(crate) const QUOTA_STREAM: &str = "gong:requests";

/// The prefix of the streams holding a batched pass in progress (`gong:pass:<n>`).
pub(crate) const PASS_PREFIX: &str = "gong:pass:";

/// The prefix of the per-user streams.
const USER_PREFIX: &str = "calls:";

/// How often one pass may restart its window after Gong rejects its cursor (expired).
const MAX_CURSOR_RESTARTS: u32 = 2;

const WINDOW_FROM: &str = "window_from";
/// A pass stream's exclusive upper bound; in a `calls:` stream, where earlier releases kept
/// a pass's upper bound (now `pass_started_at`).
const WINDOW_TO: &str = "window_to";
const COVERED_FROM: &str = "covered_from";
const COVERED_TO: &str = "covered_to";
const PASS_USERS: &str = "users";
const PASS_KIND: &str = "kind";
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

impl Pass {
    fn as_str(self) -> &'static str {
        match self {
            Pass::Main => "main",
            Pass::Backfill => "backfill",
        }
    }
}

/// One batched pass: the users of its filter, its window, where it stands, and the stream
/// that holds it while it is in progress.
#[derive(Debug, Clone)]
pub(crate) struct PassSpec {
    kind: Pass,
    /// `primaryUserIds`, in the order sent.
    users: Vec<String>,
    w: Window,
    cursor: Option<String>,
    /// The start of the run that began the pass (a main pass's upper bound and cap).
    started: DateTime<Utc>,
    /// `gong:pass:<n>`.
    stream: String,
}

/// A pass in progress read back from its stream; `None` when the stream is not one.
pub(crate) fn stored_pass(name: &str, s: &StreamCheckpoint) -> Option<PassSpec> {
    let kind = match s.extra.get(PASS_KIND)?.as_str()? {
        "main" => Pass::Main,
        "backfill" => Pass::Backfill,
        _ => return None,
    };
    let users: Vec<String> = s
        .extra
        .get(PASS_USERS)?
        .as_array()?
        .iter()
        .map(|u| id_string(Some(u)))
        .collect::<Option<_>>()?;
    if users.is_empty() || users.len() > MAX_PRIMARY_USER_IDS {
        return None;
    }
    let w = Window {
        from: extra_time(s, WINDOW_FROM)?,
        to: extra_time(s, WINDOW_TO)?,
    };
    let started = match kind {
        Pass::Main => s.pass_started_at?,
        Pass::Backfill => s.pass_started_at.unwrap_or(w.to),
    };
    Some(PassSpec {
        kind,
        users,
        w,
        cursor: Some(s.cursor.clone()?),
        started,
        stream: name.to_owned(),
    })
}

/// Writes a pass in progress into its stream.
fn store_pass(s: &mut StreamCheckpoint, p: &PassSpec) {
    s.cursor = p.cursor.clone();
    s.pass_started_at = Some(p.started);
    s.extra.insert(PASS_KIND.into(), json!(p.kind.as_str()));
    s.extra.insert(PASS_USERS.into(), json!(p.users));
    s.extra.insert(WINDOW_FROM.into(), json!(fmt(p.w.from)));
    s.extra.insert(WINDOW_TO.into(), json!(fmt(p.w.to)));
}

/// The first free `gong:pass:<n>` name.
fn free_pass_name(checkpoint: &Checkpoint) -> String {
    (0u64..)
        .map(|n| format!("{PASS_PREFIX}{n}"))
        .find(|n| !checkpoint.streams.contains_key(n))
        .unwrap_or_else(|| format!("{PASS_PREFIX}x"))
}

/// Moves the per-user passes of an earlier release (a cursor in `calls:<userId>`) into
/// single-user pass streams: their cursors belong to a filter with that one user, so they
/// are resumed with it. A per-user pass missing part of its filter is dropped (its window
/// is read again from the start, as before).
pub(crate) fn migrate_checkpoint(checkpoint: &mut Checkpoint) {
    let users: Vec<String> = checkpoint
        .streams
        .keys()
        .filter(|n| n.starts_with(USER_PREFIX))
        .cloned()
        .collect();
    for name in users {
        let Some(s) = checkpoint.streams.get_mut(&name) else {
            continue;
        };
        migrate(s);
        let user = name[USER_PREFIX.len()..].to_owned();
        let main = match (
            s.cursor.take(),
            extra_time(s, WINDOW_FROM),
            s.pass_started_at,
        ) {
            (Some(c), Some(from), Some(started)) => Some(PassSpec {
                kind: Pass::Main,
                users: vec![user.clone()],
                w: Window {
                    from,
                    to: floor_secs(started),
                },
                cursor: Some(c),
                started,
                stream: String::new(),
            }),
            _ => None,
        };
        s.pass_started_at = None;
        s.extra.remove(WINDOW_FROM);
        let backfill = match (
            s.extra.get(BACKFILL_CURSOR).and_then(Value::as_str),
            extra_time(s, BACKFILL_FROM),
            extra_time(s, BACKFILL_TO),
        ) {
            (Some(c), Some(from), Some(to)) => Some(PassSpec {
                kind: Pass::Backfill,
                users: vec![user.clone()],
                w: Window { from, to },
                cursor: Some(c.to_owned()),
                started: to,
                stream: String::new(),
            }),
            _ => None,
        };
        for k in [BACKFILL_CURSOR, BACKFILL_FROM, BACKFILL_TO] {
            s.extra.remove(k);
        }
        for mut p in main.into_iter().chain(backfill) {
            p.stream = free_pass_name(checkpoint);
            store_pass(checkpoint.stream_mut(&p.stream), &p);
        }
    }
}

/// What one page tells about each host of its calls.
#[derive(Debug, Default)]
struct PageByHost {
    /// Calls per host, as Gong listed them (malformed ones included when their host reads).
    listed: HashMap<String, u64>,
    /// Calls stored per host.
    stored: HashMap<String, u64>,
    /// Calls that failed to transform, per host.
    failed: HashMap<String, u64>,
    /// `(host, metaData.started)` of the stored calls: the watermarks' source.
    started: Vec<(String, DateTime<Utc>)>,
}

/// `metaData.primaryUserId` of a raw call.
fn host_of(raw: &Value) -> Option<String> {
    id_string(raw.get("metaData").and_then(|m| m.get("primaryUserId")))
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
    /// Per tracked user: what this run read.
    stats: BTreeMap<String, UserStats>,
    /// Users whose pass failed this run, with the error; they are left out of later passes.
    failed: BTreeMap<String, String>,
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
        migrate_checkpoint(&mut checkpoint);
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
            stats: BTreeMap::new(),
            failed: BTreeMap::new(),
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
        let mut tracked: Vec<Tracked> = Vec::new();
        for entry in users {
            match entry {
                Resolved::User(u) => tracked.push(u),
                Resolved::Missing(name) => {
                    let e = Error::config(format!(
                        "tracked user {name:?} is not a user of this Gong company"
                    ));
                    self.users_failed += 1;
                    let mut entry = self.user_entry(&name, None);
                    entry.insert("status".into(), json!("failed"));
                    entry.insert("error".into(), json!(e.to_string()));
                    self.by_user.insert(name.clone(), Value::Object(entry));
                    self.record_failures(&[name], &e, sink).await?;
                    first_error.get_or_insert(e);
                }
            }
        }
        for u in &tracked {
            self.stats.insert(u.id.clone(), UserStats::default());
        }
        let ids: Vec<String> = tracked.iter().map(|u| u.id.clone()).collect();
        let start = floor_secs(self.ctx.started_at());
        match mode {
            Mode::Initial => {
                let w = Window {
                    from: back(start, days(self.config.initial_days)),
                    to: start,
                };
                for batch in ids.chunks(MAX_PRIMARY_USER_IDS) {
                    let spec = self.new_pass(Pass::Main, batch.to_vec(), w);
                    self.attempt(spec, sink, &mut first_error).await?;
                }
            }
            Mode::Incremental => {
                self.incremental(&ids, start, sink, &mut first_error)
                    .await?
            }
            Mode::Backfill => {
                // Users never read, or due a repair: the initial window first, so the
                // covered history is one piece reaching up to now.
                let first: Vec<String> = ids
                    .iter()
                    .filter(|u| {
                        self.checkpoint
                            .stream(&stream_name(u))
                            .is_none_or(|s| extra_time(s, COVERED_FROM).is_none() || s.repair)
                    })
                    .cloned()
                    .collect();
                if !first.is_empty() {
                    self.incremental(&first, start, sink, &mut first_error)
                        .await?;
                }
                self.backfill(&ids, start, sink, &mut first_error).await?;
            }
        }
        for u in &tracked {
            let mut entry = self.user_entry(&u.id, u.email.as_deref());
            match self.failed.get(&u.id) {
                Some(e) => {
                    entry.insert("status".into(), json!("failed"));
                    entry.insert("error".into(), json!(e));
                }
                None => {
                    entry.insert("status".into(), json!("completed"));
                }
            }
            self.by_user.insert(u.id.clone(), Value::Object(entry));
        }
        match first_error {
            Some(e) if self.users_failed == self.users_tracked => Err(e),
            _ => Ok(()),
        }
    }

    fn user_entry(&self, id: &str, email: Option<&str>) -> Map<String, Value> {
        let stats = self.stats.get(id);
        let mut entry = Map::new();
        entry.insert("email".into(), json!(email));
        entry.insert("calls".into(), json!(stats.map_or(0, |s| s.calls)));
        entry.insert(
            "failed_records".into(),
            json!(stats.map_or(0, |s| s.failed)),
        );
        entry.insert("pages".into(), json!(stats.map_or(0, |s| s.pages)));
        if let Some(s) = self.checkpoint.stream(&stream_name(id)) {
            entry.insert("watermark".into(), json!(s.watermark));
            if let Some(c) = s.extra.get(COVERED_FROM) {
                entry.insert("covered_from".into(), c.clone());
            }
        }
        entry
    }

    /// Records failed users as failures the sync log keeps (`user:<id>`).
    async fn record_failures(
        &mut self,
        ids: &[String],
        error: &Error,
        sink: &mut dyn RecordSink,
    ) -> Result<()> {
        let batch = RecordBatch {
            failures: ids
                .iter()
                .map(|id| {
                    RecordFailure::new(
                        Some(format!("user:{id}")),
                        format!("gong user {id}: {error}"),
                    )
                })
                .collect(),
            ..Default::default()
        };
        sink.write(batch, &self.checkpoint).await?;
        self.quota_dirty = false;
        Ok(())
    }

    /// A new pass over `users` and `w`, begun by this run.
    fn new_pass(&self, kind: Pass, users: Vec<String>, w: Window) -> PassSpec {
        PassSpec {
            kind,
            users,
            w,
            cursor: None,
            started: self.ctx.started_at(),
            stream: free_pass_name(&self.checkpoint),
        }
    }

    /// Runs one pass. An error that stops the sync is returned; any other fails the pass's
    /// users (recorded in `by_user` and as `user:<id>` failures) and the others go on.
    async fn attempt(
        &mut self,
        spec: PassSpec,
        sink: &mut dyn RecordSink,
        first_error: &mut Option<Error>,
    ) -> Result<()> {
        let users = spec.users.clone();
        let span = tracing::info_span!("gong_pass", kind = spec.kind.as_str(), users = users.len());
        match self.pass(spec, sink).instrument(span).await {
            Ok(()) => Ok(()),
            Err(e) if stops_the_sync(&e) => Err(e),
            Err(e) => {
                tracing::warn!(users = users.len(), error = %e, "gong pass failed; its users fail, the others go on");
                for u in &users {
                    if self.failed.insert(u.clone(), e.to_string()).is_none() {
                        self.users_failed += 1;
                    }
                }
                self.record_failures(&users, &e, sink).await?;
                first_error.get_or_insert(e);
                Ok(())
            }
        }
    }

    /// The stored passes of `kind` whose users are all in `ids` and none failed this run.
    /// Passes naming a user no longer tracked are dropped: their cursor cannot be used
    /// without reading that user, and their tracked users' windows are read afresh.
    fn stored_passes(&mut self, kind: Pass, ids: &[String]) -> Vec<PassSpec> {
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let tracked: BTreeSet<&String> = self.stats.keys().collect();
        let mut out = Vec::new();
        let mut drop = Vec::new();
        for (name, s) in &self.checkpoint.streams {
            if !name.starts_with(PASS_PREFIX) {
                continue;
            }
            let Some(p) = stored_pass(name, s) else {
                drop.push(name.clone());
                continue;
            };
            if !p.users.iter().all(|u| tracked.contains(u)) {
                drop.push(name.clone());
            } else if p.kind == kind
                && p.users
                    .iter()
                    .all(|u| wanted.contains(u.as_str()) && !self.failed.contains_key(u))
            {
                out.push(p);
            }
        }
        for name in drop {
            tracing::debug!(stream = %name, "dropping a Gong pass no longer resumable");
            self.checkpoint.streams.remove(&name);
        }
        out
    }

    /// Finishes the interrupted main passes of `ids` (same filter, stored cursor), then
    /// reads each user from the later of its watermark and `covered_to`, minus the overlap
    /// (the initial window for a user never read or due a repair), up to the sync's start:
    /// users with the same window are read together, [`MAX_PRIMARY_USER_IDS`] a request.
    async fn incremental(
        &mut self,
        ids: &[String],
        start: DateTime<Utc>,
        sink: &mut dyn RecordSink,
        first_error: &mut Option<Error>,
    ) -> Result<()> {
        for p in self.stored_passes(Pass::Main, ids) {
            self.attempt(p, sink, first_error).await?;
        }
        let full = back(start, days(self.config.initial_days));
        let mut groups: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
        for u in ids {
            if self.failed.contains_key(u) {
                continue;
            }
            let from = match self.checkpoint.stream(&stream_name(u)) {
                None => full,
                Some(s) => {
                    let from = match s.watermark.max(extra_time(s, COVERED_TO)) {
                        Some(t) => floor_secs(back(t, days(self.config.overlap_days))),
                        None => full,
                    };
                    // A repairing pass reads the whole initial window.
                    if s.repair { from.min(full) } else { from }
                }
            };
            if from < start {
                groups.entry(from).or_default().push(u.clone());
            }
        }
        for (from, users) in groups {
            for batch in users.chunks(MAX_PRIMARY_USER_IDS) {
                let spec = self.new_pass(Pass::Main, batch.to_vec(), Window { from, to: start });
                self.attempt(spec, sink, first_error).await?;
            }
        }
        Ok(())
    }

    /// Walks the history of `ids` back from their `covered_from` in 30-day slices down to
    /// `backfill_days` before the sync's start, resuming slices in progress first; users
    /// covered from the same instant are read together.
    async fn backfill(
        &mut self,
        ids: &[String],
        start: DateTime<Utc>,
        sink: &mut dyn RecordSink,
        first_error: &mut Option<Error>,
    ) -> Result<()> {
        for p in self.stored_passes(Pass::Backfill, ids) {
            self.attempt(p, sink, first_error).await?;
        }
        let horizon = back(start, days(self.config.backfill_days));
        loop {
            let mut groups: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
            for u in ids {
                if self.failed.contains_key(u) {
                    continue;
                }
                let covered = self
                    .checkpoint
                    .stream(&stream_name(u))
                    .and_then(|s| extra_time(s, COVERED_FROM))
                    .unwrap_or_else(|| back(start, days(self.config.initial_days)));
                if covered > horizon {
                    groups.entry(covered).or_default().push(u.clone());
                }
            }
            // The group reaching least far back first; one slice each round.
            let Some((covered, users)) = groups.pop_last() else {
                return Ok(());
            };
            let from = back(covered, chrono::Duration::days(BACKFILL_SLICE_DAYS)).max(horizon);
            for batch in users.chunks(MAX_PRIMARY_USER_IDS) {
                let spec =
                    self.new_pass(Pass::Backfill, batch.to_vec(), Window { from, to: covered });
                let before = self.failed.len();
                self.attempt(spec, sink, first_error).await?;
                if self.failed.len() > before {
                    continue;
                }
                let stuck: Vec<String> = batch
                    .iter()
                    .filter(|u| {
                        self.checkpoint
                            .stream(&stream_name(u))
                            .and_then(|s| extra_time(s, COVERED_FROM))
                            .is_none_or(|c| c > from)
                    })
                    .cloned()
                    .collect();
                if !stuck.is_empty() {
                    let e = Error::decode(
                        None,
                        "gong backfill did not advance; stopping instead of looping",
                    );
                    for u in &stuck {
                        if self.failed.insert(u.clone(), e.to_string()).is_none() {
                            self.users_failed += 1;
                        }
                    }
                    self.record_failures(&stuck, &e, sink).await?;
                    first_error.get_or_insert(e);
                }
            }
        }
    }

    /// Reads one window of a batch of users' calls page by page, one checkpoint per page.
    async fn pass(&mut self, mut p: PassSpec, sink: &mut dyn RecordSink) -> Result<()> {
        let members: BTreeSet<String> = p.users.iter().cloned().collect();
        // Whether this run read the window from its first page (the calls it read are then
        // exactly those matching the filter), and what it read per host.
        let mut from_first_page = p.cursor.is_none();
        let mut listed: HashMap<String, u64> = HashMap::new();
        // Gong's `records.totalRecords` for the whole filter (every host of the batch).
        let mut total: Option<u64> = None;
        let mut restarts = 0;
        loop {
            self.ctx.check_cancelled()?;
            let req = CallsRequest {
                cursor: p.cursor.as_deref(),
                filter: CallsFilter {
                    from_date_time: fmt(p.w.from),
                    to_date_time: fmt(p.w.to),
                    primary_user_ids: p.users.iter().map(String::as_str).collect(),
                    workspace_id: self.config.workspace_id.as_deref(),
                },
                content_selector: ContentSelector::default(),
            };
            let client = self.client;
            let page = match self.counted(client.calls_page(&req)).await {
                Ok(page) => page,
                Err(e) if may_restart(&e, p.cursor.as_deref(), restarts) => {
                    // A cursor Gong no longer accepts (stored by an earlier run, or expired
                    // during this pass): read the window again from its start. Calls already
                    // stored are left alone by the store.
                    tracing::warn!(users = p.users.len(), error = %e, "Gong cursor rejected; restarting the window");
                    restarts += 1;
                    p.cursor = None;
                    from_first_page = true;
                    listed.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            total = page.total().or(total);
            let next = page.next_cursor().map(str::to_owned);
            if next.is_some() && next == p.cursor {
                return Err(Error::decode(
                    None,
                    "Gong returned the same calls cursor twice; stopping instead of looping",
                ));
            }
            let (batch, by_host) = self.transform_page(page);
            for u in &p.users {
                if let Some(s) = self.stats.get_mut(u) {
                    s.pages += 1;
                }
            }
            for (host, n) in &by_host.stored {
                if let Some(s) = self.stats.get_mut(host) {
                    s.calls += n;
                }
            }
            for (host, n) in &by_host.failed {
                if let Some(s) = self.stats.get_mut(host) {
                    s.failed += n;
                }
            }
            for (host, n) in by_host.listed {
                *listed.entry(host).or_default() += n;
            }
            if p.kind == Pass::Main {
                for (host, t) in &by_host.started {
                    if members.contains(host) {
                        self.checkpoint.stream_mut(&stream_name(host)).observe(*t);
                    }
                }
            }
            match &next {
                Some(c) => {
                    p.cursor = Some(c.clone());
                    store_pass(self.checkpoint.stream_mut(&p.stream), &p);
                }
                None => {
                    self.checkpoint.streams.remove(&p.stream);
                    if from_first_page
                        && let Some(t) = total
                        && t != listed.values().sum::<u64>()
                    {
                        // Calls added or removed while the pass paged: reconciliation
                        // allows for what was in flight.
                        tracing::debug!(
                            gong_total = t,
                            "Gong's total differs from the calls listed"
                        );
                    }
                    self.finish(&p, from_first_page, &listed);
                }
            }
            self.write(sink, batch).await?;
            match next {
                Some(_) => {}
                None => return Ok(()),
            }
        }
    }

    /// Ends a pass for each of its users: a main pass moves the watermark (capped at its
    /// own start minus the lag) and `covered_to`; both kinds lower `covered_from`. A main
    /// pass over the whole initial window read from its first page by this run clears
    /// `repair` and reports each user's total: the calls Gong listed for that host.
    fn finish(&mut self, p: &PassSpec, from_first_page: bool, listed: &HashMap<String, u64>) {
        let full = p.kind == Pass::Main
            && from_first_page
            && p.w.to.signed_duration_since(p.w.from) >= days(self.config.initial_days);
        let cap = self.ctx.cap_for(p.started);
        let resumed = p.started < self.ctx.started_at();
        for u in &p.users {
            let name = stream_name(u);
            let s = self.checkpoint.stream_mut(&name);
            if p.kind == Pass::Main {
                s.finish_pass(cap);
                if extra_time(s, COVERED_TO).is_none_or(|c| cap > c) {
                    s.extra.insert(COVERED_TO.into(), json!(fmt(cap)));
                }
            }
            lower_covered_from(s, p.w.from);
            if full {
                s.repair = false;
                self.report.source_totals.retain(|t| t.stream != name);
                self.report.source_totals.push(SourceTotal {
                    stream: name,
                    kind: RecordKind::Conversation,
                    total: listed.get(u).copied().unwrap_or(0),
                });
            }
        }
        if resumed {
            tracing::debug!(
                users = p.users.len(),
                "resumed Gong pass finished with its own window"
            );
        }
    }

    /// Decodes and transforms one page; failures are captured with their ids. Returns what
    /// the page tells per host (counts, and the start times that feed the watermarks).
    fn transform_page(&self, page: CallsPage) -> (RecordBatch, PageByHost) {
        let ws = self.ctx.workspace_id();
        let mut by_host = PageByHost::default();
        let mut host_by_call: HashMap<String, String> = HashMap::new();
        for raw in &page.calls {
            if let Some(host) = host_of(raw) {
                *by_host.listed.entry(host.clone()).or_default() += 1;
                if let Some(id) = transform::call_id(raw) {
                    host_by_call.insert(id, host);
                }
            }
        }
        let mut started = Vec::with_capacity(page.calls.len());
        let batch = capture_page(page.calls, transform::call_id, |raw| {
            let host = host_of(&raw);
            let c = transform::decode(raw)
                .and_then(|c| transform::conversation(ws, &c, &self.emails))?;
            if let Some(host) = host {
                if let Some(t) = c.started_at {
                    started.push((host.clone(), t));
                }
                *by_host.stored.entry(host).or_default() += 1;
            }
            Ok([Record::from(c)])
        });
        by_host.started = started;
        for f in &batch.failures {
            if let Some(host) = f.record_id.as_ref().and_then(|id| host_by_call.get(id)) {
                *by_host.failed.entry(host.clone()).or_default() += 1;
            }
        }
        (batch, by_host)
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
    fn old_per_user_passes_become_single_user_pass_streams() {
        let started = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let mut cp = Checkpoint::default();
        let s = cp.stream_mut("calls:42");
        s.watermark = Some(started - chrono::Duration::days(1));
        s.cursor = Some("main-cursor".into());
        s.extra
            .insert(WINDOW_FROM.into(), json!("2024-12-01T12:00:00Z"));
        s.extra
            .insert(WINDOW_TO.into(), json!("2025-03-01T12:00:00Z"));
        s.extra.insert(BACKFILL_CURSOR.into(), json!("back-cursor"));
        s.extra
            .insert(BACKFILL_FROM.into(), json!("2024-10-01T12:00:00Z"));
        s.extra
            .insert(BACKFILL_TO.into(), json!("2024-11-01T12:00:00Z"));
        s.extra
            .insert(COVERED_FROM.into(), json!("2024-11-01T12:00:00Z"));
        migrate_checkpoint(&mut cp);
        let user = cp.stream("calls:42").unwrap();
        assert_eq!((&user.cursor, user.pass_started_at), (&None, None));
        assert_eq!(
            user.extra.keys().collect::<Vec<_>>(),
            [COVERED_FROM],
            "only the user's own state stays"
        );
        assert_eq!(user.watermark, Some(started - chrono::Duration::days(1)));
        let main = stored_pass("gong:pass:0", cp.stream("gong:pass:0").unwrap()).unwrap();
        assert_eq!(main.kind, Pass::Main);
        assert_eq!(main.users, ["42"]);
        assert_eq!(main.cursor.as_deref(), Some("main-cursor"));
        assert_eq!(main.started, started);
        assert_eq!(fmt(main.w.from), "2024-12-01T12:00:00Z");
        assert_eq!(main.w.to, started);
        let back = stored_pass("gong:pass:1", cp.stream("gong:pass:1").unwrap()).unwrap();
        assert_eq!(back.kind, Pass::Backfill);
        assert_eq!(back.cursor.as_deref(), Some("back-cursor"));
        assert_eq!(fmt(back.w.from), "2024-10-01T12:00:00Z");
        assert_eq!(fmt(back.w.to), "2024-11-01T12:00:00Z");
        // Migrating again changes nothing.
        let again = {
            let mut c = cp.clone();
            migrate_checkpoint(&mut c);
            c
        };
        assert_eq!(again, cp);
    }

    #[test]
    fn windows_are_whole_seconds() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 9, 30, 15).unwrap()
            + chrono::Duration::milliseconds(750);
        assert_eq!(fmt(floor_secs(t)), "2024-05-01T09:30:15Z");
    }
}
