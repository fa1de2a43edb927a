//! Fireflies HTTP client: every request is a `POST /graphql` through
//! [`presets::fireflies`] (60 per minute or the config's `rate_limit`, retry on 5xx and
//! short `too_many_requests`, a far `retryAfter` as the daily quota, `auth_failed` as
//! rejected credentials, timeouts, bearer auth). Values travel as typed GraphQL variables,
//! never spliced into the query text.

use http::Method;
use serde_json::{Value, json};

use super::types::{GraphqlResponse, error_code, error_message};
use super::{FirefliesConfig, FirefliesCredentials};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{HttpStack, HttpStats, StaticAuth, Transport, TransportConfig, presets};

/// The GraphQL endpoint's path.
pub(crate) const GRAPHQL_PATH: &str = "/graphql";

/// The transcript fields the connector stores (and nothing else: pages stay small).
const ROW_FIELDS: &str = "id title date duration host_email organizer_email participants \
    meeting_attendees { displayName email name } transcript_url \
    summary { overview short_summary keywords action_items }";

/// The list query; `with_users` also asks for the team's emails (the default internal
/// domains) in the same request.
pub(crate) fn list_query(with_users: bool) -> String {
    let users = if with_users { " users { email }" } else { "" };
    format!(
        "query Transcripts($fromDate: DateTime, $toDate: DateTime, $limit: Int, $skip: Int) {{ \
         transcripts(fromDate: $fromDate, toDate: $toDate, limit: $limit, skip: $skip) {{ ...Row }}{users} }} \
         fragment Row on Transcript {{ {ROW_FIELDS} }}"
    )
}

/// One request reading the sentences of `n` transcripts: `t0: transcript(id: $id0) {…}`, ….
pub(crate) fn sentences_query(n: usize) -> String {
    let vars: Vec<String> = (0..n).map(|i| format!("$id{i}: String!")).collect();
    let fields: Vec<String> = (0..n)
        .map(|i| format!("t{i}: transcript(id: $id{i}) {{ id sentences {{ speaker_name text }} }}"))
        .collect();
    format!(
        "query Sentences({}) {{ {} }}",
        vars.join(", "),
        fields.join(" ")
    )
}

pub(crate) struct FirefliesClient {
    api: JsonApi,
    stack: HttpStack,
    stats: HttpStats,
}

impl FirefliesClient {
    pub(crate) fn new(
        base_url: &str,
        credentials: &FirefliesCredentials,
        config: &FirefliesConfig,
    ) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config(format!(
                "invalid Fireflies base URL {base:?}: expected http(s)://host"
            )));
        }
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        let FirefliesCredentials::ApiKey(key) = credentials;
        let auth = StaticAuth::bearer(key)?;
        let stack = presets::fireflies()
            .with_optional_rate_limit(config.rate_limit)?
            .with_stats(stats.clone())
            .build(auth, transport)?;
        Ok(FirefliesClient {
            api: JsonApi::new(base, "fireflies", "Fireflies"),
            stack,
            stats,
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// One GraphQL request; the answer as sent (`data` and `errors[]`). Rate limits and
    /// rejected keys were turned into errors by the stack's classifier, on HTTP 200 too.
    pub(crate) async fn query(&self, query: &str, variables: Value) -> Result<GraphqlResponse> {
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
        self.api
            .send(&self.stack, Method::POST, GRAPHQL_PATH, Some(body))
            .await
    }
}

/// An `errors[]` entry as an error (its message redacted by [`Error::api`]).
pub(crate) fn graphql_error(e: &Value) -> Error {
    let code = error_code(e).unwrap_or("unknown");
    let status = e
        .pointer("/extensions/status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(400);
    Error::api(
        "fireflies",
        status,
        &format!("{code}: {}", error_message(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_well_formed() {
        // The simulator's parser validates them against the schema in the e2e tests; here
        // only their shape.
        let q = list_query(true);
        assert!(q.contains("users { email }") && q.contains("fragment Row on Transcript"));
        assert!(!list_query(false).contains("users"));
        let s = sentences_query(2);
        assert!(s.starts_with("query Sentences($id0: String!, $id1: String!)"));
        assert!(s.contains("t1: transcript(id: $id1)"));
    }

    #[test]
    fn graphql_errors_keep_code_and_status() {
        let e = graphql_error(
            &json!({"message": "limit too big", "code": "invalid_arguments", "extensions": {"status": 400}}),
        );
        assert!(matches!(&e, Error::Api { status: 400, .. }), "{e}");
        assert!(e.to_string().contains("invalid_arguments"), "{e}");
    }
}
