//! One segment: a `.log` file of batches, with its sparse offset index and
//! time index (kept in memory, written beside the segment when it closes,
//! and always rebuildable from the segment itself).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::fault;
use crate::format::BatchHeader;

/// `base` as a segment file stem: zero-padded so names sort by offset.
pub fn stem(base: u64) -> String {
    format!("{base:020}")
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.log", stem(base)))
}

fn index_path(log: &Path) -> PathBuf {
    log.with_extension("index")
}

fn timeindex_path(log: &Path) -> PathBuf {
    log.with_extension("timeindex")
}

/// What the log knows about one segment, shared by the writer and readers.
#[derive(Debug)]
pub struct SegmentInfo {
    pub base: u64,
    pub path: PathBuf,
    /// Read handle (positional reads only).
    pub file: Arc<File>,
    /// Bytes readers may see (durable in `always` mode).
    pub size: u64,
    /// One past the last readable offset.
    pub next_offset: u64,
    /// Sparse offset index: (offset - base, byte position of the batch).
    pub index: Vec<(u32, u32)>,
    /// Time index: (first timestamp of the batch, offset - base), timestamps
    /// made non-decreasing.
    pub time_index: Vec<(i64, u32)>,
    pub max_ts: i64,
}

impl SegmentInfo {
    /// The byte position to start scanning from to find `offset`.
    pub fn position_for(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base);
        let rel = u32::try_from(rel).unwrap_or(u32::MAX);
        match self.index.partition_point(|&(r, _)| r <= rel) {
            0 => 0,
            i => self.index[i - 1].1 as u64,
        }
    }

    /// The byte position to start scanning from to find the first batch
    /// with a timestamp at or after `ts`.
    pub fn position_for_time(&self, ts: i64) -> u64 {
        let i = self.time_index.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            return 0;
        }
        self.position_for(self.base + self.time_index[i - 1].1 as u64)
    }

    /// Records an index entry for a batch written at `pos`, if `interval`
    /// bytes have passed since the previous one.
    pub fn note_batch(&mut self, h: &BatchHeader, pos: u64, interval: u64) {
        let rel = (h.base_offset - self.base) as u32;
        // Entries without records share their base offset with the next
        // batch: they never take an index entry of their own (record
        // batches are indexed exactly as before entries existed).
        let due = match self.index.last() {
            None => true,
            Some(&(r, last)) => pos >= last as u64 + interval && (rel > r || h.count > 0),
        };
        if due {
            self.index.push((rel, pos as u32));
            let ts = h
                .first_ts
                .max(self.time_index.last().map_or(i64::MIN, |t| t.0));
            self.time_index.push((ts, rel));
        }
        self.max_ts = self.max_ts.max(h.last_ts);
        self.next_offset = h.next_offset();
        self.size = pos + h.size as u64;
    }

    /// Writes both index files (temp file, then rename).
    pub fn write_indexes(&self) -> Result<()> {
        let mut a = Vec::with_capacity(self.index.len() * 8);
        for &(r, p) in &self.index {
            a.extend_from_slice(&r.to_le_bytes());
            a.extend_from_slice(&p.to_le_bytes());
        }
        write_atomic(&index_path(&self.path), &a)?;
        let mut t = Vec::with_capacity(self.time_index.len() * 12);
        for &(ts, r) in &self.time_index {
            t.extend_from_slice(&ts.to_le_bytes());
            t.extend_from_slice(&r.to_le_bytes());
        }
        write_atomic(&timeindex_path(&self.path), &t)
    }

    pub fn remove_files(&self) -> Result<()> {
        for p in [
            self.path.clone(),
            index_path(&self.path),
            timeindex_path(&self.path),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(&p, e)),
            }
        }
        Ok(())
    }
}

/// Writes `data` to `path` so that a crash leaves either the old or the new
/// content, never a mix: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let res = (|| {
        let f = fault::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
        fault::write_all(&f, &tmp, data).map_err(|e| LogError::io(&tmp, e))?;
        fault::sync_data(&f, &tmp).map_err(|e| LogError::io(&tmp, e))?;
        fault::rename(&tmp, path).map_err(|e| LogError::io(path, e))
    })();
    if res.is_err() {
        // Leave no half-written temp file on a full disk.
        let _ = fs::remove_file(&tmp);
    }
    res?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| LogError::io(dir, e))?;
    fault::sync_all(&d, dir).map_err(|e| LogError::io(dir, e))
}

/// What recovery cut from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub path: PathBuf,
    pub valid_bytes: u64,
    pub cut_bytes: u64,
    pub reason: String,
}

/// Offset index and time index entries.
pub(crate) type Indexes = (Vec<(u32, u32)>, Vec<(i64, u32)>);

pub(crate) fn load_index(log: &Path, size: u64) -> Option<Indexes> {
    let a = fs::read(index_path(log)).ok()?;
    let t = fs::read(timeindex_path(log)).ok()?;
    if a.len() % 8 != 0 || t.len() % 12 != 0 || a.len() / 8 != t.len() / 12 {
        return None;
    }
    let mut index = Vec::with_capacity(a.len() / 8);
    for c in a.chunks_exact(8) {
        let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let p = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        if let Some(&(lr, lp)) = index.last() {
            if r <= lr || p <= lp {
                return None;
            }
        }
        if p as u64 >= size {
            return None;
        }
        index.push((r, p));
    }
    let mut time_index = Vec::with_capacity(t.len() / 12);
    for c in t.chunks_exact(12) {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&c[0..8]);
        let ts = i64::from_le_bytes(ts);
        let r = u32::from_le_bytes([c[8], c[9], c[10], c[11]]);
        time_index.push((ts, r));
    }
    if index.first().is_some_and(|&(r, p)| r != 0 || p != 0) {
        return None;
    }
    Some((index, time_index))
}
