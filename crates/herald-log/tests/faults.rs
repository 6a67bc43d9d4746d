//! Disk faults under the log's file calls (the test-only fault layer):
//! ENOSPC, EIO and EROFS at every kind of call, at many positions, with
//! concurrent producers whose requests share rounds and roll segments.
//!
//! After each fault: every append that was acknowledged reads back after a
//! restart with its own payload, nothing that was refused is there (no
//! offset consumed), offsets are never reused, a full disk heals by itself
//! and anything else poisons until the log is reopened.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use herald_log::fault::{inject, Op};
use herald_log::{Log, LogConfig, LogError, LogHealth};

const PARTITIONS: u32 = 3;

fn cfg() -> LogConfig {
    LogConfig {
        partitions: PARTITIONS,
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn payload(task: u64, req: u64, part: u32, i: u64) -> Bytes {
    Bytes::from(format!(
        "t{task}-r{req}-p{part}-i{i}-{}",
        "z".repeat((i * 7 % 23) as usize)
    ))
}

/// (partition, offset) -> payload of every acknowledged record.
type Acked = BTreeMap<(u32, u64), Bytes>;

/// Eight producers, fifteen requests each, some spanning two partitions.
async fn produce(log: &Log) -> (Acked, usize) {
    let acked = Arc::new(Mutex::new(Acked::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (log, acked, refused) = (log.clone(), acked.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for r in 0..15u64 {
                let p1 = ((t + r) % PARTITIONS as u64) as u32;
                let mut parts = vec![(
                    p1,
                    (0..1 + (t * r) % 6)
                        .map(|i| payload(t, r, p1, i))
                        .collect::<Vec<_>>(),
                )];
                if r % 3 == 0 {
                    let p2 = (p1 + 1) % PARTITIONS;
                    parts.push((p2, (0..3).map(|i| payload(t, r, p2, i)).collect()));
                }
                match log.append_many(parts.clone()).await {
                    Ok(bases) => {
                        let mut a = acked.lock().unwrap();
                        for ((p, recs), base) in parts.into_iter().zip(bases) {
                            for (i, rec) in recs.into_iter().enumerate() {
                                let prev = a.insert((p, base + i as u64), rec);
                                assert!(
                                    prev.is_none(),
                                    "offset {p}/{} acknowledged twice",
                                    base + i as u64
                                );
                            }
                        }
                    }
                    Err(LogError::DiskFull { .. }) | Err(LogError::Poisoned(_)) => {
                        *refused.lock().unwrap() += 1;
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let a = acked.lock().unwrap().clone();
    let r = *refused.lock().unwrap();
    (a, r)
}

fn read_everything(log: &Log) -> Acked {
    let mut out = Acked::new();
    for p in 0..PARTITIONS {
        let (mut at, end) = log.bounds(p).unwrap();
        while at < end {
            let recs = log.read(p, at, 1 << 20).unwrap();
            if recs.is_empty() {
                break;
            }
            for r in recs {
                at = r.offset + 1;
                out.insert((p, r.offset), r.payload);
            }
        }
    }
    out
}

/// Calls of each op in one clean run, to place faults across its range.
async fn calls_in_clean_run() -> BTreeMap<&'static str, usize> {
    let d = tempfile::tempdir().unwrap();
    inject::count(d.path());
    let log = Log::open(d.path(), cfg()).unwrap();
    let (acked, refused) = produce(&log).await;
    assert_eq!(refused, 0);
    assert!(acked.len() > 300);
    let mut out = BTreeMap::new();
    for (name, op) in OPS {
        out.insert(name, inject::calls(d.path(), op));
    }
    drop(log);
    out
}

const OPS: [(&str, Op); 5] = [
    ("write", Op::Write),
    ("sync", Op::Sync),
    ("set_len", Op::SetLen),
    ("create", Op::Create),
    ("rename", Op::Rename),
];

async fn one_fault(dir: &Path, op: Op, skip: usize, errno: i32) {
    let log = Log::open(dir, cfg()).unwrap();
    // A full disk stays full until space is freed; other faults strike once.
    let times = if errno == libc::ENOSPC { usize::MAX } else { 1 };
    inject::arm(dir, op, skip, times, errno);
    let (mut acked, refused) = produce(&log).await;
    inject::clear(dir);
    let health = log.health();
    if refused > 0 {
        match errno {
            libc::ENOSPC => assert!(
                matches!(health, LogHealth::Full { .. } | LogHealth::Ok),
                "a full disk is not a poisoned log: {health:?}"
            ),
            _ => assert!(matches!(health, LogHealth::Poisoned(_)), "{health:?}"),
        }
    }
    // Space returns: a full disk heals by itself, without a reopen.
    if errno == libc::ENOSPC {
        let (more, refused) = produce(&log).await;
        assert_eq!(refused, 0, "appends still refused after space returned");
        acked.extend(more);
    } else if matches!(health, LogHealth::Poisoned(_)) {
        assert!(matches!(
            log.append(0, vec![Bytes::from_static(b"x")]).await,
            Err(LogError::Poisoned(_))
        ));
    }
    let before = read_everything(&log);
    drop(log);
    let log = Log::open(dir, cfg()).unwrap();
    let after = read_everything(&log);
    for (k, v) in &acked {
        assert_eq!(after.get(k), Some(v), "acknowledged record {k:?} lost");
        assert_eq!(
            before.get(k),
            Some(v),
            "acknowledged record {k:?} unreadable"
        );
    }
    // Nothing refused is kept: no offset was consumed by a failed round
    // (a failed undo after a failed write is the one exception: the log is
    // poisoned and the bytes may stay, never acknowledged).
    if op != Op::SetLen {
        let extra: Vec<_> = after.keys().filter(|k| !acked.contains_key(k)).collect();
        assert!(
            extra.is_empty(),
            "records kept that were refused: {extra:?}"
        );
    }
    // New offsets never reuse acknowledged ones.
    for p in 0..PARTITIONS {
        let top = acked.keys().filter(|k| k.0 == p).map(|k| k.1).max();
        let o = log
            .append(p, vec![Bytes::from_static(b"after")])
            .await
            .unwrap();
        if let Some(top) = top {
            assert!(
                o > top,
                "partition {p}: offset {o} reused (acked up to {top})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_every_kind_of_call_lose_nothing_acknowledged() {
    let calls = calls_in_clean_run().await;
    let mut runs = 0;
    for (name, op) in OPS {
        let n = calls[name];
        // About a dozen positions spread over the run (all when fewer).
        let step = (n / 12).max(1);
        for errno in [libc::ENOSPC, libc::EIO, libc::EROFS] {
            let mut skip = 0;
            while skip < n.max(1) {
                let d = tempfile::tempdir().unwrap();
                one_fault(d.path(), op, skip, errno).await;
                runs += 1;
                skip += step;
            }
        }
    }
    assert!(runs > 50, "only {runs} fault runs");
}
