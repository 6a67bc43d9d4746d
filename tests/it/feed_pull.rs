//! Posts on the pull path in the feed (issue 27 item 4): a celebrity's
//! posts are stored once, in its outbox, yet each follower's feed lists
//! them (from when they followed), newest first among their own entries,
//! with read state of their own and in the unread count (the page's, the
//! mark-read answer's and `hello`'s); a follower who muted the celebrity
//! does not see them.

use crate::support;

use serde_json::{json, Value};
use support::{eventually, put_prefs, Client, Node, Redis};

const CELEB: u64 = 1;

async fn feed(node: &Node, user: u64, query: &str) -> Value {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/notifications{query}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn texts(page: &Value) -> Vec<(String, bool)> {
    page["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let what = n["text"]
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| n["kind"].as_str().unwrap_or("").to_string());
                    (what, n["read"].as_bool().unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn send(node: &Node, ev: Value) {
    let (s, v) = node.post("/v1/events", &ev).await;
    assert_eq!(s, 202, "{v}");
}

async fn mark(node: &Node, user: u64, body: Value) -> u64 {
    let (s, v) = node
        .post(&format!("/v1/users/{user}/notifications/read"), &body)
        .await;
    assert_eq!(s, 200, "{v}");
    v["unread"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celebritys_posts_are_in_its_followers_feeds_with_read_state() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_CELEBRITY__THRESHOLD", "3")]);
    for f in [10u64, 11, 12] {
        send(
            &node,
            json!({"kind": "follow", "actor": f, "recipient": CELEB}),
        )
        .await;
    }
    eventually("three followers", || async {
        let (_, c) = node
            .get(&format!("/v1/users/{CELEB}/followers/count"))
            .await;
        (c["followers"] == 3).then_some(())
    })
    .await;
    put_prefs(&node, 11, &json!({"muted_actors": [CELEB]})).await;
    // Same partition as the follows, in log order: both on the pull path.
    send(
        &node,
        json!({"kind": "post", "actor": CELEB, "object": "post:a", "text": "first"}),
    )
    .await;
    send(
        &node,
        json!({"kind": "follow", "actor": 13, "recipient": CELEB}),
    )
    .await;
    send(
        &node,
        json!({"kind": "post", "actor": CELEB, "object": "post:b", "text": "second"}),
    )
    .await;
    send(
        &node,
        json!({"kind": "like", "actor": 20, "recipient": 10, "object": "post:10"}),
    )
    .await;

    // Newest first, the follower's own like among the celebrity's posts.
    let page = eventually("the feed lists all three", || async {
        let p = feed(&node, 10, "").await;
        (texts(&p).len() == 3).then_some(p)
    })
    .await;
    assert_eq!(
        texts(&page),
        [
            ("like".into(), false),
            ("second".into(), false),
            ("first".into(), false)
        ]
    );
    assert_eq!(page["unread"], 3, "{page}");
    // Pages through them with the cursor.
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let p = feed(&node, 10, &query).await;
        seen.extend(texts(&p).into_iter().map(|(t, _)| t));
        match p["next"].as_str() {
            Some(n) => query = format!("?limit=1&before={n}"),
            None => break,
        }
    }
    assert_eq!(seen, ["like", "second", "first"]);
    // From the follow on: 13 followed between the posts; 11 muted them.
    assert_eq!(
        texts(&feed(&node, 13, "").await),
        [("second".into(), false)]
    );
    assert_eq!(feed(&node, 11, "").await["notifications"], json!([]));

    // Read state: one post by its id, then everything.
    let second = page["notifications"][1]["id"].as_str().unwrap().to_string();
    assert!(second.ends_with("-all"), "{second}");
    assert_eq!(mark(&node, 10, json!({"ids": [second]})).await, 2);
    let page = feed(&node, 10, "").await;
    assert_eq!(
        texts(&page),
        [
            ("like".into(), false),
            ("second".into(), true),
            ("first".into(), false)
        ]
    );
    assert_eq!(page["unread"], 2);
    // hello counts them too.
    let c = Client::connect(&node, 10).await;
    assert_eq!(c.hello["unread"], 2, "{}", c.hello);
    c.close().await;
    assert_eq!(mark(&node, 10, json!({"all": true})).await, 0);
    let page = feed(&node, 10, "").await;
    assert!(texts(&page).iter().all(|(_, read)| *read), "{page}");
    assert_eq!(page["unread"], 0);
    // Another follower's read state is their own.
    assert_eq!(feed(&node, 12, "").await["unread"], 2);
}
