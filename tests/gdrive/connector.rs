//! The connector on its own (no store): on-demand text, the content cap, static tokens,
//! shared drives left out, malformed files captured, a crash between pages resumed.

use async_trait::async_trait;
use pandora_sync::connector::{Checkpoint, MemorySink, WriteCounts};
use pandora_sync::connectors::gdrive::{
    GoogleDriveConfig, GoogleDriveConnector, GoogleDriveCredentials,
};
use pandora_sync::model::Document;
use pandora_sync::simulator::{DOC_MIME, FaultConfig, GDriveSim, GDriveSimConfig};
use pandora_sync::{
    DocumentAdapter, Error, Record, RecordBatch, RecordSink, SyncCapable, SyncContext, SyncMode,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

fn connector(sim: &GDriveSim, config: serde_json::Value) -> GoogleDriveConnector {
    let mut config = config;
    config["rate_limit"] = json!({"max_requests": 1000, "window_ms": 1000});
    GoogleDriveConnector::new(
        &sim.base_url(),
        GoogleDriveCredentials::AccessToken(SecretString::from(
            sim.config().static_access_token.clone(),
        )),
        GoogleDriveConfig::from_json(&config).unwrap(),
    )
    .unwrap()
}

fn docs(sink: &MemorySink) -> Vec<Document> {
    sink.records()
        .filter_map(|r| match r {
            Record::Document(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn fetch_document_text_on_demand() {
    let sim = GDriveSim::start(GDriveSimConfig {
        oversize_docs: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    let files = sim.files();
    let doc = files
        .iter()
        .find(|f| f.mime_type == DOC_MIME && !f.oversize)
        .unwrap();
    assert_eq!(c.fetch_document_text(&doc.id).await.unwrap(), doc.text());
    let pdf = files
        .iter()
        .find(|f| f.mime_type == "application/pdf")
        .unwrap();
    assert_eq!(c.fetch_document_text(&pdf.id).await.unwrap(), None);
    let huge = files.iter().find(|f| f.oversize).unwrap();
    let e = c.fetch_document_text(&huge.id).await.unwrap_err();
    assert!(e.to_string().contains("exportSizeLimitExceeded"), "{e}");
    assert!(c.fetch_document_text("1missing").await.is_err());
}

#[tokio::test]
async fn text_is_capped_at_a_utf8_boundary_and_shared_drives_can_be_left_out() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    // The corpus's words include multi-byte characters; a small cap cuts many texts.
    let c = connector(
        &sim,
        json!({"max_content_bytes": 25, "include_shared_drives": false}),
    );
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    let stored = docs(&sink);
    assert!(
        stored
            .iter()
            .all(|d| !d.meta.custom_fields.contains_key("drive_id"))
    );
    let mut cut = 0;
    for d in &stored {
        let f = sim.file(&d.meta.source_id).unwrap();
        assert!(f.drive_id.is_none(), "no shared-drive file");
        match (f.text(), &d.content_text) {
            (Some(full), Some(t)) => {
                assert!(t.len() <= 25 && full.starts_with(t.as_str()), "{t:?}");
                if t.len() < full.len() {
                    cut += 1;
                    // The next character would not have fitted.
                    let next = full[t.len()..].chars().next().unwrap();
                    assert!(t.len() + next.len_utf8() > 25);
                }
            }
            (None, None) => {}
            other => panic!("{}: {other:?}", d.meta.source_id),
        }
    }
    assert!(cut > 10, "{cut}");
}

#[tokio::test]
async fn malformed_files_are_captured_with_their_ids() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    sim.set_faults(FaultConfig {
        malformed_rate: 0.2,
        ..Default::default()
    });
    let c = connector(&sim, json!({}));
    let ctx = SyncContext::new(Uuid::new_v4(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    let failed: Vec<String> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.failures.iter().filter_map(|f| f.record_id.clone()))
        .collect();
    assert!(!failed.is_empty());
    assert_eq!(report.records_failed, failed.len() as u64);
    for id in &failed {
        assert!(sim.is_malformed(id), "{id}");
    }
    let ok = docs(&sink).len() as u64;
    assert_eq!(ok, report.records_fetched, "the good files are stored");
}

/// A sink that fails after `ok` writes (a crash between pages).
struct Crashing {
    inner: MemorySink,
    ok: usize,
}

#[async_trait]
impl RecordSink for Crashing {
    async fn write(
        &mut self,
        batch: RecordBatch,
        cp: &Checkpoint,
    ) -> pandora_sync::Result<WriteCounts> {
        if self.inner.batches.len() >= self.ok {
            return Err(Error::storage(
                "crash",
                std::io::Error::other("simulated crash"),
            ));
        }
        self.inner.write(batch, cp).await
    }
}

#[tokio::test]
async fn a_crash_between_pages_resumes_from_the_page_cursor() {
    let sim = GDriveSim::start(GDriveSimConfig {
        folders: 7,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut by_created: Vec<_> = sim.files().into_iter().filter(|f| f.is_folder()).collect();
    by_created.sort_by_key(|f| f.created_time);
    let root = by_created[0].id.clone();
    let c = connector(&sim, json!({"folders": [root]}));
    let ws = Uuid::new_v4();
    let ctx = SyncContext::new(ws, SyncMode::Initial);
    let mut crashing = Crashing {
        inner: MemorySink::new(),
        ok: 3,
    };
    assert!(c.sync(&ctx, &mut crashing).await.is_err());
    let cp = crashing.inner.last_checkpoint().unwrap().clone();
    let s = cp.stream("files").unwrap();
    assert!(s.cursor.is_some() && s.extra.contains_key("scan_token"));
    let lists_before = sim.counters().get("GET /drive/v3/files");
    let tokens_before = sim.counters().get("GET /drive/v3/changes/startPageToken");
    // The next (incremental) run finishes the scan from its cursor, then reads the feed.
    let ctx = SyncContext::new(ws, SyncMode::Incremental).with_previous(cp);
    let mut sink = MemorySink::new();
    c.sync(&ctx, &mut sink).await.unwrap();
    assert_eq!(
        sim.counters().get("GET /drive/v3/changes/startPageToken"),
        tokens_before,
        "the scan keeps the token taken before it"
    );
    let folders_listed = sim.counters().get("GET /drive/v3/files") - lists_before;
    // 7 folders in the subtree of folder 0, three listed before the crash (the third
    // page's write failed, so it is listed again), plus the trashed folders.
    assert!(folders_listed <= 7 - 2 + 1, "{folders_listed}");
    let mut all: Vec<String> = crashing
        .inner
        .records()
        .chain(sink.records())
        .filter_map(|r| r.meta().map(|m| m.source_id.clone()))
        .collect();
    all.sort();
    all.dedup();
    let want: Vec<String> = sim
        .files()
        .into_iter()
        .filter(|f| {
            !f.is_folder()
                && !f.trashed
                && f.parents
                    .iter()
                    .any(|p| by_created.iter().any(|b| &b.id == p))
        })
        .map(|f| f.id)
        .collect();
    assert_eq!(all, want);
    let last = sink.last_checkpoint().unwrap().stream("files").unwrap();
    assert!(last.cursor.is_none() && last.extra.contains_key("start_token"));
}

#[tokio::test]
async fn a_rejected_changes_token_scans_again() {
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    let c = connector(&sim, json!({}));
    let ws = Uuid::new_v4();
    let mut sink = MemorySink::new();
    c.sync(&SyncContext::new(ws, SyncMode::Initial), &mut sink)
        .await
        .unwrap();
    let mut cp = sink.last_checkpoint().unwrap().clone();
    cp.stream_mut("files")
        .extra
        .insert("start_token".into(), json!("999999"));
    let mut again = MemorySink::new();
    let ctx = SyncContext::new(ws, SyncMode::Incremental).with_previous(cp);
    c.sync(&ctx, &mut again).await.unwrap();
    assert_eq!(
        docs(&again).len(),
        docs(&sink).len(),
        "the corpus read again"
    );
    let token = again
        .last_checkpoint()
        .unwrap()
        .stream("files")
        .unwrap()
        .extra["start_token"]
        .clone();
    assert_ne!(token, json!("999999"));
}
