//! Several connections of one user on this node (a phone, a laptop, tabs).
//!
//! - Every connection gets every live notification. The copies of one push
//!   share one settlement ([`Owed::Copies`]): the first ack takes it (the
//!   record settles once), later acks of other copies do nothing; when a
//!   copy is dropped unacked (its connection closed, or its ack timed out)
//!   only the last copy still unacked writes the inbox, so an item acked on
//!   one device never comes back on another's reconnect.
//! - The oldest connection is the *primary*: it alone drains the inbox (on
//!   connect and on pokes), so no connection is sent an inbox item twice;
//!   when it closes the next one becomes primary and drains.
//! - Past `max_devices` connections the oldest is closed with code 4000.

use herald_types::sync::Locked;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use herald_types::{Settle, UserId};

use crate::{ConnHandle, Edge};

/// What a pushed copy answers for.
pub(crate) enum Owed {
    /// The only copy.
    One(Settle),
    /// One of several copies on this node's connections of the user.
    Copies(Arc<Copies>),
}

pub(crate) struct Copies {
    settle: Mutex<Option<Settle>>,
    /// Copies not yet acked or dropped.
    alive: AtomicUsize,
}

impl Copies {
    pub fn new(settle: Settle, copies: usize) -> Arc<Copies> {
        Arc::new(Copies {
            settle: Mutex::new(Some(settle)),
            alive: AtomicUsize::new(copies),
        })
    }

    fn take(&self) -> Option<Settle> {
        self.settle.locked().take()
    }

    /// A copy that was never delivered (its queue was full or closed).
    pub fn undelivered(&self) -> Option<Settle> {
        self.dropped()
    }

    fn dropped(&self) -> Option<Settle> {
        if self.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.take()
        } else {
            None
        }
    }
}

impl Owed {
    /// Acked on this connection: the settlement, unless another copy was
    /// acked first.
    pub fn acked(self) -> Option<Settle> {
        match self {
            Owed::One(s) => Some(s),
            Owed::Copies(c) => {
                c.alive.fetch_sub(1, Ordering::AcqRel);
                c.take()
            }
        }
    }

    /// Dropped unacked (closed, or past its ack timeout): the settlement
    /// when this was the last copy nobody acked, which then goes to the
    /// inbox; None when another device has it or acked it.
    pub fn dropped(self) -> Option<Settle> {
        match self {
            Owed::One(s) => Some(s),
            Owed::Copies(c) => c.dropped(),
        }
    }
}

impl Edge {
    /// Adds a connection of `user`; returns the handle of the oldest one
    /// when the user is past `max_devices` (to be closed with 4000).
    pub(crate) fn register(&self, user: UserId, handle: ConnHandle) -> Option<ConnHandle> {
        let mut d = self.conns.entry(user).or_default();
        d.push(handle);
        (d.len() > self.cfg.max_devices.max(1)).then(|| d.remove(0))
    }

    /// Removes connection `id` of `user`; true when it was the user's last
    /// connection here. A new primary is poked to drain the inbox.
    pub(crate) fn unregister(&self, user: UserId, id: u64) -> bool {
        let mut was_primary = false;
        let empty = match self.conns.get_mut(&user) {
            Some(mut d) => {
                was_primary = d.first().is_some_and(|h| h.id == id);
                d.retain(|h| h.id != id);
                d.is_empty()
            }
            None => true,
        };
        if empty {
            self.conns.remove_if(&user, |_, d| d.is_empty());
        } else if was_primary {
            self.poke(user);
        }
        !self.conns.contains_key(&user)
    }

    /// Whether connection `id` drains `user`'s inbox (the oldest).
    pub(crate) fn is_primary(&self, user: UserId, id: u64) -> bool {
        self.conns
            .get(&user)
            .and_then(|d| d.first().map(|h| h.id == id))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle() -> Settle {
        Settle::None
    }

    #[test]
    fn the_first_ack_takes_it_and_only_the_last_drop_stores_it() {
        let c = Copies::new(settle(), 3);
        let (a, b, d) = (
            Owed::Copies(c.clone()),
            Owed::Copies(c.clone()),
            Owed::Copies(c.clone()),
        );
        assert!(a.dropped().is_none(), "two copies still out");
        assert!(b.acked().is_some(), "the first ack settles");
        assert!(d.dropped().is_none(), "acked elsewhere: nothing to store");

        let c = Copies::new(settle(), 2);
        let (a, b) = (Owed::Copies(c.clone()), Owed::Copies(c));
        assert!(a.dropped().is_none());
        assert!(b.dropped().is_some(), "the last copy unacked is stored");
    }
}
