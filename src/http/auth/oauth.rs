//! OAuth 2.0 refresh-token flow with single-flight refresh.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::static_auth::{StaticAuth, bearer_value};
use crate::http::HttpStats;
use crate::http::retry::excerpt;
use crate::{Error, Result};

/// What a token endpoint answers to a refresh.
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: SecretString,
    /// Its lifetime, when the provider said (Salesforce does not; the token is then used
    /// until the provider rejects it).
    pub expires_in: Option<Duration>,
    /// A new refresh token, when the provider rotates them.
    pub refresh_token: Option<SecretString>,
    /// Salesforce's `instance_url`: the API host for this org.
    pub instance_url: Option<String>,
}

impl TokenResponse {
    /// A response carrying only an access token.
    pub fn new(access_token: SecretString) -> Self {
        Self {
            access_token,
            expires_in: None,
            refresh_token: None,
            instance_url: None,
        }
    }

    /// Sets the lifetime.
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }

    /// Sets a rotated refresh token.
    pub fn with_refresh_token(mut self, refresh_token: SecretString) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// Parses the standard JSON body `{access_token, expires_in?, refresh_token?,
    /// instance_url?}`. The error never quotes the body (it holds secrets).
    pub fn from_json(provider: &Cow<'static, str>, body: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Raw {
            access_token: SecretString,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
            #[serde(default)]
            refresh_token: Option<SecretString>,
            #[serde(default)]
            instance_url: Option<String>,
        }
        let raw: Raw = serde_json::from_slice(body).map_err(|_| Error::AuthFailed {
            provider: provider.clone(),
            message: "token endpoint returned a body without a readable access_token".into(),
        })?;
        // Some providers send expires_in as a string.
        let expires_in = raw.expires_in.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Duration::from_secs)
        });
        Ok(Self {
            access_token: raw.access_token,
            expires_in,
            refresh_token: raw.refresh_token.filter(|t| !t.expose_secret().is_empty()),
            instance_url: raw.instance_url,
        })
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("instance_url", &self.instance_url)
            .finish()
    }
}

/// Exchanges a refresh token for a new access token.
///
/// [`HttpTokenEndpoint`] is the real one (a form POST); tests implement this trait with a
/// mock that counts calls.
#[async_trait]
pub trait TokenEndpoint: Send + Sync + 'static {
    /// Performs one refresh. Errors: [`Error::AuthFailed`] when the grant is rejected,
    /// [`Error::Transport`]/[`Error::Timeout`]/[`Error::Api`] for transient trouble.
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenResponse>;
}

/// How the client authenticates to the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (HubSpot, Salesforce, Google).
    #[default]
    Body,
    /// HTTP basic authentication with `client_id:client_secret` (Gong).
    Basic,
}

/// The standard refresh-token grant over HTTP: `POST <token_url>` with a form body
/// `grant_type=refresh_token&refresh_token=…&client_id=…&client_secret=…`.
///
/// The POST goes through any `Service<http::Request<Bytes>>`, typically a
/// [`Transport`](crate::http::Transport) behind a [`TimeoutLayer`](crate::http::TimeoutLayer).
pub struct HttpTokenEndpoint<S> {
    service: S,
    provider: Cow<'static, str>,
    token_url: Uri,
    client_id: String,
    client_secret: SecretString,
    client_auth: ClientAuth,
    extra: Vec<(String, String)>,
    timeout: Duration,
}

impl<S> HttpTokenEndpoint<S> {
    /// A token endpoint at `token_url` for the given client.
    pub fn new(
        service: S,
        provider: impl Into<Cow<'static, str>>,
        token_url: Uri,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            service,
            provider: provider.into(),
            token_url,
            client_id: client_id.into(),
            client_secret,
            client_auth: ClientAuth::Body,
            extra: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets the time limit of one refresh call (default 30 s). Every request that needs a
    /// token waits for the refresh in flight, so it must not hang.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how the client authenticates.
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Adds a form field (HubSpot wants `redirect_uri`).
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }
}

impl<S> fmt::Debug for HttpTokenEndpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTokenEndpoint")
            .field("provider", &self.provider)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S> TokenEndpoint for HttpTokenEndpoint<S>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenResponse> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token.expose_secret());
            if self.client_auth == ClientAuth::Body {
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", self.client_secret.expose_secret());
            }
            for (k, v) in &self.extra {
                form.append_pair(k, v);
            }
            Zeroizing::new(form.finish())
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Bytes::copy_from_slice(body.as_bytes()))
            .map_err(|e| Error::config(format!("invalid token request: {e}")))?;
        if self.client_auth == ClientAuth::Basic {
            StaticAuth::basic(&self.client_id, &self.client_secret)?.apply(request.headers_mut());
        }

        let response = tokio::time::timeout(self.timeout, self.service.clone().oneshot(request))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{} token refresh", self.provider).into(),
                after: self.timeout,
            })??;
        let status = response.status();
        if status.is_success() {
            return TokenResponse::from_json(&self.provider, response.body());
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Error::Api {
                provider: self.provider.clone(),
                status: status.as_u16(),
                body: excerpt(response.body()),
                retry_after: crate::http::retry::response_retry_after(&response),
            });
        }
        Err(Error::AuthFailed {
            provider: self.provider.clone(),
            message: format!(
                "token refresh rejected with HTTP {}: {}",
                status.as_u16(),
                excerpt(response.body())
            ),
        })
    }
}

/// A callback that receives a rotated refresh token so the caller can persist it.
pub type RotationCallback = Arc<dyn Fn(SecretString) + Send + Sync>;

/// Access tokens for one OAuth connection, refreshed from a refresh token.
///
/// Cloning shares the tokens. The access token is refreshed when it is within
/// `refresh_margin` of its expiry, and on demand when the provider says the session is
/// invalid. However many requests need a new token at once, exactly one refresh runs (single
/// flight); the others wait for it and use its result, success or failure. A rotated refresh
/// token replaces the old one and is handed to the [`RotationCallback`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> pandora_sync::Result<()> {
/// use async_trait::async_trait;
/// use secrecy::SecretString;
/// use pandora_sync::http::{OAuthTokens, TokenEndpoint, TokenResponse};
///
/// struct Fake;
/// #[async_trait]
/// impl TokenEndpoint for Fake {
///     async fn refresh(&self, _: &SecretString) -> pandora_sync::Result<TokenResponse> {
///         Ok(TokenResponse::new(SecretString::from("access-1"))
///             .with_refresh_token(SecretString::from("refresh-2")))
///     }
/// }
///
/// let tokens = OAuthTokens::builder("salesforce", Fake, SecretString::from("refresh-1"))
///     .on_rotation(|new| { let _ = new; /* persist it */ })
///     .build();
/// let header = tokens.authorization().await?;
/// assert!(header.is_sensitive());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OAuthTokens {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Cow<'static, str>,
    endpoint: Box<dyn TokenEndpoint>,
    refresh_margin: Duration,
    on_rotation: Option<RotationCallback>,
    state: Mutex<State>,
    /// Held for the duration of one refresh: the single flight.
    flight: tokio::sync::Mutex<()>,
}

struct Access {
    header: HeaderValue,
    /// When to refresh proactively: `refresh_margin` before expiry, or half-way through the
    /// lifetime when that is shorter than the margin (a 30 s token must not be refreshed by
    /// every request).
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Access {
    fn new(
        header: HeaderValue,
        now: Instant,
        lifetime: Option<Duration>,
        margin: Duration,
    ) -> Self {
        let at = |d: Duration| now.checked_add(d).unwrap_or(now);
        Self {
            header,
            refresh_at: lifetime.map(|l| at(l.saturating_sub(margin.min(l / 2)))),
            expires_at: lifetime.map(at),
        }
    }
}

struct State {
    access: Option<Access>,
    /// Bumped by every successful refresh.
    generation: u64,
    /// Bumped by every refresh attempt, successful or not.
    attempts: u64,
    /// The last attempt's failure, for the requests that waited on it.
    last_failure: Option<Error>,
    refresh_token: SecretString,
    instance_url: Option<String>,
}

/// Builds [`OAuthTokens`].
pub struct OAuthTokensBuilder {
    provider: Cow<'static, str>,
    endpoint: Box<dyn TokenEndpoint>,
    refresh_token: SecretString,
    access: Option<(SecretString, Option<Duration>)>,
    refresh_margin: Duration,
    on_rotation: Option<RotationCallback>,
}

impl fmt::Debug for OAuthTokensBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthTokensBuilder")
            .field("provider", &self.provider)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

impl OAuthTokensBuilder {
    /// Starts with an access token already in hand, valid for `expires_in` (`None`: until
    /// the provider rejects it).
    pub fn access_token(mut self, token: SecretString, expires_in: Option<Duration>) -> Self {
        self.access = Some((token, expires_in));
        self
    }

    /// Refreshes this long before the access token expires (default 60 s).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Calls `callback` with every rotated refresh token, after it replaced the old one.
    ///
    /// The callback runs while the refresh still holds the single-flight lock, so rotations
    /// reach it in order; keep it quick (store the token, or send it to a task that does).
    pub fn on_rotation(mut self, callback: impl Fn(SecretString) + Send + Sync + 'static) -> Self {
        self.on_rotation = Some(Arc::new(callback));
        self
    }

    /// The tokens. An initial access token that cannot be a header value is dropped (the
    /// first request then refreshes).
    pub fn build(self) -> OAuthTokens {
        let now = Instant::now();
        let margin = self.refresh_margin;
        let access = self.access.and_then(|(token, expires_in)| {
            Some(Access::new(
                bearer_value(&token).ok()?,
                now,
                expires_in,
                margin,
            ))
        });
        OAuthTokens {
            inner: Arc::new(Inner {
                provider: self.provider,
                endpoint: self.endpoint,
                refresh_margin: self.refresh_margin,
                on_rotation: self.on_rotation,
                state: Mutex::new(State {
                    access,
                    generation: 0,
                    attempts: 0,
                    last_failure: None,
                    refresh_token: self.refresh_token,
                    instance_url: None,
                }),
                flight: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl State {
    /// The token, when it is not yet due for a proactive refresh.
    fn fresh(&self, now: Instant) -> Option<(HeaderValue, u64)> {
        let access = self.access.as_ref()?;
        access
            .refresh_at
            .is_none_or(|at| now < at)
            .then(|| (access.header.clone(), self.generation))
    }

    /// The token, when it has not expired (good enough right after a refresh ran).
    fn unexpired(&self, now: Instant) -> Option<(HeaderValue, u64)> {
        let access = self.access.as_ref()?;
        access
            .expires_at
            .is_none_or(|at| now < at)
            .then(|| (access.header.clone(), self.generation))
    }
}

impl OAuthTokens {
    /// Starts building tokens for `provider` refreshed through `endpoint`.
    pub fn builder(
        provider: impl Into<Cow<'static, str>>,
        endpoint: impl TokenEndpoint,
        refresh_token: SecretString,
    ) -> OAuthTokensBuilder {
        OAuthTokensBuilder {
            provider: provider.into(),
            endpoint: Box::new(endpoint),
            refresh_token,
            access: None,
            refresh_margin: Duration::from_secs(60),
            on_rotation: None,
        }
    }

    /// The provider these tokens are for.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// Salesforce's `instance_url` from the last refresh, when the provider sent one.
    pub fn instance_url(&self) -> Option<String> {
        self.lock().instance_url.clone()
    }

    /// The current refresh token (after any rotation).
    pub fn refresh_token(&self) -> SecretString {
        self.lock().refresh_token.clone()
    }

    /// A valid `Authorization: Bearer …` value (sensitive), refreshing first when the
    /// token is missing or about to expire.
    pub async fn authorization(&self) -> Result<HeaderValue> {
        self.current(None).await.map(|(h, _)| h)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is replaced field by field without panicking code in between.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current token and its generation, refreshing if needed.
    pub(crate) async fn current(&self, stats: Option<&HttpStats>) -> Result<(HeaderValue, u64)> {
        let seen = {
            let st = self.lock();
            if let Some(valid) = st.fresh(Instant::now()) {
                return Ok(valid);
            }
            st.attempts
        };
        self.refresh(seen, None, stats).await
    }

    /// A token newer than generation `stale` (which the provider rejected), refreshing
    /// unless another request already did.
    pub(crate) async fn replace(
        &self,
        stale: u64,
        stats: Option<&HttpStats>,
    ) -> Result<(HeaderValue, u64)> {
        let seen = {
            let st = self.lock();
            if st.generation != stale
                && let Some(valid) = st.unexpired(Instant::now())
            {
                return Ok(valid);
            }
            st.attempts
        };
        self.refresh(seen, Some(stale), stats).await
    }

    async fn refresh(
        &self,
        seen_attempts: u64,
        stale: Option<u64>,
        stats: Option<&HttpStats>,
    ) -> Result<(HeaderValue, u64)> {
        let _flight = self.inner.flight.lock().await;
        let refresh_token = {
            let st = self.lock();
            if st.attempts != seen_attempts {
                // A refresh ran while we waited: share its outcome.
                if let Some(failure) = &st.last_failure {
                    return Err(clone_error(failure));
                }
                if stale.is_none_or(|g| g != st.generation)
                    && let Some(valid) = st.unexpired(Instant::now())
                {
                    return Ok(valid);
                }
            }
            st.refresh_token.clone()
        };

        if let Some(stats) = stats {
            stats.add_token_refresh();
        }
        tracing::debug!(provider = %self.inner.provider, "refreshing OAuth access token");
        let outcome = self.inner.endpoint.refresh(&refresh_token).await;
        let (result, rotated) = {
            let mut st = self.lock();
            st.attempts = st.attempts.wrapping_add(1);
            let now = Instant::now();
            match outcome.and_then(|r| Ok((bearer_value(&r.access_token)?, r))) {
                Ok((header, response)) => {
                    st.generation = st.generation.wrapping_add(1);
                    st.last_failure = None;
                    st.access = Some(Access::new(
                        header.clone(),
                        now,
                        response.expires_in,
                        self.inner.refresh_margin,
                    ));
                    if response.instance_url.is_some() {
                        st.instance_url = response.instance_url;
                    }
                    let rotated = response
                        .refresh_token
                        .filter(|new| new.expose_secret() != st.refresh_token.expose_secret());
                    if let Some(new) = &rotated {
                        st.refresh_token = new.clone();
                    }
                    (Ok((header, st.generation)), rotated)
                }
                Err(e) => {
                    tracing::debug!(provider = %self.inner.provider, error = %e, "token refresh failed");
                    st.last_failure = Some(clone_error(&e));
                    (Err(e), None)
                }
            }
        };
        if let (Some(new), Some(callback)) = (rotated, &self.inner.on_rotation) {
            callback(new);
        }
        result
    }
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("OAuthTokens")
            .field("provider", &self.inner.provider)
            .field("has_access_token", &st.access.is_some())
            .field("generation", &st.generation)
            .finish_non_exhaustive()
    }
}

/// A copy of an error good enough for the requests that waited on a failed refresh: same
/// variant and classification, without the (non-clonable) source.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Api {
            provider,
            status,
            body,
            retry_after,
        } => Error::Api {
            provider: provider.clone(),
            status: *status,
            body: body.clone(),
            retry_after: *retry_after,
        },
        Error::RateLimited {
            provider,
            retry_after,
        } => Error::RateLimited {
            provider: provider.clone(),
            retry_after: *retry_after,
        },
        Error::QuotaExhausted {
            provider,
            resets_at,
        } => Error::QuotaExhausted {
            provider: provider.clone(),
            resets_at: *resets_at,
        },
        Error::Transport {
            provider, message, ..
        } => Error::Transport {
            provider: provider.clone(),
            message: message.clone(),
            source: None,
        },
        Error::Timeout { what, after } => Error::Timeout {
            what: what.clone(),
            after: *after,
        },
        Error::AuthFailed { provider, message } => Error::AuthFailed {
            provider: provider.clone(),
            message: message.clone(),
        },
        other => Error::AuthFailed {
            provider: Cow::Borrowed("oauth"),
            message: format!("token refresh failed: {other}"),
        },
    }
}
