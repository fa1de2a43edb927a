//! Writes through [`TaskAdapter`]: `create_item` and `change_multiple_column_values`, one
//! at a time, values as GraphQL variables.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::MondayConnector;
use super::sync::{ITEM_FIELDS, items_by_id, user_ids};
use super::transform::{self, BoardPlan};
use super::types::{BoardsData, ItemsData};
use crate::connector::{NewTask, TaskAdapter, TaskUpdate};
use crate::error::{Error, Result};
use crate::model::Task;

const COMPLEXITY: &str = "complexity { before after query reset_in_x_seconds }";

fn invalid(message: String) -> Error {
    Error::config(message)
}

/// Column changes of one write: `None` leaves a column, `Some(None)` clears it.
#[derive(Debug, Default)]
struct Changes {
    status: Option<Option<String>>,
    assignee_email: Option<Option<String>>,
    due_date: Option<Option<NaiveDate>>,
}

impl MondayConnector {
    fn cached_plan(&self, board: &str) -> Option<BoardPlan> {
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(board)
            .cloned()
    }

    /// The board's column plan (read once per connector).
    async fn plan(&self, board: &str) -> Result<BoardPlan> {
        if let Some(p) = self.cached_plan(board) {
            return Ok(p);
        }
        if board.is_empty() || !board.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid(format!("{board:?} is not a monday board id")));
        }
        let query = format!(
            "query ($ids: [ID!]) {{ {COMPLEXITY} boards(ids: $ids) {{ id name state type columns {{ id title type settings_str }} groups {{ id title }} }} }}"
        );
        let data: BoardsData = self
            .client
            .graphql(&query, json!({"ids": [board]}), false)
            .await?;
        let def = data
            .boards
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .next()
            .ok_or_else(|| {
                invalid(format!(
                    "monday board {board} not found (or not visible to the token)"
                ))
            })?;
        let plan = BoardPlan::of(&def);
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(board.to_owned(), plan.clone());
        Ok(plan)
    }

    /// `column_values` for the changes, JSON-encoded per column type; unknown labels and
    /// emails are errors before anything is sent.
    async fn column_values(
        &self,
        plan: &BoardPlan,
        c: &Changes,
    ) -> Result<(Map<String, Value>, HashMap<String, String>)> {
        let mut values = Map::new();
        let mut emails = HashMap::new();
        if let Some(status) = &c.status {
            let col = plan
                .status_column
                .clone()
                .ok_or_else(|| invalid(format!("monday board {} has no status column", plan.id)))?;
            let v = match status {
                None => Value::Null,
                Some(label) => {
                    let known = plan.labels.values().find(|l| l.as_str() == label.trim());
                    let Some(known) = known else {
                        let all: Vec<&str> = plan.labels.values().map(String::as_str).collect();
                        return Err(invalid(format!(
                            "unknown status label {label:?} on monday board {}; its labels are: {}",
                            plan.id,
                            all.join(", ")
                        )));
                    };
                    json!({"label": known})
                }
            };
            values.insert(col, v);
        }
        if let Some(assignee) = &c.assignee_email {
            let col = plan
                .people_column
                .clone()
                .ok_or_else(|| invalid(format!("monday board {} has no people column", plan.id)))?;
            let v = match assignee {
                None => Value::Null,
                Some(email) => {
                    let email = email.trim().to_lowercase();
                    let found = user_ids(&self.client, std::slice::from_ref(&email)).await?;
                    let id = found.get(&email).ok_or_else(|| {
                        invalid(format!("no monday user has the email {email:?}"))
                    })?;
                    let numeric: u64 = id.parse().map_err(|_| {
                        Error::decode(None, format!("monday user id {id:?} is not numeric"))
                    })?;
                    emails.insert(id.clone(), email.clone());
                    json!({"personsAndTeams": [{"id": numeric, "kind": "person"}]})
                }
            };
            values.insert(col, v);
        }
        if let Some(due) = &c.due_date {
            let col = plan
                .date_column
                .clone()
                .ok_or_else(|| invalid(format!("monday board {} has no date column", plan.id)))?;
            let v = match due {
                None => Value::Null,
                Some(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
            };
            values.insert(col, v);
        }
        Ok((values, emails))
    }

    /// The item as a task, with the emails of its people.
    async fn task_of(
        &self,
        ws: Uuid,
        plan: &BoardPlan,
        raw: Value,
        mut emails: HashMap<String, String>,
    ) -> Result<Task> {
        let item = transform::decode(raw)?;
        let people: Vec<String> = item
            .column_values
            .iter()
            .filter(|cv| Some(&cv.id) == plan.people_column.as_ref())
            .flat_map(|cv| transform::people_ids(cv.decoded().as_ref()))
            .filter(|id| !emails.contains_key(id))
            .collect();
        if !people.is_empty() {
            let query =
                format!("query ($ids: [ID!]) {{ {COMPLEXITY} users(ids: $ids) {{ id email }} }}");
            let data: super::types::UsersData = self
                .client
                .graphql(&query, json!({"ids": people}), false)
                .await?;
            for u in data.users.unwrap_or_default() {
                if let Ok(u) = serde_json::from_value::<super::types::UserDef>(u)
                    && let Some(e) = u.email
                {
                    emails.insert(u.id, e);
                }
            }
        }
        transform::task(ws, plan, &emails, item)
    }

    /// The board an item is on.
    async fn board_of(&self, item: &str) -> Result<String> {
        if item.is_empty() || !item.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid(format!("{item:?} is not a monday item id")));
        }
        let query = format!(
            "query ($ids: [ID!]) {{ {COMPLEXITY} items(ids: $ids) {{ id state board {{ id }} }} }}"
        );
        let data: ItemsData = self
            .client
            .graphql(&query, json!({"ids": [item]}), false)
            .await?;
        let found = data.items.unwrap_or_default().into_iter().next();
        let state = found
            .as_ref()
            .and_then(|v| v.get("state"))
            .and_then(Value::as_str);
        if state == Some("deleted") {
            return Err(invalid(format!("monday item {item} is deleted")));
        }
        found
            .as_ref()
            .and_then(|v| v.get("board"))
            .and_then(|b| super::types::id_string(b.get("id")))
            .ok_or_else(|| invalid(format!("monday item {item} not found")))
    }

    async fn change(
        &self,
        ws: Uuid,
        item: &str,
        title: Option<String>,
        changes: Changes,
    ) -> Result<Task> {
        let _one_at_a_time = self.write_lock.lock().await;
        let board = self.board_of(item).await?;
        let plan = self.plan(&board).await?;
        let (mut values, emails) = self.column_values(&plan, &changes).await?;
        if let Some(t) = title {
            if t.trim().is_empty() {
                return Err(invalid("a monday item name must not be empty".into()));
            }
            // Passed verbatim.
            values.insert("name".into(), Value::String(t));
        }
        let raw = if values.is_empty() {
            items_by_id(&self.client, &[item.to_owned()])
                .await?
                .into_iter()
                .next()
        } else {
            let query = format!(
                "mutation ($board: ID!, $item: ID!, $values: JSON!) {{ {COMPLEXITY} change_multiple_column_values(board_id: $board, item_id: $item, column_values: $values) {{ ...ItemFields }} }}\n{ITEM_FIELDS}"
            );
            let data: Value = self
                .client
                .graphql(&query, json!({"board": board, "item": item, "values": Value::Object(values).to_string()}), true)
                .await?;
            data.get("change_multiple_column_values").cloned()
        };
        let raw = raw
            .filter(|v| !v.is_null())
            .ok_or_else(|| invalid(format!("monday item {item} not found")))?;
        self.task_of(ws, &plan, raw, emails).await
    }
}

#[async_trait]
impl TaskAdapter for MondayConnector {
    async fn create_task(&self, workspace_id: Uuid, task: NewTask) -> Result<Task> {
        let _one_at_a_time = self.write_lock.lock().await;
        if task.title.trim().is_empty() {
            return Err(invalid("a monday item name must not be empty".into()));
        }
        let plan = self.plan(task.board_id.trim()).await?;
        if let Some(g) = &task.group_id
            && !plan.groups.contains_key(g)
        {
            return Err(invalid(format!(
                "monday board {} has no group {g:?}",
                plan.id
            )));
        }
        let changes = Changes {
            status: task.status.clone().map(Some),
            assignee_email: task.assignee_email.clone().map(Some),
            due_date: task.due_date.map(Some),
        };
        let (values, emails) = self.column_values(&plan, &changes).await?;
        let query = format!(
            "mutation ($board: ID!, $group: String, $name: String!, $values: JSON) {{ {COMPLEXITY} create_item(board_id: $board, group_id: $group, item_name: $name, column_values: $values) {{ ...ItemFields }} }}\n{ITEM_FIELDS}"
        );
        let data: Value = self
            .client
            .graphql(
                &query,
                json!({"board": plan.id, "group": task.group_id, "name": task.title,
                       "values": (!values.is_empty()).then(|| Value::Object(values).to_string())}),
                true,
            )
            .await?;
        let raw = data
            .get("create_item")
            .cloned()
            .filter(|v| !v.is_null())
            .ok_or_else(|| Error::decode(None, "monday create_item answered without the item"))?;
        self.task_of(workspace_id, &plan, raw, emails).await
    }

    async fn update_task(
        &self,
        workspace_id: Uuid,
        source_id: &str,
        update: TaskUpdate,
    ) -> Result<Task> {
        let changes = Changes {
            status: update.status,
            assignee_email: update.assignee_email,
            due_date: update.due_date,
        };
        self.change(workspace_id, source_id.trim(), update.title, changes)
            .await
    }

    async fn complete_task(&self, workspace_id: Uuid, source_id: &str) -> Result<Task> {
        let board = self.board_of(source_id.trim()).await?;
        let plan = self.plan(&board).await?;
        let done = plan
            .first_done_label()
            .ok_or_else(|| invalid(format!("monday board {} has no done status label", plan.id)))?
            .to_owned();
        let changes = Changes {
            status: Some(Some(done)),
            ..Default::default()
        };
        self.change(workspace_id, source_id.trim(), None, changes)
            .await
    }
}
