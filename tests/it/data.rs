//! An event's `data` (issue 28 item 1): delivered unchanged on every path,
//! in JSON and MessagePack, and stored once however many recipients the
//! event has.

use crate::support;

use serde_json::Value;
use support::{eventually, Client, Node, Redis};

/// Compact, keys out of alphabetical order, non-ASCII, nested, numbers of
/// every sort: what a producer's JSON encoder writes.
const DATA: &str = r#"{"url":"app://post/7#c9","emoji":"🎉","n":[1,-2,2.5,18446744073709551615],"deep":{"z":true,"a":null}}"#;

/// `{"z": 1, "a": "é"}` as a MessagePack encoder writes it.
const MP_DATA: [u8; 9] = [0x82, 0xa1, b'z', 0x01, 0xa1, b'a', 0xa2, 0xc3, 0xa9];

fn fixstr(out: &mut Vec<u8>, s: &str) {
    out.push(0xa0 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// A like from 1 to `recipient` about `post:7`, as MessagePack, with
/// [`MP_DATA`] as its data.
fn msgpack_like(recipient: u8) -> Vec<u8> {
    let mut b = vec![0x85];
    fixstr(&mut b, "kind");
    fixstr(&mut b, "like");
    fixstr(&mut b, "actor");
    b.push(0x01);
    fixstr(&mut b, "recipient");
    b.push(recipient);
    fixstr(&mut b, "object");
    fixstr(&mut b, "post:7");
    fixstr(&mut b, "data");
    b.extend_from_slice(&MP_DATA);
    b
}

/// A JSON text frame or HTTP body carries `data` exactly as sent.
fn carries(text: &str) -> bool {
    text.contains(&format!("\"data\":{DATA}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_arrives_unchanged_on_every_path_and_is_stored_once() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut json = Client::connect(&node, 2).await;
    let mut mp = Client::connect_with(&node, 3, Some("herald.msgpack")).await;

    // A comment to 2 (online, JSON), 3 (online, MessagePack) and 4
    // (offline), posted as JSON bytes in the producer's own key order.
    let body = format!(
        r#"{{"kind":"comment","actor":1,"recipient":2,"mentions":[3,4],"object":"post:7","text":"hi","data":{DATA}}}"#
    );
    let (head, answer) = node.raw("POST", "/v1/events", "application/json", body.as_bytes());
    assert!(head.starts_with("http/1.1 202"), "{head}{answer}");

    let frame = json.raw_notification().await.expect("a JSON frame");
    let text = String::from_utf8(frame).expect("a text frame");
    assert!(
        carries(&text),
        "the JSON frame carries the data as sent: {text}"
    );

    let frame = mp.raw_notification().await.expect("a MessagePack frame");
    let v: Value = rmp_serde::from_slice(&frame).expect("MessagePack");
    let sent: Value = serde_json::from_str(DATA).expect("json");
    assert_eq!(
        v["data"], sent,
        "the MessagePack frame carries the same object"
    );

    // The offline recipient: in the inbox over HTTP, then drained.
    eventually("4's inbox has it", || async {
        let (_, b) = node.raw("GET", "/v1/users/4/inbox", "application/json", b"");
        carries(&b).then_some(())
    })
    .await;
    let mut late = Client::connect(&node, 4).await;
    let frame = late.raw_notification().await.expect("the drained frame");
    let text = String::from_utf8(frame).expect("a text frame");
    assert!(carries(&text), "the drained frame carries the data: {text}");

    // The feed (the bell icon) of each recipient.
    for user in [2, 3, 4] {
        let path = format!("/v1/users/{user}/notifications");
        eventually("the comment in the feed", || async {
            let (_, b) = node.raw("GET", &path, "application/json", b"");
            carries(&b).then_some(())
        })
        .await;
    }
    // Three recipients, one stored body: the data is in Redis once.
    let bodies = redis.cmd("KEYS h:b:*").unwrap_or_default();
    assert!(bodies.starts_with("*1\r\n"), "one body: {bodies:?}");

    // MessagePack in, MessagePack out: the same bytes.
    let (head, answer) = node.raw(
        "POST",
        "/v1/events",
        "application/msgpack",
        &msgpack_like(3),
    );
    assert!(head.starts_with("http/1.1 202"), "{head}{answer}");
    let frame = mp
        .raw_notification()
        .await
        .expect("a second MessagePack frame");
    let mut tail = vec![0xa4];
    tail.extend_from_slice(b"data");
    tail.extend_from_slice(&MP_DATA);
    assert!(frame.ends_with(&tail), "{frame:x?}");
    // And to a JSON reader it is the same object, in its order.
    eventually("the like in 3's feed", || async {
        let (_, b) = node.raw("GET", "/v1/users/3/notifications", "application/json", b"");
        b.contains(r#""data":{"z":1,"a":"é"}"#).then_some(())
    })
    .await;

    // Refusals name the field.
    let (s, v) = node
        .post(
            "/v1/events",
            &serde_json::json!({"kind": "post", "actor": 1, "data": [1]}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("data")),
        "{v}"
    );
    let big = format!(
        r#"{{"kind":"post","actor":1,"data":{{"a":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let (head, answer) = node.raw("POST", "/v1/events", "application/json", big.as_bytes());
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(answer.contains("the limit is 4096"), "{answer}");
}
