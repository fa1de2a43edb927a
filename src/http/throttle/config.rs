//! Throttle configuration: budgets, minimum spacing, header reading.

use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// The largest `max_requests` a [`Budget`] accepts (the limiter keeps one instant per start
/// inside the window, so this bounds its memory at about 16 MB per budget).
pub const MAX_BUDGET_REQUESTS: u32 = 1_000_000;

/// The longest `window` a [`Budget`] accepts.
pub const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// One request budget: at most `max_requests` requests start in any interval of length
/// `window` (a sliding window, not a fixed one).
///
/// A budget marked as a [`quota`](Budget::quota) (a daily cap, say) makes the throttle fail
/// with [`Error::QuotaExhausted`] instead of [`Error::RateLimited`] when it is what keeps a
/// request waiting longer than [`ThrottleConfig::max_wait`].
///
/// ```
/// use std::time::Duration;
/// use pandora_sync::http::Budget;
///
/// let per_ten_seconds = Budget::new(90, Duration::from_secs(10));
/// let daily = Budget::per_day(10_000).quota();
/// assert!(daily.is_quota() && !per_ten_seconds.is_quota());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    max_requests: u32,
    window: Duration,
    quota: bool,
}

impl Budget {
    /// At most `max_requests` starts in any `window`.
    pub const fn new(max_requests: u32, window: Duration) -> Self {
        Self {
            max_requests,
            window,
            quota: false,
        }
    }

    /// At most `max_requests` starts in any second.
    pub const fn per_second(max_requests: u32) -> Self {
        Self::new(max_requests, Duration::from_secs(1))
    }

    /// At most `max_requests` starts in any minute.
    pub const fn per_minute(max_requests: u32) -> Self {
        Self::new(max_requests, Duration::from_secs(60))
    }

    /// At most `max_requests` starts in any 24 hours.
    pub const fn per_day(max_requests: u32) -> Self {
        Self::new(max_requests, Duration::from_secs(24 * 3600))
    }

    /// Marks this budget as a quota: running out of it stops the sync until it frees up.
    pub const fn quota(mut self) -> Self {
        self.quota = true;
        self
    }

    /// The most requests that may start in one window.
    pub const fn max_requests(&self) -> u32 {
        self.max_requests
    }

    /// The window length.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// Whether this budget is a quota (see [`Budget::quota`]).
    pub const fn is_quota(&self) -> bool {
        self.quota
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_requests == 0 || self.max_requests > MAX_BUDGET_REQUESTS {
            return Err(Error::config(format!(
                "rate limit max_requests must be between 1 and {MAX_BUDGET_REQUESTS}, got {}",
                self.max_requests
            )));
        }
        // Timers have millisecond resolution; a shorter window could not be honoured exactly.
        if self.window < Duration::from_millis(1) || self.window > MAX_BUDGET_WINDOW {
            return Err(Error::config(format!(
                "rate limit window must be between 1 ms and 31 days, got {:?}",
                self.window
            )));
        }
        Ok(())
    }
}

/// A budget as it appears in a connector's JSON configuration:
/// `"rate_limit": {"max_requests": 190, "window_ms": 10000}`.
///
/// It replaces a preset's main budget (see
/// [`Preset::with_rate_limit`](crate::http::presets::Preset::with_rate_limit)).
///
/// ```
/// use pandora_sync::http::RateLimitConfig;
///
/// let cfg: RateLimitConfig = serde_json::from_str(r#"{"max_requests": 190, "window_ms": 10000}"#)?;
/// let budget = cfg.budget()?;
/// assert_eq!(budget.max_requests(), 190);
/// assert!(serde_json::from_str::<RateLimitConfig>(r#"{"max_requests": 1, "window": 5}"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The most requests that may start in one window.
    pub max_requests: u32,
    /// The window length in milliseconds.
    pub window_ms: u64,
}

impl RateLimitConfig {
    /// The validated [`Budget`]; [`Error::Config`] when a number is out of range.
    pub fn budget(&self) -> Result<Budget> {
        let budget = Budget::new(self.max_requests, Duration::from_millis(self.window_ms));
        budget.validate()?;
        Ok(budget)
    }
}

impl TryFrom<RateLimitConfig> for Budget {
    type Error = Error;

    fn try_from(cfg: RateLimitConfig) -> Result<Self> {
        cfg.budget()
    }
}

/// Which rate-limit headers the throttle reads from responses, and what it does about them.
///
/// After every response the throttle looks at what the provider says about its remaining
/// budget; when that budget is exhausted it holds every further request (of every clone)
/// until the provider's window resets, instead of sending them into a 429.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderPolicy {
    /// Read HubSpot's `X-HubSpot-RateLimit-Remaining` / `-Interval-Milliseconds`,
    /// `-Secondly-Remaining` and `-Daily-Remaining`.
    pub hubspot: bool,
    /// Read the IETF `RateLimit` / `RateLimit-Policy` headers (structured-field drafts and the
    /// older `limit=, remaining=, reset=` form) and `RateLimit-Remaining` / `RateLimit-Reset`.
    pub ietf: bool,
    /// Hold all requests for the `Retry-After` of a 429 or 503 answer.
    pub retry_after: bool,
    /// Stop (with [`Error::QuotaExhausted`]) once Salesforce's `Sforce-Limit-Info:
    /// api-usage=N/M` reports at least this percentage of the daily quota used. `None`
    /// ignores the header.
    pub salesforce_stop_percent: Option<u8>,
    /// Slow down once `Sforce-Limit-Info` reports at least this percentage of the daily
    /// quota used: every answer then holds the next request for a share of
    /// [`HeaderPolicy::salesforce_pace_max_hold`] that grows linearly from nothing at this
    /// percentage to all of it at the stop percentage (100 without one). `None` never
    /// slows down.
    pub salesforce_pace_percent: Option<u8>,
    /// The hold between two requests when usage reaches the stop percentage (see
    /// [`HeaderPolicy::salesforce_pace_percent`]).
    pub salesforce_pace_max_hold: Duration,
    /// How long a quota stop lasts before one request may probe the provider again.
    pub quota_recheck: Duration,
    /// The longest hold any header can impose (protects against absurd values).
    pub max_hold: Duration,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        Self {
            hubspot: true,
            ietf: true,
            retry_after: true,
            salesforce_stop_percent: None,
            salesforce_pace_percent: None,
            salesforce_pace_max_hold: Duration::from_secs(1),
            quota_recheck: Duration::from_secs(15 * 60),
            max_hold: Duration::from_secs(24 * 3600),
        }
    }
}

impl HeaderPolicy {
    /// A policy that reads no header at all.
    pub fn ignore_all() -> Self {
        Self {
            hubspot: false,
            ietf: false,
            retry_after: false,
            salesforce_stop_percent: None,
            salesforce_pace_percent: None,
            ..Self::default()
        }
    }
}

/// Configuration of a [`Limiter`](super::Limiter) and so of a
/// [`ThrottleLayer`](super::ThrottleLayer).
///
/// ```
/// use std::time::Duration;
/// use pandora_sync::http::{Budget, ThrottleConfig};
///
/// // Gong: 3 per second and 10,000 per day, both enforced by one limiter.
/// let cfg = ThrottleConfig::new(Budget::per_second(3))
///     .with_budget(Budget::per_day(10_000).quota())
///     .with_max_wait(Some(Duration::from_secs(300)));
/// assert_eq!(cfg.budgets.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// The budgets, all enforced together; the first is the "main" budget.
    pub budgets: Vec<Budget>,
    /// The least time between two consecutive starts.
    pub min_delay: Duration,
    /// When the next free slot is further away than this, fail with [`Error::RateLimited`]
    /// (or [`Error::QuotaExhausted`] for a quota budget) instead of waiting. `None` waits
    /// however long it takes.
    pub max_wait: Option<Duration>,
    /// Which response headers slow the throttle down.
    pub headers: HeaderPolicy,
}

impl ThrottleConfig {
    /// One budget, no minimum delay, no wait limit, the default header policy.
    pub fn new(budget: Budget) -> Self {
        Self {
            budgets: vec![budget],
            min_delay: Duration::ZERO,
            max_wait: None,
            headers: HeaderPolicy::default(),
        }
    }

    /// Adds a budget enforced together with the others.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budgets.push(budget);
        self
    }

    /// Sets the least time between two consecutive starts.
    pub fn with_min_delay(mut self, min_delay: Duration) -> Self {
        self.min_delay = min_delay;
        self
    }

    /// Sets the longest a request waits for its slot before failing.
    pub fn with_max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets the header policy.
    pub fn with_headers(mut self, headers: HeaderPolicy) -> Self {
        self.headers = headers;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.budgets.is_empty() {
            return Err(Error::config("a throttle needs at least one budget"));
        }
        for b in &self.budgets {
            b.validate()?;
        }
        if self.min_delay > MAX_BUDGET_WINDOW {
            return Err(Error::config("throttle min_delay must be at most 31 days"));
        }
        if let Some(p) = self.headers.salesforce_stop_percent
            && !(1..=100).contains(&p)
        {
            return Err(Error::config(format!(
                "salesforce_stop_percent must be between 1 and 100, got {p}"
            )));
        }
        if let Some(p) = self.headers.salesforce_pace_percent
            && !(1..=100).contains(&p)
        {
            return Err(Error::config(format!(
                "salesforce_pace_percent must be between 1 and 100, got {p}"
            )));
        }
        Ok(())
    }
}
