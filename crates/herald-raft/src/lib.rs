//! Replicated partitions: one Raft group (openraft) per partition of the
//! log, whose Raft log is the partition itself.
// openraft's traits return its `StorageError` (over 200 bytes) by value.
#![allow(clippy::result_large_err)]

pub use openraft;

mod durable;
pub mod group;
pub mod machine;
pub mod net;
pub mod store;
pub mod types;

pub use group::{PartitionView, PeerAddr, ReplicaConfig, ReplicaError, Replicas};
pub use machine::Committed;
pub use store::PartitionStore;
pub use types::{node_id, NodeId, Placed, Proposal, TypeConfig};
