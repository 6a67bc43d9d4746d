//! Every file call of the log that can fail, in one place, with a fault
//! layer under it for tests.
//!
//! A real disk will not produce `EIO` or `EROFS` on demand, and a full disk
//! is awkward to reach at an exact call. With the `fault-injection` feature
//! a test arms rules ([`inject::arm`]) that make the n-th matching call
//! under a directory fail with a chosen errno (a failed write first writes
//! half its buffer, as a real short write does). Without the feature the
//! checks compile to nothing.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The kinds of file call the layer can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Appending to a segment or writing a small file.
    Write,
    /// fsync / fdatasync of a file or a directory.
    Sync,
    /// Truncating a segment (rollback, recovery).
    SetLen,
    /// Creating a file (a new segment, a temp file).
    Create,
    /// Renaming a temp file over its target.
    Rename,
}

#[cfg(feature = "fault-injection")]
pub mod inject {
    //! Test-only: arm faults for calls under a directory.
    use super::Op;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Rule {
        dir: PathBuf,
        op: Op,
        /// Matching calls to let through before failing.
        skip: usize,
        /// How many calls to fail once `skip` is used up (usize::MAX: all).
        times: usize,
        errno: i32,
    }

    static RULES: Mutex<Vec<Rule>> = Mutex::new(Vec::new());
    static CALLS: Mutex<Vec<(PathBuf, Op, usize)>> = Mutex::new(Vec::new());

    fn rules() -> std::sync::MutexGuard<'static, Vec<Rule>> {
        RULES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails `times` calls of `op` under `dir` with `errno`, after letting
    /// `skip` of them through.
    pub fn arm(dir: &Path, op: Op, skip: usize, times: usize, errno: i32) {
        rules().push(Rule {
            dir: dir.to_path_buf(),
            op,
            skip,
            times,
            errno,
        });
    }

    /// Removes every rule for calls under `dir`.
    pub fn clear(dir: &Path) {
        rules().retain(|r| !r.dir.starts_with(dir) && !dir.starts_with(&r.dir));
    }

    /// Calls of `op` seen under `dir` so far (counted while any rule or
    /// counter exists for it; see [`count`]).
    pub fn calls(dir: &Path, op: Op) -> usize {
        let c = CALLS.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .filter(|(d, o, _)| d == dir && *o == op)
            .map(|(_, _, n)| *n)
            .sum()
    }

    /// Starts counting calls of every op under `dir`.
    pub fn count(dir: &Path) {
        let mut c = CALLS.lock().unwrap_or_else(|p| p.into_inner());
        for op in [Op::Write, Op::Sync, Op::SetLen, Op::Create, Op::Rename] {
            c.push((dir.to_path_buf(), op, 0));
        }
    }

    pub(crate) fn check(op: Op, path: &Path) -> Option<i32> {
        {
            let mut c = CALLS.lock().unwrap_or_else(|p| p.into_inner());
            for (d, o, n) in c.iter_mut() {
                if *o == op && path.starts_with(d) {
                    *n += 1;
                }
            }
        }
        let mut rules = rules();
        for r in rules.iter_mut() {
            if r.op != op || !path.starts_with(&r.dir) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            if r.times > 0 {
                r.times = r.times.saturating_sub(1);
                return Some(r.errno);
            }
        }
        None
    }
}

#[inline]
fn check(op: Op, path: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if let Some(errno) = inject::check(op, path) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let _ = (op, path);
    Ok(())
}

/// `write_all` to `file` (a file at `path`).
pub fn write_all(mut file: &File, path: &Path, buf: &[u8]) -> io::Result<()> {
    if let Err(e) = check(Op::Write, path) {
        // A failing write often writes part of its buffer first.
        let _ = file.write_all(&buf[..buf.len() / 2]);
        return Err(e);
    }
    file.write_all(buf)
}

/// The fault layer's check for a write to `path` made without
/// [`write_all`] (an in-place write of a few bytes).
pub fn check_write(path: &Path) -> io::Result<()> {
    check(Op::Write, path)
}

/// `write_all_at` to `file` (a file at `path`) at `pos`.
pub fn write_all_at(file: &File, path: &Path, buf: &[u8], pos: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if let Err(e) = check(Op::Write, path) {
        let _ = file.write_all_at(&buf[..buf.len() / 2], pos);
        return Err(e);
    }
    file.write_all_at(buf, pos)
}

pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    check(Op::Sync, path)?;
    file.sync_data()
}

pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    check(Op::Sync, path)?;
    file.sync_all()
}

pub fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    check(Op::SetLen, path)?;
    file.set_len(len)
}

/// Creates (or truncates) `path` for writing.
pub fn create(path: &Path) -> io::Result<File> {
    check(Op::Create, path)?;
    File::create(path)
}

/// Creates `path` if missing and opens it for appending.
pub fn create_append(path: &Path) -> io::Result<File> {
    check(Op::Create, path)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    check(Op::Rename, to)?;
    std::fs::rename(from, to)
}
