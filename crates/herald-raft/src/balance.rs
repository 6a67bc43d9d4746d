//! Leadership goes back to a partition's preferred replica.
//!
//! After a failover the new leader keeps its partitions, so a node that
//! comes back leads nothing and one node can end up leading most of the
//! cluster (half the throughput, `docs/BENCHMARKS.md`). A leader that is
//! not its partition's preferred replica, and has led for a while, hands
//! the partition over once the preferred replica holds every entry: it
//! stops taking proposals and stops its Raft timers (no heartbeats), so
//! the followers' leader leases run out and the preferred replica, whose
//! election timeout is the shorter one, is elected first: the leader also
//! asks the other followers to start no election meanwhile (their leader
//! lease outlasts their own election timer, so one of them would
//! otherwise win the race under load). Proposals made meanwhile are sent
//! on (not leader); the pause is about one election timeout. If no one has taken over after a few election timeouts, the
//! leader starts its timers again and carries on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::topology::Topology;
use crate::types::{NodeId, Raft};

/// How often a leader looks.
const EVERY: Duration = Duration::from_secs(1);
/// A leadership this young is not handed over (the preferred replica may
/// have just come back, or be flapping).
const SETTLED: Duration = Duration::from_secs(5);
/// Between two attempts on one partition.
const COOLDOWN: Duration = Duration::from_secs(30);

pub(crate) struct Balance {
    pub partition: u32,
    pub me: NodeId,
    /// Where the partition's replicas belong (its preferred leader may
    /// change with the node set).
    pub topo: Arc<Topology>,
    pub raft: Raft,
    pub election: Duration,
    /// Set while handing over: proposals are refused (not leader).
    pub handing_over: Arc<AtomicBool>,
    pub transport: crate::net::Transport,
}

/// Stops `raft`'s election timer for `wait`, or until it hears of a newer
/// term (a leader was elected), whichever comes first.
pub(crate) fn pause(raft: &Raft, wait: Duration) {
    let raft = raft.clone();
    let term = raft.metrics().borrow().current_term;
    raft.runtime_config().elect(false);
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let _ = tokio::time::timeout(wait, async {
            loop {
                if metrics.borrow().current_term > term {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        raft.runtime_config().elect(true);
    });
}

pub(crate) async fn balance_loop(b: Balance) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The term and membership led in, and since when: a leadership or a
    // membership this young is left alone (a replica just added is still
    // settling).
    let mut led: Option<(u64, Option<u64>, Instant)> = None;
    let mut tried = Instant::now() - COOLDOWN;
    // Doubles after each hand-over another replica won (up to 16 times).
    let mut cooldown = COOLDOWN;
    loop {
        tick.tick().await;
        let m = b.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        if m.state != ServerState::Leader {
            led = None;
            continue;
        }
        let members_at = m.membership_config.log_id().map(|l| l.index);
        let since = match led {
            Some((term, at_members, at)) if term == m.current_term && at_members == members_at => {
                at
            }
            _ => {
                led = Some((m.current_term, members_at, Instant::now()));
                continue;
            }
        };
        if since.elapsed() < SETTLED || tried.elapsed() < cooldown {
            continue;
        }
        let Some(preferred) = b.topo.preferred(b.partition).filter(|p| *p != b.me) else {
            continue;
        };
        // Only in a settled membership (no replica being added or moved).
        let membership = m.membership_config.membership();
        // Nor while the replicas are not where the node set places them
        // (a move is pending: the move hands leadership over if it must).
        let placed: std::collections::BTreeSet<NodeId> =
            b.topo.placement(b.partition).into_iter().collect();
        let voter = membership.get_joint_config().len() == 1
            && membership.nodes().count() == membership.voter_ids().count()
            && membership
                .voter_ids()
                .collect::<std::collections::BTreeSet<_>>()
                == placed
            && membership.voter_ids().any(|v| v == preferred);
        let caught_up = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&preferred).cloned().flatten())
            .is_some_and(|l| Some(l.index) == m.last_log_index);
        if !voter || !caught_up {
            continue;
        }
        tried = Instant::now();
        cooldown = match b.hand_over(m.current_term, preferred).await {
            true => COOLDOWN,
            false => (cooldown * 2).min(COOLDOWN * 16),
        };
    }
}

impl Balance {
    /// Whether `to` took the leadership over.
    pub(crate) async fn hand_over(&self, term: u64, to: NodeId) -> bool {
        tracing::info!(
            partition = self.partition,
            term,
            to = %self.topo.name(to),
            "handing the partition's leadership over"
        );
        self.handing_over.store(true, Ordering::Release);
        self.raft.runtime_config().tick(false);
        // The other followers wait: only the preferred one campaigns.
        let m = self.raft.metrics().borrow().clone();
        let others: Vec<String> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != to && *id != self.me)
            .filter_map(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
            })
            .collect();
        let hold = (self.election * 5).as_millis() as u64;
        for addr in others {
            if let Err(e) = self.transport.pause(&addr, self.partition, hold).await {
                tracing::debug!(partition = self.partition, error = %e, "a follower was not paused");
            }
        }
        // Once every follower's leader lease (at most two election
        // timeouts) ran out, the preferred replica is told to campaign:
        // its own timer may be the longer one (the node set changed since
        // its group started).
        let to_addr = m
            .membership_config
            .membership()
            .get_node(&to)
            .map(|n| n.addr.clone());
        let (transport, partition, lease) =
            (self.transport.clone(), self.partition, self.election * 2);
        let nudge = tokio::spawn(async move {
            tokio::time::sleep(lease + Duration::from_millis(50)).await;
            if let Some(addr) = to_addr {
                let _ = transport.elect(&addr, partition).await;
            }
        });
        let mut metrics = self.raft.metrics();
        let gave = tokio::time::timeout(self.election * 5, async {
            loop {
                if metrics.borrow().state != ServerState::Leader {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok();
        nudge.abort();
        self.raft.runtime_config().tick(true);
        self.handing_over.store(false, Ordering::Release);
        if !gave {
            tracing::info!(
                partition = self.partition,
                "no replica took the leadership over; carrying on"
            );
            return false;
        }
        metrics::counter!("herald_raft_leadership_handovers_total").increment(1);
        // Who won, once known (another replica may have).
        let won = tokio::time::timeout(self.election * 4, async {
            loop {
                if let Some(l) = metrics.borrow().current_leader.filter(|l| *l != self.me) {
                    return l;
                }
                if metrics.changed().await.is_err() {
                    return self.me;
                }
            }
        })
        .await;
        matches!(won, Ok(l) if l == to)
    }
}
