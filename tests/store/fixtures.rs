//! Records with every column filled, and small helpers.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use pandora_sync::model::{
    Account, Contact, Conversation, Deal, DealContact, Document, Participant, RecordKind, Task,
};
use pandora_sync::store::NewConnection;
use pandora_sync::{Checkpoint, ConnectorKind, Record};
use serde_json::json;
use uuid::Uuid;

use crate::harness::Harness;

/// `n` minutes after the suite's start, at microsecond precision.
pub fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 9, 0, 0).unwrap() + Duration::minutes(minutes)
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Creates the workspace's connection for `connector` (no credentials).
pub async fn connect(h: &Harness, ws: Uuid, connector: ConnectorKind) {
    h.store
        .create_connection(NewConnection::new(ws, connector, "api_key"))
        .await
        .unwrap();
}

pub fn checkpoint(stream: &str, cursor: &str) -> Checkpoint {
    let mut c = Checkpoint::default();
    let s = c.stream_mut(stream);
    s.cursor = Some(cursor.to_owned());
    s.watermark = Some(t(0));
    c
}

pub fn account(ws: Uuid, id: &str, version: i64) -> Account {
    let mut a = Account::new(ws, ConnectorKind::Hubspot, id);
    a.meta.source_created_at = Some(t(-1000));
    a.meta.source_updated_at = Some(t(version));
    a.meta.custom_fields.insert("tier".into(), json!("gold"));
    a.meta
        .custom_fields
        .insert("scores".into(), json!([1, 2.5, null, {"x": true}]));
    a.name = Some(format!("Account {id} v{version}"));
    a.domain = Some(format!("{id}.example.com"));
    a.industry = Some("Software".into());
    a.employee_count = Some(250);
    a.annual_revenue = Some(12_500_000.75);
    a.owner_id = Some("owner-1".into());
    a
}

pub fn contact(ws: Uuid, id: &str, version: i64) -> Contact {
    let mut c = Contact::new(ws, ConnectorKind::Hubspot, id);
    c.meta.source_created_at = Some(t(-500));
    c.meta.source_updated_at = Some(t(version));
    c.email = Some(format!("{id}@example.com"));
    c.first_name = Some("Ada".into());
    c.last_name = Some("Lovelace".into());
    c.title = Some("CTO".into());
    c.phone = Some("+44 20 7946 0000".into());
    c.account_source_id = Some("a1".into());
    c.lifecycle_stage = Some("customer".into());
    c.owner_id = Some("owner-2".into());
    c
}

pub fn deal(ws: Uuid, id: &str, version: i64) -> Deal {
    let mut d = Deal::new(ws, ConnectorKind::Hubspot, id);
    d.meta.source_created_at = Some(t(-2000));
    d.meta.source_updated_at = Some(t(version));
    d.meta
        .custom_fields
        .insert("hs_priority".into(), json!("high"));
    d.name = Some(format!("Deal {id} v{version}"));
    d.amount = Some(1500.5);
    d.currency = Some("EUR".into());
    d.stage = Some("negotiation".into());
    d.pipeline = Some("default".into());
    d.close_date = Some(date(2024, 9, 30));
    d.probability = Some(0.6);
    d.owner_id = Some("owner-1".into());
    d.account_source_id = Some("a1".into());
    d.is_closed = Some(false);
    d.is_won = Some(false);
    d.forecast_category = Some("pipeline".into());
    d.days_open = Some(12);
    d.days_to_close = Some(-3);
    d
}

pub fn conversation(ws: Uuid, id: &str, version: i64) -> Conversation {
    let mut c = Conversation::new(ws, ConnectorKind::Hubspot, id);
    c.meta.source_updated_at = Some(t(version));
    c.title = Some("Discovery call".into());
    c.started_at = Some(t(-30));
    c.duration_seconds = Some(1800);
    c.url = Some("https://calls.example.com/1".into());
    c.host_email = Some("rep@ours.com".into());
    c.participants = vec![
        Participant {
            email: Some("rep@ours.com".into()),
            name: Some("Rep".into()),
            is_internal: true,
        },
        Participant {
            email: None,
            name: Some("Guest".into()),
            is_internal: false,
        },
    ];
    c.summary = Some("They want a pilot.".into());
    c.transcript = Some("Hello…".into());
    c.is_internal = Some(false);
    c.linked_account_id = Some(Uuid::from_u128(0xa));
    c.linked_deal_id = Some(Uuid::from_u128(0xd));
    c
}

pub fn task(ws: Uuid, id: &str, version: i64) -> Task {
    let mut x = Task::new(ws, ConnectorKind::Hubspot, id);
    x.meta.source_updated_at = Some(t(version));
    x.board_id = Some("b1".into());
    x.board_name = Some("Onboarding".into());
    x.group_name = Some("This week".into());
    x.title = Some("Send contract".into());
    x.status = Some("Working on it".into());
    x.assignee_email = Some("rep@ours.com".into());
    x.due_date = Some(date(2024, 6, 7));
    x.completed_at = Some(t(5));
    x.url = Some("https://tasks.example.com/1".into());
    x
}

pub fn document(ws: Uuid, id: &str, version: i64) -> Document {
    let mut d = Document::new(ws, ConnectorKind::Hubspot, id);
    d.meta.source_updated_at = Some(t(version));
    d.title = Some("Proposal.pdf".into());
    d.mime_type = Some("application/pdf".into());
    d.url = Some("https://docs.example.com/1".into());
    d.owner_email = Some("rep@ours.com".into());
    d.content_text = Some("Scope and pricing".into());
    d.size_bytes = Some(123_456);
    d.parent_id = Some("folder-1".into());
    d
}

pub fn link(ws: Uuid, deal: &str, contact: &str, role: Option<&str>) -> DealContact {
    DealContact {
        workspace_id: ws,
        source: ConnectorKind::Hubspot,
        deal_source_id: deal.into(),
        contact_source_id: contact.into(),
        role: role.map(str::to_owned),
    }
}

/// One fully populated record of every kind.
pub fn one_of_each(ws: Uuid, version: i64) -> Vec<Record> {
    vec![
        account(ws, "a1", version).into(),
        contact(ws, "c1", version).into(),
        deal(ws, "d1", version).into(),
        link(ws, "d1", "c1", Some("champion")).into(),
        conversation(ws, "v1", version).into(),
        task(ws, "t1", version).into(),
        document(ws, "f1", version).into(),
    ]
}

/// A record with `synced_at` cleared, to compare with what was written.
pub fn unsynced(mut r: Record) -> Record {
    if let Some(m) = r.meta_mut() {
        m.synced_at = None;
    }
    r
}

/// Reads a record back by kind and provider id.
pub async fn read(h: &Harness, ws: Uuid, kind: RecordKind, id: &str) -> Option<Record> {
    h.store
        .get_record(ws, kind, ConnectorKind::Hubspot, id)
        .await
        .unwrap()
}

/// Reads a deal back.
pub async fn read_deal(h: &Harness, ws: Uuid, id: &str) -> Option<Deal> {
    match read(h, ws, RecordKind::Deal, id).await {
        Some(Record::Deal(d)) => Some(d),
        None => None,
        Some(other) => panic!("expected a deal, got {other:?}"),
    }
}
