//! Where a replicated partition lives: with its Raft leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald_raft::{PeerAddr, Replicas};
use herald_types::{Owner, Placement};

/// The placement of a cluster whose partitions are replicated: a
/// partition's owner is its Raft leader (an edge node, which holds no
/// replica, knows the peers only and forwards to any of them).
pub struct RaftPlacement {
    pub replicas: Option<Arc<Replicas>>,
    pub peers: Vec<PeerAddr>,
    next: AtomicUsize,
}

impl RaftPlacement {
    pub fn new(replicas: Option<Arc<Replicas>>, peers: Vec<PeerAddr>) -> RaftPlacement {
        RaftPlacement {
            replicas,
            peers,
            next: AtomicUsize::new(0),
        }
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
        if self.peers.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        Some(self.peers[i].addr.clone())
    }
}
