//! monday.com GraphQL wire types (only what the connector reads and sends).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An `ID` as monday serializes it (a string), read leniently from a number too.
pub(crate) fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    id_string(Some(&v)).ok_or_else(|| serde::de::Error::custom(format!("invalid id {v}")))
}

fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(id_string(Some(&v)))
}

/// `complexity { before after query reset_in_x_seconds }`, read leniently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub(crate) struct Complexity {
    #[serde(default)]
    pub before: Option<f64>,
    #[serde(default)]
    pub after: Option<f64>,
    #[serde(default)]
    pub query: Option<f64>,
    #[serde(default)]
    pub reset_in_x_seconds: Option<f64>,
}

/// A column definition.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ColumnDef {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub settings_str: Option<String>,
}

impl ColumnDef {
    fn settings(&self) -> Option<Value> {
        serde_json::from_str(self.settings_str.as_deref()?).ok()
    }

    /// A status column's labels by index (`settings.labels`).
    pub(crate) fn labels(&self) -> BTreeMap<u32, String> {
        self.settings()
            .and_then(|s| s.get("labels").cloned())
            .and_then(|l| match l {
                Value::Object(m) => Some(
                    m.into_iter()
                        .filter_map(|(k, v)| {
                            Some((k.trim().parse().ok()?, v.as_str()?.trim().to_owned()))
                        })
                        .filter(|(_, v): &(u32, String)| !v.is_empty())
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The indexes of a status column's done labels (`settings.done_colors`), `None` when
    /// the settings do not say.
    pub(crate) fn done_indexes(&self) -> Option<BTreeSet<u32>> {
        let s = self.settings()?;
        let a = s.get("done_colors")?.as_array()?;
        Some(
            a.iter()
                .filter_map(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .filter_map(|n| u32::try_from(n).ok())
                .collect(),
        )
    }

    pub(crate) fn is(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

/// A group definition.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GroupDef {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
}

/// A board with its columns and groups.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BoardDef {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub columns: Vec<ColumnDef>,
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

/// A user (`users { id email }`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserDef {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// `data` of the boards listing (with the first page of users).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct BoardsData {
    #[serde(default)]
    pub boards: Option<Vec<Option<BoardDef>>>,
    #[serde(default)]
    pub users: Option<Vec<Value>>,
}

/// `data` of a users page.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct UsersData {
    #[serde(default)]
    pub users: Option<Vec<Value>>,
}

/// An `items_page` / `next_items_page` answer. Items stay raw so one bad item fails alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ItemsPage {
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub items: Vec<Value>,
}

impl ItemsPage {
    pub(crate) fn next_cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// An activity log entry (`archive_pulse`, `delete_pulse`, …).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActivityLog {
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub created_at: Option<Value>,
}

/// A board as read by a page query: its items page and activity logs.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct BoardPage {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub id: Option<String>,
    #[serde(default)]
    pub items_page: Option<ItemsPage>,
    #[serde(default)]
    pub activity_logs: Option<Vec<ActivityLog>>,
}

/// `data` of a board's first page.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FirstPageData {
    #[serde(default)]
    pub boards: Option<Vec<Option<BoardPage>>>,
}

/// `data` of a `next_items_page`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct NextPageData {
    #[serde(default)]
    pub next_items_page: Option<ItemsPage>,
}

/// `data` of an `items(ids)` read.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ItemsData {
    #[serde(default)]
    pub items: Option<Vec<Value>>,
}

/// One item's `{ id state }` (the deletion check).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ItemState {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub state: Option<String>,
}

/// An item's group.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GroupRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// A column value: `text` as shown, `value` a JSON-encoded string (or null).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ColumnValue {
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

impl ColumnValue {
    /// `value` decoded: monday sends a JSON-encoded string; an object is taken as is.
    pub(crate) fn decoded(&self) -> Option<Value> {
        match self.value.as_ref()? {
            Value::Null => None,
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

/// An item.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Item {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub created_at: Option<Value>,
    pub updated_at: Value,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub group: Option<GroupRef>,
    #[serde(default)]
    pub column_values: Vec<ColumnValue>,
}

/// A GraphQL error entry, read leniently (monday's are objects; legacy ones strings).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum GqlError {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        extensions: Option<Value>,
    },
    Text(String),
}

impl GqlError {
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            GqlError::Object { extensions, .. } => extensions.as_ref()?.get("code")?.as_str(),
            GqlError::Text(_) => None,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            GqlError::Object { message, .. } => message.as_deref().unwrap_or(""),
            GqlError::Text(t) => t,
        }
    }
}

/// A GraphQL answer: `data`, `errors`, and the legacy top-level `error_code`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GqlResponse<T> {
    #[serde(default = "none")]
    pub data: Option<T>,
    #[serde(default)]
    pub errors: Option<Vec<GqlError>>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}
