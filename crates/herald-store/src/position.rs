//! A replicated partition's fan-out position, fenced by Raft term.
//!
//! The leader of a partition (herald-raft) processes its records and
//! saves how far everything is settled here, with its term. The save is a
//! script that refuses a term older than the one stored: a leader that was
//! deposed (frozen, cut off) and wakes cannot move the position of a
//! partition that a newer leader runs. A new leader starts from this
//! position, so nothing settled is processed again beyond at least once.

use std::sync::OnceLock;

use crate::{Result, Store};

/// One hash for every partition (one slot): field `P` = `"term offset"`.
const KEY: &str = "h:{fanout}:pos";

// KEYS[1] = the hash. ARGV: partition, term, offset.
// Returns 1 when saved, 0 when a newer term holds the partition. An offset
// never goes back within a term.
// Lua numbers are doubles: offsets (up to 2^53 here) compare exactly, but
// are written back as the strings they came as (formatting a large double
// would give "1.7962533613710e+15").
const SAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local term, off = tonumber(ARGV[2]), tonumber(ARGV[3])
local keep = ARGV[3]
if cur then
  local ts, os = string.match(cur, '^(%d+) (%d+)$')
  local t, o = tonumber(ts), tonumber(os)
  if t and t > term then return 0 end
  if t == term and o > off then keep = os end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. keep)
return 1
"#;

/// What the position hash holds for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub term: u64,
    pub offset: u64,
}

impl Store {
    /// Saves partition `p`'s settled position under `term`; `Ok(false)`
    /// when a newer term owns it (this node no longer leads).
    pub async fn save_position(&self, p: u32, term: u64, offset: u64) -> Result<bool> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(SAVE));
        let mut inv = script.prepare_invoke();
        inv.key(KEY).arg(p).arg(term).arg(offset);
        let r: i64 = self.invoke(&inv).await?;
        Ok(r == 1)
    }

    /// Partition `p`'s saved position, if any.
    pub async fn position(&self, p: u32) -> Result<Option<Position>> {
        let mut b = crate::Batch::new();
        b.cmd("HGET").arg(KEY).arg(p);
        let (v,): (Option<String>,) = self.run(&b).await?;
        Ok(v.and_then(|s| {
            let (t, o) = s.split_once(' ')?;
            Some(Position {
                term: t.parse().ok()?,
                offset: o.parse().ok()?,
            })
        }))
    }
}
