//! Log benchmark: records/s, MB/s and latency for 100-byte and 1 KiB
//! records, 1 and 8 partitions, each durability mode; plus two baselines on
//! the same machine: pipelined XADD into a local redis-server, and raw
//! sequential write bandwidth with fdatasync.
//!
//!   cargo bench -p herald-log --bench append [-- --secs 3 --producers 64 --batch 64]
//!
//! Append latency is measured per `append` call (a producer's batch);
//! append-to-readable is from just before `append` to a tailing reader
//! seeing the record.

// A benchmark: a panic with its message is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_log::{Durability, Log, LogConfig};

struct Args {
    secs: f64,
    producers: usize,
    batch: usize,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        secs: 3.0,
        producers: 64,
        batch: 64,
        only: None,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--secs" => a.secs = next.parse().unwrap_or(3.0),
            "--producers" => a.producers = next.parse().unwrap_or(64),
            "--batch" => a.batch = next.parse().unwrap_or(64),
            "--only" => a.only = Some(next),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

struct Row {
    name: String,
    records_s: f64,
    mb_s: f64,
    p50_us: u64,
    p99_us: u64,
    readable_p50_us: u64,
    readable_p99_us: u64,
}

async fn log_case(a: &Args, size: usize, partitions: u32, mode: Durability, name: &str) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        partitions,
        durability: mode,
        segment_bytes: 512 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).expect("open");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    // Tailing readers: one per partition, measuring append-to-readable.
    let mut readers = Vec::new();
    for p in 0..partitions {
        let log = log.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut h = hist();
            let mut sub = log.subscribe(p).expect("subscribe");
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let recs = log.read(p, next, 1 << 20).expect("read");
                if recs.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_millis(50), sub.changed()).await;
                    continue;
                }
                let now = start.elapsed().as_micros() as u64;
                for r in &recs {
                    let mut t = [0u8; 8];
                    t.copy_from_slice(&r.payload[..8]);
                    let _ = h.record(now.saturating_sub(u64::from_le_bytes(t)).max(1));
                }
                next = recs.last().map_or(next, |r| r.offset + 1);
            }
            h
        }));
    }
    let mut producers = Vec::new();
    for i in 0..a.producers {
        let log = log.clone();
        let stop = stop.clone();
        let count = count.clone();
        let batch = a.batch;
        producers.push(tokio::spawn(async move {
            let mut h = hist();
            let p = (i as u32) % partitions;
            let filler = vec![b'x'; size - 8];
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let stamp = start.elapsed().as_micros() as u64;
                let recs: Vec<Bytes> = (0..batch)
                    .map(|_| {
                        let mut v = Vec::with_capacity(size);
                        v.extend_from_slice(&stamp.to_le_bytes());
                        v.extend_from_slice(&filler);
                        Bytes::from(v)
                    })
                    .collect();
                log.append(p, recs).await.expect("append");
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                count.fetch_add(batch as u64, Ordering::Relaxed);
            }
            h
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = hist();
    for p in producers {
        lat.add(p.await.expect("producer")).ok();
    }
    let n = count.load(Ordering::Relaxed) as f64;
    let mut readable = hist();
    for r in readers {
        readable.add(r.await.expect("reader")).ok();
    }
    log.close().await.expect("close");
    Row {
        name: name.to_string(),
        records_s: n / elapsed,
        mb_s: n * size as f64 / elapsed / 1e6,
        p50_us: lat.value_at_quantile(0.5),
        p99_us: lat.value_at_quantile(0.99),
        readable_p50_us: readable.value_at_quantile(0.5),
        readable_p99_us: readable.value_at_quantile(0.99),
    }
}

/// Raw sequential writes of 1 MiB with one fdatasync per `sync_every` MiB.
fn raw_disk(secs: f64, sync_every: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::File::create(dir.path().join("raw")).expect("create");
    let buf = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut i = 0;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&buf).expect("write");
        bytes += buf.len();
        i += 1;
        if i % sync_every == 0 {
            f.sync_data().expect("sync");
        }
    }
    f.sync_data().expect("sync");
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Pipelined XADD of `size`-byte values into a private redis-server.
async fn redis_xadd(secs: f64, size: usize) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    let value = vec![b'x'; size];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let mut p = redis::pipe();
        for _ in 0..1000 {
            p.cmd("XADD")
                .arg("bench")
                .arg("*")
                .arg("v")
                .arg(&value)
                .ignore();
        }
        let _: () = p.query_async(&mut con).await.ok()?;
        n += 1000;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Some(rate)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let modes = [
        ("always", Durability::Always),
        (
            "interval",
            Durability::Interval {
                ms: 5,
                bytes: 8 << 20,
            },
        ),
        ("os", Durability::Os),
    ];
    println!(
        "producers {}, {} records per append, {:.0} s per case",
        a.producers, a.batch, a.secs
    );
    println!(
        "| case | records/s | MB/s | append p50 | append p99 | to readable p50 | to readable p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    rt.block_on(async {
        for size in [100usize, 1024] {
            for partitions in [1u32, 8] {
                for (mname, mode) in modes {
                    let name = format!("{size} B, {partitions} part, {mname}");
                    if let Some(o) = &a.only {
                        if !name.contains(o.as_str()) {
                            continue;
                        }
                    }
                    let r = log_case(&a, size, partitions, mode, &name).await;
                    println!(
                        "| {} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                        r.name,
                        r.records_s,
                        r.mb_s,
                        r.p50_us as f64 / 1000.0,
                        r.p99_us as f64 / 1000.0,
                        r.readable_p50_us as f64 / 1000.0,
                        r.readable_p99_us as f64 / 1000.0
                    );
                }
            }
        }
        if a.only.is_none() {
            for size in [100usize, 1024] {
                match redis_xadd(a.secs, size).await {
                    Some(r) => println!(
                        "| baseline: redis XADD pipelined, {size} B | {r:.0} | {:.1} | | | | |",
                        r * size as f64 / 1e6
                    ),
                    None => println!(
                        "| baseline: redis XADD, {size} B | redis-server unavailable | | | | | |"
                    ),
                }
            }
            println!(
                "| baseline: raw write, fdatasync per 1 MiB | | {:.1} | | | | |",
                raw_disk(a.secs, 1)
            );
            println!(
                "| baseline: raw write, fdatasync per 64 MiB | | {:.1} | | | | |",
                raw_disk(a.secs, 64)
            );
        }
    });
}
