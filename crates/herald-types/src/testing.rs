//! Test helpers shared by the crates that decode untrusted JSON (events,
//! preference documents): a proptest strategy for arbitrary JSON values,
//! biased towards the field names and words Herald's decoders read. Built
//! only with the `testing` feature (the crates' dev-dependencies).

use proptest::prelude::*;

/// Arbitrary JSON values, biased towards the shapes the decoder reads.
pub fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("like"),
            Just("post"),
            Just("follow"),
            Just("mention"),
            Just("comment"),
            Just("realtime"),
            Just("digest"),
            Just("mute"),
            Just("Europe/Paris"),
            Just("22:00"),
            Just("007"),
            Just("+5"),
            Just("5"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    "[a-z_]{1,10}",
                    prop_oneof![
                        Just("kind"),
                        Just("actor"),
                        Just("recipient"),
                        Just("object"),
                        Just("text"),
                        Just("mentions"),
                        Just("id"),
                        Just("ts_ms"),
                        Just("default"),
                        Just("kinds"),
                        Just("quiet_hours"),
                        Just("digest"),
                        Just("timezone"),
                        Just("from"),
                        Just("to"),
                        Just("muted_actors"),
                        Just("muted_objects"),
                        Just("type"),
                        Just("ids"),
                    ]
                    .prop_map(String::from),
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
