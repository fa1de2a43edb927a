//! HubSpot HTTP client: every request goes through the HTTP presets (the REST budget, the
//! separate search budget, retry, timeouts, auth).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use http::{Method, Uri};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::types::{
    AssocBatchRequest, AssocBatchResponse, AssocInput, Page, PropertiesResponse, SearchRequest,
};
use super::{HubSpotConfig, HubSpotCredentials};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{
    Auth, HttpStack, HttpStats, HttpTokenEndpoint, OAuthTokens, StaticAuth, Transport,
    TransportConfig, presets,
};

/// Inputs per v4 association batch read (HubSpot's maximum).
pub(crate) const ASSOC_BATCH_MAX: usize = 1_000;

pub(crate) struct HubSpotClient {
    api: JsonApi,
    rest: HttpStack,
    search: HttpStack,
    /// For `GET /account-info/v3/details` only: its own budget, so that the REST budget's
    /// quota stop (which follows a `DAILY` 429) does not refuse the one request that tells
    /// when the quota resets.
    account: HttpStack,
    /// The account's UTC offset, fetched at most once per connector (one sync), and only
    /// when a quota stop needs it; `None` inside when it could not be read.
    utc_offset: OnceCell<Option<FixedOffset>>,
    /// `GET /account-info/v3/details`, read at most once per connector (the portal id and
    /// the time zone both come from it); only a successful answer is kept.
    details: OnceCell<serde_json::Value>,
    stats: HttpStats,
}

/// When HubSpot's daily quota resets: the next midnight in the account's time zone (given
/// as its UTC offset now), or the next midnight UTC when the offset is unknown. An offset
/// taken now can be an hour off across a daylight-saving change before that midnight.
pub(crate) fn daily_reset(now: DateTime<Utc>, offset: Option<FixedOffset>) -> DateTime<Utc> {
    // `with_timezone` panics at the ends of time; the checked form does not.
    let day = match offset {
        Some(o) => now.naive_utc().checked_add_offset(o).map(|l| l.date()),
        None => Some(now.date_naive()),
    };
    let midnight = day
        .and_then(|d| d.succ_opt())
        .map(|d| d.and_time(NaiveTime::MIN));
    match (midnight, offset) {
        (Some(m), Some(o)) => m
            .and_local_timezone(o)
            .single()
            .map(|t| t.with_timezone(&Utc)),
        (Some(m), None) => Some(m.and_utc()),
        (None, _) => None,
    }
    .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The account's current UTC offset from `GET /account-info/v3/details`
/// (`utcOffsetMilliseconds`, else `utcOffset` such as `-05:00`).
pub(crate) fn account_offset(details: &serde_json::Value) -> Option<FixedOffset> {
    let from_ms = details
        .get("utcOffsetMilliseconds")
        .and_then(serde_json::Value::as_i64)
        .and_then(|ms| i32::try_from(ms / 1000).ok())
        .and_then(FixedOffset::east_opt);
    from_ms.or_else(|| {
        details
            .get("utcOffset")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| s.trim().parse::<FixedOffset>().ok())
    })
}

pub(crate) fn encode(s: &str) -> String {
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
        let search = presets::hubspot_search()
            .with_optional_rate_limit(config.search_rate_limit)?
            .with_stats(stats.clone())
            .build(auth.clone(), transport.clone())?;
        let account = presets::hubspot()
            .with_stats(stats.clone())
            .build(auth, transport)?;
        Ok(HubSpotClient {
            api: JsonApi::new(base, "hubspot", "HubSpot"),
            rest,
            search,
            account,
            utc_offset: OnceCell::new(),
            details: OnceCell::new(),
            stats,
        })
    }

    /// A quota stop (HubSpot's `DAILY` 429, or the budget's stop that follows it) carries
    /// the reset at the next midnight in the account's time zone.
    async fn with_daily_reset(&self, error: Error) -> Error {
        match error {
            Error::QuotaExhausted { provider, .. } => {
                let offset = *self
                    .utc_offset
                    .get_or_init(|| async { self.fetch_utc_offset().await })
                    .await;
                let resets_at = daily_reset(Utc::now(), offset);
                tracing::warn!(%resets_at, "HubSpot daily quota used up; the sync stops until the reset");
                Error::QuotaExhausted {
                    provider,
                    resets_at: Some(resets_at),
                }
            }
            other => other,
        }
    }

    /// `GET /account-info/v3/details`, asked once per connector whoever needs it first.
    async fn account_details(&self) -> Result<&serde_json::Value> {
        self.details
            .get_or_try_init(|| async {
                self.api
                    .send(&self.account, Method::GET, "/account-info/v3/details", None)
                    .await
            })
            .await
    }

    /// The portal id from `GET /account-info/v3/details` (a number, or its text).
    pub(crate) async fn portal_id(&self) -> Result<Option<String>> {
        let details = self.account_details().await?;
        Ok(match details.get("portalId") {
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        })
    }

    async fn fetch_utc_offset(&self) -> Option<FixedOffset> {
        match self.account_details().await {
            Ok(details) => {
                let offset = account_offset(details);
                tracing::debug!(
                    time_zone = details.get("timeZone").and_then(serde_json::Value::as_str).unwrap_or("?"),
                    offset = ?offset,
                    "HubSpot account time zone"
                );
                offset
            }
            Err(e) => {
                tracing::warn!(error = %e, "HubSpot account time zone unknown; the quota reset is taken as midnight UTC");
                None
            }
        }
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
        match self.api.send(stack, method, path_and_query, body).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.with_daily_reset(e).await),
        }
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
        let body = self
            .list_page_body(object, properties, associations, after, archived)
            .await?;
        self.parse_page(&body)
    }

    /// [`HubSpotClient::list_page`]'s answer unparsed: a 2xx body (read it with
    /// [`HubSpotClient::parse_page`]), so the parse, its allocations and their release can
    /// happen on the thread that uses the page.
    pub(crate) async fn list_page_body(
        &self,
        object: &str,
        properties: &[String],
        associations: &[&str],
        after: Option<&str>,
        archived: bool,
    ) -> Result<Bytes> {
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
        let resp = match self.api.send_raw(&self.rest, Method::GET, &q, None).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.with_daily_reset(e).await),
        };
        if !resp.status().is_success() {
            return Err(self.api.status_error(&resp));
        }
        Ok(resp.into_body())
    }

    /// A list or search page from its body.
    pub(crate) fn parse_page(&self, body: &[u8]) -> Result<Page> {
        self.api.parse(body)
    }

    /// `GET /crm/v3/properties/{object}`: the names of every (non-archived) property the
    /// portal defines for the object type.
    pub(crate) async fn property_names(&self, object: &str) -> Result<Vec<String>> {
        let resp: PropertiesResponse = self
            .send(
                &self.rest,
                Method::GET,
                &format!("/crm/v3/properties/{object}"),
                None,
            )
            .await?;
        Ok(resp
            .results
            .into_iter()
            .filter(|p| !p.archived && !p.name.trim().is_empty())
            .map(|p| p.name)
            .collect())
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
    ) -> Result<Associations> {
        let mut out = Associations::default();
        let mut cut_off: BTreeSet<String> = BTreeSet::new();
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
                            out.links.push((r.from.id.clone(), id));
                        }
                    }
                    out.complete.insert(r.from.id.clone());
                    if let Some(after) = r.paging.and_then(|p| p.next).and_then(|n| n.after) {
                        let rounds = seen.entry(r.from.id.clone()).or_insert(0);
                        *rounds += 1;
                        // A provider that keeps returning the same cursor must not loop us.
                        if *rounds <= 10_000 {
                            inputs.push(AssocInput {
                                id: r.from.id,
                                after: Some(after),
                            });
                        } else {
                            cut_off.insert(r.from.id);
                        }
                    }
                }
            }
        }
        out.complete.retain(|id| !cut_off.contains(id));
        Ok(out)
    }
}

/// What a v4 association batch read found.
#[derive(Debug, Default)]
pub(crate) struct Associations {
    /// Every `(from id, to id)` association read.
    pub links: Vec<(String, String)>,
    /// The records whose associations were read to the end: found, and every page of
    /// their list read (a record reported missing, or cut off, is not here).
    pub complete: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn daily_quota_resets_at_the_accounts_next_midnight() {
        let new_york = FixedOffset::west_opt(5 * 3600);
        // 22:00 in New York (03:00 UTC the next day): midnight is two hours away.
        assert_eq!(
            daily_reset(at(2026, 12, 1, 3, 0), new_york),
            at(2026, 12, 1, 5, 0)
        );
        // 01:00 in New York: the next midnight is 23 hours away, not in the past.
        assert_eq!(
            daily_reset(at(2026, 12, 1, 6, 0), new_york),
            at(2026, 12, 2, 5, 0)
        );
        // Exactly midnight: the quota just reset; the next reset is a day later.
        assert_eq!(
            daily_reset(at(2026, 12, 1, 5, 0), new_york),
            at(2026, 12, 2, 5, 0)
        );
        // East of UTC, across a month and a year end.
        let kiritimati = FixedOffset::east_opt(14 * 3600);
        assert_eq!(
            daily_reset(at(2026, 12, 31, 9, 59), kiritimati),
            at(2026, 12, 31, 10, 0)
        );
        // Unknown zone: the next midnight UTC.
        assert_eq!(
            daily_reset(at(2026, 12, 31, 23, 59), None),
            at(2027, 1, 1, 0, 0)
        );
        // The end of time does not panic.
        assert_eq!(
            daily_reset(DateTime::<Utc>::MAX_UTC, None),
            DateTime::<Utc>::MAX_UTC
        );
        assert!(daily_reset(DateTime::<Utc>::MIN_UTC, kiritimati) > DateTime::<Utc>::MIN_UTC);
        // Found by the property test: `with_timezone` panics here.
        assert_eq!(
            daily_reset(DateTime::<Utc>::MAX_UTC, kiritimati),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn account_offset_reads_milliseconds_then_the_string() {
        let details = json!({"portalId": 1, "timeZone": "US/Eastern", "utcOffset": "-05:00", "utcOffsetMilliseconds": -18_000_000});
        assert_eq!(account_offset(&details), FixedOffset::west_opt(5 * 3600));
        let only_string = json!({"timeZone": "Asia/Kolkata", "utcOffset": "+05:30"});
        assert_eq!(
            account_offset(&only_string),
            FixedOffset::east_opt(5 * 3600 + 1800)
        );
        for bad in [
            json!({}),
            json!({"utcOffsetMilliseconds": i64::MAX, "utcOffset": "soon"}),
            json!({"utcOffsetMilliseconds": "-18000000"}),
            json!({"utcOffsetMilliseconds": 90_000_000}),
            json!([1, 2]),
        ] {
            assert_eq!(account_offset(&bad), None, "{bad}");
        }
    }
}
