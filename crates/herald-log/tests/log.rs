//! Behaviour of the log over real files: append, read, restart, recovery,
//! retention and time lookups.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_log::{Durability, Log, LogConfig, LogError, OnCorruption};

fn cfg(partitions: u32) -> LogConfig {
    LogConfig {
        partitions,
        segment_bytes: 64 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn rec(i: u64) -> Bytes {
    Bytes::from(format!("record-{i:08}-{}", "x".repeat((i % 50) as usize)))
}

fn open(dir: &std::path::Path, c: LogConfig) -> Log {
    Log::open(dir, c).expect("open log")
}

/// Every record of partition `p`, in order; offsets increase strictly (a
/// recorded gap may skip some).
fn read_all(log: &Log, p: u32) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let (mut at, end) = log.bounds(p).unwrap();
    while at < end {
        let recs = log.read(p, at, 16 * 1024).unwrap();
        if recs.is_empty() {
            break;
        }
        for r in recs {
            assert!(r.offset >= at, "offset {} went back before {at}", r.offset);
            at = r.offset + 1;
            out.push((r.offset, r.payload));
        }
    }
    out
}

#[tokio::test]
async fn appends_read_back_across_segments_and_restarts() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), cfg(2));
    let mut n = 0u64;
    for _ in 0..200 {
        let batch: Vec<Bytes> = (n..n + 10).map(rec).collect();
        let base = log.append(1, batch).await.unwrap();
        assert_eq!(base, n);
        n += 10;
    }
    let (segs, _) = log.usage(1).unwrap();
    assert!(segs > 1, "expected several segments, got {segs}");
    let all = read_all(&log, 1);
    assert_eq!(all.len() as u64, n);
    for (o, p) in &all {
        assert_eq!(p, &rec(*o));
    }
    assert!(read_all(&log, 0).is_empty());
    // Reading from the middle of a batch starts at that exact offset.
    let r = log.read(1, 1234, 100).unwrap();
    assert_eq!(r[0].offset, 1234);
    log.close().await.unwrap();
    assert!(matches!(
        log.append(1, vec![rec(0)]).await,
        Err(LogError::Closed)
    ));

    // Clean reopen keeps everything and continues the offsets.
    let log = open(d.path(), cfg(2));
    assert!(log.truncations().is_empty());
    assert_eq!(log.bounds(1).unwrap(), (0, n));
    assert_eq!(log.append(1, vec![rec(n)]).await.unwrap(), n);
    assert_eq!(read_all(&log, 1).len() as u64, n + 1);
    // Unclean reopen (no close) rebuilds and still has everything.
    drop(log);
    let log = open(d.path(), cfg(2));
    assert_eq!(log.bounds(1).unwrap(), (0, n + 1));
    assert_eq!(read_all(&log, 1)[n as usize].1, rec(n));
}

#[tokio::test]
async fn partition_count_cannot_change() {
    let d = tempfile::tempdir().unwrap();
    open(d.path(), cfg(2)).close().await.unwrap();
    assert!(matches!(
        Log::open(d.path(), cfg(3)),
        Err(LogError::Config(_))
    ));
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(1);
    c.max_record_bytes = 100;
    let log = open(d.path(), c);
    assert!(matches!(
        log.append(5, vec![rec(0)]).await,
        Err(LogError::UnknownPartition(5))
    ));
    assert!(matches!(
        log.append(0, vec![Bytes::from(vec![0u8; 101])]).await,
        Err(LogError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        log.read(0, 10, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[tokio::test]
async fn tailing_readers_are_woken() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), cfg(1));
    let mut sub = log.subscribe(0).unwrap();
    let l2 = log.clone();
    let h = tokio::spawn(async move {
        sub.changed().await.unwrap();
        let end = *sub.borrow();
        l2.read(0, 0, 1000).unwrap().len() as u64 == end
    });
    log.append(0, vec![rec(1), rec(2)]).await.unwrap();
    assert!(h.await.unwrap());
}

#[tokio::test]
async fn finds_offsets_by_time() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), cfg(1));
    log.append(0, (0..100).map(rec).collect()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mid = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    log.append(0, (100..200).map(rec).collect()).await.unwrap();
    assert_eq!(log.offset_for_time(0, 0).unwrap(), 0);
    assert_eq!(log.offset_for_time(0, mid).unwrap(), 100);
    assert_eq!(log.offset_for_time(0, i64::MAX).unwrap(), 200);
}

#[tokio::test]
async fn retention_deletes_old_segments_but_respects_consumers() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(1);
    c.retention_bytes = Some(100 * 1024);
    c.retention_ms = None;
    c.retention_check_ms = 50;
    let log = open(d.path(), c.clone());
    log.checkpoints().commit("fanout", 0, 0).unwrap();
    for i in 0..100u64 {
        log.append(0, (i * 50..i * 50 + 50).map(rec).collect())
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(log.bounds(0).unwrap().0, 0, "deleted past the consumer");
    log.checkpoints().commit("fanout", 0, 4000).unwrap();
    let mut start = 0;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        start = log.bounds(0).unwrap().0;
        let (_, bytes) = log.usage(0).unwrap();
        if start > 0 && bytes <= 100 * 1024 + 64 * 1024 {
            break;
        }
    }
    assert!(start > 0 && start <= 4000, "start offset {start}");
    let (_, bytes) = log.usage(0).unwrap();
    assert!(bytes <= 100 * 1024 + 64 * 1024, "kept {bytes} bytes");
    // What is left still reads back.
    let r = log.read(0, start, 1000).unwrap();
    assert_eq!(r[0].offset, start);
    assert_eq!(r[0].payload, rec(start));
    // A read before the start says so.
    assert!(matches!(
        log.read(0, 0, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[tokio::test]
async fn a_retention_hold_keeps_every_segment_with_records_past_it() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(1);
    c.retention_bytes = Some(1);
    c.retention_ms = None;
    c.retention_respects_consumers = false;
    let log = open(d.path(), c.clone());
    log.hold_retention(0, 2000).unwrap();
    for i in 0..100u64 {
        log.append(0, (i * 50..i * 50 + 50).map(rec).collect())
            .await
            .unwrap();
    }
    log.enforce_retention().await.unwrap();
    let (start, _) = log.bounds(0).unwrap();
    assert!(start > 0 && start <= 2000, "start offset {start}");
    assert_eq!(log.read(0, 2000, 10).unwrap()[0].payload, rec(2000));
    // Moved on: retention follows its limits up to the new hold.
    log.hold_retention(0, 4500).unwrap();
    log.enforce_retention().await.unwrap();
    let (later, _) = log.bounds(0).unwrap();
    assert!(later > 2000 && later <= 4500, "start offset {later}");
    assert!(log.hold_retention(7, 0).is_err(), "an unknown partition");
}

#[tokio::test]
async fn interval_and_os_modes_serve_reads() {
    for durability in [
        Durability::Interval {
            ms: 5,
            bytes: 1 << 20,
        },
        Durability::Os,
    ] {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(1);
        c.durability = durability;
        let log = open(d.path(), c.clone());
        log.append(0, (0..500).map(rec).collect()).await.unwrap();
        log.flush().await.unwrap();
        assert_eq!(read_all(&log, 0).len(), 500);
        drop(log);
        let log = open(d.path(), c);
        assert_eq!(read_all(&log, 0).len(), 500);
    }
}

#[tokio::test]
async fn missing_segment_is_reported_and_the_rest_kept() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path(), cfg(1));
    for i in 0..300u64 {
        log.append(0, (i * 20..i * 20 + 20).map(rec).collect())
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    let pdir = d.path().join("p-00000");
    let mut segs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    // Refused when configured so, naming the file after the hole.
    let refuse = LogConfig {
        on_corruption: OnCorruption::Refuse,
        ..cfg(1)
    };
    match Log::open(d.path(), refuse) {
        Err(LogError::Hole { path, .. }) => assert_eq!(path, segs[2]),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a log with a hole"),
    }
    // By default: opened, the lost offsets reported, everything else read.
    let log = open(d.path(), cfg(1));
    let q = log.quarantine().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    let stem = |p: &std::path::Path| {
        p.file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        (q[0].offset_from, q[0].offset_to),
        (stem(&segs[1]), Some(stem(&segs[2])))
    );
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, 6000 - (stem(&segs[2]) - stem(&segs[1])));
    for (o, p) in &all {
        assert_eq!(p, &rec(*o));
    }
    // New appends continue after the end; nothing is reused.
    assert_eq!(log.append(0, vec![rec(6000)]).await.unwrap(), 6000);
    assert_eq!(log.acknowledge_quarantine().unwrap(), 1);
    assert!(log.quarantine().unwrap()[0].acknowledged);
}
