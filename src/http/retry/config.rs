//! Retry numbers and the jitter source.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// How often and how long the retry layer retries.
///
/// The wait before retry `n` (0-based) is, unless the provider said how long to wait, a
/// uniformly random duration in `[0, min(max_delay, base_delay × factor^n)]` ("full jitter").
/// Retries stop after `max_retries`, or when the next wait would end more than `max_elapsed`
/// after the first attempt started; the last error is then returned as it is.
///
/// ```
/// use std::time::Duration;
/// use pandora_sync::http::RetryConfig;
///
/// let cfg = RetryConfig::default();
/// assert_eq!(cfg.backoff_ceiling(0), Duration::from_secs(1));
/// assert_eq!(cfg.backoff_ceiling(2), Duration::from_secs(4));
/// assert_eq!(cfg.backoff_ceiling(10), Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt (default 3).
    pub max_retries: u32,
    /// The backoff ceiling of the first retry (default 1 s).
    pub base_delay: Duration,
    /// How much the ceiling grows per retry (default 2).
    pub factor: f64,
    /// The largest backoff ceiling (default 60 s).
    pub max_delay: Duration,
    /// No retry starts later than this after the first attempt (default 5 min).
    pub max_elapsed: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryConfig {
    /// A configuration that never retries.
    pub fn never() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Sets the number of retries.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets base delay, growth factor and cap of the backoff.
    pub fn with_backoff(mut self, base_delay: Duration, factor: f64, max_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self.factor = factor;
        self.max_delay = max_delay;
        self
    }

    /// Sets the total-elapsed budget.
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = max_elapsed;
        self
    }

    /// The upper bound of the jittered wait before retry `retry` (0-based):
    /// `min(max_delay, base_delay × factor^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let secs = self.base_delay.as_secs_f64() * self.factor.powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(Error::config(format!(
                "retry factor must be a finite number >= 1, got {}",
                self.factor
            )));
        }
        if self.base_delay > self.max_delay {
            return Err(Error::config("retry base_delay must not exceed max_delay"));
        }
        Ok(())
    }
}

/// Where the random part of a backoff comes from.
///
/// Implementations return a duration in `[0, ceiling]` (larger values are clamped). Inject
/// [`NoJitter`] or [`SeededJitter`] to make retry timing deterministic in tests.
pub trait Jitter: Send + Sync + fmt::Debug + 'static {
    /// A wait in `[0, ceiling]`.
    fn sample(&self, ceiling: Duration) -> Duration;
}

/// Full jitter from the thread-local RNG: uniform in `[0, ceiling]`. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct FullJitter;

impl Jitter for FullJitter {
    fn sample(&self, ceiling: Duration) -> Duration {
        uniform(&mut rand::rng(), ceiling)
    }
}

/// No randomness: always waits the full ceiling (plain truncated exponential backoff).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn sample(&self, ceiling: Duration) -> Duration {
        ceiling
    }
}

/// Full jitter from a seeded RNG: the same seed gives the same waits.
pub struct SeededJitter {
    rng: Mutex<StdRng>,
}

impl SeededJitter {
    /// A jitter source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl fmt::Debug for SeededJitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededJitter")
    }
}

impl Jitter for SeededJitter {
    fn sample(&self, ceiling: Duration) -> Duration {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        uniform(&mut *rng, ceiling)
    }
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_geometrically_then_caps() {
        let cfg = RetryConfig::default();
        let ceilings: Vec<_> = (0..8).map(|n| cfg.backoff_ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(cfg.backoff_ceiling(u32::MAX), Duration::from_secs(60));
        let slow = RetryConfig::default().with_backoff(
            Duration::from_millis(100),
            1.5,
            Duration::from_secs(1),
        );
        assert_eq!(slow.backoff_ceiling(1), Duration::from_millis(150));
        assert_eq!(slow.backoff_ceiling(20), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_bounds_and_spreads() {
        let jitter = SeededJitter::new(7);
        let cfg = RetryConfig::default();
        for retry in 0..6 {
            let ceiling = cfg.backoff_ceiling(retry);
            let samples: Vec<_> = (0..200).map(|_| jitter.sample(ceiling)).collect();
            assert!(samples.iter().all(|s| *s <= ceiling));
            // Full jitter covers the range: some samples in the lower and upper quarter.
            assert!(samples.iter().any(|s| *s < ceiling / 4), "retry {retry}");
            assert!(
                samples.iter().any(|s| *s > ceiling * 3 / 4),
                "retry {retry}"
            );
        }
        assert_eq!(FullJitter.sample(Duration::ZERO), Duration::ZERO);
        assert!(FullJitter.sample(Duration::from_secs(1)) <= Duration::from_secs(1));
        assert_eq!(
            NoJitter.sample(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn seeded_jitter_is_deterministic() {
        let a = SeededJitter::new(42);
        let b = SeededJitter::new(42);
        for _ in 0..10 {
            assert_eq!(
                a.sample(Duration::from_secs(60)),
                b.sample(Duration::from_secs(60))
            );
        }
    }

    #[test]
    fn validation() {
        assert!(RetryConfig::default().validate().is_ok());
        let nan = RetryConfig::default().with_backoff(
            Duration::from_secs(1),
            f64::NAN,
            Duration::from_secs(60),
        );
        assert!(nan.validate().is_err());
        let shrinking = RetryConfig::default().with_backoff(
            Duration::from_secs(1),
            0.5,
            Duration::from_secs(60),
        );
        assert!(shrinking.validate().is_err());
        let bad = RetryConfig::default().with_backoff(
            Duration::from_secs(10),
            2.0,
            Duration::from_secs(1),
        );
        assert!(bad.validate().is_err());
    }
}
