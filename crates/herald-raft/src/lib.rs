//! Replicated partitions: one Raft group (openraft) per partition of the
//! log, whose Raft log is the partition itself.
// openraft's traits return its `StorageError` (over 200 bytes) by value.
#![allow(clippy::result_large_err)]

pub use openraft;

mod balance;
mod durable;
mod entry;
pub mod group;
mod init;
pub mod machine;
mod members;
pub mod net;
mod open;
mod propose;
mod retain;
pub mod store;
mod tail;
mod topology;
pub mod types;
pub mod view;

pub use group::{check_nodes, PeerAddr, ReplicaConfig, ReplicaError, Replicas};
pub use machine::{Committed, Start};
pub use store::PartitionStore;
pub use topology::{placement, preferred};
pub use types::{node_id, NodeId, Placed, Proposal, TypeConfig};
pub use view::{ClusterView, NodeReport, PartitionView};
