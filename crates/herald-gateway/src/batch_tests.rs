use super::*;
use crate::body::parse;
use crate::validate::tests::events;
use proptest::prelude::*;

fn both(
    b: &[u8],
    enc: Encoding,
) -> (
    Result<Vec<LogEvent>, ApiError>,
    Result<Vec<LogEvent>, ApiError>,
) {
    let tree = parse(b, enc).and_then(|v| events(v, 3));
    let limits = Limits {
        max_batch: 3,
        max_data: herald_types::data::DEFAULT_MAX_DATA_BYTES,
    };
    (events_from(b, enc, limits), tree)
}

#[test]
fn the_same_answers_as_the_tree() {
    for body in [
        r#"{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}"#,
        r#"{"events": [{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}]}"#,
        r#"{"events": []}"#,
        r#"{"events": 5}"#,
        r#"{"events": [5]}"#,
        r#"{"events": [{"kind": "like"}]}"#,
        r#"{"events": [{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}], "x": 1}"#,
        r#"[1]"#,
        r#"{"kind": "like", "actor": 1, "recipient": 2, "object": "o"} x"#,
    ] {
        let (s, t) = both(body.as_bytes(), Encoding::Json);
        assert_eq!(
            s.as_ref().map_err(|e| (e.code, e.index)),
            t.as_ref().map_err(|e| (e.code, e.index)),
            "{body}"
        );
    }
    let four = r#"{"events": [{"kind": "follow", "actor": 1, "recipient": 2}, {"kind": "follow", "actor": 1, "recipient": 3}, {"kind": "follow", "actor": 1, "recipient": 4}, {"kind": "follow", "actor": 1, "recipient": 5}]}"#;
    let (s, t) = both(four.as_bytes(), Encoding::Json);
    assert_eq!(s.map_err(|e| e.code), Err("too_large"));
    assert_eq!(t.map_err(|e| e.code), Err("too_large"));
}

/// A key given twice is refused, naming it, at the top, inside a
/// batch's event and deeper, in JSON and in MessagePack; never "last
/// one wins".
#[test]
fn duplicate_keys_are_refused_naming_the_key() {
    for body in [
        r#"{"kind": "comment", "actor": 1, "recipient": 2, "kind": "like", "object": "o"}"#,
        r#"{"events": [{"kind": "comment", "actor": 1, "recipient": 2, "kind": "like"}]}"#,
        r#"{"events": [{"kind": "follow", "actor": 1, "recipient": 2}], "events": [{"kind": "follow", "actor": 1, "recipient": 3}]}"#,
    ] {
        let (s, t) = both(body.as_bytes(), Encoding::Json);
        for r in [s, t] {
            let e = r.expect_err(body);
            assert_eq!(e.code, "duplicate_key", "{body}");
            assert_eq!(
                e.field.as_deref(),
                Some(if body.matches("\"events\"").count() == 2 {
                    "events"
                } else {
                    "kind"
                })
            );
        }
    }
    // MessagePack: a map of two entries both named "kind".
    let mut b = vec![0x83];
    for (k, v) in [("kind", "comment"), ("kind", "like")] {
        b.push(0xa0 | k.len() as u8);
        b.extend_from_slice(k.as_bytes());
        b.push(0xa0 | v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(&[0xa5, b'a', b'c', b't', b'o', b'r', 0x01]);
    let (s, t) = both(&b, Encoding::MsgPack);
    for r in [s, t] {
        let e = r.expect_err("msgpack");
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("duplicate_key", Some("kind"))
        );
    }
}

fn limits(max_data: usize) -> Limits {
    Limits {
        max_batch: 3,
        max_data,
    }
}

/// `data` keeps its key order and bytes (compact JSON), in a single
/// event and in a batch, from JSON and from MessagePack.
#[test]
fn data_is_kept_in_its_own_order() {
    let data = r#"{"z":"app://p/7","a":[1,-2,2.5,true,null],"m":{"y":1,"b":"é"}}"#;
    let one = format!(r#"{{"kind":"like","actor":1,"recipient":2,"data":{data}}}"#);
    let batch = format!(r#"{{"events":[{one},{{"kind":"follow","actor":1,"recipient":3}}]}}"#);
    for body in [&one, &batch] {
        let e = events_from(body.as_bytes(), Encoding::Json, limits(4096)).unwrap();
        assert_eq!(e[0].data.as_ref().map(|d| d.json()), Some(data), "{body}");
    }
    let e = events_from(batch.as_bytes(), Encoding::Json, limits(4096)).unwrap();
    assert!(e[1].data.is_none());
    // Whitespace goes; the order stays.
    let spaced =
        r#"{"kind": "like", "actor": 1, "recipient": 2, "data": {"b": 1, "a": {"d": [1, 2]}}}"#;
    let e = events_from(spaced.as_bytes(), Encoding::Json, limits(4096)).unwrap();
    assert_eq!(
        e[0].data.as_ref().unwrap().json(),
        r#"{"b":1,"a":{"d":[1,2]}}"#
    );
    // MessagePack: a map in the same order.
    let d = herald_types::Data::from_json_text(data.into());
    let mut mp = vec![0x84, 0xa4];
    mp.extend_from_slice(b"kind");
    mp.push(0xa4);
    mp.extend_from_slice(b"like");
    mp.extend_from_slice(&[0xa5, b'a', b'c', b't', b'o', b'r', 0x01]);
    mp.extend_from_slice(&[0xa9]);
    mp.extend_from_slice(b"recipient");
    mp.push(0x02);
    mp.extend_from_slice(&[0xa4, b'd', b'a', b't', b'a']);
    mp.extend_from_slice(d.msgpack());
    let e = events_from(&mp, Encoding::MsgPack, limits(4096)).unwrap();
    assert_eq!(e[0].data.as_ref().unwrap().json(), data);
    // null is no data.
    let e = events_from(
        br#"{"kind":"post","actor":1,"data":null}"#,
        Encoding::Json,
        limits(10),
    )
    .unwrap();
    assert!(e[0].data.is_none());
}

#[test]
fn bad_data_is_refused_naming_the_field_and_index() {
    for (body, code, index) in [
        (
            r#"{"kind":"post","actor":1,"data":[1]}"#,
            "invalid_field",
            None,
        ),
        (
            r#"{"kind":"post","actor":1,"data":"x"}"#,
            "invalid_field",
            None,
        ),
        (
            r#"{"kind":"post","actor":1,"data":{"a":"0123456789abcdef"}}"#,
            "invalid_field",
            None,
        ),
        (
            r#"{"kind":"post","actor":1,"data":{"a":1,"a":2}}"#,
            "duplicate_key",
            None,
        ),
        (
            r#"{"kind":"post","actor":1,"data":{"a":{"b":1,"b":2}}}"#,
            "duplicate_key",
            None,
        ),
        (
            r#"{"events":[{"kind":"post","actor":1},{"kind":"post","actor":1,"data":5}]}"#,
            "invalid_field",
            Some(1),
        ),
        (
            r#"{"events":[{"kind":"post","actor":1}],"data":{}}"#,
            "unknown_field",
            None,
        ),
        (
            r#"{"kind":"post","actor":1,"data":{},"data":{}}"#,
            "duplicate_key",
            None,
        ),
    ] {
        let max = if body.contains("0123") { 16 } else { 4096 };
        let e = events_from(body.as_bytes(), Encoding::Json, limits(max)).expect_err(body);
        assert_eq!((e.code, e.index), (code, index), "{body}: {}", e.message);
        assert_eq!(e.field.as_deref(), Some("data"), "{body}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any value as an event's data, in JSON and MessagePack: kept
    /// (an object within the limit) or a clean refusal naming
    /// `data`, never a panic; what is kept reads back as the value.
    #[test]
    fn any_data_is_kept_or_cleanly_refused(v in crate::validate::tests::any_json(), max in 0usize..200) {
        let body = serde_json::json!({"kind": "post", "actor": 1, "data": v});
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let b = match enc {
                Encoding::Json => body.to_string().into_bytes(),
                Encoding::MsgPack => rmp_serde::to_vec(&body).unwrap_or_default(),
            };
            match events_from(&b, enc, limits(max)) {
                Ok(e) => match &e[0].data {
                    Some(d) => {
                        prop_assert!(d.json().len() <= max);
                        let back: serde_json::Value = serde_json::from_str(d.json()).unwrap();
                        prop_assert_eq!(&back, &v);
                    }
                    None => prop_assert!(v.is_null()),
                },
                Err(e) => prop_assert_eq!(e.field.as_deref(), Some("data")),
            }
        }
    }

    /// Whatever the body, read as a stream or as a tree: accepted the
    /// same, or refused by both.
    #[test]
    fn accepts_exactly_what_the_tree_accepts(v in crate::validate::tests::any_json(), wrap in any::<bool>()) {
        let v = if wrap { serde_json::json!({"events": [v]}) } else { v };
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let b = match enc {
                Encoding::Json => v.to_string().into_bytes(),
                Encoding::MsgPack => rmp_serde::to_vec(&v).unwrap_or_default(),
            };
            let (s, t) = both(&b, enc);
            prop_assert_eq!(s.is_ok(), t.is_ok(), "{}", v);
            if let (Ok(s), Ok(t)) = (s, t) {
                prop_assert_eq!(s, t);
            }
        }
    }
}
