//! Per-request context that the outermost layer attaches and inner layers report into.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::stats::HttpStats;

/// Attached to each request's extensions by [`TraceLayer`](super::TraceLayer); cloned with
/// the request for every attempt, so all attempts of one logical request share it.
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub(crate) provider: Cow<'static, str>,
    pub(crate) stats: HttpStats,
    pub(crate) telemetry: Arc<Telemetry>,
}

/// What the layers below the trace layer learned about one logical request.
#[derive(Default)]
pub(crate) struct Telemetry {
    attempts: AtomicU32,
    throttle_wait_nanos: AtomicU64,
}

impl Telemetry {
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn throttle_wait(&self) -> Duration {
        Duration::from_nanos(self.throttle_wait_nanos.load(Ordering::Relaxed))
    }
}

impl RequestContext {
    pub(crate) fn of(req: &http::Request<Bytes>) -> Option<&RequestContext> {
        req.extensions().get::<RequestContext>()
    }

    /// An attempt started after `waited` in the throttle.
    pub(crate) fn attempt_started(&self, waited: Duration) {
        self.telemetry.attempts.fetch_add(1, Ordering::Relaxed);
        self.stats.add_attempt();
        if !waited.is_zero() {
            let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            self.telemetry
                .throttle_wait_nanos
                .fetch_add(nanos, Ordering::Relaxed);
            self.stats.add_throttle_wait(waited);
        }
    }
}

/// The provider name for errors about `req`: the context's, else `fallback`.
pub(crate) fn provider_of(
    req: &http::Request<Bytes>,
    fallback: &Cow<'static, str>,
) -> Cow<'static, str> {
    RequestContext::of(req).map_or_else(|| fallback.clone(), |c| c.provider.clone())
}
