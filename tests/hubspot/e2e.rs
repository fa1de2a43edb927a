//! End to end: HubSpot simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use pandora_sync::simulator::{FaultConfig, HubSpotObject, HubSpotSim, HubSpotSimConfig};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Keyring, NewConnection, Orchestrator, Record,
    RecordKind, RecordQuery, Store, SyncMode, SyncOptions, SyncStatus, SyncStore,
};
use uuid::Uuid;

pub struct Env {
    pub store: Arc<dyn SyncStore>,
    pub database_url: String,
}

fn keyring() -> Keyring {
    Keyring::new("e2e", [9u8; 32]).unwrap()
}

#[cfg(feature = "sqlite")]
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    use pandora_sync::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e2e.db").display());
    let store = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_keyring(keyring());
    store.migrate().await.unwrap();
    test(Env {
        store: Arc::new(store),
        database_url: url,
    })
    .await;
    drop(dir);
}

#[cfg(feature = "postgres")]
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    use std::str::FromStr;

    use pandora_sync::PgStore;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{AssertSqlSafe, Connection, PgConnection};

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); these tests need it (they never skip)")
    });
    let schema = format!("e_{}", Uuid::new_v4().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let store = PgStore::from_pool(pool).with_keyring(keyring());
    store.migrate().await.unwrap();
    // The example connects by URL: point it at the same schema.
    let sep = if url.contains('?') { '&' } else { '?' };
    let database_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    test(Env {
        store: Arc::new(store.clone()),
        database_url,
    })
    .await;
    store.close().await;
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await;
}

fn fast_config() -> serde_json::Value {
    serde_json::json!({
        "rate_limit": {"max_requests": 100000, "window_ms": 1000},
        "search_rate_limit": {"max_requests": 100000, "window_ms": 1000},
    })
}

async fn setup(env: &Env, sim: &HubSpotSim, config: serde_json::Value) -> (Uuid, Orchestrator) {
    let ws = Uuid::new_v4();
    let creds =
        Credentials::from_json(serde_json::json!({"access_token": sim.config().access_token}))
            .unwrap();
    env.store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Hubspot, "private_app")
                .with_credentials(creds)
                .with_config(config),
        )
        .await
        .unwrap();
    let registry =
        ConnectorRegistry::builtin(&BTreeMap::from([(ConnectorKind::Hubspot, sim.base_url())]));
    (ws, Orchestrator::new(env.store.clone(), registry))
}

async fn all(store: &Arc<dyn SyncStore>, ws: Uuid, kind: RecordKind) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_records(
                ws,
                kind,
                &RecordQuery {
                    after,
                    limit: 1000,
                    include_archived: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let done = page.len() < 1000 || kind == RecordKind::DealContact;
        after = page.last().and_then(|r| r.meta().map(|m| m.id));
        out.extend(page);
        if done {
            return out;
        }
    }
}

fn by_id(records: Vec<Record>) -> BTreeMap<String, Record> {
    records.into_iter().map(|r| (r.source_id(), r)).collect()
}

/// Every live and archived record of the simulator is stored exactly as the truth says.
async fn assert_equals_truth(store: &Arc<dyn SyncStore>, ws: Uuid, sim: &HubSpotSim) {
    for (obj, kind) in [
        (HubSpotObject::Companies, RecordKind::Account),
        (HubSpotObject::Contacts, RecordKind::Contact),
        (HubSpotObject::Deals, RecordKind::Deal),
    ] {
        let stored = by_id(all(store, ws, kind).await);
        assert_eq!(
            stored.len() as u64,
            sim.max_id(obj),
            "{kind:?}: one row per record, no duplicates"
        );
        for truth in sim.records(obj) {
            let row = stored
                .get(&truth.id.to_string())
                .unwrap_or_else(|| panic!("{kind:?} {} missing", truth.id));
            let meta = row.meta().unwrap();
            assert_eq!(
                meta.source_updated_at,
                Some(truth.updated_at),
                "{kind:?} {}",
                truth.id
            );
            assert_eq!(
                meta.archived_at.is_some(),
                truth.archived_at.is_some(),
                "{kind:?} {} archived",
                truth.id
            );
            let p = |k: &str| {
                truth
                    .properties
                    .get(k)
                    .cloned()
                    .flatten()
                    .filter(|v| !v.is_empty())
            };
            match row {
                Record::Account(a) => {
                    assert_eq!(a.name, p("name"));
                    assert_eq!(a.domain, p("domain"));
                    assert_eq!(a.industry, p("industry"));
                    assert_eq!(
                        a.employee_count,
                        p("numberofemployees").map(|v| v.parse().unwrap())
                    );
                    assert_eq!(
                        a.annual_revenue,
                        p("annualrevenue").map(|v| v.parse().unwrap())
                    );
                    assert_eq!(a.owner_id, p("hubspot_owner_id"));
                }
                Record::Contact(c) => {
                    assert_eq!(c.email, p("email"));
                    assert_eq!(c.first_name, p("firstname"));
                    assert_eq!(c.last_name, p("lastname"));
                    assert_eq!(c.title, p("jobtitle"));
                    assert_eq!(c.phone, p("phone"));
                    assert_eq!(c.lifecycle_stage, p("lifecyclestage"));
                    if truth.archived_at.is_none() {
                        assert_eq!(c.account_source_id, truth.company_id.map(|c| c.to_string()));
                    }
                }
                Record::Deal(d) => {
                    assert_eq!(d.name, p("dealname"));
                    assert_eq!(d.amount, p("amount").map(|v| v.parse().unwrap()));
                    assert_eq!(d.currency, p("deal_currency_code"));
                    assert_eq!(d.stage, p("dealstage"));
                    assert_eq!(d.pipeline, p("pipeline"));
                    assert_eq!(
                        d.probability,
                        p("hs_deal_stage_probability").map(|v| v.parse().unwrap())
                    );
                    assert_eq!(d.is_closed, p("hs_is_closed").map(|v| v == "true"));
                    assert_eq!(d.is_won, p("hs_is_closed_won").map(|v| v == "true"));
                    assert_eq!(d.forecast_category, p("hs_manual_forecast_category"));
                    assert_eq!(
                        d.close_date.map(|d| d.to_string()),
                        p("closedate").map(|v| v[..10].to_owned())
                    );
                    if truth.archived_at.is_none() {
                        assert_eq!(d.account_source_id, truth.company_id.map(|c| c.to_string()));
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    let truth_links: Vec<String> = sim
        .records(HubSpotObject::Deals)
        .flat_map(|d| {
            d.contact_ids
                .iter()
                .map(move |c| format!("{}:{c}", d.id))
                .collect::<Vec<_>>()
        })
        .collect();
    let stored_links = store
        .count_records(ws, RecordKind::DealContact, Some(ConnectorKind::Hubspot))
        .await
        .unwrap();
    assert_eq!(
        stored_links,
        truth_links.len() as u64,
        "every association stored once"
    );
    for link in truth_links.iter().step_by(7) {
        assert!(
            store
                .get_record(ws, RecordKind::DealContact, ConnectorKind::Hubspot, link)
                .await
                .unwrap()
                .is_some(),
            "link {link} missing"
        );
    }
}

pub async fn initial_sync_of_a_seeded_portal(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5_000,
        contacts: 20_000,
        deals: 10_000,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Initial, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    // Records of the primary tables; deal-contact links are counted apart.
    assert_eq!(c.counts.inserted, 35_000);
    assert!(c.records_by_table["deal_contacts"] > 0);
    assert_equals_truth(&env.store, ws, &sim).await;

    // Modify 50, archive 10: the incremental run writes exactly those.
    for id in 1..=20 {
        sim.modify(
            HubSpotObject::Contacts,
            id * 97,
            [("jobtitle", "Head of Rust")],
        );
    }
    for id in 1..=15 {
        sim.modify(
            HubSpotObject::Deals,
            id * 31,
            [("dealstage", "closedwon"), ("hs_is_closed", "true")],
        );
    }
    for id in 1..=15 {
        sim.modify(HubSpotObject::Companies, id * 13, [("industry", "RETAIL")]);
    }
    for id in 1..=10 {
        sim.archive(HubSpotObject::Contacts, 5_000 + id);
    }
    sim.counters().reset();
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.mode, SyncMode::Incremental);
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(
        c.counts.inserted + c.counts.updated,
        60,
        "exactly the changes: {:?}",
        c.counts
    );
    assert_equals_truth(&env.store, ws, &sim).await;
    // Only the requests pagination needs: one search page per object, one archived list
    // page per object, two association reads for the changed deals.
    let counts = sim.counters().snapshot();
    assert_eq!(
        counts.get("POST /crm/v3/objects/{object_type}/search"),
        Some(&3),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("GET /crm/v3/objects/{object_type}"),
        Some(&3),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("POST /crm/v4/associations/{from}/{to}/batch/read"),
        Some(&2),
        "{counts:?}"
    );
}

pub async fn identical_timestamps_past_the_search_cap(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 12_500,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 59).unwrap();
    sim.stamp(HubSpotObject::Contacts, 1..=12_000, at);
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(c.counts.updated, 12_000);
    assert_equals_truth(&env.store, ws, &sim).await;
}

pub async fn faults_lose_nothing(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 300,
        contacts: 1_500,
        deals: 600,
        rate_limits: true,
        rest_max: 100_000,
        rest_window: Duration::from_millis(100),
        search_max: 100_000,
        search_window: Duration::from_millis(100),
        faults: FaultConfig {
            server_error_rate: 0.1,
            rate_limit_rate: 0.1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    // A run can still lose against four faults in a row; like the job queue, run again: it
    // resumes from its checkpoint.
    for _ in 0..5 {
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        if r.connectors[0].status == SyncStatus::Completed {
            break;
        }
    }
    for id in [3, 700, 1_400] {
        sim.modify(HubSpotObject::Contacts, id, [("jobtitle", "CFO")]);
    }
    for _ in 0..5 {
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        if r.connectors[0].status == SyncStatus::Completed {
            break;
        }
    }
    assert!(sim.counters().total() > 0);
    assert_equals_truth(&env.store, ws, &sim).await;
}

pub async fn killed_between_pages_resumes(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 200,
        contacts: 3_000,
        deals: 500,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let progress = pandora_sync::ProgressReporter::new();
    let mut rx = progress.subscribe();
    let task = {
        let o = o.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            o.sync_workspace(
                ws,
                SyncOptions {
                    progress: Some(progress),
                    ..Default::default()
                },
            )
            .await
        })
    };
    while rx.changed().await.is_ok() {
        if rx.borrow_and_update().current >= 1_000 {
            break;
        }
    }
    task.abort(); // the process dies between (or inside) pages
    assert!(task.await.unwrap_err().is_cancelled());
    let stored = all(&env.store, ws, RecordKind::Contact).await.len();
    assert!(
        stored < 3_000,
        "the sync was interrupted ({stored} contacts)"
    );
    // The dead run's lock is gone (released on drop / lease); the next run resumes.
    let mut result = None;
    for _ in 0..300 {
        match o.sync_workspace(ws, SyncOptions::default()).await {
            Ok(r) => {
                result = Some(r);
                break;
            }
            Err(pandora_sync::Error::Conflict { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let r = result.expect("the lock was released");
    assert_eq!(
        r.connectors[0].mode,
        SyncMode::Incremental,
        "resumed from the checkpoint"
    );
    assert_eq!(
        r.connectors[0].status,
        SyncStatus::Completed,
        "{:?}",
        r.connectors[0].error
    );
    assert_equals_truth(&env.store, ws, &sim).await;
}

pub async fn sync_example_reports_what_the_database_holds(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 30,
        contacts: 120,
        deals: 60,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    // `cargo test` builds the examples (as `sync`, or `sync-<hash>` beside it).
    let example = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("no examples folder at {}: {e}", examples.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name == "sync" || (name.starts_with("sync-") && !name.contains('.'))) && p.is_file()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "cargo test builds the sync example into {}",
                examples.display()
            )
        });
    let ws = Uuid::new_v4();
    let creds = serde_json::json!({"access_token": sim.config().access_token}).to_string();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(&example);
        cmd.args([
            "--database",
            &env.database_url,
            "--workspace",
            &ws.to_string(),
            "--connector",
            "hubspot",
        ])
        .args(["--base-url", &sim.base_url(), "--credentials", &creds])
        .args(["--config", &fast_config().to_string()])
        .args(extra);
        cmd
    };
    let out = tokio::task::spawn_blocking({
        let mut cmd = run(&["--json"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["mode"], "initial");
    assert!(summary["requests"].as_u64().unwrap() > 0);
    for (table, kind) in [
        ("accounts", RecordKind::Account),
        ("contacts", RecordKind::Contact),
        ("deals", RecordKind::Deal),
    ] {
        let n = env
            .store
            .count_records(ws, kind, Some(ConnectorKind::Hubspot))
            .await
            .unwrap();
        assert_eq!(summary["tables"][table], n, "{table}");
    }
    assert_eq!(summary["tables"]["contacts"], 120);

    // Bad arguments: exit 2 with a one-line message, never a panic.
    for bad in [vec!["--mode", "sideways"], vec!["--connector", "pipedrive"]] {
        let out = tokio::task::spawn_blocking({
            let mut cmd = run(&bad);
            move || cmd.output().unwrap()
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = std::process::Command::new(&example)
        .args([
            "--database",
            "sqlite:///nonexistent-dir/x.db",
            "--workspace",
            &ws.to_string(),
            "--connector",
            "hubspot",
        ])
        .args([
            "--base-url",
            &sim.base_url(),
            "--credentials",
            "@/nonexistent.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
