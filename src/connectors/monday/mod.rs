//! The monday.com connector (feature `monday`): board items → `tasks`, and writes back
//! through [`TaskAdapter`](crate::TaskAdapter) (create, update, complete).
//!
//! - **Boards**: every active board the token can see (`boards(limit: 100, page: n)`, paged
//!   to the end: an unpaged listing stops at 100), or the config's `boards`. The account's
//!   users (id → email) are read in the same requests. Per board its columns: the status,
//!   people and date columns are found by **type and settings** (column ids differ per
//!   board: `status`, `color_mk…`): the status column is the `status` column titled
//!   "Status", else the first one whose settings name done labels; its done labels are
//!   the labels of `settings.done_colors` (not "index 1").
//! - **Items → `tasks`**: title, board id and name, group title, status label, assignee
//!   email (people column `value` → user id → email; the `text` holds names), due date,
//!   `completed_at` when the status label is a done label (the status value's
//!   `changed_at`), url, created and updated times; every other column as `{column id:
//!   text (or value)}` in `custom_fields`.
//! - **Initial sync**: `items_page(limit: 500)` then `next_items_page`, ordered by
//!   `__last_updated__` ascending, one checkpoint per page (stream `board:<id>`). The first
//!   pages of up to 10 boards share one request (each board under its own alias with its
//!   own filter); further pages go board by board. 25 boards with 1,538 items: 6 requests;
//!   a no-change incremental sync of them: 4 (the listing and three first-page requests).
//! - **Incremental sync**: `query_params` rules on `__last_updated__ >= watermark − 10 min`
//!   and `<= the sync's start` (the official SDK's `["EXACT", ts]` form), ascending.
//! - **Expired cursors** (`CursorExpiredError`, 60 minutes): the pass re-queries from the
//!   newest `updated_at` it stored (`>=`), never from the board's start.
//! - **Archived and deleted items** are soft-deleted (`archived_at`): an incremental pass
//!   reads the board's `activity_logs` for its window in the same request as its first
//!   page (`archive_pulse` / `delete_pulse` name the item), then confirms each item's
//!   `state` with `items(ids)` (an item restored since stays). `items_page` lists active
//!   items only, so without the logs a removal would be invisible; the logs cost nothing
//!   extra when nothing was removed, where checking every stored id would cost a request
//!   per 100 items.
//! - **Complexity**: every query selects `complexity { before after query
//!   reset_in_x_seconds }`; when the last answer left less than its own cost, the next
//!   query waits for the reset. A budget error (HTTP 200 with
//!   `errors[].extensions.code = COMPLEXITY_BUDGET_EXHAUSTED` and `retry_in_seconds`, or the
//!   legacy top-level `ComplexityException`) is retried after exactly the announced wait
//!   ([`presets::monday`](crate::http::presets::monday)); `DAILY_LIMIT_EXCEEDED` stops the
//!   sync with its checkpoint ([`Error::QuotaExhausted`], reset at midnight UTC).
//! - Every request sends `API-Version` and the token in `Authorization`; values travel as
//!   GraphQL variables, never spliced into the query text.
//!
//! # Writes ([`TaskAdapter`](crate::TaskAdapter))
//!
//! One mutation at a time (concurrent mutations on a board can corrupt it), values as
//! variables, the item name verbatim, `column_values` JSON-encoded per column type (status
//! `{"label"}`, people `{"personsAndTeams"}` with the user id looked up from the email,
//! date `{"date"}`). An unknown status label or email is an error before any mutation is
//! sent (labels are never created: no `create_labels_if_missing`); a validation error from
//! monday is returned as is, never retried. `complete_task` sets the board's first done
//! label.
//!
//! # Config (`--config` JSON; unknown keys are an error)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `boards` | `[]` (every active board) | board ids |
//! | `rate_limit` | 50 per 60 s | `{"max_requests", "window_ms"}` |
//! | `base_url` | `https://api.monday.com` | the API origin or a simulator |

mod client;
#[cfg(test)]
mod fuzz;
mod sync;
mod transform;
mod types;
mod write;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::connector::{Checkpoint, RecordSink, SyncCapable, SyncContext, SyncReport};
use crate::error::{Error, Result};
use crate::http::{HttpStats, RateLimitConfig};
use crate::model::ConnectorKind;

use client::MondayClient;
use sync::{Mode, Syncer};
use transform::BoardPlan;

/// How the connector authenticates: a personal or app API token (`Authorization: <token>`).
#[derive(Clone)]
pub struct MondayCredentials {
    api_token: SecretString,
}

impl std::fmt::Debug for MondayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MondayCredentials([REDACTED])")
    }
}

impl MondayCredentials {
    /// An API token.
    pub fn api_token(token: SecretString) -> Self {
        MondayCredentials { api_token: token }
    }

    /// Reads `{"api_token"}` through a lookup of secret values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        match get("api_token") {
            Some(t) if !t.expose_secret().trim().is_empty() => {
                Ok(MondayCredentials { api_token: t })
            }
            Some(_) => Err(Error::config(
                "monday credentials: \"api_token\" must not be empty",
            )),
            None => Err(Error::config("monday credentials need \"api_token\"")),
        }
    }
}

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MondayConfig {
    /// Replaces the request budget (50 per 60 s).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The boards to sync (ids); empty: every active board the token can see.
    #[serde(default)]
    pub boards: Vec<String>,
    /// The API origin, or a simulator; `None` for the origin the host registered
    /// (`https://api.monday.com` by default).
    #[serde(default)]
    pub base_url: Option<String>,
}

impl MondayConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults) and checks it.
    ///
    /// ```
    /// use pandora_sync::connectors::monday::MondayConfig;
    ///
    /// let cfg = MondayConfig::from_json(&serde_json::json!({"boards": ["1234567890"]}))?;
    /// assert_eq!(cfg.boards, ["1234567890"]);
    /// assert!(MondayConfig::from_json(&serde_json::json!({"board": 1})).is_err());
    /// assert!(MondayConfig::from_json(&serde_json::json!({"boards": ["abc"]})).is_err());
    /// # Ok::<(), pandora_sync::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut cfg: MondayConfig = super::config_from_json(value, "monday")?;
        cfg.boards = cfg.boards.iter().map(|b| b.trim().to_owned()).collect();
        cfg.validate()?;
        super::check_base_url(&mut cfg.base_url, "monday")?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if let Some(b) = self
            .boards
            .iter()
            .find(|b| b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()))
        {
            return Err(Error::config(format!(
                "invalid monday config: boards holds {b:?}, not a board id"
            )));
        }
        Ok(())
    }
}

/// The monday.com connector.
pub struct MondayConnector {
    client: MondayClient,
    config: MondayConfig,
    /// Board plans the writer looked up, by board id.
    plans: Mutex<HashMap<String, BoardPlan>>,
    /// Mutations run one at a time.
    write_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for MondayConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MondayConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MondayConnector {
    /// A connector for the monday.com API at `base_url` (`https://api.monday.com` or a
    /// simulator).
    pub fn new(
        base_url: &str,
        credentials: MondayCredentials,
        config: MondayConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(MondayConnector {
            client: MondayClient::new(base_url, &credentials.api_token, &config)?,
            config,
            plans: Mutex::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
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
        let before = self.client.budget();
        let mut s = Syncer::new(&self.client, &self.config, ctx, checkpoint);
        s.run(mode, sink).await?;
        let after = self.client.budget();
        let mut report = s.report;
        report.details = json!({
            "mode": match mode { Mode::Initial => "initial", Mode::Incremental => "incremental" },
            "boards": s.boards,
            "boards_failed": s.boards_failed,
            "pages": s.pages,
            "deleted": s.deleted,
            "cursor_recoveries": s.recoveries,
            "complexity": {
                "spent": after.spent - before.spent,
                "queries": after.queries - before.queries,
                "paced_waits": after.paced_waits - before.paced_waits,
                "last": after.last.map(|c| json!({"before": c.before, "after": c.after, "query": c.query, "reset_in_x_seconds": c.reset_in_x_seconds})),
            },
            "http": self.client.stats().snapshot(),
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for MondayConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Monday
    }

    /// The account id (`me { account { id } }`), which monday.com's webhook JWTs carry as
    /// `accountId`.
    async fn webhook_account(&self) -> Result<Option<String>> {
        #[derive(serde::Deserialize)]
        struct Me {
            me: Option<MeAccount>,
        }
        #[derive(serde::Deserialize)]
        struct MeAccount {
            account: Option<Account>,
        }
        #[derive(serde::Deserialize)]
        struct Account {
            id: serde_json::Value,
        }
        let me: Me = self
            .client
            .graphql(
                "query { me { account { id } } }",
                serde_json::json!({}),
                false,
            )
            .await?;
        Ok(me.me.and_then(|m| m.account).and_then(|a| match a.id {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s),
            _ => None,
        }))
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
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
    fn config_and_credentials() {
        let d = MondayConfig::from_json(&serde_json::Value::Null).unwrap();
        assert!(d.boards.is_empty() && d.rate_limit.is_none());
        let c =
            MondayConfig::from_json(&json!({"boards": [" 123 "], "internal_domains": ["x.com"],
            "rate_limit": {"max_requests": 5, "window_ms": 1000}}))
            .unwrap();
        assert_eq!(c.boards, ["123"]);
        for bad in [
            json!({"boards": "123"}),
            json!({"boards": [""]}),
            json!({"x": 1}),
            json!({"base_url": "ftp://x"}),
        ] {
            assert!(
                matches!(MondayConfig::from_json(&bad), Err(Error::Config(m)) if m.contains("monday config")),
                "{bad}"
            );
        }
        let get =
            |v: &'static str| move |k: &str| (k == "api_token").then(|| SecretString::from(v));
        let creds = MondayCredentials::from_lookup(get("tok-s3cret")).unwrap();
        assert!(!format!("{creds:?}").contains("s3cret"));
        assert!(MondayCredentials::from_lookup(get(" ")).is_err());
        assert!(MondayCredentials::from_lookup(|_| None).is_err());
        let conn = MondayConnector::new("http://127.0.0.1:9", creds, c).unwrap();
        assert!(!format!("{conn:?}").contains("s3cret"));
    }
}
