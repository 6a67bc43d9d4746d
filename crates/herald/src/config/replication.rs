//! `[replication]` and `log.replication_factor`: replicated partitions
//! (herald-raft).

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{Config, Role};

/// Who replicates the log, and how fast a lost leader is replaced.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replication {
    /// The ingest nodes the cluster is made with, this one too:
    /// `name=host:port` (`name` is its `server.node_id`, `host:port` its
    /// HTTP address). Read when the cluster first starts (the node set is
    /// then kept in Redis); change it later with `herald cluster add` and
    /// `herald cluster remove`.
    pub peers: Vec<String>,
    /// How often a leader tells its followers it is alive.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for between this and twice this
    /// starts an election.
    pub election_ms: u64,
    /// A batch not held by a majority of its partition's replicas in this
    /// long is answered `503 not_enough_replicas`.
    pub commit_timeout_ms: u64,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            peers: Vec::new(),
            heartbeat_ms: 150,
            election_ms: 600,
            commit_timeout_ms: 5000,
        }
    }
}

impl Config {
    /// Whether this node's log partitions are replicated.
    pub fn replicated(&self) -> bool {
        self.log.replication_factor > 1
    }

    /// The peers as (name, address).
    pub fn replication_peers(&self) -> anyhow::Result<Vec<herald_raft::PeerAddr>> {
        self.replication
            .peers
            .iter()
            .map(|p| match p.split_once('=') {
                Some((name, addr)) if !name.trim().is_empty() && addr.contains(':') => {
                    Ok(herald_raft::PeerAddr {
                        name: name.trim().to_string(),
                        addr: addr.trim().to_string(),
                    })
                }
                _ => bail!("replication.peers: {p:?} is not name=host:port"),
            })
            .collect()
    }

    /// The replica settings of this node.
    pub fn replica_config(&self) -> anyhow::Result<herald_raft::ReplicaConfig> {
        let r = &self.replication;
        Ok(herald_raft::ReplicaConfig {
            node: self.server.node_id.clone(),
            peers: self.replication_peers()?,
            epoch: 1,
            factor: self.log.replication_factor,
            cluster_key: self.server.cluster_key.clone(),
            heartbeat: Duration::from_millis(r.heartbeat_ms),
            election: Duration::from_millis(r.election_ms),
            commit_timeout: Duration::from_millis(r.commit_timeout_ms),
            role: self.server.role.as_str().to_string(),
        })
    }

    /// The replication settings make sense together.
    pub(super) fn check_replication(&self) -> anyhow::Result<()> {
        let f = self.log.replication_factor;
        if f == 0 || f > 7 {
            bail!("log.replication_factor must be between 1 and 7 (1: no copy; 3 recommended in a cluster)");
        }
        if f == 1 {
            return Ok(());
        }
        if !self.server.cluster {
            bail!("log.replication_factor = {f} needs server.cluster = true");
        }
        if self.server.role == Role::Edge {
            return Ok(());
        }
        let r = &self.replication;
        if !(50..=10_000).contains(&r.heartbeat_ms) {
            bail!("replication.heartbeat_ms must be between 50 and 10000");
        }
        if r.election_ms < 3 * r.heartbeat_ms || r.election_ms > 60_000 {
            bail!("replication.election_ms must be at least three heartbeats and at most 60000");
        }
        if !(100..=600_000).contains(&r.commit_timeout_ms) {
            bail!("replication.commit_timeout_ms must be between 100 and 600000");
        }
        self.replica_config()?
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
