//! The seam between fan-out and the edge, shaped as messages so that it can
//! cross a process boundary: fan-out sends [`EdgeCommand`]s, the edge sends
//! back [`EdgeAnswer`]s. Settlement is by position: a notification carries
//! a [`Settle`] naming the log records it answers for, as plain data, and
//! the edge answers `Settled` with it once the client acked the
//! notification or the edge wrote it to the inbox.
//!
//! The rule the fan-out side keeps: every [`Settle`] handed to an edge has
//! been counted (retained) against its records first; every answer releases
//! it once. A record settles when nothing holds it. A record processed again
//! (after an error that repeats) gets a new `attempt`, and answers for an
//! older attempt are ignored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Notification, UserId};

/// One attempt at processing one log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordRef {
    pub partition: u32,
    pub offset: u64,
    pub attempt: u32,
}

/// The records a notification answers for: none (a celebrity post, which
/// lives in its outbox), the record it was made from, or every record an
/// aggregate folds. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Settle {
    #[default]
    None,
    One(RecordRef),
    Many(Arc<[RecordRef]>),
    /// A push another node handed over: the answer goes back to it.
    Remote(Arc<RemoteRef>),
}

/// A push received from another node: which node, and its number there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRef {
    pub node: String,
    pub push: u64,
}

impl Settle {
    pub fn refs(&self) -> &[RecordRef] {
        match self {
            Settle::None | Settle::Remote(_) => &[],
            Settle::One(r) => std::slice::from_ref(r),
            Settle::Many(v) => v,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Settle::None)
    }

    /// One settle for all of `refs`.
    pub fn of(refs: &[RecordRef]) -> Settle {
        match refs {
            [] => Settle::None,
            [r] => Settle::One(*r),
            many => Settle::Many(many.into()),
        }
    }
}

/// Where a notification waits instead of going out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bucket {
    /// Real-time notifications held by quiet hours.
    Held,
    /// Notifications collected for the user's digest.
    Digest,
}

/// Why an edge did not take a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has no connection on this edge.
    Offline,
    /// The user's connection queue is full (a slow consumer).
    Full,
    /// Sent, but not acked: the ack timed out, the connection passed its
    /// cap on unacked notifications, or it closed. Fan-out parks it (the
    /// inbox); the edge only reports.
    Unacked,
}

/// Whose outbox a post on the pull path is in: a celebrity's (an account
/// past `celebrity.threshold` followers) or a hot thread's (an object past
/// as many subscribers), by the id Redis gave the thread when it first
/// became hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outbox {
    User(UserId),
    Thread(u64),
}

/// What fan-out asks of an edge.
#[derive(Debug)]
pub enum EdgeCommand {
    /// Push `n` to `user`'s connections; the edge answers `Settled(settle)`
    /// once it is acked or in the inbox, or refuses it.
    Push {
        user: UserId,
        n: Notification,
        settle: Settle,
    },
    /// `user`'s inbox has new entries: drain it if connected here.
    Poke { user: UserId },
    /// Other nodes may have written inboxes of users connected here without
    /// telling this node (it was taken for dead, or its channel was down):
    /// every connection drains.
    PokeAll,
    /// A post on the pull path, already durable in its outbox: push it to
    /// every follower (or thread subscriber) connected here but its actor
    /// (one id for all, so it is encoded once).
    Broadcast { outbox: Outbox, n: Notification },
    /// `follower` started (or stopped) following a celebrity, or
    /// subscribing to a hot thread.
    FollowChanged {
        follower: UserId,
        outbox: Outbox,
        follows: bool,
    },
    /// An outbox's owner moved to (or off) the pull path; `followers` (the
    /// thread's subscribers) when it moved to it, and a thread's object.
    /// Sent before any later post of it is broadcast.
    PathChanged {
        outbox: Outbox,
        object: Option<Arc<str>>,
        on: bool,
        followers: Vec<UserId>,
    },
}

/// What an edge answers.
#[derive(Debug)]
pub enum EdgeAnswer {
    /// Not pushed: the sender writes it to the inbox, then releases it.
    Refused {
        user: UserId,
        n: Notification,
        settle: Settle,
        why: Refusal,
    },
    /// Acked by the client, or written to the inbox by the edge.
    Settled(Settle),
    /// Could be neither delivered nor stored (the node is stopping, a
    /// bounded queue overflowed): process the records again after restart.
    Failed(Settle),
    /// A celebrity's post for a follower whose preferences say it waits
    /// (quiet hours, digest): the receiver puts it in that bucket, then,
    /// when `seen` is given, moves the follower's outbox cursor past it.
    Hold {
        user: UserId,
        bucket: Bucket,
        release_ms: u64,
        n: Notification,
        /// (outbox, order) the follower's cursor moves to once held.
        seen: Option<(Outbox, u64)>,
    },
    /// Entries of `user`'s inbox their client acked: fan-out, the inbox's
    /// owner, removes them, then answers on `done` (the connection waits
    /// for it before it reads the inbox again, so it never sends an entry
    /// its client acked). `done` dropped unanswered: not removed (yet).
    Acked {
        user: UserId,
        ids: Vec<String>,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// The edge side of the seam.
pub trait EdgeHandle: Send + Sync + 'static {
    /// Handles a command. An answer that is ready at once (a refused push)
    /// is returned; later answers go to the edge's [`Answers`].
    fn send(&self, cmd: EdgeCommand) -> Option<EdgeAnswer>;

    /// How many connections (devices) of `user` this edge holds.
    fn devices(&self, _user: UserId) -> usize {
        0
    }
}

/// The fan-out side of the seam: where edges send their answers.
pub trait Answers: Send + Sync + 'static {
    fn answer(&self, a: EdgeAnswer);

    /// Many `Settled` answers at once (an ack frame of many ids).
    fn settled(&self, list: Vec<Settle>) {
        for s in list {
            self.answer(EdgeAnswer::Settled(s));
        }
    }
}
