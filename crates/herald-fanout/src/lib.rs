//! Fan-out workers: one per log partition.
//!
//! A worker reads its partition from the committed checkpoint, expands each
//! event into notifications (who is told, per kind, as the API contract
//! says; a post reaches every follower of its actor), de-duplicates by the
//! client's idempotency key, and routes each notification: live to the
//! recipient's connection when it is on this node, else to the recipient's
//! inbox in Redis. Each record gets a settle token ([`herald_types::settle`]);
//! the checkpoint only moves past a record once every notification made
//! from it has been acked by its client or written to an inbox, so a crash
//! re-delivers and never loses.
//!
//! Celebrities (accounts past `celebrity.enter` followers, until they drop
//! below `celebrity.exit`) take the pull path: their post is written once to
//! their outbox and broadcast once to the edge, which pushes it to its
//! connected followers; offline followers pull it when they connect. An
//! account's status changes only while its own partition processes a follow
//! or unfollow, so each post takes exactly one path.

mod aggregate;
mod dead;
mod digest;
mod feed;
mod lease;
mod plan;
mod relay;
mod release;
mod route;
mod settle;
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
pub use relay::Relay;
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
        }
    }
}

/// Which workers are stuck, cheap to clone.
#[derive(Clone, Default)]
pub struct FanoutHealth(Arc<Vec<Arc<status::PartitionStatus>>>);

impl FanoutHealth {
    /// Partitions whose worker has failed at a step for longer than
    /// [`status::STALL_AFTER`], with a short reason each.
    pub fn stalls(&self) -> Vec<String> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(p, s)| {
                s.stalled()
                    .map(|(d, why)| format!("partition {p} stalled for {} s: {why}", d.as_secs()))
            })
            .collect()
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
    pub fn start(
        log: Log,
        store: Store,
        edge: Arc<dyn EdgeHandle>,
        celebrities: Arc<herald_store::CelebritySet>,
        prefs: Arc<herald_prefs::PrefsCache>,
        cfg: FanoutConfig,
        settlements: Arc<Settlements>,
    ) -> Fanout {
        // Other nodes, when a relay was started for this node.
        let relay = settlements.relay();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        let mut committers = Vec::new();
        let mut statuses = Vec::new();
        let (feed, feed_task) =
            feed::FeedWriter::start(store.clone(), settlements.clone(), stop_rx.clone());
        for (p, tracker) in settlements.trackers().iter().enumerate() {
            let p = p as u32;
            let start = tracker.committable();
            let status = Arc::new(status::PartitionStatus::default());
            statuses.push(status.clone());
            let w = worker::Worker {
                partition: p,
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
                stop: stop_rx.clone(),
                status,
                feed: feed.clone(),
            };
            workers.push(tokio::spawn(w.run(start)));
            committers.push(tokio::spawn(commit_loop(
                log.clone(),
                cfg.clone(),
                p,
                tracker.clone(),
                start,
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
            statuses: FanoutHealth(Arc::new(statuses)),
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

    /// Writes every partition's checkpoint as far as settlement allows.
    pub async fn commit_final(&self) {
        for (p, t) in self.settlements.trackers().iter().enumerate() {
            commit(&self.log, &self.cfg.group, p as u32, t.committable()).await;
        }
    }

    /// A handle that reports stalled workers (for `/readyz`).
    pub fn health(&self) -> FanoutHealth {
        self.statuses.clone()
    }
}

async fn commit(log: &Log, group: &str, p: u32, offset: u64) {
    let log = log.clone();
    let group = group.to_string();
    let r = tokio::task::spawn_blocking(move || log.checkpoints().commit(&group, p, offset)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(partition = p, error = %e, "checkpoint write failed"),
        Err(e) => tracing::error!(partition = p, error = %e, "checkpoint task failed"),
    }
}

async fn commit_loop(
    log: Log,
    cfg: FanoutConfig,
    p: u32,
    tracker: Arc<Tracker>,
    start: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = start;
    let mut tick = tokio::time::interval(cfg.checkpoint_every);
    let label = p.to_string();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let c = tracker.committable();
        metrics::gauge!("herald_fanout_in_flight_records", "partition" => label.clone())
            .set(tracker.in_flight() as f64);
        if let Ok((_, end)) = log.bounds(p) {
            metrics::gauge!("herald_fanout_lag_records", "partition" => label.clone())
                .set(end.saturating_sub(c) as f64);
        }
        if c != last {
            commit(&log, &cfg.group, p, c).await;
            last = c;
        }
    }
}
