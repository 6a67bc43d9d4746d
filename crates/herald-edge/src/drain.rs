//! Draining what waits for a user: the inbox (Redis) and the outboxes of
//! the celebrities they follow and hot threads they subscribe to (pull
//! path), merged in acceptance order, on connect and whenever fan-out
//! pokes the connection.

use herald_store::StoreError;
use herald_types::{EdgeAnswer, Notification, Outbox};

use crate::conn::{Conn, End};

/// Posts pulled from outboxes, with the outbox each came from.
pub(crate) type Pulled = Vec<(Outbox, Notification)>;

impl Conn {
    /// Registers this user in the index of every outbox it reads
    /// (celebrities followed, hot threads subscribed to), then reads them
    /// past its cursors. Registering first means any post is either in what
    /// is read or broadcast after registration. With `hello`, also counts
    /// the posts of those outboxes the user's feed shows unread.
    ///
    /// An error means Redis did not answer: nothing was read, which is not
    /// the same as nothing waiting.
    pub(crate) async fn pull_outboxes(&mut self, hello: bool) -> Result<(Pulled, u64), StoreError> {
        if !self.edge.celebrities.has_owners() {
            return Ok((Vec::new(), 0));
        }
        let mut view = self
            .edge
            .store
            .outbox_cursors(self.user, &self.edge.celebrities, hello)
            .await?;
        // Acks not yet written to Redis count too.
        for c in &mut view.cursors {
            if let Some((_, local)) = self.cursors.iter().find(|(x, _)| *x == c.outbox) {
                c.seen = Some(c.seen.map_or(*local, |s| s.max(*local)));
            }
        }
        for c in &view.cursors {
            self.edge
                .index
                .entry(c.outbox)
                .or_default()
                .insert(self.user);
        }
        let edge = &self.edge;
        let items = edge
            .store
            .outboxes_after(&edge.outboxes, &view.cursors, edge.cfg.drain_limit)
            .await?;
        // Nothing pulled and nothing to count: no preferences read.
        if items.is_empty() && (!hello || view.cursors.is_empty()) {
            return Ok((items, 0));
        }
        // The follower's mutes and modes apply to pulled posts too; posts
        // for the digest or after quiet hours are handed to fan-out's side,
        // which puts them in their bucket, then moves the cursor past them.
        let prefs = self.edge.prefs.get(self.user).await?;
        let now_ms = herald_types::now_ms();
        let unread = match hello {
            true => self.pulled_unread(&view, &prefs, now_ms).await?,
            false => 0,
        };
        let mut deliver = Vec::new();
        for (c, n) in items {
            // A thread's commenter reads its outbox too: not their own.
            if n.actor == self.user {
                continue;
            }
            match prefs.route(n.kind, n.actor, n.object.as_deref(), now_ms) {
                herald_prefs::Route::Drop(_) => {}
                herald_prefs::Route::Wait(bucket, release_ms) => {
                    let seen = Some((c, n.order));
                    self.edge.answers.answer(EdgeAnswer::Hold {
                        user: self.user,
                        bucket,
                        release_ms,
                        n,
                        seen,
                    });
                }
                herald_prefs::Route::Now => deliver.push((c, n)),
            }
        }
        Ok((deliver, unread))
    }

    /// How many posts of `view`'s outboxes the user's feed shows unread.
    async fn pulled_unread(
        &self,
        view: &herald_store::OutboxView,
        prefs: &herald_prefs::Resolved,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let keep = |n: &Notification| prefs.in_feed(n, now_ms);
        let edge = &self.edge;
        edge.store
            .feed_pulled_unread(self.user, view, &edge.outboxes, keep, prefs.in_feed_all())
            .await
    }

    /// The feed's unread count for a `hello` without a drain (a second
    /// connection): the stored entries' and the pulled posts'.
    pub(crate) async fn feed_unread(&self) -> Result<u64, StoreError> {
        let edge = &self.edge;
        let mut unread = edge.store.feed_unread(self.user).await?;
        if edge.celebrities.has_owners() {
            let view = edge
                .store
                .outbox_cursors(self.user, &edge.celebrities, true)
                .await?;
            if !view.cursors.is_empty() {
                let prefs = edge.prefs.get(self.user).await?;
                unread += self
                    .pulled_unread(&view, &prefs, herald_types::now_ms())
                    .await?;
            }
        }
        Ok(unread)
    }

    /// Sends inbox entries and pulled outbox entries merged in acceptance
    /// order, skipping anything already pending on this connection.
    pub(crate) fn send_merged(&mut self, inbox: Vec<Notification>, pulled: Pulled) {
        let all = merged(inbox, pulled);
        if all.is_empty() {
            return;
        }
        let sent = self.link.send_stored(&self.edge, all);
        self.edge.metrics.delivered_inbox.increment(sent);
    }

    /// Reads the inbox (the count for `hello` and its first page) and the
    /// outboxes past this user's cursors. `None` when Redis did not answer:
    /// the caller tries again later (a connection opened during an outage
    /// is drained when Redis returns, without a reconnect).
    ///
    /// With `hello`, the snapshot also takes the count of entries the inbox
    /// cap dropped since the last connection.
    pub(crate) async fn read_waiting(
        &mut self,
        hello: bool,
    ) -> Option<(herald_store::InboxSnapshot, Pulled)> {
        self.removed().await;
        let snap = match self
            .edge
            .store
            .inbox_snapshot(self.user, self.edge.cfg.drain_limit, hello)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user = self.user, error = %e, "inbox drain failed; will retry");
                return None;
            }
        };
        match self.pull_outboxes(hello).await {
            Ok((pulled, unread)) => {
                let mut snap = snap;
                // The feed's unread count includes the pulled posts.
                snap.unread += unread;
                Some((snap, pulled))
            }
            Err(e) => {
                tracing::warn!(user = self.user, error = %e, "outbox pull failed; will retry");
                None
            }
        }
    }

    /// Re-reads the inbox and the outboxes (after a poke, or to retry a
    /// drain that failed); true when it got everything.
    pub(crate) async fn resync(&mut self) -> Result<bool, End> {
        match self.read_waiting(false).await {
            Some((snap, pulled)) => {
                tracing::debug!(
                    user = self.user,
                    inbox = snap.items.len(),
                    pulled = pulled.len(),
                    "drained after a poke"
                );
                self.send_merged(snap.items, pulled);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Inbox entries and pulled outbox entries in acceptance order, each with
/// the outbox it came from (none for the inbox).
pub(crate) fn merged(
    inbox: Vec<Notification>,
    pulled: Pulled,
) -> Vec<(Option<Outbox>, Notification)> {
    let mut all: Vec<(Option<Outbox>, Notification)> =
        inbox.into_iter().map(|n| (None, n)).collect();
    all.extend(pulled.into_iter().map(|(c, n)| (Some(c), n)));
    all.sort_by_key(|(_, n)| n.order);
    all
}
