//! A time limit on a service's response future, failing with [`Error::Timeout`].
//!
//! The stacks use it twice: per attempt (inside the throttle, so waiting for a slot does not
//! count) and overall (outermost, covering throttle waits, retries and backoff).
//!
//! [`Error::Timeout`]: crate::Error::Timeout

mod future;
mod layer;
mod service;

pub use future::TimeoutFuture;
pub use layer::TimeoutLayer;
pub use service::Timeout;
