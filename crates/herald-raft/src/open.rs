//! Opening and closing one partition's replica on this node: its store,
//! state machine, Raft group and the loops that serve it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::group::{Group, Replicas};
use crate::machine::Machine;
use crate::net::Network;
use crate::propose::QUEUE;
use crate::store::PartitionStore;
use crate::types::Raft;

/// The file that marks a replica this node gave up (the partition's group
/// removed it): its files stay, it is not started again unless the
/// partition's replicas come back here.
pub(crate) const LEFT: &str = "left";

/// Runs `fut` until it ends or `stop` turns true.
fn spawn_until(
    mut stop: watch::Receiver<bool>,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
}

/// The directory of `partition`'s Raft files under `dir`.
pub(crate) fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("p-{partition:05}"))
}

/// Whether this node holds files of `partition`'s replica it has not given
/// up: such a replica is started whatever the placement says (it may be
/// a member still; its leader decides).
pub(crate) fn has_state(dir: &Path, partition: u32) -> bool {
    let d = partition_dir(dir, partition);
    d.join("vote").exists() && !d.join(LEFT).exists()
}

impl Replicas {
    /// Opens `p`'s replica. `may_form`: it may initialize the group (a
    /// new cluster) once a majority of its replica set is as empty as it.
    pub(crate) async fn open_group(&self, p: u32, may_form: bool) -> Result<Group, String> {
        let me = self.me;
        let pdir = partition_dir(&self.dir, p);
        std::fs::create_dir_all(&pdir).map_err(|e| format!("{}: {e}", pdir.display()))?;
        // Taken back: it is a replica again (its files are its log).
        let _ = std::fs::remove_file(pdir.join(LEFT));
        let start = crate::machine::load_start(&pdir).map_err(|e| format!("partition {p}: {e}"))?;
        let (l, d, s) = (
            self.log.clone(),
            pdir.clone(),
            start
                .as_ref()
                .and_then(|s| s.last().map(|id| (id, s.next_offset))),
        );
        let store = tokio::task::spawn_blocking(move || PartitionStore::open(l, p, d, s))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("partition {p}: {e}"))?;
        let machine = Machine::open(pdir, store.last_log_id(), start);
        let (start_cell, want_cell) = machine.cells();
        let committed = machine.committed();
        let net = Network {
            transport: self.transport.clone(),
            partition: p,
        };
        let set = self.topo.placement(p);
        let preferred = crate::topology::preferred(&set, p);
        let raft = Raft::new(
            me,
            self.raft_config(preferred == Some(me))?,
            net,
            store.clone(),
            machine,
        )
        .await
        .map_err(|e| format!("partition {p}: {e}"))?;
        let (stop, stop_rx) = watch::channel(false);
        let refilling = Arc::new(AtomicBool::new(false));
        spawn_until(
            stop_rx.clone(),
            crate::init::form(
                raft.clone(),
                self.transport.clone(),
                crate::init::Formation {
                    partition: p,
                    me: self.cfg.node.clone(),
                    members: set
                        .iter()
                        .filter_map(|id| self.topo.peer(*id).map(|pa| (*id, pa)))
                        .collect(),
                    preferred: preferred.unwrap_or(me),
                    refilling: refilling.clone(),
                    may_form,
                    others: self.topo.known(),
                },
            ),
        );
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(crate::propose::propose_loop(p, raft.clone(), rx));
        let leaving = Arc::new(AtomicBool::new(false));
        spawn_until(
            stop_rx.clone(),
            crate::retain::retain_loop(crate::retain::Retain {
                partition: p,
                raft: raft.clone(),
                store: store.clone(),
                log: self.log.clone(),
                start: start_cell.clone(),
                want: want_cell,
                seen_start: None,
                leaving: leaving.clone(),
            }),
        );
        let handing_over = Arc::new(AtomicBool::new(false));
        spawn_until(
            stop_rx,
            crate::balance::balance_loop(crate::balance::Balance {
                partition: p,
                me,
                topo: self.topo.clone(),
                raft: raft.clone(),
                election: self.cfg.election,
                handing_over: handing_over.clone(),
                transport: self.transport.clone(),
            }),
        );
        Ok(Group {
            raft,
            handing_over,
            refilling,
            committed,
            proposer: tx,
            leaving,
            changing: Arc::new(AtomicBool::new(false)),
            start: start_cell,
            stop,
        })
    }

    /// openraft's settings for a replica; the preferred leader's election
    /// timeout is the shorter one, so it campaigns first.
    pub(crate) fn raft_config(&self, preferred: bool) -> Result<Arc<openraft::Config>, String> {
        let election = self.cfg.election.as_millis() as u64;
        let (min, max) = if preferred {
            (election, election + election / 4)
        } else {
            (election + election / 2, election * 2)
        };
        openraft::Config {
            cluster_name: "herald".into(),
            heartbeat_interval: self.cfg.heartbeat.as_millis() as u64,
            election_timeout_min: min,
            election_timeout_max: max,
            // Snapshots are built by the retention loop at the start it
            // chooses, and Raft forgets only what retention removed.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: 256,
            ..Default::default()
        }
        .validate()
        .map(Arc::new)
        .map_err(|e| format!("raft settings: {e}"))
    }

    /// Stops `g` (partition `p`'s replica here). `left`: the group removed
    /// this replica; it is marked so it is not started again, after its
    /// start moved to what it holds committed (retention can then remove
    /// all but its last segment).
    pub(crate) async fn close_group(&self, p: u32, g: &Group, left: bool) {
        if left {
            g.leaving.store(true, std::sync::atomic::Ordering::Release);
            crate::retain::settle_before_leaving(&g.raft, &g.start).await;
            let marker = partition_dir(&self.dir, p).join(LEFT);
            if let Err(e) = std::fs::write(&marker, b"") {
                tracing::warn!(partition = p, error = %e, "could not mark the replica as given up");
            }
        }
        if let Err(e) = g.raft.shutdown().await {
            tracing::warn!(partition = p, error = %e, "raft group did not stop cleanly");
        }
        let _ = g.stop.send(true);
    }
}
