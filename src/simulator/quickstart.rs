//! The quickstart's logic, shared by `examples/quickstart.rs` and its test: HubSpot, Gong and
//! Salesforce and monday.com simulators (and Fireflies' and Google Drive's with their
//! features) →
//! orchestrator → an SQLite file, an initial and an incremental sync, and the built-in
//! post-sync hooks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::{
    GongSim, GongSimConfig, HubSpotObject, HubSpotSim, HubSpotSimConfig, MondaySim,
    MondaySimConfig, NewGongCall, SalesforceObject, SalesforceSim, SalesforceSimConfig,
};
use crate::connector::ProgressReporter;
use crate::error::{Error, Result};
use crate::hooks::BuiltinHooksConfig;
use crate::model::{ConnectorKind, Record, RecordKind};
use crate::orchestrator::{ConnectorRegistry, Orchestrator, SyncOptions, WorkspaceSyncResult};
use crate::store::{
    ConnectionStore, Credentials, Keyring, NewConnection, RecordQuery, RecordStore, SqliteStore,
    Store,
};

/// How big the simulated company is, and where the database goes.
#[derive(Debug, Clone)]
pub struct QuickstartConfig {
    /// The SQLite file (replaced if it exists).
    pub database: PathBuf,
    /// HubSpot companies.
    pub companies: u64,
    /// HubSpot contacts.
    pub contacts: u64,
    /// HubSpot deals.
    pub deals: u64,
    /// Gong users.
    pub gong_users: u64,
    /// Gong calls over the last 90 days.
    pub gong_calls: u64,
    /// Fireflies transcripts over the last 90 days (with the `fireflies` feature).
    pub fireflies_transcripts: u64,
    /// Salesforce accounts.
    pub salesforce_accounts: u64,
    /// Salesforce contacts.
    pub salesforce_contacts: u64,
    /// Salesforce opportunities (each with up to two contact roles).
    pub salesforce_opportunities: u64,
    /// monday.com boards.
    pub monday_boards: u32,
    /// Items on each monday.com board.
    pub monday_items_per_board: u32,
    /// Google Docs in the simulated Drive (with the `google-drive` feature), besides its
    /// folders, Sheets, Slides, PDFs, text, shared-with-me and shared-drive files.
    pub drive_docs: u64,
    /// Where progress goes (records stored so far).
    pub progress: Option<ProgressReporter>,
}

impl QuickstartConfig {
    /// The quickstart's default size: 2,000 companies, 8,000 contacts, 4,000 deals, 25 Gong
    /// users and 1,500 calls; 1,000 Salesforce accounts, 4,000 contacts and 2,000
    /// opportunities; 6 monday.com boards of 150 items; 400 Fireflies transcripts.
    pub fn new(database: impl Into<PathBuf>) -> Self {
        QuickstartConfig {
            database: database.into(),
            companies: 2_000,
            contacts: 8_000,
            deals: 4_000,
            gong_users: 25,
            gong_calls: 1_500,
            fireflies_transcripts: 400,
            salesforce_accounts: 1_000,
            salesforce_contacts: 4_000,
            salesforce_opportunities: 2_000,
            monday_boards: 6,
            monday_items_per_board: 150,
            drive_docs: 20,
            progress: None,
        }
    }
}

/// What the quickstart did.
#[derive(Debug, Clone)]
pub struct QuickstartReport {
    /// The workspace it created.
    pub workspace_id: Uuid,
    /// The initial sync.
    pub initial: WorkspaceSyncResult,
    /// The incremental sync after the simulators changed.
    pub incremental: WorkspaceSyncResult,
    /// Rows per table at the end.
    pub tables: BTreeMap<String, u64>,
    /// Conversations linked to an account by the entity linker.
    pub linked_conversations: u64,
    /// Conversations linked to a deal.
    pub conversations_with_deal: u64,
    /// Wall time of the whole run.
    pub duration: Duration,
    /// The database file.
    pub database: PathBuf,
}

/// Runs the quickstart (see the module docs).
pub async fn run_quickstart(cfg: QuickstartConfig) -> Result<QuickstartReport> {
    let started = Instant::now();
    // A portal with HubSpot's "API limit increase" (250 requests per 10 s); the connection
    // is configured to use 240 of them.
    let hubspot = HubSpotSim::start(HubSpotSimConfig {
        companies: cfg.companies,
        contacts: cfg.contacts,
        deals: cfg.deals,
        rest_max: 250,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the HubSpot simulator: {e}")))?;
    // Gong's external participants come from the HubSpot companies' domains, so the entity
    // linker has something to find.
    let domains: Vec<String> = (1..=cfg.companies.min(200))
        .filter_map(|id| hubspot.record(HubSpotObject::Companies, id))
        .filter_map(|r| r.properties.get("domain").cloned().flatten())
        .collect();
    let gong = GongSim::start(GongSimConfig {
        users: cfg.gong_users,
        calls: cfg.gong_calls,
        days: 90,
        external_domains: domains.clone(),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the Gong simulator: {e}")))?;
    #[cfg(feature = "fireflies")]
    let fireflies = super::FirefliesSim::start(super::FirefliesSimConfig {
        transcripts: cfg.fireflies_transcripts,
        days: 90,
        external_domains: domains.clone(),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the Fireflies simulator: {e}")))?;
    let salesforce = SalesforceSim::start(SalesforceSimConfig {
        accounts: cfg.salesforce_accounts,
        contacts: cfg.salesforce_contacts,
        opportunities: cfg.salesforce_opportunities,
        roles_per_opportunity: 2,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the Salesforce simulator: {e}")))?;

    let monday = MondaySim::start(MondaySimConfig {
        boards: cfg.monday_boards,
        first_board_items: cfg.monday_items_per_board,
        items_per_board: cfg.monday_items_per_board,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the monday.com simulator: {e}")))?;
    #[cfg(feature = "google-drive")]
    let drive = super::GDriveSim::start(super::GDriveSimConfig {
        docs: cfg.drive_docs,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::config(format!("starting the Google Drive simulator: {e}")))?;

    for suffix in ["", "-wal", "-shm"] {
        let mut p = cfg.database.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let url = format!("sqlite://{}?mode=rwc", cfg.database.display());
    let store = Arc::new(
        SqliteStore::connect(&url)
            .await?
            .with_keyring(Keyring::new("quickstart", rand::random::<[u8; 32]>())?),
    );
    store.migrate().await?;

    let workspace_id = Uuid::new_v4();
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::Hubspot, "private_app")
                .with_credentials(Credentials::from_json(serde_json::json!({
                    "access_token": hubspot.config().access_token
                }))?)
                .with_config(serde_json::json!({
                    "rate_limit": {"max_requests": 240, "window_ms": 10_000}
                })),
        )
        .await?;
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::Gong, "basic").with_credentials(
                Credentials::from_json(serde_json::json!({
                    "access_key": gong.config().access_key,
                    "access_key_secret": gong.config().access_key_secret,
                }))?,
            ),
        )
        .await?;

    #[cfg(feature = "fireflies")]
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::Fireflies, "api_key").with_credentials(
                Credentials::from_json(serde_json::json!({"api_key": fireflies.config().api_key}))?,
            ),
        )
        .await?;
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::Salesforce, "oauth").with_credentials(
                Credentials::from_json(serde_json::json!({
                    "client_id": salesforce.config().client_id,
                    "client_secret": salesforce.config().client_secret,
                    "refresh_token": salesforce.config().refresh_token,
                }))?,
            ),
        )
        .await?;

    #[cfg(feature = "google-drive")]
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::GoogleDrive, "oauth").with_credentials(
                Credentials::from_json(serde_json::json!({
                    "client_id": drive.config().client_id,
                    "client_secret": drive.config().client_secret,
                    "refresh_token": drive.config().refresh_token,
                }))?,
            ),
        )
        .await?;

    #[allow(unused_mut)]
    let mut origins = BTreeMap::from([
        (ConnectorKind::Hubspot, hubspot.base_url()),
        (ConnectorKind::Gong, gong.base_url()),
        (ConnectorKind::Salesforce, salesforce.base_url()),
        (ConnectorKind::Monday, monday.base_url()),
    ]);
    #[cfg(feature = "fireflies")]
    origins.insert(ConnectorKind::Fireflies, fireflies.base_url());
    // monday allows far more than the connector's cautious default of 50 requests a
    // minute on paid plans; the connection uses 500.
    store
        .create_connection(
            NewConnection::new(workspace_id, ConnectorKind::Monday, "api_token")
                .with_credentials(Credentials::from_json(serde_json::json!({
                    "api_token": monday.config().api_token
                }))?)
                .with_config(serde_json::json!({
                    "rate_limit": {"max_requests": 500, "window_ms": 60_000}
                })),
        )
        .await?;

    #[cfg(feature = "google-drive")]
    origins.insert(ConnectorKind::GoogleDrive, drive.base_url());
    let registry = ConnectorRegistry::builtin(&origins);
    let orchestrator = Orchestrator::new(store.clone(), registry)
        .with_builtin_hooks(BuiltinHooksConfig::default());
    let options = || SyncOptions {
        progress: cfg.progress.clone(),
        ..Default::default()
    };

    let initial = orchestrator.sync_workspace(workspace_id, options()).await?;

    // The world moves on: a few CRM edits, a lost deal archived, new calls with customers.
    for id in [1, 2, 3, 5, 8] {
        hubspot.modify(HubSpotObject::Contacts, id, [("jobtitle", "VP Revenue")]);
    }
    hubspot.archive(HubSpotObject::Deals, 13);
    hubspot.modify(
        HubSpotObject::Deals,
        21,
        [
            ("dealstage", "closedwon"),
            ("hs_is_closed", "true"),
            ("hs_is_closed_won", "true"),
        ],
    );
    if let Some(host) = gong.active_user_ids().first() {
        for n in 0..3 {
            gong.add_call(
                NewGongCall::new(host.clone(), Utc::now() - chrono::Duration::hours(2 + n))
                    .title(format!("Quickstart follow-up {}", n + 1)),
            );
        }
    }
    #[cfg(feature = "fireflies")]
    {
        // The latest meeting renamed after the call, and two meetings recorded since.
        if let Some(t) = fireflies.transcripts().first() {
            fireflies.modify_transcript(&t.id.clone(), |t| {
                t.title = format!("{} (renamed)", t.title);
            });
        }
        for n in 0..2 {
            fireflies.add_transcript(super::NewFirefliesTranscript::at(
                Utc::now() - chrono::Duration::minutes(30 + 20 * n),
            ));
        }
    }
    // In Salesforce: a deal won, a new contact, an account deleted with what it holds.
    let doomed = SalesforceObject::Account.id(2);
    let won = salesforce
        .records(SalesforceObject::Opportunity)
        .into_iter()
        .find(|o| o.get("AccountId").as_str() != Some(doomed.as_str()))
        .map(|o| o.id)
        .unwrap_or_default();
    salesforce.modify(
        SalesforceObject::Opportunity,
        &won,
        [
            ("StageName", serde_json::json!("Closed Won")),
            ("IsClosed", serde_json::json!(true)),
            ("IsWon", serde_json::json!(true)),
        ],
    );
    salesforce.create(
        SalesforceObject::Contact,
        [
            ("FirstName", serde_json::json!("Quinn")),
            ("LastName", serde_json::json!("Quickstart")),
            ("Email", serde_json::json!("quinn@example.com")),
        ],
    );
    salesforce.delete(SalesforceObject::Account, &doomed);
    // On the boards: a task done, one renamed, one archived, a new one.
    let items = monday.items();
    if let Some(first) = items.first()
        && let Some(board) = monday.board(&first.board_id)
    {
        monday.set_status_index(&first.id, board.done_indexes.first().copied());
        monday.add_item(&board.id, "Quickstart: send the order form");
    }
    if let Some(item) = items.get(1) {
        monday.rename_item(&item.id, "Quickstart: renamed task");
    }
    if let Some(item) = items.get(2) {
        monday.archive_item(&item.id);
    }
    #[cfg(feature = "google-drive")]
    {
        // A Doc edited and a note written since the first sync.
        if let Some(doc) = drive
            .files()
            .into_iter()
            .find(|f| f.mime_type == super::DOC_MIME && !f.trashed)
        {
            drive.edit_content(&doc.id, "Q3 plan, revised after the pipeline review.");
        }
        drive.create(super::NewGDriveFile {
            name: "Meeting notes".into(),
            mime_type: "text/plain".into(),
            parent: Some(super::ROOT_ID.into()),
            content: b"Renewal call: next steps agreed.".to_vec(),
        });
    }
    let incremental = orchestrator.sync_workspace(workspace_id, options()).await?;

    let mut tables = BTreeMap::new();
    for kind in RecordKind::ALL {
        let n = store.count_records(workspace_id, kind, None).await?;
        if n > 0 {
            tables.insert(kind.table().to_owned(), n);
        }
    }
    let (mut linked, mut with_deal, mut after) = (0u64, 0u64, None);
    loop {
        let page = store
            .list_records(
                workspace_id,
                RecordKind::Conversation,
                &RecordQuery {
                    after,
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await?;
        for r in &page {
            if let Record::Conversation(c) = r {
                linked += u64::from(c.linked_account_id.is_some());
                with_deal += u64::from(c.linked_deal_id.is_some());
            }
        }
        after = page.last().and_then(|r| r.meta().map(|m| m.id));
        if page.len() < 1000 {
            break;
        }
    }
    store.close().await;
    hubspot.shutdown().await;
    gong.shutdown().await;
    #[cfg(feature = "fireflies")]
    fireflies.shutdown().await;
    salesforce.shutdown().await;
    monday.shutdown().await;
    #[cfg(feature = "google-drive")]
    drive.shutdown().await;
    Ok(QuickstartReport {
        workspace_id,
        initial,
        incremental,
        tables,
        linked_conversations: linked,
        conversations_with_deal: with_deal,
        duration: started.elapsed(),
        database: cfg.database,
    })
}
