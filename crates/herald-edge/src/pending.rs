//! The one home of a connection's sent-but-unacked notifications: what
//! each is (which says what its ack does) and what is asked of the set.
//! The set itself lives under the link's lock (`link.rs`, so a push and
//! its entry go in together); the connection's task decides when to ask
//! (`unacked.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_types::{Notification, Settle};

use crate::Direct;

/// What a sent, unacked notification is, which says what its ack does.
pub(crate) enum Kind {
    /// Pushed live by fan-out: the ack answers `Settled`. Kept whole so it
    /// can be given back to fan-out (parked) if the ack never comes.
    Live(Box<Direct>),
    /// From the inbox (or given back and parked there): the ack removes it
    /// there.
    Stored,
    /// A post pulled or broadcast from an outbox (a celebrity's or a hot
    /// thread's): the ack advances the read cursor.
    Outbox {
        outbox: herald_types::Outbox,
        order: u64,
    },
}

pub(crate) struct Pending {
    pub kind: Kind,
    pub sent: Instant,
}

/// A connection's pending notifications by id (foldhash: ids are hashed
/// on every push and ack; the map is bounded by `max_unacked`).
pub(crate) type PendingMap = HashMap<Arc<str>, Pending, foldhash::fast::RandomState>;

/// Acks of the frames read together, applied at once.
#[derive(Default)]
pub(crate) struct Acks {
    /// Live notifications acked: fan-out's records to settle.
    pub settled: Vec<Settle>,
    /// Inbox entries (or unknown ids) to remove from the inbox.
    pub remove: Vec<String>,
}

/// Takes `ids` out of the set: what each ack asks for goes to `acks`, and
/// an outbox entry moves its outbox's cursor in `cursors`.
pub(crate) fn ack<'a>(
    set: &mut PendingMap,
    ids: impl IntoIterator<Item = std::borrow::Cow<'a, str>>,
    acks: &mut Acks,
    cursors: &mut Vec<(herald_types::Outbox, u64)>,
) {
    for id in ids {
        match set.remove(&*id).map(|p| p.kind) {
            Some(Kind::Live(d)) => acks.settled.extend(d.settle.acked()),
            Some(Kind::Outbox { outbox, order }) => {
                match cursors.iter_mut().find(|(c, _)| *c == outbox) {
                    Some(e) => e.1 = e.1.max(order),
                    None => cursors.push((outbox, order)),
                }
            }
            Some(Kind::Stored) | None => acks.remove.push(id.into_owned()),
        }
    }
    // A drained page leaves a large, empty map behind.
    if set.is_empty() && set.capacity() > 64 {
        set.shrink_to(8);
    }
}

/// The live notifications sent at least `timeout` ago.
pub(crate) fn overdue(set: &PendingMap, timeout: Duration) -> Vec<Arc<str>> {
    set.iter()
        .filter(|(_, p)| matches!(p.kind, Kind::Live(..)) && p.sent.elapsed() >= timeout)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The oldest live notifications past `cap` entries.
pub(crate) fn past_cap(set: &PendingMap, cap: usize) -> Vec<Arc<str>> {
    let excess = set.len().saturating_sub(cap);
    if excess == 0 {
        return Vec::new();
    }
    let mut live: Vec<(&Arc<str>, Instant)> = set
        .iter()
        .filter(|(_, p)| matches!(p.kind, Kind::Live(..)))
        .map(|(id, p)| (id, p.sent))
        .collect();
    live.sort_by_key(|(_, t)| *t);
    live.into_iter()
        .take(excess)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Takes the live ones of `ids` to give back: each stays pending as an
/// inbox entry (its ack removes it there); copies another device still
/// holds, or acked, are only dropped.
pub(crate) fn give_back(set: &mut PendingMap, ids: &[Arc<str>]) -> Vec<(Notification, Settle)> {
    let mut owed = Vec::new();
    for id in ids {
        let Some(p) = set.get_mut(&**id) else {
            continue;
        };
        if !matches!(p.kind, Kind::Live(_)) {
            continue;
        }
        if let Kind::Live(d) = std::mem::replace(&mut p.kind, Kind::Stored) {
            let Direct { n, settle } = *d;
            match settle.dropped() {
                Some(s) => owed.push((n, s)),
                None => {
                    set.remove(&**id);
                }
            }
        }
    }
    owed
}

/// What a closed connection leaves to give back: its live notifications
/// (copies another device still holds, or acked, are only dropped; shared
/// celebrity frames stay in their outbox).
pub(crate) fn left_on_close(set: PendingMap) -> Vec<(Notification, Settle)> {
    set.into_values()
        .filter_map(|p| match p.kind {
            Kind::Live(d) => {
                let Direct { n, settle } = *d;
                settle.dropped().map(|s| (n, s))
            }
            _ => None,
        })
        .collect()
}
