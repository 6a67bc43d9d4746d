//! Opening one segment: validating its batches, and what to do with the
//! ones that do not check.
//!
//! A batch that fails its checks is either a torn tail (the last segment
//! ends in a batch that was being written when the process or machine
//! died: cut it, as every log does) or corruption. For corruption the scan
//! resynchronises on the next batch whose header and CRC check and whose
//! offset is plausible, moves exactly the bad byte range aside
//! ([`crate::quarantine`]), records the offsets it held as a gap, and keeps
//! every valid batch after it. With [`OnCorruption::Refuse`] it returns an
//! error instead and the log does not open.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::OnCorruption;
use crate::error::{LogError, Result};
use crate::fault;
use crate::format::{check_batch, BatchHeader, Invalid, HEADER_LEN, MAGIC, MAGIC_ENTRY};
use crate::quarantine::{self, QuarantineReport};
use crate::segment::{load_index, sync_dir, SegmentInfo, Truncation};

/// The furthest a resynchronised batch's offset may lie past the expected
/// one (keeps index entries within u32 and rejects random bytes).
const MAX_RESYNC_JUMP: u64 = 1 << 30;

/// What the partition-level recovery tells the segment scan.
pub struct ScanCtx<'a> {
    pub partition: u32,
    pub pdir: &'a Path,
    pub qdir: &'a Path,
    pub policy: OnCorruption,
    pub gaps: &'a mut Vec<(u64, u64)>,
    /// Whether this is the partition's last segment (only it can have a
    /// torn tail).
    pub last: bool,
    pub interval: u64,
}

/// What a scan found and did.
#[derive(Default)]
pub struct Findings {
    pub truncation: Option<Truncation>,
    pub quarantined: Vec<QuarantineReport>,
    /// The tail was corrupt (not merely torn): offsets past the end may
    /// have been handed out before the crash.
    pub unknown_tail: bool,
}

fn gap_recorded(gaps: &[(u64, u64)], from: u64, to: u64) -> bool {
    gaps.contains(&(from, to))
}

/// The next position at or after `from` holding a valid batch whose offset
/// is at or after `expected` (and not absurdly far past it).
fn resync(buf: &[u8], from: usize, expected: u64) -> Option<(usize, BatchHeader)> {
    let mut y = from;
    while y + HEADER_LEN <= buf.len() {
        let b = &buf[y..];
        if b[8] == MAGIC || b[8] == MAGIC_ENTRY {
            let mut o = [0u8; 8];
            o.copy_from_slice(&b[9..17]);
            let base = u64::from_le_bytes(o);
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if base >= expected
                && base - expected <= MAX_RESYNC_JUMP
                && len + 4 >= HEADER_LEN
                && len + 4 <= b.len()
            {
                if let Ok(h) = check_batch(b) {
                    return Some((y, h));
                }
            }
        }
        y += 1;
    }
    None
}

/// Opens the segment at `path` (base offset `base`). With `full_scan`, or
/// when its index files are missing or corrupt, every batch is validated and
/// the indexes rebuilt; otherwise only the batches after the last index
/// entry are.
pub fn open_segment(
    path: &Path,
    base: u64,
    full_scan: bool,
    ctx: &mut ScanCtx<'_>,
) -> Result<(SegmentInfo, Findings)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(path, e))?;
    let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    let mut seg = SegmentInfo {
        base,
        path: path.to_path_buf(),
        file: Arc::new(file),
        size: 0,
        next_offset: base,
        index: Vec::new(),
        time_index: Vec::new(),
        max_ts: i64::MIN,
    };
    let start = if full_scan {
        0
    } else {
        resume_from_index(&mut seg, len)
    };
    let mut buf = vec![0u8; (len - start) as usize];
    seg.file
        .read_exact_at(&mut buf, start)
        .map_err(|e| LogError::io(path, e))?;
    let mut scan = Scan {
        path,
        buf,
        start,
        removed_before: 0,
        rewrite: false,
        found: Findings::default(),
    };
    let mut pos = 0usize;
    let mut expected: Option<u64> = (start == 0).then_some(base);
    while pos < scan.buf.len() {
        let why = match check_batch(&scan.buf[pos..]) {
            Ok(h) => {
                let exp = expected.unwrap_or(h.base_offset);
                if h.base_offset == exp
                    || (h.base_offset > exp && gap_recorded(ctx.gaps, exp, h.base_offset))
                {
                    expected = Some(h.next_offset());
                    seg.note_batch(&h, start + pos as u64, ctx.interval);
                    pos += h.size;
                    continue;
                }
                Invalid::Corrupt(format!(
                    "batch offset {} where {exp} was expected",
                    h.base_offset
                ))
            }
            Err(e) => e,
        };
        scan.invalid_at(ctx, pos, expected.unwrap_or(base), why)?;
    }
    let valid = start + scan.buf.len() as u64;
    if scan.rewrite {
        seg.file = Arc::new(rewrite_segment(path, &seg.file, start, &scan.buf)?);
    } else if valid < len {
        fault::set_len(&seg.file, path, valid).map_err(|e| LogError::io(path, e))?;
        fault::sync_all(&seg.file, path).map_err(|e| LogError::io(path, e))?;
    }
    seg.size = valid;
    Ok((seg, scan.found))
}

/// Loads the segment's index files into `seg`; returns the byte position
/// to validate from (the last indexed batch), or 0 to check everything.
fn resume_from_index(seg: &mut SegmentInfo, len: u64) -> u64 {
    let Some((index, time_index)) = load_index(&seg.path, len) else {
        if len > 0 {
            tracing::warn!(segment = %seg.path.display(), "index missing or corrupt, rebuilding");
        }
        return 0;
    };
    let start = index.last().map_or(0, |&(_, p)| p as u64);
    seg.max_ts = time_index.last().map_or(i64::MIN, |t| t.0);
    seg.index = index;
    seg.time_index = time_index;
    // Entries at `start` are noted again by the scan.
    seg.index.pop();
    seg.time_index.pop();
    start
}

/// A segment's bytes from the scan's start, as recovery reshapes them.
struct Scan<'p> {
    path: &'p Path,
    buf: Vec<u8>,
    start: u64,
    /// Bytes taken out before the current position (for reports, which
    /// name positions in the file as it was).
    removed_before: u64,
    /// Bytes were taken out of the middle: the file is rewritten.
    rewrite: bool,
    found: Findings,
}

impl Scan<'_> {
    /// The batch at `pos` does not check (`exp` is the offset it should
    /// start at): quarantine it and resynchronise, cut a torn tail, or
    /// quarantine a corrupt tail. Leaves `buf` so that the next batch (if
    /// any) starts at `pos`.
    fn invalid_at(
        &mut self,
        ctx: &mut ScanCtx<'_>,
        pos: usize,
        exp: u64,
        why: Invalid,
    ) -> Result<()> {
        let path = self.path;
        let torn = matches!(why, Invalid::Short { .. });
        let reason = match &why {
            Invalid::Short { need } => {
                format!(
                    "torn batch: {} bytes present of {need}",
                    self.buf.len() - pos
                )
            }
            Invalid::Corrupt(r) => r.clone(),
        };
        let at = self.start + self.removed_before + pos as u64;
        let resynced = resync(&self.buf, pos + 1, exp);
        if ctx.policy == OnCorruption::Refuse && !(torn && ctx.last && resynced.is_none()) {
            return Err(corrupt(path, at, &reason));
        }
        match resynced {
            Some((y, h)) => {
                // Corruption in the middle: valid batches follow.
                let r = quarantine::put(
                    ctx.qdir,
                    ctx.partition,
                    path,
                    at,
                    &self.buf[pos..y],
                    (exp, Some(h.base_offset)),
                    &reason,
                )?;
                quarantine::add_gap(ctx.pdir, ctx.gaps, (exp, h.base_offset))?;
                tracing::error!(
                    segment = %path.display(), byte_from = r.byte_from, byte_to = r.byte_to,
                    offset_from = exp, offset_to = h.base_offset, reason = %reason,
                    moved_to = %r.bytes_file.display(),
                    "corrupt batch quarantined; the valid batches after it are kept"
                );
                self.found.quarantined.push(r);
                self.removed_before += (y - pos) as u64;
                self.buf.drain(pos..y);
                self.rewrite = true;
            }
            None if torn && ctx.last => {
                let cut = (self.buf.len() - pos) as u64;
                tracing::warn!(
                    segment = %path.display(), valid_bytes = self.start + pos as u64,
                    cut_bytes = cut, reason = %reason, "truncated torn tail"
                );
                self.found.truncation = Some(Truncation {
                    path: path.to_path_buf(),
                    valid_bytes: self.start + pos as u64,
                    cut_bytes: cut,
                    reason,
                });
                self.buf.truncate(pos);
            }
            None => {
                // Nothing valid follows: a corrupt tail. What it held
                // cannot be counted, so the partition moves past its
                // watermark.
                let r = quarantine::put(
                    ctx.qdir,
                    ctx.partition,
                    path,
                    at,
                    &self.buf[pos..],
                    (exp, None),
                    &reason,
                )?;
                tracing::error!(
                    segment = %path.display(), byte_from = r.byte_from, byte_to = r.byte_to,
                    offset_from = exp, reason = %reason, moved_to = %r.bytes_file.display(),
                    "corrupt tail quarantined"
                );
                self.found.truncation = Some(Truncation {
                    path: path.to_path_buf(),
                    valid_bytes: self.start + pos as u64,
                    cut_bytes: (self.buf.len() - pos) as u64,
                    reason,
                });
                self.found.quarantined.push(r);
                self.found.unknown_tail = true;
                self.buf.truncate(pos);
            }
        }
        Ok(())
    }
}

fn corrupt(path: &Path, position: u64, reason: &str) -> LogError {
    LogError::CorruptSegment {
        path: path.to_path_buf(),
        position,
        reason: format!("{reason} (log.on_corruption = \"refuse\")"),
    }
}

/// Replaces the segment with its first `keep` bytes followed by `tail`
/// (temp file, fsync, rename, fsync the directory); the stale index files
/// go, they are rebuilt from memory.
fn rewrite_segment(path: &Path, old: &File, keep: u64, tail: &[u8]) -> Result<File> {
    let tmp: PathBuf = path.with_extension("log.rewrite.tmp");
    let mut head = vec![0u8; keep as usize];
    old.read_exact_at(&mut head, 0)
        .map_err(|e| LogError::io(path, e))?;
    let f = fault::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    fault::write_all(&f, &tmp, &head).map_err(|e| LogError::io(&tmp, e))?;
    fault::write_all(&f, &tmp, tail).map_err(|e| LogError::io(&tmp, e))?;
    fault::sync_data(&f, &tmp).map_err(|e| LogError::io(&tmp, e))?;
    fault::rename(&tmp, path).map_err(|e| LogError::io(path, e))?;
    for ext in ["index", "timeindex"] {
        let _ = fs::remove_file(path.with_extension(ext));
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(path, e))
}
