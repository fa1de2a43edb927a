//! The HTTP stack: throttle guarantees, retry policy, timeouts, OAuth single flight, presets,
//! observability. Everything runs on tokio's paused clock against mock services, so timing
//! assertions are exact and instant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use pandora_sync::Error;
use pandora_sync::http::{
    Budget, FirefliesClassifier, HttpTokenEndpoint, Limiter, MondayClassifier, NoJitter,
    NonIdempotent, OAuthTokens, Preset, Retry, RetryConfig, RetryLayer, SalesforceClassifier,
    SeededJitter, StaticAuth, Throttle, ThrottleConfig, ThrottleLayer, TimeoutLayer, TokenEndpoint,
    TokenResponse, presets,
};
use proptest::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

// ---------------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------------

/// One request as the mock transport saw it.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    auth: Option<String>,
    path: String,
}

/// What the mock transport answers.
enum Reply {
    Ok(Response<Bytes>),
    Err(Error),
    After(Duration, Box<Reply>),
}

type Handler = dyn Fn(usize, &Request<Bytes>) -> Reply + Send + Sync;

/// A scripted transport: `handler(n, request)` answers the `n`-th call (0-based).
#[derive(Clone)]
struct Mock {
    calls: Arc<Mutex<Vec<Call>>>,
    handler: Arc<Handler>,
}

impl Mock {
    fn new(handler: impl Fn(usize, &Request<Bytes>) -> Reply + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::default(),
            handler: Arc::new(handler),
        }
    }

    fn ok() -> Self {
        Self::new(|_, _| Reply::Ok(resp(200, &[], "{}")))
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Service<Request<Bytes>> for Mock {
    type Response = Response<Bytes>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                at: Instant::now(),
                auth: req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
                path: req.uri().path().to_owned(),
            });
            calls.len() - 1
        };
        let reply = (self.handler)(n, &req);
        Box::pin(resolve(reply))
    }
}

fn resolve(reply: Reply) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, Error>> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Ok(r) => Ok(r),
            Reply::Err(e) => Err(e),
            Reply::After(d, next) => {
                tokio::time::sleep(d).await;
                resolve(*next).await
            }
        }
    })
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::from(body.to_owned())).unwrap()
}

fn get(path: &str) -> Request<Bytes> {
    Request::get(format!("https://api.example.com{path}"))
        .body(Bytes::new())
        .unwrap()
}

fn transport_error() -> Error {
    Error::Transport {
        provider: "mock".into(),
        message: "connection reset".into(),
        source: None,
    }
}

fn throttled(mock: &Mock, config: ThrottleConfig) -> (Limiter, Throttle<Mock>) {
    let limiter = Limiter::new("test", config).unwrap();
    (
        limiter.clone(),
        ThrottleLayer::new(limiter).layer(mock.clone()),
    )
}

/// Polls a future once with the current task's waker.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Asserts the sliding-window guarantee over sorted start instants.
fn assert_window(starts: &[Instant], max: u32, window: Duration) {
    let max = usize::try_from(max).unwrap();
    for (i, pair) in starts.windows(max + 1).enumerate() {
        let span = pair[max] - pair[0];
        assert!(
            span >= window,
            "starts {i}..={} fit {} requests in {span:?} < {window:?}",
            i + max,
            max + 1
        );
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------------
// Throttle
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Arrival {
    gap_ms: u64,
    cancel_after_ms: Option<u64>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        prop_oneof![3 => 0u64..5, 2 => 0u64..400, 1 => 0u64..4000],
        prop_oneof![4 => Just(None), 1 => (0u64..3000).prop_map(Some)],
    )
        .prop_map(|(gap_ms, cancel_after_ms)| Arrival {
            gap_ms,
            cancel_after_ms,
        })
}

/// Runs a random arrival pattern against a limiter on a paused clock and returns
/// `(arrival index, arrival time, start time)` of every request that started, in start
/// order, plus the indices that were never cancelled.
fn run_pattern(
    config: ThrottleConfig,
    arrivals: &[Arrival],
) -> (Vec<(usize, Instant, Instant)>, Vec<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let limiter = Limiter::new("prop", config).unwrap();
        let started: Arc<Mutex<Vec<(usize, Instant, Instant)>>> = Arc::default();
        let mut tasks = Vec::new();
        let mut kept = Vec::new();
        let mut at = Instant::now();
        for (i, a) in arrivals.iter().enumerate() {
            at += ms(a.gap_ms);
            tokio::time::sleep_until(at).await;
            let arrived = Instant::now();
            let mut acquire = Box::pin(limiter.acquire());
            // Take the place in line now, in arrival order.
            if let Some(result) = poll_once(&mut acquire).await {
                result.unwrap();
                started.lock().unwrap().push((i, arrived, Instant::now()));
                kept.push(i);
                continue;
            }
            let started = started.clone();
            match a.cancel_after_ms {
                None => {
                    kept.push(i);
                    tasks.push(tokio::spawn(async move {
                        acquire.await.unwrap();
                        started.lock().unwrap().push((i, arrived, Instant::now()));
                    }));
                }
                Some(after) => tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        r = &mut acquire => {
                            r.unwrap();
                            started.lock().unwrap().push((i, arrived, Instant::now()));
                        }
                        () = tokio::time::sleep(ms(after)) => {}
                    }
                })),
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(limiter.waiting(), 0, "every ticket is gone");
        let started = started.lock().unwrap().clone();
        (started, kept)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random configs and arrival patterns (bursts, gaps, cancellations): never more than
    /// `max_requests` starts in any window (for each stacked budget), `min_delay` between
    /// starts, FIFO order, everyone not cancelled starts, and no idling: each start happens
    /// at the first instant the constraints allow.
    #[test]
    fn throttle_window_min_delay_fifo(
        max in 1u32..6,
        window_ms in 1u64..3000,
        min_delay_ms in prop_oneof![Just(0u64), 0u64..500],
        second in proptest::option::of((1u32..12, 1u64..8000)),
        arrivals in proptest::collection::vec(arrival(), 1..50),
    ) {
        let mut config = ThrottleConfig::new(Budget::new(max, ms(window_ms)))
            .with_min_delay(ms(min_delay_ms));
        let mut budgets = vec![(max, ms(window_ms))];
        if let Some((m, w)) = second {
            config = config.with_budget(Budget::new(m, ms(w)));
            budgets.push((m, ms(w)));
        }
        let (started, kept) = run_pattern(config, &arrivals);

        // FIFO: start order is arrival order.
        let order: Vec<usize> = started.iter().map(|s| s.0).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "start order {order:?}");
        // Liveness: every request that was not cancelled started.
        for i in &kept {
            prop_assert!(order.contains(i), "request {i} never started");
        }
        let times: Vec<Instant> = started.iter().map(|s| s.2).collect();
        for &(m, w) in &budgets {
            assert_window(&times, m, w);
        }
        for pair in times.windows(2) {
            prop_assert!(pair[1] - pair[0] >= ms(min_delay_ms));
        }
        // Work conservation: start = max(arrival, previous start + min_delay,
        // start[k - max] + window for each budget).
        for (k, &(_, arrived, start)) in started.iter().enumerate() {
            let mut earliest = arrived;
            if k > 0 {
                earliest = earliest.max(times[k - 1] + ms(min_delay_ms));
            }
            for &(m, w) in &budgets {
                let m = usize::try_from(m).unwrap();
                if k >= m {
                    earliest = earliest.max(times[k - m] + w);
                }
            }
            prop_assert_eq!(start, earliest, "request #{} started late", k);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_use_99_percent_of_a_90_per_10s_budget() {
    let mock = Mock::ok();
    let window = secs(10);
    let (_, svc) = throttled(&mock, ThrottleConfig::new(Budget::new(90, window)));
    let begin = Instant::now();
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(get("/x")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let starts: Vec<Instant> = mock.calls().iter().map(|c| c.at).collect();
    assert_eq!(starts.len(), 10_000);
    assert_window(&starts, 90, window);

    // The fastest any limiter can go: 90 at once, then 90 more every window.
    let ideal = window * (10_000u32.div_ceil(90) - 1);
    let elapsed = *starts.last().unwrap() - begin;
    let efficiency = ideal.as_secs_f64() / elapsed.as_secs_f64();
    assert!(
        efficiency >= 0.99,
        "took {elapsed:?} for 10,000 requests (ideal {ideal:?}): {:.4} of the budget",
        efficiency
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_waiters_give_up_their_place_and_slots() {
    let mock = Mock::ok();
    let (limiter, svc) = throttled(&mock, ThrottleConfig::new(Budget::new(2, secs(10))));
    let t0 = Instant::now();
    svc.clone().oneshot(get("/a")).await.unwrap();
    svc.clone().oneshot(get("/b")).await.unwrap();

    // Five requests give up after 1 s while waiting for the next slot (at 10 s).
    for _ in 0..5 {
        let r = tokio::time::timeout(secs(1), svc.clone().oneshot(get("/dropped"))).await;
        assert!(r.is_err(), "the request timed out in the throttle");
    }
    assert_eq!(limiter.waiting(), 0);
    assert_eq!(mock.count(), 2, "dropped requests were never sent");

    // The slots they would have had are still free: two start exactly at 10 s.
    let (c, d) = tokio::join!(
        svc.clone().oneshot(get("/c")),
        svc.clone().oneshot(get("/d"))
    );
    c.unwrap();
    d.unwrap();
    let calls = mock.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/a", "/b", "/c", "/d"],
        "in arrival order, none dropped"
    );
    assert_eq!(calls[2].at - t0, secs(10));
    assert_eq!(calls[3].at - t0, secs(10));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_head_or_a_middle_waiter_keeps_the_line_moving() {
    let limiter = Limiter::new("t", ThrottleConfig::new(Budget::new(1, secs(10)))).unwrap();
    let t0 = Instant::now();
    limiter.acquire().await.unwrap();

    let mut head = Box::pin(limiter.acquire());
    let mut middle = Box::pin(limiter.acquire());
    let mut last = Box::pin(limiter.acquire());
    assert!(poll_once(&mut head).await.is_none());
    assert!(poll_once(&mut middle).await.is_none());
    assert!(poll_once(&mut last).await.is_none());
    assert_eq!(limiter.waiting(), 3);

    tokio::time::sleep(secs(3)).await;
    drop(head);
    drop(middle);
    assert_eq!(limiter.waiting(), 1);
    let waited = last.await.unwrap();
    assert_eq!(
        Instant::now() - t0,
        secs(10),
        "the last waiter took the head's slot"
    );
    assert_eq!(waited, secs(10));
}

#[tokio::test(start_paused = true)]
async fn thousands_of_waiters_are_not_busy_polled() {
    /// Counts how often the wrapped future is polled.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }
    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    let limiter = Limiter::new("t", ThrottleConfig::new(Budget::new(10, secs(1)))).unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let n: u32 = 2_000;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let f = Counted {
                inner: Box::pin(limiter.acquire()),
                polls: polls.clone(),
            };
            tokio::spawn(f)
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let total = u32::try_from(polls.load(Ordering::Relaxed)).unwrap();
    let per_waiter = f64::from(total) / f64::from(n);
    // Enqueue, woken as head, woken by the timer: about three polls each.
    assert!(per_waiter <= 4.0, "{per_waiter:.2} polls per waiter");
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_budget_and_stacked_budgets_all_hold() {
    let mock = Mock::ok();
    // Gong-like, scaled down: 3 per second and 10 per minute.
    let config = ThrottleConfig::new(Budget::per_second(3)).with_budget(Budget::per_minute(10));
    let (_, svc) = throttled(&mock, config);
    let a = svc.clone();
    let b = svc.clone();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.oneshot(get("/x")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let starts: Vec<Instant> = mock.calls().iter().map(|c| c.at).collect();
    assert_window(&starts, 3, secs(1));
    assert_window(&starts, 10, secs(60));
    // 30 requests at 10 per minute, 3 per second within each minute: the last starts at
    // 2 min 3 s.
    assert_eq!(starts[29] - starts[0], secs(123));
}

#[tokio::test(start_paused = true)]
async fn a_slot_too_far_away_fails_fast_as_rate_limited_or_quota() {
    let mock = Mock::ok();
    let config = ThrottleConfig::new(Budget::per_second(5))
        .with_budget(Budget::per_day(3).quota())
        .with_max_wait(Some(secs(60)));
    let (_, svc) = throttled(&mock, config);
    for _ in 0..3 {
        svc.clone().oneshot(get("/x")).await.unwrap();
    }
    let t = Instant::now();
    let err = svc.clone().oneshot(get("/x")).await.unwrap_err();
    assert_eq!(Instant::now(), t, "failed without waiting");
    match err {
        Error::QuotaExhausted {
            resets_at: Some(at),
            ..
        } => assert!(at > chrono::Utc::now() + chrono::Duration::hours(23)),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.count(), 3);

    // A plain budget gives RateLimited with the wait.
    let (_, svc) = throttled(
        &mock,
        ThrottleConfig::new(Budget::new(1, secs(600))).with_max_wait(Some(secs(60))),
    );
    svc.clone().oneshot(get("/x")).await.unwrap();
    let err = svc.clone().oneshot(get("/x")).await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d == secs(600)),
        "{err:?}"
    );
    assert!(err.is_snooze());
}

#[tokio::test(start_paused = true)]
async fn hubspot_remaining_zero_holds_every_clone_for_the_interval() {
    let mock = Mock::new(|n, _| {
        if n == 0 {
            Reply::Ok(resp(
                200,
                &[
                    ("x-hubspot-ratelimit-remaining", "0"),
                    ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
                ],
                "{}",
            ))
        } else {
            Reply::Ok(resp(200, &[("x-hubspot-ratelimit-remaining", "50")], "{}"))
        }
    });
    let (_, svc) = throttled(&mock, ThrottleConfig::new(Budget::new(100, secs(10))));
    let t0 = Instant::now();
    svc.clone().oneshot(get("/1")).await.unwrap();
    let (a, b) = tokio::join!(
        svc.clone().oneshot(get("/2")),
        svc.clone().oneshot(get("/3"))
    );
    a.unwrap();
    b.unwrap();
    let calls = mock.calls();
    assert_eq!(calls[1].at - t0, secs(10));
    assert_eq!(calls[2].at - t0, secs(10));
}

#[tokio::test(start_paused = true)]
async fn ietf_ratelimit_and_429_retry_after_hold_the_budget() {
    let mock = Mock::new(|n, _| match n {
        0 => Reply::Ok(resp(200, &[("ratelimit", "\"default\";r=0;t=5")], "{}")),
        1 => Reply::Ok(resp(429, &[("retry-after", "7")], "")),
        _ => Reply::Ok(resp(200, &[], "{}")),
    });
    let (_, svc) = throttled(&mock, ThrottleConfig::new(Budget::new(100, secs(1))));
    let t0 = Instant::now();
    svc.clone().oneshot(get("/1")).await.unwrap();
    assert_eq!(svc.clone().oneshot(get("/2")).await.unwrap().status(), 429);
    svc.clone().oneshot(get("/3")).await.unwrap();
    let calls = mock.calls();
    assert_eq!(calls[1].at - t0, secs(5));
    assert_eq!(calls[2].at - t0, secs(12));
}

#[tokio::test(start_paused = true)]
async fn salesforce_guard_stops_at_80_percent_and_probes_again_later() {
    let used = Arc::new(AtomicUsize::new(3999));
    let u = used.clone();
    let mock = Mock::new(move |_, _| {
        let n = u.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::Ok(resp(
            200,
            &[("sforce-limit-info", &format!("api-usage={n}/5000"))],
            "{}",
        ))
    });
    let stack = presets::salesforce()
        .with_jitter(NoJitter)
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    stack.send(get("/q")).await.unwrap(); // usage 4000/5000: exactly 80 %
    let err = stack.send(get("/q")).await.unwrap_err();
    assert!(matches!(err, Error::QuotaExhausted { .. }), "{err:?}");
    assert!(err.is_snooze());
    assert_eq!(mock.count(), 1, "the stopped request was not sent");

    // After the recheck interval one request probes again.
    tokio::time::sleep(secs(15 * 60)).await;
    used.store(100, Ordering::SeqCst);
    stack.send(get("/q")).await.unwrap();
    stack.send(get("/q")).await.unwrap();
    assert_eq!(mock.count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Retry
// ---------------------------------------------------------------------------------------------

fn retrying(mock: &Mock, config: RetryConfig) -> Retry<Mock> {
    RetryLayer::new("mock", config)
        .with_jitter(NoJitter)
        .layer(mock.clone())
}

fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_is_honoured() {
    let mock = Mock::new(|n, _| match n {
        0 => Reply::Ok(resp(429, &[("retry-after", "7")], "")),
        _ => Reply::Ok(resp(200, &[], "ok")),
    });
    let r = retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap();
    assert_eq!(r.body().as_ref(), b"ok");
    assert_eq!(gaps(&mock.calls()), [secs(7)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_http_date_is_honoured() {
    let mock = Mock::new(|n, _| match n {
        0 => {
            let date = httpdate::fmt_http_date(SystemTime::now() + secs(30));
            Reply::Ok(resp(503, &[("retry-after", &date)], ""))
        }
        _ => Reply::Ok(resp(200, &[], "ok")),
    });
    retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap();
    let gap = gaps(&mock.calls())[0];
    // The date has whole seconds, so the wait is in (29 s, 30 s].
    assert!(gap > secs(28) && gap <= secs(30), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_and_caps_without_jitter() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(503, &[], "down")));
    let config = RetryConfig::default()
        .with_max_retries(6)
        .with_backoff(secs(1), 2.0, secs(5));
    let err = retrying(&mock, config)
        .oneshot(get("/x"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        gaps(&mock.calls()),
        [secs(1), secs(2), secs(4), secs(5), secs(5), secs(5)]
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_within_bounds() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(500, &[], "")));
    let config = RetryConfig::default()
        .with_max_retries(8)
        .with_backoff(secs(1), 2.0, secs(30))
        .with_max_elapsed(secs(3600));
    let svc = RetryLayer::new("mock", config.clone())
        .with_jitter(SeededJitter::new(3))
        .layer(mock.clone());
    svc.oneshot(get("/x")).await.unwrap_err();
    let gaps = gaps(&mock.calls());
    assert_eq!(gaps.len(), 8);
    for (n, gap) in gaps.iter().enumerate() {
        let ceiling = config.backoff_ceiling(u32::try_from(n).unwrap());
        // Timers have millisecond resolution.
        assert!(*gap <= ceiling + ms(1), "retry {n}: {gap:?} > {ceiling:?}");
    }
    // Jitter really is random: not every wait is the full ceiling.
    assert!(
        gaps.iter()
            .enumerate()
            .any(|(n, g)| *g + ms(2) < config.backoff_ceiling(u32::try_from(n).unwrap()))
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    for status in [400u16, 401, 403, 404, 409, 422] {
        let mock = Mock::new(move |_, _| Reply::Ok(resp(status, &[], "{\"error\":\"no\"}")));
        let err = retrying(&mock, RetryConfig::default())
            .oneshot(get("/x"))
            .await
            .unwrap_err();
        assert_eq!(mock.count(), 1, "HTTP {status} was retried");
        assert!(!err.is_retryable(), "{status}: {err:?}");
        if status == 401 {
            assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
        } else {
            assert_eq!(err.status(), Some(status));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_up_to_the_limit_then_surface_the_status() {
    for status in [408u16, 500, 502, 503, 504] {
        let mock = Mock::new(move |_, _| Reply::Ok(resp(status, &[], "boom")));
        let err = retrying(&mock, RetryConfig::default())
            .oneshot(get("/x"))
            .await
            .unwrap_err();
        assert_eq!(mock.count(), 4, "HTTP {status}: 1 attempt + 3 retries");
        match err {
            Error::Api {
                status: s, body, ..
            } => {
                assert_eq!(s, status);
                assert_eq!(body, "boom");
            }
            other => panic!("{other:?}"),
        }
    }
    // A 5xx that recovers is a success.
    let mock = Mock::new(|n, _| {
        if n < 2 {
            Reply::Ok(resp(502, &[], ""))
        } else {
            Reply::Ok(resp(200, &[], "ok"))
        }
    });
    retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap();
    assert_eq!(mock.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn exhausted_rate_limit_retries_keep_retry_after_for_the_queue() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(429, &[("retry-after", "2")], "")));
    let err = retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap_err();
    assert_eq!(mock.count(), 4);
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(secs(2)));
    assert_eq!(err.status(), Some(429));
    assert!(err.is_snooze());
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_elapsed_budget_is_returned_at_once() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(429, &[("retry-after", "600")], "")));
    let t0 = Instant::now();
    let err = retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), t0);
    assert_eq!(mock.count(), 1);
    assert_eq!(err.retry_after(), Some(secs(600)));
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_attempt_timeouts_are_retried() {
    let mock = Mock::new(|n, _| match n {
        0 => Reply::Err(transport_error()),
        1 => Reply::After(secs(120), Box::new(Reply::Ok(resp(200, &[], "late")))),
        _ => Reply::Ok(resp(200, &[], "ok")),
    });
    let svc = RetryLayer::new("mock", RetryConfig::default())
        .with_jitter(NoJitter)
        .layer(TimeoutLayer::new("mock attempt", secs(30)).layer(mock.clone()));
    let r = svc.oneshot(get("/x")).await.unwrap();
    assert_eq!(r.body().as_ref(), b"ok");
    let calls = mock.calls();
    assert_eq!(calls.len(), 3);
    // 1 s backoff, then the 30 s attempt timeout plus 2 s backoff.
    assert_eq!(gaps(&calls), [secs(1), secs(32)]);

    // Errors that are not transient are returned as they are.
    let mock = Mock::new(|_, _| Reply::Err(Error::config("bad")));
    let err = retrying(&mock, RetryConfig::default())
        .oneshot(get("/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(mock.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_only_retry_rate_limits() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(503, &[], "")));
    let mut req = get("/create");
    req.extensions_mut().insert(NonIdempotent);
    retrying(&mock, RetryConfig::default())
        .oneshot(req)
        .await
        .unwrap_err();
    assert_eq!(mock.count(), 1);

    let mock = Mock::new(|n, _| {
        if n == 0 {
            Reply::Ok(resp(429, &[("retry-after", "1")], ""))
        } else {
            Reply::Ok(resp(201, &[], ""))
        }
    });
    let mut req = get("/create");
    req.extensions_mut().insert(NonIdempotent);
    retrying(&mock, RetryConfig::default())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(mock.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn overall_timeout_bounds_the_whole_call() {
    let mock = Mock::new(|_, _| Reply::Ok(resp(503, &[("retry-after", "20")], "")));
    let stack = Preset::new("slow", Budget::per_second(10))
        .with_overall_timeout(secs(45))
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    let t0 = Instant::now();
    let err = stack.send(get("/x")).await.unwrap_err();
    assert_eq!(Instant::now() - t0, secs(45));
    match err {
        Error::Timeout { what, after } => {
            assert_eq!(what, "slow request");
            assert_eq!(after, secs(45));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.count(), 3, "attempts at 0, 20 and 40 s");
}

#[tokio::test(start_paused = true)]
async fn monday_complexity_exhaustion_in_a_200_is_retried_after_retry_in_seconds() {
    let body = r#"{"errors":[{"message":"Complexity budget exhausted","extensions":{"code":"COMPLEXITY_BUDGET_EXHAUSTED","retry_in_seconds":25,"status_code":429}}]}"#;
    let mock = Mock::new(move |n, _| {
        if n == 0 {
            Reply::Ok(resp(200, &[], body))
        } else {
            Reply::Ok(resp(200, &[], r#"{"data":{"boards":[]}}"#))
        }
    });
    let stack = presets::monday()
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    let t0 = Instant::now();
    let (a, b) = tokio::join!(stack.send(get("/v2")), async {
        // Issued while the first waits: the shared budget is held for it too.
        tokio::time::sleep(secs(1)).await;
        stack.send(get("/v2")).await
    });
    a.unwrap();
    b.unwrap();
    let calls = mock.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].at - t0, secs(25));
    assert_eq!(calls[2].at - t0, secs(25));
    let stats = stack.stats().snapshot();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.retries, 1);
}

#[tokio::test(start_paused = true)]
async fn fireflies_too_many_requests_surfaces_as_rate_limited() {
    let body = r#"{"data":null,"errors":[{"message":"Too many requests","code":"too_many_requests","extensions":{"code":"too_many_requests","status":429}}]}"#;
    let mock = Mock::new(move |_, _| Reply::Ok(resp(200, &[], body)));
    let svc = RetryLayer::new("fireflies", RetryConfig::default())
        .with_classifier(FirefliesClassifier)
        .with_jitter(NoJitter)
        .layer(mock.clone());
    let err = svc.oneshot(get("/graphql")).await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(mock.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn salesforce_request_limit_exceeded_stops_the_whole_stack() {
    let body =
        r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
    let mock = Mock::new(move |_, _| Reply::Ok(resp(403, &[], body)));
    let stack = presets::salesforce()
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    let err = stack.send(get("/q")).await.unwrap_err();
    assert!(matches!(err, Error::QuotaExhausted { .. }), "{err:?}");
    assert!(!err.is_retryable() && err.is_snooze());
    // The next request does not reach Salesforce.
    let err = stack.send(get("/q")).await.unwrap_err();
    assert!(matches!(err, Error::QuotaExhausted { .. }), "{err:?}");
    assert_eq!(mock.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn monday_classifier_leaves_other_graphql_errors_to_the_connector() {
    let body = r#"{"data":null,"errors":[{"message":"nope","extensions":{"code":"UserUnauthorizedException"}}]}"#;
    let mock = Mock::new(move |_, _| Reply::Ok(resp(200, &[], body)));
    let svc = RetryLayer::new("monday", RetryConfig::default())
        .with_classifier(MondayClassifier)
        .layer(mock.clone());
    let r = svc.oneshot(get("/v2")).await.unwrap();
    assert_eq!(r.body().as_ref(), body.as_bytes());
    assert_eq!(mock.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

/// A token endpoint that hands out `access-N` (valid 1 h) and, when rotating,
/// `refresh-N+1`; it records the refresh tokens it was given.
#[derive(Clone, Default)]
struct Endpoint {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    rotate: bool,
    fail: bool,
    no_expiry: bool,
}

#[async_trait]
impl TokenEndpoint for Endpoint {
    async fn refresh(&self, refresh_token: &SecretString) -> pandora_sync::Result<TokenResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen
            .lock()
            .unwrap()
            .push(refresh_token.expose_secret().to_owned());
        // Long enough that every concurrent request piles up behind this refresh.
        tokio::time::sleep(ms(250)).await;
        if self.fail {
            return Err(Error::AuthFailed {
                provider: "mock".into(),
                message: "invalid_grant".into(),
            });
        }
        let mut r = TokenResponse::new(SecretString::from(format!("access-{n}")));
        if !self.no_expiry {
            r = r.with_expires_in(secs(3600));
        }
        if self.rotate {
            r = r.with_refresh_token(SecretString::from(format!("refresh-{}", n + 1)));
        }
        Ok(r)
    }
}

/// A provider that accepts only the newest access token (`access-<current>`).
fn token_checking_api(current: Arc<AtomicUsize>) -> Mock {
    Mock::new(move |_, req| {
        let want = format!("Bearer access-{}", current.load(Ordering::SeqCst));
        match req.headers().get("authorization") {
            Some(v) if v == want.as_str() => Reply::Ok(resp(200, &[], "{}")),
            _ => Reply::Ok(resp(401, &[], r#"{"message":"expired"}"#)),
        }
    })
}

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_requests_with_an_expired_token_cause_one_refresh() {
    let endpoint = Endpoint {
        rotate: true,
        ..Endpoint::default()
    };
    let rotated: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = rotated.clone();
    let tokens = OAuthTokens::builder("hubspot", endpoint.clone(), SecretString::from("refresh-1"))
        .access_token(SecretString::from("stale"), Some(Duration::ZERO))
        .on_rotation(move |t| r.lock().unwrap().push(t.expose_secret().to_owned()))
        .build();
    let api = token_checking_api(Arc::new(AtomicUsize::new(1)));
    let stack = presets::hubspot()
        .with_rate_limit(pandora_sync::http::RateLimitConfig {
            max_requests: 1000,
            window_ms: 1000,
        })
        .unwrap()
        .build(tokens.clone(), api.clone())
        .unwrap();

    let results = futures_util::future::join_all((0..100).map(|_| stack.send(get("/crm")))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        1,
        "exactly one refresh"
    );
    assert_eq!(api.count(), 100, "no request was sent with the stale token");
    assert!(
        api.calls()
            .iter()
            .all(|c| c.auth.as_deref() == Some("Bearer access-1"))
    );
    assert_eq!(*rotated.lock().unwrap(), ["refresh-2"]);
    assert_eq!(tokens.refresh_token().expose_secret(), "refresh-2");
    assert_eq!(stack.stats().snapshot().token_refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn the_rotated_refresh_token_is_used_for_the_next_refresh() {
    let endpoint = Endpoint {
        rotate: true,
        ..Endpoint::default()
    };
    let rotated: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = rotated.clone();
    let tokens = OAuthTokens::builder(
        "google-drive",
        endpoint.clone(),
        SecretString::from("refresh-1"),
    )
    .refresh_margin(secs(60))
    .on_rotation(move |t| r.lock().unwrap().push(t.expose_secret().to_owned()))
    .build();
    let current = Arc::new(AtomicUsize::new(1));
    let api = token_checking_api(current.clone());
    let stack = presets::google_drive().build(tokens, api.clone()).unwrap();

    stack.send(get("/files")).await.unwrap();
    // The token is valid for 3,600 s and refreshed 60 s early: still fresh after 3,530 s,
    // refreshed before the request after 3,550 s.
    tokio::time::sleep(secs(3530)).await;
    stack.send(get("/files")).await.unwrap();
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        1,
        "still fresh at 3,530 s"
    );
    tokio::time::sleep(secs(20)).await;
    current.store(2, Ordering::SeqCst);
    stack.send(get("/files")).await.unwrap();
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 2);
    assert_eq!(*endpoint.seen.lock().unwrap(), ["refresh-1", "refresh-2"]);
    assert_eq!(*rotated.lock().unwrap(), ["refresh-2", "refresh-3"]);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_refreshed_once_and_the_request_resent_once() {
    let endpoint = Endpoint {
        no_expiry: true,
        ..Endpoint::default()
    };
    let tokens = OAuthTokens::builder("salesforce", endpoint.clone(), SecretString::from("r"))
        .access_token(SecretString::from("access-0"), None)
        .build();
    // The provider revoked access-0 and only knows access-1.
    let api = token_checking_api(Arc::new(AtomicUsize::new(1)));
    let stack = presets::salesforce()
        .build(tokens.clone(), api.clone())
        .unwrap();
    let results = futures_util::future::join_all((0..50).map(|_| stack.send(get("/query")))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        1,
        "one refresh for 50 rejections"
    );
    assert_eq!(
        api.count(),
        100,
        "each request: one rejected send, one re-send"
    );

    // A token the provider keeps rejecting: one refresh, one re-send, then AuthFailed.
    let endpoint = Endpoint::default();
    let tokens = OAuthTokens::builder("salesforce", endpoint.clone(), SecretString::from("r"))
        .access_token(SecretString::from("x"), None)
        .build();
    let api = token_checking_api(Arc::new(AtomicUsize::new(99)));
    let stack = presets::salesforce().build(tokens, api.clone()).unwrap();
    let err = stack.send(get("/query")).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert_eq!(api.count(), 2);
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn salesforce_invalid_session_id_triggers_the_refresh() {
    let endpoint = Endpoint {
        no_expiry: true,
        ..Endpoint::default()
    };
    let tokens = OAuthTokens::builder("salesforce", endpoint.clone(), SecretString::from("r"))
        .access_token(SecretString::from("old"), None)
        .build();
    let api = Mock::new(|_, req| {
        if req.headers()["authorization"] == "Bearer access-1" {
            Reply::Ok(resp(200, &[], "{}"))
        } else {
            // Salesforce sometimes says it with a 403.
            Reply::Ok(resp(
                403,
                &[],
                r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
            ))
        }
    });
    let stack = Preset::new("salesforce", Budget::per_minute(100))
        .with_classifier(SalesforceClassifier)
        .build(tokens, api.clone())
        .unwrap();
    stack.send(get("/query")).await.unwrap();
    assert_eq!(api.count(), 2);
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_shared_by_everyone_who_waited_for_it() {
    let endpoint = Endpoint {
        fail: true,
        ..Endpoint::default()
    };
    let tokens = OAuthTokens::builder(
        "hubspot",
        endpoint.clone(),
        SecretString::from("bad-refresh"),
    )
    .build();
    let api = Mock::ok();
    let stack = presets::hubspot().build(tokens, api.clone()).unwrap();
    let results = futures_util::future::join_all((0..20).map(|_| stack.send(get("/x")))).await;
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
        assert!(!err.to_string().contains("bad-refresh"));
    }
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
    assert_eq!(api.count(), 0);
    // A later request tries again (the provider may have recovered).
    stack.send(get("/x")).await.unwrap_err();
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn http_token_endpoint_posts_the_form_and_keeps_secrets_out_of_errors() {
    let seen: Arc<Mutex<Option<(String, String, String)>>> = Arc::default();
    let s = seen.clone();
    let service = tower::service_fn(move |req: Request<Bytes>| {
        let s = s.clone();
        async move {
            let body = String::from_utf8(req.body().to_vec()).unwrap();
            *s.lock().unwrap() = Some((
                req.method().to_string(),
                req.headers()["content-type"].to_str().unwrap().to_owned(),
                body.clone(),
            ));
            if body.contains("refresh_token=revoked") {
                return Ok::<_, Error>(resp(
                    400,
                    &[],
                    r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked.","refresh_token":"revoked"}"#,
                ));
            }
            Ok(resp(
                200,
                &[],
                r#"{"access_token":"at-1","expires_in":"3599","refresh_token":"rt-2","instance_url":"https://na1.salesforce.com","token_type":"Bearer"}"#,
            ))
        }
    });
    let endpoint = HttpTokenEndpoint::new(
        service,
        "salesforce",
        "https://login.example.com/services/oauth2/token"
            .parse()
            .unwrap(),
        "client-1",
        SecretString::from("client-secret-1"),
    );
    assert!(!format!("{endpoint:?}").contains("client-secret-1"));
    let rotated: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = rotated.clone();
    let tokens = OAuthTokens::builder("salesforce", endpoint, SecretString::from("rt 1&x"))
        .on_rotation(move |t| r.lock().unwrap().push(t.expose_secret().to_owned()))
        .build();
    let header = tokens.authorization().await.unwrap();
    assert_eq!(header, "Bearer at-1");
    assert!(header.is_sensitive());
    assert_eq!(
        tokens.instance_url().as_deref(),
        Some("https://na1.salesforce.com")
    );
    assert_eq!(*rotated.lock().unwrap(), ["rt-2"]);
    let (method, content_type, body) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(method, "POST");
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "rt 1&x");
    assert_eq!(form["client_id"], "client-1");
    assert_eq!(form["client_secret"], "client-secret-1");
    let debug = format!("{tokens:?}");
    assert!(
        !debug.contains("at-1") && !debug.contains("rt-2"),
        "{debug}"
    );

    // A rejected grant: AuthFailed, with the body redacted.
    let service = tower::service_fn(|_req: Request<Bytes>| async {
        Ok::<_, Error>(resp(
            400,
            &[],
            r#"{"error":"invalid_grant","refresh_token":"leaked-token"}"#,
        ))
    });
    let endpoint = HttpTokenEndpoint::new(
        service,
        "google-drive",
        "https://oauth2.example.com/token".parse().unwrap(),
        "c",
        SecretString::from("s"),
    );
    let err = endpoint
        .refresh(&SecretString::from("revoked"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid_grant"));
    assert!(!err.to_string().contains("leaked-token"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The whole stack: stats and tracing
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stats_count_requests_attempts_retries_429s_and_throttle_wait() {
    let mock = Mock::new(|n, _| match n {
        0 => Reply::Ok(resp(429, &[("retry-after", "3")], "")),
        3 => Reply::Ok(resp(404, &[], "")),
        _ => Reply::Ok(resp(200, &[], "{}")),
    });
    let stack = Preset::new("acme", Budget::new(2, secs(10)))
        .with_jitter(NoJitter)
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    stack.send(get("/1")).await.unwrap(); // 429 at 0 s, retried at 3 s
    stack.send(get("/2")).await.unwrap(); // waits for the window: starts at 10 s
    stack.send(get("/3")).await.unwrap_err(); // 404 at 13 s
    let s = stack.stats().snapshot();
    assert_eq!(s.requests, 3);
    assert_eq!(s.attempts, 4);
    assert_eq!(s.retries, 1);
    assert_eq!(s.rate_limited, 1);
    assert_eq!(s.failures, 1);
    assert_eq!(s.throttle_wait, secs(10));
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["throttle_wait_ms"], 10_000);
}

/// Collects the fields of every closed `http.request` span.
#[derive(Clone, Default)]
struct SpanCapture(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && span.name() == "http.request"
            && let Some(fields) = span.extensions_mut().remove::<Fields>()
        {
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_request_gets_a_span_without_the_query_string() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = SpanCapture::default();
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = Mock::new(|n, _| {
        if n == 0 {
            Reply::Ok(resp(500, &[], ""))
        } else {
            Reply::Ok(resp(200, &[], "{}"))
        }
    });
    let stack = Preset::new("acme", Budget::new(1, secs(5)))
        .with_jitter(NoJitter)
        .build(
            StaticAuth::bearer(&SecretString::from("t")).unwrap(),
            mock.clone(),
        )
        .unwrap();
    stack
        .send(
            Request::post("https://api.example.com/crm/v3/search?hapikey=sekrit&limit=5")
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    drop(stack);

    let spans = capture.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s["provider"], "acme");
    assert_eq!(s["method"], "POST");
    assert_eq!(s["path"], "/crm/v3/search");
    assert_eq!(s["status"], "200");
    assert_eq!(s["attempts"], "2");
    // The retry after 1 s waited 4 s more for the 1-per-5-s budget.
    assert_eq!(s["throttle_wait_ms"], "4000");
    assert!(!format!("{spans:?}").contains("sekrit"));
}

#[tokio::test(start_paused = true)]
async fn a_token_shorter_lived_than_the_margin_is_refreshed_half_way_not_per_request() {
    let endpoint = Endpoint::default();
    let tokens = OAuthTokens::builder("gong", endpoint.clone(), SecretString::from("r"))
        .access_token(SecretString::from("access-0"), Some(secs(30)))
        .refresh_margin(secs(60))
        .build();
    let current = Arc::new(AtomicUsize::new(0));
    let stack = presets::gong()
        .build(tokens, token_checking_api(current.clone()))
        .unwrap();
    for _ in 0..10 {
        stack.send(get("/v2/calls")).await.unwrap();
        tokio::time::sleep(secs(1)).await;
    }
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        0,
        "fresh for the first 15 s"
    );
    tokio::time::sleep(secs(6)).await;
    current.store(1, Ordering::SeqCst);
    stack.send(get("/v2/calls")).await.unwrap();
    stack.send(get("/v2/calls")).await.unwrap();
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_token_endpoint_times_out() {
    let service = tower::service_fn(|_req: Request<Bytes>| async {
        std::future::pending::<()>().await;
        Ok::<_, Error>(resp(200, &[], "{}"))
    });
    let endpoint = HttpTokenEndpoint::new(
        service,
        "hubspot",
        "https://api.example.com/oauth/v1/token".parse().unwrap(),
        "c",
        SecretString::from("s"),
    )
    .with_timeout(secs(20));
    let t0 = Instant::now();
    let err = endpoint
        .refresh(&SecretString::from("r"))
        .await
        .unwrap_err();
    assert_eq!(Instant::now() - t0, secs(20));
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
}
