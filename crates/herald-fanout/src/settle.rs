//! Fan-out's side of the seam's answers: every partition's [`Tracker`],
//! found by the partition a [`RecordRef`] names, and the writes an edge
//! leaves to fan-out (a push refused, or sent and never acked, is parked
//! through the sinks; a celebrity post a follower's preferences hold goes
//! to its bucket; inbox entries clients acked are removed, in a lane of
//! their own, `acked.rs`). Edges (this node's, or another's over the network)
//! answer here, so the writes of delivery policy happen on one side.

use herald_types::sync::Locked;
use std::sync::Arc;
use std::time::Duration;

use herald_log::Log;
use herald_store::{BucketAdd, Store};
use herald_types::{Answers, EdgeAnswer, RecordRef, Settle};
use tokio::sync::mpsc;

use crate::{FanoutConfig, Tracker};

/// Writes edges left to fan-out (every notification nobody took or acked,
/// and held posts), waiting for the writer; past it they are dropped
/// (refused pushes: their records stay unsettled until restart; held
/// posts: the follower pulls them again on its next connect). Sized for a
/// mass disconnect: 100,000 users' unacked notifications at once, a few
/// hundred bytes each.
const LATER_WRITES: usize = 100_000;

/// Every partition's tracker, and a writer for what edges leave to
/// fan-out.
pub struct Settlements {
    trackers: Vec<Arc<Tracker>>,
    /// Answers for pushes another node handed over go back on the relay's
    /// outgoing queue (in a cluster).
    to_nodes: Option<crate::RelayOut>,
    /// Who owns which partition, in a cluster (alone: this node, all).
    placement: Arc<dyn herald_types::Placement>,
    /// Where notifications nobody took are parked.
    sinks: crate::sink::Sinks,
    /// `Refused` and `Hold` answers waiting for their writes.
    later: mpsc::Sender<EdgeAnswer>,
    /// Inbox entries clients acked, waiting for their removal.
    acked: mpsc::Sender<crate::acked::Removal>,
    /// Per partition: why it waits for an operator, if it does.
    blocked: std::sync::Mutex<Vec<Option<String>>>,
    /// Users whose inbox got parked notifications: their connections are
    /// told to drain (alone: by this node's edge; in a cluster: the relay
    /// tells every node holding them).
    parked: tokio::sync::broadcast::Sender<herald_types::UserId>,
}

/// Users announced as parked, waiting for the edge or the relay to poke
/// them; a listener further behind pokes everyone (alone) or misses some
/// (counted).
const PARKED_ANNOUNCEMENTS: usize = 65_536;

/// Most parked notifications written in one pipeline.
const PARK_BATCH: usize = 512;

/// Where a partition without a readable checkpoint starts: its first
/// record when it holds none yet (a new partition), where the operator
/// said, or nowhere yet (the reason, for `/readyz`).
fn unknown_start(
    log: &Log,
    cfg: &FanoutConfig,
    p: u32,
    first: u64,
    end: u64,
) -> (u64, Option<String>) {
    let damaged = log.checkpoints().damaged(&cfg.group, p);
    if first >= end && damaged.is_none() {
        return (first, None);
    }
    let what = match damaged {
        Some(why) => format!("checkpoint damaged ({why})"),
        None => "checkpoint missing".to_string(),
    };
    match cfg.reset.get(p) {
        Some(to) => {
            let start = match to {
                crate::ResetTo::Earliest => first,
                crate::ResetTo::Latest => end,
            };
            tracing::warn!(partition = p, start, first, end, reset = ?to, "{what}; starting where the operator said");
            metrics::counter!("herald_fanout_position_reset_total").increment(1);
            (start, None)
        }
        None => {
            let why = format!(
                "{what} while the partition holds records {first}..{end}: not replaying them \
                 from the start; restart with --reset-position {p}=earliest (deliver them \
                 again) or {p}=latest (skip them)"
            );
            tracing::error!(partition = p, first, end, "{why}");
            (first, Some(why))
        }
    }
}

impl Settlements {
    /// Trackers from each partition's committed position; a position past
    /// the end of its partition (the log lost its tail, or was restored
    /// from a copy) is reconciled to the end: new records get offsets past
    /// anything handed out before. A partition that holds records but
    /// whose checkpoint is damaged or missing starts where the operator
    /// said (`cfg.reset`), or is blocked: replaying it from its start
    /// would deliver everything it holds again.
    pub fn new(
        log: &Log,
        cfg: &FanoutConfig,
        store: Store,
        sinks: crate::sink::Sinks,
        placement: Arc<dyn herald_types::Placement>,
        to_nodes: Option<crate::RelayOut>,
    ) -> Arc<Settlements> {
        let mut trackers = Vec::new();
        let mut blocked = Vec::new();
        for p in 0..log.partitions() {
            let (first, end) = log.bounds(p).unwrap_or((0, 0));
            let (start, why) = match log.checkpoints().get(&cfg.group, p) {
                Some(c) if c > end => {
                    tracing::error!(
                        partition = p,
                        checkpoint = c,
                        end,
                        "fan-out checkpoint past the end of the partition; continuing from the end"
                    );
                    metrics::counter!("herald_fanout_position_reset_total").increment(1);
                    (end, None)
                }
                Some(c) => (c, None),
                None => unknown_start(log, cfg, p, first, end),
            };
            metrics::gauge!("herald_fanout_checkpoint_unusable", "partition" => p.to_string())
                .set(if why.is_some() { 1.0 } else { 0.0 });
            trackers.push(Tracker::new(p, start));
            blocked.push(why);
        }
        let s = Self::with_trackers(
            trackers,
            cfg,
            store,
            (sinks, placement, to_nodes),
            log.partitions(),
        );
        *s.blocked.locked() = blocked;
        s
    }

    /// For a node without a log (an edge): no trackers of its own; the
    /// pushes it takes come from other nodes and are answered there.
    /// `partitions` is the cluster's partition count (bucket schedules).
    pub fn without_log(
        cfg: &FanoutConfig,
        store: Store,
        sinks: crate::sink::Sinks,
        placement: Arc<dyn herald_types::Placement>,
        to_nodes: Option<crate::RelayOut>,
        partitions: u32,
    ) -> Arc<Settlements> {
        Self::with_trackers(
            Vec::new(),
            cfg,
            store,
            (sinks, placement, to_nodes),
            partitions,
        )
    }

    fn with_trackers(
        trackers: Vec<Arc<Tracker>>,
        cfg: &FanoutConfig,
        store: Store,
        (sinks, placement, to_nodes): (
            crate::sink::Sinks,
            Arc<dyn herald_types::Placement>,
            Option<crate::RelayOut>,
        ),
        partitions: u32,
    ) -> Arc<Settlements> {
        let (tx, rx) = mpsc::channel(LATER_WRITES);
        let (parked, _) = tokio::sync::broadcast::channel(PARKED_ANNOUNCEMENTS);
        let s = Arc::new(Settlements {
            trackers,
            to_nodes,
            placement,
            sinks: sinks.clone(),
            later: tx,
            acked: crate::acked::start(store.clone(), cfg.retry_backoff),
            blocked: std::sync::Mutex::new(Vec::new()),
            parked,
        });
        tokio::spawn(write_later(
            store,
            sinks,
            rx,
            Arc::downgrade(&s),
            cfg.retry_backoff,
            partitions,
        ));
        s
    }

    /// Users whose inbox just got notifications nobody acked or took: the
    /// edge (alone) or the relay (in a cluster) subscribes and pokes
    /// their connections. A receiver that lags behind should poke all.
    pub fn parked(&self) -> tokio::sync::broadcast::Receiver<herald_types::UserId> {
        self.parked.subscribe()
    }

    pub fn tracker(&self, partition: u32) -> Option<&Arc<Tracker>> {
        self.trackers.get(partition as usize)
    }

    /// Where notifications nobody took are parked.
    pub fn sinks(&self) -> &crate::sink::Sinks {
        &self.sinks
    }

    pub(crate) fn trackers(&self) -> &[Arc<Tracker>] {
        &self.trackers
    }

    /// Why partition `p` waits for an operator, if it does.
    pub(crate) fn blocked(&self, p: u32) -> Option<String> {
        self.blocked.locked().get(p as usize).cloned().flatten()
    }

    /// Whether this node owns partition `p` now (always, alone). Only the
    /// owner releases a partition's due buckets, so each happens once
    /// cluster-wide.
    pub(crate) fn owns(&self, p: u32) -> bool {
        self.placement.owner(p) == herald_types::Owner::Local
    }

    /// An answer about a push another node handed over: sent back there.
    fn remote(&self, a: &EdgeAnswer) -> bool {
        let r = match a {
            EdgeAnswer::Settled(Settle::Remote(r))
            | EdgeAnswer::Failed(Settle::Remote(r))
            | EdgeAnswer::Refused {
                settle: Settle::Remote(r),
                ..
            } => r,
            _ => return false,
        };
        if let Some(out) = &self.to_nodes {
            out.answer(r, a);
        }
        true
    }

    fn each(&self, s: &Settle, f: impl Fn(&Tracker, &RecordRef)) {
        for r in s.refs() {
            if let Some(t) = self.trackers.get(r.partition as usize) {
                f(t, r);
            }
        }
    }

    /// Counts one more holder of each record `s` names (before handing it
    /// to an edge).
    pub fn retain(&self, s: &Settle) {
        self.each(s, |t, r| t.retain(r, 1));
    }

    pub fn release(&self, s: &Settle) {
        self.each(s, |t, r| t.release(r));
    }

    pub fn fail(&self, s: &Settle) {
        self.each(s, |t, r| t.fail(r));
    }

    fn later(&self, w: EdgeAnswer) {
        let Err(e) = self.later.try_send(w) else {
            return;
        };
        let w = match e {
            mpsc::error::TrySendError::Full(w) | mpsc::error::TrySendError::Closed(w) => w,
        };
        metrics::counter!("herald_later_writes_overflow_total").increment(1);
        match w {
            EdgeAnswer::Refused { user, settle, .. } => {
                tracing::error!(
                    user,
                    "later writes queue full; the record is processed again after restart"
                );
                self.fail(&settle);
            }
            EdgeAnswer::Hold { user, .. } => {
                tracing::warn!(
                    user,
                    "later writes queue full; the follower pulls the post on its next connect"
                );
            }
            EdgeAnswer::Settled(_) | EdgeAnswer::Failed(_) | EdgeAnswer::Acked { .. } => {}
        }
    }
}

impl Answers for Settlements {
    fn answer(&self, a: EdgeAnswer) {
        if self.remote(&a) {
            return;
        }
        match a {
            EdgeAnswer::Settled(s) => self.release(&s),
            EdgeAnswer::Failed(s) => self.fail(&s),
            later @ (EdgeAnswer::Refused { .. } | EdgeAnswer::Hold { .. }) => self.later(later),
            EdgeAnswer::Acked { user, ids, done } => {
                crate::acked::request(&self.acked, crate::acked::Removal { user, ids, done })
            }
        }
    }

    fn settled(&self, list: Vec<Settle>) {
        for s in list {
            match s {
                Settle::Remote(_) => {
                    self.remote(&EdgeAnswer::Settled(s));
                }
                s => self.release(&s),
            }
        }
    }
}

/// Writes what edges left to fan-out, retrying while Redis is
/// unreachable: notifications nobody took or acked to the inbox (up to
/// [`PARK_BATCH`] in one pipeline, then released and their users' edges
/// told), held posts to their bucket (then the follower's outbox cursor,
/// when given). The one background writer for everything parked.
async fn write_later(
    store: Store,
    sinks: crate::sink::Sinks,
    mut rx: mpsc::Receiver<EdgeAnswer>,
    settlements: std::sync::Weak<Settlements>,
    backoff: Duration,
    partitions: u32,
) {
    let mut batch: Vec<EdgeAnswer> = Vec::with_capacity(PARK_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < PARK_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (refused, holds): (Vec<EdgeAnswer>, Vec<EdgeAnswer>) = batch
            .drain(..)
            .partition(|w| matches!(w, EdgeAnswer::Refused { .. }));
        if !refused.is_empty() {
            park(&sinks, &refused, backoff).await;
            let Some(s) = settlements.upgrade() else {
                return;
            };
            let mut users = Vec::with_capacity(refused.len());
            for w in refused {
                if let EdgeAnswer::Refused { user, settle, .. } = w {
                    s.release(&settle);
                    users.push(user);
                }
            }
            users.sort_unstable();
            users.dedup();
            // Their connections drain: in a cluster wherever they are now.
            for u in users {
                let _ = s.parked.send(u);
            }
        }
        for w in holds {
            let mut wait = herald_types::Backoff::new(backoff, Duration::from_secs(5));
            loop {
                let r = match &w {
                    EdgeAnswer::Hold {
                        user,
                        bucket,
                        release_ms,
                        n,
                        seen,
                    } => {
                        let add = BucketAdd::new(*user, *bucket, *release_ms, n, partitions);
                        match store.bucket_add(&[add]).await {
                            Ok(()) => match seen {
                                Some(s) => store.outbox_seen(*user, &[*s]).await,
                                None => Ok(()),
                            },
                            Err(e) => Err(e),
                        }
                    }
                    _ => Ok(()),
                };
                match r {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "a held post's bucket write failed; retrying");
                        wait.sleep().await;
                    }
                }
            }
        }
    }
}

/// Parks refused notifications through the sinks (the inbox in one
/// pipeline, then the webhook), retrying with backoff while Redis does not
/// answer.
async fn park(sinks: &crate::sink::Sinks, refused: &[EdgeAnswer], backoff: Duration) {
    let items: Vec<(herald_types::UserId, &herald_types::Notification)> = refused
        .iter()
        .filter_map(|w| match w {
            EdgeAnswer::Refused { user, n, .. } => Some((*user, n)),
            _ => None,
        })
        .collect();
    let mut wait = herald_types::Backoff::new(backoff, Duration::from_secs(5));
    let mut failed = false;
    loop {
        let parking = crate::sink::Parking {
            items: &items,
            fence: None,
            webhook_only: false,
        };
        match sinks.park(&parking).await {
            Ok(_) => break,
            Err(e) => {
                if !failed {
                    tracing::warn!(error = %e, notifications = items.len(), "parking notifications in the inbox failed; retrying");
                }
                failed = true;
                wait.sleep().await;
            }
        }
    }
    metrics::counter!("herald_fanout_parked_total").increment(items.len() as u64);
    if failed {
        metrics::counter!("herald_notifications_total", "route" => "queued_after_outage")
            .increment(items.len() as u64);
    }
}
