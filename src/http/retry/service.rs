use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::classify::{Classify, Verdict};
use super::config::{Jitter, RetryConfig};
use super::future::RetryFuture;
use crate::http::Limiter;
use crate::http::context::RequestContext;
use crate::{Error, Result};

/// Marks a request as not idempotent (insert it into the request's extensions): it is then
/// retried only after rate-limit answers, which prove it was not processed, never after a
/// 5xx, a timeout or a dropped connection, which might have been processed.
///
/// ```
/// use bytes::Bytes;
/// use pandora_sync::http::NonIdempotent;
///
/// let mut req = http::Request::post("https://api.monday.com/v2").body(Bytes::new()).unwrap();
/// req.extensions_mut().insert(NonIdempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonIdempotent;

pub(super) struct Policy {
    pub(super) provider: Cow<'static, str>,
    pub(super) config: RetryConfig,
    pub(super) classifier: Arc<dyn Classify>,
    pub(super) jitter: Arc<dyn Jitter>,
    pub(super) limiter: Option<Limiter>,
}

impl Policy {
    /// Lets the shared limiter know about budget signals found in a body.
    fn report(&self, error: &Error) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        match error {
            Error::RateLimited {
                retry_after: Some(after),
                ..
            } => limiter.hold_for(*after),
            Error::QuotaExhausted { resets_at, .. } => limiter.quota_exhausted(*resets_at),
            _ => {}
        }
    }

    fn backoff(&self, retry: u32) -> std::time::Duration {
        let ceiling = self.config.backoff_ceiling(retry);
        self.jitter.sample(ceiling).min(ceiling)
    }
}

/// Retries a request per its [`RetryLayer`](super::RetryLayer)'s configuration and
/// classifier. The request is cloned for every attempt (its body is [`Bytes`], so that is
/// cheap).
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> Retry<S> {
    pub(super) fn new(inner: S, policy: Arc<Policy>) -> Self {
        Self { inner, policy }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("provider", &self.policy.provider)
            .field("config", &self.policy.config)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Bytes>> for Retry<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = RetryFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        RetryFuture::new(run(ready, self.policy.clone(), req))
    }
}

async fn run<S>(mut svc: S, policy: Arc<Policy>, req: Request<Bytes>) -> Result<Response<Bytes>>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error>,
{
    let started = Instant::now();
    let only_rate_limits = req.extensions().get::<NonIdempotent>().is_some();
    let stats = RequestContext::of(&req).map(|c| c.stats().clone());
    let config = &policy.config;
    let mut retry: u32 = 0;
    loop {
        if retry > 0 {
            svc.ready().await?;
        }
        let (after, error) = match svc.call(req.clone()).await {
            Ok(response) => match policy.classifier.classify(&policy.provider, &response) {
                Verdict::Success => return Ok(response),
                Verdict::Fail(error) => {
                    policy.report(&error);
                    return Err(error);
                }
                Verdict::Retry { after, error } => {
                    // HTTP 429s are counted by the throttle; count the rate limits only a
                    // classifier can see (monday's 200 + COMPLEXITY_BUDGET_EXHAUSTED, …).
                    if matches!(error, Error::RateLimited { .. })
                        && response.status() != StatusCode::TOO_MANY_REQUESTS
                        && let Some(stats) = &stats
                    {
                        stats.add_rate_limited();
                    }
                    (after, error)
                }
            },
            Err(error) if policy.classifier.retry_error(&error) => (None, error),
            Err(error) => return Err(error),
        };
        policy.report(&error);

        if retry >= config.max_retries
            || (only_rate_limits && !matches!(error, Error::RateLimited { .. }))
        {
            return Err(error);
        }
        let delay = after.unwrap_or_else(|| policy.backoff(retry));
        if started.elapsed().saturating_add(delay) > config.max_elapsed {
            tracing::debug!(
                provider = %policy.provider,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retry budget spent; giving up"
            );
            return Err(error);
        }
        if let Some(stats) = &stats {
            stats.add_retry();
        }
        retry += 1;
        tracing::debug!(
            provider = %policy.provider,
            retry,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %error,
            "retrying request"
        );
        tokio::time::sleep(delay).await;
    }
}
