use std::borrow::Cow;
use std::time::Duration;

use tower::Layer;

use super::service::Timeout;

/// Applies a [`Timeout`] to every request of the wrapped service.
///
/// ```
/// use std::time::Duration;
/// use pandora_sync::http::TimeoutLayer;
///
/// let per_attempt = TimeoutLayer::new("hubspot attempt", Duration::from_secs(30));
/// assert_eq!(per_attempt.duration(), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    what: Cow<'static, str>,
    duration: Duration,
}

impl TimeoutLayer {
    /// Fails requests that take longer than `duration`; `what` names them in the error
    /// (e.g. `hubspot attempt`).
    pub fn new(what: impl Into<Cow<'static, str>>, duration: Duration) -> Self {
        Self {
            what: what.into(),
            duration,
        }
    }

    /// The time limit.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.what.clone(), self.duration)
    }
}
