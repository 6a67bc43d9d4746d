//! Whether the log can take appends now, shared by the writer (which sets
//! it) and whoever reports readiness.

use std::path::PathBuf;
use std::sync::Mutex;

/// The log's state as the writer last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogHealth {
    /// Appends succeed.
    Ok,
    /// The last append failed because the disk is full. Nothing of it was
    /// kept; appends succeed again once space returns.
    Full { path: PathBuf },
    /// A write or fsync failed in a way that cannot be trusted (the page
    /// cache may have dropped data): every append fails until the log is
    /// reopened.
    Poisoned(String),
    /// The log was closed.
    Closed,
}

impl LogHealth {
    /// A short reason for a readiness report, or "ok".
    pub fn describe(&self) -> String {
        match self {
            LogHealth::Ok => "ok".into(),
            LogHealth::Full { path } => format!("full ({})", path.display()),
            LogHealth::Poisoned(why) => format!("poisoned: {why}"),
            LogHealth::Closed => "closed".into(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct HealthCell(Mutex<LogHealth>);

impl HealthCell {
    pub fn new() -> HealthCell {
        HealthCell(Mutex::new(LogHealth::Ok))
    }

    pub fn get(&self) -> LogHealth {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, h: LogHealth) {
        let mut cur = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Poisoned and closed are final.
        if matches!(*cur, LogHealth::Poisoned(_) | LogHealth::Closed)
            && !matches!(h, LogHealth::Closed)
        {
            return;
        }
        *cur = h;
    }
}

/// Free bytes on the filesystem holding `path`, if the kernel says.
pub(crate) fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a zeroed struct we own; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
}
