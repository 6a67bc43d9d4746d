//! Object subscriptions: who follows a thread (`h:os:OBJECT`, a sorted
//! set of 8-byte big-endian user ids, all scored 0, so it pages in id
//! order by range and a cursor is the last id of a page).

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
    /// Read the object's subscribers (answered in order).
    pub read: bool,
    /// Then subscribe this user.
    pub subscribe: Option<UserId>,
}

impl Store {
    /// Subscribes `users` to `object`; the subscriber count after.
    pub async fn subscribe_object(&self, object: &str, users: &[UserId]) -> Result<u64> {
        self.change_subscribers(object, users, "ZADD").await
    }

    /// Unsubscribes `users` from `object`; the subscriber count after.
    pub async fn unsubscribe_object(&self, object: &str, users: &[UserId]) -> Result<u64> {
        self.change_subscribers(object, users, "ZREM").await
    }

    async fn change_subscribers(&self, object: &str, users: &[UserId], op: &str) -> Result<u64> {
        let key = object_key(object);
        let mut p = crate::Batch::new();
        if !users.is_empty() {
            p.cmd(op).arg(&key[..]);
            for u in users {
                if op == "ZADD" {
                    p.arg(0);
                }
                p.arg(&member(*u)[..]);
            }
            p.ignore();
        }
        p.cmd("ZCARD").arg(&key[..]);
        let (n,): (u64,) = self.run(&p).await?;
        Ok(n)
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
    /// object's subscribers as they were before the steps after it.
    pub async fn threads(&self, steps: &[ThreadStep]) -> Result<Vec<Vec<UserId>>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        let mut reads = 0;
        for s in steps {
            let key = object_key(&s.object);
            if s.read {
                p.cmd("ZRANGE").arg(&key[..]).arg(0).arg(-1);
                reads += 1;
            }
            if let Some(u) = s.subscribe {
                p.cmd("ZADD")
                    .arg(&key[..])
                    .arg(0)
                    .arg(&member(u)[..])
                    .ignore();
            }
        }
        if reads == 0 {
            self.run::<()>(&p).await?;
            return Ok(Vec::new());
        }
        let pages: Vec<Vec<Vec<u8>>> = self.run(&p).await?;
        pages
            .iter()
            .map(|page| page.iter().map(|m| user_of(m)).collect())
            .collect()
    }
}
