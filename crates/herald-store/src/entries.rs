//! Writing and reading compact entries (inbox and feed hashes), with the
//! bodies that many recipients share stored once.
//!
//! A push of one event to many users (a post to its followers) stores its
//! body once in `h:b:<field>` (the field is the same for every recipient
//! of an event) and, per recipient, an entry of 12 bytes or so that names
//! it. Bodies are immutable; each lives as long as the longest entry that
//! can name it (the inbox idle lifetime or the feed retention, whichever is
//! longer, plus a day), and is refreshed whenever it is read.

use std::collections::HashMap;
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

/// Splits a page a script packed into one string: per entry, the field's
/// and the value's lengths (4 bytes each, big-endian), then both.
pub(crate) fn unpack(mut b: &[u8]) -> std::result::Result<Borrowed<'_>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (Some(lf), Some(lv)) = (b.get(0..4), b.get(4..8)) else {
            return Err("a packed page ends inside a length".into());
        };
        let lf = u32::from_be_bytes([lf[0], lf[1], lf[2], lf[3]]) as usize;
        let lv = u32::from_be_bytes([lv[0], lv[1], lv[2], lv[3]]) as usize;
        let rest = &b[8..];
        if rest.len() < lf.saturating_add(lv) {
            return Err("a packed page ends inside an entry".into());
        }
        let (f, rest) = rest.split_at(lf);
        let (v, rest) = rest.split_at(lv);
        out.push((f, v));
        b = rest;
    }
    Ok(out)
}

/// One user's entry, ready to write.
pub(crate) struct Encoded {
    pub user: UserId,
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
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for ((_, n), f) in items.iter().zip(&fields) {
        // Only fields without the recipient in them name a shareable body.
        if matches!(f.first(), Some(1 | 2)) {
            let c = counts.entry(f.as_slice()).or_default();
            *c += if n.kind.to_followers() { SHARE_MIN } else { 1 };
        }
    }
    // Per shared field: its body, and whether it is queued for writing.
    let mut bodies: HashMap<&[u8], (Vec<u8>, bool)> = HashMap::new();
    let mut shared = Vec::new();
    for ((user, n), field) in items.iter().zip(&fields) {
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
                compact::entry(n, *user)
            }
        } else {
            compact::entry(n, *user)
        };
        out.push(Encoded {
            user: *user,
            field: field.clone(),
            value,
        });
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
        let mut bodies: HashMap<&[u8], Vec<u8>> = HashMap::new();
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
            actors: vec![9],
            order: 1000,
            digest: None,
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
        for e in &entries {
            assert_eq!(compact::shared_name(&e.value), Some(bodies[0].0.as_slice()));
            let n = compact::decode(&e.field, &e.value, Some(&bodies[0].1), e.user).unwrap();
            assert_eq!(n, ns[e.user as usize - 1]);
        }
        // A post to followers comes in several pushes: always shared.
        let mut p = post("n-e-1-5-1");
        p.kind = herald_types::EventKind::Post;
        let (bodies, entries) = encode(&[(1, &p)]);
        assert_eq!(bodies.len(), 1);
        assert!(compact::shared_name(&entries[0].value).is_some());
    }

    fn pack(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (f, v) in pairs {
            b.extend_from_slice(&(f.len() as u32).to_be_bytes());
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(f);
            b.extend_from_slice(v);
        }
        b
    }

    #[test]
    fn a_packed_page_splits_back_into_its_entries() {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b"\x01ab", b"\x00\x01xyz"), (b"", b"v"), (b"f", b"")];
        let b = pack(&pairs);
        assert_eq!(unpack(&b).unwrap(), pairs);
        assert!(unpack(&[]).unwrap().is_empty());
        // Cut anywhere inside: an error, never a wrong entry.
        for cut in 1..b.len() {
            if let Ok(got) = unpack(&b[..cut]) {
                assert!(pairs.starts_with(&got), "cut {cut}");
                assert!(
                    cut == 4 + 4 + 3 + 5 || cut == 4 + 4 + 3 + 5 + 9,
                    "cut {cut}"
                );
            }
        }
        let mut huge = b.clone();
        huge[0] = 0xff;
        assert!(unpack(&huge).is_err());
    }
}
