//! Classifiers that know each provider's error bodies.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveTime, Utc};
use http::{Response, StatusCode};
use serde_json::Value;

use super::classify::{
    Classify, DefaultClassifier, Verdict, contains, excerpt, rate_limited, response_retry_after,
};
use crate::Error;
use crate::http::headers::MAX_RETRY_AFTER;

fn json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn quota(provider: &Cow<'static, str>, resets_at: Option<DateTime<Utc>>) -> Error {
    Error::QuotaExhausted {
        provider: provider.clone(),
        resets_at,
    }
}

/// A wait in seconds from a body, capped like `Retry-After` (at a day).
fn secs(v: Option<&Value>) -> Option<Duration> {
    let v = v?;
    v.as_u64()
        .map(Duration::from_secs)
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| Duration::try_from_secs_f64(f).unwrap_or(MAX_RETRY_AFTER))
        })
        .map(|d| d.min(MAX_RETRY_AFTER))
}

/// HubSpot: a 429 whose `policyName` is `DAILY` is the daily quota (no retry, the sync
/// stops; it resets at the next midnight UTC as far as the response tells); a ten-secondly or secondly 429 without `Retry-After` waits for the rolling
/// window (`X-HubSpot-RateLimit-Interval-Milliseconds`, else 10 s / 1 s).
#[derive(Clone, Copy, Debug, Default)]
pub struct HubSpotClassifier;

impl Classify for HubSpotClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let policy = json(response.body()).and_then(|v| {
                v.get("policyName")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            let retry_after = response_retry_after(response);
            match policy.as_deref() {
                // The quota resets at midnight in the account's time zone, which the
                // response does not name: the next midnight UTC stands in (the HubSpot
                // connector replaces it with midnight in the account's zone).
                Some("DAILY") => return Verdict::Fail(quota(provider, next_utc_midnight())),
                Some("TEN_SECONDLY_ROLLING") if retry_after.is_none() => {
                    let window = response
                        .headers()
                        .get("x-hubspot-ratelimit-interval-milliseconds")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok())
                        .map_or(Duration::from_secs(10), Duration::from_millis);
                    return Verdict::Retry {
                        after: Some(window),
                        error: rate_limited(provider, Some(window)),
                    };
                }
                Some("SECONDLY") if retry_after.is_none() => {
                    let wait = Duration::from_secs(1);
                    return Verdict::Retry {
                        after: Some(wait),
                        error: rate_limited(provider, Some(wait)),
                    };
                }
                _ => {}
            }
        }
        DefaultClassifier.classify(provider, response)
    }
}

/// Salesforce: `403 REQUEST_LIMIT_EXCEEDED` is the org's daily quota (no retry, the sync
/// stops); `INVALID_SESSION_ID` (on a 401 or otherwise) makes the OAuth layer refresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesforceClassifier;

impl SalesforceClassifier {
    fn has_code(body: &Bytes, code: &str) -> bool {
        if !contains(body, code) {
            return false;
        }
        // The error body is an array of {message, errorCode}.
        json(body).is_some_and(|v| {
            v.as_array().is_some_and(|errors| {
                errors
                    .iter()
                    .any(|e| e.get("errorCode").and_then(Value::as_str) == Some(code))
            })
        })
    }
}

impl Classify for SalesforceClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        if response.status() == StatusCode::FORBIDDEN
            && Self::has_code(response.body(), "REQUEST_LIMIT_EXCEEDED")
        {
            return Verdict::Fail(quota(provider, None));
        }
        DefaultClassifier.classify(provider, response)
    }

    fn is_session_invalid(&self, response: &Response<Bytes>) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
            || (response.status().is_client_error()
                && Self::has_code(response.body(), "INVALID_SESSION_ID"))
    }
}

/// Google APIs (Drive): a 403 with reason `userRateLimitExceeded` or `rateLimitExceeded`
/// is a rate limit and retried with backoff; `dailyLimitExceeded` / `quotaExceeded` is the
/// daily quota (no retry).
#[derive(Clone, Copy, Debug, Default)]
pub struct GoogleClassifier;

impl Classify for GoogleClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        if matches!(response.status().as_u16(), 403 | 429) {
            let reasons: Vec<String> = json(response.body())
                .and_then(|v| {
                    v.pointer("/error/errors")
                        .and_then(Value::as_array)
                        .map(|errors| {
                            errors
                                .iter()
                                .filter_map(|e| e.get("reason").and_then(Value::as_str))
                                .map(str::to_owned)
                                .collect()
                        })
                })
                .unwrap_or_default();
            let has = |r: &str| reasons.iter().any(|x| x == r);
            if has("dailyLimitExceeded") || has("quotaExceeded") {
                return Verdict::Fail(quota(provider, None));
            }
            if has("userRateLimitExceeded") || has("rateLimitExceeded") {
                let after = response_retry_after(response);
                return Verdict::Retry {
                    after,
                    error: rate_limited(provider, after),
                };
            }
        }
        DefaultClassifier.classify(provider, response)
    }
}

/// monday.com: application errors arrive with HTTP 200 (or 429) and an `errors` array or
/// the legacy top-level `error_code`.
///
/// * `COMPLEXITY_BUDGET_EXHAUSTED`, `FIELD_LIMIT_EXCEEDED`, `IP_RATE_LIMIT_EXCEEDED`:
///   retry after `retry_in_seconds`.
/// * legacy `ComplexityException` ("… reset in N seconds"): retry after N seconds.
/// * `maxConcurrencyExceeded`, `RATE_LIMIT_EXCEEDED` / "Rate Limit Exceeded": retry after
///   `Retry-After`, else backoff.
/// * `DAILY_LIMIT_EXCEEDED`: the daily quota, resetting at midnight UTC (no retry).
///
/// Other GraphQL errors on a 200 are the connector's to read: the response is a success.
#[derive(Clone, Copy, Debug, Default)]
pub struct MondayClassifier;

const MONDAY_MARKERS: [&str; 8] = [
    "COMPLEXITY_BUDGET_EXHAUSTED",
    "ComplexityException",
    "FIELD_LIMIT_EXCEEDED",
    "IP_RATE_LIMIT_EXCEEDED",
    "DAILY_LIMIT_EXCEEDED",
    "maxConcurrencyExceeded",
    "RATE_LIMIT_EXCEEDED",
    "Rate Limit Exceeded",
];

enum MondaySignal {
    RetryIn(Option<Duration>),
    Daily,
}

impl MondayClassifier {
    fn signal(body: &Bytes) -> Option<MondaySignal> {
        if !MONDAY_MARKERS.iter().any(|m| contains(body, m)) {
            return None;
        }
        let v = json(body)?;
        // Legacy top-level form.
        if let Some(code) = v.get("error_code").and_then(Value::as_str) {
            let retry_in = secs(v.pointer("/error_data/retry_in_seconds"))
                .or_else(|| reset_in_seconds(v.get("error_message").and_then(Value::as_str)));
            match code {
                "ComplexityException"
                | "FIELD_LIMIT_EXCEEDED"
                | "IP_RATE_LIMIT_EXCEEDED"
                | "RATE_LIMIT_EXCEEDED"
                | "maxConcurrencyExceeded" => return Some(MondaySignal::RetryIn(retry_in)),
                "DAILY_LIMIT_EXCEEDED" => return Some(MondaySignal::Daily),
                _ => {}
            }
        }
        for e in v.get("errors").and_then(Value::as_array)? {
            let ext = e.get("extensions");
            let code = ext
                .and_then(|x| x.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
            let retry_in = ext.and_then(|x| {
                secs(x.get("retry_in_seconds"))
                    .or_else(|| secs(x.pointer("/error_data/retry_in_seconds")))
            });
            match code {
                "COMPLEXITY_BUDGET_EXHAUSTED"
                | "FIELD_LIMIT_EXCEEDED"
                | "IP_RATE_LIMIT_EXCEEDED"
                | "RATE_LIMIT_EXCEEDED"
                | "maxConcurrencyExceeded" => return Some(MondaySignal::RetryIn(retry_in)),
                "DAILY_LIMIT_EXCEEDED" => return Some(MondaySignal::Daily),
                _ if message.eq_ignore_ascii_case("Rate Limit Exceeded") => {
                    return Some(MondaySignal::RetryIn(retry_in));
                }
                _ => {}
            }
        }
        None
    }
}

/// `N` out of "… reset in N seconds".
fn reset_in_seconds(message: Option<&str>) -> Option<Duration> {
    let rest = message?.split("reset in ").nth(1)?;
    let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs(n).min(MAX_RETRY_AFTER))
}

fn next_utc_midnight() -> Option<DateTime<Utc>> {
    Some(
        Utc::now()
            .date_naive()
            .succ_opt()?
            .and_time(NaiveTime::MIN)
            .and_utc(),
    )
}

impl Classify for MondayClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        match Self::signal(response.body()) {
            Some(MondaySignal::RetryIn(after)) => {
                let after = after.or_else(|| response_retry_after(response));
                Verdict::Retry {
                    after,
                    error: rate_limited(provider, after),
                }
            }
            Some(MondaySignal::Daily) => Verdict::Fail(quota(provider, next_utc_midnight())),
            None => DefaultClassifier.classify(provider, response),
        }
    }
}

/// Fireflies (GraphQL): `too_many_requests` in `errors[].code` or
/// `errors[].extensions.code` is a rate limit, retried after
/// `errors[].extensions.metadata.retryAfter` (epoch milliseconds; else `Retry-After`),
/// then [`Error::RateLimited`]; a `retryAfter` more than [`FIREFLIES_QUOTA_AFTER`] away is
/// the daily quota (Free and Pro plans: 50 requests a day): [`Error::QuotaExhausted`] at
/// once, resetting at `retryAfter`, so a sync never sleeps for hours. `auth_failed` is
/// [`Error::AuthFailed`]. GraphQL errors come with HTTP 200 as well as with 429 and 401.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirefliesClassifier;

/// A Fireflies `retryAfter` further away than this is the daily quota, not a per-minute
/// limit (the official SDK waits at most about 65 s before failing).
pub const FIREFLIES_QUOTA_AFTER: Duration = Duration::from_secs(65);

impl FirefliesClassifier {
    /// `errors[].extensions.metadata.retryAfter`: epoch milliseconds (a number or a numeric
    /// string) or an RFC 3339 date-time.
    fn retry_at(body: &Bytes) -> Option<DateTime<Utc>> {
        if !contains(body, "retryAfter") {
            return None;
        }
        let v = json(body)?;
        v.get("errors")?.as_array()?.iter().find_map(|e| {
            let r = e.pointer("/extensions/metadata/retryAfter")?;
            match r {
                Value::Number(n) => n
                    .as_i64()
                    .or_else(|| crate::sanitize::integer(Some(&Value::from(n.as_f64()?.trunc()))))
                    .and_then(DateTime::from_timestamp_millis),
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
                    .or_else(|| {
                        DateTime::parse_from_rfc3339(s.trim())
                            .ok()
                            .map(|d| d.with_timezone(&Utc))
                    }),
                _ => None,
            }
        })
    }

    fn codes(body: &Bytes) -> Vec<String> {
        if !contains(body, "\"errors\"") {
            return Vec::new();
        }
        json(body)
            .and_then(|v| {
                v.get("errors").and_then(Value::as_array).map(|errors| {
                    errors
                        .iter()
                        .filter_map(|e| {
                            e.get("code")
                                .or_else(|| e.pointer("/extensions/code"))
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Classify for FirefliesClassifier {
    fn classify(&self, provider: &Cow<'static, str>, response: &Response<Bytes>) -> Verdict {
        let codes = Self::codes(response.body());
        if codes.iter().any(|c| c == "too_many_requests") {
            let now = Utc::now();
            let after = match Self::retry_at(response.body()) {
                Some(at) => Some((at - now).to_std().unwrap_or(Duration::ZERO)),
                None => response_retry_after(response),
            };
            if let Some(wait) = after
                && wait > FIREFLIES_QUOTA_AFTER
            {
                let resets_at = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d));
                return Verdict::Fail(quota(provider, resets_at));
            }
            return Verdict::Retry {
                after,
                error: rate_limited(provider, after),
            };
        }
        if codes.iter().any(|c| c == "auth_failed") {
            return Verdict::Fail(Error::AuthFailed {
                provider: provider.clone(),
                message: format!("auth_failed: {}", excerpt(response.body())),
            });
        }
        DefaultClassifier.classify(provider, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response<Bytes> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from(body.to_owned())).unwrap()
    }

    fn p() -> Cow<'static, str> {
        "p".into()
    }

    fn retry_after_of(v: Verdict) -> Option<Duration> {
        match v {
            Verdict::Retry {
                after,
                error: Error::RateLimited { retry_after, .. },
            } => {
                assert_eq!(after, retry_after);
                after
            }
            other => panic!("expected a rate-limit retry, got {other:?}"),
        }
    }

    #[test]
    fn hubspot_daily_is_quota_and_ten_secondly_waits_the_window() {
        let daily = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c033cdaa-2c40-4a64-ae48-b4cec88dad24","policyName":"DAILY","requestId":"3d3e35b7-0dae-4b9f-a6e3-9c230cbcf8dd"}"#;
        let before = Utc::now();
        match HubSpotClassifier.classify(
            &p(),
            &resp(
                429,
                &[
                    ("x-hubspot-ratelimit-daily", "250000"),
                    ("x-hubspot-ratelimit-daily-remaining", "0"),
                ],
                daily,
            ),
        ) {
            Verdict::Fail(Error::QuotaExhausted {
                resets_at: Some(at),
                ..
            }) => {
                // The next midnight UTC: never "unknown", never more than a day away.
                assert_eq!(at.time(), NaiveTime::MIN);
                assert!(at > before && at - before <= chrono::Duration::days(1));
            }
            other => panic!("expected a quota stop with its reset, got {other:?}"),
        }
        assert!(matches!(
            HubSpotClassifier.classify(&p(), &resp(429, &[], daily)),
            Verdict::Fail(Error::QuotaExhausted { .. })
        ));
        let ten =
            r#"{"status":"error","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
        assert_eq!(
            retry_after_of(HubSpotClassifier.classify(&p(), &resp(429, &[], ten))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after_of(
                HubSpotClassifier.classify(&p(), &resp(429, &[("retry-after", "2")], ten))
            ),
            Some(Duration::from_secs(2))
        );
        let secondly = r#"{"policyName":"SECONDLY"}"#;
        assert_eq!(
            retry_after_of(HubSpotClassifier.classify(&p(), &resp(429, &[], secondly))),
            Some(Duration::from_secs(1))
        );
        assert!(matches!(
            HubSpotClassifier.classify(&p(), &resp(404, &[], "{}")),
            Verdict::Fail(Error::Api { status: 404, .. })
        ));
    }

    #[test]
    fn salesforce_request_limit_and_session() {
        let limit =
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert!(matches!(
            SalesforceClassifier.classify(&p(), &resp(403, &[], limit)),
            Verdict::Fail(Error::QuotaExhausted { .. })
        ));
        let other = r#"[{"message":"nope","errorCode":"INSUFFICIENT_ACCESS"}]"#;
        assert!(matches!(
            SalesforceClassifier.classify(&p(), &resp(403, &[], other)),
            Verdict::Fail(Error::Api { status: 403, .. })
        ));
        let session =
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        assert!(SalesforceClassifier.is_session_invalid(&resp(401, &[], session)));
        assert!(SalesforceClassifier.is_session_invalid(&resp(403, &[], session)));
        assert!(!SalesforceClassifier.is_session_invalid(&resp(403, &[], other)));
        // The code merely appearing in a message is not enough.
        let mention = r#"[{"message":"INVALID_SESSION_ID","errorCode":"OTHER"}]"#;
        assert!(!SalesforceClassifier.is_session_invalid(&resp(400, &[], mention)));
    }

    #[test]
    fn google_rate_limit_reasons_retry_and_daily_fails() {
        let body = |reason: &str| {
            format!(
                r#"{{"error":{{"code":403,"message":"x","errors":[{{"domain":"usageLimits","reason":"{reason}"}}]}}}}"#
            )
        };
        for reason in ["userRateLimitExceeded", "rateLimitExceeded"] {
            assert_eq!(
                retry_after_of(GoogleClassifier.classify(&p(), &resp(403, &[], &body(reason)))),
                None
            );
        }
        assert!(matches!(
            GoogleClassifier.classify(&p(), &resp(403, &[], &body("dailyLimitExceeded"))),
            Verdict::Fail(Error::QuotaExhausted { .. })
        ));
        assert!(matches!(
            GoogleClassifier.classify(&p(), &resp(403, &[], &body("insufficientPermissions"))),
            Verdict::Fail(Error::Api { status: 403, .. })
        ));
        assert!(matches!(
            GoogleClassifier.classify(&p(), &resp(403, &[], "not json")),
            Verdict::Fail(Error::Api { status: 403, .. })
        ));
    }

    #[test]
    fn monday_complexity_in_200_and_legacy_forms() {
        let modern = r#"{"errors":[{"message":"Complexity budget exhausted","extensions":{"code":"COMPLEXITY_BUDGET_EXHAUSTED","complexity":6182,"complexity_budget_left":100,"complexity_budget_limit":5000000,"retry_in_seconds":37,"status_code":429}}]}"#;
        assert_eq!(
            retry_after_of(MondayClassifier.classify(&p(), &resp(200, &[], modern))),
            Some(Duration::from_secs(37))
        );
        let legacy = r#"{"error_code":"ComplexityException","status_code":429,"error_message":"Complexity budget exhausted, query cost 30001 budget remaining 19986 out of 1000000 reset in 3 seconds","error_data":{},"errors":["x"],"account_id":1}"#;
        assert_eq!(
            retry_after_of(MondayClassifier.classify(&p(), &resp(200, &[], legacy))),
            Some(Duration::from_secs(3))
        );
        // Absurd waits in a body are capped at a day, like `Retry-After`.
        for absurd in ["18446744073709551615", "1e300", "999999999"] {
            let body = format!(
                r#"{{"errors":[{{"message":"x","extensions":{{"code":"COMPLEXITY_BUDGET_EXHAUSTED","retry_in_seconds":{absurd}}}}}]}}"#
            );
            assert_eq!(
                retry_after_of(MondayClassifier.classify(&p(), &resp(200, &[], &body))),
                Some(MAX_RETRY_AFTER),
                "{absurd}"
            );
        }
        let huge = r#"{"error_code":"ComplexityException","status_code":429,"error_message":"budget exhausted, reset in 99999999999 seconds","error_data":{},"errors":["x"]}"#;
        assert_eq!(
            retry_after_of(MondayClassifier.classify(&p(), &resp(200, &[], huge))),
            Some(MAX_RETRY_AFTER)
        );
        let field = r#"{"error_message":"Concurrency limit exceeded for the field","error_code":"FIELD_LIMIT_EXCEEDED","error_data":{"retry_in_seconds":15,"entity":"boards"},"status_code":429}"#;
        assert_eq!(
            retry_after_of(MondayClassifier.classify(&p(), &resp(429, &[], field))),
            Some(Duration::from_secs(15))
        );
        let minute = r#"{"errors":[{"message":"Rate Limit Exceeded","extensions":{"code":"RATE_LIMIT_EXCEEDED"}}]}"#;
        assert_eq!(
            retry_after_of(
                MondayClassifier.classify(&p(), &resp(429, &[("retry-after", "20")], minute))
            ),
            Some(Duration::from_secs(20))
        );
        let daily = r#"{"errors":[{"message":"Daily limit exceeded","extensions":{"code":"DAILY_LIMIT_EXCEEDED"}}]}"#;
        match MondayClassifier.classify(&p(), &resp(200, &[], daily)) {
            Verdict::Fail(Error::QuotaExhausted {
                resets_at: Some(at),
                ..
            }) => {
                assert!(at > Utc::now());
                assert_eq!(at.time(), NaiveTime::MIN);
            }
            other => panic!("{other:?}"),
        }
        // Other GraphQL errors on a 200 are left to the connector.
        let unauthorized = r#"{"data":null,"errors":[{"message":"User unauthorized to perform action","extensions":{"code":"UserUnauthorizedException","status_code":403}}]}"#;
        assert!(matches!(
            MondayClassifier.classify(&p(), &resp(200, &[], unauthorized)),
            Verdict::Success
        ));
        assert!(matches!(
            MondayClassifier.classify(&p(), &resp(200, &[], r#"{"data":{"boards":[]}}"#)),
            Verdict::Success
        ));
    }

    #[test]
    fn fireflies_retry_after_near_is_a_wait_far_is_the_daily_quota() {
        let body = |at: i64| {
            format!(
                r#"{{"data":null,"errors":[{{"message":"Too many requests","code":"too_many_requests","friendly":true,"extensions":{{"code":"too_many_requests","status":429,"metadata":{{"retryAfter":{at}}}}}}}]}}"#
            )
        };
        let now = Utc::now().timestamp_millis();
        for status in [200, 429] {
            let near = FirefliesClassifier.classify(&p(), &resp(status, &[], &body(now + 5_000)));
            let wait = retry_after_of(near).unwrap();
            assert!(
                wait <= Duration::from_secs(5) && wait >= Duration::from_secs(3),
                "{wait:?}"
            );
            let far = now + 6 * 3_600_000;
            match FirefliesClassifier.classify(&p(), &resp(status, &[], &body(far))) {
                Verdict::Fail(Error::QuotaExhausted {
                    resets_at: Some(r), ..
                }) => {
                    assert!((r.timestamp_millis() - far).abs() < 2_000, "{r}");
                }
                other => panic!("expected the daily quota, got {other:?}"),
            }
        }
        // A retryAfter in the past retries at once; an RFC 3339 one is read too.
        let past = FirefliesClassifier.classify(&p(), &resp(200, &[], &body(now - 10_000)));
        assert_eq!(retry_after_of(past), Some(Duration::ZERO));
        let iso = r#"{"errors":[{"code":"too_many_requests","extensions":{"metadata":{"retryAfter":"2999-01-01T00:00:00Z"}}}]}"#;
        assert!(matches!(
            FirefliesClassifier.classify(&p(), &resp(429, &[], iso)),
            Verdict::Fail(Error::QuotaExhausted { .. })
        ));
    }

    #[test]
    fn fireflies_too_many_requests_and_auth() {
        let tmr = r#"{"data":null,"errors":[{"message":"Too many requests...","code":"too_many_requests","friendly":true,"extensions":{"code":"too_many_requests","status":429}}]}"#;
        assert_eq!(
            retry_after_of(FirefliesClassifier.classify(&p(), &resp(200, &[], tmr))),
            None
        );
        let ext_only =
            r#"{"errors":[{"message":"slow down","extensions":{"code":"too_many_requests"}}]}"#;
        assert_eq!(
            retry_after_of(
                FirefliesClassifier.classify(&p(), &resp(200, &[("retry-after", "30")], ext_only))
            ),
            Some(Duration::from_secs(30))
        );
        let auth = r#"{"errors":[{"message":"bad key","code":"auth_failed"}]}"#;
        assert!(matches!(
            FirefliesClassifier.classify(&p(), &resp(200, &[], auth)),
            Verdict::Fail(Error::AuthFailed { .. })
        ));
        let other = r#"{"data":null,"errors":[{"message":"x","code":"object_not_found"}]}"#;
        assert!(matches!(
            FirefliesClassifier.classify(&p(), &resp(200, &[], other)),
            Verdict::Success
        ));
    }
}
