//! Preferences as a user sets them through the API: mutes (with expiry),
//! modes per kind, validation, and mutes on the celebrity path.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{inbox_ids, Client, Node, Redis};

async fn put(node: &Node, user: u64, body: serde_json::Value) -> (u16, serde_json::Value) {
    let b = body.to_string().into_bytes();
    node.request(
        "PUT",
        &format!("/v1/users/{user}/preferences"),
        Some(b),
        &[("content-type", "application/json")],
    )
    .await
}

async fn mute(
    node: &Node,
    user: u64,
    method: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let b = body.to_string().into_bytes();
    node.request(
        method,
        &format!("/v1/users/{user}/mutes"),
        Some(b),
        &[("content-type", "application/json")],
    )
    .await
}

/// The next notification must be about `object` (and is acked).
async fn expect_next(c: &mut Client, object: &str) {
    let n = c.notification().await;
    assert_eq!(n["object"], object, "user {} got {n}", c.user);
    c.ack(&[n["id"].as_str().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_actor_never_reaches_the_user_until_unmuted_or_lapsed() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, v) = mute(&node, 2, "POST", json!({"actor": 66})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["muted_actors"], json!([66]));
    // Offline: nothing reaches the inbox.
    node.like(66, 2, "post:muted-offline").await;
    node.like(67, 2, "post:other").await;
    let mut c = Client::connect(&node, 2).await;
    expect_next(&mut c, "post:other").await;
    // Online: nothing is pushed.
    node.like(66, 2, "post:muted-live").await;
    node.like(67, 2, "post:other-2").await;
    expect_next(&mut c, "post:other-2").await;
    // Unmuted: it comes through.
    let (s, v) = mute(&node, 2, "DELETE", json!({"actor": 66})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["muted_actors"], json!([]));
    node.like(66, 2, "post:unmuted").await;
    expect_next(&mut c, "post:unmuted").await;
    c.close().await;
    assert!(
        inbox_ids(&node, 2).await.is_empty(),
        "the muted likes were never queued"
    );

    // An object mute that lapses by itself.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let (s, _) = mute(
        &node,
        3,
        "POST",
        json!({"object": "post:thread", "until_ms": until}),
    )
    .await;
    assert_eq!(s, 200);
    let mut c = Client::connect(&node, 3).await;
    node.like(5, 3, "post:thread").await;
    node.like(5, 3, "post:elsewhere").await;
    expect_next(&mut c, "post:elsewhere").await;
    // Past until_ms (plus the cache's second), the thread is audible
    // again: likes on it are sent until one comes through (the muted ones
    // never do, so the first frame is the thread's).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        node.like(5, 3, "post:thread").await;
        if let Some(n) = c.next_within(Duration::from_millis(500)).await {
            assert_eq!(n["object"], "post:thread", "{n}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the object mute never lapsed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_off_drops_likes_but_not_comments() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, v) = put(&node, 4, json!({"kinds": {"like": "off"}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["kinds"]["like"], "off");
    assert_eq!(v["default"], "realtime");
    let mut c = Client::connect(&node, 4).await;
    node.like(1, 4, "post:liked").await;
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "comment", "actor": 1, "recipient": 4, "object": "post:commented"}),
        )
        .await;
    assert_eq!(s, 202);
    expect_next(&mut c, "post:commented").await;
    // Back to real time.
    let (s, _) = put(&node, 4, json!({"default": "realtime"})).await;
    assert_eq!(s, 200);
    node.like(1, 4, "post:liked-again").await;
    expect_next(&mut c, "post:liked-again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_preferences_are_refused_and_change_nothing() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, v) = node.get("/v1/users/9/preferences").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["default"], "realtime",
        "defaults for a user who never set anything: {v}"
    );
    let good = json!({
        "default": "realtime",
        "kinds": {"like": "digest", "follow": "realtime", "post": "off"},
        "digest": {"interval": "daily", "timezone": "Europe/Paris", "hour": 9},
        "muted_actors": [42],
        "muted_objects": ["post:7"],
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}
    });
    let (s, stored) = put(&node, 9, good.clone()).await;
    assert_eq!(s, 200, "{stored}");
    for (body, field) in [
        (json!({"colour": "red"}), "colour"),
        (json!({"default": "loud"}), "default"),
        (json!({"kinds": {"poke": "off"}}), "kinds.poke"),
        (
            json!({"digest": {"timezone": "Mars/Olympus_Mons"}}),
            "digest.timezone",
        ),
        (json!({"digest": {"hour": 25}}), "digest.hour"),
        (
            json!({"quiet_hours": {"start": "7pm", "end": "07:00"}}),
            "quiet_hours.start",
        ),
        (json!({"muted_actors": [-1]}), "muted_actors"),
    ] {
        let (s, v) = put(&node, 9, body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
        let (_, now) = node.get("/v1/users/9/preferences").await;
        assert_eq!(now, stored, "a refused body changed the stored preferences");
    }
    let (s, v) = mute(&node, 9, "POST", json!({"actor": 1, "object": "post:1"})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("actor")));
    let (s, v) = mute(&node, 9, "POST", json!({"actor": 1, "until_ms": 5})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("until_ms")));
    let (s, v) = mute(&node, 9, "POST", json!({"actor": 1, "forever": true})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("forever")));
    let (_, now) = node.get("/v1/users/9/preferences").await;
    assert_eq!(now, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_who_muted_a_celebrity_never_gets_its_posts() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_CELEBRITY__THRESHOLD", "100")]);
    let pairs: Vec<[u64; 2]> = (1000..1200).map(|f| [f, 1]).collect();
    let (s, _) = node
        .post("/v1/graph/follows", &json!({ "follows": pairs }))
        .await;
    assert_eq!(s, 200);
    // 1000 (online) and 1100 (offline) mute the celebrity; 1001 does not.
    for u in [1000, 1100] {
        let (s, _) = mute(&node, u, "POST", json!({"actor": 1})).await;
        assert_eq!(s, 200);
    }
    let mut muted = Client::connect(&node, 1000).await;
    let mut hearing = Client::connect(&node, 1001).await;
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": 1, "object": "post:c"}),
        )
        .await;
    assert_eq!(s, 202);
    expect_next(&mut hearing, "post:c").await;
    node.like(5, 1000, "post:after").await;
    expect_next(&mut muted, "post:after").await;
    let mut offline = Client::connect(&node, 1100).await;
    assert_eq!(offline.hello["pending"], 0);
    node.like(5, 1100, "post:after").await;
    expect_next(&mut offline, "post:after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_likes_arrives_as_a_few_aggregates_counting_500() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut owner = Client::connect(&node, 10).await;
    // 500 likes from 500 people on one post, in five requests.
    for chunk in 0..5u64 {
        let events: Vec<_> = (0..100u64)
            .map(|i| json!({"kind": "like", "actor": 1000 + chunk * 100 + i, "recipient": 10, "object": "post:viral"}))
            .collect();
        let (s, v) = node.post("/v1/events", &json!({ "events": events })).await;
        assert_eq!(s, 202, "{v}");
    }
    // Singles, then one aggregate id re-sent as it grows, up to 500 in all.
    let mut frames = 0;
    let mut singles = 0u64;
    let mut latest: Option<serde_json::Value> = None;
    while latest.as_ref().map_or(0, |n| n["count"].as_u64().unwrap()) < 500 {
        let n = owner.notification().await;
        frames += 1;
        assert_eq!(n["object"], "post:viral");
        if n["count"] == 1 {
            singles += 1;
            continue;
        }
        if let Some(prev) = &latest {
            assert_eq!(n["id"], prev["id"], "an updated aggregate keeps its id");
            assert!(n["count"].as_u64() > prev["count"].as_u64());
        }
        assert!(n["actors"].as_array().unwrap().len() <= 3);
        latest = Some(n);
    }
    let last = latest.unwrap();
    assert_eq!(last["count"], 500, "{last}");
    assert_eq!(last["actors"][0], 1499, "the newest liker leads: {last}");
    assert!(singles <= 2, "{singles} singles");
    assert!(frames <= 20, "500 likes took {frames} frames");
    let ids = [last["id"].as_str().unwrap()];
    owner.ack(&ids).await;
    node.like(1, 10, "post:other").await;
    expect_next(&mut owner, "post:other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_recipient_rate_the_excess_folds_and_nothing_is_lost() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_AGGREGATION__RATE_PER_RECIPIENT", "5")]);
    let mut c = Client::connect(&node, 11).await;
    // 40 likes on 40 different posts at once.
    let events: Vec<_> = (0..40u64)
        .map(|i| json!({"kind": "like", "actor": 500 + i, "recipient": 11, "object": format!("post:{i}")}))
        .collect();
    let (s, v) = node.post("/v1/events", &json!({ "events": events })).await;
    assert_eq!(s, 202, "{v}");
    let mut singles = 0u64;
    let mut folded: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    while singles + folded.values().sum::<u64>() < 40 {
        let n = c.notification().await;
        if n["count"] == 1 && !n["id"].as_str().unwrap().starts_with("n-agg-") {
            singles += 1;
        } else {
            // An aggregate grows under one id: keep its latest count.
            folded.insert(
                n["id"].as_str().unwrap().to_string(),
                n["count"].as_u64().unwrap(),
            );
        }
    }
    assert!(
        singles <= 6,
        "{singles} pushed one by one past a rate of 5/s"
    );
    assert_eq!(singles + folded.values().sum::<u64>(), 40);
}
