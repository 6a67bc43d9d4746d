use std::io;
use std::path::{Path, PathBuf};

/// Everything the log can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("{path} is not writable (read-only or permission denied)")]
    ReadOnly { path: PathBuf },
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt segment {path} at byte {position}: {reason}")]
    CorruptSegment {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("segment chain has a hole: {path} starts at offset {found}, expected {expected}")]
    Hole {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("offset {requested} is out of range [{start}, {end})")]
    OffsetOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },
    #[error("unknown partition {0}")]
    UnknownPartition(u32),
    #[error("record of {size} bytes exceeds the limit of {limit}")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("the log was poisoned by an earlier fsync failure and must be reopened: {0}")]
    Poisoned(String),
    #[error("{path} is locked: another process has this log open")]
    Locked { path: PathBuf },
    #[error("the log is closed")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl LogError {
    /// Classifies an I/O error on `path` (full disk and read-only directories
    /// get their own variants so operators see what to fix).
    pub fn io(path: &Path, source: io::Error) -> LogError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => LogError::DiskFull {
                path: path.to_path_buf(),
            },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => LogError::ReadOnly {
                path: path.to_path_buf(),
            },
            _ => LogError::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, LogError>;
