//! Salesforce wire types: only what the connector reads.

use serde::Deserialize;
use serde_json::Value;

/// One batch of `query` / `queryAll`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct QueryPage {
    /// Rows the whole query matches (for `COUNT()`, the count).
    #[serde(rename = "totalSize", default)]
    pub(crate) total_size: u64,
    /// Whether this is the last batch.
    #[serde(default = "yes")]
    pub(crate) done: bool,
    /// The locator of the next batch (absent when `done`).
    #[serde(rename = "nextRecordsUrl", default)]
    pub(crate) next_records_url: Option<String>,
    /// The rows, each an object with `attributes` and the selected fields.
    #[serde(default)]
    pub(crate) records: Vec<Value>,
}

fn yes() -> bool {
    true
}

impl QueryPage {
    /// The locator to follow, when the page says more come.
    pub(crate) fn next(&self) -> Option<&str> {
        if self.done {
            return None;
        }
        self.next_records_url.as_deref().filter(|u| !u.is_empty())
    }
}

/// `GET sobjects/{object}/describe`, the parts the connector reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Describe {
    #[serde(default)]
    pub(crate) fields: Vec<FieldInfo>,
}

/// One field of a describe.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FieldInfo {
    pub(crate) name: String,
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) custom: bool,
}

/// A Bulk API 2.0 query job's info.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JobInfo {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) state: String,
    #[serde(rename = "errorMessage", default)]
    pub(crate) error_message: Option<String>,
}
