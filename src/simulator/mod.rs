//! Fake provider servers on loopback, for examples, tests, benchmarks and host applications'
//! own tests (feature `simulator`).
//!
//! Each simulator is an axum server on `127.0.0.1:0` that follows its provider's real API:
//! endpoints, JSON shapes, pagination, limits, rate-limit semantics and error bodies (see
//! `reference/provider-apis.md`). Data is generated on the fly from a seed and the record
//! index, so a million-record portal costs no memory; only mutations are stored.
//!
//! The shared machinery here gives every simulator:
//! - [`FaultConfig`]: a share of 5xx answers, 429s, bursts of 429s, added latency, malformed
//!   records and connections dropped mid-response, all deterministic from the seed;
//! - [`RequestCounters`]: requests per endpoint;
//! - [`SimServer`]: start on an ephemeral port, `base_url()`, stop on drop or `shutdown()`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use pandora_sync::simulator::{HubSpotSim, HubSpotSimConfig};
//!
//! let sim = HubSpotSim::start(HubSpotSimConfig { companies: 3, ..Default::default() }).await?;
//! let url = format!("{}/crm/v3/objects/companies?limit=2", sim.base_url());
//! assert!(url.starts_with("http://127.0.0.1:"));
//! assert_eq!(sim.truth_count(pandora_sync::simulator::HubSpotObject::Companies, false), 3);
//! # Ok(()) }
//! ```

mod fireflies;
mod fireflies_gql;
mod gdrive;
mod gong;
mod hubspot;
mod monday;
#[cfg(all(
    feature = "hubspot",
    feature = "gong",
    feature = "salesforce",
    feature = "monday",
    feature = "sqlite"
))]
mod quickstart;
mod salesforce;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Response, StatusCode};
use axum::middleware::Next;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fireflies::{
    FIREFLIES_MAX_LIMIT, FirefliesErrorForm, FirefliesSim, FirefliesSimAttendee,
    FirefliesSimConfig, FirefliesSimHandle, FirefliesSimSentence, FirefliesSimSummary,
    FirefliesSimTranscript, FirefliesSimUser, NewFirefliesTranscript, TranscriptsArgs,
};
pub use gdrive::{
    DOC_MIME, FOLDER_MIME, GDRIVE_EXPORT_LIMIT, GDriveSim, GDriveSimConfig, GDriveSimFile,
    GDriveSimHandle, NewGDriveFile, ROOT_ID, SHARED_DRIVE_ID, SHEET_MIME, SLIDES_MIME,
};
pub use gong::{
    GongAffiliation, GongSim, GongSimCall, GongSimConfig, GongSimParty, GongSimUser,
    NO_CALLS_FOUND, NewGongCall,
};
pub use hubspot::{
    HubSpotEndpoint, HubSpotOAuthApp, HubSpotObject, HubSpotPortal, HubSpotSim, HubSpotSimConfig,
    SimRecord,
};
pub use monday::{
    MONDAY_CURRENT_API_VERSION, MondayItemState, MondaySim, MondaySimBoard, MondaySimColumn,
    MondaySimConfig, MondaySimGroup, MondaySimItem, MondaySimRequest, MondaySimUser,
};
#[cfg(all(
    feature = "hubspot",
    feature = "gong",
    feature = "salesforce",
    feature = "monday",
    feature = "sqlite"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(
        feature = "hubspot",
        feature = "gong",
        feature = "salesforce",
        feature = "monday",
        feature = "sqlite"
    )))
)]
pub use quickstart::{QuickstartConfig, QuickstartReport, run_quickstart};
pub use salesforce::{
    LocatorDeath, SIM_API_VERSIONS, SalesforceObject, SalesforceRecord, SalesforceSim,
    SalesforceSimConfig, custom_field_name,
};

/// Faults a simulator injects into its answers. Decisions are deterministic: they depend on
/// the simulator's seed and the request's sequence number (or the record's id), so a failing
/// test replays the same way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Share of requests (0.0 to 1.0) answered with a 500, 502 or 503.
    pub server_error_rate: f64,
    /// Share of requests answered with the provider's 429.
    pub rate_limit_rate: f64,
    /// Delay added before every answer.
    pub latency: Duration,
    /// Share of records served malformed (a shape the connector cannot decode).
    pub malformed_rate: f64,
    /// Share of requests whose connection is dropped in the middle of the response body.
    pub drop_rate: f64,
}

/// Requests served, per endpoint (`"METHOD /route/{param}"`).
#[derive(Debug, Default)]
pub struct RequestCounters {
    by_route: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
}

impl RequestCounters {
    fn record(&self, key: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_route).entry(key).or_insert(0) += 1;
    }

    /// Requests to one endpoint, e.g. `"POST /crm/v3/objects/{object_type}/search"`.
    pub fn get(&self, endpoint: &str) -> u64 {
        lock(&self.by_route).get(endpoint).copied().unwrap_or(0)
    }

    /// Requests to every endpoint.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A copy of the per-endpoint counts.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.by_route).clone()
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        lock(&self.by_route).clear();
        self.total.store(0, Ordering::Relaxed);
    }
}

/// A running simulator: its address, and the task serving it. Dropping it stops the server.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimServer {
    async fn serve(router: Router) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator server stopped with an error");
            }
        });
        Ok(SimServer {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port>`: every endpoint of the provider is on this origin.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// State every simulator shares with the fault middleware.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) seed: u64,
    pub(crate) faults: Mutex<FaultConfig>,
    pub(crate) burst_429: AtomicU64,
    pub(crate) seq: AtomicU64,
    pub(crate) counters: RequestCounters,
}

impl Common {
    pub(crate) fn new(seed: u64, faults: FaultConfig) -> Self {
        Common {
            seed,
            faults: Mutex::new(faults),
            burst_429: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            counters: RequestCounters::default(),
        }
    }

    pub(crate) fn faults(&self) -> FaultConfig {
        lock(&self.faults).clone()
    }

    /// Whether the record `(salt, id)` is served malformed.
    pub(crate) fn is_malformed(&self, salt: u64, id: u64) -> bool {
        let rate = lock(&self.faults).malformed_rate;
        rate > 0.0 && unit(mix(self.seed ^ 0x6d61_6c66, salt, id)) < rate
    }
}

/// What the fault middleware decided for one request.
pub(crate) enum Injected {
    None,
    ServerError(StatusCode),
    RateLimited,
    Drop,
}

/// Decides the faults of the next request.
pub(crate) fn decide(common: &Common) -> (Injected, Duration) {
    let faults = common.faults();
    let n = common.seq.fetch_add(1, Ordering::Relaxed);
    let burst = common
        .burst_429
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok();
    if burst {
        return (Injected::RateLimited, faults.latency);
    }
    let r = unit(mix(common.seed, 0xfa17, n));
    let injected = if r < faults.server_error_rate {
        let code = [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ][usize::try_from(n % 3).unwrap_or(0)];
        Injected::ServerError(code)
    } else if r < faults.server_error_rate + faults.rate_limit_rate {
        Injected::RateLimited
    } else if r < faults.server_error_rate + faults.rate_limit_rate + faults.drop_rate {
        Injected::Drop
    } else {
        Injected::None
    };
    (injected, faults.latency)
}

/// Counts the request under its route template. Faults (latency, 5xx and 429 bodies,
/// dropped connections) are applied by each simulator's handlers through [`decide`], since
/// their bodies are provider-specific.
pub(crate) async fn count_requests(
    State(common): State<Arc<Common>>,
    req: Request,
    next: Next,
) -> Response<Body> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    common
        .counters
        .record(format!("{} {}", req.method(), route));
    next.run(req).await
}

/// A response whose body breaks off after a few bytes, so the client sees the connection
/// drop in the middle of the answer.
pub(crate) fn dropped_response() -> Response<Body> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"results\":[{\"id\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection drop",
        )),
    ];
    let mut resp = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// A sliding-window log: at most `max` accepted requests in any `window`.
#[derive(Debug)]
pub(crate) struct SimLimiter {
    max: usize,
    window: Duration,
    log: Mutex<VecDeque<tokio::time::Instant>>,
}

impl SimLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        SimLimiter {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            window,
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Accepts the request (returning the remaining budget) or rejects it (returning how long
    /// until a slot frees up).
    pub(crate) fn check(&self) -> Result<usize, Duration> {
        let now = tokio::time::Instant::now();
        let mut log = lock(&self.log);
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            log.pop_front();
        }
        if log.len() >= self.max {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        log.push_back(now);
        Ok(self.max - log.len())
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// SplitMix64 of three words: the simulators' deterministic "random" source.
pub(crate) fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_add(b.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(c.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A word mapped to `[0, 1)`.
pub(crate) fn unit(x: u64) -> f64 {
    // The top 53 bits fit an f64 mantissa exactly.
    let top = u32::try_from(x >> 43).unwrap_or(0); // 21 bits
    let low = u32::try_from((x >> 11) & 0xFFFF_FFFF).unwrap_or(0); // 32 bits
    (f64::from(top) * 4_294_967_296.0 + f64::from(low)) / 9_007_199_254_740_992.0
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the simulators'
/// state stays consistent because every critical section is a plain read or write).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_in_range_and_spread() {
        let mut below_half = 0;
        for i in 0..10_000 {
            let u = unit(mix(1, 2, i));
            assert!((0.0..1.0).contains(&u));
            if u < 0.5 {
                below_half += 1;
            }
        }
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        assert!(unit(u64::MAX) < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_is_a_sliding_window() {
        let l = SimLimiter::new(3, Duration::from_secs(1));
        assert_eq!(l.check(), Ok(2));
        assert_eq!(l.check(), Ok(1));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(l.check(), Ok(0));
        assert_eq!(l.check(), Err(Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        // The two requests of t=0 expired; t=400 ms and this one hold two of the three.
        assert_eq!(l.check(), Ok(1), "the two oldest expired, one taken");
        assert_eq!(l.check(), Ok(0));
        assert_eq!(l.check(), Err(Duration::from_millis(400)));
    }

    #[test]
    fn bursts_come_first_then_rates() {
        let c = Common::new(9, FaultConfig::default());
        c.burst_429.store(2, Ordering::Relaxed);
        assert!(matches!(decide(&c).0, Injected::RateLimited));
        assert!(matches!(decide(&c).0, Injected::RateLimited));
        assert!(matches!(decide(&c).0, Injected::None));
        *lock(&c.faults) = FaultConfig {
            server_error_rate: 1.0,
            ..Default::default()
        };
        assert!(matches!(decide(&c).0, Injected::ServerError(_)));
    }
}
