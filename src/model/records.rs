//! The normalized records, one struct per table of the schema.

use std::cell::Cell;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::kind::ConnectorKind;

/// Unmapped provider properties, stored in the `custom_fields` JSON column.
pub type CustomFields = serde_json::Map<String, serde_json::Value>;

/// UUID namespace for record ids: v5 of `(workspace, source, source_id)`.
const RECORD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_1b6e_37c4_4f4e_9d2e_70a5_5b1c_d3e1);

/// UUID namespace of the hash of `(workspace, source)` that leads an ordered record id.
const ORDERED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_54d1_0c7a_4a93_b6f0_1e4d_97c2_58a3);

/// The columns every record table shares.
///
/// `id` is derived from `(workspace_id, source, source_id)` ([`record_id`]), so the same
/// provider record always gets the same id, across syncs and across machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Row id.
    pub id: Uuid,
    /// The workspace (tenant) that owns the row.
    pub workspace_id: Uuid,
    /// The connector the record came from.
    pub source: ConnectorKind,
    /// The provider's id of the record.
    pub source_id: String,
    /// Provider properties without a typed column.
    #[serde(default)]
    pub custom_fields: CustomFields,
    /// When the provider created the record.
    pub source_created_at: Option<DateTime<Utc>>,
    /// When the provider last modified the record; the watermark comes from this.
    pub source_updated_at: Option<DateTime<Utc>>,
    /// When the record was archived or deleted at the provider (soft delete).
    pub archived_at: Option<DateTime<Utc>>,
    /// When the row was last written by a sync; set by the store.
    pub synced_at: Option<DateTime<Utc>>,
}

impl RecordMeta {
    /// Metadata for a provider record, with its deterministic id and empty optional fields.
    pub fn new(workspace_id: Uuid, source: ConnectorKind, source_id: impl Into<String>) -> Self {
        let source_id = source_id.into();
        RecordMeta {
            id: record_id(workspace_id, source, &source_id),
            workspace_id,
            source,
            source_id,
            custom_fields: CustomFields::new(),
            source_created_at: None,
            source_updated_at: None,
            archived_at: None,
            synced_at: None,
        }
    }
}

/// The deterministic row id of a provider record.
///
/// - A source id in canonical decimal (digits only, no leading zero, at most
///   `u64::MAX`; HubSpot, Gong, monday.com) gets an ordered id (UUID v8): 58 bits hashed from
///   the workspace and source, then the number itself. Ids of one workspace and source sort
///   as their numbers do, in UUID byte order and in the hyphenated text SQLite stores, so a
///   sync that writes records in id order (HubSpot lists, Gong's numeric ids) appends to the
///   `id` index instead of scattering its inserts over every page of it.
/// - Any other source id (Salesforce, Fireflies, Google Drive) gets UUID v5 of the
///   workspace, the source, a NUL and the source id.
///
/// Two different records never share an id within one workspace and source (the number,
/// or the SHA-1 of the whole name, is in it); across workspaces and sources a v8 id
/// repeats only if both 58-bit hashes do. The store never changes a stored row's id, so
/// rows written before ids were ordered (all v5) keep theirs.
pub fn record_id(workspace_id: Uuid, source: ConnectorKind, source_id: &str) -> Uuid {
    match canonical_number(source_id) {
        Some(n) => ordered_id(workspace_id, source, n),
        None => v5_of(&RECORD_ID_NAMESPACE, workspace_id, source, Some(source_id)),
    }
}

/// UUID v5 in `namespace` of the workspace's bytes and the source's name, then (when given)
/// a NUL and the source id.
fn v5_of(namespace: &Uuid, workspace_id: Uuid, source: ConnectorKind, id: Option<&str>) -> Uuid {
    let mut name = Vec::with_capacity(16 + 16 + 1 + id.map_or(0, str::len));
    name.extend_from_slice(workspace_id.as_bytes());
    name.extend_from_slice(source.as_str().as_bytes());
    if let Some(id) = id {
        name.push(0);
        name.extend_from_slice(id.as_bytes());
    }
    Uuid::new_v5(namespace, &name)
}

/// `s` as a number when it is its canonical decimal text (so `"7"` and `"007"` never share
/// an id): ASCII digits, no leading zero, within `u64`.
fn canonical_number(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let canonical =
        !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b.len() == 1 || b[0] != b'0');
    if canonical { s.parse().ok() } else { None }
}

/// The 58-bit hash of `(workspace, source)` that starts their ordered ids. A sync hashes
/// one pair for every record, so the last pair's hash is kept per thread (the SHA-1 was 2 %
/// of a sync's instructions).
fn prefix_hash(workspace_id: Uuid, source: ConnectorKind) -> u128 {
    thread_local! {
        static LAST: Cell<Option<(Uuid, ConnectorKind, u128)>> = const { Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((w, s, h)) if w == workspace_id && s == source => h,
        _ => {
            // The v5 hash's first 48 bits, and the 12 after its version nibble: 60 hashed
            // bits, of which the first 58 are used.
            let h = v5_of(&ORDERED_ID_NAMESPACE, workspace_id, source, None).as_u128();
            let hash58 = (((h >> 80) << 12) | ((h >> 64) & 0xfff)) >> 2;
            last.set(Some((workspace_id, source, hash58)));
            hash58
        }
    })
}

/// UUID v8 of a 58-bit hash of `(workspace, source)` followed by `n`: the 122 bits the
/// version and variant leave, filled in order, so ids order as `(hash, n)` do.
fn ordered_id(workspace_id: Uuid, source: ConnectorKind, n: u64) -> Uuid {
    let hash58 = prefix_hash(workspace_id, source);
    // 122 payload bits: the hash, then the number.
    let v = (hash58 << 64) | u128::from(n);
    // Spread over the UUID around the version (bits 76..80) and variant (bits 62..64).
    let bits = ((v >> 74) << 80) // 48 bits
        | (0x8 << 76) // version 8
        | (((v >> 62) & 0xfff) << 64) // 12 bits
        | (0b10 << 62) // RFC 9562 variant
        | (v & ((1 << 62) - 1)); // 62 bits
    Uuid::from_u128(bits)
}

/// A company (`accounts` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Company name.
    pub name: Option<String>,
    /// Primary web domain, lower case.
    pub domain: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Number of employees.
    pub employee_count: Option<i64>,
    /// Annual revenue in the account's currency.
    pub annual_revenue: Option<f64>,
    /// Provider id of the owning user.
    pub owner_id: Option<String>,
}

/// A person (`contacts` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Email address.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Provider id of the contact's account.
    pub account_source_id: Option<String>,
    /// Lifecycle stage (lead, customer, …).
    pub lifecycle_stage: Option<String>,
    /// Provider id of the owning user.
    pub owner_id: Option<String>,
}

/// An opportunity (`deals` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Deal name.
    pub name: Option<String>,
    /// Amount in `currency`.
    pub amount: Option<f64>,
    /// ISO 4217 currency code.
    pub currency: Option<String>,
    /// Pipeline stage.
    pub stage: Option<String>,
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Expected or actual close date.
    pub close_date: Option<NaiveDate>,
    /// Win probability, 0 to 1.
    pub probability: Option<f64>,
    /// Provider id of the owning user.
    pub owner_id: Option<String>,
    /// Provider id of the deal's account.
    pub account_source_id: Option<String>,
    /// Whether the deal is closed.
    pub is_closed: Option<bool>,
    /// Whether the deal is won.
    pub is_won: Option<bool>,
    /// Forecast category.
    pub forecast_category: Option<String>,
    /// Days since creation while open (computed field).
    pub days_open: Option<i64>,
    /// Days from creation to close (computed field).
    pub days_to_close: Option<i64>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl Deal {
    /// The computed fields `(days_open, days_to_close)` of a deal created at `created`, with
    /// `close_date` and `is_closed`, on `today` (UTC). The one definition of both fields:
    /// [`apply_computed_fields`](crate::hooks::apply_computed_fields) applies it to incoming deals
    /// and [`EnrichmentStore::refresh_deal_fields`](crate::store::EnrichmentStore::refresh_deal_fields)
    /// to stored ones.
    ///
    /// * `days_open`: whole days from the creation date to the close date when the deal is
    ///   closed and has one, else to `today`; never negative; `None` without a creation time.
    /// * `days_to_close`: whole days from `today` to the close date, negative when overdue;
    ///   `None` without a close date.
    pub(crate) fn computed_fields(
        created: Option<DateTime<Utc>>,
        close_date: Option<NaiveDate>,
        is_closed: Option<bool>,
        today: NaiveDate,
    ) -> (Option<i64>, Option<i64>) {
        let days_open = created.map(|created| {
            let end = match (is_closed, close_date) {
                (Some(true), Some(close)) => close,
                _ => today,
            };
            (end - created.date_naive()).num_days().max(0)
        });
        let days_to_close = close_date.map(|close| (close - today).num_days());
        (days_open, days_to_close)
    }

    /// Sets `days_open` and `days_to_close` as of `today` (see [`Deal::computed_fields`]).
    pub(crate) fn refresh_computed_fields(&mut self, today: NaiveDate) {
        (self.days_open, self.days_to_close) = Self::computed_fields(
            self.meta.source_created_at,
            self.close_date,
            self.is_closed,
            today,
        );
    }
}

/// A deal-to-contact link (`deal_contacts` table).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DealContact {
    /// The workspace.
    pub workspace_id: Uuid,
    /// The connector the link came from.
    pub source: ConnectorKind,
    /// Provider id of the deal.
    pub deal_source_id: String,
    /// Provider id of the contact.
    pub contact_source_id: String,
    /// The contact's role on the deal, when the provider has one.
    pub role: Option<String>,
}

/// One participant of a [`Conversation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Email address, when known.
    pub email: Option<String>,
    /// Display name, when known.
    pub name: Option<String>,
    /// Whether the participant belongs to the workspace's company.
    pub is_internal: bool,
}

/// A call or meeting (`conversations` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Title.
    pub title: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Length in seconds.
    pub duration_seconds: Option<i64>,
    /// Link to the recording.
    pub url: Option<String>,
    /// Email of the host.
    pub host_email: Option<String>,
    /// Everyone who took part.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Summary text.
    pub summary: Option<String>,
    /// Transcript text.
    pub transcript: Option<String>,
    /// Whether only internal people took part.
    pub is_internal: Option<bool>,
    /// Account this conversation was linked to by the entity linker.
    pub linked_account_id: Option<Uuid>,
    /// Deal this conversation was linked to by the entity linker.
    pub linked_deal_id: Option<Uuid>,
}

/// A task or board item (`tasks` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Board id.
    pub board_id: Option<String>,
    /// Board name.
    pub board_name: Option<String>,
    /// Group (section) name.
    pub group_name: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Status label.
    pub status: Option<String>,
    /// Email of the assignee.
    pub assignee_email: Option<String>,
    /// Due date.
    pub due_date: Option<NaiveDate>,
    /// When it was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Link to the item.
    pub url: Option<String>,
}

/// A file (`documents` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Common columns.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Title or file name.
    pub title: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Link to the file.
    pub url: Option<String>,
    /// Email of the owner.
    pub owner_email: Option<String>,
    /// Extracted text content.
    pub content_text: Option<String>,
    /// Size in bytes.
    pub size_bytes: Option<i64>,
    /// Provider id of the parent folder.
    pub parent_id: Option<String>,
}

macro_rules! record_ctor {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $ty {
            /// A record with the given identity and every optional column empty.
            pub fn new(workspace_id: Uuid, source: ConnectorKind, source_id: impl Into<String>) -> Self {
                $ty { meta: RecordMeta::new(workspace_id, source, source_id), $($field: Default::default()),* }
            }
        }
    };
}

record_ctor!(Account {
    name,
    domain,
    industry,
    employee_count,
    annual_revenue,
    owner_id
});
record_ctor!(Contact {
    email,
    first_name,
    last_name,
    title,
    phone,
    account_source_id,
    lifecycle_stage,
    owner_id
});
record_ctor!(Deal {
    name,
    amount,
    currency,
    stage,
    pipeline,
    close_date,
    probability,
    owner_id,
    account_source_id,
    is_closed,
    is_won,
    forecast_category,
    days_open,
    days_to_close
});
record_ctor!(Conversation {
    title,
    started_at,
    duration_seconds,
    url,
    host_email,
    participants,
    summary,
    transcript,
    is_internal,
    linked_account_id,
    linked_deal_id
});
record_ctor!(Task {
    board_id,
    board_name,
    group_name,
    title,
    status,
    assignee_email,
    due_date,
    completed_at,
    url
});
record_ctor!(Document {
    title,
    mime_type,
    url,
    owner_email,
    content_text,
    size_bytes,
    parent_id
});

/// The table a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `accounts`
    Account,
    /// `contacts`
    Contact,
    /// `deals`
    Deal,
    /// `deal_contacts`
    DealContact,
    /// `conversations`
    Conversation,
    /// `tasks`
    Task,
    /// `documents`
    Document,
}

impl RecordKind {
    /// Every record kind.
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Account,
        RecordKind::Contact,
        RecordKind::Deal,
        RecordKind::DealContact,
        RecordKind::Conversation,
        RecordKind::Task,
        RecordKind::Document,
    ];

    /// The database table that holds this kind.
    pub const fn table(self) -> &'static str {
        match self {
            RecordKind::Account => "accounts",
            RecordKind::Contact => "contacts",
            RecordKind::Deal => "deals",
            RecordKind::DealContact => "deal_contacts",
            RecordKind::Conversation => "conversations",
            RecordKind::Task => "tasks",
            RecordKind::Document => "documents",
        }
    }
}

/// Any normalized record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Record {
    /// An account.
    Account(Account),
    /// A contact.
    Contact(Contact),
    /// A deal.
    Deal(Deal),
    /// A deal-contact link.
    DealContact(DealContact),
    /// A conversation.
    Conversation(Conversation),
    /// A task.
    Task(Task),
    /// A document.
    Document(Document),
}

impl Record {
    /// The table the record goes to.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Account(_) => RecordKind::Account,
            Record::Contact(_) => RecordKind::Contact,
            Record::Deal(_) => RecordKind::Deal,
            Record::DealContact(_) => RecordKind::DealContact,
            Record::Conversation(_) => RecordKind::Conversation,
            Record::Task(_) => RecordKind::Task,
            Record::Document(_) => RecordKind::Document,
        }
    }

    /// The common columns, for every kind but [`Record::DealContact`] (which has none).
    pub fn meta(&self) -> Option<&RecordMeta> {
        match self {
            Record::Account(r) => Some(&r.meta),
            Record::Contact(r) => Some(&r.meta),
            Record::Deal(r) => Some(&r.meta),
            Record::Conversation(r) => Some(&r.meta),
            Record::Task(r) => Some(&r.meta),
            Record::Document(r) => Some(&r.meta),
            Record::DealContact(_) => None,
        }
    }

    /// Mutable access to the common columns (none for [`Record::DealContact`]).
    pub fn meta_mut(&mut self) -> Option<&mut RecordMeta> {
        match self {
            Record::Account(r) => Some(&mut r.meta),
            Record::Contact(r) => Some(&mut r.meta),
            Record::Deal(r) => Some(&mut r.meta),
            Record::Conversation(r) => Some(&mut r.meta),
            Record::Task(r) => Some(&mut r.meta),
            Record::Document(r) => Some(&mut r.meta),
            Record::DealContact(_) => None,
        }
    }

    /// The provider id of the record; for a link, `deal_id:contact_id`.
    pub fn source_id(&self) -> String {
        match self {
            Record::DealContact(l) => format!("{}:{}", l.deal_source_id, l.contact_source_id),
            other => other
                .meta()
                .map(|m| m.source_id.clone())
                .unwrap_or_default(),
        }
    }

    /// When the provider last modified the record.
    pub fn source_updated_at(&self) -> Option<DateTime<Utc>> {
        self.meta().and_then(|m| m.source_updated_at)
    }

    /// The workspace that owns the record.
    pub fn workspace_id(&self) -> Uuid {
        match self {
            Record::DealContact(l) => l.workspace_id,
            other => other.meta().map(|m| m.workspace_id).unwrap_or_default(),
        }
    }
}

macro_rules! record_from {
    ($($ty:ident),*) => {
        $(impl From<$ty> for Record {
            fn from(r: $ty) -> Self { Record::$ty(r) }
        })*
    };
}
record_from!(
    Account,
    Contact,
    Deal,
    DealContact,
    Conversation,
    Task,
    Document
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ws() -> Uuid {
        Uuid::from_u128(7)
    }

    #[test]
    fn ids_are_deterministic_and_scoped() {
        let a = record_id(ws(), ConnectorKind::Hubspot, "1");
        assert_eq!(a, record_id(ws(), ConnectorKind::Hubspot, "1"));
        assert_ne!(a, record_id(ws(), ConnectorKind::Hubspot, "2"));
        assert_ne!(a, record_id(ws(), ConnectorKind::Salesforce, "1"));
        assert_ne!(
            a,
            record_id(Uuid::from_u128(8), ConnectorKind::Hubspot, "1")
        );
        assert_eq!(a.get_version_num(), 8);
        let b = record_id(ws(), ConnectorKind::Salesforce, "001A000001");
        assert_eq!(b, record_id(ws(), ConnectorKind::Salesforce, "001A000001"));
        assert_eq!(b.get_version_num(), 5);
    }

    /// The per-thread hash of the last workspace and source never leaks into another pair's
    /// ids: ids made in an alternating order equal ids each made alone on a fresh thread.
    #[test]
    fn the_kept_prefix_hash_follows_the_workspace_and_source() {
        let (a, b) = (ws(), Uuid::from_u128(8));
        let calls = [
            (a, ConnectorKind::Hubspot, "1"),
            (b, ConnectorKind::Hubspot, "1"),
            (a, ConnectorKind::Hubspot, "2"),
            (a, ConnectorKind::Gong, "2"),
            (a, ConnectorKind::Gong, "x"),
            (b, ConnectorKind::Gong, "2"),
            (a, ConnectorKind::Hubspot, "1"),
        ];
        let here: Vec<Uuid> = calls.iter().map(|(w, s, i)| record_id(*w, *s, i)).collect();
        let alone: Vec<Uuid> = calls
            .iter()
            .map(|&(w, s, i)| {
                let i = i.to_owned();
                std::thread::spawn(move || record_id(w, s, &i))
                    .join()
                    .unwrap()
            })
            .collect();
        assert_eq!(here, alone);
        assert_eq!(here[0], here[6]);
        assert_ne!(here[0], here[1]);
        assert_ne!(here[2], here[3]);
    }

    /// Numeric ids of one workspace and source sort as their numbers, as UUIDs and in the
    /// hyphenated text SQLite stores; other workspaces and sources land elsewhere.
    #[test]
    fn numeric_ids_are_ordered_within_their_workspace_and_source() {
        let numbers = [
            0,
            1,
            2,
            9,
            10,
            99,
            100,
            4_095,
            4_096,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ids: Vec<Uuid> = numbers
            .iter()
            .map(|n| record_id(ws(), ConnectorKind::Hubspot, &n.to_string()))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
            assert!(pair[0].hyphenated().to_string() < pair[1].hyphenated().to_string());
        }
        for id in &ids {
            assert_eq!(id.get_version_num(), 8);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        // The number is in the id, whole: the low 62 bits and the 2 above the variant.
        let n = 0xdead_beef_0123_4567_u64;
        let id = record_id(ws(), ConnectorKind::Hubspot, &n.to_string()).as_u128();
        assert_eq!(
            (id & ((1 << 62) - 1)) | (((id >> 64) & 0b11) << 62),
            u128::from(n)
        );
        // Another workspace or source: another 58-bit prefix.
        let prefix = |u: Uuid| u.as_u128() >> 80;
        let mine = prefix(ids[1]);
        assert_eq!(mine, prefix(ids[5]));
        assert_ne!(
            mine,
            prefix(record_id(Uuid::from_u128(8), ConnectorKind::Hubspot, "1"))
        );
        assert_ne!(mine, prefix(record_id(ws(), ConnectorKind::Gong, "1")));
    }

    /// Only a number's canonical text is ordered, so two source ids never share an id:
    /// leading zeros, signs, spaces and numbers past `u64` take the hashed form.
    #[test]
    fn only_canonical_numbers_take_the_ordered_form() {
        for other in [
            "007",
            "00",
            "+7",
            "-7",
            " 7",
            "7 ",
            "1e3",
            "18446744073709551616",
            "",
            "٣",
        ] {
            assert_eq!(
                record_id(ws(), ConnectorKind::Hubspot, other).get_version_num(),
                5,
                "{other:?}"
            );
        }
        assert_ne!(
            record_id(ws(), ConnectorKind::Hubspot, "007"),
            record_id(ws(), ConnectorKind::Hubspot, "7")
        );
    }

    /// A non-numeric id is UUID v5 of the workspace, the source, a NUL and the source id,
    /// whatever the source id's length.
    #[test]
    fn ids_of_short_and_long_source_ids_hash_the_same_name() {
        for source_id in ["a", &"x".repeat(100), &"é".repeat(200)] {
            let mut name = ws().as_bytes().to_vec();
            name.extend_from_slice(b"hubspot\0");
            name.extend_from_slice(source_id.as_bytes());
            assert_eq!(
                record_id(ws(), ConnectorKind::Hubspot, source_id),
                Uuid::new_v5(&RECORD_ID_NAMESPACE, &name),
                "{} bytes",
                source_id.len()
            );
        }
    }

    #[test]
    fn serde_round_trips_every_kind() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let mut deal = Deal::new(ws(), ConnectorKind::Hubspot, "d1");
        deal.name = Some("Big 🚀".into());
        deal.amount = Some(1500.5);
        deal.close_date = NaiveDate::from_ymd_opt(2024, 6, 30);
        deal.meta.source_updated_at = Some(t);
        deal.meta
            .custom_fields
            .insert("hs_priority".into(), serde_json::json!("high"));
        let mut conv = Conversation::new(ws(), ConnectorKind::Gong, "c1");
        conv.participants.push(Participant {
            email: Some("a@x.com".into()),
            name: None,
            is_internal: true,
        });
        let records: Vec<Record> = vec![
            Account::new(ws(), ConnectorKind::Hubspot, "a1").into(),
            Contact::new(ws(), ConnectorKind::Hubspot, "p1").into(),
            deal.into(),
            DealContact {
                workspace_id: ws(),
                source: ConnectorKind::Hubspot,
                deal_source_id: "d1".into(),
                contact_source_id: "p1".into(),
                role: None,
            }
            .into(),
            conv.into(),
            Task::new(ws(), ConnectorKind::Monday, "t1").into(),
            Document::new(ws(), ConnectorKind::GoogleDrive, "f1").into(),
        ];
        let kinds: Vec<RecordKind> = records.iter().map(Record::kind).collect();
        assert_eq!(kinds, RecordKind::ALL.to_vec());
        for r in records {
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["kind"], serde_json::json!(r.kind()));
            let back: Record = serde_json::from_value(json).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.workspace_id(), ws());
        }
    }

    #[test]
    fn flattened_meta_uses_schema_column_names() {
        let a = Account::new(ws(), ConnectorKind::Salesforce, "001");
        let json = serde_json::to_value(&a).unwrap();
        for col in [
            "id",
            "workspace_id",
            "source",
            "source_id",
            "custom_fields",
            "source_created_at",
            "source_updated_at",
            "archived_at",
            "synced_at",
            "name",
            "domain",
            "industry",
            "employee_count",
            "annual_revenue",
            "owner_id",
        ] {
            assert!(json.get(col).is_some(), "missing {col}");
        }
        assert_eq!(json["source"], "salesforce");
    }

    #[test]
    fn link_source_id_and_meta() {
        let l = Record::DealContact(DealContact {
            workspace_id: ws(),
            source: ConnectorKind::Hubspot,
            deal_source_id: "d".into(),
            contact_source_id: "c".into(),
            role: Some("champion".into()),
        });
        assert_eq!(l.source_id(), "d:c");
        assert!(l.meta().is_none());
        assert_eq!(l.source_updated_at(), None);
        assert_eq!(RecordKind::DealContact.table(), "deal_contacts");
    }
}
