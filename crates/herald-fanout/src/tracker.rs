//! Which records of a partition are still unsettled, and so how far the
//! consumer checkpoint may move.
//!
//! A record is held while fan-out processes it (a [`Hold`]) and once more
//! for every notification made from it that someone else holds: an edge
//! until the client acks or the inbox has it, the aggregator while it folds
//! it. Each hold is released once; the record settles when none is left.
//! Holds name a record by [`RecordRef`] (partition, offset, attempt), plain
//! data that can travel with a notification to another node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use herald_types::RecordRef;

#[derive(Debug, Default)]
struct State {
    /// Unsettled records: (attempt, holds).
    open: BTreeMap<u64, (u32, u32)>,
    /// Records whose notifications could be neither delivered nor stored:
    /// the checkpoint stays before them until they are processed again
    /// (the worker retries them) or the process restarts.
    pinned: BTreeSet<u64>,
    /// One past the last record handed out.
    high: u64,
    /// Attempts handed out so far (a record processed again gets a new one).
    attempts: u32,
}

/// Tracks settlement of one partition's records.
#[derive(Debug)]
pub struct Tracker {
    partition: u32,
    state: Mutex<State>,
}

impl Tracker {
    pub fn new(partition: u32, start: u64) -> Arc<Tracker> {
        Arc::new(Tracker {
            partition,
            state: Mutex::new(State {
                high: start,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or restarts) processing the record at `offset`, with one
    /// hold: the processing itself.
    pub fn begin(self: &Arc<Self>, offset: u64) -> Hold {
        let attempt = {
            let mut s = self.lock();
            s.attempts = s.attempts.wrapping_add(1);
            let a = s.attempts;
            s.open.insert(offset, (a, 1));
            // Given up on before and processed again now: in `open` and out
            // of `pinned` under one lock, so the checkpoint never slips
            // past it in between.
            s.pinned.remove(&offset);
            s.high = s.high.max(offset + 1);
            a
        };
        Hold {
            tracker: self.clone(),
            rec: RecordRef {
                partition: self.partition,
                offset,
                attempt,
            },
            done: false,
        }
    }

    /// Adds `n` holds on `r` (ignored for an older attempt).
    pub fn retain(&self, r: &RecordRef, n: u32) {
        let mut s = self.lock();
        if let Some(e) = s.open.get_mut(&r.offset) {
            if e.0 == r.attempt {
                e.1 += n;
            }
        }
    }

    /// Releases one hold on `r`; the record settles when none is left.
    pub fn release(&self, r: &RecordRef) {
        let mut s = self.lock();
        if let Some(e) = s.open.get_mut(&r.offset) {
            if e.0 == r.attempt {
                e.1 = e.1.saturating_sub(1);
                if e.1 == 0 {
                    s.open.remove(&r.offset);
                }
            }
        }
    }

    /// `r` could not be settled: the checkpoint stays before it until
    /// restart.
    pub fn fail(&self, r: &RecordRef) {
        let mut s = self.lock();
        if s.open.get(&r.offset).is_some_and(|e| e.0 == r.attempt) {
            s.open.remove(&r.offset);
            s.pinned.insert(r.offset);
        }
    }

    /// The offset the checkpoint may be moved to: every record before it is
    /// settled.
    pub fn committable(&self) -> u64 {
        let s = self.lock();
        let a = s.open.keys().next().copied().unwrap_or(s.high);
        let b = s.pinned.first().copied().unwrap_or(s.high);
        a.min(b)
    }

    /// The partition's position was reset to `offset` (it was past the
    /// end): nothing before it is waited for any more.
    pub fn reset(&self, offset: u64) {
        let mut s = self.lock();
        s.open.retain(|&o, _| o >= offset);
        s.pinned.retain(|&o| o >= offset);
        s.high = offset;
    }

    /// This node starts leading the partition again at `offset`: nothing
    /// handed out before (by an earlier leadership) is waited for.
    pub fn restart(&self, offset: u64) {
        let mut s = self.lock();
        s.open.clear();
        s.pinned.clear();
        s.high = offset;
    }

    /// Up to `most` records given up on (oldest first), to process again.
    pub fn pinned(&self, most: usize) -> Vec<u64> {
        self.lock().pinned.iter().take(most).copied().collect()
    }

    /// How many records were given up on.
    pub fn pinned_count(&self) -> usize {
        self.lock().pinned.len()
    }

    /// Records handed out and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.lock().open.len()
    }
}

/// Fan-out's own hold on a record while it processes it: released when
/// dropped, unless failed (pinned until restart) or forgotten (the record is
/// being processed again under a new attempt).
pub struct Hold {
    tracker: Arc<Tracker>,
    pub rec: RecordRef,
    done: bool,
}

impl Hold {
    pub fn fail(mut self) {
        self.done = true;
        self.tracker.fail(&self.rec);
    }

    pub fn forget(mut self) {
        self.done = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.tracker.release(&self.rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_waits_for_every_hold_of_the_oldest_record() {
        let t = Tracker::new(0, 10);
        assert_eq!(t.committable(), 10);
        let a = t.begin(10);
        let b = t.begin(11);
        let c = t.begin(12);
        // Two notifications of record 10 are held by edges.
        t.retain(&a.rec, 2);
        let ra = a.rec;
        drop(b);
        drop(a);
        assert_eq!(t.committable(), 10, "edges still hold record 10");
        t.release(&ra);
        assert_eq!(t.committable(), 10);
        t.release(&ra);
        assert_eq!(t.committable(), 12);
        c.fail();
        let d = t.begin(13);
        drop(d);
        assert_eq!(t.committable(), 12, "a failed record pins the checkpoint");
    }

    #[test]
    fn answers_for_an_older_attempt_are_ignored() {
        let t = Tracker::new(0, 0);
        let first = t.begin(0);
        t.retain(&first.rec, 1);
        let old = first.rec;
        first.forget();
        // Processed again: the old attempt's late answer must not settle it.
        let again = t.begin(0);
        t.release(&old);
        assert_eq!(t.committable(), 0);
        drop(again);
        assert_eq!(t.committable(), 1);
    }
}
