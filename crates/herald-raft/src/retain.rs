//! Retention on a replicated partition. Every few seconds, per replica:
//!
//! 1. the replica's start (its snapshot) moves on to the last entry that
//!    fan-out no longer needs (the partition's lowest local checkpoint, at
//!    most the committed end), saved before it is used;
//! 2. the log's retention is held at that start, so a segment is removed
//!    only once the start covers it;
//! 3. Raft is told what retention removed (it "purges" up to the first
//!    entry still held), so a follower further behind is sent the start
//!    (a snapshot) and continues from it instead of waiting for entries
//!    that are gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_log::Log;

use crate::machine::{lock, StartCell, WantCell};
use crate::store::PartitionStore;
use crate::types::Raft;

/// How often the start moves on and Raft hears what retention removed.
const EVERY: Duration = Duration::from_secs(2);
/// The longest wait for Raft to build a snapshot asked for.
const BUILD_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Retain {
    pub partition: u32,
    pub raft: Raft,
    pub store: PartitionStore,
    pub log: Log,
    pub start: StartCell,
    pub want: WantCell,
    /// The log's first offset when Raft was last told what is gone.
    pub seen_start: Option<Option<u64>>,
    /// Set when the group removed this replica: the start moves to the
    /// committed end, whatever fan-out's checkpoints say (fan-out of the
    /// partition runs elsewhere from now on).
    pub leaving: Arc<AtomicBool>,
}

/// How long a replica being given up waits for its start to reach its
/// committed end.
const LEAVE_WAIT: Duration = Duration::from_secs(6);

/// Waits (up to [`LEAVE_WAIT`]) until the start of a replica marked
/// leaving covers what it holds committed (but its last entry, which a
/// start never covers).
pub(crate) async fn settle_before_leaving(raft: &Raft, start: &StartCell) {
    let until = Instant::now() + LEAVE_WAIT;
    while Instant::now() < until {
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        let at = lock(start)
            .as_ref()
            .and_then(|s| s.last())
            .map_or(0, |l| l.index);
        if at + 1 >= applied {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Holds retention so that the entry right after a start whose records
/// continue at `next_offset` stays: an entry without records (a new
/// leader's blank entry) there sits at `next_offset` in the segment that
/// ends at it, which is kept too.
fn hold(log: &Log, partition: u32, next_offset: u64) -> herald_log::Result<()> {
    log.hold_retention(partition, next_offset.saturating_sub(1))
}

pub(crate) async fn retain_loop(mut r: Retain) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A replica being given up moves on at once, and keeps moving.
        if !r.leaving.load(Ordering::Acquire) {
            tick.tick().await;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !r.log.is_open() {
            return;
        }
        let held = lock(&r.start).as_ref().map_or(0, |s| s.next_offset);
        if hold(&r.log, r.partition, held).is_err() {
            return;
        }
        match r.step().await {
            Ok(()) => {}
            // The group stopped.
            Err(()) => return,
        }
    }
}

impl Retain {
    async fn step(&mut self) -> Result<(), ()> {
        let m = self.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return Err(());
        }
        // What fan-out still needs, else everything committed.
        let committed = m.last_applied;
        let upto = match self.leaving.load(Ordering::Acquire) {
            true => u64::MAX,
            false => self
                .log
                .checkpoints()
                .min_committed(self.partition)
                .unwrap_or(u64::MAX),
        };
        let current = lock(&self.start).as_ref().and_then(|s| s.last());
        if let Some((id, next_offset)) = self.store.boundary_below(upto) {
            if Some(id) <= committed && Some(id) > current {
                *lock(&self.want) = Some((id, next_offset));
                self.raft.trigger().snapshot().await.map_err(|_| ())?;
                let mut metrics = self.raft.metrics();
                let built = tokio::time::timeout(BUILD_WAIT, async {
                    loop {
                        if metrics.borrow().snapshot >= Some(id) {
                            return true;
                        }
                        if metrics.changed().await.is_err() {
                            return false;
                        }
                    }
                })
                .await;
                if matches!(built, Ok(true)) {
                    if let Some(s) = lock(&self.start).as_ref() {
                        let _ = hold(&self.log, self.partition, s.next_offset);
                    }
                } else {
                    tracing::debug!(
                        partition = self.partition,
                        "a snapshot asked for was not built in time"
                    );
                }
            }
        }
        // Raft forgets what retention removed (never past the start): read
        // only when retention moved the log's first offset.
        let start = self.log.bounds(self.partition).map(|b| b.0).ok();
        if self.seen_start == Some(start) {
            return Ok(());
        }
        self.seen_start = Some(start);
        if let Some(first) = self.store.first_held() {
            let gone = first.checked_sub(1);
            if let Some(upto) = gone {
                if self.store.purged().map(|p| p.index) < Some(upto) {
                    self.raft.trigger().purge_log(upto).await.map_err(|_| ())?;
                }
            }
        }
        Ok(())
    }
}
