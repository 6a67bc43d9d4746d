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

/// A `redis-server` inside a namespace, with an append-only file.
pub struct NsRedis {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NsRedis {
    pub fn start(ns: &str, addr: &str) -> NsRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "redis-server",
                "--port",
                "6379",
                "--bind",
                addr,
            ])
            // The network is the test's own: no outside client can reach it.
            .args([
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server in a namespace");
        let r = NsRedis {
            child,
            url: format!("redis://{addr}:6379"),
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect((addr, 6379)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis in {ns} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
