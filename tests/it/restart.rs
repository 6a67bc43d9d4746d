//! Crashes and restarts: what was accepted is delivered after them.

use crate::support;

use serde_json::json;
use support::{inbox_ids, Client, Node, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_before_kill9_are_delivered_after_restart() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    // 40 users, 25 likes each, in batches; kill -9 right after the last 202.
    let users: Vec<u64> = (1000..1040).collect();
    let mut expected = std::collections::HashMap::new();
    for round in 0..25 {
        let events: Vec<_> = users
            .iter()
            .map(|&u| json!({"kind": "like", "actor": 1, "recipient": u, "object": format!("post:{round}")}))
            .collect();
        let (s, v) = node.post("/v1/events", &json!({"events": events})).await;
        assert_eq!(s, 202, "{v}");
        for (u, id) in users.iter().zip(v["ids"].as_array().unwrap()) {
            expected
                .entry(*u)
                .or_insert_with(Vec::new)
                .push(id.as_str().unwrap().to_string());
        }
    }
    node.kill9();
    node.restart();
    for &u in &users {
        let mut c = Client::connect(&node, u).await;
        // At least once: a record processed again after the crash may be
        // pushed live as well as drained from the inbox (same id).
        let mut got = std::collections::BTreeSet::new();
        while got.len() < 25 {
            let n = c.notification().await;
            got.insert(n["event_id"].as_str().unwrap().to_string());
        }
        let want: std::collections::BTreeSet<String> = expected[&u].iter().cloned().collect();
        assert_eq!(got, want, "user {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_notifications_unacked_at_kill9_come_back_after_restart() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let mut c = Client::connect(&node, 77).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        node.like(1, 77, &format!("post:{i}")).await;
        ids.push(c.notification().await["id"].as_str().unwrap().to_string());
    }
    // Only the first five are acked; they must not return.
    let acked: Vec<&str> = ids[..5].iter().map(|s| s.as_str()).collect();
    c.ack(&acked).await;
    // Wait until the checkpoint has moved past the acked ones: an ack of a
    // live notification touches no Redis key, so poll the metric of acks.
    support::eventually("acks processed", || async {
        let (_, m) = node.get("/metrics").await;
        let text = m.as_str().unwrap_or_default().to_string();
        text.lines()
            .any(|l| l.starts_with("herald_acks_total") && l.ends_with(" 5"))
            .then_some(())
    })
    .await;
    // And until the checkpoint is on disk past them: the lag counts from
    // the durable position, so it falls from 10 to the 5 unacked.
    support::eventually("the checkpoint past the acked five", || async {
        (support::metric(&node, "herald_fanout_lag_records").await == Some(5.0)).then_some(())
    })
    .await;
    node.kill9();
    drop(c);
    node.restart();
    let mut c = Client::connect(&node, 77).await;
    let back: Vec<String> = c
        .notifications(5)
        .await
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(back, ids[5..].to_vec());
    // Nothing else is pending: the next one is a fresh like.
    node.like(1, 77, "post:fresh").await;
    assert_eq!(c.notification().await["object"], "post:fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_unacked_work_to_the_inbox() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[]);
    let mut c = Client::connect(&node, 88).await;
    node.like(1, 88, "post:a").await;
    let n = c.notification().await;
    assert!(
        node.stop(),
        "herald did not exit cleanly:\n{}",
        node.log_tail()
    );
    // The client was told the server is going away.
    assert!(c.next().await.is_none());
    node.restart();
    assert_eq!(
        inbox_ids(&node, 88).await,
        vec![n["id"].as_str().unwrap().to_string()]
    );
    let mut c = Client::connect(&node, 88).await;
    assert_eq!(c.notification().await["id"], n["id"]);
}
