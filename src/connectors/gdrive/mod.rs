//! The Google Drive connector (feature `google-drive`): files → `documents`, with their
//! text. A [`DocumentAdapter`]: [`GoogleDriveConnector::fetch_document_text`] reads one
//! document's text on demand.
//!
//! - **Auth**: OAuth refresh (`client_id`, `client_secret`, `refresh_token`) through the
//!   shared single-flight refresher ([`OAuthTokens`](crate::http::OAuthTokens)): a token
//!   Drive rejects (401) is refreshed once and the request re-sent; `invalid_grant`
//!   (revoked or expired refresh token) and `invalid_client` end the sync with
//!   [`Error::AuthFailed`], never retried. Or a static `access_token`.
//! - **Initial sync**: the changes start token is taken *before* the scan; then
//!   `files.list` with `trashed = false`, explicit `fields`, 1000 files a page, files shared
//!   with the user and (by default, `include_shared_drives`) shared-drive files. Every
//!   non-folder file is a document: title, MIME type, `webViewLink`, owner email, first
//!   parent, size (NULL for Google-native files), created and modified times, and the
//!   shared drive's id in `custom_fields.drive_id`.
//! - **Text**: Google Docs and Slides exported as `text/plain` (the BOM Docs exports carry
//!   is dropped), Sheets as `text/csv` (Drive exports the first sheet), `text/*` files
//!   downloaded (`alt=media`); capped at `max_content_bytes` (1 MiB) at a UTF-8 boundary.
//!   Binary files (PDFs, images) keep `content_text` NULL. A file whose text Drive refuses
//!   (403 `exportSizeLimitExceeded` over 10 MB, not exportable) is stored without text and
//!   captured as a per-record error with its id: the sync ends `completed_with_errors` at
//!   or above the 95 % threshold.
//! - **Incremental sync** reads the changes feed only (no re-listing), from the token the
//!   last run committed; each page's records commit with the next token. Edits, renames
//!   and moves update the row; trashed and removed files are archived (`archived_at`; a
//!   trashed file's row keeps its metadata, its text is cleared and read again if it comes
//!   back);
//!   untrashed files come back; a trashed folder archives its subtree (see the `sync`
//!   module). A changed file's text is read again with it (the store replaces
//!   `content_text` with what a record carries, so a record without text would clear it).
//! - **`folders`**: only those subtrees, recursively; files and folders moved in later
//!   are picked up, moved out are archived.
//! - **Quotas**: 10 requests a second (`rate_limit` replaces it). Drive sends no
//!   `Retry-After` on 403 `userRateLimitExceeded` or 429 `rateLimitExceeded`: truncated
//!   exponential backoff with full jitter; when retries run out the sync stops with
//!   [`Error::RateLimited`] and the next run resumes from the last committed page.
//!
//! Requests: an initial sync costs one start-token request, one `files.list` per 1000
//! files, one for the trashed folders, and one content request per text file; a no-change
//! incremental sync costs one `changes` request. `details` in the sync result reports
//! `requests`, `list_pages`, `change_pages`, `content_fetches` and `content_bytes`.
//!
//! # Config (`--config` JSON; unknown keys are an error)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `folders` | everything the user can see | folder ids: only those subtrees, recursively |
//! | `max_content_bytes` | 1048576 | text kept per document (cut at a UTF-8 boundary) |
//! | `include_shared_drives` | true | also shared-drive files |
//! | `rate_limit` | 10 per 1,000 ms | `{"max_requests", "window_ms"}` |
//! | `base_url` | `https://www.googleapis.com` | the API origin (token endpoint at `/token`), or a simulator |

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

use crate::connector::{
    Checkpoint, DocumentAdapter, RecordSink, SyncCapable, SyncContext, SyncReport,
};
use crate::error::{Error, Result};
use crate::http::{HttpStats, RateLimitConfig};
use crate::model::ConnectorKind;

use client::DriveClient;
use sync::{Mode, Syncer};

/// Google's public API origin, the default base URL.
pub const PUBLIC_ORIGIN: &str = "https://www.googleapis.com";

/// How the connector authenticates.
#[derive(Clone)]
pub enum GoogleDriveCredentials {
    /// An OAuth client and a user's refresh token.
    OAuth {
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: SecretString,
        /// The user's refresh token.
        refresh_token: SecretString,
    },
    /// An access token used as is.
    AccessToken(SecretString),
}

impl std::fmt::Debug for GoogleDriveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GoogleDriveCredentials::OAuth { client_id, .. } => f
                .debug_struct("GoogleDriveCredentials::OAuth")
                .field("client_id", client_id)
                .field("client_secret", &"[REDACTED]")
                .field("refresh_token", &"[REDACTED]")
                .finish(),
            GoogleDriveCredentials::AccessToken(_) => {
                f.write_str("GoogleDriveCredentials::AccessToken([REDACTED])")
            }
        }
    }
}

impl GoogleDriveCredentials {
    /// Reads `{"client_id", "client_secret", "refresh_token"}` or `{"access_token"}`
    /// through a lookup of secret values by key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<SecretString>) -> Result<Self> {
        let present = |k: &str| get(k).filter(|v| !v.expose_secret().trim().is_empty());
        match (
            present("client_id"),
            present("client_secret"),
            present("refresh_token"),
        ) {
            (Some(id), Some(secret), Some(refresh)) => Ok(GoogleDriveCredentials::OAuth {
                client_id: id.expose_secret().trim().to_owned(),
                client_secret: secret,
                refresh_token: refresh,
            }),
            _ => match present("access_token") {
                Some(t) => Ok(GoogleDriveCredentials::AccessToken(t)),
                None => Err(Error::config(
                    "google-drive credentials need \"client_id\", \"client_secret\" and \
                     \"refresh_token\", or \"access_token\"",
                )),
            },
        }
    }
}

fn default_max_content_bytes() -> usize {
    1024 * 1024
}

fn default_true() -> bool {
    true
}

/// The largest `max_content_bytes` (64 MiB).
const MAX_CONTENT_CAP: usize = 64 * 1024 * 1024;

/// Non-secret settings (`--config` JSON). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleDriveConfig {
    /// Only these folders' subtrees, recursively; empty: everything the user can see.
    #[serde(default)]
    pub folders: Vec<String>,
    /// Text kept per document, in bytes (cut at a UTF-8 boundary).
    #[serde(default = "default_max_content_bytes")]
    pub max_content_bytes: usize,
    /// Also shared-drive files.
    #[serde(default = "default_true")]
    pub include_shared_drives: bool,
    /// Replaces the per-second budget (10 a second).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The API origin or a simulator; `None` for the origin the host registered.
    #[serde(default)]
    pub base_url: Option<String>,
}

impl Default for GoogleDriveConfig {
    fn default() -> Self {
        GoogleDriveConfig {
            folders: Vec::new(),
            max_content_bytes: default_max_content_bytes(),
            include_shared_drives: true,
            rate_limit: None,
            base_url: None,
        }
    }
}

impl GoogleDriveConfig {
    /// Reads the config from JSON (`null` or `{}` for the defaults) and checks it.
    ///
    /// ```
    /// use pandora_sync::connectors::gdrive::GoogleDriveConfig;
    ///
    /// let cfg = GoogleDriveConfig::from_json(&serde_json::json!({
    ///     "folders": ["1AbCfolder"],
    ///     "max_content_bytes": 65536,
    /// }))?;
    /// assert_eq!(cfg.folders, ["1AbCfolder"]);
    /// assert!(cfg.include_shared_drives);
    /// assert!(GoogleDriveConfig::from_json(&serde_json::json!({"folder": "x"})).is_err());
    /// # Ok::<(), pandora_sync::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut cfg: GoogleDriveConfig = super::config_from_json(value, "google-drive")?;
        cfg.validate()?;
        super::check_base_url(&mut cfg.base_url, "google-drive")?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(format!("invalid google-drive config: {m}")));
        if !(1..=MAX_CONTENT_CAP).contains(&self.max_content_bytes) {
            return bad(format!(
                "max_content_bytes must be between 1 and {MAX_CONTENT_CAP}, got {}",
                self.max_content_bytes
            ));
        }
        if let Some(f) = self.folders.iter().find(|f| {
            f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return bad(format!("folders holds {f:?}, not a Drive folder id"));
        }
        Ok(())
    }
}

/// The Google Drive connector.
pub struct GoogleDriveConnector {
    client: DriveClient,
    config: GoogleDriveConfig,
}

impl std::fmt::Debug for GoogleDriveConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleDriveConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GoogleDriveConnector {
    /// A connector for the Drive `credentials` open, at `base_url`
    /// (`https://www.googleapis.com` or a simulator; the token endpoint is
    /// `https://oauth2.googleapis.com/token` for Google's origin, else `<base_url>/token`).
    pub fn new(
        base_url: &str,
        credentials: GoogleDriveCredentials,
        config: GoogleDriveConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(GoogleDriveConnector {
            client: DriveClient::new(base_url, &credentials, &config)?,
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
        let before = self.client.stats().snapshot().requests;
        let bytes_before = self.client.content_bytes();
        let mut s = Syncer::new(&self.client, &self.config, ctx, checkpoint);
        s.run(mode, sink).await?;
        let mut report = s.report;
        let http = self.client.stats().snapshot();
        report.details = json!({
            "mode": match mode {
                Mode::Initial => "initial",
                Mode::Incremental => "incremental",
            },
            "requests": http.requests.saturating_sub(before),
            "list_pages": s.list_pages,
            "change_pages": s.change_pages,
            "content_fetches": s.content_fetches,
            "content_bytes": self.client.content_bytes().saturating_sub(bytes_before),
            "archived": s.archived,
            "http": http,
        });
        Ok(report)
    }
}

#[async_trait]
impl SyncCapable for GoogleDriveConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::GoogleDrive
    }

    async fn initial_sync(
        &self,
        ctx: &SyncContext,
        sink: &mut dyn RecordSink,
    ) -> Result<SyncReport> {
        // A forced initial sync scans from scratch with a new start token; an interrupted
        // scan is resumed by an incremental run from its page cursor.
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

#[async_trait]
impl DocumentAdapter for GoogleDriveConnector {
    /// The document's current text (exported or downloaded, capped at
    /// `max_content_bytes`), `None` for files without a text form. Drive's refusals
    /// (`exportSizeLimitExceeded`, 404) are errors.
    async fn fetch_document_text(&self, source_id: &str) -> Result<Option<String>> {
        let raw = self.client.get_file(source_id).await?;
        let f = transform::decode(raw)?;
        match transform::text_source(f.mime_type.as_deref()) {
            Some(source) => Ok(Some(
                self.client
                    .text(&f.id, source, self.config.max_content_bytes)
                    .await?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let d = GoogleDriveConfig::from_json(&serde_json::Value::Null).unwrap();
        assert_eq!(
            (
                d.max_content_bytes,
                d.include_shared_drives,
                d.folders.len()
            ),
            (1_048_576, true, 0)
        );
        let c = GoogleDriveConfig::from_json(&json!({
            "folders": ["1abc_-Z"], "max_content_bytes": 10, "include_shared_drives": false,
            "rate_limit": {"max_requests": 5, "window_ms": 1000}, "base_url": "http://127.0.0.1:9/",
        }))
        .unwrap();
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:9"));
        for bad in [
            json!({"unknown": 1}),
            json!({"max_content_bytes": 0}),
            json!({"folders": ["a'b"]}),
            json!({"folders": "abc"}),
            json!({"base_url": "ftp://x"}),
        ] {
            let err = GoogleDriveConfig::from_json(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains("google-drive config")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn credentials_never_show_secrets() {
        let creds = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| SecretString::from(*v))
            }
        };
        let c = GoogleDriveCredentials::from_lookup(creds(&[
            ("client_id", "cid"),
            ("client_secret", "cs-s3cret"),
            ("refresh_token", "1//rt-s3cret"),
        ]))
        .unwrap();
        assert!(matches!(c, GoogleDriveCredentials::OAuth { .. }));
        assert!(!format!("{c:?}").contains("s3cret"));
        let conn = GoogleDriveConnector::new("http://127.0.0.1:9", c, GoogleDriveConfig::default())
            .unwrap();
        assert!(!format!("{conn:?}").contains("s3cret"));
        let t =
            GoogleDriveCredentials::from_lookup(creds(&[("access_token", "ya29.s3cret")])).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        let err = GoogleDriveCredentials::from_lookup(creds(&[("client_id", "x")])).unwrap_err();
        assert!(err.to_string().contains("refresh_token"), "{err}");
    }
}
