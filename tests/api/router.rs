//! Every route's success and error codes through reqwest against a bound listener.

use pandora_sync::api::Access;
use pandora_sync::api::WebhookConfig;
use pandora_sync::queue::NewJob;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Served, only, serve, sqlite_store};

const SECRET_TOKEN: &str = "pat-na1-super-secret-hubspot-token";

async fn call(
    s: &Served,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, Value, String) {
    let mut req = s.http.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

/// One caller of one workspace's routes: a token (or none) and the workspace in the path.
struct Caller<'a> {
    s: &'a Served,
    ws: Uuid,
    token: Option<&'static str>,
}

impl<'a> Caller<'a> {
    fn new(s: &'a Served, ws: Uuid, token: Option<&'static str>) -> Self {
        Caller { s, ws, token }
    }

    async fn send(
        &self,
        method: Method,
        rest: &str,
        body: Option<String>,
    ) -> (StatusCode, Value, String) {
        let path = format!("/api/workspaces/{}{rest}", self.ws);
        call(self.s, method, &path, self.token, body).await
    }

    async fn get(&self, rest: &str) -> (StatusCode, Value, String) {
        self.send(Method::GET, rest, None).await
    }

    async fn delete(&self, rest: &str) -> (StatusCode, Value, String) {
        self.send(Method::DELETE, rest, None).await
    }

    async fn patch(&self, rest: &str) -> (StatusCode, Value, String) {
        self.send(Method::PATCH, rest, None).await
    }

    async fn put(&self, rest: &str, body: String) -> (StatusCode, Value, String) {
        self.send(Method::PUT, rest, Some(body)).await
    }

    async fn post(&self, rest: &str, body: Option<String>) -> (StatusCode, Value, String) {
        self.send(Method::POST, rest, body).await
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

fn hubspot_put() -> String {
    json!({"credentials": {"access_token": SECRET_TOKEN}, "config": {"base_url": "http://127.0.0.1:9"}})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_codes_and_shapes() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let s = serve(
        sqlite_store().await,
        &[
            ("tok-a", only(a)),
            ("tok-b", only(b)),
            ("tok-admin", Access::All),
        ],
        WebhookConfig::default(),
    )
    .await;
    let ws = |w: Uuid, rest: &str| format!("/api/workspaces/{w}{rest}");
    let a_as_a = Caller::new(&s, a, Some("tok-a"));
    let a_as_b = Caller::new(&s, a, Some("tok-b"));
    let b_as_admin = Caller::new(&s, b, Some("tok-admin"));
    let b_as_b = Caller::new(&s, b, Some("tok-b"));

    // 401 without (or with a wrong) token, on every route, before anything else.
    for (m, p) in [
        (Method::POST, ws(a, "/sync")),
        (Method::GET, ws(a, "/sync/status")),
        (Method::GET, ws(a, "/sync/jobs")),
        (
            Method::GET,
            ws(a, &format!("/sync/jobs/{}", Uuid::new_v4())),
        ),
        (Method::GET, ws(a, "/sync/history")),
        (Method::GET, ws(a, "/connections")),
        (Method::PUT, ws(a, "/connections/hubspot")),
        (Method::DELETE, ws(a, "/connections/hubspot")),
        (Method::GET, "/api/workspaces/not-a-uuid/connections".into()),
    ] {
        for token in [None, Some("tok-wrong")] {
            let (st, body, _) = call(&s, m.clone(), &p, token, Some("{bad".into())).await;
            assert_error(st, &body, StatusCode::UNAUTHORIZED);
        }
    }

    // A workspace that does not exist yet is a 404, like one the caller may not see.
    let (st, body, _) = a_as_a.get("/connections").await;
    assert_error(st, &body, StatusCode::NOT_FOUND);
    let unseen = body.clone();

    // PUT creates (201), then replaces (200); credentials never come back.
    let (st, body, text) = a_as_a.put("/connections/hubspot", hubspot_put()).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["connector"], "hubspot");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["config"]["base_url"], "http://127.0.0.1:9");
    assert!(
        !text.contains(SECRET_TOKEN) && !text.contains("credentials"),
        "{text}"
    );
    let (st, _, text) = a_as_a.put("/connections/hubspot", hubspot_put()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!text.contains(SECRET_TOKEN));
    // Sealed at rest.
    let row = s
        .store
        .get_connection(a, pandora_sync::ConnectorKind::Hubspot)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !row.credentials
            .as_ref()
            .unwrap()
            .as_stored()
            .contains(SECRET_TOKEN)
    );
    let creds = s.store.credentials(&row).unwrap().unwrap();
    assert!(creds.get("access_token").is_some());

    // Bad bodies: 400 naming the problem.
    for (body, needle) in [
        (
            json!({"credentials": {"access_token": "x"}, "config": {"colour": "red"}}).to_string(),
            "colour",
        ),
        (
            json!({"credentials": {"access_token": "x"}, "extra": 1}).to_string(),
            "extra",
        ),
        (json!({"credentials": {"nope": "x"}}).to_string(), "hubspot"),
        (json!({"credentials": "x"}).to_string(), "object"),
        (
            json!({"credentials": {"access_token": "x"}, "enabled": "yes"}).to_string(),
            "boolean",
        ),
        ("{not json".to_owned(), "JSON"),
        (String::new(), "credentials"),
    ] {
        let (st, v, _) = a_as_a.put("/connections/hubspot", body.clone()).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST);
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (st, v, _) = a_as_a.put("/connections/nosuch", hubspot_put()).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);
    // Over 1 MiB: 413, in the same shape.
    let big = json!({"credentials": {"access_token": "x".repeat((1 << 20) + 10)}}).to_string();
    let (st, v, _) = a_as_a.put("/connections/hubspot", big).await;
    assert_error(st, &v, StatusCode::PAYLOAD_TOO_LARGE);

    // GET connections: status, never credentials.
    let (st, v, text) = a_as_a.get("/connections").await;
    assert_eq!(st, StatusCode::OK);
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    for key in [
        "connector",
        "enabled",
        "status",
        "authMethod",
        "config",
        "lastSyncAt",
        "error",
        "createdAt",
        "updatedAt",
    ] {
        assert!(conns[0].get(key).is_some(), "{key} in {v}");
    }
    assert!(!text.contains(SECRET_TOKEN));

    // Workspace b exists too; each token sees only its own, as 404 exactly like a missing one.
    let (st, _, _) = b_as_b.put("/connections/hubspot", hubspot_put()).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v, _) = a_as_b.get("/connections").await;
    assert_error(st, &v, StatusCode::NOT_FOUND);
    assert_eq!(v, unseen, "not allowed looks exactly like not existing");
    let (st, v, _) = a_as_b.put("/connections/hubspot", hubspot_put()).await;
    assert_error(st, &v, StatusCode::NOT_FOUND);

    // POST /sync: 202 with statusUrl, then 409 while pending.
    let (st, v, _) = a_as_a.post("/sync", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "pending");
    let job_id = v["jobId"].as_str().unwrap().to_owned();
    assert!(Uuid::parse_str(v["syncId"].as_str().unwrap()).is_ok());
    let status_url = v["statusUrl"].as_str().unwrap();
    assert_eq!(status_url, ws(a, &format!("/sync/jobs/{job_id}")));
    let (st, v, _) = a_as_a
        .post(
            "/sync",
            Some(json!({"connectorType": "hubspot"}).to_string()),
        )
        .await;
    assert_error(st, &v, StatusCode::CONFLICT);
    for body in [
        json!({"mode": "sideways"}),
        json!({"connectorType": "myspace"}),
        json!({"connectorType": 3}),
        json!({"other": true}),
    ] {
        let (st, v, _) = a_as_a.post("/sync", Some(body.to_string())).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST);
    }
    // No gong connection: 400.
    let (st, v, _) = b_as_b
        .post(
            "/sync",
            Some(json!({"connectorType": "gong", "mode": "initial"}).to_string()),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);

    // The job: 200 in its workspace, 404 from another one (even for an admin asking there).
    let (st, v, _) = call(&s, Method::GET, status_url, Some("tok-a"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["jobId"], job_id.as_str());
    assert_eq!(v["status"], "pending");
    for key in [
        "progress",
        "result",
        "error",
        "attempts",
        "createdAt",
        "startedAt",
        "completedAt",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let (st, v, _) = b_as_b.get(&format!("/sync/jobs/{job_id}")).await;
    assert_error(st, &v, StatusCode::NOT_FOUND);
    let (st, v, _) = b_as_admin.get(&format!("/sync/jobs/{job_id}")).await;
    assert_error(st, &v, StatusCode::NOT_FOUND);
    let (st, v, _) = a_as_a.get("/sync/jobs/not-a-uuid").await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);

    // Job history: keyset pages with `before`, newest first.
    for n in 0..4 {
        s.store
            .enqueue(NewJob::new(a, "other", json!({"n": n})))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/sync/jobs?limit=2&before={c}"),
            None => "/sync/jobs?limit=2".to_owned(),
        };
        let (st, v, _) = a_as_a.get(&q).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page = v["jobs"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|j| j["jobId"].as_str().unwrap().to_owned()));
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        // A job enqueued meanwhile does not shift the next page.
        if seen.len() == 2 {
            s.store
                .enqueue(NewJob::new(a, "other", json!({"late": true})))
                .await
                .unwrap();
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen.last().unwrap(), &job_id, "the oldest job comes last");
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 5);
    for q in [
        "limit=0",
        "limit=101",
        "limit=x",
        "limit=2&sort=asc",
        "before=nope",
    ] {
        let (st, v, _) = a_as_a.get(&format!("/sync/jobs?{q}")).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST);
    }
    let (st, v, _) = a_as_a
        .get(&format!("/sync/jobs?before={}", Uuid::new_v4()))
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);

    // Status and history.
    let (st, v, _) = a_as_a.get("/sync/status").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["workspaceId"], a.to_string());
    assert_eq!(v["connectors"][0]["connector"], "hubspot");
    assert_eq!(v["connectors"][0]["records"], 0);
    assert!(v["currentJob"]["jobId"].is_string(), "{v}");
    let (st, v, _) = a_as_a.get("/sync/history?connector=hubspot").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["entries"].as_array().unwrap().is_empty(),
        "the trigger's run covers every connector: {v}"
    );
    let (st, v, _) = a_as_a.get("/sync/history").await;
    assert_eq!(st, StatusCode::OK);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["status"], "pending");
    for key in [
        "id",
        "connector",
        "syncType",
        "status",
        "recordsSynced",
        "errors",
        "durationMs",
        "startedAt",
        "completedAt",
    ] {
        assert!(entries[0].get(key).is_some(), "{key} in {v}");
    }
    let (st, v, _) = a_as_a.get("/sync/history?connector=nosuch").await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);

    // DELETE disables (data stays); a missing connection is a 404; a disabled one cannot sync.
    let (st, v, _) = b_as_b.delete("/connections/hubspot").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["enabled"].clone(), v["status"].clone()),
        (json!(false), json!("disabled"))
    );
    let (st, v, _) = b_as_b.delete("/connections/gong").await;
    assert_error(st, &v, StatusCode::NOT_FOUND);
    let (st, v, _) = b_as_b
        .post(
            "/sync",
            Some(json!({"connectorType": "hubspot"}).to_string()),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);
    let (st, v, _) = b_as_b.post("/sync", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);
    // PUT with enabled=true re-enables it.
    let (st, v, _) = b_as_b.put("/connections/hubspot", hubspot_put()).await;
    assert_eq!((st, v["enabled"].clone()), (StatusCode::OK, json!(true)));

    // The framework's own answers are JSON too.
    let (st, v, _) = a_as_a.patch("/connections/hubspot").await;
    assert_error(st, &v, StatusCode::METHOD_NOT_ALLOWED);
    let (st, v, _) = a_as_a.get("/nowhere").await;
    assert_error(st, &v, StatusCode::NOT_FOUND);
    let (st, v, _) = call(
        &s,
        Method::GET,
        "/api/workspaces/not-a-uuid/connections",
        Some("tok-admin"),
        None,
    )
    .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST);
}

/// A pending run over an hour old is failed (and its job cancelled) before a new trigger, so
/// it does not block the workspace with a 409 forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sync_is_failed_before_a_new_trigger() {
    use std::sync::Arc;

    use pandora_sync::store::ManualClock;
    use pandora_sync::{Keyring, SqliteStore, Store};

    let clock = ManualClock::new(chrono::Utc::now());
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap()
        .with_keyring(Keyring::new("test", [7u8; 32]).unwrap())
        .with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    let a = Uuid::new_v4();
    let s = serve(
        Arc::new(store),
        &[("tok", only(a))],
        WebhookConfig::default(),
    )
    .await;
    let ws = |rest: &str| format!("/api/workspaces/{a}{rest}");
    let (st, _, _) = call(
        &s,
        Method::PUT,
        &ws("/connections/hubspot"),
        Some("tok"),
        Some(hubspot_put()),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, first, _) = call(&s, Method::POST, &ws("/sync"), Some("tok"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    clock.advance(chrono::Duration::minutes(30));
    let (st, v, _) = call(&s, Method::POST, &ws("/sync"), Some("tok"), None).await;
    assert_error(st, &v, StatusCode::CONFLICT);
    clock.advance(chrono::Duration::minutes(31));
    let (st, second, _) = call(&s, Method::POST, &ws("/sync"), Some("tok"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{second}");
    let (_, old, _) = call(
        &s,
        Method::GET,
        first["statusUrl"].as_str().unwrap(),
        Some("tok"),
        None,
    )
    .await;
    assert_eq!(old["status"], "cancelled", "{old}");
    let (_, history, _) = call(&s, Method::GET, &ws("/sync/history"), Some("tok"), None).await;
    let statuses: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "failed"]);
}
