//! The pulled half of a feed: posts on the pull path (celebrities a user
//! follows, hot threads they subscribe to) are never written per follower,
//! so a feed page lists them from their outboxes (the node's
//! [`OutboxCache`]), from when the user started following, with the read
//! state the user gave them (`OutboxView`: "all read" up to an order, or
//! marks one by one).

use std::collections::HashSet;
use std::sync::Arc;

use herald_types::{Notification, UserId};

use crate::{OutboxCache, OutboxCursor, OutboxView, Result, Store};

impl Store {
    /// How many of the posts [`Store::feed_pulled`] lists are unread,
    /// counted where they are (nothing before the user's "all read" is
    /// looked at, and cached outboxes are not copied): what every `hello`
    /// of a follower pays. `keeps_all` says `keep` accepts every post (no
    /// mutes, every kind real-time): a celebrity's cached outbox is then
    /// counted by a binary search, without looking at each post.
    pub async fn feed_pulled_unread(
        &self,
        user: UserId,
        view: &OutboxView,
        cache: &Arc<OutboxCache>,
        keep: impl Fn(&Notification) -> bool,
        keeps_all: bool,
    ) -> Result<u64> {
        if view.cursors.is_empty() {
            return Ok(0);
        }
        let since = (self.feed_since_us().max(0) as u64).max(view.read_all.unwrap_or(0));
        let shared = shares_posts(view);
        let mut listed = HashSet::new();
        let mut unread = 0u64;
        let mut count = |n: &Notification| {
            if n.actor != user
                && !view.is_read(n)
                && keep(n)
                && (!shared || listed.insert(n.id.clone()))
            {
                unread += 1;
            }
        };
        let mut cold = Vec::new();
        let mut counted = 0u64;
        for c in &view.cursors {
            let after = c.since.unwrap_or(0).max(since);
            // A celebrity's posts are never the follower's own, and in no
            // other outbox: with nothing hidden or marked, how many there
            // are is the answer.
            let whole = keeps_all
                && !shared
                && view.read.is_empty()
                && matches!(c.outbox, herald_types::Outbox::User(u) if u != user);
            if whole {
                if let Some(n) = cache.count_after(c.outbox, after) {
                    counted += n;
                    continue;
                }
            }
            if !cache.visit(c.outbox, after, &mut count) {
                cold.push(OutboxCursor {
                    outbox: c.outbox,
                    seen: Some(after),
                    since: c.since,
                });
            }
        }
        if !cold.is_empty() {
            for (_, n) in self.outboxes_after(cache, &cold, cache.cap()).await? {
                count(&n);
            }
        }
        Ok(unread + counted)
    }

    /// The posts of `view`'s outboxes that `user`'s feed lists, newest
    /// first, each with its read state: since the user started following
    /// (subscribing), within the feed's retention, not the user's own,
    /// and those `keep` accepts (the user's preferences). A post in two
    /// outboxes is listed once.
    pub async fn feed_pulled(
        &self,
        user: UserId,
        view: &OutboxView,
        cache: &Arc<OutboxCache>,
        keep: impl Fn(&Notification) -> bool,
    ) -> Result<Vec<(Notification, bool)>> {
        if view.cursors.is_empty() {
            return Ok(Vec::new());
        }
        let since = self.feed_since_us().max(0) as u64;
        let cursors: Vec<OutboxCursor> = view
            .cursors
            .iter()
            .map(|c| OutboxCursor {
                outbox: c.outbox,
                seen: Some(c.since.unwrap_or(0).max(since)),
                since: c.since,
            })
            .collect();
        let posts = self.outboxes_after(cache, &cursors, cache.cap()).await?;
        let shared = shares_posts(view);
        let mut listed = HashSet::new();
        let mut out: Vec<(Notification, bool)> = posts
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| n.actor != user && keep(n))
            .filter(|n| !shared || listed.insert(n.id.clone()))
            .map(|n| {
                let read = view.is_read(&n);
                (n, read)
            })
            .collect();
        // Newest first; the id's hash breaks a tie of order (rare), so it
        // is computed only then.
        out.sort_unstable_by(|(a, _), (b, _)| {
            b.order
                .cmp(&a.order)
                .then_with(|| crate::FeedCursor::of(b).cmp(&crate::FeedCursor::of(a)))
        });
        Ok(out)
    }
}

/// Whether a post can be in two of `view`'s outboxes: only a thread's
/// event can (a celebrity's post to a hot thread), so ids are compared
/// only then.
fn shares_posts(view: &OutboxView) -> bool {
    view.cursors
        .iter()
        .any(|c| matches!(c.outbox, herald_types::Outbox::Thread(_)))
}
