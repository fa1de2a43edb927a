//! The `sync` example with `--connector google-drive` against the simulator: an initial
//! and an incremental sync, and a revoked refresh token that exits 1 with a clear message
//! and no secret in the output or the database.

use std::process::{Command, Output, Stdio};

use pandora_sync::simulator::{GDriveSim, GDriveSimConfig};
use serde_json::{Value, json};
use uuid::Uuid;

async fn run(args: Vec<String>) -> Output {
    let exe = crate::support_example::sync_example().to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(db: &str, ws: &str, sim: &GDriveSim, creds: &str) -> Vec<String> {
    [
        "--database",
        db,
        "--workspace",
        ws,
        "--connector",
        "google-drive",
        "--base-url",
        &sim.base_url(),
        "--credentials",
        creds,
        "--config",
        r#"{"rate_limit": {"max_requests": 1000, "window_ms": 1000}}"#,
        "--json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_example_syncs_google_drive_and_refuses_a_revoked_token() {
    let dir = tempfile::tempdir().unwrap();
    let sim = GDriveSim::start(GDriveSimConfig::default()).await.unwrap();
    let cfg = sim.config().clone();
    let creds_path = dir.path().join("gdrive.json");
    std::fs::write(
        &creds_path,
        json!({"client_id": cfg.client_id, "client_secret": cfg.client_secret,
               "refresh_token": cfg.refresh_token})
        .to_string(),
    )
    .unwrap();
    let creds = format!("@{}", creds_path.display());
    let db = format!("sqlite://{}", dir.path().join("gd.db").display());
    let ws = Uuid::new_v4().to_string();
    let live = sim
        .files()
        .iter()
        .filter(|f| !f.is_folder() && !f.trashed)
        .count();
    for (mode, inserted) in [("initial", live), ("incremental", 0)] {
        let out = run(args(&db, &ws, &sim, &creds)).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["connector"], "google-drive", "{summary}");
        assert_eq!(summary["mode"], mode, "{summary}");
        assert_eq!(summary["records"]["inserted"], inserted, "{summary}");
    }

    sim.revoke_refresh_token();
    let db_path = dir.path().join("revoked.db");
    let db = format!("sqlite://{}", db_path.display());
    sim.counters().reset();
    let out = run(args(&db, &Uuid::new_v4().to_string(), &sim, &creds)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("invalid_grant"),
        "a clear message: {stdout} {stderr}"
    );
    assert_eq!(sim.counters().total(), 1, "one token request, no loop");
    let bytes = std::fs::read(&db_path).unwrap();
    for secret in [&cfg.refresh_token, &cfg.client_secret] {
        assert!(!stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()));
        let needle = secret.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a secret in the database file"
        );
    }
}
