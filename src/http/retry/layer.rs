use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::classify::{Classify, DefaultClassifier};
use super::config::{FullJitter, Jitter, RetryConfig};
use super::service::{Policy, Retry};
use crate::http::Limiter;

/// Wraps a service in [`Retry`].
///
/// ```
/// use pandora_sync::http::{GoogleClassifier, NoJitter, RetryConfig, RetryLayer};
///
/// let layer = RetryLayer::new("google-drive", RetryConfig::default())
///     .with_classifier(GoogleClassifier)
///     .with_jitter(NoJitter);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RetryLayer {
    provider: Cow<'static, str>,
    config: RetryConfig,
    classifier: Arc<dyn Classify>,
    jitter: Arc<dyn Jitter>,
    limiter: Option<Limiter>,
}

impl RetryLayer {
    /// Retries per `config` with the [`DefaultClassifier`] and [`FullJitter`]; `provider`
    /// names the errors.
    pub fn new(provider: impl Into<Cow<'static, str>>, config: RetryConfig) -> Self {
        Self {
            provider: provider.into(),
            config,
            classifier: Arc::new(DefaultClassifier),
            jitter: Arc::new(FullJitter),
            limiter: None,
        }
    }

    /// Uses `classifier` to judge responses.
    pub fn with_classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// Uses a shared classifier to judge responses.
    pub fn with_shared_classifier(mut self, classifier: Arc<dyn Classify>) -> Self {
        self.classifier = classifier;
        self
    }

    /// Draws backoff jitter from `jitter` (e.g. [`NoJitter`](super::NoJitter) in tests).
    pub fn with_jitter(mut self, jitter: impl Jitter) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    /// Draws backoff jitter from a shared source.
    pub fn with_shared_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// Reports rate limits and exhausted quotas found in bodies (which the throttle cannot
    /// see in headers) to `limiter`, so every clone holds or stops, not just this request.
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = Some(limiter);
        self
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("provider", &self.provider)
            .field("config", &self.config)
            .field("classifier", &self.classifier)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            Arc::new(Policy {
                provider: self.provider.clone(),
                config: self.config.clone(),
                classifier: self.classifier.clone(),
                jitter: self.jitter.clone(),
                limiter: self.limiter.clone(),
            }),
        )
    }
}
