//! End to end: HubSpot simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use pandora_sync::model::RecordKind;
use pandora_sync::simulator::{FaultConfig, HubSpotObject, HubSpotSim, HubSpotSimConfig};
use pandora_sync::store::{NewConnection, RecordQuery, SyncStatus};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Orchestrator, Record, SyncMode, SyncOptions,
    SyncStore,
};
use uuid::Uuid;

pub use crate::store_env::Env;
#[cfg(feature = "postgres")]
pub use crate::store_env::run_postgres;
#[cfg(feature = "sqlite")]
pub use crate::store_env::run_sqlite;

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

/// The properties the schema maps to typed columns (reference section 9), and
/// `hs_object_id`: everything else a record carries belongs in `custom_fields`.
fn mapped(obj: HubSpotObject) -> &'static [&'static str] {
    match obj {
        HubSpotObject::Companies => &[
            "name",
            "domain",
            "industry",
            "numberofemployees",
            "annualrevenue",
            "hubspot_owner_id",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ],
        HubSpotObject::Contacts => &[
            "email",
            "firstname",
            "lastname",
            "jobtitle",
            "phone",
            "lifecyclestage",
            "hubspot_owner_id",
            "associatedcompanyid",
            "createdate",
            "lastmodifieddate",
            "hs_object_id",
        ],
        HubSpotObject::Deals => &[
            "dealname",
            "amount",
            "deal_currency_code",
            "dealstage",
            "pipeline",
            "closedate",
            "hs_deal_stage_probability",
            "hubspot_owner_id",
            "hs_is_closed",
            "hs_is_closed_won",
            "hs_manual_forecast_category",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ],
    }
}

/// The `custom_fields` the truth says a record has: every unmapped property, blank
/// values as null.
fn truth_custom_fields(
    truth: &pandora_sync::simulator::SimRecord,
) -> serde_json::Map<String, serde_json::Value> {
    truth
        .properties
        .iter()
        .filter(|(k, _)| !mapped(truth.object).contains(&k.as_str()))
        .map(|(k, v)| {
            let v = match v.as_deref().map(str::trim) {
                None | Some("") => serde_json::Value::Null,
                Some(_) => serde_json::json!(v),
            };
            (k.clone(), v)
        })
        .collect()
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
            assert_eq!(
                meta.custom_fields,
                truth_custom_fields(&truth),
                "{kind:?} {} custom_fields",
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
    let progress = pandora_sync::connector::ProgressReporter::new();
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
    // Built with this test binary's features (every connector with --all-features).
    let example = crate::support_example::sync_example().to_owned();
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

/// The stored checkpoint of the workspace's HubSpot connection.
async fn checkpoint(env: &Env, ws: Uuid) -> pandora_sync::Checkpoint {
    env.store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .expect("the connection exists")
        .checkpoint()
        .unwrap()
}

/// An orchestrator with no watermark lag and a HubSpot config with no lookback, so that a
/// change a few milliseconds old is exactly as exposed as one an hour old under the real
/// settings (tests cannot wait out a 5-minute lag).
async fn setup_no_lag(env: &Env, sim: &HubSpotSim) -> (Uuid, Orchestrator) {
    let mut config = fast_config();
    config["lookback_minutes"] = serde_json::json!(0);
    let (ws, o) = setup(env, sim, config).await;
    let o = o.with_config(pandora_sync::OrchestratorConfig {
        watermark_lag: Duration::ZERO,
        ..Default::default()
    });
    (ws, o)
}

async fn contact_title(env: &Env, ws: Uuid, id: u64) -> Option<String> {
    match env
        .store
        .get_record(
            ws,
            RecordKind::Contact,
            ConnectorKind::Hubspot,
            &id.to_string(),
        )
        .await
        .unwrap()
    {
        Some(Record::Contact(c)) => c.title,
        other => panic!("contact {id}: {other:?}"),
    }
}

/// Waits until the simulator's clock (milliseconds) has moved past the previous stamp.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// Issue 11, case 1: 600 contacts changed (even ids 30 minutes ago, odd ids a minute ago);
/// 20 of those already served on the first search page change again before the second page
/// is asked for, so they leave the search's `LTE sync start` set. Paging by offset then
/// skips the 20 records at the page boundary, and the watermark (moved to the sync start
/// minus the lag by the younger changes) passes the ten older ones for good. Keyset paging
/// (`hs_object_id > last id`, no offset) loses nothing, with the same number of requests.
pub async fn changes_during_a_search_pass_are_not_lost(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 20,
        contacts: 1_000,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);

    let now = Utc::now();
    for id in 1..=600u64 {
        sim.modify(
            HubSpotObject::Contacts,
            id,
            [("jobtitle", format!("wave1-{id}"))],
        );
        let minutes = if id % 2 == 0 { 30 } else { 1 };
        sim.stamp(
            HubSpotObject::Contacts,
            [id],
            now - chrono::Duration::minutes(minutes),
        );
    }
    // Once the first contacts page (ids 1..=200) is served, 20 of its records change again.
    sim.after_served(
        pandora_sync::simulator::HubSpotEndpoint::Search(HubSpotObject::Contacts),
        1,
        |portal| {
            for id in 1..=20u64 {
                portal.modify(
                    HubSpotObject::Contacts,
                    id,
                    [("jobtitle", format!("wave2-{id}"))],
                );
            }
        },
    );
    sim.counters().reset();
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    let mut lost = Vec::new();
    for id in 21..=600u64 {
        if contact_title(&env, ws, id).await != Some(format!("wave1-{id}")) {
            lost.push(id);
        }
    }
    assert!(lost.is_empty(), "changes never stored: {lost:?}");
    for id in 1..=20u64 {
        let title = contact_title(&env, ws, id).await;
        assert!(
            title == Some(format!("wave1-{id}")) || title == Some(format!("wave2-{id}")),
            "contact {id}: {title:?}"
        );
    }
    // No extra request: three search pages for the 600 contacts, one for each other object.
    assert_eq!(
        sim.counters()
            .get("POST /crm/v3/objects/{object_type}/search"),
        5,
        "{:?}",
        sim.counters().snapshot()
    );
    // The next run brings the second wave; the database then equals the portal.
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    for id in 1..=20u64 {
        assert_eq!(
            contact_title(&env, ws, id).await,
            Some(format!("wave2-{id}"))
        );
    }
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// Issue 11, case 2 (list pass): an initial sync is interrupted in the contacts list; before
/// it resumes, contact 5 (already read, below the stored cursor) changes, then contact 2,900
/// (not read yet). The resumed pass must end with its own window (the first run's start),
/// not the resuming run's, and a follow-up pass in the same run must read contact 5:
/// otherwise the watermark lands on contact 2,900's change and contact 5's is never read.
pub async fn resumed_list_pass_is_followed_up(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 20,
        contacts: 3_000,
        deals: 40,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup_no_lag(&env, &sim).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.after_served(
        pandora_sync::simulator::HubSpotEndpoint::List(HubSpotObject::Contacts),
        5,
        {
            let cancel = cancel.clone();
            move |_| cancel.cancel()
        },
    );
    let r = o
        .sync_workspace(
            ws,
            SyncOptions {
                cancel: cancel.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(r.connectors[0].status, SyncStatus::Completed);
    let stored = all(&env.store, ws, RecordKind::Contact).await.len();
    assert!(
        (100..2_900).contains(&stored),
        "interrupted mid-pass: {stored}"
    );
    let before = checkpoint(&env, ws).await;
    let contacts = before.stream("contacts").unwrap();
    assert!(contacts.cursor.is_some() && contacts.watermark.is_none());

    tick().await;
    sim.modify(
        HubSpotObject::Contacts,
        5,
        [("jobtitle", "changed after the crash")],
    );
    tick().await;
    sim.modify(
        HubSpotObject::Contacts,
        2_900,
        [("jobtitle", "changed later")],
    );
    tick().await;

    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_eq!(
        contact_title(&env, ws, 5).await.as_deref(),
        Some("changed after the crash"),
        "the change below the resumed cursor is stored by the follow-up pass"
    );
    let t5 = sim.record(HubSpotObject::Contacts, 5).unwrap().updated_at;
    let after = checkpoint(&env, ws).await;
    let contacts = after.stream("contacts").unwrap();
    assert!(contacts.cursor.is_none() && contacts.pass_started_at.is_none());
    assert!(contacts.watermark.unwrap() >= t5, "{contacts:?}");
    assert_equals_truth(&env.store, ws, &sim).await;
    // And it stays so.
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// Issue 11, case 2 (search pass): an incremental pass over 600 changed contacts is
/// interrupted after its second page; before it resumes, contact 5 (below the stored
/// cursor) changes, then contact 550 (above it). The resumed pass keeps its window and the
/// follow-up pass reads contact 5, so the watermark never passes an unread change.
pub async fn resumed_search_pass_is_followed_up(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 20,
        contacts: 1_000,
        deals: 0,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup_no_lag(&env, &sim).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    tick().await;
    for id in 1..=600u64 {
        sim.modify(
            HubSpotObject::Contacts,
            id,
            [("jobtitle", format!("wave1-{id}"))],
        );
    }
    tick().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    sim.after_served(
        pandora_sync::simulator::HubSpotEndpoint::Search(HubSpotObject::Contacts),
        2,
        {
            let cancel = cancel.clone();
            move |_| cancel.cancel()
        },
    );
    let r = o
        .sync_workspace(
            ws,
            SyncOptions {
                cancel: cancel.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(r.connectors[0].status, SyncStatus::Completed);
    let before = checkpoint(&env, ws).await;
    assert!(
        before.stream("contacts").unwrap().cursor.is_some(),
        "{before:?}"
    );
    assert_eq!(contact_title(&env, ws, 5).await.as_deref(), Some("wave1-5"));

    tick().await;
    sim.modify(
        HubSpotObject::Contacts,
        5,
        [("jobtitle", "changed after the crash")],
    );
    tick().await;
    sim.modify(
        HubSpotObject::Contacts,
        550,
        [("jobtitle", "changed later")],
    );
    tick().await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(
        contact_title(&env, ws, 5).await.as_deref(),
        Some("changed after the crash")
    );
    let t5 = sim.record(HubSpotObject::Contacts, 5).unwrap().updated_at;
    let after = checkpoint(&env, ws).await;
    assert!(after.watermark("contacts").unwrap() >= t5);
    assert_equals_truth(&env.store, ws, &sim).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// Issue 13: every property the portal defines that the schema does not map is discovered
/// (once per run and object type) and stored in `custom_fields`, also when the property
/// list is too long for one list URL or one search body.
pub async fn custom_properties_land_in_custom_fields(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 30,
        contacts: 150,
        deals: 60,
        rate_limits: false,
        // 520 names of about 30 characters: two list URLs, several search bodies.
        custom_properties: 520,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_equals_truth(&env.store, ws, &sim).await;
    let counts = sim.counters().snapshot();
    assert_eq!(
        counts.get("GET /crm/v3/properties/{object_type}"),
        Some(&3),
        "one discovery per object type: {counts:?}"
    );
    // Live pages: 1 company, 2 contact and 1 deal page, each in two property slices; the
    // three archived lists are empty (one request each).
    assert_eq!(
        counts.get("GET /crm/v3/objects/{object_type}"),
        Some(&11),
        "{counts:?}"
    );
    let custom = HubSpotObject::Contacts.custom_property(517);
    let Some(Record::Contact(stored)) = env
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "7")
        .await
        .unwrap()
    else {
        panic!("contact 7 missing")
    };
    assert_eq!(
        stored.meta.custom_fields.get(&custom).cloned(),
        sim.record(HubSpotObject::Contacts, 7)
            .unwrap()
            .properties
            .get(&custom)
            .map(|v| serde_json::json!(v)),
    );

    // An incremental run reads changed custom values through search, in slices.
    for id in [7, 40, 99] {
        sim.modify(
            HubSpotObject::Contacts,
            id,
            [(custom.clone(), format!("changed {id}"))],
        );
    }
    sim.modify(HubSpotObject::Deals, 5, [("dealname", "Renamed")]);
    sim.counters().reset();
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    assert_equals_truth(&env.store, ws, &sim).await;
    let counts = sim.counters().snapshot();
    assert_eq!(
        counts.get("GET /crm/v3/properties/{object_type}"),
        Some(&3),
        "once per run: {counts:?}"
    );
    assert!(
        counts
            .get("POST /crm/v3/objects/{object_type}/search")
            .is_some_and(|n| *n > 3),
        "pages with results are read in several property slices: {counts:?}"
    );
}

/// Issue 13: HubSpot's archived list carries no associations; an archived record keeps the
/// association columns stored while it was live, and its deal-contact links.
pub async fn archived_record_keeps_its_association_columns(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 40,
        deals: 20,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    let links_before = env
        .store
        .count_records(ws, RecordKind::DealContact, Some(ConnectorKind::Hubspot))
        .await
        .unwrap();
    sim.archive(HubSpotObject::Deals, 3);
    sim.archive(HubSpotObject::Contacts, 5);
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(
        (c.mode, c.status),
        (SyncMode::Incremental, SyncStatus::Completed),
        "{:?}",
        c.error
    );
    let truth = sim.record(HubSpotObject::Deals, 3).unwrap();
    let Some(Record::Deal(d)) = env
        .store
        .get_record(ws, RecordKind::Deal, ConnectorKind::Hubspot, "3")
        .await
        .unwrap()
    else {
        panic!("deal 3 missing")
    };
    assert!(d.meta.archived_at.is_some(), "deal 3 archived");
    assert!(truth.company_id.is_some());
    assert_eq!(
        d.account_source_id,
        truth.company_id.map(|c| c.to_string()),
        "the archived deal keeps its company"
    );
    let Some(Record::Contact(p)) = env
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "5")
        .await
        .unwrap()
    else {
        panic!("contact 5 missing")
    };
    assert!(p.meta.archived_at.is_some(), "contact 5 archived");
    assert_eq!(
        p.account_source_id,
        sim.record(HubSpotObject::Contacts, 5)
            .unwrap()
            .company_id
            .map(|c| c.to_string())
    );
    assert_eq!(
        env.store
            .count_records(ws, RecordKind::DealContact, Some(ConnectorKind::Hubspot))
            .await
            .unwrap(),
        links_before,
        "the archived deal's links stay"
    );
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// The stored contact ids of a deal's links.
async fn stored_contacts(env: &Env, ws: Uuid, deal: u64) -> Vec<String> {
    let mut out: Vec<String> = all(&env.store, ws, RecordKind::DealContact)
        .await
        .into_iter()
        .filter_map(|r| match r {
            Record::DealContact(l) if l.deal_source_id == deal.to_string() => {
                Some(l.contact_source_id)
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Issue 13: a deal–contact link removed at HubSpot is removed from `deal_contacts` by the
/// next pass that reads the deal's complete contact set: a full pass (uncut inline
/// association blocks) or an incremental search pass (the v4 batch read). The deal's other
/// links stay, and a deal whose inline block is cut off (paged) keeps every link.
pub async fn removed_association_is_unlinked(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 10,
        contacts: 40,
        deals: 60,
        // Inline blocks of deals with three contacts are cut off.
        assoc_page_size: 2,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup_no_lag(&env, &sim).await;
    let with = |n: usize| -> Vec<u64> {
        sim.records(HubSpotObject::Deals)
            .filter(|d| d.archived_at.is_none() && d.contact_ids.len() == n)
            .map(|d| d.id)
            .collect()
    };
    let (ones, twos, threes) = (with(1), with(2), with(3));
    assert!(
        !ones.is_empty() && twos.len() >= 2 && !threes.is_empty(),
        "the seed has deals with one, two and three contacts"
    );
    let sync = |mode: Option<SyncMode>| {
        let o = &o;
        async move {
            let r = o
                .sync_workspace(
                    ws,
                    SyncOptions {
                        mode,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let c = &r.connectors[0];
            assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
            c.mode
        }
    };
    let contacts = |deal: u64| -> Vec<String> {
        let mut ids: Vec<String> = sim
            .record(HubSpotObject::Deals, deal)
            .unwrap()
            .contact_ids
            .iter()
            .map(u64::to_string)
            .collect();
        ids.sort();
        ids
    };

    // Initial sync, then the backfill that reads the cut-off blocks through the v4 endpoint.
    sync(None).await;
    sync(Some(SyncMode::Backfill)).await;
    assert_equals_truth(&env.store, ws, &sim).await;
    let cut = threes[0];
    assert_eq!(stored_contacts(&env, ws, cut).await, contacts(cut));

    // A full pass: the uncut block of deal `a` is its complete set; the cut-off block of
    // deal `cut` is not, and removes nothing.
    let a = twos[0];
    let (a_kept, a_gone) = {
        let ids = &sim.record(HubSpotObject::Deals, a).unwrap().contact_ids;
        (ids[0], ids[1])
    };
    assert!(sim.unlink_contact(a, a_gone));
    tick().await;
    assert_eq!(sync(Some(SyncMode::Initial)).await, SyncMode::Initial);
    assert_eq!(stored_contacts(&env, ws, a).await, [a_kept.to_string()]);
    assert_eq!(stored_contacts(&env, ws, cut).await, contacts(cut));
    assert_eq!(contacts(cut).len(), 3, "the block of {cut} is cut off");
    assert_equals_truth(&env.store, ws, &sim).await;

    // An incremental sync: the search pass finds the deals HubSpot stamped modified and
    // reads their contacts through the v4 endpoint, to the end; a deal that lost its only
    // contact has an empty set.
    let b = twos[1];
    let b_gone = sim.record(HubSpotObject::Deals, b).unwrap().contact_ids[0];
    let single = ones[0];
    let single_gone = sim
        .record(HubSpotObject::Deals, single)
        .unwrap()
        .contact_ids[0];
    assert!(sim.unlink_contact(b, b_gone));
    assert!(sim.unlink_contact(single, single_gone));
    assert!(!sim.unlink_contact(single, single_gone), "already removed");
    tick().await;
    assert_eq!(sync(None).await, SyncMode::Incremental);
    assert_eq!(stored_contacts(&env, ws, b).await, contacts(b));
    assert_eq!(contacts(b).len(), 1);
    assert!(stored_contacts(&env, ws, single).await.is_empty());
    assert_eq!(stored_contacts(&env, ws, cut).await, contacts(cut));
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// After a first finished sync the connection knows its portal id, which HubSpot's webhook
/// events carry (`portalId`): asked once, not on every sync.
pub async fn the_portal_id_is_recorded_for_webhooks(env: Env) {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 10,
        deals: 5,
        rate_limits: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast_config()).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    let row = env
        .store
        .get_connection(ws, ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    let portal = (1000 + sim.config().seed % 1_000_000).to_string();
    assert_eq!(
        row.sync_cursor.as_ref().unwrap()[pandora_sync::connector::WEBHOOK_ACCOUNT_KEY]["account"],
        serde_json::json!(portal)
    );
    let details = sim.counters().get("GET /account-info/v3/details");
    assert_eq!(details, 1);
    o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(
        sim.counters().get("GET /account-info/v3/details"),
        details,
        "the portal id is read once per connection"
    );
}
