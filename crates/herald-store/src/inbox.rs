//! Inbox queues: what waits for a user who is offline (or has not acked).
//!
//! A sorted set of notification ids scored by acceptance time keeps the
//! order (oldest first) and makes writes idempotent: the same notification
//! written twice (a re-processed record) stays one entry. The payloads sit
//! in a hash beside it. Past `inbox_cap` the oldest entries are dropped.

use herald_types::{Notification, UserId};

use crate::{ukey, Result, Store, StoreError};

/// Size and oldest entries of an inbox, and (when ARGV[2] is 1) how many
/// entries the cap dropped since the last time this was asked, in one
/// round trip.
const SNAPSHOT: &str = r#"
local total = redis.call('ZCARD', KEYS[1])
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local vals = {}
local orphans = {}
local i = 1
while i <= #ids do
  local j = math.min(i + 499, #ids)
  local part = redis.call('HMGET', KEYS[2], unpack(ids, i, j))
  for k = 1, #part do
    if part[k] then
      vals[#vals + 1] = part[k]
    else
      orphans[#orphans + 1] = ids[i + k - 1]
    end
  end
  i = j + 1
end
-- Ids whose payload is gone (the two keys' lifetimes differed): removed.
if #orphans > 0 then
  redis.call('ZREM', KEYS[1], unpack(orphans))
  total = total - #orphans
end
local dropped = 0
if ARGV[2] == '1' then
  dropped = tonumber(redis.call('GET', KEYS[3]) or '0')
  if dropped > 0 then redis.call('DEL', KEYS[3]) end
  -- The user is here: the inbox lives its idle lifetime from now.
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
return {total, vals, dropped}
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
}

fn decode(user: UserId, id: &str, bytes: &[u8]) -> Result<Notification> {
    Notification::from_storage(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("{}#{id}", ukey(user, "inbox:data")),
        reason: e.to_string(),
    })
}

impl Store {
    /// Writes notifications to their recipients' inboxes in one pipeline
    /// (plus one more to trim inboxes past the cap). Returns how many
    /// entries were dropped by the cap.
    pub async fn inbox_push(&self, items: &[(UserId, &Notification)]) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut p = crate::Batch::new();
        for (user, n) in items {
            let z = ukey(*user, "inbox");
            p.cmd("HSET")
                .arg(ukey(*user, "inbox:data"))
                .arg(&n.id)
                .arg(n.to_storage())
                .ignore();
            p.cmd("ZADD")
                .arg(&z)
                .arg("NX")
                .arg(n.order)
                .arg(&n.id)
                .ignore();
            p.cmd("ZCARD").arg(&z);
        }
        // An inbox lives its idle lifetime from its first entry, or from
        // its user's last connection (refreshed at hello): a user who
        // never comes back does not keep memory forever.
        if let Some(ttl) = self.cfg.inbox_idle_ttl {
            let mut seen: Vec<UserId> = Vec::new();
            for (user, _) in items {
                if seen.contains(user) {
                    continue;
                }
                seen.push(*user);
                for k in ["inbox", "inbox:data"] {
                    p.cmd("EXPIRE")
                        .arg(ukey(*user, k))
                        .arg(ttl.as_secs().max(1))
                        .arg("NX")
                        .ignore();
                }
            }
        }
        let sizes: Vec<u64> = self.run(&p).await?;
        let cap = self.cfg.inbox_cap as u64;
        let mut over: Vec<(UserId, u64)> = Vec::new();
        for ((user, _), size) in items.iter().zip(sizes) {
            if size > cap {
                match over.iter_mut().find(|(u, _)| u == user) {
                    Some(e) => e.1 = e.1.max(size - cap),
                    None => over.push((*user, size - cap)),
                }
            }
        }
        let mut dropped = 0;
        for (user, excess) in over {
            dropped += self.inbox_trim(user, excess).await?;
        }
        Ok(dropped)
    }

    async fn inbox_trim(&self, user: UserId, excess: u64) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("ZPOPMIN").arg(ukey(user, "inbox")).arg(excess);
        let (popped,): (Vec<(String, f64)>,) = self.run(&p).await?;
        if popped.is_empty() {
            return Ok(0);
        }
        let mut p = crate::Batch::new();
        let mut del = redis::cmd("HDEL");
        del.arg(ukey(user, "inbox:data"));
        for (id, _) in &popped {
            del.arg(id);
        }
        p.add_command(del).ignore();
        // Counted for the user's next hello ("dropped": N).
        p.cmd("INCRBY")
            .arg(ukey(user, "inbox:dropped"))
            .arg(popped.len())
            .ignore();
        if let Some(ttl) = self.cfg.inbox_idle_ttl {
            p.cmd("EXPIRE")
                .arg(ukey(user, "inbox:dropped"))
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        self.run::<()>(&p).await?;
        tracing::debug!(
            user,
            dropped = popped.len(),
            "inbox over cap, dropped oldest"
        );
        Ok(popped.len() as u64)
    }

    /// Up to `limit` notifications waiting for `user`, oldest first,
    /// strictly after `after` (an order key) when given. Nothing is removed.
    pub async fn inbox_read(
        &self,
        user: UserId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let mut p = crate::Batch::new();
        let min = match after {
            Some(a) => format!("({a}"),
            None => "-inf".to_string(),
        };
        p.cmd("ZRANGEBYSCORE")
            .arg(ukey(user, "inbox"))
            .arg(min)
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1));
        let (ids,): (Vec<String>,) = self.run(&p).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        let mut get = redis::cmd("HMGET");
        get.arg(ukey(user, "inbox:data"));
        for id in &ids {
            get.arg(id);
        }
        p.add_command(get);
        let (payloads,): (Vec<Option<Vec<u8>>>,) = self.run(&p).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, payload) in ids.iter().zip(payloads) {
            // An id without payload was acked between the two reads.
            let Some(bytes) = payload else { continue };
            out.push(decode(user, id, &bytes)?);
        }
        Ok(out)
    }

    /// How many notifications wait for `user`, and the oldest `limit` of
    /// them, in one round trip (what a connection needs to say hello and
    /// drain); with `take_dropped`, also how many the cap dropped since
    /// the last such call (and the count starts again).
    pub async fn inbox_snapshot(
        &self,
        user: UserId,
        limit: usize,
        take_dropped: bool,
    ) -> Result<InboxSnapshot> {
        static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(SNAPSHOT));
        let mut inv = script.prepare_invoke();
        inv.key(ukey(user, "inbox"))
            .key(ukey(user, "inbox:data"))
            .key(ukey(user, "inbox:dropped"))
            .arg(limit.max(1))
            .arg(if take_dropped { "1" } else { "0" })
            .arg(self.cfg.inbox_idle_ttl.map_or(0, |t| t.as_secs().max(1)));
        let (pending, payloads, dropped): (u64, Vec<Option<Vec<u8>>>, u64) =
            self.invoke(&inv).await?;
        let mut items = Vec::with_capacity(payloads.len());
        for p in payloads.into_iter().flatten() {
            items.push(decode(user, "?", &p)?);
        }
        Ok(InboxSnapshot {
            pending,
            items,
            dropped,
        })
    }

    /// How many notifications wait for `user`.
    pub async fn inbox_len(&self, user: UserId) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("ZCARD").arg(ukey(user, "inbox"));
        let (n,): (u64,) = self.run(&p).await?;
        Ok(n)
    }

    /// Removes acknowledged notifications from `user`'s inbox.
    pub async fn inbox_remove(&self, user: UserId, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        let mut z = redis::cmd("ZREM");
        z.arg(ukey(user, "inbox"));
        let mut h = redis::cmd("HDEL");
        h.arg(ukey(user, "inbox:data"));
        for id in ids {
            z.arg(id);
            h.arg(id);
        }
        p.add_command(z).ignore().add_command(h).ignore();
        self.run::<()>(&p).await
    }
}
