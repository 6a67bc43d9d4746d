//! What a node tells of its replicas: per partition (`view`), per node
//! for peers (`local_view`), the whole cluster (`cluster_view`, for
//! `GET /v1/admin/cluster`), and Prometheus gauges every second.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::ServerState;

use crate::group::{read, Replicas};
use crate::types::NodeId;

/// One node's answer to "what do you see" (`cluster_view`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub role: String,
    pub partitions: Vec<PartitionView>,
}

/// `GET /v1/admin/cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    pub node: String,
    pub nodes: Vec<NodeSummary>,
    pub partitions: Vec<PartitionSummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeSummary {
    pub id: String,
    pub addr: String,
    pub role: String,
    pub alive: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSummary {
    pub partition: u32,
    pub leader: Option<String>,
    pub term: u64,
    pub replicas: Vec<String>,
    pub in_sync: Vec<String>,
    /// Records below this offset are held by a majority.
    pub committed: u64,
}

/// One partition as this node sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartitionView {
    pub partition: u32,
    pub replicas: Vec<String>,
    pub leader: Option<String>,
    pub term: u64,
    pub role: String,
    pub last_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub committed_offset: u64,
    /// On the leader: per follower, entries behind the leader's last.
    pub lag: BTreeMap<String, u64>,
    /// On the leader: the replicas holding every committed entry (itself
    /// included).
    pub in_sync: Vec<String>,
    /// On the leader: milliseconds since a majority last answered it.
    pub quorum_ack_ms: Option<u64>,
    /// The group stopped on a fatal error (storage failed): why. The
    /// partition's replica on this node serves nothing until a restart.
    #[serde(default)]
    pub failed: Option<String>,
    /// The leader's address, when this replica knows it.
    #[serde(default)]
    pub leader_addr: Option<String>,
    /// Every member of the group as this replica knows it (voters and
    /// learners), and whether that membership is committed.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub members_committed: bool,
    /// The Raft index of that membership.
    #[serde(default)]
    pub members_index: Option<u64>,
}

impl Replicas {
    /// What this node knows of every partition.
    pub fn view(&self) -> Vec<PartitionView> {
        let name = |id: &NodeId| self.topo.name(*id);
        let groups = read(&self.groups).clone();
        groups
            .iter()
            .enumerate()
            .map(|(p, g)| {
                let p = p as u32;
                let replicas = self.replicas_of(p).into_iter().map(|r| r.name).collect();
                let Some(g) = g.as_ref() else {
                    return PartitionView {
                        partition: p,
                        replicas,
                        leader: None,
                        term: 0,
                        role: "none".into(),
                        last_index: None,
                        committed_index: None,
                        committed_offset: 0,
                        lag: BTreeMap::new(),
                        in_sync: Vec::new(),
                        quorum_ack_ms: None,
                        failed: None,
                        leader_addr: None,
                        members: Vec::new(),
                        members_committed: false,
                        members_index: None,
                    };
                };
                let m = g.raft.metrics().borrow().clone();
                let c = *g.committed.borrow();
                let last = m.last_log_index.unwrap_or(0);
                let matched: Vec<(NodeId, u64)> = m
                    .replication
                    .as_ref()
                    .map(|r| {
                        r.iter()
                            .map(|(id, matched)| (*id, matched.map_or(0, |l| l.index)))
                            .collect()
                    })
                    .unwrap_or_default();
                let lag = matched
                    .iter()
                    .filter(|(id, _)| *id != self.me)
                    .map(|(id, i)| (name(id), last.saturating_sub(*i)))
                    .collect();
                let committed = c.index.unwrap_or(0);
                let membership = m.membership_config.membership();
                let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
                let in_sync = matched
                    .iter()
                    .filter(|(id, i)| voters.contains(id) && (*id == self.me || *i >= committed))
                    .map(|(id, _)| name(id))
                    .collect();
                PartitionView {
                    partition: p,
                    replicas,
                    leader: m.current_leader.as_ref().map(name),
                    term: m.current_term,
                    role: match m.state {
                        ServerState::Leader => "leader",
                        ServerState::Follower => "follower",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Shutdown => "stopped",
                    }
                    .into(),
                    last_index: m.last_log_index,
                    committed_index: c.index,
                    committed_offset: c.next_offset,
                    lag,
                    in_sync,
                    quorum_ack_ms: m.millis_since_quorum_ack,
                    failed: m.running_state.as_ref().err().map(|e| e.to_string()),
                    leader_addr: m
                        .current_leader
                        .and_then(|id| membership.get_node(&id).map(|n| n.addr.clone())),
                    members: membership.nodes().map(|(id, _)| name(id)).collect(),
                    members_committed: m.membership_config.log_id().map(|l| l.index) <= c.index,
                    members_index: m.membership_config.log_id().map(|l| l.index),
                }
            })
            .collect()
    }

    /// What this node tells a peer asking for the cluster's state.
    pub fn local_view(&self) -> NodeReport {
        NodeReport {
            node: self.cfg.node.clone(),
            role: self.cfg.role.clone(),
            partitions: self.view(),
        }
    }

    /// The cluster as every reachable replica reports it: each partition
    /// as its leader (of the highest term) sees it.
    pub async fn cluster_view(&self) -> ClusterView {
        let target = self.topo.nodes();
        let mut everyone = target.clone();
        for k in self.topo.known() {
            if !everyone.iter().any(|t| t.name == k.name) {
                everyone.push(k);
            }
        }
        let asks = everyone.iter().map(|p| async move {
            if p.name == self.cfg.node {
                return (p.clone(), Some(self.local_view()));
            }
            let r: Result<NodeReport, _> = self
                .transport
                .get_view(&p.addr, Duration::from_secs(2))
                .await;
            (p.clone(), r.ok())
        });
        let reports = futures_util::future::join_all(asks).await;
        let mut nodes = Vec::new();
        let mut best: BTreeMap<u32, PartitionView> = BTreeMap::new();
        // Nodes outside the node set are listed while they hold replicas.
        let holding = |name: &str| {
            reports.iter().flat_map(|(_, r)| r.iter()).any(|r| {
                r.partitions
                    .iter()
                    .any(|v| v.replicas.iter().any(|n| n == name))
            })
        };
        for (peer, report) in &reports {
            if !target.iter().any(|t| t.name == peer.name) && !holding(&peer.name) {
                continue;
            }
            nodes.push(NodeSummary {
                id: peer.name.clone(),
                addr: peer.addr.clone(),
                role: report
                    .as_ref()
                    .map_or_else(|| "unknown".into(), |r| r.role.clone()),
                alive: report.is_some(),
            });
            let Some(r) = report else { continue };
            for v in &r.partitions {
                let leads = v.role == "leader";
                let better = match best.get(&v.partition) {
                    None => true,
                    Some(b) => match (leads, b.role == "leader") {
                        (true, false) => true,
                        (false, true) => false,
                        _ => v.term > b.term,
                    },
                };
                if better && v.role != "none" {
                    best.insert(v.partition, v.clone());
                }
            }
        }
        let partitions = (0..self.log.partitions())
            .map(|p| {
                let replicas: Vec<String> =
                    self.replicas_of(p).into_iter().map(|r| r.name).collect();
                match best.remove(&p) {
                    Some(v) => PartitionSummary {
                        partition: p,
                        leader: if v.role == "leader" {
                            Some(v.leader.clone().unwrap_or_default())
                        } else {
                            v.leader.clone()
                        },
                        term: v.term,
                        replicas: match v.replicas.is_empty() {
                            true => replicas,
                            false => v.replicas,
                        },
                        in_sync: v.in_sync,
                        committed: v.committed_offset,
                    },
                    None => PartitionSummary {
                        partition: p,
                        leader: None,
                        term: 0,
                        replicas,
                        in_sync: Vec::new(),
                        committed: 0,
                    },
                }
            })
            .collect();
        ClusterView {
            node: self.cfg.node.clone(),
            nodes,
            partitions,
        }
    }
}

/// Every second: per partition held, whether this node leads it, its term,
/// each follower's lag (on the leader), leader changes seen, and how many
/// partitions led here have a replica out of sync.
pub(crate) async fn metrics_loop(r: std::sync::Weak<Replicas>) {
    let mut last_leader: BTreeMap<u32, Option<String>> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(r) = r.upgrade() else { return };
        let mut under = 0u64;
        for v in r.view() {
            if v.role == "none" {
                continue;
            }
            let p = v.partition.to_string();
            let leading = v.role == "leader";
            metrics::gauge!("herald_raft_leader", "partition" => p.clone()).set(if leading {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("herald_raft_term", "partition" => p.clone()).set(v.term as f64);
            let prev = last_leader.insert(v.partition, v.leader.clone());
            if prev.is_some_and(|prev| prev != v.leader) {
                metrics::counter!("herald_raft_leader_changes_total", "partition" => p.clone())
                    .increment(1);
            }
            if leading {
                for (follower, lag) in &v.lag {
                    metrics::gauge!("herald_raft_replication_lag_entries", "partition" => p.clone(), "follower" => follower.clone())
                        .set(*lag as f64);
                }
                if v.in_sync.len() < v.replicas.len() {
                    under += 1;
                }
            }
        }
        metrics::gauge!("herald_raft_under_replicated_partitions").set(under as f64);
    }
}
