//! Built-in post-sync hooks (entity linker, internal filter, computed fields) and the
//! orchestrator's hook pipeline, on every backend compiled in. SQLite runs in memory;
//! PostgreSQL runs at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! each test in a fresh schema. When PostgreSQL is unreachable the PostgreSQL tests fail:
//! they never skip.
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
macro_rules! hooks_suite {
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

hooks_suite!(
    linker_links_by_contact_then_domain_then_deal,
    internal_filter_marks_conversations_and_participants,
    internal_domains_default_to_configured_and_flagged_ones,
    computed_fields_match_apply_computed_fields,
    hooks_are_idempotent_and_leave_other_workspaces_alone,
    builtin_hooks_skip_when_nothing_relevant_synced,
    failing_host_hook_is_recorded_and_the_sync_completes,
    linker_links_a_full_size_workspace,
);
