//! The Gong simulator follows the real API's shapes, paging, limits and errors.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use pandora_sync::simulator::{
    FaultConfig, GongAffiliation, GongSim, GongSimConfig, NO_CALLS_FOUND, NewGongCall,
};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn cfg() -> GongSimConfig {
    GongSimConfig {
        users: 4,
        calls: 300,
        days: 30,
        now: now(),
        rate_limits: false,
        ..Default::default()
    }
}

fn basic(sim: &GongSim) -> String {
    let c = sim.config();
    let raw = format!("{}:{}", c.access_key, c.access_key_secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn get(sim: &GongSim, path: &str) -> Reply {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .header("authorization", basic(sim))
        .send()
        .await
        .unwrap();
    reply(resp).await
}

async fn post(sim: &GongSim, path: &str, body: &Value) -> Reply {
    post_auth(sim, path, body, Some(&basic(sim))).await
}

async fn post_auth(sim: &GongSim, path: &str, body: &Value, auth: Option<&str>) -> Reply {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .json(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    reply(req.send().await.unwrap()).await
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    Reply {
        status,
        retry_after,
        body: resp.json().await.unwrap_or(Value::Null),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn filter(from: DateTime<Utc>, to: DateTime<Utc>, users: &[String]) -> Value {
    let mut f = json!({"fromDateTime": iso(from), "toDateTime": iso(to)});
    if !users.is_empty() {
        f["primaryUserIds"] = json!(users);
    }
    json!({"filter": f, "contentSelector": {"context": "None", "exposedFields": {"parties": true}}})
}

/// Every call id the extensive endpoint returns for `body`, following body cursors.
async fn all_ids(sim: &GongSim, mut body: Value) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let r = post(sim, "/v2/calls/extensive", &body).await;
        if r.status == 404 {
            return ids;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        for c in r.body["calls"].as_array().unwrap() {
            ids.push(c["metaData"]["id"].as_str().unwrap().to_owned());
        }
        match r.body["records"]["cursor"].as_str() {
            Some(c) => body["cursor"] = json!(c),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn users_page_by_100_with_a_cursor_only_while_more_remain() {
    let sim = GongSim::start(GongSimConfig {
        users: 250,
        calls: 0,
        ..cfg()
    })
    .await
    .unwrap();
    let mut path = "/v2/users".to_owned();
    let mut sizes = Vec::new();
    let mut ids = BTreeSet::new();
    loop {
        let r = get(&sim, &path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let b = &r.body;
        assert!(b["requestId"].is_string());
        assert_eq!(b["records"]["totalRecords"], 250);
        assert_eq!(b["records"]["currentPageNumber"], sizes.len());
        let users = b["users"].as_array().unwrap();
        assert_eq!(b["records"]["currentPageSize"], users.len());
        sizes.push(users.len());
        for u in users {
            assert!(
                u["id"]
                    .as_str()
                    .unwrap()
                    .bytes()
                    .all(|c| c.is_ascii_digit())
            );
            assert!(u["emailAddress"].as_str().unwrap().contains('@'));
            assert_eq!(u["active"], true);
            for key in [
                "firstName",
                "lastName",
                "title",
                "created",
                "settings",
                "spokenLanguages",
            ] {
                assert!(u.get(key).is_some(), "{key}");
            }
            ids.insert(u["id"].as_str().unwrap().to_owned());
        }
        match b["records"]["cursor"].as_str() {
            Some(c) => path = format!("/v2/users?cursor={c}"),
            None => break,
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(ids.len(), 250);
    let bad = get(&sim, "/v2/users?cursor=nonsense").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["errors"][0].is_string());
}

#[tokio::test]
async fn calls_have_the_real_shape_and_follow_the_filter() {
    let sim = GongSim::start(cfg()).await.unwrap();
    let host = sim.users()[1].id.clone();
    let from = now() - chrono::Duration::days(20);
    let to = now() - chrono::Duration::days(5);
    let r = post(
        &sim,
        "/v2/calls/extensive",
        &filter(from, to, std::slice::from_ref(&host)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let calls = r.body["calls"].as_array().unwrap();
    assert!(!calls.is_empty());
    let mut seen_affiliations = BTreeSet::new();
    for c in calls {
        let m = &c["metaData"];
        let id = m["id"].as_str().unwrap();
        assert!(id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(m["primaryUserId"], json!(host));
        let started = DateTime::parse_from_rfc3339(m["started"].as_str().unwrap()).unwrap();
        assert!(started >= from && started < to);
        assert!(m["duration"].is_u64(), "duration is a number of seconds");
        assert_eq!(m["url"], json!(format!("https://app.gong.io/call?id={id}")));
        for key in [
            "title",
            "scheduled",
            "direction",
            "system",
            "scope",
            "media",
            "language",
            "workspaceId",
            "isPrivate",
        ] {
            assert!(m.get(key).is_some(), "metaData.{key}");
        }
        // The truth API agrees with the wire.
        let truth = sim.call(id).unwrap();
        assert_eq!(m["title"], json!(truth.title));
        assert_eq!(started, truth.started);
        let parties = c["parties"].as_array().unwrap();
        assert_eq!(parties.len(), truth.parties.len());
        let host_party = parties.iter().find(|p| p["userId"] == json!(host)).unwrap();
        assert_eq!(host_party["affiliation"], "Internal");
        assert_eq!(
            host_party["emailAddress"],
            json!(sim.user(&host).unwrap().email)
        );
        for p in parties {
            let a = p["affiliation"].as_str().unwrap();
            seen_affiliations.insert(a.to_owned());
            assert_eq!(p.get("userId").is_some(), a == "Internal", "{p}");
        }
    }
    assert!(seen_affiliations.contains("External"));
    // Every call of the range, no other: the same as the truth API.
    let got = all_ids(&sim, filter(from, to, std::slice::from_ref(&host))).await;
    let want: Vec<String> = sim
        .truth_calls(from, to, &[host])
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(got, want);
    // Without `exposedFields.parties`, no parties.
    let r = post(
        &sim,
        "/v2/calls/extensive",
        &json!({"filter": {"fromDateTime": iso(from), "toDateTime": iso(to)}}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body["calls"][0].get("parties").is_none());
    // Unknown affiliations and the whole spread over all users exist in the data.
    let all = sim.truth_calls(now() - chrono::Duration::days(30), now(), &[]);
    assert_eq!(all.len(), 300);
    assert!(all.iter().any(|c| {
        c.parties
            .iter()
            .any(|p| p.affiliation == GongAffiliation::Unknown)
    }));
    assert!(all.iter().any(|c| c.scope == "Internal"));
    let hosts: BTreeSet<&str> = all.iter().map(|c| c.primary_user_id.as_str()).collect();
    assert_eq!(hosts.len(), 4);
}

/// `filter.primaryUserIds` is a list: the calls hosted by any of its users, paged like any
/// other listing; duplicates and ids of no user are harmless; what is not a list of ids is
/// a 400 naming the field.
#[tokio::test]
async fn primary_user_ids_is_a_list_of_hosts() {
    let sim = GongSim::start(GongSimConfig {
        users: 6,
        calls: 600,
        ..cfg()
    })
    .await
    .unwrap();
    let users: Vec<String> = sim.users().into_iter().map(|u| u.id).collect();
    let (from, to) = (now() - chrono::Duration::days(30), now());
    let some = vec![users[5].clone(), users[0].clone(), users[3].clone()];
    sim.clear_primary_user_ids_log();
    let got = all_ids(&sim, filter(from, to, &some)).await;
    let want: Vec<String> = sim
        .truth_calls(from, to, &some)
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(want.len() > 200, "several pages: {}", want.len());
    assert_eq!(got, want, "start-time order across the hosts");
    let pages = want.len().div_ceil(100);
    assert_eq!(sim.primary_user_ids_log(), vec![Some(some.clone()); pages]);
    // The union of the single-host listings, nothing else.
    let mut union = BTreeSet::new();
    for u in &some {
        let mine = all_ids(&sim, filter(from, to, std::slice::from_ref(u))).await;
        assert!(
            mine.iter()
                .all(|id| sim.call(id).unwrap().primary_user_id == *u)
        );
        union.extend(mine);
    }
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), union);
    // Duplicates and unknown ids.
    let odd = vec![users[1].clone(), users[1].clone(), "999".to_owned()];
    let got = all_ids(&sim, filter(from, to, &odd)).await;
    let want: Vec<String> = sim
        .truth_calls(from, to, std::slice::from_ref(&users[1]))
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(got, want);
    for bad in [
        json!([["1"]]),
        json!([{"id": "1"}]),
        json!({"0": "1"}),
        json!(true),
    ] {
        let r = post(
            &sim,
            "/v2/calls/extensive",
            &json!({"filter": {"fromDateTime": iso(from), "primaryUserIds": bad}}),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.body["errors"][0]
                .as_str()
                .unwrap()
                .contains("primaryUserIds"),
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn from_is_inclusive_and_to_exclusive_on_the_start_time() {
    let sim = GongSim::start(cfg()).await.unwrap();
    let call = sim
        .truth_calls(now() - chrono::Duration::days(10), now(), &[])
        .remove(0);
    let t = call.started;
    let at = |from: DateTime<Utc>, to: DateTime<Utc>| json!({"filter": {"fromDateTime": iso(from), "toDateTime": iso(to), "callIds": [call.id]}});
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        all_ids(&sim, at(t, t + hour)).await,
        std::slice::from_ref(&call.id)
    );
    assert!(all_ids(&sim, at(t - hour, t)).await.is_empty());
    // Offsets are honoured: the same instant written in -07:00.
    let local = t.with_timezone(&chrono::FixedOffset::west_opt(7 * 3600).unwrap());
    let body = json!({"filter": {"fromDateTime": local.to_rfc3339(), "callIds": [call.id]}});
    assert_eq!(all_ids(&sim, body).await, std::slice::from_ref(&call.id));
}

#[tokio::test]
async fn pages_of_100_and_the_cursor_is_read_only_from_the_body() {
    let sim = GongSim::start(GongSimConfig {
        users: 1,
        calls: 250,
        ..cfg()
    })
    .await
    .unwrap();
    let body = filter(now() - chrono::Duration::days(30), now(), &[]);
    let first = post(&sim, "/v2/calls/extensive", &body).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["records"]["totalRecords"], 250);
    assert_eq!(first.body["calls"].as_array().unwrap().len(), 100);
    let cursor = first.body["records"]["cursor"].as_str().unwrap().to_owned();
    let first_ids: Vec<Value> = first.body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metaData"]["id"].clone())
        .collect();

    // In the query string the cursor is ignored: page 1 again (Pipedream's bug).
    let again = post(&sim, &format!("/v2/calls/extensive?cursor={cursor}"), &body).await;
    let again_ids: Vec<Value> = again.body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metaData"]["id"].clone())
        .collect();
    assert_eq!(again_ids, first_ids);

    let mut with_cursor = body.clone();
    with_cursor["cursor"] = json!(cursor);
    let second = post(&sim, "/v2/calls/extensive", &with_cursor).await;
    assert_eq!(second.body["records"]["currentPageNumber"], 1);
    assert_eq!(second.body["calls"].as_array().unwrap().len(), 100);
    assert_ne!(second.body["calls"][0]["metaData"]["id"], first_ids[0]);
    let ids = all_ids(&sim, body).await;
    assert_eq!(ids.len(), 250);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        250,
        "no call twice"
    );

    // The last page has no cursor; a bad cursor is a 400.
    let mut bad = filter(now() - chrono::Duration::days(30), now(), &[]);
    bad["cursor"] = json!("not-a-cursor");
    let r = post(&sim, "/v2/calls/extensive", &bad).await;
    assert_eq!(r.status, 400);
    assert!(r.body["errors"][0].as_str().unwrap().contains("cursor"));
}

#[tokio::test]
async fn nothing_matching_is_a_404_with_gongs_body() {
    let sim = GongSim::start(cfg()).await.unwrap();
    let user = sim.users()[0].id.clone();
    for body in [
        filter(
            now() + chrono::Duration::days(1),
            now() + chrono::Duration::days(2),
            &[],
        ),
        filter(
            now() - chrono::Duration::days(1),
            now() - chrono::Duration::days(1),
            &[],
        ),
        filter(now() - chrono::Duration::days(30), now(), &["999".into()]),
        json!({"filter": {"callIds": ["123"]}}),
        json!({"filter": {"workspaceId": "other", "primaryUserIds": [user]}}),
    ] {
        let r = post(&sim, "/v2/calls/extensive", &body).await;
        assert_eq!(r.status, 404, "{body}");
        assert!(r.body["requestId"].is_string());
        assert_eq!(r.body["errors"], json!([NO_CALLS_FOUND]));
    }
    for (body, what) in [
        (
            json!({"filter": {"fromDateTime": "yesterday"}}),
            "fromDateTime",
        ),
        (json!({"filter": {"primaryUserIds": "1"}}), "primaryUserIds"),
        (json!({"cursor": "x"}), "filter"),
        (
            filter(now(), now() - chrono::Duration::days(1), &[]),
            "fromDateTime",
        ),
    ] {
        let r = post(&sim, "/v2/calls/extensive", &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.body["errors"][0].as_str().unwrap().contains(what),
            "{}",
            r.body
        );
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/calls/extensive", sim.base_url()))
        .header("authorization", basic(&sim))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn basic_auth_with_the_access_key_and_secret() {
    let sim = GongSim::start(GongSimConfig {
        bearer_token: Some("oauth-token".into()),
        ..cfg()
    })
    .await
    .unwrap();
    let body = filter(now() - chrono::Duration::days(3), now(), &[]);
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:nope", sim.config().access_key))
    );
    for auth in [
        None,
        Some(wrong.as_str()),
        Some("Bearer nope"),
        Some("Basic %%%"),
    ] {
        let r = post_auth(&sim, "/v2/calls/extensive", &body, auth).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.body["errors"][0].is_string());
    }
    assert_eq!(post(&sim, "/v2/calls/extensive", &body).await.status, 200);
    let r = post_auth(
        &sim,
        "/v2/calls/extensive",
        &body,
        Some("Bearer oauth-token"),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn three_requests_per_second_then_429_with_retry_after() {
    let sim = GongSim::start(GongSimConfig {
        rate_limits: true,
        ..cfg()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let r = get(&sim, "/v2/users").await;
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
        }
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(statuses, [200, 200, 200, 429, 429]);
    }
    let r = limited.expect("the fourth request within a second is limited");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(r.body["errors"][0].as_str().unwrap().contains("rate limit"));
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(get(&sim, "/v2/users").await.status, 200, "a slot freed up");
}

#[tokio::test]
async fn the_daily_cap_answers_429_until_a_slot_frees_up() {
    let sim = GongSim::start(GongSimConfig {
        rate_limits: true,
        rate_max: 1_000,
        daily_cap: 5,
        ..cfg()
    })
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(get(&sim, "/v2/users").await.status, 200);
    }
    let r = get(&sim, "/v2/users").await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!(wait > 86_000 && wait <= 86_400, "{wait}");
    assert!(r.body["errors"][0].as_str().unwrap().contains("daily"));
    assert_eq!(sim.counters().get("GET /v2/users"), 6);
}

#[tokio::test]
async fn faults_are_injected() {
    let sim = GongSim::start(cfg()).await.unwrap();
    sim.burst_429(2);
    let body = filter(now() - chrono::Duration::days(30), now(), &[]);
    for _ in 0..2 {
        let r = post(&sim, "/v2/calls/extensive", &body).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
    assert_eq!(post(&sim, "/v2/calls/extensive", &body).await.status, 200);
    sim.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..Default::default()
    });
    let r = post(&sim, "/v2/calls/extensive", &body).await;
    assert!([500, 502, 503].contains(&r.status), "{}", r.status);
    sim.set_faults(FaultConfig {
        malformed_rate: 0.2,
        ..Default::default()
    });
    let r = post(&sim, "/v2/calls/extensive", &body).await;
    let mut malformed = 0;
    for c in r.body["calls"].as_array().unwrap() {
        let id = c["metaData"]["id"].as_str().unwrap();
        assert_eq!(c["parties"].is_string(), sim.is_malformed(id));
        malformed += usize::from(sim.is_malformed(id));
    }
    assert!(malformed > 0);
    assert_eq!(sim.counters().get("POST /v2/calls/extensive"), 5);
    assert_eq!(sim.counters().total(), 5);
}

#[tokio::test]
async fn mutations_show_up_and_the_truth_follows() {
    let sim = GongSim::start(cfg()).await.unwrap();
    let users = sim.users();
    let (ada, bob) = (users[0].id.clone(), users[1].id.clone());
    let window = (
        now() - chrono::Duration::days(30),
        now() + chrono::Duration::days(1),
    );
    let before = sim
        .truth_calls(window.0, window.1, std::slice::from_ref(&ada))
        .len();

    let added = sim
        .add_call(
            NewGongCall::new(ada.clone(), now() + chrono::Duration::minutes(30))
                .title("Fresh call"),
        )
        .unwrap();
    assert!(
        sim.add_call(NewGongCall::new("42", now())).is_none(),
        "unknown host"
    );
    let old = sim.truth_calls(window.0, window.1, std::slice::from_ref(&ada))[3].clone();
    assert!(sim.modify_call(&old.id, |c| {
        c.title = "Renamed".into();
        c.primary_user_id = bob.clone();
        c.parties.truncate(1);
    }));
    assert!(!sim.modify_call("1", |_| {}));

    let ada_calls = sim.truth_calls(window.0, window.1, std::slice::from_ref(&ada));
    assert_eq!(
        ada_calls.len(),
        before,
        "one added, one moved to another host"
    );
    assert_eq!(ada_calls.last().unwrap().id, added, "in start-time order");
    assert_eq!(ada_calls.last().unwrap().title, "Fresh call");
    let moved = sim.call(&old.id).unwrap();
    assert_eq!(
        (moved.title.as_str(), moved.primary_user_id.as_str()),
        ("Renamed", bob.as_str())
    );
    assert_eq!(moved.started, old.started);
    // The endpoint agrees with the truth.
    let got = all_ids(&sim, filter(window.0, window.1, std::slice::from_ref(&bob))).await;
    let want: Vec<String> = sim
        .truth_calls(window.0, window.1, std::slice::from_ref(&bob))
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(want.contains(&old.id));
    assert_eq!(got, want);
    let got = all_ids(&sim, filter(window.0, window.1, std::slice::from_ref(&ada))).await;
    assert_eq!(
        got,
        ada_calls.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );

    assert!(sim.deactivate_user(&bob));
    assert!(!sim.deactivate_user("12"));
    let r = get(&sim, "/v2/users").await;
    let listed = r.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == json!(bob))
        .unwrap()
        .clone();
    assert_eq!(listed["active"], false);
    assert!(!sim.active_user_ids().contains(&bob));
    let carol = sim.add_user("Carol", "Shaw", "carol@pandora-demo.example");
    assert_eq!(sim.users().len(), 5);
    assert!(sim.active_user_ids().contains(&carol));
    assert_eq!(sim.call_count(), 301);
    assert_eq!(sim.calls().count(), 301);
}

#[tokio::test]
async fn a_million_calls_cost_no_memory() {
    let sim = GongSim::start(GongSimConfig {
        users: 50,
        calls: 1_000_000,
        days: 365,
        ..cfg()
    })
    .await
    .unwrap();
    assert_eq!(sim.call_count(), 1_000_000);
    let host = sim.users()[7].id.clone();
    let from = now() - chrono::Duration::days(200);
    let to = from + chrono::Duration::days(1);
    let got = all_ids(&sim, filter(from, to, std::slice::from_ref(&host))).await;
    let want: Vec<String> = sim
        .truth_calls(from, to, &[host])
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // Same seed, same data.
    let again = GongSim::start(GongSimConfig {
        users: 50,
        calls: 1_000_000,
        days: 365,
        ..cfg()
    })
    .await
    .unwrap();
    let id = want[0].clone();
    assert_eq!(again.call(&id), sim.call(&id));
}
