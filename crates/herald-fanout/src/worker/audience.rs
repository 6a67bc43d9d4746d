//! Who hears each event, before preferences: the follow graph (changes,
//! counts, follower lists), object subscriptions, the celebrity
//! transitions follows cause and celebrity posts' outboxes. Each step is
//! one pipeline over the batch, in log order.

use herald_store::{GraphAnswer, GraphOp};
use herald_types::ids::broadcast_id;
use herald_types::EdgeCommand;

use super::{Halt, Worker};
use crate::plan::{self, Item};

impl Worker {
    /// Graph changes, follower counts and follower reads in log order, one
    /// pipeline; fills each item's `followers` or `follower_count`.
    pub(super) async fn read_graph(&mut self, items: &mut [Item]) -> Result<(), Halt> {
        let mut ops = Vec::new();
        // The items that asked a count or a follower read, in the order
        // asked: the store answers those two, one each.
        let mut asking = Vec::new();
        for (idx, i) in items.iter_mut().enumerate() {
            if let (Some(add), Some(followee)) = (i.ev.kind.graph_change(), i.ev.recipient) {
                let follower = i.ev.actor;
                ops.push(if add {
                    GraphOp::Follow { follower, followee }
                } else {
                    GraphOp::Unfollow { follower, followee }
                });
                ops.push(GraphOp::Count(followee));
                asking.push(idx);
            } else if i.ev.kind.to_followers() {
                if self.celebrities.is_celebrity(i.ev.actor) {
                    i.celebrity_post = true;
                } else {
                    ops.push(GraphOp::Followers(i.ev.actor));
                    asking.push(idx);
                }
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let answers = self.retry("graph", || store.graph(&ops)).await?;
        for (idx, answer) in asking.into_iter().zip(answers) {
            match answer {
                GraphAnswer::Count(n) => items[idx].follower_count = Some(n),
                GraphAnswer::Followers(l) => items[idx].followers = Some(l),
            }
        }
        Ok(())
    }

    /// Object subscriptions, in log order, one pipeline: the subscribers of
    /// each item whose kind notifies them, then its actor subscribed when
    /// its kind says so (a later comment in the batch tells an earlier
    /// commenter).
    pub(super) async fn read_threads(&mut self, items: &mut [Item]) -> Result<(), Halt> {
        let mut steps = Vec::new();
        let mut asking = Vec::new();
        for (idx, i) in items.iter().enumerate() {
            let rules = i.ev.kind.rules();
            let Some(object) = i.ev.object.as_deref() else {
                continue;
            };
            let read = rules.notify.subscribers;
            let subscribe = rules.subscribe_actor.then_some(i.ev.actor);
            if !read && subscribe.is_none() {
                continue;
            }
            if read {
                asking.push(idx);
            }
            steps.push(herald_store::ThreadStep {
                object: object.to_string(),
                read,
                subscribe,
            });
        }
        if steps.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let pages = self.retry("threads", || store.threads(&steps)).await?;
        for (idx, page) in asking.into_iter().zip(pages) {
            items[idx].subscribers = Some(page);
        }
        Ok(())
    }

    /// Celebrity posts: to their outboxes (two commands each), then one
    /// broadcast each to the edge.
    pub(super) async fn celebrity_posts(&mut self, items: &[Item]) -> Result<(), Halt> {
        for i in items.iter().filter(|i| i.celebrity_post) {
            let mut n = plan::notification(i, 0);
            n.id = broadcast_id(&i.dedup).into();
            let store = self.store.clone();
            let cap = self.cfg.outbox_cap;
            let actor = i.ev.actor;
            let fence = self.fence;
            if !self
                .retry("outbox", || store.outbox_push(actor, &n, cap, fence))
                .await?
            {
                return Err(self.deposed("outbox"));
            }
            metrics::counter!("herald_celebrity_posts_total").increment(1);
            self.to_every_edge(EdgeCommand::Broadcast {
                celebrity: actor,
                n,
            });
        }
        Ok(())
    }

    /// After follows and unfollows: move accounts across the celebrity
    /// threshold, start new followers' outbox cursors at the follow, and
    /// keep the edge's follower index current.
    pub(super) async fn apply_follows(&mut self, items: &[Item]) -> Result<(), Halt> {
        for i in items {
            let (Some(add), Some(followee), Some(n)) =
                (i.ev.kind.graph_change(), i.ev.recipient, i.follower_count)
            else {
                continue;
            };
            let was = self.celebrities.is_celebrity(followee);
            if let Some(on) = self.cfg.celebrity.decide(was, n) {
                let (store, set) = (self.store.clone(), self.celebrities.clone());
                self.retry("celebrity", || store.set_celebrity(&set, followee, on))
                    .await?;
                // The edge indexes the new celebrity's connected followers
                // before this worker can process (and broadcast) its next post.
                let followers = if on {
                    let store = self.store.clone();
                    let ops = [GraphOp::Followers(followee)];
                    match self.retry("followers", || store.graph(&ops)).await?.pop() {
                        Some(GraphAnswer::Followers(l)) => l,
                        _ => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                self.to_every_edge(EdgeCommand::CelebrityChanged {
                    user: followee,
                    celebrity: on,
                    followers,
                });
            }
            let follows = add;
            if follows && self.celebrities.is_celebrity(followee) {
                let store = self.store.clone();
                let (f, at) = (i.ev.actor, i.ev.accepted_us);
                self.retry("outbox cursor", || store.outbox_start(f, followee, at))
                    .await?;
            }
            self.to_every_edge(EdgeCommand::FollowChanged {
                follower: i.ev.actor,
                celebrity: followee,
                follows,
            });
        }
        Ok(())
    }
}
