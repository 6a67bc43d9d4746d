//! The nemesis: three replicated nodes (log.replication_factor = 3), each
//! in its own network namespace on a bridge, with Redis in a fourth, and a
//! producer posting throughout while faults are played in turn:
//!
//! 1. the node leading the most partitions is cut off the network (its
//!    cable down) past the election timeout; requests made on its side of
//!    the cut are never answered `202`;
//! 2. the busiest leader is frozen (SIGSTOP) past the election timeout,
//!    then woken;
//! 3. a node is killed (SIGKILL) with its data directory wiped, then
//!    started again empty.
//!
//! The checker reads the whole history: every event answered `202` is in
//! its recipient's inbox, in the producer's order per recipient; no event
//! id was handed out twice. Events with and without idempotency keys.
//! `NEMESIS_ROUNDS` plays the sequence more times (loadtest/nemesis.sh);
//! each fault's recovery time is printed.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::netns::{Net, NsRedis};
use support::{env_refs, http_blocking, peer_list, replicated_env, Node};

const NODES: usize = 3;
const RECIPIENTS: u64 = 16;

/// One answered post.
#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    recipient: u64,
    event_id: String,
}

struct Cluster {
    net: Net,
    nodes: Vec<Node>,
    _redis: NsRedis,
    /// Node index -> its address.
    addrs: Vec<String>,
}

fn start() -> Cluster {
    let mut net = Net::new();
    let rns = net.add("redis", 1);
    let redis = NsRedis::start(&rns, &net.addr(1));
    let addrs: Vec<String> = (0..NODES)
        .map(|i| format!("{}:7400", net.addr(11 + i as u8)))
        .collect();
    let peers = peer_list(&addrs);
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let ns = net.add(&format!("n{}", i + 1), 11 + i as u8);
        let mut env = replicated_env(&format!("node-{}", i + 1), &peers);
        env.push((
            "HERALD_REPLICATION__COMMIT_TIMEOUT_MS".into(),
            "2000".into(),
        ));
        nodes.push(Node::start_in_netns(&ns, a, &redis.url, &env_refs(&env)));
    }
    if std::env::var("KEEP_LOGS").is_ok() {
        for n in nodes.iter_mut() {
            eprintln!("node data: {}", n.data.display());
            n.keep_files();
        }
    }
    for n in &nodes {
        n.wait_ready(Duration::from_secs(60));
    }
    Cluster {
        net,
        nodes,
        _redis: redis,
        addrs,
    }
}

fn get(addr: &str, path: &str) -> Option<Value> {
    match http_blocking(addr, "GET", path, None, &[]) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

/// The node leading the most partitions, as `from` sees it.
fn busiest_leader(c: &Cluster, from: usize) -> usize {
    let v = get(&c.addrs[from], "/v1/admin/cluster").unwrap_or(Value::Null);
    let mut count: HashMap<String, usize> = HashMap::new();
    for p in v["partitions"].as_array().into_iter().flatten() {
        if let Some(l) = p["leader"].as_str() {
            *count.entry(l.to_string()).or_default() += 1;
        }
    }
    let name = count
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(l, _)| l)
        .unwrap_or_default();
    name.strip_prefix("node-")
        .and_then(|i| i.parse::<usize>().ok())
        .map_or(0, |i| i - 1)
}

/// Waits until every partition has a leader other than `not`, as node
/// `from` sees it; the time it took.
fn wait_new_leaders(c: &Cluster, from: usize, not: usize, t0: Instant) -> Duration {
    let not = format!("node-{}", not + 1);
    loop {
        if let Some(v) = get(&c.addrs[from], "/v1/admin/cluster") {
            let ok = v["partitions"].as_array().is_some_and(|ps| {
                ps.iter()
                    .all(|p| p["leader"].as_str().is_some_and(|l| l != not))
            });
            if ok {
                return t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no new leaders in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts like events from one producer in turn to the nodes in `targets`
/// until `stop`; keeps what was answered 202.
fn producer(
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    refused: Arc<AtomicUsize>,
) {
    let mut seq = 0u64;
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let addr = {
            let t = targets.lock().unwrap_or_else(|p| p.into_inner());
            if t.is_empty() {
                drop(t);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            turn += 1;
            t[turn % t.len()].clone()
        };
        seq += 1;
        let recipient = 8000 + seq % RECIPIENTS;
        let mut ev = json!({"kind": "like", "actor": 7001, "recipient": recipient,
                            "object": format!("post:{seq}"), "text": format!("seq {seq}")});
        if seq.is_multiple_of(2) {
            ev["id"] = json!(format!("nemesis-{}-{seq}", std::process::id()));
        }
        let body = serde_json::to_vec(&ev).unwrap_or_default();
        match http_blocking(
            &addr,
            "POST",
            "/v1/events",
            Some(&body),
            &[("content-type", "application/json")],
        ) {
            Ok((202, v)) => {
                let id = v["ids"][0].as_str().unwrap_or_default().to_string();
                sent.lock().unwrap_or_else(|p| p.into_inner()).push(Sent {
                    seq,
                    recipient,
                    event_id: id,
                });
            }
            _ => {
                refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Posts to node `i` from inside its own namespace (the side of a cut it
/// is on); the HTTP status.
fn post_inside(c: &Cluster, i: usize) -> String {
    let ns = c.net_ns(i);
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "15",
        ])
        .args(["-X", "POST", "-H", "content-type: application/json", "-d"])
        .arg(r#"{"kind":"like","actor":7002,"recipient":8100,"object":"post:cut"}"#)
        .arg(format!("http://{}/v1/events", c.addrs[i]))
        .output()
        .expect("curl in a namespace");
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl Cluster {
    fn net_ns(&self, i: usize) -> String {
        self.net.ns_of(&format!("n{}", i + 1))
    }

    fn set_targets(&self, targets: &Mutex<Vec<String>>, except: Option<usize>) {
        *targets.lock().unwrap_or_else(|p| p.into_inner()) = self
            .addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, a)| a.clone())
            .collect();
    }
}

#[test]
fn every_accepted_event_survives_partitions_freezes_and_wiped_disks() {
    let rounds: usize = std::env::var("NEMESIS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut c = start();
    let targets = Arc::new(Mutex::new(Vec::new()));
    c.set_targets(&targets, None);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let prod = {
        let (t, s, sent, r) = (targets.clone(), stop.clone(), sent.clone(), refused.clone());
        std::thread::spawn(move || producer(t, s, sent, r))
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut report = Vec::new();
    for round in 0..rounds {
        // 1. A network partition isolates the busiest leader.
        let l = busiest_leader(&c, 0);
        let other = (l + 1) % NODES;
        c.set_targets(&targets, Some(l));
        c.net.plug(&format!("n{}", l + 1), false);
        let t0 = Instant::now();
        let elected = wait_new_leaders(&c, other, l, t0);
        // Its side of the cut never answers 202.
        for _ in 0..3 {
            let status = post_inside(&c, l);
            assert_ne!(status, "202", "node-{} answered 202 while cut off", l + 1);
        }
        c.net.plug(&format!("n{}", l + 1), true);
        c.nodes[l].wait_ready(Duration::from_secs(60));
        c.set_targets(&targets, None);
        report.push(format!(
            "round {round}: partition of node-{}: new leaders after {elected:?}",
            l + 1
        ));

        // 2. The busiest leader frozen past the election timeout.
        let l = busiest_leader(&c, 0);
        let other = (l + 1) % NODES;
        c.set_targets(&targets, Some(l));
        c.nodes[l].pause();
        let t0 = Instant::now();
        let elected = wait_new_leaders(&c, other, l, t0);
        std::thread::sleep(Duration::from_secs(1));
        c.nodes[l].resume();
        c.nodes[l].wait_ready(Duration::from_secs(60));
        c.set_targets(&targets, None);
        report.push(format!(
            "round {round}: SIGSTOP of node-{}: new leaders after {elected:?}",
            l + 1
        ));

        // 3. A node killed with its disk, started again empty.
        let v = busiest_leader(&c, 0);
        let other = (v + 1) % NODES;
        c.set_targets(&targets, Some(v));
        c.nodes[v].kill9();
        c.nodes[v].wipe();
        let t0 = Instant::now();
        let elected = wait_new_leaders(&c, other, v, t0);
        std::thread::sleep(Duration::from_secs(1));
        c.nodes[v].restart_unready();
        let t1 = Instant::now();
        c.nodes[v].wait_ready(Duration::from_secs(60));
        c.set_targets(&targets, None);
        report.push(format!(
            "round {round}: SIGKILL and wipe of node-{}: new leaders after {elected:?}, back and ready {:?} after its restart",
            v + 1,
            t1.elapsed()
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let _ = prod.join();
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        sent.len() > 50,
        "too few events accepted to judge: {}",
        sent.len()
    );

    // No event id handed out twice.
    let ids: HashSet<&str> = sent.iter().map(|s| s.event_id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "an event id was handed out twice");
    // Every accepted event delivered, in the producer's order per recipient.
    let seq_of: HashMap<&str, u64> = sent.iter().map(|s| (s.event_id.as_str(), s.seq)).collect();
    let reader = &c.addrs[0];
    let start = Instant::now();
    let mut lost: Vec<&Sent>;
    loop {
        let mut inboxes: HashMap<u64, Vec<String>> = HashMap::new();
        for r in 0..RECIPIENTS {
            let user = 8000 + r;
            if let Some(v) = get(reader, &format!("/v1/users/{user}/inbox?limit=1000")) {
                let list = v["notifications"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n["event_id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                inboxes.insert(user, list);
            }
        }
        lost = sent
            .iter()
            .filter(|s| {
                !inboxes
                    .get(&s.recipient)
                    .is_some_and(|l| l.contains(&s.event_id))
            })
            .collect();
        if lost.is_empty() {
            for (user, list) in &inboxes {
                let seqs: Vec<u64> = list
                    .iter()
                    .filter_map(|id| seq_of.get(id.as_str()).copied())
                    .collect();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "user {user}: the producer's events out of order: {seqs:?}"
                );
            }
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for line in &report {
        eprintln!("nemesis: {line}");
    }
    eprintln!(
        "nemesis: {} events accepted (202), {} requests refused during faults, lost {}",
        sent.len(),
        refused.load(Ordering::Relaxed),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} accepted events never delivered, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
