//! Per-record error capture: one bad provider record never aborts its batch.
//!
//! There is one way to capture, for every connector: each page of provider items goes
//! through [`transform_with_error_capture`] (connectors call it through their shared page
//! helper, see `docs/connectors.md`); the records that fail become [`RecordFailure`]s with
//! their provider id and message, travel to the sink in the page's batch, are counted in a
//! [`CaptureSummary`] over the whole run and end up in `sync_log.errors` (the first
//! [`MAX_KEPT_FAILURES`] in full). A sync whose [`success_rate`] is at or above the
//! threshold ([`DEFAULT_SUCCESS_THRESHOLD`], 95 %) finishes `completed_with_errors`; below
//! it, `failed` (see [`is_sync_acceptable`]).
//!
//! ```
//! use pandora_sync::capture::{transform_with_error_capture, DEFAULT_SUCCESS_THRESHOLD};
//! use pandora_sync::Error;
//!
//! let raw = ["10", "20", "x", "40"];
//! let out = transform_with_error_capture(
//!     raw,
//!     |r| Some(r.to_string()),
//!     |r| r.parse::<i32>().map_err(|e| Error::decode(Some(r), e.to_string())),
//! );
//! assert_eq!(out.succeeded, vec![10, 20, 40]);
//! assert_eq!(out.failed[0].record_id.as_deref(), Some("x"));
//! assert_eq!(out.success_rate(), 0.75);
//! assert!(!out.is_acceptable(DEFAULT_SUCCESS_THRESHOLD));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The success rate at or above which a sync with failed records still counts as done
/// (`completed_with_errors`).
pub const DEFAULT_SUCCESS_THRESHOLD: f64 = 0.95;

/// The default number of records the orchestrator's sink stores per batch.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// How many failures a [`CaptureSummary`] (and `sync_log.errors`) keeps in full; the rest
/// are only counted.
pub const MAX_KEPT_FAILURES: usize = 100;

/// One record that could not be transformed or stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFailure {
    /// The provider id of the record, when it could be read.
    pub record_id: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl RecordFailure {
    /// A failure for the record with this id.
    pub fn new(record_id: Option<String>, message: impl Into<String>) -> Self {
        RecordFailure {
            record_id,
            message: message.into(),
        }
    }

    fn from_error(record_id: Option<String>, err: &Error) -> Self {
        // A decode error names its record; prefer the id the caller extracted.
        let record_id = record_id.or_else(|| match err {
            Error::Decode { record_id, .. } => record_id.clone(),
            _ => None,
        });
        RecordFailure::new(record_id, err.to_string())
    }
}

/// The outcome of transforming a set of records: what succeeded, and what failed with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured<T> {
    /// The records that transformed, in input order.
    pub succeeded: Vec<T>,
    /// The records that failed, in input order.
    pub failed: Vec<RecordFailure>,
}

impl<T> Default for Captured<T> {
    fn default() -> Self {
        Captured {
            succeeded: Vec::new(),
            failed: Vec::new(),
        }
    }
}

impl<T> Captured<T> {
    /// Share of records that succeeded (1.0 when there were none).
    pub fn success_rate(&self) -> f64 {
        success_rate(self.succeeded.len() as u64, self.failed.len() as u64)
    }

    /// Whether the success rate is at or above `threshold`.
    pub fn is_acceptable(&self, threshold: f64) -> bool {
        is_sync_acceptable(
            self.succeeded.len() as u64,
            self.failed.len() as u64,
            threshold,
        )
    }

    fn log(&self, what: &str) {
        log_failures(
            what,
            self.succeeded.len() as u64,
            self.failed.len() as u64,
            self.failed.first(),
        );
    }
}

/// Transforms every item, capturing failures instead of stopping at the first.
///
/// `id_of` reads an item's provider id before the transform consumes it, so a failure can
/// name its record even when the transform could not.
pub fn transform_with_error_capture<I, T>(
    items: impl IntoIterator<Item = I>,
    id_of: impl Fn(&I) -> Option<String>,
    mut transform: impl FnMut(I) -> Result<T>,
) -> Captured<T> {
    let mut out = Captured::default();
    for item in items {
        let id = id_of(&item);
        match transform(item) {
            Ok(t) => out.succeeded.push(t),
            Err(e) => out.failed.push(RecordFailure::from_error(id, &e)),
        }
    }
    out.log("transform");
    out
}

/// The counts and the first failures of a whole sync run (the orchestrator adds every
/// stored batch's records and failures to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureSummary {
    /// Records stored.
    pub succeeded: u64,
    /// Records that failed.
    pub failed: u64,
    /// The first [`MAX_KEPT_FAILURES`] failures.
    pub failures: Vec<RecordFailure>,
}

impl CaptureSummary {
    /// Share of records that succeeded (1.0 when there were none).
    pub fn success_rate(&self) -> f64 {
        success_rate(self.succeeded, self.failed)
    }

    /// Whether the success rate is at or above `threshold`.
    pub fn is_acceptable(&self, threshold: f64) -> bool {
        is_sync_acceptable(self.succeeded, self.failed, threshold)
    }

    /// Adds failures, keeping the first [`MAX_KEPT_FAILURES`] in full.
    pub fn record_failures(&mut self, failures: impl IntoIterator<Item = RecordFailure>) {
        for f in failures {
            self.failed += 1;
            if self.failures.len() < MAX_KEPT_FAILURES {
                self.failures.push(f);
            }
        }
    }
}

/// Share of records that succeeded: `succeeded / (succeeded + failed)`, 1.0 when both are 0.
pub fn success_rate(succeeded: u64, failed: u64) -> f64 {
    let total = succeeded.saturating_add(failed);
    if total == 0 {
        return 1.0;
    }
    // Counts above 2^53 lose low bits in f64; for a ratio that rounding is immaterial.
    #[allow(clippy::cast_precision_loss)]
    let rate = succeeded as f64 / total as f64;
    rate
}

/// Whether a sync with these counts is acceptable: success rate at or above `threshold`
/// (use [`DEFAULT_SUCCESS_THRESHOLD`]).
pub fn is_sync_acceptable(succeeded: u64, failed: u64, threshold: f64) -> bool {
    success_rate(succeeded, failed) >= threshold
}

fn log_failures(what: &str, succeeded: u64, failed: u64, first: Option<&RecordFailure>) {
    if let Some(first) = first {
        tracing::warn!(
            stage = what,
            succeeded,
            failed,
            failure_rate = 1.0 - success_rate(succeeded, failed),
            first_record_id = first.record_id.as_deref().unwrap_or("unknown"),
            first_error = %first.message,
            "records failed and were skipped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<i64> {
        s.parse()
            .map_err(|_| Error::decode(None, format!("{s:?} is not a number")))
    }

    #[test]
    fn captures_failures_with_ids() {
        let out =
            transform_with_error_capture(["1", "b", "3", ""], |s| Some(format!("id-{s}")), parse);
        assert_eq!(out.succeeded, vec![1, 3]);
        assert_eq!(
            out.failed,
            vec![
                RecordFailure::new(Some("id-b".into()), "decode error: \"b\" is not a number"),
                RecordFailure::new(Some("id-".into()), "decode error: \"\" is not a number"),
            ]
        );
        assert_eq!(out.success_rate(), 0.5);
    }

    #[test]
    fn failure_falls_back_to_decode_error_id() {
        let out: Captured<()> = transform_with_error_capture(
            [7],
            |_| None,
            |n| Err(Error::decode(Some(&n.to_string()), "bad")),
        );
        assert_eq!(out.failed[0].record_id.as_deref(), Some("7"));
    }

    #[test]
    fn counts_add_up_in_a_summary() {
        let items: Vec<String> = (0..1203)
            .map(|i| {
                if i % 100 == 0 {
                    "bad".into()
                } else {
                    i.to_string()
                }
            })
            .collect();
        let mut summary = CaptureSummary::default();
        for page in items.chunks(DEFAULT_BATCH_SIZE) {
            let out = transform_with_error_capture(page, |s| Some((*s).clone()), |s| parse(s));
            summary.succeeded += out.succeeded.len() as u64;
            summary.record_failures(out.failed);
        }
        assert_eq!(summary.failed, 13);
        assert_eq!(summary.succeeded, 1190);
        assert!(summary.is_acceptable(DEFAULT_SUCCESS_THRESHOLD));
    }

    #[test]
    fn summary_keeps_first_hundred() {
        let mut s = CaptureSummary::default();
        s.record_failures((0..250).map(|i| RecordFailure::new(Some(i.to_string()), "x")));
        assert_eq!(s.failed, 250);
        assert_eq!(s.failures.len(), MAX_KEPT_FAILURES);
        assert_eq!(s.failures[99].record_id.as_deref(), Some("99"));
    }

    #[test]
    fn threshold_edges() {
        assert_eq!(success_rate(0, 0), 1.0);
        assert!(is_sync_acceptable(95, 5, DEFAULT_SUCCESS_THRESHOLD));
        assert!(!is_sync_acceptable(94, 6, DEFAULT_SUCCESS_THRESHOLD));
        assert!(is_sync_acceptable(0, 0, DEFAULT_SUCCESS_THRESHOLD));
        assert!(!is_sync_acceptable(0, 1, DEFAULT_SUCCESS_THRESHOLD));
        assert_eq!(success_rate(u64::MAX, 0), 1.0);
        assert_eq!(success_rate(1, 3), 0.25);
    }

    proptest! {
        #[test]
        fn every_item_is_counted_once(items in prop::collection::vec(any::<i16>(), 0..300)) {
            let out = transform_with_error_capture(
                items.clone(),
                |i| Some(i.to_string()),
                |i| if i < 0 { Err(Error::decode(None, "negative")) } else { Ok(i) },
            );
            let expected: Vec<i16> = items.iter().copied().filter(|i| *i >= 0).collect();
            prop_assert_eq!(&out.succeeded, &expected);
            prop_assert_eq!(out.succeeded.len() + out.failed.len(), items.len());
            let rate = out.success_rate();
            prop_assert!((0.0..=1.0).contains(&rate));
        }
    }
}
