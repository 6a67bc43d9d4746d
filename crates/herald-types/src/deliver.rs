//! The seam between fan-out and the edge: fan-out hands a notification to
//! whatever holds connections on this node, without knowing how.

use crate::{Notification, SettleToken, UserId};

/// Why a live push was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has no connection on this node.
    Offline,
    /// The user's connection queue is full (a slow consumer).
    Full,
}

/// A notification handed back because it could not be pushed live; the
/// caller must write it to the inbox before letting the token go.
#[derive(Debug)]
pub struct Refused {
    pub notification: Notification,
    pub token: Option<SettleToken>,
    pub why: Refusal,
}

/// Live delivery on this node.
pub trait Deliver: Send + Sync + 'static {
    /// Queues `n` on `user`'s connection. On success the connection owns the
    /// token and settles it when the client acks (or when it writes `n` to
    /// the inbox).
    fn push(
        &self,
        user: UserId,
        n: Notification,
        token: Option<SettleToken>,
    ) -> Result<(), Box<Refused>>;

    /// Whether `user` has a connection on this node.
    fn is_online(&self, user: UserId) -> bool;

    /// Tells `user`'s connection, if any, that its inbox has new entries.
    fn poke(&self, user: UserId);

    /// A celebrity's post, already durable in its outbox: push it to every
    /// local connection of a follower. `n` carries one id for every
    /// recipient, so it is encoded once.
    fn broadcast(&self, celebrity: UserId, n: Notification);

    /// `follower` started (or stopped) following `celebrity`.
    fn follow_changed(&self, follower: UserId, celebrity: UserId, follows: bool);

    /// `user` became (or stopped being) a celebrity; `followers` are its
    /// followers when it became one (empty otherwise). Called before any
    /// later post of `user` is broadcast.
    fn celebrity_changed(&self, user: UserId, celebrity: bool, followers: &[UserId]);
}
