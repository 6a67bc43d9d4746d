//! The pure part of processing a batch, apart from its I/O so it can be
//! unit-tested without Redis: the items on their way through the stages,
//! who is told about each, and where each notification goes given its
//! recipient's preferences.

use std::sync::Arc;

use herald_prefs::{Resolved, Route};
use herald_store::Bucket;
use herald_types::ids::notification_id;
use herald_types::trace::{self, SpanKind};
use herald_types::{LogEvent, Notification, TraceContext, UserId};

use crate::Hold;

/// One event of a batch, on its way through the stages.
pub(crate) struct Item {
    pub offset: u64,
    pub event_id: Arc<str>,
    pub dedup: String,
    pub ev: LogEvent,
    pub hold: Hold,
    /// The event's strings and actors as every recipient's notification
    /// shares them (one allocation per event, not per recipient).
    pub object: Option<Arc<str>>,
    pub text: Option<Arc<str>>,
    pub actors: Arc<[UserId]>,
    /// A post on the push path: its actor's followers (read by the graph
    /// stage).
    pub followers: Option<Vec<UserId>>,
    /// A kind that notifies `subscribers`: its object's subscribers
    /// (read by the thread stage, before the actor joins them).
    pub subscribers: Option<Vec<UserId>>,
    /// After a follow or unfollow: the followee's follower count.
    pub follower_count: Option<u64>,
    /// A post on the celebrity (pull) path.
    pub celebrity_post: bool,
    /// Its object is a thread on the pull path (more subscribers than the
    /// celebrity threshold): the thread's id, and those of its direct
    /// recipients and followers who subscribe to it, sorted (they hear it
    /// from the thread's outbox, not by push).
    pub hot_thread: Option<(u64, Vec<UserId>)>,
    /// Its fan-out span when the event was traced (ends with the item),
    /// and that span as the parent of each notification's push.
    pub span: Option<trace::Span>,
    pub trace: Option<Arc<TraceContext>>,
}

impl Item {
    pub(crate) fn new(
        offset: u64,
        event_id: String,
        dedup: String,
        ev: LogEvent,
        hold: Hold,
    ) -> Item {
        let span = ev.trace.as_ref().and_then(|parent| {
            let mut s = trace::start("herald.fanout", SpanKind::Consumer, Some(parent))?;
            s.set("herald.event_id", event_id.clone());
            s.set("herald.partition", i64::from(hold.rec.partition));
            s.set("herald.offset", offset as i64);
            Some(s)
        });
        Item {
            trace: span.as_ref().map(|s| Arc::new(s.context())),
            span,
            offset,
            event_id: event_id.into(),
            dedup,
            object: ev.object.as_deref().map(Arc::from),
            text: ev.text.as_deref().map(Arc::from),
            actors: Arc::from([ev.actor]),
            ev,
            hold,
            followers: None,
            subscribers: None,
            follower_count: None,
            celebrity_post: false,
            hot_thread: None,
        }
    }
}

/// The notification `recipient` gets for `i`: its id is the only part
/// built per recipient.
pub(crate) fn notification(i: &Item, recipient: UserId) -> Notification {
    Notification {
        id: notification_id(&i.dedup, recipient).into(),
        event_id: i.event_id.clone(),
        kind: i.ev.kind,
        actor: i.ev.actor,
        object: i.object.clone(),
        text: i.text.clone(),
        ts_ms: i.ev.accepted_us / 1000,
        count: 1,
        actors: i.actors.clone(),
        order: i.ev.accepted_us,
        digest: None,
        data: i.ev.data.clone(),
        trace: i.trace.clone(),
        supersedes: None,
    }
}

/// Who is told about each item (by index), by its kind's rules: its
/// direct recipients (`recipient`, `mentions`), then, for a kind that
/// notifies followers, the actor's followers not already told (unless the
/// actor is a celebrity: their followers pull it from the outbox), then,
/// for a kind that notifies subscribers, its object's subscribers not
/// already told (unless the thread is on the pull path: its subscribers
/// pull it, and are not pushed it as recipients or followers either).
/// Never the actor.
pub(crate) fn recipients(items: &[Item]) -> Vec<(usize, UserId)> {
    let mut out = Vec::new();
    for (idx, i) in items.iter().enumerate() {
        let mut direct = i.ev.direct_recipients();
        let in_thread = i.hot_thread.as_ref().map(|(_, s)| &s[..]).unwrap_or(&[]);
        // Sorted (the thread stage sorts it): followers can be many.
        let pulls = |u: &UserId| in_thread.binary_search(u).is_ok();
        direct.retain(|u| !pulls(u));
        out.extend(direct.iter().map(|&u| (idx, u)));
        let followers = match &i.followers {
            Some(f) if !i.celebrity_post && i.ev.kind.to_followers() => &f[..],
            _ => &[],
        };
        let subscribers = i.subscribers.as_deref().unwrap_or(&[]);
        if subscribers.is_empty() {
            // Followers alone (a post): the direct recipients are few.
            out.extend(
                followers
                    .iter()
                    .filter(|&&u| u != i.ev.actor && !direct.contains(&u))
                    .filter(|u| !pulls(u))
                    .map(|&u| (idx, u)),
            );
            continue;
        }
        // Each once: the direct recipients first, then followers, then
        // subscribers (a set, for the large lists).
        let mut told: std::collections::HashSet<UserId> = direct.iter().copied().collect();
        told.insert(i.ev.actor);
        for &u in followers.iter().chain(subscribers) {
            if told.insert(u) {
                out.push((idx, u));
            }
        }
    }
    out
}

/// Records on each traced item's span how many recipients it has.
pub(crate) fn count_traced(items: &mut [Item], planned: &[(usize, UserId)]) {
    if items.iter().all(|i| i.span.is_none()) {
        return;
    }
    let mut n = vec![0i64; items.len()];
    for &(idx, _) in planned {
        n[idx] += 1;
    }
    for (i, n) in items.iter_mut().zip(n) {
        if let Some(s) = &mut i.span {
            s.set("herald.recipients", n);
        }
    }
}

/// Where each planned notification goes, preferences applied.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Routed {
    /// (item, recipient): deliver now (possibly folded).
    pub now: Vec<(usize, UserId)>,
    /// (item, recipient, bucket, release time ms): quiet hours or digest.
    pub waiting: Vec<(usize, UserId, Bucket, u64)>,
    /// Dropped by a mute or an `off` mode, with the reason (counted by
    /// `Resolved::route`).
    pub dropped: Vec<&'static str>,
}

/// Applies each recipient's preferences (`prefs[k]` belongs to
/// `planned[k]`; a missing entry means defaults).
pub(crate) fn route(
    items: &[Item],
    planned: &[(usize, UserId)],
    prefs: &[Arc<Resolved>],
    now_ms: u64,
) -> Routed {
    let mut r = Routed::default();
    for (k, &(idx, user)) in planned.iter().enumerate() {
        let ev = &items[idx].ev;
        let route = match prefs.get(k) {
            Some(p) => p.route(ev.kind, ev.actor, ev.object.as_deref(), now_ms),
            None => Route::Now,
        };
        match route {
            Route::Now => r.now.push((idx, user)),
            Route::Wait(b, at) => r.waiting.push((idx, user, b, at)),
            Route::Drop(why) => r.dropped.push(why),
        }
    }
    r
}

/// How many of `items` can go through the stages together: up to the
/// first post whose author's follower count changed earlier in the batch
/// (its path, push or pull, is decided by that change). At least one.
pub(crate) fn path_decided_until(items: &[Item]) -> usize {
    let mut changed: std::collections::HashSet<UserId> = Default::default();
    for (k, i) in items.iter().enumerate() {
        if i.ev.kind.to_followers() && changed.contains(&i.ev.actor) {
            return k.max(1);
        }
        if let (Some(_), Some(followee)) = (i.ev.kind.graph_change(), i.ev.recipient) {
            changed.insert(followee);
        }
    }
    items.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_types::EventKind;

    fn item(t: &Arc<crate::Tracker>, offset: u64, kind: EventKind, actor: UserId) -> Item {
        Item::new(
            offset,
            format!("e-0-{offset}"),
            format!("e-0-{offset}"),
            LogEvent {
                client_id: None,
                scope: None,
                replay_of: None,
                kind,
                actor,
                recipient: Some(2),
                mentions: vec![3, actor],
                object: Some("post:1".into()),
                text: None,
                client_ts_ms: None,
                data: None,
                accepted_us: 1,
                trace: None,
            },
            t.begin(offset),
        )
    }

    #[test]
    fn who_is_told() {
        let t = crate::Tracker::new(0, 0);
        let mut post = item(&t, 0, EventKind::Post, 1);
        post.followers = Some(vec![5, 1, 6]);
        let mut celeb = item(&t, 1, EventKind::Post, 7);
        celeb.celebrity_post = true;
        let comment = item(&t, 2, EventKind::Comment, 1);
        let items = vec![post, celeb, comment];
        assert_eq!(
            recipients(&items),
            vec![(0, 5), (0, 6), (2, 2), (2, 3)],
            "followers but the actor; no one for the pull path; recipient and mentions"
        );
    }

    #[test]
    fn preferences_route_each_notification() {
        let t = crate::Tracker::new(0, 0);
        let items = vec![item(&t, 0, EventKind::Like, 1)];
        let planned = vec![(0, 2), (0, 3), (0, 4)];
        let mut muted = Resolved::default();
        muted.muted_actors.push((1, 0));
        let mut digest = Resolved::default();
        digest
            .prefs
            .kinds
            .insert("like".into(), herald_prefs::Mode::Digest);
        let prefs = vec![
            Arc::new(Resolved::default()),
            Arc::new(muted),
            Arc::new(digest),
        ];
        let r = route(&items, &planned, &prefs, 1_000);
        assert_eq!(r.now, vec![(0, 2)]);
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(r.waiting.len(), 1);
        assert_eq!(r.waiting[0].2, Bucket::Digest);
    }

    #[test]
    fn a_post_after_its_authors_follower_change_waits_for_the_next_run() {
        let t = crate::Tracker::new(0, 0);
        let follow = |o, followee| {
            let mut i = item(&t, o, EventKind::Follow, 9);
            i.ev.recipient = Some(followee);
            i
        };
        let post = |o, actor| item(&t, o, EventKind::Post, actor);
        // Another account's change does not split; the author's does.
        let items = vec![
            post(0, 5),
            follow(1, 6),
            post(2, 5),
            follow(3, 5),
            post(4, 5),
        ];
        assert_eq!(path_decided_until(&items), 4);
        assert_eq!(path_decided_until(&items[4..]), 1);
        // A follower change first in the batch: the post still runs alone.
        let items = vec![follow(0, 5), post(1, 5), post(2, 5)];
        assert_eq!(path_decided_until(&items), 1);
        assert_eq!(path_decided_until(&items[1..]), 2);
        assert_eq!(path_decided_until(&[]), 0);
    }
}
