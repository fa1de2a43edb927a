//! Webhooks: signatures verified (and rejected), the monday challenge, Drive channels, and a
//! burst of 1,000 HubSpot events coalesced into at most one more sync that brings the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use pandora_sync::api::{
    Access, DriveChannel, WebhookConfig, hubspot_signature, register_drive_channel,
    register_webhook_account,
};
use pandora_sync::model::RecordKind;
use pandora_sync::queue::{JobStatus, SYNC_JOB, Worker, WorkerConfig};
use pandora_sync::simulator::{HubSpotObject, HubSpotSim, HubSpotSimConfig};
use pandora_sync::store::NewConnection;
use pandora_sync::{ConnectorKind, ConnectorRegistry, Orchestrator, Record, SyncJobHandler};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Served, serve, sqlite_store};

const HS_SECRET: &str = "hubspot-app-client-secret";
const PORTAL: u64 = 62_515;

fn config() -> WebhookConfig {
    WebhookConfig {
        hubspot_secret: Some(SecretString::from(HS_SECRET.to_owned())),
        monday_secret: Some(SecretString::from("monday-signing".to_owned())),
        debounce: Duration::from_millis(200),
        follow_up_poll: Duration::from_millis(50),
        ..Default::default()
    }
}

/// Posts HubSpot events signed with `secret` at `timestamp_ms`; `tamper` changes the body
/// after signing.
async fn post_hubspot(
    s: &Served,
    events: &Value,
    secret: &str,
    timestamp_ms: i64,
    tamper: bool,
) -> StatusCode {
    let url = s.url("/webhooks/hubspot");
    let body = events.to_string();
    let ts = timestamp_ms.to_string();
    let sig = hubspot_signature(
        &SecretString::from(secret.to_owned()),
        "POST",
        &url,
        body.as_bytes(),
        &ts,
    );
    let body = if tamper {
        body.replace("62515", "62516")
    } else {
        body
    };
    s.http
        .post(&url)
        .header("x-hubspot-signature-v3", sig)
        .header("x-hubspot-request-timestamp", ts)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

fn event(object_id: u64) -> Value {
    json!([{
        "eventId": object_id, "subscriptionId": 1, "portalId": PORTAL, "appId": 9,
        "occurredAt": Utc::now().timestamp_millis(), "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0, "objectId": object_id, "propertyName": "jobtitle",
    }])
}

async fn sync_jobs(s: &Served, ws: Uuid) -> Vec<pandora_sync::queue::Job> {
    s.store
        .list_jobs(ws, 100, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.job_type == SYNC_JOB)
        .collect()
}

async fn wait_idle(s: &Served, ws: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = sync_jobs(s, ws).await;
        if jobs.iter().all(|j| j.status.is_finished()) {
            for j in &jobs {
                assert_eq!(j.status, JobStatus::Completed, "{j:?}");
            }
            return;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_events_are_verified_coalesced_and_bring_the_change() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        companies: 5,
        contacts: 12,
        deals: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let ws = Uuid::new_v4();
    let s = serve(sqlite_store().await, &[("tok", Access::All)], config()).await;
    let put = json!({
        "credentials": {"access_token": sim.config().access_token},
        "config": {"base_url": sim.base_url()},
    });
    let resp = s
        .http
        .put(s.url(&format!("/api/workspaces/{ws}/connections/hubspot")))
        .bearer_auth("tok")
        .json(&put)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    register_webhook_account(
        s.store.as_ref(),
        ws,
        ConnectorKind::Hubspot,
        &PORTAL.to_string(),
    )
    .await
    .unwrap();

    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::new(
        s.store.clone(),
        ConnectorRegistry::builtin(&BTreeMap::new()),
    );
    let worker = Worker::new(s.store.clone())
        .listen()
        .config(WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .register(SYNC_JOB, Arc::new(SyncJobHandler::new(orchestrator)));
    let worker = tokio::spawn(worker.run(shutdown.clone()));

    // The first sync, triggered over HTTP.
    let resp = s
        .http
        .post(s.url(&format!("/api/workspaces/{ws}/sync")))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    wait_idle(&s, ws).await;
    assert_eq!(sync_jobs(&s, ws).await.len(), 1);

    // Unverified requests are 401 and change nothing.
    let now = Utc::now().timestamp_millis();
    assert_eq!(
        post_hubspot(&s, &event(1), HS_SECRET, now, true).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_hubspot(&s, &event(1), "wrong-secret", now, false).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_hubspot(&s, &event(1), HS_SECRET, now - 301_000, false).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_hubspot(&s, &event(1), HS_SECRET, now + 301_000, false).await,
        StatusCode::UNAUTHORIZED
    );
    let unsigned = s
        .http
        .post(s.url("/webhooks/hubspot"))
        .body(event(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sync_jobs(&s, ws).await.len(),
        1,
        "rejected events triggered nothing"
    );

    // The portal changes; a sync is already under way when 1,000 events arrive.
    assert!(sim.modify(
        HubSpotObject::Contacts,
        3,
        [("jobtitle", "Chief Webhook Officer")]
    ));
    let resp = s
        .http
        .post(s.url(&format!("/api/workspaces/{ws}/sync")))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let burst_start = Utc::now();
    let s = Arc::new(s);
    let mut sends = tokio::task::JoinSet::new();
    for lane in 0..20u64 {
        let s = s.clone();
        sends.spawn(async move {
            for i in 0..50u64 {
                let now = Utc::now().timestamp_millis();
                let st = post_hubspot(&s, &event(lane * 50 + i), HS_SECRET, now, false).await;
                assert_eq!(st, StatusCode::OK);
            }
        });
    }
    while let Some(r) = sends.join_next().await {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    wait_idle(&s, ws).await;
    let jobs = sync_jobs(&s, ws).await;
    // The first sync, the manual one, and at most one follow-up for the whole burst.
    assert!(
        (2..=3).contains(&jobs.len()),
        "{} sync jobs: {jobs:?}",
        jobs.len()
    );
    let after_burst: Vec<_> = jobs
        .iter()
        .filter(|j| j.created_at >= burst_start)
        .collect();
    assert!(after_burst.len() <= 1, "{after_burst:?}");

    let stored = s
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "3")
        .await
        .unwrap();
    let Some(Record::Contact(c)) = stored else {
        panic!("contact 3: {stored:?}")
    };
    assert_eq!(c.title.as_deref(), Some("Chief Webhook Officer"));

    // With no sync under way, one event becomes one sync; its latency from the event.
    assert!(sim.modify(HubSpotObject::Contacts, 4, [("jobtitle", "Head of Hooks")]));
    let sent = Utc::now();
    assert_eq!(
        post_hubspot(&s, &event(4), HS_SECRET, sent.timestamp_millis(), false).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_idle(&s, ws).await;
    let jobs = sync_jobs(&s, ws).await;
    let newest = jobs.iter().max_by_key(|j| j.created_at).unwrap();
    assert!(newest.created_at >= sent, "the event triggered a sync");
    let started = newest.started_at.unwrap();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "webhook to sync start: {} ms (debounce 200 ms, SQLite worker polling every 50 ms)",
            (started - sent).num_milliseconds()
        );
    }
    let stored = s
        .store
        .get_record(ws, RecordKind::Contact, ConnectorKind::Hubspot, "4")
        .await
        .unwrap();
    let Some(Record::Contact(c)) = stored else {
        panic!("contact 4: {stored:?}")
    };
    assert_eq!(c.title.as_deref(), Some("Head of Hooks"));

    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

fn monday_jwt(secret: &str, claims: &Value) -> String {
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monday_and_drive_are_verified() {
    let store = sqlite_store().await;
    let (ws_m, ws_d) = (Uuid::new_v4(), Uuid::new_v4());
    store
        .create_connection(NewConnection::new(ws_m, ConnectorKind::Monday, "api_key"))
        .await
        .unwrap();
    register_webhook_account(store.as_ref(), ws_m, ConnectorKind::Monday, "777")
        .await
        .unwrap();
    store
        .create_connection(NewConnection::new(
            ws_d,
            ConnectorKind::GoogleDrive,
            "oauth2",
        ))
        .await
        .unwrap();
    let channel = DriveChannel {
        id: "chan-1".into(),
        token: SecretString::from("chan-token".to_owned()),
    };
    register_drive_channel(store.as_ref(), ws_d, &channel)
        .await
        .unwrap();
    let s = serve(store, &[], config()).await;
    let url = s.url("/webhooks/monday");

    // The URL challenge is echoed.
    let resp = s
        .http
        .post(&url)
        .json(&json!({"challenge": "abc123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"challenge": "abc123"})
    );

    let exp = Utc::now().timestamp() + 60;
    let event = json!({"event": {"type": "update_column_value", "boardId": 1, "pulseId": 2}});
    for (token, want) in [
        (
            monday_jwt("monday-signing", &json!({"accountId": 777, "exp": exp})),
            StatusCode::OK,
        ),
        (
            monday_jwt("wrong", &json!({"accountId": 777, "exp": exp})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            monday_jwt(
                "monday-signing",
                &json!({"accountId": 777, "exp": exp - 120}),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        ("garbage".to_owned(), StatusCode::UNAUTHORIZED),
    ] {
        let resp = s
            .http
            .post(&url)
            .header("authorization", token)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
    let resp = s.http.post(&url).json(&event).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let drive = |id: &str, token: &str, state: &str| {
        s.http
            .post(s.url("/webhooks/google-drive"))
            .header("x-goog-channel-id", id)
            .header("x-goog-channel-token", token)
            .header("x-goog-resource-state", state)
            .header("x-goog-message-number", "1")
            .send()
    };
    assert_eq!(
        drive("chan-1", "chan-token", "sync")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        drive("chan-1", "wrong", "change").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        drive("chan-2", "chan-token", "change")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        drive("chan-1", "chan-token", "change")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Verified events asked for one sync each of their connection, after the debounce.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (ws, kind) in [(ws_m, "monday"), (ws_d, "google-drive")] {
        let jobs = sync_jobs(&s, ws).await;
        assert_eq!(jobs.len(), 1, "{kind}: {jobs:?}");
        assert_eq!(jobs[0].payload["connector"], kind);
    }
    let resp = s
        .http
        .post(s.url("/webhooks/myspace"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
