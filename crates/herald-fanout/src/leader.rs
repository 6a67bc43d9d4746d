//! Replicated partitions (herald-raft): a partition's fan-out runs on its
//! Raft leader only, reads only what a majority of its replicas hold, and
//! continues from the position the last leader saved.
//!
//! The leader's term is the fencing token of the position: a new leader
//! first saves its start position under its term (a script that refuses an
//! older term, `herald_store::Store::save_position`), so a deposed leader
//! that wakes cannot move the position any more, and stops its worker as
//! soon as Raft tells it that it no longer leads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_log::Log;
use herald_raft::{Committed, Replicas};
use herald_store::Store;
use tokio::sync::watch;

use crate::status::PartitionStatus;
use crate::{worker::Worker, Tracker};

/// How often leadership is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What a partition's leadership loop works with.
pub(crate) struct Lead {
    pub p: u32,
    pub replicas: Arc<Replicas>,
    pub log: Log,
    pub store: Store,
    /// The fan-out's consumer group (its local checkpoint).
    pub group: String,
    pub tracker: Arc<Tracker>,
    pub status: Arc<PartitionStatus>,
    /// The term of the running worker (0: none), for the committer.
    pub term: Arc<AtomicU64>,
}

/// Runs partition `p`'s worker whenever this node leads it. `make` builds
/// a worker with its own stop signal, the committed position and the term
/// its fenced writes carry.
pub(crate) async fn lead_loop(
    lead: Lead,
    mut stop: watch::Receiver<bool>,
    make: impl Fn(watch::Receiver<bool>, watch::Receiver<Committed>, u64) -> Worker + Send + 'static,
) {
    let Lead {
        p,
        replicas,
        log,
        store,
        group,
        tracker,
        status,
        term: term_cell,
    } = lead;
    loop {
        // Wait to lead (a replica held here, opened now or later).
        let (term, committed) = loop {
            if *stop.borrow() {
                return;
            }
            if let (Some(t), Some(c)) = (replicas.leading(p), replicas.committed(p)) {
                break (t, c);
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => {}
            }
        };
        // Never before where the log starts: a new partition's first
        // records sit at a fresh base, past an empty start.
        let first = log.bounds(p).map_or(0, |b| b.0);
        let local = log.checkpoints().get(&group, p).unwrap_or(first).max(first);
        let saved = match store.position(p).await {
            Ok(pos) => pos,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "fan-out position unreadable; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let start = local.max(saved.map_or(first, |s| s.offset));
        match store.save_position(p, term, start).await {
            Ok(true) => {}
            Ok(false) => {
                // A newer leader exists; Raft will say so shortly.
                tokio::time::sleep(LOOK_EVERY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "fan-out position not saved; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tracker.restart(start);
        term_cell.store(term, Ordering::Release);
        tracing::info!(
            partition = p,
            term,
            offset = start,
            "leading the partition: fan-out starts"
        );
        metrics::counter!("herald_fanout_lead_starts_total").increment(1);
        let (wstop_tx, wstop_rx) = watch::channel(false);
        let worker = tokio::spawn(make(wstop_rx, committed.clone(), term).run(start));
        // Lead until Raft says otherwise or the node stops.
        loop {
            if *stop.borrow() || replicas.leading(p) != Some(term) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
        let _ = wstop_tx.send(true);
        let _ = worker.await;
        term_cell.store(0, Ordering::Release);
        // A failing step or records given up on under that leadership are
        // the new leader's to redo: nothing here waits on them any more.
        status.ok();
        status.pinned(0);
        if *stop.borrow() {
            return;
        }
        tracing::info!(
            partition = p,
            term,
            "no longer leading the partition: fan-out stopped"
        );
    }
}

/// The committer's side: saves the settled position under the running
/// worker's term. A refusal means a newer leader holds the partition.
pub(crate) async fn save(store: &Store, p: u32, term_cell: &AtomicU64, offset: u64) {
    let term = term_cell.load(Ordering::Acquire);
    if term == 0 {
        return;
    }
    match store.save_position(p, term, offset).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                partition = p,
                term,
                "a newer leader holds the partition's position; not saved"
            );
            metrics::counter!("herald_fanout_position_fenced_total").increment(1);
        }
        Err(e) => tracing::warn!(partition = p, error = %e, "fan-out position not saved"),
    }
}
