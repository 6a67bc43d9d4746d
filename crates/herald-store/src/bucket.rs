//! Buckets of notifications waiting for a time: held by quiet hours, or
//! collected for a digest. Each user's bucket is a sorted set of ids (by
//! acceptance order) and a hash of payloads; a schedule per bucket kind and
//! owner partition says when each user's bucket is due, so exactly one
//! worker (the one owning the user's partition) releases it.

use herald_types::{Notification, UserId};

use crate::{ukey, Result, Store, StoreError};

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

    /// Removes released ids from a user's bucket and reschedules it at
    /// `next_ms` if anything arrived meanwhile. The order of the steps
    /// (remove, unschedule, count, reschedule) leaves no item unscheduled
    /// whatever a concurrent `bucket_add` does.
    pub async fn bucket_done(
        &self,
        user: UserId,
        bucket: Bucket,
        partition: u32,
        ids: &[String],
        next_ms: u64,
    ) -> Result<()> {
        let b = bucket.name();
        let mut p = crate::Batch::new();
        if !ids.is_empty() {
            p.cmd("ZREM").arg(ukey(user, b)).arg(ids).ignore();
            p.cmd("HDEL")
                .arg(ukey(user, &format!("{b}:data")))
                .arg(ids)
                .ignore();
        }
        p.cmd("ZREM")
            .arg(sched(bucket, partition))
            .arg(user)
            .ignore();
        p.cmd("ZCARD").arg(ukey(user, b));
        let (left,): (u64,) = self.run(&p).await?;
        if left > 0 {
            let mut p = crate::Batch::new();
            p.cmd("ZADD")
                .arg(sched(bucket, partition))
                .arg("NX")
                .arg(next_ms)
                .arg(user)
                .ignore();
            self.run::<()>(&p).await?;
        }
        Ok(())
    }
}
