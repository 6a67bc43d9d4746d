//! One partition's worker.

use std::sync::Arc;

use herald_log::{Log, LogError, Record};
use herald_store::{Bucket, BucketAdd, CelebritySet, Store};
use herald_types::ids::{dedup_key, event_id};
use herald_types::{EdgeCommand, EdgeHandle, LogEvent, Notification, Settle, UserId};
use tokio::sync::watch;

mod audience;

use crate::aggregate::Emit;
use crate::plan::{self, Item};
use crate::{FanoutConfig, Settlements, Tracker};

/// How often a worker looks for due quiet-hours and digest buckets.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

pub struct Worker {
    pub partition: u32,
    /// What this worker's fenced writes carry: its leader's term (0 when
    /// the partition is not replicated).
    pub fence: herald_store::Fence,
    /// A fenced write was refused: a newer leader runs the partition.
    pub deposed: bool,
    pub log: Log,
    pub store: Store,
    pub edge: Arc<dyn EdgeHandle>,
    pub settlements: Arc<Settlements>,
    /// Other nodes, when this node is part of a cluster.
    pub relay: Option<Arc<crate::Relay>>,
    pub celebrities: Arc<CelebritySet>,
    pub prefs: Arc<herald_prefs::PrefsCache>,
    pub tracker: Arc<Tracker>,
    pub agg: crate::aggregate::Aggregator,
    pub cfg: FanoutConfig,
    pub stop: watch::Receiver<bool>,
    pub status: Arc<crate::status::PartitionStatus>,
    /// Where every routed notification is recorded for the user's feed.
    pub(crate) feed: crate::feed::FeedWriter,
    /// A replicated partition: read only what its replicas committed.
    pub(crate) committed: Option<watch::Receiver<herald_raft::Committed>>,
}

/// Why a stage gave up.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The node is stopping: the records are processed again after restart.
    Stopped,
    /// The same error every time, after bounded retries: a dead letter if
    /// it is one record's fault.
    Permanent(String),
}

/// Attempts at a step that fails the same way every time.
const PERMANENT_ATTEMPTS: u32 = 4;

/// How often records given up on are processed again, and how many at a
/// time.
const PINNED_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest wait between two tries of a failing Redis step.
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const PINNED_BATCH: usize = 256;

impl Worker {
    fn stopped(&self) -> bool {
        self.deposed || *self.stop.borrow()
    }

    /// A fenced write of `what` was refused: a newer leader holds the
    /// partition, so this worker stops; what it held stays unsettled (the
    /// new leader processes it from the saved position).
    pub(crate) fn deposed(&mut self, what: &'static str) -> Halt {
        self.deposed = true;
        metrics::counter!("herald_fanout_fenced_total", "effect" => what).increment(1);
        tracing::warn!(
            partition = self.partition,
            term = self.fence.term,
            effect = what,
            "a newer leader holds the partition: write refused, fan-out stops here"
        );
        Halt::Stopped
    }

    pub async fn run(mut self, start: u64) {
        let p = self.partition;
        let mut next = start;
        let mut end_rx = match self.log.subscribe(p) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition = p, error = %e, "cannot subscribe to partition");
                return;
            }
        };
        tracing::debug!(partition = p, offset = next, "fan-out worker started");
        let mut last_release = std::time::Instant::now() - RELEASE_EVERY;
        let mut last_pinned = std::time::Instant::now();
        while !self.stopped() {
            if last_release.elapsed() >= RELEASE_EVERY {
                last_release = std::time::Instant::now();
                self.release_due().await;
            }
            if last_pinned.elapsed() >= PINNED_RETRY_EVERY {
                last_pinned = std::time::Instant::now();
                self.process_pinned_again().await;
            }
            if self.tracker.in_flight() >= self.cfg.max_in_flight {
                // Backpressure: wait for clients to ack or connections to close.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
            // A replicated partition is read only up to what a majority of
            // its replicas hold.
            let limit = self
                .committed
                .as_mut()
                .map_or(u64::MAX, |c| c.borrow_and_update().next_offset);
            let read = if next >= limit {
                Ok(Vec::new())
            } else {
                self.log.read(p, next, self.cfg.read_max_bytes)
            };
            let records = match read {
                Ok(mut r) => {
                    r.retain(|r| r.offset < limit);
                    r
                }
                Err(LogError::OffsetOutOfRange { start, .. }) if next < start => {
                    tracing::error!(
                        partition = p,
                        from = next,
                        to = start,
                        "records deleted by retention before fan-out; skipping"
                    );
                    metrics::counter!("herald_fanout_skipped_records_total")
                        .increment(start - next);
                    next = start;
                    continue;
                }
                Err(LogError::OffsetOutOfRange { end, .. }) if next > end => {
                    // A saved position past the end (the log lost its tail,
                    // or was restored): continue from the end; new records
                    // get offsets past anything handed out before.
                    tracing::error!(
                        partition = p,
                        from = next,
                        to = end,
                        "fan-out position past the end of the partition; continuing from the end"
                    );
                    metrics::counter!("herald_fanout_position_reset_total").increment(1);
                    next = end;
                    self.tracker.reset(end);
                    continue;
                }
                Err(e) => {
                    tracing::error!(partition = p, offset = next, error = %e, "log read failed");
                    self.status
                        .failing(|| format!("log read at offset {next} failed: {e}"));
                    metrics::counter!("herald_fanout_read_errors_total").increment(1);
                    self.pause().await;
                    continue;
                }
            };
            if records.is_empty() {
                let deadline = self.agg.next_deadline();
                let committed = self.committed.clone();
                tokio::select! {
                    r = end_rx.changed(), if committed.is_none() => if r.is_err() { return },
                    r = async {
                        match committed {
                            Some(mut c) => c.changed().await,
                            None => std::future::pending().await,
                        }
                    } => if r.is_err() { return },
                    _ = self.stop.changed() => {}
                    _ = tokio::time::sleep(RELEASE_EVERY) => {}
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d.into()).await,
                            None => std::future::pending::<()>().await,
                        }
                    } => {
                        let due = self.agg.due(std::time::Instant::now(), false);
                        self.route_aggregates(due).await;
                    }
                }
                continue;
            }
            next = records.last().map_or(next, |r| r.offset + 1);
            self.status.ok();
            if let Err(Halt::Permanent(why)) = self.process(records.clone()).await {
                self.isolate(records, why).await;
            }
        }
        // Folded notifications must not be dropped with the aggregator: emit
        // what is pending (live or to the inbox) before stopping.
        let due = self.agg.due(std::time::Instant::now(), true);
        self.route_aggregates(due).await;
        tracing::debug!(partition = p, offset = next, "fan-out worker stopped");
    }

    /// Records given up on (neither delivered nor stored after retries, or
    /// a bounded queue overflowed) are processed again, oldest first,
    /// without waiting for a restart: ids are stable and writes
    /// idempotent, so a notification delivered meanwhile is at worst sent
    /// again under the same id.
    async fn process_pinned_again(&mut self) {
        let p = self.partition;
        let offsets = self.tracker.pinned(PINNED_BATCH);
        if offsets.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(offsets.len());
        for off in offsets {
            match self.log.read(p, off, 1) {
                Ok(r) => records.extend(r.into_iter().filter(|r| r.offset == off)),
                Err(e) => {
                    tracing::warn!(partition = p, offset = off, error = %e, "a record given up on cannot be read again");
                }
            }
        }
        if records.is_empty() {
            return;
        }
        tracing::info!(
            partition = p,
            records = records.len(),
            "processing records given up on again"
        );
        metrics::counter!("herald_fanout_reprocessed_total").increment(records.len() as u64);
        if let Err(Halt::Permanent(why)) = self.process(records.clone()).await {
            self.isolate(records, why).await;
        }
    }

    async fn pause(&mut self) {
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.retry_backoff) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// Retries a Redis step: while Redis is unreachable, until it works or
    /// the node stops; an error that is the same every time, a bounded
    /// number of times with growing backoff.
    pub(crate) async fn retry<T, F, Fut>(&mut self, what: &str, mut f: F) -> Result<T, Halt>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = herald_store::Result<T>>,
    {
        let mut permanent = 0u32;
        let mut waits = 0u32;
        loop {
            match f().await {
                Ok(v) => {
                    self.status.ok();
                    return Ok(v);
                }
                Err(e) => {
                    metrics::counter!("herald_fanout_redis_errors_total").increment(1);
                    self.status
                        .failing(|| format!("redis step {what} failed: {}", e.public_reason()));
                    if !e.is_transient() {
                        permanent += 1;
                        if permanent >= PERMANENT_ATTEMPTS {
                            tracing::error!(partition = self.partition, step = what, error = %e, "redis step fails every time, giving up on the batch");
                            self.status.ok();
                            return Err(Halt::Permanent(format!("{what}: {e}")));
                        }
                    }
                    tracing::warn!(partition = self.partition, step = what, error = %e, "redis step failed, retrying");
                    if self.stopped() {
                        return Err(Halt::Stopped);
                    }
                    // Growing waits, up to a second: a transient error
                    // (Redis out of memory, loading, failing over, no
                    // replica to confirm yet) may last minutes, and the
                    // partition's later records (live pushes too) wait
                    // behind this one, so it is tried again within a
                    // second of Redis being back.
                    waits += 1;
                    let backoff =
                        herald_types::Backoff::nth(self.cfg.retry_backoff, MAX_RETRY_WAIT, waits);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Processes a batch of records in stages, each returning typed values:
    /// decode, claim idempotency keys, apply graph changes and read
    /// followers (in log order), celebrity posts to their outboxes, then
    /// plan who is told what (pure, `plan.rs`) and hand each notification
    /// on: now (folded or not) or to its quiet-hours or digest bucket.
    pub(crate) async fn process(&mut self, records: Vec<Record>) -> Result<(), Halt> {
        metrics::counter!("herald_fanout_events_total").increment(records.len() as u64);
        let mut items = self.decode(records).await;
        // A follow or unfollow can move its followee across the celebrity
        // threshold, which decides the path of the followee's next post: a
        // post after such a change in the same batch waits for the next run.
        while !items.is_empty() {
            let rest = items.split_off(plan::path_decided_until(&items));
            if let Err(h) = self.stages(&mut items).await {
                let mut all = items;
                all.extend(rest);
                return Err(abandon(all, h));
            }
            items = rest;
        }
        Ok(())
    }

    async fn stages(&mut self, items: &mut Vec<Item>) -> Result<(), Halt> {
        self.claim_keys(items).await?;
        self.read_graph(items).await?;
        self.read_threads(items).await?;
        self.apply_follows(items).await?;
        self.celebrity_posts(items).await?;
        let planned = plan::recipients(items);
        plan::count_traced(items, &planned);
        let prefs = self.preferences(&planned).await?;
        let routed = plan::route(items, &planned, &prefs, herald_types::now_ms());
        self.deliver_now(items, &routed.now).await?;
        self.hand_off_waiting(items, &routed.waiting).await
    }

    /// Decodes records into items; an undecodable one becomes a dead letter.
    async fn decode(&mut self, records: Vec<Record>) -> Vec<Item> {
        let p = self.partition;
        let mut items = Vec::with_capacity(records.len());
        for r in records {
            let hold = self.tracker.begin(r.offset);
            match LogEvent::decode(&r.payload) {
                // A kind this node does not declare (removed from its
                // configuration, or declared only on the node that took
                // the event): kept as a dead letter, replayable once the
                // kind is declared here, never dropped silently.
                Ok(ev) if !ev.kind.is_declared() => {
                    drop(hold);
                    metrics::counter!("herald_fanout_undeclared_kind_total").increment(1);
                    let why = format!("kind {:?} is not declared on this node", ev.kind.as_str());
                    self.dead_letter(&r, why).await;
                }
                Ok(ev) => {
                    // A replayed dead letter keeps the id it first had.
                    let eid = ev
                        .replay_of
                        .clone()
                        .unwrap_or_else(|| event_id(&self.cfg.id_scope, p, r.offset));
                    let dedup = dedup_key(ev.scope.as_deref(), ev.client_id.as_deref(), &eid);
                    items.push(Item::new(r.offset, eid, dedup, ev, hold));
                }
                Err(e) => {
                    drop(hold);
                    metrics::counter!("herald_fanout_undecodable_total").increment(1);
                    self.dead_letter(&r, format!("undecodable record: {e}"))
                        .await;
                }
            }
        }
        items
    }

    /// Client idempotency keys, one pipeline: drops events whose key an
    /// earlier event owns.
    async fn claim_keys(&mut self, items: &mut Vec<Item>) -> Result<(), Halt> {
        let claims: Vec<(String, String)> = items
            .iter()
            .filter(|i| i.ev.client_id.is_some())
            .map(|i| (i.dedup.clone(), i.event_id.to_string()))
            .collect();
        if claims.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let mut owned = self
            .retry("dedup", || store.claim_keys(&claims))
            .await?
            .into_iter();
        let p = self.partition;
        items.retain(|i| {
            if i.ev.client_id.is_none() {
                return true;
            }
            let keep = owned.next().unwrap_or(true);
            if !keep {
                metrics::counter!("herald_fanout_duplicates_total").increment(1);
                tracing::debug!(
                    partition = p,
                    offset = i.offset,
                    "duplicate client id dropped"
                );
            }
            keep
        });
        Ok(())
    }

    /// The planned recipients' preferences (one cached read for the batch).
    async fn preferences(
        &mut self,
        planned: &[(usize, UserId)],
    ) -> Result<Vec<Arc<herald_prefs::Resolved>>, Halt> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<UserId> = planned.iter().map(|&(_, u)| u).collect();
        let cache = self.prefs.clone();
        self.retry("preferences", || cache.get_many(&users)).await
    }

    /// Notifications due now: bursts fold into aggregates (which hold their
    /// records), the rest and any aggregate due go out.
    async fn deliver_now(&mut self, items: &[Item], now: &[(usize, UserId)]) -> Result<(), Halt> {
        let at = std::time::Instant::now();
        let mut out: Vec<Emit> = Vec::new();
        for &(idx, user) in now {
            let i = &items[idx];
            let settle = Settle::One(i.hold.rec);
            match self
                .agg
                .offer(user, plan::notification(i, user), settle.clone(), at)
            {
                Some((n, settle)) => out.push(Emit {
                    user,
                    n: Some(n),
                    settle,
                    release: Vec::new(),
                    folded: false,
                }),
                None => self.settlements.retain(&settle),
            }
        }
        out.extend(self.agg.due(at, false));
        self.route(out).await
    }

    /// Digest-mode and quiet-hours notifications go to their buckets; their
    /// records settle once the buckets have them.
    async fn hand_off_waiting(
        &mut self,
        items: &[Item],
        waiting: &[(usize, UserId, Bucket, u64)],
    ) -> Result<(), Halt> {
        if waiting.is_empty() {
            return Ok(());
        }
        let parts = self.log.partitions();
        let notes: Vec<Notification> = waiting
            .iter()
            .map(|&(idx, user, ..)| plan::notification(&items[idx], user))
            .collect();
        let adds: Vec<BucketAdd<'_>> = waiting
            .iter()
            .zip(&notes)
            .map(|(&(_, user, bucket, release_ms), n)| {
                BucketAdd::new(user, bucket, release_ms, n, parts)
            })
            .collect();
        let store = self.store.clone();
        self.retry("buckets", || store.bucket_add(&adds)).await?;
        metrics::counter!("herald_notifications_total", "route" => "waiting")
            .increment(waiting.len() as u64);
        Ok(())
    }
}

impl Worker {
    /// A command every node's edge must hear: this node's edge, then (in a
    /// cluster) one message to each other live node.
    fn to_every_edge(&self, cmd: EdgeCommand) {
        if let Some(relay) = &self.relay {
            relay.to_every_node(&cmd);
        }
        self.edge.send(cmd);
    }
}

/// A batch gave up: when the node stops, its records stay unsettled so
/// they are processed again after restart; when an error repeats, the
/// records are processed again now under a new attempt.
fn abandon(items: Vec<Item>, h: Halt) -> Halt {
    for i in items {
        match h {
            Halt::Stopped => i.hold.fail(),
            Halt::Permanent(_) => i.hold.forget(),
        }
    }
    h
}
