//! The HTTP stack every connector sends its requests through, as tower middleware.
//!
//! ```text
//! TraceLayer ─► TimeoutLayer (overall) ─► RetryLayer ─► AuthLayer ─► ThrottleLayer ─► TimeoutLayer (attempt) ─► Transport
//!  span, stats    10 min                   429/5xx,      bearer,      sliding window,    30 s                     reqwest, body cap
//!                                          Retry-After,  basic, key,  FIFO, headers
//!                                          jitter        OAuth
//! ```
//!
//! * [`Transport`]: reqwest (rustls, gzip, pooled), whole body as [`Bytes`](bytes::Bytes),
//!   capped at 64 MiB by default.
//! * [`ThrottleLayer`] over a shared [`Limiter`]: at most `max_requests` starts in any
//!   window, a minimum delay, stacked budgets, FIFO, cancel-safe; reads rate-limit headers
//!   ([`HeaderPolicy`]) and holds requests while the provider's budget is exhausted.
//! * [`RetryLayer`]: 429/408/5xx/transport/timeouts with full-jitter exponential backoff and
//!   `Retry-After`; a [`Classify`] implementation per provider maps error bodies.
//! * [`TimeoutLayer`]: per attempt and overall.
//! * [`AuthLayer`]: [`StaticAuth`] headers or single-flight [`OAuthTokens`] refresh.
//! * [`TraceLayer`]: a `http.request` span per request and the shared [`HttpStats`].
//! * [`presets`]: each provider's configured stack, every number overridable.
//!
//! Every layer uses the crate's [`Error`](crate::Error) as its error type, so layers stack in
//! any order without nested error types, and a connector matches on
//! [`Error::RateLimited`](crate::Error::RateLimited),
//! [`Error::QuotaExhausted`](crate::Error::QuotaExhausted) and friends directly.
//!
//! # Building a stack
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> pandora_sync::Result<()> {
//! use bytes::Bytes;
//! use secrecy::SecretString;
//! use tower::service_fn;
//! use pandora_sync::http::{presets, StaticAuth};
//!
//! // A mock transport standing in for `Transport::new(TransportConfig::default())?`.
//! let transport = service_fn(|req: http::Request<Bytes>| async move {
//!     assert_eq!(req.headers()["authorization"], "Bearer token");
//!     Ok::<_, pandora_sync::Error>(http::Response::new(Bytes::from_static(b"{}")))
//! });
//! let stack = presets::gong()
//!     .build(StaticAuth::bearer(&SecretString::from("token"))?, transport)?;
//! let response = stack
//!     .send(http::Request::get("https://api.gong.io/v2/users").body(Bytes::new()).unwrap())
//!     .await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(stack.stats().snapshot().requests, 1);
//! # Ok(()) }
//! ```

// Provider names are `Cow<'static, str>` and passed as `&Cow` on purpose: cloning one keeps
// a static name borrowed, where `&str` would force an allocation for every error built.
#![allow(clippy::ptr_arg)]

mod auth;
mod context;
mod headers;
pub mod presets;
mod retry;
mod stats;
mod throttle;
mod timeout;
mod trace;
mod transport;

pub use auth::{
    Auth, AuthFuture, AuthLayer, Authenticate, ClientAuth, HttpTokenEndpoint, OAuthTokens,
    OAuthTokensBuilder, RotationCallback, StaticAuth, TokenEndpoint, TokenResponse,
};
pub use presets::{HttpStack, Preset};
pub use retry::{
    Classify, DefaultClassifier, FIREFLIES_QUOTA_AFTER, FirefliesClassifier, FullJitter,
    GoogleClassifier, HubSpotClassifier, Jitter, MondayClassifier, NoJitter, NonIdempotent, Retry,
    RetryConfig, RetryFuture, RetryLayer, SalesforceClassifier, SeededJitter, Verdict, api_error,
    rate_limited, response_retry_after,
};
pub use stats::{HttpStats, HttpStatsSnapshot};
pub use throttle::{
    Acquire, Budget, HeaderPolicy, Limiter, MAX_BUDGET_REQUESTS, MAX_BUDGET_WINDOW,
    RateLimitConfig, Throttle, ThrottleConfig, ThrottleFuture, ThrottleLayer,
};
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};
pub use trace::{Trace, TraceFuture, TraceLayer};
pub use transport::{DEFAULT_BODY_LIMIT, Transport, TransportConfig, TransportFuture};
