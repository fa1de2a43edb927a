use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::Error;

pin_project! {
    /// The response future of [`Timeout`](super::Timeout).
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        what: Cow<'static, str>,
        duration: Duration,
    }
}

impl<F: Future> TimeoutFuture<F> {
    pub(super) fn new(inner: F, what: &Cow<'static, str>, duration: Duration) -> Self {
        Self {
            inner: tokio::time::timeout(duration, inner),
            what: what.clone(),
            duration,
        }
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("what", &self.what)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl<F, T> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, Error>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_elapsed)) => Poll::Ready(Err(Error::Timeout {
                what: this.what.clone(),
                after: *this.duration,
            })),
        }
    }
}
