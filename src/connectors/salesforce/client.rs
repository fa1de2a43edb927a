//! Salesforce HTTP client: OAuth (refresh-token grant, single flight, rotation kept),
//! `describe`, `query`/`queryAll` and their locators, Bulk API 2.0 query jobs. Every
//! request goes through [`presets::salesforce`](crate::http::presets::salesforce).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use super::types::{Describe, JobInfo, QueryPage};
use super::{SalesforceConfig, SalesforceCredentials};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{
    Auth, HttpStack, HttpStats, HttpTokenEndpoint, OAuthTokens, Transport, TransportConfig, presets,
};

/// What following a locator gave.
#[derive(Debug)]
pub(crate) enum More {
    /// The next batch.
    Page(QueryPage),
    /// The locator is gone (its session ended, it idled out, too many were open): the
    /// query must be restarted from the keyset position. The reason is Salesforce's code.
    Died(&'static str),
}

/// The rotated refresh token and how many rotations there were, shared with the token
/// callback.
pub(crate) type Rotated = Arc<Mutex<(u64, Option<SecretString>)>>;

pub(crate) struct SalesforceClient {
    /// The login origin (and the instance unless the token response names another).
    base: String,
    version: String,
    stack: HttpStack,
    tokens: OAuthTokens,
    stats: HttpStats,
    rotated: Rotated,
}

/// Whether an error says a locator is no longer usable.
fn locator_death(e: &Error) -> Option<&'static str> {
    match e {
        Error::Api { body, .. } if body.contains("INVALID_QUERY_LOCATOR") => {
            Some("INVALID_QUERY_LOCATOR")
        }
        // A locator of an ended session still answers INVALID_SESSION_ID after the stack
        // refreshed the token and re-sent it once (airbyte#84302).
        Error::AuthFailed { message, .. } if message.contains("INVALID_SESSION_ID") => {
            Some("INVALID_SESSION_ID")
        }
        _ => None,
    }
}

impl SalesforceClient {
    pub(crate) fn new(
        base_url: &str,
        credentials: &SalesforceCredentials,
        config: &SalesforceConfig,
    ) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        let SalesforceCredentials::OAuth {
            client_id,
            client_secret,
            refresh_token,
        } = credentials;
        let token_url: Uri = format!("{base}/services/oauth2/token")
            .parse()
            .map_err(|e| Error::config(format!("invalid Salesforce base URL: {e}")))?;
        let endpoint = HttpTokenEndpoint::new(
            transport.clone(),
            "salesforce",
            token_url,
            client_id.clone(),
            client_secret.clone(),
        );
        let rotated: Rotated = Arc::new(Mutex::new((0, None)));
        let keep = rotated.clone();
        let tokens = OAuthTokens::builder("salesforce", endpoint, refresh_token.clone())
            .on_rotation(move |new| {
                let mut r = keep.lock().unwrap_or_else(PoisonError::into_inner);
                r.0 += 1;
                r.1 = Some(new);
            })
            .build();
        let stack = presets::salesforce()
            .with_optional_rate_limit(config.rate_limit)?
            .with_stats(stats.clone())
            .build(Auth::from(tokens.clone()), transport)?;
        Ok(SalesforceClient {
            base,
            version: config.api_version.clone(),
            stack,
            tokens,
            stats,
            rotated,
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// The refresh token Salesforce rotated to during this connector's life, if it did.
    pub(crate) fn rotated_refresh_token(&self) -> Option<SecretString> {
        self.rotation().1
    }

    /// How many rotations there were, and the latest refresh token.
    pub(crate) fn rotation(&self) -> (u64, Option<SecretString>) {
        self.rotated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Exchanges the refresh token before any data request: a rejected grant or client
    /// ends the sync here with [`Error::AuthFailed`].
    pub(crate) async fn authenticate(&self) -> Result<()> {
        self.tokens.authorization().await.map(|_| ())
    }

    /// The API origin: the token response's `instance_url` when it is an http(s) URL,
    /// else the base URL.
    fn api(&self) -> JsonApi {
        let origin = self
            .tokens
            .instance_url()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| {
                reqwest::Url::parse(u)
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
            })
            .unwrap_or_else(|| self.base.clone());
        JsonApi::new(origin, "salesforce", "Salesforce")
    }

    fn data(&self, rest: &str) -> String {
        format!("/services/data/v{}/{rest}", self.version)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, batch: Option<u32>) -> Result<T> {
        let api = self.api();
        let mut req = api.request(Method::GET, path, None)?;
        if let Some(n) = batch
            && let Ok(v) = HeaderValue::from_str(&format!("batchSize={n}"))
        {
            req.headers_mut().insert("sforce-query-options", v);
        }
        let resp = self.stack.send(req).await?;
        api.read(&resp)
    }

    pub(crate) async fn describe(&self, object: &str) -> Result<Describe> {
        self.get(&self.data(&format!("sobjects/{object}/describe")), None)
            .await
    }

    fn query_path(&self, soql: &str, all: bool) -> String {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        self.data(&format!("{}?q={q}", if all { "queryAll" } else { "query" }))
    }

    /// `SELECT COUNT() …`: the count.
    pub(crate) async fn count(&self, soql: &str, all: bool) -> Result<u64> {
        let page: QueryPage = self.get(&self.query_path(soql, all), None).await?;
        Ok(page.total_size)
    }

    /// The first batch of a query (`queryAll` with `all`).
    pub(crate) async fn query(&self, soql: &str, all: bool, batch: u32) -> Result<QueryPage> {
        self.get(&self.query_path(soql, all), Some(batch)).await
    }

    /// The batch a `nextRecordsUrl` points at; a dead locator is [`More::Died`].
    pub(crate) async fn query_more(&self, next_records_url: &str, batch: u32) -> Result<More> {
        if !next_records_url.starts_with("/services/data/") {
            return Err(Error::decode(
                None,
                format!("unexpected Salesforce nextRecordsUrl: {next_records_url:?}"),
            ));
        }
        match self.get(next_records_url, Some(batch)).await {
            Ok(page) => Ok(More::Page(page)),
            Err(e) => match locator_death(&e) {
                Some(reason) => Ok(More::Died(reason)),
                None => Err(e),
            },
        }
    }

    /// Creates a Bulk 2.0 query job (`queryAll` with `all`).
    pub(crate) async fn bulk_create(&self, soql: &str, all: bool) -> Result<JobInfo> {
        let api = self.api();
        let body = serde_json::json!({
            "operation": if all { "queryAll" } else { "query" },
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        });
        api.send(
            &self.stack,
            Method::POST,
            &self.data("jobs/query"),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub(crate) async fn bulk_status(&self, id: &str) -> Result<JobInfo> {
        self.get(&self.data(&format!("jobs/query/{}", encode(id))), None)
            .await
    }

    /// One page of a completed job's CSV results and the next locator (`None` after the
    /// last page, which Salesforce marks with the string `null`).
    pub(crate) async fn bulk_results(
        &self,
        id: &str,
        locator: Option<&str>,
        max_records: u32,
    ) -> Result<(Bytes, Option<String>)> {
        let api = self.api();
        let mut path = self.data(&format!(
            "jobs/query/{}/results?maxRecords={max_records}",
            encode(id)
        ));
        if let Some(l) = locator {
            path.push_str("&locator=");
            path.push_str(&encode(l));
        }
        let mut req = api.request(Method::GET, &path, None)?;
        req.headers_mut()
            .insert(http::header::ACCEPT, HeaderValue::from_static("text/csv"));
        let resp = self.stack.send(req).await?;
        if !resp.status().is_success() {
            return Err(api.status_error(&resp));
        }
        let next = resp
            .headers()
            .get("sforce-locator")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "null")
            .map(str::to_owned);
        Ok((resp.into_body(), next))
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_locators_are_recognized() {
        let invalid = Error::api(
            "salesforce",
            400,
            r#"[{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}]"#,
        );
        assert_eq!(locator_death(&invalid), Some("INVALID_QUERY_LOCATOR"));
        let session = Error::AuthFailed {
            provider: "salesforce".into(),
            message: r#"HTTP 401: [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#.into(),
        };
        assert_eq!(locator_death(&session), Some("INVALID_SESSION_ID"));
        let grant = Error::AuthFailed {
            provider: "salesforce".into(),
            message: "token refresh rejected with HTTP 400: invalid_grant".into(),
        };
        assert_eq!(locator_death(&grant), None);
        assert_eq!(locator_death(&Error::api("salesforce", 500, "x")), None);
    }
}
