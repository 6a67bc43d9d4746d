//! Digests and quiet hours: notifications that wait for a time, then arrive
//! once, in order, even across a restart.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{Client, Node, Redis};

const WINDOW_MS: u64 = 6000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until just after the start of a digest window.
async fn window_start() {
    while now_ms() % WINDOW_MS > 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mode_likes_arrive_once_as_one_digest_even_across_a_restart() {
    let redis = Redis::start();
    let window = WINDOW_MS.to_string();
    let mut node = Node::start(
        &redis,
        &[("HERALD_DIGEST__WINDOW_OVERRIDE_MS", window.as_str())],
    );
    support::put_prefs(&node, 20, &json!({"kinds": {"like": "digest"}})).await;
    window_start().await;
    for (actor, post) in [(1, "post:a"), (2, "post:a"), (3, "post:b")] {
        node.like(actor, 20, post).await;
    }
    // A crash in the middle of the window, once the three wait in it.
    support::eventually("three collected for the digest", || async {
        let n = support::metric(&node, "herald_notifications_total{route=\"waiting\"}").await;
        (n >= Some(3.0)).then_some(())
    })
    .await;
    node.kill9();
    node.restart();
    node.like(4, 20, "post:a").await;
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "comment", "actor": 5, "recipient": 20, "object": "post:c"}),
        )
        .await;
    assert_eq!(s, 202);
    let mut c = Client::connect(&node, 20).await;
    // The comment is real time; the likes wait.
    let first = c.notification().await;
    assert_eq!(
        (first["kind"].as_str(), first["object"].as_str()),
        (Some("comment"), Some("post:c"))
    );
    c.ack(&[first["id"].as_str().unwrap()]).await;
    // At the window's end: one digest with all four likes.
    let d = c
        .next_within(Duration::from_millis(WINDOW_MS + 5000))
        .await
        .expect("a digest");
    assert_eq!(d["type"], "digest", "expected only a digest, got {d}");
    assert_eq!(d["count"], 4, "{d}");
    assert!(d["id"].as_str().unwrap().starts_with("d-"));
    assert!(d["window_end_ms"].as_u64() > d["window_start_ms"].as_u64());
    let items = d["items"].as_array().unwrap();
    let a = items
        .iter()
        .find(|i| i["object"] == "post:a")
        .expect("post:a group");
    assert_eq!(
        (a["kind"].as_str(), a["count"].as_u64()),
        (Some("like"), Some(3))
    );
    let b = items
        .iter()
        .find(|i| i["object"] == "post:b")
        .expect("post:b group");
    assert_eq!(b["count"], 1);
    c.ack(&[d["id"].as_str().unwrap()]).await;
    // Exactly once: nothing else comes, even after the next window closes.
    let extra = c.next_within(Duration::from_millis(WINDOW_MS + 1000)).await;
    assert!(
        extra.is_none()
            || extra
                .as_ref()
                .is_some_and(|f| f["type"] != "digest" && f["type"] != "notification"),
        "{extra:?}"
    );
    node.post(
        "/v1/events",
        &json!({"kind": "comment", "actor": 5, "recipient": 20, "object": "post:end"}),
    )
    .await;
    assert_eq!(c.notification().await["object"], "post:end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_notifications_and_release_them_in_order() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    // Quiet from this minute to the next (UTC); leave at least 15 s of it.
    while (now_ms() / 1000) % 60 > 45 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let min = (now_ms() / 60_000) % (24 * 60);
    let hhmm = |m: u64| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    support::put_prefs(
        &node,
        30,
        &json!({"quiet_hours": {"start": hhmm(min), "end": hhmm(min + 1), "timezone": "UTC"}}),
    )
    .await;
    let mut c = Client::connect(&node, 30).await;
    for i in 0..3 {
        node.like(100 + i, 30, &format!("post:q{i}")).await;
    }
    // Nothing arrives during the quiet minute...
    let end = (now_ms() / 60_000 + 1) * 60_000;
    let early = c
        .next_within(Duration::from_millis(
            end.saturating_sub(now_ms()).saturating_sub(500),
        ))
        .await;
    assert!(
        early.is_none() || early.as_ref().is_some_and(|f| f["type"] != "notification"),
        "{early:?}"
    );
    // ...then all three, in order.
    let got: Vec<String> = c
        .notifications(3)
        .await
        .iter()
        .map(|n| n["object"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["post:q0", "post:q1", "post:q2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mode_followers_get_a_celebrity_post_in_their_digest() {
    let redis = Redis::start();
    let window = WINDOW_MS.to_string();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_DIGEST__WINDOW_OVERRIDE_MS", window.as_str()),
            ("HERALD_CELEBRITY__THRESHOLD", "100"),
        ],
    );
    let pairs: Vec<[u64; 2]> = (1000..1150).map(|f| [f, 1]).collect();
    let (s, _) = node
        .post("/v1/graph/follows", &json!({ "follows": pairs }))
        .await;
    assert_eq!(s, 200);
    for u in [1000, 1001] {
        support::put_prefs(&node, u, &json!({"kinds": {"post": "digest"}})).await;
    }
    window_start().await;
    let mut online_digest = Client::connect(&node, 1000).await;
    let mut realtime = Client::connect(&node, 1002).await;
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": 1, "object": "post:star"}),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(realtime.notification().await["object"], "post:star");
    // The offline digest follower connects before the window ends: nothing yet.
    let mut offline_digest = Client::connect(&node, 1001).await;
    assert_eq!(offline_digest.hello["pending"], 0);
    for c in [&mut online_digest, &mut offline_digest] {
        let d = c
            .next_within(Duration::from_millis(WINDOW_MS + 5000))
            .await
            .expect("a digest");
        assert_eq!(d["type"], "digest", "user {} got {d}", c.user);
        assert_eq!(d["count"], 1);
        assert_eq!(d["items"][0]["object"], "post:star");
        assert_eq!(d["items"][0]["kind"], "post");
    }
}
