//! The fixture workspace: accounts with domains, contacts with emails and account ids, open
//! and closed deals with close dates, conversations with internal and external participants.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use pandora_sync::model::{
    Account, Contact, Conversation, Deal, Participant, RecordKind, record_id,
};
use pandora_sync::store::{NewConnection, RecordQuery};
use pandora_sync::{Checkpoint, ConnectorKind, Record, RecordBatch, SyncStore};
use serde_json::json;
use uuid::Uuid;

pub const HS: ConnectorKind = ConnectorKind::Hubspot;
pub const SF: ConnectorKind = ConnectorKind::Salesforce;
pub const GONG: ConnectorKind = ConnectorKind::Gong;

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

/// "Today" of the fixture's computed fields.
pub fn today() -> NaiveDate {
    date(2024, 6, 10)
}

fn updated() -> DateTime<Utc> {
    at(2024, 6, 1, 8, 0)
}

pub fn account(ws: Uuid, source: ConnectorKind, id: &str, domain: &str) -> Record {
    let mut a = Account::new(ws, source, id);
    a.meta.source_updated_at = Some(updated());
    a.name = Some(format!("Account {id}"));
    a.domain = Some(domain.to_owned());
    a.into()
}

pub fn contact(ws: Uuid, source: ConnectorKind, id: &str, email: &str, account: &str) -> Record {
    let mut c = Contact::new(ws, source, id);
    c.meta.source_updated_at = Some(updated());
    c.email = Some(email.to_owned());
    c.account_source_id = Some(account.to_owned());
    c.into()
}

pub struct DealSpec {
    pub id: &'static str,
    pub account: &'static str,
    pub closed: Option<bool>,
    pub close: Option<NaiveDate>,
    pub created: Option<DateTime<Utc>>,
}

pub fn deal(ws: Uuid, source: ConnectorKind, spec: &DealSpec) -> Deal {
    let mut d = Deal::new(ws, source, spec.id);
    d.meta.source_updated_at = Some(updated());
    d.meta.source_created_at = spec.created;
    d.name = Some(format!("Deal {}", spec.id));
    d.account_source_id = Some(spec.account.to_owned());
    d.is_closed = spec.closed;
    d.close_date = spec.close;
    d
}

pub fn participant(email: Option<&str>, internal: bool) -> Participant {
    Participant {
        email: email.map(str::to_owned),
        name: Some(
            email
                .unwrap_or("Dial-in")
                .split('@')
                .next()
                .unwrap()
                .to_owned(),
        ),
        is_internal: internal,
    }
}

pub fn conversation(ws: Uuid, id: &str, people: &[(Option<&str>, bool)]) -> Conversation {
    let mut c = Conversation::new(ws, GONG, id);
    c.meta.source_updated_at = Some(updated());
    c.title = Some(format!("Call {id}"));
    c.participants = people.iter().map(|(e, i)| participant(*e, *i)).collect();
    c
}

pub async fn connect(
    store: &dyn SyncStore,
    ws: Uuid,
    kind: ConnectorKind,
    config: serde_json::Value,
) {
    let mut new = NewConnection::new(ws, kind, "api_key");
    new.config = config;
    store.create_connection(new).await.unwrap();
}

pub async fn write(store: &dyn SyncStore, ws: Uuid, source: ConnectorKind, records: Vec<Record>) {
    store
        .write_batch(
            ws,
            source,
            &RecordBatch::new(records),
            &Checkpoint::default(),
        )
        .await
        .unwrap();
}

/// Row id of a fixture record.
pub fn id(ws: Uuid, source: ConnectorKind, source_id: &str) -> Uuid {
    record_id(ws, source, source_id)
}

/// The fixture's deals (all in the main workspace).
pub fn hubspot_deals() -> Vec<DealSpec> {
    vec![
        // Acme (a1): two open deals, a closed one closing later, an archived open one.
        DealSpec {
            id: "d1",
            account: "a1",
            closed: Some(false),
            close: Some(date(2024, 7, 1)),
            created: Some(at(2024, 6, 1, 23, 59)),
        },
        DealSpec {
            id: "d2",
            account: "a1",
            closed: None,
            close: Some(date(2024, 8, 15)),
            created: Some(at(2024, 2, 1, 0, 0)),
        },
        DealSpec {
            id: "d3",
            account: "a1",
            closed: Some(true),
            close: Some(date(2024, 12, 1)),
            created: Some(at(2024, 1, 15, 8, 0)),
        },
        DealSpec {
            id: "d4",
            account: "a1",
            closed: Some(false),
            close: Some(date(2025, 1, 1)),
            created: Some(at(2024, 1, 1, 0, 0)),
        },
        // Globex (a2): closed deals only.
        DealSpec {
            id: "d5",
            account: "a2",
            closed: Some(true),
            close: Some(date(2024, 3, 1)),
            created: Some(at(2024, 1, 1, 12, 0)),
        },
        DealSpec {
            id: "d6",
            account: "a2",
            closed: Some(true),
            close: Some(date(2024, 5, 1)),
            created: Some(at(2023, 11, 30, 0, 0)),
        },
        // Hooli West (a9), which loses the domain tie to Hooli East (a0): no creation time.
        DealSpec {
            id: "d7",
            account: "a9",
            closed: Some(false),
            close: Some(date(2024, 9, 9)),
            created: None,
        },
    ]
}

pub fn salesforce_deals() -> Vec<DealSpec> {
    vec![
        // Umbrella (s1): an open deal without close date (sorts last), one with; created after
        // "today" (days_open clamps to 0).
        DealSpec {
            id: "sd1",
            account: "s1",
            closed: Some(false),
            close: None,
            created: Some(at(2024, 6, 20, 0, 0)),
        },
        DealSpec {
            id: "sd2",
            account: "s1",
            closed: None,
            close: Some(date(2024, 9, 1)),
            created: Some(at(2024, 5, 5, 5, 5)),
        },
    ]
}

/// Seeds the main fixture workspace.
pub async fn seed(store: &dyn SyncStore, ws: Uuid) {
    connect(store, ws, HS, json!({})).await;
    connect(store, ws, SF, json!({})).await;
    connect(store, ws, GONG, json!({})).await;

    let mut archived_account = Account::new(ws, HS, "a3");
    archived_account.meta.source_updated_at = Some(updated());
    archived_account.domain = Some("initech.com".into());
    archived_account.meta.archived_at = Some(updated());
    write(
        store,
        ws,
        HS,
        vec![
            account(ws, HS, "a1", "acme.com"),
            account(ws, HS, "a2", " WWW.Globex.com"),
            archived_account.into(),
            account(ws, HS, "a0", "hooli.com"),
            account(ws, HS, "a9", "Hooli.com"),
        ],
    )
    .await;
    write(store, ws, SF, vec![account(ws, SF, "s1", "umbrella.com")]).await;

    let mut archived_contact = Contact::new(ws, HS, "c5");
    archived_contact.meta.source_updated_at = Some(updated());
    archived_contact.email = Some("old@umbrella.com".into());
    archived_contact.account_source_id = Some("a1".into());
    archived_contact.meta.archived_at = Some(updated());
    write(
        store,
        ws,
        HS,
        vec![
            contact(ws, HS, "c1", " JANE@Acme.com ", "a1"),
            contact(ws, HS, "c2", "bob@gmail.com", "a2"),
            contact(ws, HS, "c3", "pat@acme.com", "a2"),
            contact(ws, HS, "c4", "gone@acme.com", "a3"),
            archived_contact.into(),
        ],
    )
    .await;

    let mut deals: Vec<Record> = hubspot_deals()
        .iter()
        .map(|s| deal(ws, HS, s).into())
        .collect();
    for d in &mut deals {
        let Record::Deal(d) = d else { unreachable!() };
        match d.meta.source_id.as_str() {
            "d4" => d.meta.archived_at = Some(updated()),
            "d6" => d.days_open = Some(999), // stale: the refresh fixes it
            _ => {}
        }
    }
    write(store, ws, HS, deals).await;
    write(
        store,
        ws,
        SF,
        salesforce_deals()
            .iter()
            .map(|s| deal(ws, SF, s).into())
            .collect(),
    )
    .await;

    let me = Some("me@pandora.io");
    let mut convs = vec![
        conversation(ws, "v1", &[(me, true), (Some("Jane@ACME.com"), false)]),
        conversation(ws, "v2", &[(me, true), (Some("pat@acme.com"), false)]),
        conversation(ws, "v3", &[(Some("bob@gmail.com"), false)]),
        conversation(ws, "v4", &[(me, true), (Some("x@hooli.com"), false)]),
        conversation(
            ws,
            "v5",
            &[
                (Some("alice@pandora.io"), true),
                (Some("bob2@pandora.io"), true),
            ],
        ),
        conversation(
            ws,
            "v6",
            &[
                (Some("ops@umbrella.com"), true),
                (Some("y@unknown.org"), false),
            ],
        ),
        conversation(ws, "v7", &[]),
        conversation(
            ws,
            "v8",
            &[
                (Some("k@umbrella.com"), false),
                (Some("old@umbrella.com"), false),
            ],
        ),
        conversation(ws, "v9", &[(Some("z@initech.com"), false)]),
        conversation(ws, "v10", &[(Some("jane@acme.com"), false)]),
        conversation(ws, "v11", &[(None, false), (Some("q@globex.com"), false)]),
        conversation(ws, "v12", &[(Some("gone@acme.com"), false)]),
        conversation(
            ws,
            "v13",
            &[
                (Some("u1@hooli.com"), false),
                (Some("u2@acme.com"), false),
                (Some("u3@acme.com"), false),
            ],
        ),
        conversation(
            ws,
            "v14",
            &[
                (Some("Boss@PANDORA.io"), false),
                (Some("cto@pandora.io"), true),
            ],
        ),
        conversation(ws, "v15", &[(Some("founder@gmail.com"), true), (me, true)]),
    ];
    for c in &mut convs {
        match c.meta.source_id.as_str() {
            // Without participants: the connector's verdict stays.
            "v7" => c.is_internal = Some(true),
            // A stale link to an account archived since.
            "v9" => {
                c.linked_account_id = Some(id(ws, HS, "a3"));
                c.linked_deal_id = Some(id(ws, HS, "d3"));
            }
            "v10" => c.meta.archived_at = Some(updated()),
            _ => {}
        }
    }
    write(
        store,
        ws,
        GONG,
        convs.into_iter().map(Record::from).collect(),
    )
    .await;
}

/// Seeds the other workspace: the same names, which must never be touched.
pub async fn seed_other(store: &dyn SyncStore, ws: Uuid) {
    connect(store, ws, HS, json!({})).await;
    connect(store, ws, GONG, json!({})).await;
    write(
        store,
        ws,
        HS,
        vec![
            account(ws, HS, "a1", "acme.com"),
            contact(ws, HS, "c1", "jane@acme.com", "a1"),
            deal(ws, HS, &hubspot_deals()[0]).into(),
        ],
    )
    .await;
    write(
        store,
        ws,
        GONG,
        vec![
            conversation(
                ws,
                "v1",
                &[
                    (Some("me@pandora.io"), true),
                    (Some("jane@acme.com"), false),
                ],
            )
            .into(),
        ],
    )
    .await;
}

/// Every row of the workspace's accounts, contacts, deals and conversations (archived ones
/// included), for before/after comparisons.
pub async fn snapshot(store: &dyn SyncStore, ws: Uuid) -> Vec<Record> {
    let mut all = Vec::new();
    for kind in [
        RecordKind::Account,
        RecordKind::Contact,
        RecordKind::Deal,
        RecordKind::Conversation,
    ] {
        let query = RecordQuery {
            include_archived: true,
            ..RecordQuery::default()
        };
        all.extend(store.list_records(ws, kind, &query).await.unwrap());
    }
    all
}

/// A conversation of the fixture.
pub async fn conv(store: &dyn SyncStore, ws: Uuid, source_id: &str) -> Conversation {
    match store
        .get_record(ws, RecordKind::Conversation, GONG, source_id)
        .await
        .unwrap()
    {
        Some(Record::Conversation(c)) => c,
        other => panic!("conversation {source_id}: {other:?}"),
    }
}

/// A deal of the fixture.
pub async fn get_deal(
    store: &dyn SyncStore,
    ws: Uuid,
    source: ConnectorKind,
    source_id: &str,
) -> Deal {
    match store
        .get_record(ws, RecordKind::Deal, source, source_id)
        .await
        .unwrap()
    {
        Some(Record::Deal(d)) => d,
        other => panic!("deal {source_id}: {other:?}"),
    }
}
