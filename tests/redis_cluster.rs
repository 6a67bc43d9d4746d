//! Herald on a real Redis Cluster (3 masters started by the test): the
//! load generator's smoke workload (graph import, fan-out, live pushes,
//! inbox writes and drains, acks, folding, preferences) loses nothing, and
//! the keys are spread over every master.

mod support;

use std::process::Command;

use support::{summary_row, Node, RedisCluster};

#[test]
fn a_node_on_redis_cluster_loses_nothing() {
    let cluster = RedisCluster::start(3);
    let seeds = cluster.seeds();
    let node = Node::start(
        &cluster.nodes[0],
        &[("HERALD_REDIS__CLUSTER_NODES", seeds.as_str())],
    );
    let loadgen =
        std::path::Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&loadgen)
        .args([
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "200",
            "--rate",
            "300",
        ])
        .args(["--duration", "4", "--hot-share", "0.2", "--strict"])
        .args(["--target", &node.addr])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("run herald-loadgen");
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
}
