//! Handing notifications on: live to the recipient's connection through
//! the edge, or parked (the inbox, and the webhook: `sink`) when the edge
//! refuses (the user is not connected there, or not keeping up).

use herald_types::{EdgeAnswer, EdgeCommand, Notification, Refusal, Settle, UserId};

use crate::aggregate::Emit;
use crate::worker::{Halt, Worker};

impl Worker {
    /// Routes each notification. Every push is counted against its records
    /// before it is sent (the edge releases it once acked or stored); a
    /// refused one is written to the inbox. Aggregator holds that end with
    /// this routing are released once it is done.
    pub(crate) async fn route(&mut self, list: Vec<Emit>) -> Result<(), Halt> {
        let mut to_inbox: Vec<(UserId, Notification, Settle, bool)> = Vec::new();
        let mut release = Vec::new();
        let mut pushed = 0u64;
        let mut feed = Vec::with_capacity(list.len());
        // In a cluster: the other live nodes holding each recipient's
        // connections (one round trip for the batch).
        let holders = self.remote_holders(&list).await;
        for (k, e) in list.into_iter().enumerate() {
            let folded = e.folded;
            release.extend(e.release);
            let Some(n) = e.n else { continue };
            let remote = holders
                .get(k)
                .is_some_and(|h| self.push_remote(h, e.user, &n, &e.settle));
            if self.feed.on() {
                // Held for the feed entry before the edge can settle it.
                self.settlements.retain(&e.settle);
                feed.push((e.user, n.clone(), e.settle.clone()));
            }
            self.settlements.retain(&e.settle);
            let cmd = EdgeCommand::Push {
                user: e.user,
                n,
                settle: e.settle,
            };
            match self.edge.send(cmd) {
                None => pushed += 1,
                Some(EdgeAnswer::Refused {
                    user,
                    n,
                    settle,
                    why,
                }) => {
                    self.settlements.release(&settle);
                    if why == Refusal::Full {
                        metrics::counter!("herald_notifications_rerouted_total", "reason" => "slow_consumer").increment(1);
                    } else if remote {
                        // Not here, but on another node: it answers.
                        continue;
                    }
                    // Parked, its one entry is written there (waiting):
                    // the feed writer has nothing to add (this one's feed
                    // item is the last one pushed).
                    if self.feed.on() {
                        if let Some((.., s)) = feed.pop() {
                            self.settlements.release(&s);
                        }
                    }
                    to_inbox.push((user, n, settle, folded));
                }
                Some(other) => {
                    use herald_types::Answers;
                    self.settlements.answer(other);
                    pushed += 1;
                }
            }
        }
        metrics::counter!("herald_notifications_total", "route" => "pushed").increment(pushed);
        self.feed.write(feed).await;
        let held = Settle::of(&release);
        if !to_inbox.is_empty() {
            let refs: Vec<(UserId, &Notification)> =
                to_inbox.iter().map(|(u, n, ..)| (*u, n)).collect();
            let sinks = self.settlements.sinks().clone();
            let parking = crate::sink::Parking {
                items: &refs,
                fence: None,
                webhook_only: false,
            };
            match self.retry("park", || sinks.park(&parking)).await {
                Ok(parked) => {
                    let dropped = match parked {
                        crate::sink::Parked::Held { dropped } => dropped,
                        crate::sink::Parked::Fenced => 0,
                    };
                    if dropped > 0 {
                        metrics::counter!("herald_notifications_dropped_total", "reason" => "inbox_full").increment(dropped);
                    }
                    metrics::counter!("herald_notifications_total", "route" => "queued")
                        .increment(to_inbox.len() as u64);
                    for (u, ..) in &to_inbox {
                        self.edge.send(EdgeCommand::Poke { user: *u });
                    }
                    self.poke_remote(&to_inbox).await;
                }
                Err(h) => {
                    // What could not be stored stays unsettled: processed
                    // again after restart. (The batch's own records, on an
                    // error that repeats, are processed again now instead.)
                    let stopping = matches!(h, Halt::Stopped);
                    for (_, _, settle, folded) in &to_inbox {
                        if *folded || stopping {
                            self.settlements.fail(settle);
                        }
                    }
                    self.settlements.fail(&held);
                    return Err(h);
                }
            }
        }
        self.settlements.release(&held);
        Ok(())
    }

    /// Routes aggregates that came due; one that cannot be stored even
    /// after retries stays unsettled until restart (it spans many records,
    /// so it cannot be one record's dead letter).
    pub(crate) async fn route_aggregates(&mut self, due: Vec<Emit>) {
        if due.is_empty() {
            return;
        }
        if let Err(Halt::Permanent(why)) = self.route(due).await {
            tracing::error!(partition = self.partition, reason = %why, "aggregates could not be stored; their records are processed again after restart");
        }
    }

    /// The other live nodes holding each emitted notification's recipient
    /// (empty when this node is alone, or when presence cannot be read:
    /// then the inbox serves).
    async fn remote_holders(&self, list: &[Emit]) -> Vec<Vec<String>> {
        let Some(relay) = &self.relay else {
            return Vec::new();
        };
        let users: Vec<UserId> = list.iter().map(|e| e.user).collect();
        match relay.holders(&users).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "presence unreadable; other nodes' users get their inbox");
                Vec::new()
            }
        }
    }

    /// After an inbox write: other nodes that hold these users now (one may
    /// have connected after the holders were read, and drained before the
    /// write; or not be seen alive here yet) are told to drain again.
    async fn poke_remote(&self, written: &[(UserId, Notification, Settle, bool)]) {
        let Some(relay) = &self.relay else {
            return;
        };
        let users: Vec<UserId> = written.iter().map(|(u, ..)| *u).collect();
        relay.poke_holders(&users).await;
    }

    /// Hands a copy of `n` to each node in `nodes`, counted against its
    /// records once for all of them (the first ack on any settles it);
    /// true when at least one node took it.
    fn push_remote(
        &self,
        nodes: &[String],
        user: UserId,
        n: &Notification,
        settle: &Settle,
    ) -> bool {
        let Some(relay) = &self.relay else {
            return false;
        };
        if nodes.is_empty() {
            return false;
        }
        self.settlements.retain(settle);
        if relay.push(nodes, user, n, settle.clone()) {
            return true;
        }
        self.settlements.release(settle);
        false
    }
}
