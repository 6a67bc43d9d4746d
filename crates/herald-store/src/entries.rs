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
pub(crate) fn encode(items: &[(UserId, &Notification)]) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<Encoded>) {
    let mut out = Vec::with_capacity(items.len());
    // Per field: the body, how many entries of this push carry it, and
    // whether it is already queued for writing.
    let mut bodies: HashMap<Vec<u8>, (Vec<u8>, usize, bool)> = HashMap::new();
    let mut parts = Vec::with_capacity(items.len());
    for (user, n) in items {
        let field = compact::field(&n.id, *user);
        // Only fields without the recipient in them name a shareable body.
        let shareable = matches!(field.first(), Some(1 | 2));
        let body = shareable.then(|| compact::body(n, &field, *user));
        if let Some(b) = &body {
            let e = bodies
                .entry(field.clone())
                .or_insert_with(|| (b.clone(), 0, false));
            if &e.0 == b {
                e.1 += 1;
            }
        }
        parts.push((*user, n, field, body));
    }
    let mut shared = Vec::new();
    for (user, n, field, body) in parts {
        let slot = body.as_ref().and_then(|b| {
            bodies
                .get_mut(&field)
                .filter(|(sb, count, _)| (*count >= SHARE_MIN || n.kind.to_followers()) && sb == b)
        });
        let value = match slot {
            Some((b, _, written)) => {
                if !*written {
                    shared.push((field.clone(), b.clone()));
                    *written = true;
                }
                compact::shared_entry(n.order, &field)
            }
            None => compact::entry(n, user),
        };
        out.push(Encoded { user, field, value });
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
        raw: Vec<(Vec<u8>, Vec<u8>)>,
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
        for (f, v) in &raw {
            let body = match compact::shared_name(v) {
                Some(name) => match bodies.get(name) {
                    Some(b) => Some(b.as_slice()),
                    None => {
                        orphans.push(f.clone());
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
}
