//! Drive HTTP client: every request through [`presets::google_drive`] (10 a second or the
//! config's `rate_limit`; `userRateLimitExceeded` / `rateLimitExceeded` retried with
//! truncated exponential backoff and full jitter, since Drive sends no `Retry-After`;
//! 5xx retried; the daily quota stops the sync), with OAuth refresh (single flight, one
//! refresh per expired token: a 401 refreshes and re-sends once) or a static token.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Response, Uri};

use super::transform::{TextSource, capped_text};
use super::types::{ChangeList, FileList, StartPageToken};
use super::{GoogleDriveConfig, GoogleDriveCredentials, PUBLIC_ORIGIN};
use crate::connectors::rest::JsonApi;
use crate::error::{Error, Result};
use crate::http::{
    Auth, HttpStack, HttpStats, HttpTokenEndpoint, OAuthTokens, StaticAuth, Transport,
    TransportConfig, presets,
};

/// The members of a file the connector reads (explicit: `fields=*` caps change pages).
pub(crate) const FILE_FIELDS: &str = "id,name,mimeType,parents,driveId,owners(emailAddress),\
    createdTime,modifiedTime,size,webViewLink,trashed";
/// Files per page: Drive's maximum.
pub(crate) const PAGE_SIZE: u32 = 1000;
/// Google's token endpoint (on its own origin).
const PUBLIC_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

pub(crate) struct DriveClient {
    api: JsonApi,
    stack: HttpStack,
    stats: HttpStats,
    all_drives: bool,
    /// Content bytes downloaded and exported.
    content_bytes: AtomicU64,
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl DriveClient {
    pub(crate) fn new(
        base_url: &str,
        credentials: &GoogleDriveCredentials,
        config: &GoogleDriveConfig,
    ) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::config(format!(
                "invalid Google Drive base URL {base:?}: expected http(s)://host"
            )));
        }
        let transport = Transport::new(TransportConfig::default())?;
        let stats = HttpStats::new();
        let auth: Auth = match credentials {
            GoogleDriveCredentials::AccessToken(token) => StaticAuth::bearer(token)?.into(),
            GoogleDriveCredentials::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let token_url = if base == PUBLIC_ORIGIN {
                    PUBLIC_TOKEN_URL.to_owned()
                } else {
                    format!("{base}/token")
                };
                let token_url: Uri = token_url
                    .parse()
                    .map_err(|e| Error::config(format!("invalid Google Drive base URL: {e}")))?;
                let endpoint = HttpTokenEndpoint::new(
                    transport.clone(),
                    "google-drive",
                    token_url,
                    client_id.clone(),
                    client_secret.clone(),
                );
                OAuthTokens::builder("google-drive", endpoint, refresh_token.clone())
                    .build()
                    .into()
            }
        };
        let stack = presets::google_drive()
            .with_optional_rate_limit(config.rate_limit)?
            .with_stats(stats.clone())
            .build(auth, transport)?;
        Ok(DriveClient {
            api: JsonApi::new(base, "google-drive", "Google Drive"),
            stack,
            stats,
            all_drives: config.include_shared_drives,
            content_bytes: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Content bytes downloaded and exported so far.
    pub(crate) fn content_bytes(&self) -> u64 {
        self.content_bytes.load(Ordering::Relaxed)
    }

    fn drives_params(&self) -> Vec<(&'static str, &'static str)> {
        if self.all_drives {
            vec![
                ("supportsAllDrives", "true"),
                ("includeItemsFromAllDrives", "true"),
            ]
        } else {
            vec![("supportsAllDrives", "true")]
        }
    }

    /// The changes feed's current position (same corpus parameters as `changes`).
    pub(crate) async fn start_page_token(&self) -> Result<String> {
        let t: StartPageToken = self
            .api
            .send(
                &self.stack,
                Method::GET,
                &format!(
                    "/drive/v3/changes/startPageToken?{}",
                    query(&[("supportsAllDrives", "true")])
                ),
                None,
            )
            .await?;
        Ok(t.start_page_token)
    }

    /// One `files.list` page for `q`.
    pub(crate) async fn list_files(&self, q: &str, page_token: Option<&str>) -> Result<FileList> {
        let fields = format!("nextPageToken,incompleteSearch,files({FILE_FIELDS})");
        let size = PAGE_SIZE.to_string();
        let mut p: Vec<(&str, &str)> = vec![
            ("q", q),
            ("fields", &fields),
            ("pageSize", &size),
            ("spaces", "drive"),
        ];
        if self.all_drives {
            p.push(("corpora", "allDrives"));
        } else {
            p.push(("corpora", "user"));
        }
        p.extend(self.drives_params());
        if let Some(t) = page_token {
            p.push(("pageToken", t));
        }
        self.api
            .send(
                &self.stack,
                Method::GET,
                &format!("/drive/v3/files?{}", query(&p)),
                None,
            )
            .await
    }

    /// One `changes.list` page from `token`.
    pub(crate) async fn changes(&self, token: &str) -> Result<ChangeList> {
        let fields = format!(
            "nextPageToken,newStartPageToken,changes(changeType,time,removed,fileId,file({FILE_FIELDS}))"
        );
        let size = PAGE_SIZE.to_string();
        let mut p: Vec<(&str, &str)> = vec![
            ("pageToken", token),
            ("pageSize", &size),
            ("includeRemoved", "true"),
            ("spaces", "drive"),
            ("fields", &fields),
        ];
        p.extend(self.drives_params());
        self.api
            .send(
                &self.stack,
                Method::GET,
                &format!("/drive/v3/changes?{}", query(&p)),
                None,
            )
            .await
    }

    /// One file's metadata.
    pub(crate) async fn get_file(&self, id: &str) -> Result<serde_json::Value> {
        let p = [("fields", FILE_FIELDS), ("supportsAllDrives", "true")];
        self.api
            .send(
                &self.stack,
                Method::GET,
                &format!("/drive/v3/files/{}?{}", encode_id(id), query(&p)),
                None,
            )
            .await
    }

    /// A file's text (`max` bytes at most, at a UTF-8 boundary, BOM stripped). Errors are
    /// the provider's (`exportSizeLimitExceeded`, `fileNotDownloadable`, …) as
    /// [`Error::Api`].
    pub(crate) async fn text(&self, id: &str, source: TextSource, max: usize) -> Result<String> {
        let path = match source {
            TextSource::Export(mime) => format!(
                "/drive/v3/files/{}/export?{}",
                encode_id(id),
                query(&[("mimeType", mime), ("supportsAllDrives", "true")])
            ),
            TextSource::Download => format!(
                "/drive/v3/files/{}?{}",
                encode_id(id),
                query(&[("alt", "media"), ("supportsAllDrives", "true")])
            ),
        };
        let resp: Response<Bytes> = self
            .api
            .send_raw(&self.stack, Method::GET, &path, None)
            .await?;
        if !resp.status().is_success() {
            return Err(self.api.status_error(&resp));
        }
        self.content_bytes
            .fetch_add(resp.body().len() as u64, Ordering::Relaxed);
        Ok(capped_text(resp.body(), max))
    }
}

/// A file id in a path (Drive ids are URL-safe; anything else is percent-encoded).
fn encode_id(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_path_safe() {
        assert_eq!(encode_id("1AbC-_9"), "1AbC-_9");
        assert_eq!(encode_id("a/b?c"), "a%2Fb%3Fc");
    }
}
