//! One sample a second while a run lasts: what was sent, accepted and
//! delivered so far, clients online, and Herald's CPU and memory (from
//! `/proc`, when its pid is known).

use herald_types::procfs;
use herald_types::sync::Locked;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::stats::{Sample, Stats};

/// Samples every second until `stop` turns true.
pub fn spawn(
    stats: Arc<Stats>,
    pid: Option<u32>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let hz = procfs::ticks_per_second();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_cpu = pid.and_then(|p| procfs::cpu_ticks(procfs::Pid::Other(p)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let cpu = pid.and_then(|p| procfs::cpu_ticks(procfs::Pid::Other(p)));
            let cpu_pct = match (last_cpu, cpu) {
                (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / hz * 100.0),
                _ => None,
            };
            last_cpu = cpu;
            let s = Sample {
                t_s: stats.start.elapsed().as_secs_f64(),
                sent: stats.events_sent.load(Ordering::Relaxed),
                accepted: stats.events_accepted.load(Ordering::Relaxed),
                delivered: stats.delivered(),
                online: stats.online.load(Ordering::Relaxed),
                herald_cpu_pct: cpu_pct,
                herald_rss_mib: pid
                    .and_then(|p| procfs::rss_kib(procfs::Pid::Other(p)))
                    .map(|k| k as f64 / 1024.0),
            };
            {
                let mut v = stats.samples.locked();
                v.push(s);
            }
        }
    })
}
