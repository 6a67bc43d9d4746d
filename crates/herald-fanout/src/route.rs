//! Handing notifications on: live to a connection on this node, or to the
//! recipient's inbox (one pipeline) when the user is not here or not
//! keeping up.

use herald_types::{Notification, SettleToken, UserId};

use crate::worker::{abandon_token, Halt, Worker};

impl Worker {
    /// Pushes each notification live, or writes it to the inbox (one
    /// pipeline) when its recipient is not here or not keeping up; tokens
    /// go only once the notification is pushed or stored.
    pub(crate) async fn route(
        &mut self,
        list: Vec<(UserId, Notification, Option<SettleToken>)>,
    ) -> Result<(), Halt> {
        let mut to_inbox: Vec<(UserId, Notification, Option<SettleToken>)> = Vec::new();
        let (mut pushed, mut queued) = (0u64, 0u64);
        for (r, n, token) in list {
            match self.deliver.push(r, n, token) {
                Ok(()) => pushed += 1,
                Err(refused) => {
                    if refused.why == herald_types::Refusal::Full {
                        metrics::counter!("herald_notifications_rerouted_total", "reason" => "slow_consumer").increment(1);
                    }
                    to_inbox.push((r, refused.notification, refused.token));
                }
            }
        }
        if !to_inbox.is_empty() {
            let refs: Vec<(UserId, &Notification)> =
                to_inbox.iter().map(|(u, n, _)| (*u, n)).collect();
            let store = self.store.clone();
            match self.retry("inbox", || store.inbox_push(&refs)).await {
                Ok(dropped) => {
                    if dropped > 0 {
                        metrics::counter!("herald_notifications_dropped_total", "reason" => "inbox_full").increment(dropped);
                    }
                    queued = to_inbox.len() as u64;
                    for (u, _, _) in &to_inbox {
                        if self.deliver.is_online(*u) {
                            self.deliver.poke(*u);
                        }
                    }
                }
                Err(h) => {
                    metrics::counter!("herald_notifications_total", "route" => "pushed")
                        .increment(pushed);
                    for (_, _, t) in to_inbox.drain(..) {
                        if let Some(t) = t {
                            abandon_token(t, &h);
                        }
                    }
                    return Err(h);
                }
            }
        }
        metrics::counter!("herald_notifications_total", "route" => "pushed").increment(pushed);
        metrics::counter!("herald_notifications_total", "route" => "queued").increment(queued);
        Ok(())
    }

    /// Routes aggregates that came due; one that cannot be stored even
    /// after retries stays unsettled until restart (it spans many records,
    /// so it cannot be one record's dead letter).
    pub(crate) async fn route_aggregates(&mut self, due: Vec<(UserId, Notification, SettleToken)>) {
        if due.is_empty() {
            return;
        }
        let list = due.into_iter().map(|(r, n, t)| (r, n, Some(t))).collect();
        if let Err(Halt::Permanent(why)) = self.route(list).await {
            tracing::error!(partition = self.partition, reason = %why, "aggregates could not be stored; their records are processed again after restart");
        }
    }
}
