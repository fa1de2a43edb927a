//! Property tests: arbitrary JSON and bytes through decode, transform and the text cap.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::transform::{capped_text, decode, document};
use super::types::{ChangeList, FileList};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("name".to_owned()),
                    Just("mimeType".to_owned()),
                    Just("parents".to_owned()),
                    Just("owners".to_owned()),
                    Just("size".to_owned()),
                    Just("modifiedTime".to_owned()),
                    Just("files".to_owned()),
                    Just("changes".to_owned()),
                    ".{0,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn nothing_panics_on_arbitrary_json(v in arb_json()) {
        if let Ok(f) = decode(v.clone()) {
            let _ = document(uuid::Uuid::nil(), &f, None);
        }
        let _ = serde_json::from_value::<FileList>(v.clone());
        let _ = serde_json::from_value::<ChangeList>(v);
    }

    #[test]
    fn the_cap_is_a_utf8_prefix(bytes in prop::collection::vec(any::<u8>(), 0..64), max in 0usize..80) {
        let t = capped_text(&bytes, max);
        prop_assert!(t.len() <= max);
        let full = capped_text(&bytes, usize::MAX);
        prop_assert!(full.starts_with(&t));
    }

    #[test]
    fn files_with_any_id_and_size_decode_or_fail_cleanly(id in ".{0,10}", size in any::<i64>()) {
        let _ = decode(json!({"id": id, "size": size.to_string(), "mimeType": "text/plain"}));
    }
}
