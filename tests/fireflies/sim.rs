//! The Fireflies simulator follows the real API: GraphQL validation, paging, errors and
//! limits (`reference/provider-apis.md` sections 3, 7 and 10).

use pandora_sync::simulator::{
    FaultConfig, FirefliesErrorForm, FirefliesSim, FirefliesSimConfig, NewFirefliesTranscript,
};
use serde_json::{Value, json};

async fn post(sim: &FirefliesSim, key: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/graphql", sim.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn ask(sim: &FirefliesSim, query: &str, variables: Value) -> (u16, Value) {
    let key = sim.config().api_key.clone();
    post(sim, &key, json!({"query": query, "variables": variables})).await
}

fn code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

async fn small() -> FirefliesSim {
    FirefliesSim::start(FirefliesSimConfig {
        transcripts: 120,
        days: 30,
        same_instant: 12,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn documents_are_validated_like_apollo() {
    let sim = small().await;
    for (q, vars, want) in [
        (
            "{ transcripts { id nope } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ transcripts(first: 2) { id } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "query($l: String) { transcripts(limit: $l) { id } }",
            json!({"l": "5"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ transcripts { summary } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("{ transcripts { id }", json!({}), "GRAPHQL_PARSE_FAILED"),
        (
            "query($l: Int) { transcripts(limit: $l) { id } }",
            json!({"l": "five"}),
            "BAD_USER_INPUT",
        ),
    ] {
        let (status, body) = ask(&sim, q, vars).await;
        assert_eq!((status, code(&body)), (400, want), "{q}: {body}");
        assert!(body.get("data").is_none(), "{q}: no execution");
    }
}

#[tokio::test]
async fn transcripts_page_newest_first_with_aliases_fragments_and_filters() {
    let sim = small().await;
    let truth = sim.transcripts();
    let q = "query P($limit: Int, $skip: Int, $to: DateTime) { page: transcripts(limit: $limit, skip: $skip, toDate: $to) { ...F } me: user { email } }
             fragment F on Transcript { id when: date duration summary { overview } __typename }";
    let (status, body) = ask(&sim, q, json!({"limit": 50, "skip": 10})).await;
    assert_eq!(status, 200, "{body}");
    let page = body["data"]["page"].as_array().unwrap();
    assert_eq!(page.len(), 50);
    let ids: Vec<&str> = page.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = truth[10..60].iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, want, "newest first, skip as an offset");
    assert_eq!(page[0]["__typename"], "Transcript");
    assert!(page[0]["when"].as_f64().unwrap() > 1.6e12, "epoch ms");
    assert!(page[0].get("title").is_none(), "only what was asked");
    assert_eq!(body["data"]["me"]["email"], json!(sim.users()[0].email));
    // toDate is inclusive; dates never grow down the list; ties share one date.
    let to = truth[30].date;
    let (_, body) = ask(&sim, q, json!({"to": to.to_rfc3339(), "limit": 5})).await;
    let first = &body["data"]["page"][0];
    assert!(truth.iter().position(|t| t.id == first["id"]).unwrap() <= 30);
    assert!(truth.windows(2).all(|w| w[0].date >= w[1].date));
    let tie = sim.same_instant_ids();
    let dates: std::collections::BTreeSet<_> = tie
        .iter()
        .map(|id| sim.transcript(id).unwrap().date)
        .collect();
    assert_eq!((tie.len(), dates.len()), (12, 1));
}

#[tokio::test]
async fn limits_above_fifty_and_exclusive_filters_are_invalid_arguments() {
    let sim = small().await;
    let (status, body) = ask(&sim, "{ transcripts(limit: 51) { id } }", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["code"], "invalid_arguments");
    assert_eq!(
        body["errors"][0]["extensions"]["metadata"]["fields"],
        json!(["limit"])
    );
    assert_eq!(body["data"]["transcripts"], Value::Null);
    let (_, body) = ask(
        &sim,
        "{ transcripts(organizer_email: \"a@b.c\", mine: true) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(body["errors"][0]["code"], "invalid_arguments");
    let (_, body) = ask(&sim, "{ transcript(id: \"01HNOPE\") { id } }", json!({})).await;
    assert_eq!(body["errors"][0]["code"], "object_not_found");
}

#[tokio::test]
async fn auth_failed_and_too_many_requests_come_in_both_forms() {
    for (form, auth_status, limit_status) in [
        (FirefliesErrorForm::HttpStatus, 401, 429),
        (FirefliesErrorForm::Http200, 200, 200),
    ] {
        let sim = FirefliesSim::start(FirefliesSimConfig {
            transcripts: 10,
            error_form: form,
            daily_limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
        let (status, body) = post(&sim, "wrong", json!({"query": "{ users { email } }"})).await;
        assert_eq!(
            (status, body["errors"][0]["code"].as_str()),
            (auth_status, Some("auth_failed"))
        );
        assert!(!body.to_string().contains("wrong"), "the key is not echoed");
        for _ in 0..2 {
            assert_eq!(ask(&sim, "{ users { email } }", json!({})).await.0, 200);
        }
        let (status, body) = ask(&sim, "{ users { email } }", json!({})).await;
        assert_eq!(status, limit_status);
        assert_eq!(body["errors"][0]["extensions"]["code"], "too_many_requests");
        let retry = body["errors"][0]["extensions"]["metadata"]["retryAfter"]
            .as_i64()
            .unwrap();
        let midnight = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        assert_eq!(
            retry,
            midnight.timestamp_millis(),
            "the daily quota resets at UTC midnight"
        );
        sim.reset_daily_quota();
        assert_eq!(ask(&sim, "{ users { email } }", json!({})).await.0, 200);
    }
}

#[tokio::test]
async fn mutations_show_in_the_list_and_faults_use_real_bodies() {
    let sim = small().await;
    let now = sim.config().now;
    let late = sim.add_transcript(NewFirefliesTranscript {
        processed: false,
        ..NewFirefliesTranscript::at(now - chrono::Duration::hours(5))
    });
    assert!(
        !sim.transcripts().iter().any(|t| t.id == late),
        "processing: not listed"
    );
    assert!(sim.finish_processing(&late));
    assert!(sim.transcripts().iter().any(|t| t.id == late));
    let first = sim.transcripts()[0].id.clone();
    assert!(sim.delete_transcript(&first));
    assert!(sim.transcript(&first).is_none() && !sim.delete_transcript(&first));
    sim.burst_429(1);
    let (status, body) = ask(&sim, "{ users { email } }", json!({})).await;
    assert!(status == 429 || status == 200, "{status}");
    assert_eq!(body["errors"][0]["code"], "too_many_requests");
    sim.set_faults(FaultConfig {
        malformed_rate: 1.0,
        ..Default::default()
    });
    let (_, body) = ask(&sim, "{ transcripts(limit: 1) { id date } }", json!({})).await;
    let t = &body["data"]["transcripts"][0];
    assert!(sim.is_malformed(t["id"].as_str().unwrap()));
    assert_eq!(t["date"], "yesterday");
}
