//! Property tests: arbitrary JSON and bytes through decoding, the transforms, the CSV
//! parser, the page types and the stored keyset cursor. Nothing panics; bad input is an
//! error value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::transform::{self, Field, FieldType, Keyset, Object};
use super::types::{Describe, QueryPage};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        Just(json!("2024-05-07T22:07:19.000+0000")),
        Just(json!("0065g0000000001AAA")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Id".to_owned()),
                    Just("SystemModstamp".to_owned()),
                    Just("IsDeleted".to_owned()),
                    Just("Amount".to_owned()),
                    Just("Probability".to_owned()),
                    Just("Website".to_owned()),
                    Just("OpportunityId".to_owned()),
                    Just("ContactId".to_owned()),
                    Just("Tier__c".to_owned()),
                    "[A-Za-z_]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn fields() -> Vec<Field> {
    [
        "Id",
        "SystemModstamp",
        "IsDeleted",
        "Amount",
        "Probability",
        "Website",
    ]
    .into_iter()
    .map(|n| Field {
        name: n.into(),
        kind: FieldType::Text,
        custom: false,
    })
    .chain(std::iter::once(Field {
        name: "Tier__c".into(),
        kind: FieldType::Number,
        custom: true,
    }))
    .collect()
}

proptest! {
    #[test]
    fn transforms_never_panic(raw in json_value()) {
        for obj in Object::ALL {
            let _ = transform::transform(Uuid::nil(), obj, &fields(), raw.clone());
        }
        let _ = Keyset::of(&raw);
        let _ = transform::row_id(&raw);
        let _ = serde_json::from_value::<QueryPage>(raw.clone()).map(|p| p.next().map(str::to_owned));
        if let Ok(d) = serde_json::from_value::<Describe>(raw) {
            for obj in Object::ALL {
                let _ = transform::select_fields(obj, &d);
            }
        }
    }

    #[test]
    fn csv_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = transform::parse_csv(&bytes, &fields());
    }

    #[test]
    fn csv_of_quoted_text_round_trips(cells in prop::collection::vec("[^\"]{0,12}", 1..5)) {
        let header: Vec<String> = (0..cells.len()).map(|i| format!("\"C{i}\"")).collect();
        let row: Vec<String> = cells.iter().map(|c| format!("\"{c}\"")).collect();
        let body = format!("{}\n{}\n", header.join(","), row.join(","));
        let rows = transform::parse_csv(body.as_bytes(), &[]).unwrap();
        prop_assert_eq!(rows.len(), 1);
        for (i, c) in cells.iter().enumerate() {
            let got = &rows[0][format!("C{i}")];
            if c.is_empty() {
                prop_assert_eq!(got, &Value::Null);
            } else {
                prop_assert_eq!(got, &Value::String(c.clone()));
            }
        }
    }

    #[test]
    fn stored_cursors_never_panic(s in ".{0,64}") {
        if let Some(k) = Keyset::decode(&s) {
            // A cursor that reads back is safe to put in SOQL: an alphanumeric id.
            prop_assert!(k.id.bytes().all(|b| b.is_ascii_alphanumeric()));
            prop_assert_eq!(Keyset::decode(&k.encode()), Some(k));
        }
    }
}
