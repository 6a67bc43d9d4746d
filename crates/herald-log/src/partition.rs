//! A partition's shared state and the read path.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{LogError, Result};
use crate::format::{check_batch, records_of, Invalid, Record};
use crate::segment::SegmentInfo;

/// The smallest chunk a read pulls from disk.
const MIN_READ: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct PartitionState {
    pub segments: BTreeMap<u64, SegmentInfo>,
}

impl PartitionState {
    pub fn start_offset(&self) -> u64 {
        self.segments.values().next().map_or(0, |s| s.base)
    }

    pub fn end_offset(&self) -> u64 {
        self.segments
            .values()
            .next_back()
            .map_or(0, |s| s.next_offset)
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
}

/// Shared between the writer thread and readers.
#[derive(Debug)]
pub struct Partition {
    pub id: u32,
    pub dir: PathBuf,
    pub state: RwLock<PartitionState>,
    /// One past the last readable offset, for tailing readers.
    pub end_tx: watch::Sender<u64>,
    /// Retention keeps every segment with records at or past this offset
    /// (`u64::MAX`: no hold). A replicated partition holds retention at its
    /// snapshot, so what retention removes is always already in it.
    pub retention_floor: std::sync::atomic::AtomicU64,
}

impl Partition {
    pub fn new(id: u32, dir: PathBuf, state: PartitionState) -> Partition {
        let end = state.end_offset();
        Partition {
            id,
            dir,
            state: RwLock::new(state),
            end_tx: watch::channel(end).0,
            retention_floor: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    pub fn read_state(&self) -> std::sync::RwLockReadGuard<'_, PartitionState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, PartitionState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads records from `from` on, up to about `max_bytes` of payload (at
    /// least one record when any is readable).
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut from = from;
        loop {
            let (file, path, pos, size, until) = {
                let st = self.read_state();
                let start = st.start_offset();
                let end = st.end_offset();
                if from < start || from > end {
                    return Err(LogError::OffsetOutOfRange {
                        requested: from,
                        start,
                        end,
                    });
                }
                if from == end {
                    return Ok(out);
                }
                let Some((_, seg)) = st.segments.range(..=from).next_back() else {
                    return Ok(out);
                };
                if from >= seg.next_offset {
                    // Past the end of a closed (or empty) segment: the next
                    // one starts here, or after a recorded gap.
                    use std::ops::Bound::{Excluded, Unbounded};
                    match st.segments.range((Excluded(seg.base), Unbounded)).next() {
                        Some((_, next)) => from = from.max(next.base),
                        None => return Ok(out),
                    }
                    continue;
                }
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.position_for(from),
                    seg.size,
                    seg.next_offset,
                )
            };
            let budget = max_bytes.saturating_sub(payload_bytes(&out));
            let n = self.read_segment(&file, &path, pos, size, from, until, budget, &mut out)?;
            if n == 0 {
                return Ok(out);
            }
            from = out.last().map_or(from, |r| r.offset + 1);
            if payload_bytes(&out) >= max_bytes || from < until {
                return Ok(out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_segment(
        &self,
        file: &std::fs::File,
        path: &std::path::Path,
        mut pos: u64,
        size: u64,
        from: u64,
        until: u64,
        budget: usize,
        out: &mut Vec<Record>,
    ) -> Result<usize> {
        let before = out.len();
        let mut got = 0usize;
        while pos < size {
            let want = (size - pos).min(budget.max(MIN_READ) as u64 + MIN_READ as u64) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| LogError::io(path, e))?;
            let mut buf = Bytes::from(buf);
            let mut p = 0usize;
            loop {
                match check_batch(&buf[p..]) {
                    Ok(h) => {
                        if h.next_offset() > from {
                            let b = buf.slice(p..p + h.size);
                            records_of(&b, &h, from, until, out);
                            got = out.len() - before;
                        }
                        p += h.size;
                        if got > 0 && payload_bytes(&out[before..]) >= budget {
                            return Ok(got);
                        }
                        if h.next_offset() >= until || pos + p as u64 >= size {
                            return Ok(got);
                        }
                    }
                    Err(Invalid::Short { need }) => {
                        if p == 0 {
                            // One batch larger than the chunk: read it whole.
                            if pos + need as u64 > size {
                                return Err(LogError::CorruptSegment {
                                    path: path.to_path_buf(),
                                    position: pos,
                                    reason: "batch runs past the readable end".into(),
                                });
                            }
                            let mut big = vec![0u8; need];
                            file.read_exact_at(&mut big, pos)
                                .map_err(|e| LogError::io(path, e))?;
                            buf = Bytes::from(big);
                            continue;
                        }
                        break;
                    }
                    Err(Invalid::Corrupt(reason)) => {
                        return Err(LogError::CorruptSegment {
                            path: path.to_path_buf(),
                            position: pos + p as u64,
                            reason,
                        });
                    }
                }
            }
            pos += p as u64;
        }
        Ok(got)
    }

    /// The first offset whose timestamp is at or after `ts_ms` (the end
    /// offset when there is none).
    pub fn offset_for_time(&self, ts_ms: i64) -> Result<u64> {
        let (file, path, pos, size, end) = {
            let st = self.read_state();
            let Some(seg) = st.segments.values().find(|s| s.max_ts >= ts_ms) else {
                return Ok(st.end_offset());
            };
            (
                seg.file.clone(),
                seg.path.clone(),
                seg.position_for_time(ts_ms),
                seg.size,
                seg.next_offset,
            )
        };
        let mut pos = pos;
        while pos < size {
            let mut head = vec![0u8; crate::format::HEADER_LEN];
            file.read_exact_at(&mut head, pos)
                .map_err(|e| LogError::io(&path, e))?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64 + 4;
            let mut last = [0u8; 8];
            last.copy_from_slice(&head[29..37]);
            if i64::from_le_bytes(last) >= ts_ms {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[9..17]);
                return Ok(u64::from_le_bytes(b));
            }
            pos += len;
        }
        Ok(end)
    }
}

/// Where to scan a segment from, for entries at or after some offset.
pub(crate) struct SegmentScan {
    pub base: u64,
    pub file: std::sync::Arc<std::fs::File>,
    pub path: PathBuf,
    /// Byte position to start at.
    pub start: u64,
    pub size: u64,
}

impl Partition {
    /// The segments that may hold batches at or after offset `hint`, each
    /// with the position to scan it from. A batch without records at `hint`
    /// may end the segment before the one holding `hint`: the scan starts
    /// in the segment before it.
    pub(crate) fn segments_from(&self, hint: u64) -> Vec<SegmentScan> {
        let st = self.read_state();
        let first = st
            .segments
            .range(..hint.max(1))
            .next_back()
            .map_or(0, |(b, _)| *b);
        st.segments
            .range(first..)
            .map(|(b, s)| SegmentScan {
                base: *b,
                file: s.file.clone(),
                path: s.path.clone(),
                start: if *b == first {
                    s.position_for(hint.saturating_sub(1))
                } else {
                    0
                },
                size: s.size,
            })
            .collect()
    }
}

/// One Raft entry batch read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub meta: crate::format::EntryMeta,
    pub base_offset: u64,
    pub timestamp_ms: i64,
    pub records: Vec<Bytes>,
    pub body: Bytes,
}

impl Partition {
    /// Reads Raft entry batches whose index is at or past `min_index`,
    /// scanning from offset `hint` (at or before the first wanted entry),
    /// until about `max_bytes` (at least one entry when any is there).
    /// Plain batches are skipped.
    pub fn read_entries(
        &self,
        hint: u64,
        min_index: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for SegmentScan {
            file,
            path,
            start: mut pos,
            size,
            ..
        } in self.segments_from(hint)
        {
            while pos < size {
                let want = (size - pos).min((max_bytes.saturating_sub(bytes) + MIN_READ) as u64);
                let mut buf = vec![0u8; want as usize];
                file.read_exact_at(&mut buf, pos)
                    .map_err(|e| LogError::io(&path, e))?;
                let buf = Bytes::from(buf);
                let mut p = 0usize;
                loop {
                    let h = match check_batch(&buf[p..]) {
                        Ok(h) => h,
                        Err(Invalid::Short { need }) if p == 0 => {
                            if pos + need as u64 > size {
                                return Err(LogError::CorruptSegment {
                                    path,
                                    position: pos,
                                    reason: "batch runs past the readable end".into(),
                                });
                            }
                            let mut big = vec![0u8; need];
                            file.read_exact_at(&mut big, pos)
                                .map_err(|e| LogError::io(&path, e))?;
                            let big = Bytes::from(big);
                            let h = check_batch(&big).map_err(|_| LogError::CorruptSegment {
                                path: path.clone(),
                                position: pos,
                                reason: "batch changed while read".into(),
                            })?;
                            bytes += push_entry(&big, &h, min_index, &mut out);
                            pos += h.size as u64;
                            break;
                        }
                        Err(Invalid::Short { .. }) => {
                            pos += p as u64;
                            break;
                        }
                        Err(Invalid::Corrupt(reason)) => {
                            return Err(LogError::CorruptSegment {
                                path,
                                position: pos + p as u64,
                                reason,
                            })
                        }
                    };
                    bytes += push_entry(&buf.slice(p..p + h.size), &h, min_index, &mut out);
                    p += h.size;
                    if pos + p as u64 >= size {
                        pos += p as u64;
                        break;
                    }
                    if bytes >= max_bytes && !out.is_empty() {
                        return Ok(out);
                    }
                }
                if bytes >= max_bytes && !out.is_empty() {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

/// Adds the entry batch `b` (header `h`) to `out` when its index is at or
/// past `min_index`; returns the bytes it added.
fn push_entry(
    b: &Bytes,
    h: &crate::format::BatchHeader,
    min_index: u64,
    out: &mut Vec<StoredEntry>,
) -> usize {
    let Some(meta) = h.entry.filter(|e| e.index >= min_index) else {
        return 0;
    };
    let mut recs = Vec::with_capacity(h.count as usize);
    records_of(b, h, 0, u64::MAX, &mut recs);
    let body = if h.count == 0 && meta.kind != crate::format::EntryKind::Events {
        b.slice(crate::format::ENTRY_HEADER_LEN..h.size)
    } else {
        Bytes::new()
    };
    out.push(StoredEntry {
        meta,
        base_offset: h.base_offset,
        timestamp_ms: h.first_ts,
        records: recs.into_iter().map(|r| r.payload).collect(),
        body,
    });
    h.size
}

fn payload_bytes(r: &[Record]) -> usize {
    r.iter().map(|r| r.payload.len() + 16).sum()
}

pub type Shared = Arc<Partition>;
