//! Network namespaces for the nemesis tests: each member (a Redis, each
//! node) in a namespace of its own, all plugged into a bridge in a
//! "switch" namespace by veth pairs, and the test process (the client) on
//! the same bridge from the root namespace. Cutting a member's cable (its
//! veth end in the switch set down) partitions it from everyone. The
//! harness creates everything under a unique prefix and removes it when
//! dropped. Needs root and `ip` (iproute2).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One network of namespaces.
pub struct Net {
    prefix: String,
    /// First three octets of the subnet, e.g. `10.213.7`.
    pub subnet: String,
    members: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// A switch namespace with a bridge, and the root namespace on it at
    /// `<subnet>.250`.
    pub fn new() -> Net {
        let id = std::process::id();
        let prefix = format!("hn{}", id % 100_000);
        let subnet = format!("10.{}.{}", 200 + (id % 50), (id / 50) % 250);
        let net = Net {
            prefix: prefix.clone(),
            subnet,
            members: Vec::new(),
        };
        net.cleanup();
        ip(&["netns", "add", &net.ns("sw")]);
        ip(&["-n", &net.ns("sw"), "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.ns("sw"), "link", "set", "br0", "up"]);
        // The client's cable: root end `<prefix>c`, switch end `<prefix>cs`.
        let (root_end, sw_end) = (format!("{prefix}c"), format!("{prefix}cs"));
        ip(&[
            "link", "add", &root_end, "type", "veth", "peer", "name", &sw_end,
        ]);
        ip(&["link", "set", &sw_end, "netns", &net.ns("sw")]);
        ip(&[
            "-n",
            &net.ns("sw"),
            "link",
            "set",
            &sw_end,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}.250/24", net.subnet),
            "dev",
            &root_end,
        ]);
        ip(&["link", "set", &root_end, "up"]);
        net
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The namespace of member `name`.
    pub fn ns_of(&self, name: &str) -> String {
        self.ns(name)
    }

    /// Adds member `name` at `<subnet>.<host>`; returns its namespace.
    pub fn add(&mut self, name: &str, host: u8) -> String {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns]);
        let (inner, sw_end) = (format!("{}{name}i", self.prefix), self.cable(name));
        ip(&[
            "link", "add", &inner, "type", "veth", "peer", "name", &sw_end,
        ]);
        ip(&["link", "set", &inner, "netns", &ns]);
        ip(&["link", "set", &sw_end, "netns", &self.ns("sw")]);
        ip(&[
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &sw_end,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}.{host}/24", self.subnet),
            "dev",
            &inner,
        ]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.members.push(name.to_string());
        ns
    }

    /// The switch end of member `name`'s cable.
    fn cable(&self, name: &str) -> String {
        format!("{}{name}s", self.prefix)
    }

    /// Cuts member `name` off the network (`false`) or plugs it back.
    pub fn plug(&self, name: &str, up: bool) {
        ip(&[
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &self.cable(name),
            if up { "up" } else { "down" },
        ]);
    }

    /// The address of `host` on this network.
    pub fn addr(&self, host: u8) -> String {
        format!("{}.{host}", self.subnet)
    }

    fn cleanup(&self) {
        let list = Command::new("ip").args(["netns", "list"]).output();
        if let Ok(out) = list {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&format!("{}-", self.prefix)) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}c", self.prefix)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A Redis Cluster inside a namespace: `masters` masters with one replica
/// each, on ports 7000 and up of one address, append-only files, and
/// `cluster-node-timeout` 2 s. A member can be killed (SIGKILL) and
/// started again on its files (it rejoins as a replica of whoever took
/// over).
pub struct NsRedisCluster {
    ns: String,
    addr: String,
    members: Vec<Option<Child>>,
    dirs: Vec<tempfile::TempDir>,
}

const FIRST_PORT: u16 = 7000;

impl NsRedisCluster {
    pub fn start(ns: &str, addr: &str, masters: usize) -> NsRedisCluster {
        let mut c = NsRedisCluster {
            ns: ns.to_string(),
            addr: addr.to_string(),
            members: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..masters * 2 {
            c.dirs.push(tempfile::tempdir().expect("tempdir"));
            c.members.push(None);
            c.spawn(i);
        }
        let addrs: Vec<String> = (0..masters * 2)
            .map(|i| format!("{addr}:{}", c.port(i)))
            .collect();
        let out = c
            .cli()
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_healthy(Duration::from_secs(60));
        c
    }

    fn port(&self, i: usize) -> u16 {
        FIRST_PORT + i as u16
    }

    fn cli(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "redis-cli"]);
        c
    }

    /// `redis-cli` against member `i`; its output (None if it failed).
    pub fn cmd(&self, i: usize, args: &[&str]) -> Option<String> {
        let out = self
            .cli()
            .args(["-h", &self.addr, "-p", &self.port(i).to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn spawn(&mut self, i: usize) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "redis-server"])
            .args(["--port", &self.port(i).to_string(), "--bind", &self.addr])
            // The network is the test's own: no outside client can reach it.
            .args([
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(self.dirs[i].path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server in a namespace");
        self.members[i] = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect((self.addr.as_str(), self.port(i))).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis {i} in {} did not start",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed nodes as a TOML array (`HERALD_REDIS__CLUSTER_NODES`).
    pub fn seeds(&self) -> String {
        let list: Vec<String> = (0..self.members.len())
            .map(|i| format!("\"redis://{}:{}\"", self.addr, self.port(i)))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// Waits until every running member says the cluster is ok and has a
    /// master for every slot with a replica linked to it.
    pub fn wait_healthy(&self, wait: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let running: Vec<usize> = (0..self.members.len())
                .filter(|i| self.members[*i].is_some())
                .collect();
            let ok = running.iter().all(|&i| {
                self.cmd(i, &["cluster", "info"])
                    .is_some_and(|t| t.contains("cluster_state:ok"))
            });
            let linked = running.iter().all(|&i| {
                self.cmd(i, &["info", "replication"]).is_some_and(|t| {
                    t.contains("master_link_status:up")
                        || t.contains("role:master") && t.contains("connected_slaves:1")
                })
            });
            if ok && linked {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < wait,
                "the redis cluster never became healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn slot(&self, key: &str) -> u16 {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .find_map(|i| self.cmd(i, &["cluster", "keyslot", key]))
            .and_then(|t| t.trim().parse().ok())
            .expect("keyslot")
    }

    /// The running member that says it is master of `slot`.
    fn master_of_slot(&self, slot: u16) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].is_some()
                && self.cmd(i, &["cluster", "nodes"]).is_some_and(|t| {
                    t.lines()
                        .any(|l| l.contains("myself,master") && owns(l, slot))
                })
        })
    }

    /// The member that is master of `key`'s slot now.
    pub fn master_of(&self, key: &str) -> usize {
        self.master_of_slot(self.slot(key))
            .expect("a master for the slot")
    }

    /// Member `i` killed (SIGKILL): its files stay.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Member `i` started again on its files.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Waits until another member than `dead` is master of `key`'s slot
    /// and says the cluster is ok; how long it took.
    pub fn wait_failover(&self, key: &str, dead: usize, wait: Duration) -> Duration {
        let start = Instant::now();
        let slot = self.slot(key);
        loop {
            let promoted = self.master_of_slot(slot).filter(|m| *m != dead);
            if promoted.is_some_and(|m| {
                self.cmd(m, &["cluster", "info"])
                    .is_some_and(|t| t.contains("cluster_state:ok"))
            }) {
                return start.elapsed();
            }
            assert!(start.elapsed() < wait, "no failover of redis {dead}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a `cluster nodes` line lists `slot` among its ranges.
fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace()
        .skip(8)
        .any(|r| match r.split_once('-') {
            Some((a, b)) => {
                a.parse::<u16>().is_ok_and(|a| a <= slot)
                    && b.parse::<u16>().is_ok_and(|b| slot <= b)
            }
            None => r.parse::<u16>().is_ok_and(|s| s == slot),
        })
}

impl Drop for NsRedisCluster {
    fn drop(&mut self) {
        for c in self.members.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
