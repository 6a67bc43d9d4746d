//! Kinds declared in the configuration (issue 28 item 2): each rule
//! reaches exactly the right users, preferences apply to declared kinds,
//! and notifications stored under a kind read back after it is renamed or
//! removed.

use crate::support;

use serde_json::{json, Value};
use support::{before_sentinel, eventually, put_prefs, Client, Node, Redis};

const REPOST: &str = r#"{notify = ["recipient", "followers"], partition_by = "actor"}"#;
const SHOUT: &str = r#"{notify = ["mentions"], fold = true}"#;
const NUDGE: &str = r#"{notify = ["recipient"], default_mode = "off"}"#;

async fn accepted(node: &Node, ev: Value) {
    let (s, v) = node.post("/v1/events", &ev).await;
    assert_eq!(s, 202, "{ev}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_declared_rule_reaches_exactly_its_users() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_KINDS__REPOST", REPOST),
            ("HERALD_KINDS__SHOUT", SHOUT),
            ("HERALD_KINDS__NUDGE", NUDGE),
        ],
    );
    let (s, v) = node
        .post(
            "/v1/graph/follows",
            &json!({"follows": [[10, 1], [11, 1], [2, 1]]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut c: Vec<Client> = Vec::new();
    for u in [2u64, 10, 11, 12, 13] {
        c.push(Client::connect(&node, u).await);
    }

    // repost: its recipient and the actor's followers, once each (2 is
    // both), with its data.
    accepted(
        &node,
        json!({"kind": "repost", "actor": 1, "recipient": 2, "object": "post:5", "data": {"of": "post:5"}}),
    )
    .await;
    for client in c.iter_mut().take(3) {
        let n = client.notification().await;
        assert_eq!(
            (n["kind"].as_str(), n["actor"].as_u64()),
            (Some("repost"), Some(1)),
            "{n}"
        );
        assert_eq!(n["data"]["of"], "post:5");
    }
    // shout: the mentioned alone.
    accepted(
        &node,
        json!({"kind": "shout", "actor": 1, "mentions": [12]}),
    )
    .await;
    assert_eq!(c[3].notification().await["kind"], "shout");
    // nudge: off unless the user turns it on.
    accepted(&node, json!({"kind": "nudge", "actor": 1, "recipient": 13})).await;
    let missed = before_sentinel(&node, &mut c[4]).await;
    assert!(missed.is_empty(), "default_mode off: {missed:?}");
    put_prefs(&node, 13, &json!({"kinds": {"nudge": "realtime"}})).await;
    accepted(&node, json!({"kind": "nudge", "actor": 1, "recipient": 13})).await;
    assert_eq!(c[4].notification().await["kind"], "nudge");
    // Nobody else heard anything: each one's next notification is its
    // sentinel.
    for (i, u) in [(0usize, 2u64), (1, 10), (2, 11), (3, 12)] {
        let extra = before_sentinel(&node, &mut c[i]).await;
        assert!(extra.is_empty(), "user {u} got more: {extra:?}");
    }

    // A mute of the actor applies to a declared kind too.
    put_prefs(&node, 10, &json!({"muted_actors": [1]})).await;
    accepted(
        &node,
        json!({"kind": "repost", "actor": 1, "recipient": 12, "object": "post:6"}),
    )
    .await;
    assert_eq!(c[3].notification().await["kind"], "repost");
    let muted = before_sentinel(&node, &mut c[1]).await;
    assert!(
        muted.is_empty(),
        "a muted actor's repost arrived: {muted:?}"
    );

    // Refusals: an undeclared kind names the field and the kinds declared;
    // a declared kind's required fields are asked for.
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "poke", "actor": 1, "recipient": 2}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("kind")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("\"poke\"") && msg.contains("repost"), "{msg}");
    let (s, v) = node
        .post("/v1/events", &json!({"kind": "repost", "actor": 1}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("recipient")),
        "{v}"
    );
    let (s, v) = node
        .post("/v1/events", &json!({"kind": "shout", "actor": 1}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("mentions")),
        "{v}"
    );
    let (s, v) = node
        .request(
            "PUT",
            "/v1/users/5/preferences",
            Some(json!({"kinds": {"poke": "off"}}).to_string().into_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("kinds.poke")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_notifications_read_back_after_a_kind_is_renamed_or_removed() {
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[("HERALD_KINDS__REPOST", REPOST)]);
    // Offline: one repost waits in 2's inbox (and feed).
    accepted(
        &node,
        json!({"kind": "repost", "actor": 1, "recipient": 2, "object": "post:5"}),
    )
    .await;
    eventually("the repost waits", || async {
        let (_, v) = node.get("/v1/users/2/inbox").await;
        (v["pending"] == 1).then_some(())
    })
    .await;

    // Renamed (its former name kept), and declared after another kind.
    node.stop();
    node.unset_env("HERALD_KINDS__REPOST");
    node.set_env("HERALD_KINDS__AAA", SHOUT);
    node.set_env(
        "HERALD_KINDS__SHARE",
        r#"{notify = ["recipient", "followers"], partition_by = "actor", aliases = ["repost"]}"#,
    );
    node.restart();
    let (_, v) = node.get("/v1/users/2/notifications").await;
    assert_eq!(v["notifications"][0]["kind"], "share", "{v}");
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "repost", "actor": 1, "recipient": 2}),
        )
        .await;
    assert_eq!(s, 400, "a former name is not accepted in new events");

    // Removed: still read, under the name it was stored with.
    node.stop();
    node.unset_env("HERALD_KINDS__SHARE");
    node.restart();
    let mut c = Client::connect(&node, 2).await;
    assert_eq!(c.hello["pending"], 1, "{}", c.hello);
    let n = c.notification().await;
    assert_eq!(
        (n["kind"].as_str(), n["object"].as_str()),
        (Some("repost"), Some("post:5")),
        "{n}"
    );
    c.ack(&[n["id"].as_str().unwrap_or("")]).await;
    eventually("acked", || async {
        let (_, v) = node.get("/v1/users/2/inbox").await;
        (v["pending"] == 0).then_some(())
    })
    .await;
}

/// An event accepted under a kind the node no longer declares when it fans
/// it out (here: removed from the configuration across a restart while
/// Redis was frozen) is kept as a dead letter, not dropped, and replays
/// once the kind is declared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_kind_no_longer_declared_becomes_a_dead_letter_and_replays() {
    const WAVE: &str = r#"{notify = ["recipient"]}"#;
    let redis = Redis::start();
    let mut node = Node::start(&redis, &[("HERALD_KINDS__WAVE", WAVE)]);
    // Redis frozen: the event is durable in the log, its fan-out waits.
    redis.pause();
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "wave", "actor": 1, "recipient": 2}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    node.kill9();
    node.unset_env("HERALD_KINDS__WAVE");
    redis.resume();
    node.restart();
    let letters = eventually("a dead letter for the wave", || async {
        let (_, v) = node.get("/v1/admin/dead-letters?limit=10").await;
        let l = v["dead_letters"].as_array().cloned().unwrap_or_default();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["kind"], "wave", "{letters:?}");
    let why = letters[0]["reason"].as_str().unwrap_or("");
    assert!(why.contains("not declared"), "{why}");
    let (s, _) = node.get("/v1/users/2/inbox").await;
    assert_eq!(s, 200);

    // Declared again: the replay reaches the user.
    node.stop();
    node.set_env("HERALD_KINDS__WAVE", WAVE);
    node.restart();
    let (s, v) = node
        .post("/v1/admin/dead-letters/replay", &json!({"all": true}))
        .await;
    assert_eq!(s, 200, "{v}");
    let mut c = Client::connect(&node, 2).await;
    let n = c.notification().await;
    assert_eq!(
        (n["kind"].as_str(), n["actor"].as_u64()),
        (Some("wave"), Some(1)),
        "{n}"
    );
}
