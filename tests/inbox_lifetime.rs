//! An inbox does not keep memory forever: it expires its idle lifetime
//! after its first entry or its user's last connection, whichever is later.

mod support;

use std::time::Duration;

use support::{eventually, inbox_ids, Client, Node, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_nobody_comes_back_for_expires() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_REDIS__INBOX_IDLE_TTL_S", "2")]);
    node.like(1, 9, "post:a").await;
    eventually("in the inbox", || async {
        (inbox_ids(&node, 9).await.len() == 1).then_some(())
    })
    .await;
    let ttl = redis.cmd("TTL h:{u:9}:ib").unwrap_or_default();
    assert!(ttl.starts_with(":1") || ttl.starts_with(":2"), "TTL {ttl}");
    // Nobody comes: two seconds later it is gone.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(inbox_ids(&node, 9).await.is_empty());
    assert_eq!(redis.cmd("EXISTS h:{u:9}:ib").as_deref(), Some(":0\r\n"));

    // A user who connects starts the lifetime again.
    node.like(1, 10, "post:b").await;
    eventually("in the inbox", || async {
        (inbox_ids(&node, 10).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = Client::connect(&node, 10).await;
    assert_eq!(c.hello["pending"], 1, "{}", c.hello);
    let ttl = redis.cmd("TTL h:{u:10}:ib").unwrap_or_default();
    assert_eq!(ttl.trim(), ":2", "the connection refreshed the lifetime");
}
