//! The `sync` example with `--connector fireflies` against the simulator: a sync, an
//! incremental one, and a bad key (HTTP 401 and HTTP 200 forms) that exits 1 with a clear
//! message and the key nowhere in the output or the database.

use std::process::{Command, Output, Stdio};

use pandora_sync::simulator::{FirefliesErrorForm, FirefliesSim, FirefliesSimConfig};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support_example::sync_example;

async fn run(args: Vec<String>) -> Output {
    let exe = sync_example().to_owned();
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

fn args(db: &str, ws: &str, sim: &FirefliesSim, creds: &str) -> Vec<String> {
    [
        "--database",
        db,
        "--workspace",
        ws,
        "--connector",
        "fireflies",
        "--base-url",
        &sim.base_url(),
        "--credentials",
        creds,
        "--json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_example_syncs_fireflies_and_refuses_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = FirefliesSim::start(FirefliesSimConfig {
        transcripts: 120,
        ..Default::default()
    })
    .await
    .unwrap();
    let creds_path = dir.path().join("fireflies.json");
    std::fs::write(
        &creds_path,
        json!({"api_key": sim.config().api_key}).to_string(),
    )
    .unwrap();
    let creds = format!("@{}", creds_path.display());
    let db = format!("sqlite://{}", dir.path().join("ff.db").display());
    let ws = Uuid::new_v4().to_string();
    for (mode, inserted) in [("initial", 120), ("incremental", 0)] {
        let out = run(args(&db, &ws, &sim, &creds)).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["connector"], "fireflies", "{summary}");
        assert_eq!(summary["mode"], mode, "{summary}");
        assert_eq!(summary["records"]["inserted"], inserted, "{summary}");
        assert!(summary["requests"].as_u64().unwrap() >= 1, "{summary}");
    }

    for form in [FirefliesErrorForm::HttpStatus, FirefliesErrorForm::Http200] {
        let sim = FirefliesSim::start(FirefliesSimConfig {
            transcripts: 10,
            error_form: form,
            ..Default::default()
        })
        .await
        .unwrap();
        let key = "ff-bad-key-91d2e7";
        let db_path = dir.path().join(format!("bad-{form:?}.db"));
        let db = format!("sqlite://{}", db_path.display());
        let creds = json!({"api_key": key}).to_string();
        let out = run(args(&db, &Uuid::new_v4().to_string(), &sim, &creds)).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{form:?}: {stderr}");
        assert!(
            format!("{stdout}{stderr}").contains("auth_failed"),
            "{form:?}: a clear message: {stdout} {stderr}"
        );
        assert!(sim.counters().total() <= 3, "{form:?}");
        assert!(
            !stdout.contains(key) && !stderr.contains(key),
            "{form:?}: key in output"
        );
        let bytes = std::fs::read(&db_path).unwrap();
        let needle = key.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{form:?}: key in the database file"
        );
    }
}
