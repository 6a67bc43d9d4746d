//! What recovery keeps beside the segments so that nothing valid is thrown
//! away silently and no offset is handed out twice:
//!
//! - `quarantine/` (in the log directory): every byte range recovery took
//!   out of a segment, moved aside as `<name>.bin` with a `<name>.json`
//!   report (file, byte range, the offsets it held, why), shown by
//!   [`crate::Log::quarantine`] until an operator acknowledges it.
//! - `gaps` (per partition): offset ranges that hold no record because they
//!   were quarantined or skipped. Recovery accepts a jump in offsets only
//!   where a gap is recorded; readers step over gaps.
//! - `reserved` (per partition): a high watermark written ahead of the
//!   offsets handed out. After a recovery that may have lost records whose
//!   offsets were already seen (a corrupt tail, or any crash without
//!   per-append fsync), the partition continues at the watermark, so an
//!   offset, and so an event id, is never reused.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::segment::write_atomic;

/// The partition a report about the round journal names (a damaged
/// journal record may have held any partition's bytes).
pub const JOURNAL: u32 = u32::MAX;

/// How far ahead of the next offset the watermark is written.
pub const RESERVE: u64 = 1 << 20;

/// A byte range taken out of a segment by recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineReport {
    pub partition: u32,
    /// The segment the bytes came from.
    pub segment: PathBuf,
    /// Byte range in the segment as it was: `[byte_from, byte_to)`.
    pub byte_from: u64,
    pub byte_to: u64,
    /// First offset the range may have held.
    pub offset_from: u64,
    /// One past the last offset it may have held; `None` when nothing
    /// valid follows it, so the count is unknown.
    pub offset_to: Option<u64>,
    pub reason: String,
    /// Where the bytes were moved.
    pub bytes_file: PathBuf,
    pub at_ms: i64,
    #[serde(default)]
    pub acknowledged: bool,
}

impl QuarantineReport {
    /// One line for an operator: where the bytes were and what they held.
    pub fn describe(&self) -> String {
        if self.partition == JOURNAL {
            return format!(
                "journal bytes {}..{} of {}",
                self.byte_from,
                self.byte_to,
                self.segment.display()
            );
        }
        format!(
            "partition {} offsets {}..{} of {}",
            self.partition,
            self.offset_from,
            self.offset_to.map_or("?".to_string(), |o| o.to_string()),
            self.segment.display()
        )
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where quarantined ranges of the log in `log_dir` go.
pub fn dir(log_dir: &Path) -> PathBuf {
    log_dir.join("quarantine")
}

/// Moves `bytes` (taken from `segment` at `byte_from`) aside and writes its
/// report. Durable before it returns, so the segment may then be cut.
pub fn put(
    qdir: &Path,
    partition: u32,
    segment: &Path,
    byte_from: u64,
    bytes: &[u8],
    offsets: (u64, Option<u64>),
    reason: &str,
) -> Result<QuarantineReport> {
    fs::create_dir_all(qdir).map_err(|e| LogError::io(qdir, e))?;
    let stem = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("segment");
    let name = format!(
        "p{partition:05}-{stem}-{byte_from}-{}",
        byte_from + bytes.len() as u64
    );
    let bytes_file = qdir.join(format!("{name}.bin"));
    write_atomic(&bytes_file, bytes)?;
    let report = QuarantineReport {
        partition,
        segment: segment.to_path_buf(),
        byte_from,
        byte_to: byte_from + bytes.len() as u64,
        offset_from: offsets.0,
        offset_to: offsets.1,
        reason: reason.to_string(),
        bytes_file,
        at_ms: now_ms(),
        acknowledged: false,
    };
    save_report(qdir, &name, &report)?;
    Ok(report)
}

/// Records a range of offsets that was lost without bytes to keep (a
/// missing segment file).
pub fn put_missing(
    qdir: &Path,
    partition: u32,
    segment: &Path,
    offsets: (u64, u64),
    reason: &str,
) -> Result<QuarantineReport> {
    fs::create_dir_all(qdir).map_err(|e| LogError::io(qdir, e))?;
    let name = format!("p{partition:05}-missing-{}-{}", offsets.0, offsets.1);
    let report = QuarantineReport {
        partition,
        segment: segment.to_path_buf(),
        byte_from: 0,
        byte_to: 0,
        offset_from: offsets.0,
        offset_to: Some(offsets.1),
        reason: reason.to_string(),
        bytes_file: PathBuf::new(),
        at_ms: now_ms(),
        acknowledged: false,
    };
    save_report(qdir, &name, &report)?;
    Ok(report)
}

fn save_report(qdir: &Path, name: &str, r: &QuarantineReport) -> Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(|e| LogError::Config(e.to_string()))?;
    write_atomic(&qdir.join(format!("{name}.json")), &json)
}

/// Every report under `qdir`, oldest first.
pub fn load(qdir: &Path) -> Result<Vec<QuarantineReport>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(qdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::io(qdir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(qdir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| LogError::io(&path, e))?;
        match serde_json::from_slice::<QuarantineReport>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable quarantine report")
            }
        }
    }
    out.sort_by_key(|r| (r.at_ms, r.partition, r.byte_from));
    Ok(out)
}

/// Marks every report under `qdir` acknowledged; returns how many changed.
pub fn acknowledge(qdir: &Path) -> Result<usize> {
    let mut n = 0;
    for mut r in load(qdir)? {
        if r.acknowledged {
            continue;
        }
        r.acknowledged = true;
        let name = match r.bytes_file.file_stem().and_then(|s| s.to_str()) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => format!(
                "p{:05}-missing-{}-{}",
                r.partition,
                r.offset_from,
                r.offset_to.unwrap_or(0)
            ),
        };
        save_report(qdir, &name, &r)?;
        n += 1;
    }
    Ok(n)
}

/// Recorded offset gaps of the partition in `pdir`, sorted.
pub fn load_gaps(pdir: &Path) -> Result<Vec<(u64, u64)>> {
    let path = pdir.join("gaps");
    let s = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let mut gaps = Vec::new();
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) if a < b => gaps.push((a, b)),
            _ => {
                return Err(LogError::CorruptSegment {
                    path,
                    position: 0,
                    reason: format!("unreadable gap line {line:?}"),
                })
            }
        }
    }
    gaps.sort_unstable();
    Ok(gaps)
}

/// Adds `gap` to the partition's recorded gaps (durably).
pub fn add_gap(pdir: &Path, gaps: &mut Vec<(u64, u64)>, gap: (u64, u64)) -> Result<()> {
    if gap.0 >= gap.1 || gaps.contains(&gap) {
        return Ok(());
    }
    gaps.push(gap);
    gaps.sort_unstable();
    let text: String = gaps.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    write_atomic(&pdir.join("gaps"), text.as_bytes())
}

/// The partition's persisted high watermark (0 when none was written).
pub fn load_reserved(pdir: &Path) -> u64 {
    fs::read_to_string(pdir.join("reserved"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn save_reserved(pdir: &Path, reserved: u64) -> Result<()> {
    write_atomic(&pdir.join("reserved"), reserved.to_string().as_bytes())
}
