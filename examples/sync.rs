//! Syncs one connector of one workspace into a database: the scriptable entry point.
//!
//! ```text
//! cargo run --example sync --features "sqlite,hubspot" -- \
//!   --database sqlite://pandora.db --workspace 6f1c…-…  --connector hubspot \
//!   --base-url http://127.0.0.1:3000 --credentials @hubspot-credentials.json \
//!   [--config '{"rate_limit":{"max_requests":190,"window_ms":10000}}'] \
//!   [--mode auto|initial|incremental|backfill] [--wait <secs>] [--json] [--no-hooks]
//! ```
//!
//! Build it with one storage backend (`sqlite` or `postgres`) and the connectors you sync
//! (`hubspot`, `gong`, `fireflies`, `salesforce`, `monday`, `google-drive`), e.g. `--features sqlite,gong`; asking for a connector this build
//! does not have exits 2 saying which feature to add.
//!
//! `--database sqlite://path` creates the file when it does not exist, as the sqlite CLI
//! does (a `?mode=` in the URL is honoured: `?mode=rw` or `?mode=ro` never create it);
//! `sqlite::memory:` and `postgres://…` URLs are used as given.
//!
//! `--credentials` and `--config` take JSON or `@path/to/file.json`. Pass credentials as a
//! file (`--credentials @hubspot.json`, readable by you alone): a token written on the
//! command line lands in your shell history and is visible to every user of the machine in
//! `ps`. The credential keys: hubspot `{"access_token"}` (or `{"client_id",
//! "client_secret", "refresh_token"}`), gong `{"access_key", "access_key_secret"}`, fireflies
//! `{"api_key"}`, salesforce `{"client_id", "client_secret",
//! "refresh_token"}` (`--base-url` is the login host; the API is on the `instance_url` the
//! token endpoint names). A Salesforce org with refresh-token rotation answers each run
//! with a new refresh token, which the run stores with the connection: set
//! `PANDORA_SYNC_KEY` and pass the credentials once, or pass the new token next time;
//! monday `{"api_token"}`, google-drive `{"client_id", "client_secret", "refresh_token"}`
//! (or `{"access_token"}`).
//! `--config` holds the connector's non-secret settings; unknown keys exit 2. Every
//! connector accepts `"rate_limit": {"max_requests": N, "window_ms": M}` to replace its main
//! request budget, and `"base_url"` as an alternative to `--base-url` (every endpoint of the
//! provider, OAuth included, on that origin; default: the provider's public origin).
//!
//! Credentials are sealed with the key in `PANDORA_SYNC_KEY` (base64, 32 bytes) or, without
//! it, a key made for this run (they are written again on every run, and only that run can
//! open them: set the key when a worker is to sync the stored connection too).
//!
//! After the sync the built-in post-sync hooks run, as they do for every user of
//! `Orchestrator::with_builtin_hooks`: the internal filter (`conversations.is_internal`),
//! the entity linker and the deals' computed fields; `--no-hooks` skips them. A hook's
//! failure is reported, never fatal.
//!
//! Progress goes to stderr; `--json` prints one summary to stdout. Exit code: 0 completed
//! (with or without record errors), 1 failed or stopped by a provider's rate limit or quota
//! (its checkpoint is kept: the next run resumes), 2 bad arguments.
//!
//! One sync of a workspace runs at a time: the run takes the workspace lock before it
//! writes the connection's credentials and config and keeps it until the sync (and its
//! hooks) end, so a second run never sees (or overwrites) what the first one wrote. A run
//! that finds the lock held exits 1 saying a sync is already running, or with
//! `--wait <secs>` waits up to that long for it to end. A lock whose holder was killed on
//! this machine is taken over at once.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// Without a storage backend only the `main` that says so is built.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_imports)
)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Keyring, Orchestrator, SyncMode, SyncOptions,
    SyncStore, connect_store,
    model::RecordKind,
    store::{NewConnection, SyncStatus, WorkspaceLock},
};
use uuid::Uuid;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
struct Args {
    database: String,
    workspace: Uuid,
    connector: ConnectorKind,
    /// `None`: the provider's public origin.
    base_url: Option<String>,
    credentials: serde_json::Value,
    config: serde_json::Value,
    mode: Option<SyncMode>,
    wait: Option<Duration>,
    json: bool,
    hooks: bool,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
const USAGE: &str = "usage: sync --database <sqlite://path|postgres://...> --workspace <uuid> \
--connector <name> [--base-url <url>] --credentials <@file.json|json> [--config <json|@file>] \
[--mode auto|initial|incremental|backfill] [--wait <secs>] [--json] [--no-hooks]
Pass the credentials as @file.json: a token written on the command line lands in your shell \
history and in `ps`. See examples/sync.rs for every flag.";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
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

/// The arguments, or `None` for `--help`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut json = false;
    let mut hooks = true;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--no-hooks" => hooks = false,
            "--help" | "-h" => return Ok(None),
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
    let database = database_url(&take("--database")?);
    let workspace = take("--workspace")?;
    let workspace = Uuid::parse_str(&workspace)
        .map_err(|e| format!("--workspace: {workspace:?} is not a UUID: {e}"))?;
    let connector: ConnectorKind = take("--connector")?
        .parse()
        .map_err(|e: pandora_sync::Error| format!("--connector: {e}"))?;
    compiled_in(connector)?;
    let credentials = read_json("--credentials", &take("--credentials")?)?;
    let config = match flags.remove("--config") {
        Some(c) => read_json("--config", &c)?,
        None => serde_json::json!({}),
    };
    let base_url = base_url(flags.remove("--base-url"), &config)?;
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
    Ok(Some(Args {
        database,
        workspace,
        connector,
        base_url,
        credentials,
        config,
        mode,
        wait,
        json,
        hooks,
    }))
}

/// `sqlite://path` (or `sqlite:path`) opens the file read-write and creates it when it does
/// not exist, as the sqlite CLI does, unless the URL names a `mode` itself; in-memory and
/// Postgres URLs are used as given.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn database_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = path.strip_prefix("//").unwrap_or(path);
    let names_mode = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("mode"))
    });
    if path.is_empty() || path == ":memory:" || names_mode {
        return url.to_owned();
    }
    match query {
        None => format!("{url}?mode=rwc"),
        Some("") => format!("{url}mode=rwc"),
        Some(_) => format!("{url}&mode=rwc"),
    }
}

/// Whether this build has the connector, or what to rebuild with.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn compiled_in(kind: ConnectorKind) -> Result<(), String> {
    let (feature, built) = match kind {
        ConnectorKind::Hubspot => ("hubspot", cfg!(feature = "hubspot")),
        ConnectorKind::Gong => ("gong", cfg!(feature = "gong")),
        ConnectorKind::Fireflies => ("fireflies", cfg!(feature = "fireflies")),
        ConnectorKind::Salesforce => ("salesforce", cfg!(feature = "salesforce")),
        ConnectorKind::Monday => ("monday", cfg!(feature = "monday")),
        ConnectorKind::GoogleDrive => ("google-drive", cfg!(feature = "google-drive")),
    };
    if built {
        Ok(())
    } else {
        Err(format!(
            "this build has no {kind} connector; rebuild with --features {feature}"
        ))
    }
}

/// The provider's origin: `--base-url`, else the config's `base_url` (kept in the stored
/// config, so a worker that later syncs the connection uses it too), else `None` for the
/// provider's public origin.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn base_url(flag: Option<String>, config: &serde_json::Value) -> Result<Option<String>, String> {
    let configured = match config.as_object().and_then(|c| c.get("base_url")) {
        None => None,
        Some(serde_json::Value::String(url)) => Some(url.clone()),
        Some(other) => return Err(format!("--config: base_url must be a string, not {other}")),
    };
    let url = match (flag, configured) {
        (Some(flag), Some(configured))
            if flag.trim_end_matches('/') != configured.trim_end_matches('/') =>
        {
            return Err(format!(
                "--base-url {flag:?} and the config's base_url {configured:?} differ; give one"
            ));
        }
        (Some(url), _) | (None, Some(url)) => url,
        (None, None) => return Ok(None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--base-url: {url:?} is not an http(s) URL"));
    }
    Ok(Some(url))
}

/// An error and its causes (the driver's reason a database cannot be opened).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn keyring() -> Result<Keyring, String> {
    match std::env::var("PANDORA_SYNC_KEY") {
        Ok(k) => {
            Keyring::from_base64("env", k.trim()).map_err(|e| format!("PANDORA_SYNC_KEY: {e}"))
        }
        Err(_) => Keyring::new("ephemeral", rand::random::<[u8; 32]>())
            .map_err(|e| format!("creating a key: {e}")),
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn run(args: Args) -> Result<ExitCode, (u8, String)> {
    let bad = |e: pandora_sync::Error| (2u8, e.to_string());
    let keyring = keyring().map_err(|e| (2, e))?;
    let store = connect_store(&args.database, Some(keyring))
        .await
        .map_err(|e| (2, format!("--database: {}", with_causes(&e))))?;
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
    // The built-in hooks, as every user of the orchestrator gets them; they run under the
    // lock, after the sync.
    let mut orchestrator = Orchestrator::new(store.clone(), registry);
    if args.hooks {
        orchestrator =
            orchestrator.with_builtin_hooks(pandora_sync::hooks::BuiltinHooksConfig::default());
    }
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
    let hooks: Vec<serde_json::Value> = result
        .hooks
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "error": h.error, "durationMs": h.duration_ms}))
        .collect();
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
        "rateLimited": c.rate_limited,
        "retryAfterMs": c.retry_after_ms,
        "requests": c.requests,
        "retries": c.retries,
        "hooks": hooks,
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
        for hook in &result.hooks {
            match &hook.error {
                None => eprintln!("hook {}: done in {} ms", hook.name, hook.duration_ms),
                Some(e) => eprintln!("hook {}: failed: {e}", hook.name),
            }
        }
    }
    // A run stopped by a rate limit or quota kept its checkpoint but did not finish.
    Ok(if c.status == SyncStatus::Failed || c.rate_limited {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes the connection's credentials and config (under the workspace lock) and builds its
/// connector once, so bad credentials or config exit with 2 before the sync. A connection
/// created by this run is removed again, and an existing one gets its config back, when they
/// are refused.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn prepare(
    store: &Arc<dyn SyncStore>,
    args: &Args,
    credentials: Credentials,
) -> Result<ConnectorRegistry, (u8, String)> {
    let bad = |e: pandora_sync::Error| (2u8, e.to_string());
    let previous = store
        .get_connection(args.workspace, args.connector)
        .await
        .map_err(bad)?;
    if previous.is_none() {
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
    let base_urls = match &args.base_url {
        Some(url) => BTreeMap::from([(args.connector, url.clone())]),
        None => BTreeMap::new(),
    };
    let registry = ConnectorRegistry::builtin(&base_urls);
    let row = store
        .get_connection(args.workspace, args.connector)
        .await
        .map_err(bad)?
        .ok_or_else(|| (2, "the connection vanished".to_owned()))?;
    let built = store
        .credentials(&row)
        .and_then(|creds| registry.build(&row, creds.as_ref()));
    if let Err(e) = built {
        let undone = match &previous {
            None => store
                .delete_connection(args.workspace, args.connector)
                .await
                .map(drop),
            Some(old) => {
                store
                    .set_config(args.workspace, args.connector, &old.config)
                    .await
            }
        };
        if let Err(undo) = undone {
            eprintln!("warning: restoring the connection failed: {undo}");
        }
        return Err(bad(e));
    }
    Ok(registry)
}

/// Takes the workspace's sync lock; when another run holds it, exits 1 at once or, with
/// `--wait`, once that long has passed without the lock coming free.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
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

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
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

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
fn main() -> ExitCode {
    eprintln!(
        "error: this build has no storage backend; rebuild with --features sqlite or \
         --features postgres (and a connector, e.g. --features sqlite,hubspot)"
    );
    ExitCode::from(2)
}
