//! End to end: Salesforce simulator → connector → orchestrator → SQLite and Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pandora_sync::model::RecordKind;
use pandora_sync::simulator::{
    FaultConfig, LocatorDeath, SalesforceObject as O, SalesforceRecord, SalesforceSim,
    SalesforceSimConfig,
};
use pandora_sync::store::{NewConnection, RecordQuery, SyncStatus};
use pandora_sync::{
    ConnectorKind, ConnectorRegistry, Credentials, Orchestrator, Record, SyncOptions, SyncStore,
};
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::store_env::Env;
#[cfg(feature = "postgres")]
pub use crate::store_env::run_postgres;
#[cfg(feature = "sqlite")]
pub use crate::store_env::run_sqlite;

/// No client-side throttle in the way (the simulator has no per-minute limit).
fn fast(extra: Value) -> Value {
    let mut c = json!({"rate_limit": {"max_requests": 100000, "window_ms": 1000}});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    c
}

async fn setup(env: &Env, sim: &SalesforceSim, config: Value) -> (Uuid, Orchestrator) {
    setup_with(env, sim, config, json!({})).await
}

async fn setup_with(
    env: &Env,
    sim: &SalesforceSim,
    config: Value,
    override_creds: Value,
) -> (Uuid, Orchestrator) {
    let ws = Uuid::new_v4();
    let mut creds = json!({
        "client_id": sim.config().client_id,
        "client_secret": sim.config().client_secret,
        "refresh_token": sim.config().refresh_token,
    });
    if let (Some(m), Some(o)) = (creds.as_object_mut(), override_creds.as_object()) {
        m.extend(o.clone());
    }
    env.store
        .create_connection(
            NewConnection::new(ws, ConnectorKind::Salesforce, "oauth")
                .with_credentials(Credentials::from_json(creds).unwrap())
                .with_config(config),
        )
        .await
        .unwrap();
    let registry = ConnectorRegistry::builtin(&BTreeMap::from([(
        ConnectorKind::Salesforce,
        sim.base_url(),
    )]));
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
        let done = page.len() < 1000;
        after = page.last().and_then(|r| r.meta().map(|m| m.id));
        out.extend(page);
        if done {
            return out;
        }
    }
}

fn text(r: &SalesforceRecord, f: &str) -> Option<String> {
    r.get(f)
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn time(r: &SalesforceRecord, f: &str) -> Option<DateTime<Utc>> {
    pandora_sync::sanitize::datetime(Some(r.get(f)))
}

fn custom(r: &SalesforceRecord) -> serde_json::Map<String, Value> {
    r.fields
        .iter()
        .filter(|(k, v)| k.ends_with("__c") && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn domain(website: Option<String>) -> Option<String> {
    let w = website?;
    let host = w
        .split("://")
        .nth(1)
        .unwrap_or(&w)
        .split('/')
        .next()?
        .to_lowercase();
    Some(host.strip_prefix("www.").unwrap_or(&host).to_owned())
}

/// The store holds exactly the org: every live record field by field, every deleted one
/// archived, every live contact role as a link and no other link.
pub async fn assert_equals_truth(store: &Arc<dyn SyncStore>, ws: Uuid, sim: &SalesforceSim) {
    for (obj, kind) in [
        (O::Account, RecordKind::Account),
        (O::Contact, RecordKind::Contact),
        (O::Opportunity, RecordKind::Deal),
    ] {
        let stored: BTreeMap<String, Record> = all(store, ws, kind)
            .await
            .into_iter()
            .map(|r| (r.source_id(), r))
            .collect();
        let truth = sim.all_records(obj);
        let live = truth.iter().filter(|t| !t.is_deleted()).count();
        let stored_live = stored
            .values()
            .filter(|r| r.meta().unwrap().archived_at.is_none())
            .count();
        assert_eq!(stored_live, live, "{kind:?}: live rows");
        for t in &truth {
            let Some(row) = stored.get(&t.id) else {
                assert!(t.is_deleted(), "{kind:?} {} missing", t.id);
                continue;
            };
            let meta = row.meta().unwrap();
            assert_eq!(
                meta.archived_at.is_some(),
                t.is_deleted(),
                "{kind:?} {} archived",
                t.id
            );
            if t.is_deleted() {
                continue;
            }
            assert_eq!(
                meta.source_updated_at,
                time(t, "SystemModstamp"),
                "{kind:?} {}",
                t.id
            );
            assert_eq!(
                meta.source_created_at,
                time(t, "CreatedDate"),
                "{kind:?} {}",
                t.id
            );
            assert_eq!(
                meta.custom_fields,
                custom(t),
                "{kind:?} {} custom_fields",
                t.id
            );
            match row {
                Record::Account(a) => {
                    assert_eq!(a.name, text(t, "Name"));
                    assert_eq!(a.domain, domain(text(t, "Website")));
                    assert_eq!(a.industry, text(t, "Industry"));
                    assert_eq!(a.employee_count, t.get("NumberOfEmployees").as_i64());
                    assert_eq!(a.annual_revenue, t.get("AnnualRevenue").as_f64());
                    assert_eq!(a.owner_id, text(t, "OwnerId"));
                }
                Record::Contact(c) => {
                    assert_eq!(c.email, text(t, "Email"));
                    assert_eq!(c.first_name, text(t, "FirstName"));
                    assert_eq!(c.last_name, text(t, "LastName"));
                    assert_eq!(c.title, text(t, "Title"));
                    assert_eq!(c.phone, text(t, "Phone"));
                    assert_eq!(c.account_source_id, text(t, "AccountId"));
                    assert_eq!(c.owner_id, text(t, "OwnerId"));
                }
                Record::Deal(d) => {
                    assert_eq!(d.name, text(t, "Name"));
                    assert_eq!(d.amount, t.get("Amount").as_f64());
                    assert_eq!(d.currency, text(t, "CurrencyIsoCode"));
                    assert_eq!(d.stage, text(t, "StageName"));
                    assert_eq!(d.close_date.map(|c| c.to_string()), text(t, "CloseDate"));
                    assert_eq!(
                        d.probability,
                        t.get("Probability").as_f64().map(|p| p / 100.0)
                    );
                    assert_eq!(d.forecast_category, text(t, "ForecastCategoryName"));
                    assert_eq!(d.is_closed, t.get("IsClosed").as_bool());
                    assert_eq!(d.is_won, t.get("IsWon").as_bool());
                    assert_eq!(d.owner_id, text(t, "OwnerId"));
                    assert_eq!(d.account_source_id, text(t, "AccountId"));
                }
                other => panic!("unexpected record {other:?}"),
            }
        }
    }
    let links: BTreeMap<String, Option<String>> = sim
        .records(O::OpportunityContactRole)
        .iter()
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    text(r, "OpportunityId").unwrap(),
                    text(r, "ContactId").unwrap()
                ),
                text(r, "Role"),
            )
        })
        .collect();
    let stored_links = store
        .count_records(ws, RecordKind::DealContact, Some(ConnectorKind::Salesforce))
        .await
        .unwrap();
    assert_eq!(
        stored_links,
        links.len() as u64,
        "one link per live contact role"
    );
    for (link, role) in &links {
        let Some(Record::DealContact(l)) = store
            .get_record(ws, RecordKind::DealContact, ConnectorKind::Salesforce, link)
            .await
            .unwrap()
        else {
            panic!("link {link} missing");
        };
        assert_eq!(&l.role, role, "link {link} role");
    }
}

fn rows_read(by_table: &BTreeMap<String, u64>) -> u64 {
    by_table.values().sum()
}

fn total_rows(sim: &SalesforceSim) -> u64 {
    O::ALL
        .iter()
        .map(|o| sim.all_records(*o).len() as u64)
        .sum()
}

/// ~6,000 rows with 2,300 contacts on one `SystemModstamp` second (REST, pages of 2,000
/// crossing that second); then edits, stage moves, a picklist rename, creates, cascading
/// deletes, removed contact roles and an undelete, each written exactly.
pub async fn initial_and_incremental_equal_the_truth(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 700,
        contacts: 3_300,
        opportunities: 1_000,
        roles_per_opportunity: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    // 2,300 contacts on one second in the middle of the history.
    let tie = sim.config().base_time - chrono::Duration::days(40);
    let ids: Vec<String> = (1..=2_300).map(|n| O::Contact.id(n)).collect();
    sim.stamp(O::Contact, ids.iter().map(String::as_str), tie);
    let total = total_rows(&sim);
    assert!(total >= 5_500, "{total} rows");
    let (ws, o) = setup(&env, &sim, fast(json!({}))).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_equals_truth(&env.store, ws, &sim).await;
    let initial_requests = sim.counters().total();

    // The changes.
    let before: BTreeMap<(O, String), SalesforceRecord> = O::ALL
        .iter()
        .flat_map(|o| sim.all_records(*o))
        .map(|r| ((r.object, r.id.clone()), r))
        .collect();
    for n in 1..=20 {
        assert!(sim.modify(
            O::Contact,
            &O::Contact.id(n * 97),
            [("Title", json!("Head of Rust"))]
        ));
    }
    for n in 1..=15 {
        assert!(sim.modify(
            O::Opportunity,
            &O::Opportunity.id(n * 31),
            [
                ("StageName", json!("Closed Won")),
                ("IsClosed", json!(true)),
                ("IsWon", json!(true)),
                ("Probability", json!(100.0))
            ],
        ));
    }
    let renamed = sim.rename_picklist_value(O::Account, "Industry", "Retail", "Retail & Consumer");
    assert!(renamed > 0);
    let new_account = sim.create(
        O::Account,
        [
            ("Name", json!("Fresh Co")),
            ("Website", json!("fresh.example.org")),
        ],
    );
    let new_contact = sim.create(
        O::Contact,
        [
            ("LastName", json!("New")),
            ("AccountId", json!(new_account)),
        ],
    );
    let new_opp = sim.create(
        O::Opportunity,
        [
            ("Name", json!("Fresh deal")),
            ("StageName", json!("Prospecting")),
            ("AccountId", json!(new_account)),
        ],
    );
    sim.create(
        O::OpportunityContactRole,
        [
            ("OpportunityId", json!(new_opp)),
            ("ContactId", json!(new_contact)),
            ("Role", json!("Decision Maker")),
        ],
    );
    // Cascading deletes: accounts with their contacts, opportunities and roles.
    let cascade =
        sim.delete(O::Account, &O::Account.id(5)) + sim.delete(O::Account, &O::Account.id(6));
    assert!(cascade > 2, "{cascade}");
    // Contact roles removed on their own.
    let roles: Vec<String> = sim
        .records(O::OpportunityContactRole)
        .iter()
        .take(3)
        .map(|r| r.id.clone())
        .collect();
    for id in &roles {
        assert_eq!(sim.delete(O::OpportunityContactRole, id), 1);
    }
    let (mut ins, mut upd, mut arch) = (0u64, 0u64, 0u64);
    for o in [O::Account, O::Contact, O::Opportunity] {
        for r in sim.all_records(o) {
            match before.get(&(o, r.id.clone())) {
                None => ins += 1,
                Some(b) if b.fields != r.fields => {
                    if r.is_deleted() {
                        arch += 1;
                    } else {
                        upd += 1;
                    }
                }
                Some(_) => {}
            }
        }
    }
    sim.counters().reset();
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(
        (c.counts.inserted, c.counts.updated),
        (ins, upd),
        "exactly the changes: {:?}",
        c.counts
    );
    assert!(
        c.counts.archived >= arch,
        "{:?} vs {arch} deleted",
        c.counts
    );
    assert!(
        rows_read(&c.records_by_table) * 10 < total * 3,
        "an incremental run reads under 30 % of the rows: {} of {total}",
        rows_read(&c.records_by_table)
    );
    assert_equals_truth(&env.store, ws, &sim).await;
    // The incremental run: token + 4 describes + 4 queries, one batch each.
    assert_eq!(sim.counters().total(), 9);

    // Undelete: the account and what its delete took come back.
    // On a later second than the delete (SystemModstamp has second precision).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let back = sim.undelete(O::Account, &O::Account.id(5));
    assert!(back >= 1);
    // The restored accounts, contacts and opportunities (contact roles are links).
    let restored = back as u64
        - sim
            .records(O::OpportunityContactRole)
            .iter()
            .filter(|r| {
                r.get("SystemModstamp")
                    == sim
                        .record(O::Account, &O::Account.id(5))
                        .unwrap()
                        .get("SystemModstamp")
            })
            .count() as u64;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(
        (c.counts.inserted, c.counts.updated),
        (0, restored),
        "exactly the undeleted rows come back: {:?}",
        c.counts
    );
    assert_equals_truth(&env.store, ws, &sim).await;

    // No changes: one query per object (and the token, the describes).
    sim.counters().reset();
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(r.connectors[0].status, SyncStatus::Completed);
    let quiet = sim.counters().snapshot();
    assert_eq!(
        quiet.get("GET /services/data/{version}/queryAll"),
        Some(&4),
        "{quiet:?}"
    );
    assert_eq!(
        quiet.get("GET /services/data/{version}/query/{locator}"),
        None,
        "{quiet:?}"
    );
    // Requests: initial (REST) = token + 4 describes + 4 counts + 4 queries + 1 locator
    // page (3,300 contacts in batches of 2,000); a no-change run = token + 4 describes +
    // 4 queries.
    assert_eq!(initial_requests, 14);
    assert_eq!(sim.counters().total(), 9, "{quiet:?}");
}

/// 25,000+ rows: contacts and opportunities above the threshold go through Bulk 2.0, their
/// CSV results paged by locator.
pub async fn bulk_initial_sync_pages_by_locator(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 2_000,
        contacts: 22_000,
        opportunities: 1_500,
        roles_per_opportunity: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast(json!({}))).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_equals_truth(&env.store, ws, &sim).await;
    let counts = sim.counters().snapshot();
    assert_eq!(
        sim.bulk_jobs_created(),
        1,
        "only contacts exceed 10,000: {counts:?}"
    );
    assert_eq!(
        counts.get("GET /services/data/{version}/jobs/query/{id}/results"),
        Some(&3),
        "22,000 rows in pages of 10,000: {counts:?}"
    );
    // token + 4 describes + 4 counts + 3 REST queries + job create, 2 polls, 3 result pages.
    assert_eq!(sim.counters().total(), 18, "{counts:?}");
}

/// 4,500 contacts on one second across REST pages of 2,000, then rows committed late on
/// that (newest) second: all arrive.
pub async fn ties_across_pages_and_late_commits(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 20,
        contacts: 4_600,
        opportunities: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    let newest = sim.config().base_time + chrono::Duration::hours(1);
    let ids: Vec<String> = (1..=4_500).map(|n| O::Contact.id(n)).collect();
    sim.stamp(O::Contact, ids.iter().map(String::as_str), newest);
    let (ws, o) = setup(&env, &sim, fast(json!({}))).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(
        r.connectors[0].status,
        SyncStatus::Completed,
        "{:?}",
        r.connectors[0].error
    );
    assert_equals_truth(&env.store, ws, &sim).await;
    // Late commits: new rows stamped on the newest second already read.
    let late: Vec<String> = (0..30)
        .map(|i| sim.create(O::Contact, [("LastName", json!(format!("Late {i}")))]))
        .collect();
    sim.stamp(O::Contact, late.iter().map(String::as_str), newest);
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_eq!(c.counts.inserted, 30, "{:?}", c.counts);
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// Sessions that die every 5 requests, with refresh-token rotation, and locators killed by
/// each refresh (both ways Salesforce answers them): nothing lost, no 401 loop, and the
/// rotated token kept with the connection for the next run.
pub async fn dying_tokens_lose_nothing(env: Env) {
    for death in [
        LocatorDeath::InvalidSessionId,
        LocatorDeath::InvalidQueryLocator,
    ] {
        let sim = SalesforceSim::start(SalesforceSimConfig {
            accounts: 300,
            contacts: 1_500,
            opportunities: 400,
            session_requests: Some(5),
            rotate_refresh_tokens: true,
            locator_death: death,
            ..Default::default()
        })
        .await
        .unwrap();
        let (ws, o) = setup(&env, &sim, fast(json!({"batch_size": 200}))).await;
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        let c = &r.connectors[0];
        assert_eq!(c.status, SyncStatus::Completed, "{death:?}: {:?}", c.error);
        assert_equals_truth(&env.store, ws, &sim).await;
        assert!(
            sim.sessions_issued() > 3,
            "{death:?}: {} sessions",
            sim.sessions_issued()
        );
        // Locators died with their sessions and the queries restarted from the keyset.
        let queries = sim.counters().get("GET /services/data/{version}/queryAll");
        assert!(queries > 4, "{death:?}: {queries} queries, no restart");
        // The rotated refresh token is what the connection holds now.
        let row = env
            .store
            .get_connection(ws, ConnectorKind::Salesforce)
            .await
            .unwrap()
            .unwrap();
        let creds = env.store.credentials(&row).unwrap().unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&creds.get("refresh_token").unwrap()),
            sim.current_refresh_token()
        );
        // And the next run works with it.
        sim.modify(O::Contact, &O::Contact.id(7), [("Title", json!("Rotated"))]);
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        assert_eq!(
            r.connectors[0].status,
            SyncStatus::Completed,
            "{:?}",
            r.connectors[0].error
        );
        assert_equals_truth(&env.store, ws, &sim).await;
        ws_drop(&env, ws).await;
    }
}

async fn ws_drop(env: &Env, ws: Uuid) {
    let _ = env
        .store
        .delete_connection(ws, ConnectorKind::Salesforce)
        .await;
}

/// 20 % faults (500 `UNKNOWN_EXCEPTION`, HTML 502/503, dropped and truncated bodies) and a
/// failing Bulk job: nothing lost.
pub async fn faults_and_failed_bulk_jobs_lose_nothing(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 300,
        contacts: 1_200,
        opportunities: 700,
        faults: FaultConfig {
            server_error_rate: 0.1,
            drop_rate: 0.05,
            rate_limit_rate: 0.05,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    sim.fail_next_bulk_jobs(1);
    let (ws, o) = setup(
        &env,
        &sim,
        fast(json!({"bulk_threshold": 500, "batch_size": 200})),
    )
    .await;
    // A run can lose against many faults in a row; like the job queue, run again: it
    // resumes from its checkpoint.
    let mut status = None;
    for _ in 0..5 {
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        status = Some(r.connectors[0].status);
        if status == Some(SyncStatus::Completed) {
            break;
        }
    }
    assert_eq!(status, Some(SyncStatus::Completed));
    assert!(sim.bulk_jobs_created() >= 2, "a failed job and a good one");
    sim.set_faults(FaultConfig::default());
    assert_equals_truth(&env.store, ws, &sim).await;
}

/// The daily limit reached half-way: the run stops cleanly (not completed, checkpoint
/// kept); after the reset the next run finishes, re-reading less than was stored.
pub async fn daily_limit_stops_and_the_next_run_resumes(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 200,
        contacts: 4_000,
        opportunities: 200,
        daily_limit: 30,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast(json!({"batch_size": 200}))).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_ne!(c.status, SyncStatus::Completed);
    assert!(c.rate_limited, "a quota stop: {:?}", c.error);
    let stored = all(&env.store, ws, RecordKind::Contact).await.len() as u64
        + all(&env.store, ws, RecordKind::Account).await.len() as u64;
    assert!(
        stored > 0 && stored < 4_200,
        "stopped half-way: {stored} stored"
    );
    let history = env
        .store
        .sync_history(ws, Some(ConnectorKind::Salesforce), 10)
        .await
        .unwrap();
    assert!(
        history.iter().all(|h| h.status != SyncStatus::Completed),
        "never logged completed"
    );

    sim.reset_daily_usage();
    sim.set_daily_limit(100_000);
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    let c = &r.connectors[0];
    assert_eq!(c.status, SyncStatus::Completed, "{:?}", c.error);
    assert_equals_truth(&env.store, ws, &sim).await;
    let reread = c.counts.unchanged;
    assert!(reread < stored, "re-read {reread} of the {stored} stored");
}

/// A bad refresh token or client secret: the run fails with a clear message, no data
/// request reaches the org, and no secret is anywhere.
pub async fn bad_credentials_fail_cleanly(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig::default())
        .await
        .unwrap();
    for (creds, expected) in [
        (json!({"refresh_token": "rt-wrong-s3cret"}), "invalid_grant"),
        (
            json!({"client_secret": "cs-wrong-s3cret"}),
            "invalid_client",
        ),
    ] {
        sim.counters().reset();
        let (ws, o) = setup_with(&env, &sim, fast(json!({})), creds).await;
        let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
        let c = &r.connectors[0];
        assert_eq!(c.status, SyncStatus::Failed);
        let message = c.error.clone().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let counts = sim.counters().snapshot();
        assert_eq!(counts.len(), 1, "only the token endpoint: {counts:?}");
        assert_eq!(
            counts.get("POST /services/oauth2/token"),
            Some(&1),
            "no retry: {counts:?}"
        );
        let row = env
            .store
            .get_connection(ws, ConnectorKind::Salesforce)
            .await
            .unwrap()
            .unwrap();
        assert!(
            row.error_message
                .as_deref()
                .is_some_and(|m| !m.contains("s3cret"))
        );
        let logs = env
            .store
            .sync_history(ws, Some(ConnectorKind::Salesforce), 10)
            .await
            .unwrap();
        assert!(!format!("{logs:?}").contains("s3cret"));
    }
}

/// An org without multi-currency (no `CurrencyIsoCode`, which a query naming it would get
/// `INVALID_FIELD` for) syncs, its deals without a currency.
pub async fn org_without_multi_currency_syncs(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        multi_currency: false,
        custom_fields: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ws, o) = setup(&env, &sim, fast(json!({}))).await;
    let r = o.sync_workspace(ws, SyncOptions::default()).await.unwrap();
    assert_eq!(
        r.connectors[0].status,
        SyncStatus::Completed,
        "{:?}",
        r.connectors[0].error
    );
    assert_equals_truth(&env.store, ws, &sim).await;
    let deals = all(&env.store, ws, RecordKind::Deal).await;
    assert!(
        deals
            .iter()
            .all(|d| matches!(d, Record::Deal(d) if d.currency.is_none()))
    );
}

/// The `sync` example with `--connector salesforce`: login and instance on `--base-url`,
/// the summary says what the database holds; with rotation, the next run passes the new
/// refresh token, and the stale one exits 1 with the provider's reason.
pub async fn sync_example_syncs_salesforce(env: Env) {
    let sim = SalesforceSim::start(SalesforceSimConfig::default())
        .await
        .unwrap();
    // Built with this test binary's features (every connector with --all-features).
    let example = crate::support_example::sync_example().to_owned();
    let ws = Uuid::new_v4();
    let run = |refresh: String| {
        let creds = json!({
            "client_id": sim.config().client_id,
            "client_secret": sim.config().client_secret,
            "refresh_token": refresh,
        })
        .to_string();
        let mut cmd = std::process::Command::new(&example);
        cmd.args([
            "--database",
            &env.database_url,
            "--workspace",
            &ws.to_string(),
        ])
        .args(["--connector", "salesforce", "--base-url", &sim.base_url()])
        .args(["--credentials", &creds, "--json", "--no-hooks"])
        .args(["--config", &fast(json!({})).to_string()]);
        cmd
    };
    let original = sim.config().refresh_token.clone();
    for mode in ["initial", "incremental"] {
        let refresh = if mode == "initial" {
            original.clone()
        } else {
            sim.current_refresh_token()
        };
        let out = tokio::task::spawn_blocking({
            let mut cmd = run(refresh);
            move || cmd.output().unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["status"], "completed", "{summary}");
        assert_eq!(summary["mode"], mode);
        for (table, kind) in [
            ("accounts", RecordKind::Account),
            ("contacts", RecordKind::Contact),
            ("deals", RecordKind::Deal),
        ] {
            let n = env
                .store
                .count_records(ws, kind, Some(ConnectorKind::Salesforce))
                .await
                .unwrap();
            assert_eq!(summary["tables"][table], n, "{table}");
        }
    }
    assert_equals_truth(&env.store, ws, &sim).await;
    // The stale (pre-rotation) token: exit 1 with the provider's reason, no secret.
    let out = tokio::task::spawn_blocking({
        let mut cmd = run(original);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("invalid_grant"), "{printed}");
    assert!(!printed.contains(&sim.config().client_secret), "{printed}");
}
