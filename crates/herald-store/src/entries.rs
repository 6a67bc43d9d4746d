//! Writing and reading compact entries (inbox and feed hashes), with the
//! bodies that many recipients share stored once.
//!
//! A push of one event to many users (a post to its followers) stores its
//! body once in `h:b:<field>` (the field is the same for every recipient
//! of an event) and, per recipient, an entry of 12 bytes or so that names
//! it. Bodies are immutable; each lives as long as the longest entry that
//! can name it (the inbox idle lifetime or the feed retention, whichever is
//! longer, plus a day), and is refreshed whenever it is read. An event
//! with `data` shares its body from the first recipient: the data is
//! stored once however many recipients the event has.

use foldhash::HashMap;
use std::time::Duration;

use herald_types::{compact, Notification, UserId};

use crate::{Result, Store, StoreError};

/// Recipients of one body in one push from which it is stored once (a
/// post to followers is always: its recipients come in several pushes).
pub(crate) const SHARE_MIN: usize = 3;

/// `(field, value)` pairs of a hash, or `(name, body)` of shared bodies.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// `(field, value)` pairs borrowed from a reply.
pub(crate) type Borrowed<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Borrows `pairs`.
pub(crate) fn borrow(pairs: &Pairs) -> Borrowed<'_> {
    pairs.iter().map(|(f, v)| (&f[..], &v[..])).collect()
}

/// Splits a page a script packed with `cmsgpack.pack` (a MessagePack
/// array of field, value, field, value, ...; Lua strings are `str` or
/// `bin`) into borrowed pairs: one reply for the whole page.
pub(crate) fn unpack(b: &[u8]) -> std::result::Result<Borrowed<'_>, String> {
    let mut r = Reader(b);
    let n = match r.byte()? {
        m @ 0x90..=0x9f => usize::from(m & 0x0f),
        0xdc => r.uint(2)?,
        0xdd => r.uint(4)?,
        // An empty Lua table may be packed as an empty map.
        0x80 => 0,
        m => return Err(format!("a packed page starts with 0x{m:02x}, not an array")),
    };
    if n % 2 != 0 {
        return Err("a packed page has a field without its value".into());
    }
    let mut out = Vec::with_capacity(n / 2);
    for _ in 0..n / 2 {
        let f = r.string()?;
        let v = r.string()?;
        out.push((f, v));
    }
    if !r.0.is_empty() {
        return Err("bytes after a packed page".into());
    }
    Ok(out)
}

/// Reads MessagePack headers and strings off a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a packed page ends early".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn byte(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian unsigned integer of `width` bytes.
    fn uint(&mut self, width: usize) -> std::result::Result<usize, String> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0usize, |v, b| (v << 8) | usize::from(*b)))
    }

    fn string(&mut self) -> std::result::Result<&'a [u8], String> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 | 0xc4 => self.uint(1)?,
            0xda | 0xc5 => self.uint(2)?,
            0xdb | 0xc6 => self.uint(4)?,
            m => return Err(format!("0x{m:02x} where a packed page has a string")),
        };
        self.take(len)
    }
}

/// One user's entry, ready to write.
pub(crate) struct Encoded {
    pub field: Vec<u8>,
    pub value: Vec<u8>,
}

/// The key of a shared body.
pub(crate) fn body_key(name: &[u8]) -> Vec<u8> {
    let mut k = b"h:b:".to_vec();
    k.extend_from_slice(name);
    k
}

/// Encodes `items`; bodies reaching [`SHARE_MIN`] recipients are returned
/// once each (name, body) and their entries point at them.
pub(crate) fn encode(items: &[(UserId, &Notification)]) -> (Pairs, Vec<Encoded>) {
    let mut out = Vec::with_capacity(items.len());
    // Fields first: a body is only worth encoding apart when its field
    // comes back often enough in this push (or it is a post's).
    let fields: Vec<Vec<u8>> = items
        .iter()
        .map(|(user, n)| compact::field(&n.id, *user))
        .collect();
    let mut counts: HashMap<&[u8], usize> = HashMap::default();
    for ((_, n), f) in items.iter().zip(&fields) {
        // Only fields without the recipient in them name a shareable body.
        if matches!(f.first(), Some(1 | 2)) {
            let c = counts.entry(f.as_slice()).or_default();
            // A post's recipients come in several pushes, and an event's
            // data is worth storing once from its first recipient.
            *c += if n.kind.to_followers() || n.data.is_some() {
                SHARE_MIN
            } else {
                1
            };
        }
    }
    // Per shared field: its body, and whether it is queued for writing.
    let mut bodies: HashMap<&[u8], (Vec<u8>, bool)> = HashMap::default();
    let mut shared = Vec::new();
    let mut values = Vec::with_capacity(items.len());
    for ((_, n), field) in items.iter().zip(&fields) {
        let share = counts
            .get(field.as_slice())
            .is_some_and(|c| *c >= SHARE_MIN);
        let value = if share {
            let b = compact::body(n, field);
            let slot = bodies
                .entry(field.as_slice())
                .or_insert_with(|| (b.clone(), false));
            // Bodies of one field differ only if an id was reused for
            // something else: such an entry keeps its own body.
            if slot.0 == b {
                if !slot.1 {
                    shared.push((field.clone(), b));
                    slot.1 = true;
                }
                compact::shared_entry(n.order, field)
            } else {
                compact::entry_in(n, field)
            }
        } else {
            compact::entry_in(n, field)
        };
        values.push(value);
    }
    drop((counts, bodies));
    for (field, value) in fields.into_iter().zip(values) {
        out.push(Encoded { field, value });
    }
    (shared, out)
}

impl Store {
    /// How long a shared body lives: past every entry that can name it.
    pub(crate) fn body_ttl(&self) -> Duration {
        let inbox = self
            .cfg
            .inbox_idle_ttl
            .unwrap_or(Duration::from_secs(30 * 86_400));
        inbox.max(self.cfg.feed_retention) + Duration::from_secs(86_400)
    }

    /// Writes shared bodies (before any entry that names them is written).
    pub(crate) async fn write_bodies(&self, bodies: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        for (name, body) in bodies {
            p.cmd("SET")
                .arg(body_key(name))
                .arg(body.as_slice())
                .arg("EX")
                .arg(self.body_ttl().as_secs())
                .ignore();
        }
        self.run::<()>(&p).await
    }

    /// Decodes `(field, entry)` pairs read from `user`'s hash `key`,
    /// fetching the shared bodies they name (one more round trip when any
    /// does; each read refreshes the body's lifetime). Entries whose body
    /// has expired are returned as `orphans` (their fields).
    pub(crate) async fn decode_entries(
        &self,
        user: UserId,
        key: &str,
        raw: &[(&[u8], &[u8])],
    ) -> Result<(Vec<(Notification, bool)>, Vec<Vec<u8>>)> {
        let mut names: Vec<&[u8]> = raw
            .iter()
            .filter_map(|(_, v)| compact::shared_name(v))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut bodies: HashMap<&[u8], Vec<u8>> = HashMap::default();
        if !names.is_empty() {
            let mut p = crate::Batch::new();
            for n in &names {
                p.cmd("GETEX")
                    .arg(body_key(n))
                    .arg("EX")
                    .arg(self.body_ttl().as_secs());
            }
            let got: Vec<Option<Vec<u8>>> = self.run(&p).await?;
            for (n, b) in names.iter().zip(got) {
                if let Some(b) = b {
                    bodies.insert(n, b);
                }
            }
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut orphans = Vec::new();
        for &(f, v) in raw {
            let body = match compact::shared_name(v) {
                Some(name) => match bodies.get(name) {
                    Some(b) => Some(b.as_slice()),
                    None => {
                        orphans.push(f.to_vec());
                        continue;
                    }
                },
                None => None,
            };
            let n = compact::decode(f, v, body, user).map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
            out.push((n, compact::is_read(v)));
        }
        Ok((out, orphans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str) -> Notification {
        Notification {
            id: id.into(),
            event_id: "e-1-5".into(),
            kind: herald_types::EventKind::Mention,
            actor: 9,
            object: Some("post:1".into()),
            text: Some("hello".into()),
            ts_ms: 1,
            count: 1,
            actors: vec![9].into(),
            order: 1000,
            digest: None,
            data: None,
            trace: None,
            supersedes: None,
        }
    }

    #[test]
    fn bodies_are_shared_from_three_recipients() {
        let ns: Vec<Notification> = (1..=3).map(|r| post(&format!("n-e-1-5-{r}"))).collect();
        let items: Vec<(UserId, &Notification)> = ns
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u64 + 1, n))
            .collect();
        let (bodies, entries) = encode(&items[..2]);
        assert!(bodies.is_empty());
        assert!(entries
            .iter()
            .all(|e| compact::shared_name(&e.value).is_none()));
        let (bodies, entries) = encode(&items);
        assert_eq!(bodies.len(), 1);
        for (e, (user, sent)) in entries.iter().zip(&items) {
            assert_eq!(compact::shared_name(&e.value), Some(bodies[0].0.as_slice()));
            let n = compact::decode(&e.field, &e.value, Some(&bodies[0].1), *user).unwrap();
            assert_eq!(&n, *sent);
        }
        // A post to followers comes in several pushes: always shared.
        let mut p = post("n-e-1-5-1");
        p.kind = herald_types::EventKind::Post;
        let (bodies, entries) = encode(&[(1, &p)]);
        assert_eq!(bodies.len(), 1);
        assert!(compact::shared_name(&entries[0].value).is_some());
        // So is an event with data, from its first recipient; the data
        // comes back with the body.
        let mut d = post("n-e-1-5-1");
        d.data = Some(std::sync::Arc::new(herald_types::Data::from_json_text(
            r#"{"url":"app://p/1"}"#.into(),
        )));
        let (bodies, entries) = encode(&[(1, &d)]);
        assert_eq!(bodies.len(), 1);
        let back = compact::decode(&entries[0].field, &entries[0].value, Some(&bodies[0].1), 1);
        assert_eq!(back.unwrap(), d);
    }

    /// What `cmsgpack.pack` writes for a table of strings.
    fn pack(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let n = pairs.len() * 2;
        let mut b = if n < 16 {
            vec![0x90 | n as u8]
        } else {
            let mut h = vec![0xdc];
            h.extend_from_slice(&(n as u16).to_be_bytes());
            h
        };
        for s in pairs.iter().flat_map(|(f, v)| [f, v]) {
            match s.len() {
                l @ 0..=31 => b.push(0xa0 | l as u8),
                l @ 32..=255 => b.extend_from_slice(&[0xd9, l as u8]),
                l @ 256..=65535 => {
                    b.push(0xda);
                    b.extend_from_slice(&(l as u16).to_be_bytes());
                }
                l => {
                    b.push(0xdb);
                    b.extend_from_slice(&(l as u32).to_be_bytes());
                }
            }
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn a_packed_page_splits_back_into_its_entries() {
        let long = vec![7u8; 300];
        let mid = vec![b'x'; 40];
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b"\x01ab", b"\x00\x01xyz"), (b"", &mid), (b"f", &long)];
        let b = pack(&pairs);
        assert_eq!(unpack(&b).unwrap(), pairs);
        let many: Vec<(&[u8], &[u8])> = (0..20).map(|_| (&b"k"[..], &b"v"[..])).collect();
        assert_eq!(unpack(&pack(&many)).unwrap(), many);
        assert!(unpack(&[0x90]).unwrap().is_empty());
        assert!(unpack(&[0x80]).unwrap().is_empty());
        // Cut anywhere: an error, never a wrong page.
        for cut in 0..b.len() {
            assert!(unpack(&b[..cut]).is_err(), "cut {cut}");
        }
        assert!(unpack(&[0x91, 0xa0]).is_err(), "odd count");
        assert!(unpack(&[0x92, 0xa0, 0x01]).is_err(), "not a string");
        let mut extra = b.clone();
        extra.push(0);
        assert!(unpack(&extra).is_err());
    }
}
