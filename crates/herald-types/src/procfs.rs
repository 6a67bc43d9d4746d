//! What Linux's `/proc` says of a process: CPU time and resident memory,
//! read the same way by the node's metrics and the load generator.

/// A process: this one, or another by pid.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    This,
    Other(u32),
}

fn path(pid: Pid, file: &str) -> String {
    match pid {
        Pid::This => format!("/proc/self/{file}"),
        Pid::Other(p) => format!("/proc/{p}/{file}"),
    }
}

/// User plus system CPU time, in clock ticks ([`ticks_per_second`]).
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let s = std::fs::read_to_string(path(pid, "stat")).ok()?;
    // The fields after the command name (which may hold spaces); utime
    // and stime are fields 14 and 15 of the line, 12 and 13 after it.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory, in KiB.
pub fn rss_kib(pid: Pid) -> Option<u64> {
    let s = std::fs::read_to_string(path(pid, "status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open file descriptors.
pub fn open_fds(pid: Pid) -> Option<usize> {
    std::fs::read_dir(path(pid, "fd")).ok().map(|d| d.count())
}

/// Clock ticks per second of the CPU times above.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_itself() {
        let me = Pid::Other(std::process::id());
        assert!(rss_kib(Pid::This).is_some_and(|k| k > 0));
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_ticks(Pid::This).is_some());
        assert!(open_fds(Pid::This).is_some_and(|n| n >= 3));
        assert!(ticks_per_second() >= 1.0);
        assert_eq!(cpu_ticks(Pid::Other(u32::MAX)), None);
    }
}
