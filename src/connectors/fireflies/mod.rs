//! The Fireflies.ai connector (feature `fireflies`): meeting transcripts → `conversations`.
//!
//! - **One GraphQL endpoint**, `POST /graphql` with `Authorization: Bearer <api key>`; every
//!   value travels as a typed variable. The list query asks only for the fields stored
//!   (`id title date duration host_email organizer_email participants meeting_attendees
//!   transcript_url summary { overview short_summary keywords action_items }`), 50
//!   transcripts a page, Fireflies' maximum.
//! - **Paging survives drift**: transcripts come newest first and Fireflies pages with an
//!   offset (`skip`) that shifts when a transcript is processed or deleted between two
//!   pages. The connector pages by a date keyset instead (`toDate` just past the oldest
//!   `date` read, de-duplicated by id), and steps `skip` only inside one instant that holds
//!   more than a page of transcripts, with overlapping pages (see the `sync` module).
//! - **Initial sync** reads the whole history (or the last `lookback_days`), up to the
//!   sync's start, one checkpoint per page.
//! - **Incremental sync** reads from the watermark (the newest `date` stored) minus
//!   `overlap_hours` (48): Fireflies has no updated-at, and titles, summaries (processing →
//!   processed) and late-processed transcripts change after their `date`. Every transcript
//!   of the overlap is re-read; the store writes those whose content changed (no
//!   `source_updated_at`: an equal version with new content is written) and leaves the
//!   others alone.
//! - **Deletes**: a transcript the last pass read inside the overlap window that the next
//!   pass no longer lists is soft-deleted (`archived_at`). Deletions of older transcripts
//!   are not seen (Fireflies reports none).
//! - **Resumes**: a pass in progress keeps its cursor (boundary instant, offset, the ids
//!   read there) and its window in the checkpoint; the next run finishes it and reads the
//!   follow-up window.
//! - **`is_internal`**: the connector owns `participants[].is_internal`: a participant is
//!   internal when the email's domain (case-insensitive, exact) is one of the workspace's
//!   internal domains, the connection's `internal_domains` or, without them, the domains of
//!   the team's users (read in the same request as the first page, public mail providers
//!   left out). The conversation's `is_internal` column stays the internal-filter hook's
//!   ([`InternalFilter`](crate::hooks::InternalFilter)): one owner per column.
//! - **Sentences** (`include_sentences`) are large: they are read after each page for its
//!   new or changed transcripts, 10 `transcript(id)` fields per request (aliases), into
//!   `conversations.transcript` as `Speaker: text` lines. Incremental passes re-read the
//!   overlap window, so each run also re-reads the sentences of the transcripts inside it
//!   (one more request per 10 of them).
//! - **No source totals**: Fireflies reports no transcript count, so reconciliation has
//!   nothing to compare with; no backfill mode either (an initial sync reads the whole
//!   history unless `lookback_days` limits it).
//!
//! **Limits**: Business and Enterprise plans allow 60 requests a minute (the default
//! budget; `rate_limit` replaces it); Free and Pro allow 50 a day. `too_many_requests`
//! (HTTP 429, or a GraphQL error on HTTP 200) is retried when its
//! `extensions.metadata.retryAfter` is near; when it is more than about a minute away it
//! is the daily quota: the sync stops at once with [`Error::QuotaExhausted`] (resets at
//! `retryAfter`), the pages committed before are kept, and the next run resumes from their
//! checkpoint without reading them again. A sync never sleeps for hours. `auth_failed`
//! (HTTP 200 or 401) ends the sync with [`Error::AuthFailed`], without retries.
//!
//! Requests: an initial sync of `n` transcripts costs about `n / 49 + 1` requests (each
//! page re-reads the boundary transcript); a no-change incremental sync costs one request
//! per 50 transcripts inside the overlap window (usually one). The sync result's
//! `details.http.requests` reports them.
//!
//! # Config (`--config` JSON; unknown keys are an error)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `overlap_hours` | 48 | how far before the watermark incremental syncs start |
//! | `lookback_days` | none (whole history) | history an initial sync reads |
//! | `include_sentences` | false | also store the transcript text |
//! | `internal_domains` | the team's domains | the workspace's email domains (also read by the internal-filter hook) |
//! | `rate_limit` | 60 per 60,000 ms | `{"max_requests", "window_ms"}` |
//! | `base_url` | `https://api.fireflies.ai` | the API origin, or a simulator |

mod client;
#[cfg(test)]
mod fuzz;
mod sync;
mod transform;
mod types;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::connector::{Checkpoint, RecordSink, SyncCapable, SyncContext, SyncReport};
use crate::error::{Error, Result};
use crate::http::{HttpStats, RateLimitConfig};
use crate::model::ConnectorKind;

use client::FirefliesClient;
use sync::{Mode, Syncer};
use transform::InternalDomains;

/// How the connector authenticates.
#[derive(Clone)]
pub enum FirefliesCredentials {
    /// An API key (`Authorization: Bearer`).
    ApiKey(SecretString),
}

impl std::fmt::Debug for FirefliesCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirefliesCredentials::ApiKey([REDACTED])")
    }
}

impl FirefliesCredentials {
    /// Reads `{"api_key"}` through a lookup of secret values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        match get("api_key") {
            Some(key) if !key.expose_secret().trim().is_empty() => {
                Ok(FirefliesCredentials::ApiKey(key))
            }
            Some(_) => Err(Error::config(
                "fireflies credentials: \"api_key\" must not be empty",
            )),
            None => Err(Error::config("fireflies credentials need \"api_key\"")),
        }
    }
}

fn default_overlap_hours() -> u32 {
    48
}

/// The longest history any setting may name (about 20 years).
const MAX_DAYS: u32 = 7_300;

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirefliesConfig {
    /// Replaces the per-minute budget (60 a minute).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Hours before the watermark an incremental sync starts (transcripts change after
    /// their date).
    #[serde(default = "default_overlap_hours")]
    pub overlap_hours: u32,
    /// Days of history an initial sync reads; `None`: the whole history.
    #[serde(default)]
    pub lookback_days: Option<u32>,
    /// Whether the sentences are read into `conversations.transcript`.
    #[serde(default)]
    pub include_sentences: bool,
    /// The workspace's internal email domains (the connection's `internal_domains`); empty:
    /// the domains of the team's users.
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// The API origin or a simulator; `None` for the origin the host registered
    /// (`https://api.fireflies.ai` by default).
    #[serde(default)]
    pub base_url: Option<String>,
}

impl Default for FirefliesConfig {
    fn default() -> Self {
        FirefliesConfig {
            rate_limit: None,
            overlap_hours: default_overlap_hours(),
            lookback_days: None,
            include_sentences: false,
            internal_domains: Vec::new(),
            base_url: None,
        }
    }
}

impl FirefliesConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults) and checks it.
    ///
    /// ```
    /// use pandora_sync::connectors::fireflies::FirefliesConfig;
    ///
    /// let cfg = FirefliesConfig::from_json(&serde_json::json!({
    ///     "overlap_hours": 72,
    ///     "internal_domains": ["example.com"],
    /// }))?;
    /// assert_eq!((cfg.overlap_hours, cfg.lookback_days), (72, None));
    /// assert_eq!(cfg.internal_domains, ["example.com"]);
    /// assert!(FirefliesConfig::from_json(&serde_json::json!({"limit": 3})).is_err());
    /// # Ok::<(), pandora_sync::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut cfg: FirefliesConfig = super::config_from_json(value, "fireflies")?;
        // `internal_domains` belongs to the connection (the hook reads it too);
        // `config_from_json` leaves it out, and the connector reads it here.
        match value.get(crate::connector::INTERNAL_DOMAINS_CONFIG_KEY) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    match item.as_str() {
                        Some(d) => cfg.internal_domains.push(d.trim().to_owned()),
                        None => {
                            return Err(Error::config(format!(
                                "invalid fireflies config: internal_domains holds {item}, not a domain"
                            )));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(Error::config(format!(
                    "invalid fireflies config: internal_domains must be an array of domains, got {other}"
                )));
            }
        }
        cfg.validate()?;
        super::check_base_url(&mut cfg.base_url, "fireflies")?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(format!("invalid fireflies config: {m}")));
        if self.overlap_hours > MAX_DAYS * 24 {
            return bad(format!(
                "overlap_hours must be at most {}, got {}",
                MAX_DAYS * 24,
                self.overlap_hours
            ));
        }
        if let Some(d) = self.lookback_days
            && !(1..=MAX_DAYS).contains(&d)
        {
            return bad(format!(
                "lookback_days must be between 1 and {MAX_DAYS}, got {d}"
            ));
        }
        if let Some(d) = self
            .internal_domains
            .iter()
            .find(|d| transform::normalize_domain(d).is_none())
        {
            return bad(format!("internal_domains holds {d:?}, not a domain"));
        }
        Ok(())
    }
}

/// The Fireflies connector.
pub struct FirefliesConnector {
    client: FirefliesClient,
    config: FirefliesConfig,
}

impl std::fmt::Debug for FirefliesConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirefliesConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FirefliesConnector {
    /// A connector for the Fireflies team whose key `credentials` holds, at `base_url`
    /// (`https://api.fireflies.ai` or a simulator).
    pub fn new(
        base_url: &str,
        credentials: FirefliesCredentials,
        config: FirefliesConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(FirefliesConnector {
            client: FirefliesClient::new(base_url, &credentials, &config)?,
            config,
        })
    }

    /// Request statistics of this connector's HTTP stack.
    pub fn http_stats(&self) -> &HttpStats {
        self.client.stats()
    }

    async fn run(
        &self,
        ctx: &SyncContext,
        checkpoint: Checkpoint,
        mode: Mode,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        let configured = (!self.config.internal_domains.is_empty()).then(|| {
            InternalDomains::configured(self.config.internal_domains.iter().map(String::as_str))
        });
        let before = self.client.stats().snapshot().requests;
        let mut s = Syncer::new(&self.client, &self.config, configured, ctx, checkpoint);
        s.run(mode, sink).await?;
        let mut report = s.report;
        let http = self.client.stats().snapshot();
        report.details = json!({
            "mode": match mode {
                Mode::Initial => "initial",
                Mode::Incremental => "incremental",
            },
            "requests": http.requests.saturating_sub(before),
            "pages": s.pages,
            "passes": s.passes,
            "deleted": s.deleted,
            "internal_domains": s.internal.list(),
            "http": http,
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for FirefliesConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Fireflies
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        // A forced initial sync reads the window from scratch; an interrupted one is resumed
        // by an incremental run from its page cursor.
        self.run(ctx, Checkpoint::default(), Mode::Initial, sink)
            .await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), Mode::Incremental, sink)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let d = FirefliesConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(
            (d.overlap_hours, d.lookback_days, d.include_sentences),
            (48, None, false)
        );
        let c = FirefliesConfig::from_json(&json!({
            "rate_limit": {"max_requests": 50, "window_ms": 86_400_000},
            "lookback_days": 30,
            "include_sentences": true,
            "internal_domains": ["Example.com"],
            "base_url": "http://127.0.0.1:9/",
        }))
        .unwrap();
        assert_eq!(c.lookback_days, Some(30));
        assert_eq!(c.internal_domains, ["Example.com"]);
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:9"));
        for bad in [
            json!({"unknown": 1}),
            json!({"lookback_days": 0}),
            json!({"overlap_hours": 1_000_000}),
            json!({"internal_domains": "example.com"}),
            json!({"internal_domains": [3]}),
            json!({"internal_domains": ["not a domain"]}),
            json!({"base_url": "ftp://x"}),
            json!({"rate_limit": {"max_requests": 2}}),
        ] {
            let err = FirefliesConfig::from_json(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains("fireflies config")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn credentials_never_show_the_key() {
        let get = |v: Option<&'static str>| {
            move |k: &str| {
                (k == "api_key")
                    .then_some(v)
                    .flatten()
                    .map(SecretString::from)
            }
        };
        let c = FirefliesCredentials::from_lookup(get(Some("ff-s3cret"))).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let conn =
            FirefliesConnector::new("http://127.0.0.1:9", c, FirefliesConfig::default()).unwrap();
        assert!(!format!("{conn:?}").contains("s3cret"));
        for bad in [None, Some(" ")] {
            let err = FirefliesCredentials::from_lookup(get(bad)).unwrap_err();
            assert!(err.to_string().contains("api_key"), "{err}");
        }
    }
}
