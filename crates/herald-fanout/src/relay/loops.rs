//! The relay's background loops: its subscription to this node's channel
//! (made again when it ends or falls silent) and its heartbeat (liveness,
//! the self-ping, the list of live nodes, the sweep of unanswered pushes).

use herald_types::sync::Shared;
use std::sync::{Arc, Weak};
use std::time::Duration;

use herald_types::EdgeCommand;

use super::wire::{channel, Wire};
use super::Relay;

/// A subscription silent this long (the node pings itself every second)
/// is made again.
const SILENT: Duration = Duration::from_secs(4);
/// A look at the subscription this late means the process itself stalled.
const STALLED: Duration = Duration::from_secs(2);

pub(super) async fn subscribe_loop(relay: Weak<Relay>) {
    // At most a second between tries: pokes are lost while it is down.
    let mut wait = herald_types::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut again = false;
    loop {
        let Some(node) = relay.upgrade().map(|r| r.node.clone()) else {
            return;
        };
        let Some(store) = relay.upgrade().map(|r| r.store.clone()) else {
            return;
        };
        match store.subscribe(&channel(&node)).await {
            Ok(mut sub) => {
                wait.reset();
                tracing::info!(node = %node, "relay listening");
                if again {
                    // Pokes and pushes sent while the channel was down
                    // are lost: every connection drains, and the other
                    // nodes send the pushes still unanswered to the inbox.
                    if let Some(r) = relay.upgrade() {
                        r.to_local(EdgeCommand::PokeAll);
                        r.announce_listening();
                    }
                }
                again = true;
                if let Some(r) = relay.upgrade() {
                    r.heard();
                    // Made now: a failover seen before needs no other.
                    r.take_resubscribe();
                }
                let mut look = tokio::time::interval(Duration::from_secs(1));
                look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut looked = std::time::Instant::now();
                loop {
                    tokio::select! {
                        msg = sub.next() => {
                            let Some(msg) = msg else {
                                tracing::warn!("relay subscription ended; reconnecting");
                                break;
                            };
                            let Some(r) = relay.upgrade() else { return };
                            r.on_message(&msg);
                        }
                        _ = look.tick() => {
                            let Some(r) = relay.upgrade() else { return };
                            // This process did not run for a while (frozen,
                            // starved): its pings were not sent, and what
                            // arrived meanwhile waits unread in the
                            // subscription, so it is given time to read it
                            // rather than dropped.
                            let gap = looked.elapsed();
                            looked = std::time::Instant::now();
                            if gap > STALLED {
                                tracing::info!(stalled_ms = gap.as_millis() as u64, "this node did not run for a while; reading what its subscription holds");
                                r.heard();
                                continue;
                            }
                            if r.take_resubscribe() {
                                tracing::info!("the Redis Cluster failed over; subscribing again where the channel lives now");
                                metrics::counter!("herald_relay_resubscribed_total").increment(1);
                                break;
                            }
                            if r.silent_for() > SILENT {
                                tracing::warn!(silent_ms = r.silent_for().as_millis() as u64, "relay subscription silent (its own pings stopped arriving); subscribing again");
                                metrics::counter!("herald_relay_resubscribed_total").increment(1);
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "relay cannot subscribe; retrying"),
        }
        wait.sleep().await;
    }
}

pub(super) async fn heartbeat_loop(relay: Weak<Relay>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut first = true;
    let mut epoch: Option<u64> = None;
    loop {
        tick.tick().await;
        let Some(r) = relay.upgrade() else { return };
        // Proves this node's own subscription alive (subscribe_loop).
        r.send(&r.node, &Wire::Ping);
        // Each second: a lapse is noticed (and drained) within a second of
        // Redis answering again.
        match r
            .store
            .node_alive(r.incarnation, Duration::from_secs(10))
            .await
        {
            Ok(true) => {}
            Ok(false) if first => {}
            Ok(false) => {
                // Frozen, or cut off from Redis, past the liveness
                // lifetime: other nodes wrote inboxes of users
                // connected here and told nobody here.
                tracing::warn!(
                    "this node's liveness had lapsed; every connection drains its inbox"
                );
                metrics::counter!("herald_relay_liveness_lapsed_total").increment(1);
                // And again once every other node has read this
                // node's liveness back (they refresh it each second):
                // until then they write its users' inboxes unpoked.
                drain_all_twice(&r);
            }
            Err(e) => tracing::warn!(error = %e, "node liveness not written"),
        }
        first = false;
        // A Redis Cluster failover loses what pub/sub had not passed on
        // (a poke published on the master that died): every connection
        // here drains once the cluster has a new configuration.
        if let Ok(Some(e)) = r.store.cluster_epoch().await {
            if epoch.is_some_and(|seen| e > seen) {
                tracing::info!(
                    epoch = e,
                    "the Redis Cluster changed its configuration (a failover); every connection drains its inbox"
                );
                metrics::counter!("herald_relay_redis_failovers_total").increment(1);
                r.ask_resubscribe();
                drain_all_twice(&r);
            }
            epoch = Some(epoch.map_or(e, |seen| seen.max(e)));
        }
        match r.store.nodes_alive().await {
            Ok(a) => {
                metrics::gauge!("herald_relay_nodes_alive").set(a.len() as f64);
                *r.alive.writing() = a;
            }
            Err(e) => tracing::debug!(error = %e, "node list not read"),
        }
        r.sweep();
    }
}

/// Every connection here drains its inbox now, and again 2 s later (after
/// writes other nodes were still retrying).
fn drain_all_twice(r: &Arc<Relay>) {
    r.to_local(EdgeCommand::PokeAll);
    let later = Arc::downgrade(r);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(r) = later.upgrade() {
            r.to_local(EdgeCommand::PokeAll);
        }
    });
}

/// Users whose inbox settlement just wrote: every node holding one of
/// their connections (this one too) is told to drain. Past the
/// announcement queue's bound some are missed (counted): their
/// notifications wait in the inbox until the next drain.
pub(super) async fn poke_parked_loop(
    relay: Weak<Relay>,
    mut parked: tokio::sync::broadcast::Receiver<herald_types::UserId>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match parked.recv().await {
            Ok(user) => {
                let Some(r) = relay.upgrade() else { return };
                r.poke_everywhere(user).await;
            }
            Err(RecvError::Lagged(n)) => {
                metrics::counter!("herald_relay_pokes_missed_total").increment(n);
                tracing::warn!(missed = n, "parked-user announcements overflowed; those users drain on their next connection");
                // This node's own connections at least drain now.
                if let Some(r) = relay.upgrade() {
                    r.to_local(herald_types::EdgeCommand::PokeAll);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
