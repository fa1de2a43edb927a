use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;

use super::future::ThrottleFuture;
use super::limiter::Limiter;
use crate::Error;

/// A service that starts each request only when its [`Limiter`] allows, and feeds each
/// response's rate-limit headers back into the limiter.
///
/// Built by [`ThrottleLayer`](super::ThrottleLayer). The wait happens in the response
/// future, not in `poll_ready`, so a throttled service is always as ready as its inner one
/// and one waiting request never blocks another clone's readiness.
#[derive(Clone, Debug)]
pub struct Throttle<S> {
    inner: S,
    limiter: Limiter,
}

impl<S> Throttle<S> {
    /// Throttles `inner` with `limiter`.
    pub const fn new(inner: S, limiter: Limiter) -> Self {
        Self { inner, limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<Request<Bytes>> for Throttle<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error> + Clone,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = ThrottleFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        // The instance that was polled ready goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ThrottleFuture::new(self.limiter.clone(), ready, req)
    }
}
