//! A shared counter handle that every layer of one stack reports into.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Counters shared by every layer of a stack and every clone of it.
///
/// Cloning the handle shares the counters. A sync reads [`HttpStats::snapshot`] at the end
/// and reports it (for example in [`SyncReport::details`](crate::connector::SyncReport::details)).
///
/// ```
/// use pandora_sync::http::HttpStats;
///
/// let stats = HttpStats::new();
/// let snapshot = stats.snapshot();
/// assert_eq!(snapshot.requests, 0);
/// let json = serde_json::to_value(snapshot).unwrap();
/// assert_eq!(json["throttle_wait_ms"], 0);
/// ```
#[derive(Clone, Default)]
pub struct HttpStats {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    throttle_wait_nanos: AtomicU64,
    token_refreshes: AtomicU64,
    failures: AtomicU64,
}

/// A point-in-time copy of [`HttpStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HttpStatsSnapshot {
    /// Logical requests made through the stack (one per `call`, however many attempts).
    pub requests: u64,
    /// Requests actually started against the provider (first attempts, retries and the
    /// re-send after a token refresh).
    pub attempts: u64,
    /// Retries scheduled by the retry layer.
    pub retries: u64,
    /// Rate-limit answers seen: HTTP 429 and provider-specific rate-limit signals.
    pub rate_limited: u64,
    /// Total time requests spent waiting in the throttle.
    #[serde(rename = "throttle_wait_ms", serialize_with = "as_millis")]
    pub throttle_wait: Duration,
    /// OAuth token refreshes performed (successful or not).
    pub token_refreshes: u64,
    /// Logical requests that ended in an error.
    pub failures: u64,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl HttpStats {
    /// A new handle with every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current values.
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        let c = &self.inner;
        HttpStatsSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            throttle_wait: Duration::from_nanos(c.throttle_wait_nanos.load(Ordering::Relaxed)),
            token_refreshes: c.token_refreshes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_attempt(&self) {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_retry(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_rate_limited(&self) {
        self.inner.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_throttle_wait(&self, wait: Duration) {
        if !wait.is_zero() {
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            self.inner
                .throttle_wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_token_refresh(&self) {
        self.inner.token_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_failure(&self) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for HttpStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HttpStats").field(&self.snapshot()).finish()
    }
}
