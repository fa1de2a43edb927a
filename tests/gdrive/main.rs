//! The Google Drive simulator's behaviour, and the Google Drive connector end to end
//! through the orchestrator into SQLite and Postgres.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod sim;

#[cfg(feature = "google-drive")]
mod connector;

#[cfg(all(feature = "google-drive", feature = "sqlite"))]
mod example;
#[cfg(all(feature = "google-drive", feature = "sqlite"))]
#[path = "../support/example.rs"]
mod support_example;

mod e2e;
#[cfg(all(
    feature = "google-drive",
    any(feature = "sqlite", feature = "postgres")
))]
#[path = "../support/store_env.rs"]
mod store_env;

#[cfg(all(
    feature = "google-drive",
    any(feature = "sqlite", feature = "postgres")
))]
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

#[cfg(all(
    feature = "google-drive",
    any(feature = "sqlite", feature = "postgres")
))]
e2e_suite!(
    initial_sync_equals_truth_and_no_change_incremental_is_cheap,
    changes_during_the_scan_arrive_in_the_next_incremental,
    incremental_reads_the_changes_feed_and_fetches_only_changed_content,
    incremental_after_edit_rename_move_fetches_one_content,
    expiring_tokens_cost_one_refresh_each,
    rate_limit_storms_lose_nothing,
    too_large_documents_complete_with_errors,
    revoked_refresh_token_fails_cleanly,
    folders_config_keeps_to_the_subtrees,
);
