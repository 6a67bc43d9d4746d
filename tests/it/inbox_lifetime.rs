//! An inbox's entries leave when acked (removed by fan-out, never sent to
//! that connection again), and an inbox does not keep memory forever: it
//! expires its idle lifetime after its first entry or its user's last
//! connection, whichever is later.

use crate::support;

use std::time::Duration;

use support::{eventually, eventually_within, inbox_ids, Client, Node, Redis};

/// With the feed off the user's entries hash lives the inbox's idle
/// lifetime (with it on, the longer of that and the feed's retention).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_nobody_comes_back_for_expires() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_REDIS__INBOX_IDLE_TTL_S", "5"),
            ("HERALD_FEED__MAX_PER_USER", "0"),
        ],
    );
    let pttl = |user: u64| {
        redis
            .cmd(&format!("PTTL h:{{u:{user}}}:fd"))
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
        (redis.cmd("EXISTS h:{u:9}:fd").as_deref() == Some(":0\r\n")).then_some(())
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

/// Fan-out, not the edge, marks inbox entries a client acked delivered.
/// While that cannot land (Redis refuses HGET, which only the ack's script
/// uses on this path, for a while), a drain the connection makes waits for
/// it instead of sending the acked entries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_inbox_entries_are_not_sent_again_while_their_removal_waits() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_WEBSOCKET__ACK_TIMEOUT_MS", "500"),
            ("HERALD_FANOUT__RETRY_BACKOFF_MS", "20"),
        ],
    );
    let user = 12;
    node.like(1, user, "post:a").await;
    node.like(2, user, "post:b").await;
    eventually("both in the inbox", || async {
        (inbox_ids(&node, user).await.len() == 2).then_some(())
    })
    .await;
    let mut c = Client::connect(&node, user).await;
    let stored: Vec<String> = c
        .notifications(2)
        .await
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();

    // From here the ack's script fails until HGET is allowed again.
    let denied = redis.cmd("ACL SETUSER default -hget");
    assert_eq!(denied.as_deref(), Some("+OK\r\n"));
    c.ack(&[&stored[0], &stored[1]]).await;
    // A push the client leaves unacked goes back to fan-out after the ack
    // timeout; fan-out parks it and tells the connection to drain.
    node.like(3, user, "post:c").await;
    let live = c.notification().await;
    assert_eq!(live["object"], "post:c", "{live}");
    eventually("the unacked push parked", || async {
        (inbox_ids(&node, user).await.len() == 3).then_some(())
    })
    .await;
    let allowed = redis.cmd("ACL SETUSER default +hget");
    assert_eq!(allowed.as_deref(), Some("+OK\r\n"));

    // The acked entries leave the inbox, and the next notification the client sees is
    // a new one: the drain sent neither acked entry again (nor the parked
    // push, which the connection still holds unacked).
    eventually("the acked entries removed", || async {
        (inbox_ids(&node, user).await == [live["id"].as_str().unwrap_or_default()]).then_some(())
    })
    .await;
    node.like(4, user, "post:d").await;
    let next = c.notification().await;
    assert_eq!(
        next["object"], "post:d",
        "an acked entry came again: {next}"
    );
}
