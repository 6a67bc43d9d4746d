//! This thread's spare byte buffers, the one home of the edge's scratch
//! memory: a connection with nothing buffered reads into one
//! (`reader.rs`), a live push builds its frame in one (`wire.rs`), so
//! neither a read nor a frame written at once allocates, and an idle
//! connection holds no buffer. A buffer is taken out while in use, so a
//! second use on the same thread (nested or interleaved) gets another one,
//! never the same.

use std::cell::RefCell;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers that grew past this go back to the allocator.
const KEEP_BYTES: usize = 16 * 1024;
/// Spare buffers kept per thread.
const KEEP_COUNT: usize = 4;

/// A spare buffer of this thread's, as it was left (callers clear or
/// size it), or an empty one when none is spare.
pub(crate) fn take() -> Vec<u8> {
    SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Hands a buffer back for the next use (dropped if it grew too big or
/// enough are spare).
pub(crate) fn give(b: Vec<u8>) {
    if b.capacity() <= KEEP_BYTES {
        SPARE.with_borrow_mut(|s| {
            if s.len() < KEEP_COUNT {
                s.push(b);
            }
        });
    }
}

/// Runs `f` with a spare buffer, then hands it back.
pub(crate) fn with<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut b = take();
    let r = f(&mut b);
    give(b);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_in_use_is_never_handed_out_twice_and_comes_back() {
        with(|a| {
            a.extend_from_slice(b"outer");
            with(|b| {
                assert!(b.is_empty() || b.as_ptr() != a.as_ptr());
                b.clear();
                b.extend_from_slice(b"inner");
            });
            assert_eq!(&a[..], b"outer");
        });
        let a = take();
        let b = take();
        assert!(a.capacity() > 0 && b.capacity() > 0, "both came back");
        give(a);
        give(b);
    }

    #[test]
    fn big_buffers_are_not_kept() {
        give(vec![0; KEEP_BYTES * 2]);
        assert!(take().capacity() < KEEP_BYTES * 2);
    }
}
