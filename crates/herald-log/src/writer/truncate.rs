//! Cutting a replicated partition's uncommitted tail: a new Raft leader
//! overwrites entries a follower holds that were never committed.

use std::os::unix::fs::FileExt;

use super::{Active, Writer};
use crate::error::{LogError, Result};
use crate::fault;
use crate::format::{check_batch, Invalid};
use crate::segment::{sync_dir, write_atomic};

impl Writer {
    /// Removes from partition `p` the first batch whose Raft index is at or
    /// past `from_index` and everything after it. `hint` is an offset at or
    /// before that batch (its base offset): the scan starts there.
    ///
    /// The journal is emptied first, so a crash after the cut cannot write
    /// the removed batches back.
    pub(super) fn truncate(&mut self, p: u32, hint: u64, from_index: u64) -> Result<()> {
        if let Some(why) = &self.poisoned {
            return Err(LogError::Poisoned(why.clone()));
        }
        let pi = p as usize;
        if pi >= self.active.len() {
            return Err(LogError::UnknownPartition(p));
        }
        if !self.active[pi].staged.is_empty() || !self.active[pi].entries.is_empty() {
            return Err(LogError::Config(format!(
                "partition {p} cannot be truncated with appends staged"
            )));
        }
        for a in &mut self.active {
            a.dirty |= a.size > a.synced_size;
        }
        self.checkpoint()?;
        let part = self.parts[pi].clone();
        let Some((seg_base, pos, next_offset)) = self.find_cut(pi, hint, from_index)? else {
            return Ok(());
        };
        // Whole segments after the cut go, newest first.
        let later: Vec<u64> = part
            .read_state()
            .segments
            .range(seg_base + 1..)
            .map(|(b, _)| *b)
            .collect();
        for b in later.into_iter().rev() {
            let seg = part.write_state().segments.remove(&b);
            if let Some(seg) = seg {
                seg.remove_files()?;
            }
        }
        let path = {
            let mut st = part.write_state();
            let seg = st
                .segments
                .get_mut(&seg_base)
                .ok_or_else(|| LogError::Config(format!("segment {seg_base} vanished")))?;
            // Segment read handles are read-only: cut through a write one.
            let w = std::fs::OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(|e| LogError::io(&seg.path, e))?;
            fault::set_len(&w, &seg.path, pos).map_err(|e| LogError::io(&seg.path, e))?;
            fault::sync_all(&w, &seg.path).map_err(|e| LogError::io(&seg.path, e))?;
            seg.size = pos;
            seg.next_offset = next_offset;
            seg.index.retain(|&(_, ip)| (ip as u64) < pos);
            let rel = next_offset.saturating_sub(seg_base);
            seg.time_index.retain(|&(_, r)| (r as u64) < rel);
            seg.path.clone()
        };
        sync_dir(&part.dir)?;
        write_atomic(
            &part.dir.join("recovery-point"),
            seg_base.to_string().as_bytes(),
        )?;
        let a = &mut self.active[pi];
        if a.base == seg_base {
            a.size = pos;
            a.acked_size = pos;
            a.synced_size = a.synced_size.min(pos);
            a.next_offset = next_offset;
            a.acked_offset = next_offset;
            a.unpublished.clear();
        } else {
            *a = Active::open(path, seg_base, pos, next_offset, std::time::Instant::now())?;
        }
        tracing::info!(
            partition = p,
            from_index,
            offset = next_offset,
            "uncommitted log tail cut"
        );
        part.end_tx.send_replace(next_offset);
        Ok(())
    }

    /// The segment, byte position and offset of the first batch of `pi`
    /// whose Raft index is at or past `from_index`, if any.
    fn find_cut(&self, pi: usize, hint: u64, from_index: u64) -> Result<Option<(u64, u64, u64)>> {
        for crate::partition::SegmentScan {
            base,
            file,
            path,
            start,
            size,
        } in self.parts[pi].segments_from(hint)
        {
            if start >= size {
                continue;
            }
            let mut buf = vec![0u8; (size - start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| LogError::io(&path, e))?;
            let mut p = 0usize;
            // Where the batch before the cut ends (a jump in offsets that
            // the cut batch started is cut with it).
            let mut prev_end: Option<u64> = None;
            while p < buf.len() {
                let h = match check_batch(&buf[p..]) {
                    Ok(h) => h,
                    Err(Invalid::Short { .. }) | Err(Invalid::Corrupt(_)) => {
                        return Err(LogError::CorruptSegment {
                            path,
                            position: start + p as u64,
                            reason: "unreadable batch while cutting the log tail".into(),
                        })
                    }
                };
                if h.entry.is_some_and(|e| e.index >= from_index) {
                    let next = prev_end.unwrap_or(h.base_offset).min(h.base_offset);
                    return Ok(Some((base, start + p as u64, next)));
                }
                prev_end = Some(h.next_offset());
                p += h.size;
            }
        }
        Ok(None)
    }
}
