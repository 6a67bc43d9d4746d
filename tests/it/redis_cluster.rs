//! Herald on a real Redis Cluster started by the test: the load generator's
//! smoke workload (graph import, fan-out, live pushes, inbox writes and
//! drains, acks, folding, preferences) loses nothing with the keys spread
//! over every master; a master killed under traffic is replaced by its
//! replica and Herald heals by itself.

use crate::support;

use std::time::{Duration, Instant};

use support::{loadgen, summary_row, Client, Node, RedisCluster};

#[test]
fn a_node_on_redis_cluster_loses_nothing() {
    let cluster = RedisCluster::start(3);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[("HERALD_REDIS__CLUSTER_NODES", seeds.as_str())],
    );
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = loadgen(
        &node,
        &[
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "200",
            "--rate",
            "300",
            "--duration",
            "4",
            "--hot-share",
            "0.2",
            "--strict",
        ],
        out_dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke run on Redis Cluster failed:\n{stdout}\n{}\nherald log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    assert_eq!(
        summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}"
    );
    let counts = cluster.key_counts();
    assert!(
        counts.iter().all(|&c| c > 0),
        "keys are not spread over the masters: {counts:?}"
    );
    // The feeds were written on the cluster too (a pipeline split by
    // slot), none given up, and a page reads back.
    let (_, m) = support::http_blocking(&node.addr, "GET", "/metrics", None, &[]).expect("metrics");
    let m = m.as_str().unwrap_or_default().to_string();
    let counter = |result: &str| -> f64 {
        let prefix = format!("herald_feed_entries_total{{result=\"{result}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(counter("written") > 100.0, "{m}");
    assert_eq!(counter("failed"), 0.0, "{m}");
    let mut read = 0;
    for user in 1..=200u64 {
        let path = format!("/v1/users/{user}/notifications?limit=5");
        let (s, v) = support::http_blocking(&node.addr, "GET", &path, None, &[]).expect("feed");
        assert_eq!(s, 200, "{v}");
        read += v["notifications"].as_array().map_or(0, Vec::len);
    }
    assert!(read > 0, "no feed entry read back on Redis Cluster");
}

/// A master of the cluster is killed while a user is connected and events
/// keep coming: once its replica takes over, Herald delivers by itself
/// (no restart); live pushes and offline inboxes both resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_heals_by_itself() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[
            ("HERALD_REDIS__CLUSTER_NODES", seeds.as_str()),
            ("HERALD_REDIS__TIMEOUT_MS", "1000"),
        ],
    );
    let mut online = Client::connect(&node, 1).await;
    node.like(7, 1, "post:before").await;
    let n = online.notification().await;
    online.ack(&[n["id"].as_str().unwrap_or_default()]).await;
    // Kill the master that serves user 2's inbox (user 2 stays offline).
    let victim = cluster.master_of("h:{u:2}:ib");
    cluster.nodes[victim].kill9();
    let killed = Instant::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(node.like(8, 1, &format!("post:during{i}")).await);
        ids.push(node.like(8, 2, &format!("post:during{i}")).await);
    }
    // The live user gets every new notification, without reconnecting.
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 5 {
        let n = online.notification().await;
        got.insert(n["event_id"].as_str().unwrap_or_default().to_string());
        online.ack(&[n["id"].as_str().unwrap_or_default()]).await;
    }
    // The offline user's inbox (on the failed-over slots) has them too.
    let want: Vec<String> = ids.iter().skip(1).step_by(2).cloned().collect();
    let waited = eventually_long(Duration::from_secs(40), || async {
        let (s, v) = node.get("/v1/users/2/inbox?limit=100").await;
        if s != 200 {
            return None;
        }
        let have: Vec<String> = v["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n["event_id"].as_str().unwrap_or_default().to_string())
            .collect();
        want.iter().all(|w| have.contains(w)).then_some(())
    })
    .await;
    if !waited {
        let (s, v) = node.get("/v1/users/2/inbox?limit=100").await;
        let log = std::fs::read_to_string(node.data.join("herald.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!(
            "offline inbox never filled after failover: {s} {v}\n{}",
            tail.join("\n")
        );
    }
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
    eprintln!(
        "after killing a master: all delivered {} ms later",
        killed.elapsed().as_millis()
    );
}

/// Polls `f` for up to `limit`; false when it never answered.
async fn eventually_long<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `redis.wait_replicas = 1` on Redis Cluster: the WAIT goes to the master
/// of each inbox's slot, on the connection the writes went over, and the
/// records settle once the replicas confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_writes_wait_for_a_replica_on_each_master() {
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[
            ("HERALD_REDIS__CLUSTER_NODES", seeds.as_str()),
            ("HERALD_REDIS__WAIT_REPLICAS", "1"),
        ],
    );
    // Offline users on many slots.
    for u in 1..=20u64 {
        node.like(100 + u, u, "post:w").await;
    }
    for u in 1..=20u64 {
        support::eventually("every inbox written", || async {
            let (s, v) = node.get(&format!("/v1/users/{u}/inbox?limit=10")).await;
            (s == 200 && v["notifications"].as_array().is_some_and(|a| a.len() == 1)).then_some(())
        })
        .await;
    }
    support::eventually("every record settled", || async {
        support::all_settled(&node).await.then_some(())
    })
    .await;
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
}

/// A master with no replica killed and started again (same port, same
/// cluster identity, its data gone): the node's Redis connection recovers
/// by itself and serves every user again, those on that master included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_without_a_replica_is_served_again() {
    let mut cluster = RedisCluster::start(3);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[
            ("HERALD_REDIS__CLUSTER_NODES", seeds.as_str()),
            ("HERALD_REDIS__TIMEOUT_MS", "1000"),
        ],
    );
    node.like(7, 2, "post:before").await;
    // Traffic to many users (every master) throughout.
    let addr = node.addr.clone();
    let traffic = tokio::spawn(async move {
        for round in 0..400u64 {
            let events: Vec<serde_json::Value> = (0..50u64)
                .map(|i| serde_json::json!({"kind": "comment", "actor": 9_000 + i, "recipient": 100 + (round * 50 + i) % 500, "text": "t"}))
                .collect();
            let body = serde_json::json!({ "events": events }).to_string();
            let addr = addr.clone();
            let _ = tokio::task::spawn_blocking(move || {
                support::http_blocking(
                    &addr,
                    "POST",
                    "/v1/events",
                    Some(body.as_bytes()),
                    &[("content-type", "application/json")],
                )
            })
            .await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    // Killed while traffic flows.
    support::eventually("events flowing", || async {
        (support::metric(&node, "herald_events_accepted_total").await? >= 100.0).then_some(())
    })
    .await;
    let victim = cluster.master_of("h:{u:2}:ib");
    cluster.nodes[victim].kill9();
    // Requests fail meanwhile; the node keeps trying.
    let (s, _) = node.get("/v1/users/2/inbox?limit=10").await;
    assert_ne!(s, 200, "the inbox of a dead master answered");
    cluster.nodes[victim].restart();
    cluster.wait_ok();
    let id = node.like(8, 2, "post:after").await;
    let served = eventually_long(Duration::from_secs(40), || async {
        support::inbox_has(&node, 2, &id).await.then_some(())
    })
    .await;
    if !served {
        let (s, v) = node.get("/v1/users/2/inbox?limit=10").await;
        let (rs, rv) = node.get("/readyz").await;
        let log = std::fs::read_to_string(node.data.join("herald.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        panic!(
            "the node never served the restarted master's users again: {s} {v}; readyz {rs} {rv}\n{}",
            tail.join("\n")
        );
    }
    traffic.abort();
    let (s, v) = node.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
}

/// A node of a cluster notices a Redis Cluster failover and has every
/// connection drain its inbox: a poke published on the master that died
/// may never have been passed on, and would leave an entry waiting while
/// its user stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_makes_every_connection_drain() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[
            ("HERALD_REDIS__CLUSTER_NODES", seeds.as_str()),
            ("HERALD_REDIS__TIMEOUT_MS", "1000"),
            ("HERALD_SERVER__CLUSTER", "true"),
            ("HERALD_SERVER__NODE_ID", "node-1"),
            ("HERALD_SERVER__CLUSTER_KEY", "test-cluster-key"),
        ],
    );
    let _online = Client::connect(&node, 1).await;
    let failovers = |m: &serde_json::Value| {
        m.as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("herald_relay_redis_failovers_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, m) = node.get("/metrics").await;
    assert_eq!(failovers(&m), 0.0, "a failover seen before any");
    let victim = cluster.master_of("h:{u:2}:ib");
    cluster.nodes[victim].kill9();
    let seen = eventually_long(Duration::from_secs(60), || async {
        let (_, m) = node.get("/metrics").await;
        (failovers(&m) >= 1.0).then_some(())
    })
    .await;
    assert!(seen, "the failover was never noticed");
    let log = std::fs::read_to_string(node.data.join("herald.log")).unwrap_or_default();
    assert!(
        log.contains("every connection told to drain its inbox"),
        "the connections were not told to drain"
    );
}
