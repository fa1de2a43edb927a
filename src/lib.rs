#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The crate is organised in public modules, the way sqlx and tower are: the root re-exports
// only what an embedding host touches first (the orchestrator, worker, scheduler, store
// handle and traits, the connector contract, records and `Error`/`Result`); everything else
// is reached through its module (`pandora_sync::store::NewConnection`,
// `pandora_sync::hooks::builtin_hooks`, `pandora_sync::connectors::hubspot::HubSpotConfig`, …).

#[cfg(all(feature = "http-api", any(feature = "sqlite", feature = "postgres")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "http-api", any(feature = "sqlite", feature = "postgres"))))
)]
pub mod api;
pub mod capture;
pub mod connector;
pub mod connectors;
pub mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod hooks;
pub mod http;
pub mod model;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod orchestrator;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod outcome;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod queue;
pub mod sanitize;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod scheduler;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod simulator;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod store;

#[doc(inline)]
pub use connector::{
    Checkpoint, DocumentAdapter, RecordBatch, RecordSink, SyncCapable, SyncContext, TaskAdapter,
};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use model::{ConnectorKind, Record, SyncMode};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[doc(inline)]
pub use orchestrator::{
    ConnectorRegistry, Orchestrator, OrchestratorConfig, SyncJobHandler, SyncOptions,
    WorkspaceSyncResult,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[doc(inline)]
pub use queue::Worker;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[doc(inline)]
pub use scheduler::{Scheduler, SchedulerConfig};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[doc(inline)]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[doc(inline)]
pub use store::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
#[doc(inline)]
pub use store::{Credentials, Keyring, Store, SyncStore, connect_store};
