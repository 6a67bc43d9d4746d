//! Converting between openraft's entries and herald-log's stored entries
//! (one Raft entry is one herald-log batch).

use std::ops::{Bound, RangeBounds};

use bytes::Bytes;
use herald_log::{EntryKind, EntryMeta, NewEntry, StoredEntry};
use openraft::{EntryPayload, StorageIOError};

use crate::store::log_id;
use crate::types::{Entry, Proposal, StorageError};

pub(crate) fn to_entry(e: StoredEntry) -> Result<Entry, StorageError> {
    let payload = match e.meta.kind {
        EntryKind::Events => EntryPayload::Normal(Proposal {
            base: e.base_offset,
            ts: e.timestamp_ms,
            records: e.records,
        }),
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Membership => {
            let m = rmp_serde::from_slice(&e.body)
                .map_err(|err| StorageIOError::read_logs(openraft::AnyError::new(&err)))?;
            EntryPayload::Membership(m)
        }
    };
    Ok(Entry {
        log_id: log_id(e.meta.term, e.meta.leader, e.meta.index),
        payload,
    })
}

pub(crate) fn to_new(e: Entry) -> Result<NewEntry, StorageError> {
    let meta = |kind| EntryMeta {
        term: e.log_id.leader_id.term,
        leader: e.log_id.leader_id.node_id,
        index: e.log_id.index,
        kind,
    };
    Ok(match e.payload {
        EntryPayload::Normal(p) => NewEntry {
            meta: meta(EntryKind::Events),
            base: (p.base != u64::MAX).then_some(p.base),
            ts: Some(p.ts),
            records: p.records,
            body: Bytes::new(),
        },
        EntryPayload::Blank => NewEntry {
            meta: meta(EntryKind::Blank),
            base: None,
            ts: None,
            records: Vec::new(),
            body: Bytes::new(),
        },
        EntryPayload::Membership(ref m) => NewEntry {
            meta: meta(EntryKind::Membership),
            base: None,
            ts: None,
            records: Vec::new(),
            body: rmp_serde::to_vec(m)
                .map_err(|err| StorageIOError::write_logs(openraft::AnyError::new(&err)))?
                .into(),
        },
    })
}

pub(crate) fn range_of<RB: RangeBounds<u64>>(r: &RB) -> (u64, u64) {
    let start = match r.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(e) => e + 1,
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}
