//! Dead letters: log records fan-out could not process after bounded
//! retries, kept with the reason and the original event until an operator
//! replays or inspects them. Ids are `dl-<partition>-<offset>`, so writing
//! the same dead letter twice (after a crash) keeps one entry.

use serde::{Deserialize, Serialize};

use std::sync::OnceLock;

use crate::{Fence, Result, Store, StoreError};

const DATA: &str = "h:{dlq}";
const ORDER: &str = "h:{dlq}:order";
const FENCE: &str = "h:{dlq}:fence";

// KEYS: data, order, fence. ARGV: partition, term, id, json, at_ms.
// Returns how many dead letters there are, or -1 when fenced.
const PUT: &str = r#"
if fenced(KEYS[3], ARGV[1], ARGV[2]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
return redis.call('ZCARD', KEYS[2])
"#;

/// Most dead letters kept; past it the oldest go (counted by the caller's
/// metric when they were written).
pub const MAX_DEAD_LETTERS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
    pub at_ms: i64,
    /// The original event, when the record could be decoded.
    pub event: Option<herald_types::LogEvent>,
    /// The raw record (hex) when it could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_hex: Option<String>,
    /// A notification the webhook never got a `2xx` for, within its retry
    /// budget: the request's item (`{"user": ..., "notification": {...}}`).
    /// Replaying it parks it for the webhook again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<serde_json::Value>,
}

impl DeadLetter {
    pub fn id_for(partition: u32, offset: u64) -> String {
        format!("dl-{partition}-{offset}")
    }

    /// The id of a webhook item's dead letter (one per user and
    /// notification).
    pub fn webhook_id_for(field: &str) -> String {
        format!("dl-wh-{field}")
    }
}

/// A dead letter as stored (JSON).
fn encode(d: &DeadLetter) -> Result<String> {
    serde_json::to_string(d).map_err(|e| StoreError::Corrupt {
        key: DATA.into(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Stores a dead letter (idempotent by id) and trims the oldest past
    /// [`MAX_DEAD_LETTERS`]. `Ok(false)`: refused, a newer leader of the
    /// partition already wrote dead letters (`fence.rs`).
    pub async fn dead_letter_put(&self, d: &DeadLetter, fence: Fence) -> Result<bool> {
        static S: OnceLock<redis::Script> = OnceLock::new();
        let json = encode(d)?;
        let script = S.get_or_init(|| redis::Script::new(&crate::fence::with_check(PUT)));
        let mut inv = script.prepare_invoke();
        inv.key(DATA)
            .key(ORDER)
            .key(FENCE)
            .arg(fence.partition)
            .arg(fence.term)
            .arg(&d.id)
            .arg(json)
            .arg(d.at_ms);
        let n: i64 = self.invoke(&inv).await?;
        let Ok(n) = usize::try_from(n) else {
            return Ok(false);
        };
        self.dead_letters_trim(n).await?;
        Ok(true)
    }

    /// Stores webhook items' dead letters (idempotent by id; not fenced:
    /// a webhook item is settled once, and a second copy of its letter
    /// is the same letter). Trims the oldest past [`MAX_DEAD_LETTERS`].
    pub async fn dead_letters_put_webhook(&self, list: &[DeadLetter]) -> Result<()> {
        if list.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        for d in list {
            let json = encode(d)?;
            p.cmd("HSET").arg(DATA).arg(&d.id).arg(json).ignore();
            p.cmd("ZADD").arg(ORDER).arg(d.at_ms).arg(&d.id).ignore();
        }
        p.cmd("ZCARD").arg(ORDER);
        let (n,): (usize,) = self.run(&p).await?;
        self.dead_letters_trim(n).await?;
        Ok(())
    }

    /// The oldest `limit` dead letters.
    pub async fn dead_letter_list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        p.cmd("ZRANGE").arg(ORDER).arg(0).arg(limit as i64 - 1);
        let (ids,): (Vec<String>,) = self.run(&p).await?;
        self.dead_letter_get(&ids).await
    }

    /// The dead letters with these ids (missing ones are skipped).
    pub async fn dead_letter_get(&self, ids: &[String]) -> Result<Vec<DeadLetter>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        p.cmd("HMGET").arg(DATA).arg(ids);
        let (vals,): (Vec<Option<String>>,) = self.run(&p).await?;
        let mut out = Vec::new();
        for (id, v) in ids.iter().zip(vals) {
            let Some(v) = v else { continue };
            match serde_json::from_str::<DeadLetter>(&v) {
                Ok(d) => out.push(d),
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        key: format!("{DATA}#{id}"),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Drops the oldest past [`MAX_DEAD_LETTERS`], given how many there
    /// are (`n`).
    async fn dead_letters_trim(&self, n: usize) -> Result<()> {
        if n <= MAX_DEAD_LETTERS {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        p.cmd("ZRANGE")
            .arg(ORDER)
            .arg(0)
            .arg((n - MAX_DEAD_LETTERS - 1) as i64);
        let (old,): (Vec<String>,) = self.run(&p).await?;
        self.dead_letter_remove(&old).await
    }

    /// Forgets these dead letters.
    pub async fn dead_letter_remove(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut p = crate::Batch::new();
        p.cmd("HDEL").arg(DATA).arg(ids).ignore();
        p.cmd("ZREM").arg(ORDER).arg(ids).ignore();
        self.run::<()>(&p).await
    }

    /// How many dead letters are kept.
    pub async fn dead_letter_count(&self) -> Result<u64> {
        let mut p = crate::Batch::new();
        p.cmd("ZCARD").arg(ORDER);
        let (n,): (u64,) = self.run(&p).await?;
        Ok(n)
    }
}
