//! A node holding connections killed with SIGKILL while the load generator
//! runs: one ingest node and two edge nodes on one real Redis, clients and
//! posts spread over the two edges; one edge dies mid-run, its clients
//! reconnect to the other, and the verdict is that nothing was lost.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{summary_row, Node, Redis};

fn env(id: &str, role: &'static str) -> Vec<(String, String)> {
    [
        ("HERALD_SERVER__CLUSTER", "true"),
        ("HERALD_SERVER__NODE_ID", id),
        ("HERALD_SERVER__ROLE", role),
        ("HERALD_SERVER__CLUSTER_KEY", "test-cluster-key"),
        ("HERALD_SERVER__LEASE_TTL_MS", "2000"),
        // Pushes handed to the dead edge go to the inbox after this long.
        ("HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS", "2000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn start(redis: &Redis, id: &str, role: &'static str) -> Node {
    let e = env(id, role);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start(redis, &e)
}

#[test]
fn an_edge_killed_under_load_loses_nothing() {
    let redis = Redis::start();
    let ingest = start(&redis, "ingest-1", "ingest");
    let edge1 = start(&redis, "edge-1", "edge");
    let mut edge2 = start(&redis, "edge-2", "edge");
    // The edges see the ingest node's membership.
    support::cluster_formed_at(&[&ingest.addr, &edge1.addr, &edge2.addr]);
    let bin = Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(&bin)
        .args(["run", "--scenario", "smoke", "--clients", "200"])
        .args(["--rate", "200", "--duration", "10", "--failover"])
        .args(["--targets", &format!("{},{}", edge1.addr, edge2.addr)])
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald-loadgen");
    // Killed in the middle of the traffic: once notifications flow live
    // through this edge (seeding and connecting come first).
    support::eventually_sync(
        "live traffic through edge-2",
        Duration::from_secs(120),
        || {
            (support::metric_at(&edge2.addr, "herald_notifications_delivered_total")? >= 100.0)
                .then_some(())
        },
    );
    edge2.kill9();
    let done = run.wait_with_output().expect("herald-loadgen output");
    let stdout = String::from_utf8_lossy(&done.stdout).to_string();
    let stderr = String::from_utf8_lossy(&done.stderr).to_string();
    // At least once: acks the dead edge had not passed on are redelivered
    // (counted as duplicated after ack); nothing may be lost.
    assert_eq!(
        summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}\n{stderr}\nedge-1:\n{}",
        edge1.log_tail()
    );
    // "sent N, accepted M (R/s), ..."
    let accepted: u64 = summary_row(&stdout, "events")
        .and_then(|v| {
            let rest = v.split("accepted ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0);
    assert!(accepted > 500, "{stdout}");
}
