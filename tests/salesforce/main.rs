//! The Salesforce connector against the Salesforce simulator: into an in-memory sink here,
//! through the orchestrator into SQLite and Postgres in `e2e`.
#![cfg(all(feature = "simulator", feature = "salesforce"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod e2e;
mod sim;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../support/store_env.rs"]
mod store_env;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../support/example.rs"]
mod support_example;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! e2e_suite {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_sqlite(crate::e2e::$name).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_postgres(crate::e2e::$name).await;
                }
            )*
        }
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
e2e_suite!(
    initial_and_incremental_equal_the_truth,
    bulk_initial_sync_pages_by_locator,
    ties_across_pages_and_late_commits,
    dying_tokens_lose_nothing,
    faults_and_failed_bulk_jobs_lose_nothing,
    daily_limit_stops_and_the_next_run_resumes,
    bad_credentials_fail_cleanly,
    org_without_multi_currency_syncs,
    sync_example_syncs_salesforce,
);

use std::collections::BTreeMap;

use async_trait::async_trait;
use pandora_sync::connector::{MemorySink, WriteCounts};
use pandora_sync::connectors::salesforce::{
    SalesforceConfig, SalesforceConnector, SalesforceCredentials,
};
use pandora_sync::simulator::{SalesforceObject as O, SalesforceSim, SalesforceSimConfig};
use pandora_sync::{
    Checkpoint, Error, Record, RecordBatch, RecordSink, SyncCapable, SyncContext, SyncMode,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

fn connector(sim: &SalesforceSim, config: serde_json::Value) -> SalesforceConnector {
    let mut c = json!({"rate_limit": {"max_requests": 100000, "window_ms": 1000}});
    c.as_object_mut()
        .unwrap()
        .extend(config.as_object().unwrap().clone());
    SalesforceConnector::new(
        &sim.base_url(),
        SalesforceCredentials::OAuth {
            client_id: sim.config().client_id.clone(),
            client_secret: SecretString::from(sim.config().client_secret.clone()),
            refresh_token: SecretString::from(sim.current_refresh_token()),
        },
        SalesforceConfig::from_json(&c).unwrap(),
    )
    .unwrap()
}

fn ws() -> Uuid {
    Uuid::from_u128(7)
}

/// The latest version of every record by (kind, id), as a store keeps it, without the
/// ones deleted since.
fn latest(sink: &MemorySink) -> BTreeMap<(String, String), Record> {
    let mut out = BTreeMap::new();
    for (batch, _) in &sink.batches {
        for r in &batch.records {
            out.insert((format!("{:?}", r.kind()), r.source_id()), r.clone());
        }
        for d in &batch.deletions {
            out.remove(&(format!("{:?}", d.kind), d.source_id.clone()));
        }
    }
    out
}

fn assert_matches_truth(sim: &SalesforceSim, sink: &MemorySink) {
    let rows = latest(sink);
    for (obj, kind) in [
        (O::Account, "Account"),
        (O::Contact, "Contact"),
        (O::Opportunity, "Deal"),
    ] {
        let ids: Vec<&String> = rows
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids.len() as u64, sim.truth_count(obj), "{kind}");
        for t in sim.records(obj) {
            let r = rows
                .get(&(kind.to_owned(), t.id.clone()))
                .unwrap_or_else(|| panic!("{kind} {} missing", t.id));
            assert_eq!(
                r.source_updated_at(),
                pandora_sync::sanitize::datetime(Some(t.get("SystemModstamp"))),
                "{kind} {} is stale",
                t.id
            );
        }
    }
    let links: std::collections::BTreeSet<(String, String)> = sim
        .records(O::OpportunityContactRole)
        .iter()
        .map(|r| {
            (
                r.get("OpportunityId").as_str().unwrap().to_owned(),
                r.get("ContactId").as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(sink.links(), links);
}

/// A sink that runs a hook after every write (changes at the provider between two pages)
/// and can fail the `n`th write (a crash between pages).
struct HookSink<F: FnMut(usize) + Send> {
    inner: MemorySink,
    after: F,
    fail_at: Option<usize>,
    writes: usize,
}

#[async_trait]
impl<F: FnMut(usize) + Send> RecordSink for HookSink<F> {
    async fn write(
        &mut self,
        batch: RecordBatch,
        checkpoint: &Checkpoint,
    ) -> pandora_sync::Result<WriteCounts> {
        self.writes += 1;
        if self.fail_at == Some(self.writes) {
            return Err(Error::config("simulated crash between pages"));
        }
        let counts = self.inner.write(batch, checkpoint).await?;
        (self.after)(self.writes);
        Ok(counts)
    }
}

#[tokio::test]
async fn initial_sync_reads_every_object_with_few_requests() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default())
        .await
        .unwrap();
    let c = connector(&sim, json!({}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert_matches_truth(&sim, &sink);
    assert_eq!(report.source_totals.len(), 3);
    assert!(!report.used_export_api);
    let counts = sim.counters().snapshot();
    // The token, 4 describes, 4 counts (they are the reconciliation totals too), 4 queries.
    assert_eq!(sim.counters().total(), 13, "{counts:?}");
    assert_eq!(counts.get("POST /services/oauth2/token"), Some(&1));

    // A field the org lacks is never asked for, custom fields land in custom_fields.
    let rows = latest(&sink);
    let Record::Account(a) = &rows[&("Account".to_owned(), O::Account.id(3))] else {
        panic!("no account");
    };
    let truth = sim.record(O::Account, &O::Account.id(3)).unwrap();
    assert_eq!(a.name.as_deref(), truth.get("Name").as_str());
    for (k, v) in &truth.fields {
        if k.ends_with("__c") && !v.is_null() {
            assert_eq!(a.meta.custom_fields.get(k), Some(v), "{k}");
        }
    }
    assert!(!a.meta.custom_fields.contains_key("BillingCity"));
}

#[tokio::test]
async fn changes_and_dying_locators_during_a_pass_lose_nothing() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 2_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({"batch_size": 200}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial).with_lag(std::time::Duration::ZERO);
    let sim_ref = &sim;
    let mut sink = HookSink {
        inner: MemorySink::new(),
        after: move |n: usize| {
            // Between pages: an edit, and every third page all locators idle out.
            sim_ref.modify(
                O::Contact,
                &O::Contact.id(n as u64 * 13),
                [("Title", json!("Moved"))],
            );
            if n.is_multiple_of(3) {
                sim_ref.expire_locators();
            }
        },
        fail_at: None,
        writes: 0,
    };
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert!(report.details["locator_restarts"].as_u64().unwrap() > 0);
    // What changed while the pass ran is read by the next run.
    let previous = sink.inner.last_checkpoint().unwrap().clone();
    let ctx = SyncContext::new(ws(), SyncMode::Incremental)
        .with_previous(previous)
        .with_lag(std::time::Duration::ZERO);
    let mut more = MemorySink::new();
    c.sync(&ctx, &mut more).await.unwrap();
    let mut all = sink.inner;
    all.batches.extend(more.batches);
    assert_matches_truth(&sim, &all);
}

#[tokio::test]
async fn a_crash_between_pages_resumes_from_the_keyset() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 1_500,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({"batch_size": 200}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = HookSink {
        inner: MemorySink::new(),
        after: |_| {},
        fail_at: Some(5),
        writes: 0,
    };
    assert!(c.sync(&ctx, &mut sink).await.is_err());
    let checkpoint = sink.inner.last_checkpoint().unwrap().clone();
    let contacts = checkpoint.stream("contacts").unwrap();
    assert!(
        contacts.cursor.is_some(),
        "stopped inside the contacts pass"
    );
    sim.counters().reset();
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(checkpoint);
    let c = connector(&sim, json!({"batch_size": 200}));
    let mut rest = MemorySink::new();
    c.sync(&ctx, &mut rest).await.unwrap();
    let read = rest
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .count();
    assert!(
        read < 1_500 - 200,
        "resumed, not restarted: {read} contacts read again"
    );
    let mut all = sink.inner;
    all.batches.extend(rest.batches);
    assert_matches_truth(&sim, &all);
}

#[tokio::test]
async fn request_limit_exceeded_stops_with_a_quota_error() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default())
        .await
        .unwrap();
    sim.set_daily_limit(0);
    let c = connector(&sim, json!({}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let err = c.sync(&ctx, &mut MemorySink::new()).await.unwrap_err();
    assert!(matches!(err, Error::QuotaExhausted { .. }), "{err}");
    assert!(err.is_snooze());
    // One data request, refused: no retry against a spent quota.
    assert_eq!(
        sim.counters()
            .get("GET /services/data/{version}/sobjects/{object}/describe"),
        1
    );
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn unknown_fields_and_objects_get_the_real_error_bodies() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        multi_currency: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/services/oauth2/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("client_id", sim.config().client_id.as_str()),
            ("client_secret", sim.config().client_secret.as_str()),
            ("refresh_token", sim.current_refresh_token().as_str()),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["instance_url"], sim.base_url());
    assert!(token["refresh_token"].is_string(), "rotation: {token}");
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let get = |q: &str| {
        http.get(format!(
            "{}/services/data/v62.0/query?{}",
            sim.base_url(),
            form(&[("q", q)])
        ))
        .header("authorization", &bearer)
        .send()
    };
    let r = get("SELECT Id, CurrencyIsoCode FROM Opportunity")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["sforce-limit-info"]
            .to_str()
            .unwrap()
            .starts_with("api-usage=")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    let body: serde_json::Value = get("SELECT Id FROM Widget__c")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE");
    let body: serde_json::Value =
        get("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    // Parent paths come back nested.
    let body: serde_json::Value =
        get("SELECT Id, Account.Name FROM Contact WHERE AccountId != null LIMIT 1")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(body["records"][0]["Account"]["Name"].is_string(), "{body}");
    // The old refresh token is dead after the rotation.
    let old = http
        .post(format!("{}/services/oauth2/token", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("client_id", sim.config().client_id.as_str()),
            ("client_secret", sim.config().client_secret.as_str()),
            ("refresh_token", sim.config().refresh_token.as_str()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400);
    let body: serde_json::Value = old.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn malformed_records_are_captured_with_their_ids() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 600,
        faults: pandora_sync::simulator::FaultConfig {
            malformed_rate: 0.05,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    // Bulk for contacts (CSV), REST for the rest.
    let c = connector(&sim, json!({"bulk_threshold": 500, "batch_size": 200}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert!(report.used_export_api);
    let failed: std::collections::BTreeSet<String> = sink
        .batches
        .iter()
        .flat_map(|(b, _)| b.failures.iter())
        .map(|f| f.record_id.clone().expect("every failure names its record"))
        .collect();
    let expected: std::collections::BTreeSet<String> = O::ALL
        .iter()
        .filter(|o| **o != O::OpportunityContactRole)
        .flat_map(|o| sim.records(*o))
        .filter(|r| sim.is_malformed(r.object, &r.id))
        .map(|r| r.id)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(report.records_failed, failed.len() as u64);
    assert!(expected.is_subset(&failed), "{expected:?} vs {failed:?}");
    // Every other record arrived.
    let rows = latest(&sink);
    for o in [O::Account, O::Contact, O::Opportunity] {
        for r in sim.records(o) {
            let kind = match o {
                O::Account => "Account",
                O::Contact => "Contact",
                _ => "Deal",
            };
            assert_eq!(
                rows.contains_key(&(kind.to_owned(), r.id.clone())),
                !failed.contains(&r.id),
                "{kind} {}",
                r.id
            );
        }
    }
}

#[tokio::test]
async fn query_timeouts_are_read_in_smaller_slices() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 3_000,
        query_timeout_rows: Some(700),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({"batch_size": 200}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    let mut sink = MemorySink::new();
    let report = c.sync(&ctx, &mut sink).await.unwrap();
    assert!(report.details["query_timeouts"].as_u64().unwrap() > 0);
    assert_matches_truth(&sim, &sink);
    // Incremental: a window of many changes times out too, and is sliced.
    let previous = sink.last_checkpoint().unwrap().clone();
    // 900 changes on distinct seconds (more than one query may return, fewer per second).
    let base = sim.config().base_time;
    for n in 1..=900 {
        let id = O::Contact.id(n);
        sim.modify(O::Contact, &id, [("Title", json!("Sliced"))]);
        sim.stamp(
            O::Contact,
            [id.as_str()],
            base + chrono::Duration::minutes(i64::try_from(n).unwrap()),
        );
    }
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(previous);
    let mut more = MemorySink::new();
    c.sync(&ctx, &mut more).await.unwrap();
    let mut all = sink;
    all.batches.extend(more.batches);
    assert_matches_truth(&sim, &all);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_before_a_crash() {
    use std::sync::{Arc, Mutex};

    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 1_000,
        session_requests: Some(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let stored: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = stored.clone();
    let updater = pandora_sync::connector::CredentialUpdater::new(move |updates| {
        let seen = seen.clone();
        Box::pin(async move {
            for (k, v) in updates {
                assert_eq!(k, "refresh_token");
                seen.lock()
                    .unwrap()
                    .push(secrecy::ExposeSecret::expose_secret(&v).to_owned());
            }
            Ok(())
        })
    });
    let c = connector(&sim, json!({"batch_size": 200}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial).with_credential_updater(updater);
    let mut sink = HookSink {
        inner: MemorySink::new(),
        after: |_| {},
        fail_at: Some(6),
        writes: 0,
    };
    assert!(c.sync(&ctx, &mut sink).await.is_err(), "the crash");
    assert!(sim.sessions_issued() >= 2, "rotated during the run");
    // The token the org accepts now was stored before the crash.
    assert_eq!(
        stored.lock().unwrap().last().cloned(),
        Some(sim.current_refresh_token())
    );
}

#[tokio::test]
async fn a_crash_inside_bulk_results_resumes_from_the_jobs_locator() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        contacts: 25_000,
        accounts: 10,
        opportunities: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = connector(&sim, json!({}));
    let ctx = SyncContext::new(ws(), SyncMode::Initial);
    // Writes: accounts (1), then the contacts' Bulk pages of 10,000: the second one fails.
    let mut sink = HookSink {
        inner: MemorySink::new(),
        after: |_| {},
        fail_at: Some(3),
        writes: 0,
    };
    assert!(c.sync(&ctx, &mut sink).await.is_err());
    let checkpoint = sink.inner.last_checkpoint().unwrap().clone();
    let cursor = checkpoint
        .stream("contacts")
        .unwrap()
        .cursor
        .clone()
        .unwrap();
    assert!(cursor.starts_with("bulk:"), "{cursor}");
    assert_eq!(sim.bulk_jobs_created(), 1);
    sim.counters().reset();
    let c = connector(&sim, json!({}));
    let ctx = SyncContext::new(ws(), SyncMode::Incremental).with_previous(checkpoint);
    let mut rest = MemorySink::new();
    let report = c.sync(&ctx, &mut rest).await.unwrap();
    assert!(report.used_export_api);
    assert_eq!(sim.bulk_jobs_created(), 1, "the same job, not a new one");
    assert_eq!(
        sim.counters()
            .get("GET /services/data/{version}/jobs/query/{id}/results"),
        2,
        "the two pages left"
    );
    let read = rest
        .records()
        .filter(|r| matches!(r, Record::Contact(_)))
        .count();
    // The 15,000 left, and the follow-up pass's few rows on the newest second.
    assert!((15_000..15_010).contains(&read), "{read} contacts read");
    let mut all = sink.inner;
    all.batches.extend(rest.batches);
    assert_matches_truth(&sim, &all);
}
