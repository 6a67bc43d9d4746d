//! Log configuration.

/// When an append is made durable. See the crate docs for the trade-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the append is acknowledged; one fsync per partition is
    /// shared by every producer waiting in the same round (group commit).
    Always,
    /// fsync at least every `ms` milliseconds or `bytes` bytes, whichever
    /// comes first; an append is acknowledged once written.
    Interval { ms: u64, bytes: u64 },
    /// Never fsync on the write path; the OS writes back when it likes.
    Os,
}

/// What recovery does with a corrupt batch that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    /// Move the bad byte range aside, keep every valid batch after it,
    /// report it and open.
    Quarantine,
    /// Refuse to open, naming the file and byte position.
    Refuse,
}

/// How a log is laid out and kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Number of partitions. Fixed once the log exists.
    pub partitions: u32,
    pub durability: Durability,
    /// Roll the active segment once it reaches this many bytes.
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (ms).
    pub segment_ms: u64,
    /// A sparse index entry every this many bytes of segment.
    pub index_interval_bytes: u64,
    /// Keep at most this many bytes per partition (whole closed segments).
    pub retention_bytes: Option<u64>,
    /// Delete closed segments whose newest record is older than this (ms).
    pub retention_ms: Option<u64>,
    /// Never delete a segment a committed consumer has not moved past.
    pub retention_respects_consumers: bool,
    /// How often retention runs (ms).
    pub retention_check_ms: u64,
    /// The largest record accepted.
    pub max_record_bytes: usize,
    /// Appends waiting for the writer thread before producers wait.
    pub queue_depth: usize,
    /// Most requests the writer folds into one round.
    pub max_requests_per_round: usize,
    /// What recovery does with corruption.
    pub on_corruption: OnCorruption,
    /// The first offset of a partition that starts empty (no segment, no
    /// watermark: a new log, or a wiped disk). Herald passes the time in
    /// microseconds, so a log made again on a wiped disk hands out offsets
    /// (event ids) past every one its predecessor could have used (as long
    /// as the clock did not go back and a partition took under one record
    /// per microsecond). 0 by default.
    pub fresh_base: u64,
    /// The partitions hold Raft logs whose offsets the leader decides
    /// (herald-raft): recovery never moves a partition past its high
    /// watermark (what a replica lost, its leader sends again), every
    /// replica starts at 0, and `fresh_base` is where a leader puts the
    /// first records of a partition that never held any (followers take
    /// the leader's offsets, jumps included).
    pub replicated: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // The same default as `herald_types::event::DEFAULT_PARTITIONS`
            // (the log knows nothing of Herald's types).
            partitions: 8,
            durability: Durability::Always,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 60 * 60 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_respects_consumers: true,
            retention_check_ms: 10_000,
            max_record_bytes: 1024 * 1024,
            queue_depth: 4096,
            max_requests_per_round: 4096,
            on_corruption: OnCorruption::Quarantine,
            fresh_base: 0,
            replicated: false,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.partitions > 4096 {
            return Err("partitions must be between 1 and 4096".into());
        }
        // Index positions are u32 and a round may run past the limit by up
        // to MAX_ROUND_BYTES: keep a margin.
        if self.segment_bytes < 4096 || self.segment_bytes > 1 << 31 {
            return Err("segment_bytes must be between 4 KiB and 2 GiB".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if self.queue_depth == 0 || self.max_requests_per_round == 0 {
            return Err("queue_depth and max_requests_per_round must be positive".into());
        }
        if let Durability::Interval { ms, bytes } = self.durability {
            if ms == 0 || bytes == 0 {
                return Err("interval durability needs positive ms and bytes".into());
            }
        }
        Ok(())
    }
}
