#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod capture;
mod connector;
mod connectors;
mod error;
pub mod http;
mod model;
pub mod sanitize;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod simulator;

pub use capture::{RecordFailure, is_sync_acceptable, success_rate};
pub use connector::{
    Checkpoint, DEFAULT_WATERMARK_LAG, Deletion, DocumentAdapter, MemorySink, NewTask, Progress,
    ProgressReporter, RecordBatch, RecordSink, StreamCheckpoint, SyncCapable, SyncContext,
    SyncReport, TaskAdapter, TaskUpdate, WriteCounts,
};
pub use error::{BODY_EXCERPT_CHARS, BoxError, Error, Result, body_excerpt, redact_secrets};
pub use model::{
    Account, ConnectorCategory, ConnectorKind, Contact, Conversation, CustomFields, Deal,
    DealContact, Document, Participant, Record, RecordKind, RecordMeta, SyncMode, Task, record_id,
};

#[cfg(feature = "hubspot")]
#[cfg_attr(docsrs, doc(cfg(feature = "hubspot")))]
pub use connectors::hubspot::{HubSpotConfig, HubSpotConnector, HubSpotCredentials};
