//! The server's heartbeat: a connection with nothing going both ways is
//! pinged every `heartbeat_ms`; one where notifications go out and acks
//! come back is not (both ends are known alive, a ping would only cost
//! syscalls on both sides).

use crate::support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{Client, Node, Redis};
use tokio_tungstenite::tungstenite::Message;

/// Reads `c` for `d`: acks every notification at once; returns the pings
/// seen and the notifications acked.
async fn watch(c: &mut Client, d: Duration) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + d;
    let (mut pings, mut acked) = (0, 0);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, c.ws.next()).await {
        match m {
            Message::Ping(_) => pings += 1,
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] == "notification" {
                    let ack = serde_json::json!({"type": "ack", "ids": [v["id"]]});
                    c.ws.send(Message::text(ack.to_string()))
                        .await
                        .expect("ack");
                    acked += 1;
                }
            }
            _ => {}
        }
    }
    (pings, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_pinged_and_a_busy_one_is_not() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_WEBSOCKET__HEARTBEAT_MS", "300")]);
    let mut idle = Client::connect(&node, 1).await;
    let mut busy = Client::connect(&node, 2).await;
    let posts = async {
        // A like every 50 ms, each on its own post (nothing folds them).
        for i in 0..50 {
            node.like(9, 2, &format!("post:hb{i}")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let span = Duration::from_millis(2500);
    let (_, (idle_pings, _), (busy_pings, busy_acked)) =
        tokio::join!(posts, watch(&mut idle, span), watch(&mut busy, span));
    assert!(
        busy_acked >= 20,
        "the busy client got {busy_acked} notifications"
    );
    // 300 ms beats over 2.5 s: the idle one is pinged at nearly each.
    assert!(idle_pings >= 3, "idle connection pinged {idle_pings} times");
    // A stall of a loaded host may let one beat see no traffic.
    assert!(busy_pings <= 1, "busy connection pinged {busy_pings} times");
}

/// A client that floods pings is closed with 1008 once past its allowance
/// (`websocket.max_control_per_s`, bursts of twice that), after far fewer
/// pongs than pings; a user connected beside it is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_closes_the_flooder_and_spares_its_neighbour() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_WEBSOCKET__MAX_CONTROL_PER_S", "10")]);
    let mut calm = Client::connect(&node, 7).await;
    let flooder = Client::connect(&node, 8).await;
    let (mut tx, mut rx) = flooder.ws.split();
    let sender = tokio::spawn(async move {
        let mut sent = 0u32;
        // Bounded: the server must have closed long before the last one.
        while sent < 100_000 {
            if tx.send(Message::Ping(vec![1, 2, 3].into())).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    // The server closes with 1008; a client still writing may see the
    // reset before the close frame (the server closed with its pings
    // unread), so the node's own count says why it closed.
    let (mut pongs, mut ended) = (0u32, false);
    while let Ok(Some(m)) = tokio::time::timeout(support::WAIT, rx.next()).await {
        match m {
            Ok(Message::Pong(_)) => pongs += 1,
            Ok(Message::Close(f)) => {
                if let Some(f) = f {
                    assert_eq!(u16::from(f.code), 1008, "{f:?}");
                    assert!(f.reason.contains("control"), "{f:?}");
                }
                ended = true;
                break;
            }
            Ok(_) => {}
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the flooder was not closed");
    assert!(pongs <= 40, "{pongs} pongs answered past a burst of 20");
    let (s, m) = node.request("GET", "/metrics", None, &[]).await;
    assert_eq!(s, 200);
    let m = m
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| m.to_string());
    assert!(
        m.contains("herald_ws_closed_total{reason=\"control_flood\"} 1"),
        "the node did not close it as a flood"
    );
    sender.abort();
    // The neighbour still gets what it is sent.
    for i in 0..5 {
        node.like(100 + i, 7, &format!("post:{i}")).await;
    }
    let got = calm.notifications(5).await;
    assert_eq!(got.len(), 5);
}
