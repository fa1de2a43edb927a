//! The built-in post-sync hooks: [`InternalFilter`], [`EntityLinker`], [`ComputedFields`].
//!
//! Each is a thin wrapper over one set-based
//! [`EnrichmentStore`](crate::store::EnrichmentStore) operation; [`builtin_hooks`] and
//! [`Orchestrator::with_builtin_hooks`](crate::orchestrator::Orchestrator::with_builtin_hooks)
//! add them in the order they depend on each other: the internal filter first, then the
//! linker, then the computed fields.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::{PostSyncHook, SyncCompleted};
use crate::error::Result;
use crate::model::{ConnectorCategory, ConnectorKind, RecordKind};
use crate::outcome::ConnectorResult;
use crate::store::{Clock, SyncStore, SystemClock, normalize_domain};

pub use crate::model::PUBLIC_EMAIL_DOMAINS;

pub use crate::connector::INTERNAL_DOMAINS_CONFIG_KEY;

/// Whether a connector's run brought anything new: it did not fail, or it committed rows
/// before failing (a failed run keeps the batches it committed).
fn synced(result: &ConnectorResult) -> bool {
    result.status != crate::store::SyncStatus::Failed
        || result.counts.written() + result.counts.archived > 0
}

/// Links conversations to accounts and deals after a CRM or conversation sync.
///
/// Runs [`EnrichmentStore::link_conversations`](crate::store::EnrichmentStore::link_conversations)
/// over the whole workspace (accounts, contacts and deals may have changed as well as
/// conversations) when any connector of [`EntityLinker::TRIGGERS`] synced in the event:
/// participant email → contact → account, else participant email domain → account domain;
/// then the account's open deal closing last, else its latest closed deal.
#[derive(Debug, Clone, Default)]
pub struct EntityLinker {
    _private: (),
}

impl EntityLinker {
    /// The hook's name in [`HookOutcome`](super::HookOutcome)s.
    pub const NAME: &'static str = "entity_linker";

    /// The connectors whose sync triggers the linker.
    pub const TRIGGERS: [ConnectorKind; 4] = [
        ConnectorKind::Hubspot,
        ConnectorKind::Salesforce,
        ConnectorKind::Gong,
        ConnectorKind::Fireflies,
    ];

    /// The linker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the event calls for linking: one of [`EntityLinker::TRIGGERS`] synced
    /// (did not fail, or committed rows before failing).
    pub fn should_run(&self, event: &SyncCompleted) -> bool {
        event
            .results
            .iter()
            .any(|r| Self::TRIGGERS.contains(&r.connector) && synced(r))
    }
}

#[async_trait]
impl PostSyncHook for EntityLinker {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn after_sync(&self, store: &dyn SyncStore, event: &SyncCompleted) -> Result<()> {
        if !self.should_run(event) {
            tracing::debug!("no CRM or conversation connector synced; linking skipped");
            return Ok(());
        }
        let counts = store.link_conversations(event.workspace_id).await?;
        tracing::info!(
            conversations = counts.conversations,
            linked_accounts = counts.linked_accounts,
            linked_deals = counts.linked_deals,
            changed = counts.changed,
            "conversations linked"
        );
        Ok(())
    }
}

/// Marks conversations internal when every participant is on the workspace's internal
/// email domains (see
/// [`EnrichmentStore::mark_internal_conversations`](crate::store::EnrichmentStore::mark_internal_conversations)).
///
/// # One owner per column
///
/// The filter owns `conversations.is_internal`; connectors leave it `NULL` (the store
/// keeps the filter's value when a connector writes `NULL`). Each participant's
/// `is_internal` in `conversations.participants` belongs to the connector (Gong: the party's
/// `affiliation == "Internal"`), and the filter never rewrites it: when both wrote the same
/// flags from different facts, every re-read call was stored again and flipped back by the
/// filter on every sync.
///
/// # Which domains are internal
///
/// * With [`InternalFilter::with_domains`], exactly those.
/// * Otherwise ([`InternalFilter::new`]) they are derived per workspace, each run:
///   the `internal_domains` arrays of the workspace's connection configs
///   ([`INTERNAL_DOMAINS_CONFIG_KEY`]), plus the email domains of participants that the
///   connectors themselves flagged internal (Gong and Fireflies know which participants
///   are the workspace's own users), except [`PUBLIC_EMAIL_DOMAINS`]. When no domain is
///   known, the filter changes nothing.
///
/// Runs when a conversation connector (Gong, Fireflies) synced, or any connector stored
/// conversations, in the event.
#[derive(Debug, Clone, Default)]
pub struct InternalFilter {
    domains: Option<Vec<String>>,
}

impl InternalFilter {
    /// The hook's name in [`HookOutcome`](super::HookOutcome)s.
    pub const NAME: &'static str = "internal_filter";

    /// A filter whose internal domains are derived per workspace (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// A filter with a fixed list of internal domains (case-insensitive; a leading `@` is
    /// ignored; entries that are not domains are dropped).
    pub fn with_domains<I, S>(domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set: BTreeSet<String> = domains
            .into_iter()
            .filter_map(|d| normalize_domain(d.as_ref()))
            .collect();
        InternalFilter {
            domains: Some(set.into_iter().collect()),
        }
    }

    /// The configured domains (`None`: derived per workspace).
    pub fn domains(&self) -> Option<&[String]> {
        self.domains.as_deref()
    }

    /// Whether the event calls for the filter: a conversation connector synced, or any
    /// connector stored conversations.
    pub fn should_run(&self, event: &SyncCompleted) -> bool {
        event.results.iter().any(|r| {
            synced(r)
                && (r.connector.category() == ConnectorCategory::Conversations
                    || r.records_by_table
                        .get(RecordKind::Conversation.table())
                        .is_some_and(|n| *n > 0))
        })
    }

    /// The internal domains of a workspace: the configured ones, else derived (see the
    /// type's docs). Normalized, sorted, without duplicates.
    ///
    /// # Errors
    /// Storage errors reading the connections or conversations.
    pub async fn internal_domains(
        &self,
        store: &dyn SyncStore,
        workspace_id: uuid::Uuid,
    ) -> Result<Vec<String>> {
        if let Some(domains) = &self.domains {
            return Ok(domains.clone());
        }
        let mut set = BTreeSet::new();
        for connection in store.list_connections(workspace_id).await? {
            let listed = connection
                .config
                .get(INTERNAL_DOMAINS_CONFIG_KEY)
                .and_then(serde_json::Value::as_array);
            for value in listed.into_iter().flatten() {
                match value.as_str().and_then(normalize_domain) {
                    Some(d) => {
                        set.insert(d);
                    }
                    None => tracing::warn!(
                        connector = %connection.connector,
                        value = %value,
                        "ignoring an internal_domains entry that is not a domain"
                    ),
                }
            }
        }
        for domain in store.flagged_internal_domains(workspace_id).await? {
            if let Some(d) = normalize_domain(&domain)
                && !PUBLIC_EMAIL_DOMAINS.contains(&d.as_str())
            {
                set.insert(d);
            }
        }
        Ok(set.into_iter().collect())
    }
}

#[async_trait]
impl PostSyncHook for InternalFilter {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn after_sync(&self, store: &dyn SyncStore, event: &SyncCompleted) -> Result<()> {
        if !self.should_run(event) {
            tracing::debug!("no conversations synced; internal filter skipped");
            return Ok(());
        }
        let domains = self.internal_domains(store, event.workspace_id).await?;
        if domains.is_empty() {
            tracing::info!(
                "no internal email domain known for the workspace; internal filter skipped"
            );
            return Ok(());
        }
        let counts = store
            .mark_internal_conversations(event.workspace_id, &domains)
            .await?;
        tracing::info!(
            domains = ?domains,
            conversations = counts.conversations,
            internal = counts.internal,
            changed = counts.changed,
            "internal conversations marked"
        );
        Ok(())
    }
}

/// Refreshes the computed fields of every deal of the workspace, from every CRM source:
/// `days_open` and `days_to_close` move with the calendar even when the deal does not, so
/// this runs after every sync (see
/// [`EnrichmentStore::refresh_deal_fields`](crate::store::EnrichmentStore::refresh_deal_fields)
/// and [`apply_computed_fields`](crate::hooks::apply_computed_fields), which the sink applies to
/// incoming deals with the same rules).
#[derive(Debug, Clone)]
pub struct ComputedFields {
    clock: Arc<dyn Clock>,
}

impl Default for ComputedFields {
    fn default() -> Self {
        ComputedFields {
            clock: Arc::new(SystemClock),
        }
    }
}

impl ComputedFields {
    /// The hook's name in [`HookOutcome`](super::HookOutcome)s.
    pub const NAME: &'static str = "computed_fields";

    /// The hook, with today's date from the system clock (UTC).
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes "today" from `clock` instead (a [`ManualClock`](crate::store::ManualClock) in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[async_trait]
impl PostSyncHook for ComputedFields {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn after_sync(&self, store: &dyn SyncStore, event: &SyncCompleted) -> Result<()> {
        let today = self.clock.now().date_naive();
        let counts = store.refresh_deal_fields(event.workspace_id, today).await?;
        tracing::info!(
            %today,
            deals = counts.deals,
            changed = counts.changed,
            "deal computed fields refreshed"
        );
        Ok(())
    }
}

/// Which built-in hooks to run, and their settings. The default enables all three, with
/// derived internal domains and the system clock.
#[derive(Debug, Clone)]
pub struct BuiltinHooksConfig {
    /// Run the [`InternalFilter`].
    pub internal_filter: bool,
    /// Run the [`EntityLinker`].
    pub entity_linker: bool,
    /// Run [`ComputedFields`].
    pub computed_fields: bool,
    /// Fixed internal domains for the [`InternalFilter`] (`None`: derived per workspace).
    pub internal_domains: Option<Vec<String>>,
    /// Where [`ComputedFields`] takes today's date from.
    pub clock: Arc<dyn Clock>,
}

impl Default for BuiltinHooksConfig {
    fn default() -> Self {
        BuiltinHooksConfig {
            internal_filter: true,
            entity_linker: true,
            computed_fields: true,
            internal_domains: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The enabled built-in hooks, in the order they must run: [`InternalFilter`],
/// [`EntityLinker`], [`ComputedFields`].
///
/// ```
/// use pandora_sync::hooks::{BuiltinHooksConfig, builtin_hooks};
///
/// let names: Vec<String> = builtin_hooks(&BuiltinHooksConfig::default())
///     .iter()
///     .map(|h| h.name().to_owned())
///     .collect();
/// assert_eq!(names, ["internal_filter", "entity_linker", "computed_fields"]);
/// ```
pub fn builtin_hooks(config: &BuiltinHooksConfig) -> Vec<Arc<dyn PostSyncHook>> {
    let mut hooks: Vec<Arc<dyn PostSyncHook>> = Vec::with_capacity(3);
    if config.internal_filter {
        hooks.push(Arc::new(match &config.internal_domains {
            Some(domains) => InternalFilter::with_domains(domains),
            None => InternalFilter::new(),
        }));
    }
    if config.entity_linker {
        hooks.push(Arc::new(EntityLinker::new()));
    }
    if config.computed_fields {
        hooks.push(Arc::new(
            ComputedFields::new().with_clock(Arc::clone(&config.clock)),
        ));
    }
    hooks
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::connector::WriteCounts;
    use crate::model::SyncMode;
    use crate::store::{SyncErrors, SyncStatus};
    use uuid::Uuid;

    fn result(connector: ConnectorKind, status: SyncStatus, written: u64) -> ConnectorResult {
        ConnectorResult {
            connector,
            sync_id: Uuid::nil(),
            status,
            mode: SyncMode::Incremental,
            counts: WriteCounts {
                inserted: written,
                ..WriteCounts::default()
            },
            records_by_table: BTreeMap::new(),
            errors: SyncErrors::default(),
            error: None,
            requests: 0,
            retries: 0,
            backfilled: false,
            rate_limited: false,
            retry_after_ms: None,
            duration_ms: 0,
        }
    }

    fn event(results: Vec<ConnectorResult>) -> SyncCompleted {
        SyncCompleted {
            workspace_id: Uuid::nil(),
            results,
        }
    }

    #[test]
    fn linker_runs_for_crm_and_conversation_connectors_only() {
        let linker = EntityLinker::new();
        for kind in EntityLinker::TRIGGERS {
            assert!(linker.should_run(&event(vec![result(kind, SyncStatus::Completed, 0)])));
        }
        assert!(!linker.should_run(&event(vec![])));
        assert!(!linker.should_run(&event(vec![
            result(ConnectorKind::Monday, SyncStatus::Completed, 5),
            result(ConnectorKind::GoogleDrive, SyncStatus::Completed, 5),
        ])));
        // A failed run counts only when it committed something before failing.
        assert!(!linker.should_run(&event(vec![result(
            ConnectorKind::Hubspot,
            SyncStatus::Failed,
            0
        )])));
        assert!(linker.should_run(&event(vec![result(
            ConnectorKind::Hubspot,
            SyncStatus::Failed,
            3
        )])));
    }

    #[test]
    fn internal_filter_runs_when_conversations_may_have_changed() {
        let filter = InternalFilter::new();
        assert!(filter.should_run(&event(vec![result(
            ConnectorKind::Gong,
            SyncStatus::CompletedWithErrors,
            0
        )])));
        assert!(!filter.should_run(&event(vec![result(
            ConnectorKind::Hubspot,
            SyncStatus::Completed,
            10
        )])));
        let mut hubspot = result(ConnectorKind::Hubspot, SyncStatus::Completed, 10);
        hubspot.records_by_table.insert("conversations".into(), 2);
        assert!(filter.should_run(&event(vec![hubspot])));
    }

    #[test]
    fn configured_domains_are_normalized() {
        let filter =
            InternalFilter::with_domains([" Example.COM ", "@example.com", "x y", "", "b.io."]);
        assert_eq!(
            filter.domains(),
            Some(&["b.io".to_owned(), "example.com".to_owned()][..])
        );
        assert_eq!(InternalFilter::new().domains(), None);
    }

    #[test]
    fn builtin_hooks_follow_the_config() {
        let names = |c: &BuiltinHooksConfig| -> Vec<String> {
            builtin_hooks(c)
                .iter()
                .map(|h| h.name().to_owned())
                .collect()
        };
        assert_eq!(
            names(&BuiltinHooksConfig::default()),
            [
                InternalFilter::NAME,
                EntityLinker::NAME,
                ComputedFields::NAME
            ]
        );
        let only_linker = BuiltinHooksConfig {
            internal_filter: false,
            computed_fields: false,
            ..BuiltinHooksConfig::default()
        };
        assert_eq!(names(&only_linker), [EntityLinker::NAME]);
    }

    #[test]
    fn public_email_domains_are_sorted_and_normalized() {
        let mut sorted = PUBLIC_EMAIL_DOMAINS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, PUBLIC_EMAIL_DOMAINS);
        for d in PUBLIC_EMAIL_DOMAINS {
            assert_eq!(normalize_domain(d).as_deref(), Some(*d));
        }
    }
}
