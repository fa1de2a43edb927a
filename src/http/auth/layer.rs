use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::oauth::OAuthTokens;
use super::service::Authenticate;
use super::static_auth::StaticAuth;
use crate::http::{Classify, DefaultClassifier};

/// How a stack authenticates its requests.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials (the caller sets headers itself).
    #[default]
    None,
    /// A fixed header.
    Static(StaticAuth),
    /// OAuth access tokens refreshed from a refresh token.
    OAuth(OAuthTokens),
}

impl From<StaticAuth> for Auth {
    fn from(a: StaticAuth) -> Self {
        Auth::Static(a)
    }
}

impl From<OAuthTokens> for Auth {
    fn from(t: OAuthTokens) -> Self {
        Auth::OAuth(t)
    }
}

/// Wraps a service in [`Authenticate`].
///
/// With [`Auth::OAuth`], a response that the session check (by default HTTP 401; see
/// [`Classify::is_session_invalid`]) calls invalid makes the layer refresh the token — one
/// refresh however many requests hit it — and re-send the request once with the new token.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Auth,
    session: Arc<dyn Classify>,
}

impl AuthLayer {
    /// Applies `auth`, treating HTTP 401 as "session invalid".
    pub fn new(auth: impl Into<Auth>) -> Self {
        Self {
            auth: auth.into(),
            session: Arc::new(DefaultClassifier),
        }
    }

    /// Uses `classifier`'s [`Classify::is_session_invalid`] to spot rejected tokens
    /// (Salesforce's `INVALID_SESSION_ID`, say).
    pub fn with_session_check(mut self, classifier: Arc<dyn Classify>) -> Self {
        self.session = classifier;
        self
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate::new(inner, self.auth.clone(), self.session.clone())
    }
}
