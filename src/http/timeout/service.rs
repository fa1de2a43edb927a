use std::borrow::Cow;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use super::future::TimeoutFuture;
use crate::Error;

/// A service whose requests fail with [`Error::Timeout`] after a fixed duration.
///
/// The clock starts when `call` is made (as with [`tokio::time::timeout`]); on expiry the
/// inner future is dropped.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    what: Cow<'static, str>,
    duration: Duration,
}

impl<S> Timeout<S> {
    /// Limits `inner`'s requests to `duration`; `what` names them in the error.
    pub fn new(inner: S, what: impl Into<Cow<'static, str>>, duration: Duration) -> Self {
        Self {
            inner,
            what: what.into(),
            duration,
        }
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TimeoutFuture::new(self.inner.call(req), &self.what, self.duration)
    }
}
