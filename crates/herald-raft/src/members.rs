//! Following the node set: every second each node asks its peers what
//! they hold, keeps where each partition is led (for partitions it holds
//! no replica of), opens a replica where the node set places one here,
//! and closes the replicas their group removed. A partition's leader
//! moves its replicas to where the node set places them, with Raft's own
//! membership change: it adds the new replicas as learners (they are
//! filled from its log, or from its start), and once they hold nearly
//! everything it changes the voters to the new set in one joint-consensus
//! step, which drops the replicas that are no longer placed. Appends go on
//! meanwhile; a leader that is not placed in the new set first hands the
//! partition to a replica that stays (`balance.rs`; a pause of about one
//! leader lease on that partition), and the new leader makes the change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};

use crate::group::{read, write, Group, PeerAddr, Replicas, Route};
use crate::open::{partition_dir, LEFT};
use crate::types::NodeId;
use crate::view::NodeReport;

/// How often the node set is followed.
const EVERY: Duration = Duration::from_secs(1);
/// How long a peer's answer is waited for.
const ASK_WAIT: Duration = Duration::from_millis(800);
/// Partitions one leader fills new replicas of at a time (the others wait
/// their turn), so a node added to a loaded cluster is not sent every
/// partition's log at once.
const MOVES_AT_ONCE: usize = 2;
/// A new replica within this many entries of the leader's last joins the
/// voters.
const CAUGHT_UP: u64 = 64;
/// The longest a membership change is waited for (it goes on in Raft if
/// it takes longer; the next look sees where it got).
const CHANGE_WAIT: Duration = Duration::from_secs(30);

/// A replica given up earlier (marked, not started): retention keeps only
/// what follows its start, so it can be taken back consistently.
pub(crate) fn hold_given_up(r: &Replicas, p: u32) {
    let dir = partition_dir(&r.dir, p);
    if !dir.join(LEFT).exists() {
        return;
    }
    if let Ok(Some(s)) = crate::machine::load_start(&dir) {
        let _ = r.log.hold_retention(p, s.next_offset.saturating_sub(1));
    }
}

pub(crate) async fn members_loop(r: Weak<Replicas>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(r) = r.upgrade() else { return };
        if !r.log.is_open() {
            return;
        }
        let reports = r.ask_peers().await;
        r.keep_routes(&reports);
        for p in 0..r.log.partitions() {
            r.follow(p, &reports).await;
        }
    }
}

impl Replicas {
    /// Every other node's report (those that answered).
    async fn ask_peers(&self) -> Vec<(PeerAddr, NodeReport)> {
        let mut everyone = self.topo.nodes();
        for k in self.topo.known() {
            if !everyone.iter().any(|t| t.name == k.name) {
                everyone.push(k);
            }
        }
        let asks = everyone
            .into_iter()
            .filter(|p| p.name != self.cfg.node && !p.addr.is_empty())
            .map(|p| async move {
                let r = self.transport.get_view(&p.addr, ASK_WAIT).await;
                r.ok().map(|r| (p, r))
            });
        let got: Vec<_> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        for (_, r) in &got {
            for v in &r.partitions {
                if let (Some(name), Some(addr)) = (&v.leader, &v.leader_addr) {
                    self.topo.learn(PeerAddr {
                        name: name.clone(),
                        addr: addr.clone(),
                    });
                }
            }
        }
        got
    }

    /// Where each partition is led, as its leader (of the highest term)
    /// says.
    fn keep_routes(&self, reports: &[(PeerAddr, NodeReport)]) {
        let mut routes: BTreeMap<u32, Route> = BTreeMap::new();
        for (peer, r) in reports {
            for v in r.partitions.iter().filter(|v| v.role == "leader") {
                let newer = routes.get(&v.partition).is_none_or(|b| v.term > b.term);
                if newer {
                    routes.insert(
                        v.partition,
                        Route {
                            leader: Some(peer.clone()),
                            term: v.term,
                            replicas: v.replicas.clone(),
                        },
                    );
                }
            }
        }
        let mut all = write(&self.routes);
        for (p, route) in all.iter_mut().enumerate() {
            *route = routes.remove(&(p as u32)).unwrap_or_default();
        }
    }

    /// One partition: open, close or move its replica here.
    async fn follow(self: &Arc<Self>, p: u32, reports: &[(PeerAddr, NodeReport)]) {
        let desired = self.topo.placement(p);
        let placed = desired.contains(&self.me);
        let Ok(g) = self.group(p) else { return };
        let Some(g) = g else {
            if placed {
                self.open_placed(p).await;
            }
            return;
        };
        if g.leaving.load(Ordering::Acquire) {
            return;
        }
        let m = g.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() {
            // Never joined: placed here and then not (or a wiped replica
            // of a partition that moved on). Nothing is lost by closing it.
            if !placed && self.cfg.epoch < self.topo.epoch() {
                self.give_up(p, &g, "no longer placed here before it joined")
                    .await;
            }
            return;
        }
        let me_name = &self.cfg.node;
        // Only the leader says a replica is out: a committed membership at
        // least as new as this replica's own, without it. (A replica's own
        // view may be older: a new one being filled holds the group's first
        // membership, which does not name it, until the entry that added it
        // arrives. A removed one may have missed the last step: the leader
        // stops sending to it once it is out; and alone it campaigns, so
        // its term may be ahead.) A leader that removed itself knows.
        let mine = m.membership_config.log_id().map(|l| l.index);
        let removed = reports.iter().any(|(_, r)| {
            r.partitions.iter().any(|v| {
                v.partition == p
                    && v.role == "leader"
                    && v.members_index >= mine
                    && v.members_committed
                    && !v.members.is_empty()
                    && !v.members.iter().any(|n| n == me_name)
            })
        }) || (!membership.nodes().any(|(id, _)| *id == self.me)
            && m.membership_config.log_id().map(|l| l.index) <= g.committed.borrow().index
            && m.vote.leader_id().voted_for() == Some(self.me));
        if removed {
            self.give_up(p, &g, "the partition's group removed this replica")
                .await;
            return;
        }
        if self.leading(p).is_some()
            && !g.handing_over.load(Ordering::Acquire)
            && !g.changing.swap(true, Ordering::AcqRel)
        {
            let (r, g) = (self.clone(), g.clone());
            tokio::spawn(async move {
                let done = tokio::time::timeout(CHANGE_WAIT, r.move_replicas(p, &g, desired));
                if done.await.is_err() {
                    tracing::info!(
                        partition = p,
                        "a membership change is taking long; looking again"
                    );
                }
                g.changing.store(false, Ordering::Release);
            });
        }
    }

    /// Opens a replica the node set places here (its leader adds it).
    async fn open_placed(&self, p: u32) {
        let _step = self.stepping.lock().await;
        if !matches!(self.group(p), Ok(None)) {
            return;
        }
        match self.open_group(p, false).await {
            Ok(g) => {
                tracing::info!(
                    partition = p,
                    "a replica of the partition is placed here; waiting for its leader to add it"
                );
                metrics::counter!("herald_raft_replicas_opened_total").increment(1);
                write(&self.groups)[p as usize] = Some(Arc::new(g));
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "could not open a replica placed here")
            }
        }
    }

    /// Closes this node's replica of `p` for good (its files stay, marked).
    async fn give_up(&self, p: u32, g: &Arc<Group>, why: &str) {
        let _step = self.stepping.lock().await;
        tracing::info!(
            partition = p,
            why,
            "closing this node's replica of the partition"
        );
        self.close_group(p, g, true).await;
        write(&self.groups)[p as usize] = None;
        metrics::counter!("herald_raft_replicas_closed_total").increment(1);
    }

    /// How many partitions this node leads have new replicas being filled.
    fn moving(&self) -> usize {
        read(&self.groups)
            .iter()
            .flatten()
            .filter(|g| {
                let metrics = g.raft.metrics();
                let m = metrics.borrow();
                let mem = m.membership_config.membership();
                m.state == openraft::ServerState::Leader
                    && mem.nodes().count() > mem.voter_ids().count()
            })
            .count()
    }

    /// On `p`'s leader: one step towards `desired` as its voters.
    async fn move_replicas(&self, p: u32, g: &Group, desired: Vec<NodeId>) {
        let m = g.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let nodes: BTreeSet<NodeId> = mem.nodes().map(|(id, _)| *id).collect();
        let want: BTreeSet<NodeId> = desired.into_iter().collect();
        let joint = mem.get_joint_config().len() > 1;
        let name = |ids: &BTreeSet<NodeId>| -> Vec<String> {
            ids.iter().map(|id| self.topo.name(*id)).collect()
        };
        if !joint && voters == want {
            // Learners left over (added, then the node set changed again).
            let stray: BTreeSet<NodeId> = nodes.difference(&want).copied().collect();
            if !stray.is_empty() {
                tracing::info!(partition = p, learners = ?name(&stray), "removing replicas no longer placed");
                if let Err(e) = g
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(stray), false)
                    .await
                {
                    tracing::warn!(partition = p, error = %e, "could not remove learners");
                }
            }
            return;
        }
        let missing: BTreeSet<NodeId> = want.difference(&nodes).copied().collect();
        if !missing.is_empty() {
            // Decided one partition at a time, so each sees the learners
            // the others just added.
            let _one = self.moves.lock().await;
            let filling = nodes.len() > voters.len();
            if !filling && self.moving() >= MOVES_AT_ONCE {
                return;
            }
            for id in missing {
                let Some(peer) = self.topo.peer(id) else {
                    continue;
                };
                tracing::info!(partition = p, replica = %peer.name, "adding a replica (learner; filled from the leader)");
                if let Err(e) = g
                    .raft
                    .add_learner(id, BasicNode::new(&peer.addr), false)
                    .await
                {
                    tracing::warn!(partition = p, replica = %peer.name, error = %e, "could not add a replica");
                    return;
                }
                metrics::counter!("herald_raft_membership_changes_total", "step" => "learner_added")
                    .increment(1);
            }
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = |id: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .is_some_and(|l| l.index + CAUGHT_UP >= last)
        };
        if !want.iter().filter(|id| !voters.contains(id)).all(caught_up) {
            return;
        }
        if !want.contains(&self.me) && !joint {
            // This leader is to go: it hands the partition to a replica that
            // stays first (a pause of about one leader lease), rather than
            // leaving the group leaderless until the others' leases run out
            // and they elect one. The new leader makes the change.
            let stays = |id: &NodeId| {
                voters.contains(id)
                    && m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .is_some_and(|l| Some(l.index) == m.last_log_index)
            };
            let to = self
                .topo
                .preferred(p)
                .filter(stays)
                .or_else(|| want.iter().copied().find(stays));
            if let Some(to) = to {
                let b = crate::balance::Balance {
                    partition: p,
                    me: self.me,
                    topo: self.topo.clone(),
                    raft: g.raft.clone(),
                    election: self.cfg.election,
                    handing_over: g.handing_over.clone(),
                    transport: self.transport.clone(),
                };
                b.hand_over(m.current_term, to).await;
                return;
            }
        }
        tracing::info!(
            partition = p,
            from = ?name(&voters),
            to = ?name(&want),
            "changing the partition's replicas (joint consensus)"
        );
        match g
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(want), false)
            .await
        {
            Ok(_) => {
                metrics::counter!("herald_raft_membership_changes_total", "step" => "voters_changed")
                    .increment(1);
                tracing::info!(partition = p, "the partition's replicas changed");
            }
            Err(e) => tracing::warn!(partition = p, error = %e, "membership change failed"),
        }
    }
}
