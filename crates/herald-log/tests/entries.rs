//! Raft entries in the log (`format` magic 2): leader and follower appends,
//! entries without records, reads by index, cutting an uncommitted tail,
//! and all of it surviving a reopen.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use herald_log::{EntryKind, EntryMeta, Log, LogConfig, LogError, NewEntry};

fn cfg() -> LogConfig {
    LogConfig {
        partitions: 2,
        index_interval_bytes: 64,
        segment_bytes: 4096,
        replicated: true,
        ..LogConfig::default()
    }
}

fn entry(term: u64, index: u64, base: Option<u64>, n: usize) -> NewEntry {
    NewEntry {
        meta: EntryMeta {
            term,
            leader: 1,
            index,
            kind: EntryKind::Events,
        },
        base,
        ts: None,
        records: (0..n)
            .map(|k| Bytes::from(format!("t{term}-i{index}-r{k}-{}", "x".repeat(60))))
            .collect(),
        body: Bytes::new(),
    }
}

fn blank(term: u64, index: u64) -> NewEntry {
    NewEntry {
        meta: EntryMeta {
            term,
            leader: 1,
            index,
            kind: EntryKind::Blank,
        },
        base: None,
        ts: None,
        records: Vec::new(),
        body: Bytes::new(),
    }
}

#[tokio::test]
async fn entries_append_read_cut_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    // A leader's log: a blank entry, then entries of 3 records each, with
    // enough bytes to roll segments.
    let mut bases = log.append_entries(0, vec![blank(1, 1)]).await.unwrap();
    for i in 2..=40 {
        bases.extend(
            log.append_entries(0, vec![entry(1, i, None, 3)])
                .await
                .unwrap(),
        );
    }
    assert_eq!(bases[0], 0, "a replicated partition starts at offset 0");
    assert_eq!(bases[1], 0, "a blank entry takes no offset");
    assert_eq!(bases[39], 38 * 3);
    assert!(log.usage(0).unwrap().0 > 2, "segments rolled");
    // Readers of events see records only.
    let recs = log.read(0, 0, 1 << 20).unwrap();
    assert_eq!(recs.len(), 39 * 3);
    assert!(recs[0].payload.starts_with(b"t1-i2-r0"));
    // Reads by index, from a hint at or before the entry.
    let got = log.read_entries(0, 30, 12, 1).unwrap();
    assert_eq!(got[0].meta.index, 12);
    assert_eq!(got[0].base_offset, 30);
    assert_eq!(got[0].records.len(), 3);
    let all = log.read_entries(0, 0, 0, 1 << 20).unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(all[0].meta.kind, EntryKind::Blank);

    // A new leader overwrites the tail from index 25 (offset 69).
    log.truncate_entries(0, bases[24], 25).await.unwrap();
    assert_eq!(log.bounds(0).unwrap().1, 23 * 3);
    let after = log
        .append_entries(0, vec![blank(2, 25), entry(2, 26, Some(69), 2)])
        .await
        .unwrap();
    assert_eq!(after, vec![69, 69]);
    // A follower's copy never goes back.
    let err = log
        .append_entries(0, vec![entry(2, 27, Some(60), 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::EntryOutOfPlace {
                expected: 71,
                got: 60,
                ..
            }
        ),
        "{err}"
    );
    let all = log.read_entries(0, 0, 0, 1 << 20).unwrap();
    assert_eq!(all.len(), 26);
    assert_eq!(
        all[24].meta,
        EntryMeta {
            term: 2,
            leader: 1,
            index: 25,
            kind: EntryKind::Blank
        }
    );
    assert_eq!(all[25].meta.index, 26);
    // Partition 1 is untouched by all of this.
    assert_eq!(log.bounds(1).unwrap(), (0, 0));
    drop(log);

    // After a crash (no clean close) everything is as it was.
    let log = Log::open(dir.path(), cfg()).unwrap();
    let again = log.read_entries(0, 0, 0, 1 << 20).unwrap();
    assert_eq!(again, all);
    assert_eq!(log.bounds(0).unwrap().1, 71);
    assert!(log.quarantine().unwrap().is_empty());
    log.append_entries(0, vec![entry(2, 27, Some(71), 1)])
        .await
        .unwrap();
    log.close().await.unwrap();
}

#[tokio::test]
async fn cutting_everything_and_a_blank_entry_at_a_segment_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    for i in 1..=30 {
        log.append_entries(0, vec![entry(1, i, None, 2), blank(1, 100 + i)])
            .await
            .ok();
    }
    // Cut from the very first entry: an empty partition.
    log.truncate_entries(0, 0, 1).await.unwrap();
    assert_eq!(log.bounds(0).unwrap().1, 0);
    assert!(log.read_entries(0, 0, 0, 1 << 20).unwrap().is_empty());
    let b = log
        .append_entries(0, vec![entry(3, 1, Some(0), 1)])
        .await
        .unwrap();
    assert_eq!(b, vec![0]);
    log.close().await.unwrap();
    let log = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(log.read_entries(0, 0, 0, 1 << 20).unwrap().len(), 1);
}

#[tokio::test]
async fn a_leaders_first_records_start_at_the_fresh_base_and_followers_follow() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Log::open(
        a.path(),
        LogConfig {
            fresh_base: 1_000_000,
            ..cfg()
        },
    )
    .unwrap();
    let follower = Log::open(
        b.path(),
        LogConfig {
            fresh_base: 7_000_000,
            ..cfg()
        },
    )
    .unwrap();
    let mut bases = leader.append_entries(0, vec![blank(1, 0)]).await.unwrap();
    bases.extend(
        leader
            .append_entries(0, vec![entry(1, 1, None, 3)])
            .await
            .unwrap(),
    );
    bases.extend(
        leader
            .append_entries(0, vec![entry(1, 2, None, 2)])
            .await
            .unwrap(),
    );
    assert_eq!(bases, vec![0, 1_000_000, 1_000_003]);
    // The follower copies what the leader holds, offsets included.
    let copy: Vec<NewEntry> = leader
        .read_entries(0, 0, 0, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|e| NewEntry {
            meta: e.meta,
            base: Some(e.base_offset),
            ts: Some(e.timestamp_ms),
            records: e.records,
            body: e.body,
        })
        .collect();
    let got = follower.append_entries(0, copy).await.unwrap();
    // Entries with records sit at the leader's offsets (one without
    // records takes none: it may sit where the jump lands).
    assert_eq!(got[1..], bases[1..]);
    drop(follower);
    // After a crash the jump is known, not a loss.
    let follower = Log::open(b.path(), cfg()).unwrap();
    assert!(follower.quarantine().unwrap().is_empty());
    // (The empty segment the jump left behind goes with retention.)
    let recs = follower.read(0, 1_000_000, 1 << 20).unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].offset, 1_000_000);
    // The same entries; one without records takes no offset and may sit
    // where the jump lands.
    let strip = |v: Vec<herald_log::StoredEntry>| -> Vec<_> {
        v.into_iter()
            .map(|e| {
                let at = (!e.records.is_empty()).then_some(e.base_offset);
                (e.meta, at, e.records)
            })
            .collect()
    };
    assert_eq!(
        strip(follower.read_entries(0, 0, 0, 1 << 20).unwrap()),
        strip(leader.read_entries(0, 0, 0, 1 << 20).unwrap())
    );
}

/// A reader at the start of an empty segment followed by one at a jumped
/// offset gets the records past the jump (it once looped forever).
#[tokio::test]
async fn a_reader_steps_over_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            fresh_base: 5_000,
            retention_ms: None,
            ..cfg()
        },
    )
    .unwrap();
    log.append_entries(0, vec![blank(1, 0)]).await.unwrap();
    log.append_entries(0, vec![entry(1, 1, None, 2)])
        .await
        .unwrap();
    assert_eq!(log.bounds(0).unwrap(), (0, 5_002));
    let recs = log.read(0, 0, 1 << 20).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![5_000, 5_001]
    );
}
