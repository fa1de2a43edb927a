//! Fireflies.ai simulator: `POST /graphql` over the real schema subset (`transcripts`,
//! `transcript(id)`, `user`, `users`).
//!
//! Follows `reference/provider-apis.md` sections 3, 7 and 10: documents are parsed with a
//! real GraphQL parser (variables, inline arguments, aliases, fragments) and validated like
//! Apollo Server (HTTP 400 `GRAPHQL_VALIDATION_FAILED` for unknown fields or arguments and
//! wrong variable types); `Authorization: Bearer <api key>` with `auth_failed` answered as
//! HTTP 200 or 401; `transcripts` newest first with `limit` ≤ 50 (`invalid_arguments`
//! above), `skip` as a plain offset, `fromDate`/`toDate` (both inclusive) on the
//! transcript's `date` (epoch milliseconds, a Float), `duration` in minutes; the per-minute
//! and per-day limits answered with `too_many_requests` and
//! `extensions.metadata.retryAfter` (epoch milliseconds) as HTTP 429 or as a GraphQL error
//! on HTTP 200.
//!
//! Seeded transcripts are generated from the seed and their index (transcript `j` of `n`
//! lies in the `j`-th of `n` slots of the last `days` days, so dates grow with the index
//! and a date range maps to an index range by binary search); only mutations are stored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::post;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::fireflies_gql::{self, RootField};
use super::{
    Common, FaultConfig, Injected, RequestCounters, SimLimiter, SimServer, decide,
    dropped_response, lock, mix,
};

/// The largest `limit` `transcripts` accepts.
pub const FIREFLIES_MAX_LIMIT: i64 = 50;

/// How a rejection (`auth_failed`, `too_many_requests`) is answered: Fireflies sends
/// GraphQL errors with HTTP 200 and also with the matching HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirefliesErrorForm {
    /// HTTP 401 / 429 with the GraphQL error body.
    HttpStatus,
    /// HTTP 200 with the GraphQL error body.
    Http200,
    /// Each rejection picks one of the two (deterministic from the request's number).
    #[default]
    Alternate,
}

/// Configuration of a [`FirefliesSim`].
#[derive(Debug, Clone)]
pub struct FirefliesSimConfig {
    /// Seed of the generated data and of fault decisions.
    pub seed: u64,
    /// Team users (the first owns the API key).
    pub users: u64,
    /// Seeded transcripts.
    pub transcripts: u64,
    /// Seeded transcripts lie in the last `days` days before `now` (at least 1).
    pub days: u32,
    /// This many seeded transcripts, from the middle of the history, share one identical
    /// `date` (0: none).
    pub same_instant: u64,
    /// The instant seeded transcripts lead up to (default: now, whole seconds).
    pub now: DateTime<Utc>,
    /// Email domain of the team's users.
    pub internal_domain: String,
    /// Email domains of external guests; empty: generated `<company>.example.com` domains.
    pub external_domains: Vec<String>,
    /// The API key accepted as `Authorization: Bearer …`.
    pub api_key: String,
    /// Whether the per-minute limit is enforced.
    pub rate_limits: bool,
    /// Requests per `rate_window` (Business/Enterprise: 60 a minute).
    pub rate_max: u32,
    /// The rate window.
    pub rate_window: Duration,
    /// Requests per UTC day (Free/Pro: 50); `None`: no daily limit.
    pub daily_limit: Option<u32>,
    /// How long the `retryAfter` of an injected `too_many_requests` lies ahead.
    pub retry_after: Duration,
    /// How `auth_failed` and `too_many_requests` are answered.
    pub error_form: FirefliesErrorForm,
    /// Injected faults.
    pub faults: FaultConfig,
}

impl Default for FirefliesSimConfig {
    fn default() -> Self {
        let now = Utc::now();
        FirefliesSimConfig {
            seed: 7,
            users: 4,
            transcripts: 600,
            days: 180,
            same_instant: 0,
            now: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
            internal_domain: "pandora-demo.example".into(),
            external_domains: Vec::new(),
            api_key: "sim-fireflies-api-key".into(),
            rate_limits: true,
            rate_max: 60,
            rate_window: Duration::from_secs(60),
            daily_limit: None,
            retry_after: Duration::from_secs(1),
            error_form: FirefliesErrorForm::default(),
            faults: FaultConfig::default(),
        }
    }
}

/// A team member (`users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirefliesSimUser {
    /// `user_id`.
    pub user_id: String,
    /// `email`.
    pub email: String,
    /// `name`.
    pub name: String,
}

/// One `meeting_attendees[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirefliesSimAttendee {
    /// `displayName`.
    pub display_name: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
}

/// One `sentences[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FirefliesSimSentence {
    /// `speaker_name`.
    pub speaker_name: String,
    /// `text`.
    pub text: String,
    /// `start_time` in seconds.
    pub start_time: f64,
    /// `end_time` in seconds.
    pub end_time: f64,
}

/// A finished summary (`summary`); while it is processing every field is `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirefliesSimSummary {
    /// `overview`.
    pub overview: String,
    /// `short_summary`.
    pub short_summary: String,
    /// `keywords`.
    pub keywords: Vec<String>,
    /// `action_items` (a string, as Pipedream reads it).
    pub action_items: String,
}

/// A transcript as the simulator holds it (the truth the connector's result is compared
/// with).
#[derive(Debug, Clone, PartialEq)]
pub struct FirefliesSimTranscript {
    /// `id` (26 characters, ULID-like).
    pub id: String,
    /// `title`.
    pub title: String,
    /// `date`: when the meeting took place (whole milliseconds); what `fromDate` and
    /// `toDate` filter on.
    pub date: DateTime<Utc>,
    /// `duration` in minutes (fractional).
    pub duration_minutes: f64,
    /// `organizer_email` (and the deprecated `host_email`).
    pub organizer_email: String,
    /// `participants`: emails.
    pub participants: Vec<String>,
    /// `meeting_attendees` (may be empty: then only `participants` name the people).
    pub attendees: Vec<FirefliesSimAttendee>,
    /// `fireflies_users`: the team's users among the participants.
    pub fireflies_users: Vec<String>,
    /// `summary`: `None` while it is processing.
    pub summary: Option<FirefliesSimSummary>,
    /// `sentences`.
    pub sentences: Vec<FirefliesSimSentence>,
    /// `transcript_url`.
    pub transcript_url: String,
    /// Whether the transcript is listed: a transcript still being processed is not.
    pub processed: bool,
}

/// A transcript to add with [`FirefliesSimHandle::add_transcript`]; unset fields are generated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFirefliesTranscript {
    /// When the meeting took place.
    pub date: DateTime<Utc>,
    /// Title (generated when `None`).
    pub title: Option<String>,
    /// Whether it is listed at once (`false`: still processing; see
    /// [`FirefliesSimHandle::finish_processing`]).
    pub processed: bool,
    /// Whether its summary is finished.
    pub summary_ready: bool,
}

impl NewFirefliesTranscript {
    /// A processed transcript with a finished summary at `date`.
    pub fn at(date: DateTime<Utc>) -> Self {
        NewFirefliesTranscript {
            date,
            title: None,
            processed: true,
            summary_ready: true,
        }
    }
}

/// A hook run after each `transcripts` request is answered (to mutate between pages).
type AfterHook = Box<dyn Fn(u64, &FirefliesSimHandle) + Send + Sync>;

#[derive(Default)]
struct Data {
    /// Transcripts added after start (indexes `seeded + 1 ..`).
    extra: u64,
    /// Changed and added transcripts.
    stored: BTreeMap<u64, FirefliesSimTranscript>,
    /// Deleted transcripts.
    deleted: BTreeSet<u64>,
    /// Requests counted against the daily limit, and their UTC day.
    day: Option<chrono::NaiveDate>,
    day_used: u64,
}

struct Inner {
    cfg: FirefliesSimConfig,
    common: Arc<Common>,
    per_window: SimLimiter,
    span_ms: i64,
    data: Mutex<Data>,
    transcripts_requests: AtomicU64,
    after: Mutex<Option<Arc<AfterHook>>>,
    /// The `(fromDate, toDate, skip, limit)` of every `transcripts` field served.
    log: Mutex<Vec<TranscriptsArgs>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirefliesSim")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The arguments of one `transcripts` field as served (for tests to assert the paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptsArgs {
    /// `fromDate`.
    pub from: Option<DateTime<Utc>>,
    /// `toDate`.
    pub to: Option<DateTime<Utc>>,
    /// `skip`.
    pub skip: u64,
    /// `limit`.
    pub limit: u64,
    /// Transcripts returned.
    pub returned: u64,
}

/// A handle on the simulator's data: the mutation API, usable from a hook between pages.
#[derive(Debug, Clone)]
pub struct FirefliesSimHandle {
    inner: Arc<Inner>,
}

/// A fake Fireflies.ai team on loopback.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use pandora_sync::simulator::{FirefliesSim, FirefliesSimConfig};
///
/// let sim = FirefliesSim::start(FirefliesSimConfig { transcripts: 30, ..Default::default() }).await?;
/// assert_eq!(sim.transcripts().len(), 30);
/// assert!(sim.base_url().starts_with("http://127.0.0.1:"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FirefliesSim {
    handle: FirefliesSimHandle,
    server: SimServer,
}

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Edsger", "Margaret", "Ken", "Radia", "Donald",
    "Frances", "Tim",
];
const LAST: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Dijkstra", "Hamilton", "Thompson",
    "Perlman", "Knuth", "Allen", "Lee",
];
const COMPANIES: [&str; 12] = [
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell",
    "Soylent", "Aperture", "Vandelay",
];
const TOPICS: [&str; 8] = [
    "Discovery call",
    "Product demo",
    "Pricing review",
    "Technical deep dive",
    "Quarterly business review",
    "Renewal",
    "Onboarding",
    "Weekly sync",
];
const WORDS: [&str; 10] = [
    "pricing",
    "security",
    "rollout",
    "integration",
    "budget",
    "timeline",
    "renewal",
    "SSO",
    "migration",
    "onboarding",
];
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[usize::try_from(h % list.len() as u64).unwrap_or(0)]
}

fn crockford(mut n: u64, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[usize::try_from(n % 32).unwrap_or(0)];
        n /= 32;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `01H` + 9 characters of the index + 14 of a hash: 26 characters, unique per index.
fn transcript_id(index: u64, h: u64) -> String {
    format!("01H{}{}", crockford(index, 9), crockford(h, 14))
}

fn index_of(id: &str) -> Option<u64> {
    let digits = id.get(3..12)?;
    let mut n: u64 = 0;
    for b in digits.bytes() {
        let d = CROCKFORD.iter().position(|c| *c == b)?;
        n = n.checked_mul(32)?.checked_add(u64::try_from(d).ok()?)?;
    }
    (id.len() == 26).then_some(n)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Whole milliseconds as a JSON number (Fireflies' `date` is a Float).
fn ms_json(t: DateTime<Utc>) -> Value {
    json!(ms(t))
}

/// What a `transcripts` request filters on.
#[derive(Debug, Default)]
struct Filter {
    from: Option<i64>,
    to: Option<i64>,
    keyword: Option<String>,
    organizers: Option<Vec<String>>,
    participants: Option<Vec<String>>,
    nothing: bool,
}

impl Filter {
    fn date_ok(&self, date: i64) -> bool {
        self.from.is_none_or(|f| date >= f) && self.to.is_none_or(|t| date <= t)
    }

    fn matches(&self, t: &FirefliesSimTranscript) -> bool {
        if self.nothing || !t.processed || !self.date_ok(ms(t.date)) {
            return false;
        }
        let lower = |s: &str| s.to_lowercase();
        if let Some(k) = &self.keyword
            && !lower(&t.title).contains(&lower(k))
        {
            return false;
        }
        if let Some(o) = &self.organizers
            && !o.iter().any(|e| lower(e) == lower(&t.organizer_email))
        {
            return false;
        }
        if let Some(p) = &self.participants
            && !p
                .iter()
                .any(|e| t.participants.iter().any(|x| lower(x) == lower(e)))
        {
            return false;
        }
        true
    }
}

/// An application error (`errors[]` entry) as Fireflies writes it.
fn app_error(code: &str, status: u16, message: &str, metadata: Value) -> Value {
    json!({
        "message": message,
        "code": code,
        "friendly": true,
        "extensions": {
            "code": code,
            "status": status,
            "helpUrls": [format!("https://docs.fireflies.ai/miscellaneous/error-codes#{code}")],
            "metadata": metadata,
        }
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn next_utc_midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(t, |d| d.and_utc())
}

impl Inner {
    fn h(&self, salt: u64, index: u64, k: u64) -> u64 {
        mix(self.cfg.seed, salt * 1_000 + k, index)
    }

    fn seeded(&self) -> u64 {
        self.cfg.transcripts
    }

    fn user(&self, i: u64) -> FirefliesSimUser {
        let first = pick(&FIRST, self.h(1, i, 1));
        let last = pick(&LAST, self.h(1, i, 2));
        FirefliesSimUser {
            user_id: crockford(self.h(1, i, 3), 26),
            email: format!(
                "{}.{}{i}@{}",
                first.to_lowercase(),
                last.to_lowercase(),
                self.cfg.internal_domain
            ),
            name: format!("{first} {last}"),
        }
    }

    fn users(&self) -> Vec<FirefliesSimUser> {
        (1..=self.cfg.users.max(1)).map(|i| self.user(i)).collect()
    }

    /// The tie block: seeded indexes `[start, start + n)` share the date of `start`.
    fn tie(&self) -> Option<(u64, u64)> {
        let n = self.cfg.same_instant.min(self.seeded());
        (n > 1).then(|| {
            let start = (self.seeded() - n) / 2 + 1;
            (start, n)
        })
    }

    /// The date of seeded transcript `j`, non-decreasing in `j`.
    fn seeded_date(&self, j: u64) -> i64 {
        let j = match self.tie() {
            Some((start, n)) if j >= start && j < start + n => start,
            _ => j,
        };
        let n = i128::from(self.seeded().max(1));
        let span = i128::from(self.span_ms);
        let slot = |k: u64| i64::try_from(i128::from(k) * span / n).unwrap_or(i64::MAX);
        let (lo, hi) = (slot(j - 1), slot(j));
        let width = u64::try_from(hi - lo).unwrap_or(0);
        let jitter = if width > 0 {
            i64::try_from(self.h(2, j, 0) % width).unwrap_or(0)
        } else {
            0
        };
        ms(self.cfg.now) - self.span_ms + lo + jitter
    }

    fn synth(
        &self,
        j: u64,
        date: i64,
        title: Option<String>,
        summary_ready: bool,
    ) -> FirefliesSimTranscript {
        let h = |k| self.h(3, j, k);
        let id = transcript_id(j, h(0));
        let company = pick(&COMPANIES, h(1));
        let domain = if self.cfg.external_domains.is_empty() {
            format!("{}.example.com", company.to_lowercase())
        } else {
            let domains: Vec<&str> = self
                .cfg
                .external_domains
                .iter()
                .map(String::as_str)
                .collect();
            pick(&domains, h(1)).to_owned()
        };
        let users = self.cfg.users.max(1);
        let host = self.user(1 + h(2) % users);
        let mut participants = vec![host.email.clone()];
        let mut attendees = vec![FirefliesSimAttendee {
            display_name: Some(host.name.clone()),
            email: Some(host.email.clone()),
            name: Some(host.name.clone()),
        }];
        let mut ff_users = vec![host.email.clone()];
        if users > 1 && h(3).is_multiple_of(3) {
            let other = self.user(1 + h(4) % users);
            if other.email != host.email {
                // Upper-cased domain: internal domains are compared case-insensitively.
                let email = match other.email.split_once('@') {
                    Some((l, d)) if h(5).is_multiple_of(2) => format!("{l}@{}", d.to_uppercase()),
                    _ => other.email.clone(),
                };
                participants.push(email.clone());
                ff_users.push(other.email.clone());
                attendees.push(FirefliesSimAttendee {
                    display_name: Some(other.name.clone()),
                    email: Some(email),
                    name: Some(other.name.clone()),
                });
            }
        }
        let guests = h(6) % 4;
        for k in 0..guests {
            let first = pick(&FIRST, self.h(3, j, 20 + k));
            let last = pick(&LAST, self.h(3, j, 30 + k));
            let email = if self.h(3, j, 40 + k).is_multiple_of(9) {
                format!(
                    "{}.{}{k}@gmail.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                )
            } else {
                format!("{}.{}@{domain}", first.to_lowercase(), last.to_lowercase())
            };
            if participants.contains(&email) {
                continue;
            }
            participants.push(email.clone());
            attendees.push(FirefliesSimAttendee {
                display_name: Some(format!("{first} {last}")),
                email: Some(email),
                name: Some(format!("{first} {last}")),
            });
        }
        // Some meetings have no attendee list (calendar not connected): participants only.
        if h(7).is_multiple_of(7) {
            attendees.clear();
        }
        let topic = pick(&TOPICS, h(8));
        let keywords: Vec<String> = (0..1 + h(9) % 3)
            .map(|k| pick(&WORDS, self.h(3, j, 50 + k)).to_owned())
            .collect();
        let summary = summary_ready.then(|| FirefliesSimSummary {
            overview: format!("{company} and the team discussed {}.", keywords.join(", ")),
            short_summary: format!("{topic} with {company}"),
            keywords: keywords.clone(),
            action_items: format!("Send the {} follow-up to {company}", keywords[0]),
        });
        let speakers: Vec<String> = attendees
            .iter()
            .filter_map(|a| a.name.clone())
            .chain(std::iter::once(host.name.clone()))
            .collect();
        let sentences = (0..2 + h(10) % 4)
            .map(|k| {
                let start = f64::from(u32::try_from(k * 7).unwrap_or(0)) + 0.5;
                FirefliesSimSentence {
                    speaker_name: speakers[usize::try_from(k).unwrap_or(0) % speakers.len()]
                        .clone(),
                    text: format!("Let us talk about {}.", pick(&WORDS, self.h(3, j, 60 + k))),
                    start_time: start,
                    end_time: start + 6.25,
                }
            })
            .collect();
        let minutes = u32::try_from(5 + h(11) % 85).unwrap_or(30);
        let quarter = u32::try_from(h(12) % 4).unwrap_or(0);
        FirefliesSimTranscript {
            transcript_url: format!(
                "https://app.fireflies.ai/view/{}::{id}",
                topic.replace(' ', "-")
            ),
            id,
            title: title.unwrap_or_else(|| format!("{company}: {topic}")),
            date: from_ms(date),
            duration_minutes: f64::from(minutes) + f64::from(quarter) * 0.25,
            organizer_email: host.email,
            participants,
            attendees,
            fireflies_users: ff_users,
            summary,
            sentences,
            processed: true,
        }
    }

    fn transcript_at(&self, data: &Data, j: u64) -> Option<FirefliesSimTranscript> {
        if j == 0 || j > self.seeded() + data.extra || data.deleted.contains(&j) {
            return None;
        }
        if let Some(t) = data.stored.get(&j) {
            return Some(t.clone());
        }
        (j <= self.seeded()).then(|| self.synth(j, self.seeded_date(j), None, true))
    }

    /// The first seeded index whose date is at least `from` (or `seeded + 1`).
    fn first_at_or_after(&self, from: i64) -> u64 {
        let (mut lo, mut hi) = (1, self.seeded() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.seeded_date(mid) >= from {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The transcripts matching `f`, newest first (ties: the later index first), after
    /// skipping `skip`, at most `limit`.
    fn list(&self, data: &Data, f: &Filter, skip: u64, limit: u64) -> Vec<FirefliesSimTranscript> {
        let mut stored: Vec<(i64, u64)> = data
            .stored
            .iter()
            .filter(|(j, t)| !data.deleted.contains(j) && f.matches(t))
            .map(|(j, t)| (ms(t.date), *j))
            .collect();
        stored.sort_unstable_by(|a, b| b.cmp(a));
        let mut stored = stored.into_iter().peekable();
        // Seeded, unchanged: walk down from the newest index the `toDate` admits.
        let lo = f.from.map_or(1, |from| self.first_at_or_after(from));
        let mut j = match f.to {
            Some(to) => self
                .first_at_or_after(to.saturating_add(1))
                .saturating_sub(1),
            None => self.seeded(),
        };
        let mut next_seeded = || -> Option<(i64, u64)> {
            while j >= lo.max(1) {
                let cur = j;
                j -= 1;
                if data.stored.contains_key(&cur) || data.deleted.contains(&cur) {
                    continue;
                }
                let date = self.seeded_date(cur);
                if (f.keyword.is_some() || f.organizers.is_some() || f.participants.is_some())
                    && !f.matches(&self.synth(cur, date, None, true))
                {
                    continue;
                }
                if f.nothing || !f.date_ok(date) {
                    continue;
                }
                return Some((date, cur));
            }
            None
        };
        let mut seeded = next_seeded();
        let mut out = Vec::new();
        let mut skipped = 0;
        while u64::try_from(out.len()).unwrap_or(u64::MAX) < limit {
            let take_stored = match (seeded, stored.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(s), Some(o)) => *o > s,
            };
            let key = if take_stored {
                stored.next()
            } else {
                let k = seeded;
                seeded = next_seeded();
                k
            };
            let Some((_, idx)) = key else { break };
            if skipped < skip {
                skipped += 1;
                continue;
            }
            out.extend(self.transcript_at(data, idx));
        }
        out
    }

    fn transcript_json(&self, t: &FirefliesSimTranscript) -> Value {
        let index = index_of(&t.id).unwrap_or(0);
        if self.common.is_malformed(11, index) {
            return json!({"id": t.id, "title": ["not", "text"], "date": "yesterday", "duration": "long", "meeting_attendees": "corrupt", "participants": 7});
        }
        let summary = match &t.summary {
            Some(s) => json!({
                "keywords": s.keywords, "action_items": s.action_items,
                "outline": format!("00:00 {}", t.title), "overview": s.overview,
                "shorthand_bullet": format!("- {}", s.short_summary), "bullet_gist": s.short_summary,
                "gist": s.short_summary, "short_summary": s.short_summary,
                "topics_discussed": s.keywords, "meeting_type": "Sales",
            }),
            None => json!({
                "keywords": null, "action_items": null, "outline": null, "overview": null,
                "shorthand_bullet": null, "bullet_gist": null, "gist": null,
                "short_summary": null, "topics_discussed": null, "meeting_type": null,
            }),
        };
        let attendees: Vec<Value> = t
            .attendees
            .iter()
            .map(|a| json!({"displayName": a.display_name, "email": a.email, "phoneNumber": null, "name": a.name, "location": null}))
            .collect();
        let speakers: Vec<Value> = t
            .sentences
            .iter()
            .map(|s| s.speaker_name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, n)| json!({"id": i.to_string(), "name": n}))
            .collect();
        let sentences: Vec<Value> = t
            .sentences
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"index": i, "speaker_name": s.speaker_name, "speaker_id": "0", "text": s.text, "raw_text": s.text, "start_time": s.start_time, "end_time": s.end_time}))
            .collect();
        let owner = self
            .users()
            .into_iter()
            .find(|u| u.email == t.organizer_email);
        json!({
            "id": t.id,
            "title": t.title,
            "date": ms_json(t.date),
            "dateString": t.date.to_rfc3339_opts(SecondsFormat::Millis, true),
            "duration": t.duration_minutes,
            "host_email": t.organizer_email,
            "organizer_email": t.organizer_email,
            "participants": t.participants,
            "fireflies_users": t.fireflies_users,
            "meeting_attendees": attendees,
            "speakers": speakers,
            "sentences": sentences,
            "summary": summary,
            "transcript_url": t.transcript_url,
            "audio_url": format!("https://cdn.fireflies.ai/{}/audio.mp3", t.id),
            "video_url": null,
            "meeting_link": format!("https://meet.google.com/{}", crockford(index, 10).to_lowercase()),
            "calendar_id": format!("{:016x}", self.h(4, index, 1)),
            "cal_id": format!("{:016x}", self.h(4, index, 1)),
            "calendar_type": "google",
            "privacy": "teammates",
            "is_live": false,
            "user": owner.map(|u| self.user_json(&u, None)),
        })
    }

    fn user_json(&self, u: &FirefliesSimUser, data: Option<&Data>) -> Value {
        let count = data.map_or(0, |d| {
            (1..=self.seeded() + d.extra)
                .filter_map(|j| self.transcript_at(d, j))
                .filter(|t| t.processed && t.organizer_email == u.email)
                .count()
        });
        json!({
            "user_id": u.user_id,
            "email": u.email,
            "name": u.name,
            "num_transcripts": count,
            "recent_meeting": null,
            "minutes_consumed": 0.0,
            "is_admin": u.email == self.user(1).email,
            "integrations": ["google-calendar"],
        })
    }

    fn form_is_status(&self, n: u64) -> bool {
        match self.cfg.error_form {
            FirefliesErrorForm::HttpStatus => true,
            FirefliesErrorForm::Http200 => false,
            FirefliesErrorForm::Alternate => n.is_multiple_of(2),
        }
    }

    fn rejection(
        &self,
        code: &str,
        status: StatusCode,
        message: &str,
        metadata: Value,
        n: u64,
    ) -> Response<Body> {
        let body =
            json!({"data": null, "errors": [app_error(code, status.as_u16(), message, metadata)]});
        let http = if self.form_is_status(n) {
            status
        } else {
            StatusCode::OK
        };
        json_response(http, &body)
    }

    fn too_many(&self, retry_at: DateTime<Utc>, n: u64) -> Response<Body> {
        self.rejection(
            "too_many_requests",
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests. Please retry after the time in metadata.retryAfter",
            json!({"retryAfter": ms(retry_at)}),
            n,
        )
    }

    /// Auth, faults, the per-minute and daily limits: `Err` is the answer instead.
    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let (injected, latency) = decide(&self.common);
        let n = self.common.seq.load(Ordering::Relaxed);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k.trim() == self.cfg.api_key);
        if !authorized {
            return Err(self.rejection(
                "auth_failed",
                StatusCode::UNAUTHORIZED,
                "Invalid API key. Please check your API key and try again.",
                json!({}),
                n,
            ));
        }
        match injected {
            Injected::ServerError(code) => {
                return Err(json_response(
                    code,
                    &json!({"errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}),
                ));
            }
            Injected::RateLimited => {
                let at = Utc::now()
                    + chrono::Duration::from_std(self.cfg.retry_after).unwrap_or_default();
                return Err(self.too_many(at, n));
            }
            Injected::Drop => return Err(dropped_response()),
            Injected::None => {}
        }
        if self.cfg.rate_limits
            && let Err(wait) = self.per_window.check()
        {
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            return Err(self.too_many(at, n));
        }
        if let Some(limit) = self.cfg.daily_limit {
            let now = Utc::now();
            let mut data = lock(&self.data);
            if data.day != Some(now.date_naive()) {
                data.day = Some(now.date_naive());
                data.day_used = 0;
            }
            if data.day_used >= u64::from(limit) {
                drop(data);
                return Err(self.too_many(next_utc_midnight(now), n));
            }
            data.day_used += 1;
        }
        Ok(())
    }
}

fn date_arg(args: &serde_json::Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Some(d.timestamp_millis()))
            .map_err(|_| format!("{name} must be an ISO 8601 date-time, got {s:?}")),
        Some(other) => Err(format!("{name} must be a DateTime, got {other}")),
    }
}

fn strings_arg(args: &serde_json::Map<String, Value>, name: &str) -> Option<Vec<String>> {
    match args.get(name)? {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

/// `invalid_arguments` with the offending fields.
fn invalid(fields: &[&str], message: String) -> Value {
    app_error(
        "invalid_arguments",
        400,
        &message,
        json!({"fields": fields}),
    )
}

impl Inner {
    /// Resolves `transcripts`: the list, or an `invalid_arguments` error.
    fn transcripts(&self, root: &RootField) -> Result<Value, Value> {
        let a = &root.args;
        let limit = match a.get("limit") {
            None | Some(Value::Null) => FIREFLIES_MAX_LIMIT,
            Some(v) => v.as_i64().unwrap_or(-1),
        };
        if !(0..=FIREFLIES_MAX_LIMIT).contains(&limit) {
            return Err(invalid(
                &["limit"],
                format!("limit must be between 0 and {FIREFLIES_MAX_LIMIT}, got {limit}"),
            ));
        }
        let skip = match a.get("skip") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().unwrap_or(-1),
        };
        if skip < 0 {
            return Err(invalid(
                &["skip"],
                format!("skip must not be negative, got {skip}"),
            ));
        }
        let from = date_arg(a, "fromDate").map_err(|m| invalid(&["fromDate"], m))?;
        let to = date_arg(a, "toDate").map_err(|m| invalid(&["toDate"], m))?;
        if a.get("title").is_some_and(|v| !v.is_null())
            && a.get("keyword").is_some_and(|v| !v.is_null())
        {
            return Err(invalid(
                &["title", "keyword"],
                "title cannot be combined with keyword".into(),
            ));
        }
        let exclusive: Vec<&str> = ["organizer_email", "participant_email", "user_id", "mine"]
            .into_iter()
            .filter(|k| a.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        if exclusive.len() > 1 {
            return Err(invalid(
                &exclusive,
                "only one of organizer_email, participant_email, user_id and mine may be given"
                    .into(),
            ));
        }
        if let Some(k) = a.get("keyword").and_then(Value::as_str)
            && k.chars().count() > 255
        {
            return Err(invalid(
                &["keyword"],
                "keyword is longer than 255 characters".into(),
            ));
        }
        let users = self.users();
        let mut organizers = strings_arg(a, "organizers");
        for key in ["host_email", "organizer_email"] {
            if let Some(e) = a.get(key).and_then(Value::as_str) {
                organizers.get_or_insert_with(Vec::new).push(e.to_owned());
            }
        }
        if a.get("mine").and_then(Value::as_bool) == Some(true) {
            organizers
                .get_or_insert_with(Vec::new)
                .push(self.user(1).email);
        }
        let mut nothing = a.get("channel_id").is_some_and(|v| !v.is_null());
        if let Some(uid) = a.get("user_id").and_then(Value::as_str) {
            match users.iter().find(|u| u.user_id == uid) {
                Some(u) => organizers
                    .get_or_insert_with(Vec::new)
                    .push(u.email.clone()),
                None => nothing = true,
            }
        }
        let mut participants = strings_arg(a, "participants");
        if let Some(e) = a.get("participant_email").and_then(Value::as_str) {
            participants.get_or_insert_with(Vec::new).push(e.to_owned());
        }
        let date_from = a
            .get("date")
            .and_then(Value::as_f64)
            .and_then(|d| DateTime::<Utc>::from_timestamp_millis(f64_ms(d)));
        let f = Filter {
            from: from.max(date_from.map(ms)),
            to,
            keyword: a
                .get("keyword")
                .or_else(|| a.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            organizers,
            participants,
            nothing,
        };
        let list = {
            let data = lock(&self.data);
            self.list(
                &data,
                &f,
                u64::try_from(skip).unwrap_or(0),
                u64::try_from(limit).unwrap_or(0),
            )
        };
        lock(&self.log).push(TranscriptsArgs {
            from: from.map(from_ms),
            to: to.map(from_ms),
            skip: u64::try_from(skip).unwrap_or(0),
            limit: u64::try_from(limit).unwrap_or(0),
            returned: list.len() as u64,
        });
        Ok(Value::Array(
            list.iter().map(|t| self.transcript_json(t)).collect(),
        ))
    }
}

/// Whole milliseconds of a Float `date` (rounded toward zero; out-of-range gives 0).
fn f64_ms(d: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let t = d.trunc();
    if t.is_finite() && (-LIMIT..LIMIT).contains(&t) {
        // Invariant: `t` is whole and inside i64's range (checked above), so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let v = t as i64;
        v
    } else {
        0
    }
}

async fn graphql(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(resp) = inner.admit(&headers).await {
        return resp;
    }
    let bad = |m: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"errors": [{"message": m, "extensions": {"code": "BAD_REQUEST"}}]}),
        )
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("POST body is not valid JSON");
    };
    let Some(query) = req.get("query").and_then(Value::as_str) else {
        return bad("POST body must contain a \"query\" string");
    };
    let vars = req.get("variables").cloned().unwrap_or(Value::Null);
    let op_name = req.get("operationName").and_then(Value::as_str);
    let prepared = match fireflies_gql::prepare(query, &vars, op_name) {
        Ok(p) => p,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &e.body()),
    };
    let mut data = serde_json::Map::new();
    let mut errors = Vec::new();
    let mut listed = false;
    for root in prepared.root_fields() {
        let resolved: Result<(Value, &str), Value> = match root.name.as_str() {
            "transcripts" => {
                listed = true;
                inner.transcripts(&root).map(|v| (v, "[Transcript]"))
            }
            "transcript" => {
                let id = root.args.get("id").and_then(Value::as_str).unwrap_or("");
                let t = {
                    let d = lock(&inner.data);
                    index_of(id)
                        .and_then(|j| inner.transcript_at(&d, j))
                        .filter(|t| t.id == id && t.processed)
                };
                match t {
                    Some(t) => Ok((inner.transcript_json(&t), "Transcript")),
                    None => Err(app_error(
                        "object_not_found",
                        404,
                        "Transcript not found",
                        json!({}),
                    )),
                }
            }
            "user" => {
                let users = inner.users();
                let u = match root.args.get("id").and_then(Value::as_str) {
                    None => users.first().cloned(),
                    Some(id) => users.iter().find(|u| u.user_id == id).cloned(),
                };
                match u {
                    Some(u) => {
                        let d = lock(&inner.data);
                        Ok((inner.user_json(&u, Some(&d)), "User"))
                    }
                    None => Err(app_error(
                        "object_not_found",
                        404,
                        "User not found",
                        json!({}),
                    )),
                }
            }
            "users" => {
                let d = lock(&inner.data);
                let all: Vec<Value> = inner
                    .users()
                    .iter()
                    .map(|u| inner.user_json(u, Some(&d)))
                    .collect();
                Ok((Value::Array(all), "[User]"))
            }
            other => Err(app_error(
                "invalid_arguments",
                400,
                &format!("unsupported field {other}"),
                json!({}),
            )),
        };
        match resolved {
            Ok((v, ty)) => {
                data.insert(root.key.clone(), prepared.project(&root, ty, &v));
            }
            Err(mut e) => {
                e["path"] = json!([root.key]);
                e["locations"] = json!([{"line": root.pos.line, "column": root.pos.column}]);
                data.insert(root.key.clone(), Value::Null);
                errors.push(e);
            }
        }
    }
    let body = if errors.is_empty() {
        json!({ "data": data })
    } else {
        json!({ "data": data, "errors": errors })
    };
    let resp = json_response(StatusCode::OK, &body);
    if listed {
        let n = inner.transcripts_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let hook = lock(&inner.after).clone();
        if let Some(hook) = hook {
            hook(
                n,
                &FirefliesSimHandle {
                    inner: inner.clone(),
                },
            );
        }
    }
    resp
}

impl FirefliesSim {
    /// Starts the simulator on `127.0.0.1` and an ephemeral port.
    pub async fn start(cfg: FirefliesSimConfig) -> std::io::Result<FirefliesSim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let inner = Arc::new(Inner {
            per_window: SimLimiter::new(cfg.rate_max, cfg.rate_window),
            span_ms: i64::from(cfg.days.max(1)) * 86_400_000,
            data: Mutex::new(Data::default()),
            transcripts_requests: AtomicU64::new(0),
            after: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            common: common.clone(),
            cfg,
        });
        let router = Router::new()
            .route("/graphql", post(graphql))
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        Ok(FirefliesSim {
            handle: FirefliesSimHandle { inner },
            server,
        })
    }

    /// `http://127.0.0.1:<port>`; the API is `POST /graphql` there.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// The mutation API as a cloneable handle (also what a hook between pages gets).
    pub fn handle(&self) -> &FirefliesSimHandle {
        &self.handle
    }

    /// Runs `hook(n, handle)` after the `n`-th request with a `transcripts` field (1-based)
    /// is answered: inserts and deletes between page requests.
    pub fn after_transcripts_request(
        &self,
        hook: impl Fn(u64, &FirefliesSimHandle) + Send + Sync + 'static,
    ) {
        *lock(&self.handle.inner.after) = Some(Arc::new(Box::new(hook)));
    }

    /// Removes the hook of [`FirefliesSim::after_transcripts_request`].
    pub fn clear_hook(&self) {
        *lock(&self.handle.inner.after) = None;
    }
}

impl std::ops::Deref for FirefliesSim {
    type Target = FirefliesSimHandle;

    fn deref(&self) -> &FirefliesSimHandle {
        &self.handle
    }
}

impl FirefliesSimHandle {
    /// The configuration it was started with.
    pub fn config(&self) -> &FirefliesSimConfig {
        &self.inner.cfg
    }

    /// Requests served, per endpoint (`"POST /graphql"`).
    pub fn counters(&self) -> &RequestCounters {
        &self.inner.common.counters
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// Answers the next `n` requests with `too_many_requests` (retry after the configured
    /// `retry_after`).
    pub fn burst_429(&self, n: u64) {
        self.inner.common.burst_429.store(n, Ordering::Relaxed);
    }

    /// Starts a new day for the daily limit (the quota reset at UTC midnight).
    pub fn reset_daily_quota(&self) {
        let mut d = lock(&self.inner.data);
        d.day_used = 0;
    }

    /// The `transcripts` fields served so far, in order.
    pub fn transcripts_log(&self) -> Vec<TranscriptsArgs> {
        lock(&self.inner.log).clone()
    }

    /// The team's users.
    pub fn users(&self) -> Vec<FirefliesSimUser> {
        self.inner.users()
    }

    /// Adds a transcript and returns its id.
    pub fn add_transcript(&self, new: NewFirefliesTranscript) -> String {
        let mut d = lock(&self.inner.data);
        d.extra += 1;
        let j = self.inner.seeded() + d.extra;
        let mut t = self
            .inner
            .synth(j, ms(new.date), new.title, new.summary_ready);
        t.processed = new.processed;
        let id = t.id.clone();
        d.stored.insert(j, t);
        id
    }

    /// Changes a transcript (title, summary, attendees…); its id and date stay. False if
    /// there is no such transcript.
    pub fn modify_transcript(&self, id: &str, f: impl FnOnce(&mut FirefliesSimTranscript)) -> bool {
        let mut d = lock(&self.inner.data);
        let Some(j) = index_of(id) else { return false };
        let Some(mut t) = self.inner.transcript_at(&d, j).filter(|t| t.id == id) else {
            return false;
        };
        let (keep_id, keep_date) = (t.id.clone(), t.date);
        f(&mut t);
        t.id = keep_id;
        t.date = keep_date;
        d.stored.insert(j, t);
        true
    }

    /// Finishes a transcript's processing: it is listed from now on (with its old `date`).
    pub fn finish_processing(&self, id: &str) -> bool {
        self.modify_transcript(id, |t| t.processed = true)
    }

    /// Finishes a transcript's summary.
    pub fn finish_summary(&self, id: &str) -> bool {
        let ready = index_of(id).map(|j| self.inner.synth(j, 0, None, true).summary);
        let Some(Some(summary)) = ready else {
            return false;
        };
        self.modify_transcript(id, |t| t.summary = Some(summary))
    }

    /// Deletes a transcript. False if there is no such transcript.
    pub fn delete_transcript(&self, id: &str) -> bool {
        let mut d = lock(&self.inner.data);
        match index_of(id) {
            Some(j) if self.inner.transcript_at(&d, j).is_some_and(|t| t.id == id) => {
                d.stored.remove(&j);
                d.deleted.insert(j)
            }
            _ => false,
        }
    }

    /// The transcript with this id (processed or not), as Fireflies holds it now.
    pub fn transcript(&self, id: &str) -> Option<FirefliesSimTranscript> {
        let d = lock(&self.inner.data);
        self.inner
            .transcript_at(&d, index_of(id)?)
            .filter(|t| t.id == id)
    }

    /// Every listed transcript (processed, not deleted), newest first: the truth.
    pub fn transcripts(&self) -> Vec<FirefliesSimTranscript> {
        let d = lock(&self.inner.data);
        self.inner.list(&d, &Filter::default(), 0, u64::MAX)
    }

    /// Whether a transcript is served malformed under the current fault settings.
    pub fn is_malformed(&self, id: &str) -> bool {
        index_of(id).is_some_and(|j| self.inner.common.is_malformed(11, j))
    }

    /// The ids of the transcripts seeded on the one shared instant
    /// ([`FirefliesSimConfig::same_instant`]).
    pub fn same_instant_ids(&self) -> Vec<String> {
        let Some((start, n)) = self.inner.tie() else {
            return Vec::new();
        };
        let d = lock(&self.inner.data);
        (start..start + n)
            .filter_map(|j| self.inner.transcript_at(&d, j))
            .map(|t| t.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_dates_grow() {
        let id = transcript_id(1234, u64::MAX);
        assert_eq!(id.len(), 26);
        assert_eq!(index_of(&id), Some(1234));
        assert_eq!(index_of("nope"), None);
    }
}
