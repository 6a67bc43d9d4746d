//! Where a replicated partition lives: with its Raft leader; and the
//! cluster's node set, kept in Redis and followed by every node.

use herald_types::sync::Shared;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use herald_raft::{PeerAddr, Replicas};
use herald_store::Store;
use herald_types::{Owner, Placement};

/// The placement of a cluster whose partitions are replicated: a
/// partition's owner is its Raft leader (an edge node, which holds no
/// replica, knows the node set only and forwards to any of its nodes).
pub struct RaftPlacement {
    pub replicas: Option<Arc<Replicas>>,
    /// The node set (followed from Redis).
    peers: RwLock<(u64, Vec<PeerAddr>)>,
    next: AtomicUsize,
    /// Per peer name: whether it took a connection at the last probe.
    reachable: RwLock<HashMap<String, bool>>,
}

/// How often an edge node probes the peers, and how long a probe waits.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the node set is read from Redis.
const NODES_EVERY: Duration = Duration::from_secs(2);

/// The node set as (name, address) pairs.
pub fn pairs(peers: &[PeerAddr]) -> Vec<(String, String)> {
    peers
        .iter()
        .map(|p| (p.name.clone(), p.addr.clone()))
        .collect()
}

/// The node set from Redis's pairs.
pub fn peers_of(pairs: &[(String, String)]) -> Vec<PeerAddr> {
    pairs
        .iter()
        .map(|(name, addr)| PeerAddr {
            name: name.clone(),
            addr: addr.clone(),
        })
        .collect()
}

impl RaftPlacement {
    /// The placement; a task follows the node set in Redis (replicas move
    /// when it changes), and on a node without replicas (an edge) another
    /// probes the peers every second so routes go to reachable ones.
    pub fn start(
        replicas: Option<Arc<Replicas>>,
        epoch: u64,
        peers: Vec<PeerAddr>,
        store: Store,
    ) -> Arc<RaftPlacement> {
        let probe = replicas.is_none();
        let p = Arc::new(RaftPlacement {
            replicas,
            peers: RwLock::new((epoch, peers)),
            reachable: RwLock::new(HashMap::new()),
            next: AtomicUsize::new(0),
        });
        if probe {
            tokio::spawn(probe_loop(Arc::downgrade(&p)));
        }
        tokio::spawn(nodes_loop(Arc::downgrade(&p), store));
        p
    }

    /// The node set this node follows: its epoch and nodes.
    pub fn peers(&self) -> (u64, Vec<PeerAddr>) {
        self.peers.reading().clone()
    }

    /// Takes the node set read from Redis (a newer epoch only).
    pub fn set_peers(&self, epoch: u64, peers: Vec<PeerAddr>) {
        if let Some(r) = &self.replicas {
            if let Err(e) = r.set_nodes(epoch, peers.clone()) {
                tracing::warn!(error = %e, epoch, "the cluster's node set is not usable; keeping the last one");
                return;
            }
        }
        let mut cur = self.peers.writing();
        if epoch > cur.0 {
            *cur = (epoch, peers);
        }
    }
}

async fn nodes_loop(p: Weak<RaftPlacement>, store: Store) {
    loop {
        tokio::time::sleep(NODES_EVERY).await;
        let Some(pl) = p.upgrade() else { return };
        match store.node_set().await {
            Ok(Some(set)) if set.epoch > pl.peers().0 => {
                pl.set_peers(set.epoch, peers_of(&set.nodes))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "the node set is unreadable; keeping the last one")
            }
        }
    }
}

async fn probe_loop(p: Weak<RaftPlacement>) {
    loop {
        let Some(pl) = p.upgrade() else { return };
        let (_, peers) = pl.peers();
        for peer in peers {
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&peer.addr))
                    .await,
                Ok(Ok(_))
            );
            let was = pl.reachable.writing().insert(peer.name.clone(), ok);
            if was.unwrap_or(true) != ok {
                tracing::info!(peer = %peer.name, reachable = ok, "ingest peer reachability changed");
            }
        }
        drop(pl);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

impl Placement for RaftPlacement {
    fn owner(&self, partition: u32) -> Owner {
        let Some(r) = &self.replicas else {
            return Owner::Unknown;
        };
        if r.leading(partition).is_some() {
            return Owner::Local;
        }
        match r.leader(partition) {
            Some(p) if !p.addr.is_empty() => Owner::Remote {
                node: p.name,
                addr: p.addr,
            },
            _ => Owner::Unknown,
        }
    }

    fn any_ingest(&self) -> Option<String> {
        let (_, peers) = self.peers();
        let n = peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let reachable = self.reachable.reading();
        // The next reachable peer in turn (any, when none answered).
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| reachable.get(&peers[i].name).copied().unwrap_or(true))
            .or((n > 0).then_some(start % n.max(1)))
            .map(|i| peers[i].addr.clone())
    }
}
