//! Taking a request into the round: checks, segment rolls and the offset
//! watermark come first, so a request that fails leaves nothing staged.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::{Active, Writer};
use crate::config::Durability;
use crate::error::{LogError, Result};
use crate::fault;
use crate::format::RECORD_OVERHEAD;
use crate::quarantine::{save_reserved, RESERVE};
use crate::segment::{log_path, write_atomic, SegmentInfo};

/// The largest single request the writer takes.
const MAX_REQUEST_BYTES: usize = 256 << 20;

impl Writer {
    /// Stages the records of one request; returns each part's base offset.
    /// Nothing reaches a file until [`Writer::write_staged`].
    pub(super) fn stage_request(&mut self, parts: Vec<(u32, Vec<Bytes>)>) -> Result<Vec<u64>> {
        if let Some(p) = &self.poisoned {
            return Err(LogError::Poisoned(p.clone()));
        }
        // Per partition: (records, bytes) of this request.
        let mut per: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        let mut total = 0usize;
        for (p, recs) in &parts {
            if *p as usize >= self.active.len() {
                return Err(LogError::UnknownPartition(*p));
            }
            let e = per.entry(*p as usize).or_default();
            for r in recs {
                if r.len() > self.cfg.max_record_bytes {
                    return Err(LogError::RecordTooLarge {
                        size: r.len(),
                        limit: self.cfg.max_record_bytes,
                    });
                }
                e.0 += 1;
                e.1 += (r.len() + RECORD_OVERHEAD) as u64;
                total += r.len();
            }
        }
        if total > MAX_REQUEST_BYTES {
            return Err(LogError::RecordTooLarge {
                size: total,
                limit: MAX_REQUEST_BYTES,
            });
        }
        for (&p, &(count, bytes)) in &per {
            // A full segment rolls before any of this round's bytes reach
            // it, so a failed round never has to undo a roll. Records of a
            // round already staged here stay with their segment.
            let a = &self.active[p];
            if a.staged.is_empty() && a.size > 0 && a.size + bytes >= self.cfg.segment_bytes {
                self.roll(p)?;
            }
            let a = &self.active[p];
            let need = a.next_offset + a.staged.len() as u64 + count;
            if need > self.reserved[p] {
                let to = need + RESERVE;
                save_reserved(&self.parts[p].dir, to).map_err(storage)?;
                self.reserved[p] = to;
            }
        }
        if let Some((p, _)) = parts
            .iter()
            .find(|(p, _)| !self.active[*p as usize].entries.is_empty())
        {
            return Err(LogError::Config(format!(
                "partition {p} takes Raft entries this round, not plain records"
            )));
        }
        let mut bases = Vec::with_capacity(parts.len());
        for (p, recs) in parts {
            let a = &mut self.active[p as usize];
            bases.push(a.next_offset + a.staged.len() as u64);
            a.touched = true;
            for r in recs {
                a.staged_bytes += (r.len() + RECORD_OVERHEAD) as u64;
                a.staged.push(r);
            }
        }
        Ok(bases)
    }

    /// Stages Raft entries of partition `p`, each to become one batch;
    /// returns each one's base offset. An entry with a base of its own (a
    /// follower's copy) must continue the log exactly.
    pub(super) fn stage_entries(
        &mut self,
        p: u32,
        entries: Vec<super::NewEntry>,
    ) -> Result<Vec<u64>> {
        if let Some(why) = &self.poisoned {
            return Err(LogError::Poisoned(why.clone()));
        }
        let pi = p as usize;
        if pi >= self.active.len() {
            return Err(LogError::UnknownPartition(p));
        }
        if !self.active[pi].staged.is_empty() {
            return Err(LogError::Config(format!(
                "partition {p} takes plain records this round, not Raft entries"
            )));
        }
        let mut bytes = 0u64;
        for e in &entries {
            for r in &e.records {
                if r.len() > self.cfg.max_record_bytes {
                    return Err(LogError::RecordTooLarge {
                        size: r.len(),
                        limit: self.cfg.max_record_bytes,
                    });
                }
            }
            bytes += (e.bytes() + e.records.len() * RECORD_OVERHEAD) as u64
                + crate::format::ENTRY_HEADER_LEN as u64;
        }
        if bytes as usize > MAX_REQUEST_BYTES {
            return Err(LogError::RecordTooLarge {
                size: bytes as usize,
                limit: MAX_REQUEST_BYTES,
            });
        }
        let a = &self.active[pi];
        if a.entries.is_empty() && a.size > 0 && a.size + bytes >= self.cfg.segment_bytes {
            self.roll(pi)?;
        }
        let a = &self.active[pi];
        let mut next = a
            .entries
            .last()
            .map_or(a.next_offset, |(e, b)| b + e.records.len() as u64);
        let mut placed: Vec<(super::NewEntry, u64)> = Vec::with_capacity(entries.len());
        for e in entries {
            // A leader's first records in a partition that never held any
            // start at `fresh_base` (the time): a cluster made again on
            // wiped disks never hands out an offset (an event id) again.
            let fresh = next == 0 && !e.records.is_empty() && self.cfg.fresh_base > 0;
            let base = match e.base {
                Some(b) if !e.records.is_empty() => b,
                Some(_) => next,
                None if fresh => self.cfg.fresh_base,
                None => next,
            };
            if base < next {
                return Err(LogError::EntryOutOfPlace {
                    partition: p,
                    expected: next,
                    got: base,
                });
            }
            if base > next {
                // The log jumps here (a leader's first records, or a
                // recovery past its watermark): a new segment starts at
                // the new offset, so offsets within a segment stay close.
                self.jump(pi, next, base, &mut placed)?;
            }
            next = base + e.records.len() as u64;
            placed.push((e, base));
        }
        if next > self.reserved[pi] {
            let to = next + RESERVE;
            save_reserved(&self.parts[pi].dir, to).map_err(storage)?;
            self.reserved[pi] = to;
        }
        let a = &mut self.active[pi];
        let bases = placed.iter().map(|(_, b)| *b).collect();
        a.touched = true;
        a.staged_bytes += bytes;
        a.entries.extend(placed);
        Ok(bases)
    }

    /// Partition `pi`'s offsets jump from `next` to `to`: the gap is
    /// recorded (recovery knows it is no loss) and a segment starts at
    /// `to`. Entries staged before it this round may only be ones without
    /// records (a leader's first entries): they move to the new segment.
    fn jump(
        &mut self,
        pi: usize,
        next: u64,
        to: u64,
        placed: &mut Vec<(super::NewEntry, u64)>,
    ) -> Result<()> {
        let staged_records = self.active[pi]
            .entries
            .iter()
            .chain(placed.iter())
            .any(|(e, _)| !e.records.is_empty());
        if staged_records || !self.active[pi].staged.is_empty() {
            return Err(LogError::EntryOutOfPlace {
                partition: pi as u32,
                expected: next,
                got: to,
            });
        }
        let dir = self.parts[pi].dir.clone();
        let mut known = crate::quarantine::load_gaps(&dir).map_err(storage)?;
        crate::quarantine::add_gap(&dir, &mut known, (next, to)).map_err(storage)?;
        let mut moved = std::mem::take(&mut self.active[pi].entries);
        let earlier = moved.len();
        moved.append(placed);
        self.active[pi].next_offset = to;
        if let Err(e) = self.roll(pi) {
            // Earlier requests keep their entries; this one fails whole.
            let a = &mut self.active[pi];
            a.next_offset = a.acked_offset;
            moved.truncate(earlier);
            a.entries = moved;
            return Err(e);
        }
        for (_, b) in &mut moved {
            *b = to;
        }
        *placed = moved;
        Ok(())
    }

    /// Closes the active segment of `p` (synced, indexes written) and starts
    /// a new one at the next offset. Only called with nothing unwritten in
    /// `p`. Either the new segment is in place or nothing changed (apart
    /// from a poisoned log when the old segment's fsync failed).
    pub(super) fn roll(&mut self, p: usize) -> Result<()> {
        // The segment is closed synced (in `always` mode its bytes are in
        // the journal already, which keeps them until a checkpoint).
        if self.active[p].dirty {
            let a = &mut self.active[p];
            if let Err(e) = fault::sync_data(&a.file, &a.path) {
                let e = LogError::io(&a.path, e);
                // The journal still holds every acknowledged byte of the
                // segment: it is written again before the next checkpoint.
                self.reapply = self.journal.is_some();
                if e.is_full() && self.cfg.durability == Durability::Always {
                    return Err(e);
                }
                tracing::error!(partition = p, error = %e, "fsync failed while rolling, log poisoned");
                return Err(LogError::Poisoned(e.to_string()));
            }
            a.dirty = false;
            a.synced_size = a.size;
        }
        let part = self.parts[p].clone();
        let base = self.active[p].next_offset;
        {
            let st = part.read_state();
            if let Some(seg) = st.segments.get(&self.active[p].base) {
                seg.write_indexes().map_err(storage)?;
            }
        }
        let path = log_path(&part.dir, base);
        let created = (|| {
            let file = fault::create_append(&path).map_err(|e| LogError::io(&path, e))?;
            let read = std::fs::OpenOptions::new()
                .read(true)
                .open(&path)
                .map_err(|e| LogError::io(&path, e))?;
            crate::segment::sync_dir(&part.dir)?;
            write_atomic(
                &part.dir.join("recovery-point"),
                base.to_string().as_bytes(),
            )?;
            Ok::<_, LogError>((file, read))
        })();
        let (file, read) = match created {
            Ok(f) => f,
            Err(e) => {
                // The recovery point still names the old segment: an empty
                // new file would be harmless, but leave none behind.
                let _ = std::fs::remove_file(&path);
                return Err(storage(e));
            }
        };
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
        let mut a = Active {
            file: std::sync::Arc::new(file),
            path,
            base,
            size: 0,
            next_offset: base,
            created: Instant::now(),
            unpublished: Vec::new(),
            staged: Vec::new(),
            staged_bytes: 0,
            entries: Vec::new(),
            acked_size: 0,
            synced_size: 0,
            acked_offset: base,
            touched: false,
            dirty: false,
        };
        std::mem::swap(&mut self.active[p], &mut a);
        tracing::debug!(partition = p, base, "rolled segment");
        Ok(())
    }
}

/// A file error outside the segment data path: a full disk stays a full
/// disk; anything else cannot be trusted and poisons.
pub(super) fn storage(e: LogError) -> LogError {
    match e {
        LogError::DiskFull { .. } | LogError::Poisoned(_) => e,
        other => LogError::Poisoned(other.to_string()),
    }
}
