//! The state machine of a replicated partition is the committed prefix of
//! its log: applying an entry only moves the committed offset on, which
//! the partition's fan-out (on the leader) reads up to. Its applied
//! position is saved beside the vote (without fsync: an older one only
//! means entries are applied again, which moves nothing).
//!
//! Its snapshot is where the replica's log starts ([`Start`]): a Raft log
//! id and the offset after it, kept in its own file (fsynced). Retention
//! removes only segments the snapshot covers; a follower further behind
//! than the leader's log is sent the snapshot and continues from it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::durable;
use crate::types::{
    Entry, LogId, LogStart, Placed, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// What readers of a replicated partition may read: offsets below
/// `next_offset` are committed (held by a majority).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Raft index of the last applied entry (`None`: nothing yet).
    pub index: Option<u64>,
    pub next_offset: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    applied: Option<LogId>,
    membership: StoredMembership,
    committed: Committed,
}

/// Where a replica's log starts: entries up to `meta.last_log_id` are
/// covered (retention may remove them; a follower that lacks them starts
/// after them), records continue at `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub meta: SnapshotMeta,
    pub next_offset: u64,
}

impl Start {
    /// The last entry the start covers.
    pub fn last(&self) -> Option<LogId> {
        self.meta.last_log_id
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(LogStart {
                next_offset: self.next_offset,
            }),
        }
    }
}

/// The replica's current start, shared by the machine, its snapshot
/// builder and the retention loop.
pub(crate) type StartCell = Arc<Mutex<Option<Start>>>;
/// The start the retention loop asks the next snapshot to be built at.
pub(crate) type WantCell = Arc<Mutex<Option<(LogId, u64)>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the start saved in `dir` (`None`: the log starts at its first
/// entry). A damaged file is an error: believing it gone could make a
/// replica think it holds entries it does not.
pub fn load_start(dir: &Path) -> Result<Option<Start>, String> {
    durable::load(&dir.join("snapshot")).map_err(|e| format!("snapshot file: {e}"))
}

async fn save_start(dir: PathBuf, s: Start) -> Result<(), StorageError> {
    let meta = s.meta.clone();
    tokio::task::spawn_blocking(move || durable::save(&dir.join("snapshot"), &s, true))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), openraft::AnyError::new(&e))
                .into()
        })
}

/// How often the applied position is saved at most.
const SAVE_EVERY: Duration = Duration::from_secs(1);

pub struct Machine {
    dir: PathBuf,
    path: PathBuf,
    applied: Option<LogId>,
    membership: StoredMembership,
    committed: watch::Sender<Committed>,
    saved_at: Instant,
    start: StartCell,
    want: WantCell,
}

impl Machine {
    /// Opens the machine whose state files are in `dir`; a saved position
    /// past `last_log` (the log lost its tail) is not believed. `start` is
    /// what [`load_start`] read.
    pub fn open(dir: PathBuf, last_log: Option<LogId>, start: Option<Start>) -> Machine {
        let path = dir.join("applied");
        let saved: Saved = match durable::load(&path) {
            Ok(Some(s)) => s,
            Ok(None) => Saved::default(),
            Err(e) => {
                tracing::warn!(error = %e, "applied position unreadable; entries are applied again");
                Saved::default()
            }
        };
        let last_log = last_log.or(start.as_ref().and_then(Start::last));
        let believe = match (saved.applied, last_log) {
            (Some(a), Some(l)) => a.index <= l.index,
            (None, _) => true,
            (Some(_), None) => false,
        };
        let mut saved = if believe { saved } else { Saved::default() };
        // Everything the start covers was applied (it was committed).
        if let Some(s) = &start {
            if saved.applied < s.last() {
                saved.applied = s.last();
                saved.membership = s.meta.last_membership.clone();
                saved.committed = Committed {
                    index: s.last().map(|l| l.index),
                    next_offset: s.next_offset,
                };
            }
        }
        Machine {
            dir,
            path,
            applied: saved.applied,
            membership: saved.membership,
            committed: watch::channel(saved.committed).0,
            saved_at: Instant::now(),
            start: Arc::new(Mutex::new(start)),
            want: WantCell::default(),
        }
    }

    /// A receiver of the committed position.
    pub fn committed(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    pub(crate) fn cells(&self) -> (StartCell, WantCell) {
        (self.start.clone(), self.want.clone())
    }

    fn save(&mut self) {
        let s = Saved {
            applied: self.applied,
            membership: self.membership.clone(),
            committed: *self.committed.borrow(),
        };
        if let Err(e) = durable::save(&self.path, &s, false) {
            tracing::warn!(error = %e, "could not save the applied position");
        }
        self.saved_at = Instant::now();
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Placed>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut c = *self.committed.borrow();
        let mut changed_members = false;
        for e in entries {
            let term = e.log_id.leader_id.term;
            let index = e.log_id.index;
            match e.payload {
                EntryPayload::Normal(p) => {
                    c.next_offset = p.base + p.records.len() as u64;
                    out.push(Placed {
                        base: p.base,
                        index,
                        term,
                    });
                }
                EntryPayload::Blank => out.push(Placed {
                    base: c.next_offset,
                    index,
                    term,
                }),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    changed_members = true;
                    out.push(Placed {
                        base: c.next_offset,
                        index,
                        term,
                    });
                }
            }
            c.index = Some(index);
            self.applied = Some(e.log_id);
        }
        self.committed.send_replace(c);
        if changed_members || self.saved_at.elapsed() >= SAVE_EVERY {
            self.save();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            next_offset: self.committed.borrow().next_offset,
            start: self.start.clone(),
            want: self.want.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<LogStart>, StorageError> {
        Ok(Box::default())
    }

    /// A follower the leader's log no longer reaches: its log continues
    /// after the leader's start (its older entries, if any, are covered).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<LogStart>,
    ) -> Result<(), StorageError> {
        let s = Start {
            meta: meta.clone(),
            next_offset: snapshot.next_offset,
        };
        save_start(self.dir.clone(), s.clone()).await?;
        self.applied = s.last();
        self.membership = meta.last_membership.clone();
        self.committed.send_replace(Committed {
            index: s.last().map(|l| l.index),
            next_offset: s.next_offset,
        });
        tracing::info!(
            last = ?s.last(),
            next_offset = s.next_offset,
            "replica's log continues from the leader's start"
        );
        metrics::counter!("herald_raft_snapshots_installed_total").increment(1);
        *lock(&self.start) = Some(s);
        self.save();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(lock(&self.start).as_ref().map(Start::snapshot))
    }
}

/// Builds a snapshot: at the start the retention loop asked for (or,
/// without one, where the committed log ends), saved before it is used.
pub struct SnapshotBuilder {
    dir: PathBuf,
    applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
    start: StartCell,
    want: WantCell,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let wanted = lock(&self.want).take();
        let (last, next_offset) = match wanted {
            // Only what is applied, and after the membership it carries.
            Some((id, off))
                if Some(id) <= self.applied && self.membership.log_id() <= &Some(id) =>
            {
                (Some(id), off)
            }
            _ => (self.applied, self.next_offset),
        };
        let id = last.map_or_else(
            || "none".to_string(),
            |l| format!("{}-{}", l.leader_id.term, l.index),
        );
        let s = Start {
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            next_offset,
        };
        save_start(self.dir.clone(), s.clone()).await?;
        metrics::counter!("herald_raft_snapshots_built_total").increment(1);
        let snap = s.snapshot();
        *lock(&self.start) = Some(s);
        Ok(snap)
    }
}
