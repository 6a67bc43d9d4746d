//! Consumer checkpoints: the next offset each consumer group will read, per
//! partition, written so that a crash never leaves a half-written offset.
//!
//! Each checkpoint is its own small file `checkpoints/<group>.<partition>`
//! holding the offset and a CRC32C of it, replaced by write-then-rename.
//! A file that fails its CRC (which rename makes impossible short of disk
//! corruption) is reported and treated as absent.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{LogError, Result};
use crate::segment::write_atomic;

#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    committed: Mutex<HashMap<(String, u32), u64>>,
}

fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn encode(offset: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..8]);
    b[8..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    if b.len() != 12 {
        return None;
    }
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if crc32c::crc32c(&b[..8]) != crc {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[..8]);
    Some(u64::from_le_bytes(o))
}

impl Checkpoints {
    /// Loads every checkpoint under `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Checkpoints> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut committed = HashMap::new();
        for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                // A write that crashed before its rename: the old file stands.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some((group, part)) = name.rsplit_once('.') else {
                continue;
            };
            let Ok(part) = part.parse::<u32>() else {
                continue;
            };
            let bytes = fs::read(entry.path()).map_err(|e| LogError::io(&entry.path(), e))?;
            match decode(&bytes) {
                Some(off) => {
                    committed.insert((group.to_string(), part), off);
                }
                None => {
                    tracing::warn!(file = %entry.path().display(), "corrupt checkpoint ignored")
                }
            }
        }
        Ok(Checkpoints {
            dir: dir.to_path_buf(),
            committed: Mutex::new(committed),
        })
    }

    /// The committed next offset of `group` on `partition`, if any.
    pub fn get(&self, group: &str, partition: u32) -> Option<u64> {
        self.lock().get(&(group.to_string(), partition)).copied()
    }

    /// Durably records that `group` has finished everything before `offset`
    /// on `partition`. Blocking file work: call from a blocking context.
    pub fn commit(&self, group: &str, partition: u32, offset: u64) -> Result<()> {
        if !valid_group(group) {
            return Err(LogError::Config(format!(
                "consumer group name {group:?} must be 1-64 of [A-Za-z0-9_-]"
            )));
        }
        let path = self.dir.join(format!("{group}.{partition}"));
        write_atomic(&path, &encode(offset))?;
        self.lock().insert((group.to_string(), partition), offset);
        Ok(())
    }

    /// The smallest committed offset over all groups for `partition`; None
    /// when no group has ever committed anything.
    pub fn min_committed(&self, partition: u32) -> Option<u64> {
        let m = self.lock();
        let groups: std::collections::HashSet<&String> = m.keys().map(|(g, _)| g).collect();
        if groups.is_empty() {
            return None;
        }
        Some(
            groups
                .into_iter()
                .map(|g| m.get(&(g.clone(), partition)).copied().unwrap_or(0))
                .min()
                .unwrap_or(0),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), u64>> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_survives_reopen_and_ignores_torn_temp() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        c.commit("fanout", 3, 42).unwrap();
        c.commit("fanout", 3, 43).unwrap();
        // A crash in the middle of the next write leaves only a temp file.
        fs::write(d.path().join("fanout.3.tmp"), b"garbage").unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        assert_eq!(c.get("fanout", 3), Some(43));
        assert_eq!(c.min_committed(3), Some(43));
        assert_eq!(c.min_committed(4), Some(0));
    }

    #[test]
    fn corrupt_checkpoint_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("g.0"), b"123456789012").unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        assert_eq!(c.get("g", 0), None);
    }

    #[test]
    fn bad_group_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        assert!(c.commit("../x", 0, 1).is_err());
    }
}
