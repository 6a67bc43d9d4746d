//! The node set changes under load: a fourth node is added, then one of
//! the first three removed. Replicas move where the node set places them
//! (Raft membership change), appends go on throughout, and every
//! acknowledged record is on every replica of its partition afterwards.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use herald_log::LogConfig;
use herald_raft::{placement, PeerAddr, ReplicaError, Replicas};

const PARTITIONS: u32 = 6;

fn names(set: &[u64], peers: &[PeerAddr]) -> BTreeSet<String> {
    set.iter()
        .map(|id| {
            peers
                .iter()
                .find(|p| herald_raft::node_id(&p.name) == *id)
                .map(|p| p.name.clone())
                .unwrap()
        })
        .collect()
}

/// What the writer saw: every acknowledged record (partition, offset,
/// payload), and the failures that mean appends stopped.
#[derive(Default, Clone)]
struct Writes {
    acked: Vec<(u32, u64, Bytes)>,
    not_enough: usize,
}

/// Writes one record to each partition in turn, through whichever node
/// leads it, until told to stop.
fn writer(
    nodes: Arc<Mutex<Vec<Arc<Replicas>>>>,
    writes: Arc<Mutex<Writes>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = 0u64;
        while !*stop.borrow() {
            for p in 0..PARTITIONS {
                let rec = Bytes::from(format!("w{k}-p{p}"));
                let all = nodes.lock().unwrap().clone();
                for r in all {
                    match r.propose(p, vec![rec.clone()]).await {
                        Ok(off) => {
                            writes.lock().unwrap().acked.push((p, off, rec.clone()));
                            break;
                        }
                        Err(ReplicaError::NotEnoughReplicas { .. }) => {
                            writes.lock().unwrap().not_enough += 1;
                        }
                        Err(_) => {}
                    }
                }
            }
            k += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Waits until every partition's voters are where `peers` places them,
/// as its leader reports, and only the placed nodes hold a replica.
async fn settled(nodes: &[Node], peers: &[PeerAddr]) {
    let start = Instant::now();
    loop {
        let mut off = Vec::new();
        for p in 0..PARTITIONS {
            let want = names(&placement(peers, 3, p), peers);
            let leader = nodes.iter().find(|n| n.replicas.leading(p).is_some());
            let voters: BTreeSet<String> = leader
                .map(|l| {
                    l.replicas
                        .replicas_of(p)
                        .into_iter()
                        .map(|r| r.name)
                        .collect()
                })
                .unwrap_or_default();
            let holders: BTreeSet<String> = nodes
                .iter()
                .filter(|n| n.replicas.holds(p))
                .map(|n| n.name.clone())
                .collect();
            if voters != want || holders != want {
                off.push(format!(
                    "p{p}: voters {voters:?}, held on {holders:?}, placed {want:?}"
                ));
            }
        }
        if off.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "replicas never moved: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every acknowledged record is held, at its offset, on every replica of
/// its partition.
async fn all_acked_everywhere(nodes: &[Node], peers: &[PeerAddr], writes: &Writes) {
    for p in 0..PARTITIONS {
        let want = names(&placement(peers, 3, p), peers);
        let acked: Vec<(u64, Bytes)> = writes
            .acked
            .iter()
            .filter(|w| w.0 == p)
            .map(|w| (w.1, w.2.clone()))
            .collect();
        for n in nodes.iter().filter(|n| want.contains(&n.name)) {
            let start = Instant::now();
            loop {
                let got: BTreeSet<(u64, Bytes)> = held(n, p).into_iter().collect();
                let missing: Vec<_> = acked.iter().filter(|a| !got.contains(a)).collect();
                if missing.is_empty() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{} lacks {} of {} acknowledged records of partition {p}, e.g. {:?}",
                    n.name,
                    missing.len(),
                    acked.len(),
                    missing[0]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_then_one_removed_moves_replicas_while_appends_go_on() {
    let log_cfg = LogConfig {
        partitions: PARTITIONS,
        replicated: true,
        ..LogConfig::default()
    };
    let mut nodes = cluster_with(3, log_cfg.clone()).await;
    let mut peers: Vec<PeerAddr> = nodes
        .iter()
        .map(|n| {
            let p = n.replicas.replicas_of(0);
            p.into_iter().find(|p| p.name == n.name).unwrap()
        })
        .collect();
    for p in 0..PARTITIONS {
        leader_of(&nodes, p, Duration::from_secs(10)).await;
    }
    let list = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.replicas.clone()).collect::<Vec<_>>(),
    ));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let w = writer(list.clone(), writes.clone(), stop_rx);
    // Some records before anything moves.
    while writes.lock().unwrap().acked.len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // node-4 joins: started knowing the new set, then every node told.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    peers.push(PeerAddr {
        name: "node-4".into(),
        addr: l.local_addr().unwrap().to_string(),
    });
    let moved: Vec<u32> = (0..PARTITIONS)
        .filter(|p| placement(&peers, 3, *p) != placement(&peers[..3], 3, *p))
        .collect();
    assert!(!moved.is_empty(), "the test needs a partition that moves");
    let n4 = start_node_as(
        "node-4",
        &peers,
        2,
        l,
        tempfile::tempdir().unwrap(),
        log_cfg.clone(),
    )
    .await;
    list.lock().unwrap().push(n4.replicas.clone());
    nodes.push(n4);
    for n in &nodes {
        n.replicas.set_nodes(2, peers.clone()).unwrap();
    }
    let before = writes.lock().unwrap().acked.len();
    settled(&nodes, &peers).await;
    eprintln!("moved partitions {moved:?} onto node-4");
    let during_add = writes.lock().unwrap().acked.len() - before;
    let snapshot = writes.lock().unwrap().clone();
    all_acked_everywhere(&nodes, &peers, &snapshot).await;

    // One of the first three leaves (the one holding most replicas now):
    // the set without it; its replicas move to the others.
    let holding = |i: usize| {
        (0..PARTITIONS)
            .filter(|p| nodes[i].replicas.holds(*p))
            .count()
    };
    let out = (0..3).max_by_key(|i| holding(*i)).unwrap();
    assert!(holding(out) > 0);
    let gone = peers.remove(out);
    let leaving = nodes.iter().position(|n| n.name == gone.name).unwrap();
    let held_by_leaving: Vec<u32> = (0..PARTITIONS)
        .filter(|p| nodes[leaving].replicas.holds(*p))
        .collect();
    // A set that cannot hold three replicas is refused, and changes nothing.
    assert!(nodes[leaving]
        .replicas
        .set_nodes(3, peers[..2].to_vec())
        .is_err());
    for n in &nodes {
        n.replicas.set_nodes(3, peers.clone()).unwrap();
    }
    let before = writes.lock().unwrap().acked.len();
    settled(&nodes, &peers).await;
    let during_remove = writes.lock().unwrap().acked.len() - before;
    for p in 0..PARTITIONS {
        assert!(
            !nodes[leaving].replicas.holds(p),
            "{} still holds {p}",
            gone.name
        );
    }
    // Its replicas are marked given up (not started again on a restart).
    for p in held_by_leaving {
        let marker = nodes[leaving]
            ._dir
            .path()
            .join(format!("raft/p-{p:05}/left"));
        assert!(marker.exists(), "{} not marked", marker.display());
    }
    // Restarted, it opens none of them again.
    let out = nodes.remove(leaving);
    list.lock()
        .unwrap()
        .retain(|r| !Arc::ptr_eq(r, &out.replicas));
    let dir = stop_node(out).await;
    let l = tokio::net::TcpListener::bind(&gone.addr).await.unwrap();
    let again = start_node_as(&gone.name, &peers, 3, l, dir, log_cfg.clone()).await;
    for p in 0..PARTITIONS {
        assert!(!again.replicas.holds(p), "{} opened {p} again", gone.name);
    }
    again.replicas.shutdown().await;
    // Appends went on, and every acknowledged one is on every replica.
    let _ = stop_tx.send(true);
    w.await.unwrap();
    let writes = writes.lock().unwrap().clone();
    eprintln!(
        "{} records acknowledged ({during_add} while node-4 was added, {during_remove} while {} left)",
        writes.acked.len(),
        gone.name
    );
    assert!(during_add > 0 && during_remove > 0, "appends stopped");
    assert_eq!(
        writes.not_enough, 0,
        "a partition lost its majority while replicas moved"
    );
    all_acked_everywhere(&nodes, &peers, &writes).await;
    // Offsets were never handed out twice.
    let mut seen = BTreeSet::new();
    for (p, off, _) in &writes.acked {
        assert!(
            seen.insert((*p, *off)),
            "offset {off} of {p} acknowledged twice"
        );
    }
    for n in &nodes {
        n.replicas.shutdown().await;
    }
}
