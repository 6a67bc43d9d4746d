//! Several connections of one user on one node (a phone, a laptop, a tab):
//! each gets every notification, an ack on any settles it for all (nothing
//! goes to the inbox, nothing comes back on reconnect), the inbox drains to
//! one connection only, and past `websocket.max_devices` the oldest closes
//! with 4000.

use crate::support;

use std::time::Duration;

use futures_util::StreamExt;
use support::{all_settled, eventually, inbox_ids, Client, Node, Redis};
use tokio_tungstenite::tungstenite::Message;

/// Waits until the node holds `n` connections.
async fn closed_down_to(node: &Node, n: u64) {
    eventually(&format!("{n} connections left"), || async {
        (support::metric(node, "herald_connections").await == Some(n as f64)).then_some(())
    })
    .await;
}

/// Notifications closed connections handed back unacked.
async fn queued_on_close(node: &Node) -> f64 {
    support::metric(
        node,
        "herald_notifications_total{route=\"queued_on_close\"}",
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_each_get_it_and_one_ack_settles_it() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_WEBSOCKET__MAX_DEVICES", "3")]);
    let mut phone = Client::connect(&node, 5).await;
    let mut laptop = Client::connect(&node, 5).await;
    let mut tab = Client::connect(&node, 5).await;

    let id = node.like(1, 5, "post:a").await;
    let mut ids = Vec::new();
    for c in [&mut phone, &mut laptop, &mut tab] {
        let n = c.notification().await;
        assert_eq!(n["event_id"], id.as_str(), "{n}");
        ids.push(n["id"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one notification id: {ids:?}"
    );
    // Only the phone acks: the record settles.
    phone.ack(&[&ids[0]]).await;
    eventually("settled by one ack", || async {
        all_settled(&node).await.then_some(())
    })
    .await;
    // The others close without acking: nothing goes to the inbox, and a
    // new connection is not sent it again.
    laptop.close().await;
    tab.close().await;
    // The node is done with both (it reports what a closed connection
    // leaves unacked before it counts the connection gone).
    closed_down_to(&node, 1).await;
    assert_eq!(queued_on_close(&node).await, 0.0, "a copy was handed back");
    assert!(
        inbox_ids(&node, 5).await.is_empty(),
        "an acked item went to the inbox"
    );
    let mut again = Client::connect(&node, 5).await;
    assert_eq!(
        again.hello["pending"], 0,
        "an acked item waits to be sent again: {}",
        again.hello
    );

    // Nobody acks: the last copy to go stores it, once.
    let id2 = node.like(2, 5, "post:b").await;
    let n = phone.notification().await;
    assert_eq!(n["event_id"], id2.as_str());
    let n = again.notification().await;
    assert_eq!(n["event_id"], id2.as_str());
    phone.close().await;
    closed_down_to(&node, 1).await;
    assert_eq!(
        queued_on_close(&node).await,
        0.0,
        "handed back while a copy was still out"
    );
    assert!(
        inbox_ids(&node, 5).await.is_empty(),
        "stored while a copy was still out"
    );
    again.close().await;
    eventually("stored by the last copy", || async {
        (inbox_ids(&node, 5).await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_drains_to_one_connection_and_the_oldest_goes_past_the_cap() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_WEBSOCKET__MAX_DEVICES", "2")]);
    // Two notifications wait for user 6.
    let a = node.like(1, 6, "post:1").await;
    let b = node.like(2, 6, "post:2").await;
    eventually("both in the inbox", || async {
        (inbox_ids(&node, 6).await.len() == 2).then_some(())
    })
    .await;
    let mut first = Client::connect(&node, 6).await;
    let got: Vec<String> = first
        .notifications(2)
        .await
        .iter()
        .map(|n| n["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(got, vec![a, b]);
    // A second device: live only, not the inbox again.
    let mut second = Client::connect(&node, 6).await;
    assert!(
        second
            .next_within(Duration::from_millis(800))
            .await
            .is_none(),
        "the second connection was sent inbox items"
    );
    // A third: past the cap, the oldest closes with 4000.
    let _third = Client::connect(&node, 6).await;
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first.ws.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("no close frame");
    assert_eq!(code, Some(4000));
    // The second is now the oldest: it drains what the first left unacked.
    let n = second.notification().await;
    assert!(n["event_id"].as_str().is_some(), "{n}");
}

/// `GET /v1/users/{id}/presence` says whether a user is connected and on
/// how many devices, as connections open and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_the_devices_a_user_has_open() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    assert_eq!(presence(&node, 77).await, (false, 0));
    let phone = Client::connect(&node, 77).await;
    let laptop = Client::connect(&node, 77).await;
    assert_eq!(presence(&node, 77).await, (true, 2));
    phone.close().await;
    eventually("one device left", || async {
        (presence(&node, 77).await == (true, 1)).then_some(())
    })
    .await;
    laptop.close().await;
    eventually("offline", || async {
        (presence(&node, 77).await == (false, 0)).then_some(())
    })
    .await;
    let (s, v) = node.get("/v1/users/x/presence").await;
    assert_eq!(s, 400, "{v}");
}

async fn presence(node: &Node, user: u64) -> (bool, u64) {
    let (s, v) = node.get(&format!("/v1/users/{user}/presence")).await;
    assert_eq!(s, 200, "{v}");
    (
        v["online"].as_bool().unwrap(),
        v["devices"].as_u64().unwrap(),
    )
}
