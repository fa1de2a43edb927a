//! The Salesforce simulator's own behaviour, over HTTP: what the connector relies on.

use pandora_sync::simulator::{
    FaultConfig, LocatorDeath, SalesforceObject as O, SalesforceSim, SalesforceSimConfig,
};
use serde_json::{Value, json};

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

struct Client {
    http: reqwest::Client,
    base: String,
    bearer: String,
}

async fn login(sim: &SalesforceSim) -> Client {
    let http = reqwest::Client::new();
    let token: Value = http
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
    Client {
        base: sim.base_url(),
        bearer: format!("Bearer {}", token["access_token"].as_str().unwrap()),
        http,
    }
}

impl Client {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.bearer)
            .header("sforce-query-options", "batchSize=200")
            .send()
            .await
            .unwrap()
    }

    async fn query(&self, q: &str, all: bool) -> reqwest::Response {
        let endpoint = if all { "queryAll" } else { "query" };
        self.get(&format!(
            "/services/data/v62.0/{endpoint}?{}",
            form(&[("q", q)])
        ))
        .await
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.bearer)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body[0]["errorCode"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn bulk_jobs_complete_page_by_locator_and_fail() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        accounts: 7,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = login(&sim).await;
    let job: Value = c
        .post(
            "/services/data/v62.0/jobs/query",
            json!({"operation": "queryAll", "query": "SELECT Id, LastName, Account.Name FROM Contact WHERE AccountId != null ORDER BY Id"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "UploadComplete", "{job}");
    let id = job["id"].as_str().unwrap();
    let results = format!("/services/data/v62.0/jobs/query/{id}/results?maxRecords=50");
    assert_eq!(
        code(c.get(&results).await).await,
        (412, "JOB_NOT_COMPLETE".into())
    );
    let status = |s: Value| s["state"].as_str().unwrap().to_owned();
    let path = format!("/services/data/v62.0/jobs/query/{id}");
    assert_eq!(
        status(c.get(&path).await.json().await.unwrap()),
        "InProgress"
    );
    assert_eq!(
        status(c.get(&path).await.json().await.unwrap()),
        "JobComplete"
    );
    let other_version = format!("/services/data/v61.0/jobs/query/{id}/results");
    assert_eq!(c.get(&other_version).await.status(), 409);
    let (mut rows, mut locator, mut pages) = (0usize, String::new(), 0);
    loop {
        let url = if locator.is_empty() {
            results.clone()
        } else {
            format!("{results}&locator={locator}")
        };
        let r = c.get(&url).await;
        assert_eq!(r.status(), 200);
        let next = r.headers()["sforce-locator"].to_str().unwrap().to_owned();
        let n: usize = r.headers()["sforce-numberofrecords"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with("\"Id\",\"LastName\",\"Account.Name\"\n"),
            "{body}"
        );
        assert_eq!(body.lines().count(), n + 1);
        rows += n;
        pages += 1;
        if next == "null" {
            break;
        }
        locator = next;
    }
    let expected = sim
        .records(O::Contact)
        .iter()
        .filter(|r| !r.get("AccountId").is_null())
        .count();
    assert_eq!(rows, expected);
    assert!(pages >= 2, "{pages} pages of 50");

    // A failed job says so, and has no results.
    sim.fail_next_bulk_jobs(1);
    let job: Value = c
        .post(
            "/services/data/v62.0/jobs/query",
            json!({"operation": "query", "query": "SELECT Id FROM Account"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/services/data/v62.0/jobs/query/{}",
        job["id"].as_str().unwrap()
    );
    c.get(&path).await;
    let info: Value = c.get(&path).await.json().await.unwrap();
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"].is_string());
    // Aggregates are refused.
    let r = c
        .post(
            "/services/data/v62.0/jobs/query",
            json!({"operation": "query", "query": "SELECT COUNT() FROM Account"}),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn locators_die_with_their_session_idle_and_past_ten_open() {
    for death in [
        LocatorDeath::InvalidQueryLocator,
        LocatorDeath::InvalidSessionId,
    ] {
        let sim = SalesforceSim::start(SalesforceSimConfig {
            contacts: 500,
            locator_death: death,
            ..Default::default()
        })
        .await
        .unwrap();
        let c = login(&sim).await;
        let first: Value = c
            .query("SELECT Id FROM Contact", false)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(first["records"].as_array().unwrap().len(), 200);
        assert_eq!(first["totalSize"], 500);
        let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
        assert!(next.starts_with("/services/data/v62.0/query/"));
        // A new token ends the session: its locators die.
        let c2 = login(&sim).await;
        let expected = match death {
            LocatorDeath::InvalidQueryLocator => (400, "INVALID_QUERY_LOCATOR".to_owned()),
            LocatorDeath::InvalidSessionId => (401, "INVALID_SESSION_ID".to_owned()),
        };
        assert_eq!(code(c2.get(&next).await).await, expected);
        // The old token is dead too.
        assert_eq!(
            code(c.query("SELECT Id FROM Contact", false).await).await,
            (401, "INVALID_SESSION_ID".into())
        );
        // Idle locators die.
        let page: Value = c2
            .query("SELECT Id FROM Contact", true)
            .await
            .json()
            .await
            .unwrap();
        sim.expire_locators();
        assert_eq!(
            code(c2.get(page["nextRecordsUrl"].as_str().unwrap()).await).await,
            (400, "INVALID_QUERY_LOCATOR".into())
        );
        // An eleventh open locator closes the oldest.
        let mut urls = Vec::new();
        for _ in 0..11 {
            let p: Value = c2
                .query("SELECT Id FROM Contact", false)
                .await
                .json()
                .await
                .unwrap();
            urls.push(p["nextRecordsUrl"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            code(c2.get(&urls[0]).await).await,
            (400, "INVALID_QUERY_LOCATOR".into())
        );
        assert_eq!(c2.get(&urls[10]).await.status(), 200);
    }
}

#[tokio::test]
async fn sessions_expire_limits_apply_and_faults_use_real_bodies() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        session_requests: Some(2),
        daily_limit: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = login(&sim).await;
    let r = c.get("/services/data/v62.0/limits").await;
    assert_eq!(r.headers()["sforce-limit-info"], "api-usage=1/5");
    let limits: Value = r.json().await.unwrap();
    assert_eq!(limits["DailyApiRequests"]["Max"], 5);
    assert_eq!(c.get("/services/data/v62.0/limits").await.status(), 200);
    assert_eq!(
        code(c.get("/services/data/v62.0/limits").await).await,
        (401, "INVALID_SESSION_ID".into())
    );
    let c = login(&sim).await;
    for _ in 0..3 {
        sim.expire_sessions_after(None);
        let _ = c.get("/services/data/v62.0/limits").await;
    }
    let r = c.get("/services/data/v62.0/limits").await;
    assert_eq!(r.headers()["sforce-limit-info"], "api-usage=5/5");
    assert_eq!(code(r).await, (403, "REQUEST_LIMIT_EXCEEDED".into()));

    sim.reset_daily_usage();
    sim.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..Default::default()
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let r = c.get("/services/data/v62.0/limits").await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if status == 500 {
            assert!(body.contains("UNKNOWN_EXCEPTION"), "{body}");
        } else {
            assert!(body.starts_with("<html>"), "{status}: {body}");
        }
        seen.insert(status);
    }
    assert_eq!(seen.len(), 3, "500, 502 and 503: {seen:?}");
}

#[tokio::test]
async fn deletes_cascade_to_the_recycle_bin_and_undelete_restores() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default())
        .await
        .unwrap();
    let account = sim
        .records(O::Account)
        .into_iter()
        .find(|a| {
            sim.records(O::Contact)
                .iter()
                .any(|c| c.get("AccountId").as_str() == Some(a.id.as_str()))
        })
        .unwrap()
        .id;
    let n = sim.delete(O::Account, &account);
    assert!(n >= 2, "{n}");
    let c = login(&sim).await;
    let q = format!("SELECT Id, IsDeleted FROM Contact WHERE AccountId = '{account}'");
    let live: Value = c.query(&q, false).await.json().await.unwrap();
    assert_eq!(live["totalSize"], 0);
    let all: Value = c.query(&q, true).await.json().await.unwrap();
    assert!(all["totalSize"].as_u64().unwrap() >= 1);
    assert!(
        all["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["IsDeleted"] == true)
    );
    assert_eq!(sim.undelete(O::Account, &account), n);
    let live: Value = c.query(&q, false).await.json().await.unwrap();
    assert_eq!(live["totalSize"], all["totalSize"]);
}
