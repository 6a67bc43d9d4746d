//! Where a replicated partition lives: with its Raft leader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use herald_raft::{PeerAddr, Replicas};
use herald_types::{Owner, Placement};

/// The placement of a cluster whose partitions are replicated: a
/// partition's owner is its Raft leader (an edge node, which holds no
/// replica, knows the peers only and forwards to any of them).
pub struct RaftPlacement {
    pub replicas: Option<Arc<Replicas>>,
    pub peers: Vec<PeerAddr>,
    next: AtomicUsize,
    /// Per peer: whether it took a connection at the last probe.
    reachable: Vec<AtomicBool>,
}

/// How often an edge node probes the peers, and how long a probe waits.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

impl RaftPlacement {
    /// The placement; on a node without replicas (an edge), a task probes
    /// the peers every second so routes are passed on to reachable ones.
    pub fn start(replicas: Option<Arc<Replicas>>, peers: Vec<PeerAddr>) -> Arc<RaftPlacement> {
        let probe = replicas.is_none();
        let p = Arc::new(RaftPlacement {
            replicas,
            reachable: peers.iter().map(|_| AtomicBool::new(true)).collect(),
            peers,
            next: AtomicUsize::new(0),
        });
        if probe {
            tokio::spawn(probe_loop(Arc::downgrade(&p)));
        }
        p
    }
}

async fn probe_loop(p: Weak<RaftPlacement>) {
    loop {
        let Some(pl) = p.upgrade() else { return };
        for (i, peer) in pl.peers.iter().enumerate() {
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&peer.addr))
                    .await,
                Ok(Ok(_))
            );
            if pl.reachable[i].swap(ok, Ordering::Relaxed) != ok {
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
            Some(p) => Owner::Remote {
                node: p.name,
                addr: p.addr,
            },
            None => Owner::Unknown,
        }
    }

    fn any_ingest(&self) -> Option<String> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The next reachable peer in turn (any, when none answered).
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.reachable[i].load(Ordering::Relaxed))
            .or((n > 0).then_some(start % n.max(1)))
            .map(|i| self.peers[i].addr.clone())
    }
}
