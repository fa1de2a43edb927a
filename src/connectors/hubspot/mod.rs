//! The HubSpot CRM connector (feature `hubspot`): companies → `accounts`, contacts →
//! `contacts`, deals → `deals`, deal–contact associations → `deal_contacts`.
//!
//! - **Properties**: every property the portal defines (`GET /crm/v3/properties/{object}`,
//!   once per run and object type) is read; the ones the schema does not map, and the
//!   config's extra `properties`, go to `custom_fields`. Lists too long for one request are
//!   split over requests of the same page (see the `properties` module for the limits and
//!   the trade-off).
//! - **Initial sync** reads each object through the list endpoint (100 a page, an id
//!   cursor) with those properties and the inline associations, one checkpoint per page;
//!   then archived records (`archived=true`) are stored soft-deleted. After each full pass the
//!   provider's count of live records (search `total`) goes to
//!   [`SyncReport::source_totals`](crate::connector::SyncReport::source_totals) for reconciliation.
//! - **Incremental sync** reads through search on the right last-modified property
//!   (`lastmodifieddate` for contacts, `hs_lastmodifieddate` otherwise) from the stored
//!   watermark minus a lookback, bounded above by the pass's start, sorted by
//!   `hs_object_id`, every page a fresh query for `hs_object_id > last id read` (search's
//!   `after` is an offset into a live set, which shifts when records change during the
//!   pass); so no change is skipped, none is read past the 10,000-result cap, and any number
//!   of changes (even with one identical timestamp) arrives. Deal associations come from
//!   the v4 batch endpoint. A stream flagged for repair is read in full instead.
//! - **Resumed passes** end with the window of the run that began them; a follow-up pass in
//!   the same run then reads what changed since.
//! - **Archived records**: search never returns them, and the archived list can be neither
//!   filtered nor sorted by time, so it is the only way to see deletions. An incremental run
//!   reads at most 10 archived pages per object (1,000 records), skipping those archived
//!   before the stream's watermark, and goes on from the stored cursor next run. The
//!   trade-off: a no-change run costs at most 10 requests per object instead of the whole
//!   list, and with a list longer than that an archiving is seen within
//!   ⌈pages / 10⌉ runs instead of the next one. Archived records carry no associations;
//!   the store keeps an archived row's last known `account_source_id` and its links.
//! - **Daily quota**: HubSpot's `DAILY` 429 stops the sync with
//!   [`Error::QuotaExhausted`] resetting at the next midnight
//!   in the account's time zone (`GET /account-info/v3/details`, asked once and only then;
//!   midnight UTC when unknown).
//! - **Backfill** re-reads every deal's contacts through the v4 batch endpoint, 1,000 deals
//!   a request; the sync report asks for it when an inline association list was cut off.
//! - **Removed associations**: HubSpot reports only a deal's current contacts, so every
//!   deal whose whole contact list was read (a v4 batch read followed to its end, or an
//!   inline block without `paging.next`) goes out as a
//!   [`DealContactSet`](crate::connector::DealContactSet), and the store removes the deal's other
//!   links. A cut-off inline block sends none: its links are kept until a pass reads the
//!   whole list. HubSpot has no feed of association changes; an incremental run sees a
//!   removal when the deal is found modified (the provider reference does not say whether
//!   an association change moves `hs_lastmodifieddate`; the deal's calculated
//!   `num_associated_contacts` changes with it), and every full pass (a repair, a forced
//!   initial sync) and backfill sees it regardless.
//!
//! Every request goes through [`presets::hubspot`](crate::http::presets::hubspot) (REST,
//! 90 per 10 s) or [`presets::hubspot_search`](crate::http::presets::hubspot_search)
//! (4 per second); `rate_limit` and `search_rate_limit` in the config replace them.

mod client;
#[cfg(test)]
mod fuzz;
mod properties;
mod sync;
mod transform;
mod types;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use crate::connector::{Checkpoint, RecordSink, SyncCapable, SyncContext, SyncReport};
use crate::error::{Error, Result};
use crate::http::{HttpStats, RateLimitConfig};
use crate::model::ConnectorKind;

use client::HubSpotClient;
use sync::Syncer;

/// How the connector authenticates.
#[derive(Clone)]
pub enum HubSpotCredentials {
    /// A private-app or OAuth access token.
    AccessToken(SecretString),
    /// An OAuth app: access tokens are refreshed from the refresh token.
    OAuth {
        /// OAuth client id.
        client_id: String,
        /// OAuth client secret.
        client_secret: SecretString,
        /// Refresh token.
        refresh_token: SecretString,
    },
}

impl std::fmt::Debug for HubSpotCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubSpotCredentials::AccessToken(_) => {
                f.write_str("HubSpotCredentials::AccessToken([REDACTED])")
            }
            HubSpotCredentials::OAuth { client_id, .. } => f
                .debug_struct("HubSpotCredentials::OAuth")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

impl HubSpotCredentials {
    /// Reads `{"access_token"}` or `{"client_id", "client_secret", "refresh_token"}` through
    /// a lookup of secret values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        if let Some(token) = get("access_token") {
            return Ok(HubSpotCredentials::AccessToken(token));
        }
        match (get("client_id"), get("client_secret"), get("refresh_token")) {
            (Some(id), Some(secret), Some(refresh)) => Ok(HubSpotCredentials::OAuth {
                client_id: secrecy::ExposeSecret::expose_secret(&id).to_owned(),
                client_secret: secret,
                refresh_token: refresh,
            }),
            _ => Err(Error::config(
                "hubspot credentials need \"access_token\", or \"client_id\", \"client_secret\" and \"refresh_token\"",
            )),
        }
    }
}

fn default_lookback_minutes() -> u64 {
    10
}

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// Replaces the REST budget (e.g. `{"max_requests": 190, "window_ms": 10000}` on an
    /// Enterprise portal).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Replaces the search budget.
    #[serde(default)]
    pub search_rate_limit: Option<RateLimitConfig>,
    /// How far before the watermark incremental searches start (late-indexed records).
    #[serde(default = "default_lookback_minutes")]
    pub lookback_minutes: u64,
    /// Extra properties to read per object (`companies`, `contacts`, `deals`); they land in
    /// `custom_fields`.
    #[serde(default)]
    pub properties: HashMap<String, Vec<String>>,
    /// The portal's origin (every endpoint: API and OAuth), e.g. a simulator or a proxy;
    /// `None` for the origin the host registered (`https://api.hubapi.com` by default).
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(skip)]
    pub(crate) lookback: Duration,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        HubSpotConfig {
            rate_limit: None,
            search_rate_limit: None,
            lookback_minutes: default_lookback_minutes(),
            properties: HashMap::new(),
            base_url: None,
            lookback: Duration::from_secs(default_lookback_minutes() * 60),
        }
    }
}

impl HubSpotConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults).
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut cfg: HubSpotConfig = super::config_from_json(value, "hubspot")?;
        for object in cfg.properties.keys() {
            if !["companies", "contacts", "deals"].contains(&object.as_str()) {
                return Err(Error::config(format!(
                    "invalid hubspot config: properties for unknown object {object:?}; valid: companies, contacts, deals"
                )));
            }
        }
        super::check_base_url(&mut cfg.base_url, "hubspot")?;
        cfg.lookback = Duration::from_secs(cfg.lookback_minutes.saturating_mul(60));
        Ok(cfg)
    }

    pub(crate) fn extra_properties(&self, object: &str) -> &[String] {
        self.properties.get(object).map_or(&[], Vec::as_slice)
    }
}

/// The HubSpot connector.
pub struct HubSpotConnector {
    client: std::sync::Arc<HubSpotClient>,
    config: HubSpotConfig,
}

impl std::fmt::Debug for HubSpotConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubSpotConnector {
    /// A connector for the portal at `base_url` (`https://api.hubapi.com`, or a simulator):
    /// every endpoint, OAuth included, is on that origin.
    pub fn new(
        base_url: &str,
        credentials: HubSpotCredentials,
        config: HubSpotConfig,
    ) -> Result<Self> {
        Ok(HubSpotConnector {
            client: std::sync::Arc::new(HubSpotClient::new(base_url, &credentials, &config)?),
            config,
        })
    }

    /// Request statistics of this connector's HTTP stacks.
    pub fn http_stats(&self) -> &HttpStats {
        self.client.stats()
    }

    /// Runs one sync from `checkpoint`: every object's passes, or the association backfill,
    /// and turns it into the report.
    async fn run(
        &self,
        ctx: &SyncContext,
        checkpoint: Checkpoint,
        backfill: bool,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let mut s = Syncer {
            client: &self.client,
            config: &self.config,
            ctx,
            checkpoint,
            report: SyncReport::default(),
            discovered: Default::default(),
            archived_pages: Default::default(),
        };
        if backfill {
            s.association_backfill(sink).await?;
        } else {
            s.run(sink).await?;
        }
        let mut report = s.report;
        let needs_backfill = s
            .checkpoint
            .streams
            .values()
            .any(|st| st.extra.contains_key(sync::NEEDS_BACKFILL));
        report.details = serde_json::json!({
            "needs_backfill": needs_backfill,
            "http": self.client.stats().snapshot(),
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for HubSpotConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }

    /// The portal id (`GET /account-info/v3/details`), which HubSpot's webhook events carry
    /// as `portalId`.
    async fn webhook_account(&self) -> Result<Option<String>> {
        self.client.portal_id().await
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        // A forced initial sync re-reads everything from scratch; an interrupted one is
        // resumed by an incremental run from its page cursors.
        self.run(ctx, Checkpoint::default(), false, sink).await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), false, sink).await
    }

    async fn backfill_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), true, sink).await
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
        let token =
            HubSpotCredentials::from_lookup(lookup(&[("access_token", "pat-s3cret")])).unwrap();
        assert!(matches!(token, HubSpotCredentials::AccessToken(_)));
        assert!(!format!("{token:?}").contains("s3cret"));
        let oauth = HubSpotCredentials::from_lookup(lookup(&[
            ("client_id", "app-1"),
            ("client_secret", "cs-s3cret"),
            ("refresh_token", "rt-s3cret"),
        ]))
        .unwrap();
        let shown = format!("{oauth:?}");
        assert!(
            shown.contains("app-1") && !shown.contains("s3cret"),
            "{shown}"
        );
        for bad in [
            &[][..],
            &[("client_id", "app-1"), ("client_secret", "cs-s3cret")][..],
        ] {
            let err = HubSpotCredentials::from_lookup(lookup(bad)).unwrap_err();
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let connector =
            HubSpotConnector::new("http://127.0.0.1:9", token, HubSpotConfig::default()).unwrap();
        assert!(!format!("{connector:?}").contains("s3cret"));
    }

    #[test]
    fn config_defaults_and_validation() {
        let d = HubSpotConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(d.lookback, Duration::from_secs(600));
        let c = HubSpotConfig::from_json(&json!({
            "lookback_minutes": 1,
            "properties": {"deals": ["hs_custom"]},
        }))
        .unwrap();
        assert_eq!(c.lookback, Duration::from_secs(60));
        assert_eq!(c.extra_properties("deals"), ["hs_custom"]);
        // Keys of the connection, not of the connector: accepted.
        let c = HubSpotConfig::from_json(&json!({
            "internal_domains": ["example.com"],
            "base_url": "http://127.0.0.1:8080/",
        }))
        .unwrap();
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:8080"));
        for bad in [
            json!({"unknown": 1}),
            json!({"properties": {"tickets": ["x"]}}),
            json!({"lookback_minutes": "ten"}),
        ] {
            let err = HubSpotConfig::from_json(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains("hubspot config")),
                "{bad}: {err}"
            );
        }
    }

    /// A rejected token ends the sync with `AuthFailed`, without the token in the error.
    #[cfg(feature = "simulator")]
    #[tokio::test]
    async fn bad_credentials_fail_the_sync() {
        use crate::connector::MemorySink;
        use crate::model::SyncMode;
        use crate::simulator::{HubSpotSim, HubSpotSimConfig};

        let sim = HubSpotSim::start(HubSpotSimConfig {
            companies: 3,
            ..Default::default()
        })
        .await
        .unwrap();
        let c = HubSpotConnector::new(
            &sim.base_url(),
            HubSpotCredentials::AccessToken(SecretString::from("pat-wrong-s3cret")),
            HubSpotConfig::default(),
        )
        .unwrap();
        let ctx = SyncContext::new(uuid::Uuid::nil(), SyncMode::Initial);
        let err = c.sync(&ctx, &mut MemorySink::new()).await.unwrap_err();
        assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
