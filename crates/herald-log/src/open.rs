//! Opening a log: layout checks, recovery and the segment chain.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::Checkpoints;
use crate::config::{Durability, LogConfig, OnCorruption};
use crate::error::{LogError, Result};
use crate::partition::{Partition, PartitionState, Shared};
use crate::quarantine::{self, QuarantineReport, RESERVE};
use crate::recover::{open_segment, ScanCtx};
use crate::segment::{log_path, sync_dir, write_atomic, SegmentInfo, Truncation};

/// What opening found, for the caller to report.
#[derive(Default)]
pub struct Recovery {
    pub truncations: Vec<Truncation>,
    pub quarantined: Vec<QuarantineReport>,
    /// Each partition's persisted high watermark after opening.
    pub reserved: Vec<u64>,
}

pub fn open_partitions(
    dir: &Path,
    cfg: &LogConfig,
    checkpoints: &Checkpoints,
    journal_lost: bool,
) -> Result<(Vec<Shared>, Recovery)> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let meta = dir.join("meta");
    match fs::read_to_string(&meta) {
        Ok(s) => {
            let n: u32 = s.trim().parse().map_err(|_| LogError::CorruptSegment {
                path: meta.clone(),
                position: 0,
                reason: "unreadable partition count".into(),
            })?;
            if n != cfg.partitions {
                return Err(LogError::Config(format!(
                    "the log in {} has {n} partitions but {} are configured; \
                     changing the count would break per-key ordering",
                    dir.display(),
                    cfg.partitions
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(&meta, cfg.partitions.to_string().as_bytes())?;
        }
        Err(e) => return Err(LogError::io(&meta, e)),
    }
    let qdir = quarantine::dir(dir);
    let mut parts = Vec::new();
    let mut rec = Recovery::default();
    for id in 0..cfg.partitions {
        let pdir = partition_dir(dir, id);
        let committed = checkpoints.min_committed(id);
        let seen = Seen {
            journal_lost,
            consumed: checkpoints.max_committed(id),
        };
        let state = open_partition(id, &pdir, &qdir, cfg, committed, seen, &mut rec)?;
        parts.push(Arc::new(Partition::new(id, pdir, state)));
    }
    Ok((parts, rec))
}

/// The directory of partition `id` in the log in `dir`.
pub(crate) fn partition_dir(dir: &Path, id: u32) -> std::path::PathBuf {
    dir.join(format!("p-{id:05}"))
}

fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            let base: u64 = stem.parse().map_err(|_| LogError::CorruptSegment {
                path: entry.path(),
                position: 0,
                reason: "segment file name is not an offset".into(),
            })?;
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What says offsets past the recovered end were handed out before.
#[derive(Clone, Copy)]
struct Seen {
    /// The journal lost rounds (torn or damaged records).
    journal_lost: bool,
    /// The furthest consumer checkpoint: a consumer that read past the
    /// recovered end proves offsets there were handed out.
    consumed: Option<u64>,
}

fn open_partition(
    id: u32,
    dir: &Path,
    qdir: &Path,
    cfg: &LogConfig,
    committed: Option<u64>,
    seen: Seen,
    rec: &mut Recovery,
) -> Result<PartitionState> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let bases = segment_bases(dir)?;
    let clean_marker = dir.join(".clean");
    let clean = clean_marker.exists();
    let recovery_point: u64 = fs::read_to_string(dir.join("recovery-point"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut gaps = quarantine::load_gaps(dir)?;
    let mut reserved = quarantine::load_reserved(dir);
    let mut segments = BTreeMap::new();
    let mut expected: Option<u64> = None;
    let mut unknown_tail = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = log_path(dir, base);
        if let Some(e) = expected {
            if base < e || (base > e && cfg.on_corruption == OnCorruption::Refuse) {
                return Err(LogError::Hole {
                    path,
                    expected: e,
                    found: base,
                });
            }
            if base > e && !gaps.contains(&(e, base)) {
                // Offsets between two segments with nothing recorded for
                // them: a segment file went missing (or its tail was cut).
                let r = quarantine::put_missing(
                    qdir,
                    id,
                    &path,
                    (e, base),
                    "no segment holds these offsets",
                )?;
                tracing::error!(
                    partition = id,
                    offset_from = e,
                    offset_to = base,
                    "offsets missing from the segment chain"
                );
                rec.quarantined.push(r);
                quarantine::add_gap(dir, &mut gaps, (e, base))?;
            }
        }
        let next_base = bases.get(i + 1).copied();
        // After a crash, check everything from the last roll, and
        // everything not yet consumed: corruption found now is quarantined
        // before anyone reads it.
        let unconsumed = match (next_base, committed) {
            (Some(nb), Some(c)) => nb > c,
            _ => true,
        };
        let full_scan = !clean && (base >= recovery_point || unconsumed);
        let mut ctx = ScanCtx {
            partition: id,
            pdir: dir,
            qdir,
            policy: cfg.on_corruption,
            gaps: &mut gaps,
            last: next_base.is_none(),
            interval: cfg.index_interval_bytes,
        };
        let (seg, found) = open_segment(&path, base, full_scan, &mut ctx)?;
        unknown_tail = found.unknown_tail && next_base.is_none();
        rec.truncations.extend(found.truncation);
        rec.quarantined.extend(found.quarantined);
        expected = Some(seg.next_offset);
        segments.insert(base, seg);
    }
    if segments.is_empty() {
        // Nothing on disk: a new partition, or one whose files are gone.
        let base = if cfg.replicated {
            0
        } else {
            reserved.max(cfg.fresh_base)
        };
        segments.insert(base, new_segment(dir, base, cfg)?);
    }
    let end = segments.values().next_back().map_or(0, |s| s.next_offset);
    // Offsets past the end may have been seen by readers before the crash
    // when the tail was corrupt, whenever appends were acknowledged before
    // fsync, when the journal lost rounds, or when a consumer had read past
    // the end: continue past the watermark so none is reused.
    let consumed_past = seen.consumed.is_some_and(|c| c > end);
    let jump = !cfg.replicated
        && (seen.journal_lost
            || consumed_past
            || (!clean && (unknown_tail || cfg.durability != Durability::Always)));
    if consumed_past && reserved <= end {
        // No watermark covers what the consumer saw (a log restored from
        // an older copy): continue past the consumer's position.
        reserved = seen.consumed.unwrap_or(end).saturating_add(RESERVE);
    }
    if jump && reserved > end {
        quarantine::add_gap(dir, &mut gaps, (end, reserved))?;
        if let Some(last) = segments.values().next_back() {
            if last.size == 0 {
                let base = last.base;
                if let Some(s) = segments.remove(&base) {
                    s.remove_files()?;
                }
            } else {
                last.write_indexes()?;
            }
        }
        segments.insert(reserved, new_segment(dir, reserved, cfg)?);
        write_atomic(&dir.join("recovery-point"), reserved.to_string().as_bytes())?;
        tracing::warn!(
            partition = id,
            from = end,
            to = reserved,
            journal_lost = seen.journal_lost,
            consumer_past_end = consumed_past,
            "offsets continue past the high watermark (records readers may have seen are missing)"
        );
    }
    let end = segments.values().next_back().map_or(0, |s| s.next_offset);
    if reserved < end + RESERVE / 2 {
        reserved = end + RESERVE;
        quarantine::save_reserved(dir, reserved)?;
    }
    rec.reserved.push(reserved);
    if clean {
        fs::remove_file(&clean_marker).map_err(|e| LogError::io(&clean_marker, e))?;
        sync_dir(dir)?;
    }
    Ok(PartitionState { segments })
}

/// Creates an empty segment at `base`.
fn new_segment(dir: &Path, base: u64, cfg: &LogConfig) -> Result<SegmentInfo> {
    let path = log_path(dir, base);
    fs::File::create(&path).map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir)?;
    let mut gaps = Vec::new();
    let mut ctx = ScanCtx {
        partition: 0,
        pdir: dir,
        qdir: dir,
        policy: cfg.on_corruption,
        gaps: &mut gaps,
        last: true,
        interval: cfg.index_interval_bytes,
    };
    let (seg, _) = open_segment(&path, base, true, &mut ctx)?;
    Ok(seg)
}
