//! Herald's partitioned, append-only log.
//!
//! A log is a directory holding a directory per partition (`p-00000`, ...),
//! a `checkpoints/` directory and the round journal (`journal`, see
//! [`Durability`]). A partition is a chain of segment files
//! named by their zero-padded base offset (`00000000000000000000.log`),
//! each a sequence of CRC32C-checked record batches (see [`format`]), with a
//! sparse offset index and a time index beside it (`.index`, `.timeindex`),
//! both rebuildable from the segment. Payloads are opaque bytes: the log
//! knows nothing of what it stores.
//!
//! # Writes and durability
//! One writer thread owns every segment file; producers hand it records over
//! a bounded queue ([`Log::append`]) and wait. The thread takes everything
//! waiting, writes one batch per partition, then applies the
//! [`Durability`] mode:
//!
//! - `Always`: durable before anyone is answered. A small round of several
//!   partitions writes its batches to their segments and, with their
//!   place, into one journal record (`journal.rs`); one fdatasync of the
//!   journal serves every producer and every partition of the round
//!   (group commit). A round of one partition or of many bytes syncs its
//!   segments instead. Segments are synced
//!   at a checkpoint about once a second, which empties the journal; opening
//!   a log writes the journal's records into the segments again first. A
//!   crash (process or machine) never loses an acknowledged record. Latency
//!   is two writes plus one fsync.
//! - `Interval { ms, bytes }`: answered once written to the page cache;
//!   fsync at least every `ms` or `bytes`. A process crash loses nothing
//!   (the kernel has the data); a machine crash loses at most the last
//!   interval.
//! - `Os`: never fsync on the write path. Fastest; a machine crash can lose
//!   whatever the kernel had not written back.
//!
//! A round succeeds whole or leaves no trace: a failed write or fsync cuts
//! every partition of the round back to its last acknowledged byte, and
//! every producer of the round gets the error. A full disk is transient
//! ([`LogHealth::Full`]): appends succeed again once space returns. Any
//! other write error and every failed fsync poison the log: every later
//! append fails until it is reopened, because the kernel may have dropped
//! the dirty pages (the lesson of PostgreSQL's "fsyncgate").
//!
//! # Reads
//! [`Log::read`] from any offset, [`Log::offset_for_time`] for a timestamp,
//! [`Log::subscribe`] to be woken by new appends (no polling). Readers only
//! see what the writer has published: in `Always` mode, what is durable.
//!
//! # Recovery
//! A clean close leaves a `.clean` marker per partition. Opening without it
//! validates every batch from the partition's recovery point (the base of
//! the segment that was active at the last roll) and of every segment a
//! consumer has not finished. A torn tail of the last segment is cut. A
//! corrupt batch elsewhere is moved aside exactly (see [`quarantine`]):
//! the scan resynchronises on the next valid batch and keeps everything
//! after it, and the offsets it held become a recorded gap that readers
//! step over. `OnCorruption::Refuse` makes such a log refuse to open
//! instead. Offsets are never handed out twice: a per-partition high
//! watermark is persisted ahead of the offsets in use, and a recovery that
//! may have lost offsets already seen continues past it. Missing or
//! corrupt index files are rebuilt.
//!
//! # Retention
//! Whole closed segments are deleted, oldest first, past `retention_bytes`
//! or `retention_ms`; never the active segment, and never one that a
//! committed consumer has not moved past unless
//! `retention_respects_consumers` is off.
//!
//! # Checkpoints
//! [`Checkpoints`] keeps each consumer group's next offset per partition in
//! a file of two CRC-checked slots: a commit overwrites the older slot in
//! place and fdatasyncs it, so a torn write leaves the slot before.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fault;
pub mod format;
mod health;
mod journal;
mod open;
mod partition;
pub mod quarantine;
mod recover;
mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use checkpoint::Checkpoints;
pub use config::{Durability, LogConfig, OnCorruption};
pub use error::{LogError, Result};
pub use format::{EntryKind, EntryMeta, Record};
pub use health::LogHealth;
pub use partition::StoredEntry;
pub use quarantine::QuarantineReport;
pub use segment::Truncation;
pub use writer::NewEntry;

use partition::Shared;
use writer::Cmd;

/// An open log. Cheap to clone; every clone talks to the same writer.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    partitions: Vec<Shared>,
    /// Always `Some` until drop, which takes it to stop the writer.
    tx: Option<mpsc::Sender<Cmd>>,
    checkpoints: Arc<Checkpoints>,
    /// Holds the exclusive lock on the log directory.
    lock: std::sync::Mutex<Option<std::fs::File>>,
    truncations: Vec<Truncation>,
    health: Arc<health::HealthCell>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it if it was not
    /// closed cleanly. Blocking: call from a blocking context at start-up.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Log> {
        cfg.validate().map_err(LogError::Config)?;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let checkpoints = Arc::new(Checkpoints::open(&dir.join("checkpoints"))?);
        // Rounds the journal holds are put back in their segments before
        // recovery looks at them.
        let replayed = journal::replay(dir, cfg.on_corruption)?;
        let (partitions, mut rec) =
            open::open_partitions(dir, &cfg, &checkpoints, replayed.lost_tail)?;
        rec.quarantined.extend(replayed.quarantined);
        let health = Arc::new(health::HealthCell::new());
        let w = writer::Writer::new(
            dir,
            cfg.clone(),
            partitions.clone(),
            checkpoints.clone(),
            health.clone(),
            rec.reserved,
        )?;
        let (tx, rx) = mpsc::channel(cfg.queue_depth);
        let thread = std::thread::Builder::new()
            .name("herald-log-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| LogError::io(dir, e))?;
        // The ticker drives interval fsyncs, rolls by age and retention; it
        // stops when the writer's channel closes.
        let tick_every = match cfg.durability {
            Durability::Interval { ms, .. } => ms.clamp(1, 1000),
            _ => 1000,
        };
        let tick_tx = tx.downgrade();
        std::thread::Builder::new()
            .name("herald-log-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(tick_every));
                let Some(tx) = tick_tx.upgrade() else { return };
                if tx.is_closed() {
                    return;
                }
                let _ = tx.try_send(Cmd::Tick);
            })
            .map_err(|e| LogError::io(dir, e))?;
        Ok(Log {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                partitions,
                tx: Some(tx),
                checkpoints,
                lock: std::sync::Mutex::new(Some(lock)),
                truncations: rec.truncations,
                health,
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn partitions(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// What recovery cut when this log was opened.
    pub fn truncations(&self) -> &[Truncation] {
        &self.inner.truncations
    }

    /// Whether appends can succeed now (full disk, poisoned, closed).
    pub fn health(&self) -> LogHealth {
        self.inner.health.get()
    }

    /// Every byte range recovery has quarantined in this log (this open and
    /// earlier ones), acknowledged or not.
    pub fn quarantine(&self) -> Result<Vec<QuarantineReport>> {
        quarantine::load(&quarantine::dir(&self.inner.dir))
    }

    /// Marks every quarantine report acknowledged (an operator has looked);
    /// returns how many were not yet.
    pub fn acknowledge_quarantine(&self) -> Result<usize> {
        quarantine::acknowledge(&quarantine::dir(&self.inner.dir))
    }

    /// Sends the writer the command `cmd` makes around a reply channel,
    /// and waits for its answer.
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .sender()?
            .send(cmd(reply))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Appends `records` to `partition`; returns the offset of the first one
    /// once the append is as durable as the log's mode promises.
    pub async fn append(&self, partition: u32, records: Vec<Bytes>) -> Result<u64> {
        let v = self.append_many(vec![(partition, records)]).await?;
        v.first().copied().ok_or(LogError::Closed)
    }

    /// Appends to several partitions in one request (one round of the
    /// writer); returns each part's first offset, in order.
    pub async fn append_many(&self, parts: Vec<(u32, Vec<Bytes>)>) -> Result<Vec<u64>> {
        self.ask(|reply| Cmd::Append { parts, reply }).await
    }

    /// Appends Raft entries to `partition`, each as its own batch (see
    /// [`format`]); returns each one's base offset once the append is as
    /// durable as the log's mode promises. An entry with its own `base`
    /// (a follower's copy of the leader's) must continue the log exactly,
    /// else [`LogError::EntryOutOfPlace`].
    pub async fn append_entries(&self, partition: u32, entries: Vec<NewEntry>) -> Result<Vec<u64>> {
        self.ask(|reply| Cmd::AppendEntries {
            partition,
            entries,
            reply,
        })
        .await
    }

    /// Cuts `partition` back to before its first entry with a Raft index
    /// at or past `from_index` (`hint`: an offset at or before that entry).
    /// The cut is durable when this returns. Only an uncommitted tail may be
    /// cut: readers must not have been given what it removes.
    pub async fn truncate_entries(&self, partition: u32, hint: u64, from_index: u64) -> Result<()> {
        self.ask(|reply| Cmd::Truncate {
            partition,
            from_offset: hint,
            from_index,
            reply,
        })
        .await
    }

    /// Reads Raft entries of `partition` with an index at or past
    /// `min_index`, scanning from offset `hint` (at or before the first
    /// wanted entry), about `max_bytes` of them (at least one if any).
    pub fn read_entries(
        &self,
        partition: u32,
        hint: u64,
        min_index: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredEntry>> {
        self.part(partition)?
            .read_entries(hint, min_index, max_bytes)
    }

    /// Makes everything appended so far durable, whatever the mode.
    pub async fn flush(&self) -> Result<()> {
        self.ask(Cmd::Flush).await
    }

    /// Applies retention now (it also runs every `retention_check_ms`);
    /// returns how many segments were deleted.
    pub async fn enforce_retention(&self) -> Result<usize> {
        self.ask(Cmd::Retain).await
    }

    /// Flushes, writes indexes and clean-shutdown markers and stops the
    /// writer. Appends after this fail with [`LogError::Closed`].
    pub async fn close(&self) -> Result<()> {
        let r = self.ask(Cmd::Close).await;
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // The directory is free for the next opener.
        drop(
            self.inner
                .lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        r
    }

    /// Whether the writer is still running.
    pub fn is_open(&self) -> bool {
        self.inner.tx.as_ref().is_some_and(|t| !t.is_closed())
    }

    fn part(&self, partition: u32) -> Result<&Shared> {
        self.inner
            .partitions
            .get(partition as usize)
            .ok_or(LogError::UnknownPartition(partition))
    }

    /// Reads records of `partition` from `offset` on, about `max_bytes` of
    /// them (at least one if any is readable). Reads the page cache with
    /// positional reads; keep `max_bytes` modest on async threads.
    pub fn read(&self, partition: u32, offset: u64, max_bytes: usize) -> Result<Vec<Record>> {
        self.part(partition)?.read(offset, max_bytes)
    }

    /// The first offset at or after `ts_ms` in `partition`.
    pub fn offset_for_time(&self, partition: u32, ts_ms: i64) -> Result<u64> {
        self.part(partition)?.offset_for_time(ts_ms)
    }

    /// First and one-past-last readable offsets of `partition`.
    pub fn bounds(&self, partition: u32) -> Result<(u64, u64)> {
        let st = self.part(partition)?.read_state();
        Ok((st.start_offset(), st.end_offset()))
    }

    /// Number of segments and bytes held by `partition`.
    pub fn usage(&self, partition: u32) -> Result<(usize, u64)> {
        let st = self.part(partition)?.read_state();
        Ok((st.segments.len(), st.total_bytes()))
    }

    /// A receiver of `partition`'s end offset, changed on every publish.
    pub fn subscribe(&self, partition: u32) -> Result<watch::Receiver<u64>> {
        Ok(self.part(partition)?.end_tx.subscribe())
    }

    pub fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.inner.checkpoints
    }

    /// Retention of `partition` keeps every segment holding records at or
    /// past `offset` (whatever its age or size limits say) until this is
    /// moved on. Without a hold, retention follows its limits alone.
    pub fn hold_retention(&self, partition: u32, offset: u64) -> Result<()> {
        self.part(partition)?
            .retention_floor
            .store(offset, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

impl Inner {
    fn sender(&self) -> Result<&mpsc::Sender<Cmd>> {
        self.tx.as_ref().ok_or(LogError::Closed)
    }
}

impl Drop for Inner {
    /// Dropping the last handle without [`Log::close`] stops the writer
    /// after it writes what it holds, without a clean-shutdown marker, and
    /// waits for it, so the directory is free when this returns.
    fn drop(&mut self) {
        drop(self.tx.take());
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Takes an exclusive, non-blocking lock on `dir/lock`, so two processes
/// never write one log.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(LogError::Locked { path });
    }
    Ok(f)
}
