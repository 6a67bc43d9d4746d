//! The notification feed (the list behind the bell icon) and the compact
//! storage under it and the inbox, through the public API and Redis.

use crate::support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::{eventually, Client, Node, Redis};

async fn feed(node: &Node, user: u64, query: &str) -> Value {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/notifications{query}"))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_lists_what_was_sent_newest_first_with_read_state() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    // Offline: four likes, a comment.
    for (i, actor) in [11u64, 12, 13, 14].iter().enumerate() {
        node.like(*actor, 5, &format!("post:{i}")).await;
    }
    let (s, v) = node
        .post("/v1/events", &json!({"kind": "comment", "actor": 15, "recipient": 5, "object": "post:9", "text": "nice one"}))
        .await;
    assert_eq!(s, 202, "{v}");
    let all = eventually("five in the feed", || async {
        let p = feed(&node, 5, "").await;
        (ids(&p).len() == 5).then_some(p)
    })
    .await;
    assert_eq!(all["unread"], 5, "{all}");
    assert_eq!(all["next"], Value::Null);
    let first = &all["notifications"][0];
    assert_eq!(first["kind"], "comment", "newest first: {all}");
    assert_eq!(first["text"], "nice one");
    assert_eq!(first["read"], false);
    assert_eq!(all["notifications"][4]["actor"], 11, "{all}");

    // Pages of two: disjoint, in order, and they cover everything.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let p = feed(&node, 5, &format!("?limit=2{cursor}")).await;
        seen.extend(ids(&p));
        match p["next"].as_str() {
            Some(c) => cursor = format!("&before={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));

    // Connecting: hello counts unread; acking delivers but does not read.
    let mut c = Client::connect(&node, 5).await;
    assert_eq!(c.hello["unread"], 5, "{}", c.hello);
    assert_eq!(c.hello["pending"], 5, "{}", c.hello);
    let got = c.notifications(5).await;
    let got_ids: Vec<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
    c.ack(&got_ids).await;
    eventually("inbox drained", || async {
        let (_, v) = node.get("/v1/users/5/inbox").await;
        (v["pending"] == 0).then_some(())
    })
    .await;
    assert_eq!(feed(&node, 5, "").await["unread"], 5);

    // Marking read.
    let one = ids(&all)[1].clone();
    let (s, v) = node
        .post(
            "/v1/users/5/notifications/read",
            &json!({"ids": [one, "n-nonexistent"]}),
        )
        .await;
    assert_eq!((s, v["unread"].clone()), (200, json!(4)), "{v}");
    let p = feed(&node, 5, "").await;
    assert_eq!(p["notifications"][1]["read"], true, "{p}");
    assert_eq!(p["notifications"][0]["read"], false, "{p}");
    let (s, v) = node
        .post("/v1/users/5/notifications/read", &json!({"all": true}))
        .await;
    assert_eq!((s, v["unread"].clone()), (200, json!(0)), "{v}");
    c.close().await;
    let c = Client::connect(&node, 5).await;
    assert_eq!(c.hello["unread"], 0, "{}", c.hello);

    // A live notification enters the feed too, unread.
    let mut c = c;
    node.like(16, 5, "post:live").await;
    let n = c.notification().await;
    let p = eventually("live one in the feed", || async {
        let p = feed(&node, 5, "").await;
        (p["unread"] == 1).then_some(p)
    })
    .await;
    assert_eq!(p["notifications"][0]["id"], n["id"], "{p}");

    // Bad requests are refused with the field named.
    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?before=junk", "before"),
    ] {
        let (s, v) = node.get(&format!("/v1/users/5/notifications{q}")).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    for body in [
        json!({}),
        json!({"ids": []}),
        json!({"all": false}),
        json!({"ids": ["a"], "all": true}),
    ] {
        let (s, v) = node.post("/v1/users/5/notifications/read", &body).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_compact_and_a_post_to_many_stores_its_body_once() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let follows: Vec<[u64; 2]> = (100..110).map(|f| [f, 7]).collect();
    let (s, v) = node
        .post("/v1/graph/follows", &json!({"follows": follows}))
        .await;
    assert!(s == 200 || s == 202, "{v}");
    let text = "a post of some length, shared by all ten followers";
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": 7, "object": "post:1", "text": text}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    eventually("ten inboxes", || async {
        let mut n = 0;
        for f in 100..110 {
            let (_, v) = node.get(&format!("/v1/users/{f}/inbox")).await;
            n += v["pending"].as_u64().unwrap_or(0);
        }
        (n == 10).then_some(())
    })
    .await;
    // One shared body; every follower's one entry names it (inbox and
    // feed are the same entry: no inbox hash of its own).
    let bodies = redis.cmd("KEYS h:b:*").unwrap_or_default();
    assert_eq!(bodies.lines().next(), Some("*1"), "{bodies}");
    for f in [100u64, 109] {
        let enc = redis.cmd(&format!("OBJECT ENCODING h:{{u:{f}}}:fd"));
        let enc = enc.unwrap_or_default();
        assert!(enc.ends_with("listpack\r\n"), "{f}: {enc:?}");
        let len = redis
            .cmd(&format!("HLEN h:{{u:{f}}}:fd"))
            .unwrap_or_default();
        assert_eq!(len.trim(), ":1", "one entry");
        let ib = redis
            .cmd(&format!("EXISTS h:{{u:{f}}}:ib"))
            .unwrap_or_default();
        assert_eq!(ib.trim(), ":0");
        let (_, v) = node.get(&format!("/v1/users/{f}/inbox")).await;
        assert_eq!(v["notifications"][0]["text"], text, "{v}");
        let p = feed(&node, f, "").await;
        assert_eq!(p["notifications"][0]["text"], text, "{p}");
        assert_eq!(p["notifications"][0]["actor"], 7, "{p}");
    }
    let c = Client::connect(&node, 100).await;
    assert_eq!(
        (c.hello["pending"].clone(), c.hello["unread"].clone()),
        (json!(1), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_inbox_says_so_and_the_feed_still_lists_everything() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_REDIS__INBOX_CAP", "3")]);
    let mut sent = BTreeSet::new();
    for i in 0..5u64 {
        sent.insert(node.like(20 + i, 6, &format!("post:{i}")).await);
    }
    let p = eventually("five in the feed", || async {
        let p = feed(&node, 6, "").await;
        (ids(&p).len() == 5).then_some(p)
    })
    .await;
    let events: BTreeSet<String> = p["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["event_id"].as_str().map(String::from))
        .collect();
    assert_eq!(events, sent);
    let mut c = Client::connect(&node, 6).await;
    assert_eq!(c.hello["pending"], 3, "{}", c.hello);
    assert_eq!(c.hello["dropped"], 2, "{}", c.hello);
    // The three newest are what waited.
    let got = c.notifications(3).await;
    let actors: Vec<u64> = got.iter().filter_map(|n| n["actor"].as_u64()).collect();
    assert_eq!(actors, vec![22, 23, 24]);
    c.close().await;
    let c = Client::connect(&node, 6).await;
    assert_eq!(c.hello.get("dropped"), None, "counted once: {}", c.hello);
}

/// A feed made by a write starts its lifetime then, though nobody reads it:
/// delivered live (the feed writer's path) and parked (the inbox's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_made_by_a_write_expires_without_being_read() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let ttl_of = |user: u64| {
        let t = redis
            .cmd(&format!("TTL h:{{u:{user}}}:fd"))
            .unwrap_or_default();
        t.trim().trim_start_matches(':').parse::<i64>().ok()
    };
    // User 9 is connected: both likes are delivered live.
    let mut c = Client::connect(&node, 9).await;
    node.like(41, 9, "post:1").await;
    node.like(42, 9, "post:2").await;
    let got = c.notifications(2).await;
    let got: Vec<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
    c.ack(&got).await;
    // User 10 is not: both wait.
    node.like(41, 10, "post:1").await;
    node.like(42, 10, "post:2").await;
    for user in [9u64, 10] {
        // -2: not written yet; -1: written, its lifetime not yet set (the
        // EXPIRE follows the write); a hash that never gets one times out.
        let ttl = eventually("the feed written, with its lifetime", || async {
            ttl_of(user).filter(|t| *t >= 0)
        })
        .await;
        assert!(ttl > 29 * 86_400 && ttl <= 30 * 86_400, "{ttl}");
        eventually("both likes in the feed", || async {
            let t = redis
                .cmd(&format!("HLEN h:{{u:{user}}}:fd"))
                .unwrap_or_default();
            let n: usize = t.trim().trim_start_matches(':').parse().ok()?;
            (n == 2).then_some(())
        })
        .await;
        let p = feed(&node, user, "").await;
        assert_eq!(ids(&p).len(), 2, "{p}");
        assert_eq!(p["unread"], 2, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_keeps_its_newest_entries_up_to_its_cap() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_FEED__MAX_PER_USER", "5")]);
    let mut sent = Vec::new();
    for i in 0..12u64 {
        sent.push(node.like(40 + i, 8, &format!("post:{i}")).await);
    }
    eventually("twelve waiting", || async {
        let (_, v) = node.get("/v1/users/8/inbox").await;
        (v["pending"] == 12).then_some(())
    })
    .await;
    // Waiting entries are never trimmed: the feed lists all twelve.
    assert_eq!(ids(&feed(&node, 8, "?limit=50").await).len(), 12);
    // Delivered, they are trimmed back to the cap.
    let mut c = Client::connect(&node, 8).await;
    let got = c.notifications(12).await;
    let got: Vec<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
    c.ack(&got).await;
    let p = eventually("the newest in the feed, trimmed to its cap", || async {
        let p = feed(&node, 8, "?limit=50").await;
        let newest = format!("n-{}-8", sent[11]);
        let listed = ids(&p);
        (listed.contains(&newest) && (5..=6).contains(&listed.len())).then_some(p)
    })
    .await;
    let listed = ids(&p);
    assert!(!listed.contains(&format!("n-{}-8", sent[0])), "{p}");
    assert_eq!(p["unread"], listed.len(), "{p}");
    // The entries, nothing else.
    let len = redis.cmd("HLEN h:{u:8}:fd").unwrap_or_default();
    assert!(len.trim() == ":5" || len.trim() == ":6", "{len:?}");
}

/// What the user saw is what the feed lists: a burst folded into an
/// aggregate is one entry with its count (growing in place), and likes in
/// digest mode are one `digest` entry, not one entry each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_and_digests_appear_as_they_were_sent() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[("HERALD_DIGEST__WINDOW_OVERRIDE_MS", "1000")]);
    // Six likes of one post within the aggregation window, to a user who
    // is connected (the feed writer's path; the comments below wait).
    let _online = Client::connect(&node, 9).await;
    for actor in 60..66u64 {
        node.like(actor, 9, "post:hot").await;
    }
    let p = eventually("the aggregate at its full count", || async {
        let p = feed(&node, 9, "?limit=50").await;
        let agg = p["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["id"].as_str().is_some_and(|i| i.starts_with("n-agg-")))?
            .clone();
        (agg["count"] == 6).then_some(p)
    })
    .await;
    let list = p["notifications"].as_array().cloned().unwrap_or_default();
    let aggs = list
        .iter()
        .filter(|n| n["id"].as_str().is_some_and(|i| i.starts_with("n-agg-")))
        .count();
    assert_eq!(
        aggs, 1,
        "one entry for the aggregate, updated in place: {p}"
    );
    // The first two of the window went out on their own, then the
    // aggregate (aggregation.threshold = 3); in the feed the aggregate
    // replaces them: one entry, not six nor three.
    assert_eq!(list.len(), 1, "the burst is one item: {p}");
    assert_eq!(p["unread"], 1, "{p}");

    // Three comments on one post, as the bell icon shows them: one item,
    // the newest actor first, the newest text.
    for (actor, text) in [(41u64, "first!"), (42, "nice"), (43, "love this")] {
        let (s, v) = node
            .post("/v1/events", &json!({"kind": "comment", "actor": actor, "recipient": 2, "object": "post:7", "text": text}))
            .await;
        assert_eq!(s, 202, "{v}");
    }
    let p = eventually("one item for the three comments", || async {
        let p = feed(&node, 2, "").await;
        (p["notifications"].as_array()?.len() == 1 && p["notifications"][0]["count"] == 3)
            .then_some(p)
    })
    .await;
    let item = &p["notifications"][0];
    assert_eq!(item["actors"], json!([43, 42, 41]), "{item}");
    assert_eq!(item["actor"], 43, "{item}");
    assert_eq!(item["text"], "love this", "{item}");
    assert_eq!(p["unread"], 1, "{p}");

    // Digest mode: two likes become one digest entry.
    let (s, v) = node
        .request(
            "PUT",
            "/v1/users/10/preferences",
            Some(
                json!({"kinds": {"like": "digest"}})
                    .to_string()
                    .into_bytes(),
            ),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    node.like(70, 10, "post:a").await;
    node.like(71, 10, "post:b").await;
    let p = eventually("the digest in the feed", || async {
        let p = feed(&node, 10, "").await;
        (p["notifications"][0]["type"] == "digest").then_some(p)
    })
    .await;
    assert_eq!(ids(&p).len(), 1, "{p}");
    assert_eq!(p["notifications"][0]["count"], 2, "{p}");
    assert_eq!(p["unread"], 1, "{p}");
}
