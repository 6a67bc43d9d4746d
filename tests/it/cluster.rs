//! Several Herald nodes as one (cross-node delivery): two real nodes on one
//! real Redis, clients on either. An event posted to one node reaches the
//! user's connection on the other live, the ack there settles the record on
//! the first; a user with devices on both nodes gets it on both; a push to
//! a node that died falls back to the inbox.

use crate::support;

use std::time::Duration;

use support::{all_settled, cluster_env, eventually, inbox_ids, Client, Node, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_a_user_on_another_node_and_its_ack_settles_it() {
    let redis = Redis::start();
    let a = Node::start(&redis, &cluster_env("node-a"));
    let b = Node::start(&redis, &cluster_env("node-b"));
    let mut on_b = Client::connect(&b, 5).await;
    let mut on_a = Client::connect(&a, 6).await;
    let mut also_on_b = Client::connect(&b, 6).await;
    // Presence is written before a connection's hello; liveness is
    // announced every second.
    support::cluster_formed(&[&a, &b]).await;

    let id = a.like(1, 5, "post:x").await;
    let n = on_b.notification().await;
    assert_eq!(n["event_id"], id.as_str(), "{n}");
    on_b.ack(&[n["id"].as_str().unwrap_or_default()]).await;

    // Two devices on two nodes: both get it.
    let id6 = a.like(2, 6, "post:y").await;
    let n_a = on_a.notification().await;
    let n_b = also_on_b.notification().await;
    assert_eq!(n_a["event_id"], id6.as_str());
    assert_eq!(n_b["event_id"], id6.as_str());
    on_a.ack(&[n_a["id"].as_str().unwrap_or_default()]).await;
    also_on_b
        .ack(&[n_b["id"].as_str().unwrap_or_default()])
        .await;

    // The acks on node B came back: node A's records settle, and nothing
    // went to the inboxes.
    eventually("records settled on node A", || async {
        all_settled(&a).await.then_some(())
    })
    .await;
    assert!(inbox_ids(&a, 5).await.is_empty());
    assert!(inbox_ids(&a, 6).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_dead_node_falls_back_to_the_inbox() {
    let redis = Redis::start();
    let a = Node::start(&redis, &cluster_env("node-a"));
    let mut b = Node::start(&redis, &cluster_env("node-b"));
    let _on_b = Client::connect(&b, 7).await;
    support::cluster_formed(&[&a, &b]).await;
    // Presence asked of node A counts the device on node B.
    let (s, v) = a.get("/v1/users/7/presence").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["online"].as_bool(), v["devices"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
    b.kill9();
    // Node A still believes node B alive for a few seconds: its push goes
    // unanswered and lands in the inbox after the answer timeout.
    let id = a.like(3, 7, "post:z").await;
    eventually("the notification in the inbox", || async {
        support::inbox_has(&a, 7, &id).await.then_some(())
    })
    .await;
    eventually("records settled on node A", || async {
        all_settled(&a).await.then_some(())
    })
    .await;
}

/// A celebrity's post is broadcast once to every node (one message per
/// node, not per follower), and each node pushes it to its own connected
/// followers; the celebrity change made on one node reaches every edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celebrity_post_reaches_followers_on_every_node() {
    const CELEB: u64 = 900;
    let redis = Redis::start();
    let mut env_a = cluster_env("node-a");
    env_a.push(("HERALD_CELEBRITY__THRESHOLD", "3"));
    let mut env_b = cluster_env("node-b");
    env_b.push(("HERALD_CELEBRITY__THRESHOLD", "3"));
    let a = Node::start(&redis, &env_a);
    let b = Node::start(&redis, &env_b);
    let mut f_on_b = Client::connect(&b, 21).await;
    let mut f_on_a = Client::connect(&a, 22).await;
    support::cluster_formed(&[&a, &b]).await;
    // Three follows make CELEB a celebrity (processed on node A).
    for f in [21u64, 22, 23] {
        let (s, v) = a
            .post(
                "/v1/events",
                &serde_json::json!({"kind": "follow", "actor": f, "recipient": CELEB}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
    }
    // The followers hear about the follows themselves (follow notifications
    // go to CELEB, not to them); wait for the celebrity switch.
    eventually("three followers", || async {
        let (_, c) = a.get(&format!("/v1/users/{CELEB}/followers/count")).await;
        (c["followers"] == 3).then_some(())
    })
    .await;
    // No wait for the switch to reach the edges: fan-out sends every edge
    // the celebrity change before any later post of CELEB (same partition,
    // log order; one queue per node).
    let (s, v) = a
        .post(
            "/v1/events",
            &serde_json::json!({"kind": "post", "actor": CELEB, "object": "post:big", "text": "hello all"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let post_id = v["ids"][0].as_str().unwrap_or_default().to_string();
    let n_a = f_on_a.notification().await;
    let n_b = f_on_b.notification().await;
    assert_eq!(n_a["event_id"], post_id.as_str(), "{n_a}");
    assert_eq!(n_b["event_id"], post_id.as_str(), "{n_b}");
    assert_eq!(n_a["id"], n_b["id"], "one id for every follower");
}

async fn subscribe(node: &Node, users: &[u64]) {
    let body = serde_json::json!({ "users": users })
        .to_string()
        .into_bytes();
    let (s, v) = node
        .request(
            "PUT",
            "/v1/objects/post:t/subscribers",
            Some(body),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn reply_by(node: &Node, actor: u64) {
    let ev = serde_json::json!({"kind": "reply", "actor": actor, "object": "post:t", "text": format!("reply by {actor}")});
    let (s, v) = node.post("/v1/events", &ev).await;
    assert_eq!(s, 202, "{v}");
}

/// A hot thread across nodes: its subscribers on either node hear an
/// event on it live (the path change and the broadcast travel to the other
/// node), one subscribed through the other node's API while connected
/// hears the next one live, an offline one pulls them on connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_thread_reaches_subscribers_on_every_node() {
    let redis = Redis::start();
    let reply = r#"{notify = ["subscribers"], subscribe_actor = true}"#;
    let env = |id| {
        let mut e = cluster_env(id);
        e.push(("HERALD_CELEBRITY__THRESHOLD", "3"));
        e.push(("HERALD_KINDS__REPLY", reply));
        e
    };
    let a = Node::start(&redis, &env("node-a"));
    let b = Node::start(&redis, &env("node-b"));
    let mut on_b = Client::connect(&b, 21).await;
    let mut on_a = Client::connect(&a, 22).await;
    let mut joins_on_b = Client::connect(&b, 24).await;
    support::cluster_formed(&[&a, &b]).await;
    let text = |n: serde_json::Value| n["text"].as_str().unwrap_or("").to_string();
    subscribe(&a, &[21, 22, 23]).await;
    // Three subscribers: the thread moves to the pull path with this reply.
    reply_by(&a, 22).await;
    assert_eq!(text(on_b.notification().await), "reply by 22");
    // Both nodes know the thread is hot once its broadcast reached them.
    eventually("both nodes count the thread", || async {
        let (a_on, b_on) = (
            support::metric(&a, "herald_celebrities").await,
            support::metric(&b, "herald_celebrities").await,
        );
        (a_on == Some(1.0) && b_on == Some(1.0)).then_some(())
    })
    .await;
    subscribe(&a, &[24]).await;
    reply_by(&a, 21).await;
    assert_eq!(text(on_a.notification().await), "reply by 21");
    assert_eq!(text(joins_on_b.notification().await), "reply by 21");
    let mut late = Client::connect(&b, 23).await;
    let got: Vec<String> = late.notifications(2).await.into_iter().map(text).collect();
    assert_eq!(got, ["reply by 22", "reply by 21"]);
    let own = support::before_sentinel(&b, &mut on_b).await;
    assert!(own.is_empty(), "21 heard of its own reply: {own:?}");
}

/// A node frozen past its liveness lifetime is taken for dead: another node
/// writes its connected users' notifications to their inboxes. When it
/// wakes it learns its liveness had lapsed and every connection drains,
/// so a user who stayed connected gets them without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_wakes_after_being_taken_for_dead_drains_its_connections() {
    let redis = Redis::start();
    let a = Node::start(&redis, &cluster_env("node-a"));
    let b = Node::start(&redis, &cluster_env("node-b"));
    let mut on_b = Client::connect(&b, 5).await;
    b.pause();
    support::eventually_within(
        "node B's liveness to lapse",
        Duration::from_secs(30),
        || async {
            (redis.cmd("EXISTS h:{nodes}:alive:node-b").as_deref() == Some(":0\r\n")).then_some(())
        },
    )
    .await;
    // Node A's own view: node B is dead, so nothing is handed to it.
    eventually("node A to see node B dead", || async {
        (support::nodes_alive(&a).await == Some(1)).then_some(())
    })
    .await;
    let id = a.like(1, 5, "post:frozen").await;
    eventually("the notification in the inbox", || async {
        (!inbox_ids(&a, 5).await.is_empty()).then_some(())
    })
    .await;
    b.resume();
    let n = on_b.notification().await;
    assert_eq!(n["event_id"], id.as_str(), "{n}");
}

/// A push handed to a node that then dies goes to the inbox once that node
/// is seen dead (its liveness lapses, 10 s), not only after the answer
/// timeout (here a minute, 45 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_node_seen_dead_goes_to_the_inbox_before_the_answer_timeout() {
    let redis = Redis::start();
    let mut env_a = cluster_env("node-a");
    env_a.retain(|(k, _)| *k != "HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS");
    env_a.push(("HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS", "60000"));
    let a = Node::start(&redis, &env_a);
    let mut b = Node::start(&redis, &cluster_env("node-b"));
    let _on_b = Client::connect(&b, 7).await;
    eventually("node A to see node B alive", || async {
        (support::nodes_alive(&a).await == Some(2)).then_some(())
    })
    .await;
    // Node A still believes node B alive for a few seconds: its push goes
    // to a node that will never answer.
    b.kill9();
    let id = a.like(3, 7, "post:z").await;
    // The deadline (40 s) is below the answer timeout (60 s): only a push
    // concluded when node B is seen dead gets there in time.
    support::eventually_within(
        "the notification in the inbox",
        Duration::from_secs(40),
        || async { support::inbox_has(&a, 7, &id).await.then_some(()) },
    )
    .await;
}

/// A push published while its node was not subscribed to its channel
/// (its subscription dropped, as a network cut or a Redis failover does)
/// is lost on the way. When that node subscribes again it says so, and
/// the sender writes the pushes still waiting for its answer to the inbox
/// at once: the user, connected throughout, gets the notification in
/// seconds, not after the answer timeout (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_lost_while_a_node_resubscribes_reaches_its_user_at_once() {
    let redis = Redis::start();
    // Node A as its own Redis user, so its pub/sub is not restricted
    // below; node B as the default user.
    let ok = redis.cmd("ACL SETUSER node-a on >secret ~* &* +@all");
    assert_eq!(ok.as_deref(), Some("+OK\r\n"), "{ok:?}");
    let url_a = format!("redis://node-a:secret@127.0.0.1:{}", redis.port);
    let mut env_a = cluster_env("node-a");
    env_a.retain(|(k, _)| *k != "HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS");
    env_a.push(("HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS", "60000"));
    let a = Node::start_unready(&url_a, &env_a);
    a.wait_ready(Duration::from_secs(60));
    let b = Node::start(&redis, &cluster_env("node-b"));
    // Users on node B whose partitions (likes go by recipient) are spread
    // over both nodes: node A fans out some of them.
    let mut on_b = Vec::new();
    for user in 1..=8u64 {
        on_b.push(Client::connect(&b, user).await);
    }
    support::cluster_formed(&[&a, &b]).await;

    // The default user may use node A's channel only: Redis drops node
    // B's subscription to its own and refuses it again.
    let ok = redis.cmd("ACL SETUSER default resetchannels &herald:node:node-a");
    assert_eq!(ok.as_deref(), Some("+OK\r\n"), "{ok:?}");
    eventually("node B's subscription to be gone", || async {
        let r = redis.cmd("PUBSUB NUMSUB herald:node:node-b")?;
        r.ends_with(":0\r\n").then_some(())
    })
    .await;
    let pushed = support::metric(&a, "herald_relay_pushes_total")
        .await
        .unwrap_or(0.0);
    let mut ids = Vec::new();
    for c in &on_b {
        ids.push(a.like(50, c.user, "post:unheard").await);
    }
    eventually("node A to hand one to node B", || async {
        let now = support::metric(&a, "herald_relay_pushes_total").await?;
        (now > pushed).then_some(())
    })
    .await;
    // Node B may subscribe again.
    let ok = redis.cmd("ACL SETUSER default allchannels");
    assert_eq!(ok.as_deref(), Some("+OK\r\n"), "{ok:?}");
    for (c, id) in on_b.iter_mut().zip(ids) {
        let got = loop {
            let v = c.next_within(Duration::from_secs(30)).await;
            let v = v.unwrap_or_else(|| {
                panic!(
                    "user {} got nothing within 30 s (the answer timeout is 60 s)",
                    c.user
                )
            });
            if v["type"] == "notification" {
                break v;
            }
        };
        assert_eq!(got["event_id"], id.as_str(), "user {}: {got}", c.user);
    }
}
