use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;

use crate::Result;

type Boxed = Pin<Box<dyn Future<Output = Result<Response<Bytes>>> + Send>>;

/// The response future of [`Retry`](super::Retry): every attempt, backoff included.
#[must_use = "futures do nothing unless polled"]
pub struct RetryFuture {
    inner: Boxed,
}

impl RetryFuture {
    pub(super) fn new(
        inner: impl Future<Output = Result<Response<Bytes>>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl fmt::Debug for RetryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryFuture")
    }
}

impl Future for RetryFuture {
    type Output = Result<Response<Bytes>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
