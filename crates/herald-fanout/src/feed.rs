//! Writing what each user is sent to their feed, off the delivery path.
//!
//! Workers hand every routed notification (live or stored) to one writer
//! task through a bounded queue (a full queue makes workers wait). The
//! writer coalesces what is queued, and what comes within [`LINGER`] of
//! the first, into one pipeline. Each notification's
//! records stay unsettled until its feed entry is written, so a crash
//! before the write processes them again (ids are stable; the entry is
//! written once). An error that repeats is given up after bounded attempts
//! (counted, logged): a feed entry is never worth redelivering for.

use std::sync::Arc;
use std::time::Duration;

use herald_store::Store;
use herald_types::{Notification, Settle, UserId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::settle::Settlements;
use crate::status::PartitionStatus;

/// Batches queued between workers and the writer.
const QUEUE: usize = 256;
/// Most entries written in one pipeline.
const MOST: usize = 4096;
/// How long the writer waits for more entries after the first of a
/// pipeline: the feed is off the delivery path, and a pipeline's fixed cost
/// (wake-ups, a round trip) is shared by a few rounds of fan-out.
const LINGER: Duration = Duration::from_millis(5);
/// Attempts at a write that fails the same way every time.
const PERMANENT_ATTEMPTS: u32 = 4;

type Batch = Vec<(UserId, Notification, Settle)>;

/// Hands notifications to the feed writer.
#[derive(Clone)]
pub(crate) struct FeedWriter {
    tx: Option<mpsc::Sender<Batch>>,
    settlements: Arc<Settlements>,
}

impl FeedWriter {
    /// Starts the writer (none when feeds are off: `feed_cap` 0).
    pub(crate) fn start(
        store: Store,
        settlements: Arc<Settlements>,
        stop: watch::Receiver<bool>,
        status: Arc<PartitionStatus>,
    ) -> (FeedWriter, Option<JoinHandle<()>>) {
        if store.config().feed_cap == 0 {
            let w = FeedWriter {
                tx: None,
                settlements,
            };
            return (w, None);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, settlements.clone(), rx, stop, status));
        let w = FeedWriter {
            tx: Some(tx),
            settlements,
        };
        (w, Some(task))
    }

    /// Whether feeds are written at all.
    pub(crate) fn on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a batch whose records the caller retained once each (before
    /// anything else could settle them); they are released once written.
    pub(crate) async fn write(&self, batch: Batch) {
        let Some(tx) = &self.tx else { return };
        if batch.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(batch)) = tx.send(batch).await {
            // The writer is gone (stopping): processed again after restart.
            for (_, _, s) in &batch {
                self.settlements.fail(s);
            }
        }
    }
}

async fn run(
    store: Store,
    settlements: Arc<Settlements>,
    mut rx: mpsc::Receiver<Batch>,
    stop: watch::Receiver<bool>,
    status: Arc<PartitionStatus>,
) {
    let written = metrics::counter!("herald_feed_entries_total", "result" => "written");
    let failed = metrics::counter!("herald_feed_entries_total", "result" => "failed");
    while let Some(mut batch) = rx.recv().await {
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MOST {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(more)) => batch.extend(more),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let refs: Vec<(UserId, &Notification)> = batch.iter().map(|(u, n, _)| (*u, n)).collect();
        // A transient error (Redis unreachable, out of memory, loading,
        // failing over) is waited out for as long as it lasts, with the
        // wait growing to 5 s; only an error that repeats is given up.
        let mut attempts = 0u32;
        let mut waits = 0u32;
        let outcome = loop {
            match store.feed_add(&refs).await {
                Ok(()) => {
                    status.ok();
                    break Ok(());
                }
                Err(e) => {
                    status.failing(|| format!("write failed: {}", e.public_reason()));
                    if !e.is_transient() {
                        attempts += 1;
                    }
                    if attempts >= PERMANENT_ATTEMPTS {
                        status.ok();
                        break Err(e);
                    }
                    if *stop.borrow() {
                        break Err(e);
                    }
                    tracing::warn!(error = %e, entries = refs.len(), "feed write failed, retrying");
                    waits += 1;
                    let wait = (Duration::from_millis(100) * (1 << waits.min(6)))
                        .min(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop_changed(&stop) => {}
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                written.increment(batch.len() as u64);
                for (_, _, s) in &batch {
                    settlements.release(s);
                }
            }
            Err(e) if *stop.borrow() && e.is_transient() => {
                tracing::warn!(error = %e, entries = batch.len(), "feed write failed while stopping; processed again after restart");
                for (_, _, s) in &batch {
                    settlements.fail(s);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "feed write fails every time; these entries are not in the feed");
                failed.increment(batch.len() as u64);
                for (_, _, s) in &batch {
                    settlements.release(s);
                }
            }
        }
    }
}

/// Resolves once the node is stopping.
async fn stop_changed(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    let _ = stop.wait_for(|s| *s).await;
}
