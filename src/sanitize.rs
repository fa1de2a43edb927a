//! Lenient, panic-free parsing of provider values into typed columns.
//!
//! Providers send the same field in many shapes: HubSpot sends numbers and dates as strings
//! (sometimes empty), Salesforce writes offsets as `+0000`, Gong and Drive use RFC 3339,
//! monday.com stores dates as `YYYY-MM-DD` inside JSON strings, and any of them can send
//! `""` for "no value". Every connector reads provider values through these functions, so an
//! odd value becomes `None` (and is kept in `custom_fields` by the connector if it matters)
//! instead of failing a record or a batch.
//!
//! Every function takes `Option<&Value>` so it chains with `map.get("field")`, never panics,
//! and is idempotent: sanitizing a sanitized value gives it back unchanged.
//!
//! ```
//! use pandora_sync::sanitize;
//! use serde_json::json;
//!
//! let props = json!({"amount": "1500.50", "closedate": "", "hs_is_closed": "TRUE", "dealname": "A\u{0}B"});
//! assert_eq!(sanitize::number(props.get("amount")), Some(1500.5));
//! assert_eq!(sanitize::datetime(props.get("closedate")), None);
//! assert_eq!(sanitize::boolean(props.get("hs_is_closed")), Some(true));
//! assert_eq!(sanitize::text(props.get("dealname")).as_deref(), Some("AB"));
//! ```

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// Epoch values at or above this magnitude are milliseconds, below it seconds.
///
/// 10^11 seconds is the year 5138; 10^11 milliseconds is March 1973. Millisecond timestamps
/// before March 1973 are therefore read as seconds, which no SaaS record carries.
pub const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// A date-time from RFC 3339 (with or without offset or fraction), Salesforce's `+0000`
/// offset form, a date alone (midnight UTC), or epoch seconds or milliseconds as a number or
/// a string of digits. Empty or invalid values give `None`.
pub fn datetime(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let parsed = match value? {
        Value::String(s) => datetime_str(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_epoch(i)
            } else {
                from_epoch_f64(n.as_f64()?)
            }
        }
        _ => None,
    };
    parsed.filter(plausible)
}

/// Whether a date-time lies in the years 1 to 9999, the range every provider, RFC 3339
/// and both storage backends agree on.
fn plausible(d: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&d.year())
}

/// [`datetime`] for a string.
pub fn datetime_str(s: &str) -> Option<DateTime<Utc>> {
    datetime_str_any(s).filter(plausible)
}

fn datetime_str_any(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if is_integer_literal(s) {
        return from_epoch(s.parse().ok()?);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    // Salesforce: 2024-01-05T10:00:00.000+0000; also a space instead of `T`.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, fmt) {
            return Some(d.with_timezone(&Utc));
        }
    }
    // No offset: taken as UTC.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(d.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    }
    // Epoch seconds with a fraction, as a string.
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return from_epoch_f64(s.parse().ok()?);
    }
    None
}

/// A calendar date: `YYYY-MM-DD`, or the UTC date of anything [`datetime`] accepts.
pub fn date(value: Option<&Value>) -> Option<NaiveDate> {
    if let Some(Value::String(s)) = value
        && let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
    {
        return (1..=9999).contains(&d.year()).then_some(d);
    }
    datetime(value).map(|d| d.date_naive())
}

/// A finite number from a JSON number or a numeric string (with or without decimals or
/// exponent). Empty, `NaN` and infinite values give `None`.
pub fn number(value: Option<&Value>) -> Option<f64> {
    let f = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().any(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<f64>().ok()?
        }
        _ => return None,
    };
    f.is_finite().then_some(f)
}

/// A whole number from a JSON number or a string; `"12"`, `"12.0"` and `12.0` give 12, while
/// `"12.5"`, out-of-range and non-numeric values give `None`.
pub fn integer(value: Option<&Value>) -> Option<i64> {
    if let Some(Value::Number(n)) = value
        && let Some(i) = n.as_i64()
    {
        return Some(i);
    }
    if let Some(Value::String(s)) = value
        && let Ok(i) = s.trim().parse::<i64>()
    {
        return Some(i);
    }
    f64_to_i64(number(value)?)
}

/// A boolean from a JSON bool, the numbers 1 and 0, or the strings `true`, `false`, `1`, `0`,
/// `yes`, `no` in any case. Anything else gives `None`.
pub fn boolean(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => {
            let s = s.trim();
            if ["true", "1", "yes"]
                .iter()
                .any(|t| s.eq_ignore_ascii_case(t))
            {
                Some(true)
            } else if ["false", "0", "no"]
                .iter()
                .any(|t| s.eq_ignore_ascii_case(t))
            {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Text with NUL bytes removed (Postgres rejects them); empty or blank text gives `None`.
/// Numbers and booleans are written out; arrays and objects give `None`.
pub fn text(value: Option<&Value>) -> Option<String> {
    text_keep_empty(value).filter(|s| !s.trim().is_empty())
}

/// Like [`text`] but keeps empty and blank strings.
pub fn text_keep_empty(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(strip_nul(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// [`text`] for a value the caller owns: a string is kept as is (no copy) unless it holds
/// NUL bytes.
pub fn text_owned(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(strip_nul_owned(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|s| !s.trim().is_empty())
}

/// `s` without NUL bytes.
pub fn strip_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

/// [`strip_nul`] for a string the caller owns: returned as is when it holds no NUL.
fn strip_nul_owned(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s
    }
}

/// Sanitizes a whole JSON value: NUL bytes removed from strings and keys, empty or blank
/// strings become `null`, arrays and objects are sanitized element by element.
pub fn sanitize_value(value: Value) -> Value {
    match value {
        Value::String(s) => {
            let s = strip_nul_owned(s);
            if s.trim().is_empty() {
                Value::Null
            } else {
                Value::String(s)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize_value).collect()),
        Value::Object(map) => Value::Object(sanitize_properties(map)),
        other => other,
    }
}

/// Sanitizes a provider's property map (see [`sanitize_value`]). When two keys become equal
/// after NUL removal, the later one wins.
pub fn sanitize_properties(mut props: Map<String, Value>) -> Map<String, Value> {
    if props.keys().any(|k| k.contains('\0')) {
        return props
            .into_iter()
            .map(|(k, v)| (strip_nul_owned(k), sanitize_value(v)))
            .collect();
    }
    // The common case: keys stay, values are sanitized in place (no new map).
    for v in props.values_mut() {
        *v = sanitize_value(std::mem::take(v));
    }
    props
}

fn is_integer_literal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn from_epoch(n: i64) -> Option<DateTime<Utc>> {
    if n.checked_abs()? >= EPOCH_MILLIS_THRESHOLD {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

fn from_epoch_f64(f: f64) -> Option<DateTime<Utc>> {
    if !f.is_finite() {
        return None;
    }
    let threshold = 1e11;
    let millis = if f.abs() >= threshold { f } else { f * 1000.0 };
    DateTime::from_timestamp_millis(f64_to_i64(millis.round())?)
}

/// `f` as an `i64` when it is a whole number inside `i64`'s range.
fn f64_to_i64(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every whole f64 in [-2^63, 2^63) fits in an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        // Invariant: `f` is whole and inside i64's range (checked above), so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        Some(f as i64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn dt(s: &str) -> Option<DateTime<Utc>> {
        datetime(Some(&json!(s)))
    }

    fn ymdhms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn datetime_forms() {
        let t = ymdhms(2024, 1, 5, 10, 0, 0);
        assert_eq!(dt("2024-01-05T10:00:00Z"), Some(t));
        assert_eq!(dt("2024-01-05T12:00:00+02:00"), Some(t));
        assert_eq!(dt("2024-01-05T10:00:00.000Z"), Some(t));
        assert_eq!(dt("2024-01-05T10:00:00.000+0000"), Some(t));
        assert_eq!(dt("2024-01-05T05:00:00.000-0500"), Some(t));
        assert_eq!(dt("2024-01-05T10:00:00"), Some(t));
        assert_eq!(dt("2024-01-05 10:00:00"), Some(t));
        assert_eq!(dt("2024-01-05T10:00"), Some(t));
        assert_eq!(dt("  2024-01-05T10:00:00Z  "), Some(t));
        assert_eq!(dt("2024-01-05"), Some(ymdhms(2024, 1, 5, 0, 0, 0)));
        // Epoch seconds and milliseconds, as numbers and strings.
        assert_eq!(datetime(Some(&json!(1_704_448_800))), Some(t));
        assert_eq!(datetime(Some(&json!(1_704_448_800_000_i64))), Some(t));
        assert_eq!(dt("1704448800"), Some(t));
        assert_eq!(dt("1704448800000"), Some(t));
        assert_eq!(datetime(Some(&json!(1_704_448_800.0))), Some(t));
        assert_eq!(
            dt("1704448800.5"),
            Some(t + chrono::Duration::milliseconds(500))
        );
        assert_eq!(datetime(Some(&json!(0))), Some(ymdhms(1970, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn datetime_rejects() {
        for bad in [
            "",
            "   ",
            "not a date",
            "2024-13-01",
            "2024-02-30T00:00:00Z",
            "99999999999999999999999",
            "-",
            "1.2.3",
            "NaN",
        ] {
            assert_eq!(dt(bad), None, "{bad:?}");
        }
        assert_eq!(datetime(None), None);
        assert_eq!(datetime(Some(&json!(null))), None);
        assert_eq!(datetime(Some(&json!(true))), None);
        assert_eq!(datetime(Some(&json!([1]))), None);
        assert_eq!(datetime(Some(&json!(i64::MAX))), None);
        assert_eq!(datetime(Some(&json!(i64::MIN))), None);
        assert_eq!(datetime(Some(&json!(1e300))), None);
    }

    #[test]
    fn date_forms() {
        let d = NaiveDate::from_ymd_opt(2024, 6, 30).unwrap();
        assert_eq!(date(Some(&json!("2024-06-30"))), Some(d));
        assert_eq!(date(Some(&json!("2024-06-30T23:00:00Z"))), Some(d));
        assert_eq!(
            date(Some(&json!("2024-06-30T23:00:00-02:00"))),
            d.succ_opt()
        );
        assert_eq!(date(Some(&json!(""))), None);
        assert_eq!(date(Some(&json!("June"))), None);
    }

    #[test]
    fn number_forms() {
        assert_eq!(number(Some(&json!("1500"))), Some(1500.0));
        assert_eq!(number(Some(&json!("1500.50"))), Some(1500.5));
        assert_eq!(number(Some(&json!(" -2.5 "))), Some(-2.5));
        assert_eq!(number(Some(&json!("1e3"))), Some(1000.0));
        assert_eq!(number(Some(&json!(42))), Some(42.0));
        assert_eq!(number(Some(&json!(0.25))), Some(0.25));
        for bad in [
            "",
            " ",
            "NaN",
            "nan",
            "inf",
            "-infinity",
            "1e400",
            "abc",
            "1,5",
        ] {
            assert_eq!(number(Some(&json!(bad))), None, "{bad:?}");
        }
        assert_eq!(number(Some(&json!(null))), None);
        assert_eq!(number(Some(&json!(true))), None);
        assert_eq!(number(None), None);
    }

    #[test]
    fn integer_forms() {
        assert_eq!(integer(Some(&json!("12"))), Some(12));
        assert_eq!(integer(Some(&json!("12.0"))), Some(12));
        assert_eq!(integer(Some(&json!(12.0))), Some(12));
        assert_eq!(integer(Some(&json!(-7))), Some(-7));
        assert_eq!(integer(Some(&json!(i64::MAX))), Some(i64::MAX));
        assert_eq!(integer(Some(&json!("9223372036854775807"))), Some(i64::MAX));
        assert_eq!(integer(Some(&json!("12.5"))), None);
        assert_eq!(integer(Some(&json!(1e19))), None);
        assert_eq!(integer(Some(&json!(u64::MAX))), None);
        assert_eq!(integer(Some(&json!(""))), None);
    }

    #[test]
    fn boolean_forms() {
        for t in ["true", "TRUE", "True", "1", "yes", "YES", " yes "] {
            assert_eq!(boolean(Some(&json!(t))), Some(true), "{t}");
        }
        for f in ["false", "FALSE", "0", "no", "No"] {
            assert_eq!(boolean(Some(&json!(f))), Some(false), "{f}");
        }
        assert_eq!(boolean(Some(&json!(true))), Some(true));
        assert_eq!(boolean(Some(&json!(1))), Some(true));
        assert_eq!(boolean(Some(&json!(0))), Some(false));
        for bad in [json!(""), json!("maybe"), json!(2), json!(null), json!({})] {
            assert_eq!(boolean(Some(&bad)), None, "{bad}");
        }
    }

    #[test]
    fn text_forms() {
        assert_eq!(text(Some(&json!("hello"))).as_deref(), Some("hello"));
        assert_eq!(text(Some(&json!("a\u{0}b\u{0}"))).as_deref(), Some("ab"));
        assert_eq!(text(Some(&json!(""))), None);
        assert_eq!(text(Some(&json!("  "))), None);
        assert_eq!(text(Some(&json!("\u{0}"))), None);
        assert_eq!(text_keep_empty(Some(&json!(""))).as_deref(), Some(""));
        assert_eq!(text(Some(&json!(5))).as_deref(), Some("5"));
        assert_eq!(text(Some(&json!(false))).as_deref(), Some("false"));
        assert_eq!(text(Some(&json!(["a"]))), None);
        assert_eq!(text(Some(&json!("🚀 émoji"))).as_deref(), Some("🚀 émoji"));
        for v in [
            json!("hello"),
            json!("a\u{0}b\u{0}"),
            json!(""),
            json!("  "),
            json!("\u{0}"),
            json!(5),
            json!(false),
            json!(["a"]),
            Value::Null,
        ] {
            assert_eq!(text_owned(Some(v.clone())), text(Some(&v)), "{v}");
        }
        assert_eq!(text_owned(None), None);
    }

    #[test]
    fn property_map() {
        let Value::Object(props) = json!({
            "a": "", "b": " ", "c": "x\u{0}y", "d": 5, "e": null,
            "f": ["", "z"], "g": {"h\u{0}": ""}
        }) else {
            unreachable!()
        };
        let out = Value::Object(sanitize_properties(props));
        assert_eq!(
            out,
            json!({"a": null, "b": null, "c": "xy", "d": 5, "e": null, "f": [null, "z"], "g": {"h": null}})
        );
        // A key with a NUL is renamed; when it collides with another, the later one wins.
        let Value::Object(props) = json!({"k\u{0}": "1", "k": "2", "z": " "}) else {
            unreachable!()
        };
        let out = Value::Object(sanitize_properties(props));
        assert_eq!(out, json!({"k": "1", "z": null}));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".*".prop_map(Value::String),
            "[0-9 .:TZ+\\-\u{0}]{0,30}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\u{0}]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn no_input_panics_and_parsers_are_idempotent(v in arb_json()) {
            let v = Some(&v);
            if let Some(d) = datetime(v) {
                prop_assert_eq!(datetime(Some(&json!(d.to_rfc3339()))), Some(d));
            }
            if let Some(d) = date(v) {
                prop_assert_eq!(date(Some(&json!(d.to_string()))), Some(d));
            }
            if let Some(n) = number(v) {
                prop_assert!(n.is_finite());
                prop_assert_eq!(number(Some(&json!(n))), Some(n));
            }
            if let Some(i) = integer(v) {
                prop_assert_eq!(integer(Some(&json!(i))), Some(i));
            }
            if let Some(b) = boolean(v) {
                prop_assert_eq!(boolean(Some(&json!(b))), Some(b));
            }
            if let Some(t) = text(v) {
                prop_assert!(!t.contains('\0'));
                prop_assert_eq!(text(Some(&json!(t.clone()))), Some(t));
            }
        }

        #[test]
        fn sanitize_value_twice_equals_once(v in arb_json()) {
            let once = sanitize_value(v);
            prop_assert_eq!(sanitize_value(once.clone()), once);
        }

        #[test]
        fn any_string_is_safe(s in ".*") {
            let _ = datetime_str(&s);
            let v = json!(s);
            let _ = (number(Some(&v)), integer(Some(&v)), boolean(Some(&v)), date(Some(&v)));
            prop_assert!(!strip_nul(&s).contains('\0'));
        }

        #[test]
        fn epoch_seconds_and_millis_agree(secs in -50_000_000_000i64..50_000_000_000i64) {
            let from_secs = datetime(Some(&json!(secs)));
            prop_assert!(from_secs.is_some());
            if secs.abs() >= 100_000_000 {
                prop_assert_eq!(datetime(Some(&json!(secs * 1000))), from_secs);
                prop_assert_eq!(datetime_str(&(secs * 1000).to_string()), from_secs);
            }
        }

        #[test]
        fn rfc3339_round_trips(secs in -10_000_000_000i64..100_000_000_000i64, nanos in 0u32..1_000_000_000) {
            let d = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(datetime_str(&d.to_rfc3339()), Some(d));
            prop_assert_eq!(datetime_str(&d.format("%Y-%m-%dT%H:%M:%S%.f%z").to_string()), Some(d));
        }
    }
}
