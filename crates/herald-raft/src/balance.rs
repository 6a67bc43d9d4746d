//! Leadership goes back to a partition's preferred replica.
//!
//! After a failover the new leader keeps its partitions, so a node that
//! comes back leads nothing and one node can end up leading most of the
//! cluster (half the throughput, `docs/BENCHMARKS.md`). A leader that is
//! not its partition's preferred replica, and has led for a while, hands
//! the partition over once the preferred replica holds every entry: it
//! stops taking proposals and stops its Raft timers (no heartbeats), so
//! the followers' leader leases run out and the preferred replica, whose
//! election timeout is the shorter one, is elected first. Proposals made
//! meanwhile are sent on (not leader); the pause is about one election
//! timeout. If no one has taken over after a few election timeouts, the
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
}

pub(crate) async fn balance_loop(b: Balance) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut led: Option<(u64, Instant)> = None;
    let mut tried = Instant::now() - COOLDOWN;
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
        let since = match led {
            Some((term, at)) if term == m.current_term => at,
            _ => {
                led = Some((m.current_term, Instant::now()));
                continue;
            }
        };
        if since.elapsed() < SETTLED || tried.elapsed() < COOLDOWN {
            continue;
        }
        let Some(preferred) = b.topo.preferred(b.partition).filter(|p| *p != b.me) else {
            continue;
        };
        // Only in a settled membership (no change under way).
        let membership = m.membership_config.membership();
        let voter = membership.get_joint_config().len() == 1
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
        b.hand_over(m.current_term, preferred).await;
    }
}

impl Balance {
    async fn hand_over(&self, term: u64, to: NodeId) {
        tracing::info!(
            partition = self.partition,
            term,
            to = %self.topo.name(to),
            "handing leadership back to the partition's preferred replica"
        );
        self.handing_over.store(true, Ordering::Release);
        self.raft.runtime_config().tick(false);
        let mut metrics = self.raft.metrics();
        let gave = tokio::time::timeout(self.election * 4, async {
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
        self.raft.runtime_config().tick(true);
        self.handing_over.store(false, Ordering::Release);
        if gave {
            metrics::counter!("herald_raft_leadership_handovers_total").increment(1);
        } else {
            tracing::info!(
                partition = self.partition,
                "no replica took the leadership over; carrying on"
            );
        }
    }
}
