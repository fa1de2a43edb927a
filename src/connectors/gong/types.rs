//! Gong v2 wire types (only what the connector reads and sends).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `records`: Gong's paging block. `cursor` is present only while more pages remain.
/// `totalRecords` is read leniently (a count of any JSON shape must not fail the page).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Records {
    pub cursor: Option<String>,
    #[serde(default)]
    pub total_records: Option<Value>,
}

impl Records {
    fn next(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.trim().is_empty())
    }

    /// `totalRecords` as a count: a non-negative integer (or a numeric string), else `None`.
    fn total(&self) -> Option<u64> {
        match self.total_records.as_ref()? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A page of `GET /v2/users`. Users stay raw JSON so one odd user cannot fail the page.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct UsersPage {
    #[serde(default)]
    pub records: Records,
    #[serde(default)]
    pub users: Vec<Value>,
}

impl UsersPage {
    pub(crate) fn next_cursor(&self) -> Option<&str> {
        self.records.next()
    }
}

/// A page of `POST /v2/calls/extensive`. Calls stay raw JSON so a malformed call fails
/// alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CallsPage {
    #[serde(default)]
    pub records: Records,
    #[serde(default)]
    pub calls: Vec<Value>,
}

impl CallsPage {
    pub(crate) fn next_cursor(&self) -> Option<&str> {
        self.records.next()
    }

    /// `records.totalRecords`: the calls matching the request's filter (all pages).
    pub(crate) fn total(&self) -> Option<u64> {
        self.records.total()
    }

    /// The page Gong's 404 "No calls found" stands for: empty, and nothing matches.
    pub(crate) fn none_found() -> Self {
        CallsPage {
            records: Records {
                cursor: None,
                total_records: Some(Value::from(0u64)),
            },
            calls: Vec::new(),
        }
    }
}

/// A Gong user as the connector needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GongUser {
    pub id: String,
    pub email: Option<String>,
    pub aliases: Vec<String>,
    pub active: bool,
}

/// A Gong id: a numeric string (or, leniently, a number).
pub(crate) fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl GongUser {
    /// Reads one entry of `users[]`; `None` without an id.
    pub(crate) fn from_json(v: &Value) -> Option<GongUser> {
        let email = |x: Option<&Value>| {
            x.and_then(Value::as_str)
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
        };
        Some(GongUser {
            id: id_string(v.get("id"))?,
            email: email(v.get("emailAddress")),
            aliases: v
                .get("emailAliases")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| email(Some(x))).collect())
                .unwrap_or_default(),
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
        })
    }

    /// Whether `email` is this user's address or one of its aliases (case-insensitive).
    pub(crate) fn has_email(&self, email: &str) -> bool {
        self.email
            .iter()
            .chain(&self.aliases)
            .any(|e| e.eq_ignore_ascii_case(email))
    }
}

/// Body of `POST /v2/calls/extensive`. The cursor goes here, never in the query string
/// (Gong ignores it there and answers page 1 again).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallsRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<&'a str>,
    pub filter: CallsFilter<'a>,
    pub content_selector: ContentSelector,
}

/// `filter`: start time in `[fromDateTime, toDateTime)`, hosted by `primaryUserIds`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallsFilter<'a> {
    pub from_date_time: String,
    pub to_date_time: String,
    pub primary_user_ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<&'a str>,
}

/// `contentSelector`: the connector needs the metadata and the parties only.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContentSelector {
    pub context: &'static str,
    pub exposed_fields: ExposedFields,
}

/// `contentSelector.exposedFields`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ExposedFields {
    pub parties: bool,
}

impl Default for ContentSelector {
    fn default() -> Self {
        ContentSelector {
            context: "None",
            exposed_fields: ExposedFields { parties: true },
        }
    }
}

/// One call of the extensive endpoint, as the transform reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GongCall {
    pub meta_data: Map<String, Value>,
    #[serde(default)]
    pub parties: Option<Vec<GongParty>>,
}

/// One party of a call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GongParty {
    #[serde(default)]
    pub email_address: Option<Value>,
    #[serde(default)]
    pub name: Option<Value>,
    #[serde(default)]
    pub user_id: Option<Value>,
    #[serde(default)]
    pub affiliation: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_body_carries_the_cursor_and_filter() {
        let req = CallsRequest {
            cursor: Some("eyJ"),
            filter: CallsFilter {
                from_date_time: "2024-01-01T00:00:00Z".into(),
                to_date_time: "2024-02-01T00:00:00Z".into(),
                primary_user_ids: vec!["42"],
                workspace_id: None,
            },
            content_selector: ContentSelector::default(),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({
                "cursor": "eyJ",
                "filter": {"fromDateTime": "2024-01-01T00:00:00Z", "toDateTime": "2024-02-01T00:00:00Z", "primaryUserIds": ["42"]},
                "contentSelector": {"context": "None", "exposedFields": {"parties": true}}
            })
        );
    }

    #[test]
    fn users_are_read_leniently() {
        let u = GongUser::from_json(&json!({"id": 17, "emailAddress": " A@x.com ", "emailAliases": ["b@x.com", ""], "active": false})).unwrap();
        assert_eq!(u.id, "17");
        assert!(!u.active);
        assert!(u.has_email("a@X.com") && u.has_email("B@x.com") && !u.has_email(""));
        assert!(GongUser::from_json(&json!({"emailAddress": "a@x.com"})).is_none());
        let page: UsersPage =
            serde_json::from_value(json!({"records": {"cursor": ""}, "users": []})).unwrap();
        assert_eq!(page.next_cursor(), None);
    }
}
