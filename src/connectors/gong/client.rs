//! Gong HTTP client: every request goes through [`presets::gong`] (3 per second, 10,000
//! per day, retry with `Retry-After`, timeouts, auth).

use std::borrow::Cow;

use bytes::Bytes;
use http::{Method, Response, StatusCode};

use super::types::{CallsPage, CallsRequest, UsersPage};
use super::{GongConfig, GongCredentials};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{
    Auth, Classify, DefaultClassifier, HttpStack, HttpStats, StaticAuth, Transport,
    TransportConfig, Verdict, presets,
};

/// The extensive endpoint's path.
pub(crate) const CALLS_PATH: &str = "/v2/calls/extensive";
/// The users endpoint's path.
pub(crate) const USERS_PATH: &str = "/v2/users";

/// Gong's status table: the shared one, except that the extensive endpoint's 404 "No calls
/// found" is an answer (an empty page), not a failure.
#[derive(Debug, Clone, Copy)]
struct GongClassifier;

/// Whether a 404 is Gong's "nothing matches the filter" rather than a wrong URL.
fn is_no_calls(response: &Response<Bytes>) -> bool {
    if response.status() != StatusCode::NOT_FOUND {
        return false;
    }
    let body = response.body();
    let head = &body[..body.len().min(4 * 1024)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.contains("no calls found") || text.contains("\"errors\"")
}

impl Classify for GongClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        if is_no_calls(response) {
            return Verdict::Success;
        }
        DefaultClassifier.classify(provider, response)
    }
}

pub(crate) struct GongClient {
    api: JsonApi,
    stack: HttpStack,
    stats: HttpStats,
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl GongClient {
    pub(crate) fn new(
        base_url: &str,
        credentials: &GongCredentials,
        config: &GongConfig,
    ) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config(format!(
                "invalid Gong base URL {base:?}: expected http(s)://host"
            )));
        }
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        let auth: Auth = match credentials {
            GongCredentials::AccessKey {
                access_key,
                access_key_secret,
            } => StaticAuth::basic(access_key, access_key_secret)?.into(),
            GongCredentials::AccessToken(token) => StaticAuth::bearer(token)?.into(),
        };
        // The daily quota is counted by the sync against the count kept with the connection
        // (see `connectors::quota::DailyQuota`), not by an in-memory window that forgets it
        // between runs.
        let preset = presets::gong()
            .with_daily_limit(None)
            .with_optional_rate_limit(config.rate_limit)?
            .with_classifier(GongClassifier)
            .with_stats(stats.clone());
        let stack = preset.build(auth, transport)?;
        Ok(GongClient {
            api: JsonApi::new(base, "gong", "Gong"),
            stack,
            stats,
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// `GET /v2/users`: one page, the cursor in the query string.
    pub(crate) async fn users_page(&self, cursor: Option<&str>) -> Result<UsersPage> {
        let path = match cursor {
            Some(c) => format!("{USERS_PATH}?cursor={}", encode(c)),
            None => USERS_PATH.to_owned(),
        };
        self.api.send(&self.stack, Method::GET, &path, None).await
    }

    /// `POST /v2/calls/extensive`: one page, the cursor in the JSON body. Gong's 404 for a
    /// filter that matches nothing is an empty last page.
    pub(crate) async fn calls_page(&self, req: &CallsRequest<'_>) -> Result<CallsPage> {
        let body = serde_json::to_vec(req)?;
        let resp = self
            .api
            .send_raw(&self.stack, Method::POST, CALLS_PATH, Some(body))
            .await?;
        if is_no_calls(&resp) {
            return Ok(CallsPage::none_found());
        }
        self.api.read(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response<Bytes> {
        Response::builder()
            .status(status)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    #[test]
    fn no_calls_found_is_an_answer_other_404s_are_not() {
        let p: Cow<'static, str> = "gong".into();
        let gong = resp(
            404,
            r#"{"requestId":"4ubcyx","errors":["No calls found corresponding to the provided filters"]}"#,
        );
        assert!(matches!(
            GongClassifier.classify(&p, &gong),
            Verdict::Success
        ));
        assert!(matches!(
            GongClassifier.classify(&p, &resp(404, "<html>Not Found</html>")),
            Verdict::Fail(Error::Api { status: 404, .. })
        ));
        assert!(matches!(
            GongClassifier.classify(&p, &resp(429, "{}")),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            GongClassifier.classify(&p, &resp(200, "{}")),
            Verdict::Success
        ));
    }
}
