//! The Raft type configuration of a replicated partition.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A replica's id in every Raft group: a stable hash of its node name
/// ([`node_id`]).
pub type NodeId = u64;

/// What a proposal carries: a batch of events for one partition, made one
/// Raft entry and one herald-log batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Offset of the first record: set by the log when the leader appends
    /// (`u64::MAX` before), and carried to followers, so every replica
    /// holds each record at the same offset (event ids are the same
    /// everywhere).
    pub base: u64,
    /// Timestamp of the records, ms.
    pub ts: i64,
    pub records: Vec<Bytes>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records at {}", self.records.len(), self.base)
    }
}

/// What a committed proposal answers: where its records are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub base: u64,
    pub index: u64,
    pub term: u64,
}

/// A snapshot is where a replica's log starts when the leader no longer
/// holds the entries it would need (retention removed them): the follower
/// continues from `next_offset` after `last_log_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStart {
    pub next_offset: u64,
}

openraft::declare_raft_types!(
    /// Herald's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Placed,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = LogStart,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// A node's Raft id: FNV-1a of its name (stable whatever the order of the
/// peer list; never 0).
pub fn node_id(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}
