//! Outboxes (a celebrity's posts, a hot thread's events): writing a post
//! once, each follower's read position and follow start, reading past
//! them, and what a follower marked read in their feed.

use std::collections::HashSet;
use std::sync::Arc;

use herald_types::{Notification, Outbox, UserId};

use crate::celebrity::member;
use crate::{ukey, CelebritySet, Result, Store, StoreError};

// KEYS: outbox, fence. ARGV: partition, term, order, post, cap.
// Returns 1 when written, 0 when fenced.
const OUTBOX_PUSH: &str = r#"
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[5]) - 1)
return 1
"#;

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

/// An outbox's own key (`h:{u:ID}:what` or `h:{t:ID}:what`).
pub(crate) fn okey(o: Outbox, what: &str) -> String {
    match o {
        Outbox::User(u) => ukey(u, what).to_string(),
        Outbox::Thread(t) => format!("h:{{t:{t}}}:{what}"),
    }
}

impl Store {
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
