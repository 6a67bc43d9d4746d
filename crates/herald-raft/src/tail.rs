//! The newest entries of a replicated partition, kept in memory as they
//! are appended: followers are sent them from here (their records are
//! reference-counted `Bytes`, shared with what was appended), so a leader
//! keeping its followers up to date reads nothing back from disk. Older
//! entries (a follower far behind, a replica being refilled) are read from
//! the log.

use std::collections::VecDeque;

use bytes::BytesMut;
use openraft::EntryPayload;

use crate::types::{Entry, Proposal};

/// Bytes of records kept per partition.
pub const TAIL_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct Tail {
    /// Raft index of `entries[0]`.
    first: u64,
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

/// A copy of `e` whose records live in one buffer of their own (each a
/// slice of it). What producers hand in are often slices of a larger
/// buffer (a whole request's body, every partition's records in it): kept
/// as they are, an entry of a quiet partition would pin request bodies
/// many times the bytes the tail counts. One copy per entry is also one
/// allocation where a clone of its records cost one or more per record.
pub fn own(e: &Entry) -> Entry {
    let payload = match &e.payload {
        EntryPayload::Normal(p) => {
            let mut buf = BytesMut::with_capacity(p.records.iter().map(|r| r.len()).sum());
            for r in &p.records {
                buf.extend_from_slice(r);
            }
            let mut buf = buf.freeze();
            let records = p.records.iter().map(|r| buf.split_to(r.len())).collect();
            EntryPayload::Normal(Proposal {
                base: p.base,
                ts: p.ts,
                records,
            })
        }
        other => other.clone(),
    };
    Entry {
        log_id: e.log_id,
        payload,
    }
}

fn size_of(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(p) => p.records.iter().map(|r| r.len() + 16).sum::<usize>() + 64,
        _ => 64,
    }
}

impl Tail {
    /// Adds entries just made durable (indexes continuing the tail; a tail
    /// that does not continue starts again).
    pub fn push(&mut self, new: Vec<Entry>) {
        for e in new {
            let index = e.log_id.index;
            if self.entries.is_empty() || index != self.first + self.entries.len() as u64 {
                self.entries.clear();
                self.bytes = 0;
                self.first = index;
            }
            let n = size_of(&e);
            self.bytes += n;
            self.entries.push_back((e, n));
        }
        while self.bytes > TAIL_BYTES && self.entries.len() > 1 {
            if let Some((_, n)) = self.entries.pop_front() {
                self.bytes -= n;
                self.first += 1;
            }
        }
    }

    /// Entries `[start, end)`, about `limit` bytes of them (at least one),
    /// if the tail holds `start`.
    pub fn get(&self, start: u64, end: u64, limit: usize) -> Option<Vec<Entry>> {
        let next = self.first + self.entries.len() as u64;
        if start < self.first || start >= next {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (e, n) in self.entries.iter().skip((start - self.first) as usize) {
            if e.log_id.index >= end || (bytes >= limit && !out.is_empty()) {
                break;
            }
            bytes += n;
            out.push(e.clone());
        }
        Some(out)
    }

    /// Forgets entries at or past `index` (a cut tail).
    pub fn truncate(&mut self, index: u64) {
        while self.first + (self.entries.len() as u64) > index {
            match self.entries.pop_back() {
                Some((_, n)) => self.bytes -= n,
                None => break,
            }
        }
    }

    /// Forgets entries at or before `index`.
    pub fn purge(&mut self, index: u64) {
        while self.first <= index {
            match self.entries.pop_front() {
                Some((_, n)) => {
                    self.bytes -= n;
                    self.first += 1;
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, records: Vec<Bytes>) -> Entry {
        Entry {
            log_id: crate::store::log_id(1, 1, index),
            payload: EntryPayload::Normal(Proposal {
                base: 7,
                ts: 9,
                records,
            }),
        }
    }

    #[test]
    fn the_tail_keeps_its_own_copy_of_records_sliced_from_a_larger_buffer() {
        // A request body holding other partitions' records too.
        let body = Bytes::from(vec![b'x'; 1 << 20]);
        let records = vec![body.slice(10..20), body.slice(500..530)];
        let owned = own(&entry(3, records.clone()));
        let EntryPayload::Normal(p) = &owned.payload else {
            panic!("not a normal entry");
        };
        assert_eq!((p.base, p.ts, owned.log_id.index), (7, 9, 3));
        assert_eq!(p.records, records);
        let body_range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        for r in &p.records {
            assert!(
                !body_range.contains(&(r.as_ptr() as usize)),
                "a kept record still points into the request body"
            );
        }
        // The copies lie side by side in one buffer.
        assert_eq!(
            p.records[0].as_ptr() as usize + p.records[0].len(),
            p.records[1].as_ptr() as usize
        );
    }

    #[test]
    fn the_tail_counts_and_serves_what_it_keeps() {
        let mut t = Tail::default();
        t.push(vec![
            own(&entry(1, vec![Bytes::from_static(b"a")])),
            own(&entry(2, vec![Bytes::from_static(b"bc")])),
        ]);
        let got = t.get(2, 3, 1 << 20).unwrap_or_default();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log_id.index, 2);
        assert!(t.get(3, 4, 1 << 20).is_none());
    }
}
