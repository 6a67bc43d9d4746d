//! A replicated partition's Raft log is its herald-log partition: each
//! entry is one batch (`herald_log::format`, magic 2). The store keeps in
//! memory where each entry starts (its base offset, term and leader: 24
//! bytes an entry), rebuilt by one scan when it opens, so reads by Raft
//! index go straight to the segment that holds them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use herald_log::Log;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader,
    StorageIOError,
};

use crate::durable;
use crate::entry::{range_of, to_entry, to_new};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The most bytes one replication read gathers (a follower far behind
/// catches up in steps of this size).
const READ_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
struct Loc {
    base: u64,
    term: u64,
    leader: u64,
}

#[derive(Debug, Default)]
struct Locs {
    /// Raft index of `at[0]`.
    first: u64,
    at: VecDeque<Loc>,
    /// The last entry removed from the front (openraft's "purged").
    purged: Option<LogId>,
}

impl Locs {
    fn next_index(&self) -> u64 {
        self.first + self.at.len() as u64
    }

    fn get(&self, index: u64) -> Option<Loc> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.at.get(i as usize).copied())
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.at
            .back()
            .map(|l| log_id(l.term, l.leader, self.next_index() - 1))
    }
}

pub(crate) fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, leader), index)
}

/// One partition's Raft log storage (and, cloned, its log reader).
#[derive(Clone)]
pub struct PartitionStore {
    log: Log,
    partition: u32,
    dir: PathBuf,
    locs: Arc<RwLock<Locs>>,
    tail: Arc<std::sync::Mutex<crate::tail::Tail>>,
}

impl PartitionStore {
    /// Opens the store of `partition` in `log`, keeping its vote in `dir`;
    /// `start` is the replica's snapshot: the last entry it covers and the
    /// offset the log continues at (entries up to it are skipped). Blocking: scans the partition's entries once.
    pub fn open(
        log: Log,
        partition: u32,
        dir: PathBuf,
        start: Option<(LogId, u64)>,
    ) -> Result<PartitionStore, StorageError> {
        let (start, start_offset) = match start {
            Some((id, offset)) => (Some(id), offset),
            None => (None, 0),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageIOError::read_logs(openraft::AnyError::new(&e)))?;
        let gap = |what: String| -> StorageError {
            let err = std::io::Error::other(format!("partition {partition}: {what}"));
            StorageIOError::read_logs(openraft::AnyError::new(&err)).into()
        };
        let mut locs = Locs::default();
        // Entries after the start are at or after its offset.
        let mut hint = start_offset;
        let after = start.map_or(0, |s| s.index + 1);
        let mut next: Option<u64> = None;
        loop {
            let got = log
                .read_entries(partition, hint, next.unwrap_or(after), READ_BYTES)
                .map_err(|e| StorageIOError::read_logs(openraft::AnyError::new(&e)))?;
            let Some(last) = got.last() else { break };
            hint = last.base_offset;
            for e in &got {
                if e.meta.index < after {
                    continue;
                }
                match next {
                    None => locs.first = e.meta.index,
                    Some(n) if n != e.meta.index => {
                        return Err(gap(format!(
                            "Raft entry {} follows {}: the log lost entries",
                            e.meta.index,
                            n - 1
                        )));
                    }
                    Some(_) => {}
                }
                next = Some(e.meta.index + 1);
                locs.at.push_back(Loc {
                    base: e.base_offset,
                    term: e.meta.term,
                    leader: e.meta.leader,
                });
            }
        }
        if let Some(s) = start {
            // The log continues right after its start (retention never
            // removes past it).
            if locs.at.is_empty() {
                locs.first = after;
            } else if locs.first != after {
                return Err(gap(format!(
                    "the log starts at entry {} but its snapshot ends at {}",
                    locs.first, s.index
                )));
            }
            locs.purged = Some(s);
        } else if locs.first > 0 {
            // Retention removed the front: what came before is "purged".
            if let Some(l) = locs.at.front() {
                locs.purged = Some(log_id(l.term, l.leader, locs.first - 1));
            }
        }
        tracing::debug!(
            partition,
            first = locs.first,
            entries = locs.at.len(),
            "replicated partition log opened"
        );
        Ok(PartitionStore {
            log,
            partition,
            dir,
            locs: Arc::new(RwLock::new(locs)),
            tail: Arc::default(),
        })
    }

    /// The last entry all of whose records lie below `offset`, with the
    /// offset the next entry starts at: where a snapshot may start so that
    /// nothing at or past `offset` is covered.
    pub(crate) fn boundary_below(&self, offset: u64) -> Option<(LogId, u64)> {
        let l = self.locs();
        let k = l.at.partition_point(|x| x.base <= offset);
        let i = k.checked_sub(2)?;
        let (at, next) = (l.at[i], l.at[i + 1]);
        Some((log_id(at.term, at.leader, l.first + i as u64), next.base))
    }

    /// The Raft index of the first entry the log still holds (retention
    /// removes whole segments from the front).
    pub(crate) fn first_held(&self) -> Option<u64> {
        let (start, _) = self.log.bounds(self.partition).ok()?;
        let got = self.log.read_entries(self.partition, start, 0, 1).ok()?;
        got.first().map(|e| e.meta.index)
    }

    /// The last entry Raft forgot (purged).
    pub(crate) fn purged(&self) -> Option<LogId> {
        self.locs().purged
    }

    fn locs(&self) -> std::sync::RwLockReadGuard<'_, Locs> {
        self.locs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn locs_mut(&self) -> std::sync::RwLockWriteGuard<'_, Locs> {
        self.locs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The log id of the last entry held.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.locs().last_log_id()
    }

    /// Reads entries `[start, end)` (fewer when `limit` bytes are reached,
    /// but at least one when any is held).
    fn read(&self, start: u64, end: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        if let Some(hit) = self
            .tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(start, end, limit)
        {
            return Ok(hit);
        }
        let (start, hint) = {
            let l = self.locs();
            let start = start.max(l.first);
            let end = end.min(l.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            (start, l.get(start).map_or(0, |x| x.base))
        };
        let mut out = Vec::new();
        let mut from = start;
        let mut hint = hint;
        let mut bytes = 0usize;
        while from < end && (bytes < limit || out.is_empty()) {
            let got = self
                .log
                .read_entries(self.partition, hint, from, READ_BYTES.min(limit))
                .map_err(|e| {
                    StorageIOError::new(
                        ErrorSubject::Logs,
                        ErrorVerb::Read,
                        openraft::AnyError::new(&e),
                    )
                })?;
            if got.is_empty() {
                break;
            }
            for e in got {
                if e.meta.index >= end {
                    return Ok(out);
                }
                if e.meta.index > from && out.is_empty() {
                    // Retention removed the entries asked for (a replica
                    // further behind than the log keeps): nothing to send.
                    // The follower stays behind (shown as lag and out of
                    // sync) rather than the leader stopping.
                    static WARNED_MS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    let last = WARNED_MS.load(std::sync::atomic::Ordering::Relaxed);
                    if now >= last + 10_000 {
                        WARNED_MS.store(now, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            partition = self.partition,
                            wanted = from,
                            oldest = e.meta.index,
                            "a replica needs entries retention removed; it cannot be refilled"
                        );
                    }
                    metrics::counter!("herald_raft_entries_gone_total").increment(1);
                    return Ok(Vec::new());
                }
                if e.meta.index != from {
                    let err = std::io::Error::other(format!(
                        "partition {}: read entry {} where {from} was expected",
                        self.partition, e.meta.index
                    ));
                    return Err(StorageIOError::read_logs(openraft::AnyError::new(&err)).into());
                }
                hint = e.base_offset;
                from += 1;
                bytes += e.records.iter().map(|r| r.len()).sum::<usize>();
                out.push(to_entry(e)?);
            }
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for PartitionStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_of(&range);
        self.read(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read(start, end, READ_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for PartitionStore {
    type LogReader = PartitionStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let l = self.locs();
        Ok(LogState {
            last_purged_log_id: l.purged,
            last_log_id: l.last_log_id().or(l.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let path = self.dir.join("vote");
        let v = *vote;
        tokio::task::spawn_blocking(move || durable::save(&path, &v, true))
            .await
            .map_err(|e| StorageIOError::write_vote(openraft::AnyError::new(&e)))?
            .map_err(|e| StorageIOError::write_vote(openraft::AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        durable::load(&self.dir.join("vote"))
            .map_err(|e| StorageIOError::read_vote(openraft::AnyError::new(&e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut news = Vec::new();
        let mut metas = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            metas.push((
                e.log_id.leader_id.term,
                e.log_id.leader_id.node_id,
                e.log_id.index,
            ));
            // The tail's own copy (see `tail::own`).
            kept.push(crate::tail::own(&e));
            news.push(to_new(e)?);
        }
        if let Some(&(_, _, first)) = metas.first() {
            let expected = self.locs().next_index();
            let empty = self.locs().at.is_empty();
            if first != expected && !empty {
                let err = std::io::Error::other(format!(
                    "partition {}: append at entry {first}, the log ends before {expected}",
                    self.partition
                ));
                callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                return Err(StorageIOError::write_logs(openraft::AnyError::new(&err)).into());
            }
        }
        match self.log.append_entries(self.partition, news).await {
            Ok(bases) => {
                {
                    let mut l = self.locs_mut();
                    if l.at.is_empty() {
                        l.first = metas.first().map_or(l.first, |m| m.2);
                    }
                    for ((term, leader, _), base) in metas.into_iter().zip(bases.iter().copied()) {
                        l.at.push_back(Loc { base, term, leader });
                    }
                }
                // As read back from the log: records at their offsets.
                for (e, base) in kept.iter_mut().zip(bases) {
                    if let EntryPayload::Normal(p) = &mut e.payload {
                        p.base = base;
                    }
                }
                self.tail
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(kept);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(partition = self.partition, error = %e, "replicated log append failed");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(openraft::AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let idx = log_id.index;
        let hint = {
            let l = self.locs();
            if idx >= l.next_index() {
                return Ok(());
            }
            l.get(idx).map_or(0, |x| x.base)
        };
        self.log
            .truncate_entries(self.partition, hint, idx)
            .await
            .map_err(|e| StorageIOError::write_logs(openraft::AnyError::new(&e)))?;
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(idx);
        let mut l = self.locs_mut();
        let keep = idx.saturating_sub(l.first) as usize;
        l.at.truncate(keep);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The bytes go with retention (whole segments); the store forgets
        // the entries' places.
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .purge(log_id.index);
        let mut l = self.locs_mut();
        while l.first <= log_id.index && !l.at.is_empty() {
            l.at.pop_front();
            l.first += 1;
        }
        if l.at.is_empty() {
            l.first = log_id.index + 1;
        }
        l.purged = Some(log_id);
        Ok(())
    }
}
