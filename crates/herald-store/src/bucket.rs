//! Buckets of notifications waiting for a time: held by quiet hours, or
//! collected for a digest. Each user's bucket is a sorted set of ids (by
//! acceptance order) and a hash of payloads; a schedule per bucket kind and
//! owner partition says when each user's bucket is due, so exactly one
//! worker (the one owning the user's partition) releases it.

use herald_types::{Notification, UserId};

use std::sync::OnceLock;

use crate::{ukey, Fence, Result, Store, StoreError};

// KEYS: the user's entries hash, fence, the inbox's dropped count. ARGV:
// partition, term, the hash's lifetime (s, 0: none), inbox cap, the
// dropped count's lifetime, feed cap, then field, entry (waiting) pairs.
// Returns how many waiting entries the cap dropped, or -1 when fenced.
const RELEASE: &str = r#"
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return -1 end
live(KEYS[1], tonumber(ARGV[3]))
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return cap_waiting(KEYS[1], KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
"#;

// KEYS: bucket, its data, fence. ARGV: partition, term, ids.
// Returns 1 when removed, 0 when fenced.
const DONE: &str = r#"
if fenced(KEYS[3], ARGV[1], ARGV[2]) then return 0 end
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return 1
"#;

pub use herald_types::Bucket;

trait BucketName {
    fn name(self) -> &'static str;
}

impl BucketName for Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Held => "held",
            Bucket::Digest => "digest",
        }
    }
}

fn sched(b: Bucket, partition: u32) -> String {
    format!("h:sched:{}:{partition}", b.name())
}

/// One notification to put in a bucket.
pub struct BucketAdd<'a> {
    pub user: UserId,
    pub bucket: Bucket,
    pub n: &'a Notification,
    /// The partition that owns `user` (its worker releases the bucket).
    pub partition: u32,
    /// When the bucket is due (ms).
    pub release_ms: u64,
}

impl<'a> BucketAdd<'a> {
    /// `n` waits in `user`'s `bucket` until `release_ms`; the bucket is
    /// scheduled on the partition (of `partitions`) that owns `user`, whose
    /// worker releases it. The one way a route's hand-off is built.
    pub fn new(
        user: UserId,
        bucket: Bucket,
        release_ms: u64,
        n: &'a Notification,
        partitions: u32,
    ) -> BucketAdd<'a> {
        BucketAdd {
            user,
            bucket,
            n,
            partition: herald_types::event::partition_for(user, partitions),
            release_ms,
        }
    }
}

impl Store {
    /// Adds notifications to buckets, one pipeline. Idempotent per id.
    pub async fn bucket_add(&self, items: &[BucketAdd<'_>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        for a in items {
            let b = a.bucket.name();
            p.cmd("HSET")
                .arg(ukey(a.user, &format!("{b}:data")))
                .arg(&*a.n.id)
                .arg(a.n.to_storage())
                .ignore();
            p.cmd("ZADD")
                .arg(ukey(a.user, b))
                .arg("NX")
                .arg(a.n.order)
                .arg(&*a.n.id)
                .ignore();
            p.cmd("ZADD")
                .arg(sched(a.bucket, a.partition))
                .arg("NX")
                .arg(a.release_ms)
                .arg(a.user)
                .ignore();
        }
        self.run::<()>(&p).await
    }

    /// Users of `partition` whose `bucket` is due at `now_ms`, with the time
    /// it was due.
    pub async fn bucket_due(
        &self,
        bucket: Bucket,
        partition: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(UserId, u64)>> {
        let mut p = crate::Batch::new();
        p.cmd("ZRANGEBYSCORE")
            .arg(sched(bucket, partition))
            .arg("-inf")
            .arg(now_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1));
        let (due,): (Vec<(UserId, f64)>,) = self.run(&p).await?;
        Ok(due.into_iter().map(|(u, s)| (u, s as u64)).collect())
    }

    /// The oldest `limit` notifications of a user's bucket.
    pub async fn bucket_read(
        &self,
        user: UserId,
        bucket: Bucket,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let b = bucket.name();
        let mut p = crate::Batch::new();
        p.cmd("ZRANGE")
            .arg(ukey(user, b))
            .arg(0)
            .arg(limit.max(1) as i64 - 1);
        let (ids,): (Vec<String>,) = self.run(&p).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        p.cmd("HMGET")
            .arg(ukey(user, &format!("{b}:data")))
            .arg(&ids);
        let (payloads,): (Vec<Option<Vec<u8>>>,) = self.run(&p).await?;
        let mut out = Vec::with_capacity(ids.len());
        for bytes in payloads.into_iter().flatten() {
            out.push(
                Notification::from_storage(&bytes).map_err(|e| StoreError::Corrupt {
                    key: ukey(user, b).to_string(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Writes released notifications of one user's bucket to its inbox:
    /// one script that checks the fence first (`fence.rs`). `Ok(None)`:
    /// refused, a newer leader of the partition already released for this
    /// user; otherwise how many old entries the inbox cap dropped.
    pub async fn bucket_release(
        &self,
        user: UserId,
        items: &[Notification],
        fence: Fence,
    ) -> Result<Option<u64>> {
        if items.is_empty() {
            return Ok(Some(0));
        }
        // With wait_replicas, over the inbox connection (as inbox_push).
        match self.inbox_side() {
            Some(side) => side.release_here(user, items, fence).await,
            None => self.release_here(user, items, fence).await,
        }
    }

    async fn release_here(
        &self,
        user: UserId,
        items: &[Notification],
        fence: Fence,
    ) -> Result<Option<u64>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let refs: Vec<(UserId, &Notification)> = items.iter().map(|n| (user, n)).collect();
        let (bodies, entries) = crate::entries::encode(&refs);
        // Bodies are immutable and named by their event: written unfenced.
        self.write_bodies(&bodies).await?;
        let script = crate::entry_scripts::script(&S, &crate::fence::with_check(RELEASE));
        let mut inv = script.prepare_invoke();
        inv.key(ukey(user, "fd"))
            .key(ukey(user, "fence"))
            .key(ukey(user, "ib:dropped"))
            .arg(fence.partition)
            .arg(fence.term)
            .arg(self.entries_life_s())
            .arg(self.cfg.inbox_cap)
            .arg(self.dropped_life_s())
            .arg(self.cfg.feed_cap);
        for e in entries {
            let mut value = e.value;
            herald_types::compact::set_waiting(&mut value);
            inv.arg(e.field).arg(value);
        }
        let dropped: i64 = self.invoke(&inv).await?;
        let Ok(dropped) = u64::try_from(dropped) else {
            return Ok(None);
        };
        self.confirm_replicated(&[ukey(user, "fd").to_string()])
            .await?;
        Ok(Some(dropped))
    }

    /// Removes released ids from a user's bucket (a script that checks the
    /// fence first; `Ok(false)` when refused) and reschedules the bucket
    /// at `next_ms` if anything arrived meanwhile. The order of the steps
    /// (remove, unschedule, count, reschedule) leaves no item unscheduled
    /// whatever a concurrent `bucket_add` does.
    pub async fn bucket_done(
        &self,
        user: UserId,
        bucket: Bucket,
        fence: Fence,
        ids: &[String],
        next_ms: u64,
    ) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let b = bucket.name();
        let script = S.get_or_init(|| redis::Script::new(&crate::fence::with_check(DONE)));
        let mut inv = script.prepare_invoke();
        inv.key(ukey(user, b))
            .key(ukey(user, &format!("{b}:data")))
            .key(ukey(user, "fence"))
            .arg(fence.partition)
            .arg(fence.term);
        for id in ids {
            inv.arg(id);
        }
        let done: i64 = self.invoke(&inv).await?;
        if done == 0 {
            return Ok(false);
        }
        // The schedule is in a slot of its own: one step after another.
        let sched = sched(bucket, fence.partition);
        let mut p = crate::Batch::new();
        p.cmd("ZREM").arg(&sched).arg(user).ignore();
        self.run::<()>(&p).await?;
        let mut p = crate::Batch::new();
        p.cmd("ZCARD").arg(ukey(user, b));
        let (left,): (u64,) = self.run(&p).await?;
        if left > 0 {
            let mut p = crate::Batch::new();
            p.cmd("ZADD")
                .arg(&sched)
                .arg("NX")
                .arg(next_ms)
                .arg(user)
                .ignore();
            self.run::<()>(&p).await?;
        }
        Ok(true)
    }
}
