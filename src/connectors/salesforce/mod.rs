//! The Salesforce connector (feature `salesforce`): Account → `accounts`, Contact →
//! `contacts`, Opportunity → `deals`, OpportunityContactRole → `deal_contacts` (with the
//! role).
//!
//! - **Fields** come from `GET sobjects/{object}/describe` once per run and object: the
//!   mapped standard fields the org has (`CurrencyIsoCode` only in multi-currency orgs; a
//!   field the org lacks is skipped instead of failing the query with `INVALID_FIELD`) and
//!   every custom `__c` field of a selectable type, stored in `custom_fields`. Compound
//!   fields (`address`, `location`) are not read. `Probability` (a percentage) is stored as
//!   a share (0–1), like HubSpot's.
//! - **Replication key** `SystemModstamp`, not `LastModifiedDate`: automation and picklist
//!   renames move the former only. Every pass is one `queryAll` ordered by
//!   `SystemModstamp, Id`, from `SystemModstamp >=` the watermark (so rows committed late
//!   on the newest second already seen still arrive) up to the pass's start. The stored
//!   cursor is the keyset position `(SystemModstamp, Id)` of the last row committed, so
//!   thousands of rows on one second cross page boundaries safely, and a restart reads
//!   `SystemModstamp >= t AND (SystemModstamp > t OR Id > id)`: never from zero.
//! - **Locators** (`nextRecordsUrl`) are followed while they live. One that dies (its
//!   session ended with a token refresh, `INVALID_QUERY_LOCATOR` or 401
//!   `INVALID_SESSION_ID`, idled out, too many open) restarts the query from the keyset
//!   position; repeated deaths without a row read stop the pass instead of looping.
//! - **`QUERY_TIMEOUT`** (big objects): the query is asked again for the first half of its
//!   `SystemModstamp` window, and the pass goes on slice by slice, each twice as wide as the
//!   last that answered, up to the pass's end. More rows on one second than the org can
//!   query in time stop the pass with the error (a window cannot be narrower than a second).
//! - **Deletes** come from `queryAll`'s `IsDeleted = true` rows (the recycle bin, cascades
//!   included) as soft deletes (`archived_at`); an undeleted row comes back with a newer
//!   `SystemModstamp` and is stored live again. A deleted OpportunityContactRole removes
//!   its link from `deal_contacts`.
//! - **Bulk API 2.0** reads a full pass whose object has more than `bulk_threshold` rows
//!   (`SELECT COUNT()`): one `queryAll` job without `ORDER BY` (ordering would disable
//!   Salesforce's PK chunking and invite timeouts on big objects), polled until
//!   `JobComplete`, its CSV results read page by page (`maxRecords` 10,000, `Sforce-Locator`
//!   until the string `null`; one page in memory at a time), each page committed with the
//!   job and the next locator as the stream's cursor. An interrupted pass resumes from that
//!   locator while the job exists (and starts over when it is gone); a job that fails
//!   falls back to REST.
//! - **OAuth**: the refresh token is exchanged before any data request (a rejected grant or
//!   client secret ends the sync with [`Error::AuthFailed`]); refreshes are single-flight;
//!   a rotated refresh token is stored with the connection at once, after the exchange and
//!   after every page ([`SyncContext::update_credentials`]), and again when the run ends
//!   ([`SyncCapable::credential_updates`]; also [`SalesforceConnector::rotated_refresh_token`]).
//! - **Limits**: every request goes through
//!   [`presets::salesforce`](crate::http::presets::salesforce): 100 requests a minute
//!   (`rate_limit` replaces it), a stop once `Sforce-Limit-Info` reports 80 % of the daily
//!   org quota used, and 403 `REQUEST_LIMIT_EXCEEDED` as [`Error::QuotaExhausted`]: the
//!   pages committed before the stop keep their checkpoint, the next run resumes.
//! - **Reconciliation**: after a full pass the live count (`SELECT COUNT()`) of accounts,
//!   contacts and deals goes to
//!   [`SyncReport::source_totals`](crate::connector::SyncReport::source_totals).
//!
//! Config keys: `api_version` (default `62.0`), `bulk_threshold` (10,000), `batch_size`
//! (REST rows per batch, 200–2,000, sent as `Sforce-Query-Options`), `rate_limit`,
//! `base_url` (the login host; the API host is the token response's `instance_url`).

mod client;
#[cfg(test)]
mod fuzz;
mod sync;
mod transform;
mod types;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::connector::{Checkpoint, RecordSink, SyncCapable, SyncContext, SyncReport};
use crate::error::{Error, Result};
use crate::http::{HttpStats, RateLimitConfig};
use crate::model::ConnectorKind;

use client::SalesforceClient;
use sync::Syncer;

/// How the connector authenticates: a connected app's refresh token.
#[derive(Clone)]
pub enum SalesforceCredentials {
    /// OAuth 2.0 refresh-token grant.
    OAuth {
        /// The connected app's consumer key.
        client_id: String,
        /// The connected app's consumer secret.
        client_secret: SecretString,
        /// The refresh token.
        refresh_token: SecretString,
    },
}

impl std::fmt::Debug for SalesforceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SalesforceCredentials::OAuth { client_id, .. } => f
                .debug_struct("SalesforceCredentials::OAuth")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

impl SalesforceCredentials {
    /// Reads `{"client_id", "client_secret", "refresh_token"}` through a lookup of secret
    /// values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        match (get("client_id"), get("client_secret"), get("refresh_token")) {
            (Some(id), Some(secret), Some(refresh)) => Ok(SalesforceCredentials::OAuth {
                client_id: id.expose_secret().to_owned(),
                client_secret: secret,
                refresh_token: refresh,
            }),
            _ => Err(Error::config(
                "salesforce credentials need \"client_id\", \"client_secret\" and \"refresh_token\"",
            )),
        }
    }
}

fn default_api_version() -> String {
    "62.0".to_owned()
}

fn default_bulk_threshold() -> u64 {
    10_000
}

fn default_batch_size() -> u32 {
    2_000
}

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Replaces the request budget (default 100 per 60 s).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The REST API version, `NN.0` (default `62.0`).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Objects with more rows than this are read in full through Bulk API 2.0.
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: u64,
    /// Rows per REST batch (`Sforce-Query-Options: batchSize`), 200 to 2,000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// The login origin (token endpoint; also the API unless the token response names an
    /// `instance_url`), e.g. a simulator or a proxy; `None` for the origin the host
    /// registered (`https://login.salesforce.com` by default).
    #[serde(default)]
    pub base_url: Option<String>,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        SalesforceConfig {
            rate_limit: None,
            api_version: default_api_version(),
            bulk_threshold: default_bulk_threshold(),
            batch_size: default_batch_size(),
            base_url: None,
        }
    }
}

impl SalesforceConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults).
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut cfg: SalesforceConfig = super::config_from_json(value, "salesforce")?;
        let v = cfg.api_version.trim().trim_start_matches('v').to_owned();
        let valid = v.split_once('.').is_some_and(|(major, minor)| {
            major.parse::<u32>().is_ok_and(|m| (20..=99).contains(&m)) && minor == "0"
        });
        if !valid {
            return Err(Error::config(format!(
                "invalid salesforce config: api_version {:?} is not a version such as \"62.0\"",
                cfg.api_version
            )));
        }
        cfg.api_version = v;
        if !(200..=2_000).contains(&cfg.batch_size) {
            return Err(Error::config(format!(
                "invalid salesforce config: batch_size must be between 200 and 2000, got {}",
                cfg.batch_size
            )));
        }
        super::check_base_url(&mut cfg.base_url, "salesforce")?;
        Ok(cfg)
    }
}

/// The Salesforce connector.
pub struct SalesforceConnector {
    client: SalesforceClient,
    config: SalesforceConfig,
}

impl std::fmt::Debug for SalesforceConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SalesforceConnector {
    /// A connector for the org whose login host is `base_url`
    /// (`https://login.salesforce.com`, `https://test.salesforce.com`, a My Domain, or a
    /// simulator): the token endpoint is there, and the API on the `instance_url` it
    /// answers (or on `base_url` when it names none).
    pub fn new(
        base_url: &str,
        credentials: SalesforceCredentials,
        config: SalesforceConfig,
    ) -> Result<Self> {
        Ok(SalesforceConnector {
            client: SalesforceClient::new(base_url, &credentials, &config)?,
            config,
        })
    }

    /// Request statistics of this connector's HTTP stack.
    pub fn http_stats(&self) -> &HttpStats {
        self.client.stats()
    }

    /// The refresh token Salesforce rotated to while this connector ran, if it did: store
    /// it in place of the old one (reusing the old one may revoke the grant).
    pub fn rotated_refresh_token(&self) -> Option<SecretString> {
        self.client.rotated_refresh_token()
    }

    async fn run(
        &self,
        ctx: &SyncContext,
        checkpoint: Checkpoint,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let mut s = Syncer {
            client: &self.client,
            config: &self.config,
            ctx,
            checkpoint,
            report: SyncReport::default(),
            fields: Default::default(),
            bulk_fallbacks: 0,
            restarts: 0,
            full_ended: Vec::new(),
            timeouts: 0,
            stored_rotation: 0,
        };
        s.run(sink).await?;
        let mut report = s.report;
        report.details = serde_json::json!({
            "locator_restarts": s.restarts,
            "bulk_fallbacks": s.bulk_fallbacks,
            "query_timeouts": s.timeouts,
            "http": self.client.stats().snapshot(),
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for SalesforceConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Salesforce
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        // A forced initial sync re-reads everything; an interrupted one is resumed by an
        // incremental run from its keyset positions.
        self.run(ctx, Checkpoint::default(), sink).await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), sink).await
    }

    fn credential_updates(&self) -> Vec<(String, SecretString)> {
        self.rotated_refresh_token()
            .map(|t| vec![("refresh_token".to_owned(), t)])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<SecretString> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| SecretString::from(*v))
        }
    }

    #[test]
    fn credentials_from_lookup_never_show_their_secrets() {
        let c = SalesforceCredentials::from_lookup(lookup(&[
            ("client_id", "app-1"),
            ("client_secret", "cs-s3cret"),
            ("refresh_token", "rt-s3cret"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("app-1") && !shown.contains("s3cret"),
            "{shown}"
        );
        let err =
            SalesforceCredentials::from_lookup(lookup(&[("client_id", "app-1")])).unwrap_err();
        assert!(err.to_string().contains("refresh_token"));
        let connector =
            SalesforceConnector::new("http://127.0.0.1:9", c, SalesforceConfig::default()).unwrap();
        assert!(!format!("{connector:?}").contains("s3cret"));
        assert!(connector.credential_updates().is_empty());
    }

    #[test]
    fn config_defaults_and_validation() {
        let d = SalesforceConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(
            (d.api_version.as_str(), d.bulk_threshold, d.batch_size),
            ("62.0", 10_000, 2_000)
        );
        let c = SalesforceConfig::from_json(&json!({"api_version": "v61.0", "bulk_threshold": 5, "base_url": "http://127.0.0.1:1/"})).unwrap();
        assert_eq!(c.api_version, "61.0");
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:1"));
        for bad in [
            json!({"api_version": "62"}),
            json!({"api_version": "abc.0"}),
            json!({"batch_size": 50}),
            json!({"unknown": 1}),
            json!({"base_url": "ftp://x"}),
        ] {
            let err = SalesforceConfig::from_json(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains("salesforce config")),
                "{bad}: {err}"
            );
        }
    }
}
