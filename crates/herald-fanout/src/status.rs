//! What each partition's worker (and the feed writer) is stuck on, if
//! anything, for `/readyz`.

use herald_types::sync::Locked;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A worker failing this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct PartitionStatus {
    /// Since when the worker has failed at a step, and why.
    failing: Mutex<Option<(Instant, String)>>,
    /// The worker does not run until an operator says where it starts.
    blocked: Mutex<Option<String>>,
    /// The last checkpoint write failed: the durable position lags.
    checkpoint: Mutex<Option<String>>,
    /// Records given up on (neither delivered nor stored), to be processed
    /// again.
    pinned: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.locked()
}

impl PartitionStatus {
    /// A step failed; the first failure of a streak sets the clock.
    pub fn failing(&self, why: impl FnOnce() -> String) {
        let mut f = lock(&self.failing);
        match f.as_mut() {
            Some((_, w)) => *w = why(),
            None => *f = Some((Instant::now(), why())),
        }
    }

    /// A step succeeded: the streak is over.
    pub fn ok(&self) {
        let mut f = lock(&self.failing);
        if f.is_some() {
            *f = None;
        }
    }

    /// How long and why, once past [`STALL_AFTER`].
    pub fn stalled(&self) -> Option<(Duration, String)> {
        let f = lock(&self.failing);
        let (since, why) = f.as_ref()?;
        let d = since.elapsed();
        (d >= STALL_AFTER).then(|| (d, why.clone()))
    }

    pub fn block(&self, why: String) {
        *lock(&self.blocked) = Some(why);
    }

    pub fn is_blocked(&self) -> bool {
        lock(&self.blocked).is_some()
    }

    /// The outcome of the latest checkpoint write.
    pub fn checkpoint(&self, outcome: Result<(), String>) {
        *lock(&self.checkpoint) = outcome.err();
    }

    pub fn pinned(&self, n: usize) {
        *lock(&self.pinned) = n;
    }

    /// Every reason this worker is not doing its work now.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = lock(&self.blocked).as_ref() {
            out.push(b.clone());
        }
        if let Some((d, why)) = self.stalled() {
            out.push(format!("stalled for {} s: {why}", d.as_secs()));
        }
        if let Some(c) = lock(&self.checkpoint).as_ref() {
            out.push(format!("checkpoint cannot be written: {c}"));
        }
        let n = *lock(&self.pinned);
        if n > 0 {
            out.push(format!(
                "{n} record(s) given up on after errors, being processed again"
            ));
        }
        out
    }
}
