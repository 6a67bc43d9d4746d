//! The local cluster as a newcomer runs it: `deploy/cluster.sh up` (a Redis
//! Cluster of 3 masters with a replica each, and 3 Herald nodes on
//! loopback), the load generator's smoke workload spread over the three
//! nodes with one verdict, one node stopped and started again
//! (`stop NAME`, `start NAME`), a fourth node joined and the first one
//! taken out (`join NAME`, `leave NAME`), then `deploy/cluster.sh down`.

use crate::support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::summary_row;

/// A base port with the next `n - 1` free as well, and (for Redis
/// Cluster, whose bus listens on port + 10000) those ten thousand above
/// too. The base is drawn below the kernel's ephemeral range so that the
/// bus ports stay under 65536.
fn free_ports(n: u16) -> u16 {
    let seed = std::process::id() as u64 ^ support::free_port() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 131) % 12_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (0..n).all(|i| free(base + i) && free(base + 10_000 + i)) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

#[test]
fn the_local_cluster_works_as_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = tempfile::tempdir().expect("tempdir");
    // Three masters and their three replicas.
    let rbase = free_ports(6);
    let clash = |h: u16| {
        (0..4).any(|i| {
            (rbase..rbase + 6).contains(&(h + i))
                || (rbase + 10_000..rbase + 10_006).contains(&(h + i))
        })
    };
    let hbase = (0..50)
        .map(|_| free_ports(4))
        .find(|&h| !clash(h))
        .expect("two disjoint port ranges");
    let script = |cmd: &str| {
        Command::new("bash")
            .arg(root.join("deploy/cluster.sh"))
            .args(cmd.split_whitespace())
            .env("HERALD_CLUSTER_DIR", state.path().join("c"))
            .env("REDIS_BASE_PORT", rbase.to_string())
            .env("HERALD_BASE_PORT", hbase.to_string())
            .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
            .output()
            .expect("deploy/cluster.sh")
    };
    let up = script("up");
    let out = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        up.status.success(),
        "up failed:\n{out}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("node ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let targets: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|u| u.strip_prefix("http://"))
                .expect("node line: node <name> http://<addr> pid <pid>")
                .to_string()
        })
        .collect();
    // Liveness is announced every second.
    let addrs: Vec<&str> = targets.iter().map(String::as_str).collect();
    support::cluster_formed_at(&addrs);
    let loadgen = Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    let reports = tempfile::tempdir().expect("tempdir");
    let run = Command::new(&loadgen)
        .args([
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "300",
            "--rate",
            "300",
        ])
        .args([
            "--duration",
            "4",
            "--strict",
            "--targets",
            &targets.join(","),
        ])
        .arg("--out")
        .arg(reports.path())
        .output()
        .expect("herald-loadgen");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    // One node stopped and started again on the data it kept: it prints
    // its line and is ready when the script returns.
    let data = lines[1]
        .split_whitespace()
        .skip_while(|w| *w != "data")
        .nth(1)
        .expect("node line: ... data <dir>")
        .to_string();
    assert!(Path::new(&data).join("log").exists(), "{data}");
    let stop = script("stop node-2");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let start = script("start node-2");
    let again = String::from_utf8_lossy(&start.stdout).to_string();
    assert!(
        start.status.success(),
        "{again}\n{}",
        String::from_utf8_lossy(&start.stderr)
    );
    assert!(again.starts_with("node node-2 http://"), "{again}");
    assert!(
        again.trim_end().ends_with(&format!("data {data}")),
        "{again}"
    );
    // A fourth node joins (replicas move onto it), then node-1 leaves
    // (its replicas move away, then it is stopped).
    let join = script("join node-4");
    let joined = String::from_utf8_lossy(&join.stdout).to_string();
    assert!(
        join.status.success() && joined.contains("node node-4 http://"),
        "{joined}\n{}",
        String::from_utf8_lossy(&join.stderr)
    );
    let leave = script("leave node-1");
    let left = String::from_utf8_lossy(&leave.stdout).to_string();
    assert!(
        leave.status.success() && left.contains("node node-1 stopped"),
        "{left}\n{}",
        String::from_utf8_lossy(&leave.stderr)
    );
    // The nodes left may take a moment to be ready again (leaders
    // elected where node-1's replicas were): wait for it, with a deadline.
    // Not `eventually_sync`: past the deadline the test still runs `down`
    // (no cluster left behind) and then fails on the status it read.
    let t0 = std::time::Instant::now();
    let status = loop {
        let status = script("status");
        let text = String::from_utf8_lossy(&status.stdout).to_string();
        if text.matches(" up ready").count() == 3 || t0.elapsed() > Duration::from_secs(60) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let down = script("down");
    assert!(
        run.status.success(),
        "smoke across the cluster failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}"
    );
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.matches(" up ready").count(), 3, "{status}");
    assert!(
        status.contains("node node-4 ") && !status.contains("node node-1 "),
        "{status}"
    );
    // Each master has a replica.
    assert_eq!(status.matches(" PONG master").count(), 3, "{status}");
    assert_eq!(status.matches(" PONG slave").count(), 3, "{status}");
    assert!(down.status.success());
    assert!(
        !state.path().join("c").exists(),
        "down left its state behind"
    );
}
