//! Job queue, worker and scheduler on both backends. SQLite runs in memory; PostgreSQL at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) in a fresh schema per
//! test, and fails (never skips) when the server is unreachable.
#![cfg(any(feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod harness;
mod multiprocess;
mod suite;

macro_rules! queue_suite {
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

queue_suite!(
    four_workers_run_every_job_exactly_once,
    unique_key_allows_one_active_job,
    aborted_worker_job_is_rescued_after_its_lease,
    rescue_fails_jobs_out_of_attempts,
    snooze_keeps_the_attempt_count,
    failures_back_off_then_fail_for_good,
    cancel_pending_and_running_jobs,
    timeouts_and_panics_fail_the_attempt,
    progress_reaches_the_job,
    jobs_are_scoped_to_their_workspace_and_paginated,
    prune_removes_old_finished_jobs,
    two_schedulers_enqueue_each_tick_once,
    manual_trigger_conflicts_and_stale_syncs,
    only_one_scheduler_leads,
    trigger_validates_the_connector_and_never_wedges,
    every_end_of_a_sync_job_ends_its_sync_run,
    a_stale_pending_run_does_not_block_the_workspace,
    an_enormous_retry_after_is_capped,
);

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_a_listening_worker() {
    harness::notify_wakes_listener().await;
}
