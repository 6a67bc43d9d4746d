//! The senders: a few keep-alive HTTP connections posting event batches.
//! With a retry window (the chaos scenario) a batch that is refused or
//! fails is sent again, with the same idempotency keys, until accepted; a
//! batch given up on is taken out of the expected set and counted as
//! refused.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::Conn;
use crate::stats::Stats;
use crate::workload::RunSpec;

/// One request's body and the sequence numbers of its events.
pub struct Batch {
    pub body: Vec<u8>,
    pub seqs: Vec<u64>,
}

/// Starts four senders fed by the returned channel.
pub fn start(spec: &RunSpec, stats: Arc<Stats>) -> (mpsc::Sender<Batch>, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<Batch>(64);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut senders = Vec::new();
    for i in 0..4 {
        let rx = rx.clone();
        let stats = stats.clone();
        let targets: Vec<String> = spec.targets.iter().map(|t| t.to_string()).collect();
        let retry_for = spec.retry_for;
        senders.push(tokio::spawn(async move {
            let mut at = Target { all: targets, i };
            let mut conn = Conn::new(at.addr());
            loop {
                let Some(b) = rx.lock().await.recv().await else {
                    return;
                };
                post(&mut conn, &mut at, &stats, b, retry_for).await;
            }
        }));
    }
    (tx, senders)
}

/// The node a sender posts to; it moves to the next when one fails.
struct Target {
    all: Vec<String>,
    i: usize,
}

impl Target {
    fn addr(&self) -> &str {
        &self.all[self.i % self.all.len().max(1)]
    }
}

async fn post(
    conn: &mut Conn,
    at: &mut Target,
    stats: &Stats,
    b: Batch,
    retry_for: Option<Duration>,
) {
    let n = b.seqs.len() as u64;
    let until = retry_for.map(|d| Instant::now() + d);
    let mut backoff = herald_types::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let why = match conn
            .request("POST", "/v1/events", "application/json", &b.body)
            .await
        {
            Ok((202, _)) => {
                stats.events_accepted.fetch_add(n, Ordering::Relaxed);
                return;
            }
            Ok((s, body)) => {
                let retryable = s == 429 || s >= 500;
                let why = format!("{s}: {}", String::from_utf8_lossy(&body));
                if !retryable {
                    stats.http_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("POST /v1/events -> {why}");
                    stats.refuse(&b.seqs);
                    return;
                }
                why
            }
            Err(e) => {
                // The node may be gone: the next one takes the retry.
                at.i += 1;
                *conn = Conn::new(at.addr());
                e.to_string()
            }
        };
        stats.http_errors.fetch_add(1, Ordering::Relaxed);
        match until {
            Some(t) if Instant::now() < t => {
                backoff.sleep().await;
            }
            _ => {
                eprintln!("POST /v1/events failed: {why}");
                stats.refuse(&b.seqs);
                return;
            }
        }
    }
}
