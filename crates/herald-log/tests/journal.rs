//! The round journal (`durability = always`): a round is acknowledged once
//! its journal record is synced, before its segments are. A machine crash
//! can therefore leave acknowledged bytes only in the journal; opening the
//! log must put them back.
//!
//! The crash is taken as a copy of the log directory made while the log is
//! open (what the page cache holds), with the segments then cut back or
//! zeroed to what they held at their last sync: what a disk holds when the
//! kernel never wrote a segment's dirty pages back.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use herald_log::{Log, LogConfig};

const PARTITIONS: u32 = 3;

fn cfg() -> LogConfig {
    LogConfig {
        partitions: PARTITIONS,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn rec(p: u32, i: u64) -> Bytes {
    Bytes::from(format!("p{p}-r{i:05}-{}", "j".repeat((i % 29) as usize)))
}

type Acked = BTreeMap<(u32, u64), Bytes>;

async fn append_round(log: &Log, acked: &mut Acked, from: u64, n: u64) {
    let parts: Vec<(u32, Vec<Bytes>)> = (0..PARTITIONS)
        .map(|p| (p, (from..from + n).map(|i| rec(p, i)).collect()))
        .collect();
    let bases = log.append_many(parts.clone()).await.unwrap();
    for ((p, recs), base) in parts.into_iter().zip(bases) {
        for (k, r) in recs.into_iter().enumerate() {
            acked.insert((p, base + k as u64), r);
        }
    }
}

/// Every readable record; `strict`: nothing unreadable inside the bounds.
fn read_all(log: &Log, strict: bool) -> Acked {
    let mut out = Acked::new();
    for p in 0..PARTITIONS {
        let (mut at, end) = log.bounds(p).unwrap();
        while at < end {
            let recs = log.read(p, at, 1 << 20).unwrap();
            if recs.is_empty() && !strict {
                break;
            }
            assert!(!recs.is_empty(), "partition {p}: nothing readable at {at}");
            for r in recs {
                at = r.offset + 1;
                out.insert((p, r.offset), r.payload);
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "lock" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn segment(dir: &Path, p: u32) -> std::path::PathBuf {
    dir.join(format!("p-{p:05}")).join(format!("{:020}.log", 0))
}

/// A log with rounds synced in their segments (`flush`) and then rounds
/// only in the journal, copied while open: returns everything acknowledged
/// and each segment's synced length.
async fn crashed_copy(src: &Path, dst: &Path) -> (Acked, Vec<u64>) {
    let log = Log::open(src, cfg()).unwrap();
    let mut acked = Acked::new();
    append_round(&log, &mut acked, 0, 20).await;
    // A checkpoint runs every second: retry until the copy caught the
    // journal holding the later rounds.
    for _ in 0..20 {
        log.flush().await.unwrap();
        let synced: Vec<u64> = (0..PARTITIONS)
            .map(|p| std::fs::metadata(segment(src, p)).unwrap().len())
            .collect();
        let from = acked.len() as u64 / PARTITIONS as u64;
        for k in 0..4 {
            append_round(&log, &mut acked, from + k * 7, 7).await;
        }
        let _ = std::fs::remove_dir_all(dst);
        copy_dir(src, dst);
        if std::fs::metadata(dst.join("journal")).unwrap().len() > 0 {
            log.close().await.unwrap();
            return (acked, synced);
        }
    }
    panic!("the journal was emptied before every copy");
}

/// What the disk holds when no dirty segment page was written back:
/// partition 0 cut to its synced length, partition 1 zeroed past it (the
/// blocks allocated, their data never written), partition 2 left whole.
fn lose_unsynced_pages(dir: &Path, synced: &[u64]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir, 0))
        .unwrap();
    f.set_len(synced[0]).unwrap();
    let path = segment(dir, 1);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0u8; (len - synced[1]) as usize], synced[1])
        .unwrap();
}

#[tokio::test]
async fn acknowledged_rounds_only_in_the_journal_come_back_after_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("live"), d.path().join("crashed"));
    let (acked, synced) = crashed_copy(&src, &dst).await;
    lose_unsynced_pages(&dst, &synced);

    // Without its journal the same disk has lost acknowledged records: the
    // copy really holds them only in the journal.
    let bare = d.path().join("bare");
    copy_dir(&dst, &bare);
    std::fs::remove_file(bare.join("journal")).unwrap();
    let log = Log::open(&bare, cfg()).unwrap();
    let got = read_all(&log, false);
    assert!(
        acked.keys().any(|k| !got.contains_key(k)),
        "the segments alone kept every record: the test shows nothing"
    );
    drop(log);

    let log = Log::open(&dst, cfg()).unwrap();
    let got = read_all(&log, true);
    for (k, v) in &acked {
        assert_eq!(got.get(k), Some(v), "acknowledged record {k:?} lost");
    }
    assert_eq!(
        got.len(),
        acked.len(),
        "records appeared that were never sent"
    );
    assert_eq!(
        std::fs::metadata(dst.join("journal")).unwrap().len(),
        0,
        "the journal is emptied once replayed"
    );
    // The log goes on from where the acknowledged records end.
    let next = log.append(0, vec![Bytes::from_static(b"after")]).await;
    let top = acked
        .keys()
        .filter(|k| k.0 == 0)
        .map(|k| k.1)
        .max()
        .unwrap();
    assert!(next.unwrap() > top);
    log.close().await.unwrap();

    // A second open finds nothing left to replay and the same records.
    let log = Log::open(&dst, cfg()).unwrap();
    let again = read_all(&log, true);
    for (k, v) in &acked {
        assert_eq!(again.get(k), Some(v));
    }
}

#[tokio::test]
async fn a_torn_last_journal_record_is_dropped_and_the_rest_replayed() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("live"), d.path().join("crashed"));
    let (acked, synced) = crashed_copy(&src, &dst).await;
    lose_unsynced_pages(&dst, &synced);
    // A round whose journal write never finished: a record header that
    // promises more bytes than follow, and after it a record with a bad CRC.
    let j = dst.join("journal");
    let mut bytes = std::fs::read(&j).unwrap();
    bytes.extend_from_slice(&500u32.to_le_bytes());
    bytes.extend_from_slice(&[7u8; 40]);
    std::fs::write(&j, &bytes).unwrap();

    let log = Log::open(&dst, cfg()).unwrap();
    // Not strict: the offsets continue past the high watermark (a torn
    // round may have been seen by nobody, but nothing proves it).
    let got = read_all(&log, false);
    for (k, v) in &acked {
        assert_eq!(got.get(k), Some(v), "acknowledged record {k:?} lost");
    }
    assert_eq!(got.len(), acked.len());
    assert!(
        log.quarantine().unwrap().is_empty(),
        "a torn tail is no corruption"
    );
    drop(log);

    // A flipped byte inside the last good record: the records before it
    // still replay; that one is not trusted (it ends the journal).
    let (src2, dst2) = (d.path().join("live2"), d.path().join("crashed2"));
    let (acked2, synced2) = crashed_copy(&src2, &dst2).await;
    lose_unsynced_pages(&dst2, &synced2);
    let j = dst2.join("journal");
    let mut bytes = std::fs::read(&j).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&j, &bytes).unwrap();
    let log = Log::open(&dst2, cfg()).unwrap();
    let got = read_all(&log, false);
    let lost: Vec<_> = acked2.keys().filter(|k| !got.contains_key(k)).collect();
    assert!(
        !lost.is_empty(),
        "the damaged last record's round cannot come back"
    );
    for (k, v) in &got {
        assert_eq!(acked2.get(k), Some(v), "record {k:?} is not what was sent");
    }
}

/// After a failed segment sync the kernel may have dropped the pages it
/// could not write, and a second sync would report success over them: the
/// journal's records are written into the segments again before the next
/// checkpoint empties the journal.
#[tokio::test]
async fn a_failed_segment_sync_writes_the_journal_into_the_segments_again() {
    use herald_log::fault::{inject, Op};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let log = Log::open(dir, cfg()).unwrap();
    let p0 = dir.join("p-00000");
    inject::count(&p0);
    let mut acked = Acked::new();
    let mut fired = false;
    for attempt in 0..5u64 {
        append_round(&log, &mut acked, attempt * 10, 10).await;
        let (syncs, writes) = (inject::calls(&p0, Op::Sync), inject::calls(&p0, Op::Write));
        inject::arm(&p0, Op::Sync, 0, 1, libc::ENOSPC);
        // The flush (or a tick's checkpoint just before it) meets the fault.
        let first = log.flush().await;
        if inject::calls(&p0, Op::Sync) == syncs {
            // A tick synced the segment before the rule was armed.
            inject::clear(&p0);
            inject::count(&p0);
            continue;
        }
        if let Err(e) = first {
            assert!(matches!(e, herald_log::LogError::DiskFull { .. }), "{e}");
            log.flush().await.unwrap();
        }
        assert!(
            inject::calls(&p0, Op::Write) > writes,
            "the journal was not written into the segment again"
        );
        fired = true;
        break;
    }
    assert!(fired, "the fault never met a segment sync");
    // An append that reaches the disk proves there is room again.
    append_round(&log, &mut acked, 100, 3).await;
    assert!(matches!(log.health(), herald_log::LogHealth::Ok));
    log.close().await.unwrap();
    let log = Log::open(dir, cfg()).unwrap();
    let got = read_all(&log, true);
    assert_eq!(got, acked);
}

/// A round of one partition, or of more bytes than the journal takes,
/// syncs its segments directly: nothing of it is written twice.
#[tokio::test]
async fn rounds_of_one_partition_or_many_bytes_skip_the_journal() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), cfg()).unwrap();
    let journal = || std::fs::metadata(d.path().join("journal")).unwrap().len();
    let mut acked = Acked::new();
    log.append(1, (0..50).map(|i| rec(1, i)).collect())
        .await
        .unwrap();
    assert_eq!(journal(), 0, "a round of one partition was journaled");
    let big: Vec<(u32, Vec<Bytes>)> = (0..2)
        .map(|p| (p, vec![Bytes::from(vec![b'b'; 200 << 10])]))
        .collect();
    log.append_many(big).await.unwrap();
    assert_eq!(journal(), 0, "a round of 400 KiB was journaled");
    // A small round of several partitions is (a tick's checkpoint may
    // empty the journal in between: try again).
    let mut seen = false;
    for k in 0..5 {
        append_round(&log, &mut acked, 100 + k * 5, 5).await;
        if journal() > 0 {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "a small round of three partitions never reached the journal"
    );
}

/// Where each record of a journal starts.
fn record_starts(journal: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 8 <= journal.len() {
        out.push(at);
        let len = u32::from_le_bytes(journal[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

/// A damaged record with intact records after it is corruption, not a torn
/// write: its bytes are quarantined and reported, the records after it
/// come back, and no offset (so no event id) is handed out again, even
/// though the damaged round's records are gone and the segments look
/// cleanly cut. Under `on_corruption = refuse` the log does not open.
#[tokio::test]
async fn a_damaged_journal_record_in_the_middle_is_quarantined_and_no_offset_is_reused() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("live"), d.path().join("crashed"));
    let (acked, synced) = crashed_copy(&src, &dst).await;
    lose_unsynced_pages(&dst, &synced);
    let j = dst.join("journal");
    let mut bytes = std::fs::read(&j).unwrap();
    let starts = record_starts(&bytes);
    assert!(starts.len() >= 3, "journal records: {starts:?}");
    // A byte in the body of the second record flips.
    bytes[starts[1] + 8 + 30] ^= 0x40;
    std::fs::write(&j, &bytes).unwrap();
    let refused = d.path().join("refused");
    copy_dir(&dst, &refused);

    let log = Log::open(&dst, cfg()).unwrap();
    let q = log.quarantine().unwrap();
    let journal: Vec<_> = q
        .iter()
        .filter(|r| r.partition == herald_log::quarantine::JOURNAL)
        .collect();
    assert_eq!(journal.len(), 1, "{q:?}");
    assert_eq!(journal[0].byte_from, starts[1] as u64);
    assert_eq!(journal[0].byte_to, starts[2] as u64);
    let said = journal[0].describe();
    assert!(said.contains("journal bytes"), "{said}");
    // The segments' hole where the damaged round's bytes never arrived is
    // quarantined too, with the records after it kept.
    let got = read_all(&log, false);
    for (k, v) in &got {
        assert_eq!(acked.get(k), Some(v), "record {k:?} is not what was sent");
    }
    let lost: Vec<_> = acked.keys().filter(|k| !got.contains_key(k)).collect();
    assert!(
        !lost.is_empty(),
        "the damaged round's records cannot be read"
    );
    // New appends get offsets past every offset handed out before the crash.
    for p in 0..PARTITIONS {
        let top = acked
            .keys()
            .filter(|k| k.0 == p)
            .map(|k| k.1)
            .max()
            .unwrap();
        let next = log
            .append(p, vec![Bytes::from_static(b"after")])
            .await
            .unwrap();
        assert!(
            next > top,
            "partition {p}: offset {next} handed out again (acked up to {top})"
        );
    }
    log.close().await.unwrap();

    let strict = LogConfig {
        on_corruption: herald_log::OnCorruption::Refuse,
        ..cfg()
    };
    match Log::open(&refused, strict) {
        Err(e) => assert!(e.to_string().contains("journal"), "{e}"),
        Ok(_) => panic!("a damaged journal opened under on_corruption = refuse"),
    }
}

/// A consumer checkpoint past the recovered end of its partition proves
/// offsets there were handed out: a partition whose files were lost (its
/// directory wiped, the checkpoints kept) continues past that position.
#[tokio::test]
async fn a_consumer_position_past_the_end_moves_the_partition_past_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let log = Log::open(dir, cfg()).unwrap();
    let mut acked = Acked::new();
    append_round(&log, &mut acked, 0, 30).await;
    log.checkpoints().commit("fanout", 0, 30).unwrap();
    log.close().await.unwrap();
    std::fs::remove_dir_all(dir.join("p-00000")).unwrap();
    let log = Log::open(dir, cfg()).unwrap();
    let next = log
        .append(0, vec![Bytes::from_static(b"again")])
        .await
        .unwrap();
    assert!(
        next >= 30,
        "offset {next} handed out again after the files were lost"
    );
    // Partitions that lost nothing go on where they were.
    assert_eq!(
        log.append(1, vec![Bytes::from_static(b"x")]).await.unwrap(),
        30
    );
    log.close().await.unwrap();
}
