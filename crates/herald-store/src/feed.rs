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
//! A write is one script call per user in a batch (`FEED_ADD`, pipelined
//! with the batch's other users): it never overwrites an entry (the same
//! notification parked meanwhile stays waiting), makes the hash and its
//! lifetime when new, and trims. A page is one script call (plus one for
//! shared bodies it names).

use foldhash::HashMap;

use herald_types::{compact, Notification, UserId};

use crate::entry_scripts::{script, Call};
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

/// Adds delivered entries to `KEYS[1]` without overwriting any (an entry
/// already there, waiting or read, stays as it is); first removes the
/// ARGV[3] fields after it (what an aggregate supersedes). ARGV[1]: the
/// hash's lifetime when this makes it (s, 0: none); ARGV[2]: `feed_cap`;
/// then field, entry pairs.
const FEED_ADD: &str = r#"
made(KEYS[1], tonumber(ARGV[1]))
local gone = tonumber(ARGV[3])
for i = 4, 3 + gone do redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 4 + gone, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
trim_delivered(KEYS[1], tonumber(ARGV[2]))
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

/// The feed writer's script.
pub(crate) fn feed_add_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    script(&S, FEED_ADD)
}

impl Store {
    /// Orders older than this are out of the feed's retention.
    pub(crate) fn feed_since_us(&self) -> i64 {
        let now = herald_types::now_us() as i64;
        now - self.cfg.feed_retention.as_micros() as i64
    }

    /// Writes notifications to their recipients' feeds: one script call
    /// per recipient, in one pipeline (bodies shared by many recipients
    /// first). Entries already there are left as they are.
    pub async fn feed_add(&self, items: &[(UserId, &Notification)]) -> Result<()> {
        if items.is_empty() || self.cfg.feed_cap == 0 {
            return Ok(());
        }
        let (bodies, entries) = crate::entries::encode(items);
        self.write_bodies(&bodies).await?;
        let calls = self.entry_calls(items, entries, &[], |c| {
            c.arg(self.entries_life_s()).arg(self.cfg.feed_cap);
        });
        self.run_scripts::<i64>(feed_add_script(), &calls).await?;
        Ok(())
    }

    /// One script call per user of `items` (in order of appearance): its
    /// entries hash and its keys named `also`, the arguments `head` writes,
    /// the count and fields of the entries its aggregates supersede, then
    /// its (field, entry) pairs.
    pub(crate) fn entry_calls(
        &self,
        items: &[(UserId, &Notification)],
        entries: Vec<crate::entries::Encoded>,
        also: &[&str],
        head: impl Fn(&mut Call),
    ) -> Vec<Call> {
        let mut at: HashMap<UserId, usize> = HashMap::default();
        let mut gone: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut pairs: Vec<Vec<crate::entries::Encoded>> = Vec::new();
        let mut users: Vec<UserId> = Vec::new();
        for (user, n) in items {
            let i = *at.entry(*user).or_insert_with(|| {
                users.push(*user);
                gone.push(Vec::new());
                pairs.push(Vec::new());
                users.len() - 1
            });
            if let Some(old) = &n.supersedes {
                gone[i].extend(old.iter().map(|id| compact::field(id, *user)));
            }
        }
        for e in entries {
            if let Some(&i) = at.get(&e.user) {
                pairs[i].push(e);
            }
        }
        users
            .into_iter()
            .zip(gone.into_iter().zip(pairs))
            .map(|(user, (gone, pairs))| {
                let mut keys = vec![ukey(user, "fd")];
                keys.extend(also.iter().map(|k| ukey(user, k)));
                let mut c = Call {
                    keys,
                    args: Vec::with_capacity(4 + gone.len() + 2 * pairs.len()),
                };
                head(&mut c);
                c.arg(gone.len());
                for f in gone {
                    c.args.push(f);
                }
                for e in pairs {
                    c.args.push(e.field);
                    c.args.push(e.value);
                }
                c
            })
            .collect()
    }

    /// A page of `user`'s feed, newest first, strictly before `before`.
    pub async fn feed_page(
        &self,
        user: UserId,
        before: Option<FeedCursor>,
        limit: usize,
    ) -> Result<FeedPage> {
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
