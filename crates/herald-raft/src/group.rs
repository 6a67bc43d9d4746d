//! A node's replicas: for every partition whose replica set holds this
//! node, one Raft group with its store, state machine and proposer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_log::Log;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::machine::{Committed, Machine};
use crate::net::{Network, SnapshotMsg, Transport};
use crate::propose::{Pending, QUEUE};
use crate::store::PartitionStore;
use crate::types::{node_id, NodeId, Raft};

/// A member of the cluster's replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The node's name (`server.node_id`); its Raft id is a hash of it.
    pub name: String,
    /// `host:port` of its HTTP listener.
    pub addr: String,
}

/// How this node's replicas run.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's name; must be one of `peers`.
    pub node: String,
    /// Every ingest node of the cluster (this one too).
    pub peers: Vec<PeerAddr>,
    /// Replicas per partition (at most `peers.len()`).
    pub factor: usize,
    pub cluster_key: String,
    pub heartbeat: Duration,
    /// Elections start after a random wait in `[election, 2 * election)`.
    pub election: Duration,
    /// A proposal not committed in this long fails (not enough replicas).
    pub commit_timeout: Duration,
    /// This node's `server.role` (reported in the cluster view).
    pub role: String,
}

impl ReplicaConfig {
    /// Checks the settings; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.factor == 0 || self.factor > self.peers.len() {
            return Err(format!(
                "log.replication_factor = {} needs between 1 and {} ingest peers (server.peers)",
                self.factor,
                self.peers.len()
            ));
        }
        if !self.peers.iter().any(|p| p.name == self.node) {
            return Err(format!(
                "server.peers does not name this node ({})",
                self.node
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.peers {
            if !ids.insert(node_id(&p.name)) {
                return Err(format!("server.peers names {} twice", p.name));
            }
        }
        if self.heartbeat.is_zero() || self.election < self.heartbeat * 3 {
            return Err("the election timeout must be at least three heartbeats".into());
        }
        Ok(())
    }

    /// The replica set of `partition`: `factor` peers chosen by rendezvous
    /// hashing (stable when peers are added or removed elsewhere).
    pub fn replica_set(&self, partition: u32) -> Vec<NodeId> {
        let mut scored: Vec<(u64, NodeId)> = self
            .peers
            .iter()
            .map(|p| {
                let id = node_id(&p.name);
                (node_id(&format!("{}/{partition}", p.name)), id)
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        let mut set: Vec<NodeId> = scored.into_iter().take(self.factor).map(|s| s.1).collect();
        set.sort_unstable();
        set
    }

    /// The replica that should lead `partition` when all are up: the
    /// partitions go round the replica set, so each node leads a share.
    pub fn preferred_leader(&self, partition: u32) -> NodeId {
        let set = self.replica_set(partition);
        set[partition as usize % set.len().max(1)]
    }
}

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this node does not lead partition {partition}")]
    NotLeader {
        partition: u32,
        /// The leader's name and address, when known.
        leader: Option<PeerAddr>,
    },
    #[error("partition {partition} did not reach a majority of its replicas in {waited:?}")]
    NotEnoughReplicas { partition: u32, waited: Duration },
    #[error("partition {partition}: {why}")]
    Failed { partition: u32, why: String },
    #[error("unknown partition {0}")]
    UnknownPartition(u32),
}

pub(crate) struct Group {
    pub(crate) raft: Raft,
    /// Set while leadership is being handed to the preferred replica.
    handing_over: Arc<std::sync::atomic::AtomicBool>,
    /// This replica is empty and waits to be refilled: it grants no vote.
    refilling: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) committed: watch::Receiver<Committed>,
    proposer: mpsc::Sender<Pending>,
}

/// Every replica this node holds.
pub struct Replicas {
    pub(crate) me: NodeId,
    pub(crate) transport: Transport,
    pub(crate) cfg: ReplicaConfig,
    pub(crate) peers: BTreeMap<NodeId, PeerAddr>,
    pub(crate) groups: Vec<Option<Group>>,
    /// Per partition: its replica set.
    pub(crate) sets: Vec<Vec<NodeId>>,
}

impl Replicas {
    /// Starts a Raft group for every partition of `log` whose replica set
    /// holds this node; their state files go under `dir`.
    pub async fn start(
        cfg: ReplicaConfig,
        log: Log,
        dir: PathBuf,
    ) -> Result<Arc<Replicas>, String> {
        cfg.validate()?;
        let me = node_id(&cfg.node);
        let peers: BTreeMap<NodeId, PeerAddr> = cfg
            .peers
            .iter()
            .map(|p| (node_id(&p.name), p.clone()))
            .collect();
        let transport = Transport::new(cfg.cluster_key.clone());
        // A partition's preferred leader campaigns first (its election
        // timeout is the shorter one), so leadership starts spread over the
        // nodes; the others wait between 1.5 and 2 election timeouts.
        let election = cfg.election.as_millis() as u64;
        let raft_cfg = |preferred: bool| {
            let (min, max) = if preferred {
                (election, election + election / 4)
            } else {
                (election + election / 2, election * 2)
            };
            openraft::Config {
                cluster_name: "herald".into(),
                heartbeat_interval: cfg.heartbeat.as_millis() as u64,
                election_timeout_min: min,
                election_timeout_max: max,
                // Snapshots are built by the retention loop at the start it
                // chooses, and Raft forgets only what retention removed.
                snapshot_policy: openraft::SnapshotPolicy::Never,
                max_in_snapshot_log_to_keep: u64::MAX,
                max_payload_entries: 256,
                ..Default::default()
            }
            .validate()
            .map(Arc::new)
            .map_err(|e| format!("raft settings: {e}"))
        };
        let mut groups = Vec::new();
        let mut sets = Vec::new();
        for p in 0..log.partitions() {
            let set = cfg.replica_set(p);
            sets.push(set.clone());
            if !set.contains(&me) {
                groups.push(None);
                continue;
            }
            let pdir = dir.join(format!("p-{p:05}"));
            std::fs::create_dir_all(&pdir).map_err(|e| format!("{}: {e}", pdir.display()))?;
            let start =
                crate::machine::load_start(&pdir).map_err(|e| format!("partition {p}: {e}"))?;
            let (l, d, s) = (
                log.clone(),
                pdir.clone(),
                start
                    .as_ref()
                    .and_then(|s| s.last().map(|id| (id, s.next_offset))),
            );
            let store = tokio::task::spawn_blocking(move || PartitionStore::open(l, p, d, s))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("partition {p}: {e}"))?;
            let machine = Machine::open(pdir, store.last_log_id(), start);
            let (start_cell, want_cell) = machine.cells();
            let retain_store = store.clone();
            let committed = machine.committed();
            let net = Network {
                transport: transport.clone(),
                partition: p,
            };
            let raft = Raft::new(
                me,
                raft_cfg(cfg.preferred_leader(p) == me)?,
                net,
                store,
                machine,
            )
            .await
            .map_err(|e| format!("partition {p}: {e}"))?;
            let refilling = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(crate::init::form(
                raft.clone(),
                transport.clone(),
                crate::init::Formation {
                    partition: p,
                    me: cfg.node.clone(),
                    members: set
                        .iter()
                        .filter_map(|id| peers.get(id).map(|pa| (*id, pa.clone())))
                        .collect(),
                    preferred: cfg.preferred_leader(p),
                    refilling: refilling.clone(),
                },
            ));
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(crate::propose::propose_loop(p, raft.clone(), rx));
            tokio::spawn(crate::retain::retain_loop(crate::retain::Retain {
                partition: p,
                raft: raft.clone(),
                store: retain_store,
                log: log.clone(),
                start: start_cell,
                want: want_cell,
                seen_start: None,
            }));
            let handing_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(crate::balance::balance_loop(crate::balance::Balance {
                partition: p,
                me,
                preferred: cfg.preferred_leader(p),
                raft: raft.clone(),
                election: cfg.election,
                handing_over: handing_over.clone(),
            }));
            groups.push(Some(Group {
                raft,
                handing_over,
                refilling,
                committed,
                proposer: tx,
            }));
        }
        tracing::info!(
            node = %cfg.node,
            replicas = groups.iter().filter(|g| g.is_some()).count(),
            factor = cfg.factor,
            "replicated partitions started"
        );
        let r = Arc::new(Replicas {
            me,
            transport,
            cfg,
            peers,
            groups,
            sets,
        });
        tokio::spawn(crate::view::metrics_loop(Arc::downgrade(&r)));
        Ok(r)
    }

    fn group(&self, partition: u32) -> Result<Option<&Group>, ReplicaError> {
        self.groups
            .get(partition as usize)
            .map(Option::as_ref)
            .ok_or(ReplicaError::UnknownPartition(partition))
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Whether this node holds a replica of `partition`.
    pub fn holds(&self, partition: u32) -> bool {
        matches!(self.group(partition), Ok(Some(_)))
    }

    /// The replica set of `partition`, by name.
    pub fn replicas_of(&self, partition: u32) -> Vec<PeerAddr> {
        self.sets
            .get(partition as usize)
            .map(|s| {
                s.iter()
                    .filter_map(|id| self.peers.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The replica that should lead `partition` when all are up (leadership
    /// goes back to it after a failover).
    pub fn preferred(&self, partition: u32) -> Option<PeerAddr> {
        self.sets.get(partition as usize)?;
        self.peers
            .get(&self.cfg.preferred_leader(partition))
            .cloned()
    }

    /// The leader of `partition` as this node knows it.
    pub fn leader(&self, partition: u32) -> Option<PeerAddr> {
        let g = self.group(partition).ok()??;
        let id = g.raft.metrics().borrow().current_leader?;
        self.peers.get(&id).cloned()
    }

    /// Whether this node leads `partition` now, and in which term.
    pub fn leading(&self, partition: u32) -> Option<u64> {
        let g = self.group(partition).ok()??;
        let m = g.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.me))
            .then_some(m.current_term)
    }

    /// The Raft index of the last entry this replica's group no longer
    /// holds (retention removed it; followers further behind are sent the
    /// start instead), if any.
    pub fn purged(&self, partition: u32) -> Option<u64> {
        let g = self.group(partition).ok()??;
        let m = g.raft.metrics();
        let purged = m.borrow().purged;
        purged.map(|l| l.index)
    }

    /// Whether this replica of `partition` is empty and waits for its
    /// leader to refill it (it grants no vote meanwhile).
    pub fn refilling(&self, partition: u32) -> bool {
        matches!(self.group(partition), Ok(Some(g)) if g.refilling.load(std::sync::atomic::Ordering::Acquire))
    }

    /// A receiver of `partition`'s committed position (on a replica).
    pub fn committed(&self, partition: u32) -> Option<watch::Receiver<Committed>> {
        Some(self.group(partition).ok()??.committed.clone())
    }

    /// Appends `records` to `partition` through its Raft group: the offset
    /// of the first once a majority of its replicas hold them durably.
    pub async fn propose(&self, partition: u32, records: Vec<Bytes>) -> Result<u64, ReplicaError> {
        let Some(g) = self.group(partition)? else {
            return Err(ReplicaError::NotLeader {
                partition,
                leader: None,
            });
        };
        if self.leading(partition).is_none() {
            return Err(ReplicaError::NotLeader {
                partition,
                leader: self.leader(partition),
            });
        }
        if g.handing_over.load(std::sync::atomic::Ordering::Acquire) {
            // Leadership is moving; the new leader is not known yet.
            return Err(ReplicaError::NotLeader {
                partition,
                leader: None,
            });
        }
        let (reply, rx) = oneshot::channel();
        let wait = self.cfg.commit_timeout;
        let t0 = std::time::Instant::now();
        let run = async {
            g.proposer
                .send(Pending { records, reply })
                .await
                .map_err(|_| ReplicaError::Failed {
                    partition,
                    why: "the replica stopped".into(),
                })?;
            rx.await.map_err(|_| ReplicaError::Failed {
                partition,
                why: "the replica stopped".into(),
            })?
        };
        let r = tokio::time::timeout(wait, run).await;
        if matches!(r, Ok(Ok(_))) {
            metrics::histogram!("herald_raft_commit_seconds").record(t0.elapsed().as_secs_f64());
        }
        match r {
            Ok(Err(ReplicaError::NotLeader { .. })) => Err(ReplicaError::NotLeader {
                partition,
                leader: self.leader(partition),
            }),
            Ok(r) => r,
            Err(_) => {
                metrics::counter!("herald_raft_not_enough_replicas_total").increment(1);
                Err(ReplicaError::NotEnoughReplicas {
                    partition,
                    waited: wait,
                })
            }
        }
    }

    /// Serves a Raft message from a peer (`op`: append, vote, snapshot);
    /// the MessagePack answer.
    pub async fn serve(&self, partition: u32, op: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        if op == "view" {
            return rmp_serde::to_vec_named(&self.local_view()).map_err(|e| e.to_string());
        }
        let g = self
            .group(partition)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("this node holds no replica of partition {partition}"))?;
        let bad = |e: rmp_serde::decode::Error| format!("undecodable {op} message: {e}");
        let enc = |r: Result<Vec<u8>, rmp_serde::encode::Error>| r.map_err(|e| e.to_string());
        match op {
            "append" => {
                let req = rmp_serde::from_slice(body).map_err(bad)?;
                enc(rmp_serde::to_vec_named(&g.raft.append_entries(req).await))
            }
            "vote" => {
                let req: openraft::raft::VoteRequest<NodeId> =
                    rmp_serde::from_slice(body).map_err(bad)?;
                // A vote for nobody while empty and waiting for the leader.
                if g.refilling.load(std::sync::atomic::Ordering::Acquire) {
                    // Refused with this replica's own (lower) vote: the
                    // candidate counts it as a refusal and goes on.
                    metrics::counter!("herald_raft_votes_withheld_total").increment(1);
                    let vote = g.raft.metrics().borrow().vote;
                    let no = openraft::raft::VoteResponse::new(vote, None, false);
                    let r: Result<_, openraft::error::RaftError<NodeId>> = Ok(no);
                    return enc(rmp_serde::to_vec_named(&r));
                }
                enc(rmp_serde::to_vec_named(&g.raft.vote(req).await))
            }
            "snapshot" => {
                let m: SnapshotMsg = rmp_serde::from_slice(body).map_err(bad)?;
                let snap = openraft::Snapshot {
                    meta: m.meta,
                    snapshot: Box::new(m.data),
                };
                enc(rmp_serde::to_vec_named(
                    &g.raft.install_full_snapshot(m.vote, snap).await,
                ))
            }
            other => Err(format!("unknown raft message {other}")),
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        for g in self.groups.iter().flatten() {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(error = %e, "raft group did not stop cleanly");
            }
        }
    }
}
