//! What happens to notifications a connection sent: acks, the ack
//! timeout, the cap on unacked, and the connection's end.

use std::sync::Arc;
use std::time::Instant;

use herald_types::{Notification, Settle, UserId};

use crate::conn::{Conn, Kind};
use crate::frames::{self, ClientFrame};
use crate::Direct;

/// Acks of the frames read together, applied at once.
#[derive(Default)]
pub(crate) struct Acks {
    /// Live notifications acked: fan-out's records to settle.
    settled: Vec<Settle>,
    /// Inbox entries (or unknown ids) to remove from the inbox.
    remove: Vec<String>,
}

impl Conn {
    /// One client frame: an ack's ids are sorted into `acks` (applied by
    /// `apply_acks` once every frame already read was handled).
    pub(crate) fn on_frame(&mut self, data: &[u8], binary: bool, acks: &mut Acks) {
        match frames::parse(data, binary) {
            Ok(ClientFrame::Ack(ids)) => {
                self.edge.metrics.acks.increment(ids.len() as u64);
                let mut o = self.link.lock();
                for id in ids {
                    match o.unacked.remove(&*id).map(|p| p.kind) {
                        Some(Kind::Live(d)) => acks.settled.extend(d.settle.acked()),
                        Some(Kind::Outbox { celebrity, order }) => {
                            match self.cursors.iter_mut().find(|(c, _)| *c == celebrity) {
                                Some(e) => e.1 = e.1.max(order),
                                None => self.cursors.push((celebrity, order)),
                            }
                        }
                        Some(Kind::Stored) | None => acks.remove.push(id.into_owned()),
                    }
                }
                // A drained page leaves a large, empty map behind.
                if o.unacked.is_empty() && o.unacked.capacity() > 64 {
                    o.unacked.shrink_to(8);
                }
            }
            Err(why) => {
                metrics::counter!("herald_ws_bad_frames_total").increment(1);
                let f = frames::error("bad_frame", &why, self.link.fmt);
                self.link.send(&self.edge.metrics, vec![f]);
            }
        }
    }

    /// Applies the acks of the frames read together: one answer to
    /// fan-out for the live ones, one inbox write for the stored ones.
    pub(crate) async fn apply_acks(&mut self, acks: Acks) {
        if !acks.settled.is_empty() {
            self.edge.answers.settled(acks.settled);
        }
        if !acks.remove.is_empty() {
            if let Err(e) = self.edge.store.inbox_remove(self.user, &acks.remove).await {
                tracing::warn!(user = self.user, error = %e, "ack not applied to inbox; will redeliver");
            }
        }
    }

    /// Writes the outbox cursors acked since the last write (one pipeline);
    /// kept for the next try when Redis does not answer.
    pub(crate) async fn flush_cursors(&mut self) {
        self.cursors_at = Instant::now();
        if self.cursors.is_empty() {
            return;
        }
        match self.edge.store.outbox_seen(self.user, &self.cursors).await {
            Ok(()) => self.cursors.clear(),
            Err(e) => {
                tracing::warn!(user = self.user, error = %e, "outbox cursors not written; retrying later")
            }
        }
    }

    /// Moves live notifications unacked past the ack timeout to the inbox.
    pub(crate) async fn sweep(&mut self) {
        let timeout = self.edge.cfg.ack_timeout;
        let late: Vec<Arc<str>> = self
            .link
            .lock()
            .unacked
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Live(..)) && p.sent.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        self.move_to_inbox(late).await;
    }

    /// Past `max_unacked`: the oldest live ones go to the inbox.
    pub(crate) async fn spill_oldest(&mut self) {
        let ids: Vec<Arc<str>> = {
            let o = self.link.lock();
            let excess = o.unacked.len().saturating_sub(self.edge.cfg.max_unacked);
            if excess == 0 {
                return;
            }
            let mut live: Vec<(&Arc<str>, Instant)> = o
                .unacked
                .iter()
                .filter(|(_, p)| matches!(p.kind, Kind::Live(..)))
                .map(|(id, p)| (id, p.sent))
                .collect();
            live.sort_by_key(|(_, t)| *t);
            live.into_iter()
                .take(excess)
                .map(|(id, _)| id.clone())
                .collect()
        };
        self.move_to_inbox(ids).await;
    }

    /// Writes these live notifications to the inbox; they stay pending as
    /// inbox entries, and are answered `Settled` once the write succeeded.
    async fn move_to_inbox(&mut self, ids: Vec<Arc<str>>) {
        if ids.is_empty() {
            return;
        }
        // Copies another device still holds, or acked, are only dropped
        // here; the others are written and then settled.
        let mut owed: Vec<(Notification, Settle)> = Vec::new();
        {
            let mut o = self.link.lock();
            for id in &ids {
                let Some(p) = o.unacked.get_mut(&**id) else {
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
                            o.unacked.remove(&**id);
                        }
                    }
                }
            }
        }
        if owed.is_empty() {
            return;
        }
        let items: Vec<(UserId, &Notification)> =
            owed.iter().map(|(n, _)| (self.user, n)).collect();
        match self.edge.store.inbox_push(&items).await {
            Ok(_) => {
                metrics::counter!("herald_notifications_total", "route" => "ack_timeout")
                    .increment(owed.len() as u64);
                // The inbox has them now: pending as inbox entries.
                self.edge
                    .answers
                    .settled(owed.into_iter().map(|(_, s)| s).collect());
            }
            Err(e) => {
                // Kept as inbox entries to the client; written in the
                // background like a closed connection's leftovers.
                tracing::warn!(user = self.user, error = %e, "moving unacked to inbox failed; retrying in the background");
                self.edge.spill(self.user, owed);
            }
        }
    }

    /// The connection is over: everything live that was not acked (sent,
    /// or still waiting to be written) goes to the inbox.
    pub(crate) async fn settle_on_close(&mut self, pending: crate::link::PendingMap) {
        self.flush_cursors().await;
        let mut left: Vec<(Notification, Settle)> = Vec::new();
        // Copies another device of the user still holds (or acked) are
        // only dropped; the last copy nobody acked is stored. Shared
        // (celebrity) frames stay in their outbox: nothing to do.
        for (_, p) in pending {
            if let Kind::Live(d) = p.kind {
                let Direct { n, settle } = *d;
                if let Some(s) = settle.dropped() {
                    left.push((n, s));
                }
            }
        }
        // Copies another node handed over go back to it: it stores them
        // unless another device of the user acked the same notification.
        let (remote, left): (Vec<_>, Vec<_>) = left
            .into_iter()
            .partition(|(_, s)| matches!(s, Settle::Remote(_)));
        for (n, settle) in remote {
            self.edge.answers.answer(herald_types::EdgeAnswer::Refused {
                user: self.user,
                n,
                settle,
                why: herald_types::Refusal::Offline,
            });
        }
        if left.is_empty() {
            return;
        }
        metrics::counter!("herald_notifications_total", "route" => "queued_on_close")
            .increment(left.len() as u64);
        let items: Vec<(UserId, &Notification)> =
            left.iter().map(|(n, _)| (self.user, n)).collect();
        match self.edge.store.inbox_push(&items).await {
            Ok(_) => {
                drop(items);
                self.edge
                    .answers
                    .settled(left.into_iter().map(|(_, s)| s).collect());
                // A newer connection for this user may have drained already.
                self.edge.poke(self.user);
            }
            Err(e) => {
                // Redis is down: the edge keeps retrying in the background
                // until the inbox has them; their records stay unsettled
                // until then, never pinned for the life of the process.
                tracing::warn!(user = self.user, error = %e, "writing unacked to inbox failed; retrying in the background");
                drop(items);
                self.edge.spill(self.user, left);
            }
        }
    }
}
