//! What every script over a user's entries hash (`h:{u:ID}:fd`) shares:
//! reading an entry's order and state in Lua, trimming the oldest of one
//! state, and running one script for many users in one pipeline.
//!
//! The hash holds one entry per notification the user was sent
//! ([`herald_types::compact`]): waiting (the inbox: not yet delivered) or
//! delivered, each read or unread. Entries are at least 9 bytes (hashes
//! written by older versions may hold a marker field `""` with an empty
//! value, which every script skips).

use redis::Script;

use crate::key::Key;
use crate::{Result, Store};

/// Slots of [`Recent`] (a direct-mapped table: a user whose slot another
/// took is simply treated as not seen).
const RECENT_SLOTS: usize = 1 << 16;

/// After this long a seen user's next write sets its hash's lifetime again
/// (`EXPIRE ... NX`, a no-op while it has one): a hash that expired or was
/// emptied meanwhile gets one (hashes live at least a day).
const RECENT_FOR_S: u32 = 3600;

/// [`Recent`] tables: the feed writer's and parking's.
pub(crate) const FEED: usize = 0;
pub(crate) const PARK: usize = 1;

#[derive(Clone, Copy, Default)]
struct Slot {
    user: u64,
    writes: u32,
    at_s: u32,
}

/// Which users' hashes this process wrote lately, so a write is one
/// command and only now and then also sets the hash's lifetime (its first
/// write here, then hourly) or reads its size (every tenth of the cap's
/// writes here). Bounded: 65,536 slots of 16 bytes.
pub(crate) struct Recent {
    slots: std::sync::Mutex<Vec<Slot>>,
    start: std::time::Instant,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            slots: std::sync::Mutex::new(vec![Slot::default(); RECENT_SLOTS]),
            start: std::time::Instant::now(),
        }
    }
}

/// The slot of `user` (Fibonacci hashing: ids are often sequential).
fn slot(user: u64) -> usize {
    (user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize % RECENT_SLOTS
}

impl Recent {
    /// Notes `n` writes to `user`'s hash; answers whether to set its
    /// lifetime and whether to read its size (every `check_every` writes).
    pub(crate) fn note(&self, user: u64, n: u32, check_every: u32) -> (bool, bool) {
        use herald_types::sync::Locked;
        let now = self.start.elapsed().as_secs() as u32;
        let at = slot(user);
        let mut slots = self.slots.locked();
        let s = &mut slots[at];
        // Slot 0 of user 0 looks seen at start: its first write is noted too.
        let fresh = s.user != user || s.at_s == 0 || now.saturating_sub(s.at_s) >= RECENT_FOR_S;
        if fresh {
            *s = Slot {
                user,
                writes: 0,
                at_s: now.max(1),
            };
        }
        s.writes = s.writes.saturating_add(n);
        let size = s.writes >= check_every;
        if size {
            s.writes = 0;
        }
        (fresh, size)
    }
}

/// Lua helpers prepended to every entries script.
const LIB: &str = r#"
local function order(v) return struct.unpack('>I7', v, 3) end
local function waiting(v) return bit.band(string.byte(v, 2), 128) ~= 0 end
local function unread(v) return bit.band(string.byte(v, 1), 32) == 0 end
local function set_waiting(v, on)
  local b = string.byte(v, 2)
  if on then b = bit.bor(b, 128) else b = bit.band(b, 127) end
  return string.sub(v, 1, 1) .. string.char(b) .. string.sub(v, 3)
end
-- Gives the hash its lifetime (s, 0: none) unless it has one.
local function live(key, life)
  if life > 0 then redis.call('EXPIRE', key, life, 'NX') end
end
-- The oldest entries of `all` (an HGETALL) that are waiting (or not)
-- past `keep`: a list of indexes into `all` (of their fields).
local function oldest(all, keep, of_waiting)
  local rows = {}
  for i = 1, #all, 2 do
    local v = all[i + 1]
    if #v >= 9 and waiting(v) == of_waiting then
      rows[#rows + 1] = {order(v), i}
    end
  end
  local excess = #rows - keep
  if excess <= 0 then return {} end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  local out = {}
  for k = 1, excess do out[k] = rows[k][2] end
  return out
end
-- Drops the oldest delivered entries of `key` past `keep`.
local function drop_delivered(key, keep)
  local all = redis.call('HGETALL', key)
  for _, i in ipairs(oldest(all, keep, false)) do redis.call('HDEL', key, all[i]) end
end
-- The oldest waiting entries past `cap` stop waiting: they stay in the
-- feed as any other, which keeps its newest `feed_cap` (with the feed off,
-- `feed_cap` 0, they go). Counted in `dropped_key` (lifetime `life` s, 0:
-- none); returns how many.
local function cap_waiting(key, dropped_key, cap, life, feed_cap)
  if redis.call('HLEN', key) <= cap then return 0 end
  local all = redis.call('HGETALL', key)
  local out = oldest(all, cap, true)
  for _, i in ipairs(out) do
    if feed_cap > 0 then
      redis.call('HSET', key, all[i], set_waiting(all[i + 1], false))
    else
      redis.call('HDEL', key, all[i])
    end
  end
  if #out > 0 then
    redis.call('INCRBY', dropped_key, #out)
    if life > 0 then redis.call('EXPIRE', dropped_key, life) end
    if feed_cap > 0 then drop_delivered(key, feed_cap) end
  end
  return #out
end
-- Trims delivered entries past `cap` once the hash passes it by a tenth.
local function trim_delivered(key, cap)
  if cap > 0 and redis.call('HLEN', key) > cap + math.max(math.floor(cap / 10), 1) then
    drop_delivered(key, cap)
  end
end
"#;

/// One user's part of a write: the entries its aggregates supersede (their
/// fields) and its own entries, in order.
pub(crate) struct UserEntries {
    pub user: herald_types::UserId,
    pub gone: Vec<Vec<u8>>,
    pub entries: Vec<crate::entries::Encoded>,
}

impl UserEntries {
    /// Removes what this user's aggregates supersede (one `HDEL`).
    pub(crate) fn supersede(&self, p: &mut crate::Batch, key: &Key) {
        if self.gone.is_empty() {
            return;
        }
        p.cmd("HDEL").arg(key);
        for f in &self.gone {
            p.arg(f.as_slice());
        }
        p.ignore();
    }
}

/// `items` and their encoded `entries` (one each, in the same order) per
/// user, in order of appearance.
pub(crate) fn by_user(
    items: &[(herald_types::UserId, &herald_types::Notification)],
    entries: Vec<crate::entries::Encoded>,
) -> Vec<UserEntries> {
    let mut at: foldhash::HashMap<herald_types::UserId, usize> = Default::default();
    let mut out: Vec<UserEntries> = Vec::new();
    for ((user, n), e) in items.iter().zip(entries) {
        let i = *at.entry(*user).or_insert_with(|| {
            out.push(UserEntries {
                user: *user,
                gone: Vec::new(),
                entries: Vec::new(),
            });
            out.len() - 1
        });
        if let Some(old) = &n.supersedes {
            out[i]
                .gone
                .extend(old.iter().map(|id| herald_types::compact::field(id, *user)));
        }
        out[i].entries.push(e);
    }
    out
}

/// A script over entries hashes, with [`LIB`] in front.
pub(crate) fn script(cell: &'static std::sync::OnceLock<Script>, body: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(&format!("{LIB}{body}")))
}

/// One call of a script: its keys (one slot) and arguments.
#[derive(Default)]
pub(crate) struct Call {
    pub keys: Vec<Key>,
    pub args: Vec<Vec<u8>>,
}

impl Call {
    pub(crate) fn arg(&mut self, a: impl redis::ToRedisArgs) -> &mut Call {
        self.args.extend(a.to_redis_args());
        self
    }
}

impl Store {
    /// Runs `script` once per call in one pipeline (`EVALSHA`s; on Redis
    /// Cluster one per slot). When a Redis does not know the script yet
    /// (restarted or failed over since it was loaded), the script is loaded
    /// and the pipeline runs again: the scripts run this way are
    /// idempotent.
    pub(crate) async fn run_scripts<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        calls: &[Call],
    ) -> Result<Vec<T>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for c in calls {
            p.cmd("EVALSHA").arg(script.get_hash()).arg(c.keys.len());
            for k in &c.keys {
                p.arg(k);
            }
            for a in &c.args {
                p.arg(a.as_slice());
            }
        }
        match self.run::<Vec<T>>(&p).await {
            Err(crate::StoreError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.load_script(script).await?;
                self.run(&p).await
            }
            r => r,
        }
    }

    /// Loads `script` into Redis (every master, on Redis Cluster).
    pub(crate) async fn load_script(&self, script: &Script) -> Result<()> {
        let fut = async {
            match &self.conn {
                crate::Conn::Single(c) => script.load_async(&mut c.clone()).await,
                crate::Conn::Cluster(c) => script.load_async(&mut c.get()).await,
            }
        };
        match tokio::time::timeout(self.cfg.timeout, fut).await {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => Err(crate::StoreError::Timeout(self.cfg.timeout)),
        }
    }

    /// Loads the scripts run in pipelines (acks of inbox entries, grown
    /// aggregates in feeds), so their first calls take one round trip; a
    /// Redis that forgets them later (restarted, failed over) gets them
    /// again on first use.
    pub async fn preload_scripts(&self) -> Result<()> {
        self.load_script(crate::inbox::acked_script()).await?;
        self.load_script(crate::feed::feed_set_script()).await
    }

    /// How long the count of entries the inbox cap dropped lives (s; 0:
    /// it does not expire): the inbox's idle lifetime.
    pub(crate) fn dropped_life_s(&self) -> u64 {
        self.cfg.inbox_idle_ttl.map_or(0, |t| t.as_secs().max(1))
    }

    /// How long a user's entries hash lives after it is made or the user
    /// was last here (s; 0: it does not expire): the longer of the inbox's
    /// idle lifetime and the feed's retention, none when the inbox has no
    /// idle lifetime (waiting entries are never dropped for time).
    pub(crate) fn entries_life_s(&self) -> u64 {
        match self.cfg.inbox_idle_ttl {
            None => 0,
            Some(idle) => {
                let feed = match self.cfg.feed_cap {
                    0 => 0,
                    _ => self.cfg.feed_retention.as_secs(),
                };
                idle.as_secs().max(feed).max(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_first_seen_sets_the_lifetime_and_sizes_every_tenth_write() {
        let r = Recent::default();
        assert_eq!(r.note(7, 1, 10), (true, false), "first write here");
        for _ in 0..8 {
            assert_eq!(r.note(7, 1, 10), (false, false));
        }
        assert_eq!(r.note(7, 1, 10), (false, true), "the tenth write");
        assert_eq!(r.note(7, 1, 10), (false, false));
        assert_eq!(r.note(0, 1, 10), (true, false), "user 0 is no exception");
        assert_eq!(r.note(0, 1, 10), (false, false));
        // Another user taking the slot makes the first one new again.
        let other = (8..).find(|u| slot(*u) == slot(7)).unwrap_or(7);
        assert_eq!(r.note(other, 1, 10), (true, false));
        assert_eq!(r.note(7, 1, 10), (true, false));
        // Many at once count: a size read when a write passes the tenth.
        assert_eq!(r.note(7, 12, 10), (false, true));
    }
}
