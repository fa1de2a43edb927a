//! The `sync` example with `--connector fireflies` against the simulator: a sync, an
//! incremental one, and a bad key (HTTP 401 and HTTP 200 forms) that exits 1 with a clear
//! message and the key nowhere in the output or the database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use pandora_sync::simulator::{FirefliesErrorForm, FirefliesSim, FirefliesSimConfig};
use serde_json::{Value, json};
use uuid::Uuid;

/// The `sync` example built with `sqlite,fireflies` in this test's target directory.
fn sync_example() -> &'static Path {
    static EXAMPLE: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "sync", "--message-format=json"])
            .args(["--no-default-features", "--features", "sqlite,fireflies"]);
        if let Some(target) = exe
            .ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        {
            cmd.arg("--target-dir").arg(target);
        }
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        let out = cmd.stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "building the sync example failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sync")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the sync example's executable")
    })
}

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
