//! The orchestrator with in-test fake connectors, on SQLite and Postgres.
#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod fake;
mod harness;
#[path = "../support/store_env.rs"]
mod store_env;
mod suite;

macro_rules! orchestrator_suite {
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

orchestrator_suite!(
    initial_then_incremental_and_forced_mode,
    failure_after_three_batches_resumes_from_the_fourth,
    records_modified_during_a_sync_arrive_next_time,
    connectors_are_isolated_and_concurrent,
    concurrent_sync_of_one_workspace_conflicts,
    per_record_failures_and_the_success_threshold,
    job_handler_runs_triggered_syncs_and_snoozes_rate_limits,
    a_failed_sync_fails_its_job_attempts_then_the_job,
    a_quota_stop_ends_cleanly_and_snoozes_to_the_reset,
    link_rows_do_not_count_toward_the_success_threshold,
    contact_sets_remove_links_after_the_pages_chunks,
    flush_makes_every_written_page_durable,
    reconciliation_flags_a_gap_for_a_repairing_pass,
    a_dropped_sync_fails_its_running_row,
);

/// Tests that drive the store's clock.
mod clocked {
    #[cfg(feature = "sqlite")]
    mod sqlite {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_daily_quota_does_not_loop_and_resumes_after_the_reset() {
            crate::harness::run_sqlite_clocked(
                crate::suite::a_daily_quota_does_not_loop_and_resumes_after_the_reset,
            )
            .await;
        }
    }
    #[cfg(feature = "postgres")]
    mod postgres {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_daily_quota_does_not_loop_and_resumes_after_the_reset() {
            crate::harness::run_postgres_clocked(
                crate::suite::a_daily_quota_does_not_loop_and_resumes_after_the_reset,
            )
            .await;
        }
    }
}
