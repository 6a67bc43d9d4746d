//! Fan-out workers: one per log partition.
//!
//! A worker reads its partition from the committed checkpoint, expands each
//! event into notifications (who is told, per kind, as the API contract
//! says; a post reaches every follower of its actor), de-duplicates by the
//! client's idempotency key, and routes each notification: live to the
//! recipient's connections (on this node, or relayed to the nodes that hold
//! them), else parked through the sinks (the inbox, and the webhook when
//! one is set). Each notification carries a [`herald_types::Settle`] naming
//! its records, counted in the partition's tracker; the checkpoint only
//! moves past a record once every notification made from it has been acked
//! by its client or parked, so a crash re-delivers and never loses.
//!
//! Celebrities (accounts past `celebrity.enter` followers, until they drop
//! below `celebrity.exit`) take the pull path: their post is written once to
//! their outbox and broadcast once to the edge, which pushes it to its
//! connected followers; offline followers pull it when they connect. An
//! account's status changes only while its own partition processes a follow
//! or unfollow, so each post takes exactly one path.

mod acked;
mod aggregate;
mod dead;
mod digest;
mod feed;
mod leader;
mod lease;
mod plan;
mod relay;
mod release;
mod route;
mod settle;
pub mod sink;
mod status;
mod tracker;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use herald_log::Log;
use herald_store::Store;
use herald_types::EdgeHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use aggregate::{AggregationConfig, MAX_ACTORS};
pub use lease::Leases;
pub use relay::{EveryEdge, Relay, RelayOut, RelayOutbox};
pub use settle::Settlements;
pub use tracker::{Hold, Tracker};

/// Fan-out settings.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Consumer group name used for checkpoints.
    pub group: String,
    /// Bytes of log read per batch.
    pub read_max_bytes: usize,
    /// A worker stops reading while this many records are unsettled.
    pub max_in_flight: usize,
    /// How often checkpoints are written.
    pub checkpoint_every: Duration,
    /// Wait between retries when Redis fails.
    pub retry_backoff: Duration,
    /// When an account moves to (and off) the celebrity path.
    pub celebrity: herald_store::CelebrityPolicy,
    /// Most posts kept in a celebrity's outbox.
    pub outbox_cap: usize,
    /// Burst folding and the per-recipient throttle.
    pub aggregation: AggregationConfig,
    /// Suffix of this node's event ids (`@<node>` in a cluster).
    pub id_scope: String,
    /// Where to start a partition whose checkpoint is damaged or missing
    /// while it holds records (without one, that partition waits).
    pub reset: ResetPositions,
}

/// Where a partition whose checkpoint cannot be read starts, as an
/// operator said (`herald --reset-position P=earliest|latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest record the log still holds: everything is delivered
    /// again (clients drop duplicates by id).
    Earliest,
    /// The end: what was not yet delivered is skipped.
    Latest,
}

/// The operator's choices per partition, or for all (`all=latest`).
#[derive(Debug, Clone, Default)]
pub struct ResetPositions {
    all: Option<ResetTo>,
    each: std::collections::BTreeMap<u32, ResetTo>,
}

impl ResetPositions {
    /// Parses `P=earliest|latest` or `all=earliest|latest` items.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<ResetPositions, String> {
        let mut r = ResetPositions::default();
        for item in items {
            let item = item.as_ref();
            let (p, to) = item.split_once('=').ok_or_else(|| {
                format!("reset position {item:?}: expected PARTITION=earliest|latest (or all=...)")
            })?;
            let to = match to.trim() {
                "earliest" => ResetTo::Earliest,
                "latest" => ResetTo::Latest,
                other => {
                    return Err(format!(
                        "reset position {item:?}: {other:?} is neither earliest nor latest"
                    ))
                }
            };
            match p.trim() {
                "all" => r.all = Some(to),
                n => {
                    let n: u32 = n.parse().map_err(|_| {
                        format!("reset position {item:?}: {n:?} is not a partition number")
                    })?;
                    r.each.insert(n, to);
                }
            }
        }
        Ok(r)
    }

    /// The choice for partition `p`, if any.
    pub fn get(&self, p: u32) -> Option<ResetTo> {
        self.each.get(&p).copied().or(self.all)
    }

    /// The highest partition named, to check against the log.
    pub fn highest(&self) -> Option<u32> {
        self.each.keys().next_back().copied()
    }
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            group: "fanout".into(),
            read_max_bytes: 256 * 1024,
            max_in_flight: 100_000,
            checkpoint_every: Duration::from_millis(200),
            retry_backoff: Duration::from_millis(200),
            celebrity: herald_store::CelebrityPolicy::new(10_000, 0.1),
            outbox_cap: herald_store::DEFAULT_OUTBOX_CAP,
            aggregation: AggregationConfig::default(),
            id_scope: String::new(),
            reset: ResetPositions::default(),
        }
    }
}

/// Which workers are stuck, cheap to clone.
#[derive(Clone, Default)]
pub struct FanoutHealth {
    parts: Arc<Vec<Arc<status::PartitionStatus>>>,
    feed: Option<Arc<status::PartitionStatus>>,
}

impl FanoutHealth {
    /// What keeps fan-out from doing its work, one short reason each:
    /// partitions whose worker has failed at a step for longer than
    /// [`status::STALL_AFTER`], partitions waiting for an operator (an
    /// unreadable checkpoint), checkpoints that cannot be written, records
    /// given up on and waiting to be processed again, the feed writer
    /// failing.
    pub fn stalls(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .parts
            .iter()
            .enumerate()
            .flat_map(|(p, s)| {
                s.problems()
                    .into_iter()
                    .map(move |why| format!("partition {p}: {why}"))
            })
            .collect();
        if let Some(f) = &self.feed {
            out.extend(
                f.problems()
                    .into_iter()
                    .map(|why| format!("feed writer: {why}")),
            );
        }
        out
    }
}

/// The running workers.
pub struct Fanout {
    log: Log,
    cfg: FanoutConfig,
    settlements: Arc<Settlements>,
    statuses: FanoutHealth,
    workers: Vec<JoinHandle<()>>,
    committers: Vec<JoinHandle<()>>,
    stop_tx: watch::Sender<bool>,
}

impl Fanout {
    /// Starts a worker and a checkpoint committer per partition, from the
    /// positions `settlements` was made with; `edge` is this node's edge.
    /// With `replicas`, a partition's worker runs only while this node
    /// leads it (`leader.rs`), and partitions it holds no replica of are
    /// left alone.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        log: Log,
        store: Store,
        edge: Arc<dyn EdgeHandle>,
        celebrities: Arc<herald_store::CelebritySet>,
        prefs: Arc<herald_prefs::PrefsCache>,
        cfg: FanoutConfig,
        settlements: Arc<Settlements>,
        replicas: Option<Arc<herald_raft::Replicas>>,
        relay: Option<Arc<Relay>>,
    ) -> Fanout {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        let mut committers = Vec::new();
        let mut statuses = Vec::new();
        let feed_status = Arc::new(status::PartitionStatus::default());
        let (feed, feed_task) = feed::FeedWriter::start(
            store.clone(),
            settlements.clone(),
            stop_rx.clone(),
            feed_status.clone(),
        );
        for (p, tracker) in settlements.trackers().iter().enumerate() {
            let p = p as u32;
            let start = tracker.committable();
            let status = Arc::new(status::PartitionStatus::default());
            statuses.push(status.clone());
            if let Some(why) = settlements.blocked(p) {
                if replicas.is_some() {
                    // A replicated partition's leader starts from the
                    // position its last leader saved in Redis.
                    tracing::warn!(partition = p, why = %why, "local checkpoint unusable; the saved position decides");
                } else {
                    // Its records stay in the log; nothing reads or commits
                    // them until an operator says where to start.
                    status.block(why);
                    continue;
                }
            }
            let make = {
                let (log, store, edge, settlements, relay) = (
                    log.clone(),
                    store.clone(),
                    edge.clone(),
                    settlements.clone(),
                    relay.clone(),
                );
                let (celebrities, prefs, tracker, cfg) = (
                    celebrities.clone(),
                    prefs.clone(),
                    tracker.clone(),
                    cfg.clone(),
                );
                let (status, feed) = (status.clone(), feed.clone());
                move |stop, committed, term| worker::Worker {
                    partition: p,
                    fence: herald_store::Fence { partition: p, term },
                    deposed: false,
                    log: log.clone(),
                    store: store.clone(),
                    edge: edge.clone(),
                    settlements: settlements.clone(),
                    relay: relay.clone(),
                    celebrities: celebrities.clone(),
                    prefs: prefs.clone(),
                    tracker: tracker.clone(),
                    agg: aggregate::Aggregator::new(cfg.aggregation.clone()),
                    cfg: cfg.clone(),
                    stop,
                    status: status.clone(),
                    feed: feed.clone(),
                    committed,
                }
            };
            let term = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut replicated = false;
            match &replicas {
                // Replicas come and go with the node set: the loop waits
                // to lead whatever this node holds.
                Some(r) => {
                    replicated = true;
                    workers.push(tokio::spawn(leader::lead_loop(
                        leader::Lead {
                            p,
                            replicas: r.clone(),
                            log: log.clone(),
                            store: store.clone(),
                            group: cfg.group.clone(),
                            tracker: tracker.clone(),
                            status: status.clone(),
                            term: term.clone(),
                        },
                        stop_rx.clone(),
                        move |stop, committed, term| make(stop, Some(committed), term),
                    )));
                }
                None => workers.push(tokio::spawn(make(stop_rx.clone(), None, 0).run(start))),
            }
            committers.push(tokio::spawn(commit_loop(
                log.clone(),
                store.clone(),
                cfg.clone(),
                p,
                tracker.clone(),
                status,
                replicated.then_some(term),
                stop_rx.clone(),
            )));
        }
        // The feed writer ends once every worker (its senders) has.
        drop(feed);
        workers.extend(feed_task);
        Fanout {
            log,
            cfg,
            settlements,
            statuses: FanoutHealth {
                parts: Arc::new(statuses),
                feed: Some(feed_status),
            },
            workers,
            committers,
            stop_tx,
        }
    }

    /// Stops reading new records and waits for the workers to finish the
    /// batch in hand. Notifications already handed to connections stay
    /// unsettled until those connections ack or close.
    pub async fn stop_reading(&mut self) {
        let _ = self.stop_tx.send(true);
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
        for c in self.committers.drain(..) {
            let _ = c.await;
        }
    }

    /// Writes every partition's checkpoint as far as settlement allows
    /// (not a blocked partition's: it has no position to write).
    pub async fn commit_final(&self) {
        for (p, t) in self.settlements.trackers().iter().enumerate() {
            if self.statuses.parts.get(p).is_some_and(|s| s.is_blocked()) {
                continue;
            }
            let _ = commit(&self.log, &self.cfg.group, p as u32, t.committable()).await;
        }
    }

    /// A handle that reports stalled workers (for `/readyz`).
    pub fn health(&self) -> FanoutHealth {
        self.statuses.clone()
    }
}

async fn commit(log: &Log, group: &str, p: u32, offset: u64) -> Result<(), String> {
    let log = log.clone();
    let group = group.to_string();
    let r = tokio::task::spawn_blocking(move || log.checkpoints().commit(&group, p, offset)).await;
    let r = match r {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("checkpoint task failed: {e}"),
    };
    tracing::error!(partition = p, offset, error = %r, "checkpoint write failed");
    metrics::counter!("herald_fanout_checkpoint_errors_total").increment(1);
    Err(r)
}

/// Commits the partition's position as settlement moves it. The lag metric
/// counts from the durable position (what a crash would replay from), so
/// a checkpoint that cannot be written shows as growing lag; the write is
/// tried again every tick. A partition with no checkpoint yet gets one at
/// once, so a missing file later means it was lost.
#[allow(clippy::too_many_arguments)]
async fn commit_loop(
    log: Log,
    store: Store,
    cfg: FanoutConfig,
    p: u32,
    tracker: Arc<Tracker>,
    status: Arc<status::PartitionStatus>,
    // A replicated partition: the term of this node's running worker (0:
    // it does not lead the partition now).
    lead: Option<Arc<std::sync::atomic::AtomicU64>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut durable = log.checkpoints().get(&cfg.group, p);
    let mut tick = tokio::time::interval(cfg.checkpoint_every);
    let label = p.to_string();
    let lag = metrics::gauge!("herald_fanout_lag_records", "partition" => label.clone());
    let in_flight = metrics::gauge!("herald_fanout_in_flight_records", "partition" => label);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Not leading a replicated partition: what is left of an earlier
        // leadership is not this node's problem to report, and the local
        // checkpoint follows the position the leader saved (retention on
        // this replica keeps only what fan-out may still need).
        let reporting = lead
            .as_ref()
            .is_none_or(|t| t.load(std::sync::atomic::Ordering::Acquire) != 0);
        if !reporting {
            if let Ok(Some(pos)) = store.position(p).await {
                let still_following = lead
                    .as_ref()
                    .is_some_and(|t| t.load(std::sync::atomic::Ordering::Acquire) == 0);
                if still_following && tracker.in_flight() == 0 && pos.offset > tracker.committable()
                {
                    tracker.restart(pos.offset);
                }
            }
        }
        let c = tracker.committable();
        if reporting {
            in_flight.set(tracker.in_flight() as f64);
            status.pinned(tracker.pinned_count());
        }
        if durable != Some(c) {
            let r = commit(&log, &cfg.group, p, c).await;
            if r.is_ok() {
                durable = Some(c);
            }
            status.checkpoint(r);
            // A replicated partition's leader saves it for the next leader.
            if let Some(t) = &lead {
                leader::save(&store, p, t, c).await;
            }
        }
        if let Ok((first, end)) = log.bounds(p) {
            lag.set(end.saturating_sub(durable.unwrap_or(first)) as f64);
        }
    }
}
