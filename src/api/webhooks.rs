//! Webhook receivers (`POST /{provider}` under the host's mount, e.g. `/webhooks`):
//! HubSpot signature v3, monday.com challenge and JWT, Google Drive push channels.
//!
//! A request is verified first (in constant time, with a timestamp window); anything
//! unverified is a 401 and changes nothing. A verified event finds its connection by the
//! provider's account id stored with the connection ([`register_webhook_account`],
//! [`register_drive_channel`]) and asks for an incremental sync of that connector,
//! **coalesced**: events for one connection within [`WebhookConfig::debounce`] make one
//! trigger; while a sync of it is pending, nothing more is needed (it has not read yet);
//! while one is running, exactly one follow-up is triggered when it ends. A burst of any
//! size therefore yields at most one sync more than the one already under way. Polling by
//! the scheduler stays the safety net: a lost webhook costs latency, never data.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{ApiError, BODY_LIMIT};
use crate::Scheduler;
use crate::error::{Error, Result};
use crate::model::ConnectorKind;
use crate::store::{SyncStatus, SyncStore};

pub use crate::connector::WEBHOOK_ACCOUNT_KEY;

/// HubSpot's window for `X-HubSpot-Request-Timestamp`: 5 minutes.
const HUBSPOT_MAX_SKEW_MS: i64 = 300_000;

type HmacSha256 = Hmac<Sha256>;

/// Secrets and timing of the webhook receivers.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The HubSpot app's client secret (signature v3). Without it every HubSpot event is a 401.
    pub hubspot_secret: Option<SecretString>,
    /// The monday app's signing secret (the JWT in `Authorization`). Without it every monday
    /// event is a 401 (the URL `challenge` is still answered).
    pub monday_secret: Option<SecretString>,
    /// The origin providers call (`https://sync.example.com`): the URI in the HubSpot v3
    /// signature. Default: `http://<Host header>`.
    pub public_url: Option<String>,
    /// Events for one connection are gathered until none came for this long.
    pub debounce: Duration,
    /// The longest a trigger waits for a quiet period after the first event of a stream.
    pub max_delay: Duration,
    /// How often a follow-up waiting for a running sync checks whether it ended.
    pub follow_up_poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            hubspot_secret: None,
            monday_secret: None,
            public_url: None,
            debounce: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            follow_up_poll: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field(
                "hubspot_secret",
                &self.hubspot_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "monday_secret",
                &self.monday_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("public_url", &self.public_url)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Reads `{"hubspot": "<client secret>", "monday": "<signing secret>"}` (other keys are
    /// an error; the message never contains a secret).
    pub fn with_secrets_json(mut self, value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| Error::config("webhook secrets: expected a JSON object"))?;
        for (k, v) in map {
            let secret = v
                .as_str()
                .map(|s| SecretString::from(s.to_owned()))
                .ok_or_else(|| Error::config(format!("webhook secrets: {k} must be a string")))?;
            match k.as_str() {
                "hubspot" => self.hubspot_secret = Some(secret),
                "monday" => self.monday_secret = Some(secret),
                other => {
                    return Err(Error::config(format!(
                        "webhook secrets: unknown provider {other:?}; valid: hubspot, monday"
                    )));
                }
            }
        }
        Ok(self)
    }
}

/// Stores the provider account a connection's webhooks come from (HubSpot `portalId`,
/// monday `accountId`) with the connection, so its events find it.
pub async fn register_webhook_account(
    store: &dyn SyncStore,
    workspace_id: Uuid,
    connector: ConnectorKind,
    account_id: &str,
) -> Result<()> {
    let mut members = serde_json::Map::new();
    members.insert(WEBHOOK_ACCOUNT_KEY.into(), json!({ "account": account_id }));
    store
        .merge_sync_cursor(workspace_id, connector, &members)
        .await
}

/// A Google Drive push channel (`changes.watch`) as the receiver knows it.
#[derive(Clone)]
pub struct DriveChannel {
    /// The channel id (`X-Goog-Channel-ID`).
    pub id: String,
    /// The channel token (`X-Goog-Channel-Token`); only its SHA-256 is stored.
    pub token: SecretString,
}

impl std::fmt::Debug for DriveChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveChannel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Stores the Drive push channel of a workspace's `google-drive` connection (when the
/// channel is created), so its notifications find the connection and are verified.
pub async fn register_drive_channel(
    store: &dyn SyncStore,
    workspace_id: Uuid,
    channel: &DriveChannel,
) -> Result<()> {
    let digest = hex(&Sha256::digest(channel.token.expose_secret().as_bytes()));
    let mut members = serde_json::Map::new();
    members.insert(
        WEBHOOK_ACCOUNT_KEY.into(),
        json!({ "account": channel.id, "tokenSha256": digest }),
    );
    store
        .merge_sync_cursor(workspace_id, ConnectorKind::GoogleDrive, &members)
        .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HubSpot v3 signature of a request: `base64(HMAC-SHA256(secret, method + uri + body +
/// timestamp))`, `uri` the full URL as the provider called it.
pub fn hubspot_signature(
    secret: &SecretString,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: &str,
) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(method.as_bytes());
    mac.update(hubspot_decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha256(secret: &SecretString) -> HmacSha256 {
    // Proven invariant: HMAC takes a key of any length (RFC 2104; `Hmac::new_from_slice`
    // hashes a long key and pads a short one), so this never fails.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length")
}

/// HubSpot decodes these percent-encoded characters of the URI before hashing.
fn hubspot_decode_uri(uri: &str) -> String {
    const DECODE: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = uri.to_owned();
    for (enc, dec) in DECODE {
        out = out
            .replace(enc, dec)
            .replace(&enc.to_ascii_lowercase(), dec);
    }
    out
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Digests first: equal lengths, so the comparison's time says nothing of either.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

struct Shared {
    store: Arc<dyn SyncStore>,
    scheduler: Arc<Scheduler>,
    config: WebhookConfig,
    /// Connections with a trigger scheduled (debouncing, or waiting for a running sync).
    scheduled: Mutex<HashMap<(Uuid, ConnectorKind), tokio::time::Instant>>,
    /// Which connection a provider account belongs to.
    accounts: Mutex<AccountIndex>,
}

/// The webhook receivers.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// What a verified webhook request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A trigger was scheduled for the connection.
    Scheduled,
    /// A trigger for it was already scheduled: merged into it.
    Coalesced,
}

impl Webhooks {
    /// Receivers over `store`, triggering through `scheduler`.
    pub fn new(
        store: Arc<dyn SyncStore>,
        scheduler: Arc<Scheduler>,
        config: WebhookConfig,
    ) -> Self {
        Webhooks {
            shared: Arc::new(Shared {
                store,
                scheduler,
                config,
                scheduled: Mutex::new(HashMap::new()),
                accounts: Mutex::new(AccountIndex::default()),
            }),
        }
    }

    /// `POST /{provider}` for `hubspot`, `monday` and `google-drive`, relative to the mount.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/{provider}", post(receive))
            .with_state(self.shared.clone())
            .fallback(super::not_found)
            .method_not_allowed_fallback(super::method_not_allowed)
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
    }

    /// Asks for a coalesced sync of one connection, as a verified event does.
    pub fn notify(&self, workspace_id: Uuid, connector: ConnectorKind) -> WebhookEvent {
        schedule(&self.shared, workspace_id, connector)
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(provider): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return ApiError::from_rejection(r.status(), r.body_text()).into_response(),
    };
    let result = match provider.as_str() {
        "hubspot" => hubspot(&shared, &method, &uri, &headers, &body).await,
        "monday" => monday(&shared, &headers, &body).await,
        "google-drive" => drive(&shared, &headers).await,
        _ => Err(ApiError::not_found("no such webhook provider")),
    };
    match result {
        Ok(value) => (StatusCode::OK, axum::Json(value)).into_response(),
        Err(e) => {
            if e.status() == StatusCode::UNAUTHORIZED {
                tracing::warn!(%provider, "webhook rejected: {}", e.message());
            }
            e.into_response()
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn hubspot(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<Value, ApiError> {
    let secret = shared
        .config
        .hubspot_secret
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized("no HubSpot secret is configured"))?;
    let (Some(signature), Some(timestamp)) = (
        header(headers, "x-hubspot-signature-v3"),
        header(headers, "x-hubspot-request-timestamp"),
    ) else {
        return Err(ApiError::unauthorized("missing HubSpot signature headers"));
    };
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| ApiError::unauthorized("bad HubSpot timestamp"))?;
    let now = shared.store.now().timestamp_millis();
    if (now - ts).abs() > HUBSPOT_MAX_SKEW_MS {
        return Err(ApiError::unauthorized("stale HubSpot timestamp"));
    }
    let origin = match &shared.config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{}", header(headers, "host").unwrap_or("localhost")),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let expected = hubspot_signature(
        secret,
        method.as_str(),
        &format!("{origin}{path}"),
        body,
        timestamp,
    );
    if !ct_eq(expected.as_bytes(), signature.trim().as_bytes()) {
        return Err(ApiError::unauthorized("bad HubSpot signature"));
    }
    let events: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("HubSpot events: {e}")))?;
    let portals: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.get("portalId"))
        .filter_map(|p| match p {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let matched = route_accounts(shared, ConnectorKind::Hubspot, &portals).await?;
    Ok(json!({ "events": events.len(), "connections": matched }))
}

async fn monday(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<Value, ApiError> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("monday event: {e}")))?;
    if let Some(challenge) = payload.get("challenge") {
        return Ok(json!({ "challenge": challenge }));
    }
    let secret = shared
        .config
        .monday_secret
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized("no monday signing secret is configured"))?;
    let token = header(headers, "authorization")
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim())
        .ok_or_else(|| ApiError::unauthorized("missing monday Authorization JWT"))?;
    let claims = verify_jwt_hs256(token, secret, shared.store.now().timestamp())
        .map_err(ApiError::unauthorized)?;
    let account = match claims.get("accountId") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::unauthorized("the monday JWT has no accountId")),
    };
    let matched = route_accounts(shared, ConnectorKind::Monday, &BTreeSet::from([account])).await?;
    Ok(json!({ "events": 1, "connections": matched }))
}

/// Verifies an HS256 JWT (signature in constant time, `exp` in the future) and returns
/// its claims.
fn verify_jwt_hs256(
    token: &str,
    secret: &SecretString,
    now_secs: i64,
) -> std::result::Result<serde_json::Map<String, Value>, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed JWT");
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed JWT header")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("unsupported JWT algorithm");
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "malformed JWT signature")?;
    let mut mac = hmac_sha256(secret);
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    if !ct_eq(&mac.finalize().into_bytes(), &signature) {
        return Err("bad JWT signature");
    }
    let claims: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("malformed JWT claims")?;
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now_secs => Ok(claims),
        Some(_) => Err("expired JWT"),
        None => Err("the JWT has no exp"),
    }
}

async fn drive(shared: &Arc<Shared>, headers: &HeaderMap) -> std::result::Result<Value, ApiError> {
    let (Some(channel), Some(token)) = (
        header(headers, "x-goog-channel-id"),
        header(headers, "x-goog-channel-token"),
    ) else {
        return Err(ApiError::unauthorized("missing channel id or token"));
    };
    let presented = hex(&Sha256::digest(token.as_bytes()));
    // Every candidate is checked (constant time each); an unknown channel is a 401 too. A
    // failure is checked again on a fresh read: the channel may have been created just now.
    let mut verified = Vec::new();
    for refresh in [false, true] {
        let found = find_connections(shared, ConnectorKind::GoogleDrive, channel, refresh).await?;
        verified = found
            .into_iter()
            .filter(|(_, stored)| {
                stored
                    .as_deref()
                    .is_some_and(|s| ct_eq(s.as_bytes(), presented.as_bytes()))
            })
            .map(|(ws, _)| ws)
            .collect();
        if !verified.is_empty() {
            break;
        }
    }
    if verified.is_empty() {
        return Err(ApiError::unauthorized(
            "unknown channel or bad channel token",
        ));
    }
    // `sync` only confirms the channel; changes come as `change`, `update`, … .
    if header(headers, "x-goog-resource-state") == Some("sync") {
        return Ok(json!({ "events": 0, "connections": 0 }));
    }
    for ws in &verified {
        schedule(shared, *ws, ConnectorKind::GoogleDrive);
    }
    Ok(json!({ "events": 1, "connections": verified.len() }))
}

/// (connector, account) → the connections (workspace, stored token digest) it belongs to.
type AccountMap = HashMap<(ConnectorKind, String), Vec<(Uuid, Option<String>)>>;

/// The webhook accounts of every connection, read from the store: rebuilt when older than
/// [`INDEX_TTL`], or on a miss (at most once per [`INDEX_MIN_REFRESH`], so a stream of
/// events for unknown accounts costs one scan a second, not one per event).
#[derive(Default)]
struct AccountIndex {
    map: AccountMap,
    built: Option<tokio::time::Instant>,
}

const INDEX_TTL: Duration = Duration::from_secs(30);
const INDEX_MIN_REFRESH: Duration = Duration::from_secs(1);

async fn build_index(store: &dyn SyncStore) -> Result<AccountMap> {
    let mut map: AccountMap = HashMap::new();
    for ws in store.workspaces().await? {
        for conn in store.list_connections(ws).await? {
            let Some(hook) = conn
                .sync_cursor
                .as_ref()
                .and_then(|c| c.get(WEBHOOK_ACCOUNT_KEY))
            else {
                continue;
            };
            let Some(account) = hook.get("account").and_then(Value::as_str) else {
                continue;
            };
            let digest = hook
                .get("tokenSha256")
                .and_then(Value::as_str)
                .map(str::to_owned);
            map.entry((conn.connector, account.to_owned()))
                .or_default()
                .push((ws, digest));
        }
    }
    Ok(map)
}

/// Connections of `kind` whose webhook account is `account`: (workspace, stored token
/// digest). `refresh` asks for a fresh read (rate-limited) even when the index has an answer.
async fn find_connections(
    shared: &Shared,
    kind: ConnectorKind,
    account: &str,
    refresh: bool,
) -> std::result::Result<Vec<(Uuid, Option<String>)>, ApiError> {
    let key = (kind, account.to_owned());
    let now = tokio::time::Instant::now();
    {
        let index = lock_index(shared);
        let age = index.built.map(|b| now.duration_since(b));
        let fresh = age.is_some_and(|a| a < INDEX_TTL);
        let recent = age.is_some_and(|a| a < INDEX_MIN_REFRESH);
        match index.map.get(&key) {
            Some(found) if fresh && !refresh => return Ok(found.clone()),
            found if recent => return Ok(found.cloned().unwrap_or_default()),
            _ => {}
        }
    }
    let map = build_index(shared.store.as_ref()).await?;
    let found = map.get(&key).cloned().unwrap_or_default();
    let mut index = lock_index(shared);
    index.map = map;
    index.built = Some(now);
    Ok(found)
}

fn lock_index(shared: &Shared) -> std::sync::MutexGuard<'_, AccountIndex> {
    shared
        .accounts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Schedules a sync for each connection of the given accounts; returns how many matched.
async fn route_accounts(
    shared: &Arc<Shared>,
    kind: ConnectorKind,
    accounts: &BTreeSet<String>,
) -> std::result::Result<usize, ApiError> {
    let mut matched = 0;
    for account in accounts {
        let found = find_connections(shared, kind, account, false).await?;
        if found.is_empty() {
            tracing::info!(connector = %kind, "webhook for an account with no connection; ignored");
        }
        for (ws, _) in found {
            matched += 1;
            schedule(shared, ws, kind);
        }
    }
    Ok(matched)
}

fn lock_scheduled(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, HashMap<(Uuid, ConnectorKind), tokio::time::Instant>> {
    shared
        .scheduled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Coalesces: a connection already scheduled only moves its last-event time; otherwise a
/// task waits until no event came for [`WebhookConfig::debounce`] (at most
/// [`WebhookConfig::max_delay`] after the first), then triggers, or leaves it to a pending
/// sync, or waits for a running one to end and follows it.
fn schedule(shared: &Arc<Shared>, ws: Uuid, kind: ConnectorKind) -> WebhookEvent {
    let now = tokio::time::Instant::now();
    {
        let mut scheduled = lock_scheduled(shared);
        if let Some(last) = scheduled.get_mut(&(ws, kind)) {
            *last = now;
            return WebhookEvent::Coalesced;
        }
        scheduled.insert((ws, kind), now);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let first = now;
        let deadline = first + shared.config.max_delay;
        // Trailing debounce: wait for a quiet period.
        loop {
            let last = lock_scheduled(&shared)
                .get(&(ws, kind))
                .copied()
                .unwrap_or(first);
            let quiet_at = (last + shared.config.debounce).min(deadline);
            if tokio::time::Instant::now() >= quiet_at {
                break;
            }
            tokio::time::sleep_until(quiet_at).await;
        }
        loop {
            let active = match shared.store.active_syncs(ws).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook trigger: reading active syncs failed");
                    break;
                }
            };
            let overlapping: Vec<_> = active
                .iter()
                .filter(|s| s.connector.is_none() || s.connector == Some(kind))
                .collect();
            if overlapping.iter().any(|s| s.status == SyncStatus::Pending) {
                // A sync that has not started yet reads these changes: nothing to add.
                break;
            }
            if !overlapping.is_empty() {
                // Running: it may have read before the events; follow it with one more.
                tokio::time::sleep(shared.config.follow_up_poll).await;
                continue;
            }
            // From here on, new events schedule a new trigger (after this one).
            lock_scheduled(&shared).remove(&(ws, kind));
            match shared.scheduler.trigger_sync(ws, Some(kind), None).await {
                Ok(t) => {
                    tracing::info!(workspace_id = %ws, connector = %kind, job_id = %t.job_id, "webhook triggered a sync");
                }
                Err(Error::Conflict { .. }) => {
                    tracing::debug!(workspace_id = %ws, connector = %kind, "a sync started meanwhile");
                }
                Err(e) => tracing::warn!(error = %e, "webhook trigger failed"),
            }
            return;
        }
        lock_scheduled(&shared).remove(&(ws, kind));
    });
    WebhookEvent::Scheduled
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn jwt(secret: &str, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn jwt_signature_and_expiry_are_checked() {
        let secret = SecretString::from("sign".to_owned());
        let good = jwt("sign", json!({"accountId": 7, "exp": 2_000}));
        assert_eq!(
            verify_jwt_hs256(&good, &secret, 1_000).unwrap()["accountId"],
            7
        );
        assert_eq!(verify_jwt_hs256(&good, &secret, 2_000), Err("expired JWT"));
        let wrong = jwt("other", json!({"accountId": 7, "exp": 2_000}));
        assert_eq!(
            verify_jwt_hs256(&wrong, &secret, 1_000),
            Err("bad JWT signature")
        );
        let (h, rest) = good.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let forged = format!(
            "{h}.{}.{s}",
            URL_SAFE_NO_PAD.encode(json!({"accountId": 8, "exp": 2_000}).to_string())
        );
        assert_eq!(
            verify_jwt_hs256(&forged, &secret, 1_000),
            Err("bad JWT signature")
        );
        assert!(verify_jwt_hs256("a.b", &secret, 0).is_err());
    }

    #[test]
    fn hubspot_signature_matches_the_documented_construction() {
        let secret = SecretString::from("client-secret".to_owned());
        let sig = hubspot_signature(
            &secret,
            "POST",
            "https://h.example/webhooks/hubspot",
            b"[]",
            "1700000000000",
        );
        let mut mac = HmacSha256::new_from_slice(b"client-secret").unwrap();
        mac.update(b"POSThttps://h.example/webhooks/hubspot[]1700000000000");
        assert_eq!(sig, STANDARD.encode(mac.finalize().into_bytes()));
        // Percent-encoded reserved characters are decoded before hashing.
        let enc = hubspot_signature(
            &secret,
            "POST",
            "https://h.example/webhooks/hubspot%3Fa%3Ab",
            b"[]",
            "1",
        );
        let dec = hubspot_signature(
            &secret,
            "POST",
            "https://h.example/webhooks/hubspot?a:b",
            b"[]",
            "1",
        );
        assert_eq!(enc, dec);
    }
}
