//! The HubSpot simulator follows the real API's shapes, limits and errors.
#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use pandora_sync::simulator::{
    FaultConfig, HubSpotEndpoint, HubSpotOAuthApp, HubSpotObject, HubSpotSim, HubSpotSimConfig,
};
use serde_json::{Value, json};

const TOKEN: &str = "sim-hubspot-token";

fn cfg() -> HubSpotSimConfig {
    HubSpotSimConfig {
        companies: 30,
        contacts: 250,
        deals: 120,
        rate_limits: false,
        ..Default::default()
    }
}

async fn get(sim: &HubSpotSim, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(sim: &HubSpotSim, path: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn search_ids(sim: &HubSpotSim, obj: &str, body: Value) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut body = body;
    loop {
        let (status, page) = post(sim, &format!("/crm/v3/objects/{obj}/search"), &body).await;
        assert_eq!(status, 200, "{page}");
        for r in page["results"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().parse().unwrap());
        }
        match page["paging"]["next"]["after"].as_str() {
            Some(a) => body["after"] = json!(a),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn list_pages_through_every_record_once() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let mut ids = Vec::new();
    let mut path = "/crm/v3/objects/contacts?limit=100&properties=email,firstname,jobtitle&associations=companies".to_string();
    loop {
        let (status, page) = get(&sim, &path).await;
        assert_eq!(status, 200);
        for r in page["results"].as_array().unwrap() {
            // Real shape: string ids and property values, ISO timestamps, archived flag.
            assert!(r["id"].is_string());
            assert!(r["properties"]["email"].as_str().unwrap().contains('@'));
            assert!(r["properties"]["lastmodifieddate"].is_string());
            assert!(r["properties"].get("hs_lastmodifieddate").is_none());
            assert_eq!(r["archived"], false);
            assert!(r["createdAt"].as_str().unwrap().ends_with('Z'));
            let company = &r["associations"]["companies"]["results"][0];
            assert_eq!(company["type"], "contact_to_company");
            ids.push(r["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        match page["paging"]["next"]["after"].as_str() {
            Some(after) => {
                path = format!(
                    "/crm/v3/objects/contacts?limit=100&properties=email,firstname,jobtitle&associations=companies&after={after}"
                )
            }
            None => break,
        }
    }
    assert_eq!(ids, (1..=250).collect::<Vec<_>>());
    assert_eq!(sim.counters().get("GET /crm/v3/objects/{object_type}"), 3);

    let (status, body) = get(&sim, "/crm/v3/objects/contacts?limit=101").await;
    assert_eq!(status, 400);
    assert_eq!(body["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn property_values_are_strings_and_truth_matches() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let (_, page) = get(
        &sim,
        "/crm/v3/objects/deals?limit=5&properties=amount,hs_is_closed,closedate,dealname",
    )
    .await;
    let first = &page["results"][0];
    let truth = sim.record(HubSpotObject::Deals, 1).unwrap();
    for p in [
        "amount",
        "hs_is_closed",
        "closedate",
        "dealname",
        "hs_lastmodifieddate",
    ] {
        assert!(first["properties"][p].is_string(), "{p}");
        assert_eq!(
            first["properties"][p].as_str(),
            truth.properties[p].as_deref(),
            "{p}"
        );
    }
    assert!(
        truth.contact_ids.iter().all(|c| {
            let contact = sim.record(HubSpotObject::Contacts, *c).unwrap();
            contact.company_id == truth.company_id
        }),
        "a deal's contacts work at the deal's company"
    );
}

#[tokio::test]
async fn bearer_auth_required() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let resp = reqwest::get(format!("{}/crm/v3/objects/deals", sim.base_url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .get(format!("{}/crm/v3/objects/deals", sim.base_url()))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn archived_records_only_with_archived_true_and_never_in_search() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    assert!(sim.archive(HubSpotObject::Deals, 7));
    assert!(sim.archive(HubSpotObject::Deals, 9));
    assert!(!sim.archive(HubSpotObject::Deals, 999));
    let (_, page) = get(&sim, "/crm/v3/objects/deals?limit=100&archived=true").await;
    let ids: Vec<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["7", "9"]);
    assert_eq!(page["results"][0]["archived"], true);
    assert!(page["results"][0]["archivedAt"].is_string());

    let (_, live) = get(&sim, "/crm/v3/objects/deals?limit=10").await;
    let live_ids: Vec<&str> = live["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(!live_ids.contains(&"7") && !live_ids.contains(&"9"));

    let all = search_ids(&sim, "deals", json!({"limit": 200})).await;
    assert_eq!(all.len(), 118);
    assert!(!all.contains(&7));
    assert_eq!(sim.truth_count(HubSpotObject::Deals, true), 2);
    assert_eq!(sim.truth_count(HubSpotObject::Deals, false), 118);
}

#[tokio::test]
async fn search_filters_on_the_right_modified_property() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let since = Utc::now() - chrono::Duration::seconds(5);
    assert!(sim.modify(HubSpotObject::Contacts, 3, [("jobtitle", "CEO")]));
    assert!(sim.modify(HubSpotObject::Contacts, 40, [("phone", "+1 555 0000")]));
    let new_id = sim.create(HubSpotObject::Contacts, [("email", "new@x.com")]);
    assert_eq!(new_id, 251);
    let ms = since.timestamp_millis().to_string();

    let body = json!({
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": ms}]}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "properties": ["jobtitle", "email"], "limit": 200
    });
    assert_eq!(search_ids(&sim, "contacts", body).await, vec![3, 40, 251]);

    // Contacts have no hs_lastmodifieddate: the filter silently matches nothing.
    let wrong = json!({"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": ms}]}]});
    assert!(search_ids(&sim, "contacts", wrong).await.is_empty());

    // Windowing on hs_object_id and ORed groups.
    let body = json!({
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": ms},
                         {"propertyName": "hs_object_id", "operator": "GT", "value": "3"}]},
            {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "1"}]}
        ],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "limit": 1
    });
    assert_eq!(search_ids(&sim, "contacts", body).await, vec![1, 40, 251]);
}

#[tokio::test]
async fn search_limits_are_enforced() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let path = "/crm/v3/objects/deals/search";
    let (s, body) = post(&sim, path, &json!({"limit": 100, "after": "9901"})).await;
    assert_eq!(
        (s, body["category"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    let (s, _) = post(&sim, path, &json!({"limit": 100, "after": "9900"})).await;
    assert_eq!(s, 200);
    assert_eq!(post(&sim, path, &json!({"limit": 201})).await.0, 400);
    let two_sorts = json!({"sorts": [{"propertyName": "amount"}, {"propertyName": "dealname"}]});
    assert_eq!(post(&sim, path, &two_sorts).await.0, 400);
    let f = json!({"propertyName": "amount", "operator": "GT", "value": "1"});
    let six_groups = json!({"filterGroups": vec![json!({"filters": [f.clone()]}); 6]});
    assert_eq!(post(&sim, path, &six_groups).await.0, 400);
    let seven = json!({"filterGroups": [{"filters": vec![f.clone(); 7]}]});
    assert_eq!(post(&sim, path, &seven).await.0, 400);
    let nineteen = json!({"filterGroups": [{"filters": vec![f.clone(); 6]}, {"filters": vec![f.clone(); 6]}, {"filters": vec![f.clone(); 6]}, {"filters": [f.clone()]}]});
    assert_eq!(post(&sim, path, &nineteen).await.0, 400);
    let bad_op =
        json!({"filters": [{"propertyName": "amount", "operator": "ABOUT", "value": "1"}]});
    assert_eq!(post(&sim, path, &bad_op).await.0, 400);
    let long = json!({"query": "x".repeat(3001)});
    assert_eq!(post(&sim, path, &long).await.0, 400);
}

#[tokio::test]
async fn identical_timestamps_and_search_lag() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let at = Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 59).unwrap();
    sim.stamp(HubSpotObject::Contacts, 1..=120, at);
    let body = json!({
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": at.timestamp_millis().to_string()}]}],
        "limit": 200
    });
    let ids: BTreeSet<u64> = search_ids(&sim, "contacts", body.clone())
        .await
        .into_iter()
        .collect();
    assert_eq!(ids, (1..=120).collect());

    sim.set_search_lag(Duration::from_secs(3600));
    sim.modify(HubSpotObject::Contacts, 200, [("jobtitle", "late")]);
    let recent = json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "200"}]}]});
    assert!(
        search_ids(&sim, "contacts", recent.clone())
            .await
            .is_empty(),
        "lagging write not yet searchable"
    );
    sim.set_search_lag(Duration::ZERO);
    assert_eq!(search_ids(&sim, "contacts", recent).await, vec![200]);
}

#[tokio::test]
async fn associations_batch_read_pages_per_record() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        assoc_page_size: 1,
        ..cfg()
    })
    .await
    .unwrap();
    let path = "/crm/v4/associations/deals/contacts/batch/read";
    let deal = (1..=120)
        .find(|d| {
            sim.record(HubSpotObject::Deals, *d)
                .unwrap()
                .contact_ids
                .len()
                > 1
        })
        .unwrap();
    let truth = sim.record(HubSpotObject::Deals, deal).unwrap().contact_ids;
    let mut got = Vec::new();
    let mut input = json!({"id": deal.to_string()});
    loop {
        let (s, body) = post(&sim, path, &json!({"inputs": [input.clone()]})).await;
        assert_eq!(s, 200);
        let r = &body["results"][0];
        assert_eq!(r["from"]["id"], deal.to_string());
        for t in r["to"].as_array().unwrap() {
            assert_eq!(t["associationTypes"][0]["category"], "HUBSPOT_DEFINED");
            got.push(t["toObjectId"].as_u64().unwrap());
        }
        match r["paging"]["next"]["after"].as_str() {
            Some(a) => input["after"] = json!(a),
            None => break,
        }
    }
    assert_eq!(got, truth);

    let too_many: Vec<Value> = (1..=1001).map(|i| json!({"id": i.to_string()})).collect();
    assert_eq!(post(&sim, path, &json!({"inputs": too_many})).await.0, 400);
    let (s, body) = post(
        &sim,
        path,
        &json!({"inputs": [{"id": "1"}, {"id": "99999"}]}),
    )
    .await;
    assert_eq!(s, 207);
    assert_eq!(body["numErrors"], 1);
}

#[tokio::test]
async fn rate_limits_follow_hubspot() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        rate_limits: true,
        rest_max: 3,
        search_max: 2,
        ..cfg()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/crm/v3/objects/companies", sim.base_url());
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-hubspot-ratelimit-max"], "3");
        assert_eq!(
            r.headers()["x-hubspot-ratelimit-interval-milliseconds"],
            "10000"
        );
        remaining.push(
            r.headers()["x-hubspot-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");

    let search = format!("{}/crm/v3/objects/deals/search", sim.base_url());
    for expected in [200, 200, 429] {
        let r = client
            .post(&search)
            .bearer_auth(TOKEN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
        assert!(
            r.headers().get("x-hubspot-ratelimit-remaining").is_none(),
            "search sends no rate headers"
        );
        if expected == 429 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["policyName"], "SECONDLY");
        }
    }
}

#[tokio::test]
async fn faults_are_injected() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    sim.burst_429(2);
    assert_eq!(get(&sim, "/crm/v3/objects/deals").await.0, 429);
    assert_eq!(get(&sim, "/crm/v3/objects/deals").await.0, 429);
    assert_eq!(get(&sim, "/crm/v3/objects/deals").await.0, 200);

    sim.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..Default::default()
    });
    assert!([500, 502, 503].contains(&get(&sim, "/crm/v3/objects/deals").await.0));

    sim.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..Default::default()
    });
    let sent = reqwest::Client::new()
        .get(format!("{}/crm/v3/objects/deals", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await;
    let broke = match sent {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(broke, "the connection drops mid-response");

    sim.set_faults(FaultConfig {
        malformed_rate: 0.5,
        ..Default::default()
    });
    let (_, page) = get(&sim, "/crm/v3/objects/deals?limit=100").await;
    let malformed = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["properties"].is_object())
        .count();
    assert!((20..80).contains(&malformed), "{malformed}");
    let first_bad = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| !r["properties"].is_object())
        .unwrap();
    let id: u64 = first_bad["id"].as_str().unwrap().parse().unwrap();
    assert!(sim.is_malformed(HubSpotObject::Deals, id));

    sim.set_faults(FaultConfig::default());
    sim.counters().reset();
    get(&sim, "/crm/v3/objects/deals").await;
    assert_eq!(sim.counters().total(), 1);
}

#[tokio::test]
async fn oauth_refresh_issues_working_tokens() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        oauth: Some(HubSpotOAuthApp {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            refresh_token: "rt".into(),
            expires_in: 1800,
        }),
        ..cfg()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let token_url = format!("{}/oauth/v1/token", sim.base_url());
    let bad = client
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let ok: Value = client
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=rt")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["expires_in"], 1800);
    let access = ok["access_token"].as_str().unwrap();
    let r = client
        .get(format!("{}/crm/v3/objects/deals", sim.base_url()))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_million_records_cost_no_memory() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        contacts: 1_000_000,
        ..cfg()
    })
    .await
    .unwrap();
    let last = sim.record(HubSpotObject::Contacts, 1_000_000).unwrap();
    assert!(
        last.properties["email"]
            .as_deref()
            .unwrap()
            .contains("1000000@")
    );
    assert!(sim.record(HubSpotObject::Contacts, 1_000_001).is_none());
    assert_eq!(sim.truth_count(HubSpotObject::Contacts, false), 1_000_000);
    // Deterministic: a second simulator with the same seed serves the same record.
    let again = HubSpotSim::start(HubSpotSimConfig {
        contacts: 1_000_000,
        ..cfg()
    })
    .await
    .unwrap();
    assert_eq!(
        again.record(HubSpotObject::Contacts, 777_777),
        sim.record(HubSpotObject::Contacts, 777_777)
    );
}

/// A hook changes data between two pages; search answers from live data, and its `after`
/// is an offset into the live result set, as in the real API: a record leaving the set
/// shifts every later offset (the simulator reproduces the skip offset paging suffers).
#[tokio::test]
async fn hooks_change_data_between_pages_and_offsets_shift() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    sim.stamp(HubSpotObject::Contacts, 1..=30, at);
    let until = at.timestamp_millis() + 1;
    let body = json!({
        "filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": at.timestamp_millis().to_string()},
            {"propertyName": "lastmodifieddate", "operator": "LTE", "value": until.to_string()},
        ]}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": 10,
    });
    sim.after_served(
        HubSpotEndpoint::Search(HubSpotObject::Contacts),
        1,
        |portal| {
            // Records 1..=3 (already served) are modified now: they leave the `LTE` window.
            for id in 1..=3 {
                assert!(portal.modify(HubSpotObject::Contacts, id, [("jobtitle", "moved")]));
            }
        },
    );
    let ids = search_ids(&sim, "contacts", body).await;
    // Page 1 had 1..=10; page 2 (offset 10 of 27 left) starts at 14: 11..=13 are skipped.
    assert_eq!(&ids[..10], (1..=10).collect::<Vec<_>>().as_slice());
    assert_eq!(ids[10], 14);
    assert_eq!(ids.len(), 27);
    assert_eq!(
        sim.record(HubSpotObject::Contacts, 2).unwrap().properties["jobtitle"].as_deref(),
        Some("moved")
    );
    // A hook runs once.
    assert_eq!(
        sim.counters()
            .get("POST /crm/v3/objects/{object_type}/search"),
        3
    );
}

/// The daily quota answers HubSpot's `DAILY` 429 (body and headers); the account details
/// give the time zone.
#[tokio::test]
async fn daily_quota_and_account_details() {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        daily_limit: Some(2),
        time_zone: "US/Eastern".into(),
        utc_offset_ms: -18_000_000,
        ..cfg()
    })
    .await
    .unwrap();
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/crm/v3/objects/contacts?limit=5",
            sim.base_url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-hubspot-ratelimit-daily"], "2");
    assert_eq!(resp.headers()["x-hubspot-ratelimit-daily-remaining"], "1");
    assert_eq!(get(&sim, "/crm/v3/objects/contacts?limit=5").await.0, 200);
    let resp = reqwest::Client::new()
        .post(format!("{}/crm/v3/objects/contacts/search", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-hubspot-ratelimit-daily-remaining"], "0");
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["policyName"], "DAILY");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["message"], "You have reached your daily limit.");
    let (status, details) = get(&sim, "/account-info/v3/details").await;
    assert_eq!(status, 200);
    assert_eq!(details["timeZone"], "US/Eastern");
    assert_eq!(details["utcOffset"], "-05:00");
    assert_eq!(details["utcOffsetMilliseconds"], -18_000_000);
    sim.reset_daily_quota();
    assert_eq!(get(&sim, "/crm/v3/objects/deals?limit=1").await.0, 200);
    sim.exhaust_daily_quota();
    assert_eq!(get(&sim, "/crm/v3/objects/deals?limit=1").await.0, 429);
}

/// Absurd offsets from a client are validation errors, not a crashed simulator.
#[tokio::test]
async fn huge_offsets_are_rejected() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    let (status, _) = post(
        &sim,
        "/crm/v3/objects/contacts/search",
        &json!({"limit": 10, "after": u64::MAX.to_string()}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &sim,
        "/crm/v4/associations/deals/contacts/batch/read",
        &json!({"inputs": [{"id": "1", "after": u64::MAX.to_string()}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["results"][0]["paging"].is_null());
}

/// A search without filters or sort (the connector's total) pages through every live record
/// once, oldest created first (ties by id), whatever page the offset lands on, and reports
/// the live count as its total; archived records are left out.
#[tokio::test]
async fn unfiltered_search_pages_live_records_oldest_created_first() {
    let sim = HubSpotSim::start(cfg()).await.unwrap();
    for id in [5, 17, 200] {
        assert!(sim.archive(HubSpotObject::Contacts, id));
    }
    let mut expected: Vec<(chrono::DateTime<chrono::Utc>, u64)> = sim
        .records(HubSpotObject::Contacts)
        .filter(|r| r.archived_at.is_none())
        .map(|r| (r.created_at, r.id))
        .collect();
    expected.sort();
    let expected: Vec<u64> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(expected.len(), 247);

    let ids = search_ids(
        &sim,
        "contacts",
        json!({"limit": 7, "properties": ["email"]}),
    )
    .await;
    assert_eq!(ids, expected);

    let (status, page) = post(
        &sim,
        "/crm/v3/objects/contacts/search",
        &json!({"limit": 1, "after": "246"}),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], json!(247));
    assert_eq!(page["results"][0]["id"], json!(expected[246].to_string()));
    assert!(
        page["paging"].is_null(),
        "the last page has no next: {page}"
    );
}
