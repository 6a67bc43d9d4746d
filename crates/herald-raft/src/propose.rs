//! Folding producers into Raft entries.

use std::sync::Arc;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::group::ReplicaError;
use crate::types::{Proposal, Raft};

/// Largest proposal: several producers' records go in one entry up to this.
pub(crate) const MAX_ENTRY_BYTES: usize = 4 << 20;
/// Proposals of one partition in flight at once.
const IN_FLIGHT: usize = 8;
/// Producers waiting per partition before `propose` waits for room.
pub(crate) const QUEUE: usize = 4096;

pub(crate) struct Pending {
    pub records: Vec<Bytes>,
    pub reply: oneshot::Sender<Result<u64, ReplicaError>>,
}

/// Folds waiting producers into proposals (one Raft entry each, up to
/// [`MAX_ENTRY_BYTES`]), with up to [`IN_FLIGHT`] uncommitted at a time,
/// and answers each producer with its first record's offset.
pub(crate) async fn propose_loop(partition: u32, raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut bytes: usize = batch[0].records.iter().map(|r| r.len()).sum();
        while bytes < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.records.iter().map(|r| r.len()).sum::<usize>();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(batch.iter().map(|p| p.records.len()).sum());
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch {
            replies.push((records.len() as u64, p.reply));
            records.extend(p.records);
        }
        let proposal = Proposal {
            base: u64::MAX,
            ts: now_ms(),
            records,
        };
        let answer = match raft.client_write_ff(proposal).await {
            Ok(rx) => rx,
            Err(e) => {
                for (_, r) in replies {
                    let _ = r.send(Err(ReplicaError::Failed {
                        partition,
                        why: e.to_string(),
                    }));
                }
                return;
            }
        };
        tokio::spawn(async move {
            let res = answer.await;
            drop(slot);
            for (at, r) in replies {
                let _ = r.send(match &res {
                    Ok(Ok(w)) => Ok(w.data.base + at),
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(ReplicaError::NotLeader {
                        partition,
                        leader: None,
                    }),
                    Ok(Err(e)) => Err(ReplicaError::Failed {
                        partition,
                        why: e.to_string(),
                    }),
                    // The group dropped the write unanswered (it lost its
                    // leadership, or stopped): its fate is unknown; the
                    // producer is sent on to whoever leads now.
                    Err(_) => Err(ReplicaError::NotLeader {
                        partition,
                        leader: None,
                    }),
                });
            }
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
