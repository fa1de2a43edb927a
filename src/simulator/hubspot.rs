//! HubSpot CRM v3/v4 simulator: list, search, property definitions, associations batch
//! read, OAuth token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::{
    Common, FaultConfig, Injected, RequestCounters, SimLimiter, SimServer, decide,
    dropped_response, lock, mix,
};

/// A HubSpot CRM object type the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HubSpotObject {
    /// `companies` (`0-2`).
    Companies,
    /// `contacts` (`0-1`).
    Contacts,
    /// `deals` (`0-3`).
    Deals,
}

impl HubSpotObject {
    /// Every object type.
    pub const ALL: [HubSpotObject; 3] = [
        HubSpotObject::Companies,
        HubSpotObject::Contacts,
        HubSpotObject::Deals,
    ];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "companies" | "company" | "0-2" => Some(HubSpotObject::Companies),
            "contacts" | "contact" | "0-1" => Some(HubSpotObject::Contacts),
            "deals" | "deal" | "0-3" => Some(HubSpotObject::Deals),
            _ => None,
        }
    }

    /// The object type's name in paths: `companies`, `contacts`, `deals`.
    pub fn as_str(self) -> &'static str {
        match self {
            HubSpotObject::Companies => "companies",
            HubSpotObject::Contacts => "contacts",
            HubSpotObject::Deals => "deals",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            HubSpotObject::Companies => "company",
            HubSpotObject::Contacts => "contact",
            HubSpotObject::Deals => "deal",
        }
    }

    /// The last-modified property: `lastmodifieddate` for contacts, `hs_lastmodifieddate`
    /// for the others (filtering contacts on `hs_lastmodifieddate` finds nothing, as in the
    /// real API).
    pub fn modified_property(self) -> &'static str {
        match self {
            HubSpotObject::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }

    fn salt(self) -> u64 {
        match self {
            HubSpotObject::Companies => 1,
            HubSpotObject::Contacts => 2,
            HubSpotObject::Deals => 3,
        }
    }

    /// The properties HubSpot itself defines for the type in the simulated portal (the
    /// seeded records set them, except `description`, which stays empty).
    fn hubspot_defined(self) -> &'static [&'static str] {
        match self {
            HubSpotObject::Companies => &[
                "annualrevenue",
                "createdate",
                "description",
                "domain",
                "hs_custom_tier",
                "hs_lastmodifieddate",
                "hs_object_id",
                "hubspot_owner_id",
                "industry",
                "name",
                "numberofemployees",
            ],
            HubSpotObject::Contacts => &[
                "associatedcompanyid",
                "createdate",
                "email",
                "firstname",
                "hs_language",
                "hs_object_id",
                "hubspot_owner_id",
                "jobtitle",
                "lastmodifieddate",
                "lastname",
                "lifecyclestage",
                "phone",
            ],
            HubSpotObject::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "deal_currency_code",
                "dealname",
                "dealstage",
                "hs_deal_stage_probability",
                "hs_is_closed",
                "hs_is_closed_won",
                "hs_lastmodifieddate",
                "hs_manual_forecast_category",
                "hs_object_id",
                "hs_priority",
                "hubspot_owner_id",
                "pipeline",
            ],
        }
    }

    /// The name of the portal's `k`-th custom (user-defined) property of this type.
    pub fn custom_property(self, k: usize) -> String {
        format!("{}_custom_property_{k:04}", self.singular())
    }

    fn default_properties(self) -> &'static [&'static str] {
        match self {
            HubSpotObject::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "lastname",
                "hs_object_id",
                "lastmodifieddate",
            ],
            HubSpotObject::Companies => &[
                "createdate",
                "domain",
                "name",
                "hs_lastmodifieddate",
                "hs_object_id",
            ],
            HubSpotObject::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }
}

/// An OAuth app the simulator's token endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpotOAuthApp {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
    /// The refresh token it accepts.
    pub refresh_token: String,
    /// Lifetime of issued access tokens, in seconds.
    pub expires_in: u64,
}

/// Configuration of a [`HubSpotSim`].
#[derive(Debug, Clone)]
pub struct HubSpotSimConfig {
    /// Seed of the generated data and of fault decisions.
    pub seed: u64,
    /// Seeded companies (ids `1..=companies`).
    pub companies: u64,
    /// Seeded contacts (ids `1..=contacts`).
    pub contacts: u64,
    /// Seeded deals (ids `1..=deals`).
    pub deals: u64,
    /// The private-app token accepted as `Authorization: Bearer …`.
    pub access_token: String,
    /// An OAuth app for `POST /oauth/v1/token`, if any.
    pub oauth: Option<HubSpotOAuthApp>,
    /// Every seeded record was created and last modified at or before this instant.
    pub base_time: DateTime<Utc>,
    /// Whether rate limits are enforced (turn off for throughput benchmarks).
    pub rate_limits: bool,
    /// Requests per `rest_window` outside search (HubSpot: 100 per rolling 10 s).
    pub rest_max: u32,
    /// The REST window.
    pub rest_window: Duration,
    /// Search requests per `search_window` (HubSpot: 5 per second).
    pub search_max: u32,
    /// The search window.
    pub search_window: Duration,
    /// Associations per record per page in v4 batch reads and inline association blocks.
    pub assoc_page_size: usize,
    /// How long a write takes to show up in search results.
    pub search_lag: Duration,
    /// Injected faults.
    pub faults: FaultConfig,
    /// The account's daily request quota (`None`: unlimited). Once used up, every CRM
    /// request answers HubSpot's `DAILY` 429 until [`HubSpotSim::reset_daily_quota`].
    pub daily_limit: Option<u64>,
    /// The account's time zone, as `GET /account-info/v3/details` reports it.
    pub time_zone: String,
    /// The account's current UTC offset in milliseconds (`utcOffsetMilliseconds`).
    pub utc_offset_ms: i64,
    /// Custom (user-defined) properties the portal defines per object type, named by
    /// [`HubSpotObject::custom_property`]; `GET /crm/v3/properties/{type}` lists them with
    /// HubSpot's own, and about three in four seeded records have a value for each.
    pub custom_properties: usize,
}

impl Default for HubSpotSimConfig {
    fn default() -> Self {
        HubSpotSimConfig {
            seed: 42,
            companies: 100,
            contacts: 400,
            deals: 200,
            access_token: "sim-hubspot-token".into(),
            oauth: None,
            base_time: Utc
                .with_ymd_and_hms(2024, 6, 1, 0, 0, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            rate_limits: true,
            rest_max: 100,
            rest_window: Duration::from_secs(10),
            search_max: 5,
            search_window: Duration::from_secs(1),
            assoc_page_size: 100,
            search_lag: Duration::ZERO,
            faults: FaultConfig::default(),
            daily_limit: None,
            time_zone: "Etc/UTC".into(),
            utc_offset_ms: 0,
            custom_properties: 2,
        }
    }
}

/// The simulator's view of one record: what the real portal would hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    /// Object type.
    pub object: HubSpotObject,
    /// Record id (`hs_object_id`).
    pub id: u64,
    /// `createdAt`.
    pub created_at: DateTime<Utc>,
    /// `updatedAt` (and the last-modified property).
    pub updated_at: DateTime<Utc>,
    /// `archivedAt`, when archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// Property values (strings, as in the real API; `None` is JSON null).
    pub properties: BTreeMap<String, Option<String>>,
    /// The associated company (contacts and deals).
    pub company_id: Option<u64>,
    /// The associated contacts (deals).
    pub contact_ids: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Override {
    created_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    archived_at: Option<DateTime<Utc>>,
    props: BTreeMap<String, Option<String>>,
    /// Contacts whose association with this deal was removed.
    unlinked_contacts: BTreeSet<u64>,
    written_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Data {
    /// Served as search's `paging.next.after` instead of the real offset (a provider
    /// sending cursors the client cannot use).
    search_after_override: Option<String>,
    extra: BTreeMap<HubSpotObject, u64>,
    overlay: BTreeMap<(HubSpotObject, u64), Override>,
    search_lag: Duration,
    issued_tokens: HashMap<String, DateTime<Utc>>,
    next_token: u64,
}

/// An endpoint whose answers a hook counts (see [`HubSpotSim::after_served`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubSpotEndpoint {
    /// `GET /crm/v3/objects/{type}` (live or archived list) of one object type.
    List(HubSpotObject),
    /// `POST /crm/v3/objects/{type}/search` of one object type.
    Search(HubSpotObject),
    /// `POST /crm/v4/associations/{from}/{to}/batch/read`.
    Associations,
}

type HookFn = Box<dyn FnOnce(&HubSpotPortal) + Send>;

struct Hook {
    endpoint: HubSpotEndpoint,
    remaining: u64,
    run: HookFn,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("endpoint", &self.endpoint)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    cfg: HubSpotSimConfig,
    common: Arc<Common>,
    rest: SimLimiter,
    search: SimLimiter,
    data: Mutex<Data>,
    hooks: Mutex<Vec<Hook>>,
    daily_used: Mutex<u64>,
}

/// A handle on the simulated portal's data: what a hook (see [`HubSpotSim::after_served`])
/// changes between two requests of a sync. Changes show in every later answer at once
/// (search included, unless a search lag is set), as in the real portal.
#[derive(Debug, Clone)]
pub struct HubSpotPortal {
    inner: Arc<Inner>,
}

/// A fake HubSpot portal on loopback.
///
/// Serves `GET /crm/v3/objects/{type}`, `POST /crm/v3/objects/{type}/search`,
/// `GET /crm/v3/properties/{type}`,
/// `POST /crm/v4/associations/{from}/{to}/batch/read` and `POST /oauth/v1/token` with the
/// real shapes, limits and errors (see `reference/provider-apis.md` section 1).
#[derive(Debug)]
pub struct HubSpotSim {
    inner: Arc<Inner>,
    server: SimServer,
}

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Edsger", "Margaret", "Ken", "Radia", "Donald",
    "Frances", "Tim",
];
const LAST: [&str; 12] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Liskov",
    "Dijkstra",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Knuth",
    "Allen",
    "Berners-Lee",
];
const WORDS: [&str; 16] = [
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
    "Pied Piper",
    "Dunder",
];
const INDUSTRIES: [&str; 6] = [
    "COMPUTER_SOFTWARE",
    "FINANCIAL_SERVICES",
    "HOSPITAL_HEALTH_CARE",
    "RETAIL",
    "MANUFACTURING",
    "",
];
const STAGES: [(&str, &str); 7] = [
    ("appointmentscheduled", "0.2"),
    ("qualifiedtobuy", "0.4"),
    ("presentationscheduled", "0.6"),
    ("decisionmakerboughtin", "0.8"),
    ("contractsent", "0.9"),
    ("closedwon", "1"),
    ("closedlost", "0"),
];
const LIFECYCLE: [&str; 4] = ["lead", "marketingqualifiedlead", "opportunity", "customer"];
const FORECAST: [&str; 4] = ["PIPELINE", "BEST_CASE", "COMMIT", "OMIT"];

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    let i = usize::try_from(h % list.len() as u64).unwrap_or(0);
    list[i]
}

impl Inner {
    fn h(&self, obj: HubSpotObject, id: u64, k: u64) -> u64 {
        mix(self.cfg.seed, obj.salt() * 1_000 + k, id)
    }

    fn count(&self, obj: HubSpotObject) -> u64 {
        match obj {
            HubSpotObject::Companies => self.cfg.companies,
            HubSpotObject::Contacts => self.cfg.contacts,
            HubSpotObject::Deals => self.cfg.deals,
        }
    }

    fn max_id(&self, data: &Data, obj: HubSpotObject) -> u64 {
        self.count(obj) + data.extra.get(&obj).copied().unwrap_or(0)
    }

    fn company_name(&self, cid: u64) -> String {
        format!(
            "{} {}",
            pick(&WORDS, self.h(HubSpotObject::Companies, cid, 1)),
            cid
        )
    }

    fn company_domain(&self, cid: u64) -> String {
        let word = pick(&WORDS, self.h(HubSpotObject::Companies, cid, 1))
            .to_lowercase()
            .replace(' ', "");
        format!("{word}{cid}.example.com")
    }

    fn company_of(&self, obj: HubSpotObject, id: u64) -> Option<u64> {
        let n = self.cfg.companies;
        if n == 0 {
            return None;
        }
        match obj {
            HubSpotObject::Contacts => Some((id - 1) % n + 1),
            HubSpotObject::Deals => Some(self.h(obj, id, 20) % n + 1),
            HubSpotObject::Companies => None,
        }
    }

    fn contacts_of_deal(&self, id: u64) -> Vec<u64> {
        let (n, contacts) = (self.cfg.companies, self.cfg.contacts);
        let Some(company) = self.company_of(HubSpotObject::Deals, id) else {
            return Vec::new();
        };
        if company > contacts {
            return Vec::new();
        }
        // Contacts of company c are c, c + n, c + 2n, … up to `contacts`.
        let per_company = (contacts - company) / n + 1;
        let k = 1 + self.h(HubSpotObject::Deals, id, 21) % 3;
        let set: BTreeSet<u64> = (0..k)
            .map(|j| company + (self.h(HubSpotObject::Deals, id, 22 + j) % per_company) * n)
            .collect();
        set.into_iter().collect()
    }

    fn contacts_of_company(&self, cid: u64) -> Vec<u64> {
        let n = self.cfg.companies;
        (0..)
            .map(|m| cid + m * n)
            .take_while(|id| *id <= self.cfg.contacts)
            .collect()
    }

    /// The seeded version of a record (before mutations).
    /// When the seeded record `id` was created (before any mutation).
    fn base_created(&self, obj: HubSpotObject, id: u64) -> DateTime<Utc> {
        let h = |k| self.h(obj, id, k);
        self.cfg.base_time - chrono::Duration::days(400)
            + chrono::Duration::seconds(i64::try_from(h(1) % (300 * 86_400)).unwrap_or(0))
            + chrono::Duration::milliseconds(i64::try_from(h(3) % 1000).unwrap_or(0))
    }

    /// When record `id` was created, without generating the record.
    fn created_at(&self, data: &Data, obj: HubSpotObject, id: u64) -> DateTime<Utc> {
        data.overlay
            .get(&(obj, id))
            .and_then(|o| o.created_at)
            .unwrap_or_else(|| self.base_created(obj, id))
    }

    fn base(&self, obj: HubSpotObject, id: u64) -> SimRecord {
        let base = self.cfg.base_time;
        let h = |k| self.h(obj, id, k);
        let created = self.base_created(obj, id);
        let span_ms = (base - created).num_milliseconds().max(1);
        let updated = created
            + chrono::Duration::milliseconds(
                i64::try_from(h(2) % u64::try_from(span_ms).unwrap_or(1)).unwrap_or(0),
            );
        let mut p: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            p.insert(k.to_owned(), Some(v));
        };
        set("createdate", iso(created));
        set("hs_object_id", id.to_string());
        set("hubspot_owner_id", (1000 + h(4) % 20).to_string());
        let company_id = self.company_of(obj, id);
        let mut contact_ids = Vec::new();
        match obj {
            HubSpotObject::Companies => {
                set("name", self.company_name(id));
                set("domain", self.company_domain(id));
                set("industry", pick(&INDUSTRIES, h(5)).to_owned());
                set("numberofemployees", (1 + h(6) % 5000).to_string());
                let revenue = if h(7) % 17 == 0 {
                    String::new()
                } else {
                    format!("{}.{:02}", h(7) % 50_000_000, h(8) % 100)
                };
                set("annualrevenue", revenue);
                set(
                    "hs_custom_tier",
                    pick(&["gold", "silver", "bronze"], h(9)).to_owned(),
                );
            }
            HubSpotObject::Contacts => {
                let first = pick(&FIRST, h(5));
                let last = pick(&LAST, h(6));
                set("firstname", first.to_owned());
                set("lastname", last.to_owned());
                let domain =
                    company_id.map_or_else(|| "example.com".to_owned(), |c| self.company_domain(c));
                set(
                    "email",
                    format!(
                        "{}.{}{id}@{domain}",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                );
                set(
                    "jobtitle",
                    pick(&["VP Sales", "CTO", "Engineer", "Buyer", ""], h(7)).to_owned(),
                );
                let phone = if h(8) % 5 == 0 {
                    String::new()
                } else {
                    format!("+1 555 {:04}", h(8) % 10_000)
                };
                set("phone", phone);
                set("lifecyclestage", pick(&LIFECYCLE, h(9)).to_owned());
                if let Some(c) = company_id {
                    set("associatedcompanyid", c.to_string());
                }
                set("hs_language", "en".to_owned());
            }
            HubSpotObject::Deals => {
                let company =
                    company_id.map_or_else(|| "Direct".to_owned(), |c| self.company_name(c));
                set(
                    "dealname",
                    format!(
                        "{company} - {}",
                        pick(&["Renewal", "Expansion", "New business"], h(5))
                    ),
                );
                set(
                    "amount",
                    format!("{}.{:02}", 1_000 + h(6) % 250_000, h(7) % 100),
                );
                set(
                    "deal_currency_code",
                    pick(&["USD", "EUR", "GBP"], h(8)).to_owned(),
                );
                let (stage, probability) = STAGES[usize::try_from(h(9) % 7).unwrap_or(0)];
                set("dealstage", stage.to_owned());
                set("hs_deal_stage_probability", probability.to_owned());
                set("pipeline", "default".to_owned());
                let close = (created
                    + chrono::Duration::days(30 + i64::try_from(h(10) % 90).unwrap_or(0)))
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map_or(created, |d| d.and_utc());
                set("closedate", iso(close));
                let closed = stage.starts_with("closed");
                set("hs_is_closed", closed.to_string());
                set("hs_is_closed_won", (stage == "closedwon").to_string());
                set(
                    "hs_manual_forecast_category",
                    pick(&FORECAST, h(11)).to_owned(),
                );
                set(
                    "hs_priority",
                    pick(&["low", "medium", "high"], h(12)).to_owned(),
                );
                contact_ids = self.contacts_of_deal(id);
            }
        }
        for k in 0..self.cfg.custom_properties {
            let hk = mix(
                self.cfg.seed,
                obj.salt() * 1_000 + 100,
                id.wrapping_mul(1_000_003).wrapping_add(k as u64),
            );
            if !hk.is_multiple_of(4) {
                p.insert(obj.custom_property(k), Some(format!("value {}", hk % 1000)));
            }
        }
        let mut rec = SimRecord {
            object: obj,
            id,
            created_at: created,
            updated_at: updated,
            archived_at: None,
            properties: p,
            company_id,
            contact_ids,
        };
        rec.properties
            .insert(obj.modified_property().to_owned(), Some(iso(updated)));
        rec
    }

    fn current(&self, data: &Data, obj: HubSpotObject, id: u64) -> Option<SimRecord> {
        if id == 0 || id > self.max_id(data, obj) {
            return None;
        }
        let mut rec = self.base(obj, id);
        if let Some(o) = data.overlay.get(&(obj, id)) {
            if let Some(c) = o.created_at {
                rec.created_at = c;
                rec.properties.insert("createdate".into(), Some(iso(c)));
            }
            rec.updated_at = o.updated_at;
            rec.archived_at = o.archived_at;
            for (k, v) in &o.props {
                rec.properties.insert(k.clone(), v.clone());
            }
            rec.contact_ids.retain(|c| !o.unlinked_contacts.contains(c));
            rec.properties
                .insert(obj.modified_property().to_owned(), Some(iso(o.updated_at)));
        }
        Some(rec)
    }

    /// Counts a successful answer of `endpoint` and runs the hooks it makes due (outside
    /// every lock, so they can change the data).
    fn served(self: &Arc<Self>, endpoint: HubSpotEndpoint) {
        let due: Vec<HookFn> = {
            let mut hooks = lock(&self.hooks);
            let mut due = Vec::new();
            let mut keep = Vec::with_capacity(hooks.len());
            for mut h in hooks.drain(..) {
                if h.endpoint == endpoint {
                    h.remaining -= 1;
                    if h.remaining == 0 {
                        due.push(h.run);
                        continue;
                    }
                }
                keep.push(h);
            }
            *hooks = keep;
            due
        };
        let portal = HubSpotPortal {
            inner: self.clone(),
        };
        for run in due {
            run(&portal);
        }
    }

    /// Counts a request against the daily quota; false once the quota is used up.
    fn take_daily(&self) -> bool {
        let Some(limit) = self.cfg.daily_limit else {
            return true;
        };
        let mut used = lock(&self.daily_used);
        if *used >= limit {
            return false;
        }
        *used += 1;
        true
    }

    /// `(limit, remaining)` of the daily quota, when one is set.
    fn daily(&self) -> Option<(u64, u64)> {
        let limit = self.cfg.daily_limit?;
        Some((limit, limit.saturating_sub(*lock(&self.daily_used))))
    }

    fn is_archived(data: &Data, obj: HubSpotObject, id: u64) -> bool {
        data.overlay
            .get(&(obj, id))
            .is_some_and(|o| o.archived_at.is_some())
    }

    fn record_json(
        &self,
        rec: &SimRecord,
        props: &[String],
        associations: &[HubSpotObject],
    ) -> Value {
        if self.common.is_malformed(rec.object.salt(), rec.id) {
            return json!({"id": rec.id.to_string(), "properties": "corrupt", "createdAt": 12, "updatedAt": "x", "archived": "no"});
        }
        let mut properties = Map::new();
        let wanted: Vec<&str> = if props.is_empty() {
            rec.object.default_properties().to_vec()
        } else {
            props.iter().map(String::as_str).collect()
        };
        for name in
            wanted
                .into_iter()
                .chain(["hs_object_id", "createdate", rec.object.modified_property()])
        {
            if let Some(v) = rec.properties.get(name) {
                properties.insert(
                    name.to_owned(),
                    v.clone().map_or(Value::Null, Value::String),
                );
            }
        }
        let mut out = json!({
            "id": rec.id.to_string(),
            "properties": properties,
            "createdAt": iso(rec.created_at),
            "updatedAt": iso(rec.updated_at),
            "archived": rec.archived_at.is_some(),
        });
        if let Some(a) = rec.archived_at {
            out["archivedAt"] = json!(iso(a));
        }
        if !associations.is_empty() {
            let mut assoc = Map::new();
            for to in associations {
                let ids = self.associated(rec, *to);
                if ids.is_empty() {
                    continue;
                }
                let kind = format!("{}_to_{}", rec.object.singular(), to.singular());
                let shown: Vec<Value> = ids
                    .iter()
                    .take(self.cfg.assoc_page_size.max(1))
                    .map(|id| json!({"id": id.to_string(), "type": kind}))
                    .collect();
                let mut block = json!({ "results": shown });
                if ids.len() > self.cfg.assoc_page_size.max(1) {
                    block["paging"] =
                        json!({"next": {"after": self.cfg.assoc_page_size.to_string()}});
                }
                assoc.insert(to.as_str().to_owned(), block);
            }
            out["associations"] = Value::Object(assoc);
        }
        out
    }

    /// The ids associated with a record (as the portal holds it now); empty when the
    /// simulator does not model the pair.
    fn associated(&self, rec: &SimRecord, to: HubSpotObject) -> Vec<u64> {
        use HubSpotObject::*;
        let (from, id) = (rec.object, rec.id);
        match (from, to) {
            (Deals, Contacts) => rec.contact_ids.clone(),
            (Deals, Companies) | (Contacts, Companies) => {
                self.company_of(from, id).into_iter().collect()
            }
            (Companies, Contacts) => self.contacts_of_company(id),
            _ => Vec::new(),
        }
    }

    fn check_auth(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        if token == self.cfg.access_token {
            return true;
        }
        let data = lock(&self.data);
        data.issued_tokens
            .get(token)
            .is_some_and(|exp| *exp > Utc::now())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Budget {
    Rest,
    Search,
}

/// A list answer in HubSpot's member order: `results`, then `paging` when there is one (a
/// `Value` object would sort them), written into one buffer.
fn list_response(results: &Value, paging: Option<&Value>) -> Response<Body> {
    let mut out = br#"{"results":"#.to_vec();
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut out, results);
    if let Some(p) = paging {
        out.extend_from_slice(br#","paging":"#);
        let _ = serde_json::to_writer(&mut out, p);
    }
    out.push(b'}');
    json_text_response(StatusCode::OK, out)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    json_text_response(status, body.to_string().into_bytes())
}

fn json_text_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    resp
}

fn error(status: StatusCode, category: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({
            "status": "error",
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "category": category,
        }),
    )
}

fn rate_limited(budget: Budget, inner: &Inner) -> Response<Body> {
    let (message, policy) = match budget {
        Budget::Rest => (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        ),
        Budget::Search => ("You have reached your secondly limit.", "SECONDLY"),
    };
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "policyName": policy,
            "requestId": uuid::Uuid::new_v4().to_string(),
        }),
    );
    if budget == Budget::Rest {
        add_rate_headers(&mut resp, inner, 0);
    }
    resp
}

/// HubSpot's answer once the account's daily quota is used up: `policyName: "DAILY"`, the
/// daily headers at zero, no `Retry-After` (the quota resets at midnight in the account's
/// time zone).
fn daily_limited(inner: &Inner) -> Response<Body> {
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({
            "status": "error",
            "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "policyName": "DAILY",
            "requestId": uuid::Uuid::new_v4().to_string(),
        }),
    );
    add_daily_headers(&mut resp, inner);
    resp
}

/// `X-HubSpot-RateLimit-Daily` and `-Daily-Remaining` (private apps only; HubSpot does not
/// send them to OAuth apps, and neither does the simulator when it has an OAuth app).
fn add_daily_headers(resp: &mut Response<Body>, inner: &Inner) {
    let Some((limit, remaining)) = inner.daily() else {
        return;
    };
    if inner.cfg.oauth.is_some() {
        return;
    }
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-hubspot-ratelimit-daily", limit),
        ("x-hubspot-ratelimit-daily-remaining", remaining),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            h.insert(name, v);
        }
    }
}

fn add_rate_headers(resp: &mut Response<Body>, inner: &Inner, remaining: usize) {
    let h = resp.headers_mut();
    let window_ms = inner.cfg.rest_window.as_millis().to_string();
    for (name, value) in [
        ("x-hubspot-ratelimit-max", inner.rest.max().to_string()),
        ("x-hubspot-ratelimit-remaining", remaining.to_string()),
        ("x-hubspot-ratelimit-interval-milliseconds", window_ms),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
}

/// Auth, injected faults, latency and the rate limit: `Err` is the response to send instead
/// of serving the request; `Ok` carries the remaining REST budget (for the headers).
async fn admit(
    inner: &Inner,
    headers: &HeaderMap,
    budget: Budget,
) -> Result<Option<usize>, Response<Body>> {
    let (injected, latency) = decide(&inner.common);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !inner.check_auth(headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        ));
    }
    if !inner.take_daily() {
        return Err(daily_limited(inner));
    }
    match injected {
        Injected::ServerError(code) => {
            return Err(error(code, "INTERNAL_ERROR", "internal error"));
        }
        Injected::RateLimited => return Err(rate_limited(budget, inner)),
        Injected::Drop => return Err(dropped_response()),
        Injected::None => {}
    }
    if !inner.cfg.rate_limits {
        return Ok(None);
    }
    let limiter = match budget {
        Budget::Rest => &inner.rest,
        Budget::Search => &inner.search,
    };
    match limiter.check() {
        Ok(remaining) => Ok((budget == Budget::Rest).then_some(remaining)),
        Err(_) => Err(rate_limited(budget, inner)),
    }
}

fn encode_cursor(id: u64) -> String {
    format!("{:x}", id ^ 0x5eed_c0de)
}

fn decode_cursor(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok().map(|v| v ^ 0x5eed_c0de)
}

fn split_list(s: Option<&String>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

async fn list_objects(
    State(inner): State<Arc<Inner>>,
    Path(object_type): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if uri.to_string().len() > MAX_URI_CHARS {
        return error(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            "Request-URI Too Long",
        );
    }
    let remaining = match admit(&inner, &headers, Budget::Rest).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(obj) = HubSpotObject::parse(&object_type) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown object type",
        );
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "limit must be between 1 and 100",
            );
        }
    };
    let start = match q.get("after") {
        None => 1,
        Some(a) => match decode_cursor(a) {
            Some(id) => id,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "Invalid after cursor",
                );
            }
        },
    };
    let archived = q.get("archived").is_some_and(|a| a == "true");
    let props = split_list(q.get("properties"));
    let associations: Vec<HubSpotObject> = split_list(q.get("associations"))
        .iter()
        .filter_map(|a| HubSpotObject::parse(a))
        .collect();

    let (records, next) = {
        let data = lock(&inner.data);
        let max = inner.max_id(&data, obj);
        let mut out = Vec::with_capacity(limit);
        let mut next = None;
        if archived {
            let ids = data
                .overlay
                .range((obj, start)..=(obj, u64::MAX))
                .filter(|(_, o)| o.archived_at.is_some())
                .map(|((_, id), _)| *id);
            for id in ids {
                if out.len() == limit {
                    next = Some(id);
                    break;
                }
                out.extend(inner.current(&data, obj, id));
            }
        } else {
            let mut id = start.max(1);
            while id <= max {
                if !Inner::is_archived(&data, obj, id) {
                    if out.len() == limit {
                        next = Some(id);
                        break;
                    }
                    out.extend(inner.current(&data, obj, id));
                }
                id += 1;
            }
        }
        (out, next)
    };
    let results: Vec<Value> = records
        .iter()
        .map(|r| inner.record_json(r, &props, &associations))
        .collect();
    // Members in HubSpot's order: `results`, then `paging` (the last page has none).
    let results = Value::Array(results);
    let paging = next.map(|n| {
        let after = encode_cursor(n);
        json!({"next": {"after": after, "link": format!("?after={after}")}})
    });
    let mut resp = list_response(&results, paging.as_ref());
    if let Some(r) = remaining {
        add_rate_headers(&mut resp, &inner, r);
    }
    add_daily_headers(&mut resp, &inner);
    inner.served(HubSpotEndpoint::List(obj));
    resp
}

/// HubSpot answers 414 for longer URLs (other connectors measured about 16,300
/// characters); the simulator refuses them a little earlier.
const MAX_URI_CHARS: usize = 16_000;

/// `GET /crm/v3/properties/{type}`: every property the portal defines for the type, in the
/// real shape (`hubspotDefined` only on HubSpot's own), not paged. With `archived=true` only
/// archived definitions, of which the simulated portal has none.
async fn list_properties(
    State(inner): State<Arc<Inner>>,
    Path(object_type): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    let remaining = match admit(&inner, &headers, Budget::Rest).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(obj) = HubSpotObject::parse(&object_type) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown object type",
        );
    };
    let archived = q.get("archived").is_some_and(|a| a == "true");
    let created = iso(inner.cfg.base_time - chrono::Duration::days(800));
    let definition = |name: &str, hubspot: bool| {
        let mut d = json!({
            "name": name,
            "label": name.replace('_', " "),
            "type": "string",
            "fieldType": "text",
            "groupName": format!("{}information", obj.singular()),
            "description": "",
            "displayOrder": -1,
            "calculated": false,
            "externalOptions": false,
            "hasUniqueValue": false,
            "hidden": false,
            "formField": !hubspot,
            "archived": false,
            "options": [],
            "createdAt": created,
            "updatedAt": created,
            "modificationMetadata": {
                "archivable": !hubspot,
                "readOnlyDefinition": hubspot,
                "readOnlyValue": false,
            },
        });
        if hubspot {
            d["hubspotDefined"] = json!(true);
        }
        d
    };
    let results: Vec<Value> = if archived {
        Vec::new()
    } else {
        let written: BTreeSet<String> = {
            let data = lock(&inner.data);
            data.overlay
                .range((obj, 0)..=(obj, u64::MAX))
                .flat_map(|(_, o)| o.props.keys().cloned())
                .collect()
        };
        let own: BTreeSet<&str> = obj.hubspot_defined().iter().copied().collect();
        let custom: BTreeSet<String> = (0..inner.cfg.custom_properties)
            .map(|k| obj.custom_property(k))
            .chain(written.into_iter().filter(|n| !own.contains(n.as_str())))
            .collect();
        own.iter()
            .map(|n| definition(n, true))
            .chain(custom.iter().map(|n| definition(n, false)))
            .collect()
    };
    let mut resp = json_response(StatusCode::OK, &json!({ "results": results }));
    if let Some(r) = remaining {
        add_rate_headers(&mut resp, &inner, r);
    }
    add_daily_headers(&mut resp, &inner);
    resp
}

const OPERATORS: [&str; 13] = [
    "LT",
    "LTE",
    "GT",
    "GTE",
    "EQ",
    "NEQ",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];

#[derive(Debug)]
struct Filter {
    property: String,
    operator: String,
    value: Option<String>,
    high: Option<String>,
    values: Vec<String>,
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_filter(v: &Value) -> Result<Filter, String> {
    let property = scalar(v.get("propertyName")).ok_or("filter without propertyName")?;
    let operator = scalar(v.get("operator")).unwrap_or_else(|| "EQ".into());
    if !OPERATORS.contains(&operator.as_str()) {
        return Err(format!("Unknown operator {operator}"));
    }
    let values = v
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| scalar(Some(x))).collect())
        .unwrap_or_default();
    Ok(Filter {
        property,
        operator,
        value: scalar(v.get("value")),
        high: scalar(v.get("highValue")),
        values,
    })
}

const DATE_PROPS: [&str; 4] = [
    "createdate",
    "lastmodifieddate",
    "hs_lastmodifieddate",
    "closedate",
];

/// Epoch milliseconds as f64: exact, since every plausible instant is below 2^53 ms.
#[allow(clippy::cast_precision_loss)]
fn ms_f64(ms: i64) -> f64 {
    ms as f64
}

/// A property value as a number: epoch ms for date properties, else the parsed number.
fn numeric(property: &str, v: &str) -> Option<f64> {
    if DATE_PROPS.contains(&property) {
        if let Ok(ms) = v.parse::<i64>() {
            return Some(ms_f64(ms));
        }
        return DateTime::parse_from_rfc3339(v)
            .ok()
            .map(|d| ms_f64(d.timestamp_millis()));
    }
    v.parse::<f64>().ok()
}

fn compare(property: &str, have: &str, want: &str) -> Option<std::cmp::Ordering> {
    match (numeric(property, have), numeric(property, want)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => Some(have.cmp(want)),
    }
}

fn matches(f: &Filter, rec: &SimRecord) -> bool {
    use std::cmp::Ordering::*;
    let have = rec
        .properties
        .get(&f.property)
        .and_then(Clone::clone)
        .filter(|v| !v.is_empty());
    let cmp = |want: &Option<String>| -> Option<std::cmp::Ordering> {
        compare(&f.property, have.as_deref()?, want.as_deref()?)
    };
    match f.operator.as_str() {
        "HAS_PROPERTY" => have.is_some(),
        "NOT_HAS_PROPERTY" => have.is_none(),
        "EQ" => cmp(&f.value) == Some(Equal),
        "NEQ" => cmp(&f.value) != Some(Equal),
        "LT" => cmp(&f.value) == Some(Less),
        "LTE" => matches!(cmp(&f.value), Some(Less | Equal)),
        "GT" => cmp(&f.value) == Some(Greater),
        "GTE" => matches!(cmp(&f.value), Some(Greater | Equal)),
        "BETWEEN" => {
            matches!(cmp(&f.value), Some(Greater | Equal))
                && matches!(cmp(&f.high), Some(Less | Equal))
        }
        "IN" => have
            .as_deref()
            .is_some_and(|h| f.values.iter().any(|v| v == &h.to_lowercase() || v == h)),
        "NOT_IN" => !have
            .as_deref()
            .is_some_and(|h| f.values.iter().any(|v| v == &h.to_lowercase() || v == h)),
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let token = f
                .value
                .as_deref()
                .unwrap_or("")
                .trim_matches('*')
                .to_lowercase();
            let found = have
                .as_deref()
                .is_some_and(|h| h.to_lowercase().contains(&token));
            found == (f.operator == "CONTAINS_TOKEN")
        }
        _ => false,
    }
}

/// The lowest value a group's filters allow for `property`, as a number.
fn lower_bound(group: &[Filter], property: &str) -> Option<f64> {
    group
        .iter()
        .filter(|f| {
            f.property == property && matches!(f.operator.as_str(), "GT" | "GTE" | "EQ" | "BETWEEN")
        })
        .filter_map(|f| numeric(property, f.value.as_deref()?))
        .reduce(f64::max)
}

/// The first id a numeric lower bound admits (float-to-int `as` saturates, so huge bounds
/// give `u64::MAX` and an empty scan).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn floor_id(f: f64) -> u64 {
    if f < 1.0 { 1 } else { f.floor() as u64 }
}

async fn search_objects(
    State(inner): State<Arc<Inner>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(resp) = admit(&inner, &headers, Budget::Search).await {
        return resp;
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let Some(obj) = HubSpotObject::parse(&object_type) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown object type",
        );
    };
    if body.len() > 3000 {
        return bad("Request body is too large (3000 characters at most)");
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid input JSON");
    };
    let raw_groups: Vec<Vec<Value>> = match (req.get("filterGroups"), req.get("filters")) {
        (Some(Value::Array(groups)), _) => groups
            .iter()
            .map(|g| {
                g.get("filters")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect(),
        (None, Some(Value::Array(filters))) => vec![filters.clone()],
        _ => Vec::new(),
    };
    if raw_groups.len() > 5 {
        return bad("At most 5 filterGroups are allowed");
    }
    if raw_groups.iter().any(|g| g.len() > 6) {
        return bad("At most 6 filters per group are allowed");
    }
    if raw_groups.iter().map(Vec::len).sum::<usize>() > 18 {
        return bad("At most 18 filters in total are allowed");
    }
    let mut groups = Vec::with_capacity(raw_groups.len());
    for g in &raw_groups {
        match g.iter().map(parse_filter).collect::<Result<Vec<_>, _>>() {
            Ok(f) => groups.push(f),
            Err(m) => return bad(&m),
        }
    }
    let sorts = req
        .get("sorts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if sorts.len() > 1 {
        return bad("Only one sort is allowed");
    }
    let sort = sorts.first().map(|s| {
        let prop = s
            .get("propertyName")
            .and_then(Value::as_str)
            .or_else(|| s.as_str())
            .unwrap_or("createdate")
            .to_owned();
        let desc = s.get("direction").and_then(Value::as_str) == Some("DESCENDING");
        (prop, desc)
    });
    let limit = match req
        .get("limit")
        .map(|l| scalar(Some(l)).and_then(|s| s.parse::<usize>().ok()))
    {
        None => 10,
        Some(Some(l)) if (1..=200).contains(&l) => l,
        Some(_) => return bad("limit must be between 1 and 200"),
    };
    let after = match req
        .get("after")
        .map(|a| scalar(Some(a)).and_then(|s| s.parse::<usize>().ok()))
    {
        None => 0,
        Some(Some(a)) => a,
        Some(None) => return bad("after must be an integer"),
    };
    if after.saturating_add(limit) > 10_000 {
        return bad("Search results are limited to 10,000: page past 10000 results is not allowed");
    }
    let props: Vec<String> = req
        .get("properties")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| scalar(Some(p))).collect())
        .unwrap_or_default();

    let visible_before = Utc::now();
    let (page, total) = {
        let data = lock(&inner.data);
        let lag = chrono::Duration::from_std(data.search_lag).unwrap_or_default();
        let lagging = |id: u64| {
            data.overlay
                .get(&(obj, id))
                .is_some_and(|o| o.written_at > visible_before - lag)
        };
        let base_ms = ms_f64(inner.cfg.base_time.timestamp_millis());
        let modified_floor = if groups.is_empty() {
            None
        } else {
            groups
                .iter()
                .map(|g| lower_bound(g, obj.modified_property()))
                .collect::<Option<Vec<f64>>>()
                .and_then(|v| v.into_iter().reduce(f64::min))
        };
        let id_floor = if groups.is_empty() {
            None
        } else {
            groups
                .iter()
                .map(|g| lower_bound(g, "hs_object_id"))
                .collect::<Option<Vec<f64>>>()
                .and_then(|v| v.into_iter().reduce(f64::min))
        };
        let first_id = id_floor.map_or(1, floor_id);
        let candidates: Box<dyn Iterator<Item = u64>> =
            if modified_floor.is_some_and(|f| f > base_ms) {
                // Only mutated records can be newer than the seed.
                Box::new(
                    data.overlay
                        .range((obj, first_id)..=(obj, u64::MAX))
                        .map(|((_, id), _)| *id)
                        .collect::<Vec<_>>()
                        .into_iter(),
                )
            } else {
                Box::new(first_id..=inner.max_id(&data, obj))
            };
        // Only each hit's sort key and id are kept (a whole portal of records would make
        // the simulator's memory, not the client's, the peak of a large sync); the page's
        // records are read again at the end.
        // Without filters or a sort nothing but the creation time of a hit is needed, so
        // no record is generated for it (a total over a whole portal stays cheap).
        let sort_prop = sort.as_ref().map(|(prop, _)| prop.as_str());
        let live = candidates.filter(|id| !Inner::is_archived(&data, obj, *id) && !lagging(*id));
        let mut hits: Vec<(String, DateTime<Utc>, u64)> = if groups.is_empty() && sort.is_none() {
            live.map(|id| (String::new(), inner.created_at(&data, obj, id), id))
                .collect()
        } else {
            live.filter_map(|id| inner.current(&data, obj, id))
                .filter(|r| {
                    groups.is_empty() || groups.iter().any(|g| g.iter().all(|f| matches(f, r)))
                })
                .map(|r| {
                    let key = sort_prop
                        .and_then(|p| r.properties.get(p).cloned().flatten())
                        .unwrap_or_default();
                    (key, r.created_at, r.id)
                })
                .collect()
        };
        let order = |a: &(String, DateTime<Utc>, u64), b: &(String, DateTime<Utc>, u64)| match &sort
        {
            Some((prop, desc)) => {
                let ord = compare(prop, &a.0, &b.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.2.cmp(&b.2));
                if *desc { ord.reverse() } else { ord }
            }
            None => a.1.cmp(&b.1).then(a.2.cmp(&b.2)),
        };
        let total = hits.len();
        // Only the hits up to the end of the requested page need to be in order.
        let end = after.saturating_add(limit);
        if end < hits.len() {
            hits.select_nth_unstable_by(end, order);
            hits.truncate(end);
        }
        hits.sort_by(order);
        let page: Vec<SimRecord> = hits
            .iter()
            .skip(after)
            .take(limit)
            .filter_map(|(_, _, id)| inner.current(&data, obj, *id))
            .collect();
        (page, total)
    };
    let results: Vec<Value> = page
        .iter()
        .map(|r| inner.record_json(r, &props, &[]))
        .collect();
    let mut body = json!({ "total": total, "results": results });
    if after + limit < total {
        let next = lock(&inner.data)
            .search_after_override
            .clone()
            .unwrap_or_else(|| (after + limit).to_string());
        body["paging"] = json!({"next": {"after": next}});
    }
    let resp = json_response(StatusCode::OK, &body);
    inner.served(HubSpotEndpoint::Search(obj));
    resp
}

fn type_id(from: HubSpotObject, to: HubSpotObject) -> u64 {
    use HubSpotObject::*;
    match (from, to) {
        (Contacts, Companies) => 1,
        (Companies, Contacts) => 2,
        (Deals, Contacts) => 3,
        (Deals, Companies) => 5,
        _ => 0,
    }
}

async fn associations_batch_read(
    State(inner): State<Arc<Inner>>,
    Path((from, to)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if let Err(resp) = admit(&inner, &headers, Budget::Rest).await {
        return resp;
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let (Some(from), Some(to)) = (HubSpotObject::parse(&from), HubSpotObject::parse(&to)) else {
        return bad("Unknown object type");
    };
    if type_id(from, to) == 0 {
        return bad(
            "The simulator models deals→contacts, deals→companies, contacts→companies and companies→contacts",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid input JSON");
    };
    let Some(inputs) = req.get("inputs").and_then(Value::as_array) else {
        return bad("inputs is required");
    };
    if inputs.len() > 1000 {
        return bad("Too many inputs: at most 1000 are allowed");
    }
    let page_size = inner.cfg.assoc_page_size.max(1);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let data = lock(&inner.data);
        for input in inputs {
            let id = scalar(input.get("id")).and_then(|s| s.parse::<u64>().ok());
            let Some(rec) = id.and_then(|id| inner.current(&data, from, id)) else {
                errors.push(json!({
                    "status": "error", "category": "OBJECT_NOT_FOUND",
                    "message": format!("No {} with id {:?}", from.singular(), input.get("id")),
                    "context": {"fromObjectId": [input.get("id")]},
                }));
                continue;
            };
            let offset = scalar(input.get("after"))
                .and_then(|a| a.parse::<usize>().ok())
                .unwrap_or(0);
            let (id, all) = (rec.id, inner.associated(&rec, to));
            let to_json: Vec<Value> = all
                .iter()
                .skip(offset)
                .take(page_size)
                .map(|t| json!({"toObjectId": t, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id(from, to), "label": null}]}))
                .collect();
            let mut r = json!({"from": {"id": id.to_string()}, "to": to_json});
            if offset.saturating_add(page_size) < all.len() {
                r["paging"] =
                    json!({"next": {"after": (offset + page_size).to_string(), "link": null}});
            }
            results.push(r);
        }
    }
    let now = iso(Utc::now());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut resp = json_response(
        status,
        &json!({
            "status": "COMPLETE", "startedAt": now, "completedAt": now,
            "results": results, "numErrors": errors.len(), "errors": errors,
        }),
    );
    add_daily_headers(&mut resp, &inner);
    inner.served(HubSpotEndpoint::Associations);
    resp
}

/// `GET /account-info/v3/details`: the portal's id, time zone and currency. The simulator
/// answers it even once the daily quota is used up (an assumption: HubSpot documents no
/// exemption) and counts it against no budget.
async fn account_details(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response<Body> {
    if !inner.check_auth(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        );
    }
    let offset = inner.cfg.utc_offset_ms;
    let abs = offset.unsigned_abs() / 60_000;
    let sign = if offset < 0 { '-' } else { '+' };
    json_response(
        StatusCode::OK,
        &json!({
            "portalId": 1000 + inner.cfg.seed % 1_000_000,
            "accountType": "STANDARD",
            "timeZone": inner.cfg.time_zone,
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": format!("{sign}{:02}:{:02}", abs / 60, abs % 60),
            "utcOffsetMilliseconds": offset,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }),
    )
}

async fn oauth_token(
    State(inner): State<Arc<Inner>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response<Body> {
    let Some(app) = &inner.cfg.oauth else {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_CLIENT_ID",
            "missing or unknown client id",
        );
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "refresh_token"
        || field("client_id") != app.client_id
        || field("client_secret") != app.client_secret
        || field("refresh_token") != app.refresh_token
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token"}),
        );
    }
    let token = {
        let mut data = lock(&inner.data);
        data.next_token += 1;
        let token = format!("sim-oauth-{}-{}", inner.cfg.seed, data.next_token);
        let ttl =
            chrono::Duration::seconds(i64::try_from(app.expires_in).unwrap_or(i64::MAX / 1000));
        data.issued_tokens.insert(token.clone(), Utc::now() + ttl);
        token
    };
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "refresh_token": app.refresh_token, "expires_in": app.expires_in, "token_type": "bearer"}),
    )
}

impl HubSpotPortal {
    fn write(&self, obj: HubSpotObject, id: u64, f: impl FnOnce(&mut Override)) -> bool {
        let now = now_ms();
        let mut data = lock(&self.inner.data);
        if id == 0 || id > self.inner.max_id(&data, obj) {
            return false;
        }
        let o = data.overlay.entry((obj, id)).or_insert_with(|| Override {
            created_at: None,
            updated_at: now,
            archived_at: None,
            props: BTreeMap::new(),
            unlinked_contacts: BTreeSet::new(),
            written_at: now,
        });
        o.updated_at = now;
        o.written_at = now;
        f(o);
        true
    }

    /// Changes properties of a record and stamps it modified now. False if it does not exist.
    pub fn modify<K: Into<String>, V: Into<String>>(
        &self,
        obj: HubSpotObject,
        id: u64,
        props: impl IntoIterator<Item = (K, V)>,
    ) -> bool {
        self.write(obj, id, |o| {
            for (k, v) in props {
                o.props.insert(k.into(), Some(v.into()));
            }
        })
    }

    /// Creates a record (created and modified now) and returns its id.
    pub fn create<K: Into<String>, V: Into<String>>(
        &self,
        obj: HubSpotObject,
        props: impl IntoIterator<Item = (K, V)>,
    ) -> u64 {
        let id = {
            let mut data = lock(&self.inner.data);
            let extra = data.extra.entry(obj).or_insert(0);
            *extra += 1;
            self.inner.count(obj) + *extra
        };
        self.write(obj, id, |o| {
            o.created_at = Some(o.updated_at);
            for (k, v) in props {
                o.props.insert(k.into(), Some(v.into()));
            }
        });
        id
    }

    /// Archives a record now. False if it does not exist.
    pub fn archive(&self, obj: HubSpotObject, id: u64) -> bool {
        self.write(obj, id, |o| o.archived_at = Some(o.updated_at))
    }

    /// Removes the association between a deal and one of its contacts, and stamps the deal
    /// modified now (its calculated `num_associated_contacts` changes with it; the
    /// reference does not say whether HubSpot moves `hs_lastmodifieddate` on association
    /// changes, so a test that must not rely on it runs a full pass). False if the deal
    /// does not exist or the contact is not associated with it.
    pub fn unlink_contact(&self, deal: u64, contact: u64) -> bool {
        let linked = self
            .record(HubSpotObject::Deals, deal)
            .is_some_and(|d| d.contact_ids.contains(&contact));
        linked
            && self.write(HubSpotObject::Deals, deal, |o| {
                o.unlinked_contacts.insert(contact);
            })
    }

    /// Stamps many records with one identical modification time (HubSpot's bulk updates).
    /// The portal keeps milliseconds, as HubSpot does.
    pub fn stamp(&self, obj: HubSpotObject, ids: impl IntoIterator<Item = u64>, at: DateTime<Utc>) {
        let at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
        for id in ids {
            self.write(obj, id, |o| o.updated_at = at);
        }
    }

    /// The record as the portal holds it now, archived or not; `None` if it never existed.
    pub fn record(&self, obj: HubSpotObject, id: u64) -> Option<SimRecord> {
        let data = lock(&self.inner.data);
        self.inner.current(&data, obj, id)
    }
}

impl HubSpotSim {
    /// Starts the simulator on `127.0.0.1` and an ephemeral port.
    pub async fn start(cfg: HubSpotSimConfig) -> std::io::Result<HubSpotSim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let inner = Arc::new(Inner {
            rest: SimLimiter::new(cfg.rest_max, cfg.rest_window),
            search: SimLimiter::new(cfg.search_max, cfg.search_window),
            data: Mutex::new(Data {
                search_lag: cfg.search_lag,
                ..Default::default()
            }),
            common: common.clone(),
            hooks: Mutex::new(Vec::new()),
            daily_used: Mutex::new(0),
            cfg,
        });
        let router = Router::new()
            .route("/crm/v3/objects/{object_type}", get(list_objects))
            .route("/crm/v3/objects/{object_type}/search", post(search_objects))
            .route("/crm/v3/properties/{object_type}", get(list_properties))
            .route(
                "/crm/v4/associations/{from}/{to}/batch/read",
                post(associations_batch_read),
            )
            .route("/oauth/v1/token", post(oauth_token))
            .route("/account-info/v3/details", get(account_details))
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        Ok(HubSpotSim { inner, server })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Requests served, per endpoint.
    pub fn counters(&self) -> &RequestCounters {
        &self.inner.common.counters
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.inner.common.faults) = faults;
    }

    /// Answers the next `n` requests with 429.
    pub fn burst_429(&self, n: u64) {
        self.inner.common.burst_429.store(n, Ordering::Relaxed);
    }

    /// Makes writes show up in search only after `lag`.
    pub fn set_search_lag(&self, lag: Duration) {
        lock(&self.inner.data).search_lag = lag;
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &HubSpotSimConfig {
        &self.inner.cfg
    }

    /// A handle on the portal's data (for hooks and other threads).
    pub fn portal(&self) -> HubSpotPortal {
        HubSpotPortal {
            inner: self.inner.clone(),
        }
    }

    /// Changes properties of a record and stamps it modified now. False if it does not exist.
    pub fn modify<K: Into<String>, V: Into<String>>(
        &self,
        obj: HubSpotObject,
        id: u64,
        props: impl IntoIterator<Item = (K, V)>,
    ) -> bool {
        self.portal().modify(obj, id, props)
    }

    /// Creates a record (created and modified now) and returns its id.
    pub fn create<K: Into<String>, V: Into<String>>(
        &self,
        obj: HubSpotObject,
        props: impl IntoIterator<Item = (K, V)>,
    ) -> u64 {
        self.portal().create(obj, props)
    }

    /// Archives a record now. False if it does not exist.
    pub fn archive(&self, obj: HubSpotObject, id: u64) -> bool {
        self.portal().archive(obj, id)
    }

    /// Removes a deal–contact association and stamps the deal modified now (see
    /// [`HubSpotPortal::unlink_contact`]).
    pub fn unlink_contact(&self, deal: u64, contact: u64) -> bool {
        self.portal().unlink_contact(deal, contact)
    }

    /// Stamps many records with one identical modification time (HubSpot's bulk updates).
    pub fn stamp(&self, obj: HubSpotObject, ids: impl IntoIterator<Item = u64>, at: DateTime<Utc>) {
        self.portal().stamp(obj, ids, at);
    }

    /// The record as the portal holds it now, archived or not; `None` if it never existed.
    pub fn record(&self, obj: HubSpotObject, id: u64) -> Option<SimRecord> {
        self.portal().record(obj, id)
    }

    /// Runs `hook` once, right after the `nth` (counted from now, 1-based) successful answer
    /// of `endpoint` was built and before it is sent: the way to change data between two
    /// pages of a sync. The answer already served is not affected; every later one is.
    pub fn after_served(
        &self,
        endpoint: HubSpotEndpoint,
        nth: u64,
        hook: impl FnOnce(&HubSpotPortal) + Send + 'static,
    ) {
        lock(&self.inner.hooks).push(Hook {
            endpoint,
            remaining: nth.max(1),
            run: Box::new(hook),
        });
    }

    /// Serves `after` as search's `paging.next.after` on every page that has a next one,
    /// instead of the numeric offset (`None` goes back to offsets): a provider answering
    /// cursors a client cannot use, huge or not numbers at all.
    pub fn set_search_paging_after(&self, after: Option<String>) {
        lock(&self.inner.data).search_after_override = after;
    }

    /// Makes the daily quota available again (HubSpot resets it at midnight in the
    /// account's time zone).
    pub fn reset_daily_quota(&self) {
        *lock(&self.inner.daily_used) = 0;
    }

    /// Uses up the daily quota now: every later CRM request answers the `DAILY` 429 (until
    /// [`HubSpotSim::reset_daily_quota`]); needs a `daily_limit`.
    pub fn exhaust_daily_quota(&self) {
        *lock(&self.inner.daily_used) = self.inner.cfg.daily_limit.unwrap_or(0);
    }

    /// The highest id of the object type (seeded plus created).
    pub fn max_id(&self, obj: HubSpotObject) -> u64 {
        self.inner.max_id(&lock(&self.inner.data), obj)
    }

    /// Every record of a type, generated one at a time (a million cost no memory).
    pub fn records(&self, obj: HubSpotObject) -> impl Iterator<Item = SimRecord> + '_ {
        (1..=self.max_id(obj)).filter_map(move |id| self.record(obj, id))
    }

    /// How many records of a type are archived (`true`) or live (`false`).
    pub fn truth_count(&self, obj: HubSpotObject, archived: bool) -> u64 {
        let data = lock(&self.inner.data);
        let archived_n = data
            .overlay
            .range((obj, 0)..=(obj, u64::MAX))
            .filter(|(_, o)| o.archived_at.is_some())
            .count() as u64;
        if archived {
            archived_n
        } else {
            self.inner.max_id(&data, obj) - archived_n
        }
    }

    /// Whether a record is served malformed under the current fault settings.
    pub fn is_malformed(&self, obj: HubSpotObject, id: u64) -> bool {
        self.inner.common.is_malformed(obj.salt(), id)
    }
}
