//! The notification feed: the list behind the bell icon.
//!
//! One hash per user (`h:{u:ID}:fd`) of compact entries like the inbox's,
//! with a read flag in each entry's first byte. Every notification a user
//! is sent (live or stored, aggregates and digests as they were sent) is
//! written here at fan-out; an aggregate that grows overwrites its entry
//! (unread again). The hash holds at most `feed_cap` entries (the oldest go
//! first, trimmed once it passes the cap by a tenth) and entries older than
//! `feed_retention` are neither listed nor counted, and are removed when a
//! page is read; the key itself expires `feed_retention` after it was
//! created or last read (a page, a hello) or trimmed, whichever is latest.
//!
//! A write is one `HSET`. The first of a batch for a user also sets an
//! empty marker field (`""`, never a notification's field): `HSET`
//! answers how many fields were new, so 2 (marker and entry) means this
//! write created the hash, which then gets its lifetime (one `EXPIRE` per
//! feed, not per write). The size is read (`HLEN`) on about one write in
//! `feed_cap / 10`, so the hash passes the cap by about a tenth, rarely
//! more, before the oldest go. Scripts skip the marker (every entry is at
//! least 9 bytes; the marker's value is empty). A page is one script call
//! (plus one for shared bodies it names).

use foldhash::HashMap;
use std::sync::atomic::Ordering;

use herald_types::{compact, Notification, UserId};

use crate::{ukey, Result, Store};

/// The field that marks a feed as made (empty: no notification's field is).
const MARKER: &[u8] = b"";

/// Every entry of `KEYS[1]` ordered after ARGV[1] (older ones are
/// removed), and how many of those are unread; a read renews the feed's
/// lifetime (ARGV[2] s).
const PAGE: &str = r#"
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
local all = redis.call('HGETALL', KEYS[1])
local since = tonumber(ARGV[1])
local out = {}
local old = {}
local unread = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  if #v < 9 then
    -- the marker
  elseif struct.unpack('>I8', v, 2) > since then
    out[#out + 1] = all[i]
    out[#out + 1] = v
    if bit.band(string.byte(v, 1), 32) == 0 then unread = unread + 1 end
  else
    old[#old + 1] = all[i]
  end
end
if #old > 0 then redis.call('HDEL', KEYS[1], unpack(old)) end
return {unread, out}
"#;

/// Marks entries read (the fields in ARGV[2..], or every entry when ARGV[1]
/// is 1); returns the unread count of entries ordered after ARGV[3].
const READ: &str = r#"
if ARGV[1] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local v = all[i + 1]
    local f = string.byte(v, 1)
    if #v >= 9 and bit.band(f, 32) == 0 then
      redis.call('HSET', KEYS[1], all[i], string.char(bit.bor(f, 32)) .. string.sub(v, 2))
    end
  end
else
  for i = 4, #ARGV do
    local v = redis.call('HGET', KEYS[1], ARGV[i])
    if v and #v >= 9 then
      local f = string.byte(v, 1)
      if bit.band(f, 32) == 0 then
        redis.call('HSET', KEYS[1], ARGV[i], string.char(bit.bor(f, 32)) .. string.sub(v, 2))
      end
    end
  end
end
local since = tonumber(ARGV[3])
local unread = 0
local vals = redis.call('HVALS', KEYS[1])
for i = 1, #vals do
  local v = vals[i]
  if #v >= 9 and bit.band(string.byte(v, 1), 32) == 0 and struct.unpack('>I8', v, 2) > since then
    unread = unread + 1
  end
end
return unread
"#;

/// Drops the oldest entries of `KEYS[1]` until ARGV[1] remain; renews
/// its lifetime (ARGV[2] s).
const TRIM: &str = r#"
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
local all = redis.call('HGETALL', KEYS[1])
local rows = {}
for i = 1, #all, 2 do
  if #all[i + 1] >= 9 then
    rows[#rows + 1] = {struct.unpack('>I8', all[i + 1], 2), all[i]}
  end
end
local excess = #rows - tonumber(ARGV[1])
if excess <= 0 then return 0 end
table.sort(rows, function(a, b) return a[1] < b[1] end)
for k = 1, excess do redis.call('HDEL', KEYS[1], rows[k][2]) end
return excess
"#;

/// Where a page starts: strictly before this entry (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub order: u64,
    /// Ties on order are broken by the notification id's field.
    pub tie: u64,
}

impl FeedCursor {
    /// The position of `n` in a feed.
    pub fn of(n: &Notification) -> FeedCursor {
        FeedCursor {
            order: n.order,
            tie: tie(&n.id),
        }
    }

    /// The cursor's text form (opaque to clients).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.order, self.tie)
    }

    pub fn parse(s: &str) -> Option<FeedCursor> {
        let (o, t) = s.split_once('.')?;
        Some(FeedCursor {
            order: herald_types::ids::parse_user(o)?,
            tie: herald_types::ids::parse_user(t)?,
        })
    }
}

/// One page of a feed.
#[derive(Debug, Default)]
pub struct FeedPage {
    /// Newest first, each with its read state.
    pub items: Vec<(Notification, bool)>,
    /// Unread entries in the whole feed.
    pub unread: u64,
    /// Where the next page starts, when there is one.
    pub next: Option<FeedCursor>,
}

fn tie(id: &str) -> u64 {
    herald_types::ids::fnv1a64(id.as_bytes())
}

impl Store {
    /// Orders older than this are out of the feed's retention.
    pub(crate) fn feed_since_us(&self) -> i64 {
        let now = herald_types::now_us() as i64;
        now - self.cfg.feed_retention.as_micros() as i64
    }

    /// Writes notifications to their recipients' feeds in one pipeline
    /// (bodies shared by many recipients first).
    pub async fn feed_add(&self, items: &[(UserId, &Notification)]) -> Result<()> {
        if items.is_empty() || self.cfg.feed_cap == 0 {
            return Ok(());
        }
        let (bodies, entries) = crate::entries::encode(items);
        self.write_bodies(&bodies).await?;
        let ttl = self.cfg.feed_retention.as_secs().max(1);
        let cap = self.cfg.feed_cap as u64;
        let check_every = (cap / 10).max(1);
        let mut p = crate::Batch::new();
        // Per user (in order of appearance): its key, the answer of its
        // first write (the one with the marker), whether its size is read.
        let mut seen: HashMap<UserId, usize> = HashMap::default();
        let mut users: Vec<(crate::key::Key, usize, bool)> = Vec::new();
        for (k, e) in entries.iter().enumerate() {
            match seen.get(&e.user) {
                Some(&i) => {
                    p.cmd("HSET")
                        .arg(&users[i].0)
                        .arg(e.field.as_slice())
                        .arg(e.value.as_slice());
                }
                None => {
                    let key = ukey(e.user, "fd");
                    p.cmd("HSET")
                        .arg(&key)
                        .arg(MARKER)
                        .arg(MARKER)
                        .arg(e.field.as_slice())
                        .arg(e.value.as_slice());
                    let n = self.feed_writes.fetch_add(1, Ordering::Relaxed);
                    seen.insert(e.user, users.len());
                    users.push((key, k, n.is_multiple_of(check_every)));
                }
            }
        }
        // An aggregate replaces the entries of the notifications it counts
        // that went out on their own: one item in the feed, not three.
        for (user, n) in items {
            let Some(old) = &n.supersedes else { continue };
            if old.is_empty() {
                continue;
            }
            let key = match seen.get(user) {
                Some(&i) => users[i].0.clone(),
                None => ukey(*user, "fd"),
            };
            let c = p.cmd("HDEL").arg(&key);
            for id in old.iter() {
                c.arg(compact::field(id, *user));
            }
            c.ignore();
        }
        for (key, _, sized) in &users {
            if *sized {
                p.cmd("HLEN").arg(key);
            }
        }
        let answers: Vec<u64> = self.run(&p).await?;
        let (written, mut sizes) = {
            let (w, s) = answers.split_at(entries.len().min(answers.len()));
            (w, s.iter())
        };
        let mut fresh = crate::Batch::new();
        for (key, first, sized) in &users {
            // The marker and the entry both new: this write made the feed,
            // which starts its lifetime now (reads and trims renew it).
            if written.get(*first) == Some(&2) {
                fresh.cmd("EXPIRE").arg(key).arg(ttl).ignore();
            }
            let size = match sized {
                true => sizes.next().map_or(0, |n| n.saturating_sub(1)),
                false => 0,
            };
            // Trimmed past a tenth over the cap: one scan per tenth of
            // the cap's writes, not one per write.
            if size > cap + (cap / 10).max(1) {
                static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
                let script = S.get_or_init(|| redis::Script::new(TRIM));
                let mut inv = script.prepare_invoke();
                inv.key(key).arg(cap).arg(ttl);
                let _: u64 = self.invoke(&inv).await?;
            }
        }
        if !fresh.is_empty() {
            self.run::<()>(&fresh).await?;
        }
        Ok(())
    }

    /// A page of `user`'s feed, newest first, strictly before `before`.
    pub async fn feed_page(
        &self,
        user: UserId,
        before: Option<FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(PAGE));
        let key = ukey(user, "fd");
        let mut inv = script.prepare_invoke();
        inv.key(&key)
            .arg(self.feed_since_us())
            .arg(self.cfg.feed_retention.as_secs().max(1));
        let (unread, raw): (u64, crate::entries::Pairs) = self.invoke(&inv).await?;
        // Sorted and cut before decoding: only the page's entries are
        // decoded (and their shared bodies read).
        let mut rows: Vec<(FeedCursor, Vec<u8>, Vec<u8>)> = raw
            .into_iter()
            .filter_map(|(f, v)| {
                let order = compact::order_of(&v)?;
                let id = compact::id_from_field(&f, user)?;
                Some((
                    FeedCursor {
                        order,
                        tie: tie(&id),
                    },
                    f,
                    v,
                ))
            })
            .filter(|(c, ..)| before.is_none_or(|b| (c.order, c.tie) < (b.order, b.tie)))
            .collect();
        rows.sort_unstable_by_key(|r| std::cmp::Reverse((r.0.order, r.0.tie)));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(|r| r.0) } else { None };
        let raw: Vec<(Vec<u8>, Vec<u8>)> = rows.into_iter().map(|(_, f, v)| (f, v)).collect();
        let (items, orphans) = self
            .decode_entries(user, &key, &crate::entries::borrow(&raw))
            .await?;
        self.hdel(&key, &orphans).await?;
        Ok(FeedPage {
            items,
            unread,
            next,
        })
    }

    /// Unread entries of `user`'s feed.
    pub async fn feed_unread(&self, user: UserId) -> Result<u64> {
        self.feed_read(user, &[], false).await
    }

    /// Marks `ids` (or everything, with `all`) read in `user`'s feed;
    /// returns the unread count after. Unknown ids are ignored.
    pub async fn feed_read(&self, user: UserId, ids: &[String], all: bool) -> Result<u64> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(READ));
        let mut inv = script.prepare_invoke();
        inv.key(ukey(user, "fd"))
            .arg(if all { "1" } else { "0" })
            .arg("")
            .arg(self.feed_since_us());
        for id in ids {
            inv.arg(compact::field(id, user));
        }
        self.invoke(&inv).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = FeedCursor {
            order: 1_790_000_000_000_000,
            tie: u64::MAX,
        };
        assert_eq!(FeedCursor::parse(&c.encode()), Some(c));
        for bad in ["", "1", "1.", ".1", "01.1", "1.-1", "x.y", "1.2.3"] {
            assert_eq!(FeedCursor::parse(bad), None, "{bad}");
        }
    }
}
