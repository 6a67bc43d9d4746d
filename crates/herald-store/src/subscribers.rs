//! Object subscriptions: who follows a thread (`h:os:OBJECT`, a sorted
//! set of 8-byte big-endian user ids, all scored 0, so it pages in id
//! order by range and a cursor is the last id of a page), and each user's
//! side of it (`h:{u:ID}:threads`, object -> when they subscribed, in
//! microseconds: where they start reading a hot thread's outbox).

use herald_types::UserId;

use crate::{Result, Store, StoreError};

/// Users per page of `GET .../subscribers` at most.
pub const MAX_SUBSCRIBER_PAGE: usize = 1000;

/// The key of `object`'s subscribers.
pub(crate) fn object_key(object: &str) -> Vec<u8> {
    let mut k = b"h:os:".to_vec();
    k.extend_from_slice(object.as_bytes());
    k
}

fn member(u: UserId) -> [u8; 8] {
    u.to_be_bytes()
}

fn user_of(m: &[u8]) -> Result<UserId> {
    let b: [u8; 8] = m.try_into().map_err(|_| StoreError::Corrupt {
        key: "h:os:*".into(),
        reason: format!("a member of {} bytes, not 8", m.len()),
    })?;
    Ok(UserId::from_be_bytes(b))
}

/// One object's subscribers to read, and whether to subscribe an actor
/// after reading them (in that order, one pipeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStep {
    pub object: String,
    /// Read the object's subscribers (answered in order): their count,
    /// and the list unless the count passes `limit` (or `limit` is 0: a
    /// thread known to be on the pull path).
    pub read: Option<u64>,
    /// Then subscribe this user, from this time (microseconds).
    pub subscribe: Option<(UserId, u64)>,
}

/// What a thread step read: the subscribers, or only how many there are
/// (more than its limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadRead {
    Subscribers(Vec<UserId>),
    Many(u64),
}

impl Store {
    /// Subscribes `users` to `object` from `at_us`; the subscriber count
    /// after.
    pub async fn subscribe_object(
        &self,
        object: &str,
        users: &[UserId],
        at_us: u64,
    ) -> Result<u64> {
        self.change_subscribers(object, users, Some(at_us)).await
    }

    /// Unsubscribes `users` from `object`; the subscriber count after.
    pub async fn unsubscribe_object(&self, object: &str, users: &[UserId]) -> Result<u64> {
        self.change_subscribers(object, users, None).await
    }

    async fn change_subscribers(
        &self,
        object: &str,
        users: &[UserId],
        at_us: Option<u64>,
    ) -> Result<u64> {
        let key = object_key(object);
        let mut p = crate::Batch::new();
        if !users.is_empty() {
            p.cmd(if at_us.is_some() { "ZADD" } else { "ZREM" })
                .arg(&key[..]);
            for u in users {
                if at_us.is_some() {
                    p.arg(0);
                }
                p.arg(&member(*u)[..]);
            }
            p.ignore();
            for u in users {
                match at_us {
                    Some(at) => p
                        .cmd("HSET")
                        .arg(crate::ukey(*u, "threads"))
                        .arg(object)
                        .arg(at),
                    None => p.cmd("HDEL").arg(crate::ukey(*u, "threads")).arg(object),
                }
                .ignore();
            }
        }
        p.cmd("ZCARD").arg(&key[..]);
        let (n,): (u64,) = self.run(&p).await?;
        Ok(n)
    }

    /// Which of `candidates` subscribe to `object` (one `ZMSCORE` per
    /// thousand, one round trip).
    pub async fn subscribed_among(
        &self,
        object: &str,
        candidates: &[UserId],
    ) -> Result<Vec<UserId>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let key = object_key(object);
        let mut p = crate::Batch::new();
        for chunk in candidates.chunks(1000) {
            p.cmd("ZMSCORE").arg(&key[..]);
            for u in chunk {
                p.arg(&member(*u)[..]);
            }
        }
        let answers: Vec<Vec<Option<f64>>> = self.run(&p).await?;
        Ok(candidates
            .chunks(1000)
            .zip(answers)
            .flat_map(|(c, a)| {
                c.iter()
                    .zip(a)
                    .filter(|(_, s)| s.is_some())
                    .map(|(u, _)| *u)
            })
            .collect())
    }

    /// A page of `object`'s subscribers in id order after `after` (none:
    /// from the first), at most `limit`; the cursor of the next page when
    /// there may be more.
    pub async fn subscribers_page(
        &self,
        object: &str,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<(Vec<UserId>, Option<UserId>)> {
        let limit = limit.clamp(1, MAX_SUBSCRIBER_PAGE);
        let from = match after {
            Some(u) => {
                let mut b = b"(".to_vec();
                b.extend_from_slice(&member(u));
                b
            }
            None => b"-".to_vec(),
        };
        let mut p = crate::Batch::new();
        p.cmd("ZRANGEBYLEX")
            .arg(object_key(object))
            .arg(from)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let (page,): (Vec<Vec<u8>>,) = self.run(&p).await?;
        let users = page
            .iter()
            .map(|m| user_of(m))
            .collect::<Result<Vec<_>>>()?;
        let next = (users.len() == limit)
            .then(|| users.last().copied())
            .flatten();
        Ok((users, next))
    }

    /// Runs thread steps in order in one pipeline: each read answers the
    /// object's subscribers as they were before the steps after it. A read
    /// is a count and at most `limit + 1` members (never the whole of a
    /// large thread).
    pub async fn threads(&self, steps: &[ThreadStep]) -> Result<Vec<ThreadRead>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        let mut reads = Vec::new();
        for s in steps {
            let key = object_key(&s.object);
            if let Some(limit) = s.read {
                p.cmd("ZCARD").arg(&key[..]);
                if limit > 0 {
                    p.cmd("ZRANGE").arg(&key[..]).arg(0).arg(limit);
                }
                reads.push(limit);
            }
            if let Some((u, at)) = s.subscribe {
                p.cmd("ZADD")
                    .arg(&key[..])
                    .arg(0)
                    .arg(&member(u)[..])
                    .ignore();
                p.cmd("HSET")
                    .arg(crate::ukey(u, "threads"))
                    .arg(&s.object)
                    .arg(at)
                    .ignore();
            }
        }
        if reads.is_empty() {
            self.run::<()>(&p).await?;
            return Ok(Vec::new());
        }
        let answers: Vec<redis::Value> = self.run(&p).await?;
        let mut answers = answers.into_iter();
        let bad = |e: redis::ParsingError| StoreError::Corrupt {
            key: "h:os:*".into(),
            reason: e.to_string(),
        };
        let mut out = Vec::with_capacity(reads.len());
        for limit in reads {
            let count: u64 = match answers.next() {
                Some(v) => redis::from_redis_value(v).map_err(bad)?,
                None => 0,
            };
            if limit == 0 {
                out.push(ThreadRead::Many(count));
                continue;
            }
            let page: Vec<Vec<u8>> = match answers.next() {
                Some(v) => redis::from_redis_value(v).map_err(bad)?,
                None => Vec::new(),
            };
            out.push(match count > limit {
                true => ThreadRead::Many(count),
                false => {
                    ThreadRead::Subscribers(page.iter().map(|m| user_of(m)).collect::<Result<_>>()?)
                }
            });
        }
        Ok(out)
    }
}
