//! What each partition's worker is stuck on, if anything, for `/readyz`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A worker failing this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct PartitionStatus {
    /// Since when the worker has failed at a step, and why.
    failing: Mutex<Option<(Instant, String)>>,
}

impl PartitionStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A step failed; the first failure of a streak sets the clock.
    pub fn failing(&self, why: impl FnOnce() -> String) {
        let mut f = self.lock();
        match f.as_mut() {
            Some((_, w)) => *w = why(),
            None => *f = Some((Instant::now(), why())),
        }
    }

    /// A step succeeded: the streak is over.
    pub fn ok(&self) {
        let mut f = self.lock();
        if f.is_some() {
            *f = None;
        }
    }

    /// How long and why, once past [`STALL_AFTER`].
    pub fn stalled(&self) -> Option<(Duration, String)> {
        let f = self.lock();
        let (since, why) = f.as_ref()?;
        let d = since.elapsed();
        (d >= STALL_AFTER).then(|| (d, why.clone()))
    }
}
