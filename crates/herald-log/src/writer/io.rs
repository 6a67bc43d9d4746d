//! File work of the writer thread: writing a round, undoing a failed one,
//! syncing, publishing, periodic work, retention and close.

use std::time::{Duration, Instant};

use super::Writer;
use crate::config::Durability;
use crate::error::{LogError, Result};
use crate::fault;
use crate::format::{encode_batch, HEADER_LEN, RECORD_OVERHEAD};
use crate::health::{free_bytes, LogHealth};
use crate::segment::write_atomic;

/// The largest batch the writer makes; more staged records become several.
const MAX_WRITE_BATCH: u64 = 8 * 1024 * 1024;

/// Free space at which a log that found its disk full reports ready again.
const FREE_TO_RECOVER: u64 = 4 << 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    /// Writes every partition's staged records (one write call each).
    pub(super) fn write_staged(&mut self) -> Result<()> {
        // The journal pays where a round is small and touches several
        // partitions (one fsync instead of one per partition, for a second
        // copy of few bytes); a round of one partition, or a large one,
        // syncs its segments directly (which is also a checkpoint).
        let (parts, bytes) = self
            .active
            .iter()
            .filter(|a| !a.staged.is_empty() || !a.entries.is_empty())
            .fold((0usize, 0u64), |(n, b), a| (n + 1, b + a.staged_bytes));
        self.journal_round =
            self.journal.is_some() && parts >= 2 && bytes <= crate::journal::MAX_ROUND_BYTES;
        for p in 0..self.active.len() {
            self.write_partition(p)?;
        }
        Ok(())
    }

    /// Encodes and writes partition `p`'s staged records (one batch per
    /// `MAX_WRITE_BATCH`) with one write call.
    fn write_partition(&mut self, p: usize) -> Result<()> {
        if self.active[p].staged.is_empty() && self.active[p].entries.is_empty() {
            return Ok(());
        }
        let ts = now_ms();
        let staged = std::mem::take(&mut self.active[p].staged);
        let entries = std::mem::take(&mut self.active[p].entries);
        self.active[p].staged_bytes = 0;
        self.buf.clear();
        let a = &mut self.active[p];
        let mut next = a.next_offset;
        let mut i = 0;
        let mut batches = Vec::new();
        for (e, base) in &entries {
            let pos = a.size + self.buf.len() as u64;
            let h = crate::format::encode_entry(
                &mut self.buf,
                *base,
                e.ts.unwrap_or(ts),
                e.meta,
                e.records.iter().map(|b| &b[..]),
                &e.body,
            );
            next = h.next_offset();
            batches.push((h, pos));
        }
        while i < staged.len() {
            let mut j = i;
            let mut bytes = HEADER_LEN as u64;
            while j < staged.len()
                && (j == i || bytes + staged[j].len() as u64 + 8 <= MAX_WRITE_BATCH)
            {
                bytes += (staged[j].len() + RECORD_OVERHEAD) as u64;
                j += 1;
            }
            let pos = a.size + self.buf.len() as u64;
            let h = encode_batch(&mut self.buf, next, ts, staged[i..j].iter().map(|b| &b[..]));
            next = h.next_offset();
            batches.push((h, pos));
            i = j;
        }
        if let Err(e) = fault::write_all(&a.file, &a.path, &self.buf) {
            return Err(match LogError::io(&a.path, e) {
                full @ LogError::DiskFull { .. } => full,
                other => {
                    tracing::error!(partition = p, error = %other, "segment write failed, log poisoned");
                    LogError::Poisoned(other.to_string())
                }
            });
        }
        if let (true, Some(j)) = (self.journal_round, &mut self.journal) {
            j.add(p as u32, a.base, a.size, &self.buf);
            // Under heavy journaled traffic, start writing these pages back
            // now, without waiting: the checkpoint's sync then finds little
            // left to write and holds the rounds behind it for less. Under
            // light traffic the checkpoint has little to write anyway, and
            // this would cost a syscall per partition per round. Advisory;
            // a real error shows at that sync.
            if j.len() >= crate::journal::WRITEBACK_AFTER {
                start_writeback(&a.file, a.size, self.buf.len() as u64);
            }
        }
        a.next_offset = next;
        a.size += self.buf.len() as u64;
        a.unpublished.extend(batches);
        a.dirty = true;
        self.unsynced_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Puts every partition the round touched back where the last
    /// successful round left it: file length, offsets, nothing staged or
    /// unpublished. A partition that cannot be cut back poisons the log.
    pub(super) fn rollback(&mut self) {
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.rollback() {
                let e = LogError::io(j.path(), e);
                tracing::error!(error = %e, "could not undo a failed journal write, log poisoned");
                let why = format!("could not undo a failed journal write: {e}");
                self.health.set(LogHealth::Poisoned(why.clone()));
                self.poisoned.get_or_insert(why);
            }
        }
        for (p, a) in self.active.iter_mut().enumerate() {
            a.staged.clear();
            a.entries.clear();
            a.staged_bytes = 0;
            a.unpublished.clear();
            if !a.touched && a.size == a.acked_size {
                continue;
            }
            if let Err(e) = fault::set_len(&a.file, &a.path, a.acked_size) {
                let e = LogError::io(&a.path, e);
                tracing::error!(partition = p, error = %e, "could not undo a failed write, log poisoned");
                let why = format!("could not undo a failed write: {e}");
                self.health.set(LogHealth::Poisoned(why.clone()));
                self.poisoned.get_or_insert(why);
            }
            a.size = a.acked_size;
            a.next_offset = a.acked_offset;
            // In `always` mode what is left is in the journal or synced.
            if self.cfg.durability == Durability::Always {
                a.dirty = a.acked_size > a.synced_size;
            }
        }
    }

    /// fdatasync every partition written since the last sync. A failed fsync
    /// poisons the log: the page cache may have dropped the data, so no later
    /// append may be acknowledged until it is reopened and recovered.
    pub(super) fn sync_dirty(&mut self) -> Result<()> {
        if self.reapply {
            if let Some(j) = &self.journal {
                let records = j.reapply(&self.dir).map_err(super::stage::storage)?;
                tracing::info!(
                    records,
                    "journal written into the segments again after a failed sync"
                );
            }
            self.reapply = false;
        }
        let dirty: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].dirty)
            .collect();
        // Partitions are separate files: sync them in parallel (`sync.rs`),
        // so a round costs about one fdatasync rather than one per partition.
        let files: Vec<_> = dirty
            .iter()
            .map(|&i| (self.active[i].file.clone(), self.active[i].path.clone()))
            .collect();
        let results: Vec<(usize, std::io::Result<()>)> = dirty
            .iter()
            .copied()
            .zip(self.syncs.sync_all(&files))
            .collect();
        let mut failed = None;
        let mut full = None;
        if results.iter().any(|(_, r)| r.is_err()) {
            self.reapply = self.journal.is_some();
        }
        for (i, r) in results {
            match r {
                Ok(()) => {
                    let a = &mut self.active[i];
                    a.dirty = false;
                    a.synced_size = a.size;
                }
                Err(e) => match LogError::io(&self.active[i].path, e) {
                    // In `always` mode every earlier byte was synced by an
                    // earlier round: a full disk only refuses this round's
                    // bytes, which the rollback cuts. Anything else (or
                    // any mode that acknowledged before syncing) cannot be
                    // trusted.
                    LogError::DiskFull { path } if self.cfg.durability == Durability::Always => {
                        full.get_or_insert(path);
                    }
                    err => {
                        tracing::error!(partition = i, error = %err, "fsync failed, log poisoned");
                        failed.get_or_insert(format!("fsync failed on partition {i}: {err}"));
                    }
                },
            }
        }
        if let Some(why) = failed {
            self.poisoned.get_or_insert(why.clone());
            return Err(LogError::Poisoned(why));
        }
        if let Some(path) = full {
            return Err(LogError::DiskFull { path });
        }
        self.unsynced_bytes = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs every segment written since the last sync and empties the
    /// journal, which they make unneeded. A journal that cannot be emptied
    /// is kept (replaying it again is harmless) and tried at the next one.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        self.sync_dirty()?;
        if let Some(j) = &mut self.journal {
            j.discard();
            if let Err(e) = j.reset() {
                tracing::warn!(error = %LogError::io(j.path(), e), "journal not emptied; kept until the next checkpoint");
            }
        }
        Ok(())
    }

    /// Makes written batches visible to readers and wakes tailing readers;
    /// what is published is what a failed round goes back to.
    pub(super) fn publish(&mut self) {
        let interval = self.cfg.index_interval_bytes;
        for (p, a) in self.active.iter_mut().enumerate() {
            a.acked_size = a.size;
            a.acked_offset = a.next_offset;
            if a.unpublished.is_empty() {
                continue;
            }
            let part = &self.parts[p];
            {
                let mut st = part.write_state();
                if let Some(seg) = st.segments.get_mut(&a.base) {
                    for (h, pos) in a.unpublished.drain(..) {
                        seg.note_batch(&h, pos, interval);
                    }
                }
            }
            a.unpublished.clear();
            part.end_tx.send_replace(a.next_offset);
        }
    }

    /// Periodic work: interval fsync, rolling by age, retention, and
    /// noticing that a full disk has room again.
    pub(super) fn tick(&mut self) {
        if self.poisoned.is_none() && self.journal.as_ref().is_some_and(|j| j.len() > 0) {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "journal checkpoint failed");
                self.note_failure(&e);
            }
        }
        if let Durability::Interval { ms, .. } = self.cfg.durability {
            if self.unsynced_bytes > 0 && self.last_sync.elapsed() >= Duration::from_millis(ms) {
                if let Err(e) = self.sync_dirty() {
                    self.note_failure(&e);
                }
            }
        }
        if let LogHealth::Full { path } = self.health.get() {
            let dir = path.parent().unwrap_or(&path);
            if free_bytes(dir).is_some_and(|f| f >= FREE_TO_RECOVER) {
                tracing::info!(path = %path.display(), "disk space returned");
                self.health.set(LogHealth::Ok);
            }
        }
        if self.poisoned.is_some() {
            return;
        }
        let max_age = Duration::from_millis(self.cfg.segment_ms);
        for p in 0..self.active.len() {
            if self.active[p].size > 0 && self.active[p].created.elapsed() >= max_age {
                if let Err(e) = self.roll(p) {
                    tracing::warn!(partition = p, error = %e, "roll by age failed");
                    self.note_failure(&e);
                }
            }
        }
        if self.last_retention.elapsed() >= Duration::from_millis(self.cfg.retention_check_ms) {
            self.last_retention = Instant::now();
            if let Err(e) = self.enforce_retention() {
                tracing::warn!(error = %e, "retention failed");
            }
        }
    }

    /// Deletes whole closed segments past the size or age limit, oldest
    /// first, never the active one and (unless configured otherwise) never
    /// one a committed consumer still needs.
    pub(super) fn enforce_retention(&mut self) -> Result<usize> {
        let now = now_ms();
        let mut deleted = 0;
        for (p, part) in self.parts.iter().enumerate() {
            let keep_from = if self.cfg.retention_respects_consumers {
                self.checkpoints.min_committed(p as u32)
            } else {
                None
            };
            let floor = part
                .retention_floor
                .load(std::sync::atomic::Ordering::Acquire);
            loop {
                let victim = {
                    let st = part.read_state();
                    if st.segments.len() <= 1 {
                        break;
                    }
                    let total = st.total_bytes();
                    let Some(seg) = st.segments.values().next() else {
                        break;
                    };
                    let too_old = self
                        .cfg
                        .retention_ms
                        .is_some_and(|ms| seg.max_ts < now - ms as i64);
                    let too_big = self.cfg.retention_bytes.is_some_and(|b| total > b);
                    let needed =
                        keep_from.is_some_and(|k| seg.next_offset > k) || seg.next_offset > floor;
                    if (too_old || too_big) && !needed {
                        Some(seg.base)
                    } else {
                        None
                    }
                };
                let Some(base) = victim else { break };
                let seg = part.write_state().segments.remove(&base);
                if let Some(seg) = seg {
                    seg.remove_files()?;
                    tracing::info!(partition = p, base, "retention deleted segment");
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Syncs everything, writes indexes of the active segments and the
    /// clean-shutdown markers (not for a poisoned log: it must be recovered).
    pub(super) fn close(&mut self) -> Result<()> {
        if let Some(p) = &self.poisoned {
            return Err(LogError::Poisoned(p.clone()));
        }
        for a in &mut self.active {
            a.dirty = true;
        }
        self.checkpoint()?;
        self.publish();
        for part in &self.parts {
            let st = part.read_state();
            if let Some(seg) = st.segments.values().next_back() {
                seg.write_indexes()?;
            }
            write_atomic(&part.dir.join(".clean"), b"clean")?;
        }
        Ok(())
    }
}

/// Starts write-back of `len` bytes at `pos` of `file` (does not wait).
fn start_writeback(file: &std::fs::File, pos: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            pos as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
