#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod capture;
mod connector;
mod connectors;
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod hooks;
pub mod http;
mod model;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod orchestrator;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod outcome;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod queue;
pub mod sanitize;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod scheduler;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod simulator;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

pub use capture::{RecordFailure, is_sync_acceptable, success_rate};
pub use connector::{
    Checkpoint, DEFAULT_WATERMARK_LAG, DealContactSet, Deletion, DocumentAdapter, MemorySink,
    NewTask, Progress, ProgressReporter, RecordBatch, RecordSink, SourceTotal, StreamCheckpoint,
    SyncCapable, SyncContext, SyncReport, TaskAdapter, TaskUpdate, WriteCounts,
};
pub use error::{BODY_EXCERPT_CHARS, BoxError, Error, Result, body_excerpt, redact_secrets};
pub use model::{
    Account, ConnectorCategory, ConnectorKind, Contact, Conversation, CustomFields, Deal,
    DealContact, Document, Participant, Record, RecordKind, RecordMeta, SyncMode, Task, record_id,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use store::{
    Backend, Clock, ConnectionRow, ConnectionStatus, ConnectionStore, Credentials,
    DEFAULT_LOCK_TTL, DealFieldCounts, EnrichmentStore, InternalCounts, Keyring, LinkCounts,
    LockStore, MAX_PAGE, ManualClock, NewConnection, RateLimitStop, Reconciliation, RecordQuery,
    RecordStore, STALE_SYNC_AFTER, SealedCredentials, Store, SyncErrors, SyncLogEntry,
    SyncLogStore, SyncOutcome, SyncStatus, SyncStore, SystemClock, WorkspaceLock, connect_store,
    normalize_domain, validate_record,
};

#[cfg(feature = "gong")]
#[cfg_attr(docsrs, doc(cfg(feature = "gong")))]
pub use connectors::gong::{GongConfig, GongConnector, GongCredentials};
#[cfg(feature = "hubspot")]
#[cfg_attr(docsrs, doc(cfg(feature = "hubspot")))]
pub use connectors::hubspot::{HubSpotConfig, HubSpotConnector, HubSpotCredentials};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use hooks::{
    BuiltinHooksConfig, ComputedFields, EntityLinker, HookOutcome, INTERNAL_DOMAINS_CONFIG_KEY,
    InternalFilter, PUBLIC_EMAIL_DOMAINS, PostSyncHook, SyncCompleted, apply_computed_fields,
    builtin_hooks,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use orchestrator::{
    ConnectorFactory, ConnectorRegistry, ConnectorResult, Orchestrator, OrchestratorConfig,
    SyncJobHandler, SyncOptions, WorkspaceSyncResult,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use scheduler::{
    CronSchedule, DEFAULT_CRON, LEADER_LOCK_ID, MANUAL_PRIORITY, SCHEDULED_PRIORITY, Scheduler,
    SchedulerConfig, SyncJobPayload, TickReport, TriggeredSync,
};
