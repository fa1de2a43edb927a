//! A provider's daily request quota, counted locally and kept in a checkpoint stream, for
//! providers that document a per-day limit but do not report the count back (Gong: 10,000
//! a day per company; Fireflies: 50 a day on its small plans). See `docs/connectors.md`,
//! "Rate limits and quotas".

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::connector::Checkpoint;
use crate::error::{Error, Result};
use crate::http::HttpStats;

/// The checkpoint key of the UTC day counted (`"YYYY-MM-DD"`).
pub(crate) const QUOTA_DAY: &str = "day";
/// The checkpoint key of the requests made that day.
pub(crate) const QUOTA_USED: &str = "used";

/// The requests of the current UTC day, kept in the checkpoint stream `stream` (its
/// `extra.day` and `extra.used`) so the count survives between runs and commits with the
/// pages.
///
/// The count is kept per UTC day and a stop reports the next UTC midnight as the reset.
/// Every attempt of the connector's HTTP stack counts (retries too). The day is told from
/// the sync's start plus the time elapsed on tokio's clock, so tests on a paused clock
/// control it.
#[derive(Debug, Clone)]
pub(crate) struct DailyQuota {
    /// The provider id a stop carries.
    provider: &'static str,
    /// The checkpoint stream holding the count.
    stream: &'static str,
    limit: u64,
    day: NaiveDate,
    used: u64,
    /// The stack's attempts already counted.
    seen_attempts: u64,
    started_at: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl DailyQuota {
    /// The count stored in `checkpoint`'s `stream` (zero for another day or none stored).
    pub(crate) fn load(
        checkpoint: &Checkpoint,
        stream: &'static str,
        provider: &'static str,
        limit: u32,
        started_at: DateTime<Utc>,
        stats: &HttpStats,
    ) -> Self {
        let mut q = DailyQuota {
            provider,
            stream,
            limit: u64::from(limit.max(1)),
            day: started_at.date_naive(),
            used: 0,
            seen_attempts: stats.snapshot().attempts,
            started_at,
            origin: tokio::time::Instant::now(),
        };
        if let Some(s) = checkpoint.stream(stream) {
            let day = s
                .extra
                .get(QUOTA_DAY)
                .and_then(Value::as_str)
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            let used = s.extra.get(QUOTA_USED).and_then(Value::as_u64);
            if let (Some(day), Some(used)) = (day, used)
                && day == q.day
            {
                q.used = used;
            }
        }
        q
    }

    /// Now: the sync's start plus the time elapsed since on tokio's clock.
    fn now(&self) -> DateTime<Utc> {
        chrono::Duration::from_std(self.origin.elapsed())
            .ok()
            .and_then(|d| self.started_at.checked_add_signed(d))
            .unwrap_or(self.started_at)
    }

    /// Starts a new count when the UTC day changed.
    fn roll(&mut self) {
        let today = self.now().date_naive();
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
    }

    /// Counts the attempts the stack made since the last call.
    pub(crate) fn charge(&mut self, stats: &HttpStats) {
        let attempts = stats.snapshot().attempts;
        let new = attempts.saturating_sub(self.seen_attempts);
        self.seen_attempts = attempts;
        self.roll();
        self.used = self.used.saturating_add(new);
    }

    /// `Err(next reset)` when one more request would exceed the day's limit.
    pub(crate) fn check(&mut self) -> std::result::Result<(), DateTime<Utc>> {
        self.roll();
        if self.used.saturating_add(1) > self.limit {
            return Err(next_utc_midnight(self.now()));
        }
        Ok(())
    }

    /// Before a request: counts what the stack did since the last call, then
    /// `Err(QuotaExhausted)` with the next reset when one more request would pass the day's
    /// limit.
    pub(crate) fn before_request(&mut self, stats: &HttpStats) -> Result<()> {
        self.charge(stats);
        match self.check() {
            Ok(()) => Ok(()),
            Err(resets_at) => {
                tracing::warn!(provider = self.provider, %resets_at, "daily request limit reached; stopping until it resets");
                Err(Error::QuotaExhausted {
                    provider: self.provider.into(),
                    resets_at: Some(resets_at),
                })
            }
        }
    }

    /// Writes the count into the checkpoint.
    pub(crate) fn store(&self, checkpoint: &mut Checkpoint) {
        let s = checkpoint.stream_mut(self.stream);
        s.extra.insert(
            QUOTA_DAY.into(),
            json!(self.day.format("%Y-%m-%d").to_string()),
        );
        s.extra.insert(QUOTA_USED.into(), json!(self.used));
    }
}

/// The first UTC midnight after `t` (`t` itself at the end of the calendar).
pub(crate) fn next_utc_midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(t, |d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const STREAM: &str = "test:requests";

    /// The day's count rolls over at UTC midnight on tokio's clock: a run that starts at
    /// 23:59:58 with the day's quota spent may go on two seconds later.
    #[tokio::test(start_paused = true)]
    async fn the_daily_count_rolls_over_at_utc_midnight() {
        let stats = HttpStats::new();
        let start = Utc.with_ymd_and_hms(2025, 3, 1, 23, 59, 58).unwrap();
        let midnight = Utc.with_ymd_and_hms(2025, 3, 2, 0, 0, 0).unwrap();
        let mut cp = Checkpoint::default();
        let s = cp.stream_mut(STREAM);
        s.extra.insert(QUOTA_DAY.into(), json!("2025-03-01"));
        s.extra.insert(QUOTA_USED.into(), json!(3));
        let load = |cp: &Checkpoint, at| DailyQuota::load(cp, STREAM, "test", 3, at, &stats);
        let mut q = load(&cp, start);
        assert_eq!(
            q.check(),
            Err(midnight),
            "spent: stop until the next UTC midnight"
        );
        assert!(matches!(
            q.before_request(&stats),
            Err(Error::QuotaExhausted { resets_at: Some(r), .. }) if r == midnight
        ));

        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        assert_eq!(q.check(), Ok(()), "a new day");
        for _ in 0..3 {
            stats.add_attempt();
        }
        q.charge(&stats);
        assert_eq!(
            q.check(),
            Err(Utc.with_ymd_and_hms(2025, 3, 3, 0, 0, 0).unwrap())
        );
        q.store(&mut cp);
        let s = cp.stream(STREAM).unwrap();
        assert_eq!(s.extra[QUOTA_DAY], json!("2025-03-02"));
        assert_eq!(s.extra[QUOTA_USED], json!(3));

        // Another day's count, or garbage, is not carried.
        let later = Utc.with_ymd_and_hms(2025, 3, 3, 8, 0, 0).unwrap();
        assert_eq!(load(&cp, later).check(), Ok(()));
        cp.stream_mut(STREAM)
            .extra
            .insert(QUOTA_USED.into(), json!("lots"));
        assert_eq!(load(&cp, midnight).check(), Ok(()));
    }
}
