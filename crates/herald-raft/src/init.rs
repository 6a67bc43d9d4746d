//! Forming a partition's group: only a new cluster initializes.
//!
//! openraft lets every member initialize a new group with the same
//! members. But a replica whose disk was wiped is pristine too: were it to
//! initialize, it would campaign on an empty log and disrupt the leaders
//! of the others. So a pristine replica initializes only once a majority
//! of its replica set (itself included) answers that they are pristine
//! too, and none that it holds entries; otherwise it waits, and the
//! leader refills it, granting no vote meanwhile (a vote it cast before
//! losing its disk is forgotten; voting again in that term could elect a
//! second leader).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::BasicNode;

use crate::group::PeerAddr;
use crate::net::Transport;
use crate::types::{NodeId, Raft};

/// How often peers are asked while the answer is "wait".
const ASK_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Formation {
    pub partition: u32,
    pub me: String,
    /// The replica set, by id, with its peers.
    pub members: BTreeMap<NodeId, PeerAddr>,
    /// The replica that should lead: it forms the group (and so wins the
    /// first election); the others form it only if it stays unreachable.
    pub preferred: NodeId,
    /// Set while this replica is empty and waits for a group that exists
    /// elsewhere: it grants no vote until the leader has refilled it.
    pub refilling: Arc<AtomicBool>,
    /// Whether this replica may form the group at all: only while the
    /// cluster's node set is the one it was made with. A replica placed
    /// here by a membership change joins the group that exists (its
    /// leader adds it) and never forms one.
    pub may_form: bool,
    /// Every other node known: asked too, so a group that exists on nodes
    /// outside the replica set is found.
    pub others: Vec<PeerAddr>,
}

/// How long the others wait for an unreachable preferred leader before
/// forming the group themselves.
const PREFERRED_GRACE: Duration = Duration::from_secs(3);

/// Waits until forming the group is safe, then initializes it (or learns
/// that it exists: a leader reached this replica first).
pub(crate) async fn form(raft: Raft, transport: Transport, f: Formation) {
    let p = f.partition;
    let majority = f.members.len() / 2 + 1;
    let mut said_waiting = false;
    let me_preferred = f.members.get(&f.preferred).is_some_and(|p| p.name == f.me);
    let started = std::time::Instant::now();
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            f.refilling.store(false, Ordering::Release);
            return;
        }
        let mut pristine = 1; // this replica
        let mut formed = Vec::new();
        let mut preferred_up = false;
        let mut asked = std::collections::BTreeSet::new();
        let everyone = f
            .members
            .iter()
            .map(|(id, p)| (*id, p))
            .chain(f.others.iter().map(|p| (crate::types::node_id(&p.name), p)));
        for (id, peer) in everyone.filter(|(_, m)| m.name != f.me) {
            if !asked.insert(id) {
                continue;
            }
            let Ok(report) = transport.get_view(&peer.addr, ASK_EVERY).await else {
                continue;
            };
            let member = f.members.contains_key(&id);
            preferred_up |= id == f.preferred;
            match report.partitions.iter().find(|v| v.partition == p) {
                Some(v) if v.last_index.is_some() => formed.push(peer.name.clone()),
                Some(_) if member => pristine += 1,
                Some(_) => {}
                None => {}
            }
        }
        if !formed.is_empty() {
            // The group exists: its leader will send this replica the log.
            // Until then it votes for nobody: it may have voted in the
            // current term before it lost its disk, and must not vote twice.
            f.refilling.store(true, Ordering::Release);
            if !said_waiting {
                tracing::info!(
                    partition = p,
                    holders = ?formed,
                    "this replica is empty; waiting for the leader to refill it"
                );
                said_waiting = true;
            }
        } else if !f.may_form {
            // Placed here by a membership change: the group's leader adds
            // this replica; until then it has no vote to give.
            f.refilling.store(true, Ordering::Release);
            if !said_waiting {
                tracing::info!(
                    partition = p,
                    "this replica is new; waiting for the partition's leader to add it"
                );
                said_waiting = true;
            }
        } else if pristine >= majority
            && (me_preferred || !preferred_up && started.elapsed() >= PREFERRED_GRACE)
        {
            let nodes: BTreeMap<NodeId, BasicNode> = f
                .members
                .iter()
                .map(|(id, pa)| (*id, BasicNode::new(&pa.addr)))
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => tracing::info!(partition = p, "replicated partition formed"),
                Err(RaftError::APIError(_)) => {}
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "could not form the partition's group")
                }
            }
            return;
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}
