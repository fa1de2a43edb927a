//! The Gong simulator's behaviour, the Gong connector against it into an in-memory sink,
//! and end to end through the orchestrator into SQLite and Postgres.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod sim;

#[cfg(feature = "gong")]
mod connector;

#[cfg(feature = "gong")]
mod live;

#[cfg(all(feature = "gong", any(feature = "sqlite", feature = "postgres")))]
mod e2e;
#[cfg(all(feature = "gong", any(feature = "sqlite", feature = "postgres")))]
#[path = "../support/store_env.rs"]
mod store_env;

#[cfg(all(feature = "gong", any(feature = "sqlite", feature = "postgres")))]
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

#[cfg(all(feature = "gong", any(feature = "sqlite", feature = "postgres")))]
e2e_suite!(
    initial_sync_equals_truth_for_tracked_users,
    incremental_writes_exactly_the_added_and_changed_calls,
    empty_range_completes_cleanly,
    rate_limit_storms_lose_nothing,
    the_daily_count_survives_between_runs,
    is_internal_has_one_owner_per_column,
);

#[cfg(feature = "gong")]
pub mod truth {
    //! What the connector must make of the simulator's calls.

    use pandora_sync::model::{Conversation, Participant};
    use pandora_sync::simulator::{GongSim, GongSimCall};

    /// The participants the connector derives from a call's parties: those with an email
    /// or a name, internal when their affiliation is `Internal`.
    pub fn participants(call: &GongSimCall) -> Vec<Participant> {
        call.parties
            .iter()
            .filter(|p| p.email.is_some() || p.name.is_some())
            .map(|p| Participant {
                email: p.email.clone(),
                name: p.name.clone(),
                is_internal: p.affiliation == pandora_sync::simulator::GongAffiliation::Internal,
            })
            .collect()
    }

    /// Asserts a stored conversation is the simulator's call.
    pub fn assert_conversation(c: &Conversation, call: &GongSimCall, sim: &GongSim) {
        let id = &call.id;
        assert_eq!(c.meta.source_id, *id);
        assert_eq!(c.title.as_deref(), Some(call.title.as_str()), "{id} title");
        assert_eq!(c.started_at, Some(call.started), "{id} started_at");
        assert_eq!(
            c.duration_seconds,
            Some(i64::try_from(call.duration).unwrap()),
            "{id} duration"
        );
        assert_eq!(c.url.as_deref(), Some(call.url.as_str()), "{id} url");
        let host = sim.user(&call.primary_user_id).unwrap();
        assert_eq!(
            c.host_email.as_deref(),
            Some(host.email.as_str()),
            "{id} host"
        );
        assert_eq!(c.participants, participants(call), "{id} participants");
        assert_eq!(
            c.is_internal, None,
            "{id}: left to the internal filter hook"
        );
        assert_eq!(
            c.meta.custom_fields.get("primaryUserId"),
            Some(&serde_json::json!(call.primary_user_id))
        );
        assert_eq!(
            c.meta.custom_fields.get("system"),
            Some(&serde_json::json!(call.system))
        );
    }
}
