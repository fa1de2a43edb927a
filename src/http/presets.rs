//! One configured stack per provider.
//!
//! Each function returns a [`Preset`]: the provider's budgets, header handling, classifier,
//! retry numbers and timeouts, all public and overridable. [`Preset::build`] turns it into
//! an [`HttpStack`] over a transport:
//!
//! ```
//! # fn main() -> pandora_sync::Result<()> {
//! use secrecy::SecretString;
//! use pandora_sync::http::{presets, RateLimitConfig, StaticAuth, Transport, TransportConfig};
//!
//! // From the connector's JSON config: {"rate_limit": {"max_requests": 190, "window_ms": 10000}}
//! let enterprise: RateLimitConfig =
//!     serde_json::from_str(r#"{"max_requests": 190, "window_ms": 10000}"#)?;
//! let stack = presets::hubspot()
//!     .with_rate_limit(enterprise)?
//!     .build(
//!         StaticAuth::bearer(&SecretString::from("pat-na1-…"))?,
//!         Transport::new(TransportConfig::default())?,
//!     )?;
//! assert_eq!(stack.limiter().budgets()[0].max_requests(), 190);
//! # Ok(()) }
//! ```
//!
//! | preset | budgets | extras |
//! |---|---|---|
//! | [`hubspot`] | 90 per 10 s | HubSpot headers, `DAILY` 429 stops the sync |
//! | [`hubspot_search`] | 4 in any second | as `hubspot` |
//! | [`gong`] | 3 per second + 10,000 per day (quota) | |
//! | [`fireflies`] | 60 per minute ([`Preset::with_daily_limit`]`(Some(50))` on free plans) | GraphQL `too_many_requests` |
//! | [`salesforce`] | 100 per 60 s | slows from 50 % and stops at 80 % of the daily quota (`Sforce-Limit-Info`), `REQUEST_LIMIT_EXCEEDED`, `INVALID_SESSION_ID` refresh |
//! | [`monday`] | 50 per 60 s | complexity budget, `retry_in_seconds`, daily limit |
//! | [`google_drive`] | 10 per second | `userRateLimitExceeded` / `rateLimitExceeded` retried |

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::{
    Auth, AuthLayer, Budget, Classify, DefaultClassifier, FirefliesClassifier, FullJitter,
    GoogleClassifier, HeaderPolicy, HttpStats, HubSpotClassifier, Jitter, Limiter,
    MondayClassifier, RateLimitConfig, RetryConfig, RetryLayer, SalesforceClassifier,
    ThrottleConfig, ThrottleLayer, TimeoutLayer, TraceLayer,
};
use crate::{ConnectorKind, Error, Result};

/// The default per-attempt timeout: 30 s.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default overall timeout (throttle waits, every attempt and backoff): 10 min.
pub const DEFAULT_OVERALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The default longest wait for a throttle slot before the request fails as rate limited
/// (or quota exhausted): 5 min.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// A provider's complete stack configuration. Every field is public; the `with_*` methods
/// are shorthands.
#[derive(Clone)]
#[non_exhaustive]
pub struct Preset {
    /// The provider name in errors, spans and stats.
    pub provider: Cow<'static, str>,
    /// Budgets, minimum delay, wait limit and header policy.
    pub throttle: ThrottleConfig,
    /// Retry numbers.
    pub retry: RetryConfig,
    /// The time limit of one attempt.
    pub attempt_timeout: Duration,
    /// The time limit of a whole call.
    pub overall_timeout: Duration,
    /// What responses mean for this provider.
    pub classifier: Arc<dyn Classify>,
    /// The backoff jitter source.
    pub jitter: Arc<dyn Jitter>,
    /// The stats handle the stack reports into.
    pub stats: HttpStats,
}

impl fmt::Debug for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preset")
            .field("provider", &self.provider)
            .field("throttle", &self.throttle)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("overall_timeout", &self.overall_timeout)
            .field("classifier", &self.classifier)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl Preset {
    /// A generic preset: one budget, default headers, retry and timeouts, the
    /// [`DefaultClassifier`].
    pub fn new(provider: impl Into<Cow<'static, str>>, budget: Budget) -> Self {
        Self {
            provider: provider.into(),
            throttle: ThrottleConfig::new(budget).with_max_wait(Some(DEFAULT_MAX_WAIT)),
            retry: RetryConfig::default(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            overall_timeout: DEFAULT_OVERALL_TIMEOUT,
            classifier: Arc::new(DefaultClassifier),
            jitter: Arc::new(FullJitter),
            stats: HttpStats::new(),
        }
    }

    /// Replaces the main budget (the first one) with a configured one.
    pub fn with_rate_limit(mut self, config: RateLimitConfig) -> Result<Self> {
        let budget = config.budget()?;
        match self.throttle.budgets.first_mut() {
            Some(main) => *main = budget,
            None => self.throttle.budgets.push(budget),
        }
        Ok(self)
    }

    /// Replaces the main budget when `config` is given (a connector's optional
    /// `rate_limit` setting).
    pub fn with_optional_rate_limit(self, config: Option<RateLimitConfig>) -> Result<Self> {
        match config {
            Some(c) => self.with_rate_limit(c),
            None => Ok(self),
        }
    }

    /// Adds a budget enforced together with the others.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.throttle.budgets.push(budget);
        self
    }

    /// Sets (or with `None` removes) the per-day quota budget.
    pub fn with_daily_limit(mut self, per_day: Option<u32>) -> Self {
        let day = Budget::per_day(1).window();
        self.throttle
            .budgets
            .retain(|b| !(b.is_quota() && b.window() == day));
        if let Some(n) = per_day {
            self.throttle.budgets.push(Budget::per_day(n).quota());
        }
        self
    }

    /// Sets the least time between two consecutive starts.
    pub fn with_min_delay(mut self, min_delay: Duration) -> Self {
        self.throttle.min_delay = min_delay;
        self
    }

    /// Sets how long a request may wait for a throttle slot before failing.
    pub fn with_max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.throttle.max_wait = max_wait;
        self
    }

    /// Sets the response-header policy.
    pub fn with_headers(mut self, headers: HeaderPolicy) -> Self {
        self.throttle.headers = headers;
        self
    }

    /// Sets the Salesforce daily-quota stop share, in percent (`None` disables the guard).
    pub fn with_salesforce_stop_percent(mut self, percent: Option<u8>) -> Self {
        self.throttle.headers.salesforce_stop_percent = percent;
        self
    }

    /// Sets the share of Salesforce's daily quota from which requests are slowed down, in
    /// percent (`None` never slows down; see [`HeaderPolicy::salesforce_pace_percent`]).
    pub fn with_salesforce_pace_percent(mut self, percent: Option<u8>) -> Self {
        self.throttle.headers.salesforce_pace_percent = percent;
        self
    }

    /// Sets the retry numbers.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Sets the overall timeout.
    pub fn with_overall_timeout(mut self, timeout: Duration) -> Self {
        self.overall_timeout = timeout;
        self
    }

    /// Sets the classifier.
    pub fn with_classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// Sets the jitter source (e.g. [`NoJitter`](super::NoJitter) in tests).
    pub fn with_jitter(mut self, jitter: impl Jitter) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    /// Reports into an existing stats handle (to sum several stacks).
    pub fn with_stats(mut self, stats: HttpStats) -> Self {
        self.stats = stats;
        self
    }

    /// Builds the stack over `transport` (a [`Transport`](super::Transport), or any service
    /// with the same shape, such as a mock):
    ///
    /// trace → overall timeout → retry → auth → throttle → per-attempt timeout → transport.
    ///
    /// Retries and the OAuth re-send each pass the throttle again, so every request that
    /// reaches the provider is counted against the budget; throttle waits do not count
    /// against the per-attempt timeout.
    pub fn build<S>(self, auth: impl Into<Auth>, transport: S) -> Result<HttpStack>
    where
        S: Service<Request<Bytes>, Response = Response<Bytes>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.retry.validate()?;
        if self.attempt_timeout.is_zero() || self.overall_timeout.is_zero() {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        let provider = self.provider;
        let limiter = Limiter::new(provider.clone(), self.throttle)?;
        let service = ServiceBuilder::new()
            .layer(TraceLayer::new(provider.clone(), self.stats.clone()))
            .layer(TimeoutLayer::new(
                format!("{provider} request"),
                self.overall_timeout,
            ))
            .layer(
                RetryLayer::new(provider.clone(), self.retry)
                    .with_shared_classifier(self.classifier.clone())
                    .with_shared_jitter(self.jitter)
                    .with_limiter(limiter.clone()),
            )
            .layer(AuthLayer::new(auth).with_session_check(self.classifier))
            .layer(ThrottleLayer::new(limiter.clone()))
            .layer(TimeoutLayer::new(
                format!("{provider} attempt"),
                self.attempt_timeout,
            ))
            .service(transport);
        Ok(HttpStack {
            service: BoxCloneSyncService::new(service),
            provider,
            limiter,
            stats: self.stats,
        })
    }
}

/// A provider's complete, type-erased stack: a `tower::Service<http::Request<Bytes>>`
/// answering successful responses (judged by the preset's classifier) as
/// `http::Response<Bytes>` and everything else as an [`Error`].
///
/// Cheap to clone; clones share the throttle budget, tokens and stats.
#[derive(Clone)]
pub struct HttpStack {
    service: BoxCloneSyncService<Request<Bytes>, Response<Bytes>, Error>,
    provider: Cow<'static, str>,
    limiter: Limiter,
    stats: HttpStats,
}

impl HttpStack {
    /// Sends one request through the stack.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>> {
        self.service.clone().oneshot(request).await
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The shared throttle.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The stats handle.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }
}

impl fmt::Debug for HttpStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStack")
            .field("provider", &self.provider)
            .field("limiter", &self.limiter)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Service<Request<Bytes>> for HttpStack {
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = <BoxCloneSyncService<Request<Bytes>, Response<Bytes>, Error> as Service<
        Request<Bytes>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        self.service.call(req)
    }
}

/// HubSpot CRM REST: 90 requests per 10 s (below the 100 of the lowest tier), HubSpot's
/// rate-limit headers, a `DAILY` 429 stops the sync.
pub fn hubspot() -> Preset {
    Preset::new("hubspot", Budget::new(90, Duration::from_secs(10)))
        .with_classifier(HubSpotClassifier)
}

/// HubSpot CRM search: at most 4 requests in any 1-second window (HubSpot allows 5 per
/// second). Any 5 requests then span more than a second, whatever their spacing, so no
/// extra gap between requests is kept: a sync's few total searches in a row do not wait.
/// Search has its own limit; give it its own stack next to [`hubspot`].
pub fn hubspot_search() -> Preset {
    Preset::new("hubspot", Budget::per_second(4)).with_classifier(HubSpotClassifier)
}

/// Gong: 3 requests per second and 10,000 per day (a quota: when the next slot is more than
/// the wait limit away the request fails with [`Error::QuotaExhausted`]).
pub fn gong() -> Preset {
    Preset::new("gong", Budget::per_second(3)).with_daily_limit(Some(10_000))
}

/// Fireflies: 60 requests per minute (Business/Enterprise). Free and Pro plans allow 50 per
/// day: add [`Preset::with_daily_limit`]`(Some(50))`.
pub fn fireflies() -> Preset {
    Preset::new("fireflies", Budget::per_minute(60)).with_classifier(FirefliesClassifier)
}

/// Salesforce REST: 100 requests per 60 s; slows down once `Sforce-Limit-Info` reports
/// half of the daily org quota used (a hold after each answer growing to 1 s at the stop
/// share), and stops with [`Error::QuotaExhausted`] once it reports 80 % used
/// ([`Preset::with_salesforce_stop_percent`]); `REQUEST_LIMIT_EXCEEDED` stops too;
/// `INVALID_SESSION_ID` refreshes the OAuth token.
pub fn salesforce() -> Preset {
    Preset::new("salesforce", Budget::per_minute(100))
        .with_salesforce_stop_percent(Some(80))
        .with_salesforce_pace_percent(Some(50))
        .with_classifier(SalesforceClassifier)
}

/// monday.com: 50 requests per 60 s plus complexity-budget handling (retry after
/// `retry_in_seconds`), the minute and daily limits. monday answers calls after 60 s at
/// most, so the attempt timeout is 75 s.
pub fn monday() -> Preset {
    Preset::new("monday", Budget::per_minute(50))
        .with_classifier(MondayClassifier)
        .with_attempt_timeout(Duration::from_secs(75))
}

/// Google Drive: 10 requests per second; `userRateLimitExceeded` / `rateLimitExceeded` 403s
/// are retried with backoff.
pub fn google_drive() -> Preset {
    Preset::new("google-drive", Budget::per_second(10)).with_classifier(GoogleClassifier)
}

/// The REST preset of a connector.
pub fn for_connector(kind: ConnectorKind) -> Preset {
    match kind {
        ConnectorKind::Hubspot => hubspot(),
        ConnectorKind::Gong => gong(),
        ConnectorKind::Fireflies => fireflies(),
        ConnectorKind::Salesforce => salesforce(),
        ConnectorKind::Monday => monday(),
        ConnectorKind::GoogleDrive => google_drive(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_numbers() {
        let main = |p: &Preset| {
            (
                p.throttle.budgets[0].max_requests(),
                p.throttle.budgets[0].window(),
            )
        };
        assert_eq!(main(&hubspot()), (90, Duration::from_secs(10)));
        let search = hubspot_search();
        assert_eq!(main(&search), (4, Duration::from_secs(1)));
        assert_eq!(search.throttle.min_delay, Duration::ZERO);
        let g = gong();
        assert_eq!(main(&g), (3, Duration::from_secs(1)));
        assert_eq!(g.throttle.budgets[1], Budget::per_day(10_000).quota());
        assert_eq!(main(&fireflies()), (60, Duration::from_secs(60)));
        assert_eq!(fireflies().throttle.budgets.len(), 1);
        let free = fireflies().with_daily_limit(Some(50));
        assert_eq!(free.throttle.budgets[1], Budget::per_day(50).quota());
        assert_eq!(free.with_daily_limit(None).throttle.budgets.len(), 1);
        let sf = salesforce();
        assert_eq!(main(&sf), (100, Duration::from_secs(60)));
        assert_eq!(sf.throttle.headers.salesforce_stop_percent, Some(80));
        assert_eq!(sf.throttle.headers.salesforce_pace_percent, Some(50));
        assert_eq!(main(&monday()), (50, Duration::from_secs(60)));
        assert_eq!(main(&google_drive()), (10, Duration::from_secs(1)));
        for kind in ConnectorKind::ALL {
            let p = for_connector(kind);
            assert_eq!(p.retry, RetryConfig::default());
            assert_eq!(p.throttle.max_wait, Some(DEFAULT_MAX_WAIT));
        }
    }

    #[test]
    fn rate_limit_override_replaces_only_the_main_budget() {
        let cfg: RateLimitConfig =
            serde_json::from_str(r#"{"max_requests": 190, "window_ms": 10000}"#).unwrap();
        let p = gong().with_rate_limit(cfg).unwrap();
        assert_eq!(
            p.throttle.budgets[0],
            Budget::new(190, Duration::from_secs(10))
        );
        assert_eq!(p.throttle.budgets[1], Budget::per_day(10_000).quota());
        let zero = RateLimitConfig {
            max_requests: 0,
            window_ms: 1000,
        };
        assert!(matches!(
            hubspot().with_rate_limit(zero),
            Err(Error::Config(_))
        ));
        let no_window = RateLimitConfig {
            max_requests: 5,
            window_ms: 0,
        };
        assert!(hubspot().with_rate_limit(no_window).is_err());
        assert!(hubspot().with_optional_rate_limit(None).is_ok());
    }
}
