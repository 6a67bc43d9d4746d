//! The edge's half of the pull path (celebrities and hot threads): a local
//! index outbox -> connected followers (or subscribers), one encoded frame
//! pushed to all of them but the post's actor in slices (a task each), and
//! the pull of outboxes when a follower connects.

use std::sync::Arc;

use bytes::Bytes;
use herald_types::{Notification, Outbox, UserId, WireFormat};

use crate::Edge;

/// A post on the pull path, encoded once in both formats and shared by
/// every follower's queue.
pub(crate) struct SharedFrame {
    pub outbox: Outbox,
    actor: UserId,
    pub order: u64,
    pub id: Arc<str>,
    kind: herald_types::EventKind,
    object: Option<Arc<str>>,
    /// The whole WebSocket frame in each format, written as is to every
    /// follower.
    json: Bytes,
    msgpack: Bytes,
}

impl SharedFrame {
    pub fn frame(&self, fmt: WireFormat) -> Bytes {
        match fmt {
            WireFormat::Json => self.json.clone(),
            WireFormat::MsgPack => self.msgpack.clone(),
        }
    }
}

/// Pushes a post on the pull path to every local follower (or thread
/// subscriber) but its actor, `broadcast_chunk` at a time (a task each, so
/// other connections keep their latency).
/// A follower whose queue is full is poked to pull it from the outbox.
pub(crate) fn broadcast(edge: &Edge, outbox: Outbox, n: Notification) {
    // The post is in Redis already: keep the hot copy in step, whether or
    // not anyone is connected to hear it now.
    edge.outboxes.append(outbox, &n);
    let followers: Vec<UserId> = edge
        .index
        .get(&outbox)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    metrics::counter!("herald_celebrity_broadcasts_total").increment(1);
    if followers.is_empty() {
        return;
    }
    let frame = Arc::new(SharedFrame {
        outbox,
        actor: n.actor,
        order: n.order,
        id: n.id.clone(),
        kind: n.kind,
        object: n.object.clone(),
        json: crate::frames::notification(&n, WireFormat::Json),
        msgpack: crate::frames::notification(&n, WireFormat::MsgPack),
    });
    let Some(edge) = edge.me.upgrade() else {
        return;
    };
    let template = Arc::new(n);
    tokio::spawn(async move {
        let chunk = edge.cfg.broadcast_chunk.max(1);
        let now_ms = herald_types::now_ms();
        let started = std::time::Instant::now();
        // One task per slice: it reads its followers' mutes and modes (one
        // pipeline, never one read per follower) and writes to them as
        // soon as they come back, while later slices' reads are still in
        // Redis; the runtime spreads the slices over every core.
        let tasks: Vec<_> = followers
            .chunks(chunk)
            .map(|slice| {
                let (edge, frame, template) = (edge.clone(), frame.clone(), template.clone());
                let slice = slice.to_vec();
                tokio::spawn(async move {
                    match edge.prefs.get_many(&slice).await {
                        Ok(prefs) => push_slice(&edge, &frame, &template, now_ms, &slice, prefs),
                        // They will pull it from the outbox (filtered) on connect.
                        Err(e) => {
                            tracing::warn!(?outbox, error = %e, "preferences unavailable, slice skipped");
                            0
                        }
                    }
                })
            })
            .collect();
        let mut pushed = 0u64;
        for t in tasks {
            pushed += t.await.unwrap_or(0);
        }
        metrics::counter!("herald_celebrity_pushes_total").increment(pushed);
        let took = started.elapsed();
        metrics::histogram!("herald_celebrity_broadcast_seconds").record(took.as_secs_f64());
        tracing::debug!(
            ?outbox,
            pushed,
            ms = took.as_millis() as u64,
            "pull-path post pushed to local followers"
        );
    });
}

/// Writes a post to the followers of one slice; returns the frames
/// written.
fn push_slice(
    edge: &Edge,
    frame: &SharedFrame,
    template: &Notification,
    now_ms: u64,
    slice: &[UserId],
    prefs: Vec<Arc<herald_prefs::Resolved>>,
) -> u64 {
    let mut pushed = 0u64;
    for (u, p) in slice.iter().zip(prefs) {
        // A thread's commenter is among its subscribers: never told of
        // their own comment.
        if *u == frame.actor {
            continue;
        }
        let route = p.route(frame.kind, frame.actor, frame.object.as_deref(), now_ms);
        match route {
            herald_prefs::Route::Drop(_) => continue,
            herald_prefs::Route::Wait(bucket, release_ms) => {
                // Digest-mode followers get the post in their digest,
                // followers in quiet hours when they end.
                edge.answers.answer(herald_types::EdgeAnswer::Hold {
                    user: *u,
                    bucket,
                    release_ms,
                    n: template.clone(),
                    seen: None,
                });
                continue;
            }
            herald_prefs::Route::Now => {}
        }
        if let Some(d) = edge.conns.get(u) {
            // Every connection of the follower here.
            for h in d.iter() {
                // Written straight into the socket when it takes it; a
                // closing connection's user pulls it later.
                if h.link.push_shared(edge, frame) {
                    pushed += 1;
                } else {
                    h.poke.notify_one();
                }
            }
        }
    }
    pushed
}

pub(crate) fn follow_changed(edge: &Edge, follower: UserId, outbox: Outbox, follows: bool) {
    if follows {
        if edge.celebrities.is_on(outbox) && edge.conns.contains_key(&follower) {
            edge.index.entry(outbox).or_default().insert(follower);
        }
    } else if let Some(mut s) = edge.index.get_mut(&outbox) {
        s.remove(&follower);
    }
}

/// An outbox on the pull path: index its followers (a thread's
/// subscribers) that are connected here.
pub(crate) fn path_changed(
    edge: &Edge,
    outbox: Outbox,
    object: Option<Arc<str>>,
    on: bool,
    followers: &[UserId],
) {
    // The node's mirror of the set (already current when the change was
    // made here; from another node, it is now).
    if let (Outbox::Thread(t), Some(object)) = (outbox, object) {
        edge.celebrities.name(t, object);
    }
    edge.celebrities.set(outbox, on);
    // Moving off keeps the index: a post decided for the pull path before
    // the change (earlier in the log, broadcast after this message when
    // the change came in the same batch) still reaches them.
    if !on {
        return;
    }
    let mut set = edge.index.entry(outbox).or_default();
    for f in followers {
        if edge.conns.contains_key(f) {
            set.insert(*f);
        }
    }
}

/// How often the celebrity set's version is checked in Redis.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps this node's celebrity set and follower index coherent with Redis
/// within about a second, whoever changed it: another node's worker (whose
/// message may have been lost: pub/sub does not retry), or a bulk import
/// served by another node. One `GET` per second; a reload only on change.
pub(crate) async fn sync_loop(edge: std::sync::Weak<Edge>) {
    let mut seen: Option<u64> = None;
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(edge) = edge.upgrade() else { return };
        // What this node's mirror holds (changes made here or elsewhere).
        metrics::gauge!("herald_celebrities").set(edge.celebrities.len() as f64);
        let Ok(v) = edge.store.celebrities_version().await else {
            continue;
        };
        if seen == Some(v) {
            continue;
        }
        let changed = match edge.store.reload_celebrities(&edge.celebrities).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "celebrity set not reloaded");
                continue;
            }
        };
        seen = Some(v);
        metrics::gauge!("herald_celebrities").set(edge.celebrities.len() as f64);
        for (outbox, on) in changed {
            tracing::info!(?outbox, on, "pull path change picked up from redis");
            let object = match outbox {
                Outbox::Thread(t) => edge.celebrities.object_of(t),
                Outbox::User(_) => None,
            };
            let followers = if on {
                let here: Vec<UserId> = edge.conns.iter().map(|c| *c.key()).collect();
                match edge
                    .store
                    .followers_among(outbox, object.as_deref(), &here)
                    .await
                {
                    Ok(f) => f,
                    Err(e) => {
                        // Its connected followers are indexed as they
                        // reconnect (the pull path serves them meanwhile).
                        tracing::warn!(?outbox, error = %e, "followers of a new pull-path outbox not read");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            path_changed(&edge, outbox, None, on, &followers);
            if !on {
                edge.index.remove(&outbox);
            }
        }
    }
}

impl Edge {
    /// Removes a user who left from every outbox's follower index.
    pub(crate) fn unindex(&self, user: UserId) {
        for mut e in self.index.iter_mut() {
            e.value_mut().remove(&user);
        }
    }
}
