//! Fan-out's side of the seam's answers: every partition's [`Tracker`],
//! found by the partition a [`RecordRef`] names. Edges (this node's, or
//! another's over the network) answer here.

use std::sync::Arc;
use std::time::Duration;

use herald_log::Log;
use herald_store::Store;
use herald_types::{Answers, EdgeAnswer, Notification, RecordRef, Settle, UserId};
use tokio::sync::mpsc;

use crate::{FanoutConfig, Tracker};

/// Refused pushes that came back after the fact, waiting for the inbox.
const LATE_REFUSALS: usize = 10_000;

/// Every partition's tracker, and a writer for pushes an edge refused
/// after the fact.
pub struct Settlements {
    trackers: Vec<Arc<Tracker>>,
    refused: mpsc::Sender<(UserId, Notification, Settle)>,
}

impl Settlements {
    /// Trackers from each partition's committed position; a position past
    /// the end of its partition (the log lost its tail, or was restored
    /// from a copy) is reconciled to the end: new records get offsets past
    /// anything handed out before.
    pub fn new(log: &Log, cfg: &FanoutConfig, store: Store) -> Arc<Settlements> {
        let mut trackers = Vec::new();
        for p in 0..log.partitions() {
            let (first, end) = log.bounds(p).unwrap_or((0, 0));
            let start = match log.checkpoints().get(&cfg.group, p) {
                Some(c) if c > end => {
                    tracing::error!(
                        partition = p,
                        checkpoint = c,
                        end,
                        "fan-out checkpoint past the end of the partition; continuing from the end"
                    );
                    metrics::counter!("herald_fanout_position_reset_total").increment(1);
                    end
                }
                Some(c) => c,
                None => first,
            };
            trackers.push(Tracker::new(p, start));
        }
        let (tx, rx) = mpsc::channel(LATE_REFUSALS);
        let s = Arc::new(Settlements {
            trackers,
            refused: tx,
        });
        tokio::spawn(write_refused(
            store,
            rx,
            Arc::downgrade(&s),
            cfg.retry_backoff,
        ));
        s
    }

    pub fn tracker(&self, partition: u32) -> Option<&Arc<Tracker>> {
        self.trackers.get(partition as usize)
    }

    pub(crate) fn trackers(&self) -> &[Arc<Tracker>] {
        &self.trackers
    }

    fn each(&self, s: &Settle, f: impl Fn(&Tracker, &RecordRef)) {
        for r in s.refs() {
            if let Some(t) = self.trackers.get(r.partition as usize) {
                f(t, r);
            }
        }
    }

    /// Counts one more holder of each record `s` names (before handing it
    /// to an edge).
    pub fn retain(&self, s: &Settle) {
        self.each(s, |t, r| t.retain(r, 1));
    }

    pub fn release(&self, s: &Settle) {
        self.each(s, |t, r| t.release(r));
    }

    pub fn fail(&self, s: &Settle) {
        self.each(s, |t, r| t.fail(r));
    }
}

impl Answers for Settlements {
    fn answer(&self, a: EdgeAnswer) {
        match a {
            EdgeAnswer::Settled(s) => self.release(&s),
            EdgeAnswer::Failed(s) => self.fail(&s),
            EdgeAnswer::Refused {
                user, n, settle, ..
            } => {
                if let Err(e) = self.refused.try_send((user, n, settle)) {
                    let (.., settle) = match e {
                        mpsc::error::TrySendError::Full(x)
                        | mpsc::error::TrySendError::Closed(x) => x,
                    };
                    tracing::error!(
                        user,
                        "late refusals queue full; the record is processed again after restart"
                    );
                    self.fail(&settle);
                }
            }
        }
    }

    fn settled(&self, list: Vec<Settle>) {
        for s in &list {
            self.release(s);
        }
    }
}

/// Writes pushes an edge refused after the fact to their inboxes (with
/// retry while Redis is unreachable), then releases them.
async fn write_refused(
    store: Store,
    mut rx: mpsc::Receiver<(UserId, Notification, Settle)>,
    settlements: std::sync::Weak<Settlements>,
    backoff: Duration,
) {
    while let Some((user, n, settle)) = rx.recv().await {
        let mut wait = backoff;
        loop {
            match store.inbox_push(&[(user, &n)]).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(user, error = %e, "inbox write of a refused push failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        let Some(s) = settlements.upgrade() else {
            return;
        };
        s.release(&settle);
    }
}
