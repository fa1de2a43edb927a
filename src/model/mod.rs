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
