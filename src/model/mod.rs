//! The normalized record model: one struct per table of the schema, the [`Record`] enum that
//! carries any of them, and the names shared by the whole crate ([`ConnectorKind`],
//! [`SyncMode`], [`ConnectorCategory`]).

mod kind;
mod records;

pub use kind::{ConnectorCategory, ConnectorKind, SyncMode};
pub use records::{
    Account, Contact, Conversation, CustomFields, Deal, DealContact, Document, Participant, Record,
    RecordKind, RecordMeta, Task, record_id,
};

/// Email domains of public mail providers. A connector flagging a participant on one of
/// them internal (an employee using a personal address) says nothing about everyone else on
/// it, so `InternalFilter` (`hooks`)'s default never treats these domains as internal; list one
/// explicitly with `InternalFilter::with_domains` if you really mean it.
pub const PUBLIC_EMAIL_DOMAINS: &[&str] = &[
    "163.com",
    "aol.com",
    "fastmail.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hey.com",
    "hotmail.co.uk",
    "hotmail.com",
    "hotmail.fr",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "pm.me",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "web.de",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.fr",
    "yandex.com",
    "yandex.ru",
    "ymail.com",
    "zoho.com",
];
