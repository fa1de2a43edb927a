use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::Error;

pin_project! {
    /// The response future of [`Timeout`](super::Timeout).
    ///
    /// The timer is created only when the inner future first returns `Pending`, so a
    /// response that is ready at once costs one clock read and no timer.
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        deadline: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
        what: Cow<'static, str>,
        duration: Duration,
    }
}

impl<F: Future> TimeoutFuture<F> {
    pub(super) fn new(inner: F, what: &Cow<'static, str>, duration: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            // A limit too large to represent is no limit: a century away.
            deadline: now
                .checked_add(duration)
                .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
                .unwrap_or(now),
            sleep: None,
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
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout {
                what: this.what.clone(),
                after: *this.duration,
            })),
        }
    }
}
