//! The on-disk record batch.
//!
//! ```text
//! 0   u32  length of everything after this field
//! 4   u32  CRC32C of everything after this field
//! 8   u8   magic (format version) = 1
//! 9   u64  base offset
//! 17  u32  record count
//! 21  i64  first timestamp (ms)
//! 29  i64  last timestamp (ms)
//! 37  records: u32 payload length, u32 timestamp delta (ms from first), payload
//! ```
//! All integers are little-endian. A batch is valid only if its length fits
//! in the file, its CRC matches and its records exactly fill it.
//!
//! A batch of a replicated partition (magic 2) is one entry of its Raft
//! log: the same header, then the entry's place in the Raft log before the
//! records:
//!
//! ```text
//! 37  u64  term of the leader that made the entry
//! 45  u64  node id of that leader
//! 53  u64  Raft log index
//! 61  u8   kind: 0 events, 1 blank (a new leader's first entry),
//!          2 membership
//! 62  events: records, as above; blank and membership: record count 0,
//!     then an opaque body (the encoded member set) filling the batch
//! ```
//! Blank and membership entries hold no records and take no offset, so
//! readers of events never see them.

use bytes::Bytes;

pub const MAGIC: u8 = 1;
/// Magic of a batch that is one entry of a replicated partition's Raft log.
pub const MAGIC_ENTRY: u8 = 2;
pub const HEADER_LEN: usize = 37;
/// Header length of a Raft entry batch.
pub const ENTRY_HEADER_LEN: usize = 62;
pub const RECORD_OVERHEAD: usize = 8;
/// The largest batch the log will read back; guards against a corrupt length.
pub const MAX_BATCH_LEN: usize = 64 * 1024 * 1024;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// What a Raft entry batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Application records (events).
    Events = 0,
    /// A new leader's first entry; no records.
    Blank = 1,
    /// A membership change; no records, its body is the member set.
    Membership = 2,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            0 => Some(EntryKind::Events),
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Membership),
            _ => None,
        }
    }
}

/// The place of a batch in its partition's Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    pub term: u64,
    pub leader: u64,
    pub index: u64,
    pub kind: EntryKind,
}

/// The header of a batch that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub count: u32,
    pub first_ts: i64,
    pub last_ts: i64,
    /// Whole size on disk, including the length field.
    pub size: usize,
    /// Set for a batch that is a Raft log entry (magic 2).
    pub entry: Option<EntryMeta>,
}

impl BatchHeader {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.count as u64
    }

    /// Where the records start.
    pub fn records_at(&self) -> usize {
        if self.entry.is_some() {
            ENTRY_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Whether the records are the application's (every plain batch, and
    /// Raft entries of kind `Events`).
    pub fn holds_events(&self) -> bool {
        self.entry.is_none_or(|e| e.kind == EntryKind::Events)
    }
}

/// Appends one batch holding `records` (all stamped `ts`) to `out`.
pub fn encode_batch<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    ts: i64,
    records: impl Iterator<Item = &'a [u8]>,
) -> BatchHeader {
    encode(out, base_offset, ts, None, records)
}

/// Appends one Raft entry batch: `records` (all stamped `ts`) for an
/// `Events` entry; for the other kinds no records, and `body` after the
/// header.
pub fn encode_entry<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    ts: i64,
    entry: EntryMeta,
    records: impl Iterator<Item = &'a [u8]>,
    body: &[u8],
) -> BatchHeader {
    if entry.kind == EntryKind::Events {
        return encode(out, base_offset, ts, Some(entry), records);
    }
    let start = out.len();
    let mut h = encode(out, base_offset, ts, Some(entry), std::iter::empty());
    out.extend_from_slice(body);
    h.size += body.len();
    let b = &mut out[start..];
    b[0..4].copy_from_slice(&((h.size - 4) as u32).to_le_bytes());
    let crc = crc32c::crc32c(&b[8..h.size]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The body of a blank or membership entry batch (held in `buf` from 0).
pub fn entry_body<'b>(buf: &'b [u8], h: &BatchHeader) -> &'b [u8] {
    match h.entry {
        Some(e) if e.kind != EntryKind::Events => &buf[ENTRY_HEADER_LEN..h.size],
        _ => &[],
    }
}

fn encode<'a>(
    out: &mut Vec<u8>,
    base_offset: u64,
    ts: i64,
    entry: Option<EntryMeta>,
    records: impl Iterator<Item = &'a [u8]>,
) -> BatchHeader {
    let start = out.len();
    let head = if entry.is_some() {
        ENTRY_HEADER_LEN
    } else {
        HEADER_LEN
    };
    out.extend_from_slice(&[0u8; ENTRY_HEADER_LEN][..head]);
    let mut count: u32 = 0;
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(r);
        count += 1;
    }
    let size = out.len() - start;
    let h = &mut out[start..];
    h[0..4].copy_from_slice(&((size - 4) as u32).to_le_bytes());
    h[8] = if entry.is_some() { MAGIC_ENTRY } else { MAGIC };
    h[9..17].copy_from_slice(&base_offset.to_le_bytes());
    h[17..21].copy_from_slice(&count.to_le_bytes());
    h[21..29].copy_from_slice(&ts.to_le_bytes());
    h[29..37].copy_from_slice(&ts.to_le_bytes());
    if let Some(e) = entry {
        h[37..45].copy_from_slice(&e.term.to_le_bytes());
        h[45..53].copy_from_slice(&e.leader.to_le_bytes());
        h[53..61].copy_from_slice(&e.index.to_le_bytes());
        h[61] = e.kind as u8;
    }
    let crc = crc32c::crc32c(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    BatchHeader {
        base_offset,
        count,
        first_ts: ts,
        last_ts: ts,
        size,
        entry,
    }
}

/// Why bytes at some position are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the batch claims: a torn tail, or need to read more.
    Short { need: usize },
    /// The bytes are there but wrong.
    Corrupt(String),
}

/// Validates the batch at the start of `buf` and returns its header.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, Invalid> {
    if buf.len() < HEADER_LEN {
        return Err(Invalid::Short { need: HEADER_LEN });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len + 4 < HEADER_LEN || len > MAX_BATCH_LEN {
        return Err(Invalid::Corrupt(format!("impossible batch length {len}")));
    }
    let size = len + 4;
    if buf.len() < size {
        return Err(Invalid::Short { need: size });
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32c::crc32c(&buf[8..size]) != crc {
        return Err(Invalid::Corrupt("crc mismatch".into()));
    }
    if buf[8] != MAGIC && buf[8] != MAGIC_ENTRY {
        return Err(Invalid::Corrupt(format!("unknown magic {}", buf[8])));
    }
    let rd8 = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&buf[i..i + 8]);
        a
    };
    let base_offset = u64::from_le_bytes(rd8(9));
    let count = u32::from_le_bytes([buf[17], buf[18], buf[19], buf[20]]);
    let first_ts = i64::from_le_bytes(rd8(21));
    let last_ts = i64::from_le_bytes(rd8(29));
    let entry = if buf[8] == MAGIC_ENTRY {
        if size < ENTRY_HEADER_LEN {
            return Err(Invalid::Corrupt(
                "entry batch shorter than its header".into(),
            ));
        }
        let kind = EntryKind::from_u8(buf[61])
            .ok_or_else(|| Invalid::Corrupt(format!("unknown entry kind {}", buf[61])))?;
        Some(EntryMeta {
            term: u64::from_le_bytes(rd8(37)),
            leader: u64::from_le_bytes(rd8(45)),
            index: u64::from_le_bytes(rd8(53)),
            kind,
        })
    } else {
        None
    };
    if let Some(e) = entry.filter(|e| e.kind != EntryKind::Events) {
        if count != 0 {
            return Err(Invalid::Corrupt(format!("{:?} entry with records", e.kind)));
        }
        return Ok(BatchHeader {
            base_offset,
            count,
            first_ts,
            last_ts,
            size,
            entry,
        });
    }
    // The records must exactly fill the batch.
    let mut pos = if entry.is_some() {
        ENTRY_HEADER_LEN
    } else {
        HEADER_LEN
    };
    for _ in 0..count {
        if pos + RECORD_OVERHEAD > size {
            return Err(Invalid::Corrupt("record header past batch end".into()));
        }
        let rl = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        pos += RECORD_OVERHEAD + rl;
        if pos > size {
            return Err(Invalid::Corrupt("record past batch end".into()));
        }
    }
    if pos != size {
        return Err(Invalid::Corrupt("records do not fill the batch".into()));
    }
    if base_offset.checked_add(u64::from(count)).is_none() {
        return Err(Invalid::Corrupt(format!(
            "impossible base offset {base_offset}"
        )));
    }
    Ok(BatchHeader {
        base_offset,
        count,
        first_ts,
        last_ts,
        size,
        entry,
    })
}

/// Splits a validated batch (held in `buf`, starting at 0) into records,
/// keeping those at or after `from` and stopping before `until`.
pub fn records_of(buf: &Bytes, h: &BatchHeader, from: u64, until: u64, out: &mut Vec<Record>) {
    let mut pos = h.records_at();
    for i in 0..h.count as u64 {
        let rl = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let delta = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        let off = h.base_offset + i;
        let start = pos + RECORD_OVERHEAD;
        if off >= until {
            break;
        }
        if off >= from {
            out.push(Record {
                offset: off,
                timestamp_ms: h.first_ts.saturating_add(i64::from(delta)),
                payload: buf.slice(start..start + rl),
            });
        }
        pos = start + rl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let recs: Vec<&[u8]> = vec![b"a", b"", b"hello"];
        let h = encode_batch(&mut buf, 10, 1234, recs.into_iter());
        assert_eq!(h.size, buf.len());
        let checked = check_batch(&buf).unwrap();
        assert_eq!(checked, h);
        let b = Bytes::from(buf);
        let mut out = vec![];
        records_of(&b, &checked, 11, u64::MAX, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].offset, 11);
        assert_eq!(&out[1].payload[..], b"hello");
    }

    #[test]
    fn entries_round_trip() {
        let meta = EntryMeta {
            term: 7,
            leader: 2,
            index: 41,
            kind: EntryKind::Events,
        };
        let mut buf = Vec::new();
        let recs: Vec<&[u8]> = vec![b"a", b"bc"];
        let h = encode_entry(&mut buf, 100, 5, meta, recs.into_iter(), &[]);
        let blank = EntryMeta {
            index: 42,
            kind: EntryKind::Membership,
            ..meta
        };
        let h2 = encode_entry(&mut buf, 102, 6, blank, std::iter::empty(), b"members");
        let c = check_batch(&buf).unwrap();
        assert_eq!(c, h);
        assert_eq!(c.entry, Some(meta));
        let b = Bytes::from(buf);
        let mut out = vec![];
        records_of(&b, &c, 0, u64::MAX, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[1].payload[..], b"bc");
        let c2 = check_batch(&b[h.size..]).unwrap();
        assert_eq!(c2, h2);
        assert_eq!(c2.count, 0);
        assert_eq!(c2.next_offset(), 102);
        assert_eq!(entry_body(&b[h.size..], &c2), b"members");
        for (from, to) in [(0, h.size), (h.size, b.len())] {
            for i in from..to {
                for bit in 0..8 {
                    let mut x = b[from..to].to_vec();
                    x[i - from] ^= 1 << bit;
                    assert!(check_batch(&x).is_err(), "flip at {i}:{bit} undetected");
                }
            }
        }
    }

    #[test]
    fn detects_every_single_bit_flip() {
        let mut buf = Vec::new();
        let recs: Vec<&[u8]> = vec![b"abc", b"defgh"];
        encode_batch(&mut buf, 0, 1, recs.into_iter());
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(check_batch(&b).is_err(), "flip at {i}:{bit} undetected");
            }
        }
    }

    use proptest::prelude::*;

    /// A batch around `body` with a length and CRC that match.
    fn framed(base: u64, count: u32, first_ts: i64, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![MAGIC];
        payload.extend_from_slice(&base.to_le_bytes());
        payload.extend_from_slice(&count.to_le_bytes());
        payload.extend_from_slice(&first_ts.to_le_bytes());
        payload.extend_from_slice(&first_ts.to_le_bytes());
        payload.extend_from_slice(body);
        let mut buf = ((payload.len() + 4) as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        buf
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a file holds, reading it is an answer, never a panic.
        #[test]
        fn arbitrary_bytes_are_refused_cleanly(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = check_batch(&b);
        }

        /// Past the CRC (a batch written by someone else, or a collision),
        /// the record layout is still checked before anything is sliced.
        #[test]
        fn arbitrary_bodies_with_a_valid_crc_never_panic(
            base in any::<u64>(),
            count in 0u32..8,
            first_ts in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let buf = framed(base, count, first_ts, &body);
            if let Ok(h) = check_batch(&buf) {
                let mut out = Vec::new();
                records_of(&Bytes::from(buf), &h, 0, u64::MAX, &mut out);
                prop_assert_eq!(out.len() as u32, h.count);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Well-formed records with extreme offsets and timestamps: the
        /// batch is refused or read whole, never an overflow.
        #[test]
        fn extreme_offsets_and_timestamps_never_overflow(
            base in prop_oneof![Just(u64::MAX), Just(u64::MAX - 3), any::<u64>()],
            first_ts in prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()],
            recs in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..20)), 0..6),
        ) {
            let mut body = Vec::new();
            for (delta, p) in &recs {
                body.extend_from_slice(&(p.len() as u32).to_le_bytes());
                body.extend_from_slice(&delta.to_le_bytes());
                body.extend_from_slice(p);
            }
            let buf = framed(base, recs.len() as u32, first_ts, &body);
            if let Ok(h) = check_batch(&buf) {
                let mut out = Vec::new();
                records_of(&Bytes::from(buf), &h, 0, u64::MAX, &mut out);
                prop_assert_eq!(out.len(), recs.len());
            }
        }
    }

    #[test]
    fn short_is_short() {
        let mut buf = Vec::new();
        let recs: Vec<&[u8]> = vec![b"abc"];
        encode_batch(&mut buf, 0, 1, recs.into_iter());
        for cut in 0..buf.len() {
            assert!(matches!(
                check_batch(&buf[..cut]),
                Err(Invalid::Short { .. })
            ));
        }
    }
}
