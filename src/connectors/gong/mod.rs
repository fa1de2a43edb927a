//! The Gong connector (feature `gong`): calls → `conversations`.
//!
//! - **Tracked users**: every active user from `/v2/users`, or the emails and ids listed in
//!   the config's `tracked_users`. Each user has one stream, `calls:<userId>`, but the
//!   calls are read for many users at once: `POST /v2/calls/extensive` with
//!   `primaryUserIds` = up to 100 tracked users (the filter takes a list and matches the
//!   call's host; Gong documents no maximum, 100 is a conservative bound) and the parties
//!   exposed. A sync makes one request per page of calls (100 calls a page) plus the users
//!   listing: 20 unchanged users cost 2 requests, not one per user. What each user gets
//!   (calls, watermark, totals) is derived from the calls: a call belongs to its
//!   `metaData.primaryUserId`.
//! - **Initial sync** reads the last `initial_days` (90) days up to the sync's start, one
//!   checkpoint per page (the cursor travels in the JSON body, as Gong requires).
//! - **Incremental sync** reads each user from the later of its watermark and the end of
//!   the last pass over it (`covered_to`), minus `overlap_days` (14), up to the sync's
//!   start: calls change after they happen (titles, parties), and the overlap re-reads
//!   them; calls that did not change are left alone by the store. Users with the same
//!   window (after a first sync, all of them) are read together. The watermark is the
//!   newest `metaData.started` stored, because the extensive endpoint filters on the start
//!   time only. A changed call that started before the overlap window is not seen again
//!   (Gong has no change feed); widen `overlap_days` or run a backfill for those.
//! - **Backfill** walks the users' history back from the oldest instant read so far, in
//!   checkpointed 30-day slices, down to `backfill_days` (365) before the sync's start.
//! - Gong answers 404 "No calls found" for a window without calls: that is an empty page.
//! - **Resumes**: a batched pass in progress is kept in its own stream `gong:pass:<n>`
//!   with the exact filter its cursor belongs to (the users, the window); the next run
//!   finishes it with that filter and its own window (`pass_started_at`), then reads the
//!   follow-up window. A cursor Gong rejects (expired) restarts its window, at most twice
//!   per pass. Per-user passes of earlier releases are migrated into such streams.
//! - **Repair**: a stream flagged `repair` by reconciliation is read over the whole initial
//!   window; the flag is cleared when that pass ends. Such full passes (and initial ones)
//!   report, per user, the calls Gong listed for that host in
//!   [`SyncReport::source_totals`] for its `calls:<userId>` stream: the calls of that user
//!   that started in `[start − initial_days, start)`.
//! - **Per-user results** are in [`SyncReport::details`]`["by_user"]`, keyed by user id:
//!   `{email, status: "completed" | "failed", calls, failed_records, pages, watermark,
//!   covered_from?, error?}` (`pages`: the pages read by the passes that covered the user).
//!   A pass that fails fails the users of its batch: they are recorded there (and as
//!   failures with the id `user:<id>` in the sync log) and the other batches go on; rate
//!   limits, exhausted quotas, cancellation, storage errors and rejected credentials stop
//!   the sync (a rate-limited job is snoozed and resumes from its checkpoint), and so does
//!   every user failing.
//! - **`is_internal`**: the connector owns `participants[].is_internal` (Gong's party
//!   `affiliation == "Internal"`: Gong knows which parties are the company's users) and
//!   leaves the conversation's `is_internal` column to the internal-filter hook
//!   ([`InternalFilter`](crate::hooks::InternalFilter)), which decides it from the
//!   workspace's internal domains and never rewrites the participants.
//!
//! Every request goes through [`presets::gong`](crate::http::presets::gong): 3 per second,
//! retries on 429 and 5xx honouring `Retry-After` (a 429 that outlasts the retries is a
//! rate limit: the job is snoozed). The **daily limit** (10,000 requests per company and
//! day) is counted locally, every attempt included, and kept with the connection in the
//! checkpoint stream `gong:requests` (`{"day": "YYYY-MM-DD", "used": n}`, UTC days: Gong
//! documents no reset time), committed with every page. A run that would pass it commits
//! its checkpoint and stops with [`Error::QuotaExhausted`] carrying the next UTC midnight.
//! `rate_limit` and `daily_limit` in the config replace the two budgets.
//!
//! # Config (`--config` JSON; unknown keys are an error)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `tracked_users` | `[]` (every active user) | emails (matched case-insensitively, aliases too) or user ids |
//! | `initial_days` | 90 | history read by an initial sync |
//! | `overlap_days` | 14 | how far before the later of the watermark and the last pass's end incremental syncs start |
//! | `backfill_days` | 365 | how far back a backfill reaches |
//! | `workspace_id` | none | only calls of this Gong workspace |
//! | `rate_limit` | 3 per 1000 ms | `{"max_requests", "window_ms"}` |
//! | `daily_limit` | 10,000 | requests per UTC day (counted across runs) |
//! | `base_url` | the registered origin | the company's API origin (`https://us-NNNNN.api.gong.io`) or a simulator |
//! | `internal_domains` | none | not the connector's: read by the internal-filter hook |

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

use client::GongClient;
use sync::{Mode, Syncer};

/// How the connector authenticates.
#[derive(Clone)]
pub enum GongCredentials {
    /// An API access key and its secret (`Authorization: Basic`).
    AccessKey {
        /// The access key.
        access_key: String,
        /// The access key secret.
        access_key_secret: SecretString,
    },
    /// An OAuth access token (`Authorization: Bearer`).
    AccessToken(SecretString),
}

impl std::fmt::Debug for GongCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GongCredentials::AccessKey { .. } => {
                f.write_str("GongCredentials::AccessKey([REDACTED])")
            }
            GongCredentials::AccessToken(_) => {
                f.write_str("GongCredentials::AccessToken([REDACTED])")
            }
        }
    }
}

impl GongCredentials {
    /// An access key and its secret.
    pub fn access_key(access_key: impl Into<String>, access_key_secret: SecretString) -> Self {
        GongCredentials::AccessKey {
            access_key: access_key.into(),
            access_key_secret,
        }
    }

    /// Reads `{"access_key", "access_key_secret"}` (or an OAuth `{"access_token"}`) through
    /// a lookup of secret values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        match (get("access_key"), get("access_key_secret")) {
            (Some(key), Some(secret)) => {
                let key = key.expose_secret().trim();
                if key.is_empty() || secret.expose_secret().trim().is_empty() {
                    return Err(Error::config(
                        "gong credentials: \"access_key\" and \"access_key_secret\" must not be empty",
                    ));
                }
                Ok(GongCredentials::access_key(key, secret))
            }
            (Some(_), None) | (None, Some(_)) => Err(Error::config(
                "gong credentials need both \"access_key\" and \"access_key_secret\"",
            )),
            (None, None) => match get("access_token") {
                Some(token) => Ok(GongCredentials::AccessToken(token)),
                None => Err(Error::config(
                    "gong credentials need \"access_key\" and \"access_key_secret\" (or an OAuth \"access_token\")",
                )),
            },
        }
    }
}

fn default_initial_days() -> u32 {
    90
}

fn default_overlap_days() -> u32 {
    14
}

fn default_backfill_days() -> u32 {
    365
}

/// The longest history any day setting may name (about 20 years).
const MAX_DAYS: u32 = 7_300;

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GongConfig {
    /// Replaces the per-second budget (3 per second).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Replaces the daily quota (10,000 requests per UTC day, counted across runs).
    #[serde(default)]
    pub daily_limit: Option<u32>,
    /// The users whose calls are synced, as emails or Gong user ids; empty: every active
    /// user.
    #[serde(default)]
    pub tracked_users: Vec<String>,
    /// Days of history an initial sync reads.
    #[serde(default = "default_initial_days")]
    pub initial_days: u32,
    /// Days before the watermark an incremental sync starts (calls change after they
    /// happen).
    #[serde(default = "default_overlap_days")]
    pub overlap_days: u32,
    /// Days of history a backfill reaches.
    #[serde(default = "default_backfill_days")]
    pub backfill_days: u32,
    /// Only calls of this Gong workspace (`filter.workspaceId`).
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// The company's API origin (Gong gives each customer its own, e.g.
    /// `https://us-55616.api.gong.io`), or a simulator; `None` for the origin the host
    /// registered (`https://api.gong.io` by default).
    #[serde(default)]
    pub base_url: Option<String>,
}

impl Default for GongConfig {
    fn default() -> Self {
        GongConfig {
            rate_limit: None,
            daily_limit: None,
            tracked_users: Vec::new(),
            initial_days: default_initial_days(),
            overlap_days: default_overlap_days(),
            backfill_days: default_backfill_days(),
            workspace_id: None,
            base_url: None,
        }
    }
}

impl GongConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults) and checks it.
    ///
    /// ```
    /// use pandora_sync::connectors::gong::GongConfig;
    ///
    /// let cfg = GongConfig::from_json(&serde_json::json!({
    ///     "tracked_users": ["ada@example.com", "234599484000000001"],
    ///     "initial_days": 30,
    /// }))?;
    /// assert_eq!((cfg.initial_days, cfg.overlap_days, cfg.backfill_days), (30, 14, 365));
    /// assert!(GongConfig::from_json(&serde_json::json!({"lookback": 3})).is_err());
    /// # Ok::<(), pandora_sync::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        // `internal_domains` belongs to the connection (the internal-filter hook owns
        // `conversations.is_internal`); `config_from_json` leaves it out.
        let mut cfg: GongConfig = super::config_from_json(value, "gong")?;
        cfg.validate()?;
        super::check_base_url(&mut cfg.base_url, "gong")?;
        cfg.tracked_users = cfg
            .tracked_users
            .iter()
            .map(|u| u.trim().to_owned())
            .collect();
        cfg.workspace_id = cfg
            .workspace_id
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty());
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(format!("invalid gong config: {m}")));
        if !(1..=MAX_DAYS).contains(&self.initial_days) {
            return bad(format!(
                "initial_days must be between 1 and {MAX_DAYS}, got {}",
                self.initial_days
            ));
        }
        if self.overlap_days > MAX_DAYS {
            return bad(format!(
                "overlap_days must be at most {MAX_DAYS}, got {}",
                self.overlap_days
            ));
        }
        if self.backfill_days > MAX_DAYS || self.backfill_days < self.initial_days {
            return bad(format!(
                "backfill_days must be between initial_days ({}) and {MAX_DAYS}, got {}",
                self.initial_days, self.backfill_days
            ));
        }
        if self.daily_limit == Some(0) {
            return bad("daily_limit must be at least 1".into());
        }
        if let Some(u) = self.tracked_users.iter().find(|u| u.trim().is_empty()) {
            return bad(format!("tracked_users holds an empty entry ({u:?})"));
        }
        Ok(())
    }
}

/// The Gong connector.
pub struct GongConnector {
    client: GongClient,
    config: GongConfig,
}

impl std::fmt::Debug for GongConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GongConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GongConnector {
    /// A connector for the Gong company at `base_url` (`https://api.gong.io`, the
    /// company's own `https://us-NNNNN.api.gong.io`, or a simulator).
    pub fn new(base_url: &str, credentials: GongCredentials, config: GongConfig) -> Result<Self> {
        config.validate()?;
        Ok(GongConnector {
            client: GongClient::new(base_url, &credentials, &config)?,
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
        let mut s = Syncer::new(&self.client, &self.config, ctx, checkpoint);
        s.run(mode, sink).await?;
        let mut report = s.report;
        report.details = json!({
            "mode": match mode {
                Mode::Initial => "initial",
                Mode::Incremental => "incremental",
                Mode::Backfill => "backfill",
            },
            "users_tracked": s.users_tracked,
            "users_failed": s.users_failed,
            "by_user": s.by_user,
            "http": self.client.stats().snapshot(),
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for GongConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Gong
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        // A forced initial sync reads the initial window from scratch; an interrupted one
        // is resumed by an incremental run from its page cursors. The day's request count
        // belongs to the company, not to the streams: it carries over.
        let mut fresh = Checkpoint::default();
        if let Some(q) = ctx.previous().stream(sync::QUOTA_STREAM) {
            fresh
                .streams
                .insert(sync::QUOTA_STREAM.to_owned(), q.clone());
        }
        self.run(ctx, fresh, Mode::Initial, sink).await
    }

    async fn incremental_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), Mode::Incremental, sink)
            .await
    }

    async fn backfill_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        self.run(ctx, ctx.previous().clone(), Mode::Backfill, sink)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let d = GongConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(
            (d.initial_days, d.overlap_days, d.backfill_days),
            (90, 14, 365)
        );
        assert!(d.tracked_users.is_empty() && d.rate_limit.is_none());
        let c = GongConfig::from_json(&json!({
            "rate_limit": {"max_requests": 2, "window_ms": 1000},
            "daily_limit": 5000,
            "tracked_users": [" ada@x.com ", "123"],
            "workspace_id": " ",
            "internal_domains": ["example.com"],
        }))
        .unwrap();
        assert_eq!(c.tracked_users, ["ada@x.com", "123"]);
        assert_eq!(c.daily_limit, Some(5000));
        assert_eq!(c.workspace_id, None);
        for bad in [
            json!({"unknown": 1}),
            json!({"initial_days": 0}),
            json!({"initial_days": 100, "backfill_days": 50}),
            json!({"overlap_days": 100000}),
            json!({"tracked_users": [""]}),
            json!({"tracked_users": "ada@x.com"}),
            json!({"daily_limit": 0}),
            json!({"rate_limit": {"max_requests": 2}}),
        ] {
            let err = GongConfig::from_json(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains("gong config")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn credentials_from_lookup() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| SecretString::from(*v))
            }
        };
        let c = GongCredentials::from_lookup(get(&[
            ("access_key", "AK"),
            ("access_key_secret", "s3cret"),
        ]))
        .unwrap();
        assert!(matches!(&c, GongCredentials::AccessKey { access_key, .. } if access_key == "AK"));
        assert!(!format!("{c:?}").contains("s3cret") && !format!("{c:?}").contains("AK"));
        assert!(matches!(
            GongCredentials::from_lookup(get(&[("access_token", "t")])).unwrap(),
            GongCredentials::AccessToken(_)
        ));
        for bad in [
            &[("access_key", "AK")][..],
            &[][..],
            &[("access_key", " "), ("access_key_secret", "x")][..],
        ] {
            assert!(GongCredentials::from_lookup(get(bad)).is_err());
        }
    }
}
