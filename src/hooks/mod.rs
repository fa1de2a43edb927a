//! Post-sync hooks: what runs after a workspace sync, with its results.
//!
//! A hook's error is logged and recorded in the run's [`HookOutcome`]s; it never fails the
//! sync. Hooks run in the order added to the
//! [`Orchestrator`](crate::orchestrator::Orchestrator): add the built-ins first
//! ([`Orchestrator::with_builtin_hooks`](crate::orchestrator::Orchestrator::with_builtin_hooks)),
//! then the host's own ("skills") with
//! [`with_hook`](crate::orchestrator::Orchestrator::with_hook).
//!
//! The built-ins, each one set-based statement per workspace on the store
//! ([`EnrichmentStore`](crate::store::EnrichmentStore)):
//!
//! * [`InternalFilter`]: `conversations.is_internal` from the workspace's internal email
//!   domains (the participants' flags stay the connector's).
//! * [`EntityLinker`]: `conversations.linked_account_id` / `linked_deal_id`.
//! * [`ComputedFields`]: `deals.days_open` / `days_to_close` of every CRM source.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::model::Record;
use crate::outcome::ConnectorResult;
use crate::store::SyncStore;

mod builtin;

pub use crate::outcome::HookOutcome;
pub use builtin::{
    BuiltinHooksConfig, ComputedFields, EntityLinker, INTERNAL_DOMAINS_CONFIG_KEY, InternalFilter,
    PUBLIC_EMAIL_DOMAINS, builtin_hooks,
};

/// What a post-sync hook learns: the workspace and each connector's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncCompleted {
    /// The workspace that was synced.
    pub workspace_id: Uuid,
    /// One result per connector.
    pub results: Vec<ConnectorResult>,
}

/// Runs after every workspace sync.
///
/// ```
/// use async_trait::async_trait;
/// use pandora_sync::{Result, SyncStore};
/// use pandora_sync::hooks::{PostSyncHook, SyncCompleted};
///
/// /// Logs how many records each connector wrote.
/// struct Report;
///
/// #[async_trait]
/// impl PostSyncHook for Report {
///     fn name(&self) -> &str { "report" }
///     async fn after_sync(&self, _store: &dyn SyncStore, event: &SyncCompleted) -> Result<()> {
///         for r in &event.results {
///             tracing::info!(connector = %r.connector, written = r.counts.written(), "synced");
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait PostSyncHook: Send + Sync {
    /// A short name for logs and results.
    fn name(&self) -> &str;

    /// Does the hook's work.
    async fn after_sync(&self, store: &dyn SyncStore, event: &SyncCompleted) -> Result<()>;
}

/// Fills a deal's computed fields: `days_open` (created → closed, or → now while open) and
/// `days_to_close` (now → close date; negative when overdue), as of `now`'s UTC date, with
/// the same definition the store's refresh uses. Other records are untouched.
pub fn apply_computed_fields(record: &mut Record, now: DateTime<Utc>) {
    if let Record::Deal(deal) = record {
        deal.refresh_computed_fields(now.date_naive());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnectorKind, Deal};
    use chrono::{NaiveDate, TimeZone};

    #[test]
    fn computed_fields_for_open_and_closed_deals() {
        let now = Utc.with_ymd_and_hms(2024, 6, 10, 15, 0, 0).unwrap();
        let mut open = Deal::new(Uuid::nil(), ConnectorKind::Salesforce, "006");
        open.meta.source_created_at = Some(Utc.with_ymd_and_hms(2024, 6, 1, 9, 0, 0).unwrap());
        open.close_date = NaiveDate::from_ymd_opt(2024, 6, 5);
        open.is_closed = Some(false);
        let mut r = Record::Deal(open);
        apply_computed_fields(&mut r, now);
        let Record::Deal(d) = &r else { unreachable!() };
        assert_eq!(d.days_open, Some(9));
        assert_eq!(d.days_to_close, Some(-5), "overdue");

        let mut closed = d.clone();
        closed.is_closed = Some(true);
        closed.close_date = NaiveDate::from_ymd_opt(2024, 6, 4);
        let mut r = Record::Deal(closed);
        apply_computed_fields(&mut r, now);
        let Record::Deal(d) = &r else { unreachable!() };
        assert_eq!(d.days_open, Some(3));
        assert_eq!(d.days_to_close, Some(-6));

        let mut unknown = Deal::new(Uuid::nil(), ConnectorKind::Hubspot, "1");
        unknown.close_date = NaiveDate::from_ymd_opt(2024, 7, 10);
        let mut r = Record::Deal(unknown);
        apply_computed_fields(&mut r, now);
        let Record::Deal(d) = &r else { unreachable!() };
        assert_eq!((d.days_open, d.days_to_close), (None, Some(30)));
    }
}
