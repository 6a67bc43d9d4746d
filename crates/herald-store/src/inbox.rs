//! Inbox queues: what waits for a user who is offline (or has not acked).
//!
//! A user's inbox is the entries of their entries hash (`h:{u:ID}:fd`,
//! shared with the feed: see `entry_scripts.rs`) marked waiting
//! ([`herald_types::compact::WAITING`]): one stored entry per
//! notification, not a copy. Parking writes the entry waiting (a delivered
//! copy of the same notification becomes waiting again); an ack clears
//! the mark (the entry stays in the feed; with the feed off it goes). A
//! park is one `HSET` per user, pipelined; a user's first park on this
//! node (then hourly) adds `EXPIRE ... NX` (every park, with the feed
//! off), and every `inbox_cap / 10` parks here an `HLEN`: an inbox passes
//! its cap by up to a tenth before a script makes the oldest stop waiting.
//! Writes are idempotent. Past `inbox_cap` waiting entries the oldest are
//! dropped and counted for the user's next `hello`. Entries of the former
//! inbox hash (`h:{u:ID}:ib`, before one entry per notification) are moved
//! into the entries hash, waiting, the first time the inbox is read.

use herald_types::{compact, Notification, UserId};

use crate::entry_scripts::{by_user, script, Call};
use crate::{ukey, Result, Store, StoreError};

/// The waiting entries of `KEYS[1]`: all of them, unsorted, when there are
/// at most `ARGV[1]`, else the oldest `ARGV[1]` (sorted), with how many
/// wait; the entries come as one MessagePack array
/// ([`crate::entries::unpack`]). Entries of the former inbox hash
/// `KEYS[3]` are moved in first (waiting; an entry already there keeps
/// its read flag). When ARGV[2] is 1 (a hello): also the dropped count of
/// `KEYS[2]` (reset), the hash's lifetime restarted (ARGV[3] s, 0: none),
/// and, when ARGV[5] is 1 (the feed is on), the unread count of entries
/// ordered after ARGV[4] (within the feed's retention).
const SNAPSHOT: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 then
  local old = redis.call('HGETALL', KEYS[3])
  for i = 1, #old, 2 do
    local v = redis.call('HGET', KEYS[1], old[i]) or old[i + 1]
    if #v >= 9 then redis.call('HSET', KEYS[1], old[i], set_waiting(v, true)) end
  end
  live(KEYS[1], tonumber(ARGV[3]))
  redis.call('DEL', KEYS[3])
end
local all = redis.call('HGETALL', KEYS[1])
local hello = ARGV[2] == '1'
local count = hello and ARGV[5] == '1'
local since = tonumber(ARGV[4])
local rows = {}
local unseen = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  if #v >= 9 then
    local o = order(v)
    if waiting(v) then rows[#rows + 1] = {o, i} end
    if count and unread(v) and o > since then unseen = unseen + 1 end
  end
end
-- Only a page smaller than what waits needs the order here; otherwise
-- the caller sorts (cheaper than Lua's comparator calls).
local limit = tonumber(ARGV[1])
if #rows > limit then
  table.sort(rows, function(a, b) return a[1] < b[1] end)
end
local out = {}
for k = 1, math.min(limit, #rows) do
  local i = rows[k][2]
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
end
local dropped = 0
if hello then
  dropped = tonumber(redis.call('GET', KEYS[2]) or '0')
  if dropped > 0 then redis.call('DEL', KEYS[2]) end
  -- The user is here: the hash lives its lifetime from now.
  local life = tonumber(ARGV[3])
  if life > 0 and #all > 0 then redis.call('EXPIRE', KEYS[1], life) end
end
-- The page as one MessagePack string (see `entries::unpack`): one reply
-- to encode and parse instead of two per entry.
return {#rows, cmsgpack.pack(out), dropped, unseen}
"#;

/// Past ARGV[1] waiting entries in `KEYS[1]`, the oldest stop waiting
/// (see `cap_waiting`: ARGV[2] the dropped count's lifetime, ARGV[3]
/// `feed_cap`), counted in `KEYS[2]`; returns how many.
const TRIM_WAITING: &str = r#"
return cap_waiting(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
"#;

/// Entries of `KEYS[1]` a client acked (fields ARGV[3..]) are delivered:
/// their waiting mark is cleared (ARGV[1] = 1: the feed keeps them,
/// trimmed past `feed_cap` ARGV[2]) or they are removed (the feed is off).
const ACKED: &str = r#"
local keep = ARGV[1] == '1'
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and #v >= 9 and waiting(v) then
    if keep then
      redis.call('HSET', KEYS[1], ARGV[i], set_waiting(v, false))
    else
      redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
if keep then trim_delivered(KEYS[1], tonumber(ARGV[2])) end
return 0
"#;

/// What a connection reads when it opens.
#[derive(Debug, Default)]
pub struct InboxSnapshot {
    /// Entries waiting.
    pub pending: u64,
    /// The oldest of them.
    pub items: Vec<Notification>,
    /// Entries the cap dropped since the last snapshot that asked.
    pub dropped: u64,
    /// Unread entries of the user's feed (asked with a hello only).
    pub unread: u64,
}

/// The script that marks acked entries delivered.
pub(crate) fn acked_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    script(&S, ACKED)
}

impl Store {
    /// Writes notifications to their recipients' inboxes in one pipeline
    /// (bodies shared by many recipients first, and one script call per
    /// inbox past its cap). Returns how many entries the cap dropped.
    pub async fn inbox_push(&self, items: &[(UserId, &Notification)]) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        // With wait_replicas, over the inbox connection: its WAIT then
        // covers exactly these writes and blocks nothing else.
        match self.inbox_side() {
            Some(side) => side.inbox_push_here(items).await,
            None => self.inbox_push_here(items).await,
        }
    }

    async fn inbox_push_here(&self, items: &[(UserId, &Notification)]) -> Result<u64> {
        let (bodies, mut entries) = crate::entries::encode(items);
        self.write_bodies(&bodies).await?;
        for e in &mut entries {
            compact::set_waiting(&mut e.value);
        }
        let life = self.entries_life_s();
        let cap = self.cfg.inbox_cap as u64;
        let check_every = (cap / 10).max(1) as u32;
        let groups = by_user(items, entries);
        let mut p = crate::Batch::new();
        let mut sized = Vec::new();
        for g in &groups {
            let key = ukey(g.user, "fd");
            g.supersede(&mut p, &key);
            // Waiting wins over a delivered copy of the same notification.
            p.cmd("HSET").arg(&key);
            for e in &g.entries {
                p.arg(e.field.as_slice()).arg(e.value.as_slice());
            }
            p.ignore();
            // With the feed off, acks remove entries and may empty (so
            // delete) the hash: every park sets the lifetime then.
            let (expire, size) = self.recent[crate::entry_scripts::PARK].note(
                g.user,
                g.entries.len() as u32,
                check_every,
            );
            if life > 0 && (expire || self.cfg.feed_cap == 0) {
                p.cmd("EXPIRE").arg(&key).arg(life).arg("NX").ignore();
            }
            if size {
                p.cmd("HLEN").arg(&key);
                sized.push(g.user);
            }
        }
        let sizes: Vec<u64> = self.run(&p).await?;
        let mut dropped = 0;
        for (user, size) in sized.into_iter().zip(sizes) {
            // The size counts delivered entries too: the script counts
            // the waiting ones.
            if size > cap {
                static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
                let mut inv = script(&S, TRIM_WAITING).prepare_invoke();
                inv.key(ukey(user, "fd"))
                    .key(ukey(user, "ib:dropped"))
                    .arg(self.cfg.inbox_cap)
                    .arg(self.dropped_life_s())
                    .arg(self.cfg.feed_cap);
                let n: u64 = self.invoke(&inv).await?;
                if n > 0 {
                    tracing::debug!(user, dropped = n, "inbox over cap, dropped oldest");
                }
                dropped += n;
            }
        }
        if self.cfg.wait_replicas > 0 {
            let keys: Vec<String> = groups
                .iter()
                .map(|g| ukey(g.user, "fd").to_string())
                .collect();
            self.confirm_replicated(&keys).await?;
        }
        Ok(dropped)
    }

    /// How many notifications wait for `user`, and the oldest `limit` of
    /// them, in one round trip (what a connection needs to say hello and
    /// drain); with `hello`, also how many the cap dropped since the last
    /// such call (and the count starts again) and the feed's unread count.
    /// Entries naming shared bodies cost one more round trip.
    pub async fn inbox_snapshot(
        &self,
        user: UserId,
        limit: usize,
        hello: bool,
    ) -> Result<InboxSnapshot> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let key = ukey(user, "fd");
        let mut inv = script(&S, SNAPSHOT).prepare_invoke();
        inv.key(&key)
            .key(ukey(user, "ib:dropped"))
            .key(ukey(user, "ib"))
            .arg(limit.max(1))
            .arg(if hello { "1" } else { "0" })
            .arg(self.entries_life_s())
            .arg(self.feed_since_us())
            .arg(if self.cfg.feed_cap > 0 { "1" } else { "0" });
        let (pending, packed, dropped, unread): (u64, Vec<u8>, u64, u64) =
            self.invoke(&inv).await?;
        let raw = crate::entries::unpack(&packed).map_err(|reason| StoreError::Corrupt {
            key: key.to_string(),
            reason,
        })?;
        let (items, orphans) = self.decode_entries(user, &key, &raw).await?;
        let mut pending = pending;
        if !orphans.is_empty() {
            // Their shared body expired (the entries outlived it): gone.
            tracing::warn!(
                user,
                entries = orphans.len(),
                "inbox entries lost their shared body"
            );
            pending = pending.saturating_sub(orphans.len() as u64);
            self.hdel(&key, &orphans).await?;
        }
        let mut items: Vec<Notification> = items.into_iter().map(|(n, _)| n).collect();
        // The script sorts only a page it had to cut.
        items.sort_by_key(|n| n.order);
        Ok(InboxSnapshot {
            pending,
            items,
            dropped,
            unread,
        })
    }

    pub(crate) async fn hdel(&self, key: &str, fields: &[Vec<u8>]) -> Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        let mut h = redis::cmd("HDEL");
        h.arg(key);
        for f in fields {
            h.arg(f.as_slice());
        }
        p.add_command(h).ignore();
        self.run::<()>(&p).await
    }

    /// Entries clients acked are delivered: out of their users' inboxes
    /// (kept in the feed, or removed when it is off); one script call per
    /// user, in one pipeline.
    pub async fn inbox_remove_many(&self, acked: &[(UserId, Vec<String>)]) -> Result<()> {
        let keep = if self.cfg.feed_cap > 0 { "1" } else { "0" };
        let calls: Vec<Call> = acked
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(user, ids)| {
                let mut c = Call {
                    keys: vec![ukey(*user, "fd")],
                    args: Vec::with_capacity(2 + ids.len()),
                };
                c.arg(keep).arg(self.cfg.feed_cap);
                for id in ids {
                    c.args.push(compact::field(id, *user));
                }
                c
            })
            .collect();
        self.run_scripts::<i64>(acked_script(), &calls).await?;
        Ok(())
    }
}
