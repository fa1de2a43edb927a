//! Salesforce simulator: the OAuth token endpoint (refresh-token grant with rotation),
//! REST `query`/`queryAll` with `nextRecordsUrl` locators, `describe`, `limits`, Bulk API 2.0
//! query jobs with CSV results, on one origin that is both the login host and the
//! `instance_url` (see `reference/provider-apis.md` sections 4, 7 and 10).

mod soql;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::middleware::Next;
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use self::soql::{Cond, Kind, Soql, SoqlError};
use super::{
    Common, FaultConfig, Injected, RequestCounters, SimServer, decide, dropped_response, lock, mix,
};

/// The sObjects the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SalesforceObject {
    /// `Account`.
    Account,
    /// `Contact`.
    Contact,
    /// `Opportunity`.
    Opportunity,
    /// `OpportunityContactRole`.
    OpportunityContactRole,
}

impl SalesforceObject {
    /// Every object, parents first.
    pub const ALL: [SalesforceObject; 4] = [
        SalesforceObject::Account,
        SalesforceObject::Contact,
        SalesforceObject::Opportunity,
        SalesforceObject::OpportunityContactRole,
    ];

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            SalesforceObject::Account => "Account",
            SalesforceObject::Contact => "Contact",
            SalesforceObject::Opportunity => "Opportunity",
            SalesforceObject::OpportunityContactRole => "OpportunityContactRole",
        }
    }

    /// The three-character key prefix of the object's ids.
    pub fn prefix(self) -> &'static str {
        match self {
            SalesforceObject::Account => "001",
            SalesforceObject::Contact => "003",
            SalesforceObject::Opportunity => "006",
            SalesforceObject::OpportunityContactRole => "00K",
        }
    }

    /// The object of an API name (case-insensitive, as SOQL is).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(name))
    }

    fn salt(self) -> u64 {
        match self {
            SalesforceObject::Account => 11,
            SalesforceObject::Contact => 13,
            SalesforceObject::Opportunity => 17,
            SalesforceObject::OpportunityContactRole => 19,
        }
    }

    /// The id of the `n`th record (from 1): 18 characters, ordered like `n`.
    pub fn id(self, n: u64) -> String {
        format!("{}5g{:010}AAA", self.prefix(), n)
    }

    /// The index `n` of an id made by [`SalesforceObject::id`].
    pub fn index(self, id: &str) -> Option<u64> {
        id.strip_prefix(self.prefix())?
            .strip_prefix("5g")?
            .get(..10)?
            .parse()
            .ok()
    }
}

/// How a locator of an ended session answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocatorDeath {
    /// 400 `INVALID_QUERY_LOCATOR`.
    #[default]
    InvalidQueryLocator,
    /// 401 `INVALID_SESSION_ID` (what airbyte#84302 saw after a refresh), also with a fresh
    /// token.
    InvalidSessionId,
}

/// Configuration of a [`SalesforceSim`].
#[derive(Debug, Clone)]
pub struct SalesforceSimConfig {
    /// Seed of the generated data and of fault decisions.
    pub seed: u64,
    /// Seeded accounts.
    pub accounts: u64,
    /// Seeded contacts.
    pub contacts: u64,
    /// Seeded opportunities.
    pub opportunities: u64,
    /// Contact roles per opportunity: each gets between 0 and this many.
    pub roles_per_opportunity: u64,
    /// Custom `__c` fields on Account, Contact and Opportunity.
    pub custom_fields: usize,
    /// Whether the org has multi-currency (`CurrencyIsoCode` on records).
    pub multi_currency: bool,
    /// The connected app's client id.
    pub client_id: String,
    /// The connected app's client secret.
    pub client_secret: String,
    /// The refresh token the org accepts first.
    pub refresh_token: String,
    /// Whether every token exchange returns a new refresh token (the old one then fails).
    pub rotate_refresh_tokens: bool,
    /// A session ends after this many API requests (`None`: never).
    pub session_requests: Option<u64>,
    /// How locators of an ended session answer.
    pub locator_death: LocatorDeath,
    /// A locator unused this long is gone (Salesforce: about 15 minutes).
    pub locator_idle: Duration,
    /// Open locators per user; opening one more closes the oldest (Salesforce: about 10).
    pub max_open_locators: usize,
    /// API requests per day (the org's `DailyApiRequests`).
    pub daily_limit: u64,
    /// Status polls a Bulk job answers `InProgress` before it completes.
    pub bulk_polls: u32,
    /// A REST query matching more rows than this answers 400 `QUERY_TIMEOUT` ("Your query
    /// request was running for too long."), as queries over big objects do (`None`: never).
    pub query_timeout_rows: Option<usize>,
    /// Every seeded record was created and last modified before this instant.
    pub base_time: DateTime<Utc>,
    /// Injected faults.
    pub faults: FaultConfig,
}

impl Default for SalesforceSimConfig {
    fn default() -> Self {
        SalesforceSimConfig {
            seed: 7,
            accounts: 50,
            contacts: 200,
            opportunities: 100,
            roles_per_opportunity: 3,
            custom_fields: 2,
            multi_currency: true,
            client_id: "sim-sf-client".into(),
            client_secret: "sim-sf-secret".into(),
            refresh_token: "sim-sf-refresh-1".into(),
            rotate_refresh_tokens: true,
            session_requests: None,
            locator_death: LocatorDeath::InvalidQueryLocator,
            locator_idle: Duration::from_secs(15 * 60),
            max_open_locators: 10,
            daily_limit: 100_000,
            bulk_polls: 1,
            query_timeout_rows: None,
            base_time: Utc
                .with_ymd_and_hms(2024, 6, 1, 0, 0, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            faults: FaultConfig::default(),
        }
    }
}

/// One record as the org holds it (the truth to compare a sync with).
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceRecord {
    /// Its object.
    pub object: SalesforceObject,
    /// Its 18-character id.
    pub id: String,
    /// Every field, as the REST API returns it (`…+0000` date-times, numbers, booleans).
    pub fields: BTreeMap<String, Value>,
}

impl SalesforceRecord {
    /// A field's value (`Value::Null` when absent).
    pub fn get(&self, field: &str) -> &Value {
        self.fields.get(field).unwrap_or(&Value::Null)
    }

    /// Whether it is in the recycle bin.
    pub fn is_deleted(&self) -> bool {
        self.get("IsDeleted").as_bool().unwrap_or(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FType {
    Id,
    Text,
    Picklist,
    Email,
    Phone,
    Url,
    Double,
    Int,
    Currency,
    Percent,
    Bool,
    Date,
    DateTime,
    Reference(Option<SalesforceObject>),
}

impl FType {
    fn kind(self) -> Kind {
        match self {
            FType::Double | FType::Int | FType::Currency | FType::Percent => Kind::Number,
            FType::Bool => Kind::Bool,
            FType::Date => Kind::Date,
            FType::DateTime => Kind::DateTime,
            _ => Kind::Text,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FType::Id => "id",
            FType::Text => "string",
            FType::Picklist => "picklist",
            FType::Email => "email",
            FType::Phone => "phone",
            FType::Url => "url",
            FType::Double => "double",
            FType::Int => "int",
            FType::Currency => "currency",
            FType::Percent => "percent",
            FType::Bool => "boolean",
            FType::Date => "date",
            FType::DateTime => "datetime",
            FType::Reference(_) => "reference",
        }
    }
}

#[derive(Debug, Clone)]
struct FieldDef {
    name: String,
    ftype: FType,
    custom: bool,
}

fn def(name: &str, ftype: FType) -> FieldDef {
    FieldDef {
        name: name.to_owned(),
        ftype,
        custom: false,
    }
}

/// The name of the `k`th custom field.
pub fn custom_field_name(k: usize) -> String {
    const NAMES: [&str; 4] = ["Tier__c", "Region__c", "Health_Score__c", "Segment__c"];
    NAMES
        .get(k)
        .map_or_else(|| format!("Custom_{k}__c"), |n| (*n).to_owned())
}

fn custom_type(k: usize) -> FType {
    if k.is_multiple_of(2) {
        FType::Text
    } else {
        FType::Double
    }
}

fn field_defs(cfg: &SalesforceSimConfig, obj: SalesforceObject) -> Vec<FieldDef> {
    use SalesforceObject as O;
    let mut f = vec![def("Id", FType::Id), def("IsDeleted", FType::Bool)];
    match obj {
        O::Account => f.extend([
            def("Name", FType::Text),
            def("Website", FType::Url),
            def("Industry", FType::Picklist),
            def("NumberOfEmployees", FType::Int),
            def("AnnualRevenue", FType::Currency),
            def("BillingCity", FType::Text),
            def("OwnerId", FType::Reference(None)),
        ]),
        O::Contact => f.extend([
            def("AccountId", FType::Reference(Some(O::Account))),
            def("FirstName", FType::Text),
            def("LastName", FType::Text),
            def("Email", FType::Email),
            def("Title", FType::Text),
            def("Phone", FType::Phone),
            def("Department", FType::Text),
            def("OwnerId", FType::Reference(None)),
        ]),
        O::Opportunity => f.extend([
            def("AccountId", FType::Reference(Some(O::Account))),
            def("Name", FType::Text),
            def("Amount", FType::Currency),
            def("StageName", FType::Picklist),
            def("CloseDate", FType::Date),
            def("Probability", FType::Percent),
            def("ForecastCategoryName", FType::Picklist),
            def("IsClosed", FType::Bool),
            def("IsWon", FType::Bool),
            def("LeadSource", FType::Picklist),
            def("OwnerId", FType::Reference(None)),
        ]),
        O::OpportunityContactRole => f.extend([
            def("OpportunityId", FType::Reference(Some(O::Opportunity))),
            def("ContactId", FType::Reference(Some(O::Contact))),
            def("Role", FType::Picklist),
            def("IsPrimary", FType::Bool),
        ]),
    }
    if cfg.multi_currency && obj != O::OpportunityContactRole {
        f.push(def("CurrencyIsoCode", FType::Picklist));
    }
    f.extend([
        def("CreatedDate", FType::DateTime),
        def("LastModifiedDate", FType::DateTime),
        def("SystemModstamp", FType::DateTime),
    ]);
    if obj != O::OpportunityContactRole {
        for k in 0..cfg.custom_fields {
            f.push(FieldDef {
                name: custom_field_name(k),
                ftype: custom_type(k),
                custom: true,
            });
        }
    }
    f
}

const WORDS: [&str; 12] = [
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
    "Aperture",
    "Vandelay",
];
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Linus", "Barbara", "Edsger", "Margaret", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Dijkstra", "Hamilton", "Thompson",
];
const INDUSTRIES: [&str; 5] = ["Technology", "Finance", "Healthcare", "Retail", "Energy"];
/// Stage, probability, forecast category, closed, won.
const STAGES: [(&str, f64, &str, bool, bool); 6] = [
    ("Prospecting", 10.0, "Pipeline", false, false),
    ("Qualification", 20.0, "Pipeline", false, false),
    ("Value Proposition", 50.0, "Best Case", false, false),
    ("Negotiation/Review", 90.0, "Commit", false, false),
    ("Closed Won", 100.0, "Closed", true, true),
    ("Closed Lost", 0.0, "Omitted", true, false),
];
const ROLES: [&str; 4] = [
    "Decision Maker",
    "Economic Buyer",
    "Technical Buyer",
    "Influencer",
];
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[usize::try_from(h % list.len() as u64).unwrap_or(0)]
}

fn sf_time(t: DateTime<Utc>) -> Value {
    Value::String(soql::format_datetime(t))
}

type Row = BTreeMap<String, Value>;

#[derive(Debug)]
struct Session {
    alive: bool,
    requests: u64,
}

#[derive(Debug)]
struct Locator {
    session: String,
    rows: Arc<Vec<Value>>,
    offset: usize,
    batch: usize,
    last_used: tokio::time::Instant,
}

#[derive(Debug)]
struct Job {
    version: String,
    operation: String,
    object: SalesforceObject,
    header: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    polls: u32,
    fail: bool,
}

#[derive(Debug, Default)]
struct Data {
    rows: BTreeMap<SalesforceObject, BTreeMap<String, Row>>,
    next_index: BTreeMap<SalesforceObject, u64>,
    /// Which delete (cascade) put a row in the recycle bin.
    deleted_by: HashMap<(SalesforceObject, String), u64>,
    next_delete: u64,
    clock_offset: chrono::Duration,
    sessions: HashMap<String, Session>,
    next_session: u64,
    refresh_token: String,
    next_refresh: u64,
    session_requests: Option<u64>,
    locators: HashMap<String, Locator>,
    locator_order: VecDeque<String>,
    next_locator: u64,
    jobs: HashMap<String, Job>,
    next_job: u64,
    fail_jobs: u64,
    daily_used: u64,
    daily_limit: u64,
}

#[derive(Debug)]
struct Inner {
    cfg: SalesforceSimConfig,
    common: Arc<Common>,
    fields: BTreeMap<SalesforceObject, Vec<FieldDef>>,
    data: Mutex<Data>,
    origin: OnceLock<String>,
}

/// A fake Salesforce org on loopback: login host and instance on one origin.
///
/// Serves `POST /services/oauth2/token`, `GET /services/data/`, and under
/// `/services/data/vXX.X/`: `limits`, `sobjects/{object}/describe`, `query`, `queryAll`
/// (and their `nextRecordsUrl` locators), `jobs/query` (create), `jobs/query/{id}` (status)
/// and `jobs/query/{id}/results` (CSV).
///
/// What it reproduces:
/// - **Sessions**: every token exchange starts a session and ends the previous ones; a
///   session may expire after a number of requests ([`SalesforceSimConfig::session_requests`],
///   [`SalesforceSim::expire_sessions`]); an ended session answers 401 `INVALID_SESSION_ID`.
/// - **Locators** (`nextRecordsUrl`) belong to their session: after the session ends they
///   answer 400 `INVALID_QUERY_LOCATOR` or 401 `INVALID_SESSION_ID`
///   ([`LocatorDeath`]); they also die after [`SalesforceSimConfig::locator_idle`] unused and
///   when more than [`SalesforceSimConfig::max_open_locators`] are open.
/// - **Refresh-token rotation**: with [`SalesforceSimConfig::rotate_refresh_tokens`] every
///   exchange returns a new `refresh_token` and the old one is `invalid_grant` from then on.
/// - **Limits**: `Sforce-Limit-Info: api-usage=N/M` on every API answer; past the daily limit
///   every request is 403 `REQUEST_LIMIT_EXCEEDED` until [`SalesforceSim::reset_daily_usage`].
/// - **Data**: seeded accounts, contacts, opportunities and contact roles (materialized at
///   start: tens of thousands of rows cost a few MB), `SystemModstamp` with second precision,
///   recycle-bin deletes with cascades (Account → Contacts, Opportunities → roles) seen only
///   by `queryAll` (`IsDeleted = true`), undelete, automation that moves `SystemModstamp`
///   but not `LastModifiedDate`, orgs without multi-currency (no `CurrencyIsoCode`), custom
///   `__c` fields.
/// - **Errors** as Salesforce's JSON arrays (`INVALID_FIELD`, `INVALID_TYPE`,
///   `MALFORMED_QUERY`, `QUERY_TIMEOUT`, `UNKNOWN_EXCEPTION`), HTML 502/503 pages, dropped and truncated bodies
///   ([`FaultConfig`]).
#[derive(Debug)]
pub struct SalesforceSim {
    inner: Arc<Inner>,
    server: SimServer,
}

/// The API versions `GET /services/data/` lists.
pub const SIM_API_VERSIONS: [&str; 5] = ["58.0", "59.0", "60.0", "61.0", "62.0"];

impl Inner {
    fn h(&self, obj: SalesforceObject, n: u64, k: u64) -> u64 {
        mix(self.cfg.seed, obj.salt() * 1_000 + k, n)
    }

    fn now(&self, data: &Data) -> DateTime<Utc> {
        let now = Utc::now() + data.clock_offset;
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
    }

    fn field(&self, obj: SalesforceObject, name: &str) -> Option<&FieldDef> {
        self.fields
            .get(&obj)?
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Seeded timestamps: created spread over the 90 days before `base_time`, modified up
    /// to an hour later (never after `base_time`).
    fn seeded_times(&self, obj: SalesforceObject, n: u64, count: u64) -> (Value, Value) {
        let span = 90 * 24 * 3600_i64;
        let step = span / i64::try_from(count.max(1)).unwrap_or(1).max(1);
        let back = span.saturating_sub(step.saturating_mul(i64::try_from(n).unwrap_or(0)));
        let created = self.cfg.base_time - chrono::Duration::seconds(back.max(1) + 3600);
        let bump = i64::try_from(self.h(obj, n, 99) % 3600).unwrap_or(0);
        let modified = (created + chrono::Duration::seconds(bump)).min(self.cfg.base_time);
        (sf_time(created), sf_time(modified))
    }

    fn seed_row(&self, obj: SalesforceObject, n: u64, count: u64) -> Row {
        use SalesforceObject as O;
        let h = |k| self.h(obj, n, k);
        let mut r = Row::new();
        r.insert("Id".into(), json!(obj.id(n)));
        r.insert("IsDeleted".into(), json!(false));
        let owner = json!(format!("0055g{:010}AAA", h(1) % 5 + 1));
        let (created, modified) = self.seeded_times(obj, n, count);
        let accounts = self.cfg.accounts;
        let account_of = |k: u64| -> Value {
            if accounts == 0 || h(k) % 10 == 0 {
                Value::Null
            } else {
                json!(O::Account.id(h(k + 1) % accounts + 1))
            }
        };
        match obj {
            O::Account => {
                let word = pick(&WORDS, h(2));
                r.insert("Name".into(), json!(format!("{word} {n}")));
                r.insert(
                    "Website".into(),
                    json!(format!(
                        "https://www.{}{n}.example.com",
                        word.to_lowercase()
                    )),
                );
                r.insert("Industry".into(), json!(pick(&INDUSTRIES, h(3))));
                r.insert("NumberOfEmployees".into(), json!(h(4) % 5_000 + 1));
                r.insert(
                    "AnnualRevenue".into(),
                    json!(f64::from(u32::try_from(h(5) % 10_000).unwrap_or(0)) * 1_000.0),
                );
                r.insert(
                    "BillingCity".into(),
                    json!(pick(&["Paris", "Austin", "Berlin"], h(6))),
                );
                r.insert("OwnerId".into(), owner);
            }
            O::Contact => {
                let (first, last) = (pick(&FIRST, h(2)), pick(&LAST, h(3)));
                r.insert("AccountId".into(), account_of(4));
                r.insert("FirstName".into(), json!(first));
                r.insert("LastName".into(), json!(last));
                r.insert(
                    "Email".into(),
                    json!(format!(
                        "{}.{}{n}@example.com",
                        first.to_lowercase(),
                        last.to_lowercase()
                    )),
                );
                r.insert(
                    "Title".into(),
                    json!(pick(&["CTO", "VP Sales", "Engineer", "CFO"], h(6))),
                );
                r.insert(
                    "Phone".into(),
                    json!(format!("+1 555 {:04}", h(7) % 10_000)),
                );
                r.insert(
                    "Department".into(),
                    json!(pick(&["Sales", "IT", "Finance"], h(8))),
                );
                r.insert("OwnerId".into(), owner);
            }
            O::Opportunity => {
                let stage = STAGES[usize::try_from(h(2) % STAGES.len() as u64).unwrap_or(0)];
                r.insert("AccountId".into(), account_of(3));
                r.insert(
                    "Name".into(),
                    json!(format!("{} deal {n}", pick(&WORDS, h(5)))),
                );
                r.insert(
                    "Amount".into(),
                    json!(f64::from(u32::try_from(h(6) % 100_000).unwrap_or(0)) + 0.5),
                );
                r.insert("StageName".into(), json!(stage.0));
                let close = self.cfg.base_time.date_naive()
                    + chrono::Duration::days(i64::try_from(h(7) % 120).unwrap_or(0) - 60);
                r.insert(
                    "CloseDate".into(),
                    json!(close.format("%Y-%m-%d").to_string()),
                );
                r.insert("Probability".into(), json!(stage.1));
                r.insert("ForecastCategoryName".into(), json!(stage.2));
                r.insert("IsClosed".into(), json!(stage.3));
                r.insert("IsWon".into(), json!(stage.4));
                r.insert(
                    "LeadSource".into(),
                    json!(pick(&["Web", "Partner", "Event"], h(8))),
                );
                r.insert("OwnerId".into(), owner);
            }
            O::OpportunityContactRole => {}
        }
        if self.cfg.multi_currency && obj != O::OpportunityContactRole {
            r.insert("CurrencyIsoCode".into(), json!(pick(&CURRENCIES, h(9))));
        }
        r.insert("CreatedDate".into(), created);
        r.insert("LastModifiedDate".into(), modified.clone());
        r.insert("SystemModstamp".into(), modified);
        if obj != O::OpportunityContactRole {
            for k in 0..self.cfg.custom_fields {
                let kk = 200 + k as u64;
                let v = if h(kk) % 4 == 0 {
                    Value::Null
                } else if custom_type(k) == FType::Text {
                    json!(pick(
                        &["Gold", "Silver", "Bronze", "EMEA", "AMER"],
                        h(kk + 50)
                    ))
                } else {
                    json!(f64::from(u32::try_from(h(kk + 50) % 1_000).unwrap_or(0)) / 10.0)
                };
                r.insert(custom_field_name(k), v);
            }
        }
        r
    }

    fn seed(&self, data: &mut Data) {
        use SalesforceObject as O;
        for (obj, count) in [
            (O::Account, self.cfg.accounts),
            (O::Contact, self.cfg.contacts),
            (O::Opportunity, self.cfg.opportunities),
        ] {
            let rows = data.rows.entry(obj).or_default();
            for n in 1..=count {
                rows.insert(obj.id(n), self.seed_row(obj, n, count));
            }
            data.next_index.insert(obj, count + 1);
        }
        // Contact roles: 0..=roles_per_opportunity distinct contacts per opportunity.
        let mut n = 0;
        let contacts = self.cfg.contacts;
        let mut roles = BTreeMap::new();
        let opp_count = self.cfg.opportunities;
        for opp in 1..=opp_count {
            if contacts == 0 {
                break;
            }
            let k =
                self.h(O::Opportunity, opp, 50) % self.cfg.roles_per_opportunity.saturating_add(1);
            for j in 0..k.min(contacts) {
                n += 1;
                let contact = (self.h(O::Opportunity, opp, 51) + j) % contacts + 1;
                let mut r = self.seed_row(O::OpportunityContactRole, n, opp_count * 2);
                r.insert("OpportunityId".into(), json!(O::Opportunity.id(opp)));
                r.insert("ContactId".into(), json!(O::Contact.id(contact)));
                let role = self.h(O::OpportunityContactRole, n, 2);
                r.insert(
                    "Role".into(),
                    if role % 5 == 4 {
                        Value::Null
                    } else {
                        json!(pick(&ROLES, role))
                    },
                );
                r.insert("IsPrimary".into(), json!(j == 0));
                roles.insert(O::OpportunityContactRole.id(n), r);
            }
        }
        data.rows.insert(O::OpportunityContactRole, roles);
        data.next_index.insert(O::OpportunityContactRole, n + 1);
    }

    /// A field's value on a row, following one parent hop (`Account.Name`).
    fn resolve<'a>(
        &self,
        data: &'a Data,
        obj: SalesforceObject,
        row: &'a Row,
        path: &str,
    ) -> Value {
        match path.split_once('.') {
            None => self
                .field(obj, path)
                .and_then(|f| row.get(&f.name))
                .cloned()
                .unwrap_or(Value::Null),
            Some((rel, field)) => {
                let Some((parent, _)) = self.relationship(obj, rel) else {
                    return Value::Null;
                };
                let id_field = format!("{}Id", canonical_rel(rel));
                let Some(pid) = row.get(&id_field).and_then(Value::as_str) else {
                    return Value::Null;
                };
                data.rows
                    .get(&parent)
                    .and_then(|rows| rows.get(pid))
                    .map_or(Value::Null, |p| self.resolve(data, parent, p, field))
            }
        }
    }

    /// The parent object of a relationship name (`Account` on a Contact) and its field
    /// definitions.
    fn relationship(
        &self,
        obj: SalesforceObject,
        rel: &str,
    ) -> Option<(SalesforceObject, &FieldDef)> {
        let f = self.field(obj, &format!("{rel}Id"))?;
        match f.ftype {
            FType::Reference(Some(parent)) => Some((parent, f)),
            _ => None,
        }
    }

    /// The type of a (possibly parent-path) field, or `INVALID_FIELD`.
    fn field_type(&self, obj: SalesforceObject, path: &str) -> Result<(String, FType), SoqlError> {
        let no_such = || SoqlError {
            code: "INVALID_FIELD",
            message: format!(
                "\n{path}\n^\nERROR at Row:1:Column:1\nNo such column '{path}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                obj.name()
            ),
        };
        match path.split_once('.') {
            None => self
                .field(obj, path)
                .map(|f| (f.name.clone(), f.ftype))
                .ok_or_else(no_such),
            Some((rel, rest)) => {
                let (parent, _) = self.relationship(obj, rel).ok_or_else(no_such)?;
                let (name, t) = self.field_type(parent, rest)?;
                Ok((format!("{}.{name}", canonical_rel(rel)), t))
            }
        }
    }

    fn check_cond(&self, obj: SalesforceObject, c: &Cond) -> Result<(), SoqlError> {
        match c {
            Cond::Cmp(f, _, _) | Cond::In(f, _) => self.field_type(obj, f).map(|_| ()),
            Cond::And(a, b) | Cond::Or(a, b) => {
                self.check_cond(obj, a)?;
                self.check_cond(obj, b)
            }
            Cond::Not(a) => self.check_cond(obj, a),
        }
    }

    fn eval(
        &self,
        data: &Data,
        obj: SalesforceObject,
        row: &Row,
        c: &Cond,
    ) -> Result<bool, SoqlError> {
        Ok(match c {
            Cond::Cmp(f, op, lit) => {
                let (_, t) = self.field_type(obj, f)?;
                let have = self.resolve(data, obj, row, f);
                soql::holds(*op, soql::compare(f, t.kind(), &have, lit)?)
            }
            Cond::In(f, lits) => {
                let (_, t) = self.field_type(obj, f)?;
                let have = self.resolve(data, obj, row, f);
                let mut any = false;
                for lit in lits {
                    any |= soql::holds(soql::Op::Eq, soql::compare(f, t.kind(), &have, lit)?);
                }
                any
            }
            Cond::And(a, b) => self.eval(data, obj, row, a)? && self.eval(data, obj, row, b)?,
            Cond::Or(a, b) => self.eval(data, obj, row, a)? || self.eval(data, obj, row, b)?,
            Cond::Not(a) => !self.eval(data, obj, row, a)?,
        })
    }

    /// Runs a query: the matching rows (ordered, offset, limited) and the canonical names
    /// of the selected fields.
    fn execute(
        &self,
        data: &Data,
        q: &Soql,
        all: bool,
    ) -> Result<(SalesforceObject, Vec<String>, Vec<Row>), SoqlError> {
        let obj = SalesforceObject::parse(&q.object).ok_or_else(|| SoqlError {
            code: "INVALID_TYPE",
            message: format!(
                "\nFROM {}\n     ^\nERROR at Row:1:Column:1\nsObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                q.object, q.object
            ),
        })?;
        let mut names = Vec::new();
        for f in q.fields.iter().flatten() {
            names.push(self.field_type(obj, f)?.0);
        }
        if let Some(c) = &q.filter {
            self.check_cond(obj, c)?;
        }
        for o in &q.order {
            self.field_type(obj, &o.field)?;
        }
        let mut out: Vec<(&String, &Row)> = Vec::new();
        for (id, row) in data.rows.get(&obj).into_iter().flatten() {
            if !all && row.get("IsDeleted").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(c) = &q.filter
                && !self.eval(data, obj, row, c)?
            {
                continue;
            }
            out.push((id, row));
        }
        if !q.order.is_empty() {
            out.sort_by(|(ia, a), (ib, b)| {
                for o in &q.order {
                    let (va, vb) = (
                        self.resolve(data, obj, a, &o.field),
                        self.resolve(data, obj, b, &o.field),
                    );
                    let ord = match (va.is_null(), vb.is_null()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => {
                            if o.nulls_last {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Less
                            }
                        }
                        (false, true) => {
                            if o.nulls_last {
                                std::cmp::Ordering::Less
                            } else {
                                std::cmp::Ordering::Greater
                            }
                        }
                        (false, false) => {
                            let ord = soql::order_values(&va, &vb);
                            if o.descending { ord.reverse() } else { ord }
                        }
                    };
                    if ord != std::cmp::Ordering::Equal {
                        return ord;
                    }
                }
                ia.cmp(ib)
            });
        }
        let skip = q.offset.unwrap_or(0);
        let take = q.limit.unwrap_or(usize::MAX);
        let rows = out
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|(_, r)| r.clone())
            .collect();
        Ok((obj, names, rows))
    }

    fn malformed(&self, obj: SalesforceObject, row: &Row) -> bool {
        row.get("Id")
            .and_then(Value::as_str)
            .and_then(|id| obj.index(id))
            .is_some_and(|n| self.common.is_malformed(obj.salt(), n))
    }

    /// A record as `query` returns it: `attributes`, then the selected fields (parent paths
    /// as nested objects).
    fn render(
        &self,
        data: &Data,
        version: &str,
        obj: SalesforceObject,
        row: &Row,
        fields: &[String],
    ) -> Value {
        let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": obj.name(), "url": format!("/services/data/v{version}/sobjects/{}/{id}", obj.name())}),
        );
        for f in fields {
            match f.split_once('.') {
                None => {
                    out.insert(f.clone(), row.get(f).cloned().unwrap_or(Value::Null));
                }
                Some((rel, rest)) => {
                    let Some((parent, _)) = self.relationship(obj, rel) else {
                        continue;
                    };
                    let pid = row.get(&format!("{rel}Id")).and_then(Value::as_str);
                    let prow = pid.and_then(|p| data.rows.get(&parent).and_then(|r| r.get(p)));
                    let slot = out.entry(rel.to_owned()).or_insert(Value::Null);
                    if let Some(prow) = prow {
                        if slot.is_null() {
                            let pid = pid.unwrap_or_default();
                            *slot = json!({"attributes": {"type": parent.name(), "url": format!("/services/data/v{version}/sobjects/{}/{pid}", parent.name())}});
                        }
                        if let Some(m) = slot.as_object_mut() {
                            m.insert(rest.to_owned(), self.resolve(data, parent, prow, rest));
                        }
                    }
                }
            }
        }
        if self.malformed(obj, row) {
            out.insert("SystemModstamp".into(), json!({"malformed": true}));
        }
        Value::Object(out)
    }

    fn csv_cell(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut Data, DateTime<Utc>) -> usize) -> usize {
        let mut data = lock(&self.data);
        let now = self.now(&data);
        f(&mut data, now)
    }
}

fn canonical_rel(rel: &str) -> String {
    SalesforceObject::parse(rel).map_or_else(|| rel.to_owned(), |o| o.name().to_owned())
}

fn array_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!([{"message": message, "errorCode": code}]))
}

fn soql_error(e: &SoqlError) -> Response<Body> {
    array_error(StatusCode::BAD_REQUEST, e.code, &e.message)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    resp
}

fn html(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!(
        "<html><head><title>{} {}</title></head><body><h1>Service unavailable</h1><p>Salesforce is temporarily unavailable.</p></body></html>",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// A 200 that announces its full length and sends half of it.
fn truncated() -> Response<Body> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(
        b"{\"totalSize\":2,\"done\":true,\"rec",
    ))];
    let mut resp = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("400"));
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn invalid_session() -> Response<Body> {
    array_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        "Session expired or invalid",
    )
}

fn version_of(v: &str) -> Option<String> {
    let n = v.strip_prefix('v')?;
    let (major, minor) = n.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    (minor == "0" && (20..=62).contains(&major)).then(|| n.to_owned())
}

fn not_found() -> Response<Body> {
    array_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// Faults, latency, session, daily limit: `Err` is the answer to send instead; `Ok` the
/// session's token.
async fn admit(inner: &Inner, headers: &HeaderMap) -> Result<String, Response<Body>> {
    let (injected, latency) = decide(&inner.common);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match injected {
        Injected::ServerError(code) if code == StatusCode::INTERNAL_SERVER_ERROR => {
            return Err(array_error(
                code,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1398476292-53513 (-1510418869)",
            ));
        }
        Injected::ServerError(code) => return Err(html(code)),
        Injected::RateLimited => {
            let mut resp = html(StatusCode::SERVICE_UNAVAILABLE);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(resp);
        }
        Injected::Drop => {
            let n = inner.common.seq.load(AtomicOrdering::Relaxed);
            return Err(if n.is_multiple_of(2) {
                dropped_response()
            } else {
                truncated()
            });
        }
        Injected::None => {}
    }
    let token = bearer(headers).ok_or_else(invalid_session)?.to_owned();
    let mut data = lock(&inner.data);
    let limit = data.session_requests;
    let Some(session) = data.sessions.get_mut(&token) else {
        return Err(invalid_session());
    };
    if session.alive && limit.is_some_and(|l| session.requests >= l) {
        session.alive = false;
    }
    if !session.alive {
        return Err(invalid_session());
    }
    if data.daily_used >= data.daily_limit {
        return Err(array_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    if let Some(s) = data.sessions.get_mut(&token) {
        s.requests += 1;
    }
    data.daily_used += 1;
    Ok(token)
}

/// `Sforce-Limit-Info` on every API answer.
async fn limit_info(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response<Body> {
    let mut resp = next.run(req).await;
    let (used, max) = {
        let d = lock(&inner.data);
        (d.daily_used, d.daily_limit)
    };
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
        resp.headers_mut().insert("sforce-limit-info", v);
    }
    resp
}

async fn versions() -> Response<Body> {
    let list: Vec<Value> = SIM_API_VERSIONS
        .iter()
        .map(|v| json!({"label": "Simulated", "url": format!("/services/data/v{v}"), "version": v}))
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

async fn limits(
    State(inner): State<Arc<Inner>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    if version_of(&version).is_none() {
        return not_found();
    }
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let d = lock(&inner.data);
    json_response(
        StatusCode::OK,
        &json!({"DailyApiRequests": {"Max": d.daily_limit, "Remaining": d.daily_limit.saturating_sub(d.daily_used)}}),
    )
}

async fn describe(
    State(inner): State<Arc<Inner>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response<Body> {
    if version_of(&version).is_none() {
        return not_found();
    }
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let Some(obj) = SalesforceObject::parse(&object) else {
        return array_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "The requested resource does not exist: sObject type '{object}' is not supported."
            ),
        );
    };
    let fields: Vec<Value> = inner
        .fields
        .get(&obj)
        .into_iter()
        .flatten()
        .map(|f| {
            let (reference, rel) = match f.ftype {
                FType::Reference(Some(p)) => (json!([p.name()]), json!(p.name())),
                FType::Reference(None) => (json!(["User"]), json!("Owner")),
                _ => (json!([]), Value::Null),
            };
            json!({
                "name": f.name,
                "label": f.name.trim_end_matches("__c").replace('_', " "),
                "type": f.ftype.describe(),
                "custom": f.custom,
                "nillable": !matches!(f.name.as_str(), "Id" | "IsDeleted" | "SystemModstamp" | "CreatedDate" | "LastModifiedDate"),
                "referenceTo": reference,
                "relationshipName": rel,
                "calculated": matches!(f.name.as_str(), "IsClosed" | "IsWon"),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"name": obj.name(), "label": obj.name(), "custom": false, "queryable": true, "fields": fields}),
    )
}

fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .strip_prefix("batchSize=")?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
        })
        .filter(|n| (200..=2_000).contains(n))
        .unwrap_or(2_000)
}

/// One batch from a locator (new or continued) and its `nextRecordsUrl`.
fn page(data: &mut Data, version: &str, id: &str) -> Value {
    let Some(loc) = data.locators.get_mut(id) else {
        return json!({"totalSize": 0, "done": true, "records": []});
    };
    let total = loc.rows.len();
    let end = loc.offset.saturating_add(loc.batch).min(total);
    let records: Vec<Value> = loc.rows[loc.offset..end].to_vec();
    loc.offset = end;
    loc.last_used = tokio::time::Instant::now();
    let mut body = json!({"totalSize": total, "done": end >= total, "records": records});
    if end < total {
        body["nextRecordsUrl"] = json!(format!("/services/data/v{version}/query/{id}-{end}"));
    } else {
        data.locators.remove(id);
        data.locator_order.retain(|l| l != id);
    }
    body
}

async fn query_common(
    inner: Arc<Inner>,
    version: String,
    q: HashMap<String, String>,
    headers: HeaderMap,
    all: bool,
) -> Response<Body> {
    let Some(version) = version_of(&version) else {
        return not_found();
    };
    let token = match admit(&inner, &headers).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some(text) = q.get("q") else {
        return array_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let parsed = match soql::parse(text) {
        Ok(p) => p,
        Err(e) => return soql_error(&e),
    };
    let mut data = lock(&inner.data);
    let (obj, names, rows) = match inner.execute(&data, &parsed, all) {
        Ok(r) => r,
        Err(e) => return soql_error(&e),
    };
    if parsed.fields.is_none() {
        return json_response(
            StatusCode::OK,
            &json!({"totalSize": rows.len(), "done": true, "records": []}),
        );
    }
    if inner
        .cfg
        .query_timeout_rows
        .is_some_and(|max| rows.len() > max)
    {
        return array_error(
            StatusCode::BAD_REQUEST,
            "QUERY_TIMEOUT",
            "Your query request was running for too long.",
        );
    }
    let rendered: Vec<Value> = rows
        .iter()
        .map(|r| inner.render(&data, &version, obj, r, &names))
        .collect();
    data.next_locator += 1;
    let id = format!("01g5g{:010}SIM", data.next_locator);
    data.locators.insert(
        id.clone(),
        Locator {
            session: token,
            rows: Arc::new(rendered),
            offset: 0,
            batch: batch_size(&headers),
            last_used: tokio::time::Instant::now(),
        },
    );
    data.locator_order.push_back(id.clone());
    while data.locator_order.len() > inner.cfg.max_open_locators {
        if let Some(old) = data.locator_order.pop_front() {
            data.locators.remove(&old);
        }
    }
    let body = page(&mut data, &version, &id);
    json_response(StatusCode::OK, &body)
}

async fn query(
    State(inner): State<Arc<Inner>>,
    Path(version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    query_common(inner, version, q, headers, false).await
}

async fn query_all(
    State(inner): State<Arc<Inner>>,
    Path(version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    query_common(inner, version, q, headers, true).await
}

async fn query_more(
    State(inner): State<Arc<Inner>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response<Body> {
    let Some(version) = version_of(&version) else {
        return not_found();
    };
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let mut data = lock(&inner.data);
    let invalid = || {
        array_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let Some((id, offset)) = locator.rsplit_once('-') else {
        return invalid();
    };
    let Some(loc) = data.locators.get(id) else {
        return invalid();
    };
    let session_alive = data.sessions.get(&loc.session).is_some_and(|s| s.alive);
    if !session_alive {
        return match inner.cfg.locator_death {
            LocatorDeath::InvalidQueryLocator => invalid(),
            LocatorDeath::InvalidSessionId => invalid_session(),
        };
    }
    if loc.last_used.elapsed() >= inner.cfg.locator_idle
        || offset.parse::<usize>().ok() != Some(loc.offset)
    {
        data.locators.remove(id);
        return invalid();
    }
    let id = id.to_owned();
    let body = page(&mut data, &version, &id);
    json_response(StatusCode::OK, &body)
}

fn job_info(id: &str, job: &Job, state: &str) -> Value {
    let mut v = json!({
        "id": id,
        "operation": job.operation,
        "object": job.object.name(),
        "createdById": "0055g0000000001AAA",
        "state": state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": job.version.parse::<f64>().unwrap_or(62.0),
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    });
    if state == "JobComplete" {
        v["numberRecordsProcessed"] = json!(job.rows.len());
    }
    if state == "Failed" {
        v["errorMessage"] = json!("InternalServerError: the query job failed; retry it");
    }
    v
}

async fn bulk_create(
    State(inner): State<Arc<Inner>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let Some(version) = version_of(&version) else {
        return not_found();
    };
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return array_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "unreadable JSON body",
        );
    };
    let operation = req.get("operation").and_then(Value::as_str).unwrap_or("");
    if !matches!(operation, "query" | "queryAll") {
        return array_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : Invalid operation: expected query or queryAll",
        );
    }
    let text = req.get("query").and_then(Value::as_str).unwrap_or("");
    let parsed = match soql::parse(text) {
        Ok(p) => p,
        Err(e) => return soql_error(&e),
    };
    if parsed.fields.is_none() || parsed.offset.is_some() {
        return array_error(
            StatusCode::BAD_REQUEST,
            "API_ERROR",
            "Aggregate functions and OFFSET are not supported in Bulk API 2.0 queries",
        );
    }
    let mut data = lock(&inner.data);
    let (obj, names, rows) = match inner.execute(&data, &parsed, operation == "queryAll") {
        Ok(r) => r,
        Err(e) => return soql_error(&e),
    };
    let mut rows = rows;
    if parsed.order.is_empty() {
        // Without ORDER BY the job's chunks run in parallel: no order to rely on.
        rows.sort_by_key(|r| {
            let id = r.get("Id").and_then(Value::as_str).unwrap_or_default();
            let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            mix(inner.cfg.seed, 0xb01c, h)
        });
    }
    let csv_rows = rows
        .iter()
        .map(|r| {
            let malformed = inner.malformed(obj, r);
            names
                .iter()
                .map(|n| {
                    if malformed && n == "SystemModstamp" {
                        Some("not-a-date".to_owned())
                    } else {
                        Inner::csv_cell(&inner.resolve(&data, obj, r, n))
                    }
                })
                .collect()
        })
        .collect();
    data.next_job += 1;
    let id = format!("7505g{:010}SIM", data.next_job);
    let fail = data.fail_jobs > 0;
    data.fail_jobs = data.fail_jobs.saturating_sub(1);
    let job = Job {
        version,
        operation: operation.to_owned(),
        object: obj,
        header: names,
        rows: csv_rows,
        polls: 0,
        fail,
    };
    let info = job_info(&id, &job, "UploadComplete");
    data.jobs.insert(id, job);
    json_response(StatusCode::OK, &info)
}

async fn bulk_status(
    State(inner): State<Arc<Inner>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response<Body> {
    if version_of(&version).is_none() {
        return not_found();
    }
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let mut data = lock(&inner.data);
    let Some(job) = data.jobs.get_mut(&id) else {
        return not_found();
    };
    job.polls += 1;
    let state = if job.polls <= inner.cfg.bulk_polls {
        "InProgress"
    } else if job.fail {
        "Failed"
    } else {
        "JobComplete"
    };
    json_response(StatusCode::OK, &job_info(&id, job, state))
}

fn csv_line(cells: impl Iterator<Item = Option<String>>) -> String {
    let mut line = cells
        .map(|c| match c {
            None => String::new(),
            Some(s) => format!("\"{}\"", s.replace('"', "\"\"")),
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

async fn bulk_results(
    State(inner): State<Arc<Inner>>,
    Path((version, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    let Some(version) = version_of(&version) else {
        return not_found();
    };
    if let Err(resp) = admit(&inner, &headers).await {
        return resp;
    }
    let data = lock(&inner.data);
    let Some(job) = data.jobs.get(&id) else {
        return not_found();
    };
    if job.version != version {
        return array_error(
            StatusCode::CONFLICT,
            "INVALIDJOB",
            &format!(
                "Results must be requested with the API version the job was created with ({})",
                job.version
            ),
        );
    }
    if job.polls <= inner.cfg.bulk_polls || job.fail {
        let status = if job.fail { "FAILED" } else { "IN_PROGRESS" };
        return array_error(
            StatusCode::PRECONDITION_FAILED,
            "JOB_NOT_COMPLETE",
            &format!("The job is not complete. Current status: {status}"),
        );
    }
    let start = match q.get("locator").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => {
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(l.trim_end_matches('='))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<usize>().ok());
            match decoded {
                Some(n) if n <= job.rows.len() => n,
                _ => {
                    return array_error(
                        StatusCode::BAD_REQUEST,
                        "INVALIDLOCATOR",
                        "Invalid locator",
                    );
                }
            }
        }
    };
    let max = q
        .get("maxRecords")
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(100_000);
    let end = start.saturating_add(max).min(job.rows.len());
    let mut body = csv_line(job.header.iter().cloned().map(Some));
    for row in &job.rows[start..end] {
        body.push_str(&csv_line(row.iter().cloned()));
    }
    let next = if end < job.rows.len() {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(end.to_string())
    } else {
        "null".to_owned()
    };
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    if let Ok(v) = HeaderValue::from_str(&next) {
        h.insert("sforce-locator", v);
    }
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert("sforce-numberofrecords", v);
    }
    resp
}

fn oauth_error(error: &str, description: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "error_description": description}),
    )
}

async fn oauth_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (mut client_id, mut client_secret) = (field("client_id"), field("client_secret"));
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        && let Some((id, secret)) = basic.split_once(':')
    {
        client_id = id.to_owned();
        client_secret = secret.to_owned();
    }
    if field("grant_type") != "refresh_token" {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if client_id != inner.cfg.client_id {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if client_secret != inner.cfg.client_secret {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    let mut data = lock(&inner.data);
    if field("refresh_token") != data.refresh_token {
        return oauth_error("invalid_grant", "expired access/refresh token");
    }
    for s in data.sessions.values_mut() {
        s.alive = false;
    }
    data.next_session += 1;
    let token = format!(
        "00D5g00000SIMORG!AQ{}.{:x}",
        data.next_session,
        mix(inner.cfg.seed, 77, data.next_session)
    );
    data.sessions.insert(
        token.clone(),
        Session {
            alive: true,
            requests: 0,
        },
    );
    let origin = inner.origin.get().cloned().unwrap_or_default();
    let mut body = json!({
        "access_token": token,
        "instance_url": origin,
        "id": format!("{origin}/id/00D5g00000SIMORG/0055g0000000001AAA"),
        "token_type": "Bearer",
        "issued_at": Utc::now().timestamp_millis().to_string(),
        "signature": "c2ltdWxhdGVkLXNpZ25hdHVyZQ==",
        "scope": "api refresh_token",
    });
    if inner.cfg.rotate_refresh_tokens {
        data.next_refresh += 1;
        let rotated = format!("{}-r{}", inner.cfg.refresh_token, data.next_refresh);
        data.refresh_token = rotated.clone();
        body["refresh_token"] = json!(rotated);
    }
    json_response(StatusCode::OK, &body)
}

impl SalesforceSim {
    /// Starts the simulator on `127.0.0.1` and an ephemeral port.
    pub async fn start(cfg: SalesforceSimConfig) -> std::io::Result<SalesforceSim> {
        let common = Arc::new(Common::new(cfg.seed, cfg.faults.clone()));
        let fields = SalesforceObject::ALL
            .into_iter()
            .map(|o| (o, field_defs(&cfg, o)))
            .collect();
        let inner = Arc::new(Inner {
            data: Mutex::new(Data {
                refresh_token: cfg.refresh_token.clone(),
                session_requests: cfg.session_requests,
                daily_limit: cfg.daily_limit,
                ..Default::default()
            }),
            fields,
            common: common.clone(),
            origin: OnceLock::new(),
            cfg,
        });
        {
            let mut data = lock(&inner.data);
            inner.seed(&mut data);
        }
        let api = Router::new()
            .route("/services/data/{version}/limits", get(limits))
            .route(
                "/services/data/{version}/sobjects/{object}/describe",
                get(describe),
            )
            .route("/services/data/{version}/query", get(query))
            .route("/services/data/{version}/queryAll", get(query_all))
            .route("/services/data/{version}/query/{locator}", get(query_more))
            .route(
                "/services/data/{version}/queryAll/{locator}",
                get(query_more),
            )
            .route("/services/data/{version}/jobs/query", post(bulk_create))
            .route("/services/data/{version}/jobs/query/{id}", get(bulk_status))
            .route(
                "/services/data/{version}/jobs/query/{id}/results",
                get(bulk_results),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                inner.clone(),
                limit_info,
            ));
        let router = Router::new()
            .route("/services/oauth2/token", post(oauth_token))
            .route("/services/data", get(versions))
            .route("/services/data/", get(versions))
            .merge(api)
            .with_state(inner.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                common,
                super::count_requests,
            ));
        let server = SimServer::serve(router).await?;
        let _ = inner.origin.set(server.base_url());
        Ok(SalesforceSim { inner, server })
    }

    /// `http://127.0.0.1:<port>`: the login host and the instance.
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

    /// Answers the next `n` requests with a 503 (Salesforce has no 429 on its REST API).
    pub fn burst_429(&self, n: u64) {
        self.inner
            .common
            .burst_429
            .store(n, AtomicOrdering::Relaxed);
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &SalesforceSimConfig {
        &self.inner.cfg
    }

    /// Creates a record (`Id`, timestamps and `IsDeleted` are set by the org) and returns
    /// its id.
    pub fn create<'a>(
        &self,
        obj: SalesforceObject,
        fields: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> String {
        let fields: Vec<(String, Value)> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut id = String::new();
        self.inner.write(|data, now| {
            let n = data.next_index.get(&obj).copied().unwrap_or(1);
            data.next_index.insert(obj, n + 1);
            id = obj.id(n);
            let mut row = Row::new();
            for f in self.inner.fields.get(&obj).into_iter().flatten() {
                row.insert(f.name.clone(), Value::Null);
            }
            row.insert("Id".into(), json!(id));
            row.insert("IsDeleted".into(), json!(false));
            for (k, v) in fields {
                row.insert(k, v);
            }
            for t in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
                row.insert(t.into(), sf_time(now));
            }
            data.rows.entry(obj).or_default().insert(id.clone(), row);
            1
        });
        id
    }

    fn change<'a>(
        &self,
        obj: SalesforceObject,
        id: &str,
        fields: impl IntoIterator<Item = (&'a str, Value)>,
        user_edit: bool,
    ) -> bool {
        let fields: Vec<(String, Value)> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.inner.write(|data, now| {
            let Some(row) = data.rows.get_mut(&obj).and_then(|r| r.get_mut(id)) else {
                return 0;
            };
            for (k, v) in fields {
                row.insert(k, v);
            }
            row.insert("SystemModstamp".into(), sf_time(now));
            if user_edit {
                row.insert("LastModifiedDate".into(), sf_time(now));
            }
            1
        }) == 1
    }

    /// A user's edit: moves `LastModifiedDate` and `SystemModstamp`.
    pub fn modify<'a>(
        &self,
        obj: SalesforceObject,
        id: &str,
        fields: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> bool {
        self.change(obj, id, fields, true)
    }

    /// An automated change (workflow, trigger): moves `SystemModstamp` only.
    pub fn automation<'a>(
        &self,
        obj: SalesforceObject,
        id: &str,
        fields: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> bool {
        self.change(obj, id, fields, false)
    }

    /// Renames a picklist value on every record holding it (Salesforce moves their
    /// `SystemModstamp`, not `LastModifiedDate`); returns how many records changed.
    pub fn rename_picklist_value(
        &self,
        obj: SalesforceObject,
        field: &str,
        from: &str,
        to: &str,
    ) -> usize {
        self.inner.write(|data, now| {
            let mut n = 0;
            for row in data
                .rows
                .get_mut(&obj)
                .into_iter()
                .flat_map(|r| r.values_mut())
            {
                if row.get(field).and_then(Value::as_str) == Some(from) {
                    row.insert(field.to_owned(), json!(to));
                    row.insert("SystemModstamp".into(), sf_time(now));
                    n += 1;
                }
            }
            n
        })
    }

    /// Moves records to the recycle bin, with Salesforce's cascades (an Account takes its
    /// Contacts and Opportunities; an Opportunity or Contact takes its contact roles);
    /// returns how many records were deleted.
    pub fn delete(&self, obj: SalesforceObject, id: &str) -> usize {
        use SalesforceObject as O;
        self.inner.write(|data, now| {
            data.next_delete += 1;
            let batch = data.next_delete;
            let mut targets: Vec<(O, String)> = vec![(obj, id.to_owned())];
            let mut i = 0;
            while i < targets.len() {
                let (o, tid) = targets[i].clone();
                i += 1;
                let children: &[(O, &str)] = match o {
                    O::Account => &[(O::Contact, "AccountId"), (O::Opportunity, "AccountId")],
                    O::Contact => &[(O::OpportunityContactRole, "ContactId")],
                    O::Opportunity => &[(O::OpportunityContactRole, "OpportunityId")],
                    O::OpportunityContactRole => &[],
                };
                for (child, fk) in children {
                    for (cid, row) in data.rows.get(child).into_iter().flatten() {
                        let live = row.get("IsDeleted").and_then(Value::as_bool) == Some(false);
                        if live && row.get(*fk).and_then(Value::as_str) == Some(tid.as_str()) {
                            targets.push((*child, cid.clone()));
                        }
                    }
                }
            }
            let mut n = 0;
            for (o, tid) in targets {
                if let Some(row) = data.rows.get_mut(&o).and_then(|r| r.get_mut(&tid))
                    && row.get("IsDeleted").and_then(Value::as_bool) == Some(false)
                {
                    row.insert("IsDeleted".into(), json!(true));
                    row.insert("SystemModstamp".into(), sf_time(now));
                    data.deleted_by.insert((o, tid), batch);
                    n += 1;
                }
            }
            n
        })
    }

    /// Restores a record from the recycle bin with everything its delete cascaded to;
    /// returns how many records came back.
    pub fn undelete(&self, obj: SalesforceObject, id: &str) -> usize {
        self.inner.write(|data, now| {
            let Some(batch) = data.deleted_by.get(&(obj, id.to_owned())).copied() else {
                return 0;
            };
            let keys: Vec<(SalesforceObject, String)> = data
                .deleted_by
                .iter()
                .filter(|(_, b)| **b == batch)
                .map(|(k, _)| k.clone())
                .collect();
            for (o, tid) in &keys {
                data.deleted_by.remove(&(*o, tid.clone()));
                if let Some(row) = data.rows.get_mut(o).and_then(|r| r.get_mut(tid)) {
                    row.insert("IsDeleted".into(), json!(false));
                    row.insert("SystemModstamp".into(), sf_time(now));
                }
            }
            keys.len()
        })
    }

    /// Sets the `SystemModstamp` of records (many on one second; a late commit on an
    /// older second).
    pub fn stamp<'a>(
        &self,
        obj: SalesforceObject,
        ids: impl IntoIterator<Item = &'a str>,
        at: DateTime<Utc>,
    ) {
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        self.inner.write(|data, _| {
            let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
            for id in &ids {
                if let Some(row) = data.rows.get_mut(&obj).and_then(|r| r.get_mut(id)) {
                    row.insert("SystemModstamp".into(), sf_time(at));
                }
            }
            ids.len()
        });
    }

    /// Moves the org's clock (the time mutations are stamped with) forward.
    pub fn advance_clock(&self, by: Duration) {
        let mut data = lock(&self.inner.data);
        data.clock_offset += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }

    /// The org's clock: now (plus [`SalesforceSim::advance_clock`]), to the second.
    pub fn now(&self) -> DateTime<Utc> {
        let data = lock(&self.inner.data);
        self.inner.now(&data)
    }

    /// One record, deleted or not.
    pub fn record(&self, obj: SalesforceObject, id: &str) -> Option<SalesforceRecord> {
        let data = lock(&self.inner.data);
        data.rows.get(&obj)?.get(id).map(|r| SalesforceRecord {
            object: obj,
            id: id.to_owned(),
            fields: r.clone(),
        })
    }

    /// Every record of an object, deleted ones included, in id order.
    pub fn all_records(&self, obj: SalesforceObject) -> Vec<SalesforceRecord> {
        let data = lock(&self.inner.data);
        data.rows
            .get(&obj)
            .into_iter()
            .flatten()
            .map(|(id, r)| SalesforceRecord {
                object: obj,
                id: id.clone(),
                fields: r.clone(),
            })
            .collect()
    }

    /// The live (not deleted) records of an object: the truth a sync must equal.
    pub fn records(&self, obj: SalesforceObject) -> Vec<SalesforceRecord> {
        self.all_records(obj)
            .into_iter()
            .filter(|r| !r.is_deleted())
            .collect()
    }

    /// How many live records an object has.
    pub fn truth_count(&self, obj: SalesforceObject) -> u64 {
        self.records(obj).len() as u64
    }

    /// Whether a record is served malformed (see [`FaultConfig::malformed_rate`]).
    pub fn is_malformed(&self, obj: SalesforceObject, id: &str) -> bool {
        obj.index(id)
            .is_some_and(|n| self.inner.common.is_malformed(obj.salt(), n))
    }

    /// Ends every session now (their access tokens and locators die).
    pub fn expire_sessions(&self) {
        let mut data = lock(&self.inner.data);
        for s in data.sessions.values_mut() {
            s.alive = false;
        }
    }

    /// Sessions end after `n` API requests from now on (`None`: never).
    pub fn expire_sessions_after(&self, n: Option<u64>) {
        lock(&self.inner.data).session_requests = n;
    }

    /// Makes every open locator idle past its lifetime.
    pub fn expire_locators(&self) {
        let mut data = lock(&self.inner.data);
        let idle = self.inner.cfg.locator_idle;
        for l in data.locators.values_mut() {
            if let Some(t) = tokio::time::Instant::now().checked_sub(idle) {
                l.last_used = t;
            }
        }
    }

    /// The refresh token the org accepts now (after rotations).
    pub fn current_refresh_token(&self) -> String {
        lock(&self.inner.data).refresh_token.clone()
    }

    /// Access tokens issued so far (token exchanges that succeeded).
    pub fn sessions_issued(&self) -> u64 {
        lock(&self.inner.data).next_session
    }

    /// API requests counted against the daily limit so far.
    pub fn daily_usage(&self) -> u64 {
        lock(&self.inner.data).daily_used
    }

    /// Replaces the daily request limit.
    pub fn set_daily_limit(&self, limit: u64) {
        lock(&self.inner.data).daily_limit = limit;
    }

    /// Starts a new day: the usage goes back to zero.
    pub fn reset_daily_usage(&self) {
        lock(&self.inner.data).daily_used = 0;
    }

    /// The next `n` Bulk query jobs end `Failed`.
    pub fn fail_next_bulk_jobs(&self, n: u64) {
        lock(&self.inner.data).fail_jobs = n;
    }

    /// Bulk query jobs created so far.
    pub fn bulk_jobs_created(&self) -> u64 {
        lock(&self.inner.data).next_job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_like_their_index_and_parse_back() {
        let a = SalesforceObject::Contact.id(9);
        let b = SalesforceObject::Contact.id(10);
        assert_eq!(a.len(), 18);
        assert!(a < b);
        assert_eq!(SalesforceObject::Contact.index(&b), Some(10));
        assert_eq!(SalesforceObject::Account.index(&b), None);
    }

    #[test]
    fn versions_are_checked() {
        assert_eq!(version_of("v62.0").as_deref(), Some("62.0"));
        assert_eq!(version_of("62.0"), None);
        assert_eq!(version_of("v99.0"), None);
    }
}
