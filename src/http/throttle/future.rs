use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;

use super::limiter::{Acquire, Limiter};
use crate::Error;
use crate::http::HttpStats;
use crate::http::context::RequestContext;

pin_project! {
    /// The response future of [`Throttle`](super::Throttle): waits for a slot, then runs the
    /// inner service's future. Dropping it while it waits gives up its place in line.
    #[must_use = "futures do nothing unless polled"]
    pub struct ThrottleFuture<S, F> {
        limiter: Limiter,
        stats: Option<HttpStats>,
        #[pin]
        state: State<S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        Waiting {
            #[pin]
            acquire: Acquire,
            call: Option<(S, Request<Bytes>)>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Done,
    }
}

impl<S, F> ThrottleFuture<S, F> {
    pub(super) fn new(limiter: Limiter, service: S, request: Request<Bytes>) -> Self {
        Self {
            limiter: limiter.clone(),
            stats: None,
            state: State::Waiting {
                acquire: limiter.acquire(),
                call: Some((service, request)),
            },
        }
    }
}

impl<S, F> fmt::Debug for ThrottleFuture<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleFuture")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, F> Future for ThrottleFuture<S, F>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error, Future = F>,
    F: Future<Output = Result<Response<Bytes>, Error>>,
{
    type Output = Result<Response<Bytes>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { acquire, call } => {
                    let waited = match ready!(acquire.poll(cx)) {
                        Ok(waited) => waited,
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                    };
                    let Some((mut service, request)) = call.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    if let Some(ctx) = RequestContext::of(&request) {
                        ctx.attempt_started(waited);
                        *this.stats = Some(ctx.stats().clone());
                    }
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    if let Ok(response) = &result {
                        this.limiter.observe(response.status(), response.headers());
                        if response.status() == StatusCode::TOO_MANY_REQUESTS
                            && let Some(stats) = this.stats
                        {
                            stats.add_rate_limited();
                        }
                    }
                    return Poll::Ready(result);
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            }
        }
    }
}

fn polled_after_completion() -> Error {
    Error::config("throttle future polled after completion")
}
