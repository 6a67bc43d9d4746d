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
//! CRC at the end of the journal is a round whose sync never returned, so
//! no producer was told it was stored; one with intact records after it is
//! damage (quarantined and reported, see [`replay`]). Either way the
//! partitions continue past their high watermark.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::OnCorruption;
use crate::error::{LogError, Result};
use crate::fault;
use crate::quarantine::{self, QuarantineReport};
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
        let mut files = Files::new();
        let (records, _) = apply(dir, &self.path, &data[..end], 0, &mut files)?;
        for (p, f) in &files {
            fault::sync_data(f, p).map_err(|e| LogError::io(p, e))?;
        }
        Ok(records)
    }
}

/// What replaying the journal found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Intact records written back into their segments.
    pub records: usize,
    /// Bytes after the intact prefix could not be applied (a torn last
    /// record, or damage): records whose offsets readers may have seen can
    /// be missing, so every partition continues past its high watermark.
    pub lost_tail: bool,
    /// A damaged record with intact records after it: corruption, not a
    /// torn write. Its bytes are quarantined and reported.
    pub quarantined: Option<QuarantineReport>,
}

/// Replays the journal of the log in `dir`, if it has one, before the
/// segments are opened: every intact record's bytes are written at their
/// place, the segments written are synced, and the journal is emptied.
///
/// A record that is short or fails its CRC at the very end is a round whose
/// sync never returned (a torn tail). One followed by intact records is
/// damage: its bytes (to the next intact record) are quarantined with a
/// report, the intact records after it are applied too, and under
/// [`OnCorruption::Refuse`] the log does not open. Either way the caller
/// is told ([`Replayed::lost_tail`]) so no offset is handed out twice.
pub(crate) fn replay(dir: &Path, policy: OnCorruption) -> Result<Replayed> {
    let path = dir.join(FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    if data.is_empty() {
        return Ok(Replayed::default());
    }
    let mut out = Replayed::default();
    let mut files = Files::new();
    let mut at = 0;
    loop {
        let (records, used) = apply(dir, &path, &data, at, &mut files)?;
        out.records += records;
        if used >= data.len() {
            break;
        }
        out.lost_tail = true;
        let Some(resume) = next_intact(&data, used) else {
            tracing::warn!(
                bytes = data.len() - used,
                position = used,
                "journal: an incomplete last record (a round never acknowledged) is dropped; \
                 offsets continue past the high watermark"
            );
            break;
        };
        if policy == OnCorruption::Refuse {
            return Err(LogError::CorruptSegment {
                path: path.clone(),
                position: used as u64,
                reason: format!(
                    "journal record damaged with intact records after it (bytes {used}..{resume})"
                ),
            });
        }
        let report = quarantine::put(
            &quarantine::dir(dir),
            quarantine::JOURNAL,
            &path,
            used as u64,
            &data[used..resume],
            (0, None),
            "damaged journal record with intact records after it: a round that was \
             acknowledged may be lost; its partitions continue past their high watermark",
        )?;
        tracing::error!(
            position = used,
            bytes = resume - used,
            "journal: a damaged record in the middle was quarantined; the records after it are kept"
        );
        out.quarantined.get_or_insert(report);
        at = resume;
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
        records = out.records,
        segments = files.len(),
        "journal replayed into the segments"
    );
    Ok(out)
}

/// Where the next intact record after the damaged one at `from` starts, if
/// any: first where the damaged record's own length says, then at every
/// later byte (a record must also look like one: a sane part count and a
/// first part that fits, which rules out almost every position before the
/// CRC is computed).
fn next_intact(data: &[u8], from: usize) -> Option<usize> {
    let plausible = |at: usize| -> bool {
        let Some(h) = data.get(at..at + RECORD_HEADER + 4 + PART_HEADER) else {
            return false;
        };
        let len = le_u32(h, 0) as usize;
        let parts = le_u32(h, RECORD_HEADER);
        let first = le_u32(h, RECORD_HEADER + 4 + 20) as usize;
        (1..=4096).contains(&parts)
            && at + RECORD_HEADER + len <= data.len()
            && 4 + PART_HEADER + first <= len
    };
    if let Some(h) = data.get(from..from + RECORD_HEADER) {
        let skip = from + RECORD_HEADER + le_u32(h, 0) as usize;
        if skip > from && plausible(skip) && next_record(data, skip).is_some() {
            return Some(skip);
        }
    }
    (from + 1..data.len()).find(|&at| plausible(at) && next_record(data, at).is_some())
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

/// Writes every intact record of `data` from `at` on at its place, up to
/// the first that is not intact; returns the records applied and where
/// they end. The files written are kept in `files` (to sync).
fn apply(
    dir: &Path,
    journal: &Path,
    data: &[u8],
    mut at: usize,
    files: &mut Files,
) -> Result<(usize, usize)> {
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
    Ok((records, at))
}
