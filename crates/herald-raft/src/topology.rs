//! Which nodes the cluster is made of, and where each partition's
//! replicas belong.
//!
//! The *node set* (names and addresses, with an epoch that grows with
//! every change) is given to [`crate::Replicas`] from outside (the node
//! keeps it in Redis); it is only a target. Where a partition's replicas
//! *are* is its Raft group's membership, which only its leader changes
//! (`members.rs`), through Raft's joint consensus.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::group::PeerAddr;
use crate::types::{node_id, NodeId};

/// The replica set of `partition` over `nodes`: `factor` nodes chosen by
/// rendezvous hashing, so adding or removing a node moves only the
/// replicas that must move (about `factor / nodes` of them).
pub fn placement(nodes: &[PeerAddr], factor: usize, partition: u32) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = nodes
        .iter()
        .map(|p| {
            let id = node_id(&p.name);
            (mix(id ^ mix(u64::from(partition) + 1)), id)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    let mut set: Vec<NodeId> = scored.into_iter().take(factor).map(|s| s.1).collect();
    set.sort_unstable();
    set
}

/// A 64-bit finalizer (splitmix64's): names that differ in one character
/// (`node-1`, `node-4`) hash far apart, so every node wins its share of
/// partitions.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The replica of `set` that should lead `partition` when all are up: the
/// partitions go round the replica set, so each node leads a share.
pub fn preferred(set: &[NodeId], partition: u32) -> Option<NodeId> {
    (!set.is_empty()).then(|| set[partition as usize % set.len()])
}

/// The node set this node works towards, and every node it ever heard of
/// (a removed node's name still names its replicas until they are gone).
pub(crate) struct Topology {
    pub factor: usize,
    target: RwLock<(u64, Vec<PeerAddr>)>,
    known: RwLock<BTreeMap<NodeId, PeerAddr>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Topology {
    pub fn new(factor: usize, epoch: u64, nodes: Vec<PeerAddr>) -> Topology {
        let known = nodes
            .iter()
            .map(|p| (node_id(&p.name), p.clone()))
            .collect();
        Topology {
            factor,
            target: RwLock::new((epoch, nodes)),
            known: RwLock::new(known),
        }
    }

    /// Takes a newer node set; false when `epoch` is not newer.
    pub fn set(&self, epoch: u64, nodes: Vec<PeerAddr>) -> bool {
        let mut t = write(&self.target);
        if epoch <= t.0 {
            return false;
        }
        let mut k = write(&self.known);
        for p in &nodes {
            k.insert(node_id(&p.name), p.clone());
        }
        *t = (epoch, nodes);
        true
    }

    pub fn epoch(&self) -> u64 {
        read(&self.target).0
    }

    pub fn nodes(&self) -> Vec<PeerAddr> {
        read(&self.target).1.clone()
    }

    /// Where `partition`'s replicas belong now.
    pub fn placement(&self, partition: u32) -> Vec<NodeId> {
        placement(&read(&self.target).1, self.factor, partition)
    }

    /// The replica that should lead `partition`.
    pub fn preferred(&self, partition: u32) -> Option<NodeId> {
        preferred(&self.placement(partition), partition)
    }

    /// A node by id, if it was ever named.
    pub fn peer(&self, id: NodeId) -> Option<PeerAddr> {
        read(&self.known).get(&id).cloned()
    }

    /// A node's name (its id in digits when it was never named).
    pub fn name(&self, id: NodeId) -> String {
        self.peer(id).map_or_else(|| id.to_string(), |p| p.name)
    }

    /// Remembers a node heard of from a peer (name and address).
    pub fn learn(&self, p: PeerAddr) {
        write(&self.known).entry(node_id(&p.name)).or_insert(p);
    }

    /// Every node ever named.
    pub fn known(&self) -> Vec<PeerAddr> {
        read(&self.known).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<PeerAddr> {
        (1..=n)
            .map(|i| PeerAddr {
                name: format!("node-{i}"),
                addr: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect()
    }

    #[test]
    fn every_node_gets_a_fair_share_and_a_new_node_moves_only_its_own() {
        let (five, six) = (nodes(5), nodes(6));
        let mut count = BTreeMap::new();
        let mut moved = 0;
        for p in 0..600 {
            let a = placement(&five, 3, p);
            for id in &a {
                *count.entry(*id).or_insert(0) += 1;
            }
            let b = placement(&six, 3, p);
            // At most one replica moves, and only onto the new node.
            let gone: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
            assert!(gone.len() <= 1, "partition {p}: {a:?} -> {b:?}");
            if !gone.is_empty() {
                assert!(b.contains(&node_id("node-6")));
                moved += 1;
            }
        }
        // 1,800 replicas over 5 nodes: 360 each, within 20%.
        for (id, n) in &count {
            assert!((288..=432).contains(n), "node {id} holds {n} of 1800");
        }
        // A sixth node takes about half the partitions' third replica
        // (3/6 of them), not all.
        assert!((200..=400).contains(&moved), "{moved} of 600 moved");
    }
}
