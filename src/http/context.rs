//! Per-request context that the outermost layer attaches and inner layers report into.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::stats::HttpStats;

/// Attached to each request's extensions by [`TraceLayer`](super::TraceLayer); cloned with
/// the request for every attempt, so all attempts of one logical request share it. One
/// allocation per logical request.
#[derive(Clone)]
pub(crate) struct RequestContext {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Cow<'static, str>,
    stats: HttpStats,
    attempts: AtomicU32,
    throttle_wait_nanos: AtomicU64,
}

impl RequestContext {
    pub(crate) fn new(provider: Cow<'static, str>, stats: HttpStats) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider,
                stats,
                attempts: AtomicU32::new(0),
                throttle_wait_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn of(req: &http::Request<Bytes>) -> Option<&RequestContext> {
        req.extensions().get::<RequestContext>()
    }

    pub(crate) fn provider(&self) -> &Cow<'static, str> {
        &self.inner.provider
    }

    pub(crate) fn stats(&self) -> &HttpStats {
        &self.inner.stats
    }

    /// Attempts started so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.inner.attempts.load(Ordering::Relaxed)
    }

    /// Time spent in the throttle so far, over all attempts.
    pub(crate) fn throttle_wait(&self) -> Duration {
        Duration::from_nanos(self.inner.throttle_wait_nanos.load(Ordering::Relaxed))
    }

    /// An attempt started after `waited` in the throttle.
    pub(crate) fn attempt_started(&self, waited: Duration) {
        self.inner.attempts.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.add_attempt();
        if !waited.is_zero() {
            let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            self.inner
                .throttle_wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
            self.inner.stats.add_throttle_wait(waited);
        }
    }
}

/// The provider name for errors about `req`: the context's, else `fallback`.
pub(crate) fn provider_of(
    req: &http::Request<Bytes>,
    fallback: &Cow<'static, str>,
) -> Cow<'static, str> {
    RequestContext::of(req).map_or_else(|| fallback.clone(), |c| c.provider().clone())
}
