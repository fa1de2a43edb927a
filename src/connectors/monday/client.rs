//! `MondayClient`: `POST /v2` GraphQL through the monday preset, with the `API-Version`
//! header, variables (never values spliced into the query text), the complexity budget read
//! from every answer, and monday's errors turned into values.

use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderValue, Method};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::MondayConfig;
use super::types::{Complexity, GqlResponse};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{
    Auth, HttpStack, HttpStats, NonIdempotent, StaticAuth, Transport, TransportConfig, presets,
};
use secrecy::SecretString;

/// The API path.
pub(crate) const API_PATH: &str = "/v2";
/// The API version the connector is written against (sent as `API-Version`).
pub(crate) const API_VERSION: &str = "2025-10";

/// The complexity budget as the last answer reported it, and what was spent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Budget {
    pub last: Option<Complexity>,
    /// Sum of `complexity.query` over every answer.
    pub spent: f64,
    /// Queries answered with a `complexity` block.
    pub queries: u64,
    /// Waits for the budget's reset before a query (pacing).
    pub paced_waits: u64,
}

pub(crate) struct MondayClient {
    api: JsonApi,
    stack: HttpStack,
    stats: HttpStats,
    budget: Mutex<Budget>,
}

/// Whether an error is monday's `CursorExpiredError` (the cursor of `items_page` is valid
/// 60 minutes).
pub(crate) fn is_cursor_expired(e: &Error) -> bool {
    matches!(e, Error::Api { body, .. } if body.contains("CursorExpiredError"))
}

fn lock(m: &Mutex<Budget>) -> std::sync::MutexGuard<'_, Budget> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MondayClient {
    pub(crate) fn new(base_url: &str, token: &SecretString, config: &MondayConfig) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config(format!(
                "invalid monday base URL {base:?}: expected http(s)://host"
            )));
        }
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        // monday takes the raw token in `Authorization` (no `Bearer`).
        let auth: Auth = StaticAuth::header(http::header::AUTHORIZATION, token)?.into();
        let preset = presets::monday()
            .with_optional_rate_limit(config.rate_limit)?
            .with_stats(stats.clone());
        let stack = preset.build(auth, transport)?;
        Ok(MondayClient {
            api: JsonApi::new(base, "monday", "monday.com"),
            stack,
            stats,
            budget: Mutex::new(Budget::default()),
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    pub(crate) fn budget(&self) -> Budget {
        *lock(&self.budget)
    }

    /// Waits for the budget's reset when the last answer left less than its own cost: the
    /// next query of the same shape would be refused.
    async fn pace(&self) {
        let wait = {
            let b = lock(&self.budget);
            b.last.and_then(|c| {
                let (after, cost, reset) = (c.after?, c.query?, c.reset_in_x_seconds?);
                (after < cost && reset > 0.0).then(|| Duration::from_secs_f64(reset.min(60.0)))
            })
        };
        if let Some(wait) = wait {
            tracing::debug!(
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "monday: waiting for the complexity budget to reset"
            );
            lock(&self.budget).paced_waits += 1;
            lock(&self.budget).last = None;
            tokio::time::sleep(wait).await;
        }
    }

    /// A query (`mutation: false`, retried on 5xx and rate limits) or a mutation (only
    /// rate limits are retried: a 5xx may have applied it), with `variables`; `data`
    /// decoded as `T`.
    pub(crate) async fn graphql<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
        mutation: bool,
    ) -> Result<T> {
        self.pace().await;
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
        let mut req = self.api.request(Method::POST, API_PATH, Some(body))?;
        req.headers_mut()
            .insert("API-Version", HeaderValue::from_static(API_VERSION));
        if mutation {
            req.extensions_mut().insert(NonIdempotent);
        }
        let resp = self.stack.send(req).await?;
        let parsed: GqlResponse<Value> = self.api.read(&resp)?;
        let excerpt = || String::from_utf8_lossy(resp.body()).into_owned();
        if parsed.error_code.is_some() || parsed.error_message.is_some() {
            return Err(Error::api("monday", resp.status().as_u16(), &excerpt()));
        }
        if let Some(errors) = parsed.errors.as_ref().filter(|e| !e.is_empty()) {
            tracing::debug!(
                codes = ?errors.iter().map(|e| e.code().unwrap_or_else(|| e.message())).collect::<Vec<_>>(),
                "monday answered with GraphQL errors"
            );
            return Err(Error::api("monday", resp.status().as_u16(), &excerpt()));
        }
        let data = parsed
            .data
            .ok_or_else(|| Error::decode(None, "monday answer without data"))?;
        if let Some(c) = data.get("complexity").filter(|c| !c.is_null())
            && let Ok(c) = serde_json::from_value::<Complexity>(c.clone())
        {
            let mut b = lock(&self.budget);
            b.spent += c.query.unwrap_or(0.0);
            b.queries += 1;
            b.last = Some(c);
        }
        serde_json::from_value(data)
            .map_err(|e| Error::decode(None, format!("unreadable monday answer: {e}")))
    }
}
