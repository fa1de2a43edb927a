//! Sliding-window throttling: [`ThrottleLayer`] over a shared [`Limiter`].
//!
//! The guarantee, for all clones of a throttled service that share one [`Limiter`]: in any
//! interval of length `window` at most `max_requests` requests start (for every configured
//! [`Budget`]), and consecutive starts are at least `min_delay` apart. Waiters are served in
//! arrival order; a dropped waiter gives up its place. After each response the limiter reads
//! the provider's rate-limit headers ([`HeaderPolicy`]) and holds further requests while the
//! provider says its budget is exhausted.

mod config;
mod future;
mod layer;
mod limiter;
mod service;

pub use config::{
    Budget, HeaderPolicy, MAX_BUDGET_REQUESTS, MAX_BUDGET_WINDOW, RateLimitConfig, ThrottleConfig,
};
pub use future::ThrottleFuture;
pub use layer::ThrottleLayer;
pub use limiter::{Acquire, Limiter};
pub use service::Throttle;
