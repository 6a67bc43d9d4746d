//! Changing a replicated cluster's node set on real nodes and a real
//! Redis: `herald cluster add` brings a fourth node in and partitions'
//! replicas move onto it; `DELETE /v1/admin/cluster/nodes/{name}` takes
//! one of the first three out and its replicas move away, after which it
//! can be stopped. Posts are accepted throughout and every accepted event
//! reaches its inbox; bad requests are refused with a clear error.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use herald_raft::{node_id, placement, PeerAddr};
use serde_json::{json, Value};
use support::{
    env_refs, eventually_within, free_port, inbox_has, like_anywhere, peers_of, replicated_env,
    start_replicated, Node, Redis,
};

/// Where the node set `set` places every partition's replicas, by name.
fn placed(set: &[PeerAddr], partitions: u32) -> Vec<BTreeSet<String>> {
    (0..partitions)
        .map(|p| {
            placement(set, 3, p)
                .into_iter()
                .map(|id| {
                    set.iter()
                        .find(|n| node_id(&n.name) == id)
                        .map(|n| n.name.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// Waits until `n`'s cluster view shows every partition led, with its
/// replicas (all in sync) where `set` places them.
async fn moved_to(n: &Node, set: &[PeerAddr], what: &str) {
    eventually_within(what, Duration::from_secs(120), || async {
        let (s, v) = n.get("/v1/admin/cluster").await;
        if s != 200 {
            return None;
        }
        let parts = v["partitions"].as_array()?;
        let want = placed(set, parts.len() as u32);
        parts
            .iter()
            .zip(&want)
            .all(|(p, w)| {
                p["leader"].is_string() && names(&p["replicas"]) == *w && names(&p["in_sync"]) == *w
            })
            .then_some(())
    })
    .await;
}

fn cli(node: &Node, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(support::config_path())
        .args(["cluster"])
        .args(args)
        .args(["--url", &format!("http://{}", node.addr)])
        .output()
        .expect("run herald cluster");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Likes from `k + 1` to user `700 + k` for each `k` in `ks`, each
/// through any of `nodes` until accepted; (recipient, event id) kept.
async fn post_likes(nodes: &[&Node], ks: std::ops::Range<u64>, accepted: &mut Vec<(u64, String)>) {
    for k in ks {
        accepted.push((700 + k, like_anywhere(nodes, k + 1, 700 + k).await));
    }
}

/// `POST /v1/admin/cluster/nodes` with `name` and `addr`.
async fn add_node(n: &Node, name: &str, addr: &str) -> (u16, Value) {
    n.post(
        "/v1/admin/cluster/nodes",
        &json!({"name": name, "addr": addr}),
    )
    .await
}

fn peer(name: &str, addr: &str) -> PeerAddr {
    PeerAddr {
        name: name.into(),
        addr: addr.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_while_posts_are_accepted_and_delivered() {
    let redis = Redis::start();
    let mut nodes = start_replicated(&redis, 3);
    let mut set: Vec<PeerAddr> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| peer(&format!("node-{}", i + 1), &n.addr))
        .collect();
    let mut accepted: Vec<(u64, String)> = Vec::new();
    let all: Vec<&Node> = nodes.iter().collect();
    post_likes(&all, 0..20, &mut accepted).await;

    // A fourth node starts: not in the node set, it holds nothing yet.
    let port = free_port();
    let env = replicated_env("node-4", &peers_of(&nodes));
    let n4 = Node::start_on_port(&redis, &env_refs(&env), port);
    n4.wait_ready(Duration::from_secs(60));
    nodes.push(n4);
    let addr4 = nodes[3].addr.clone();

    // Bad requests change nothing.
    let (s, v) = add_node(&nodes[0], "no spaces", &addr4).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("name")),
        "{v}"
    );
    let (s, v) = add_node(&nodes[0], "node-4", "nowhere").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("addr")),
        "{v}"
    );

    // `herald cluster add`: replicas move onto node-4.
    let (ok, out) = cli(&nodes[0], &["add", "node-4", &addr4]);
    assert!(ok && out.contains("node-4 added"), "{out}");
    let (ok, out) = cli(&nodes[1], &["add", "node-4", &addr4]);
    assert!(ok && out.contains("unchanged"), "{out}");
    let (s, v) = add_node(&nodes[0], "node-4", "127.0.0.1:1").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("node_exists")),
        "{v}"
    );
    set.push(peer("node-4", &addr4));
    let all: Vec<&Node> = nodes.iter().collect();
    post_likes(&all, 20..40, &mut accepted).await;
    moved_to(&nodes[0], &set, "replicas moved onto node-4").await;

    // node-1 leaves: its replicas move away; then it is stopped.
    let (s, v) = nodes[1]
        .request("DELETE", "/v1/admin/cluster/nodes/node-1", None, &[])
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!v["nodes"].to_string().contains("node-1"), "{v}");
    set.remove(0);
    let all: Vec<&Node> = nodes.iter().collect();
    post_likes(&all, 40..60, &mut accepted).await;
    moved_to(&nodes[1], &set, "replicas moved off node-1").await;
    let (s, v) = nodes[1]
        .request("DELETE", "/v1/admin/cluster/nodes/node-2", None, &[])
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("too_few_nodes")),
        "{v}"
    );
    let (s, _) = nodes[1]
        .request("DELETE", "/v1/admin/cluster/nodes/node-9", None, &[])
        .await;
    assert_eq!(s, 404);
    nodes[0].kill9();
    let live: Vec<&Node> = nodes[1..].iter().collect();
    post_likes(&live, 60..80, &mut accepted).await;
    // Every accepted event is in its recipient's inbox.
    for (user, id) in &accepted {
        eventually_within(
            &format!("{id} in {user}'s inbox"),
            Duration::from_secs(30),
            || async { inbox_has(live[0], *user, id).await.then_some(()) },
        )
        .await;
    }
}
