//! The pull path's state (hybrid push/pull): which celebrities and hot
//! threads are on it, their outboxes, and how far each follower (or
//! subscriber) has read each outbox.

use herald_types::sync::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use herald_types::{Outbox, UserId};

use crate::{ukey, Result, Store};

/// Posts kept per celebrity outbox when the configuration does not say.
pub const DEFAULT_OUTBOX_CAP: usize = 1000;

const CELEBRITIES: &str = "h:celebrities";
const OWNERS: &str = "h:outbox-owners";
/// Bumped on every change of `h:celebrities`: nodes poll it and reload.
const VERSION: &str = "h:celebrities:version";

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
    current: HashSet<Outbox>,
    owners: HashSet<Outbox>,
    /// Every hot thread's object (those ever hot), both ways.
    names: HashMap<u64, Arc<str>>,
    ids: HashMap<Arc<str>, u64>,
}

/// In-memory mirror of `h:celebrities`, `h:outbox-owners` and the hot
/// threads' names. The worker that owns an account's partition is the only
/// writer of its status, so the mirror on that node is exact for it; a
/// thread's status may be changed by any partition's worker (its comments
/// can be partitioned apart), so a node's view of it is current within the
/// edge's sync (a second).
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
        self.read().current.contains(&Outbox::User(u))
    }

    /// Whether `o` is on the pull path now.
    pub fn is_on(&self, o: Outbox) -> bool {
        self.read().current.contains(&o)
    }

    /// The id of `object`'s thread when it is on the pull path now.
    pub fn hot_thread(&self, object: &str) -> Option<u64> {
        let s = self.read();
        let t = *s.ids.get(object)?;
        s.current.contains(&Outbox::Thread(t)).then_some(t)
    }

    /// The object of thread `t` (known once it has been hot).
    pub fn object_of(&self, t: u64) -> Option<Arc<str>> {
        self.read().names.get(&t).cloned()
    }

    /// Outboxes on the pull path now.
    pub fn len(&self) -> usize {
        self.read().current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().current.is_empty()
    }

    /// Whether any outbox exists (asked on every connect: no copy).
    pub fn has_owners(&self) -> bool {
        !self.read().owners.is_empty()
    }

    /// Outboxes that exist (current or former celebrities and hot threads).
    pub fn owners(&self) -> Vec<Outbox> {
        self.read().owners.iter().copied().collect()
    }

    pub fn set(&self, o: Outbox, on: bool) {
        let mut s = self.write();
        if on {
            s.current.insert(o);
            s.owners.insert(o);
        } else {
            s.current.remove(&o);
        }
    }

    /// Records thread `t`'s object.
    pub fn name(&self, t: u64, object: Arc<str>) {
        let mut s = self.write();
        s.ids.insert(object.clone(), t);
        s.names.insert(t, object);
    }
}

/// A set member or hash field naming an outbox: a celebrity's id, or
/// `t:` and a thread's id.
pub(crate) fn member(o: Outbox) -> String {
    match o {
        Outbox::User(u) => u.to_string(),
        Outbox::Thread(t) => format!("t:{t}"),
    }
}

fn parse_member(m: &str) -> Option<Outbox> {
    match m.strip_prefix("t:") {
        Some(t) => t.parse().ok().map(Outbox::Thread),
        None => m.parse().ok().map(Outbox::User),
    }
}

// KEYS: object -> id, id -> object, counter (one slot). ARGV: object.
// Returns the thread's id, given on first use.
const THREAD_ID: &str = r#"
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return tonumber(id) end
id = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('HSET', KEYS[2], id, ARGV[1])
return id
"#;

const THREAD_IDS: &str = "h:{threads}:ids";
const THREAD_NAMES: &str = "h:{threads}:names";
const THREAD_NEXT: &str = "h:{threads}:next";

impl Store {
    /// Loads the celebrity sets and the hot threads' names into `mirror`.
    pub async fn load_celebrities(&self, mirror: &CelebritySet) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("SMEMBERS").arg(CELEBRITIES);
        p.cmd("SMEMBERS").arg(OWNERS);
        p.cmd("HGETALL").arg(THREAD_NAMES);
        let (current, owners, names): (Vec<String>, Vec<String>, HashMap<u64, String>) =
            self.run(&p).await?;
        let mut s = mirror.write();
        s.current = current.iter().filter_map(|m| parse_member(m)).collect();
        let current_owners: Vec<Outbox> = s.current.iter().copied().collect();
        s.owners = owners.iter().filter_map(|m| parse_member(m)).collect();
        s.owners.extend(current_owners);
        for (t, object) in names {
            let object: Arc<str> = object.into();
            s.ids.insert(object.clone(), t);
            s.names.insert(t, object);
        }
        Ok(())
    }

    /// The version of the celebrity set (changes with every change of it).
    pub async fn celebrities_version(&self) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("GET").arg(VERSION);
        let (v,): (Option<u64>,) = self.run(&p).await?;
        Ok(v.unwrap_or(0))
    }

    /// Reloads `mirror` from Redis; returns the outboxes whose status the
    /// mirror did not have yet (changed on another node, or by a bulk
    /// import there).
    pub async fn reload_celebrities(&self, mirror: &CelebritySet) -> Result<Vec<(Outbox, bool)>> {
        let fresh = CelebritySet::default();
        self.load_celebrities(&fresh).await?;
        let (new, old) = (fresh.read(), mirror.read());
        let mut changed: Vec<(Outbox, bool)> = new
            .current
            .difference(&old.current)
            .map(|u| (*u, true))
            .collect();
        changed.extend(old.current.difference(&new.current).map(|u| (*u, false)));
        let names: Vec<(u64, Arc<str>)> = new
            .names
            .iter()
            .filter(|(t, _)| !old.names.contains_key(t))
            .map(|(t, o)| (*t, o.clone()))
            .collect();
        drop((new, old));
        for (t, o) in names {
            mirror.name(t, o);
        }
        for (u, on) in &changed {
            mirror.set(*u, *on);
        }
        Ok(changed)
    }

    /// Which of `candidates` follow `o` (a celebrity) or subscribe to it
    /// (a thread, by its object), one round trip.
    pub async fn followers_among(
        &self,
        o: Outbox,
        object: Option<&str>,
        candidates: &[UserId],
    ) -> Result<Vec<UserId>> {
        match (o, object) {
            (Outbox::User(celebrity), _) => self.follow_among(celebrity, candidates).await,
            (Outbox::Thread(_), Some(object)) => self.subscribed_among(object, candidates).await,
            (Outbox::Thread(_), None) => Ok(Vec::new()),
        }
    }

    /// Which of `candidates` follow `celebrity` (one `SMISMEMBER` per
    /// thousand candidates, one round trip).
    async fn follow_among(&self, celebrity: UserId, candidates: &[UserId]) -> Result<Vec<UserId>> {
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

    /// Records a change of path for `o` (Redis, then the mirror).
    pub async fn set_celebrity(&self, mirror: &CelebritySet, o: Outbox, on: bool) -> Result<()> {
        let m = member(o);
        let mut p = crate::Batch::new();
        if on {
            p.cmd("SADD").arg(CELEBRITIES).arg(&m).ignore();
            p.cmd("SADD").arg(OWNERS).arg(&m).ignore();
        } else {
            p.cmd("SREM").arg(CELEBRITIES).arg(&m).ignore();
        }
        p.cmd("INCR").arg(VERSION).ignore();
        self.run::<()>(&p).await?;
        mirror.set(o, on);
        tracing::info!(outbox = %m, on, "changed path");
        Ok(())
    }

    /// The id of `object`'s thread (given the first time it becomes hot,
    /// the same ever after), recorded in `mirror`.
    pub async fn thread_id(&self, mirror: &CelebritySet, object: &str) -> Result<u64> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(THREAD_ID));
        let mut inv = script.prepare_invoke();
        inv.key(THREAD_IDS)
            .key(THREAD_NAMES)
            .key(THREAD_NEXT)
            .arg(object);
        let t: u64 = self.invoke(&inv).await?;
        mirror.name(t, object.into());
        Ok(t)
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
                    self.set_celebrity(mirror, Outbox::User(*u), on).await?;
                    changed.push((*u, on));
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_members_read_back() {
        use crate::outbox::okey;
        for o in [Outbox::User(7), Outbox::Thread(7), Outbox::User(u64::MAX)] {
            assert_eq!(parse_member(&member(o)), Some(o));
        }
        assert_eq!(parse_member("t:x"), None);
        assert_eq!(okey(Outbox::Thread(3), "outbox"), "h:{t:3}:outbox");
        assert_eq!(okey(Outbox::User(3), "outbox"), "h:{u:3}:outbox");
    }

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
