//! The notification feed: the list behind the bell icon.
//!
//! A user's feed is their entries hash (`h:{u:ID}:fd`, see
//! `entry_scripts.rs`): one entry per notification they were sent, live
//! or stored, aggregates and digests as they were sent, with a read flag
//! in each entry's first byte; the entries still waiting to be delivered
//! are the user's inbox (`inbox.rs`), the same entries, not a copy. An
//! aggregate replaces the entries of the notifications it counts (one item
//! per burst). Delivered entries are kept up to `feed_cap` (the oldest go
//! first, trimmed once the hash passes the cap by a tenth) and entries
//! older than `feed_retention` are neither listed nor counted, and are
//! removed when a page is read unless they still wait; the hash itself
//! lives [`Store::entries_life_s`] after it was made or last read (a page,
//! a hello).
//!
//! A write is one `HSETNX` per entry, pipelined: it never overwrites an
//! entry (the same notification parked meanwhile stays waiting); now and
//! then it also sets the hash's lifetime or reads its size (see
//! [`Store::feed_add`]). A page is one script call (plus one for shared
//! bodies it names).

use herald_types::{compact, Notification, UserId};

use crate::entry_scripts::{by_user, script, Call};
use crate::{ukey, Result, Store};

/// Every entry of `KEYS[1]` ordered after ARGV[1] (older delivered ones
/// are removed), and how many of those are unread; a read renews the
/// hash's lifetime (ARGV[2] s, 0: none).
const PAGE: &str = r#"
local life = tonumber(ARGV[2])
if life > 0 then redis.call('EXPIRE', KEYS[1], life) end
local all = redis.call('HGETALL', KEYS[1])
local since = tonumber(ARGV[1])
local out = {}
local old = {}
local unseen = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  if #v < 9 then
    -- the marker
  elseif order(v) > since then
    out[#out + 1] = all[i]
    out[#out + 1] = v
    if unread(v) then unseen = unseen + 1 end
  elseif not waiting(v) then
    old[#old + 1] = all[i]
  end
end
if #old > 0 then redis.call('HDEL', KEYS[1], unpack(old)) end
return {unseen, out}
"#;

/// Marks entries read (the fields in ARGV[4..], or every entry when ARGV[1]
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
local unseen = 0
local vals = redis.call('HVALS', KEYS[1])
for i = 1, #vals do
  local v = vals[i]
  if #v >= 9 and unread(v) and order(v) > since then
    unseen = unseen + 1
  end
end
return unseen
"#;

/// Writes aggregates (field, entry pairs after ARGV[1]) over their former
/// versions in `KEYS[1]` (unread again); one still waiting stays waiting
/// with its new content. Gives the hash its lifetime (ARGV[1] s, 0: none)
/// unless it has one.
const FEED_SET: &str = r#"
for i = 2, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and #v >= 9 and waiting(v) then
    redis.call('HSET', KEYS[1], ARGV[i], set_waiting(ARGV[i + 1], true))
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
live(KEYS[1], tonumber(ARGV[1]))
return 0
"#;

/// The script that writes aggregates over their former versions.
pub(crate) fn feed_set_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    script(&S, FEED_SET)
}

/// Trims the delivered entries of `KEYS[1]` to the newest ARGV[1].
const TRIM_DELIVERED: &str = r#"
drop_delivered(KEYS[1], tonumber(ARGV[1]))
return 0
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
    /// (bodies shared by many recipients first): one `HSETNX` per entry,
    /// which never overwrites an entry (a notification parked meanwhile
    /// stays waiting). A user's first write here (then hourly) also sets
    /// the hash's lifetime (`EXPIRE ... NX`), and every `feed_cap / 10`
    /// writes here read its size, to trim delivered entries past the cap
    /// by a tenth.
    pub async fn feed_add(&self, items: &[(UserId, &Notification)]) -> Result<()> {
        if items.is_empty() || self.cfg.feed_cap == 0 {
            return Ok(());
        }
        let (bodies, entries) = crate::entries::encode(items);
        self.write_bodies(&bodies).await?;
        let life = self.entries_life_s();
        let cap = self.cfg.feed_cap as u64;
        let check_every = (cap / 10).max(1) as u32;
        let mut p = crate::Batch::new();
        let mut sized = Vec::new();
        let mut grown: Vec<Call> = Vec::new();
        for g in by_user(items, entries) {
            let key = ukey(g.user, "fd");
            g.supersede(&mut p, &key);
            let mut aggregates: Option<Call> = None;
            for e in &g.entries {
                // An aggregate's id comes again as it grows: its newest
                // version replaces the entry (a script keeps it waiting).
                if compact::is_aggregate_field(&e.field) {
                    let c = aggregates.get_or_insert_with(|| {
                        let mut c = Call {
                            keys: vec![key.clone()],
                            args: Vec::new(),
                        };
                        c.arg(life);
                        c
                    });
                    c.args.push(e.field.clone());
                    c.args.push(e.value.clone());
                    continue;
                }
                p.cmd("HSETNX")
                    .arg(&key)
                    .arg(e.field.as_slice())
                    .arg(e.value.as_slice())
                    .ignore();
            }
            grown.extend(aggregates);
            let (expire, size) = self.recent[crate::entry_scripts::FEED].note(
                g.user,
                g.entries.len() as u32,
                check_every,
            );
            if expire && life > 0 {
                p.cmd("EXPIRE").arg(&key).arg(life).arg("NX").ignore();
            }
            if size {
                p.cmd("HLEN").arg(&key);
                sized.push(key);
            }
        }
        let sizes: Vec<u64> = match p.is_empty() {
            true => Vec::new(),
            false => self.run(&p).await?,
        };
        self.run_scripts::<i64>(feed_set_script(), &grown).await?;
        for (key, size) in sized.iter().zip(sizes) {
            // Past the cap by a tenth (the marker of older versions and
            // waiting entries count here; the script counts exactly).
            if size > cap + (cap / 10).max(1) {
                static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
                let mut inv = script(&S, TRIM_DELIVERED).prepare_invoke();
                inv.key(key).arg(cap);
                let _: u64 = self.invoke(&inv).await?;
            }
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
        // Feeds off: the hash holds only what waits, which is no feed.
        if self.cfg.feed_cap == 0 {
            return Ok(FeedPage::default());
        }
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let key = ukey(user, "fd");
        let mut inv = script(&S, PAGE).prepare_invoke();
        inv.key(&key)
            .arg(self.feed_since_us())
            .arg(self.entries_life_s());
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
        if self.cfg.feed_cap == 0 {
            return Ok(0);
        }
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let mut inv = script(&S, READ).prepare_invoke();
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
