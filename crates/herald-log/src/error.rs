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
    #[error("the log cannot be trusted until it is reopened: {0}")]
    Poisoned(String),
    #[error("{path} is locked: another process has this log open")]
    Locked { path: PathBuf },
    #[error("the log is closed")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("entry at offset {got} of partition {partition} does not continue its log (next offset {expected})")]
    EntryOutOfPlace {
        partition: u32,
        expected: u64,
        got: u64,
    },
}

impl LogError {
    /// The same failure for another producer of the round (I/O errors are
    /// not `Clone`).
    pub fn for_producer(&self) -> LogError {
        match self {
            LogError::DiskFull { path } => LogError::DiskFull { path: path.clone() },
            LogError::Poisoned(why) => LogError::Poisoned(why.clone()),
            LogError::Closed => LogError::Closed,
            other => LogError::Poisoned(other.to_string()),
        }
    }

    /// Whether the disk was full: transient, nothing was kept.
    pub fn is_full(&self) -> bool {
        matches!(self, LogError::DiskFull { .. })
    }

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
