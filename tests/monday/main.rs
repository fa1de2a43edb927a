//! The monday.com connector against its simulator: into an in-memory sink (paging, cursor
//! expiry, complexity budget, quotas, writes), end to end through the orchestrator into
//! SQLite and Postgres, and the `sync` and `tasks` examples as subprocesses.
#![cfg(all(feature = "simulator", feature = "monday"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod connector;
mod sim;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod e2e;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[path = "../support/store_env.rs"]
mod store_env;

#[cfg(feature = "sqlite")]
mod examples;
#[cfg(feature = "sqlite")]
#[path = "../support/example.rs"]
mod support_example;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! e2e_suite {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_sqlite(crate::e2e::$name).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::e2e::run_postgres(crate::e2e::$name).await;
                }
            )*
        }
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
e2e_suite!(
    a_workspace_of_25_boards_equals_the_truth,
    incremental_writes_exactly_the_100_changes,
    faults_lose_nothing,
    expiring_cursors_and_a_spent_budget_lose_nothing,
);

pub mod truth {
    //! What the connector must make of the simulator's items.

    use pandora_sync::model::Task;
    use pandora_sync::simulator::{MondaySim, MondaySimItem};
    use serde_json::json;

    /// A workspace of 25 boards, the first with 1,250 items (three `items_page` pages).
    pub fn workspace() -> pandora_sync::simulator::MondaySimConfig {
        pandora_sync::simulator::MondaySimConfig {
            boards: 25,
            first_board_items: 1_250,
            items_per_board: 12,
            users: 9,
            ..Default::default()
        }
    }

    /// The connector's own budget out of the way (the preset allows 50 requests a minute).
    pub fn fast() -> serde_json::Value {
        json!({"rate_limit": {"max_requests": 100_000, "window_ms": 1_000}})
    }

    /// Requests of a full sync: the boards-and-users listing, the first pages of ten boards
    /// per request, then every further page of each board.
    pub fn full_sync_requests(sim: &MondaySim) -> u64 {
        let mut per_board = std::collections::BTreeMap::<String, u64>::new();
        for b in sim.boards() {
            per_board.insert(b.id, 0);
        }
        for i in sim
            .items()
            .into_iter()
            .filter(|i| i.state == pandora_sync::simulator::MondayItemState::Active)
        {
            *per_board.entry(i.board_id).or_default() += 1;
        }
        let boards = per_board.len() as u64;
        1 + boards.div_ceil(10)
            + per_board
                .values()
                .map(|n| n.div_ceil(500).max(1) - 1)
                .sum::<u64>()
    }

    /// Asserts a stored task is the simulator's item, field by field.
    pub fn assert_task(t: &Task, item: &MondaySimItem, sim: &MondaySim) {
        let id = &item.id;
        let board = sim.board(&item.board_id).unwrap();
        assert_eq!(t.meta.source_id, *id);
        assert_eq!(t.title.as_deref(), Some(item.name.as_str()), "{id} title");
        assert_eq!(t.board_id.as_deref(), Some(board.id.as_str()), "{id} board");
        assert_eq!(
            t.board_name.as_deref(),
            Some(board.name.as_str()),
            "{id} board name"
        );
        let group = board.groups.iter().find(|g| g.id == item.group_id).unwrap();
        assert_eq!(
            t.group_name.as_deref(),
            Some(group.title.as_str()),
            "{id} group"
        );
        assert_eq!(t.status, sim.status_label(item), "{id} status");
        let email = item.people.first().and_then(|p| sim.user_email(p));
        assert_eq!(t.assignee_email, email, "{id} assignee");
        assert_eq!(t.due_date, item.due, "{id} due");
        let done = sim.is_done(item);
        assert_eq!(
            t.completed_at,
            done.then_some(item.status_changed_at).flatten(),
            "{id} completed_at"
        );
        assert_eq!(
            t.meta.source_updated_at,
            Some(item.updated_at),
            "{id} updated_at"
        );
        assert_eq!(
            t.meta.source_created_at,
            Some(item.created_at),
            "{id} created_at"
        );
        assert_eq!(
            t.url.as_deref(),
            Some(
                format!(
                    "https://pandora-demo.monday.com/boards/{}/pulses/{id}",
                    board.id
                )
                .as_str()
            )
        );
        // Unmapped columns by id: the notes, the deal size, the priority; several people.
        let col = |title: &str| {
            board
                .columns
                .iter()
                .find(|c| c.title == title)
                .map(|c| c.id.clone())
        };
        let cf = &t.meta.custom_fields;
        if let Some(notes) = col("Notes") {
            assert_eq!(
                cf.get(&notes),
                item.notes.as_ref().map(|n| json!(n)).as_ref(),
                "{id} notes"
            );
        }
        if let Some(amount) = col("Deal size") {
            assert_eq!(
                cf.get(&amount),
                item.amount.map(|n| json!(n.to_string())).as_ref(),
                "{id} amount"
            );
        }
        if let Some(p) = col("Priority") {
            let label = item
                .priority_index
                .map(|i| json!(["High", "Medium", "Low"][i as usize]));
            assert_eq!(cf.get(&p), label.as_ref(), "{id} priority");
        }
        let emails: Vec<String> = item
            .people
            .iter()
            .filter_map(|p| sim.user_email(p))
            .collect();
        assert_eq!(
            cf.get("assignee_emails"),
            (emails.len() > 1).then(|| json!(emails)).as_ref(),
            "{id} people"
        );
        for key in ["status", "person", "date4"] {
            assert!(!cf.contains_key(key), "{id}: {key} is a typed column");
        }
    }
}
