//! Heavier test infrastructure: a real Redis Cluster, a size-limited tmpfs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Redis;

/// A real Redis Cluster of `masters` redis-server processes (no replicas),
/// each on a free port, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        Self::start_with_replicas(masters, 0)
    }

    /// `masters` masters with `replicas` replicas each.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<Redis> = (0..masters * (1 + replicas))
            .map(|_| {
                Redis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // A replica may take over however long ago it last
                    // heard from its master (tests kill masters early).
                    "--cluster-replica-validity-factor",
                    "0",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (with redis-server)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes };
        c.wait_ok();
        // Replicas have synced with their masters.
        let start = Instant::now();
        while !c.nodes.iter().all(|n| {
            n.cmd("INFO replication")
                .is_some_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "replicas never synced"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Waits until every live node says the cluster is ok.
    pub fn wait_ok(&self) {
        let start = Instant::now();
        while !self.nodes.iter().filter(|n| n.ping()).all(|n| {
            n.cmd("CLUSTER INFO")
                .is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index (in `nodes`) of the master that serves `key`.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0]
            .cmd(&format!("CLUSTER KEYSLOT {key}"))
            .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
            .expect("keyslot");
        let nodes = Command::new("redis-cli")
            .args(["-p", &self.nodes[0].port.to_string(), "cluster", "nodes"])
            .output()
            .expect("redis-cli cluster nodes");
        let text = String::from_utf8_lossy(&nodes.stdout);
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") {
                continue;
            }
            let owns = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if owns {
                let port: u16 = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("a node of this cluster");
            }
        }
        panic!("no master owns slot {slot}:\n{text}");
    }

    /// The seed nodes as a TOML array, for `HERALD_REDIS__CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Keys held by each master.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                n.cmd("DBSIZE")
                    .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// A size-limited tmpfs mounted for one test (tests run as root), unmounted
/// on drop: the real full disk.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir_all(&path).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount must be available (tests run as root)");
        assert!(
            st.success(),
            "mounting a tmpfs failed: the fault tests need root (CI runs as root)"
        );
        Tmpfs { path, _dir: dir }
    }

    /// Changes the size in place (space returns without a restart).
    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
