//! Inbox queues: what waits for a user who is offline (or has not acked).
//!
//! One hash per user (`h:{u:ID}:ib`): the compact field of each
//! notification id -> its compact entry ([`herald_types::compact`]), whose
//! first bytes hold the order key, so scripts sort and trim without
//! decoding. Writes are idempotent (the same notification written twice
//! stays one entry). Past `inbox_cap` the oldest entries are dropped and
//! counted for the user's next `hello`. Small inboxes stay in Redis'
//! listpack encoding: about 70 bytes per waiting comment.

use herald_types::{compact, Notification, UserId};

use crate::{ukey, Result, Store, StoreError};

/// Entries of `KEYS[1]`: all of them, unsorted, when
/// there are at most `ARGV[1]`, else the oldest `ARGV[1]` (sorted), with
/// the hash's size; the entries come as one MessagePack array
/// ([`crate::entries::unpack`]). When ARGV[2] is 1 (a hello): also the dropped count of `KEYS[2]` (reset), the
/// idle lifetime restarted (ARGV[3] s), and the unread count of the feed
/// `KEYS[3]` within its retention (entries ordered after ARGV[4]), whose
/// lifetime (ARGV[5] s) starts again.
const SNAPSHOT: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local rows = {}
for i = 1, #all, 2 do
  rows[#rows + 1] = {struct.unpack('>I8', all[i + 1], 2), i}
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
local unread = 0
if ARGV[2] == '1' then
  dropped = tonumber(redis.call('GET', KEYS[2]) or '0')
  if dropped > 0 then redis.call('DEL', KEYS[2]) end
  -- The user is here: the inbox lives its idle lifetime from now.
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
  local feed = redis.call('HVALS', KEYS[3])
  if #feed > 0 then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5])) end
  local since = tonumber(ARGV[4])
  for i = 1, #feed do
    local v = feed[i]
    if #v >= 9 and bit.band(string.byte(v, 1), 32) == 0
       and struct.unpack('>I8', v, 2) > since then
      unread = unread + 1
    end
  end
end
-- The page as one MessagePack string (see `entries::unpack`): one reply
-- to encode and parse instead of two per entry.
return {#all / 2, cmsgpack.pack(out), dropped, unread}
"#;

/// Drops the oldest entries of `KEYS[1]` until ARGV[1] remain; counts
/// them in `KEYS[2]` (for the next hello) with a lifetime of ARGV[2] s.
const TRIM: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local excess = #all / 2 - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local rows = {}
for i = 1, #all, 2 do
  rows[#rows + 1] = {struct.unpack('>I8', all[i + 1], 2), all[i]}
end
table.sort(rows, function(a, b) return a[1] < b[1] end)
for k = 1, excess do redis.call('HDEL', KEYS[1], rows[k][2]) end
redis.call('INCRBY', KEYS[2], excess)
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return excess
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

fn script(cell: &'static std::sync::OnceLock<redis::Script>, src: &str) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(src))
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
        let (bodies, entries) = crate::entries::encode(items);
        self.write_bodies(&bodies).await?;
        let mut p = crate::Batch::new();
        let mut seen = std::collections::HashSet::new();
        let mut users: Vec<UserId> = Vec::new();
        for e in &entries {
            let k = ukey(e.user, "ib");
            p.cmd("HSET")
                .arg(&k)
                .arg(e.field.as_slice())
                .arg(e.value.as_slice())
                .ignore();
            if seen.insert(e.user) {
                users.push(e.user);
            }
        }
        for u in &users {
            let k = ukey(*u, "ib");
            p.cmd("HLEN").arg(&k);
            // An inbox lives its idle lifetime from its first entry, or
            // from its user's last connection (refreshed at hello): a user
            // who never comes back does not keep memory forever.
            if let Some(ttl) = self.cfg.inbox_idle_ttl {
                p.cmd("EXPIRE")
                    .arg(&k)
                    .arg(ttl.as_secs().max(1))
                    .arg("NX")
                    .ignore();
            }
        }
        let sizes: Vec<u64> = self.run(&p).await?;
        let cap = self.cfg.inbox_cap as u64;
        let mut dropped = 0;
        for (u, size) in users.iter().zip(sizes) {
            if size > cap {
                dropped += self.inbox_trim(*u).await?;
            }
        }
        if self.cfg.wait_replicas > 0 {
            let keys: Vec<String> = users.iter().map(|u| ukey(*u, "ib").to_string()).collect();
            self.confirm_replicated(&keys).await?;
        }
        Ok(dropped)
    }

    pub(crate) async fn inbox_trim(&self, user: UserId) -> Result<u64> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let mut inv = script(&S, TRIM).prepare_invoke();
        inv.key(ukey(user, "ib"))
            .key(ukey(user, "ib:dropped"))
            .arg(self.cfg.inbox_cap)
            .arg(self.cfg.inbox_idle_ttl.map_or(0, |t| t.as_secs().max(1)));
        let n: u64 = self.invoke(&inv).await?;
        if n > 0 {
            tracing::debug!(user, dropped = n, "inbox over cap, dropped oldest");
        }
        Ok(n)
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
        let key = ukey(user, "ib");
        let mut inv = script(&S, SNAPSHOT).prepare_invoke();
        inv.key(&key)
            .key(ukey(user, "ib:dropped"))
            .key(ukey(user, "fd"))
            .arg(limit.max(1))
            .arg(if hello { "1" } else { "0" })
            .arg(self.cfg.inbox_idle_ttl.map_or(0, |t| t.as_secs().max(1)))
            .arg(self.feed_since_us())
            .arg(self.cfg.feed_retention.as_secs().max(1));
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

    /// Removes acknowledged notifications from users' inboxes (one
    /// pipeline for them all).
    pub async fn inbox_remove_many(&self, acked: &[(UserId, Vec<String>)]) -> Result<()> {
        if acked.iter().all(|(_, ids)| ids.is_empty()) {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        for (user, ids) in acked.iter().filter(|(_, ids)| !ids.is_empty()) {
            p.cmd("HDEL").arg(ukey(*user, "ib"));
            for id in ids {
                p.arg(compact::field(id, *user));
            }
            p.ignore();
        }
        self.run::<()>(&p).await
    }
}
