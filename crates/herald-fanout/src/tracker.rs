//! Which records of a partition are still unsettled, and so how far the
//! consumer checkpoint may move.
//!
//! A record is held while fan-out processes it (a [`Hold`]) and once more
//! for every notification made from it that someone else holds: an edge
//! until the client acks or the inbox has it, the aggregator while it folds
//! it. Each hold is released once; the record settles when none is left.
//! Holds name a record by [`RecordRef`] (partition, offset, attempt), plain
//! data that can travel with a notification to another node.

use herald_types::sync::Locked;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use herald_types::RecordRef;

/// The window of unsettled records spans at most this many offsets (8
/// bytes each); records past it (one record held long while many follow)
/// go to a map instead, as do records far from it (a jump in offsets, a
/// record processed again long after).
const MAX_WINDOW: u64 = 1 << 20;

/// One record's holds; `holds == 0` is settled.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    attempt: u32,
    holds: u32,
}

/// Unsettled records. Offsets are handed out nearly in order, so most
/// live in a window indexed by offset (holding, releasing and finding the
/// oldest cost `O(1)`); the rare others live in `far`.
#[derive(Debug, Default)]
struct Open {
    /// Offset of `window[0]`; the front slot is unsettled unless the
    /// window is empty.
    base: u64,
    window: VecDeque<Slot>,
    /// Unsettled slots in the window.
    count: usize,
    far: BTreeMap<u64, Slot>,
}

impl Open {
    fn index(&self, offset: u64) -> Option<usize> {
        let i = offset.checked_sub(self.base)?;
        (i < self.window.len() as u64).then_some(i as usize)
    }

    fn get(&self, offset: u64) -> Option<Slot> {
        match self.index(offset).map(|i| self.window[i]) {
            Some(s) if s.holds > 0 => Some(s),
            _ => self.far.get(&offset).copied(),
        }
    }

    /// Holds `offset` once under `attempt` (replacing what it had).
    fn insert(&mut self, offset: u64, attempt: u32) {
        let slot = Slot { attempt, holds: 1 };
        self.far.remove(&offset);
        if self.window.is_empty() {
            self.base = offset;
            self.window.push_back(slot);
            self.count = 1;
            return;
        }
        let end = self.base + self.window.len() as u64;
        if let Some(i) = self.index(offset) {
            if self.window[i].holds == 0 {
                self.count += 1;
            }
            self.window[i] = slot;
        } else if offset >= end && offset - self.base < MAX_WINDOW {
            let gap = (offset - end) as usize;
            self.window
                .extend(std::iter::repeat_n(Slot::default(), gap));
            self.window.push_back(slot);
            self.count += 1;
        } else if offset < self.base && end - offset < MAX_WINDOW {
            for _ in offset + 1..self.base {
                self.window.push_front(Slot::default());
            }
            self.window.push_front(slot);
            self.base = offset;
            self.count += 1;
        } else {
            self.far.insert(offset, slot);
        }
    }

    /// Adds `n` holds to `offset` if it is held under `attempt`.
    fn retain(&mut self, offset: u64, attempt: u32, n: u32) {
        if let Some(i) = self.index(offset) {
            let s = &mut self.window[i];
            if s.holds > 0 {
                if s.attempt == attempt {
                    s.holds += n;
                }
                return;
            }
        }
        if let Some(s) = self.far.get_mut(&offset) {
            if s.attempt == attempt {
                s.holds += n;
            }
        }
    }

    /// Takes one hold off `offset` if it is held under `attempt`.
    fn release(&mut self, offset: u64, attempt: u32) {
        if let Some(i) = self.index(offset) {
            let s = &mut self.window[i];
            if s.holds > 0 {
                if s.attempt == attempt {
                    s.holds -= 1;
                    if s.holds == 0 {
                        self.count -= 1;
                        self.trim();
                    }
                }
                return;
            }
        }
        if let Some(s) = self.far.get_mut(&offset) {
            if s.attempt == attempt {
                s.holds = s.holds.saturating_sub(1);
                if s.holds == 0 {
                    self.far.remove(&offset);
                }
            }
        }
    }

    /// Settles `offset` whatever its holds.
    fn remove(&mut self, offset: u64) {
        if let Some(i) = self.index(offset) {
            if self.window[i].holds > 0 {
                self.window[i].holds = 0;
                self.count -= 1;
                self.trim();
                return;
            }
        }
        self.far.remove(&offset);
    }

    /// Drops settled slots from the front.
    fn trim(&mut self) {
        if self.count == 0 {
            self.window.clear();
            return;
        }
        while self.window.front().is_some_and(|s| s.holds == 0) {
            self.window.pop_front();
            self.base += 1;
        }
    }

    fn first(&self) -> Option<u64> {
        let w = (!self.window.is_empty()).then_some(self.base);
        let f = self.far.keys().next().copied();
        match (w, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn len(&self) -> usize {
        self.count + self.far.len()
    }

    /// Settles everything before `offset`.
    fn settle_before(&mut self, offset: u64) {
        while !self.window.is_empty() && self.base < offset {
            if self.window.pop_front().is_some_and(|s| s.holds > 0) {
                self.count -= 1;
            }
            self.base += 1;
        }
        self.trim();
        self.far = self.far.split_off(&offset);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Unsettled records.
    open: Open,
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
        self.state.locked()
    }

    /// Starts (or restarts) processing the record at `offset`, with one
    /// hold: the processing itself.
    pub fn begin(self: &Arc<Self>, offset: u64) -> Hold {
        let attempt = {
            let mut s = self.lock();
            s.attempts = s.attempts.wrapping_add(1);
            let a = s.attempts;
            s.open.insert(offset, a);
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
        self.lock().open.retain(r.offset, r.attempt, n);
    }

    /// Releases one hold on `r`; the record settles when none is left.
    pub fn release(&self, r: &RecordRef) {
        self.lock().open.release(r.offset, r.attempt);
    }

    /// `r` could not be settled: the checkpoint stays before it until
    /// restart.
    pub fn fail(&self, r: &RecordRef) {
        let mut s = self.lock();
        if s.open.get(r.offset).is_some_and(|e| e.attempt == r.attempt) {
            s.open.remove(r.offset);
            s.pinned.insert(r.offset);
        }
    }

    /// The offset the checkpoint may be moved to: every record before it is
    /// settled.
    pub fn committable(&self) -> u64 {
        let s = self.lock();
        let a = s.open.first().unwrap_or(s.high);
        let b = s.pinned.first().copied().unwrap_or(s.high);
        a.min(b)
    }

    /// The partition's position was reset to `offset` (it was past the
    /// end): nothing before it is waited for any more.
    pub fn reset(&self, offset: u64) {
        let mut s = self.lock();
        s.open.settle_before(offset);
        s.pinned.retain(|&o| o >= offset);
        s.high = offset;
    }

    /// This node starts leading the partition again at `offset`: nothing
    /// handed out before (by an earlier leadership) is waited for.
    pub fn restart(&self, offset: u64) {
        let mut s = self.lock();
        s.open = Open::default();
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

    /// The tracker against a plain map of every unsettled record, over
    /// random runs of holds, releases, failures and resets, with offsets
    /// mostly in order and now and then far away.
    mod model {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Op {
            Begin(u64),
            Retain(usize, u32),
            Release(usize),
            Fail(usize),
            Reset(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u64..64).prop_map(Op::Begin),
                1 => (1u64..4).prop_map(|k| Op::Begin(k * MAX_WINDOW * 2 + 5)),
                3 => (0usize..64, 1u32..3).prop_map(|(i, n)| Op::Retain(i, n)),
                6 => (0usize..64).prop_map(Op::Release),
                1 => (0usize..64).prop_map(Op::Fail),
                1 => (0u64..64).prop_map(Op::Reset),
            ]
        }

        proptest! {
            #[test]
            fn matches_a_map_of_unsettled_records(ops in proptest::collection::vec(op(), 1..200)) {
                let t = Tracker::new(0, 0);
                // offset -> (attempt, holds)
                let mut open: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
                let mut pinned: std::collections::BTreeSet<u64> = Default::default();
                let mut high = 0u64;
                let mut refs: Vec<RecordRef> = Vec::new();
                for o in ops {
                    match o {
                        Op::Begin(off) => {
                            let h = t.begin(off);
                            open.insert(off, (h.rec.attempt, 1));
                            pinned.remove(&off);
                            high = high.max(off + 1);
                            refs.push(h.rec);
                            h.forget();
                        }
                        Op::Retain(i, n) => if let Some(r) = refs.get(i) {
                            t.retain(r, n);
                            if let Some(e) = open.get_mut(&r.offset) {
                                if e.0 == r.attempt { e.1 += n; }
                            }
                        },
                        Op::Release(i) => if let Some(r) = refs.get(i) {
                            t.release(r);
                            if let Some(e) = open.get_mut(&r.offset) {
                                if e.0 == r.attempt {
                                    e.1 = e.1.saturating_sub(1);
                                    if e.1 == 0 { open.remove(&r.offset); }
                                }
                            }
                        },
                        Op::Fail(i) => if let Some(r) = refs.get(i) {
                            t.fail(r);
                            if open.get(&r.offset).is_some_and(|e| e.0 == r.attempt) {
                                open.remove(&r.offset);
                                pinned.insert(r.offset);
                            }
                        },
                        Op::Reset(off) => {
                            t.reset(off);
                            open.retain(|&o, _| o >= off);
                            pinned.retain(|&o| o >= off);
                            high = off;
                        }
                    }
                    let a = open.keys().next().copied().unwrap_or(high);
                    let b = pinned.first().copied().unwrap_or(high);
                    prop_assert_eq!(t.committable(), a.min(b));
                    prop_assert_eq!(t.in_flight(), open.len());
                }
            }
        }
    }
}
