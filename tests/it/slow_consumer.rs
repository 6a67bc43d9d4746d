//! A client that stops reading: its socket fills, its frames wait in a
//! bounded backlog, the rest goes to its inbox, the connection is closed
//! once a frame has waited past the write timeout, and nothing is lost:
//! everything arrives when it comes back. Other users are not held up.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::{eventually, Client, Node, Redis};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_that_stops_reading_loses_nothing_and_holds_nobody_up() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_WEBSOCKET__WRITE_TIMEOUT_MS", "1000"),
            ("HERALD_WEBSOCKET__QUEUE_CAPACITY", "16"),
            // Every comment on its own (no per-recipient throttle).
            ("HERALD_AGGREGATION__RATE_PER_RECIPIENT", "0"),
            // Room in the inbox for everything sent here.
            ("HERALD_REDIS__INBOX_CAP", "10000"),
        ],
    );
    // User 7 connects with a 4 KiB receive window, reads its hello, and
    // then reads nothing more.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr = node.addr.parse().expect("addr");
    let stream = sock.connect(addr).await.expect("connect");
    let (mut stuck, _) = tokio_tungstenite::client_async(node.ws_url(7), stream)
        .await
        .expect("upgrade");
    match tokio::time::timeout(Duration::from_secs(10), stuck.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert!(t.as_str().contains("hello"), "{t}"),
        other => panic!("no hello: {other:?}"),
    }
    let mut other = Client::connect(&node, 8).await;

    // 6,000 comments of ~1 KB to the stuck user: past what the kernel
    // buffers for its socket (up to 4 MiB here) and a 16-frame backlog.
    const N: usize = 6000;
    let text = "x".repeat(1000);
    let events: Vec<_> = (0..N)
        .map(|i| json!({"kind": "comment", "actor": 1000 + i, "recipient": 7, "object": format!("post:{i}"), "text": text}))
        .collect();
    for chunk in events.chunks(500) {
        let (s, v) = node.post("/v1/events", &json!({ "events": chunk })).await;
        assert_eq!(s, 202, "{v}");
    }
    // Someone else's notification is not held up behind it.
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "like", "actor": 9, "recipient": 8, "object": "post:x"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let n = other.notification().await;
    assert_eq!(n["actor"], 9);

    // The stuck connection is closed by the server (a frame waited past
    // the write timeout); what it was sent and never acked goes to the
    // inbox with the rest.
    eventually("the slow connection to be closed", || async {
        let (_, m) = node.get("/metrics").await;
        let text = m.as_str().unwrap_or_default().to_string();
        text.lines()
            .any(|l| l.starts_with("herald_ws_closed_total{reason=\"slow_write\"}"))
            .then_some(())
    })
    .await;
    drop(stuck);

    // Back with a client that reads: every one arrives.
    let mut back = Client::connect(&node, 7).await;
    let mut ids = HashSet::new();
    while ids.len() < N {
        let Some(v) = back.next_within(Duration::from_secs(10)).await else {
            panic!("only {} of {N} came back", ids.len());
        };
        if v["type"] == "notification" {
            let id = v["id"].as_str().expect("id").to_string();
            back.ack(&[&id]).await;
            ids.insert(id);
        }
    }
}
