//! The per-recipient throttle, on event time.

use std::collections::HashMap;

use herald_types::UserId;

/// The per-recipient rate limit on event time (GCRA: each recipient has a
/// theoretical arrival time; a burst of `rate` is allowed).
pub(super) struct Throttle {
    /// µs between notifications at the rate; 0 disables.
    interval: u64,
    burst: u64,
    tat: HashMap<UserId, u64>,
    /// Newest event time seen, for forgetting idle recipients.
    newest: u64,
}

impl Throttle {
    pub(super) fn new(rate: u32) -> Throttle {
        Throttle {
            interval: if rate == 0 {
                0
            } else {
                1_000_000 / rate as u64
            },
            burst: rate as u64,
            tat: HashMap::new(),
            newest: 0,
        }
    }

    /// Whether a notification to `r` at event time `t` (µs) is past the rate.
    pub(super) fn exceeded(&mut self, r: UserId, t: u64) -> bool {
        if self.interval == 0 {
            return false;
        }
        self.newest = self.newest.max(t);
        let tolerance = self.interval * self.burst.saturating_sub(1);
        let tat = self.tat.entry(r).or_insert(t);
        if t + tolerance < *tat {
            return true;
        }
        *tat = (*tat).max(t) + self.interval;
        false
    }

    /// Forgets recipients whose limit no longer constrains anything.
    pub(super) fn gc(&mut self) {
        let newest = self.newest;
        self.tat.retain(|_, tat| *tat > newest);
    }
}
