//! Syncs one connector of one workspace into a database: the scriptable entry point.
//!
//! ```text
//! cargo run --example sync --features "sqlite,hubspot" -- \
//!   --database sqlite://pandora.db --workspace 6f1c…-…  --connector hubspot \
//!   --base-url http://127.0.0.1:3000 --credentials '{"access_token":"…"}' \
//!   [--config '{"rate_limit":{"max_requests":190,"window_ms":10000}}'] \
//!   [--mode auto|initial|incremental|backfill] [--wait <secs>] [--json]
//! ```
//!
//! `--credentials` and `--config` take JSON or `@path/to/file.json`. Credentials are sealed
//! with the key in `PANDORA_SYNC_KEY` (base64, 32 bytes) or, without it, a key made for this
//! run (they are written again on every run, and only that run can open them: set the key
//! when a worker is to sync the stored connection too). Progress goes to stderr; `--json` prints one
//! summary to stdout. Exit code: 0 completed (with or without record errors), 1 failed,
//! 2 bad arguments.
//!
//! One sync of a workspace runs at a time: the run takes the workspace lock before it
//! writes the connection's credentials and config and keeps it until the sync ends, so a
//! second run never sees (or overwrites) what the first one wrote. A run that finds the lock
//! held exits 1 saying a sync is already running, or with `--wait <secs>` waits up to that
//! long for it to end. A lock whose holder was killed on this machine is taken over at once.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pandora_sync::model::RecordKind;
use pandora_sync::store::{NewConnection, SyncStatus, WorkspaceLock};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Keyring, Orchestrator, SyncMode, SyncOptions,
    SyncStore, connect_store,
};
use uuid::Uuid;

struct Args {
    database: String,
    workspace: Uuid,
    connector: ConnectorKind,
    base_url: String,
    credentials: serde_json::Value,
    config: serde_json::Value,
    mode: Option<SyncMode>,
    wait: Option<Duration>,
    json: bool,
}

const USAGE: &str = "usage: sync --database <url> --workspace <uuid> --connector <name> --base-url <url> \
--credentials <json|@file> [--config <json|@file>] [--mode auto|initial|incremental|backfill] \
[--wait <secs>] [--json]";

fn read_json(flag: &str, value: &str) -> Result<serde_json::Value, String> {
    let text = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read {path}: {e}"))?
        }
        None => value.to_owned(),
    };
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{flag}: not valid JSON: {e}"))?;
    if !parsed.is_object() {
        return Err(format!("{flag}: expected a JSON object"));
    }
    Ok(parsed)
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut json = false;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            "--database" | "--workspace" | "--connector" | "--base-url" | "--credentials"
            | "--config" | "--mode" | "--wait" => {
                let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
                flags.insert(arg, value);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut take = |name: &str| {
        flags
            .remove(name)
            .ok_or_else(|| format!("missing {name}\n{USAGE}"))
    };
    let database = take("--database")?;
    let workspace = take("--workspace")?;
    let workspace = Uuid::parse_str(&workspace)
        .map_err(|e| format!("--workspace: {workspace:?} is not a UUID: {e}"))?;
    let connector: ConnectorKind = take("--connector")?
        .parse()
        .map_err(|e: pandora_sync::Error| format!("--connector: {e}"))?;
    let base_url = take("--base-url")?;
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(format!("--base-url: {base_url:?} is not an http(s) URL"));
    }
    let credentials = read_json("--credentials", &take("--credentials")?)?;
    let config = match flags.remove("--config") {
        Some(c) => read_json("--config", &c)?,
        None => serde_json::json!({}),
    };
    let mode = match flags.remove("--mode").as_deref() {
        None | Some("auto") => None,
        Some(m) => Some(
            m.parse::<SyncMode>()
                .map_err(|e| format!("--mode: {e} (or auto)"))?,
        ),
    };
    let wait = match flags.remove("--wait") {
        None => None,
        Some(w) => Some(
            w.parse::<f64>()
                .ok()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| format!("--wait: {w:?} is not a number of seconds"))?,
        ),
    };
    Ok(Args {
        database,
        workspace,
        connector,
        base_url,
        credentials,
        config,
        mode,
        wait,
        json,
    })
}

fn keyring() -> Result<Keyring, String> {
    match std::env::var("PANDORA_SYNC_KEY") {
        Ok(k) => {
            Keyring::from_base64("env", k.trim()).map_err(|e| format!("PANDORA_SYNC_KEY: {e}"))
        }
        Err(_) => Keyring::new("ephemeral", rand::random::<[u8; 32]>())
            .map_err(|e| format!("creating a key: {e}")),
    }
}

async fn run(args: Args) -> Result<ExitCode, (u8, String)> {
    let bad = |e: pandora_sync::Error| (2u8, e.to_string());
    let keyring = keyring().map_err(|e| (2, e))?;
    let store = connect_store(&args.database, Some(keyring))
        .await
        .map_err(|e| (2, format!("--database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| (2, format!("migrating the database: {e}")))?;
    let credentials = Credentials::from_json(args.credentials.clone()).map_err(bad)?;
    // Take the workspace lock before touching the connection: credentials sealed with this
    // run's key are written, read back and used by this run alone, and a second run is told
    // a sync is running instead of failing to open what this one wrote.
    let lock = lock_workspace(&store, args.workspace, args.wait).await?;
    let registry = match prepare(&store, &args, credentials).await {
        Ok(registry) => registry,
        Err(e) => {
            let _ = lock.release().await;
            return Err(e);
        }
    };
    let orchestrator = Orchestrator::new(store.clone(), registry);
    let progress = pandora_sync::connector::ProgressReporter::new();
    let mut rx = progress.subscribe();
    let printer = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = rx.borrow_and_update().clone();
            eprint!("\r{} ({})        ", p.message, p.current);
        }
    });
    let started = Instant::now();
    let result = orchestrator
        .sync_workspace_locked(
            lock,
            SyncOptions {
                connectors: Some(vec![args.connector]),
                mode: args.mode,
                progress: Some(progress),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| (1, e.to_string()))?;
    printer.abort();
    eprintln!();
    let Some(c) = result.connectors.first() else {
        return Err((1, "the sync produced no result".into()));
    };
    let mut tables = serde_json::Map::new();
    for kind in RecordKind::ALL {
        let n = store
            .count_records(args.workspace, kind, Some(args.connector))
            .await
            .map_err(|e| (1, e.to_string()))?;
        if n > 0 {
            tables.insert(kind.table().to_owned(), serde_json::json!(n));
        }
    }
    let summary = serde_json::json!({
        "workspaceId": args.workspace,
        "connector": c.connector,
        "syncId": c.sync_id,
        "status": c.status,
        "mode": c.mode,
        "records": c.counts,
        "recordsByTable": c.records_by_table,
        "tables": tables,
        "errors": c.errors,
        "error": c.error,
        "requests": c.requests,
        "retries": c.retries,
        "durationMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    if args.json {
        println!("{summary}");
    } else {
        eprintln!(
            "{} {}: {} ({} written, {} unchanged, {} archived, {} failed) in {} ms, {} requests",
            c.connector,
            c.mode,
            c.status,
            c.counts.written(),
            c.counts.unchanged,
            c.counts.archived,
            c.errors.total,
            summary["durationMs"],
            c.requests
        );
        if let Some(e) = &c.error {
            eprintln!("error: {e}");
        }
    }
    Ok(if c.status == SyncStatus::Failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the connection's credentials and config (under the workspace lock) and builds its
/// connector once, so bad credentials or config exit with 2 before the sync.
async fn prepare(
    store: &Arc<dyn SyncStore>,
    args: &Args,
    credentials: Credentials,
) -> Result<ConnectorRegistry, (u8, String)> {
    let bad = |e: pandora_sync::Error| (2u8, e.to_string());
    if store
        .get_connection(args.workspace, args.connector)
        .await
        .map_err(bad)?
        .is_none()
    {
        store
            .create_connection(
                NewConnection::new(args.workspace, args.connector, "api")
                    .with_credentials(credentials)
                    .with_config(args.config.clone()),
            )
            .await
            .map_err(bad)?;
    } else {
        store
            .set_credentials(args.workspace, args.connector, Some(&credentials))
            .await
            .map_err(bad)?;
        store
            .set_config(args.workspace, args.connector, &args.config)
            .await
            .map_err(bad)?;
    }
    let registry =
        ConnectorRegistry::builtin(&BTreeMap::from([(args.connector, args.base_url.clone())]));
    let row = store
        .get_connection(args.workspace, args.connector)
        .await
        .map_err(bad)?
        .ok_or_else(|| (2, "the connection vanished".to_owned()))?;
    registry
        .build(&row, store.credentials(&row).map_err(bad)?.as_ref())
        .map_err(bad)?;

    Ok(registry)
}

/// Takes the workspace's sync lock; when another run holds it, exits 1 at once or, with
/// `--wait`, once that long has passed without the lock coming free.
async fn lock_workspace(
    store: &Arc<dyn SyncStore>,
    workspace: Uuid,
    wait: Option<Duration>,
) -> Result<WorkspaceLock, (u8, String)> {
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let mut told = false;
    loop {
        let lock = store
            .try_lock_workspace(workspace)
            .await
            .map_err(|e| (1, format!("taking the workspace lock: {e}")))?;
        if let Some(lock) = lock {
            return Ok(lock);
        }
        let running = match store.active_syncs(workspace).await {
            Ok(active) => active
                .iter()
                .find(|s| s.status == SyncStatus::Running)
                .or(active.first())
                .map(|s| format!(" (sync {})", s.id))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        match (wait, deadline) {
            (Some(wait), Some(deadline)) if tokio::time::Instant::now() < deadline => {
                if !told {
                    eprintln!(
                        "a sync of workspace {workspace} is already running{running}; waiting up to {} s for it to end",
                        wait.as_secs_f64()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (Some(wait), _) => {
                return Err((
                    1,
                    format!(
                        "a sync of workspace {workspace} is already running{running} and did not end within {} s",
                        wait.as_secs_f64()
                    ),
                ));
            }
            _ => {
                return Err((
                    1,
                    format!(
                        "a sync of workspace {workspace} is already running{running}; try again when it ends, or pass --wait <secs> to wait for it"
                    ),
                ));
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}
