//! A node's replicas: for every partition whose replica set holds this
//! node, one Raft group with its store, state machine and proposer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use herald_log::Log;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::machine::{Committed, StartCell};
use crate::net::{SnapshotMsg, Transport};
use crate::open::has_state;
use crate::propose::Pending;
use crate::topology::Topology;
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
    /// This node's name. A node not among `peers` holds no replica until
    /// the node set names it.
    pub node: String,
    /// The cluster's ingest nodes as this node starts (the node set; it
    /// changes with [`Replicas::set_nodes`]).
    pub peers: Vec<PeerAddr>,
    /// The node set's epoch: 1 for the set the cluster was made with
    /// (groups are formed only then), higher after each change.
    pub epoch: u64,
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

/// Checks a node set for a replication factor; the error names what is
/// wrong.
pub fn check_nodes(nodes: &[PeerAddr], factor: usize) -> Result<(), String> {
    if factor == 0 || factor > nodes.len() {
        return Err(format!(
            "log.replication_factor = {factor} needs between 1 and {} ingest nodes",
            nodes.len()
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for p in nodes {
        if !ids.insert(node_id(&p.name)) {
            return Err(format!("the node set names {} twice", p.name));
        }
    }
    Ok(())
}

impl ReplicaConfig {
    /// Checks the settings; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_nodes(&self.peers, self.factor)?;
        if self.heartbeat.is_zero() || self.election < self.heartbeat * 3 {
            return Err("the election timeout must be at least three heartbeats".into());
        }
        Ok(())
    }

    /// The replica set of `partition` over `peers`: `factor` peers chosen
    /// by rendezvous hashing (stable when peers are added or removed
    /// elsewhere).
    pub fn replica_set(&self, partition: u32) -> Vec<NodeId> {
        crate::topology::placement(&self.peers, self.factor, partition)
    }

    /// The replica that should lead `partition` when all are up.
    pub fn preferred_leader(&self, partition: u32) -> NodeId {
        crate::topology::preferred(&self.replica_set(partition), partition).unwrap_or(0)
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
    pub(crate) handing_over: Arc<AtomicBool>,
    /// This replica is empty and waits to be refilled: it grants no vote.
    pub(crate) refilling: Arc<AtomicBool>,
    pub(crate) committed: watch::Receiver<Committed>,
    pub(crate) proposer: mpsc::Sender<Pending>,
    /// Set once the group removed this replica (it is being closed).
    pub(crate) leaving: Arc<AtomicBool>,
    /// Set while this leader changes the group's membership.
    pub(crate) changing: Arc<AtomicBool>,
    pub(crate) start: StartCell,
    /// Ends the group's loops.
    pub(crate) stop: watch::Sender<bool>,
}

/// A partition this node holds no replica of, as its leader reports it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    pub leader: Option<PeerAddr>,
    pub term: u64,
    pub replicas: Vec<String>,
}

/// Every replica this node holds.
pub struct Replicas {
    pub(crate) me: NodeId,
    pub(crate) transport: Transport,
    pub(crate) cfg: ReplicaConfig,
    pub(crate) topo: Arc<Topology>,
    pub(crate) log: Log,
    pub(crate) dir: PathBuf,
    pub(crate) groups: RwLock<Vec<Option<Arc<Group>>>>,
    /// Per partition: where it is led, from the peers' views (kept by the
    /// membership loop; used for partitions without a replica here).
    pub(crate) routes: RwLock<Vec<Route>>,
    /// One membership step at a time on this node (opening or closing a
    /// replica).
    pub(crate) stepping: tokio::sync::Mutex<()>,
    /// Held while a leader decides to add learners (`members.rs`).
    pub(crate) moves: tokio::sync::Mutex<()>,
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Replicas {
    /// Starts a Raft group for every partition of `log` whose replica set
    /// holds this node, or whose replica this node holds from before (its
    /// group decides whether it still is one); their state files go under
    /// `dir`. A loop then follows the node set: replicas are added and
    /// removed as it changes (`members.rs`).
    pub async fn start(
        cfg: ReplicaConfig,
        log: Log,
        dir: PathBuf,
    ) -> Result<Arc<Replicas>, String> {
        cfg.validate()?;
        let me = node_id(&cfg.node);
        let topo = Arc::new(Topology::new(cfg.factor, cfg.epoch, cfg.peers.clone()));
        let partitions = log.partitions();
        let r = Arc::new(Replicas {
            me,
            transport: Transport::new(cfg.cluster_key.clone()),
            topo,
            log,
            dir,
            groups: RwLock::new((0..partitions).map(|_| None).collect()),
            routes: RwLock::new(vec![Route::default(); partitions as usize]),
            stepping: tokio::sync::Mutex::new(()),
            moves: tokio::sync::Mutex::new(()),
            cfg,
        });
        let mut held = 0;
        for p in 0..partitions {
            let placed = r.topo.placement(p).contains(&me);
            if !placed && !has_state(&r.dir, p) {
                crate::members::hold_given_up(&r, p);
                continue;
            }
            // Formed only by the set the cluster was made with.
            let g = r.open_group(p, r.cfg.epoch <= 1).await?;
            write(&r.groups)[p as usize] = Some(Arc::new(g));
            held += 1;
        }
        if !r.topo.nodes().iter().any(|p| p.name == r.cfg.node) {
            tracing::warn!(
                node = %r.cfg.node,
                "this node is not in the cluster's node set: it holds no replica until it is added (herald cluster add)"
            );
        }
        tracing::info!(
            node = %r.cfg.node,
            replicas = held,
            factor = r.cfg.factor,
            epoch = r.cfg.epoch,
            "replicated partitions started"
        );
        tokio::spawn(crate::view::metrics_loop(Arc::downgrade(&r)));
        tokio::spawn(crate::members::members_loop(Arc::downgrade(&r)));
        Ok(r)
    }

    pub(crate) fn group(&self, partition: u32) -> Result<Option<Arc<Group>>, ReplicaError> {
        read(&self.groups)
            .get(partition as usize)
            .cloned()
            .ok_or(ReplicaError::UnknownPartition(partition))
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Whether this node holds a replica of `partition` now (replicas come
    /// and go with the node set).
    pub fn holds(&self, partition: u32) -> bool {
        matches!(self.group(partition), Ok(Some(_)))
    }

    /// The replicas of `partition` (its group's voters), by name: as this
    /// node's replica knows them, else as the partition's leader reported.
    pub fn replicas_of(&self, partition: u32) -> Vec<PeerAddr> {
        if let Ok(Some(g)) = self.group(partition) {
            let m = g.raft.metrics().borrow().membership_config.clone();
            let voters: Vec<PeerAddr> = m
                .membership()
                .voter_ids()
                .map(|id| self.peer_of(id, m.membership().get_node(&id)))
                .collect();
            if !voters.is_empty() {
                return voters;
            }
        }
        let routed = read(&self.routes)
            .get(partition as usize)
            .map(|r| r.replicas.clone())
            .unwrap_or_default();
        if !routed.is_empty() {
            return routed
                .iter()
                .map(|n| {
                    self.topo.peer(node_id(n)).unwrap_or_else(|| PeerAddr {
                        name: n.clone(),
                        addr: String::new(),
                    })
                })
                .collect();
        }
        self.topo
            .placement(partition)
            .into_iter()
            .filter_map(|id| self.topo.peer(id))
            .collect()
    }

    /// A member's name and address: from the node set, else from the
    /// group's membership (its address only).
    fn peer_of(&self, id: NodeId, node: Option<&openraft::BasicNode>) -> PeerAddr {
        self.topo.peer(id).unwrap_or_else(|| PeerAddr {
            name: id.to_string(),
            addr: node.map(|n| n.addr.clone()).unwrap_or_default(),
        })
    }

    /// The replica that should lead `partition` when all are up (leadership
    /// goes back to it after a failover).
    pub fn preferred(&self, partition: u32) -> Option<PeerAddr> {
        self.topo
            .preferred(partition)
            .and_then(|id| self.topo.peer(id))
    }

    /// The leader of `partition` as this node knows it (from its replica,
    /// else from the leader's own report).
    pub fn leader(&self, partition: u32) -> Option<PeerAddr> {
        // A replica being closed (its group removed it) hears of no new
        // leader: the leaders' reports say.
        if let Ok(Some(g)) = self
            .group(partition)
            .map(|g| g.filter(|g| !g.leaving.load(Ordering::Acquire)))
        {
            // Read in place: this is asked per part of every request.
            let metrics = g.raft.metrics();
            let m = metrics.borrow();
            // (A leader that stepped down names itself a while.)
            let stale = |id: &NodeId| *id == self.me && m.state != ServerState::Leader;
            if let Some(id) = m.current_leader.filter(|id| !stale(id)) {
                return Some(self.peer_of(id, m.membership_config.membership().get_node(&id)));
            }
            // No leader known here yet: none (an election is under way).
            m.current_leader?;
        }
        read(&self.routes)
            .get(partition as usize)
            .and_then(|r| r.leader.clone())
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
        matches!(self.group(partition), Ok(Some(g)) if g.refilling.load(Ordering::Acquire))
    }

    /// The node set this node works towards: its epoch and nodes.
    pub fn nodes(&self) -> (u64, Vec<PeerAddr>) {
        (self.topo.epoch(), self.topo.nodes())
    }

    /// Takes a newer node set (a higher `epoch`): replicas move to where
    /// it places them (the partitions' leaders add and remove members).
    /// False when `epoch` is not newer; an error when the set cannot hold
    /// the replication factor (nothing changes).
    pub fn set_nodes(&self, epoch: u64, nodes: Vec<PeerAddr>) -> Result<bool, String> {
        check_nodes(&nodes, self.cfg.factor)?;
        let changed = self.topo.set(epoch, nodes);
        if changed {
            tracing::info!(epoch, nodes = ?self.topo.nodes().iter().map(|p| &p.name).collect::<Vec<_>>(), "the cluster's node set changed");
        }
        Ok(changed)
    }

    /// The replication factor.
    pub fn factor(&self) -> usize {
        self.cfg.factor
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
        if g.handing_over.load(Ordering::Acquire) || g.leaving.load(Ordering::Acquire) {
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
        let g = &g;
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
                if g.refilling.load(Ordering::Acquire) {
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
            "elect" => {
                let _ = g.raft.trigger().elect().await;
                enc(rmp_serde::to_vec_named(&true))
            }
            "pause" => {
                let ms: u64 = rmp_serde::from_slice(body).map_err(bad)?;
                crate::balance::pause(&g.raft, std::time::Duration::from_millis(ms.min(60_000)));
                enc(rmp_serde::to_vec_named(&true))
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
        let _step = self.stepping.lock().await;
        let groups: Vec<(u32, Arc<Group>)> = read(&self.groups)
            .iter()
            .enumerate()
            .filter_map(|(p, g)| g.clone().map(|g| (p as u32, g)))
            .collect();
        for (p, g) in groups {
            self.close_group(p, &g, false).await;
        }
    }
}
