//! File work of the writer thread: staging, writing, syncing, rolling,
//! publishing, retention and close.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Writer;
use crate::config::Durability;
use crate::error::{LogError, Result};
use crate::format::{encode_batch, HEADER_LEN, RECORD_OVERHEAD};
use crate::segment::{log_path, write_atomic, SegmentInfo};

/// The largest batch the writer makes; more staged records become several.
const MAX_WRITE_BATCH: u64 = 8 * 1024 * 1024;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    pub(super) fn pending_len(&self, p: usize) -> u64 {
        self.active[p].staged_bytes
    }

    pub(super) fn pending_count(&self, p: usize) -> u64 {
        self.active[p].staged.len() as u64
    }

    pub(super) fn stage(&mut self, p: usize, recs: Vec<Bytes>) {
        let a = &mut self.active[p];
        for r in recs {
            a.staged_bytes += (r.len() + RECORD_OVERHEAD) as u64;
            a.staged.push(r);
        }
    }

    /// Writes every partition's staged records. On failure every partition
    /// is cut back to where the round started.
    pub(super) fn write_buffered(&mut self) -> Result<()> {
        let mut res = Ok(());
        for p in 0..self.active.len() {
            if let Err(e) = self.write_partition(p) {
                res = Err(e);
                break;
            }
        }
        if res.is_err() {
            for a in &mut self.active {
                a.staged.clear();
                a.staged_bytes = 0;
                if a.size != a.round_start_size {
                    let _ = a.file.set_len(a.round_start_size);
                    a.size = a.round_start_size;
                    a.next_offset = a.round_start_offset;
                    a.unpublished.clear();
                }
            }
        }
        res
    }

    /// Encodes and writes partition `p`'s staged records (one batch per
    /// `MAX_WRITE_BATCH`) with one write call.
    pub(super) fn write_partition(&mut self, p: usize) -> Result<()> {
        if self.active[p].staged.is_empty() {
            return Ok(());
        }
        let ts = now_ms();
        let staged = std::mem::take(&mut self.active[p].staged);
        self.active[p].staged_bytes = 0;
        self.buf.clear();
        let a = &mut self.active[p];
        let mut i = 0;
        let mut batches = Vec::new();
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
            let h = encode_batch(
                &mut self.buf,
                a.next_offset,
                ts,
                staged[i..j].iter().map(|b| &b[..]),
            );
            a.next_offset = h.next_offset();
            batches.push((h, pos));
            i = j;
        }
        if let Err(e) = a.file.write_all(&self.buf) {
            return Err(LogError::io(&a.path, e));
        }
        a.size += self.buf.len() as u64;
        a.unpublished.extend(batches);
        a.dirty = true;
        self.unsynced_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// fdatasync every partition written since the last sync. A failed fsync
    /// poisons the log: the page cache may have dropped the data, so no later
    /// append may be acknowledged until it is reopened and recovered.
    pub(super) fn sync_dirty(&mut self) -> Result<()> {
        let dirty: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].dirty)
            .collect();
        // Partitions are separate files: sync them in parallel, so a round
        // costs about one fdatasync rather than one per partition.
        let results: Vec<(usize, std::io::Result<()>)> = if dirty.len() <= 1 {
            dirty
                .iter()
                .map(|&i| (i, self.active[i].file.sync_data()))
                .collect()
        } else {
            let active = &self.active;
            std::thread::scope(|sc| {
                let handles: Vec<_> = dirty[1..]
                    .iter()
                    .map(|&i| (i, sc.spawn(move || active[i].file.sync_data())))
                    .collect();
                let mut out = vec![(dirty[0], active[dirty[0]].file.sync_data())];
                for (i, h) in handles {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("sync thread panicked")));
                    out.push((i, r));
                }
                out
            })
        };
        for (i, r) in results {
            if let Err(e) = r {
                let err = LogError::io(&self.active[i].path, e);
                tracing::error!(error = %err, "fsync failed, log poisoned");
                self.poisoned = Some(err.to_string());
                return Err(err);
            }
            self.active[i].dirty = false;
        }
        self.unsynced_bytes = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Makes written batches visible to readers and wakes tailing readers.
    pub(super) fn publish(&mut self) {
        let interval = self.cfg.index_interval_bytes;
        for (p, a) in self.active.iter_mut().enumerate() {
            a.round_start_size = a.size;
            a.round_start_offset = a.next_offset;
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

    /// Closes the active segment of `p` (synced, indexes written) and starts
    /// a new one at the next offset.
    pub(super) fn roll(&mut self, p: usize) -> Result<()> {
        let a = &mut self.active[p];
        a.file.sync_data().map_err(|e| LogError::io(&a.path, e))?;
        a.dirty = false;
        let part = self.parts[p].clone();
        let interval = self.cfg.index_interval_bytes;
        {
            let mut st = part.write_state();
            if let Some(seg) = st.segments.get_mut(&a.base) {
                for (h, pos) in a.unpublished.drain(..) {
                    seg.note_batch(&h, pos, interval);
                }
                seg.write_indexes()?;
            }
        }
        part.end_tx.send_replace(a.next_offset);
        let base = a.next_offset;
        let path = log_path(&part.dir, base);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let read = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        crate::segment::sync_dir(&part.dir)?;
        part.write_state().segments.insert(
            base,
            SegmentInfo {
                base,
                path: path.clone(),
                file: std::sync::Arc::new(read),
                size: 0,
                next_offset: base,
                index: Vec::new(),
                time_index: Vec::new(),
                max_ts: i64::MIN,
            },
        );
        write_atomic(
            &part.dir.join("recovery-point"),
            base.to_string().as_bytes(),
        )?;
        *a = super::Active {
            file,
            path,
            base,
            size: 0,
            next_offset: base,
            created: Instant::now(),
            unpublished: Vec::new(),
            staged: std::mem::take(&mut a.staged),
            staged_bytes: a.staged_bytes,
            round_start_size: 0,
            round_start_offset: base,
            dirty: false,
        };
        tracing::debug!(partition = p, base, "rolled segment");
        Ok(())
    }

    /// Periodic work: interval fsync, rolling by age, retention.
    pub(super) fn tick(&mut self) {
        if let Durability::Interval { ms, .. } = self.cfg.durability {
            if self.unsynced_bytes > 0 && self.last_sync.elapsed() >= Duration::from_millis(ms) {
                let _ = self.sync_dirty();
            }
        }
        let max_age = Duration::from_millis(self.cfg.segment_ms);
        for p in 0..self.active.len() {
            if self.active[p].size > 0 && self.active[p].created.elapsed() >= max_age {
                if let Err(e) = self.roll(p) {
                    tracing::warn!(partition = p, error = %e, "roll by age failed");
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
                    let needed = keep_from.is_some_and(|k| seg.next_offset > k);
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
    /// clean-shutdown markers.
    pub(super) fn close(&mut self) -> Result<()> {
        self.write_buffered()?;
        for a in &mut self.active {
            a.dirty = true;
        }
        self.sync_dirty()?;
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
