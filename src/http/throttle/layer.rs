use tower::Layer;

use super::limiter::Limiter;
use super::service::Throttle;

/// Wraps a service in a [`Throttle`] that waits for a slot of a shared [`Limiter`] before
/// each request.
///
/// Every service this layer wraps shares the layer's limiter, so one budget covers all of
/// them.
///
/// ```
/// use tower::ServiceBuilder;
/// use pandora_sync::http::{Budget, Limiter, ThrottleConfig, ThrottleLayer};
///
/// # fn main() -> pandora_sync::Result<()> {
/// let limiter = Limiter::new("hubspot", ThrottleConfig::new(Budget::new(90, std::time::Duration::from_secs(10))))?;
/// let layer = ThrottleLayer::new(limiter);
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ThrottleLayer {
    limiter: Limiter,
}

impl ThrottleLayer {
    /// A layer sharing `limiter`.
    pub const fn new(limiter: Limiter) -> Self {
        Self { limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.limiter.clone())
    }
}
