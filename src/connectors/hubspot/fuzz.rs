//! Property tests: arbitrary JSON (wrong types, huge numbers, missing fields, deep nesting,
//! odd unicode) and arbitrary bytes through every HubSpot transform, page parser and error
//! classifier. Nothing panics; bad input comes back as error values.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::client::{account_offset, daily_reset};
use super::transform::{self, COMPANY_PROPERTIES, CONTACT_PROPERTIES, DEAL_PROPERTIES};
use super::types::{
    AssocBatchResponse, HsObject, ListPage, Page, PageHead, Results, next_list_cursor,
};
use crate::Error;
use crate::http::{Classify, HubSpotClassifier, Verdict};

/// Strings that break naive code: arbitrary unicode, huge digit runs, date-ish text,
/// control characters, bidi overrides, byte-order marks, number words.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[0-9]{1,40}",
        "-?[0-9]{0,6}\\.?[0-9]{0,6}([eE][+-]?[0-9]{1,5})?",
        "[+-]?[0-9]{1,7}-[0-9]{1,3}-[0-9]{1,3}(T[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
        Just("\u{0}".to_owned()),
        Just("\u{202e}gnirts\u{202c}".to_owned()),
        Just("\u{feff}42".to_owned()),
        Just("\u{1F600}\u{200d}\u{1F4BB}".to_owned()),
        Just("e\u{301}\u{301}\u{301}".to_owned()),
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        Just("1e400".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(" ".to_owned()),
        Just("true".to_owned()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        odd_string().prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = COMPANY_PROPERTIES
        .iter()
        .chain(CONTACT_PROPERTIES)
        .chain(DEAL_PROPERTIES)
        .copied()
        .chain([
            "id",
            "properties",
            "createdAt",
            "updatedAt",
            "archived",
            "archivedAt",
            "associations",
            "results",
            "paging",
            "next",
            "after",
            "total",
            "from",
            "to",
            "toObjectId",
            "errors",
            "contacts",
            "companies",
            "hs_object_id",
        ])
        .collect();
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_owned),
        1 => odd_string(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Something shaped like a CRM object, with arbitrary values where the fields go, so that
/// many cases get past decoding into the transforms.
fn arb_object() -> impl Strategy<Value = Value> {
    let props = prop::collection::btree_map(
        key(),
        prop_oneof![3 => odd_string().prop_map(Value::from), 1 => arb_json()],
        0..16,
    );
    let assoc_block = prop_oneof![
        arb_json(),
        prop::collection::vec(
            prop_oneof![
                odd_string()
                    .prop_map(|id| serde_json::json!({"id": id, "type": "deal_to_contact"})),
                arb_json(),
            ],
            0..6
        )
        .prop_map(
            |results| serde_json::json!({"results": results, "paging": {"next": {"after": "2"}}})
        ),
    ];
    (
        prop_oneof![3 => odd_string().prop_map(Value::from), 1 => leaf()],
        props,
        prop::option::of(leaf()),
        prop::option::of(leaf()),
        prop::option::of(prop_oneof![any::<bool>().prop_map(Value::from), leaf()]),
        prop::option::of(leaf()),
        prop::collection::btree_map(
            prop_oneof![
                Just("contacts".to_owned()),
                Just("companies".to_owned()),
                odd_string()
            ],
            assoc_block,
            0..3,
        ),
    )
        .prop_map(
            |(id, props, created, updated, archived, archived_at, assoc)| {
                let mut o = Map::new();
                o.insert("id".into(), id);
                o.insert(
                    "properties".into(),
                    Value::Object(props.into_iter().collect()),
                );
                for (k, v) in [
                    ("createdAt", created),
                    ("updatedAt", updated),
                    ("archived", archived),
                    ("archivedAt", archived_at),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                }
                o.insert(
                    "associations".into(),
                    Value::Object(assoc.into_iter().collect()),
                );
                Value::Object(o)
            },
        )
}

fn ws() -> Uuid {
    Uuid::from_u128(11)
}

fn to_raw(v: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).unwrap()
}

/// Every transform of one raw result: errors are fine, panics are not.
fn transform_all(raw: &serde_json::value::RawValue) {
    let _ = super::types::raw_id(raw);
    if let Ok(obj) = transform::decode(raw) {
        check_transforms(&obj);
    }
}

fn check_transforms(obj: &HsObject) {
    for result in [
        transform::company(ws(), obj.clone()).map(|a| a.meta),
        transform::contact(ws(), obj.clone()).map(|c| c.meta),
        transform::deal(ws(), obj.clone()).map(|(d, links)| {
            for l in &links {
                assert!(!l.contact_source_id.is_empty());
                assert_eq!(l.deal_source_id, d.meta.source_id);
            }
            d.meta
        }),
    ] {
        match result {
            Ok(meta) => assert!(!meta.source_id.is_empty()),
            Err(e) => assert!(matches!(e, Error::Decode { .. }), "{e}"),
        }
    }
}

/// The list page readers on one body: the reader's cursor (read from the body's tail) is
/// the one a whole-body read finds, a page decodes to as many results as it holds, and a
/// body cut short is never a page.
fn list_readers(text: &str) {
    let full = serde_json::from_str::<PageHead>(text)
        .ok()
        .and_then(|h| h.next_after().map(str::to_owned));
    assert_eq!(next_list_cursor(text.as_bytes()), full, "{text}");
    let raw = |b: &[u8]| serde_json::from_slice::<Page>(b).map_err(Error::from);
    if let Ok(page) = ListPage::from_body(text.as_bytes(), raw) {
        let Ok(whole) = serde_json::from_str::<Page>(text) else {
            panic!("a list page that is no page: {text}");
        };
        assert_eq!(page.next_after.as_deref(), whole.next_after(), "{text}");
        let n = match &page.results {
            Results::Decoded(o) => o.len(),
            Results::Raw(r) => r.len(),
        };
        assert_eq!(n, whole.results.len(), "{text}");
    }
    for cut in [0, text.len() / 2, text.len().saturating_sub(1)] {
        let Some(short) = text.get(..cut).filter(|s| s.len() < text.len()) else {
            continue;
        };
        assert!(
            ListPage::from_body(short.as_bytes(), raw).is_err(),
            "{short}"
        );
        let _ = next_list_cursor(short.as_bytes());
    }
}

/// Every page parser on one value: list/search pages, cursors, totals, association batches.
fn parse_all(v: &Value) {
    if v.is_object() {
        list_readers(&v.to_string());
    }
    if let Ok(page) = serde_json::from_str::<Page>(&v.to_string()) {
        let _ = page.next_after();
        if let Err(e) = page.search_has_more() {
            assert!(matches!(e, Error::Decode { .. }), "{e}");
        }
        let _ = page.total();
        for r in &page.results {
            transform_all(r);
        }
    }
    if let Ok(batch) = serde_json::from_value::<AssocBatchResponse>(v.clone()) {
        for r in &batch.results {
            for t in &r.to {
                if let Some(id) = t.id() {
                    assert!(!id.is_empty());
                }
            }
        }
    }
    let _ = account_offset(v);
}

fn classify(status: u16, headers: &[(String, String)], body: Bytes) -> Verdict {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            b = b.header(k, v);
        }
    }
    let resp = b
        .body(body)
        .unwrap_or_else(|_| http::Response::new(Bytes::new()));
    HubSpotClassifier.classify(&Cow::Borrowed("hubspot"), &resp)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn transforms_never_panic_on_arbitrary_json(raw in arb_json()) {
        transform_all(&to_raw(&raw));
    }

    #[test]
    fn transforms_never_panic_on_object_shaped_json(raw in arb_object()) {
        transform_all(&to_raw(&raw));
    }

    #[test]
    fn page_parsers_never_panic(
        results in prop::collection::vec(prop_oneof![arb_object(), arb_json()], 0..5),
        after in prop::option::of(leaf()),
        total in prop::option::of(leaf()),
        junk in arb_json(),
    ) {
        let mut page = serde_json::json!({"results": results});
        if let Some(a) = after {
            page["paging"] = serde_json::json!({"next": {"after": a}});
        }
        if let Some(t) = total {
            page["total"] = t;
        }
        parse_all(&page);
        parse_all(&junk);
        let batch = serde_json::json!({"results": [{"from": {"id": "1"}, "to": [{"toObjectId": junk}]}], "errors": []});
        parse_all(&batch);
    }

    #[test]
    fn page_parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            parse_all(&v);
        }
        let _ = serde_json::from_slice::<Page>(&bytes);
        let _ = serde_json::from_slice::<AssocBatchResponse>(&bytes);
        let _ = next_list_cursor(&bytes);
        let _ = ListPage::from_body(&bytes, |b| serde_json::from_slice::<Page>(b).map_err(Error::from));
    }

    #[test]
    fn search_cursor_is_a_number_or_an_error(after in prop_oneof![odd_string(), any::<u64>().prop_map(|n| n.to_string())]) {
        let page: Page = serde_json::from_str(&serde_json::json!({"results": [], "paging": {"next": {"after": after.clone()}}}).to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match page.search_has_more() {
            Ok(more) => {
                prop_assert!(more);
                prop_assert!(after.trim().parse::<u64>().is_ok());
            }
            Err(e) => {
                let decode = matches!(e, Error::Decode { .. });
                prop_assert!(decode);
                prop_assert!(after.trim().parse::<u64>().is_err());
            }
        }
    }

    #[test]
    fn error_bodies_classify_without_panics(
        status in prop_oneof![Just(429u16), Just(400), Just(401), Just(403), Just(500), Just(503), 100u16..600],
        policy in prop_oneof![Just(Value::from("DAILY")), Just(Value::from("TEN_SECONDLY_ROLLING")), Just(Value::from("SECONDLY")), leaf()],
        junk in arb_json(),
        raw in prop::collection::vec(any::<u8>(), 0..64),
        retry_after in prop_oneof![odd_string(), any::<u64>().prop_map(|n| n.to_string())],
        interval in prop_oneof![odd_string(), any::<u64>().prop_map(|n| n.to_string())],
    ) {
        let headers = vec![
            ("retry-after".to_owned(), retry_after),
            ("x-hubspot-ratelimit-interval-milliseconds".to_owned(), interval),
        ];
        let body = serde_json::json!({"status": "error", "errorType": "RATE_LIMIT", "policyName": policy, "message": junk});
        let verdict = classify(status, &headers, Bytes::from(body.to_string()));
        if status == 429 && body["policyName"] == "DAILY" {
            let daily = matches!(verdict, Verdict::Fail(Error::QuotaExhausted { resets_at: Some(_), .. }));
            prop_assert!(daily);
        }
        let _ = classify(status, &headers, Bytes::from(raw));
        let _ = classify(status, &[], Bytes::from(junk.to_string()));
    }

    #[test]
    fn quota_reset_never_panics(secs in any::<i64>(), offset_ms in any::<i64>(), details in arb_json()) {
        let now = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let offset = i32::try_from(offset_ms % 100_000).ok().and_then(FixedOffset::east_opt);
        let at = daily_reset(now, offset);
        prop_assert!(at > now || now >= DateTime::<Utc>::MAX_UTC - chrono::Duration::days(2));
        let _ = account_offset(&details);
        let _ = daily_reset(now, account_offset(&serde_json::json!({"utcOffsetMilliseconds": offset_ms})));
    }
}

/// Nesting far deeper than any page: bytes stop at serde_json's recursion limit (an error),
/// and a deep value inside a record's properties is kept or rejected without overflowing.
#[test]
fn deep_nesting_is_an_error_or_harmless() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_str::<Page>(&deep).is_err());
    let deep_obj = format!(
        "{{\"results\":[{{\"id\":\"1\",\"properties\":{{\"name\":{}1{}}}}}]}}",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    // A record is raw text in the page: its nesting fails its own decode, not the page.
    if let Ok(page) = serde_json::from_str::<Page>(&deep_obj) {
        assert!(page.results.iter().all(|r| transform::decode(r).is_err()));
    }
    let mut v = Value::from("x");
    for _ in 0..100 {
        v = Value::Array(vec![v]);
    }
    let raw = serde_json::json!({"id": "1", "properties": {"name": v.clone(), "custom": v}});
    transform_all(&to_raw(&raw));
}

/// An odd but valid record still maps: unicode kept, huge numbers not wrapped.
#[test]
fn odd_values_map_to_values_not_garbage() {
    let raw = serde_json::json!({
        "id": " 42 ",
        "properties": {
            "name": "\u{202e}emca\u{202c} \u{1F600}",
            "numberofemployees": "99999999999999999999999",
            "annualrevenue": "1e400",
            "hs_lastmodifieddate": "+275760-09-13T00:00:00Z",
            "createdate": "not a date",
        },
        "archived": false,
    });
    let raw = serde_json::value::to_raw_value(&raw).unwrap();
    let obj = transform::decode(&raw).unwrap();
    let a = transform::company(ws(), obj).unwrap();
    assert_eq!(a.meta.source_id, "42");
    assert!(a.name.as_deref().is_some_and(|n| n.contains('\u{1F600}')));
    assert_ne!(a.employee_count, Some(i64::MIN));
    assert!(a.annual_revenue.is_none_or(f64::is_finite));
}

/// Lone surrogates, truncated escapes and invalid UTF-8 in a page are decode errors.
#[test]
fn invalid_escapes_and_bytes_are_errors() {
    for text in [
        r#"{"results":[{"id":"\ud800","properties":{}}]}"#,
        r#"{"results":[{"id":"1","properties":{"name":"\udc00\ud800"}}]}"#,
        r#"{"results":[{"id":"1","properties":{"name":"\u12"}}]}"#,
        r#"{"results":[],"paging":{"next":{"after":"\uZZZZ"}}}"#,
    ] {
        // A record is raw text in the page: a bad escape inside one fails the page or, at
        // the latest, that record's decode.
        if let Ok(page) = serde_json::from_str::<Page>(text) {
            assert!(!page.results.is_empty(), "{text}");
            for r in &page.results {
                assert!(transform::decode(r).is_err(), "{text}");
            }
        }
        assert!(
            serde_json::from_str::<AssocBatchResponse>(text).is_err(),
            "{text}"
        );
    }
    let mut bytes = br#"{"results":[{"id":"1","properties":{"name":""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bytes.extend_from_slice(br#""}}]}"#);
    assert!(serde_json::from_slice::<Page>(&bytes).is_err());
}
