//! The pull path's state (hybrid push/pull): which celebrities and hot
//! threads are on it, their outboxes, and how far each follower (or
//! subscriber) has read each outbox.

use herald_types::sync::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use herald_types::{Notification, Outbox, UserId};

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

/// One follower's view of one outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxCursor {
    pub outbox: Outbox,
    /// Order of the newest entry acked (or, for a thread, of the moment
    /// the follower subscribed, when later); None: never read.
    pub seen: Option<u64>,
    /// When the follower started following (subscribing): the feed lists
    /// the outbox's posts after it. None: before the account became a
    /// celebrity (the whole outbox).
    pub since: Option<u64>,
}

/// The outboxes a user reads, and, when asked, what of them the user
/// marked read in their feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxView {
    pub cursors: Vec<OutboxCursor>,
    /// Every post up to this order is read ("mark all read").
    pub read_all: Option<u64>,
    /// Posts marked read one by one (hashes of their ids, [`read_mark`]).
    pub read: HashSet<u64>,
}

impl OutboxView {
    /// Whether the feed shows `n` (from an outbox) as read.
    pub fn is_read(&self, n: &Notification) -> bool {
        self.read_all.is_some_and(|r| n.order <= r)
            || (!self.read.is_empty() && self.read.contains(&read_mark(&n.id)))
    }
}

/// How a pulled post marked read is remembered: a hash of its id.
pub fn read_mark(id: &str) -> u64 {
    herald_types::ids::fnv1a64(id.as_bytes())
}

/// The field of `h:{u:ID}:seen` that says when a follow started.
fn since_field(o: Outbox) -> String {
    format!("s:{}", member(o))
}

/// The field of `h:{u:ID}:seen` holding the "mark all read" order.
const READ_ALL: &str = "r";

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

/// An outbox's own key (`h:{u:ID}:what` or `h:{t:ID}:what`).
pub(crate) fn okey(o: Outbox, what: &str) -> String {
    match o {
        Outbox::User(u) => ukey(u, what).to_string(),
        Outbox::Thread(t) => format!("h:{{t:{t}}}:{what}"),
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

    /// Writes a post to `o`'s outbox: one script whatever the number of
    /// followers, kept to `cap` posts. Idempotent (the same post twice is
    /// one entry).
    /// `Ok(false)`: refused, a newer leader of the writer's partition
    /// already wrote to this outbox (`fence.rs`).
    pub async fn outbox_push(
        &self,
        o: Outbox,
        n: &Notification,
        cap: usize,
        fence: crate::Fence,
    ) -> Result<bool> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(&crate::fence::with_check(OUTBOX_PUSH)));
        let mut inv = script.prepare_invoke();
        inv.key(okey(o, "outbox"))
            .key(okey(o, "fence"))
            .arg(fence.partition)
            .arg(fence.term)
            .arg(n.order)
            .arg(n.to_storage())
            .arg(cap.max(1));
        let r: i64 = self.invoke(&inv).await?;
        Ok(r == 1)
    }

    /// The outboxes of `mirror` that `user` reads (celebrities followed,
    /// hot threads subscribed to), with how far `user` has read each and
    /// since when; with `reads`, also what the user marked read in their
    /// feed. One round trip.
    pub async fn outbox_cursors(
        &self,
        user: UserId,
        mirror: &CelebritySet,
        reads: bool,
    ) -> Result<OutboxView> {
        let mut users = Vec::new();
        let mut threads: Vec<(u64, Arc<str>)> = Vec::new();
        for o in mirror.owners() {
            match o {
                Outbox::User(u) => users.push(u),
                // A thread whose object this node does not know yet is
                // read once the sync has it.
                Outbox::Thread(t) => threads.extend(mirror.object_of(t).map(|n| (t, n))),
            }
        }
        if users.is_empty() && threads.is_empty() {
            return Ok(OutboxView::default());
        }
        let mut p = crate::Batch::new();
        if !users.is_empty() {
            p.cmd("SMISMEMBER").arg(ukey(user, "following")).arg(&users);
        }
        if !threads.is_empty() {
            p.cmd("HMGET").arg(ukey(user, "threads"));
            for (_, n) in &threads {
                p.arg(&**n);
            }
        }
        let all: Vec<Outbox> = users
            .iter()
            .map(|u| Outbox::User(*u))
            .chain(threads.iter().map(|(t, _)| Outbox::Thread(*t)))
            .collect();
        // Each outbox's read position, then when its follow started, then
        // the "all read" order.
        p.cmd("HMGET").arg(ukey(user, "seen"));
        for o in &all {
            p.arg(member(*o));
        }
        for o in &all {
            p.arg(since_field(*o));
        }
        p.arg(READ_ALL);
        if reads {
            p.cmd("SMEMBERS").arg(ukey(user, "fr"));
        }
        let mut answers: Vec<redis::Value> = self.run(&p).await?;
        let bad = |e: redis::ParsingError| StoreError::Corrupt {
            key: ukey(user, "seen").to_string(),
            reason: e.to_string(),
        };
        let read: HashSet<u64> = match reads {
            false => HashSet::new(),
            true => match answers.pop() {
                Some(v) => {
                    let marks: Vec<Vec<u8>> = redis::from_redis_value(v).map_err(bad)?;
                    marks
                        .iter()
                        .filter_map(|m| Some(u64::from_be_bytes(m.as_slice().try_into().ok()?)))
                        .collect()
                }
                None => HashSet::new(),
            },
        };
        let mut seen: Vec<Option<u64>> = match answers.pop() {
            Some(v) => redis::from_redis_value(v).map_err(bad)?,
            None => Vec::new(),
        };
        let read_all = seen.pop().flatten();
        let since_of: Vec<Option<u64>> = seen.split_off(all.len().min(seen.len()));
        let since: Vec<Option<u64>> = match threads.is_empty() {
            true => Vec::new(),
            false => match answers.pop() {
                Some(v) => redis::from_redis_value(v).map_err(bad)?,
                None => Vec::new(),
            },
        };
        let follows: Vec<bool> = match answers.pop() {
            Some(v) => redis::from_redis_value(v).map_err(bad)?,
            None => Vec::new(),
        };
        // Each outbox read with its start: a celebrity followed, a thread
        // subscribed to (read from the subscription on).
        let starts = follows
            .into_iter()
            .map(|f| f.then_some(None))
            .chain(since.into_iter().map(|s| s.map(Some)));
        let cursors = all
            .into_iter()
            .zip(starts.zip(seen.into_iter().zip(since_of)))
            .filter_map(|(outbox, (start, (seen, since)))| {
                let start = start?;
                Some(OutboxCursor {
                    outbox,
                    seen: seen.max(start),
                    since: since.max(start),
                })
            })
            .collect();
        Ok(OutboxView {
            cursors,
            read_all,
            read,
        })
    }

    /// Outbox entries after each cursor (at most `limit` per outbox), one
    /// round trip; each with its outbox.
    pub async fn outbox_read(
        &self,
        cursors: &[OutboxCursor],
        limit: usize,
    ) -> Result<Vec<(Outbox, Notification)>> {
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
                .arg(okey(c.outbox, "outbox"))
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
                    key: okey(c.outbox, "outbox"),
                    reason: e.to_string(),
                })?;
                out.push((c.outbox, n));
            }
        }
        Ok(out)
    }

    /// Records how far `user` has read outboxes (outbox, order).
    pub async fn outbox_seen(&self, user: UserId, seen: &[(Outbox, u64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        let mut h = redis::cmd("HSET");
        h.arg(ukey(user, "seen"));
        for (o, at) in seen {
            h.arg(member(*o)).arg(at);
        }
        p.add_command(h).ignore();
        self.run::<()>(&p).await
    }

    /// A new follower of a celebrity starts reading its outbox from now
    /// (its read position, and where its feed starts listing the posts).
    pub async fn outbox_start(
        &self,
        follower: UserId,
        celebrity: UserId,
        order: u64,
    ) -> Result<()> {
        let o = Outbox::User(celebrity);
        let mut p = crate::Batch::new();
        p.cmd("HSET")
            .arg(ukey(follower, "seen"))
            .arg(member(o))
            .arg(order)
            .arg(since_field(o))
            .arg(order)
            .ignore();
        self.run::<()>(&p).await
    }

    /// Marks pulled posts read in `user`'s feed (by id), or every post up
    /// to `all_until` (and forgets the single marks it covers). The marks
    /// live as long as the feed.
    pub async fn outbox_mark_read(
        &self,
        user: UserId,
        ids: &[String],
        all_until: Option<u64>,
    ) -> Result<()> {
        let key = ukey(user, "fr");
        let mut p = crate::Batch::new();
        if let Some(at) = all_until {
            p.cmd("HSET")
                .arg(ukey(user, "seen"))
                .arg(READ_ALL)
                .arg(at)
                .ignore();
            p.cmd("DEL").arg(&key).ignore();
        }
        if !ids.is_empty() {
            p.cmd("SADD").arg(&key);
            for id in ids {
                p.arg(&read_mark(id).to_be_bytes()[..]);
            }
            p.ignore();
            p.cmd("EXPIRE")
                .arg(&key)
                .arg(self.cfg.feed_retention.as_secs().max(1))
                .ignore();
        }
        self.run::<()>(&p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_members_read_back() {
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
