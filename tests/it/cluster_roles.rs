//! Partition ownership and roles across real nodes on one real Redis:
//! events posted to any node are appended by the owner of their partition
//! (per-followee order holds across the cluster), an edge node holds
//! connections and passes every other route to an ingest node, and an
//! ingest node killed with SIGKILL loses nothing: its partitions move to
//! the live node and come back when it returns.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::{all_settled, cluster_env, eventually, Client, Node, Redis};

/// `herald_partitions_owned` of `node`.
async fn owned(node: &Node) -> u64 {
    let (_, m) = node.get("/metrics").await;
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("herald_partitions_owned "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The node suffix of an event id (`e-P-O@node`).
fn owner_of(id: &str) -> &str {
    id.rsplit_once('@').map_or("", |(_, n)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_sent_to_every_node_arrive_once_and_in_order() {
    const AUTHOR: u64 = 500;
    let redis = Redis::start();
    let env = |id| {
        let mut e = cluster_env(id);
        e.push(("HERALD_LOG__PARTITIONS", "6"));
        e
    };
    let nodes = [
        Node::start(&redis, &env("node-a")),
        Node::start(&redis, &env("node-b")),
        Node::start(&redis, &env("node-c")),
    ];
    // The partitions are shared out (6 partitions, 2 per node).
    eventually("every node owns partitions", || async {
        let mut total = 0;
        for n in &nodes {
            let o = owned(n).await;
            if o == 0 {
                return None;
            }
            total += o;
        }
        (total == 6).then_some(())
    })
    .await;
    // One follower on each node; each follow posted to a different node.
    let mut followers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let user = 501 + i as u64;
        let (s, v) = nodes[(i + 1) % 3]
            .post(
                "/v1/events",
                &json!({"kind": "follow", "actor": user, "recipient": AUTHOR}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        followers.push(Client::connect(n, user).await);
    }
    eventually("three followers", || async {
        let (_, c) = nodes[0]
            .get(&format!("/v1/users/{AUTHOR}/followers/count"))
            .await;
        (c["followers"] == 3).then_some(())
    })
    .await;
    // Presence is written before a connection's hello; liveness is
    // announced every second.
    support::cluster_formed(&nodes.iter().collect::<Vec<_>>()).await;
    // Thirty posts, each through the next node; every one is appended by
    // the one owner of the author's partition.
    let mut ids = Vec::new();
    for i in 0..30 {
        let (s, v) = nodes[i % 3]
            .post(
                "/v1/events",
                &json!({"kind": "post", "actor": AUTHOR, "object": format!("post:{i}")}),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        ids.push(v["ids"][0].as_str().unwrap_or_default().to_string());
    }
    let owner = owner_of(&ids[0]).to_string();
    assert!(!owner.is_empty(), "{ids:?}");
    assert!(ids.iter().all(|i| owner_of(i) == owner), "{ids:?}");
    for f in &mut followers {
        let got = f.notifications(30).await;
        let objects: Vec<String> = got
            .iter()
            .map(|n| n["object"].as_str().unwrap_or_default().to_string())
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("post:{i}")).collect();
        assert_eq!(objects, want, "order per author");
        let acks: Vec<&str> = got.iter().filter_map(|n| n["id"].as_str()).collect();
        f.ack(&acks).await;
        // Nothing more (no duplicate).
        assert!(
            f.next_within(Duration::from_millis(500)).await.is_none(),
            "a notification arrived twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_holds_connections_and_passes_the_rest_to_an_ingest_node() {
    let redis = Redis::start();
    let mut ingest_env = cluster_env("ingest-1");
    ingest_env.push(("HERALD_SERVER__ROLE", "ingest"));
    let mut edge_env = cluster_env("edge-1");
    edge_env.push(("HERALD_SERVER__ROLE", "edge"));
    let ingest = Node::start(&redis, &ingest_env);
    let edge = Node::start(&redis, &edge_env);
    // An ingest node holds no WebSockets, and says so.
    let (s, v) = ingest.get("/v1/ws?user=1").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "wrong_role", "{v}");
    let mut c = Client::connect(&edge, 42).await;
    support::cluster_formed(&[&ingest, &edge]).await;
    // Events posted to the edge are appended by the ingest node.
    let (s, v) = edge
        .post(
            "/v1/events",
            &json!({"kind": "like", "actor": 7, "recipient": 42, "object": "post:1"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["ids"][0].as_str().unwrap_or_default().to_string();
    assert_eq!(owner_of(&id), "ingest-1", "{id}");
    let n = c.notification().await;
    assert_eq!(n["event_id"], id.as_str(), "{n}");
    c.ack(&[n["id"].as_str().unwrap_or_default()]).await;
    // Every other route works through the edge too, errors included.
    let (s, v) = edge.get("/v1/users/42/followers/count").await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = edge.post("/v1/events", &json!({"kind": "like"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["code"].is_string(), "{v}");
    let (s, _) = edge.get("/readyz").await;
    assert_eq!(s, 200);
    // A user offline: the notification waits in the inbox, read via the edge.
    let id2 = edge.like(8, 43, "post:2").await;
    eventually("the inbox read through the edge", || async {
        let (s, v) = edge.get("/v1/users/43/inbox?limit=10").await;
        (s == 200
            && v["notifications"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n["event_id"] == id2.as_str())))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_node_loses_nothing_and_its_partitions_move_and_come_back() {
    let redis = Redis::start();
    let a = Node::start(&redis, &cluster_env("node-a"));
    let mut b = Node::start(&redis, &cluster_env("node-b"));
    eventually("both own partitions", || async {
        (owned(&a).await == 2 && owned(&b).await == 2).then_some(())
    })
    .await;
    // Twelve users, all connected to A (their partitions spread over both).
    let users: Vec<u64> = (600..612).collect();
    let mut clients = Vec::new();
    for u in &users {
        clients.push(Client::connect(&a, *u).await);
    }
    let round = |tag: &'static str| {
        let a = &a;
        let users = users.clone();
        async move {
            let mut ids = Vec::new();
            for u in users {
                ids.push(a.like(1, u, &format!("post:{tag}")).await);
            }
            ids
        }
    };
    let mut seen = HashSet::new();
    let before = round("before").await;
    assert!(before.iter().any(|i| owner_of(i) == "node-b"), "{before:?}");
    check(&mut clients, before, &mut seen).await;

    b.kill9();
    // Posting goes on: B's partitions wait for its lease to expire, then
    // A takes them; every event is accepted and delivered.
    let during = round("during").await;
    assert!(during.iter().all(|i| owner_of(i) == "node-a"), "{during:?}");
    check(&mut clients, during, &mut seen).await;
    assert_eq!(owned(&a).await, 4);

    // B comes back: it takes its share again.
    b.restart();
    eventually("partitions shared again", || async {
        (owned(&b).await == 2 && owned(&a).await == 2).then_some(())
    })
    .await;
    let after = round("after").await;
    assert!(after.iter().any(|i| owner_of(i) == "node-b"), "{after:?}");
    check(&mut clients, after, &mut seen).await;
}

/// Each client gets its event (`ids` in client order) and acks it. A
/// notification of an earlier round may come again first (at least once:
/// the killed node had not yet recorded every ack when it died); anything
/// else fails.
async fn check(clients: &mut [Client], ids: Vec<String>, seen: &mut HashSet<String>) {
    for (c, id) in clients.iter_mut().zip(&ids) {
        loop {
            let n = c.notification().await;
            let ev = n["event_id"].as_str().unwrap_or_default().to_string();
            c.ack(&[n["id"].as_str().unwrap_or_default()]).await;
            if ev == *id {
                break;
            }
            assert!(seen.contains(&ev), "unexpected {n}, waiting for {id}");
        }
        seen.insert(id.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_edges_both_get_it_and_one_ack_settles_it() {
    let redis = Redis::start();
    let mut ingest_env = cluster_env("ingest-1");
    ingest_env.push(("HERALD_SERVER__ROLE", "ingest"));
    let ingest = Node::start(&redis, &ingest_env);
    let edges: Vec<Node> = ["edge-1", "edge-2"]
        .into_iter()
        .map(|id| {
            let mut e = cluster_env(id);
            e.push(("HERALD_SERVER__ROLE", "edge"));
            Node::start(&redis, &e)
        })
        .collect();
    let mut phone = Client::connect(&edges[0], 70).await;
    let laptop = Client::connect(&edges[1], 70).await;
    support::cluster_formed(&[&ingest, &edges[0], &edges[1]]).await;
    let id = ingest.like(9, 70, "post:both").await;
    let n1 = phone.notification().await;
    let mut laptop = laptop;
    let n2 = laptop.notification().await;
    assert_eq!(n1["event_id"], id.as_str(), "{n1}");
    assert_eq!(n2["event_id"], id.as_str(), "{n2}");
    // The phone acks; the laptop never does.
    phone.ack(&[n1["id"].as_str().unwrap_or_default()]).await;
    eventually("the record settled by one ack", || async {
        all_settled(&ingest).await.then_some(())
    })
    .await;
    // The laptop closes with the copy unacked: it was read on the phone,
    // so nothing goes to the inbox.
    laptop.close().await;
    // Both copies answered (the phone's ack, the laptop's refusal): then
    // the inbox is read, once anything that was to be parked would be.
    eventually("both copies answered on the ingest node", || async {
        let answered = support::metric(&ingest, "herald_relay_answers_total").await?;
        (answered >= 2.0).then_some(())
    })
    .await;
    eventually("every record settled", || async {
        all_settled(&ingest).await.then_some(())
    })
    .await;
    let (s, v) = ingest.get("/v1/users/70/inbox?limit=10").await;
    assert_eq!(s, 200);
    assert_eq!(v["notifications"].as_array().map(Vec::len), Some(0), "{v}");
    // The one device left closes with a copy unacked: the ingest node
    // stores it, and the device finds it on its next connect.
    let id2 = ingest.like(9, 70, "post:later").await;
    let n = phone.notification().await;
    assert_eq!(n["event_id"], id2.as_str(), "{n}");
    phone.close().await;
    let mut again = Client::connect(&edges[1], 70).await;
    let n = again.notification().await;
    assert_eq!(n["event_id"], id2.as_str(), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_on_one_node_makes_a_celebrity_on_every_node() {
    const CELEB: u64 = 950;
    let redis = Redis::start();
    let env = |id| {
        let mut e = cluster_env(id);
        e.push(("HERALD_CELEBRITY__THRESHOLD", "3"));
        e
    };
    let a = Node::start(&redis, &env("node-a"));
    let b = Node::start(&redis, &env("node-b"));
    let mut on_b = Client::connect(&b, 31).await;
    support::cluster_formed(&[&a, &b]).await;
    let (s, v) = a
        .post(
            "/v1/graph/follows",
            &json!({"follows": [[31, CELEB], [32, CELEB], [33, CELEB]]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Node B hears of it (its set and its index): within about a second
    // on a quiet machine; waited for here, bounded, so a loaded CI host
    // does not turn a slow poll into a failure.
    let waited = std::time::Instant::now();
    loop {
        let metrics = support::http_blocking(&b.addr, "GET", "/metrics", None, &[])
            .map(|(_, v)| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        if metrics.lines().any(|l| l == "herald_celebrities 1") {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "node B never picked up the new celebrity"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = b
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": CELEB, "object": "post:imported", "text": "hi"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["ids"][0].as_str().unwrap_or_default().to_string();
    let n = on_b.notification().await;
    assert_eq!(n["event_id"], id.as_str(), "{n}");
    // The pull path: offline followers' inboxes are not written; they pull
    // the post when they connect.
    let (_, inbox) = a.get("/v1/users/32/inbox?limit=10").await;
    assert_eq!(
        inbox["notifications"].as_array().map(Vec::len),
        Some(0),
        "{inbox}"
    );
    let mut later = Client::connect(&a, 32).await;
    let n = later.notification().await;
    assert_eq!(n["event_id"], id.as_str(), "{n}");
}
