//! Where a log partition lives: the seam between the gateway (which must
//! append each event to the log of the node that owns its partition) and
//! whatever decides ownership (nothing on a single node; leases in Redis
//! in a cluster).

/// Who appends a partition's events now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: append to the local log.
    Local,
    /// Another node, reachable over HTTP at `addr` (`host:port`).
    Remote { node: String, addr: String },
    /// Nobody right now (a lease is moving, or Redis cannot be reached).
    Unknown,
}

/// Answers who owns a partition. Cheap and non-blocking: callers ask per
/// request.
pub trait Placement: Send + Sync + 'static {
    fn owner(&self, partition: u32) -> Owner;

    /// An HTTP address of some node that owns partitions (an edge node
    /// forwards the routes it does not serve there), if any is known.
    fn any_ingest(&self) -> Option<String> {
        None
    }
}

/// A single node: it owns every partition.
#[derive(Debug, Default, Clone, Copy)]
pub struct Alone;

impl Placement for Alone {
    fn owner(&self, _partition: u32) -> Owner {
        Owner::Local
    }
}
