//! Replicated partitions (`log.replication_factor = 3`): three real nodes,
//! each with its own disk, on one real Redis. Every event answered `202`
//! is delivered after any one node is lost, even with its disk; event ids
//! are never handed out twice; a node that comes back empty is refilled;
//! `GET /v1/admin/cluster` shows who leads what.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::{env_refs, eventually_within, inbox_has, replicated_env, Node, Redis};

const NODES: usize = 3;

fn start_cluster(redis: &Redis) -> Vec<Node> {
    support::start_replicated(redis, NODES)
}

fn peers_of(nodes: &[Node]) -> String {
    support::peers_of(nodes)
}

async fn like(nodes: &[&Node], actor: u64, recipient: u64) -> String {
    support::like_anywhere(nodes, actor, recipient).await
}

async fn cluster_view(n: &Node) -> Value {
    let (s, v) = n.get("/v1/admin/cluster").await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The node leading the most partitions.
fn busiest_leader(view: &Value) -> String {
    let mut counts = std::collections::HashMap::new();
    for p in view["partitions"].as_array().into_iter().flatten() {
        if let Some(l) = p["leader"].as_str() {
            *counts.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, c)| *c)
        .map(|(l, _)| l)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_when_a_leader_dies_with_its_disk() {
    let redis = Redis::start();
    let mut nodes = start_cluster(&redis);
    let view = cluster_view(&nodes[0]).await;
    assert_eq!(
        view["partitions"].as_array().map(Vec::len),
        Some(4),
        "{view}"
    );
    for p in view["partitions"].as_array().into_iter().flatten() {
        assert!(
            p["leader"].is_string(),
            "a partition without a leader: {view}"
        );
        assert_eq!(p["replicas"].as_array().map(Vec::len), Some(3), "{view}");
    }

    // Offline recipients: every event ends in an inbox. Redis is frozen
    // while the first events are taken, so fan-out cannot have delivered
    // them anywhere when their leader dies: only the copies in the other
    // replicas' logs can.
    let mut accepted = Vec::new();
    redis.pause();
    {
        let all: Vec<&Node> = nodes.iter().collect();
        for k in 0..60u64 {
            let id = like(&all, 1000 + k, 5000 + k % 20).await;
            accepted.push((5000 + k % 20, id));
        }
    }
    // The node leading the most partitions dies with its disk.
    let victim_name = busiest_leader(&cluster_view(&nodes[0]).await);
    let v = nodes
        .iter()
        .position(|n| cluster_view_name(n) == victim_name)
        .unwrap_or(0);
    nodes[v].kill9();
    nodes[v].wipe();
    redis.resume();
    {
        let alive: Vec<&Node> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != v)
            .map(|(_, n)| n)
            .collect();
        for k in 60..120u64 {
            let id = like(&alive, 1000 + k, 5000 + k % 20).await;
            accepted.push((5000 + k % 20, id));
        }
    }
    // It comes back with an empty disk and is refilled from the leaders.
    nodes[v].restart_unready();
    nodes[v].wait_ready(Duration::from_secs(60));
    {
        let all: Vec<&Node> = nodes.iter().collect();
        for k in 120..150u64 {
            let id = like(&all, 1000 + k, 5000 + k % 20).await;
            accepted.push((5000 + k % 20, id));
        }
    }

    // No event id handed out twice.
    let ids: HashSet<&String> = accepted.iter().map(|(_, id)| id).collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "an event id was handed out twice"
    );
    // Every accepted event is in its recipient's inbox.
    let reader = &nodes[(v + 1) % NODES];
    for (user, id) in &accepted {
        eventually_within(
            &format!("{id} in the inbox of {user}"),
            Duration::from_secs(60),
            || async { inbox_has(reader, *user, id).await.then_some(()) },
        )
        .await;
    }
    // The refilled node is in sync again everywhere.
    let start = std::time::Instant::now();
    loop {
        let view = cluster_view(&nodes[v]).await;
        let synced = view["partitions"].as_array().is_some_and(|ps| {
            ps.iter()
                .all(|p| p["in_sync"].as_array().map(Vec::len) == Some(3))
        });
        if synced {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "replicas not in sync: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let table = cluster_status_table(&nodes[0]);
    for i in 1..=NODES {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("node-{i} ")) && l.ends_with("yes")),
            "node-{i} not listed alive:\n{table}"
        );
    }
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows.iter().all(|r| !r.contains("(none)")), "{table}");
    // Followers too count their fan-out lag from the position the leader
    // saved (their retention keeps only what fan-out may still need).
    for n in &nodes {
        eventually_within(
            "every replica's fan-out lag near zero",
            Duration::from_secs(30),
            || async {
                let (_, m) = n.get("/metrics").await;
                let text = m.as_str().unwrap_or_default().to_string();
                let lags: Vec<f64> = text
                    .lines()
                    .filter(|l| l.starts_with("herald_fanout_lag_records{"))
                    .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
                    .collect();
                let ok = lags.len() == 4 && lags.iter().all(|l| *l < 100.0);
                if !ok {
                    eprintln!("{}: lags {lags:?}", n.addr);
                }
                ok.then_some(())
            },
        )
        .await;
    }
}

/// `herald cluster status` prints the view as tables: every node alive,
/// every partition with a leader and three replicas in sync.
fn cluster_status_table(n: &Node) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--config"])
        .arg(support::config_path())
        .args(["cluster", "status", "--url", &format!("http://{}", n.addr)])
        .output()
        .expect("run herald cluster status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn cluster_view_name(n: &Node) -> String {
    match support::http_blocking(&n.addr, "GET", "/v1/admin/cluster", None, &[]) {
        Ok((200, v)) => v["node"].as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// An edge node (no log) in a replicated cluster passes the routes it does
/// not serve to a reachable ingest node: with one of three killed, every
/// post through the edge is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_passes_routes_to_reachable_ingest_nodes_only() {
    let redis = Redis::start();
    let mut nodes = start_cluster(&redis);
    let peers = peers_of(&nodes);
    let mut env = replicated_env("edge-1", &peers);
    env.push(("HERALD_SERVER__ROLE".into(), "edge".into()));
    let edge = Node::start(&redis, &env_refs(&env));
    nodes[2].kill9();
    // Within a probe or two, the edge stops passing routes to the dead
    // node: twenty posts in a row are accepted.
    let start = std::time::Instant::now();
    let mut in_a_row = 0;
    let mut k = 0u64;
    while in_a_row < 20 {
        k += 1;
        let (s, v) = edge
            .post(
                "/v1/events",
                &json!({"kind": "like", "actor": 1, "recipient": 6000 + k % 7, "object": format!("post:{k}")}),
            )
            .await;
        in_a_row = if s == 202 { in_a_row + 1 } else { 0 };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the edge kept passing posts to the dead node: {s} {v}"
        );
    }
}

/// A store (default settings) on `redis`.
async fn store_on(redis: &Redis) -> herald_store::Store {
    herald_store::Store::connect(herald_store::StoreConfig {
        url: redis.url(),
        ..herald_store::StoreConfig::default()
    })
    .await
    .expect("connect")
}

/// The fan-out position saved in Redis: offsets of 16 digits come back as
/// they went in, an older term is refused (the fencing token), and within
/// a term the position never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saved_position_is_fenced_by_term() {
    let redis = Redis::start();
    let store = store_on(&redis).await;
    let big = 1_796_253_361_371_025u64;
    assert!(store.save_position(0, 5, big).await.unwrap());
    let got = store.position(0).await.unwrap().expect("saved");
    assert_eq!((got.term, got.offset), (5, big));
    // A deposed leader (older term) cannot move it.
    assert!(!store.save_position(0, 4, big + 1000).await.unwrap());
    // Within a term it never goes back.
    assert!(store.save_position(0, 5, 100).await.unwrap());
    assert_eq!(
        store.position(0).await.unwrap().map(|p| p.offset),
        Some(big)
    );
    // A newer leader sets it, even lower (it starts from what it read).
    assert!(store.save_position(0, 6, big - 5).await.unwrap());
    let got = store.position(0).await.unwrap().expect("saved");
    assert_eq!((got.term, got.offset), (6, big - 5));
    assert_eq!(store.position(1).await.unwrap(), None);
}

/// The other effects a partition's leader makes once carry its term too,
/// checked by the script that writes them: a celebrity's outbox, dead
/// letters, and a released bucket (its inbox write and its removal). Once
/// a newer term wrote, an older one is refused and writes nothing; term 0
/// (no replication) is never checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_per_partition_effects_are_fenced_by_term() {
    use herald_store::{Bucket, BucketAdd, DeadLetter, Fence, OutboxCursor};
    let redis = Redis::start();
    let store = store_on(&redis).await;
    let note = |id: &str, order: u64| herald_types::Notification {
        id: id.into(),
        event_id: format!("e-{id}").into(),
        kind: herald_types::EventKind::Like,
        actor: 7,
        object: Some("post:1".into()),
        text: None,
        ts_ms: order / 1000,
        count: 1,
        actors: std::sync::Arc::from([7u64]),
        order,
        digest: None,
        data: None,
        trace: None,
        supersedes: None,
    };
    let at = |term| Fence { partition: 2, term };

    // Outbox: term 3 writes, term 2 is refused, term 0 is not checked.
    assert!(store
        .outbox_push(herald_types::Outbox::User(50), &note("a", 1_000), 10, at(3))
        .await
        .unwrap());
    assert!(!store
        .outbox_push(herald_types::Outbox::User(50), &note("b", 2_000), 10, at(2))
        .await
        .unwrap());
    assert!(store
        .outbox_push(herald_types::Outbox::User(50), &note("c", 3_000), 10, at(0))
        .await
        .unwrap());
    let cursor = [OutboxCursor {
        outbox: herald_types::Outbox::User(50),
        seen: None,
        since: None,
    }];
    let ids: Vec<String> = store
        .outbox_read(&cursor, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n.id.to_string())
        .collect();
    assert_eq!(ids, ["a", "c"]);

    // Dead letters: the same.
    let dl = |offset| DeadLetter {
        id: DeadLetter::id_for(2, offset),
        partition: 2,
        offset,
        reason: "test".into(),
        at_ms: offset as i64,
        event: None,
        raw_hex: Some("00".into()),
        webhook: None,
    };
    assert!(store.dead_letter_put(&dl(1), at(5)).await.unwrap());
    assert!(!store.dead_letter_put(&dl(2), at(4)).await.unwrap());
    let listed: Vec<u64> = store
        .dead_letter_list(10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.offset)
        .collect();
    assert_eq!(listed, [1]);

    // A bucket released by term 2: term 1 can then neither write the
    // user's inbox nor empty the bucket.
    let (user, held) = (900u64, note("h1", 5_000));
    store
        .bucket_add(&[BucketAdd::new(user, Bucket::Held, 1, &held, 1)])
        .await
        .unwrap();
    assert_eq!(
        store
            .bucket_release(user, std::slice::from_ref(&held), at(2))
            .await
            .unwrap(),
        Some(0)
    );
    let late = note("h2", 6_000);
    assert_eq!(
        store
            .bucket_release(user, std::slice::from_ref(&late), at(1))
            .await
            .unwrap(),
        None
    );
    let inbox: Vec<String> = store
        .inbox_snapshot(user, 10, false)
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(inbox, ["h1"]);
    let ids = vec!["h1".to_string()];
    assert!(!store
        .bucket_done(user, Bucket::Held, at(1), &ids, 0)
        .await
        .unwrap());
    assert_eq!(
        store
            .bucket_read(user, Bucket::Held, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .bucket_done(user, Bucket::Held, at(2), &ids, 0)
        .await
        .unwrap());
    assert!(store
        .bucket_read(user, Bucket::Held, 10)
        .await
        .unwrap()
        .is_empty());
}
