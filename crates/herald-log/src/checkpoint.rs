//! Consumer checkpoints: the next offset each consumer group will read, per
//! partition, written so that a crash never leaves a half-written offset.
//!
//! Each checkpoint is its own small file `checkpoints/<group>.<partition>`
//! of two slots, 512 bytes apart (in different sectors), each holding a
//! sequence number, the offset and a CRC32C of both. A commit overwrites
//! the older slot in place and `fdatasync`s it: the file's size never
//! changes, so the sync touches one data block and no metadata (a file
//! replaced by write-then-rename costs a create, a rename and a directory
//! sync, five file calls per commit). A write torn by a crash damages only
//! the slot being written; opening picks the intact slot with the higher
//! sequence. The file is made by write-then-rename the first time, and a
//! file of the earlier layout (offset and CRC, 12 bytes) is still read.
//! A file with no intact slot is reported ([`Checkpoints::damaged`]) and
//! holds no position; what to do then is the consumer's decision (Herald's
//! fan-out refuses to replay such a partition from its start unless told).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::write_atomic;

/// Where the second slot starts (a sector away from the first).
const SLOT_GAP: u64 = 512;
const SLOT_LEN: usize = 20;
/// The whole file: two slots.
const FILE_LEN: usize = SLOT_GAP as usize + SLOT_LEN;

#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    committed: Mutex<HashMap<(String, u32), u64>>,
    /// Files found with no intact slot when opened, and why.
    damaged: HashMap<(String, u32), String>,
    /// Open checkpoint files and the sequence of their newest slot; a
    /// commit to one partition holds only its own entry's lock.
    files: Mutex<HashMap<(String, u32), SharedSlots>>,
}

type SharedSlots = std::sync::Arc<Mutex<Slots>>;

#[derive(Debug)]
struct Slots {
    /// None until the file has the two-slot layout.
    file: Option<fs::File>,
    seq: u64,
}

fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The earlier layout: offset and CRC.
fn decode_v1(b: &[u8]) -> Option<u64> {
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

fn slot(seq: u64, offset: u64) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// An intact slot: (sequence, offset).
fn read_slot(b: &[u8]) -> Option<(u64, u64)> {
    let b = b.get(..SLOT_LEN)?;
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32c::crc32c(&b[..16]) != crc {
        return None;
    }
    let (mut q, mut o) = ([0u8; 8], [0u8; 8]);
    q.copy_from_slice(&b[..8]);
    o.copy_from_slice(&b[8..16]);
    Some((u64::from_le_bytes(q), u64::from_le_bytes(o)))
}

/// A checkpoint file of either layout: (sequence of the newest slot,
/// offset); the earlier layout has sequence 0.
fn decode(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() == 12 {
        return decode_v1(b).map(|o| (0, o));
    }
    let a = read_slot(b);
    let c = b.get(SLOT_GAP as usize..).and_then(read_slot);
    match (a, c) {
        (Some(a), Some(c)) => Some(if c.0 > a.0 { c } else { a }),
        (a, c) => a.or(c),
    }
}

impl Checkpoints {
    /// Loads every checkpoint under `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Checkpoints> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut committed = HashMap::new();
        let mut damaged = HashMap::new();
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
                Some((_, off)) => {
                    committed.insert((group.to_string(), part), off);
                }
                None => {
                    tracing::error!(file = %entry.path().display(), bytes = bytes.len(), "checkpoint damaged: no intact slot");
                    damaged.insert(
                        (group.to_string(), part),
                        format!(
                            "{} has no intact slot ({} bytes)",
                            entry.path().display(),
                            bytes.len()
                        ),
                    );
                }
            }
        }
        Ok(Checkpoints {
            dir: dir.to_path_buf(),
            committed: Mutex::new(committed),
            damaged,
            files: Mutex::new(HashMap::new()),
        })
    }

    /// Why the checkpoint file of `group` on `partition` could not be read
    /// when the log opened (no intact slot), if it could not.
    pub fn damaged(&self, group: &str, partition: u32) -> Option<&str> {
        self.damaged
            .get(&(group.to_string(), partition))
            .map(String::as_str)
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
        let key = (group.to_string(), partition);
        let entry = {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            files
                .entry(key.clone())
                .or_insert_with(|| std::sync::Arc::new(Mutex::new(Slots { file: None, seq: 0 })))
                .clone()
        };
        let mut slots = entry.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join(format!("{group}.{partition}"));
        let seq = slots.seq + 1;
        match &slots.file {
            Some(f) => {
                // The older slot: the newer one stays intact if this tears.
                let at = if seq % 2 == 0 { SLOT_GAP } else { 0 };
                let write = || -> std::io::Result<()> {
                    fault::check_write(&path)?;
                    f.write_all_at(&slot(seq, offset), at)?;
                    fault::sync_data(f, &path)
                };
                if let Err(e) = write() {
                    // Made again by write-then-rename at the next commit.
                    slots.file = None;
                    return Err(LogError::io(&path, e));
                }
            }
            None => {
                // First commit here (or after a failed one): a new file of
                // two slots, the first holding the offset.
                let mut image = vec![0u8; FILE_LEN];
                image[..SLOT_LEN].copy_from_slice(&slot(1, offset));
                write_atomic(&path, &image)?;
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| LogError::io(&path, e))?;
                slots.file = Some(f);
                slots.seq = 1;
                drop(slots);
                self.lock().insert(key, offset);
                return Ok(());
            }
        }
        slots.seq = seq;
        drop(slots);
        self.lock().insert(key, offset);
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

    /// The furthest committed offset over all groups for `partition`.
    pub fn max_committed(&self, partition: u32) -> Option<u64> {
        self.lock()
            .iter()
            .filter(|((_, p), _)| *p == partition)
            .map(|(_, o)| *o)
            .max()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), u64>> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The earlier layout, as a node before the two slots wrote it.
    fn encode(offset: u64) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&offset.to_le_bytes());
        let crc = crc32c::crc32c(&b[..8]);
        b[8..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_torn_slot_leaves_the_one_before_and_the_old_layout_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        for off in [10, 20, 30, 40, 50] {
            c.commit("fanout", 1, off).unwrap();
        }
        let path = d.path().join("fanout.1");
        assert_eq!(fs::metadata(&path).unwrap().len(), FILE_LEN as u64);
        assert_eq!(
            Checkpoints::open(d.path()).unwrap().get("fanout", 1),
            Some(50)
        );
        // The write of 50 (sequence 5, the first slot) torn by a crash:
        // the slot before it (40) stands.
        let mut b = fs::read(&path).unwrap();
        b[3] ^= 0x5a;
        fs::write(&path, &b).unwrap();
        assert_eq!(
            Checkpoints::open(d.path()).unwrap().get("fanout", 1),
            Some(40)
        );
        // Both slots damaged: treated as absent, as before.
        b[SLOT_GAP as usize + 9] ^= 0x5a;
        fs::write(&path, &b).unwrap();
        assert_eq!(Checkpoints::open(d.path()).unwrap().get("fanout", 1), None);
        // A file of the earlier layout is read, and the next commit
        // replaces it with the two slots.
        fs::write(&path, encode(77)).unwrap();
        let c = Checkpoints::open(d.path()).unwrap();
        assert_eq!(c.get("fanout", 1), Some(77));
        c.commit("fanout", 1, 78).unwrap();
        c.commit("fanout", 1, 79).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), FILE_LEN as u64);
        assert_eq!(
            Checkpoints::open(d.path()).unwrap().get("fanout", 1),
            Some(79)
        );
    }

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
