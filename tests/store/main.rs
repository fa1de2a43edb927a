//! Storage conformance suite: one set of test functions (in `suite.rs`), run against every
//! backend compiled in. SQLite runs in memory; PostgreSQL runs at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a fresh schema. When PostgreSQL
//! is unreachable the PostgreSQL tests fail: they never skip.
#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

mod fixtures;
mod harness;
mod suite;

/// Generates one `#[tokio::test]` per suite function and backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::run_sqlite(crate::suite::$name).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::run_postgres(crate::suite::$name).await;
                }
            )*
        }
    };
}

conformance!(
    migrate_is_idempotent_and_concurrent_safe,
    key_ranges_tell_new_batches_from_mixed_ones,
    live_counts_cover_one_stream,
    same_batch_twice_gives_same_rows,
    every_kind_and_column_round_trips,
    out_of_order_updates_do_not_regress,
    duplicates_within_a_batch_keep_the_newest,
    deletions_archive_and_respect_versions,
    failure_mid_batch_changes_nothing,
    missing_connection_rolls_back_everything,
    workspaces_are_isolated,
    nul_emoji_huge_strings_and_extreme_numbers,
    concurrent_writers_end_with_the_newest,
    checkpoint_merges_into_sync_cursor,
    deal_contact_links,
    deal_contact_sets_remove_missing_links,
    list_records_pages_and_filters,
    connection_lifecycle,
    credentials_are_sealed_and_bound_to_their_row,
    credential_key_rotation,
    sync_log_lifecycle,
    stale_syncs_are_failed,
    lock_excludes_a_second_holder,
    lock_is_released_on_drop,
    lock_is_released_when_the_holder_dies,
    large_batches_round_trip_and_do_not_regress,
);
