//! The shared sliding-window-log limiter with a FIFO ticket queue.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::config::{Budget, HeaderPolicy, ThrottleConfig};
use crate::http::headers;
use crate::{Error, Result};

/// The budget state shared by every clone of a throttled service.
///
/// It keeps, per [`Budget`], the start instants of the requests inside the window (a sliding
/// window *log*, so the guarantee holds for any interval, not just aligned ones), the last
/// start (for the minimum delay), a hold set from response headers, and a quota stop.
///
/// Requests that cannot start at once take a ticket and wait first-come first-served. Only
/// the head of the line computes the next free slot and sleeps until it; the others sleep
/// until the head leaves, so thousands of waiters cost no polling. Dropping a waiting
/// [`Acquire`] gives up its place and wakes the next in line.
///
/// The head of the line makes progress only while its future is polled: a waiting future
/// must be awaited or dropped, not parked unpolled (as with any fair queue such as
/// [`tokio::sync::Semaphore`]).
///
/// Uses [`tokio::time::Instant`], so tests on a paused clock run instantly.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> pandora_sync::Result<()> {
/// use std::time::Duration;
/// use pandora_sync::http::{Budget, Limiter, ThrottleConfig};
///
/// let limiter = Limiter::new("gong", ThrottleConfig::new(Budget::per_second(3)))?;
/// let waited = limiter.acquire().await?;
/// assert_eq!(waited, Duration::ZERO);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

struct Shared {
    provider: Cow<'static, str>,
    min_delay: Duration,
    max_wait: Option<Duration>,
    headers: HeaderPolicy,
    state: Mutex<State>,
}

struct Log {
    budget: Budget,
    /// Start instants inside the window, oldest first, never more than `max_requests`.
    starts: VecDeque<Instant>,
}

struct Stop {
    until: Instant,
    resets_at: Option<DateTime<Utc>>,
}

struct State {
    logs: Vec<Log>,
    last_start: Option<Instant>,
    hold_until: Option<Instant>,
    stop: Option<Stop>,
    /// Waiting tickets in arrival order, with the waker of each waiter's task.
    queue: BTreeMap<u64, Waker>,
    next_ticket: u64,
}

enum Decision {
    Go,
    WaitUntil(Instant),
    Fail(Error),
}

/// `at + d`, saturating at a far but representable instant.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(at)
}

fn wall_clock_after(wait: Duration) -> Option<DateTime<Utc>> {
    Utc::now().checked_add_signed(chrono::TimeDelta::from_std(wait).ok()?)
}

impl State {
    fn decide(&mut self, now: Instant, shared: &Shared) -> Decision {
        if let Some(stop) = &self.stop {
            if now < stop.until {
                return Decision::Fail(Error::QuotaExhausted {
                    provider: shared.provider.clone(),
                    resets_at: stop.resets_at,
                });
            }
            self.stop = None;
        }

        let mut slot = now;
        let mut binding_quota = false;
        for log in &mut self.logs {
            let window = log.budget.window();
            while log.starts.front().is_some_and(|&s| later(s, window) <= now) {
                log.starts.pop_front();
            }
            let max = usize::try_from(log.budget.max_requests()).unwrap_or(usize::MAX);
            if log.starts.len() >= max
                && let Some(&oldest) = log.starts.front()
            {
                let free = later(oldest, window);
                if free > slot {
                    slot = free;
                    binding_quota = log.budget.is_quota();
                }
            }
        }
        if let Some(last) = self.last_start {
            let free = later(last, shared.min_delay);
            if free > slot {
                slot = free;
                binding_quota = false;
            }
        }
        if let Some(hold) = self.hold_until {
            if hold > slot {
                slot = hold;
                binding_quota = false;
            } else if hold <= now {
                self.hold_until = None;
            }
        }

        if slot <= now {
            return Decision::Go;
        }
        let wait = slot - now;
        match shared.max_wait {
            Some(max) if wait > max => Decision::Fail(if binding_quota {
                Error::QuotaExhausted {
                    provider: shared.provider.clone(),
                    resets_at: wall_clock_after(wait),
                }
            } else {
                Error::RateLimited {
                    provider: shared.provider.clone(),
                    retry_after: Some(wait),
                }
            }),
            _ => Decision::WaitUntil(slot),
        }
    }

    fn record(&mut self, now: Instant) {
        for log in &mut self.logs {
            log.starts.push_back(now);
            let max = usize::try_from(log.budget.max_requests()).unwrap_or(usize::MAX);
            while log.starts.len() > max {
                log.starts.pop_front();
            }
        }
        self.last_start = Some(now);
    }

    fn head_waker(&self) -> Option<Waker> {
        self.queue.first_key_value().map(|(_, w)| w.clone())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and the state stays consistent even
        // if one did, so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Limiter {
    /// A limiter for `provider` (the name used in its errors); [`Error::Config`] when the
    /// configuration is out of range.
    pub fn new(provider: impl Into<Cow<'static, str>>, config: ThrottleConfig) -> Result<Self> {
        config.validate()?;
        let logs = config
            .budgets
            .iter()
            .map(|&budget| Log {
                budget,
                starts: VecDeque::new(),
            })
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                provider: provider.into(),
                min_delay: config.min_delay,
                max_wait: config.max_wait,
                headers: config.headers,
                state: Mutex::new(State {
                    logs,
                    last_start: None,
                    hold_until: None,
                    stop: None,
                    queue: BTreeMap::new(),
                    next_ticket: 0,
                }),
            }),
        })
    }

    /// The provider this limiter throttles.
    pub fn provider(&self) -> &str {
        &self.shared.provider
    }

    /// The budgets it enforces.
    pub fn budgets(&self) -> Vec<Budget> {
        self.shared.lock().logs.iter().map(|l| l.budget).collect()
    }

    /// Waits for a slot and records a start; resolves to the time spent waiting.
    ///
    /// Fails with [`Error::RateLimited`] or [`Error::QuotaExhausted`] when the slot is
    /// further away than the configured `max_wait`, or while a quota stop is in force.
    /// The future is cancel-safe: dropping it before it resolves records nothing and gives
    /// up its place in line.
    pub fn acquire(&self) -> Acquire {
        Acquire {
            limiter: self.clone(),
            ticket: None,
            enqueued_at: None,
            sleep: None,
        }
    }

    /// How many requests are waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Holds every request until at least `duration` from now.
    pub fn hold_for(&self, duration: Duration) {
        let until = later(Instant::now(), duration.min(self.shared.headers.max_hold));
        let mut st = self.shared.lock();
        st.hold_until = Some(st.hold_until.map_or(until, |h| h.max(until)));
    }

    /// Fails every request with [`Error::QuotaExhausted`] for `duration` (the error carries
    /// `resets_at`, or the end of the stop when that is unknown).
    pub fn stop_for(&self, duration: Duration, resets_at: Option<DateTime<Utc>>) {
        let until = later(Instant::now(), duration);
        let resets_at = resets_at.or_else(|| wall_clock_after(duration));
        let mut st = self.shared.lock();
        let extend = st.stop.as_ref().is_none_or(|s| s.until < until);
        if extend {
            st.stop = Some(Stop { until, resets_at });
        }
    }

    /// Fails every request with [`Error::QuotaExhausted`] until `resets_at`, or for the
    /// header policy's `quota_recheck` interval when the reset time is unknown or past.
    pub fn quota_exhausted(&self, resets_at: Option<DateTime<Utc>>) {
        let wait = resets_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(self.shared.headers.quota_recheck);
        self.stop_for(wait, resets_at.filter(|at| *at > Utc::now()));
    }

    /// Reads a response's rate-limit headers (per the configured [`HeaderPolicy`]) and holds
    /// or stops further requests when the provider's budget is exhausted.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        let signals = headers::read(&self.shared.headers, status, headers);
        if let Some(hold) = signals.hold {
            self.hold_for(hold);
        }
        if signals.quota_stop {
            self.stop_for(self.shared.headers.quota_recheck, None);
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Limiter")
            .field("provider", &self.shared.provider)
            .field(
                "budgets",
                &st.logs.iter().map(|l| l.budget).collect::<Vec<_>>(),
            )
            .field("min_delay", &self.shared.min_delay)
            .field("max_wait", &self.shared.max_wait)
            .field("waiting", &st.queue.len())
            .finish()
    }
}

pin_project! {
    /// The future of [`Limiter::acquire`]: resolves to the time waited once the request
    /// may start (and its start is recorded).
    #[must_use = "futures do nothing unless polled"]
    pub struct Acquire {
        limiter: Limiter,
        ticket: Option<u64>,
        enqueued_at: Option<Instant>,
        // Boxed and created only when the head must wait: keeps the future small and the
        // fast path free of timer work.
        sleep: Option<Pin<Box<Sleep>>>,
    }

    impl PinnedDrop for Acquire {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(ticket) = this.ticket.take() {
                let next = {
                    let mut st = this.limiter.shared.lock();
                    let was_head = st.queue.first_key_value().is_some_and(|(&t, _)| t == ticket);
                    st.queue.remove(&ticket);
                    if was_head { st.head_waker() } else { None }
                };
                if let Some(w) = next {
                    w.wake();
                }
            }
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("provider", &self.limiter.shared.provider)
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Future for Acquire {
    type Output = Result<Duration>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let shared = &*this.limiter.shared;
        loop {
            let now = Instant::now();
            let mut wake_next = None;
            let outcome = {
                let mut st = shared.lock();
                let decision = match *this.ticket {
                    None if st.queue.is_empty() => {
                        // Nobody waits: decide at once, and only queue up if we must wait.
                        let decision = st.decide(now, shared);
                        if matches!(decision, Decision::WaitUntil(_)) {
                            let ticket = st.next_ticket;
                            st.next_ticket = st.next_ticket.wrapping_add(1);
                            st.queue.insert(ticket, cx.waker().clone());
                            *this.ticket = Some(ticket);
                            *this.enqueued_at = Some(now);
                        }
                        decision
                    }
                    None => {
                        let ticket = st.next_ticket;
                        st.next_ticket = st.next_ticket.wrapping_add(1);
                        st.queue.insert(ticket, cx.waker().clone());
                        *this.ticket = Some(ticket);
                        *this.enqueued_at = Some(now);
                        return Poll::Pending;
                    }
                    Some(ticket) => {
                        let head = st.queue.first_key_value().map(|(&t, _)| t);
                        if let Some(w) = st.queue.get_mut(&ticket)
                            && !w.will_wake(cx.waker())
                        {
                            w.clone_from(cx.waker());
                        }
                        if head != Some(ticket) {
                            return Poll::Pending;
                        }
                        st.decide(now, shared)
                    }
                };
                match decision {
                    Decision::WaitUntil(at) => Err(at),
                    finished => {
                        let result = match finished {
                            Decision::Fail(e) => Err(e),
                            _ => {
                                st.record(now);
                                Ok(())
                            }
                        };
                        if let Some(ticket) = this.ticket.take() {
                            st.queue.remove(&ticket);
                            wake_next = st.head_waker();
                        }
                        Ok(result)
                    }
                }
            };
            match outcome {
                Ok(result) => {
                    if let Some(w) = wake_next {
                        w.wake();
                    }
                    let waited = this.enqueued_at.take().map_or(Duration::ZERO, |t| now - t);
                    *this.sleep = None;
                    return Poll::Ready(result.map(|()| waited));
                }
                Err(at) => {
                    let sleep = this.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The slot has come: decide again (a header may have moved it).
                }
            }
        }
    }
}
