//! End-to-end HubSpot initial sync benchmark against the simulator, rate limits off
//! (standalone: `harness = false`, prints its figures).
//!
//! ```text
//! cargo bench --bench e2e --features simulator,hubspot,sqlite,postgres
//! ```
//!
//! 1. Records per second of an initial sync of 100,000 HubSpot records (10,000 companies,
//!    60,000 contacts, 30,000 deals, with their associations) through the orchestrator into
//!    SQLite (a file) and into PostgreSQL (a scratch schema), against the fetch ceiling: the
//!    same connector fetching and transforming the same pages into a sink that drops them.
//!    PostgreSQL is measured twice in the same run, side by side: over TCP, how production
//!    hosts connect (the headline figure; `E2E_PG_TCP_URL`, default
//!    `postgres://postgres@127.0.0.1:5432/test`), and over the server's Unix socket
//!    (`E2E_PG_SOCKET_URL`, default `postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test`; set
//!    it empty to skip).
//! 2. Peak resident memory (`VmHWM` of a child process running only that sync) of a
//!    1,000,000-record sync against a 100,000-record one, into SQLite. Records stream in
//!    pages, so the two should be close.
//!
//! 3. With `E2E_TAP_PYTHON` set to a Python that has singer-io's `tap-hubspot` 4.5.0
//!    (`benches/tap-hubspot.sh` installs it in a virtualenv and runs this part): an initial
//!    sync of 100,000 contacts into SQLite against the tap reading the same simulator
//!    (its `contacts` stream, every property selected, its Singer output read and counted),
//!    and against a bare keep-alive client fetching the same pages and decoding nothing but
//!    the cursor.
//!
//! Part 1 also times that bare client on the 100,000-record portal: the rate a sync could
//! reach if storing and transforming cost nothing.
//!
//! `E2E_ONLY=sqlite` or `E2E_ONLY=postgres` runs that backend alone (after the ceiling);
//! `E2E_ONLY=contacts` runs part 3 alone (the tap only when `E2E_TAP_PYTHON` is set);
//! `E2E_SKIP_MEMORY=1` skips part 2 (the 1,000,000-record sync takes a few minutes).

// A measurement program: it prints its figures, converts counts to rates, and stops on any
// setup failure.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

#[cfg(all(
    feature = "simulator",
    feature = "hubspot",
    feature = "sqlite",
    feature = "postgres"
))]
mod common;

#[cfg(all(
    feature = "simulator",
    feature = "hubspot",
    feature = "sqlite",
    feature = "postgres"
))]
mod bench {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use pandora_sync::connector::WriteCounts;
    use pandora_sync::connectors::hubspot::{HubSpotConfig, HubSpotConnector, HubSpotCredentials};
    use pandora_sync::simulator::{HubSpotSim, HubSpotSimConfig};
    use pandora_sync::store::NewConnection;
    use pandora_sync::{
        Checkpoint, ConnectorKind, ConnectorRegistry, Credentials, Keyring, Orchestrator,
        RecordBatch, RecordSink, SqliteStore, Store, SyncCapable, SyncContext, SyncMode,
        SyncOptions, SyncStore,
    };

    use crate::common;
    use uuid::Uuid;

    /// The connector's own budget, far above what the loopback simulator can serve.
    fn unthrottled() -> serde_json::Value {
        serde_json::json!({"rate_limit": {"max_requests": 1_000_000, "window_ms": 1000}})
    }

    /// A portal of `total` objects: a tenth companies, six tenths contacts, three tenths
    /// deals; with `E2E_CHILD_CONTACTS` set, contacts only (the contacts comparison's portal,
    /// for a child run under a profiler).
    async fn portal(total: u64) -> HubSpotSim {
        let contacts_only = std::env::var_os("E2E_CHILD_CONTACTS").is_some();
        let share = |tenths: u64| {
            if contacts_only {
                0
            } else {
                total * tenths / 10
            }
        };
        HubSpotSim::start(HubSpotSimConfig {
            companies: share(1),
            contacts: if contacts_only { total } else { share(6) },
            deals: share(3),
            rate_limits: false,
            ..Default::default()
        })
        .await
        .expect("simulator")
    }

    /// Syncs the portal into `store` through the orchestrator; returns (records, elapsed).
    async fn sync_into(store: Arc<dyn SyncStore>, sim: &HubSpotSim) -> (u64, Duration) {
        store.migrate().await.expect("migrate");
        let ws = Uuid::new_v4();
        store
            .create_connection(
                NewConnection::new(ws, ConnectorKind::Hubspot, "private_app")
                    .with_credentials(
                        Credentials::from_json(
                            serde_json::json!({"access_token": sim.config().access_token}),
                        )
                        .expect("credentials"),
                    )
                    .with_config(unthrottled()),
            )
            .await
            .expect("connection");
        let registry =
            ConnectorRegistry::builtin(&BTreeMap::from([(ConnectorKind::Hubspot, sim.base_url())]));
        let orchestrator = Orchestrator::new(store, registry);
        let started = Instant::now();
        let result = orchestrator
            .sync_workspace(ws, SyncOptions::default())
            .await
            .expect("sync");
        let elapsed = started.elapsed();
        let c = &result.connectors[0];
        assert!(c.error.is_none(), "sync failed: {:?}", c.error);
        let hooks: Vec<String> = result
            .hooks
            .iter()
            .map(|h| format!("{} {} ms", h.name, h.duration_ms))
            .collect();
        println!(
            "  ({} requests; post-sync hooks, included: {})",
            c.requests,
            hooks.join(", ")
        );
        let records = c.records_by_table.values().sum();
        (records, elapsed)
    }

    /// Counts what it is given and keeps nothing.
    #[derive(Default)]
    struct Discard {
        records: u64,
    }

    #[async_trait]
    impl RecordSink for Discard {
        async fn write(
            &mut self,
            batch: RecordBatch,
            _checkpoint: &Checkpoint,
        ) -> pandora_sync::Result<WriteCounts> {
            self.records += batch.records.len() as u64;
            Ok(WriteCounts::default())
        }
    }

    async fn fetch_ceiling(sim: &HubSpotSim) -> (u64, Duration) {
        let connector = HubSpotConnector::new(
            &sim.base_url(),
            HubSpotCredentials::AccessToken(sim.config().access_token.clone().into()),
            HubSpotConfig::from_json(&unthrottled()).expect("config"),
        )
        .expect("connector");
        let mut sink = Discard::default();
        let started = Instant::now();
        connector
            .initial_sync(
                &SyncContext::new(Uuid::new_v4(), SyncMode::Initial),
                &mut sink,
            )
            .await
            .expect("fetch");
        (sink.records, started.elapsed())
    }

    /// A bare keep-alive client reading every list page the connector reads (same
    /// properties, same inline associations), decoding only the result count and the
    /// cursor: (objects, elapsed).
    async fn bare_fetch(sim: &HubSpotSim, objects: &[(&str, &str)]) -> (u64, Duration) {
        #[derive(serde::Deserialize)]
        struct Names {
            results: Vec<Name>,
        }
        #[derive(serde::Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Page {
            results: Vec<serde::de::IgnoredAny>,
            paging: Option<Paging>,
        }
        #[derive(serde::Deserialize)]
        struct Paging {
            next: Option<Next>,
        }
        #[derive(serde::Deserialize)]
        struct Next {
            after: String,
        }
        let client = reqwest::Client::new();
        let base = sim.base_url();
        let token = sim.config().access_token.clone();
        let get = |url: String| client.get(url).bearer_auth(&token).send();
        let mut urls = Vec::new();
        for (object, associations) in objects {
            let names: Names = get(format!("{base}/crm/v3/properties/{object}"))
                .await
                .expect("properties")
                .json()
                .await
                .expect("properties json");
            let props: Vec<String> = names.results.into_iter().map(|n| n.name).collect();
            let mut url = format!(
                "{base}/crm/v3/objects/{object}?limit=100&archived=false&properties={}",
                props.join("%2C")
            );
            if !associations.is_empty() {
                url.push_str("&associations=");
                url.push_str(&associations.replace(',', "%2C"));
            }
            urls.push(url);
        }
        let started = Instant::now();
        let mut objects_read = 0;
        for url in urls {
            let mut after: Option<String> = None;
            loop {
                let page_url = match &after {
                    Some(a) => format!("{url}&after={a}"),
                    None => url.clone(),
                };
                let body = get(page_url)
                    .await
                    .expect("page")
                    .error_for_status()
                    .expect("page status")
                    .bytes()
                    .await
                    .expect("page body");
                let page: Page = serde_json::from_slice(&body).expect("page json");
                objects_read += page.results.len() as u64;
                after = page.paging.and_then(|p| p.next).map(|n| n.after);
                if after.is_none() {
                    break;
                }
            }
        }
        (objects_read, started.elapsed())
    }

    /// Runs `benches/run_tap_hubspot.py` with `python` against the simulator; returns (Singer
    /// RECORD messages, elapsed).
    fn tap_hubspot(python: &str, sim: &HubSpotSim) -> (u64, Duration) {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/run_tap_hubspot.py");
        let log = std::env::temp_dir().join("pandora-e2e-tap-hubspot.log");
        let started = Instant::now();
        let mut child = std::process::Command::new(python)
            .arg(script)
            .env("TAP_BASE_URL", sim.base_url())
            .env("TAP_TOKEN", &sim.config().access_token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("tap log"))
            .spawn()
            .expect("start tap-hubspot");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let records = out
            .lines()
            .map_while(std::result::Result::ok)
            .filter(|l| l.starts_with("{\"type\": \"RECORD\""))
            .count() as u64;
        let status = child.wait().expect("tap-hubspot");
        assert!(
            status.success(),
            "tap-hubspot failed: {status}; its log: {}",
            log.display()
        );
        (records, started.elapsed())
    }

    /// The list pages the connector reads on an initial sync of a whole portal.
    const PORTAL_PAGES: [(&str, &str); 3] = [
        ("companies", ""),
        ("contacts", "companies"),
        ("deals", "companies,contacts"),
    ];

    fn keyring() -> Keyring {
        Keyring::new("bench", [7u8; 32]).expect("keyring")
    }

    async fn sqlite_store(path: &std::path::Path) -> SqliteStore {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        SqliteStore::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("sqlite")
            .with_keyring(keyring())
    }

    /// CPU time of this process so far (user + system, all threads), from /proc.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces) closing parenthesis.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of stat(5), at 100 ticks per second.
        (ticks(11) + ticks(12)) / 100.0
    }

    fn per_s(records: u64, d: Duration) -> f64 {
        records as f64 / d.as_secs_f64()
    }

    /// `n records in t s = r records/s (p % of the ceiling)`.
    fn describe((n, t): (u64, Duration), ceiling: f64) -> String {
        let rate = per_s(n, t);
        format!(
            "{n} records in {:.1} s = {rate:.0} records/s ({:.0} % of the ceiling)",
            t.as_secs_f64(),
            100.0 * rate / ceiling
        )
    }

    /// One sync into a scratch schema of the PostgreSQL server at `url`.
    async fn postgres_run(sim: &HubSpotSim, url: &str) -> (u64, Duration) {
        let schema = format!("e2e_{}", Uuid::new_v4().simple());
        common::admin_at(url, format!("CREATE SCHEMA {schema}")).await;
        let store = Arc::new(
            common::store_at(url, &schema, 8)
                .await
                .with_keyring(keyring()),
        );
        let run = sync_into(store.clone(), sim).await;
        store.close().await;
        common::admin_at(url, format!("DROP SCHEMA {schema} CASCADE")).await;
        run
    }

    /// Child mode: one sync of `total` records into SQLite, then print the peak RSS in KiB.
    fn child(total: u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (records, elapsed) = rt.block_on(async {
            let sim = portal(total).await;
            if std::env::var_os("E2E_CHILD_BARE").is_some() {
                // The simulator serving the bare client alone.
                return bare_fetch(&sim, &PORTAL_PAGES).await;
            }
            if std::env::var_os("E2E_CHILD_DISCARD").is_some() {
                // The same reads into a sink that keeps nothing: what the simulator and the
                // connector take without the store.
                return fetch_ceiling(&sim).await;
            }
            let path = std::env::temp_dir().join(format!("pandora-e2e-mem-{total}.db"));
            let store = Arc::new(sqlite_store(&path).await);
            let out = sync_into(store.clone(), &sim).await;
            store.close().await;
            let _ = std::fs::remove_file(&path);
            out
        });
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM");
        if std::env::var_os("E2E_CHILD_RSS").is_some() {
            // Resident now, after the sync, beside the peak: retained memory or a peak.
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_owned());
            eprintln!("VmRSS after the sync: {rss:?}");
        }
        println!("{total} {records} {} {hwm}", elapsed.as_millis());
    }

    fn peak_rss(total: u64) -> (u64, u64, u64) {
        let exe = std::env::current_exe().expect("current exe");
        let out = std::process::Command::new(exe)
            .env("E2E_CHILD", total.to_string())
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().expect("child output");
        let f: Vec<u64> = line
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        (f[1], f[2], f[3])
    }

    /// Part 3: 100,000 contacts into SQLite, against the bare client and (with a `python`)
    /// tap-hubspot. Ours and the bare client run `E2E_CONTACT_RUNS` times each (default 3),
    /// interleaved, and the medians are compared: one run on a shared 2-core machine swings
    /// by ±20 %.
    async fn tap_comparison(python: Option<&str>) {
        let sim = HubSpotSim::start(HubSpotSimConfig {
            companies: 0,
            contacts: 100_000,
            deals: 0,
            rate_limits: false,
            ..Default::default()
        })
        .await
        .expect("simulator");
        let runs: usize = std::env::var("E2E_CONTACT_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .max(1);
        let contacts = sim.truth_count(pandora_sync::simulator::HubSpotObject::Contacts, false);
        let (mut bare_times, mut our_times) = (Vec::new(), Vec::new());
        let mut bare_objects = 0;
        for run in 0..runs {
            let cpu0 = cpu_seconds();
            let (objects, bare_time) = bare_fetch(&sim, &[("contacts", "companies")]).await;
            let cpu1 = cpu_seconds();
            bare_objects = objects;
            let path = std::env::temp_dir().join("pandora-e2e-contacts.db");
            let store = Arc::new(sqlite_store(&path).await);
            let cpu2 = cpu_seconds();
            let (_, ours) = sync_into(store.clone(), &sim).await;
            let cpu3 = cpu_seconds();
            store.close().await;
            let _ = std::fs::remove_file(&path);
            println!(
                "  run {}: pandora_sync {:.2} s (CPU {:.2} s, simulator included), \
                 bare fetch {:.2} s (CPU {:.2} s)",
                run + 1,
                ours.as_secs_f64(),
                cpu3 - cpu2,
                bare_time.as_secs_f64(),
                cpu1 - cpu0
            );
            bare_times.push(bare_time);
            our_times.push(ours);
        }
        // Where the CPU goes: the same connector into a sink that drops every page.
        let cpu0 = cpu_seconds();
        let (fetched, fetch_time) = fetch_ceiling(&sim).await;
        println!(
            "  connector into a discarding sink: {fetched} records in {:.2} s (CPU {:.2} s, \
             simulator included)",
            fetch_time.as_secs_f64(),
            cpu_seconds() - cpu0
        );
        bare_times.sort();
        our_times.sort();
        let (bare_time, ours) = (bare_times[runs / 2], our_times[runs / 2]);
        let rate = |n: u64, t: Duration| per_s(n, t);
        println!(
            "100,000 contacts (median of {runs}): pandora_sync into SQLite {:.2} s = {:.0} contacts/s; \
             bare fetch {:.2} s = {:.0}/s ({:.0} % of it)",
            ours.as_secs_f64(),
            rate(contacts, ours),
            bare_time.as_secs_f64(),
            rate(bare_objects, bare_time),
            100.0 * bare_time.as_secs_f64() / ours.as_secs_f64(),
        );
        if let Some(python) = python {
            let (tap_records, tap_time) = tap_hubspot(python, &sim);
            assert_eq!(tap_records, contacts, "tap-hubspot read every contact");
            println!(
                "tap-hubspot 4.5.0 (to stdout) {:.1} s = {:.0}/s: pandora_sync is {:.1}x faster",
                tap_time.as_secs_f64(),
                rate(tap_records, tap_time),
                tap_time.as_secs_f64() / ours.as_secs_f64()
            );
        }
        sim.shutdown().await;
    }

    pub fn main() {
        if let Some(total) = std::env::var("E2E_CHILD")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            child(total);
            return;
        }
        if let Ok(filter) = std::env::var("E2E_TRACE") {
            // A timeline of the run on stderr, e.g. `E2E_TRACE=pandora_sync=debug`.
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .init();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let only = std::env::var("E2E_ONLY").ok();
        let python = std::env::var("E2E_TAP_PYTHON").ok();
        if only.as_deref() == Some("contacts") {
            rt.block_on(tap_comparison(python.as_deref()));
            return;
        }
        rt.block_on(async {
            let sim = portal(100_000).await;

            let (fetched, fetch_time) = fetch_ceiling(&sim).await;
            let ceiling = per_s(fetched, fetch_time);
            println!(
                "fetch ceiling: {fetched} records in {:.1} s = {ceiling:.0} records/s",
                fetch_time.as_secs_f64()
            );

            let (bare_objects, bare_time) = bare_fetch(&sim, &PORTAL_PAGES).await;
            println!(
                "bare fetch:    {bare_objects} objects in {:.1} s = {:.0} objects/s",
                bare_time.as_secs_f64(),
                per_s(bare_objects, bare_time)
            );
            let of_bare = |t: Duration| {
                format!(
                    "{:.0} % of the bare fetch rate",
                    100.0 * bare_time.as_secs_f64() / t.as_secs_f64()
                )
            };

            let wanted = |b: &str| only.as_deref().is_none_or(|o| o == b);
            let mut sqlite = None;
            if wanted("sqlite") {
                let path = std::env::temp_dir().join("pandora-e2e-bench.db");
                let store = Arc::new(sqlite_store(&path).await);
                let run = sync_into(store.clone(), &sim).await;
                store.close().await;
                let _ = std::fs::remove_file(&path);
                println!(
                    "sqlite:        {}; {}",
                    describe(run, ceiling),
                    of_bare(run.1)
                );
                sqlite = Some(run);
            }
            if wanted("postgres") {
                let tcp_url = std::env::var("E2E_PG_TCP_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
                let socket_url = std::env::var("E2E_PG_SOCKET_URL").unwrap_or_else(|_| {
                    "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test".to_owned()
                });
                let tcp = postgres_run(&sim, &tcp_url).await;
                println!(
                    "postgres TCP:  {}; {}",
                    describe(tcp, ceiling),
                    of_bare(tcp.1)
                );
                if !socket_url.is_empty() {
                    let socket = postgres_run(&sim, &socket_url).await;
                    println!(
                        "postgres Unix: {}; {}",
                        describe(socket, ceiling),
                        of_bare(socket.1)
                    );
                    println!(
                        "postgres TCP / Unix socket: {:.2} (time {:.1} s vs {:.1} s)",
                        per_s(tcp.0, tcp.1) / per_s(socket.0, socket.1),
                        tcp.1.as_secs_f64(),
                        socket.1.as_secs_f64()
                    );
                }
                if let Some(sqlite) = sqlite {
                    println!(
                        "postgres TCP / sqlite: {:.2}",
                        per_s(tcp.0, tcp.1) / per_s(sqlite.0, sqlite.1)
                    );
                }
            }
            sim.shutdown().await;

            if let Some(python) = &python {
                tap_comparison(Some(python)).await;
            }
        });

        if std::env::var_os("E2E_SKIP_MEMORY").is_some() {
            return;
        }
        let (n_small, ms_small, small) = peak_rss(100_000);
        let (n_big, ms_big, big) = peak_rss(1_000_000);
        println!(
            "peak RSS, sync into SQLite: {n_small} records {:.1} MiB ({ms_small} ms), \
             {n_big} records {:.1} MiB ({ms_big} ms): ratio {:.2}",
            small as f64 / 1024.0,
            big as f64 / 1024.0,
            big as f64 / small as f64
        );
    }
}

#[cfg(all(
    feature = "simulator",
    feature = "hubspot",
    feature = "sqlite",
    feature = "postgres"
))]
fn main() {
    bench::main();
}

#[cfg(not(all(
    feature = "simulator",
    feature = "hubspot",
    feature = "sqlite",
    feature = "postgres"
)))]
fn main() {
    eprintln!(
        "the e2e bench needs features simulator,hubspot,sqlite,postgres: \
         cargo bench --bench e2e --features simulator,hubspot,sqlite,postgres"
    );
}
