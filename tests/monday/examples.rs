//! The `sync` and `tasks` examples as a user runs them, in subprocesses against the
//! simulator.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pandora_sync::simulator::{MondaySim, MondaySimConfig};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

use crate::support_example::example;

fn run(exe: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(exe)
        .args(args)
        .env(
            "PANDORA_SYNC_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A run refused for bad arguments exits before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// `--connector monday` syncs a board workspace into SQLite; a bad token exits 1 with a
/// clear message, and the token is nowhere in the output or the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_example_syncs_monday_and_rejects_a_bad_token() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monday.db");
    let url = format!("sqlite://{}", db.display());
    let creds = dir.path().join("monday.json");
    std::fs::write(
        &creds,
        json!({"api_token": sim.config().api_token}).to_string(),
    )
    .unwrap();
    let ws = Uuid::new_v4().to_string();
    let creds_arg = format!("@{}", creds.display());
    let base = sim.base_url();
    let exe = example("sync");
    let args = [
        "--database",
        &url,
        "--workspace",
        &ws,
        "--connector",
        "monday",
        "--base-url",
        &base,
        "--credentials",
        &creds_arg,
        "--json",
    ];
    let out = tokio::task::spawn_blocking({
        let exe = exe.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            run(
                &exe,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                "",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["records"]["inserted"], sim.items().len());
    assert_eq!(summary["tables"]["tasks"], sim.items().len());

    let secret = "bad-s3cret-monday-token";
    std::fs::write(&creds, json!({"api_token": secret}).to_string()).unwrap();
    let ws2 = Uuid::new_v4().to_string();
    let args2: Vec<String> = [
        "--database",
        &url,
        "--workspace",
        &ws2,
        "--connector",
        "monday",
        "--base-url",
        &base,
        "--credentials",
        &creds_arg,
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &exe,
            &args2.iter().map(String::as_str).collect::<Vec<_>>(),
            "",
        )
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("authentication failed")
            || stdout.to_lowercase().contains("authentication failed"),
        "{stderr}{stdout}"
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    drop(sim);
    // The token is nowhere in the database: connections hold sealed credentials, the sync
    // log and jobs the redacted error.
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (error,): (Option<String>,) =
        sqlx::query_as("SELECT error_message FROM connections WHERE workspace_id = ?")
            .bind(&ws2)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        error
            .unwrap_or_default()
            .to_lowercase()
            .contains("authentication failed")
    );
    let bytes = std::fs::read(&db).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains(secret),
        "the token is in the database file"
    );
}

/// The `tasks` example runs create, update and complete actions in order and reports one
/// result per action; the simulator's truth shows exactly those changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_example_writes_back() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let board = sim.boards()[0].clone();
    let user = sim.users()[1].clone();
    let existing = sim
        .items()
        .into_iter()
        .find(|i| i.board_id == board.id)
        .unwrap();
    let creds = json!({"api_token": sim.config().api_token}).to_string();
    let actions = json!([
        {"action": "create", "title": "Send the MSA", "group_id": board.groups[2].id, "status": "Working on it",
         "assignee_email": user.email, "due_date": "2026-02-01"},
        {"action": "update", "id": existing.id, "title": "Renamed by the example", "due_date": null, "status": "Stuck"},
        {"action": "complete", "id": existing.id},
        {"action": "update", "id": existing.id, "status": "No such label"},
        {"action": "archive", "id": existing.id},
        {"action": "update", "id": existing.id, "titel": "typo"}
    ]);
    let exe = example("tasks");
    let base = sim.base_url();
    let board_id = board.id.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &exe,
            &[
                "--connector",
                "monday",
                "--base-url",
                &base,
                "--credentials",
                &creds,
                "--board",
                &board_id,
            ],
            &actions.to_string(),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "two actions fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(
        results.iter().map(|r| r["ok"] == true).collect::<Vec<_>>(),
        [true, true, true, false, false, false]
    );
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .contains("unknown status label")
    );
    let created = sim.item(results[0]["id"].as_str().unwrap()).unwrap();
    assert_eq!(created.name, "Send the MSA");
    assert_eq!(created.group_id, board.groups[2].id);
    assert_eq!(sim.status_label(&created).as_deref(), Some("Working on it"));
    assert_eq!(created.people, std::slice::from_ref(&user.id));
    assert_eq!(created.due, chrono::NaiveDate::from_ymd_opt(2026, 2, 1));
    assert_eq!(results[1]["id"], json!(existing.id));
    let changed = sim.item(&existing.id).unwrap();
    assert_eq!(changed.name, "Renamed by the example");
    assert_eq!(changed.due, None);
    assert_eq!(sim.status_label(&changed).as_deref(), Some("Done"));
    assert_eq!(changed.people, existing.people, "untouched");
    let mutations: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == "mutation")
        .collect();
    assert_eq!(
        mutations.len(),
        3,
        "create, update, complete; the bad label never sent"
    );
    for m in &mutations {
        assert!(
            !m.query.contains("MSA") && !m.query.contains("Renamed") && !m.query.contains("Stuck")
        );
    }

    // Bad arguments exit 2.
    let exe = example("tasks");
    let out = tokio::task::spawn_blocking(move || run(&exe, &["--connector", "gong"], "[]"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
