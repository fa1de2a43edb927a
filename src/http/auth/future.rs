use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use crate::Result;

type Boxed = Pin<Box<dyn Future<Output = Result<Response<Bytes>>> + Send>>;

pin_project! {
    /// The response future of [`Authenticate`](super::Authenticate): the inner future
    /// itself for static credentials, a boxed refresh-aware future for OAuth.
    #[must_use = "futures do nothing unless polled"]
    pub struct AuthFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Direct { #[pin] future: F },
        Boxed { future: Boxed },
    }
}

impl<F> AuthFuture<F> {
    pub(super) fn direct(future: F) -> Self {
        Self {
            kind: Kind::Direct { future },
        }
    }

    pub(super) fn boxed(
        future: impl Future<Output = Result<Response<Bytes>>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

impl<F> fmt::Debug for AuthFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthFuture")
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response<Bytes>>>,
{
    type Output = Result<Response<Bytes>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { future } => future.poll(cx),
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
