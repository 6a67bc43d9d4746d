//! This node's side of the partition leases ([`herald_store::LeaseRole`]):
//! a round every `ttl / 6`, the view it left, and the answers the gateway
//! and the workers ask of it.
//!
//! A lease this node holds counts as its own only until `ttl / 3` before
//! it could have expired in Redis (measured from before the round that
//! renewed it): a node cut off from Redis stops appending to a partition
//! before another node can take it.

use herald_types::sync::Shared;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use herald_store::{LeaseRole, LeaseView, Store};
use herald_types::{Owner, Placement};

pub struct Leases {
    store: Store,
    partitions: u32,
    /// `node#incarnation`: a restarted node does not inherit the leases of
    /// its previous run (they expire).
    holder: String,
    addr: String,
    ttl: Duration,
    role: LeaseRole,
    state: RwLock<State>,
    next: AtomicUsize,
    /// Left the group: no more rounds.
    left: AtomicBool,
}

#[derive(Default)]
struct State {
    view: LeaseView,
    /// Until when the leases this node holds in `view` are its own.
    valid_until: Option<Instant>,
}

impl Leases {
    /// Joins the partition group (`member`: an ingest node) or watches it
    /// (an edge node). The first round runs before this returns (it may
    /// fail: Redis down; the loop keeps trying).
    pub async fn start(
        store: Store,
        partitions: u32,
        incarnation: u64,
        addr: String,
        ttl: Duration,
        member: bool,
    ) -> Arc<Leases> {
        let holder = format!("{}#{incarnation}", store.node_id());
        let l = Arc::new(Leases {
            store,
            partitions,
            holder,
            addr,
            ttl: ttl.max(Duration::from_millis(600)),
            role: if member {
                LeaseRole::Member
            } else {
                LeaseRole::Observer
            },
            state: RwLock::new(State::default()),
            next: AtomicUsize::new(0),
            left: AtomicBool::new(false),
        });
        l.round().await;
        tokio::spawn(round_loop(Arc::downgrade(&l)));
        l
    }

    async fn round(&self) {
        if self.left.load(Ordering::Relaxed) {
            return;
        }
        let t0 = Instant::now();
        let r = self
            .store
            .lease_round(
                self.partitions,
                &self.holder,
                &self.addr,
                self.ttl,
                self.role,
            )
            .await;
        let view = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "partition lease round failed");
                return;
            }
        };
        let mut s = self.state.writing();
        let before = mine(&s.view, &self.holder);
        let after = mine(&view, &self.holder);
        if before != after {
            tracing::info!(owned = ?after, members = view.members.len(), "partition leases changed");
        }
        metrics::gauge!("herald_partitions_owned").set(after.len() as f64);
        s.view = view;
        s.valid_until = Some(t0 + self.ttl - self.ttl / 3);
    }

    /// Gives back every lease and leaves the group (clean shutdown), so
    /// other nodes take the partitions at once instead of after `ttl`.
    pub async fn leave(&self) {
        if self.role != LeaseRole::Member {
            return;
        }
        self.left.store(true, Ordering::Relaxed);
        self.state.writing().valid_until = None;
        if let Err(e) = self
            .store
            .lease_round(
                self.partitions,
                &self.holder,
                &self.addr,
                self.ttl,
                LeaseRole::Leave,
            )
            .await
        {
            tracing::warn!(error = %e, "partition leases not given back; they expire by themselves");
        }
    }

    /// Whether this node owns `p` now.
    pub fn owns(&self, p: u32) -> bool {
        self.owner(p) == Owner::Local
    }

    /// Partitions this node owns now.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.partitions).filter(|p| self.owns(*p)).collect()
    }

    /// Whether a round has succeeded in the last `ttl`.
    pub fn fresh(&self) -> bool {
        self.state
            .reading()
            .valid_until
            .is_some_and(|v| v + self.ttl / 3 > Instant::now())
    }
}

fn mine(v: &LeaseView, holder: &str) -> Vec<u32> {
    v.holders
        .iter()
        .enumerate()
        .filter(|(_, h)| h.as_deref() == Some(holder))
        .map(|(p, _)| p as u32)
        .collect()
}

impl Placement for Leases {
    fn owner(&self, p: u32) -> Owner {
        let s = self.state.reading();
        let Some(Some(h)) = s.view.holders.get(p as usize) else {
            return Owner::Unknown;
        };
        if *h == self.holder {
            return match s.valid_until {
                Some(v) if v > Instant::now() => Owner::Local,
                _ => Owner::Unknown,
            };
        }
        let node = h.rsplit_once('#').map_or(h.as_str(), |(n, _)| n);
        if node == self.store.node_id() {
            // This node's previous run: its lease has not expired yet.
            return Owner::Unknown;
        }
        match s.view.members.iter().find(|(m, _)| m == node) {
            Some((_, addr)) => Owner::Remote {
                node: node.to_string(),
                addr: addr.clone(),
            },
            None => Owner::Unknown,
        }
    }

    fn any_ingest(&self) -> Option<String> {
        let s = self.state.reading();
        let m = &s.view.members;
        if m.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % m.len();
        Some(m[i].1.clone())
    }
}

async fn round_loop(l: Weak<Leases>) {
    let every = match l.upgrade() {
        Some(l) => l.ttl / 6,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(l) = l.upgrade() else { return };
        l.round().await;
    }
}
