//! The quickstart's logic on small data, so the README's first command cannot rot.
#![cfg(all(
    feature = "simulator",
    feature = "hubspot",
    feature = "gong",
    feature = "salesforce",
    feature = "monday",
    feature = "sqlite"
))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use pandora_sync::simulator::{QuickstartConfig, run_quickstart};
use pandora_sync::store::SyncStatus;
use pandora_sync::{ConnectorKind, SyncMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = QuickstartConfig::new(dir.path().join("quickstart.db"));
    cfg.companies = 40;
    cfg.contacts = 160;
    cfg.deals = 80;
    cfg.gong_users = 3;
    cfg.gong_calls = 60;
    cfg.fireflies_transcripts = 80;
    cfg.salesforce_accounts = 30;
    cfg.salesforce_contacts = 120;
    cfg.salesforce_opportunities = 50;
    cfg.monday_boards = 3;
    cfg.monday_items_per_board = 20;
    cfg.drive_docs = 10;
    let r = run_quickstart(cfg).await.unwrap();
    let connectors =
        4 + usize::from(cfg!(feature = "fireflies")) + usize::from(cfg!(feature = "google-drive"));
    for run in [&r.initial, &r.incremental] {
        assert_eq!(run.connectors.len(), connectors);
        for c in &run.connectors {
            assert_eq!(
                c.status,
                SyncStatus::Completed,
                "{}: {:?}",
                c.connector,
                c.error
            );
        }
        assert!(
            run.hooks.iter().all(|h| h.error.is_none()),
            "{:?}",
            run.hooks
        );
        assert!(!run.hooks.is_empty());
    }
    assert!(
        r.initial
            .connectors
            .iter()
            .all(|c| c.mode == SyncMode::Initial)
    );
    assert!(
        r.incremental
            .connectors
            .iter()
            .all(|c| c.mode == SyncMode::Incremental)
    );
    let hubspot = r
        .incremental
        .connectors
        .iter()
        .find(|c| c.connector == ConnectorKind::Hubspot)
        .unwrap();
    assert!(
        hubspot.counts.written() >= 7,
        "5 contacts, 2 deals changed: {:?}",
        hubspot.counts
    );
    let gong = r
        .incremental
        .connectors
        .iter()
        .find(|c| c.connector == ConnectorKind::Gong)
        .unwrap();
    assert!(
        gong.counts.inserted >= 3,
        "three new calls: {:?}",
        gong.counts
    );
    #[cfg(feature = "fireflies")]
    {
        let fireflies = |run: &pandora_sync::WorkspaceSyncResult| {
            run.connectors
                .iter()
                .find(|c| c.connector == ConnectorKind::Fireflies)
                .cloned()
                .unwrap()
        };
        assert_eq!(fireflies(&r.initial).counts.inserted, 80);
        let inc = fireflies(&r.incremental);
        assert_eq!(
            (inc.counts.inserted, inc.counts.updated),
            (2, 1),
            "two new transcripts, one renamed: {:?}",
            inc.counts
        );
        assert!(r.tables["conversations"] >= 63 + 82);
    }
    let salesforce = r
        .incremental
        .connectors
        .iter()
        .find(|c| c.connector == ConnectorKind::Salesforce)
        .unwrap();
    assert_eq!(
        (salesforce.counts.inserted, salesforce.counts.updated),
        (1, 1),
        "a new contact, a won deal: {:?}",
        salesforce.counts
    );
    assert!(
        salesforce.counts.archived >= 1,
        "a deleted account: {:?}",
        salesforce.counts
    );
    // HubSpot's and Salesforce's rows (archived ones included).
    assert_eq!(r.tables["accounts"], 40 + 30);
    assert_eq!(r.tables["contacts"], 160 + 120 + 1);
    assert_eq!(r.tables["deals"], 80 + 50);
    let monday = r
        .incremental
        .connectors
        .iter()
        .find(|c| c.connector == ConnectorKind::Monday)
        .unwrap();
    assert_eq!(
        (
            monday.counts.inserted,
            monday.counts.updated,
            monday.counts.archived
        ),
        (1, 2, 1),
        "a new task, one done, one renamed, one archived: {:?}",
        monday.counts
    );
    assert_eq!(
        r.tables["tasks"], 61,
        "60 items and the new one (the archived row kept)"
    );
    #[cfg(feature = "google-drive")]
    {
        let drive = |run: &pandora_sync::WorkspaceSyncResult| {
            run.connectors
                .iter()
                .find(|c| c.connector == ConnectorKind::GoogleDrive)
                .cloned()
                .unwrap()
        };
        // 10 Docs, 5 Sheets, 3 Slides, 5 PDFs, 8 text files (3 of them trashed), 3 shared
        // with the user, 3 in a shared drive.
        let docs = 10 + 5 + 3 + 5 + 8 - 3 + 3 + 3;
        assert_eq!(drive(&r.initial).counts.inserted, docs);
        let inc = drive(&r.incremental);
        assert_eq!(
            (inc.counts.inserted, inc.counts.updated),
            (1, 1),
            "a new note, an edited Doc: {:?}",
            inc.counts
        );
        assert_eq!(r.tables["documents"], docs + 1);
    }
    assert!(r.tables["conversations"] >= 63);
    assert!(
        r.linked_conversations > 0,
        "the entity linker linked calls to accounts"
    );
    assert!(r.database.exists());
}
