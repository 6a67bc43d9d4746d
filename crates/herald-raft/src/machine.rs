//! The state machine of a replicated partition is the committed prefix of
//! its log: applying an entry only moves the committed offset on, which
//! the partition's fan-out (on the leader) reads up to. Its applied
//! position is saved beside the vote (without fsync: an older one only
//! means entries are applied again, which moves nothing).

use std::path::PathBuf;
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

/// How often the applied position is saved at most.
const SAVE_EVERY: Duration = Duration::from_secs(1);

pub struct Machine {
    path: PathBuf,
    applied: Option<LogId>,
    membership: StoredMembership,
    committed: watch::Sender<Committed>,
    saved_at: Instant,
}

impl Machine {
    /// Opens the machine whose state file is `dir/applied`; a saved
    /// position past `last_log` (the log lost its tail) is not believed.
    pub fn open(dir: PathBuf, last_log: Option<LogId>) -> Machine {
        let path = dir.join("applied");
        let saved: Saved = match durable::load(&path) {
            Ok(Some(s)) => s,
            Ok(None) => Saved::default(),
            Err(e) => {
                tracing::warn!(error = %e, "applied position unreadable; entries are applied again");
                Saved::default()
            }
        };
        let believe = match (saved.applied, last_log) {
            (Some(a), Some(l)) => a.index <= l.index,
            (None, _) => true,
            (Some(_), None) => false,
        };
        let saved = if believe { saved } else { Saved::default() };
        Machine {
            path,
            applied: saved.applied,
            membership: saved.membership,
            committed: watch::channel(saved.committed).0,
            saved_at: Instant::now(),
        }
    }

    /// A receiver of the committed position.
    pub fn committed(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
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
            applied: self.applied,
            membership: self.membership.clone(),
            next_offset: self.committed.borrow().next_offset,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<LogStart>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: Box<LogStart>,
    ) -> Result<(), StorageError> {
        // A leader sends a snapshot only for entries retention removed;
        // starting a replica's log mid-way is not supported yet.
        let e = std::io::Error::other(format!(
            "a replica cannot start its log at {:?}: the leader no longer holds the entries it needs",
            meta.last_log_id
        ));
        Err(
            StorageIOError::write_snapshot(Some(meta.signature()), openraft::AnyError::new(&e))
                .into(),
        )
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(None)
    }
}

/// Builds a snapshot: where the committed log ends.
pub struct SnapshotBuilder {
    applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let id = self.applied.map_or_else(
            || "none".to_string(),
            |l| format!("{}-{}", l.leader_id.term, l.index),
        );
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            snapshot: Box::new(LogStart {
                next_offset: self.next_offset,
            }),
        })
    }
}
