use proptest::prelude::*;

use super::*;
use crate::DigestItem;

fn comment(id: &str, event_id: &str) -> Notification {
    Notification {
        id: id.into(),
        event_id: event_id.into(),
        kind: EventKind::Comment,
        actor: 4_321,
        object: Some("post:123456".into()),
        text: Some("a comment of thirty-four bytes....".into()),
        ts_ms: 1_790_000_000_123,
        count: 1,
        actors: vec![4_321].into(),
        order: 1_790_000_000_123_456,
        digest: None,
        data: None,
        trace: None,
        supersedes: None,
    }
}

fn round_trip(n: &Notification, r: UserId) {
    let f = field(&n.id, r);
    assert_eq!(id_from_field(&f, r).as_deref(), Some(&*n.id));
    let e = entry(n, r);
    assert_eq!(order_of(&e), Some(n.order));
    assert_eq!(&decode(&f, &e, None, r).unwrap(), n);
    // The same through a shared body.
    let b = body(n, &f);
    let s = shared_entry(n.order, b"name");
    assert_eq!(shared_name(&s), Some(&b"name"[..]));
    assert_eq!(&decode(&f, &s, Some(&b), r).unwrap(), n);
    assert_eq!(decode(&f, &s, None, r), Err(CompactError::NoBody));
}

#[test]
fn every_id_shape_round_trips_and_the_common_ones_are_short() {
    let r = 77;
    for (id, ev, max) in [
        ("n-e-3-17-77", "e-3-17", 4),
        ("n-e-3-1790000-77@node-2", "e-3-1790000", 40),
        ("n-e-3-17@node-2-77", "e-3-17@node-2", 11),
        ("n-k0123456789abcdef0123456789abcdef-77", "e-1-2@x", 17),
        ("n-agg-0123456789abcdef-77", "e-5-6", 9),
        ("d-77-1790000000000", "e-5-6", 8),
        ("n-e-03-17-77", "e-03-17", 40),
        ("n-kABCDEF-77", "e-1-1", 40),
        ("anything at all", "", 40),
        ("n-e-3-17-78", "e-3-17", 40),
    ] {
        let n = comment(id, ev);
        assert!(field(id, r).len() <= max, "{id}: {:?}", field(id, r));
        round_trip(&n, r);
    }
}

#[test]
fn a_comment_fits_redis_listpack_value_limit() {
    let n = comment("n-e-3-1790000-77", "e-3-1790000");
    let e = entry(&n, 77);
    assert!(e.len() <= 64, "{} bytes", e.len());
}

#[test]
fn aggregates_digests_and_odd_times_round_trip() {
    let mut n = comment("n-agg-0123456789abcdef-9", "e-1-99");
    n.count = 12;
    n.actors = vec![1, 2, 3].into();
    n.ts_ms = 5; // before the order key's millisecond
    n.text = None;
    n.object = None;
    round_trip(&n, 9);
    let mut d = comment("d-9-1790000000000", "e-1-99");
    d.digest = Some(Box::new(DigestBody {
        window_start_ms: 1,
        window_end_ms: 2,
        items: vec![DigestItem {
            kind: EventKind::Like,
            object: Some("post:1".into()),
            count: 3,
            actors: vec![1, 2],
            event_id: "e-1-99".into(),
            data: Some(std::sync::Arc::new(crate::Data::from_json_text(
                r#"{"b":1,"a":"x"}"#.into(),
            ))),
        }],
    }));
    round_trip(&d, 9);
}

#[test]
fn read_flag_is_the_first_byte() {
    let mut e = entry(&comment("n-e-1-2-3", "e-1-2"), 3);
    assert!(!is_read(&e));
    e[0] |= READ;
    assert!(is_read(&e));
    let n = decode(&field("n-e-1-2-3", 3), &e, None, 3).unwrap();
    assert_eq!(&*n.id, "n-e-1-2-3");
}

#[test]
fn waiting_is_the_order_top_bit_and_leaves_the_order_alone() {
    let n = comment("n-e-1-2-3", "e-1-2");
    for mut e in [entry(&n, 3), shared_entry(n.order, b"name")] {
        assert!(!is_waiting(&e));
        set_waiting(&mut e);
        e[0] |= READ;
        assert!(is_waiting(&e) && is_read(&e));
        assert_eq!(order_of(&e), Some(n.order));
    }
    let mut e = entry(&n, 3);
    set_waiting(&mut e);
    assert_eq!(decode(&field("n-e-1-2-3", 3), &e, None, 3).unwrap(), n);
}

proptest! {
    #[test]
    fn any_notification_round_trips(
        id in "[a-z0-9@-]{0,30}",
        event_id in "[a-z0-9@-]{0,20}",
        kind in 0usize..6,
        actor in any::<u64>(),
        object in proptest::option::of("[a-z:0-9]{0,20}"),
        text in proptest::option::of(".{0,40}"),
        ts_ms in any::<u64>(),
        order in 0u64..=ORDER_MASK,
        count in any::<u64>(),
        actors in proptest::collection::vec(any::<u64>(), 0..5),
        r in any::<u64>(),
        data in proptest::option::of(crate::testing::any_json()),
    ) {
        let data = data.map(|v| {
            let text = serde_json::json!({"v": v}).to_string();
            std::sync::Arc::new(crate::Data::from_json_text(text))
        });
        let n = Notification {
            id: id.into(), event_id: event_id.into(), kind: EventKind::ALL[kind], actor,
            object: object.map(Into::into), text: text.map(Into::into), ts_ms,
            count, actors: actors.into(), order, digest: None, data,
            trace: None,
            supersedes: None,
        };
        let f = field(&n.id, r);
        let back = id_from_field(&f, r);
        prop_assert_eq!(back.as_deref(), Some(&*n.id));
        prop_assert_eq!(decode(&f, &entry(&n, r), None, r), Ok(n));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic(f in proptest::collection::vec(any::<u8>(), 0..20),
                                       e in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode(&f, &e, Some(&e), 5);
        let _ = id_from_field(&f, 5);
    }
}

proptest! {
    /// Ids of every shape Herald makes, and near misses (leading zeros,
    /// upper-case hex, another recipient, an empty scope), map to a field
    /// and back exactly.
    #[test]
    fn structured_ids_round_trip(
        p in 0u64..5_000_000_000,
        o in any::<u64>(),
        r in any::<u64>(),
        other in any::<u64>(),
        scope in proptest::option::of("[a-z0-9@-]{0,12}"),
        hex in "[0-9a-fA-F]{32}",
        zero in any::<bool>(),
        shape in 0u8..5,
    ) {
        let z = if zero { "0" } else { "" };
        let at = scope.as_ref().map(|s| format!("@{s}")).unwrap_or_default();
        let to = if shape == 4 { other } else { r };
        let id = match shape {
            0 => format!("n-e-{z}{p}-{o}{at}-{to}"),
            1 => format!("n-k{hex}-{to}"),
            2 => format!("n-agg-{}-{to}", &hex[..16]),
            3 => format!("d-{to}-{z}{o}"),
            _ => format!("n-e-{p}-{o}-{to}"),
        };
        let f = field(&id, r);
        prop_assert_eq!(id_from_field(&f, r), Some(id));
    }
}

#[test]
fn an_event_id_is_implied_only_when_it_is_the_one_the_field_spells() {
    let plain = field("n-e-3-17-77", 77);
    let scoped = field("n-e-3-17@node-2-77", 77);
    assert!(implies_event_id(&plain, "e-3-17"));
    assert!(implies_event_id(&scoped, "e-3-17@node-2"));
    for other in [
        "e-3-170",
        "e-3-1",
        "e-03-17",
        "e-3-17@",
        "e-3-17@node-2",
        "e3-17",
        "",
    ] {
        assert!(!implies_event_id(&plain, other), "{other}");
    }
    for other in ["e-3-17", "e-3-17@node-3", "e-3-17@node-2x", "e-3-17node-2"] {
        assert!(!implies_event_id(&scoped, other), "{other}");
    }
    assert!(!implies_event_id(&field("n-kABCDEF-77", 77), "e-1-1"));
}
