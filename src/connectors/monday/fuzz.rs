//! Property tests: arbitrary JSON through the item decoder and transform, the board plan
//! (column settings), the column value readers and the stored checkpoint. Nothing panics;
//! failures are values.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::transform::{BoardPlan, decode, people_ids, task};
use super::types::{BoardDef, GqlResponse};
use crate::connector::Checkpoint;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        Just(json!("2024-05-01T09:30:15Z")),
        Just(json!("+262143-12-31T23:59:59Z")),
        Just(json!(
            "{\"labels\":{\"1\":\"Done\"},\"done_colors\":[1, -4, 1e300, \"x\"]}"
        )),
        Just(json!(
            "{\"personsAndTeams\":[{\"id\":\"x\"},{\"id\":1e99}]}"
        )),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("updated_at".to_owned()),
                    Just("created_at".to_owned()),
                    Just("column_values".to_owned()),
                    Just("value".to_owned()),
                    Just("text".to_owned()),
                    Just("type".to_owned()),
                    Just("settings_str".to_owned()),
                    Just("columns".to_owned()),
                    Just("group".to_owned()),
                    Just("groups".to_owned()),
                    ".{0,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn items_and_boards_never_panic(raw in arb_json(), board in arb_json()) {
        let plan = serde_json::from_value::<BoardDef>(board).map(|b| BoardPlan::of(&b)).unwrap_or_default();
        let _ = plan.first_done_label();
        let emails = HashMap::from([("1".to_owned(), "a@x.com".to_owned())]);
        if let Ok(item) = decode(raw.clone()) {
            let _ = task(Uuid::nil(), &plan, &emails, item);
        }
        let _ = people_ids(Some(&raw));
        let _ = serde_json::from_value::<GqlResponse<Value>>(raw.clone());
        let _ = Checkpoint::from_json(&raw);
    }

    #[test]
    fn bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<GqlResponse<Value>>(&bytes);
        let _ = serde_json::from_slice::<Value>(&bytes).map(decode);
    }
}
