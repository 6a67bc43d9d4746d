//! The writer thread: the only code that writes segment files.
//!
//! Producers send append requests over a bounded channel. The thread takes
//! everything waiting, writes one batch per partition, makes it durable as
//! the configured [`Durability`] says (one fsync per touched partition shared
//! by every waiting producer: group commit), publishes the new end offsets to
//! readers and only then answers the producers.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpoints;
use crate::config::{Durability, LogConfig};
use crate::error::{LogError, Result};
use crate::format::BatchHeader;
use crate::partition::Shared;

pub type AppendReply = oneshot::Sender<Result<Vec<u64>>>;

pub enum Cmd {
    /// Append records to partitions; answered with each part's base offset.
    Append {
        parts: Vec<(u32, Vec<Bytes>)>,
        reply: AppendReply,
    },
    /// Make everything written so far durable.
    Flush(oneshot::Sender<Result<()>>),
    /// Apply retention now; answered with the number of segments deleted.
    Retain(oneshot::Sender<Result<usize>>),
    /// Periodic work: interval fsync, age-based rolls, retention.
    Tick,
    /// Flush, write indexes and clean-shutdown markers, then stop.
    Close(oneshot::Sender<Result<()>>),
}

/// Per-partition state only the writer touches.
struct Active {
    file: File,
    path: PathBuf,
    base: u64,
    size: u64,
    next_offset: u64,
    created: Instant,
    /// Batches written but not yet published to readers.
    unpublished: Vec<(BatchHeader, u64)>,
    /// Records accepted this round, not yet encoded.
    staged: Vec<Bytes>,
    staged_bytes: u64,
    /// File size at the start of the round, to undo a failed write.
    round_start_size: u64,
    round_start_offset: u64,
    dirty: bool,
}

pub struct Writer {
    cfg: LogConfig,
    parts: Vec<Shared>,
    active: Vec<Active>,
    checkpoints: Arc<Checkpoints>,
    poisoned: Option<String>,
    unsynced_bytes: u64,
    last_sync: Instant,
    last_retention: Instant,
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(
        cfg: LogConfig,
        parts: Vec<Shared>,
        checkpoints: Arc<Checkpoints>,
    ) -> Result<Writer> {
        let mut active = Vec::with_capacity(parts.len());
        for p in &parts {
            let st = p.read_state();
            let seg =
                st.segments.values().next_back().ok_or_else(|| {
                    LogError::Config(format!("partition {} has no segment", p.id))
                })?;
            let file = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(|e| LogError::io(&seg.path, e))?;
            active.push(Active {
                file,
                path: seg.path.clone(),
                base: seg.base,
                size: seg.size,
                next_offset: seg.next_offset,
                created: Instant::now(),
                unpublished: Vec::new(),
                staged: Vec::new(),
                staged_bytes: 0,
                round_start_size: seg.size,
                round_start_offset: seg.next_offset,
                dirty: false,
            });
        }
        Ok(Writer {
            cfg,
            parts,
            active,
            checkpoints,
            poisoned: None,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            last_retention: Instant::now(),
            buf: Vec::with_capacity(1 << 20),
        })
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut cmds = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            cmds.push(first);
            while cmds.len() < self.cfg.max_requests_per_round {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            if self.round(&mut cmds) {
                return;
            }
        }
        // Every handle was dropped without close: write and sync what is
        // held, but leave no clean-shutdown marker.
        if self.write_buffered().is_ok() {
            for a in &mut self.active {
                a.dirty = true;
            }
            let _ = self.sync_dirty();
        }
    }

    /// Handles one round of commands; returns true when the log closed.
    fn round(&mut self, cmds: &mut Vec<Cmd>) -> bool {
        let mut pending: Vec<(AppendReply, Result<Vec<u64>>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut close = None;
        let mut tick = false;
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Append { parts, reply } => {
                    let r = self.append(parts);
                    pending.push((reply, r));
                }
                Cmd::Flush(tx) => flushes.push(tx),
                Cmd::Tick => tick = true,
                Cmd::Retain(tx) => {
                    let _ = tx.send(self.enforce_retention());
                }
                Cmd::Close(tx) => close = Some(tx),
            }
        }
        let write_res = self.write_buffered();
        let sync_res = match (&write_res, self.cfg.durability) {
            (Err(_), _) => Ok(()),
            _ if !flushes.is_empty() || close.is_some() => self.sync_dirty(),
            (_, Durability::Always) => self.sync_dirty(),
            (_, Durability::Interval { ms, bytes }) => {
                if self.last_sync.elapsed() >= Duration::from_millis(ms)
                    || self.unsynced_bytes >= bytes
                {
                    self.sync_dirty()
                } else {
                    Ok(())
                }
            }
            (_, Durability::Os) => Ok(()),
        };
        let failure = match (write_res, sync_res) {
            (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if failure.is_none() {
            self.publish();
        }
        for (reply, r) in pending {
            let r = match (&failure, r) {
                (Some(f), Ok(_)) => Err(LogError::Poisoned(f.clone())),
                (_, r) => r,
            };
            let _ = reply.send(r);
        }
        for tx in flushes {
            let _ = tx.send(match &failure {
                Some(f) => Err(LogError::Poisoned(f.clone())),
                None => Ok(()),
            });
        }
        if tick {
            self.tick();
        }
        if let Some(tx) = close {
            let _ = tx.send(self.close());
            return true;
        }
        false
    }

    /// Encodes the records of one request into the pending buffer. Nothing
    /// reaches the file until `write_buffered`.
    fn append(&mut self, parts: Vec<(u32, Vec<Bytes>)>) -> Result<Vec<u64>> {
        if let Some(p) = &self.poisoned {
            return Err(LogError::Poisoned(p.clone()));
        }
        for (p, recs) in &parts {
            if *p as usize >= self.active.len() {
                return Err(LogError::UnknownPartition(*p));
            }
            for r in recs {
                if r.len() > self.cfg.max_record_bytes {
                    return Err(LogError::RecordTooLarge {
                        size: r.len(),
                        limit: self.cfg.max_record_bytes,
                    });
                }
            }
        }
        let mut bases = Vec::with_capacity(parts.len());
        for (p, recs) in parts {
            let p = p as usize;
            if self.active[p].size > 0
                && self.active[p].size + self.pending_len(p) >= self.cfg.segment_bytes
            {
                self.write_partition(p)?;
                self.roll(p)?;
            }
            let base = self.active[p].next_offset + self.pending_count(p);
            bases.push(base);
            self.stage(p, recs);
        }
        Ok(bases)
    }
}

#[path = "writer_io.rs"]
mod io;
