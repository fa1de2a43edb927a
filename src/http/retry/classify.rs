//! Deciding what a response or error means: success, retry, or a final error.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::Error;
use crate::error::body_excerpt;
use crate::http::headers;

/// What the retry layer does with one attempt's outcome.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// Hand the response to the caller.
    Success,
    /// Try again: after `after` when the provider said how long to wait, else after the
    /// jittered backoff. When retries run out, `error` is returned.
    Retry {
        /// The wait the provider asked for (`Retry-After`, `retry_in_seconds`, …).
        after: Option<Duration>,
        /// The error to return if this was the last allowed attempt.
        error: Error,
    },
    /// Give up with this error (no retry).
    Fail(Error),
}

/// Maps responses (and inner errors) to a [`Verdict`]: the pluggable part of the retry
/// layer that knows a provider's error bodies.
///
/// Implementations usually handle a few provider-specific cases and defer to
/// [`DefaultClassifier`] for the rest.
///
/// # Example
///
/// ```
/// use std::borrow::Cow;
/// use bytes::Bytes;
/// use http::Response;
/// use pandora_sync::Error;
/// use pandora_sync::http::{Classify, DefaultClassifier, Verdict};
///
/// /// An API that signals "slow down" with HTTP 420.
/// #[derive(Debug)]
/// struct Enhance;
///
/// impl Classify for Enhance {
///     fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
///         if response.status().as_u16() == 420 {
///             return Verdict::Retry {
///                 after: None,
///                 error: Error::RateLimited { provider: provider.clone(), retry_after: None },
///             };
///         }
///         DefaultClassifier.classify(provider, response)
///     }
/// }
///
/// let calm = Response::builder().status(420).body(Bytes::new()).unwrap();
/// assert!(matches!(Enhance.classify(&"x".into(), &calm), Verdict::Retry { .. }));
/// ```
pub trait Classify: Send + Sync + fmt::Debug + 'static {
    /// Judges a response (whatever its status).
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict;

    /// Whether an error from the inner service (no response at all) is worth retrying.
    /// The default retries transport errors and per-attempt timeouts.
    fn retry_error(&self, error: &Error) -> bool {
        matches!(error, Error::Transport { .. } | Error::Timeout { .. })
    }

    /// Whether the response says the access token is no longer valid, so the OAuth layer
    /// refreshes it and re-sends the request once. The default is HTTP 401.
    fn is_session_invalid(&self, response: &Response<Bytes>) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
    }
}

/// The status-code table every provider shares:
///
/// | status | verdict |
/// |---|---|
/// | < 400 | success |
/// | 429 | retry after `Retry-After` (else backoff); [`Error::RateLimited`] when retries run out |
/// | 408, 500, 502, 503, 504 | retry (honouring a `Retry-After`); [`Error::Api`] with the status |
/// | 401 | fail with [`Error::AuthFailed`] |
/// | anything else (400, 403, 404, 422, 501, …) | fail with [`Error::Api`] |
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        let status = response.status();
        if status.as_u16() < 400 {
            return Verdict::Success;
        }
        let retry_after = response_retry_after(response);
        match status.as_u16() {
            429 => Verdict::Retry {
                after: retry_after,
                error: rate_limited(provider, retry_after),
            },
            408 | 500 | 502 | 503 | 504 => Verdict::Retry {
                after: retry_after,
                error: api_error(provider, response),
            },
            401 => Verdict::Fail(Error::AuthFailed {
                provider: provider.clone(),
                message: format!("HTTP 401: {}", excerpt(response.body())),
            }),
            _ => Verdict::Fail(api_error(provider, response)),
        }
    }
}

/// The response's `Retry-After` (seconds or HTTP-date), when present and readable.
pub fn response_retry_after(response: &Response<Bytes>) -> Option<Duration> {
    headers::retry_after(response.headers(), SystemTime::now)
}

/// [`Error::RateLimited`] for `provider`.
pub fn rate_limited(provider: &Cow<'static, str>, retry_after: Option<Duration>) -> Error {
    Error::RateLimited {
        provider: provider.clone(),
        retry_after,
    }
}

/// [`Error::Api`] for a response: its status, a redacted body excerpt and its
/// `Retry-After`.
pub fn api_error(provider: &Cow<'static, str>, response: &Response<Bytes>) -> Error {
    Error::Api {
        provider: provider.clone(),
        status: response.status().as_u16(),
        body: excerpt(response.body()),
        retry_after: response_retry_after(response),
    }
}

/// How much of a body is looked at for an excerpt: enough for [`crate::error::BODY_EXCERPT_CHARS`]
/// characters, without running the redaction over a multi-megabyte body.
const EXCERPT_SCAN_BYTES: usize = 8 * 1024;

/// A redacted excerpt of a (possibly huge, possibly non-UTF-8) body.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(EXCERPT_SCAN_BYTES)];
    body_excerpt(&String::from_utf8_lossy(head))
}

/// Whether `haystack` contains `needle` (SIMD-accelerated; cheap on large pages).
pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    memchr::memmem::find(haystack, needle.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response<Bytes> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from(body.to_owned())).unwrap()
    }

    fn p() -> Cow<'static, str> {
        "acme".into()
    }

    #[test]
    fn status_table() {
        for s in [200, 201, 204, 304] {
            assert!(matches!(
                DefaultClassifier.classify(&p(), &resp(s, &[], "")),
                Verdict::Success
            ));
        }
        for s in [408, 500, 502, 503, 504] {
            match DefaultClassifier.classify(&p(), &resp(s, &[], "boom")) {
                Verdict::Retry {
                    after: None,
                    error: Error::Api { status, body, .. },
                } => {
                    assert_eq!(status, s);
                    assert_eq!(body, "boom");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        for s in [400, 403, 404, 405, 409, 422, 501, 505] {
            match DefaultClassifier.classify(&p(), &resp(s, &[], "no")) {
                Verdict::Fail(Error::Api { status, .. }) => assert_eq!(status, s),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert!(matches!(
            DefaultClassifier.classify(&p(), &resp(401, &[], "{\"access_token\":\"leak\"}")),
            Verdict::Fail(Error::AuthFailed { ref message, .. }) if !message.contains("leak")
        ));
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        match DefaultClassifier.classify(&p(), &resp(429, &[("retry-after", "12")], "")) {
            Verdict::Retry {
                after,
                error: Error::RateLimited { retry_after, .. },
            } => {
                assert_eq!(after, Some(Duration::from_secs(12)));
                assert_eq!(retry_after, Some(Duration::from_secs(12)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            DefaultClassifier.classify(&p(), &resp(429, &[], "")),
            Verdict::Retry {
                after: None,
                error: Error::RateLimited {
                    retry_after: None,
                    ..
                }
            }
        ));
        // A 503 with Retry-After is retried after it too, and the error keeps it.
        match DefaultClassifier.classify(&p(), &resp(503, &[("retry-after", "3")], "")) {
            Verdict::Retry { after, error } => {
                assert_eq!(after, Some(Duration::from_secs(3)));
                assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
                assert_eq!(error.status(), Some(503));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_error_retry_and_session() {
        let c = DefaultClassifier;
        assert!(c.retry_error(&Error::Transport {
            provider: p(),
            message: "reset".into(),
            source: None
        }));
        assert!(c.retry_error(&Error::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1)
        }));
        assert!(!c.retry_error(&Error::config("x")));
        assert!(!c.retry_error(&rate_limited(&p(), None)));
        assert!(c.is_session_invalid(&resp(401, &[], "")));
        assert!(!c.is_session_invalid(&resp(403, &[], "")));
    }

    #[test]
    fn excerpt_is_bounded_and_redacted() {
        let mut big = String::from("{\"refresh_token\":\"r-1\",\"x\":\"");
        big.push_str(&"a".repeat(10 * 1024 * 1024));
        let ex = excerpt(big.as_bytes());
        assert!(!ex.contains("r-1"));
        assert!(ex.chars().count() <= crate::error::BODY_EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }
}
