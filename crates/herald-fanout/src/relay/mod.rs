//! Cross-node delivery: the fan-out/edge seam carried between nodes over
//! Redis pub/sub (each node listens on its own channel).
//!
//! When this node's edge refuses a push because the user is not connected
//! here, fan-out looks the user up in presence and hands the push to each
//! live node that holds one of the user's connections. The push is counted
//! against its records before it leaves (one hold per node); the receiving
//! node's edge answers `Settled` (acked there, or written to the inbox
//! there), `Failed`, or `Refused` (the user left: the sender writes the
//! inbox), and the answer comes back on the sender's channel. A push not
//! answered within `answer_timeout` (the node died) is written to the
//! inbox: at least once, never lost.
//!
//! The copies of one notification sent to the nodes of one user's devices
//! are one hold: the first `Settled` answer (an ack on any device)
//! settles it and the other copies' answers are ignored; only when every
//! copy was refused or went unanswered does the notification go to the
//! inbox.

use herald_types::sync::{Locked, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use herald_store::Store;
use herald_types::{
    Answers, EdgeAnswer, EdgeCommand, EdgeHandle, Notification, RemoteRef, Settle, UserId,
};
use tokio::sync::mpsc;

use crate::Settlements;

mod loops;
mod wire;

use loops::{heartbeat_loop, subscribe_loop};
use wire::{channel, publish_loop, Outcome, Wire};

/// Messages waiting to be published; past it a push falls back to the
/// inbox and an answer is dropped (its push times out at the sender).
const OUTBOX: usize = 100_000;

/// A push handed to another node, waiting for its answer.
struct Sent {
    deadline: Instant,
    /// The node it was handed to: once that node is no longer alive, it
    /// will not answer, and the push goes to the inbox without waiting
    /// for the deadline.
    node: Arc<str>,
    user: UserId,
    n: Notification,
    settle: Settle,
    /// The copies of the same notification on other nodes (this one's
    /// push id included), answered as one.
    copies: Arc<[u64]>,
}

pub struct Relay {
    node: String,
    incarnation: u64,
    store: Store,
    answer_timeout: Duration,
    next: AtomicU64,
    sent: Mutex<HashMap<u64, Sent>>,
    /// Live nodes and their incarnations, refreshed every second.
    alive: RwLock<HashMap<String, u64>>,
    out: RelayOut,
    settlements: Weak<Settlements>,
    edge: Arc<dyn EdgeHandle>,
    /// When this node's channel last delivered anything (its own pings
    /// included), as an `Instant` since `started`, in ms.
    heard_ms: AtomicU64,
    /// Set when the subscription should be made again now (the Redis
    /// Cluster failed over: it may sit where the channel's messages no
    /// longer go).
    resubscribe: std::sync::atomic::AtomicBool,
    started: Instant,
}

/// The relay's outgoing queue: what this node publishes to others. Made
/// before the relay, so settlement (which the edge answers to, and which
/// the relay needs) can send answers back without a handle on the relay.
#[derive(Clone)]
pub struct RelayOut {
    out: mpsc::Sender<(String, Vec<u8>)>,
}

/// The receiving end of [`RelayOut`], for [`Relay::start`].
pub struct RelayOutbox(mpsc::Receiver<(String, Vec<u8>)>);

impl RelayOut {
    /// A queue and its receiving end.
    pub fn new() -> (RelayOut, RelayOutbox) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        (RelayOut { out: tx }, RelayOutbox(rx))
    }

    fn send(&self, node: &str, w: &Wire) -> bool {
        let Ok(bytes) = rmp_serde::to_vec(w) else {
            return false;
        };
        self.out.try_send((channel(node), bytes)).is_ok()
    }

    /// Sends the answer for a push another node handed to this one.
    pub fn answer(&self, r: &RemoteRef, a: &EdgeAnswer) {
        let outcome = match a {
            EdgeAnswer::Settled(_) => Outcome::Settled,
            EdgeAnswer::Failed(_) => Outcome::Failed,
            EdgeAnswer::Refused { .. } => Outcome::Refused,
            EdgeAnswer::Hold { .. } | EdgeAnswer::Acked { .. } => return,
        };
        if !self.send(
            &r.node,
            &Wire::Answer {
                push: r.push,
                outcome,
            },
        ) {
            metrics::counter!("herald_relay_answers_dropped_total").increment(1);
        }
    }
}

impl Relay {
    /// Starts the relay of this node: its publisher (of what `out`
    /// queues), its subscriber on its own channel (sharded pub/sub on
    /// Redis Cluster) handing what arrives to `edge`, its liveness
    /// heartbeat, the sweeper of unanswered pushes, and the pokes for
    /// users whose inbox settlement wrote (wherever they are connected).
    pub fn start(
        store: Store,
        incarnation: u64,
        answer_timeout: Duration,
        (out, outbox): (RelayOut, RelayOutbox),
        settlements: &Arc<Settlements>,
        edge: Arc<dyn EdgeHandle>,
    ) -> Arc<Relay> {
        let rx = outbox.0;
        let parked = settlements.parked();
        let relay = Arc::new(Relay {
            node: store.node_id().to_string(),
            incarnation,
            store,
            answer_timeout,
            next: AtomicU64::new(1),
            sent: Mutex::new(HashMap::new()),
            alive: RwLock::new(HashMap::new()),
            out,
            settlements: Arc::downgrade(settlements),
            edge,
            heard_ms: AtomicU64::new(0),
            resubscribe: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
        });
        tokio::spawn(publish_loop(relay.store.clone(), rx));
        tokio::spawn(loops::poke_parked_loop(Arc::downgrade(&relay), parked));
        tokio::spawn(subscribe_loop(Arc::downgrade(&relay)));
        tokio::spawn(heartbeat_loop(Arc::downgrade(&relay)));
        relay
    }

    fn send(&self, node: &str, w: &Wire) -> bool {
        self.out.send(node, w)
    }

    /// For users this node's edge does not hold: the other live nodes that
    /// do, from presence (one round trip).
    pub async fn holders(&self, users: &[UserId]) -> herald_store::Result<Vec<Vec<String>>> {
        self.holders_where(users, true).await
    }

    /// Every other node that presence says holds each user, alive or not
    /// as this node last read it: whom to poke after an inbox write (a
    /// node this node has not yet seen alive, just started or back from a
    /// lapse, may hold the user; a poke to a dead one costs a publish).
    pub async fn holders_any(&self, users: &[UserId]) -> herald_store::Result<Vec<Vec<String>>> {
        self.holders_where(users, false).await
    }

    async fn holders_where(
        &self,
        users: &[UserId],
        alive_only: bool,
    ) -> herald_store::Result<Vec<Vec<String>>> {
        let presence = self.store.presence_of(users).await?;
        let alive = self.alive.reading().clone();
        Ok(presence
            .into_iter()
            .map(|nodes| {
                nodes
                    .into_iter()
                    .filter(|(n, inc)| {
                        *n != self.node && (!alive_only || alive.get(n) == Some(inc))
                    })
                    .map(|(n, _)| n)
                    .collect()
            })
            .collect())
    }

    /// Hands a copy of `n` to each of `nodes`; `settle` was counted once
    /// for all of them by the caller (the first copy acked settles it).
    /// False when none could be queued (the caller stores it instead).
    pub fn push(&self, nodes: &[String], user: UserId, n: &Notification, settle: Settle) -> bool {
        let ids: Vec<u64> = nodes
            .iter()
            .map(|_| self.next.fetch_add(1, Ordering::Relaxed))
            .collect();
        let copies: Arc<[u64]> = ids.clone().into();
        let stored = n.to_storage();
        {
            let mut s = self.sent.locked();
            for (id, node) in ids.iter().zip(nodes) {
                s.insert(
                    *id,
                    Sent {
                        deadline: Instant::now() + self.answer_timeout,
                        node: Arc::from(node.as_str()),
                        user,
                        n: n.clone(),
                        settle: settle.clone(),
                        copies: copies.clone(),
                    },
                );
            }
        }
        let mut any = false;
        for (node, push) in nodes.iter().zip(&ids) {
            let w = Wire::Push {
                from: self.node.clone(),
                push: *push,
                user,
                n: stored.clone(),
                trace: n.trace.as_deref().copied(),
            };
            if self.send(node, &w) {
                metrics::counter!("herald_relay_pushes_total").increment(1);
                any = true;
            } else {
                self.sent.locked().remove(push);
            }
        }
        any
    }

    /// Sends a command that every node's edge must hear (a celebrity
    /// broadcast, a follow change, a celebrity change) to every other live
    /// node: one message per node, not per follower.
    pub fn to_every_node(&self, cmd: &EdgeCommand) {
        let Some(w) = Wire::for_every_node(cmd) else {
            return;
        };
        let nodes = self.other_live_nodes();
        for node in nodes {
            if !self.send(&node, &w) {
                metrics::counter!("herald_relay_broadcasts_dropped_total").increment(1);
            }
        }
    }

    /// Tells every node holding a connection of `user` (this one included)
    /// that its inbox has new entries: a push that went to the inbox
    /// because its node died reaches the user where it reconnected.
    pub async fn poke_everywhere(&self, user: UserId) {
        self.to_local(EdgeCommand::Poke { user });
        self.poke_holders(&[user]).await;
    }

    /// Tells every other node that presence says holds each of `users`
    /// that their inbox has new entries. When presence cannot be read
    /// (Redis failing over), every other node this node knows is told:
    /// a poke a holder misses leaves the entry waiting while its user
    /// stays connected.
    pub async fn poke_holders(&self, users: &[UserId]) {
        match self.holders_any(users).await {
            Ok(holders) => {
                for (u, nodes) in users.iter().zip(holders) {
                    for node in nodes {
                        self.poke(&node, *u);
                    }
                }
            }
            Err(e) => {
                let nodes = self.other_live_nodes();
                tracing::debug!(error = %e, nodes = nodes.len(), "presence unreadable; poking every node");
                metrics::counter!("herald_relay_pokes_broadcast_total").increment(1);
                for node in &nodes {
                    for u in users {
                        self.poke(node, *u);
                    }
                }
            }
        }
    }

    /// Tells `node` that `user`'s inbox has new entries.
    pub fn poke(&self, node: &str, user: UserId) {
        self.send(node, &Wire::Poke { user });
    }

    /// Sends the answer for a push another node handed to this one.
    pub fn answer(&self, r: &RemoteRef, a: &EdgeAnswer) {
        self.out.answer(r, a)
    }

    /// Notes that this node's channel delivered something now.
    fn heard(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heard_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Asks the subscription loop to subscribe again at its next look.
    fn ask_resubscribe(&self) {
        self.resubscribe
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a new subscription was asked for (and clears the request).
    fn take_resubscribe(&self) -> bool {
        self.resubscribe
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// How long this node's channel has been silent.
    fn silent_for(&self) -> Duration {
        let heard = self.heard_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(heard))
    }

    fn on_message(&self, bytes: &[u8]) {
        self.heard();
        for w in wire::decode_bundle(bytes) {
            self.on_wire(w);
        }
    }

    fn on_wire(&self, w: Wire) {
        match w {
            Wire::Push {
                from,
                push,
                user,
                n,
                trace,
            } => self.on_push(from, push, user, &n, trace),
            Wire::Poke { user } => {
                tracing::debug!(user, "poked by another node");
                self.edge.send(EdgeCommand::Poke { user });
            }
            Wire::Answer { push, outcome } => self.on_answer(push, outcome),
            Wire::Ping => {}
            Wire::Listening { node } => self.on_listening(&node),
            every_node => {
                if let Some(cmd) = every_node.into_edge_command() {
                    self.to_local(cmd);
                }
            }
        }
    }

    fn to_local(&self, cmd: EdgeCommand) {
        self.edge.send(cmd);
    }

    fn on_push(
        &self,
        from: String,
        push: u64,
        user: UserId,
        n: &[u8],
        trace: Option<herald_types::TraceContext>,
    ) {
        let r = Arc::new(RemoteRef { node: from, push });
        let Ok(mut n) = Notification::from_storage(n) else {
            self.answer(&r, &EdgeAnswer::Failed(Settle::None));
            return;
        };
        n.trace = trace.map(Arc::new);
        let settle = Settle::Remote(r.clone());
        if let Some(a) = self.edge.send(EdgeCommand::Push { user, n, settle }) {
            // Refused here (the user left): the sender stores it.
            self.answer(&r, &a);
        }
    }

    fn on_answer(&self, push: u64, outcome: Outcome) {
        let label = match outcome {
            Outcome::Settled => "settled",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        };
        metrics::counter!("herald_relay_answers_total", "outcome" => label).increment(1);
        // The copy answered; with `Settled`, its siblings are done too. A
        // refusal counts only once no sibling is left waiting.
        let sent = {
            let mut s = self.sent.locked();
            let Some(sent) = s.remove(&push) else { return };
            let waiting = sent.copies.iter().any(|c| s.contains_key(c));
            if outcome == Outcome::Settled {
                for c in sent.copies.iter() {
                    s.remove(c);
                }
            } else if waiting {
                return;
            }
            sent
        };
        self.conclude(sent, outcome);
    }

    fn conclude(&self, sent: Sent, outcome: Outcome) {
        let Some(s) = self.settlements.upgrade() else {
            return;
        };
        match outcome {
            Outcome::Settled => s.release(&sent.settle),
            Outcome::Failed => s.fail(&sent.settle),
            Outcome::Refused => s.answer(EdgeAnswer::Refused {
                user: sent.user,
                n: sent.n,
                settle: sent.settle,
                why: herald_types::Refusal::Offline,
            }),
        }
    }

    /// Pushes never answered (their node died: it is no longer alive, or
    /// the answer timeout passed): to the inbox, once no copy of the same
    /// notification is still waiting.
    fn sweep(&self) {
        let now = Instant::now();
        let alive = self.alive.reading().clone();
        let late = self.take_sent(|v| v.deadline <= now || !alive.contains_key(&*v.node));
        if late.is_empty() {
            return;
        }
        metrics::counter!("herald_relay_unanswered_total").increment(late.len() as u64);
        tracing::warn!(
            pushes = late.len(),
            "pushes to other nodes unanswered; writing them to the inbox"
        );
        for sent in late {
            self.conclude(sent, Outcome::Refused);
        }
    }
}

impl Relay {
    /// Removes the pushes waiting for an answer that `which` picks; returns
    /// those no other copy of the same notification still waits beside.
    fn take_sent(&self, which: impl Fn(&Sent) -> bool) -> Vec<Sent> {
        let mut s = self.sent.locked();
        let ids: Vec<u64> = s
            .iter()
            .filter(|(_, v)| which(v))
            .map(|(k, _)| *k)
            .collect();
        let gone: Vec<Sent> = ids.into_iter().filter_map(|k| s.remove(&k)).collect();
        gone.into_iter()
            .filter(|g| !g.copies.iter().any(|c| s.contains_key(c)))
            .collect()
    }

    /// `node` listens on its channel again: the pushes waiting for its
    /// answer may have been published while it did not, so they go to the
    /// inbox now (and the node is poked, so its users drain them). One it
    /// did deliver may then come twice (at least once).
    fn on_listening(&self, node: &str) {
        let late = self.take_sent(|v| &*v.node == node);
        if late.is_empty() {
            return;
        }
        metrics::counter!("herald_relay_unanswered_total").increment(late.len() as u64);
        tracing::info!(
            node,
            pushes = late.len(),
            "a node listens again; its unanswered pushes go to the inbox"
        );
        for sent in late {
            self.conclude(sent, Outcome::Refused);
        }
    }

    /// The other nodes this node last read alive.
    fn other_live_nodes(&self) -> Vec<String> {
        self.alive
            .reading()
            .keys()
            .filter(|n| **n != self.node)
            .cloned()
            .collect()
    }

    /// Tells every other live node that this one listens again (after its
    /// subscription broke).
    fn announce_listening(&self) {
        let nodes = self.other_live_nodes();
        let w = Wire::Listening {
            node: self.node.clone(),
        };
        for node in nodes {
            self.send(&node, &w);
        }
    }
}

/// Every node's edge: this node's, and the others' through the relay (in
/// a cluster). For what every edge must hear from outside fan-out (a
/// thread's subscribers changed through the API).
pub struct EveryEdge {
    pub local: Arc<dyn EdgeHandle>,
    pub relay: Option<Arc<Relay>>,
}

impl EdgeHandle for EveryEdge {
    fn send(&self, cmd: EdgeCommand) -> Option<EdgeAnswer> {
        if let Some(relay) = &self.relay {
            relay.to_every_node(&cmd);
        }
        self.local.send(cmd)
    }
}
