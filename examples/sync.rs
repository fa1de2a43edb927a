//! Syncs one connector of one workspace into a database: the scriptable entry point.
//!
//! ```text
//! cargo run --example sync --features "sqlite,hubspot" -- \
//!   --database sqlite://pandora.db --workspace 6f1c…-…  --connector hubspot \
//!   --base-url http://127.0.0.1:3000 --credentials '{"access_token":"…"}' \
//!   [--config '{"rate_limit":{"max_requests":190,"window_ms":10000}}'] \
//!   [--mode auto|initial|incremental|backfill] [--json]
//! ```
//!
//! `--credentials` and `--config` take JSON or `@path/to/file.json`. Credentials are sealed
//! with the key in `PANDORA_SYNC_KEY` (base64, 32 bytes) or, without it, a key made for this
//! run (they are written again on every run). Progress goes to stderr; `--json` prints one
//! summary to stdout. Exit code: 0 completed (with or without record errors), 1 failed,
//! 2 bad arguments.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Keyring, NewConnection, Orchestrator,
    RecordKind, SyncMode, SyncOptions, SyncStatus, connect_store,
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
    json: bool,
}

const USAGE: &str = "usage: sync --database <url> --workspace <uuid> --connector <name> --base-url <url> \
--credentials <json|@file> [--config <json|@file>] [--mode auto|initial|incremental|backfill] [--json]";

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
            | "--config" | "--mode" => {
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
    Ok(Args {
        database,
        workspace,
        connector,
        base_url,
        credentials,
        config,
        mode,
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
    let credentials = Credentials::from_json(args.credentials).map_err(bad)?;
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
                    .with_config(args.config),
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
    // Build the connector once up front so bad credentials or config exit with 2.
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

    let orchestrator = Orchestrator::new(store.clone(), registry);
    let progress = pandora_sync::ProgressReporter::new();
    let mut rx = progress.subscribe();
    let printer = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = rx.borrow_and_update().clone();
            eprint!("\r{} ({})        ", p.message, p.current);
        }
    });
    let started = Instant::now();
    let result = orchestrator
        .sync_workspace(
            args.workspace,
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
