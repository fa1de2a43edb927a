//! The Fireflies simulator's behaviour, and the Fireflies connector end to end through the
//! orchestrator into SQLite and Postgres.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod sim;

#[cfg(all(feature = "fireflies", feature = "sqlite"))]
mod example;
#[cfg(all(feature = "fireflies", feature = "sqlite"))]
#[path = "../support/example.rs"]
mod support_example;

#[cfg(all(feature = "fireflies", any(feature = "sqlite", feature = "postgres")))]
mod e2e;
#[cfg(all(feature = "fireflies", any(feature = "sqlite", feature = "postgres")))]
#[path = "../support/store_env.rs"]
mod store_env;

#[cfg(all(feature = "fireflies", any(feature = "sqlite", feature = "postgres")))]
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

#[cfg(all(feature = "fireflies", any(feature = "sqlite", feature = "postgres")))]
e2e_suite!(
    initial_sync_equals_truth_and_no_change_incremental_is_cheap,
    incremental_writes_exactly_the_changed_transcripts,
    drift_between_pages_and_one_instant_lose_nothing,
    faults_lose_nothing,
    daily_quota_stops_and_the_next_day_resumes,
    bad_key_fails_cleanly_in_both_forms,
    sentences_when_configured,
);

#[cfg(feature = "fireflies")]
pub mod truth {
    //! What the connector must make of the simulator's transcripts.

    use std::collections::BTreeSet;

    use pandora_sync::model::{Conversation, Participant};
    use pandora_sync::simulator::FirefliesSimTranscript;

    /// Attendees with an email or a name, then the participant emails not among them;
    /// internal when the email's domain is `internal` (case-insensitive).
    pub fn participants(t: &FirefliesSimTranscript, internal: &str) -> Vec<Participant> {
        let internal_email = |e: &str| {
            e.rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(internal))
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let attendees = t
            .attendees
            .iter()
            .map(|a| (a.email.clone(), a.name.clone().or(a.display_name.clone())));
        let others = t.participants.iter().map(|e| (Some(e.clone()), None));
        for (email, name) in attendees.chain(others) {
            if email.is_none() && name.is_none() {
                continue;
            }
            if let Some(e) = &email
                && !seen.insert(e.to_lowercase())
            {
                continue;
            }
            out.push(Participant {
                is_internal: email.as_deref().is_some_and(internal_email),
                email,
                name,
            });
        }
        out
    }

    /// Asserts a stored conversation is the simulator's transcript, field by field.
    pub fn assert_conversation(c: &Conversation, t: &FirefliesSimTranscript, internal: &str) {
        let id = &t.id;
        assert_eq!(c.meta.source_id, *id);
        assert_eq!(c.title.as_deref(), Some(t.title.as_str()), "{id} title");
        assert_eq!(c.started_at, Some(t.date), "{id} started_at");
        let seconds = (t.duration_minutes * 60.0).round();
        let stored = c
            .duration_seconds
            .map(|d| f64::from(i32::try_from(d).unwrap()));
        assert_eq!(stored, Some(seconds), "{id} duration");
        assert_eq!(
            c.url.as_deref(),
            Some(t.transcript_url.as_str()),
            "{id} url"
        );
        assert_eq!(
            c.host_email.as_deref(),
            Some(t.organizer_email.as_str()),
            "{id} host"
        );
        assert_eq!(
            c.participants,
            participants(t, internal),
            "{id} participants"
        );
        assert_eq!(
            c.summary.as_deref(),
            t.summary.as_ref().map(|s| s.overview.as_str()),
            "{id} summary"
        );
        let cf = &c.meta.custom_fields;
        assert_eq!(
            cf.get("keywords"),
            t.summary
                .as_ref()
                .map(|s| serde_json::json!(s.keywords))
                .as_ref(),
            "{id} keywords"
        );
        assert_eq!(
            cf.get("action_items"),
            t.summary
                .as_ref()
                .map(|s| serde_json::json!(s.action_items))
                .as_ref(),
            "{id} action items"
        );
        assert_eq!(
            c.transcript, None,
            "{id}: sentences are not read by default"
        );
        assert_eq!(
            c.is_internal, None,
            "{id}: the internal-filter hook's column"
        );
        assert_eq!(c.meta.archived_at, None, "{id} is live");
    }
}
