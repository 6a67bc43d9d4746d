//! Which records of a partition are still unsettled, and so how far the
//! consumer checkpoint may move.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use herald_types::{SettleSink, SettleToken};

#[derive(Debug, Default)]
struct State {
    /// Records with notifications not yet settled.
    in_flight: BTreeSet<u64>,
    /// Records whose notifications could not be settled: the checkpoint
    /// stays before them until the process restarts.
    pinned: BTreeSet<u64>,
    /// One past the last record handed out.
    high: u64,
}

/// Tracks settlement of one partition's records.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<State>,
}

impl Tracker {
    pub fn new(start: u64) -> Arc<Tracker> {
        Arc::new(Tracker {
            state: Mutex::new(State {
                high: start,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking the record at `offset` and returns its token.
    pub fn begin(self: &Arc<Self>, offset: u64) -> SettleToken {
        {
            let mut s = self.lock();
            s.in_flight.insert(offset);
            s.high = s.high.max(offset + 1);
        }
        SettleToken::new(offset, self.clone())
    }

    /// The offset the checkpoint may be moved to: every record before it is
    /// settled.
    pub fn committable(&self) -> u64 {
        let s = self.lock();
        let a = s.in_flight.first().copied().unwrap_or(s.high);
        let b = s.pinned.first().copied().unwrap_or(s.high);
        a.min(b)
    }

    /// The partition's position was reset to `offset` (it was past the
    /// end): nothing before it is waited for any more.
    pub fn reset(&self, offset: u64) {
        let mut s = self.lock();
        s.in_flight.retain(|&o| o >= offset);
        s.pinned.retain(|&o| o >= offset);
        s.high = offset;
    }

    /// Records handed out and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

impl SettleSink for Tracker {
    fn settled(&self, offset: u64) {
        self.lock().in_flight.remove(&offset);
    }

    fn failed(&self, offset: u64) {
        let mut s = self.lock();
        s.in_flight.remove(&offset);
        s.pinned.insert(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_waits_for_the_oldest_unsettled_record() {
        let t = Tracker::new(10);
        assert_eq!(t.committable(), 10);
        let a = t.begin(10);
        let b = t.begin(11);
        let c = t.begin(12);
        drop(b);
        assert_eq!(t.committable(), 10);
        drop(a);
        assert_eq!(t.committable(), 12);
        c.fail();
        assert_eq!(t.committable(), 12);
        let d = t.begin(13);
        drop(d);
        assert_eq!(t.committable(), 12, "a failed record pins the checkpoint");
    }
}
