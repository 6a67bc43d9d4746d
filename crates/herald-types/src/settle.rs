//! Settle tokens: how the fan-out stage learns that a notification is safe.
//!
//! A consumer checkpoint may only move past a log record once every
//! notification made from it is *settled*: acknowledged by the client, or
//! written to the recipient's inbox. The worker creates one token per record
//! and hands a clone to every notification made from it. Whoever settles a
//! notification drops its clone; when the last clone is gone, the sink hears
//! that the record's offset is settled. A crash runs no destructor, so an
//! unsettled record is simply processed again after restart.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Told when every notification of a record has been settled, or when one
/// of them could not be (then the record must be processed again after a
/// restart, so the checkpoint must never pass it).
pub trait SettleSink: Send + Sync + 'static {
    fn settled(&self, offset: u64);
    fn failed(&self, offset: u64);
    /// The token was given up without meaning anything (its record is
    /// being processed again under a new token).
    fn forgotten(&self, _offset: u64) {}
}

const SETTLE: u8 = 0;
const FAIL: u8 = 1;
const FORGET: u8 = 2;

struct Inner {
    offset: u64,
    sink: Arc<dyn SettleSink>,
    state: AtomicU8,
}

impl Drop for Inner {
    fn drop(&mut self) {
        match self.state.load(Ordering::Relaxed) {
            FAIL => self.sink.failed(self.offset),
            FORGET => self.sink.forgotten(self.offset),
            _ => self.sink.settled(self.offset),
        }
    }
}

/// A shared claim on a log record: the record is settled when every clone is
/// dropped.
#[derive(Clone)]
pub struct SettleToken(Arc<Inner>);

impl SettleToken {
    pub fn new(offset: u64, sink: Arc<dyn SettleSink>) -> SettleToken {
        SettleToken(Arc::new(Inner {
            offset,
            sink,
            state: AtomicU8::new(SETTLE),
        }))
    }

    /// Gives up on this notification: it could be neither delivered nor
    /// stored. The record stays unsettled for the life of the process, so
    /// it is processed again after a restart.
    pub fn fail(self) {
        self.0.state.store(FAIL, Ordering::Relaxed);
    }

    /// Makes this token (and every clone) mean nothing: neither settle nor
    /// fail its record. For a record that is being processed again under a
    /// new token.
    pub fn forget(self) {
        self.0.state.store(FORGET, Ordering::Relaxed);
    }

    /// One token standing for many (an aggregate of several notifications):
    /// settling it settles them all; failing it fails them all.
    pub fn group(tokens: Vec<SettleToken>) -> SettleToken {
        SettleToken::new(0, Arc::new(Group(std::sync::Mutex::new(Some(tokens)))))
    }

    /// A token tied to no record (for notifications that need no settling).
    pub fn detached() -> SettleToken {
        SettleToken::new(0, Arc::new(Detached))
    }

    pub fn offset(&self) -> u64 {
        self.0.offset
    }
}

struct Group(std::sync::Mutex<Option<Vec<SettleToken>>>);
impl SettleSink for Group {
    fn settled(&self, _: u64) {
        drop(self.0.lock().ok().and_then(|mut g| g.take()));
    }
    fn failed(&self, _: u64) {
        if let Some(tokens) = self.0.lock().ok().and_then(|mut g| g.take()) {
            for t in tokens {
                t.fail();
            }
        }
    }
    fn forgotten(&self, _: u64) {
        if let Some(tokens) = self.0.lock().ok().and_then(|mut g| g.take()) {
            for t in tokens {
                t.forget();
            }
        }
    }
}

struct Detached;
impl SettleSink for Detached {
    fn settled(&self, _: u64) {}
    fn failed(&self, _: u64) {}
}

impl std::fmt::Debug for SettleToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SettleToken").field(&self.0.offset).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Rec(Mutex<Vec<u64>>);
    impl SettleSink for Rec {
        fn settled(&self, offset: u64) {
            self.0.lock().unwrap().push(offset);
        }
        fn failed(&self, offset: u64) {
            self.0.lock().unwrap().push(offset + 1000);
        }
    }

    #[test]
    fn settles_when_last_clone_drops() {
        let rec = Arc::new(Rec(Mutex::new(vec![])));
        let t = SettleToken::new(7, rec.clone());
        let t2 = t.clone();
        drop(t);
        assert!(rec.0.lock().unwrap().is_empty());
        drop(t2);
        assert_eq!(*rec.0.lock().unwrap(), vec![7]);
        let t = SettleToken::new(8, rec.clone());
        let t2 = t.clone();
        t.fail();
        drop(t2);
        assert_eq!(*rec.0.lock().unwrap(), vec![7, 1008]);
        let g = SettleToken::group(vec![
            SettleToken::new(9, rec.clone()),
            SettleToken::new(10, rec.clone()),
        ]);
        drop(g);
        assert_eq!(*rec.0.lock().unwrap(), vec![7, 1008, 9, 10]);
        let g = SettleToken::group(vec![SettleToken::new(11, rec.clone())]);
        g.fail();
        assert_eq!(*rec.0.lock().unwrap(), vec![7, 1008, 9, 10, 1011]);
        // Forgetting (a clone of) a token or a group settles nothing.
        let t = SettleToken::new(12, rec.clone());
        let t2 = t.clone();
        t.forget();
        drop(t2);
        let g = SettleToken::group(vec![SettleToken::new(13, rec.clone())]);
        g.forget();
        assert_eq!(*rec.0.lock().unwrap(), vec![7, 1008, 9, 10, 1011]);
    }
}
