//! `herald-loadgen receive`: a webhook receiver for benchmarks. Listens on
//! a loopback address, answers every request `200` (after `--delay-ms`, to
//! play a slow receiver), counts the notifications it got (and those it got
//! twice), prints a line a second and a summary when it stops: after
//! `--duration` s, or once `--idle` s pass without a request after the
//! first.

use herald_types::sync::Locked;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

pub struct Plan {
    pub listen: SocketAddr,
    pub delay: Duration,
    pub secs: u64,
    pub idle: u64,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    items: AtomicU64,
    duplicates: AtomicU64,
    /// ms since start of the first and the last request.
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    seen: Mutex<HashSet<(u64, String)>>,
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(plan.listen).await?;
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    println!("receiving on http://{}/", plan.listen);
    let accept = {
        let counts = counts.clone();
        let delay = plan.delay;
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let counts = counts.clone();
                        async move { take(req, &counts, delay, start).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        })
    };
    let mut last = 0;
    let deadline = start + Duration::from_secs(plan.secs);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let items = counts.items.load(Ordering::Relaxed);
        println!(
            "t={:>4}s items/s {:>7} total {:>9} requests {:>7}",
            start.elapsed().as_secs(),
            items - last,
            items,
            counts.requests.load(Ordering::Relaxed)
        );
        last = items;
        let last_ms = counts.last_ms.load(Ordering::Relaxed);
        let idle = items > 0 && start.elapsed().as_millis() as u64 > last_ms + plan.idle * 1000;
        if Instant::now() >= deadline || idle {
            break;
        }
    }
    accept.abort();
    let items = counts.items.load(Ordering::Relaxed);
    let span_ms = counts
        .last_ms
        .load(Ordering::Relaxed)
        .saturating_sub(counts.first_ms.load(Ordering::Relaxed))
        .max(1);
    println!(
        "received {} notifications in {} requests ({} duplicates) over {:.1} s: {:.0} notifications/s",
        items,
        counts.requests.load(Ordering::Relaxed),
        counts.duplicates.load(Ordering::Relaxed),
        span_ms as f64 / 1000.0,
        items as f64 * 1000.0 / span_ms as f64
    );
    Ok(())
}

async fn take(
    req: Request<Incoming>,
    c: &Counts,
    delay: Duration,
    start: Instant,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let now = start.elapsed().as_millis() as u64;
    if c.requests.fetch_add(1, Ordering::Relaxed) == 0 {
        c.first_ms.store(now, Ordering::Relaxed);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut dup = 0;
    {
        let mut seen = c.seen.locked();
        for i in &items {
            let key = (
                i["user"].as_u64().unwrap_or(0),
                i["notification"]["id"].as_str().unwrap_or("").to_string(),
            );
            if !seen.insert(key) {
                dup += 1;
            }
        }
    }
    c.items.fetch_add(items.len() as u64, Ordering::Relaxed);
    c.duplicates.fetch_add(dup, Ordering::Relaxed);
    c.last_ms
        .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
