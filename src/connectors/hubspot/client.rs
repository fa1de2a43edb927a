//! HubSpot HTTP client: every request goes through the HTTP presets (the REST budget, the
//! separate search budget, retry, timeouts, auth).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request, Uri};
use serde::de::DeserializeOwned;

use super::types::{AssocBatchRequest, AssocBatchResponse, AssocInput, Page, SearchRequest};
use super::{HubSpotConfig, HubSpotCredentials};
use crate::error::{Error, Result};
use crate::http::{
    Auth, HttpStack, HttpStats, HttpTokenEndpoint, OAuthTokens, StaticAuth, Transport,
    TransportConfig, presets,
};

/// Inputs per v4 association batch read (HubSpot's maximum).
pub(crate) const ASSOC_BATCH_MAX: usize = 1_000;

pub(crate) struct HubSpotClient {
    base: String,
    rest: HttpStack,
    search: HttpStack,
    stats: HttpStats,
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl HubSpotClient {
    pub(crate) fn new(
        base_url: &str,
        credentials: &HubSpotCredentials,
        config: &HubSpotConfig,
    ) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        let auth: Auth = match credentials {
            HubSpotCredentials::AccessToken(token) => StaticAuth::bearer(token)?.into(),
            HubSpotCredentials::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let token_url: Uri = format!("{base}/oauth/v1/token")
                    .parse()
                    .map_err(|e| Error::config(format!("invalid HubSpot base URL: {e}")))?;
                let endpoint = HttpTokenEndpoint::new(
                    transport.clone(),
                    "hubspot",
                    token_url,
                    client_id.clone(),
                    client_secret.clone(),
                );
                OAuthTokens::builder("hubspot", endpoint, refresh_token.clone())
                    .build()
                    .into()
            }
        };
        let rest = presets::hubspot()
            .with_optional_rate_limit(config.rate_limit)?
            .with_stats(stats.clone())
            .build(auth.clone(), transport.clone())?;
        let mut search = presets::hubspot_search();
        if config.search_rate_limit.is_some() {
            // A replaced search budget replaces its pacing too.
            search = search.with_min_delay(std::time::Duration::ZERO);
        }
        let search = search
            .with_optional_rate_limit(config.search_rate_limit)?
            .with_stats(stats.clone())
            .build(auth, transport)?;
        Ok(HubSpotClient {
            base,
            rest,
            search,
            stats,
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    async fn send<T: DeserializeOwned>(
        &self,
        stack: &HttpStack,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map(Bytes::from).unwrap_or_default())
            .map_err(|e| Error::config(format!("invalid HubSpot request: {e}")))?;
        let resp = stack.send(req).await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Error::api(
                "hubspot",
                status,
                &String::from_utf8_lossy(resp.body()),
            ));
        }
        serde_json::from_slice(resp.body())
            .map_err(|e| Error::decode(None, format!("unreadable HubSpot response: {e}")))
    }

    /// `GET /crm/v3/objects/{object}`: one page of the list endpoint.
    pub(crate) async fn list_page(
        &self,
        object: &str,
        properties: &[String],
        associations: &[&str],
        after: Option<&str>,
        archived: bool,
    ) -> Result<Page> {
        let mut q = format!("/crm/v3/objects/{object}?limit=100&archived={archived}");
        if !properties.is_empty() {
            q.push_str("&properties=");
            q.push_str(&encode(&properties.join(",")));
        }
        if !associations.is_empty() {
            q.push_str("&associations=");
            q.push_str(&encode(&associations.join(",")));
        }
        if let Some(a) = after {
            q.push_str("&after=");
            q.push_str(&encode(a));
        }
        self.send(&self.rest, Method::GET, &q, None).await
    }

    /// `POST /crm/v3/objects/{object}/search` through the search budget.
    pub(crate) async fn search_page(&self, object: &str, req: &SearchRequest) -> Result<Page> {
        let body = serde_json::to_vec(req)?;
        self.send(
            &self.search,
            Method::POST,
            &format!("/crm/v3/objects/{object}/search"),
            Some(body),
        )
        .await
    }

    /// Every `(from id, to id)` association of the given records through the v4 batch
    /// endpoint: at most 1,000 inputs per request, following each record's own paging.
    pub(crate) async fn associations(
        &self,
        from: &str,
        to: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let path = format!("/crm/v4/associations/{from}/{to}/batch/read");
        for chunk in ids.chunks(ASSOC_BATCH_MAX) {
            let mut inputs: Vec<AssocInput> = chunk
                .iter()
                .map(|id| AssocInput {
                    id: id.clone(),
                    after: None,
                })
                .collect();
            // Per-record paging: re-ask only for the records that have more.
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            while !inputs.is_empty() {
                let body = serde_json::to_vec(&AssocBatchRequest { inputs })?;
                let resp: AssocBatchResponse = self
                    .send(&self.rest, Method::POST, &path, Some(body))
                    .await?;
                if !resp.errors.is_empty() {
                    tracing::debug!(
                        errors = resp.errors.len(),
                        "association batch read reported missing records"
                    );
                }
                inputs = Vec::new();
                for r in resp.results {
                    for t in &r.to {
                        if let Some(id) = t.id() {
                            out.push((r.from.id.clone(), id));
                        }
                    }
                    if let Some(after) = r.paging.and_then(|p| p.next).and_then(|n| n.after) {
                        let rounds = seen.entry(r.from.id.clone()).or_insert(0);
                        *rounds += 1;
                        // A provider that keeps returning the same cursor must not loop us.
                        if *rounds <= 10_000 {
                            inputs.push(AssocInput {
                                id: r.from.id,
                                after: Some(after),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
