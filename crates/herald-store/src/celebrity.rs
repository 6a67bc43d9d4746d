//! The celebrity (hybrid push/pull) path's state: who is a celebrity, their
//! outboxes, and how far each follower has read each outbox.

use herald_types::sync::Shared;
use std::collections::HashSet;
use std::sync::RwLock;

use herald_types::{Notification, UserId};

use crate::{ukey, Result, Store, StoreError};

/// Posts kept per celebrity outbox when the configuration does not say.
pub const DEFAULT_OUTBOX_CAP: usize = 1000;

const CELEBRITIES: &str = "h:celebrities";
const OWNERS: &str = "h:outbox-owners";
/// Bumped on every change of `h:celebrities`: nodes poll it and reload.
const VERSION: &str = "h:celebrities:version";

// KEYS: outbox, fence. ARGV: partition, term, order, post, cap.
// Returns 1 when written, 0 when fenced.
const OUTBOX_PUSH: &str = r#"
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[5]) - 1)
return 1
"#;

/// When an account changes path: it becomes a celebrity at `enter`
/// followers and stops being one below `exit` (`exit` < `enter`, so an
/// account near the line does not flap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CelebrityPolicy {
    pub enter: u64,
    pub exit: u64,
}

impl CelebrityPolicy {
    /// `threshold` followers to enter, `threshold * (1 - hysteresis)` to leave.
    pub fn new(threshold: u64, hysteresis: f64) -> CelebrityPolicy {
        let exit = (threshold as f64 * (1.0 - hysteresis.clamp(0.0, 0.9))) as u64;
        CelebrityPolicy {
            enter: threshold.max(1),
            exit: exit.min(threshold.saturating_sub(1)),
        }
    }

    /// The new status when it changes.
    pub fn decide(&self, is_celebrity: bool, followers: u64) -> Option<bool> {
        match (is_celebrity, followers) {
            (false, n) if n >= self.enter => Some(true),
            (true, n) if n < self.exit => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Sets {
    current: HashSet<UserId>,
    owners: HashSet<UserId>,
}

/// In-memory mirror of `h:celebrities` and `h:outbox-owners`. The worker
/// that owns an account's partition is the only writer of its status, so
/// the mirror on that node is exact for it.
#[derive(Debug, Default)]
pub struct CelebritySet {
    sets: RwLock<Sets>,
}

impl CelebritySet {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sets> {
        self.sets.reading()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sets> {
        self.sets.writing()
    }

    pub fn is_celebrity(&self, u: UserId) -> bool {
        self.read().current.contains(&u)
    }

    /// Accounts on the celebrity (pull) path now.
    pub fn len(&self) -> usize {
        self.read().current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().current.is_empty()
    }

    /// Accounts that have an outbox (current or former celebrities).
    pub fn owners(&self) -> Vec<UserId> {
        self.read().owners.iter().copied().collect()
    }

    pub fn set(&self, u: UserId, on: bool) {
        let mut s = self.write();
        if on {
            s.current.insert(u);
            s.owners.insert(u);
        } else {
            s.current.remove(&u);
        }
    }
}

/// One follower's view of one outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxCursor {
    pub celebrity: UserId,
    /// Order of the newest entry acked; None: never read.
    pub seen: Option<u64>,
}

impl Store {
    /// Loads the celebrity sets into `mirror`.
    pub async fn load_celebrities(&self, mirror: &CelebritySet) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("SMEMBERS").arg(CELEBRITIES);
        p.cmd("SMEMBERS").arg(OWNERS);
        let (current, owners): (Vec<UserId>, Vec<UserId>) = self.run(&p).await?;
        let mut s = mirror.write();
        s.current = current.into_iter().collect();
        let current_owners: Vec<UserId> = s.current.iter().copied().collect();
        s.owners = owners.into_iter().collect();
        s.owners.extend(current_owners);
        Ok(())
    }

    /// The version of the celebrity set (changes with every change of it).
    pub async fn celebrities_version(&self) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("GET").arg(VERSION);
        let (v,): (Option<u64>,) = self.run(&p).await?;
        Ok(v.unwrap_or(0))
    }

    /// Reloads `mirror` from Redis; returns the accounts whose status the
    /// mirror did not have yet (changed on another node, or by a bulk
    /// import there).
    pub async fn reload_celebrities(&self, mirror: &CelebritySet) -> Result<Vec<(UserId, bool)>> {
        let fresh = CelebritySet::default();
        self.load_celebrities(&fresh).await?;
        let (new, old) = (fresh.read(), mirror.read());
        let mut changed: Vec<(UserId, bool)> = new
            .current
            .difference(&old.current)
            .map(|u| (*u, true))
            .collect();
        changed.extend(old.current.difference(&new.current).map(|u| (*u, false)));
        drop((new, old));
        for (u, on) in &changed {
            mirror.set(*u, *on);
        }
        Ok(changed)
    }

    /// Which of `candidates` follow `celebrity` (one `SMISMEMBER` per
    /// thousand candidates, one round trip).
    pub async fn followers_among(
        &self,
        celebrity: UserId,
        candidates: &[UserId],
    ) -> Result<Vec<UserId>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for chunk in candidates.chunks(1000) {
            p.cmd("SMISMEMBER")
                .arg(ukey(celebrity, "followers"))
                .arg(chunk);
        }
        let answers: Vec<Vec<bool>> = self.run(&p).await?;
        Ok(candidates
            .chunks(1000)
            .zip(answers)
            .flat_map(|(c, a)| c.iter().zip(a).filter(|(_, f)| *f).map(|(u, _)| *u))
            .collect())
    }

    /// Records a change of path for `user` (Redis, then the mirror).
    pub async fn set_celebrity(&self, mirror: &CelebritySet, user: UserId, on: bool) -> Result<()> {
        let mut p = crate::Batch::new();
        if on {
            p.cmd("SADD").arg(CELEBRITIES).arg(user).ignore();
            p.cmd("SADD").arg(OWNERS).arg(user).ignore();
        } else {
            p.cmd("SREM").arg(CELEBRITIES).arg(user).ignore();
        }
        p.cmd("INCR").arg(VERSION).ignore();
        self.run::<()>(&p).await?;
        mirror.set(user, on);
        tracing::info!(user, celebrity = on, "account changed path");
        Ok(())
    }

    /// Applies `policy` to `users` from their follower counts (after a bulk
    /// import); returns those whose status changed.
    pub async fn refresh_celebrities(
        &self,
        mirror: &CelebritySet,
        policy: CelebrityPolicy,
        users: &[UserId],
    ) -> Result<Vec<(UserId, bool)>> {
        let mut changed = Vec::new();
        for chunk in users.chunks(1000) {
            let mut p = crate::Batch::new();
            for u in chunk {
                p.cmd("SCARD").arg(ukey(*u, "followers"));
            }
            let counts: Vec<u64> = self.run(&p).await?;
            for (u, n) in chunk.iter().zip(counts) {
                if let Some(on) = policy.decide(mirror.is_celebrity(*u), n) {
                    self.set_celebrity(mirror, *u, on).await?;
                    changed.push((*u, on));
                }
            }
        }
        Ok(changed)
    }

    /// Writes a celebrity's post to its outbox: one script whatever the
    /// number of followers, kept to `cap` posts. Idempotent (the same post
    /// twice is one entry).
    /// `Ok(false)`: refused, a newer leader of the celebrity's partition
    /// already wrote to this outbox (`fence.rs`).
    pub async fn outbox_push(
        &self,
        celebrity: UserId,
        n: &Notification,
        cap: usize,
        fence: crate::Fence,
    ) -> Result<bool> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(&crate::fence::with_check(OUTBOX_PUSH)));
        let mut inv = script.prepare_invoke();
        inv.key(ukey(celebrity, "outbox"))
            .key(ukey(celebrity, "fence"))
            .arg(fence.partition)
            .arg(fence.term)
            .arg(n.order)
            .arg(n.to_storage())
            .arg(cap.max(1));
        let r: i64 = self.invoke(&inv).await?;
        Ok(r == 1)
    }

    /// Which of `owners` `user` follows, with how far `user` has read each.
    pub async fn outbox_cursors(
        &self,
        user: UserId,
        owners: &[UserId],
    ) -> Result<Vec<OutboxCursor>> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        p.cmd("SMISMEMBER").arg(ukey(user, "following")).arg(owners);
        p.cmd("HMGET").arg(ukey(user, "seen")).arg(owners);
        let (follows, seen): (Vec<bool>, Vec<Option<u64>>) = self.run(&p).await?;
        Ok(owners
            .iter()
            .zip(follows.into_iter().zip(seen))
            .filter(|(_, (f, _))| *f)
            .map(|(&c, (_, s))| OutboxCursor {
                celebrity: c,
                seen: s,
            })
            .collect())
    }

    /// Outbox entries after each cursor (at most `limit` per outbox), one
    /// round trip; each with its celebrity.
    pub async fn outbox_read(
        &self,
        cursors: &[OutboxCursor],
        limit: usize,
    ) -> Result<Vec<(UserId, Notification)>> {
        if cursors.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for c in cursors {
            let min = match c.seen {
                Some(s) => format!("({s}"),
                None => "-inf".into(),
            };
            p.cmd("ZRANGEBYSCORE")
                .arg(ukey(c.celebrity, "outbox"))
                .arg(min)
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(limit.max(1));
        }
        let lists: Vec<Vec<Vec<u8>>> = self.run(&p).await?;
        let mut out = Vec::new();
        for (c, list) in cursors.iter().zip(lists) {
            for bytes in list {
                let n = Notification::from_storage(&bytes).map_err(|e| StoreError::Corrupt {
                    key: ukey(c.celebrity, "outbox").to_string(),
                    reason: e.to_string(),
                })?;
                out.push((c.celebrity, n));
            }
        }
        Ok(out)
    }

    /// Records how far `user` has read outboxes (celebrity, order).
    pub async fn outbox_seen(&self, user: UserId, seen: &[(UserId, u64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        let mut h = redis::cmd("HSET");
        h.arg(ukey(user, "seen"));
        for (c, o) in seen {
            h.arg(c).arg(o);
        }
        p.add_command(h).ignore();
        self.run::<()>(&p).await
    }

    /// A new follower of a celebrity starts reading its outbox from now.
    pub async fn outbox_start(
        &self,
        follower: UserId,
        celebrity: UserId,
        order: u64,
    ) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("HSET")
            .arg(ukey(follower, "seen"))
            .arg(celebrity)
            .arg(order)
            .ignore();
        self.run::<()>(&p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_keeps_accounts_from_flapping() {
        let p = CelebrityPolicy::new(100, 0.1);
        assert_eq!((p.enter, p.exit), (100, 90));
        assert_eq!(p.decide(false, 99), None);
        assert_eq!(p.decide(false, 100), Some(true));
        assert_eq!(p.decide(true, 95), None);
        assert_eq!(p.decide(true, 89), Some(false));
    }
}
