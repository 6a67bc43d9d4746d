//! Who hears each event, before preferences: the follow graph (changes,
//! counts, follower lists), object subscriptions (and threads moving to
//! and off the pull path), the celebrity transitions follows cause and
//! the outboxes of posts on the pull path. Each step is
//! one pipeline over the batch, in log order.

use herald_store::{GraphAnswer, GraphOp, ThreadRead};
use herald_types::ids::broadcast_id;
use herald_types::{EdgeCommand, Outbox, UserId};

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
    /// each item whose kind notifies them (their count, and the list unless
    /// the thread is on the pull path or past the threshold), then its
    /// actor subscribed when its kind says so (a later comment in the batch
    /// tells an earlier commenter). Then each thread's path, decided in log
    /// order with the celebrity hysteresis (`thread_path`).
    pub(super) async fn read_threads(&mut self, items: &mut [Item]) -> Result<(), Halt> {
        let mut steps = Vec::new();
        let mut asking = Vec::new();
        for (idx, i) in items.iter().enumerate() {
            let rules = i.ev.kind.rules();
            let Some(object) = i.ev.object.as_deref() else {
                continue;
            };
            let subscribe = rules
                .subscribe_actor
                .then_some((i.ev.actor, i.ev.accepted_us));
            if !rules.notify.subscribers && subscribe.is_none() {
                continue;
            }
            // A thread on the pull path: its count only; otherwise the
            // list, unless the count reaches the threshold.
            let read =
                rules
                    .notify
                    .subscribers
                    .then(|| match self.celebrities.hot_thread(object) {
                        Some(_) => 0,
                        None => self.cfg.celebrity.enter.saturating_sub(1).max(1),
                    });
            if read.is_some() {
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
            self.thread_path(&mut items[idx], page).await?;
        }
        // Actors who joined a thread on the pull path: the edges index them.
        for i in items.iter() {
            let Some(object) = i.ev.object.as_deref() else {
                continue;
            };
            if !i.ev.kind.rules().subscribe_actor {
                continue;
            }
            if let Some(t) = self.celebrities.hot_thread(object) {
                self.to_every_edge(EdgeCommand::FollowChanged {
                    follower: i.ev.actor,
                    outbox: Outbox::Thread(t),
                    follows: true,
                });
            }
        }
        Ok(())
    }

    /// One item's thread: onto the pull path at `celebrity.enter`
    /// subscribers, off it below `celebrity.exit` (the thread's id, its
    /// status and, when it moves on, its subscribers for the edges' index);
    /// on it, the item's push recipients who subscribe are left to the
    /// thread's outbox. Otherwise the item gets the subscriber list.
    async fn thread_path(&mut self, i: &mut Item, page: ThreadRead) -> Result<(), Halt> {
        let Some(object) = i.object.clone() else {
            return Ok(());
        };
        let hot = self.celebrities.hot_thread(&object);
        let count = match &page {
            ThreadRead::Subscribers(l) => l.len() as u64,
            ThreadRead::Many(n) => *n,
        };
        let store = self.store.clone();
        let now_hot = match self.cfg.celebrity.decide(hot.is_some(), count) {
            Some(on) => {
                let set = self.celebrities.clone();
                let t = match hot {
                    Some(t) => t,
                    None => {
                        self.retry("thread id", || store.thread_id(&set, &object))
                            .await?
                    }
                };
                let outbox = Outbox::Thread(t);
                self.retry("thread path", || store.set_celebrity(&set, outbox, on))
                    .await?;
                // The edges index the thread's connected subscribers before
                // its first post on the pull path is broadcast.
                let followers = match on {
                    true => self.subscribers_of(&object).await?,
                    false => Vec::new(),
                };
                self.to_every_edge(EdgeCommand::PathChanged {
                    outbox,
                    object: Some(object.clone()),
                    on,
                    followers,
                });
                on.then_some(t)
            }
            None => hot,
        };
        match (now_hot, page) {
            (Some(t), _) => {
                let mut push = i.ev.direct_recipients();
                if !i.celebrity_post && i.ev.kind.to_followers() {
                    push.extend(i.followers.iter().flatten());
                }
                let mut skip = self
                    .retry("thread members", || store.subscribed_among(&object, &push))
                    .await?;
                skip.sort_unstable();
                metrics::counter!("herald_thread_posts_total").increment(1);
                i.hot_thread = Some((t, skip));
            }
            (None, ThreadRead::Subscribers(l)) => i.subscribers = Some(l),
            // Moved off the pull path (or read as hot): read the list.
            (None, ThreadRead::Many(_)) => {
                i.subscribers = Some(self.subscribers_of(&object).await?)
            }
        }
        Ok(())
    }

    /// Every subscriber of `object` (when a thread changes path).
    async fn subscribers_of(&mut self, object: &str) -> Result<Vec<UserId>, Halt> {
        let store = self.store.clone();
        let step = [herald_store::ThreadStep {
            object: object.to_string(),
            read: Some(i64::MAX as u64),
            subscribe: None,
        }];
        Ok(
            match self
                .retry("subscribers", || store.threads(&step))
                .await?
                .pop()
            {
                Some(ThreadRead::Subscribers(l)) => l,
                _ => Vec::new(),
            },
        )
    }

    /// Posts on the pull path (a celebrity's; any post to a thread on it):
    /// to their outboxes (one script each), then one broadcast each to the
    /// edge.
    pub(super) async fn celebrity_posts(&mut self, items: &[Item]) -> Result<(), Halt> {
        for i in items {
            let outboxes = i
                .celebrity_post
                .then_some(Outbox::User(i.ev.actor))
                .into_iter()
                .chain(i.hot_thread.as_ref().map(|(t, _)| Outbox::Thread(*t)));
            for outbox in outboxes {
                let mut n = plan::notification(i, 0);
                n.id = broadcast_id(&i.dedup).into();
                let store = self.store.clone();
                let cap = self.cfg.outbox_cap;
                let fence = self.fence;
                if !self
                    .retry("outbox", || store.outbox_push(outbox, &n, cap, fence))
                    .await?
                {
                    return Err(self.deposed("outbox"));
                }
                if let Outbox::User(_) = outbox {
                    metrics::counter!("herald_celebrity_posts_total").increment(1);
                }
                self.to_every_edge(EdgeCommand::Broadcast { outbox, n });
            }
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
                self.retry("celebrity", || {
                    store.set_celebrity(&set, Outbox::User(followee), on)
                })
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
                self.to_every_edge(EdgeCommand::PathChanged {
                    outbox: Outbox::User(followee),
                    object: None,
                    on,
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
                outbox: Outbox::User(followee),
                follows,
            });
        }
        Ok(())
    }
}
