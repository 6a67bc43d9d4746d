//! `herald-loadgen ingest`: how many events/s the gateway makes durable.
//! Concurrent keep-alive connections (over one node or several) post
//! fixed-size batches of likes as fast as they are answered, or paced to a
//! rate; reports accepted events/s and request latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::http::Conn;

/// What to run.
pub struct Plan {
    pub targets: Vec<SocketAddr>,
    pub connections: usize,
    pub batch: usize,
    pub secs: u64,
    /// Events per second over all connections; 0: unpaced.
    pub rate: u64,
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let Plan {
        targets,
        connections,
        batch,
        secs,
        rate,
    } = plan;
    let connections = connections.max(1);
    // One body reused: 1,000 likes to 1,000 different users by default.
    let events: Vec<_> = (0..batch as u64)
        .map(|i| json!({"kind": "like", "actor": 1 + i % 97, "recipient": 100_000 + i, "object": format!("post:{i}"), "text": "ingest benchmark"}))
        .collect();
    let body = Arc::new(serde_json::to_vec(&json!({ "events": events }))?);
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs.clamp(1, 600));
    let start = Instant::now();
    // Paced: each connection sends one batch every `period`, the
    // connections spread evenly over it.
    let period = (rate > 0)
        .then(|| Duration::from_secs_f64(batch as f64 * connections as f64 / rate as f64));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (body, accepted, errors) = (body.clone(), accepted.clone(), errors.clone());
        let addr = targets[c % targets.len()].to_string();
        tasks.push(tokio::spawn(async move {
            let mut h = crate::stats::hist_up_to(60_000_000);
            let mut conn = Conn::new(&addr);
            let mut due = period.map(|p| start + p.mul_f64(c as f64 / connections as f64));
            while Instant::now() < deadline {
                if let Some(d) = due {
                    tokio::time::sleep_until(d.into()).await;
                }
                let t = due.unwrap_or_else(Instant::now);
                match conn
                    .request("POST", "/v1/events", "application/json", &body)
                    .await
                {
                    Ok((202, _)) => {
                        accepted.fetch_add(batch as u64, Ordering::Relaxed);
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let (Some(d), Some(p)) = (due.as_mut(), period) {
                    *d += p;
                }
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(t.await?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    println!(
        "ingest: {connections} connections x {batch}-event batches for {secs:.1} s: {n} events accepted, {:.0} events/s, \
         request p50 {:.2} ms p99 {:.2} ms, errors {}",
        n as f64 / secs,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
