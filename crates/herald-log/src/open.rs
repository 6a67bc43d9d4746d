//! Opening a log: layout checks, recovery and the segment chain.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::partition::{Partition, PartitionState, Shared};
use crate::segment::{log_path, open_segment, sync_dir, write_atomic, Truncation};

pub fn open_partitions(dir: &Path, cfg: &LogConfig) -> Result<(Vec<Shared>, Vec<Truncation>)> {
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
    let mut parts = Vec::new();
    let mut truncs = Vec::new();
    for id in 0..cfg.partitions {
        let pdir = dir.join(format!("p-{id:05}"));
        let (state, t) = open_partition(&pdir, cfg)?;
        truncs.extend(t);
        parts.push(Arc::new(Partition::new(id, pdir, state)));
    }
    Ok((parts, truncs))
}

fn open_partition(dir: &Path, cfg: &LogConfig) -> Result<(PartitionState, Vec<Truncation>)> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
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
    let clean_marker = dir.join(".clean");
    let clean = clean_marker.exists();
    let recovery_point: u64 = fs::read_to_string(dir.join("recovery-point"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut segments = BTreeMap::new();
    let mut truncs = Vec::new();
    let mut expected: Option<u64> = None;
    let mut cut_rest = false;
    for (i, &base) in bases.iter().enumerate() {
        let path = log_path(dir, base);
        if cut_rest {
            // Everything after a truncated segment is past the torn point.
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            tracing::warn!(segment = %path.display(), bytes = len, "deleted segment after truncation point");
            truncs.push(Truncation {
                path: path.clone(),
                valid_bytes: 0,
                cut_bytes: len,
                reason: "follows a truncated segment".into(),
            });
            for ext in ["log", "index", "timeindex"] {
                let _ = fs::remove_file(path.with_extension(ext));
            }
            continue;
        }
        if let Some(e) = expected {
            if base != e {
                return Err(LogError::Hole {
                    path,
                    expected: e,
                    found: base,
                });
            }
        }
        let full_scan = !clean && base >= recovery_point;
        let (seg, t) = open_segment(&path, base, full_scan, cfg.index_interval_bytes)?;
        expected = Some(seg.next_offset);
        if let Some(t) = t {
            truncs.push(t);
            if i + 1 < bases.len() {
                cut_rest = true;
            }
        }
        segments.insert(base, seg);
    }
    if segments.is_empty() {
        let path = log_path(dir, 0);
        fs::File::create(&path).map_err(|e| LogError::io(&path, e))?;
        sync_dir(dir)?;
        let (seg, _) = open_segment(&path, 0, true, cfg.index_interval_bytes)?;
        segments.insert(0, seg);
    }
    if clean {
        fs::remove_file(&clean_marker).map_err(|e| LogError::io(&clean_marker, e))?;
        sync_dir(dir)?;
    }
    Ok((PartitionState { segments }, truncs))
}
