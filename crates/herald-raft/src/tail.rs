//! The newest entries of a replicated partition, kept in memory as they
//! are appended: followers are sent them from here (their records are
//! reference-counted `Bytes`, shared with what was appended), so a leader
//! keeping its followers up to date reads nothing back from disk. Older
//! entries (a follower far behind, a replica being refilled) are read from
//! the log.

use std::collections::VecDeque;

use openraft::EntryPayload;

use crate::types::Entry;

/// Bytes of records kept per partition.
pub const TAIL_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct Tail {
    /// Raft index of `entries[0]`.
    first: u64,
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
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
