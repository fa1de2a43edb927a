//! The crate's one error type and its classification.
//!
//! Every fallible function in `pandora_sync` returns [`Result<T>`]. The variants carry what a
//! caller acts on: the HTTP status and provider of an API error, how long to wait after a rate
//! limit, when a daily quota resets. [`Error::is_retryable`], [`Error::retry_after`] and
//! [`Error::is_snooze`] classify an error without matching on it.
//!
//! Provider response bodies are only ever stored as a short excerpt (at most 512 characters)
//! with anything that looks like a credential redacted (see [`Error::api`]), so tokens echoed
//! back by a provider never reach logs or the database.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error kept for `std::error::Error::source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The longest body excerpt kept in an [`Error::Api`], in characters.
pub(crate) const BODY_EXCERPT_CHARS: usize = 512;

/// Everything that can go wrong in `pandora_sync`.
///
/// The enum is `#[non_exhaustive]`: match the variants you act on and keep a fallback arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The provider answered with an error status that no retry fixed.
    #[error("{provider} API error: HTTP {status}: {body}")]
    Api {
        /// Provider name, e.g. `hubspot`.
        provider: Cow<'static, str>,
        /// HTTP status code of the last attempt.
        status: u16,
        /// A redacted excerpt of the response body (at most 512 characters).
        body: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// The provider rate-limited the request (HTTP 429 or a provider-specific signal).
    #[error("{provider} rate limit hit{}", fmt_after(*retry_after))]
    RateLimited {
        /// Provider name.
        provider: Cow<'static, str>,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },

    /// A daily (or longer) quota is used up; the sync stops and resumes after the reset.
    #[error("{provider} quota exhausted{}", fmt_reset(*resets_at))]
    QuotaExhausted {
        /// Provider name.
        provider: Cow<'static, str>,
        /// When the quota resets, when known.
        resets_at: Option<DateTime<Utc>>,
    },

    /// Credentials were rejected or could not be refreshed.
    #[error("{provider} authentication failed: {message}")]
    AuthFailed {
        /// Provider name.
        provider: Cow<'static, str>,
        /// What failed (never contains the credential itself).
        message: String,
    },

    /// The request never got an answer: connection refused or reset, DNS, TLS.
    #[error("{provider} transport error: {message}")]
    Transport {
        /// Provider name.
        provider: Cow<'static, str>,
        /// Description of the failure.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A request or operation exceeded its time limit.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out (e.g. `hubspot request`).
        what: Cow<'static, str>,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The configuration is invalid: bad arguments, unknown connector, missing keys.
    #[error("configuration error: {0}")]
    Config(String),

    /// The storage backend failed.
    #[error("storage error: {message}")]
    Storage {
        /// What the store was doing.
        message: String,
        /// The database driver's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A provider record or response could not be decoded.
    #[error("decode error{}: {message}", fmt_record(record_id.as_deref()))]
    Decode {
        /// The provider id of the record, when known.
        record_id: Option<String>,
        /// What was wrong with it.
        message: String,
    },

    /// The operation is not supported by this connector or backend.
    #[error("unsupported operation: {operation} is not supported by {by}")]
    Unsupported {
        /// The operation, e.g. `backfill_sync`.
        operation: Cow<'static, str>,
        /// Who does not support it, e.g. `hubspot`.
        by: Cow<'static, str>,
    },

    /// Another sync or job holds what this one needs (the HTTP layer maps this to 409).
    #[error("conflict: {message}")]
    Conflict {
        /// What is already running.
        message: String,
        /// The id of the running sync or job, when known.
        running_id: Option<uuid::Uuid>,
    },

    /// The work was cancelled through its cancellation token.
    #[error("cancelled")]
    Cancelled,

    /// A sync ran but failed (a connector failed, or too many records failed): the job
    /// that ran it fails its attempt and is retried with backoff while attempts remain.
    #[error("sync failed: {message}")]
    SyncFailed {
        /// What failed, per connector.
        message: String,
    },
}

fn fmt_after(after: Option<Duration>) -> String {
    after.map_or_else(String::new, |d| format!(", retry after {d:?}"))
}

fn fmt_reset(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(String::new, |t| format!(", resets at {}", t.to_rfc3339()))
}

fn fmt_record(id: Option<&str>) -> String {
    id.map_or_else(String::new, |id| format!(" in record {id}"))
}

impl Error {
    /// An API error whose body is redacted and cut to an excerpt.
    pub fn api(provider: impl Into<Cow<'static, str>>, status: u16, body: &str) -> Self {
        Error::Api {
            provider: provider.into(),
            status,
            body: body_excerpt(body),
            retry_after: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// A decode error, with the record id when known.
    pub fn decode(record_id: Option<&str>, message: impl Into<String>) -> Self {
        Error::Decode {
            record_id: record_id.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A storage error wrapping its cause.
    pub fn storage(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Storage {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An unsupported-operation error.
    pub fn unsupported(
        operation: impl Into<Cow<'static, str>>,
        by: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            by: by.into(),
        }
    }

    /// The HTTP status of the last provider response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Whether trying the same operation again later may succeed.
    ///
    /// True for rate limits, transport failures, timeouts and HTTP 408, 429 and 5xx. False
    /// for quota exhaustion (it needs the reset, not a retry), authentication, configuration,
    /// decode and other client errors, and cancellation.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Api { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Whether a job that failed with this error should be snoozed (rescheduled without
    /// consuming an attempt) rather than failed: rate limits and exhausted quotas.
    pub fn is_snooze(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::QuotaExhausted { .. }
                | Error::Api { status: 429, .. }
        )
    }

    /// How long the provider asked to wait before trying again, when it said.
    ///
    /// For an exhausted quota this is the time until `resets_at` (zero if that has passed).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Api { retry_after, .. } => *retry_after,
            Error::QuotaExhausted {
                resets_at: Some(at),
                ..
            } => Some((*at - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
            _ => None,
        }
    }

    /// When an exhausted quota resets, when known.
    pub fn resets_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Error::QuotaExhausted { resets_at, .. } => *resets_at,
            _ => None,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::storage("database operation failed", e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::decode(None, e.to_string())
    }
}

static SECRET_PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    // Invariant: these literal patterns are valid regular expressions (a unit test compiles
    // each one), so `filter_map` drops nothing in practice.
    [
        // "access_token": "…", 'refresh_token':'…', client_secret=…, api_key=…, password: …
        (
            r#"(?i)(["']?(?:access_token|refresh_token|id_token|client_secret|api_key|apikey|api_token|access_key_secret|password|secret|token)["']?\s*[:=]\s*["']?)[^"'&\s,}]+"#,
            "${1}[REDACTED]",
        ),
        // Authorization: Bearer …, Basic …
        (
            r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*",
            "${1} [REDACTED]",
        ),
        // Bare JWTs.
        (
            r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+",
            "[REDACTED]",
        ),
    ]
    .into_iter()
    .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
    .collect()
});

/// Replaces anything that looks like a credential in `text` with `[REDACTED]`.
///
/// Covers JSON and form fields named like tokens, secrets, passwords and API keys, `Bearer`
/// and `Basic` authorization values, and bare JWTs.
pub(crate) fn redact_secrets(text: &str) -> String {
    let mut out = Cow::Borrowed(text);
    for (re, replacement) in SECRET_PATTERNS.iter() {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, *replacement).into_owned());
        }
    }
    out.into_owned()
}

/// A redacted excerpt of a response body, at most [`BODY_EXCERPT_CHARS`] characters.
pub(crate) fn body_excerpt(body: &str) -> String {
    // Redact before cutting so a secret straddling the cut cannot leak its first half.
    let redacted = redact_secrets(body);
    let mut chars = redacted.char_indices();
    match chars.nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &redacted[..cut]),
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_pattern_compiles() {
        assert_eq!(SECRET_PATTERNS.len(), 3);
    }

    #[test]
    fn redacts_json_form_and_headers() {
        let body = r#"{"error":"bad","refresh_token": "r-123", "client_secret":"shh"} api_key=k1&x=2 Authorization: Bearer abc.def-ghi"#;
        let out = redact_secrets(body);
        assert!(!out.contains("r-123"), "{out}");
        assert!(!out.contains("shh"), "{out}");
        assert!(!out.contains("k1"), "{out}");
        assert!(!out.contains("abc.def-ghi"), "{out}");
        assert!(out.contains(r#""error":"bad""#), "{out}");
        assert!(out.contains("x=2"), "{out}");
    }

    #[test]
    fn redacts_a_json_token_and_keeps_the_rest() {
        let out = redact_secrets(r#"{"access_token":"abc123","ok":true}"#);
        assert_eq!(out, r#"{"access_token":"[REDACTED]","ok":true}"#);
    }

    #[test]
    fn redacts_jwt() {
        let out = redact_secrets("token eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl here");
        assert!(!out.contains("eyJzdWIiOiIx"), "{out}");
        assert!(out.ends_with(" here"));
    }

    #[test]
    fn excerpt_is_bounded_and_utf8_safe() {
        let long = "é".repeat(2000);
        let ex = body_excerpt(&long);
        assert_eq!(ex.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(ex.ends_with('…'));
        assert_eq!(body_excerpt("short"), "short");
    }

    #[test]
    fn api_error_keeps_status_and_redacts_body() {
        let e = Error::api(
            "hubspot",
            401,
            r#"{"message":"bad token","access_token":"tok"}"#,
        );
        assert_eq!(e.status(), Some(401));
        assert!(!e.to_string().contains("tok\""));
        assert!(!format!("{e:?}").contains(r#""tok""#));
        assert!(!e.is_retryable());
    }

    #[test]
    fn classification() {
        let rl = Error::RateLimited {
            provider: "gong".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert!(rl.is_retryable());
        assert!(rl.is_snooze());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(rl.status(), Some(429));

        for status in [408, 429, 500, 502, 503, 504] {
            assert!(Error::api("x", status, "").is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(!Error::api("x", status, "").is_retryable(), "{status}");
        }

        let reset = Utc::now() + chrono::Duration::hours(2);
        let quota = Error::QuotaExhausted {
            provider: "salesforce".into(),
            resets_at: Some(reset),
        };
        assert!(!quota.is_retryable());
        assert!(quota.is_snooze());
        assert_eq!(quota.resets_at(), Some(reset));
        let wait = quota.retry_after().unwrap();
        assert!(wait > Duration::from_secs(7000) && wait <= Duration::from_secs(7200));

        let past = Error::QuotaExhausted {
            provider: "salesforce".into(),
            resets_at: Some(Utc::now() - chrono::Duration::hours(1)),
        };
        assert_eq!(past.retry_after(), Some(Duration::ZERO));

        assert!(!Error::Cancelled.is_retryable());
        assert!(!Error::config("x").is_snooze());
        assert!(
            Error::Timeout {
                what: "req".into(),
                after: Duration::from_secs(30)
            }
            .is_retryable()
        );
    }

    #[test]
    fn messages_are_readable() {
        let e = Error::decode(Some("42"), "amount is not a number");
        assert_eq!(
            e.to_string(),
            "decode error in record 42: amount is not a number"
        );
        let e = Error::unsupported("backfill_sync", "hubspot");
        assert_eq!(
            e.to_string(),
            "unsupported operation: backfill_sync is not supported by hubspot"
        );
    }
}
