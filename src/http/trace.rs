//! The outermost layer: one `tracing` span per logical request, and the stats handle.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::{Span, field};

use super::context::RequestContext;
use super::stats::HttpStats;
use crate::{Error, Result};

/// Opens a `http.request` span (at `DEBUG`) per request with the fields `provider`,
/// `method`, `path` (never the query string, which may carry secrets), and, once done,
/// `status`, `attempts`, `throttle_wait_ms`, `elapsed_ms` and `error`; counts requests and
/// failures in an [`HttpStats`] that the inner layers report into as well.
///
/// Put it outermost: it attaches the per-request context the other layers read (the
/// provider name for transport errors, the stats handle, the attempt count).
#[derive(Clone, Debug)]
pub struct TraceLayer {
    provider: Cow<'static, str>,
    stats: HttpStats,
}

impl TraceLayer {
    /// Traces requests to `provider`, counting into `stats`.
    pub fn new(provider: impl Into<Cow<'static, str>>, stats: HttpStats) -> Self {
        Self {
            provider: provider.into(),
            stats,
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            provider: self.provider.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    provider: Cow<'static, str>,
    stats: HttpStats,
}

impl<S> Service<Request<Bytes>> for Trace<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error>,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        self.stats.add_request();
        let span = tracing::debug_span!(
            "http.request",
            provider = %self.provider,
            method = %req.method(),
            path = req.uri().path(),
            status = field::Empty,
            attempts = field::Empty,
            throttle_wait_ms = field::Empty,
            elapsed_ms = field::Empty,
            error = field::Empty,
        );
        let context = RequestContext::new(self.provider.clone(), self.stats.clone());
        req.extensions_mut().insert(context.clone());
        let started = (!span.is_disabled()).then(Instant::now);
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture {
            future,
            span,
            context,
            started,
        }
    }
}

pin_project! {
    /// The response future of [`Trace`].
    #[must_use = "futures do nothing unless polled"]
    pub struct TraceFuture<F> {
        #[pin]
        future: F,
        span: Span,
        context: RequestContext,
        started: Option<Instant>,
    }
}

impl<F> fmt::Debug for TraceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<F> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<Bytes>>>,
{
    type Output = Result<Response<Bytes>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.future.poll(cx));
        if result.is_err() {
            this.context.stats().add_failure();
        }
        if let Some(started) = this.started {
            let span = &*this.span;
            span.record("attempts", this.context.attempts());
            span.record("throttle_wait_ms", millis(this.context.throttle_wait()));
            span.record("elapsed_ms", millis(started.elapsed()));
            match &result {
                Ok(response) => {
                    span.record("status", response.status().as_u16());
                    tracing::debug!(status = response.status().as_u16(), "http request done");
                }
                Err(error) => {
                    if let Some(status) = error.status() {
                        span.record("status", status);
                    }
                    span.record("error", field::display(error));
                    tracing::debug!(error = %error, "http request failed");
                }
            }
        }
        Poll::Ready(result)
    }
}
