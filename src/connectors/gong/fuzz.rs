//! Property tests: arbitrary JSON (wrong types, huge numbers, missing fields, deep nesting,
//! absurd dates, invalid escapes) through every Gong page parser and transform, and
//! arbitrary stored checkpoint state through the checkpoint readers. Nothing panics;
//! failures are values.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::sync::{QUOTA_STREAM, migrate};
use super::transform::{call_id, conversation, decode};
use super::types::{CallsPage, GongUser, UsersPage};
use crate::connector::{Checkpoint, StreamCheckpoint};
use crate::connectors::quota::DailyQuota;
use crate::http::HttpStats;

/// Dates a provider (or a corrupted row) might send: valid, at the edges of every range,
/// and absurd.
fn arb_date() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("2024-05-01T09:30:15Z")),
        Just(json!("2018-02-18T02:30:00-07:00")),
        Just(json!("0001-01-01T00:00:00Z")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("+262143-12-31T23:59:59Z")),
        Just(json!("-262144-01-01T00:00:00Z")),
        Just(json!("99999-01-01T00:00:00Z")),
        Just(json!("2024-02-30T00:00:00Z")),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        "[0-9 .:TZ+\\-]{0,32}".prop_map(Value::String),
        any::<i64>().prop_map(|i| json!(i)),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        arb_date(),
    ]
}

/// Any JSON, nested up to 8 levels.
fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("metaData".to_owned()),
                    Just("parties".to_owned()),
                    Just("started".to_owned()),
                    "[a-zA-Z\u{0}]{0,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value that is right in shape more often than not, else anything.
fn maybe<S: Strategy<Value = Value> + 'static>(right: S) -> BoxedStrategy<Value> {
    prop_oneof![3 => right, 1 => arb_json()].boxed()
}

fn arb_party() -> impl Strategy<Value = Value> {
    (
        maybe(".{0,20}@x\\.com".prop_map(Value::String)),
        maybe(".{0,10}".prop_map(Value::String)),
        maybe("[0-9]{1,20}".prop_map(Value::String)),
        maybe(prop_oneof![
            Just(json!("Internal")),
            Just(json!("External"))
        ]),
        any::<u8>(),
    )
        .prop_map(|(email, name, user_id, affiliation, drop)| {
            let mut p = serde_json::Map::new();
            for (i, (k, v)) in [
                ("emailAddress", email),
                ("name", name),
                ("userId", user_id),
                ("affiliation", affiliation),
            ]
            .into_iter()
            .enumerate()
            {
                if drop & (1 << i) == 0 {
                    p.insert(k.into(), v);
                }
            }
            Value::Object(p)
        })
}

/// A call: the real keys with values of the right or a wrong type, some missing.
fn arb_call() -> impl Strategy<Value = Value> {
    (
        maybe("[0-9]{1,25}".prop_map(Value::String)),
        maybe(".{0,30}".prop_map(Value::String)),
        arb_date(),
        maybe(any::<i64>().prop_map(|d| json!(d))),
        maybe("[0-9]{1,20}".prop_map(Value::String)),
        maybe(prop::collection::vec(arb_party(), 0..6).prop_map(Value::Array)),
        arb_json(),
        any::<u8>(),
    )
        .prop_map(|(id, title, started, duration, host, parties, extra, drop)| {
            let mut m = serde_json::Map::new();
            for (i, (k, v)) in [
                ("id", id),
                ("title", title),
                ("started", started),
                ("duration", duration),
                ("primaryUserId", host),
                ("custom", extra),
            ]
            .into_iter()
            .enumerate()
            {
                if drop & (1 << i) == 0 {
                    m.insert(k.into(), v);
                }
            }
            let mut call = json!({"metaData": Value::Object(m)});
            if drop & 0x40 == 0 {
                call["parties"] = parties;
            }
            if drop & 0x80 != 0 {
                call = json!({"metaData": call["metaData"].clone(), "parties": {"deep": [[[[[]]]]]}});
            }
            call
        })
}

fn run_transform(raw: Value) -> Result<(), TestCaseError> {
    let users = HashMap::from([("1".to_owned(), "a@x.com".to_owned())]);
    let id = call_id(&raw);
    match decode(raw).and_then(|c| conversation(Uuid::nil(), &c, &users)) {
        Ok(c) => {
            prop_assert_eq!(Some(c.meta.source_id.clone()), id);
            if let Some(s) = c.started_at {
                prop_assert!((1..=9999).contains(&chrono::Datelike::year(&s)));
            }
            if let Some(d) = c.duration_seconds {
                prop_assert!(d >= 0);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    Ok(())
}

/// A stored stream with arbitrary extra keys (a corrupted or foreign row).
fn arb_stream() -> impl Strategy<Value = StreamCheckpoint> {
    (
        prop::option::of(".{0,8}"),
        prop::collection::btree_map(
            prop_oneof![
                Just("window_from".to_owned()),
                Just("window_to".to_owned()),
                Just("day".to_owned()),
                Just("used".to_owned()),
                Just("covered_from".to_owned()),
            ],
            arb_json(),
            0..5,
        ),
    )
        .prop_map(|(cursor, extra)| StreamCheckpoint {
            cursor,
            extra: extra.into_iter().collect(),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn calls_of_any_shape_transform_or_fail_as_values(raw in arb_call()) {
        run_transform(raw)?;
    }

    #[test]
    fn any_json_as_a_call_transforms_or_fails_as_a_value(raw in arb_json()) {
        run_transform(raw)?;
    }

    #[test]
    fn pages_of_any_shape_parse_or_fail_as_values(
        calls in prop::collection::vec(prop_oneof![arb_call(), arb_json()], 0..4),
        users in prop::collection::vec(arb_json(), 0..4),
        cursor in arb_json(),
        total in arb_json(),
    ) {
        let body = json!({"records": {"cursor": cursor, "totalRecords": total}, "calls": calls, "users": users});
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(page) = serde_json::from_slice::<CallsPage>(&bytes) {
            let _ = (page.next_cursor(), page.total());
            for raw in page.calls {
                run_transform(raw)?;
            }
        }
        if let Ok(page) = serde_json::from_slice::<UsersPage>(&bytes) {
            let _ = page.next_cursor();
            for u in &page.users {
                if let Some(u) = GongUser::from_json(u) {
                    prop_assert!(!u.id.is_empty());
                    let _ = u.has_email("a@x.com");
                }
            }
        }
        // The whole body as any page: shapes Gong never sends.
        let _ = serde_json::from_value::<CallsPage>(json!(calls));
        let _ = serde_json::from_value::<UsersPage>(json!({"users": total}));
    }

    #[test]
    fn raw_bodies_with_bad_escapes_fail_as_values(
        prefix in "[\\[{\"a-z0-9:,]{0,12}",
        escape in prop_oneof![
            Just("\\ud800".to_owned()), Just("\\udc00\\ud800".to_owned()), Just("\\u00".to_owned()),
            Just("\\x41".to_owned()), Just("\u{0}".to_owned()), Just("\\uFFFF".to_owned()),
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut body = format!(r#"{{"records":{{"cursor":"{prefix}{escape}"}},"calls":[{{"metaData":{{"id":"1","title":"{escape}"}}}}]}}"#).into_bytes();
        body.extend(bytes);
        if let Ok(page) = serde_json::from_slice::<CallsPage>(&body) {
            for raw in page.calls {
                run_transform(raw)?;
            }
        }
        let _ = serde_json::from_slice::<UsersPage>(&body);
    }

    #[test]
    fn stored_state_of_any_shape_is_read_without_panics(
        stream in arb_stream(),
        limit in any::<u32>(),
        started in -8_000_000_000_000i64..8_000_000_000_000,
    ) {
        let mut s = stream.clone();
        migrate(&mut s);
        prop_assert!(!s.extra.contains_key("window_to"));
        let mut cp = Checkpoint::default();
        cp.streams.insert(QUOTA_STREAM.to_owned(), stream);
        let started = chrono::DateTime::from_timestamp(started, 0)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let mut q = DailyQuota::load(&cp, QUOTA_STREAM, "gong", limit, started, &HttpStats::new());
        let _ = q.check();
        q.store(&mut cp);
    }
}
