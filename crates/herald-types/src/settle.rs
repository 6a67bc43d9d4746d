//! Settle tokens: how the fan-out stage learns that a notification is safe.
//!
//! A consumer checkpoint may only move past a log record once every
//! notification made from it is *settled*: acknowledged by the client, or
//! written to the recipient's inbox. The worker creates one token per record
//! and hands a clone to every notification made from it. Whoever settles a
//! notification drops its clone; when the last clone is gone, the sink hears
//! that the record's offset is settled. A crash runs no destructor, so an
//! unsettled record is simply processed again after restart.

use std::sync::Arc;

/// Told when every notification of a record has been settled.
pub trait SettleSink: Send + Sync + 'static {
    fn settled(&self, offset: u64);
}

struct Inner {
    offset: u64,
    sink: Arc<dyn SettleSink>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sink.settled(self.offset);
    }
}

/// A shared claim on a log record: the record is settled when every clone is
/// dropped.
#[derive(Clone)]
pub struct SettleToken(Arc<Inner>);

impl SettleToken {
    pub fn new(offset: u64, sink: Arc<dyn SettleSink>) -> SettleToken {
        SettleToken(Arc::new(Inner { offset, sink }))
    }

    pub fn offset(&self) -> u64 {
        self.0.offset
    }
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
    }
}
