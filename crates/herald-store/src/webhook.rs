//! The webhook's durable queue: notifications parked for the webhook,
//! waiting for their request's `2xx`.
//!
//! One shard per fan-out partition (`h:{wh:P}:...`, one cluster slot), so
//! the partition's owner delivers it:
//! - `items`: hash `user/notification-id` -> the item's JSON (as the
//!   request carries it). A notification parked twice stays one item (the
//!   newest body: an aggregate grows under one id).
//! - `ready`: items not yet in a request, by the time they were parked.
//! - `batches`: hash batch id -> its record (`first_ms attempts field...`,
//!   newline-separated): a request's items are fixed once it is formed,
//!   so every retry carries the same `webhook-id` and the same body.
//! - `due`: batch id -> when it is next sent. A batch being sent is due
//!   again only once its attempt could have timed out.

use std::sync::OnceLock;

use crate::{Result, Store};

/// Most items in one request.
pub const MAX_WEBHOOK_BATCH: usize = 1000;

fn key(p: u32, what: &str) -> String {
    format!("h:{{wh:{p}}}:{what}")
}

// KEYS: items, ready. ARGV: now, then field, body pairs. Returns how many
// were new. A body already queued is replaced (an aggregate re-sent with a
// higher count under its id): its request, formed or not, sends the newest.
const ENQUEUE: &str = r#"
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    n = n + 1
  end
end
return n
"#;

// KEYS: items, ready, due, batches. ARGV: most items, batch id, now,
// first attempt's lease end. Returns {fields, bodies}, empty when nothing
// is ready.
const TAKE: &str = r#"
local f = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
if #f == 0 then return {} end
redis.call('ZREM', KEYS[2], unpack(f))
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3] .. '\n0\n' .. table.concat(f, '\n'))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return {f, redis.call('HMGET', KEYS[1], unpack(f))}
"#;

// KEYS: due, batches. ARGV: now, most batches, lease end. Returns
// {ids, records} of due batches, each now leased.
const CLAIM: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
for i = 1, #ids do redis.call('ZADD', KEYS[1], ARGV[3], ids[i]) end
return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}
"#;

/// One request's worth of parked notifications, fixed once formed.
#[derive(Debug, Clone)]
pub struct WebhookBatch {
    /// The shard (fan-out partition) holding it.
    pub partition: u32,
    /// Its `webhook-id`, the same on every attempt.
    pub id: String,
    /// When it was formed (ms since the epoch): retries stop
    /// `retry_for` after it.
    pub first_ms: u64,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// `user/notification-id` of each item.
    pub fields: Vec<String>,
    /// Each item's JSON (`{"user": ..., "notification": {...}}`); an item
    /// replayed or settled meanwhile is absent.
    pub bodies: Vec<Option<Vec<u8>>>,
}

impl WebhookBatch {
    fn record(&self) -> String {
        let mut s = format!("{}\n{}", self.first_ms, self.attempts);
        for f in &self.fields {
            s.push('\n');
            s.push_str(f);
        }
        s
    }

    fn parse(partition: u32, id: String, record: &str) -> Option<WebhookBatch> {
        let mut parts = record.split('\n');
        let first_ms = parts.next()?.parse().ok()?;
        let attempts = parts.next()?.parse().ok()?;
        Some(WebhookBatch {
            partition,
            id,
            first_ms,
            attempts,
            fields: parts.map(String::from).collect(),
            bodies: Vec::new(),
        })
    }
}

/// The shard (fan-out partition) that holds a user's webhook items.
pub fn webhook_shard(user: herald_types::UserId, partitions: u32) -> u32 {
    (user % u64::from(partitions.max(1))) as u32
}

/// Parks items as dead letters hold them (`{"user": ID, "notification":
/// {"id": ...}}`), each in its user's shard; returns how many were
/// readable (the rest are left out).
pub fn webhook_rows(
    items: &[serde_json::Value],
    partitions: u32,
) -> std::collections::BTreeMap<u32, Vec<(String, Vec<u8>)>> {
    let mut by_shard: std::collections::BTreeMap<u32, Vec<(String, Vec<u8>)>> = Default::default();
    for v in items {
        let (Some(user), Some(id)) = (v["user"].as_u64(), v["notification"]["id"].as_str()) else {
            continue;
        };
        let Ok(body) = serde_json::to_vec(v) else {
            continue;
        };
        by_shard
            .entry(webhook_shard(user, partitions))
            .or_default()
            .push((webhook_field(user, id), body));
    }
    by_shard
}

/// The queue's field for a user's notification.
pub fn webhook_field(user: herald_types::UserId, notification_id: &str) -> String {
    format!("{user}/{notification_id}")
}

fn script(cell: &'static OnceLock<redis::Script>, src: &str) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(src))
}

impl Store {
    /// Parks items (field, JSON body) in shard `p`'s queue; an item
    /// already queued keeps its place and takes the new body. Returns how many were new. With
    /// `redis.wait_replicas`, returns once replicas hold them.
    pub async fn webhook_enqueue(&self, p: u32, items: &[(String, Vec<u8>)]) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        static S: OnceLock<redis::Script> = OnceLock::new();
        let mut inv = script(&S, ENQUEUE).prepare_invoke();
        inv.key(key(p, "items"))
            .key(key(p, "ready"))
            .arg(herald_types::now_ms());
        for (f, b) in items {
            inv.arg(f.as_str()).arg(b.as_slice());
        }
        let n: u64 = match self.inbox_side() {
            Some(side) => {
                let n = side.invoke(&inv).await?;
                side.confirm_replicated(&[key(p, "items")]).await?;
                n
            }
            None => self.invoke(&inv).await?,
        };
        Ok(n)
    }

    /// Forms a batch of up to `max` ready items of shard `p` (none ready:
    /// `None`), sent first now and due again at `lease_ms` unless settled.
    pub async fn webhook_take(
        &self,
        p: u32,
        max: usize,
        id: &str,
        lease_ms: u64,
    ) -> Result<Option<WebhookBatch>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let now = herald_types::now_ms();
        let mut inv = script(&S, TAKE).prepare_invoke();
        inv.key(key(p, "items"))
            .key(key(p, "ready"))
            .key(key(p, "due"))
            .key(key(p, "batches"))
            .arg(max.clamp(1, MAX_WEBHOOK_BATCH))
            .arg(id)
            .arg(now)
            .arg(lease_ms);
        let r: Vec<redis::Value> = self.invoke(&inv).await?;
        let mut r = r.into_iter();
        let (Some(fields), Some(bodies)) = (r.next(), r.next()) else {
            return Ok(None);
        };
        let fields: Vec<String> =
            redis::from_redis_value(fields).map_err(redis::RedisError::from)?;
        let bodies: Vec<Option<Vec<u8>>> =
            redis::from_redis_value(bodies).map_err(redis::RedisError::from)?;
        Ok(Some(WebhookBatch {
            partition: p,
            id: id.to_string(),
            first_ms: now,
            attempts: 0,
            fields,
            bodies,
        }))
    }

    /// Up to `max` batches of shard `p` due now, each leased until
    /// `lease_ms` (not due again while its attempt runs).
    pub async fn webhook_claim(
        &self,
        p: u32,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<WebhookBatch>> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let mut inv = script(&S, CLAIM).prepare_invoke();
        inv.key(key(p, "due"))
            .key(key(p, "batches"))
            .arg(herald_types::now_ms())
            .arg(max.max(1))
            .arg(lease_ms);
        let r: Vec<redis::Value> = self.invoke(&inv).await?;
        let mut r = r.into_iter();
        let (Some(ids), Some(records)) = (r.next(), r.next()) else {
            return Ok(Vec::new());
        };
        let ids: Vec<String> = redis::from_redis_value(ids).map_err(redis::RedisError::from)?;
        let records: Vec<Option<String>> =
            redis::from_redis_value(records).map_err(redis::RedisError::from)?;
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for (id, rec) in ids.into_iter().zip(records) {
            match rec.and_then(|r| WebhookBatch::parse(p, id.clone(), &r)) {
                Some(b) => out.push(b),
                None => lost.push(id),
            }
        }
        if !lost.is_empty() {
            // A due entry without a readable batch: nothing to send.
            let mut b = crate::Batch::new();
            b.cmd("ZREM").arg(key(p, "due")).arg(&lost).ignore();
            b.cmd("HDEL").arg(key(p, "batches")).arg(&lost).ignore();
            self.run::<()>(&b).await?;
        }
        if out.is_empty() {
            return Ok(out);
        }
        let mut b = crate::Batch::new();
        for batch in &out {
            b.cmd("HMGET").arg(key(p, "items")).arg(&batch.fields);
        }
        let bodies: Vec<Vec<Option<Vec<u8>>>> = self.run(&b).await?;
        for (batch, bodies) in out.iter_mut().zip(bodies) {
            batch.bodies = bodies;
        }
        Ok(out)
    }

    /// A batch is settled (its `2xx` came, or its items became dead
    /// letters): it and its items are forgotten.
    pub async fn webhook_done(&self, b: &WebhookBatch) -> Result<()> {
        let p = b.partition;
        let mut q = crate::Batch::new();
        if !b.fields.is_empty() {
            q.cmd("HDEL").arg(key(p, "items")).arg(&b.fields).ignore();
        }
        q.cmd("ZREM").arg(key(p, "due")).arg(&b.id).ignore();
        q.cmd("HDEL").arg(key(p, "batches")).arg(&b.id).ignore();
        self.run::<()>(&q).await
    }

    /// An attempt failed: the batch is sent again at `next_ms`.
    pub async fn webhook_retry(&self, b: &WebhookBatch, next_ms: u64) -> Result<()> {
        let p = b.partition;
        let mut q = crate::Batch::new();
        q.cmd("HSET")
            .arg(key(p, "batches"))
            .arg(&b.id)
            .arg(b.record())
            .ignore();
        q.cmd("ZADD")
            .arg(key(p, "due"))
            .arg(next_ms)
            .arg(&b.id)
            .ignore();
        self.run::<()>(&q).await
    }

    /// Notifications waiting for the webhook in shard `p` (ready or in a
    /// request not yet answered `2xx`).
    pub async fn webhook_backlog(&self, p: u32) -> Result<u64> {
        let mut q = crate::Batch::new();
        q.cmd("HLEN").arg(key(p, "items"));
        let (n,): (u64,) = self.run(&q).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_record_reads_back() {
        let b = WebhookBatch {
            partition: 3,
            id: "wh-1".into(),
            first_ms: 17,
            attempts: 4,
            fields: vec!["2/n-a".into(), "9/n-b@node-1".into()],
            bodies: Vec::new(),
        };
        let back = WebhookBatch::parse(3, "wh-1".into(), &b.record()).unwrap();
        assert_eq!((back.first_ms, back.attempts), (17, 4));
        assert_eq!(back.fields, b.fields);
        assert!(WebhookBatch::parse(3, "x".into(), "junk").is_none());
    }
}
