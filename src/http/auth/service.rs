use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::future::AuthFuture;
use super::layer::Auth;
use super::oauth::OAuthTokens;
use crate::http::Classify;
use crate::http::context::RequestContext;
use crate::{Error, Result};

/// Adds credentials to every request; with OAuth, refreshes and re-sends once when the
/// provider rejects the token. Built by [`AuthLayer`](super::AuthLayer).
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Auth,
    session: Arc<dyn Classify>,
}

impl<S> Authenticate<S> {
    pub(super) fn new(inner: S, auth: Auth, session: Arc<dyn Classify>) -> Self {
        Self {
            inner,
            auth,
            session,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Authenticate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("inner", &self.inner)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Bytes>> for Authenticate<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        match &self.auth {
            Auth::None => AuthFuture::direct(self.inner.call(req)),
            Auth::Static(auth) => {
                auth.apply(req.headers_mut());
                AuthFuture::direct(self.inner.call(req))
            }
            Auth::OAuth(tokens) => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                AuthFuture::boxed(oauth(ready, tokens.clone(), self.session.clone(), req))
            }
        }
    }
}

async fn oauth<S>(
    mut svc: S,
    tokens: OAuthTokens,
    session: Arc<dyn Classify>,
    mut req: Request<Bytes>,
) -> Result<Response<Bytes>>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error>,
{
    let stats = RequestContext::of(&req).map(|c| c.stats().clone());
    let (header, generation) = tokens.current(stats.as_ref()).await?;
    let mut first = req.clone();
    first.headers_mut().insert(AUTHORIZATION, header);
    let response = svc.call(first).await?;
    if !session.is_session_invalid(&response) {
        return Ok(response);
    }
    tracing::debug!(
        provider = %tokens.provider(),
        status = response.status().as_u16(),
        "access token rejected; refreshing and re-sending once"
    );
    drop(response);
    let (header, _) = tokens.replace(generation, stats.as_ref()).await?;
    req.headers_mut().insert(AUTHORIZATION, header);
    svc.ready().await?.call(req).await
}
