//! What happens to notifications a connection sent: acks, the ack
//! timeout, the cap on unacked, and the connection's end.

use std::sync::Arc;
use std::time::Instant;

use herald_types::{Notification, Settle};

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
        self.give_back(late, "ack_timeout");
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
        self.give_back(ids, "unacked_cap");
    }

    /// Gives these live notifications back to fan-out, which parks them
    /// (the inbox): each stays pending here as an inbox entry, so an ack
    /// still removes it. (An ack that races the parking may leave a copy
    /// in the inbox: the client drops it by id.)
    fn give_back(&mut self, ids: Vec<Arc<str>>, route: &'static str) {
        if ids.is_empty() {
            return;
        }
        // Copies another device still holds, or acked, are only dropped.
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
        self.report_unacked(owed, route);
    }

    /// Reports notifications nobody acked to fan-out (their owner), one
    /// answer each.
    fn report_unacked(&self, owed: Vec<(Notification, Settle)>, route: &'static str) {
        if owed.is_empty() {
            return;
        }
        metrics::counter!("herald_notifications_total", "route" => route)
            .increment(owed.len() as u64);
        for (n, settle) in owed {
            self.edge.answers.answer(herald_types::EdgeAnswer::Refused {
                user: self.user,
                n,
                settle,
                why: herald_types::Refusal::Unacked,
            });
        }
    }

    /// The connection is over: everything live that was not acked (sent,
    /// or still waiting to be written) goes back to fan-out, which parks it.
    pub(crate) async fn settle_on_close(&mut self, pending: crate::link::PendingMap) {
        self.flush_cursors().await;
        let mut left: Vec<(Notification, Settle)> = Vec::new();
        // Copies another device of the user still holds (or acked) are
        // only dropped; the last copy nobody acked goes back. Shared
        // (celebrity) frames stay in their outbox: nothing to do. Copies
        // another node handed over go back to it the same way.
        for (_, p) in pending {
            if let Kind::Live(d) = p.kind {
                let Direct { n, settle } = *d;
                if let Some(s) = settle.dropped() {
                    left.push((n, s));
                }
            }
        }
        self.report_unacked(left, "queued_on_close");
    }
}
