//! An inbox does not keep memory forever: it expires its idle lifetime
//! after its first entry or its user's last connection, whichever is later.

use crate::support;

use std::time::Duration;

use support::{eventually, eventually_within, inbox_ids, Client, Node, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_nobody_comes_back_for_expires() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_REDIS__INBOX_IDLE_TTL_S", "5")]);
    let pttl = |user: u64| {
        redis
            .cmd(&format!("PTTL h:{{u:{user}}}:ib"))
            .and_then(|t| t.trim().trim_start_matches(':').parse::<i64>().ok())
            .unwrap_or(-2)
    };
    node.like(1, 9, "post:a").await;
    eventually("in the inbox", || async {
        (inbox_ids(&node, 9).await.len() == 1).then_some(())
    })
    .await;
    let ttl = pttl(9);
    assert!((1..=5000).contains(&ttl), "PTTL {ttl}");
    // Nobody comes: it is gone once its lifetime passes.
    eventually_within("the inbox expired", Duration::from_secs(30), || async {
        (redis.cmd("EXISTS h:{u:9}:ib").as_deref() == Some(":0\r\n")).then_some(())
    })
    .await;
    assert!(inbox_ids(&node, 9).await.is_empty());

    // A user who connects starts the lifetime again: past part of it, a
    // connection sets it back to the whole (which can only grow it).
    node.like(1, 10, "post:b").await;
    eventually("in the inbox", || async {
        (inbox_ids(&node, 10).await.len() == 1).then_some(())
    })
    .await;
    let before = eventually("the lifetime partly passed", || async {
        let t = pttl(10);
        (t > 0 && t < 3500).then_some(t)
    })
    .await;
    let c = Client::connect(&node, 10).await;
    assert_eq!(c.hello["pending"], 1, "{}", c.hello);
    let after = pttl(10);
    assert!(
        after > before,
        "the connection refreshed the lifetime: {before} ms before, {after} ms after"
    );
}
