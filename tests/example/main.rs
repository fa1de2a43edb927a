//! The `sync` example as a user runs it (DESIGN 3.4), in a subprocess against the Gong
//! simulator: `sqlite://` of a file that does not exist yet creates it, the built-in
//! post-sync hooks run (`conversations.is_internal` set) unless `--no-hooks`, and bad
//! arguments exit 2 with a message.
//!
//! A connector left out of the build (exit 2, "rebuild with --features …") is shown only
//! when this test runs without `fireflies`: with every feature on, `.ci/run` builds the example
//! with one backend and one connector instead.
#![cfg(all(feature = "simulator", feature = "gong", feature = "sqlite"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pandora_sync::simulator::{GongSim, GongSimConfig};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

#[path = "../support/example.rs"]
mod example;

use example::sync_example;

/// A Gong company of 4 users and 60 calls in the last 30 days, limits off.
async fn gong() -> GongSim {
    GongSim::start(GongSimConfig {
        users: 4,
        calls: 60,
        days: 30,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The connector's own budget out of the way (the real one is 3 requests a second).
fn fast() -> Value {
    json!({"rate_limit": {"max_requests": 10_000, "window_ms": 1_000}})
}

/// Writes the simulator's credentials to a file: the form the example recommends.
fn credentials_file(dir: &Path, sim: &GongSim) -> String {
    let path = dir.join("gong-credentials.json");
    let creds = json!({
        "access_key": sim.config().access_key,
        "access_key_secret": sim.config().access_key_secret,
    });
    std::fs::write(&path, creds.to_string()).unwrap();
    format!("@{}", path.display())
}

/// `sync --connector gong` of a new workspace into `database`, with `extra` flags.
fn sync_cmd(database: &str, credentials: &str, config: &Value, extra: &[&str]) -> Command {
    let mut cmd = Command::new(sync_example());
    cmd.args(["--database", database])
        .args(["--workspace", &Uuid::new_v4().to_string()])
        .args(["--connector", "gong", "--credentials", credentials])
        .args(["--config", &config.to_string()])
        .args(extra)
        .env_remove("PANDORA_SYNC_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?}, stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn succeeded(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    summary(out)
}

/// Conversations in the database, and how many have `is_internal` set.
async fn is_internal_counts(path: &Path) -> (i64, i64) {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    let counts: (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(is_internal) FROM conversations")
            .fetch_one(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_file_is_created_and_the_hooks_run() {
    let sim = gong().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &sim);
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let database = format!("sqlite://{}", path.display());
    let mut cmd = sync_cmd(&database, &creds, &fast(), &["--json"]);
    cmd.args(["--base-url", &sim.base_url()]);
    let out = output(cmd).await;
    let s = succeeded(&out);
    assert!(path.is_file(), "the database file was created");
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["rateLimited"], false, "{s}");
    let synced = s["tables"]["conversations"].as_i64().unwrap();
    assert!(synced > 0, "{s}");
    let hooks: Vec<&str> = s["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        hooks,
        ["internal_filter", "entity_linker", "computed_fields"],
        "{s}"
    );
    assert!(
        s["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["error"].is_null()),
        "{s}"
    );
    let (total, flagged) = is_internal_counts(&path).await;
    assert_eq!(total, synced);
    assert_eq!(
        flagged, total,
        "the internal filter set is_internal on every conversation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hooks_leaves_is_internal_unset() {
    let sim = gong().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &sim);
    let path = dir.path().join("no-hooks.db");
    let database = format!("sqlite://{}", path.display());
    let mut cmd = sync_cmd(&database, &creds, &fast(), &["--json", "--no-hooks"]);
    cmd.args(["--base-url", &sim.base_url()]);
    let s = succeeded(&output(cmd).await);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["hooks"], json!([]), "{s}");
    let (total, flagged) = is_internal_counts(&path).await;
    assert!(total > 0);
    assert_eq!(flagged, 0, "no hook ran: is_internal stays NULL");
}

/// The config's `base_url` stands in for `--base-url`; one that differs from the flag is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_url_in_the_config() {
    let sim = gong().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &sim);
    let database = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut config = fast();
    config["base_url"] = json!(sim.base_url());
    let s = succeeded(&output(sync_cmd(&database, &creds, &config, &["--json"])).await);
    assert_eq!(s["status"], "completed", "{s}");

    let mut cmd = sync_cmd(&database, &creds, &config, &[]);
    cmd.args(["--base-url", "http://127.0.0.1:9"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("differ"),
        "{}",
        text(&out.stderr)
    );
}

/// A run stopped by a quota keeps its checkpoint but did not finish: exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_stop_exits_1() {
    // 250 calls: the users listing and the first of three pages of calls (all users in one
    // `primaryUserIds` list) fit in the day's 2 requests; the second page does not.
    let sim = GongSim::start(GongSimConfig {
        users: 4,
        calls: 250,
        days: 30,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &sim);
    let database = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut config = fast();
    config["daily_limit"] = json!(2);
    let mut cmd = sync_cmd(&database, &creds, &config, &["--json"]);
    cmd.args(["--base-url", &sim.base_url()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s = summary(&out);
    assert_eq!(s["rateLimited"], true, "{s}");
    assert_eq!(s["status"], "completed_with_errors", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_with_a_message() {
    let sim = gong().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials_file(dir.path(), &sim);
    let base = sim.base_url();

    // A `mode` in the URL is honoured: `rw` does not create the file.
    let missing = dir.path().join("missing.db");
    let mut cmd = sync_cmd(
        &format!("sqlite://{}?mode=rw", missing.display()),
        &creds,
        &fast(),
        &[],
    );
    cmd.args(["--base-url", &base]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("error: --database"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());

    // An unknown config key: exit 2, and nothing stays stored.
    let path = dir.path().join("p.db");
    let database = format!("sqlite://{}", path.display());
    let mut config = fast();
    config["tracked_userz"] = json!(["a@example.com"]);
    let mut cmd = sync_cmd(&database, &creds, &config, &[]);
    cmd.args(["--base-url", &base]);
    let out = output(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("tracked_userz"),
        "{err}"
    );
    let mut db = SqliteConnection::connect(&format!("{database}?mode=ro"))
        .await
        .unwrap();
    let (connections,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM connections")
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    assert_eq!(connections, 0, "the refused connection was removed");

    // A connector left out of this build (the examples are built with the test binary's
    // features, so only a build without `fireflies` can show it; `.ci/run` also checks the
    // example with one connector).
    if !cfg!(feature = "fireflies") {
        let mut cmd = Command::new(sync_example());
        cmd.args(["--database", &database])
            .args(["--workspace", &Uuid::new_v4().to_string()])
            .args([
                "--connector",
                "fireflies",
                "--credentials",
                r#"{"api_key":"k"}"#,
            ])
            .args(["--base-url", &base])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = output(cmd).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("this build has no fireflies connector"),
            "{err}"
        );
    }

    // --help is not an error, and recommends credentials in a file.
    let out = output({
        let mut cmd = Command::new(sync_example());
        cmd.arg("--help")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    })
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("@file.json"),
        "{}",
        text(&out.stdout)
    );
}
