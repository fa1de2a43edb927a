//! monday.com items → `tasks`, through the shared sanitization. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::types::{BoardDef, ColumnDef, Item, id_string};
use crate::error::{Error, Result};
use crate::model::{ConnectorKind, CustomFields, RecordMeta, Task};
use crate::sanitize;

const SOURCE: ConnectorKind = ConnectorKind::Monday;

/// What the connector knows about one board: its name, groups, and which columns hold the
/// task's status, people and due date, found by **type and settings** (column ids differ
/// per board).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BoardPlan {
    pub id: String,
    pub name: Option<String>,
    pub groups: HashMap<String, String>,
    /// The task status column: the `status` column titled "Status", else the first
    /// `status` column whose settings name done labels, else the first `status` column.
    pub status_column: Option<String>,
    /// The status column's labels by index.
    pub labels: BTreeMap<u32, String>,
    /// The status column's done labels (`done_colors` in its settings; without them, a
    /// label named "Done").
    pub done_labels: BTreeSet<String>,
    /// The first `people` column (`multiple-person` in old boards).
    pub people_column: Option<String>,
    /// The first `date` column.
    pub date_column: Option<String>,
}

fn title_is(c: &ColumnDef, t: &str) -> bool {
    c.title
        .as_deref()
        .is_some_and(|x| x.trim().eq_ignore_ascii_case(t))
}

impl BoardPlan {
    pub(crate) fn of(board: &BoardDef) -> BoardPlan {
        let statuses: Vec<&ColumnDef> = board
            .columns
            .iter()
            .filter(|c| c.is("status") || c.is("color"))
            .collect();
        let status = statuses
            .iter()
            .find(|c| title_is(c, "status"))
            .or_else(|| {
                statuses
                    .iter()
                    .find(|c| c.done_indexes().is_some_and(|d| !d.is_empty()))
            })
            .or_else(|| statuses.first())
            .copied();
        let labels = status.map(ColumnDef::labels).unwrap_or_default();
        let done_labels = match status.and_then(ColumnDef::done_indexes) {
            Some(ix) if !ix.is_empty() => {
                ix.iter().filter_map(|i| labels.get(i).cloned()).collect()
            }
            _ => labels
                .values()
                .filter(|l| l.eq_ignore_ascii_case("done"))
                .cloned()
                .collect(),
        };
        BoardPlan {
            id: board.id.clone(),
            name: board
                .name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            groups: board
                .groups
                .iter()
                .filter_map(|g| Some((g.id.clone(), g.title.clone()?)))
                .collect(),
            status_column: status.map(|c| c.id.clone()),
            labels,
            done_labels,
            people_column: board
                .columns
                .iter()
                .find(|c| c.is("people") || c.is("multiple-person"))
                .map(|c| c.id.clone()),
            date_column: board
                .columns
                .iter()
                .find(|c| c.is("date"))
                .map(|c| c.id.clone()),
        }
    }

    /// The done label a `complete` sets: the lowest-indexed done label.
    pub(crate) fn first_done_label(&self) -> Option<&str> {
        self.labels
            .values()
            .find(|l| self.done_labels.contains(*l))
            .map(String::as_str)
    }
}

/// Decodes one raw item; a malformed item fails alone, naming its id when it has one.
pub(crate) fn decode(raw: Value) -> Result<Item> {
    let id = item_id(&raw);
    if !raw.is_object() {
        return Err(Error::decode(None, "malformed monday item: not an object"));
    }
    serde_json::from_value(raw)
        .map_err(|e| Error::decode(id.as_deref(), format!("malformed monday item: {e}")))
}

/// The `id` of a raw item, when it has one.
pub(crate) fn item_id(raw: &Value) -> Option<String> {
    id_string(raw.get("id"))
}

/// A monday timestamp (`2024-06-01T10:00:00Z`, `2024-06-01 10:00:00`), sanitized.
pub(crate) fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    sanitize::datetime(v)
}

/// The user ids of a people value (`{"personsAndTeams": [{"id", "kind": "person"}]}`).
pub(crate) fn people_ids(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(|v| v.get("personsAndTeams"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|p| {
                    p.get("kind")
                        .and_then(Value::as_str)
                        .is_none_or(|k| k == "person")
                })
                .filter_map(|p| id_string(p.get("id")))
                .collect()
        })
        .unwrap_or_default()
}

/// An item → `tasks`.
///
/// - `source_id` ← `id`; `title` ← `name`; `board_id`/`board_name` ← the board;
///   `group_name` ← the group's title; `url` ← `url`;
/// - `status` ← the status column's `text`; `completed_at` ← when the label is one of the
///   board's done labels: the status value's `changed_at` (else `updated_at`);
/// - `assignee_email` ← the people column's first person (`value.personsAndTeams`, not the
///   `text`, which holds names) → `users` email; more people go to
///   `custom_fields.assignee_emails`;
/// - `due_date` ← the date column's `value.date`;
/// - `source_created_at`/`source_updated_at` ← `created_at`/`updated_at`;
/// - every other column → `custom_fields[<column id>]`: its `text`, else its decoded
///   `value`.
pub(crate) fn task(
    workspace_id: Uuid,
    board: &BoardPlan,
    emails: &HashMap<String, String>,
    item: Item,
) -> Result<Task> {
    let id = item.id.clone();
    let updated = time(Some(&item.updated_at))
        .ok_or_else(|| Error::decode(Some(&id), "monday item without a readable updated_at"))?;
    let mut meta = RecordMeta::new(workspace_id, SOURCE, &id);
    meta.source_updated_at = Some(updated);
    meta.source_created_at = time(item.created_at.as_ref());
    let mut custom = CustomFields::new();
    let mut status = None;
    let mut status_changed = None;
    let mut people = Vec::new();
    let mut due: Option<NaiveDate> = None;
    for cv in &item.column_values {
        let text = cv
            .text
            .as_deref()
            .map(sanitize::strip_nul)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let value = cv.decoded();
        if Some(&cv.id) == board.status_column.as_ref() {
            status = text;
            status_changed = value.as_ref().and_then(|v| time(v.get("changed_at")));
        } else if Some(&cv.id) == board.people_column.as_ref() {
            people = people_ids(value.as_ref());
        } else if Some(&cv.id) == board.date_column.as_ref() {
            due = value
                .as_ref()
                .and_then(|v| sanitize::date(v.get("date")))
                .or_else(|| {
                    text.as_deref()
                        .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
                });
        } else if let Some(t) = text {
            custom.insert(cv.id.clone(), Value::String(t));
        } else if let Some(v) = value {
            custom.insert(cv.id.clone(), sanitize::sanitize_value(v));
        }
    }
    let assignees: Vec<String> = people
        .iter()
        .filter_map(|p| emails.get(p).cloned())
        .collect();
    if assignees.len() > 1 {
        custom.insert("assignee_emails".into(), json!(assignees));
    }
    let done = status
        .as_ref()
        .is_some_and(|s| board.done_labels.contains(s));
    meta.custom_fields = custom;
    let group_name = item.group.as_ref().and_then(|g| {
        g.id.as_ref()
            .and_then(|id| board.groups.get(id).cloned())
            .or_else(|| g.title.clone())
    });
    Ok(Task {
        meta,
        board_id: Some(board.id.clone()),
        board_name: board.name.clone(),
        group_name,
        title: sanitize::text(item.name.map(Value::String).as_ref()),
        status,
        assignee_email: people.first().and_then(|p| emails.get(p).cloned()),
        due_date: due,
        completed_at: done.then(|| status_changed.unwrap_or(updated)),
        url: item.url.filter(|u| !u.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> BoardDef {
        serde_json::from_value(json!({
            "id": "77", "name": "Pipeline",
            "columns": [
                {"id": "name", "title": "Name", "type": "name", "settings_str": "{}"},
                {"id": "color_pri", "title": "Priority", "type": "status", "settings_str": "{\"labels\":{\"0\":\"High\"},\"done_colors\":[]}"},
                {"id": "color_mk1", "title": "Stage", "type": "status", "settings_str": "{\"labels\":{\"0\":\"Open\",\"1\":\"Working\",\"3\":\"Shipped\"},\"done_colors\":[3]}"},
                {"id": "people_x", "title": "Owner", "type": "people"},
                {"id": "date_y", "title": "Due", "type": "date"},
                {"id": "text_z", "title": "Notes", "type": "text"}
            ],
            "groups": [{"id": "topics", "title": "This week"}]
        }))
        .unwrap()
    }

    #[test]
    fn columns_are_found_by_type_and_settings() {
        let p = BoardPlan::of(&board());
        assert_eq!(
            p.status_column.as_deref(),
            Some("color_mk1"),
            "the status column with done labels, not the first"
        );
        assert_eq!(p.done_labels, BTreeSet::from(["Shipped".to_owned()]));
        assert_eq!(p.first_done_label(), Some("Shipped"));
        assert_eq!(p.people_column.as_deref(), Some("people_x"));
        assert_eq!(p.date_column.as_deref(), Some("date_y"));
    }

    #[test]
    fn an_item_becomes_a_task() {
        let p = BoardPlan::of(&board());
        let emails = HashMap::from([
            ("5".to_owned(), "ada@x.com".to_owned()),
            ("6".to_owned(), "bob@x.com".to_owned()),
        ]);
        let raw = json!({
            "id": "901", "name": "Call Acme", "state": "active",
            "created_at": "2024-05-01T08:00:00Z", "updated_at": "2024-06-01T10:00:00Z",
            "url": "https://x.monday.com/boards/77/pulses/901",
            "group": {"id": "topics", "title": "ignored"},
            "column_values": [
                {"id": "color_pri", "type": "status", "text": "High", "value": "{\"index\":0}"},
                {"id": "color_mk1", "type": "status", "text": "Shipped", "value": "{\"index\":3,\"changed_at\":\"2024-05-30T09:00:00Z\"}"},
                {"id": "people_x", "type": "people", "text": "Ada L, Bob", "value": "{\"personsAndTeams\":[{\"id\":5,\"kind\":\"person\"},{\"id\":6,\"kind\":\"person\"}]}"},
                {"id": "date_y", "type": "date", "text": "2024-06-10", "value": "{\"date\":\"2024-06-10\"}"},
                {"id": "text_z", "type": "text", "text": "", "value": null}
            ]
        });
        let t = task(Uuid::nil(), &p, &emails, decode(raw).unwrap()).unwrap();
        assert_eq!(t.title.as_deref(), Some("Call Acme"));
        assert_eq!(t.status.as_deref(), Some("Shipped"));
        assert_eq!(t.group_name.as_deref(), Some("This week"));
        assert_eq!(t.assignee_email.as_deref(), Some("ada@x.com"));
        assert_eq!(t.due_date, NaiveDate::from_ymd_opt(2024, 6, 10));
        assert_eq!(t.completed_at, time(Some(&json!("2024-05-30T09:00:00Z"))));
        assert_eq!(t.meta.custom_fields.get("color_pri"), Some(&json!("High")));
        assert_eq!(
            t.meta.custom_fields.get("assignee_emails"),
            Some(&json!(["ada@x.com", "bob@x.com"]))
        );
        assert!(!t.meta.custom_fields.contains_key("text_z"));
        assert_eq!(t.board_name.as_deref(), Some("Pipeline"));

        let bad = json!({"id": "902", "updated_at": {"x": 1}});
        let err = task(Uuid::nil(), &p, &emails, decode(bad).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Decode { record_id: Some(ref id), .. } if id == "902"));
    }
}
