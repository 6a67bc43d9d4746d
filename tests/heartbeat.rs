//! The server's heartbeat: a connection with nothing going both ways is
//! pinged every `heartbeat_ms`; one where notifications go out and acks
//! come back is not (both ends are known alive, a ping would only cost
//! syscalls on both sides).

mod support;

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
