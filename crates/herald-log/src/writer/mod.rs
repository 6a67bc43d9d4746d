//! The writer thread: the only code that writes segment files.
//!
//! Producers send append requests over a bounded channel. The thread takes
//! everything waiting (a round), stages each request (rolling a full
//! segment first, before any of the round's bytes reach it), writes one
//! buffer per partition, makes it durable as the configured [`Durability`]
//! says (in `always` mode one journal record and one fsync for the whole
//! round, shared by every waiting producer: group commit), publishes the new end offsets to readers and only then
//! answers the producers.
//!
//! A round either succeeds whole or leaves no trace: when a write or an
//! fsync fails, every partition touched by the round is cut back to the
//! last byte it had acknowledged (file length and in-memory state), every
//! producer of the round gets the error, and no offset is consumed. A full
//! disk is transient; any other write error and every fsync error poison
//! the log.

mod io;
mod stage;
mod sync;
mod truncate;

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpoints;
use crate::config::{Durability, LogConfig};
use crate::error::{LogError, Result};
use crate::format::BatchHeader;
use crate::health::{HealthCell, LogHealth};
use crate::journal::Journal;
use crate::partition::Shared;

pub type AppendReply = oneshot::Sender<Result<Vec<u64>>>;

/// One Raft log entry to append as its own batch (see `format`).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub meta: crate::format::EntryMeta,
    /// The offset its first record takes: `None` on the leader (the next
    /// offset), the leader's choice on a follower.
    pub base: Option<u64>,
    /// Timestamp of its records, ms (`None`: now).
    pub ts: Option<i64>,
    pub records: Vec<Bytes>,
    /// Blank and membership entries: their body.
    pub body: Bytes,
}

impl NewEntry {
    fn bytes(&self) -> usize {
        self.records.iter().map(|b| b.len()).sum::<usize>() + self.body.len()
    }
}

/// Past this many bytes of records the writer stops folding requests into
/// the round (so a segment overshoots its size by a bounded amount).
const MAX_ROUND_BYTES: usize = 64 << 20;

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
    /// Append Raft entries to one partition, each as its own batch;
    /// answered with each entry's base offset.
    AppendEntries {
        partition: u32,
        entries: Vec<NewEntry>,
        reply: AppendReply,
    },
    /// Cut a partition back to before `from_offset` (a Raft log's
    /// uncommitted tail that a new leader overwrites).
    Truncate {
        partition: u32,
        from_offset: u64,
        from_index: u64,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Cmd {
    fn bytes(&self) -> usize {
        match self {
            Cmd::Append { parts, .. } => parts
                .iter()
                .map(|(_, r)| r.iter().map(|b| b.len()).sum::<usize>())
                .sum(),
            Cmd::AppendEntries { entries, .. } => entries.iter().map(NewEntry::bytes).sum(),
            _ => 0,
        }
    }
}

/// Per-partition state only the writer touches.
struct Active {
    file: std::sync::Arc<File>,
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
    /// Raft entries accepted this round, with their base offsets.
    entries: Vec<(NewEntry, u64)>,
    /// What the last successful round left: a failed round goes back here.
    acked_size: u64,
    /// What the last successful fdatasync of this file covered.
    synced_size: u64,
    acked_offset: u64,
    /// Staged or written this round.
    touched: bool,
    dirty: bool,
}

impl Active {
    fn open(
        path: PathBuf,
        base: u64,
        size: u64,
        next_offset: u64,
        created: Instant,
    ) -> Result<Active> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        Ok(Active {
            file: std::sync::Arc::new(file),
            path,
            base,
            size,
            next_offset,
            created,
            unpublished: Vec::new(),
            staged: Vec::new(),
            staged_bytes: 0,
            entries: Vec::new(),
            acked_size: size,
            synced_size: size,
            acked_offset: next_offset,
            touched: false,
            dirty: false,
        })
    }
}

pub struct Writer {
    dir: PathBuf,
    cfg: LogConfig,
    /// In `always` mode: what makes a small round of several partitions
    /// durable (`journal.rs`).
    journal: Option<Journal>,
    /// This round goes through the journal (see `write_staged`).
    journal_round: bool,
    /// A segment sync failed: the journal is written into the segments
    /// again before the next one (the kernel may have dropped the pages).
    reapply: bool,
    /// Threads that sync a round's partitions beside the writer's own.
    syncs: sync::SyncPool,
    parts: Vec<Shared>,
    active: Vec<Active>,
    checkpoints: Arc<Checkpoints>,
    health: Arc<HealthCell>,
    poisoned: Option<String>,
    /// Each partition's persisted high watermark: no offset at or past it
    /// is handed out before it is moved on.
    reserved: Vec<u64>,
    unsynced_bytes: u64,
    last_sync: Instant,
    last_retention: Instant,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(
        dir: &std::path::Path,
        cfg: LogConfig,
        parts: Vec<Shared>,
        checkpoints: Arc<Checkpoints>,
        health: Arc<HealthCell>,
        reserved: Vec<u64>,
    ) -> Result<Writer> {
        let mut active = Vec::with_capacity(parts.len());
        for p in &parts {
            let st = p.read_state();
            let seg =
                st.segments.values().next_back().ok_or_else(|| {
                    LogError::Config(format!("partition {} has no segment", p.id))
                })?;
            active.push(Active::open(
                seg.path.clone(),
                seg.base,
                seg.size,
                seg.next_offset,
                Instant::now(),
            )?);
        }
        let journal = match cfg.durability {
            Durability::Always => Some(Journal::open(dir)?),
            _ => None,
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            journal,
            journal_round: false,
            reapply: false,
            cfg,
            syncs: sync::SyncPool::default(),
            parts,
            active,
            checkpoints,
            health,
            poisoned: None,
            reserved,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            last_retention: Instant::now(),
            buf: Vec::with_capacity(1 << 20),
        })
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut cmds = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.bytes();
            cmds.push(first);
            while cmds.len() < self.cfg.max_requests_per_round && bytes < MAX_ROUND_BYTES {
                match rx.try_recv() {
                    Ok(c) => {
                        bytes += c.bytes();
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            if self.round(&mut cmds) {
                return;
            }
        }
        // Every handle was dropped without close: sync what is held, but
        // leave no clean-shutdown marker.
        for a in &mut self.active {
            a.dirty = true;
        }
        let _ = self.checkpoint();
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
                    let r = self.stage_request(parts);
                    if let Err(e) = &r {
                        self.note_failure(e);
                    }
                    pending.push((reply, r));
                }
                Cmd::AppendEntries {
                    partition,
                    entries,
                    reply,
                } => {
                    let r = self.stage_entries(partition, entries);
                    if let Err(e) = &r {
                        self.note_failure(e);
                    }
                    pending.push((reply, r));
                }
                Cmd::Truncate {
                    partition,
                    from_offset,
                    from_index,
                    reply,
                } => {
                    let r = self.truncate(partition, from_offset, from_index);
                    if let Err(e) = &r {
                        self.note_failure(e);
                    }
                    let _ = reply.send(r);
                }
                Cmd::Flush(tx) => flushes.push(tx),
                Cmd::Tick => tick = true,
                Cmd::Retain(tx) => {
                    let _ = tx.send(self.enforce_retention());
                }
                Cmd::Close(tx) => close = Some(tx),
            }
        }
        let force = !flushes.is_empty() || close.is_some();
        // A request that poisoned the log (an fsync failed while rolling)
        // fails the whole round.
        let res = match &self.poisoned {
            Some(why) => Err(LogError::Poisoned(why.clone())),
            None => self
                .write_staged()
                .and_then(|()| self.durability_step(force)),
        };
        let failure = match res {
            Ok(()) => {
                self.publish();
                // Only bytes that reached the disk prove there is room again
                // (a round of ticks alone proves nothing).
                let wrote = pending.iter().any(|(_, r)| r.is_ok());
                if wrote && matches!(self.health.get(), LogHealth::Full { .. }) {
                    tracing::info!("log writes succeed again: disk space returned");
                    self.health.set(LogHealth::Ok);
                }
                None
            }
            Err(e) => {
                self.rollback();
                self.note_failure(&e);
                Some(e)
            }
        };
        for (reply, r) in pending {
            let r = match (&failure, r) {
                (Some(f), Ok(_)) => Err(f.for_producer()),
                (_, r) => r,
            };
            let _ = reply.send(r);
        }
        for tx in flushes {
            let _ = tx.send(match &failure {
                Some(f) => Err(f.for_producer()),
                None => Ok(()),
            });
        }
        for a in &mut self.active {
            a.touched = false;
        }
        if tick {
            self.tick();
        }
        if let Some(tx) = close {
            let r = self.close();
            self.health.set(LogHealth::Closed);
            let _ = tx.send(r);
            return true;
        }
        false
    }

    /// The durability step of a round, as the mode says.
    fn durability_step(&mut self, force: bool) -> Result<()> {
        match self.cfg.durability {
            _ if force => self.checkpoint(),
            Durability::Always => self.commit_journal(),
            Durability::Interval { ms, bytes } => {
                if self.last_sync.elapsed() >= std::time::Duration::from_millis(ms)
                    || self.unsynced_bytes >= bytes
                {
                    self.sync_dirty()
                } else {
                    Ok(())
                }
            }
            Durability::Os => Ok(()),
        }
    }

    /// `always` mode: the round is durable once its journal record is, or
    /// (a round the journal does not take) once its segments are synced.
    fn commit_journal(&mut self) -> Result<()> {
        let Some(j) = self.journal.as_mut().filter(|_| self.journal_round) else {
            return self.checkpoint();
        };
        if let Err(e) = j.commit() {
            return Err(match LogError::io(j.path(), e) {
                // Every earlier record was synced by its own round: a full
                // disk only refuses this round, which the rollback cuts.
                full @ LogError::DiskFull { .. } => full,
                err => {
                    tracing::error!(error = %err, "journal write or fsync failed, log poisoned");
                    LogError::Poisoned(format!("journal: {err}"))
                }
            });
        }
        if j.len() >= crate::journal::CHECKPOINT_BYTES {
            if let Err(e) = self.checkpoint() {
                // The round itself is durable; later rounds see the state.
                tracing::warn!(error = %e, "journal checkpoint failed");
                self.note_failure(&e);
            }
        }
        Ok(())
    }

    /// Records what a failure means for the log's health: a full disk is
    /// transient, anything else that reached here poisons.
    fn note_failure(&mut self, e: &LogError) {
        match e {
            LogError::DiskFull { path } => {
                if !matches!(self.health.get(), LogHealth::Full { .. }) {
                    tracing::warn!(path = %path.display(), "log appends refused: disk full");
                }
                self.health.set(LogHealth::Full { path: path.clone() });
            }
            LogError::Poisoned(why) => {
                if self.poisoned.is_none() {
                    self.poisoned = Some(why.clone());
                }
                self.health.set(LogHealth::Poisoned(why.clone()));
            }
            _ => {}
        }
    }
}
