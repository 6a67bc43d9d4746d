//! When a connection's sent notifications are acked, given back or left:
//! the acks read, the ack timeout, the cap on unacked and the connection's
//! end. What the set holds and how each question is answered is in
//! `pending.rs`; this is the connection's side (locking, reports to
//! fan-out, waiting for the removal of acked inbox entries).

use std::time::Instant;

use herald_types::{Notification, Settle};

use crate::conn::Conn;
use crate::frames::{self, ClientFrame};
use crate::pending::{self, Acks};

/// Longest a drain waits for fan-out to remove the entries its client
/// acked (Redis slow or away: the drain itself would fail anyway).
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Conn {
    /// One client frame: an ack's ids are sorted into `acks` (applied by
    /// `apply_acks` once every frame already read was handled).
    pub(crate) fn on_frame(&mut self, data: &[u8], binary: bool, acks: &mut Acks) {
        match frames::parse(data, binary) {
            Ok(ClientFrame::Ack(ids)) => {
                self.edge.metrics.acks.increment(ids.len() as u64);
                let mut o = self.link.lock();
                pending::ack(&mut o.unacked, ids, acks, &mut self.cursors);
            }
            // Within the connection's control-frame budget (past it the
            // ping is not answered).
            Ok(ClientFrame::Ping) => {
                if self.control.take(self.edge.cfg.max_control_per_s) {
                    let f = frames::pong(self.link.fmt);
                    self.link.send(&self.edge.metrics, vec![f]);
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
    /// fan-out for the live ones, one for the stored ones (fan-out removes
    /// them from the inbox; the edge writes none).
    pub(crate) fn apply_acks(&mut self, acks: Acks) {
        if !acks.settled.is_empty() {
            self.edge.answers.settled(acks.settled);
        }
        if !acks.remove.is_empty() {
            self.removals.retain_mut(|r| {
                matches!(
                    r.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                )
            });
            let (done, removed) = tokio::sync::oneshot::channel();
            self.removals.push(removed);
            self.edge.answers.answer(herald_types::EdgeAnswer::Acked {
                user: self.user,
                ids: acks.remove,
                done,
            });
        }
    }

    /// Waits until fan-out removed every inbox entry this connection's
    /// client acked (before the inbox is read again, so none is sent
    /// twice), at most [`REMOVAL_WAIT`]: past it the read goes ahead and an
    /// acked entry may come again (same id, which clients drop).
    pub(crate) async fn removed(&mut self) {
        if self.removals.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(self.removals.drain(..));
        if tokio::time::timeout(REMOVAL_WAIT, all).await.is_err() {
            metrics::counter!("herald_ws_ack_removal_waits_timed_out_total").increment(1);
            tracing::warn!(
                user = self.user,
                "acked inbox entries not confirmed removed in time; reading the inbox anyway"
            );
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

    /// Live notifications unacked past the ack timeout go back to fan-out.
    pub(crate) async fn sweep(&mut self) {
        let timeout = self.edge.cfg.ack_timeout;
        let owed = {
            let mut o = self.link.lock();
            let late = pending::overdue(&o.unacked, timeout);
            pending::give_back(&mut o.unacked, &late)
        };
        self.report_unacked(owed, "ack_timeout");
    }

    /// Past `max_unacked`: the oldest live ones go back to fan-out.
    pub(crate) async fn spill_oldest(&mut self) {
        let owed = {
            let mut o = self.link.lock();
            let ids = pending::past_cap(&o.unacked, self.edge.cfg.max_unacked);
            pending::give_back(&mut o.unacked, &ids)
        };
        self.report_unacked(owed, "unacked_cap");
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
    pub(crate) async fn settle_on_close(&mut self, set: pending::PendingMap) {
        self.flush_cursors().await;
        self.report_unacked(pending::left_on_close(set), "queued_on_close");
    }
}
