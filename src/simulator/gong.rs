//! Gong v2 simulator: `GET /v2/users` and `POST /v2/calls/extensive`.
//!
//! Calls are generated from the seed and their index: call `j` of `n` starts in the `j`-th
//! of `n` equal slots of the last `days` days before `now`, so seeded calls are already in
//! start-time order and a date range maps to an index range by binary search. Only
//! mutations (added or changed calls, added or deactivated users) are stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{
    Common, FaultConfig, Injected, RequestCounters, SimLimiter, SimServer, decide,
    dropped_response, lock, mix,
};

/// Gong's page size for users and calls.
const PAGE: usize = 100;
/// User `i` has the id `USER_BASE + i` (18 digits, like Gong's).
const USER_BASE: u64 = 234_599_484_000_000_000;
/// Call `j` has the id `CALL_BASE + j` (19 digits, like Gong's).
const CALL_BASE: u64 = 7_782_342_274_000_000_000;
/// Party `k` of call `j` has the id `PARTY_BASE + 16 j + k`.
const PARTY_BASE: u64 = 1_000_000_000_000_000;
/// The body of Gong's 404 for a filter nothing matches.
pub const NO_CALLS_FOUND: &str = "No calls found corresponding to the provided filters";

/// Configuration of a [`GongSim`].
#[derive(Debug, Clone)]
pub struct GongSimConfig {
    /// Seed of the generated data and of fault decisions.
    pub seed: u64,
    /// Seeded users (all active).
    pub users: u64,
    /// Seeded calls, each hosted by a seeded user (none when `users` is 0).
    pub calls: u64,
    /// Seeded calls start in the last `days` days before `now` (at least 1).
    pub days: u32,
    /// The instant seeded calls lead up to (default: the current time, whole seconds).
    pub now: DateTime<Utc>,
    /// The Gong workspace every call belongs to (`metaData.workspaceId`).
    pub workspace_id: String,
    /// Email domain of the users (internal parties).
    pub internal_domain: String,
    /// Email domains of external parties; empty: generated `<word>.example.com` domains.
    pub external_domains: Vec<String>,
    /// The access key accepted in `Authorization: Basic base64(key:secret)`.
    pub access_key: String,
    /// The access key secret.
    pub access_key_secret: String,
    /// An OAuth access token also accepted as `Authorization: Bearer …`, if any.
    pub bearer_token: Option<String>,
    /// Whether the per-second limit and the daily cap are enforced.
    pub rate_limits: bool,
    /// Requests per `rate_window` (Gong: 3 per second).
    pub rate_max: u32,
    /// The rate window.
    pub rate_window: Duration,
    /// Requests per rolling 24 hours (Gong: 10,000).
    pub daily_cap: u32,
    /// The `Retry-After` of per-second and injected 429s (rounded up to whole seconds; the
    /// daily cap's says when a slot frees up).
    pub retry_after: Duration,
    /// Injected faults.
    pub faults: FaultConfig,
}

impl Default for GongSimConfig {
    fn default() -> Self {
        let now = Utc::now();
        GongSimConfig {
            seed: 42,
            users: 10,
            calls: 500,
            days: 120,
            now: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
            workspace_id: "5544332211009988776".into(),
            internal_domain: "pandora-demo.example".into(),
            external_domains: Vec::new(),
            access_key: "sim-gong-access-key".into(),
            access_key_secret: "sim-gong-access-key-secret".into(),
            bearer_token: None,
            rate_limits: true,
            rate_max: 3,
            rate_window: Duration::from_secs(1),
            daily_cap: 10_000,
            retry_after: Duration::from_secs(1),
            faults: FaultConfig::default(),
        }
    }
}

/// A Gong user as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GongSimUser {
    /// User id (numeric string).
    pub id: String,
    /// `emailAddress`.
    pub email: String,
    /// `firstName`.
    pub first_name: String,
    /// `lastName`.
    pub last_name: String,
    /// `title`.
    pub title: String,
    /// `active`: deactivated users keep their calls but are not "active users".
    pub active: bool,
    /// `created`.
    pub created: DateTime<Utc>,
}

/// A party's `affiliation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GongAffiliation {
    /// A user of the company.
    Internal,
    /// Someone from outside.
    External,
    /// Gong could not tell.
    Unknown,
}

impl GongAffiliation {
    /// `Internal`, `External` or `Unknown`, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            GongAffiliation::Internal => "Internal",
            GongAffiliation::External => "External",
            GongAffiliation::Unknown => "Unknown",
        }
    }
}

/// One party of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GongSimParty {
    /// Party id.
    pub id: String,
    /// `emailAddress`, when known.
    pub email: Option<String>,
    /// `name`, when known.
    pub name: Option<String>,
    /// `title`, when known.
    pub title: Option<String>,
    /// `userId`: set for internal parties that are Gong users.
    pub user_id: Option<String>,
    /// `speakerId`, when the party spoke.
    pub speaker_id: Option<String>,
    /// `affiliation`.
    pub affiliation: GongAffiliation,
    /// `phoneNumber`, when known.
    pub phone_number: Option<String>,
    /// `methods`, e.g. `["Invitee"]`.
    pub methods: Vec<String>,
}

/// A call as the simulator holds it (the truth the connector's result is compared with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GongSimCall {
    /// `metaData.id` (numeric string).
    pub id: String,
    /// `metaData.primaryUserId`: the host.
    pub primary_user_id: String,
    /// `metaData.title`.
    pub title: String,
    /// `metaData.started`: what `fromDateTime`/`toDateTime` filter on.
    pub started: DateTime<Utc>,
    /// `metaData.duration`, in seconds.
    pub duration: u64,
    /// `metaData.url`.
    pub url: String,
    /// `metaData.system`, e.g. `Zoom`.
    pub system: String,
    /// `metaData.scope`: `External` when an external party took part, else `Internal`.
    pub scope: String,
    /// `parties`.
    pub parties: Vec<GongSimParty>,
}

/// A call to add with [`GongSim::add_call`]; unset fields are generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGongCall {
    /// The host's user id.
    pub primary_user_id: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Title (generated when `None`).
    pub title: Option<String>,
    /// Duration in seconds (generated when `None`).
    pub duration: Option<u64>,
    /// Parties (the host plus generated ones when `None`).
    pub parties: Option<Vec<GongSimParty>>,
}

impl NewGongCall {
    /// A call hosted by `primary_user_id` that started at `started`.
    pub fn new(primary_user_id: impl Into<String>, started: DateTime<Utc>) -> Self {
        NewGongCall {
            primary_user_id: primary_user_id.into(),
            started,
            title: None,
            duration: None,
            parties: None,
        }
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

#[derive(Debug, Default)]
struct Data {
    /// Users added after start (indexes `users + 1 ..`).
    extra_users: u64,
    /// Changed and added users.
    users: BTreeMap<u64, GongSimUser>,
    /// Calls added after start (indexes `seeded + 1 ..`).
    extra_calls: u64,
    /// Changed and added calls.
    calls: BTreeMap<u64, GongSimCall>,
}

#[derive(Debug)]
struct Inner {
    cfg: GongSimConfig,
    common: Arc<Common>,
    per_window: SimLimiter,
    daily: SimLimiter,
    /// Seeded calls (0 without users).
    seeded: u64,
    /// Seconds the seeded calls spread over.
    span: u64,
    data: Mutex<Data>,
    /// Cursors carry the epoch they were issued in; [`GongSim::expire_cursors`] moves it on
    /// and every older cursor is answered 400 "cursor has expired".
    cursor_epoch: std::sync::atomic::AtomicU64,
    /// Requests left (plus one) before every cursor expires; 0: off.
    expire_countdown: std::sync::atomic::AtomicU64,
    /// `filter.primaryUserIds` of every calls request admitted, in order.
    user_filters: Mutex<Vec<Option<Vec<String>>>>,
}

/// A fake Gong company on loopback.
///
/// Serves `GET /v2/users` and `POST /v2/calls/extensive` with the real shapes, paging,
/// limits and errors (see `reference/provider-apis.md` sections 2 and 7): Basic auth with
/// the access key and secret; cursors only while more pages remain, read from the JSON body
/// for calls (a `cursor` query parameter is ignored, as by Gong); 100 records a page; HTTP
/// 404 `{"requestId", "errors": ["No calls found corresponding to the provided filters"]}`
/// when no call matches; 3 requests per second and a daily cap, both answered with 429 and
/// `Retry-After` in seconds.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use pandora_sync::simulator::{GongSim, GongSimConfig};
///
/// let sim = GongSim::start(GongSimConfig { users: 3, calls: 40, days: 30, ..Default::default() }).await?;
/// assert_eq!(sim.users().len(), 3);
/// let now = sim.config().now;
/// let all = sim.truth_calls(now - chrono::Duration::days(30), now, &[]);
/// assert_eq!(all.len(), 40);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GongSim {
    inner: Arc<Inner>,
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
const COMPANIES: [&str; 16] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Aperture",
    "Massive",
    "Vandelay",
    "Piedpiper",
    "Dunder",
];
const TOPICS: [&str; 8] = [
    "Discovery call",
    "Product demo",
    "Pricing review",
    "Technical deep dive",
    "Quarterly business review",
    "Renewal",
    "Onboarding",
    "Pipeline review",
];
const USER_TITLES: [&str; 5] = [
    "Account Executive",
    "Sales Development Representative",
    "Sales Manager",
    "Customer Success Manager",
    "Solutions Engineer",
];
const GUEST_TITLES: [&str; 5] = ["VP Sales", "CTO", "Head of Procurement", "Engineer", ""];
const SYSTEMS: [&str; 3] = ["Zoom", "Google Meet", "Microsoft Teams"];

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[usize::try_from(h % list.len() as u64).unwrap_or(0)]
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1_000))
}

/// Gong writes some times in the UTC offset of the call (`2018-02-18T02:30:00-07:00`).
fn gong_time(t: DateTime<Utc>, index: u64) -> String {
    let offset = if index.is_multiple_of(4) {
        FixedOffset::west_opt(7 * 3600)
    } else {
        None
    };
    match offset {
        Some(o) => t
            .with_timezone(&o)
            .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        None => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn request_id() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut s = String::with_capacity(19);
    for _ in 0..19 {
        s.push(char::from(DIGITS[usize::try_from(n % 36).unwrap_or(0)]));
        n /= 36;
    }
    s
}

fn parse_index(id: &str, base: u64) -> Option<u64> {
    id.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_sub(base))
        .filter(|i| *i > 0)
}

/// What a calls request asks for.
#[derive(Debug, Default)]
struct CallQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// `primaryUserIds`, as given.
    users: Option<BTreeSet<String>>,
    /// `callIds`, as indexes (unknown ids dropped).
    call_ids: Option<BTreeSet<u64>>,
    /// `workspaceId` names another workspace: nothing matches.
    other_workspace: bool,
}

/// Position in the (started, index) order.
type Key = (i64, u64);

impl CallQuery {
    fn in_range(&self, started: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| started >= f) && self.to.is_none_or(|t| started < t)
    }

    fn matches(&self, call: &GongSimCall) -> bool {
        self.in_range(call.started)
            && self
                .users
                .as_ref()
                .is_none_or(|u| u.contains(&call.primary_user_id))
    }
}

impl Inner {
    fn h(&self, salt: u64, index: u64, k: u64) -> u64 {
        mix(self.cfg.seed, salt * 1_000 + k, index)
    }

    fn max_user(&self, data: &Data) -> u64 {
        self.cfg.users + data.extra_users
    }

    fn max_call(&self, data: &Data) -> u64 {
        self.seeded + data.extra_calls
    }

    fn seeded_user(&self, i: u64) -> GongSimUser {
        let h = |k| self.h(1, i, k);
        let first = pick(&FIRST, h(1));
        let last = pick(&LAST, h(2));
        GongSimUser {
            id: (USER_BASE + i).to_string(),
            email: format!(
                "{}.{}{i}@{}",
                first.to_lowercase(),
                last.to_lowercase(),
                self.cfg.internal_domain
            ),
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            title: pick(&USER_TITLES, h(3)).to_owned(),
            active: true,
            created: self.cfg.now - chrono::Duration::days(400) + secs(h(4) % (200 * 86_400)),
        }
    }

    fn user(&self, data: &Data, i: u64) -> Option<GongSimUser> {
        if i == 0 || i > self.max_user(data) {
            return None;
        }
        match data.users.get(&i) {
            Some(u) => Some(u.clone()),
            None => Some(self.seeded_user(i)),
        }
    }

    /// The start of seeded call `j`: in the `j`-th of `seeded` equal slots of the span, so
    /// seeded calls are in start order.
    fn seeded_started(&self, j: u64) -> DateTime<Utc> {
        let n = u128::from(self.seeded.max(1));
        let span = u128::from(self.span);
        let slot = |k: u64| u64::try_from(u128::from(k) * span / n).unwrap_or(u64::MAX);
        let (lo, hi) = (slot(j - 1), slot(j));
        let jitter = if hi > lo {
            self.h(2, j, 0) % (hi - lo)
        } else {
            0
        };
        self.cfg.now - secs(self.span) + secs(lo + jitter)
    }

    fn seeded_host(&self, j: u64) -> u64 {
        1 + self.h(2, j, 1) % self.cfg.users.max(1)
    }

    fn seeded_key(&self, j: u64) -> Key {
        (micros(self.seeded_started(j)), j)
    }

    /// The first seeded index in `1..=seeded` whose key satisfies `pred` (monotone), or
    /// `seeded + 1`.
    fn first_seeded(&self, pred: impl Fn(u64) -> bool) -> u64 {
        let (mut lo, mut hi) = (1, self.seeded + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// A generated call with index `j`, host `host` and start `started`.
    fn synth(&self, data: &Data, j: u64, host: u64, started: DateTime<Utc>) -> GongSimCall {
        let h = |k| self.h(3, j, k);
        let id = (CALL_BASE + j).to_string();
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
        let mut parties = Vec::new();
        let mut party = |email: Option<String>,
                         name: Option<String>,
                         title: Option<String>,
                         user_id: Option<String>,
                         affiliation: GongAffiliation,
                         phone: Option<String>| {
            let k = parties.len() as u64;
            parties.push(GongSimParty {
                id: (PARTY_BASE + j * 16 + k).to_string(),
                email,
                name,
                title,
                user_id,
                speaker_id: Some((PARTY_BASE * 3 + j * 16 + k).to_string()),
                affiliation,
                phone_number: phone,
                methods: vec![if k == 0 { "Invitee" } else { "Attendee" }.to_owned()],
            });
        };
        let mut internal = BTreeSet::new();
        if let Some(u) = self.user(data, host) {
            internal.insert(host);
            party(
                Some(u.email),
                Some(format!("{} {}", u.first_name, u.last_name)),
                Some(u.title),
                Some(u.id),
                GongAffiliation::Internal,
                None,
            );
        }
        if self.cfg.users > 1 {
            for k in 0..h(2) % 3 {
                let other = 1 + self.h(3, j, 10 + k) % self.cfg.users;
                if internal.insert(other)
                    && let Some(u) = self.user(data, other)
                {
                    party(
                        Some(u.email),
                        Some(format!("{} {}", u.first_name, u.last_name)),
                        Some(u.title),
                        Some(u.id),
                        GongAffiliation::Internal,
                        None,
                    );
                }
            }
        }
        let externals = h(3) % 4;
        let mut seen = BTreeSet::new();
        for k in 0..externals {
            let first = pick(&FIRST, self.h(3, j, 20 + k));
            let last = pick(&LAST, self.h(3, j, 30 + k));
            let email = format!("{}.{}@{domain}", first.to_lowercase(), last.to_lowercase());
            if !seen.insert(email.clone()) {
                continue;
            }
            let title = pick(&GUEST_TITLES, self.h(3, j, 40 + k));
            party(
                Some(email),
                Some(format!("{first} {last}")),
                (!title.is_empty()).then(|| title.to_owned()),
                None,
                GongAffiliation::External,
                None,
            );
        }
        if h(4).is_multiple_of(6) {
            party(
                None,
                None,
                None,
                None,
                GongAffiliation::Unknown,
                Some(format!("+1 555 {:04}", h(5) % 10_000)),
            );
        }
        let scope = if externals > 0 {
            "External"
        } else {
            "Internal"
        };
        GongSimCall {
            url: format!("https://app.gong.io/call?id={id}"),
            id,
            primary_user_id: (USER_BASE + host).to_string(),
            title: format!("{company}: {}", pick(&TOPICS, h(6))),
            started,
            duration: 120 + h(7) % 3_480,
            system: pick(&SYSTEMS, h(8)).to_owned(),
            scope: scope.to_owned(),
            parties,
        }
    }

    fn call(&self, data: &Data, j: u64) -> Option<GongSimCall> {
        if j == 0 || j > self.max_call(data) {
            return None;
        }
        if let Some(c) = data.calls.get(&j) {
            return Some(c.clone());
        }
        (j <= self.seeded).then(|| self.synth(data, j, self.seeded_host(j), self.seeded_started(j)))
    }

    /// The keys of the calls matching `q` after `after`, in (started, index) order, at most
    /// `limit` of them (`usize::MAX` to count).
    fn matching(&self, data: &Data, q: &CallQuery, after: Option<Key>, limit: usize) -> Vec<Key> {
        let mut out = Vec::new();
        if q.other_workspace || limit == 0 {
            return out;
        }
        let after_ok = |k: &Key| after.is_none_or(|a| *k > a);
        if let Some(ids) = &q.call_ids {
            let mut keys: Vec<Key> = ids
                .iter()
                .filter_map(|j| {
                    let c = self.call(data, *j)?;
                    q.matches(&c).then_some((micros(c.started), *j))
                })
                .filter(after_ok)
                .collect();
            keys.sort_unstable();
            keys.truncate(limit);
            return keys;
        }
        // Changed and added calls: few, filtered and sorted in full.
        let mut stored: Vec<Key> = data
            .calls
            .iter()
            .filter(|(_, c)| q.matches(c))
            .map(|(j, c)| (micros(c.started), *j))
            .filter(after_ok)
            .collect();
        stored.sort_unstable();
        let mut stored = stored.into_iter().peekable();
        // Seeded calls not changed: generated in order from the first index the range and
        // the cursor admit.
        let hosts: Option<BTreeSet<u64>> = q.users.as_ref().map(|u| {
            u.iter()
                .filter_map(|id| parse_index(id, USER_BASE))
                .filter(|i| *i <= self.cfg.users)
                .collect()
        });
        let mut j = {
            let by_from = q
                .from
                .map_or(1, |f| self.first_seeded(|m| self.seeded_started(m) >= f));
            let by_after = after.map_or(1, |a| self.first_seeded(|m| self.seeded_key(m) > a));
            by_from.max(by_after)
        };
        let mut next_seeded = || -> Option<Key> {
            while j <= self.seeded {
                let cur = j;
                j += 1;
                let started = self.seeded_started(cur);
                if q.to.is_some_and(|t| started >= t) {
                    j = self.seeded + 1;
                    return None;
                }
                if data.calls.contains_key(&cur) {
                    continue;
                }
                if hosts
                    .as_ref()
                    .is_some_and(|h| !h.contains(&self.seeded_host(cur)))
                {
                    continue;
                }
                return Some((micros(started), cur));
            }
            None
        };
        let mut seeded = next_seeded();
        while out.len() < limit {
            let take_stored = match (seeded, stored.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(s), Some(o)) => *o < s,
            };
            if take_stored {
                out.extend(stored.next());
            } else {
                out.extend(seeded);
                seeded = next_seeded();
            }
        }
        out
    }

    fn check_auth(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.cfg.bearer_token.as_deref() == Some(token);
        }
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.cfg.access_key, self.cfg.access_key_secret);
        decoded == expected.as_bytes()
    }

    fn user_json(&self, u: &GongSimUser, avatars: bool) -> Value {
        let index = parse_index(&u.id, USER_BASE).unwrap_or(0);
        let mut v = json!({
            "id": u.id,
            "emailAddress": u.email,
            "created": u.created.to_rfc3339_opts(SecondsFormat::Secs, true),
            "active": u.active,
            "emailAliases": [],
            "trustedEmailAddress": null,
            "firstName": u.first_name,
            "lastName": u.last_name,
            "title": u.title,
            "phoneNumber": format!("+1 555 {:04}", self.h(1, index, 5) % 10_000),
            "extension": null,
            "personalMeetingUrls": [format!("https://zoom.us/j/{}", 9_000_000_000 + index)],
            "settings": {
                "webConferencesRecorded": true,
                "preventWebConferenceRecording": false,
                "telephonyCallsImported": false,
                "emailsImported": true,
                "preventEmailImport": false,
                "nonRecordedMeetingsImported": true,
                "gongConnectEnabled": true
            },
            "managerId": if index > 1 { Value::String((USER_BASE + 1).to_string()) } else { Value::Null },
            "meetingConsentPageUrl": null,
            "spokenLanguages": [{"language": "en-US", "primary": true}],
        });
        if avatars {
            v["avatarUrl"] = Value::Null;
        }
        v
    }

    fn call_json(&self, c: &GongSimCall, sel: &Selector) -> Value {
        let index = parse_index(&c.id, CALL_BASE).unwrap_or(0);
        if self.common.is_malformed(7, index) {
            return json!({"metaData": {"id": c.id, "started": "yesterday", "duration": "long"}, "parties": "corrupt"});
        }
        let h = |k| self.h(4, index, k);
        let scheduled = c.started - secs(60 * (h(1) % 5));
        let mut v = json!({
            "metaData": {
                "id": c.id,
                "url": c.url,
                "title": c.title,
                "scheduled": gong_time(scheduled, index),
                "started": gong_time(c.started, index),
                "duration": c.duration,
                "primaryUserId": c.primary_user_id,
                "direction": "Conference",
                "system": c.system,
                "scope": c.scope,
                "media": "Video",
                "language": "eng",
                "workspaceId": self.cfg.workspace_id,
                "sdrDisposition": null,
                "clientUniqueId": null,
                "customData": null,
                "purpose": null,
                "meetingUrl": format!("https://zoom.us/j/{}", 8_000_000_000 + h(2) % 1_000_000_000),
                "isPrivate": false,
                "calendarEventId": format!("{:016x}@google.com", h(3)),
            }
        });
        if sel.context {
            v["context"] = json!([]);
        }
        if sel.parties {
            let parties: Vec<Value> = c
                .parties
                .iter()
                .map(|p| {
                    let mut o = Map::new();
                    o.insert("id".into(), json!(p.id));
                    for (k, val) in [
                        ("emailAddress", &p.email),
                        ("name", &p.name),
                        ("title", &p.title),
                        ("userId", &p.user_id),
                        ("speakerId", &p.speaker_id),
                        ("phoneNumber", &p.phone_number),
                    ] {
                        if let Some(s) = val {
                            o.insert(k.into(), json!(s));
                        }
                    }
                    o.insert("context".into(), json!([]));
                    o.insert("affiliation".into(), json!(p.affiliation.as_str()));
                    o.insert("methods".into(), json!(p.methods));
                    Value::Object(o)
                })
                .collect();
            v["parties"] = Value::Array(parties);
        }
        if sel.content {
            v["content"] = json!({
                "topics": [{"name": pick(&TOPICS, h(4)), "duration": c.duration / 3}],
                "trackers": [],
            });
        }
        if sel.interaction {
            let speakers: Vec<Value> = c
                .parties
                .iter()
                .filter_map(|p| p.speaker_id.as_ref().map(|s| (s, p)))
                .map(|(s, p)| json!({"id": s, "userId": p.user_id, "talkTime": c.duration / c.parties.len().max(1) as u64}))
                .collect();
            v["interaction"] = json!({"speakers": speakers, "interactionStats": [], "questions": {"companyCount": 0, "nonCompanyCount": 0}});
        }
        if sel.collaboration {
            v["collaboration"] = json!({"publicComments": []});
        }
        if sel.media {
            v["media"] = json!({
                "audioUrl": format!("https://media.gong.io/{}/audio.mp3", c.id),
                "videoUrl": format!("https://media.gong.io/{}/video.mp4", c.id),
            });
        }
        v
    }
}

/// The parts of a call a `contentSelector` asks for.
#[derive(Debug, Default)]
struct Selector {
    context: bool,
    parties: bool,
    content: bool,
    interaction: bool,
    collaboration: bool,
    media: bool,
}

impl Selector {
    fn parse(v: Option<&Value>) -> Selector {
        let Some(v) = v else {
            return Selector::default();
        };
        let fields = v.get("exposedFields");
        let flag = |name: &str| match fields.and_then(|f| f.get(name)) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Object(o)) => o.values().any(|x| x.as_bool() == Some(true)),
            _ => false,
        };
        Selector {
            context: v
                .get("context")
                .and_then(Value::as_str)
                .is_some_and(|c| c != "None"),
            parties: flag("parties"),
            content: flag("content"),
            interaction: flag("interaction"),
            collaboration: flag("collaboration"),
            media: flag("media"),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"requestId": request_id(), "errors": [message]}),
    )
}

fn too_many(wait: Duration, message: &str) -> Response<Body> {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, message);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Auth, injected faults, latency, the per-second limit and the daily cap: `Err` is the
/// response to send instead of serving the request.
async fn admit(inner: &Inner, headers: &HeaderMap) -> Result<(), Response<Body>> {
    if inner
        .expire_countdown
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        == Ok(1)
    {
        inner.cursor_epoch.fetch_add(1, Ordering::SeqCst);
    }
    let (injected, latency) = decide(&inner.common);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !inner.check_auth(headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed: use Basic auth with the access key and its secret",
        ));
    }
    match injected {
        Injected::ServerError(code) => return Err(error(code, "Internal server error")),
        Injected::RateLimited => {
            return Err(too_many(
                inner.cfg.retry_after,
                "Too many requests: the API rate limit is exceeded",
            ));
        }
        Injected::Drop => return Err(dropped_response()),
        Injected::None => {}
    }
    if !inner.cfg.rate_limits {
        return Ok(());
    }
    if let Err(wait) = inner.per_window.check() {
        return Err(too_many(
            wait.max(inner.cfg.retry_after),
            "Too many requests: the API rate limit is exceeded",
        ));
    }
    if let Err(wait) = inner.daily.check() {
        return Err(too_many(
            wait,
            "Too many requests: the daily API call limit is reached",
        ));
    }
    Ok(())
}

fn encode_cursor(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The epoch a decoded cursor was issued in (0 for cursors without one).
fn epoch_of(v: &Value) -> Option<u64> {
    match v.get("e") {
        None => Some(0),
        Some(e) => e.as_u64(),
    }
}

impl Inner {
    fn epoch(&self) -> u64 {
        self.cursor_epoch.load(Ordering::SeqCst)
    }
}

fn decode_cursor(s: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn list_users(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let (start, page_no) = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => (1, 0),
        Some(c) => match decode_cursor(c)
            .and_then(|v| Some((v.get("u")?.as_u64()?, v.get("p")?.as_u64()?, epoch_of(&v)?)))
        {
            Some((_, _, e)) if e != inner.epoch() => {
                return error(StatusCode::BAD_REQUEST, "cursor has expired");
            }
            Some((u, p, _)) => (u, p),
            None => return error(StatusCode::BAD_REQUEST, "cursor is invalid"),
        },
    };
    let avatars = q.get("includeAvatars").is_some_and(|v| v == "true");
    let (users, total, next) = {
        let data = lock(&inner.data);
        let max = inner.max_user(&data);
        let end = start.saturating_add(PAGE as u64).min(max + 1);
        let users: Vec<Value> = (start.max(1)..end)
            .filter_map(|i| inner.user(&data, i))
            .map(|u| inner.user_json(&u, avatars))
            .collect();
        (users, max, (end <= max).then_some(end))
    };
    let mut records = json!({
        "totalRecords": total,
        "currentPageSize": users.len(),
        "currentPageNumber": page_no,
    });
    if let Some(n) = next {
        records["cursor"] = json!(encode_cursor(
            &json!({"u": n, "p": page_no + 1, "e": inner.epoch()})
        ));
    }
    json_response(
        StatusCode::OK,
        &json!({"requestId": request_id(), "records": records, "users": users}),
    )
}

fn parse_time(v: Option<&Value>, name: &str) -> Result<Option<DateTime<Utc>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| format!("{name} must be an ISO-8601 date-time, got {s:?}")),
        Some(other) => Err(format!("{name} must be a string, got {other}")),
    }
}

fn parse_ids(v: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.trim().to_owned()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("{name} must hold ids, got {other}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("{name} must be an array, got {other}")),
    }
}

fn parse_query(inner: &Inner, filter: &Value) -> Result<CallQuery, String> {
    if !filter.is_object() {
        return Err("filter must be an object".into());
    }
    let from = parse_time(filter.get("fromDateTime"), "fromDateTime")?;
    let to = parse_time(filter.get("toDateTime"), "toDateTime")?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err("fromDateTime must not be after toDateTime".into());
    }
    let users = parse_ids(filter.get("primaryUserIds"), "primaryUserIds")?
        .map(|ids| ids.into_iter().collect::<BTreeSet<_>>());
    let call_ids = parse_ids(filter.get("callIds"), "callIds")?.map(|ids| {
        ids.iter()
            .filter_map(|id| parse_index(id, CALL_BASE))
            .collect::<BTreeSet<_>>()
    });
    let other_workspace = match filter.get("workspaceId") {
        None | Some(Value::Null) => false,
        Some(Value::String(w)) => w.trim() != inner.cfg.workspace_id,
        Some(Value::Number(n)) => n.to_string() != inner.cfg.workspace_id,
        Some(other) => return Err(format!("workspaceId must be a string, got {other}")),
    };
    Ok(CallQuery {
        from,
        to,
        users,
        call_ids,
        other_workspace,
    })
}

async fn calls_extensive(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    // A `cursor` in the query string is ignored, as by Gong: only the body's counts.
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON");
    };
    let Some(filter) = req.get("filter") else {
        return bad("filter is required");
    };
    let q = match parse_query(&inner, filter) {
        Ok(q) => q,
        Err(m) => return bad(&m),
    };
    lock(&inner.user_filters).push(
        parse_ids(filter.get("primaryUserIds"), "primaryUserIds")
            .ok()
            .flatten(),
    );
    let sel = Selector::parse(req.get("contentSelector"));
    let position = match req.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) => match decode_cursor(c).and_then(|v| {
            Some((
                (v.get("k")?.as_i64()?, v.get("i")?.as_u64()?),
                v.get("p")?.as_u64()?,
                v.get("t")?.as_u64()?,
                epoch_of(&v)?,
            ))
        }) {
            Some((_, _, _, e)) if e != inner.epoch() => return bad("cursor has expired"),
            Some((k, p, t, _)) => Some((k, p, t)),
            None => return bad("cursor is invalid"),
        },
        Some(_) => return bad("cursor must be a string"),
    };
    let (calls, next, total, page_no) = {
        let data = lock(&inner.data);
        let after = position.map(|(k, _, _)| k);
        let mut keys = inner.matching(&data, &q, after, PAGE + 1);
        let more = keys.len() > PAGE;
        keys.truncate(PAGE);
        let total = match position {
            Some((_, _, t)) => t,
            None if !more => keys.len() as u64,
            None => inner.matching(&data, &q, None, usize::MAX).len() as u64,
        };
        let next = if more { keys.last().copied() } else { None };
        let calls: Vec<GongSimCall> = keys
            .iter()
            .filter_map(|(_, j)| inner.call(&data, *j))
            .collect();
        (calls, next, total, position.map_or(0, |(_, p, _)| p))
    };
    if calls.is_empty() {
        return error(StatusCode::NOT_FOUND, NO_CALLS_FOUND);
    }
    let mut records = json!({
        "totalRecords": total,
        "currentPageSize": calls.len(),
        "currentPageNumber": page_no,
    });
    if let Some((k, i)) = next {
        records["cursor"] = json!(encode_cursor(
            &json!({"k": k, "i": i, "p": page_no + 1, "t": total, "e": inner.epoch()})
        ));
    }
    let calls: Vec<Value> = calls.iter().map(|c| inner.call_json(c, &sel)).collect();
    json_response(
        StatusCode::OK,
        &json!({"requestId": request_id(), "records": records, "calls": calls}),
    )
}

impl GongSim {
    /// Starts the simulator on `127.0.0.1` and an ephemeral port.
    pub async fn start(cfg: GongSimConfig) -> std::io::Result<GongSim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let seeded = if cfg.users == 0 { 0 } else { cfg.calls };
        let inner = Arc::new(Inner {
            per_window: SimLimiter::new(cfg.rate_max, cfg.rate_window),
            daily: SimLimiter::new(cfg.daily_cap, Duration::from_secs(24 * 3_600)),
            seeded,
            span: u64::from(cfg.days.max(1)) * 86_400,
            data: Mutex::new(Data::default()),
            cursor_epoch: std::sync::atomic::AtomicU64::new(0),
            expire_countdown: std::sync::atomic::AtomicU64::new(0),
            user_filters: Mutex::new(Vec::new()),
            common: common.clone(),
            cfg,
        });
        let router = Router::new()
            .route("/v2/users", get(list_users))
            .route("/v2/calls/extensive", post(calls_extensive))
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        Ok(GongSim { inner, server })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Expires every cursor issued so far (users and calls): Gong's cursors are opaque and
    /// not valid forever, and a later request with one is answered 400 "cursor has
    /// expired".
    pub fn expire_cursors(&self) {
        self.inner.cursor_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Serves the next `n` requests, then expires every cursor issued so far (as
    /// [`GongSim::expire_cursors`] would between request `n` and request `n + 1`).
    pub fn expire_cursors_after(&self, n: u64) {
        self.inner
            .expire_countdown
            .store(n.saturating_add(1), Ordering::SeqCst);
    }

    /// The `filter.primaryUserIds` of every `POST /v2/calls/extensive` request with a valid
    /// filter, in the order served (`None`: no list sent). Tests read it to check which
    /// users each request asked for.
    pub fn primary_user_ids_log(&self) -> Vec<Option<Vec<String>>> {
        lock(&self.inner.user_filters).clone()
    }

    /// Forgets the requests logged by [`GongSim::primary_user_ids_log`].
    pub fn clear_primary_user_ids_log(&self) {
        lock(&self.inner.user_filters).clear();
    }

    /// Requests served, per endpoint (`"GET /v2/users"`, `"POST /v2/calls/extensive"`).
    pub fn counters(&self) -> &RequestCounters {
        &self.inner.common.counters
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// Answers the next `n` requests with 429 and the configured `Retry-After`.
    pub fn burst_429(&self, n: u64) {
        self.inner.common.burst_429.store(n, Ordering::Relaxed);
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &GongSimConfig {
        &self.inner.cfg
    }

    /// Every user, seeded and added, active or not, in id order.
    pub fn users(&self) -> Vec<GongSimUser> {
        let data = lock(&self.inner.data);
        (1..=self.inner.max_user(&data))
            .filter_map(|i| self.inner.user(&data, i))
            .collect()
    }

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<GongSimUser> {
        let data = lock(&self.inner.data);
        self.inner.user(&data, parse_index(id, USER_BASE)?)
    }

    /// The ids of the active users.
    pub fn active_user_ids(&self) -> Vec<String> {
        self.users()
            .into_iter()
            .filter(|u| u.active)
            .map(|u| u.id)
            .collect()
    }

    /// Adds an active user and returns its id.
    pub fn add_user(&self, first_name: &str, last_name: &str, email: &str) -> String {
        let mut data = lock(&self.inner.data);
        data.extra_users += 1;
        let i = self.inner.max_user(&data);
        let user = GongSimUser {
            id: (USER_BASE + i).to_string(),
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            title: "Account Executive".to_owned(),
            active: true,
            created: Utc::now(),
        };
        let id = user.id.clone();
        data.users.insert(i, user);
        id
    }

    /// Deactivates a user (its calls stay). False if there is no such user.
    pub fn deactivate_user(&self, id: &str) -> bool {
        let Some(i) = parse_index(id, USER_BASE) else {
            return false;
        };
        let mut data = lock(&self.inner.data);
        let Some(mut user) = self.inner.user(&data, i) else {
            return false;
        };
        user.active = false;
        data.users.insert(i, user);
        true
    }

    /// Adds a call and returns its id; `None` if the host is not a user.
    pub fn add_call(&self, call: NewGongCall) -> Option<String> {
        let host = parse_index(&call.primary_user_id, USER_BASE)?;
        let mut data = lock(&self.inner.data);
        if host > self.inner.max_user(&data) {
            return None;
        }
        data.extra_calls += 1;
        let j = self.inner.max_call(&data);
        let mut c = self.inner.synth(&data, j, host, call.started);
        if let Some(t) = call.title {
            c.title = t;
        }
        if let Some(d) = call.duration {
            c.duration = d;
        }
        if let Some(p) = call.parties {
            c.scope = if p.iter().any(|p| p.affiliation == GongAffiliation::External) {
                "External"
            } else {
                "Internal"
            }
            .to_owned();
            c.parties = p;
        }
        let id = c.id.clone();
        data.calls.insert(j, c);
        Some(id)
    }

    /// Changes a call (Gong calls change after they happen: title, parties, …); its id
    /// stays. False if there is no such call.
    pub fn modify_call(&self, id: &str, f: impl FnOnce(&mut GongSimCall)) -> bool {
        let Some(j) = parse_index(id, CALL_BASE) else {
            return false;
        };
        let mut data = lock(&self.inner.data);
        let Some(mut c) = self.inner.call(&data, j) else {
            return false;
        };
        f(&mut c);
        c.id = (CALL_BASE + j).to_string();
        data.calls.insert(j, c);
        true
    }

    /// The call with this id, as Gong holds it now.
    pub fn call(&self, id: &str) -> Option<GongSimCall> {
        let data = lock(&self.inner.data);
        self.inner.call(&data, parse_index(id, CALL_BASE)?)
    }

    /// How many calls exist (seeded plus added).
    pub fn call_count(&self) -> u64 {
        self.inner.max_call(&lock(&self.inner.data))
    }

    /// Every call, generated one at a time in id order (a million cost no memory).
    pub fn calls(&self) -> impl Iterator<Item = GongSimCall> + '_ {
        (1..=self.call_count()).filter_map(move |j| {
            let data = lock(&self.inner.data);
            self.inner.call(&data, j)
        })
    }

    /// The calls the extensive endpoint returns for `fromDateTime = from` (inclusive),
    /// `toDateTime = to` (exclusive) and `primaryUserIds = hosts` (every host when empty),
    /// in its order.
    pub fn truth_calls(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        hosts: &[String],
    ) -> Vec<GongSimCall> {
        let q = CallQuery {
            from: Some(from),
            to: Some(to),
            users: (!hosts.is_empty()).then(|| hosts.iter().cloned().collect()),
            ..Default::default()
        };
        let data = lock(&self.inner.data);
        self.inner
            .matching(&data, &q, None, usize::MAX)
            .into_iter()
            .filter_map(|(_, j)| self.inner.call(&data, j))
            .collect()
    }

    /// Whether a call is served malformed under the current fault settings.
    pub fn is_malformed(&self, id: &str) -> bool {
        parse_index(id, CALL_BASE).is_some_and(|j| self.inner.common.is_malformed(7, j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(users: u64, calls: u64, days: u32) -> Inner {
        let cfg = GongSimConfig {
            users,
            calls,
            days,
            ..Default::default()
        };
        Inner {
            per_window: SimLimiter::new(3, Duration::from_secs(1)),
            daily: SimLimiter::new(10, Duration::from_secs(86_400)),
            seeded: if users == 0 { 0 } else { calls },
            span: u64::from(days.max(1)) * 86_400,
            data: Mutex::new(Data::default()),
            cursor_epoch: std::sync::atomic::AtomicU64::new(0),
            expire_countdown: std::sync::atomic::AtomicU64::new(0),
            user_filters: Mutex::new(Vec::new()),
            common: Arc::new(Common::new(cfg.seed, FaultConfig::default())),
            cfg,
        }
    }

    #[test]
    fn seeded_calls_are_in_start_order_within_the_span() {
        for (calls, days) in [(1, 1), (7, 3), (1_000, 30), (200_000, 1)] {
            let s = inner(5, calls, days);
            let mut prev = None;
            for j in (1..=calls).step_by(usize::try_from(calls / 500 + 1).unwrap()) {
                let t = s.seeded_started(j);
                assert!(t < s.cfg.now && t >= s.cfg.now - secs(s.span), "{j}");
                if let Some(p) = prev {
                    assert!(t >= p);
                }
                prev = Some(t);
            }
        }
    }

    #[test]
    fn range_scan_matches_a_brute_force_filter() {
        let s = inner(4, 600, 20);
        let data = Data::default();
        let from = s.cfg.now - chrono::Duration::days(12);
        let to = s.cfg.now - chrono::Duration::days(3);
        let host = (USER_BASE + 2).to_string();
        let q = CallQuery {
            from: Some(from),
            to: Some(to),
            users: Some([host.clone()].into()),
            ..Default::default()
        };
        let got: Vec<u64> = s
            .matching(&data, &q, None, usize::MAX)
            .iter()
            .map(|k| k.1)
            .collect();
        let want: Vec<u64> = (1..=600)
            .filter(|j| {
                let c = s.call(&data, *j).unwrap();
                c.started >= from && c.started < to && c.primary_user_id == host
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);
        // Paging by key gives the same, in pieces.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = s.matching(&data, &q, after, 7);
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            paged.extend(page.iter().map(|k| k.1));
        }
        assert_eq!(paged, want);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(&json!({"k": -5, "i": 3, "p": 1, "t": 9}));
        assert!(c.starts_with("eyJ"));
        assert_eq!(decode_cursor(&c).unwrap()["i"], 3);
        assert!(decode_cursor("%%%").is_none());
        assert!(decode_cursor("bm90IGpzb24").is_none());
    }
}
