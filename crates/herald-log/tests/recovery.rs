//! Crash and corruption recovery: torn tails, flipped bytes, SIGKILL.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_log::{Log, LogConfig};

fn cfg() -> LogConfig {
    LogConfig {
        partitions: 1,
        segment_bytes: 1 << 20,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn rec(i: u64) -> Bytes {
    Bytes::from(format!("r{i:06}{}", "y".repeat((i % 37) as usize)))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn segment_file(dir: &Path) -> PathBuf {
    dir.join("p-00000").join(format!("{:020}.log", 0))
}

/// Every record still present must be the right one, in order, from 0.
fn check_prefix(log: &Log) -> u64 {
    let (start, end) = log.bounds(0).unwrap();
    assert_eq!(start, 0);
    let mut at = 0;
    while at < end {
        for r in log.read(0, at, 64 * 1024).unwrap() {
            assert_eq!(r.offset, at);
            assert_eq!(r.payload, rec(at));
            at += 1;
        }
    }
    end
}

async fn build(dir: &Path) -> (u64, Vec<u8>) {
    let log = Log::open(dir, cfg()).unwrap();
    let mut n = 0;
    for size in [1u64, 5, 17, 3, 40, 2, 9, 30, 1, 12] {
        log.append(0, (n..n + size).map(rec).collect())
            .await
            .unwrap();
        n += size;
    }
    log.close().await.unwrap();
    (n, std::fs::read(segment_file(dir)).unwrap())
}

#[tokio::test]
async fn cut_anywhere_truncates_to_last_good_batch() {
    let d = tempfile::tempdir().unwrap();
    let (n, bytes) = build(d.path()).await;
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut cuts: Vec<usize> = (0..60)
        .map(|_| (rng.next() as usize) % bytes.len())
        .collect();
    cuts.extend([0, 1, bytes.len() - 1]);
    for cut in cuts {
        let c = tempfile::tempdir().unwrap();
        let seg = segment_file(c.path());
        std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
        std::fs::write(c.path().join("meta"), "1").unwrap();
        std::fs::write(&seg, &bytes[..cut]).unwrap();
        let log = Log::open(c.path(), cfg()).unwrap();
        let end = check_prefix(&log);
        assert!(end <= n);
        let cut_total: u64 = log.truncations().iter().map(|t| t.cut_bytes).sum();
        let kept = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(kept + cut_total, cut as u64, "cut at {cut}");
        // The log keeps working after recovery.
        assert_eq!(log.append(0, vec![rec(end)]).await.unwrap(), end);
    }
}

/// (byte start, byte end, first offset, one past the last) of each batch.
fn batches(bytes: &[u8]) -> Vec<(usize, usize, u64, u64)> {
    let mut out = Vec::new();
    let (mut pos, mut off) = (0usize, 0u64);
    while pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize + 4;
        let count = u32::from_le_bytes(bytes[pos + 17..pos + 21].try_into().unwrap()) as u64;
        out.push((pos, pos + len, off, off + count));
        pos += len;
        off += count;
    }
    out
}

#[tokio::test]
async fn a_flipped_byte_quarantines_exactly_its_batch_and_keeps_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let (n, bytes) = build(d.path()).await;
    let layout = batches(&bytes);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..80 {
        let c = tempfile::tempdir().unwrap();
        let seg = segment_file(c.path());
        std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
        std::fs::write(c.path().join("meta"), "1").unwrap();
        let mut b = bytes.clone();
        let at = rng.next() as usize % b.len();
        b[at] ^= 1 << (rng.next() % 8);
        std::fs::write(&seg, &b).unwrap();
        let reserved = d.path().join("p-00000/reserved");
        std::fs::copy(&reserved, c.path().join("p-00000/reserved")).unwrap();
        let log = Log::open(c.path(), cfg()).unwrap();
        let &(from, to, first, next) = layout.iter().find(|l| l.0 <= at && at < l.1).unwrap();
        let last = to == bytes.len();
        // Every other record is there, in order, with its own payload.
        let (_, end) = log.bounds(0).unwrap();
        let mut seen = Vec::new();
        let mut o = 0;
        while o < end {
            let recs = log.read(0, o, 64 * 1024).unwrap();
            if recs.is_empty() {
                break;
            }
            for r in recs {
                assert_eq!(r.payload, rec(r.offset));
                o = r.offset + 1;
                seen.push(r.offset);
            }
        }
        let want: Vec<u64> = (0..n).filter(|&o| o < first || o >= next).collect();
        assert_eq!(seen, want, "flip at byte {at} in batch [{from}, {to})");
        // The bad range is reported exactly, and its bytes kept aside.
        let q = log.quarantine().unwrap();
        assert_eq!(q.len(), 1, "flip at byte {at}: {q:?}");
        assert_eq!((q[0].byte_from, q[0].byte_to), (from as u64, to as u64));
        assert_eq!(q[0].offset_from, first);
        assert_eq!(q[0].offset_to, (!last).then_some(next));
        assert_eq!(
            std::fs::read(&q[0].bytes_file).unwrap(),
            b[from..to].to_vec()
        );
        // New appends never reuse an offset that was handed out.
        let o = log.append(0, vec![rec(n)]).await.unwrap();
        assert!(o >= n, "offset {o} reused (log held {n})");
    }
}

#[tokio::test]
async fn corrupt_index_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let (n, _) = build(d.path()).await;
    let idx = segment_file(d.path()).with_extension("index");
    std::fs::write(&idx, b"garbage!garbage!").unwrap();
    let log = Log::open(d.path(), cfg()).unwrap();
    assert_eq!(check_prefix(&log), n);
    assert!(log.truncations().is_empty());
}

/// The child side of the SIGKILL test: appends in `always` mode from several
/// tasks and prints every acknowledged base offset and count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_child() {
    let Ok(dir) = std::env::var("HERALD_LOG_CRASH_DIR") else {
        return;
    };
    let log = Log::open(Path::new(&dir), cfg()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    for t in 0..4u64 {
        let log = log.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let size = 1 + (i + t) % 7;
                let base = log
                    .append(0, (0..size).map(|j| rec(t * 1_000_000 + j)).collect())
                    .await
                    .unwrap();
                let _ = tx.send((base, size));
            }
        });
    }
    drop(tx);
    while let Some((base, size)) = rx.recv().await {
        println!("ACK {base} {size}");
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for round in 0..6 {
        let d = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HERALD_LOG_CRASH_DIR", d.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let wait = Duration::from_millis(100 + rng.next() % 400);
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if it.next() == Some("ACK") {
                    let b: u64 = it.next().unwrap().parse().unwrap();
                    let s: u64 = it.next().unwrap().parse().unwrap();
                    acked.push((b, s));
                }
            }
            acked
        });
        let start = Instant::now();
        while start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        let log = Log::open(d.path(), cfg()).unwrap();
        let (_, end) = log.bounds(0).unwrap();
        for (base, size) in &acked {
            assert!(
                base + size <= end,
                "round {round}: acknowledged {base}+{size} but log ends at {end}"
            );
            let recs = log.read(0, *base, 1).unwrap();
            assert_eq!(recs[0].offset, *base);
        }
        assert!(
            !acked.is_empty(),
            "round {round}: child acknowledged nothing"
        );
    }
}

#[tokio::test]
async fn refuse_mode_names_the_corrupt_file_and_byte() {
    let d = tempfile::tempdir().unwrap();
    let (_, bytes) = build(d.path()).await;
    let layout = batches(&bytes);
    let (from, to, _, _) = layout[3];
    let seg = segment_file(d.path());
    let mut b = bytes.clone();
    b[(from + to) / 2] ^= 0x10;
    std::fs::write(&seg, &b).unwrap();
    std::fs::remove_file(d.path().join("p-00000/.clean")).ok();
    let refuse = LogConfig {
        on_corruption: herald_log::OnCorruption::Refuse,
        ..cfg()
    };
    match Log::open(d.path(), refuse) {
        Err(herald_log::LogError::CorruptSegment { path, position, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(position, from as u64);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a corrupt log in refuse mode"),
    }
    // Nothing was changed: the default mode still finds and keeps all of it.
    assert_eq!(std::fs::read(&seg).unwrap(), b);
}
