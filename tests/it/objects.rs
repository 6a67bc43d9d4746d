//! Object subscriptions (issue 28 item 3): a kind that notifies
//! `subscribers` tells everyone who follows the thread but the actor, a
//! kind with `subscribe_actor` makes its actor follow it, a mute of the
//! object wins, and the API pages the subscribers.

use crate::support;

use serde_json::{json, Value};
use support::{before_sentinel, put_prefs, Client, Node, Redis};

const REPLY: &str = r#"{notify = ["recipient", "subscribers"], subscribe_actor = true}"#;

async fn reply(node: &Node, actor: u64, object: &str) {
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "reply", "actor": actor, "recipient": 2, "object": object, "text": format!("reply by {actor}")}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
}

async fn change(node: &Node, method: &str, object: &str, users: &[u64]) -> (u16, Value) {
    node.request(
        method,
        &format!("/v1/objects/{object}/subscribers"),
        Some(json!({ "users": users }).to_string().into_bytes()),
        &[("content-type", "application/json")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_tells_its_subscribers_and_commenters_join_it() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_KINDS__REPLY", REPLY)]);
    let mut c: std::collections::HashMap<u64, Client> = Default::default();
    for u in [2u64, 3, 4, 5] {
        c.insert(u, Client::connect(&node, u).await);
    }
    let text = |n: &Value| n["text"].as_str().unwrap_or("").to_string();

    // 3 replies: the post's author hears; 3 now follows the thread.
    reply(&node, 3, "post:9").await;
    assert_eq!(
        text(&c.get_mut(&2).unwrap().notification().await),
        "reply by 3"
    );
    // 4 replies: the author and 3 hear, not 4 itself.
    reply(&node, 4, "post:9").await;
    assert_eq!(
        text(&c.get_mut(&2).unwrap().notification().await),
        "reply by 4"
    );
    assert_eq!(
        text(&c.get_mut(&3).unwrap().notification().await),
        "reply by 4"
    );
    let own = before_sentinel(&node, c.get_mut(&4).unwrap()).await;
    assert!(
        own.is_empty(),
        "the actor heard of their own reply: {own:?}"
    );

    // The API: 5 subscribed by the product; pages in id order.
    let (s, v) = change(&node, "PUT", "post:9", &[5]).await;
    assert_eq!((s, &v["subscribers"]), (200, &json!(3)), "{v}");
    let (s, v) = node.get("/v1/objects/post:9/subscribers?limit=2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["users"], json!([3, 4]));
    let next = v["next"].as_str().expect("a next page").to_string();
    let (_, v) = node
        .get(&format!(
            "/v1/objects/post:9/subscribers?limit=2&cursor={next}"
        ))
        .await;
    assert_eq!(
        (v["users"].clone(), v["next"].clone()),
        (json!([5]), Value::Null),
        "{v}"
    );

    // 5 mutes the thread: the mute wins. 3 unsubscribes.
    put_prefs(&node, 5, &json!({"muted_objects": ["post:9"]})).await;
    let (s, v) = change(&node, "DELETE", "post:9", &[3]).await;
    assert_eq!((s, &v["subscribers"]), (200, &json!(2)), "{v}");
    reply(&node, 2, "post:9").await;
    assert_eq!(
        text(&c.get_mut(&4).unwrap().notification().await),
        "reply by 2"
    );
    for u in [3u64, 5] {
        let got = before_sentinel(&node, c.get_mut(&u).unwrap()).await;
        assert!(got.is_empty(), "user {u} heard of the thread: {got:?}");
    }

    // Another thread, its object percent-encoded in the path.
    let (s, v) = change(&node, "PUT", "post%3A10%2Fa%20b", &[3]).await;
    assert_eq!((s, &v["subscribers"]), (200, &json!(1)), "{v}");
    reply(&node, 4, "post:10/a b").await;
    let n = c.get_mut(&3).unwrap().notification().await;
    assert_eq!(
        (n["object"].as_str(), text(&n).as_str()),
        (Some("post:10/a b"), "reply by 4")
    );

    // Refusals name the field.
    for (body, field) in [
        (json!({"users": []}), "users"),
        (json!({"users": ["x"]}), "users"),
        (json!({"people": [1]}), "people"),
    ] {
        let (s, v) = node
            .request(
                "PUT",
                "/v1/objects/post:9/subscribers",
                Some(body.to_string().into_bytes()),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    let long = "o".repeat(129);
    let (s, v) = node.get(&format!("/v1/objects/{long}/subscribers")).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("object")),
        "{v}"
    );
    let (s, v) = node.get("/v1/objects/post:9/subscribers?cursor=abc").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("cursor")),
        "{v}"
    );
    // A reply needs its object.
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "reply", "actor": 3, "recipient": 2}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("object")),
        "{v}"
    );
}

/// A thread past `celebrity.threshold` subscribers (50,000 here) takes the
/// pull path: a reply is one outbox write and one broadcast, whatever the
/// number of subscribers; connected subscribers get it live, once, never
/// its own actor; offline ones pull it when they connect, from their
/// subscription on; a user subscribed through the API while connected
/// hears the next reply live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_with_50000_subscribers_takes_the_pull_path_with_o1_writes() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_KINDS__REPLY", REPLY)]);
    let object = "post:big";
    // 50,000 subscribers: the post's author 2 among them, and 100..50,099.
    let mut all: Vec<u64> = (100..50_099).collect();
    all.push(2);
    let mut total = 0;
    for chunk in all.chunks(10_000) {
        let (s, v) = change(&node, "PUT", object, chunk).await;
        assert_eq!(s, 200, "{v}");
        total = v["subscribers"].as_u64().unwrap();
    }
    assert_eq!(total, 50_000);
    let mut c: std::collections::HashMap<u64, Client> = Default::default();
    for u in [2u64, 100, 101, 102, 7] {
        c.insert(u, Client::connect(&node, u).await);
    }
    let text = |n: &Value| n["text"].as_str().unwrap_or("").to_string();

    // The first reply moves the thread to the pull path (the edge indexes
    // its connected subscribers first), the second is measured.
    reply(&node, 100, object).await;
    for u in [2u64, 101, 102] {
        assert_eq!(
            text(&c.get_mut(&u).unwrap().notification().await),
            "reply by 100",
            "user {u}"
        );
    }
    let before = redis.command_calls();
    reply(&node, 101, object).await;
    let mut ids = Vec::new();
    for u in [2u64, 100, 102] {
        let n = c.get_mut(&u).unwrap().notification().await;
        assert_eq!(text(&n), "reply by 101", "user {u}");
        ids.push(n["id"].as_str().unwrap().to_string());
    }
    let after = redis.command_calls();
    let scripts = |m: &std::collections::HashMap<String, u64>| {
        m.get("evalsha").copied().unwrap_or(0) + m.get("eval").copied().unwrap_or(0)
    };
    let w = support::writes(&before, &after) + scripts(&after) - scripts(&before);
    // The actor joins the thread (two writes), the post goes to the
    // thread's outbox (one script); nothing per subscriber.
    assert!(
        w <= 10,
        "a reply to 50,000 subscribers cost {w} Redis writes"
    );
    assert!(
        ids.iter().all(|id| id.ends_with("-all")),
        "one shared id: {ids:?}"
    );

    // Nobody heard it twice, the actors not of their own reply, and a user
    // outside the thread not at all.
    for u in [2u64, 100, 101, 102, 7] {
        let rest = before_sentinel(&node, c.get_mut(&u).unwrap()).await;
        assert_eq!(
            rest.iter().map(text).collect::<Vec<_>>(),
            Vec::<String>::new(),
            "user {u}"
        );
    }

    // An offline subscriber pulls both replies when they connect.
    let mut late = Client::connect(&node, 5_000).await;
    let got: Vec<String> = late.notifications(2).await.iter().map(text).collect();
    assert_eq!(got, ["reply by 100", "reply by 101"]);

    // Subscribed through the API while connected: the next reply live,
    // none from before the subscription (here or on reconnect).
    let mut joiner = Client::connect(&node, 60_000).await;
    let (s, v) = change(&node, "PUT", object, &[60_000]).await;
    assert_eq!((s, &v["subscribers"]), (200, &json!(50_001)), "{v}");
    reply(&node, 102, object).await;
    assert_eq!(text(&joiner.notification().await), "reply by 102");
    joiner.close().await;
    let mut joiner = Client::connect(&node, 60_000).await;
    let again = before_sentinel(&node, &mut joiner).await;
    assert!(
        again.iter().all(|n| text(n) == "reply by 102"),
        "sent what came before the subscription: {again:?}"
    );
}
