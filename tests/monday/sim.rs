//! The monday simulator as any GraphQL client sees it: queries phrased many ways, the real
//! error shapes, auth and `API-Version`.

use std::time::Duration;

use pandora_sync::simulator::{MondaySim, MondaySimConfig};
use serde_json::{Value, json};

async fn post(sim: &MondaySim, token: &str, version: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v2", sim.base_url()))
        .header("Authorization", token)
        .json(&body);
    if let Some(v) = version {
        req = req.header("API-Version", v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn sim() -> MondaySim {
    MondaySim::start(MondaySimConfig {
        boards: 3,
        items_per_board: 7,
        first_board_items: 7,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn queries_with_aliases_fragments_inline_arguments_and_directives() {
    let sim = sim().await;
    let token = sim.config().api_token.clone();
    let board = sim.boards()[1].id.clone();
    let q = format!(
        r#"query Named($n: Int = 2, $skipUsers: Boolean!) {{
  budget: complexity {{ before query }}
  first: boards(ids: [{board}]) {{ ...B }}
  people: users(limit: $n) @skip(if: $skipUsers) {{ id }}
}}
fragment B on Board {{ id title: name columns {{ id type }} items_page(limit: 3) {{ cursor items {{ ... on Item {{ id __typename }} }} }} }}"#
    );
    let (status, body) = post(
        &sim,
        &token,
        Some("2025-10"),
        json!({"query": q, "variables": {"skipUsers": true}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let b = &body["data"]["first"][0];
    assert_eq!(b["id"], json!(board));
    assert!(b["title"].as_str().unwrap().ends_with(" 2"));
    assert_eq!(b["items_page"]["items"].as_array().unwrap().len(), 3);
    assert_eq!(b["items_page"]["items"][0]["__typename"], "Item");
    assert!(b["items_page"]["cursor"].is_string());
    assert!(body["data"].get("people").is_none(), "@skip honoured");
    assert!(body["data"]["budget"]["query"].as_u64().unwrap() > 0);
    // Column ids differ per board.
    let ids = |i: usize| sim.boards()[i].status_column_id().unwrap().to_owned();
    assert_ne!(ids(0), ids(1));

    // Unknown fields and bad syntax are GraphQL errors on HTTP 200.
    let (status, body) = post(&sim, &token, None, json!({"query": "{ boards { nope } }"})).await;
    assert_eq!(status, 200);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{body}"
    );
    let (status, body) = post(&sim, &token, None, json!({"query": "{ boards { id "})).await;
    assert_eq!((status, body["data"].clone()), (200, Value::Null));
    assert!(body["errors"].is_array());
    // The API-Version header is recorded; none means the current version.
    let versions: Vec<_> = sim
        .requests()
        .iter()
        .map(|r| r.api_version.clone())
        .collect();
    assert_eq!(versions, [Some("2025-10".to_owned()), None, None]);
}

#[tokio::test]
async fn auth_and_complexity_errors_have_the_real_shapes() {
    let sim = MondaySim::start(MondaySimConfig {
        complexity_per_minute: 1_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = post(&sim, "nope", None, json!({"query": "{ me { id } }"})).await;
    assert_eq!(status, 401, "{body}");
    let token = sim.config().api_token.clone();
    let (status, _) = post(
        &sim,
        &format!("Bearer {token}"),
        None,
        json!({"query": "{ me { id } }"}),
    )
    .await;
    assert_eq!(status, 200, "Bearer is accepted too");
    let q =
        json!({"query": "{ boards(limit: 100) { id columns { id title type settings_str } } }"});
    let (status, body) = post(&sim, &token, Some("2025-10"), q.clone()).await;
    assert_eq!(status, 200);
    let ext = &body["errors"][0]["extensions"];
    assert_eq!(ext["code"], "COMPLEXITY_BUDGET_EXHAUSTED", "{body}");
    assert!(ext["retry_in_seconds"].as_u64().unwrap() <= 60);
    assert_eq!(ext["complexity_budget_limit"], 1_000);
    // API versions before 2025-01 get the legacy top-level form.
    let (status, body) = post(&sim, &token, Some("2024-10"), q).await;
    assert_eq!(status, 200);
    assert_eq!(body["error_code"], "ComplexityException", "{body}");
    assert!(body["error_message"].as_str().unwrap().contains("reset in"));
}

#[tokio::test]
async fn cursors_expire_and_filters_follow_the_sdk_forms() {
    let sim = MondaySim::start(MondaySimConfig {
        boards: 1,
        first_board_items: 12,
        cursor_ttl: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let token = sim.config().api_token.clone();
    let board = sim.boards()[0].id.clone();
    let mut items = sim.items();
    items.sort_by_key(|i| (i.updated_at, i.id.clone()));
    let from = items[4].updated_at.to_rfc3339();
    let q = "query ($b: [ID!], $qp: ItemsQuery) { boards(ids: $b) { items_page(limit: 2, query_params: $qp) { cursor items { id updated_at } } } }";
    let qp = json!({"rules": [{"column_id": "__last_updated__", "compare_value": ["EXACT", from], "operator": "greater_than_or_equals", "compare_attribute": "UPDATED_AT"}],
                    "order_by": [{"column_id": "__last_updated__", "direction": "asc"}]});
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": q, "variables": {"b": [board], "qp": qp}}),
    )
    .await;
    let page = &body["data"]["boards"][0]["items_page"];
    let got: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        [items[4].id.clone(), items[5].id.clone()],
        "ascending from the bound"
    );
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let next =
        "query ($c: String!) { next_items_page(cursor: $c, limit: 2) { cursor items { id } } }";
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": next, "variables": {"c": cursor}}),
    )
    .await;
    let next_cursor = body["data"]["next_items_page"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next_cursor, cursor, "each page has its own cursor");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = post(
        &sim,
        &token,
        None,
        json!({"query": next, "variables": {"c": next_cursor}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CursorExpiredError",
        "{body}"
    );
    // `between`, and an operator monday does not take on this column.
    let between = json!({"rules": [{"column_id": "__last_updated__", "compare_value": [items[2].updated_at.to_rfc3339(), items[3].updated_at.to_rfc3339()], "operator": "between"}]});
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": q, "variables": {"b": [board], "qp": between}}),
    )
    .await;
    assert_eq!(
        body["data"]["boards"][0]["items_page"]["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let bad = json!({"rules": [{"column_id": "__last_updated__", "compare_value": [from], "operator": "contains_text"}]});
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": q, "variables": {"b": [board], "qp": bad}}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "no_operator_config"
    );
}

#[tokio::test]
async fn mutations_change_the_truth_and_validate_labels() {
    let sim = sim().await;
    let token = sim.config().api_token.clone();
    let board = sim.boards()[0].clone();
    let m = "mutation ($b: ID!, $n: String!, $v: JSON) { create_item(board_id: $b, item_name: $n, column_values: $v) { id state } }";
    let values = json!({board.status_column_id().unwrap(): {"label": "Stuck"}, board.date_column_id().unwrap(): {"date": "2026-01-02"}}).to_string();
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": m, "variables": {"b": board.id, "n": "A \"quoted\" name", "v": values}}),
    )
    .await;
    let id = body["data"]["create_item"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let item = sim.item(&id).unwrap();
    assert_eq!(item.name, "A \"quoted\" name");
    assert_eq!(sim.status_label(&item).as_deref(), Some("Stuck"));
    // An unknown label is refused unless labels may be created.
    let change = "mutation ($b: ID!, $i: ID!, $v: JSON!, $c: Boolean) { change_multiple_column_values(board_id: $b, item_id: $i, column_values: $v, create_labels_if_missing: $c) { id } }";
    let v = json!({board.status_column_id().unwrap(): {"label": "Shipped"}}).to_string();
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": change, "variables": {"b": board.id, "i": id, "v": v}}),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "ColumnValueException",
        "{body}"
    );
    let (_, body) = post(
        &sim,
        &token,
        None,
        json!({"query": change, "variables": {"b": board.id, "i": id, "v": v, "c": true}}),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        sim.status_label(&sim.item(&id).unwrap()).as_deref(),
        Some("Shipped")
    );
    // Archive and delete: gone from items_page, still in items(ids) with their state.
    let (_, _) = post(&sim, &token, None, json!({"query": "mutation ($i: ID!) { archive_item(item_id: $i) { id } }", "variables": {"i": id}})).await;
    let (_, body) = post(&sim, &token, None, json!({"query": "query ($i: [ID!]) { items(ids: $i) { id state } }", "variables": {"i": [id]}})).await;
    assert_eq!(body["data"]["items"][0]["state"], "archived");
    let (_, body) = post(&sim, &token, None, json!({"query": "query ($b: [ID!]) { boards(ids: $b) { activity_logs { event data } } }", "variables": {"b": [board.id]}})).await;
    assert_eq!(
        body["data"]["boards"][0]["activity_logs"][0]["event"],
        "archive_pulse"
    );
}
