//! Process-level tests of the `sync` example against the HubSpot simulator: a run killed
//! with SIGKILL is followed at once by one that resumes it, and two runs of one workspace
//! started together never collide. On SQLite and PostgreSQL.
#![cfg(all(feature = "simulator", feature = "hubspot", unix))]
#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pandora_sync::ConnectorKind;
use pandora_sync::model::RecordKind;
use pandora_sync::simulator::{HubSpotSim, HubSpotSimConfig};
use pandora_sync::store::{ConnectionStatus, SyncStatus};
use uuid::Uuid;

mod lock;

#[path = "../support/example.rs"]
mod example;

#[path = "../support/store_env.rs"]
mod store_env;

use example::sync_example;

pub(crate) use store_env::Env;
#[cfg(feature = "postgres")]
use store_env::run_postgres;
#[cfg(feature = "sqlite")]
use store_env::run_sqlite;

/// A client-side rate limit: `per_second` requests a second on every endpoint.
fn rate(per_second: u32) -> String {
    let limit = serde_json::json!({"max_requests": per_second, "window_ms": 1000});
    serde_json::json!({"rate_limit": limit, "search_rate_limit": limit}).to_string()
}

/// A `sync` command for `ws` against `sim`, with no `PANDORA_SYNC_KEY`: every run seals
/// the credentials with a key of its own, as a user trying the example would.
fn sync_cmd(env: &Env, sim: &HubSpotSim, ws: Uuid, config: &str, extra: &[&str]) -> Command {
    let creds = serde_json::json!({"access_token": sim.config().access_token}).to_string();
    let mut cmd = Command::new(sync_example());
    cmd.args(["--database", &env.database_url])
        .args(["--workspace", &ws.to_string(), "--connector", "hubspot"])
        .args(["--base-url", &sim.base_url(), "--credentials", &creds])
        .args(["--config", config])
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

fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

fn portal(contacts: u64) -> HubSpotSimConfig {
    HubSpotSimConfig {
        companies: 20,
        contacts,
        deals: 20,
        rate_limits: false,
        ..Default::default()
    }
}

/// A sync killed with SIGKILL mid-run: the next run is not refused (no lease to wait out),
/// resumes from the last committed page, and the dead run's row ends `failed`/interrupted.
async fn killed_sync_is_taken_over_and_resumed(env: Env) {
    let sim = HubSpotSim::start(portal(3_000)).await.unwrap();
    let ws = Uuid::new_v4();

    // What a whole sync costs, in another workspace.
    let full = summary(
        &output(sync_cmd(
            &env,
            &sim,
            Uuid::new_v4(),
            &rate(100_000),
            &["--json"],
        ))
        .await,
    );
    let full_requests = full["requests"].as_u64().unwrap();
    assert_eq!(full["tables"]["contacts"], 3_000);

    // 5 requests a second: 30 contact pages take about 6 s. Kill it 10 pages in.
    let mut child = sync_cmd(&env, &sim, ws, &rate(5), &[]).spawn().unwrap();
    let mut committed = 0;
    for _ in 0..600 {
        committed = env
            .store
            .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
            .await
            .unwrap();
        if committed >= 1_000 || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first run ended before it was killed"
    );
    assert!(
        committed >= 1_000,
        "only {committed} contacts were committed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let dead = env.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead = dead[0].clone();
    assert_eq!(dead.status, SyncStatus::Running, "killed mid-run: {dead:?}");

    // At once: not refused, completes, resumes from the checkpoint.
    let out = output(sync_cmd(&env, &sim, ws, &rate(100_000), &["--json"])).await;
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("already running"), "refused: {stderr}");
    let resumed = summary(&out);
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(resumed["tables"]["contacts"], 3_000);
    // It read only the contacts after the last committed page (a full read hands all
    // 3,000 to the store), with fewer requests than a whole sync. The resumed list pass is
    // followed by one search pass over its own window (issue 11, case 2), which re-reads
    // the few records at the new watermark (the bound is inclusive, by design): allow those.
    const FOLLOW_UP_OVERLAP: u64 = 50;
    let read = resumed["recordsByTable"]["contacts"].as_u64().unwrap_or(0);
    assert!(
        read <= 3_000 - committed + FOLLOW_UP_OVERLAP,
        "the resumed run read {read} contacts, {committed} were committed before the kill: it did not resume"
    );
    let resumed_requests = resumed["requests"].as_u64().unwrap();
    assert!(
        resumed_requests < full_requests,
        "the resumed run made {resumed_requests} requests, a full sync {full_requests}"
    );

    // The dead run's row is failed as interrupted; its connection is no longer syncing.
    let row = env.store.get_sync(ws, dead.id).await.unwrap().unwrap();
    assert_eq!(row.status, SyncStatus::Failed, "{row:?}");
    assert!(
        row.error_message
            .as_deref()
            .is_some_and(|m| m.contains("interrupted")),
        "{row:?}"
    );
    assert!(row.completed_at.is_some());
    let conn = env
        .store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.status, ConnectionStatus::Synced);
    assert!(env.store.active_syncs(ws).await.unwrap().is_empty());
}

/// Pages that arrive quickly are committed in groups (the checkpoint of a group's last page
/// with the group): a run killed with SIGKILL between groups loses nothing, and the next
/// run resumes from the last committed group and stores every contact exactly once.
async fn grouped_commits_resume_after_kill(env: Env) {
    const CONTACTS: u64 = 20_000;
    let sim = HubSpotSim::start(portal(CONTACTS)).await.unwrap();
    let ws = Uuid::new_v4();

    // 40 requests a second: a page every 25 ms, quick enough to be grouped; 200 contact
    // pages take about 5 s. Kill it once a group is committed.
    let mut child = sync_cmd(&env, &sim, ws, &rate(40), &[]).spawn().unwrap();
    let mut committed = 0;
    for _ in 0..600 {
        committed = env
            .store
            .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
            .await
            .unwrap();
        if committed >= 2_000 || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first run ended before it was killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What the dead run committed, read after it died (a group may have landed since).
    let committed = env
        .store
        .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
        .await
        .unwrap()
        .max(committed);
    assert!(
        (2_000..CONTACTS).contains(&committed),
        "{committed} contacts were committed before the kill"
    );

    let resumed = summary(&output(sync_cmd(&env, &sim, ws, &rate(100_000), &["--json"])).await);
    assert_eq!(resumed["status"], "completed", "{resumed}");
    // Every contact is stored once, none lost with the uncommitted pages of the dead run.
    assert_eq!(resumed["tables"]["contacts"], CONTACTS);
    assert_eq!(
        env.store
            .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
            .await
            .unwrap(),
        CONTACTS
    );
    // It resumed from the checkpoint committed with the last group (see the overlap note
    // of `killed_sync_is_taken_over_and_resumed`).
    const FOLLOW_UP_OVERLAP: u64 = 50;
    let read = resumed["recordsByTable"]["contacts"].as_u64().unwrap_or(0);
    assert!(
        read <= CONTACTS - committed + FOLLOW_UP_OVERLAP,
        "the resumed run read {read} contacts, {committed} were committed before the kill: it did not resume"
    );
    assert!(
        read >= CONTACTS - committed,
        "the resumed run read {read} contacts, {committed} were committed: the checkpoint ran ahead of the records"
    );
}

/// Two runs of one workspace started together (each with its own key): exactly one syncs,
/// the other says a sync is already running; with `--wait` the second waits and syncs.
async fn two_runs_at_once_one_syncs(env: Env) {
    let sim = HubSpotSim::start(portal(1_500)).await.unwrap();
    let ws = Uuid::new_v4();
    // About 3 s a run at 6 requests a second: the two overlap.
    let (a, b) = tokio::join!(
        output(sync_cmd(&env, &sim, ws, &rate(6), &[])),
        output(sync_cmd(&env, &sim, ws, &rate(6), &[]))
    );
    let outs = [a, b];
    for out in &outs {
        let stderr = text(&out.stderr).to_lowercase();
        assert!(
            !stderr.contains("decrypt")
                && !stderr.contains("storage error")
                && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    let ok: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    let refused: Vec<&Output> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(ok.len(), 1, "exactly one syncs: {outs:?}");
    assert_eq!(refused[0].status.code(), Some(1));
    let why = text(&refused[0].stderr);
    assert!(
        why.starts_with("error: ")
            && why.contains("a sync of workspace")
            && why.contains("already running"),
        "{why}"
    );
    let n = env
        .store
        .count_records(ws, RecordKind::Contact, Some(ConnectorKind::Hubspot))
        .await
        .unwrap();
    assert_eq!(n, 1_500);
    let history = env.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "the refused run left no row: {history:?}");
    assert_eq!(history[0].status, SyncStatus::Completed);

    // With --wait, the second run waits for the first and then syncs (incrementally).
    let (a, b) = tokio::join!(
        output(sync_cmd(
            &env,
            &sim,
            ws,
            &rate(6),
            &["--wait", "120", "--json"]
        )),
        output(sync_cmd(
            &env,
            &sim,
            ws,
            &rate(6),
            &["--wait", "120", "--json"]
        ))
    );
    let (a, b) = (summary(&a), summary(&b));
    assert_eq!(a["status"], "completed", "{a}");
    assert_eq!(b["status"], "completed", "{b}");
    let history = env.store.sync_history(ws, None, 10).await.unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history.iter().all(|h| h.status == SyncStatus::Completed));

    // A run that does not get the lock within --wait gives up, saying so.
    let held = env.store.try_lock_workspace(ws).await.unwrap().unwrap();
    let out = output(sync_cmd(&env, &sim, ws, &rate(6), &["--wait", "1"])).await;
    assert_eq!(out.status.code(), Some(1));
    let why = text(&out.stderr);
    assert!(
        why.contains("already running") && why.contains("did not end within 1 s"),
        "{why}"
    );
    held.release().await.unwrap();
}

macro_rules! process_suite {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_sqlite(crate::$name).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::run_postgres(crate::$name).await;
                }
            )*
        }
    };
}

use lock::a_dead_holders_runs_are_interrupted;

process_suite!(
    killed_sync_is_taken_over_and_resumed,
    grouped_commits_resume_after_kill,
    two_runs_at_once_one_syncs,
    a_dead_holders_runs_are_interrupted,
);
