//! Retrying transient failures: [`RetryLayer`] with a pluggable [`Classify`] policy.
//!
//! Retries HTTP 429 (after `Retry-After`, seconds or HTTP-date, else exponential backoff),
//! 408, 500, 502, 503, 504, transport errors and per-attempt timeouts, with full-jitter
//! exponential backoff ([`RetryConfig`]). Never retries 400, 401, 404 or other client
//! errors. Provider classifiers ([`HubSpotClassifier`], [`SalesforceClassifier`],
//! [`GoogleClassifier`], [`MondayClassifier`], [`FirefliesClassifier`]) map provider error
//! bodies. When retries run out, the last error is returned with its status and
//! `retry_after`, so the job queue can snooze the job.

mod classify;
mod config;
mod future;
mod layer;
mod providers;
mod service;

pub use classify::{
    Classify, DefaultClassifier, Verdict, api_error, rate_limited, response_retry_after,
};
pub use config::{FullJitter, Jitter, NoJitter, RetryConfig, SeededJitter};
pub use future::RetryFuture;
pub use layer::RetryLayer;
pub use providers::{
    FIREFLIES_QUOTA_AFTER, FirefliesClassifier, GoogleClassifier, HubSpotClassifier,
    MondayClassifier, SalesforceClassifier,
};
pub use service::{NonIdempotent, Retry};

pub(crate) use classify::excerpt;
