//! The chaos scenario's faults: the generator starts Herald itself (from
//! `--herald-cmd`), kills it with SIGKILL and starts it again several times
//! while traffic runs, and stops Redis (`--redis-pid`, SIGSTOP/SIGCONT)
//! once. Senders retry each batch with the same idempotency keys until it
//! is accepted, as a product backend would; the verdict is lost = 0
//! (redeliveries of the same notification id are at-least-once, reported
//! but allowed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::report::Fault;

/// What to break and how often.
#[derive(Debug, Clone)]
pub struct ChaosSpec {
    /// Redis' pid, to stop it once (none: Redis is left alone).
    pub redis_pid: Option<u32>,
    /// SIGKILLs of Herald during the traffic.
    pub kills: u32,
    /// How long Redis stays stopped.
    pub redis_pause: Duration,
}

/// The Herald process the generator owns.
pub struct Herald {
    child: Child,
    cmd: String,
    log: PathBuf,
}

impl Herald {
    pub fn start(cmd: &str, log: &Path) -> anyhow::Result<Herald> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("herald log {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("starting herald (--herald-cmd)")?;
        Ok(Herald {
            child,
            cmd: cmd.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// SIGKILL: no shutdown work at all.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        *self = Herald::start(&self.cmd, &self.log)?;
        Ok(())
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a process id; no memory is involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits until Herald answers `/healthz` (bounded).
pub async fn wait_up(target: SocketAddr, limit: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let mut c = crate::http::Conn::new(&target.to_string());
        if let Ok((200, _)) = c.request("GET", "/healthz", "application/json", b"").await {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!("herald did not come up within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Breaks things on schedule during `duration`; returns what it did, with
/// how long each recovery took.
pub async fn run_faults(
    spec: ChaosSpec,
    herald: std::sync::Arc<std::sync::Mutex<Herald>>,
    target: SocketAddr,
    duration: Duration,
) -> anyhow::Result<Vec<Fault>> {
    let start = Instant::now();
    let mut log = Vec::new();
    let slots = spec.kills + 2;
    let redis_at = duration.mul_f64(0.5 / slots as f64 + 0.5);
    let mut redis_done = spec.redis_pid.is_none();
    for k in 0..spec.kills {
        let at = duration.mul_f64((k + 1) as f64 / slots as f64);
        if !redis_done && redis_at < at {
            redis_done = true;
            pause_redis(&spec, start, redis_at, &mut log).await;
        }
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let t = Instant::now();
        {
            let mut h = herald
                .lock()
                .map_err(|_| anyhow::anyhow!("herald lock poisoned"))?;
            h.kill9();
        }
        eprintln!(
            "[chaos] {:.1}s SIGKILL herald",
            start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            let mut h = herald
                .lock()
                .map_err(|_| anyhow::anyhow!("herald lock poisoned"))?;
            h.restart()?;
        }
        let up = wait_up(target, Duration::from_secs(60)).await?;
        eprintln!(
            "[chaos] herald back after {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        log.push(Fault {
            at_s: at.as_secs_f64(),
            fault: "herald SIGKILL + restart",
            down_ms: t.elapsed().as_millis() as u64,
            start_to_serving_ms: Some(up.as_millis() as u64),
        });
    }
    if !redis_done {
        pause_redis(&spec, start, redis_at, &mut log).await;
    }
    Ok(log)
}

async fn pause_redis(spec: &ChaosSpec, start: Instant, at: Duration, log: &mut Vec<Fault>) {
    let Some(pid) = spec.redis_pid else { return };
    if let Some(wait) = at.checked_sub(start.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    eprintln!(
        "[chaos] {:.1}s SIGSTOP redis for {:?}",
        start.elapsed().as_secs_f64(),
        spec.redis_pause
    );
    signal(pid, libc::SIGSTOP);
    tokio::time::sleep(spec.redis_pause).await;
    signal(pid, libc::SIGCONT);
    log.push(Fault {
        at_s: at.as_secs_f64(),
        fault: "redis SIGSTOP",
        down_ms: spec.redis_pause.as_millis() as u64,
        start_to_serving_ms: None,
    });
}
