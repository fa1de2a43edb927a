//! Fireflies GraphQL wire types (only what the connector reads and sends).

use serde::Deserialize;
use serde_json::Value;

/// A GraphQL answer: `data` (possibly `null` or partial) and `errors[]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct GraphqlResponse {
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub errors: Option<Vec<Value>>,
}

/// One `errors[]` entry's code (`code`, else `extensions.code`) and message.
pub(crate) fn error_code(e: &Value) -> Option<&str> {
    e.get("code")
        .or_else(|| e.pointer("/extensions/code"))
        .and_then(Value::as_str)
}

/// One `errors[]` entry's message.
pub(crate) fn error_message(e: &Value) -> &str {
    e.get("message").and_then(Value::as_str).unwrap_or("")
}

/// A `meeting_attendees[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FfAttendee {
    #[serde(default, rename = "displayName")]
    pub display_name: Option<Value>,
    #[serde(default)]
    pub email: Option<Value>,
    #[serde(default)]
    pub name: Option<Value>,
}

/// `summary` (every field `null` while the summary is processing).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FfSummary {
    #[serde(default)]
    pub overview: Option<Value>,
    #[serde(default)]
    pub short_summary: Option<Value>,
    #[serde(default)]
    pub keywords: Option<Value>,
    #[serde(default)]
    pub action_items: Option<Value>,
}

/// A `sentences[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FfSentence {
    #[serde(default)]
    pub speaker_name: Option<Value>,
    #[serde(default)]
    pub text: Option<Value>,
}

/// A transcript as the list query asks for it. Scalars stay raw JSON and go through
/// `sanitize`; a list or object of the wrong shape fails the transcript alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FfTranscript {
    pub id: Value,
    #[serde(default)]
    pub title: Option<Value>,
    #[serde(default)]
    pub date: Option<Value>,
    #[serde(default)]
    pub duration: Option<Value>,
    #[serde(default)]
    pub host_email: Option<Value>,
    #[serde(default)]
    pub organizer_email: Option<Value>,
    #[serde(default)]
    pub participants: Option<Vec<Value>>,
    #[serde(default)]
    pub meeting_attendees: Option<Vec<FfAttendee>>,
    #[serde(default)]
    pub transcript_url: Option<Value>,
    #[serde(default)]
    pub summary: Option<FfSummary>,
}

/// A transcript id: a non-empty string (or, leniently, a number).
pub(crate) fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `date` (epoch milliseconds, a Float) of a raw transcript, in whole milliseconds.
pub(crate) fn date_ms(raw: &Value) -> Option<i64> {
    crate::sanitize::datetime(raw.get("date")).map(|d| d.timestamp_millis())
}
