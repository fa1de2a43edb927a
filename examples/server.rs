//! The whole service in one process: migrations, a worker pool, the scheduler, the HTTP API
//! under `/api/workspaces`, webhooks under `/webhooks` and an HTML status page at `/`, on
//! one port (DESIGN 3.7).
//!
//! ```text
//! cargo run --example server --features full -- [--database <url>] [--listen 127.0.0.1:8080] \
//!   [--tokens <json|@file>] [--workers N] [--webhook-secrets <json|@file>] \
//!   [--public-url <origin>] [--demo]
//! ```
//!
//! - `--database`: `sqlite://path` (default `sqlite://pandora.db`, created when missing) or
//!   `postgres://…` (with the `postgres` feature). Several processes on one Postgres share
//!   the work: the job queue does the coordination.
//! - `--tokens`: `{"<token>": ["<workspace uuid>", …] | "*"}`: bearer tokens and the
//!   workspaces each may see (API and status page; the page also takes `?token=`).
//! - `--workers`: jobs run at once by this process (default 4).
//! - `--webhook-secrets` (or env `PANDORA_WEBHOOK_SECRETS`): `{"hubspot": "<app client
//!   secret>", "monday": "<signing secret>"}`; a provider without one answers 401 to every
//!   event (the monday `challenge` is still echoed).
//! - `--public-url`: the origin providers call (the URI in the HubSpot v3 signature;
//!   default `http://<Host>`).
//! - `--demo`: starts every simulator compiled in, creates a new demo workspace with those
//!   connections (their `base_url` pointing at the simulators, so any process on the same
//!   database can run their jobs) and a token that sees only it.
//!
//! The credential key comes from `PANDORA_SYNC_KEY` (base64, 32 bytes); with `--demo` and
//! no key, a key for this process alone is made (other processes cannot open the demo's
//! credentials then).
//!
//! Once it listens it prints `listening: http://<addr>`, and with `--demo` also
//! `workspace: <uuid>` and `token: <token>`, one per line on stdout. SIGINT or SIGTERM
//! shut it down: it stops claiming, lets running jobs finish (or hands them back to the
//! queue, their attempt not counted), and exits 0.
//!
//! Try it:
//! ```text
//! cargo run --example server --features full -- --demo
//! curl -X POST -H "Authorization: Bearer $TOKEN" localhost:8080/api/workspaces/$WS/sync
//! open "http://localhost:8080/?token=$TOKEN"
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use pandora_sync::api::{Access, BearerTokens, SyncApi, WebhookConfig, Webhooks, bearer_token};
use pandora_sync::hooks::BuiltinHooksConfig;
use pandora_sync::model::RecordKind;
use pandora_sync::queue::{JobStatus, SYNC_JOB, Worker, WorkerConfig};
use pandora_sync::store::ConnectionStatus;
use pandora_sync::{
    ConnectorRegistry, Keyring, Orchestrator, Scheduler, SchedulerConfig, SyncJobHandler,
    SyncStore, connect_store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const USAGE: &str = "usage: server [--database <url>] [--listen 127.0.0.1:8080] [--tokens <json|@file>] \
[--workers N] [--webhook-secrets <json|@file>] [--public-url <origin>] [--demo]";

struct Args {
    database: String,
    listen: String,
    tokens: Option<serde_json::Value>,
    workers: usize,
    webhook_secrets: Option<serde_json::Value>,
    public_url: Option<String>,
    demo: bool,
}

fn json_arg(flag: &str, value: &str) -> Result<serde_json::Value, String> {
    let text = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{flag}: {path}: {e}"))?,
        None => value.to_owned(),
    };
    // The message never quotes the text: it may hold secrets.
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{flag}: not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        database: "sqlite://pandora.db".into(),
        listen: "127.0.0.1:8080".into(),
        tokens: None,
        workers: 4,
        webhook_secrets: None,
        public_url: None,
        demo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--demo" {
            args.demo = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--database" => args.database = value,
            "--listen" => args.listen = value,
            "--tokens" => args.tokens = Some(json_arg(&flag, &value)?),
            "--workers" => {
                args.workers = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("--workers: a positive number")?;
            }
            "--webhook-secrets" => args.webhook_secrets = Some(json_arg(&flag, &value)?),
            "--public-url" => args.public_url = Some(value),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.webhook_secrets.is_none()
        && let Ok(v) = std::env::var("PANDORA_WEBHOOK_SECRETS")
    {
        args.webhook_secrets = Some(json_arg("PANDORA_WEBHOOK_SECRETS", &v)?);
    }
    Ok(args)
}

/// `sqlite://path` creates the file when it is missing (unless the URL names a mode).
fn database_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_owned();
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p.starts_with("mode=")) {
        return url.to_owned();
    }
    if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn keyring(demo: bool) -> Result<Keyring, String> {
    match std::env::var("PANDORA_SYNC_KEY") {
        Ok(k) => {
            Keyring::from_base64("env", k.trim()).map_err(|e| format!("PANDORA_SYNC_KEY: {e}"))
        }
        Err(_) if demo => {
            eprintln!(
                "warning: PANDORA_SYNC_KEY is not set: the demo's credentials are sealed with a key of this process alone"
            );
            Keyring::new("ephemeral", rand::random::<[u8; 32]>()).map_err(|e| e.to_string())
        }
        Err(_) => Err("PANDORA_SYNC_KEY (base64, 32 bytes) is required to seal credentials".into()),
    }
}

struct PageState {
    store: Arc<dyn SyncStore>,
    tokens: Arc<BearerTokens>,
}

async fn run(args: Args) -> Result<(), (u8, String)> {
    let keyring = keyring(args.demo).map_err(|e| (2, e))?;
    let store = connect_store(&database_url(&args.database), Some(keyring))
        .await
        .map_err(|e| (2, format!("--database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| (1, format!("migrating the database: {e}")))?;
    let mut tokens = match &args.tokens {
        Some(v) => BearerTokens::from_json(v).map_err(|e| (2, format!("--tokens: {e}")))?,
        None => BearerTokens::new(),
    };
    let mut webhook_config = WebhookConfig {
        public_url: args.public_url.clone(),
        ..Default::default()
    };
    if let Some(secrets) = &args.webhook_secrets {
        webhook_config = webhook_config
            .with_secrets_json(secrets)
            .map_err(|e| (2, format!("--webhook-secrets: {e}")))?;
    }

    // The demo's simulators live as long as this process.
    let demo = if args.demo {
        let d = demo::start(&store)
            .await
            .map_err(|e| (1, format!("--demo: {e}")))?;
        tokens = tokens.allow(&d.token, Access::Only([d.workspace].into()));
        Some(d)
    } else {
        None
    };
    let tokens = Arc::new(tokens);

    let shutdown = CancellationToken::new();
    let orchestrator =
        Orchestrator::new(store.clone(), ConnectorRegistry::builtin(&BTreeMap::new()))
            .with_builtin_hooks(BuiltinHooksConfig::default());
    let worker = Worker::new(store.clone())
        .listen()
        .config(WorkerConfig {
            concurrency: args.workers,
            ..Default::default()
        })
        .register(SYNC_JOB, Arc::new(SyncJobHandler::new(orchestrator)));
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let scheduler = Scheduler::new(store.clone(), SchedulerConfig::default())
        .map_err(|e| (2, e.to_string()))?;
    let scheduler_task = tokio::spawn(
        Scheduler::new(store.clone(), SchedulerConfig::default())
            .map_err(|e| (2, e.to_string()))?
            .run(shutdown.clone()),
    );
    let scheduler = Arc::new(scheduler);

    let api = SyncApi::new(store.clone(), scheduler.clone(), tokens.clone());
    let webhooks = Webhooks::new(store.clone(), scheduler, webhook_config);
    let page = Arc::new(PageState {
        store: store.clone(),
        tokens,
    });
    let app = Router::new()
        .route("/", get(status_page))
        .with_state(page)
        .nest("/api/workspaces", api.router())
        .nest("/webhooks", webhooks.router());

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| (2, format!("--listen {}: {e}", args.listen)))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| (1, e.to_string()))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening: http://{addr}");
        if let Some(d) = &demo {
            let _ = writeln!(out, "workspace: {}", d.workspace);
            let _ = writeln!(
                out,
                "token: {}",
                secrecy::ExposeSecret::expose_secret(&d.token)
            );
        }
        let _ = out.flush();
    }

    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new jobs are claimed");
        signal.cancel();
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    let worker_result = worker.await;
    let scheduler_result = scheduler_task.await;
    drop(demo);
    store.close().await;
    served.map_err(|e| (1, format!("serving: {e}")))?;
    match worker_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err((1, format!("worker: {e}"))),
        Err(e) => return Err((1, format!("worker: {e}"))),
    }
    match scheduler_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err((1, format!("scheduler: {e}"))),
        Err(e) => Err((1, format!("scheduler: {e}"))),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `/`: per visible workspace and connector: status, last sync, records, running job.
async fn status_page(
    State(page): State<Arc<PageState>>,
    Query(query): Query<BTreeMap<String, String>>,
    parts: Parts,
) -> Response {
    let token = bearer_token(&parts).or(query.get("token").map(String::as_str));
    let Some(access) = token.and_then(|t| page.tokens.access(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            Html("<!doctype html><title>pandora_sync</title><p>A token is required: <code>/?token=…</code> or <code>Authorization: Bearer …</code>.</p>".to_owned()),
        )
            .into_response();
    };
    match render(&page.store, access).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the status page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<p>internal error</p>".to_owned()),
            )
                .into_response()
        }
    }
}

async fn render(store: &Arc<dyn SyncStore>, access: &Access) -> pandora_sync::Result<String> {
    let workspaces: Vec<Uuid> = match access {
        Access::All => store.workspaces().await?,
        Access::Only(set) => set.iter().copied().collect(),
    };
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
<title>pandora_sync status</title><style>body{font-family:sans-serif;margin:2em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style>\
</head><body><h1>pandora_sync</h1>",
    );
    for ws in workspaces {
        let connections = store.list_connections(ws).await?;
        let running = store
            .list_jobs(ws, 20, 0)
            .await?
            .into_iter()
            .find(|j| j.status == JobStatus::Running);
        let _ = write!(html, "<h2>Workspace <code>{ws}</code></h2>");
        if let Some(job) = running {
            let p = job.progress.unwrap_or_default();
            let _ = write!(
                html,
                "<p>Running job <code>{}</code>: {} {}</p>",
                job.id,
                p.current,
                escape(&p.message)
            );
        }
        html.push_str("<table><tr><th>connector</th><th>status</th><th>last sync</th><th>records</th><th>error</th></tr>");
        for c in connections {
            let mut records = 0u64;
            for kind in RecordKind::ALL {
                if kind != RecordKind::DealContact {
                    records += store.count_records(ws, kind, Some(c.connector)).await?;
                }
            }
            let status = if c.status == ConnectionStatus::Disabled {
                "disabled".to_owned()
            } else {
                c.status.to_string()
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{records}</td><td>{}</td></tr>",
                c.connector,
                status,
                c.last_sync_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                escape(c.error_message.as_deref().unwrap_or("")),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>");
    Ok(html)
}

#[cfg(feature = "simulator")]
mod demo {
    //! `--demo`: the simulators compiled in, a workspace with their connections, a token.

    use std::sync::Arc;

    use pandora_sync::store::NewConnection;
    use pandora_sync::{ConnectorKind, Credentials, SyncStore};
    use secrecy::SecretString;
    use uuid::Uuid;

    pub(crate) struct Demo {
        pub(crate) workspace: Uuid,
        pub(crate) token: SecretString,
        #[cfg(feature = "hubspot")]
        _hubspot: pandora_sync::simulator::HubSpotSim,
        #[cfg(feature = "gong")]
        _gong: pandora_sync::simulator::GongSim,
        #[cfg(feature = "fireflies")]
        _fireflies: pandora_sync::simulator::FirefliesSim,
        #[cfg(feature = "salesforce")]
        _salesforce: pandora_sync::simulator::SalesforceSim,
        #[cfg(feature = "monday")]
        _monday: pandora_sync::simulator::MondaySim,
        #[cfg(feature = "google-drive")]
        _drive: pandora_sync::simulator::GDriveSim,
    }

    #[allow(unused_variables)]
    async fn connect(
        store: &Arc<dyn SyncStore>,
        workspace: Uuid,
        kind: ConnectorKind,
        auth: &str,
        credentials: serde_json::Value,
        base_url: String,
    ) -> Result<(), String> {
        let credentials = Credentials::from_json(credentials).map_err(|e| e.to_string())?;
        store
            .create_connection(
                NewConnection::new(workspace, kind, auth)
                    .with_credentials(credentials)
                    .with_config(serde_json::json!({ "base_url": base_url })),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(crate) async fn start(store: &Arc<dyn SyncStore>) -> Result<Demo, String> {
        let workspace = Uuid::new_v4();
        #[cfg(feature = "hubspot")]
        let hubspot = {
            use pandora_sync::simulator::{HubSpotSim, HubSpotSimConfig};
            let sim = HubSpotSim::start(HubSpotSimConfig {
                companies: 50,
                contacts: 200,
                deals: 40,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the HubSpot simulator: {e}"))?;
            let token = sim.config().access_token.clone();
            connect(
                store,
                workspace,
                ConnectorKind::Hubspot,
                "access_token",
                serde_json::json!({ "access_token": token }),
                sim.base_url(),
            )
            .await?;
            // Its webhooks (signed with the app secret of `--webhook-secrets`) find the
            // connection by the portal id the simulator reports.
            let portal = 1000 + sim.config().seed % 1_000_000;
            pandora_sync::api::register_webhook_account(
                store.as_ref(),
                workspace,
                ConnectorKind::Hubspot,
                &portal.to_string(),
            )
            .await
            .map_err(|e| e.to_string())?;
            sim
        };
        #[cfg(feature = "gong")]
        let gong = {
            use pandora_sync::simulator::{GongSim, GongSimConfig};
            let sim = GongSim::start(GongSimConfig {
                users: 5,
                calls: 60,
                days: 30,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the Gong simulator: {e}"))?;
            let c = sim.config();
            connect(store, workspace, ConnectorKind::Gong, "basic",
                serde_json::json!({ "access_key": c.access_key, "access_key_secret": c.access_key_secret }),
                sim.base_url()).await?;
            sim
        };
        #[cfg(feature = "fireflies")]
        let fireflies = {
            use pandora_sync::simulator::{FirefliesSim, FirefliesSimConfig};
            let sim = FirefliesSim::start(FirefliesSimConfig {
                transcripts: 40,
                days: 30,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the Fireflies simulator: {e}"))?;
            let key = sim.config().api_key.clone();
            connect(
                store,
                workspace,
                ConnectorKind::Fireflies,
                "api_key",
                serde_json::json!({ "api_key": key }),
                sim.base_url(),
            )
            .await?;
            sim
        };
        #[cfg(feature = "salesforce")]
        let salesforce = {
            use pandora_sync::simulator::{SalesforceSim, SalesforceSimConfig};
            let sim = SalesforceSim::start(SalesforceSimConfig {
                accounts: 30,
                contacts: 120,
                opportunities: 50,
                roles_per_opportunity: 2,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the Salesforce simulator: {e}"))?;
            let c = sim.config();
            connect(
                store,
                workspace,
                ConnectorKind::Salesforce,
                "oauth",
                serde_json::json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "refresh_token": c.refresh_token,
                }),
                sim.base_url(),
            )
            .await?;
            sim
        };
        #[cfg(feature = "monday")]
        let monday = {
            use pandora_sync::simulator::{MondaySim, MondaySimConfig};
            let sim = MondaySim::start(MondaySimConfig {
                boards: 3,
                first_board_items: 20,
                items_per_board: 20,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the monday.com simulator: {e}"))?;
            let token = sim.config().api_token.clone();
            connect(
                store,
                workspace,
                ConnectorKind::Monday,
                "api_token",
                serde_json::json!({ "api_token": token }),
                sim.base_url(),
            )
            .await?;
            sim
        };
        #[cfg(feature = "google-drive")]
        let drive = {
            use pandora_sync::simulator::{GDriveSim, GDriveSimConfig};
            let sim = GDriveSim::start(GDriveSimConfig {
                docs: 10,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("starting the Google Drive simulator: {e}"))?;
            let c = sim.config();
            connect(
                store,
                workspace,
                ConnectorKind::GoogleDrive,
                "oauth",
                serde_json::json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "refresh_token": c.refresh_token,
                }),
                sim.base_url(),
            )
            .await?;
            sim
        };
        let token: String = (0..32)
            .map(|_| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36usize)])
            })
            .collect();
        Ok(Demo {
            workspace,
            token: SecretString::from(format!("demo-{token}")),
            #[cfg(feature = "hubspot")]
            _hubspot: hubspot,
            #[cfg(feature = "gong")]
            _gong: gong,
            #[cfg(feature = "fireflies")]
            _fireflies: fireflies,
            #[cfg(feature = "salesforce")]
            _salesforce: salesforce,
            #[cfg(feature = "monday")]
            _monday: monday,
            #[cfg(feature = "google-drive")]
            _drive: drive,
        })
    }
}

#[cfg(not(feature = "simulator"))]
mod demo {
    //! `--demo` needs the simulators (feature `simulator`).

    use std::sync::Arc;

    use pandora_sync::SyncStore;
    use secrecy::SecretString;
    use uuid::Uuid;

    pub(crate) struct Demo {
        pub(crate) workspace: Uuid,
        pub(crate) token: SecretString,
    }

    pub(crate) async fn start(_store: &Arc<dyn SyncStore>) -> Result<Demo, String> {
        Err("this build has no simulators: rebuild with `--features full` (or `simulator`)".into())
    }
}
