//! Term fencing for the effects a replicated partition's leader must make
//! once: celebrity posts to their outbox, dead letters, and the removal of
//! released quiet-hours and digest notifications from their bucket (the
//! fan-out position has its own script, `position.rs`).
//!
//! Each fenced write is a script that first compares the writer's term
//! with the newest term that wrote for the partition to a small hash in
//! the same slot (the resource's own fence): an older term is refused and
//! writes nothing; a newer one is recorded. A leader deposed without
//! knowing it yet can therefore never undo or repeat, on a resource, what
//! a newer leader already wrote there. Term 0 means "not replicated": no
//! check, nothing recorded.

/// The fencing token a write carries: its partition and its leader's term
/// (0 when the partition is not replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fence {
    pub partition: u32,
    pub term: u64,
}

impl Fence {
    /// No fencing (a partition without replication).
    pub fn none(partition: u32) -> Fence {
        Fence { partition, term: 0 }
    }
}

/// The check every fenced script starts with: `fenced(key, partition,
/// term)` is true when a newer term already wrote (refuse), and records
/// `term` when it is the newest.
pub(crate) const CHECK: &str = r#"
local function fenced(key, p, term)
  term = tonumber(term)
  if term == 0 then return false end
  local cur = tonumber(redis.call('HGET', key, p) or '0')
  if cur > term then return true end
  if cur < term then redis.call('HSET', key, p, term) end
  return false
end
"#;

/// A script body with the check before it.
pub(crate) fn with_check(body: &str) -> String {
    format!("{CHECK}\n{body}")
}
