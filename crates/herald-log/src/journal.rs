//! The round journal: one file per log that makes a round durable with one
//! `fdatasync`, however many partitions the round touched.
//!
//! In `always` mode a round of several partitions and at most
//! [`MAX_ROUND_BYTES`] writes each touched partition's batches to its
//! segment (to the page cache only) and one record to `journal` holding the
//! same bytes and where they went; the round's producers are answered after
//! the journal's `fdatasync` alone. A round of one partition, or a larger
//! one, syncs every segment written since the last sync instead (in
//! parallel), which empties the journal too. The segments are synced at a checkpoint
//! (every tick, about once a second, or once the journal passes
//! [`CHECKPOINT_BYTES`]), after which the journal is emptied.
//!
//! Opening a log replays its journal before anything else looks at the
//! segments: every record's bytes are written again at their place (the
//! same bytes at the same place, so a record whose bytes had reached the
//! segment changes nothing), the segments written are synced, the journal
//! is emptied, and only then does recovery scan the segments. The same
//! re-application runs before a checkpoint that follows a failed segment
//! sync, because after a failed `fdatasync` the kernel may have dropped
//! the pages it could not write.
//!
//! Record: `len u32 | crc32c(body) u32 | body`, little-endian; body:
//! `parts u32`, then per part `partition u32 | segment base u64 |
//! position u64 | length u32 | bytes`. A record that is short or fails its
//! CRC ends the journal: it is a round whose sync never returned, so no
//! producer was told it was stored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::log_path;

/// The journal's file name in the log directory.
pub const FILE: &str = "journal";

/// A journal longer than this is checkpointed at the end of its round
/// rather than at the next tick.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Rounds of more bytes than this (or of one partition) sync their
/// segments directly: past it, a second copy costs more than the fsyncs
/// it saves, and the checkpoint would have much to sync at once.
pub(crate) const MAX_ROUND_BYTES: u64 = 256 << 10;

/// Past this many journaled bytes since the last checkpoint, journaled
/// segment bytes start write-back as soon as they are written.
pub(crate) const WRITEBACK_AFTER: u64 = 4 << 20;

const RECORD_HEADER: usize = 8;
const PART_HEADER: usize = 4 + 8 + 8 + 4;

/// The writer's end of the journal.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of the file that hold synced records.
    len: u64,
    /// The round's record, built as its partitions are written.
    rec: Vec<u8>,
    parts: u32,
    /// A write reached the file after `len` (to cut on rollback).
    written: bool,
}

impl Journal {
    /// Opens the journal of the log in `dir` (replayed and emptied by
    /// [`replay`] beforehand).
    pub(crate) fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join(FILE);
        let file = fault::create_append(&path).map_err(|e| LogError::io(&path, e))?;
        let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        Ok(Journal {
            file,
            path,
            len,
            rec: Vec::with_capacity(64 << 10),
            parts: 0,
            written: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of synced records.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Adds to the round's record the bytes written to `partition`'s
    /// segment `base` at `pos`.
    pub(crate) fn add(&mut self, partition: u32, base: u64, pos: u64, bytes: &[u8]) {
        if self.parts == 0 {
            self.rec.clear();
            self.rec.extend_from_slice(&[0; RECORD_HEADER + 4]);
        }
        self.parts += 1;
        self.rec.extend_from_slice(&partition.to_le_bytes());
        self.rec.extend_from_slice(&base.to_le_bytes());
        self.rec.extend_from_slice(&pos.to_le_bytes());
        self.rec
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.rec.extend_from_slice(bytes);
    }

    /// Forgets the round's record (its bytes were synced in their segments,
    /// or the round failed).
    pub(crate) fn discard(&mut self) {
        self.parts = 0;
        self.rec.clear();
    }

    /// Writes the round's record and syncs it: the round is durable.
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        if self.parts == 0 {
            return Ok(());
        }
        let body_len = (self.rec.len() - RECORD_HEADER) as u32;
        self.rec[RECORD_HEADER..RECORD_HEADER + 4].copy_from_slice(&self.parts.to_le_bytes());
        let crc = crc32c::crc32c(&self.rec[RECORD_HEADER..]);
        self.rec[0..4].copy_from_slice(&body_len.to_le_bytes());
        self.rec[4..8].copy_from_slice(&crc.to_le_bytes());
        self.written = true;
        fault::write_all(&self.file, &self.path, &self.rec)?;
        fault::sync_data(&self.file, &self.path)?;
        self.len += self.rec.len() as u64;
        self.written = false;
        self.discard();
        Ok(())
    }

    /// Undoes a failed round: its record is dropped and whatever of it
    /// reached the file is cut.
    pub(crate) fn rollback(&mut self) -> io::Result<()> {
        self.discard();
        if self.written {
            fault::set_len(&self.file, &self.path, self.len)?;
            self.written = false;
        }
        Ok(())
    }

    /// Empties the journal once every segment it covers is synced.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        fault::set_len(&self.file, &self.path, 0)?;
        self.len = 0;
        Ok(())
    }

    /// Writes every synced record's bytes again at their place in the
    /// segments of the log in `dir`, and syncs the segments written.
    pub(crate) fn reapply(&self, dir: &Path) -> Result<usize> {
        let data = std::fs::read(&self.path).map_err(|e| LogError::io(&self.path, e))?;
        let end = (self.len as usize).min(data.len());
        let (records, _, files) = apply(dir, &self.path, &data[..end])?;
        for (p, f) in &files {
            fault::sync_data(f, p).map_err(|e| LogError::io(p, e))?;
        }
        Ok(records)
    }
}

/// Replays the journal of the log in `dir`, if it has one, before the
/// segments are opened: every complete record's bytes are written at their
/// place, the segments written are synced, and the journal is emptied.
/// Returns the number of records replayed.
pub(crate) fn replay(dir: &Path) -> Result<usize> {
    let path = dir.join(FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    if data.is_empty() {
        return Ok(0);
    }
    let (records, used, files) = apply(dir, &path, &data)?;
    if used < data.len() {
        tracing::warn!(
            bytes = data.len() - used,
            "journal: an incomplete last record (a round never acknowledged) is dropped"
        );
    }
    for (p, f) in &files {
        fault::sync_data(f, p).map_err(|e| LogError::io(p, e))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    fault::set_len(&f, &path, 0).map_err(|e| LogError::io(&path, e))?;
    fault::sync_data(&f, &path).map_err(|e| LogError::io(&path, e))?;
    tracing::info!(
        records,
        segments = files.len(),
        "journal replayed into the segments"
    );
    Ok(records)
}

/// The next complete, intact record at `at`: its body and where the one
/// after it starts.
fn next_record(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = data.get(at..at + RECORD_HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let body = data.get(at + RECORD_HEADER..at + RECORD_HEADER + len)?;
    (crc32c::crc32c(body) == crc).then_some((body, at + RECORD_HEADER + len))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

type Files = BTreeMap<PathBuf, File>;

/// Writes every intact record of `data` at its place; returns the records
/// applied, the bytes they took and the files written.
fn apply(dir: &Path, journal: &Path, data: &[u8]) -> Result<(usize, usize, Files)> {
    let mut files = Files::new();
    let mut at = 0;
    let mut records = 0;
    while let Some((body, next)) = next_record(data, at) {
        let bad = |reason: &str| LogError::CorruptSegment {
            path: journal.to_path_buf(),
            position: at as u64,
            reason: format!("journal record: {reason}"),
        };
        let parts = le_u32(body.get(..4).ok_or_else(|| bad("no part count"))?, 0);
        let mut p = 4;
        for _ in 0..parts {
            let h = body
                .get(p..p + PART_HEADER)
                .ok_or_else(|| bad("part header past the record"))?;
            let (partition, base, pos) = (le_u32(h, 0), le_u64(h, 4), le_u64(h, 12));
            let len = le_u32(h, 20) as usize;
            p += PART_HEADER;
            let bytes = body
                .get(p..p + len)
                .ok_or_else(|| bad("part bytes past the record"))?;
            p += len;
            let seg = log_path(&crate::open::partition_dir(dir, partition), base);
            if !files.contains_key(&seg) {
                match OpenOptions::new().write(true).open(&seg) {
                    Ok(f) => {
                        files.insert(seg.clone(), f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Retention deleted it after a roll had synced it.
                        tracing::warn!(segment = %seg.display(), "journal names a segment that is gone; skipped");
                        continue;
                    }
                    Err(e) => return Err(LogError::io(&seg, e)),
                }
            }
            if let Some(f) = files.get(&seg) {
                fault::write_all_at(f, &seg, bytes, pos).map_err(|e| LogError::io(&seg, e))?;
            }
        }
        at = next;
        records += 1;
    }
    Ok((records, at, files))
}
