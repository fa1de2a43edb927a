//! Property tests: arbitrary JSON (wrong types, huge numbers, missing fields, deep nesting,
//! absurd dates) through the Fireflies decoders, transforms and the keyset's page step, and
//! arbitrary stored cursors through the cursor reader. Nothing panics; failures are values.

use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::sync::{Cursor, advance};
use super::transform::{InternalDomains, conversation, decode, sentences_of, transcript_id};
use super::types::{GraphqlResponse, date_ms};

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        Just(json!(1.7e12)),
        Just(json!(-1e300)),
        Just(json!("2024-05-01T09:30:15.000Z")),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("date".to_owned()),
                    Just("duration".to_owned()),
                    Just("title".to_owned()),
                    Just("participants".to_owned()),
                    Just("meeting_attendees".to_owned()),
                    Just("summary".to_owned()),
                    Just("overview".to_owned()),
                    Just("email".to_owned()),
                    Just("sentences".to_owned()),
                    ".{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A transcript-shaped object whose every field may be anything.
fn arb_transcript() -> impl Strategy<Value = Value> {
    (
        arb_leaf(),
        arb_leaf(),
        arb_json(),
        arb_json(),
        arb_json(),
        arb_json(),
        arb_json(),
    )
        .prop_map(|(id, date, duration, title, participants, attendees, summary)| {
            json!({"id": id, "date": date, "duration": duration, "title": title,
                   "participants": participants, "meeting_attendees": attendees, "summary": summary})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn transforms_never_panic(raw in prop_oneof![arb_transcript(), arb_json()]) {
        let _ = transcript_id(&raw);
        let _ = date_ms(&raw);
        let internal = InternalDomains::configured(["example.com"]);
        if let Ok(t) = decode(raw.clone())
            && let Ok(c) = conversation(Uuid::nil(), &t, &internal, None)
        {
            prop_assert!(c.duration_seconds.is_none_or(|d| d >= 0));
            prop_assert!(c.started_at.is_some());
        }
        let _ = sentences_of(&raw);
        let _ = serde_json::from_value::<GraphqlResponse>(raw);
    }

    #[test]
    fn stored_cursors_and_page_steps_never_panic(
        raw in ".{0,64}",
        stored in arb_json(),
        rows in prop::collection::vec(("[a-c]{1,2}", any::<i64>(), any::<u64>()), 0..60),
    ) {
        let _ = Cursor::parse(&raw);
        let parsed = Cursor::parse(&stored.to_string());
        let c = Cursor { b: rows.first().map_or(0, |r| r.1), ..Cursor::default() };
        for cur in [None, Some(&c), parsed.as_ref()] {
            if let Ok(next) = advance(cur, &rows) {
                // The boundary never moves up: the keyset only goes back in time.
                prop_assert!(cur.is_none_or(|c| next.b <= c.b));
            }
        }
    }
}
