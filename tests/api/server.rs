//! The `server` example as a process: `--demo` serves the API and the status page, a sync
//! triggered over HTTP completes, SIGTERM exits 0 with nothing left running; two processes
//! on one Postgres run 20 triggered syncs, each exactly once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pandora_sync::queue::JobStatus;
use pandora_sync::{Keyring, SyncStore, connect_store};
use serde_json::Value;
use uuid::Uuid;

const KEY: [u8; 32] = [42u8; 32];

fn key_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(KEY)
}

/// The `server` example, built once with this test binary's features, in its target dir.
fn server_example() -> &'static Path {
    static EXAMPLE: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let features: Vec<&str> = [
            ("sqlite", cfg!(feature = "sqlite")),
            ("postgres", cfg!(feature = "postgres")),
            ("hubspot", cfg!(feature = "hubspot")),
            ("gong", cfg!(feature = "gong")),
            ("fireflies", cfg!(feature = "fireflies")),
            ("simulator", cfg!(feature = "simulator")),
            ("http-api", true),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let exe = std::env::current_exe().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "server", "--message-format=json"])
            .args(["--no-default-features", "--features", &features.join(",")]);
        if let Some(target) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
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
        assert!(out.status.success(), "building the server example failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "server")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the server example's executable")
    })
}

struct Server {
    child: Child,
    url: String,
    workspace: Option<Uuid>,
    token: Option<String>,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Server {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(server_example())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("PANDORA_SYNC_KEY", key_b64())
            .env("RUST_LOG", "warn,pandora_sync::orchestrator=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let want = if args.contains(&"--demo") { 3 } else { 1 };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut workspace, mut token) = (None, None, None);
        for _ in 0..want {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!(
                        "{name} exited: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                })
                .unwrap();
            if let Some(u) = line.strip_prefix("listening: ") {
                url = Some(u.to_owned());
            } else if let Some(w) = line.strip_prefix("workspace: ") {
                workspace = Some(Uuid::parse_str(w).unwrap());
            } else if let Some(t) = line.strip_prefix("token: ") {
                token = Some(t.to_owned());
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        Server {
            child,
            url: url.unwrap(),
            workspace,
            token,
            log,
        }
    }

    /// SIGTERM, then the exit status within 60 s.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_job(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["status"].as_str() {
            Some("completed") => return v,
            Some("pending" | "running") => {}
            other => panic!("job ended {other:?}: {v}"),
        }
        assert!(Instant::now() < deadline, "job did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn nothing_running(store: &dyn SyncStore, ws: Uuid) {
    let jobs = store.list_jobs(ws, 100, 0).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.status != JobStatus::Running),
        "{jobs:?}"
    );
    let runs = store.active_syncs(ws).await.unwrap();
    assert!(
        runs.iter()
            .all(|r| r.status != pandora_sync::store::SyncStatus::Running),
        "{runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_api_and_status_page_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("server.db").display());
    let server = Server::start(
        dir.path(),
        "demo",
        &["--database", &db, "--demo", "--workers", "2"],
    );
    let (ws, token) = (server.workspace.unwrap(), server.token.clone().unwrap());
    let http = reqwest::Client::new();

    // The status page needs the token, and shows the demo workspace.
    let page = http.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(page.status(), 401);
    let page = http
        .get(format!("{}/?token={token}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&ws.to_string()) && html.contains("hubspot"),
        "{html}"
    );
    // The demo token sees only the demo workspace.
    let other = http
        .get(format!(
            "{}/api/workspaces/{}/connections",
            server.url,
            Uuid::new_v4()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // Trigger over HTTP, poll the job to completion, read the records.
    let resp = http
        .post(format!("{}/api/workspaces/{ws}/sync", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.unwrap();
    let job = wait_job(
        &http,
        &format!("{}{}", server.url, v["statusUrl"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(job["attempts"], 1);
    let created: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(job["createdAt"].clone()).unwrap();
    let started: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(job["startedAt"].clone()).unwrap();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "SQLite (polling, 1 s): trigger to job start {} ms",
            (started - created).num_milliseconds()
        );
    }
    let status: Value = http
        .get(format!("{}/api/workspaces/{ws}/sync/status", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connectors = status["connectors"].as_array().unwrap();
    assert!(!connectors.is_empty());
    for c in connectors {
        assert_eq!(c["status"], "synced", "{status}");
        assert!(c["records"].as_u64().unwrap() > 0, "{status}");
    }
    let html = http
        .get(format!("{}/?token={token}", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("synced"), "{html}");

    // A second sync is running when SIGTERM comes: it finishes or goes back to pending.
    let resp = http
        .post(format!("{}/api/workspaces/{ws}/sync", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"mode": "initial"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.unwrap();
    let url = format!("{}{}", server.url, v["statusUrl"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j: Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] != "pending" {
            break;
        }
        assert!(Instant::now() < deadline, "never claimed: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = server.stop();
    assert!(st.success(), "{st:?}");
    let store = connect_store(
        &format!("{db}?mode=rw"),
        Some(Keyring::new("env", KEY).unwrap()),
    )
    .await
    .unwrap();
    nothing_running(store.as_ref(), ws).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_run_each_sync_once() {
    use pandora_sync::ConnectorKind;
    use pandora_sync::Credentials;
    use pandora_sync::simulator::{HubSpotSim, HubSpotSimConfig};
    use pandora_sync::store::{NewConnection, SyncStatus};

    // A database of its own: these workers claim every job they find.
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("api_server_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");

    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 30,
        deals: 5,
        // One portal behind 20 workspaces: lift its limits, or 429s dominate the timings.
        rest_max: 100_000,
        search_max: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let store = connect_store(&url, Some(Keyring::new("env", KEY).unwrap()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let workspaces: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for ws in &workspaces {
        store
            .create_connection(
                NewConnection::new(*ws, ConnectorKind::Hubspot, "access_token")
                    .with_credentials(
                        Credentials::from_json(
                            serde_json::json!({"access_token": sim.config().access_token}),
                        )
                        .unwrap(),
                    )
                    .with_config(serde_json::json!({"base_url": sim.base_url()})),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = r#"{"admin-token": "*"}"#;
    let secrets = r#"{"hubspot": "hs-app-secret"}"#;
    pandora_sync::api::register_webhook_account(
        store.as_ref(),
        workspaces[7],
        ConnectorKind::Hubspot,
        "4711",
    )
    .await
    .unwrap();
    let args = [
        "--database",
        &url,
        "--tokens",
        tokens,
        "--workers",
        "2",
        "--webhook-secrets",
        secrets,
    ];
    let a = Server::start(dir.path(), "a", &args);
    let b = Server::start(dir.path(), "b", &args);
    let http = reqwest::Client::new();
    let mut status_urls = Vec::new();
    for (i, ws) in workspaces.iter().enumerate() {
        let server = if i % 2 == 0 { &a } else { &b };
        let resp = http
            .post(format!("{}/api/workspaces/{ws}/sync", server.url))
            .bearer_auth("admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        // Either process answers for any job: they share the database.
        let other = if i % 2 == 0 { &b } else { &a };
        status_urls.push(format!("{}{}", other.url, v["statusUrl"].as_str().unwrap()));
    }
    let mut latencies = Vec::new();
    for u in &status_urls {
        let job = wait_job(&http, u, "admin-token").await;
        assert_eq!(job["attempts"], 1, "{job}");
        let created: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(job["createdAt"].clone()).unwrap();
        let started: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(job["startedAt"].clone()).unwrap();
        latencies.push((started - created).num_milliseconds());
    }
    for ws in &workspaces {
        let runs = store.sync_history(*ws, None, 100).await.unwrap();
        assert_eq!(runs.len(), 1, "exactly one run: {runs:?}");
        assert_eq!(runs[0].status, SyncStatus::Completed);
        let jobs = store.list_jobs(*ws, 100, 0).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].status, jobs[0].attempts),
            (JobStatus::Completed, 1)
        );
    }
    latencies.sort_unstable();
    // On idle workers: trigger to job start is the NOTIFY wake-up plus one claim.
    let mut idle = Vec::new();
    for ws in workspaces.iter().take(5) {
        let resp = http
            .post(format!("{}/api/workspaces/{ws}/sync", a.url))
            .bearer_auth("admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        let job = wait_job(
            &http,
            &format!("{}{}", a.url, v["statusUrl"].as_str().unwrap()),
            "admin-token",
        )
        .await;
        let created: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(job["createdAt"].clone()).unwrap();
        let started: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(job["startedAt"].clone()).unwrap();
        idle.push((started - created).num_milliseconds());
    }
    idle.sort_unstable();

    // A signed HubSpot event for workspace 7 starts a sync there (after the 2 s debounce).
    let hook_url = format!("{}/webhooks/hubspot", b.url);
    let body = serde_json::json!([{"portalId": 4711, "objectId": 1, "subscriptionType": "contact.propertyChange"}]).to_string();
    let sent = chrono::Utc::now();
    let ts = sent.timestamp_millis().to_string();
    let sig = pandora_sync::api::hubspot_signature(
        &secrecy::SecretString::from("hs-app-secret".to_owned()),
        "POST",
        &hook_url,
        body.as_bytes(),
        &ts,
    );
    let resp = http
        .post(&hook_url)
        .header("x-hubspot-signature-v3", sig)
        .header("x-hubspot-request-timestamp", ts)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let hook_job = loop {
        let jobs = store.list_jobs(workspaces[7], 100, 0).await.unwrap();
        if let Some(j) = jobs
            .iter()
            .find(|j| j.created_at >= sent && j.started_at.is_some())
        {
            break j.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the webhook started no sync: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let hook_ms = (hook_job.started_at.unwrap() - sent).num_milliseconds();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .get_job(workspaces[7], hook_job.id)
        .await
        .unwrap()
        .unwrap()
        .status
        != JobStatus::Completed
    {
        assert!(
            Instant::now() < deadline,
            "the webhook's sync did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "Postgres: 20 syncs on 2 processes (4 slots): trigger to start median {} ms, max {} ms (queueing included); \
             idle workers (NOTIFY): {idle:?} ms; webhook to sync start {hook_ms} ms (2 s debounce)",
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }
    // Both processes ran some of them (the queue shared the work).
    let ran = |srv: &Server| {
        std::fs::read_to_string(&srv.log)
            .unwrap()
            .matches("connector sync finished")
            .count()
    };
    let (ran_a, ran_b) = (ran(&a), ran(&b));
    assert_eq!(ran_a + ran_b, 26, "20 triggers, 5 idle ones, 1 webhook");
    assert!(ran_a > 0 && ran_b > 0, "a ran {ran_a}, b ran {ran_b}");
    assert!(a.stop().success());
    assert!(b.stop().success());
    for ws in &workspaces {
        nothing_running(store.as_ref(), *ws).await;
    }
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
