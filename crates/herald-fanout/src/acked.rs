//! Inbox entries clients acked, taken out of the inbox by fan-out (the
//! inbox's owner; the edge writes none): marked delivered in the user's
//! entries (the feed keeps them) or removed with the feed off. One lane of
//! its own, so a removal never waits behind a mass parking, and many
//! connections' acks share one pipeline.

use std::time::Duration;

use herald_store::Store;
use herald_types::UserId;
use tokio::sync::{mpsc, oneshot};

/// Ack frames (of stored entries) waiting for their removal. Past it an
/// ack is not applied: its entries are sent again on the next drain (same
/// ids, which clients drop), counted in `herald_inbox_acks_dropped_total`.
pub(crate) const ACKED_QUEUE: usize = 65_536;

/// Most ack frames removed in one pipeline.
const REMOVE_BATCH: usize = 1024;

/// One ack frame's stored entries, and whom to tell once they are gone.
pub(crate) struct Removal {
    pub user: UserId,
    pub ids: Vec<String>,
    pub done: oneshot::Sender<()>,
}

/// Starts the lane; its sender goes to [`crate::Settlements`].
pub(crate) fn start(store: Store, backoff: Duration) -> mpsc::Sender<Removal> {
    let (tx, rx) = mpsc::channel(ACKED_QUEUE);
    tokio::spawn(remove_loop(store, rx, backoff));
    tx
}

/// Hands one ack frame's entries to the lane; when it is full they stay
/// (and `done` is dropped, so the connection does not wait for them).
pub(crate) fn request(lane: &mpsc::Sender<Removal>, r: Removal) {
    if let Err(e) = lane.try_send(r) {
        let user = match &e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r.user,
        };
        metrics::counter!("herald_inbox_acks_dropped_total").increment(1);
        tracing::warn!(
            user,
            "acked inbox entries not removed (removal queue full); they are sent again on the next drain"
        );
    }
}

/// Removes what the lane receives, up to [`REMOVE_BATCH`] frames per
/// pipeline, retrying with backoff while Redis does not answer (in
/// order: a frame is answered only after every earlier one was removed).
async fn remove_loop(store: Store, mut rx: mpsc::Receiver<Removal>, backoff: Duration) {
    let mut batch: Vec<Removal> = Vec::new();
    while rx.recv_many(&mut batch, REMOVE_BATCH).await > 0 {
        let items: Vec<(UserId, Vec<String>)> = batch
            .iter_mut()
            .map(|r| (r.user, std::mem::take(&mut r.ids)))
            .collect();
        let mut wait = herald_types::Backoff::new(backoff, Duration::from_secs(5));
        let mut failed = false;
        while let Err(e) = store.inbox_remove_many(&items).await {
            if !failed {
                tracing::warn!(error = %e, frames = items.len(), "acked inbox entries not removed; retrying");
            }
            failed = true;
            wait.sleep().await;
        }
        let n: usize = items.iter().map(|(_, ids)| ids.len()).sum();
        metrics::counter!("herald_inbox_acks_removed_total").increment(n as u64);
        for r in batch.drain(..) {
            let _ = r.done.send(());
        }
    }
}
