//! Property test: random appends, reads, segment rolls, clean and unclean
//! restarts and retention. Whatever was acknowledged reads back byte for
//! byte, in order, at the right offsets (from the retention start on).

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_log::{Log, LogConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { p: u32, n: usize, len: usize },
    Read { p: u32, at: u64 },
    Close,
    Crash,
    Retain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, 1usize..40, 0usize..300).prop_map(|(p, n, len)| Op::Append { p, n, len }),
        3 => (0u32..3, any::<u64>()).prop_map(|(p, at)| Op::Read { p, at }),
        1 => Just(Op::Close),
        1 => Just(Op::Crash),
        1 => Just(Op::Retain),
    ]
}

fn cfg(retain: bool) -> LogConfig {
    LogConfig {
        partitions: 3,
        segment_bytes: 8 * 1024,
        index_interval_bytes: 300,
        retention_bytes: retain.then_some(16 * 1024),
        retention_ms: None,
        retention_check_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn payload(p: u32, i: u64, len: usize) -> Bytes {
    let mut v = format!("{p}:{i}:").into_bytes();
    v.resize(v.len() + len, (i % 251) as u8);
    Bytes::from(v)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn acknowledged_reads_back(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let d = tempfile::tempdir().unwrap();
            let mut model: Vec<Vec<Bytes>> = vec![Vec::new(); 3];
            let mut log = Log::open(d.path(), cfg(false)).unwrap();
            for op in ops {
                match op {
                    Op::Append { p, n, len } => {
                        let base = model[p as usize].len() as u64;
                        let recs: Vec<Bytes> = (0..n as u64).map(|i| payload(p, base + i, len)).collect();
                        let got = log.append(p, recs.clone()).await.unwrap();
                        prop_assert_eq!(got, base);
                        model[p as usize].extend(recs);
                    }
                    Op::Read { p, at } => {
                        let (start, end) = log.bounds(p).unwrap();
                        prop_assert_eq!(end, model[p as usize].len() as u64);
                        if end > start {
                            let at = start + at % (end - start);
                            let recs = log.read(p, at, 2000).unwrap();
                            prop_assert!(!recs.is_empty());
                            for (i, r) in recs.iter().enumerate() {
                                prop_assert_eq!(r.offset, at + i as u64);
                                prop_assert_eq!(&r.payload, &model[p as usize][r.offset as usize]);
                            }
                        }
                    }
                    Op::Close => {
                        log.close().await.unwrap();
                        log = Log::open(d.path(), cfg(false)).unwrap();
                        prop_assert!(log.truncations().is_empty());
                    }
                    Op::Crash => {
                        drop(log);
                        log = Log::open(d.path(), cfg(false)).unwrap();
                        prop_assert!(log.truncations().is_empty());
                    }
                    Op::Retain => {
                        // Reopen with retention on, apply it, then check
                        // that what is left is right.
                        log.close().await.unwrap();
                        log = Log::open(d.path(), cfg(true)).unwrap();
                        log.enforce_retention().await.unwrap();
                        for p in 0..3u32 {
                            let (_, bytes) = log.usage(p).unwrap();
                            let (segs, _) = log.usage(p).unwrap();
                            prop_assert!(segs == 1 || bytes <= 40 * 1024);
                        }
                        log.close().await.unwrap();
                        log = Log::open(d.path(), cfg(false)).unwrap();
                    }
                }
            }
            for p in 0..3u32 {
                let (start, end) = log.bounds(p).unwrap();
                prop_assert_eq!(end, model[p as usize].len() as u64);
                let mut at = start;
                while at < end {
                    for r in log.read(p, at, 5000).unwrap() {
                        prop_assert_eq!(r.offset, at);
                        prop_assert_eq!(&r.payload, &model[p as usize][at as usize]);
                        at += 1;
                    }
                }
            }
            Ok(())
        })?;
    }
}
