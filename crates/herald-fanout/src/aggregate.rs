//! Folding bursts: many notifications of one kind about one object reaching
//! one recipient within a window become one notification with `count` and
//! the first `actors` ("Ana and 41 others liked your post").
//!
//! State is per worker: likes, comments and follows are partitioned by
//! recipient, so one worker sees every one of them for a recipient. The
//! first `threshold - 1` notifications of a window go out on their own; the
//! rest fold into an aggregate, re-emitted at most every `flush` while it
//! grows, always with the same id (stable per recipient, kind, object and
//! window) so the client replaces the earlier one. The aggregate carries
//! every folded record's settle token (a group token), so nothing folded is
//! settled before the aggregate that holds it is. A per-recipient rate
//! limit (governor) sends the excess into aggregates too: throttled, never
//! silently dropped.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_types::ids::fnv1a64;
use herald_types::{EventKind, Notification, SettleToken, UserId};

#[derive(Debug, Clone)]
pub struct AggregationConfig {
    /// How long a burst window stays open.
    pub window: Duration,
    /// The notification of a window from which on they fold (>= 2).
    pub threshold: u32,
    /// Least time between two emissions of a growing aggregate.
    pub flush: Duration,
    /// Actors listed in an aggregate.
    pub max_actors: usize,
    /// Notifications per second per recipient before folding (0: no limit).
    pub rate_per_recipient: u32,
    /// Most open windows per worker; past it, notifications go out alone.
    pub max_windows: usize,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            window: Duration::from_secs(10),
            threshold: 3,
            flush: Duration::from_millis(500),
            max_actors: 3,
            rate_per_recipient: 100,
            max_windows: 200_000,
        }
    }
}

type Key = (UserId, EventKind, String);

struct Window {
    opened: Instant,
    /// Order (µs) of the window's first notification: the aggregate's place.
    first_order: u64,
    count: u64,
    actors: Vec<UserId>,
    newest: Notification,
    /// Tokens of the folded notifications not yet covered by a settled emission.
    tokens: Vec<SettleToken>,
    dirty: bool,
    last_flush: Option<Instant>,
}

pub struct Aggregator {
    cfg: AggregationConfig,
    windows: HashMap<Key, Window>,
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    checked: Instant,
}

/// The stable id of the aggregate of one window.
pub fn aggregate_id(r: UserId, kind: EventKind, object: &str, first_order: u64) -> String {
    let h = fnv1a64(format!("{r}|{}|{object}|{first_order}", kind.as_str()).as_bytes());
    format!("n-agg-{h:016x}-{r}")
}

fn foldable(n: &Notification) -> bool {
    match n.kind {
        EventKind::Like | EventKind::Comment | EventKind::Mention => n.object.is_some(),
        EventKind::Follow => true,
        _ => false,
    }
}

impl Aggregator {
    pub fn new(cfg: AggregationConfig) -> Aggregator {
        let limiter = NonZeroU32::new(cfg.rate_per_recipient)
            .map(|r| RateLimiter::keyed(Quota::per_second(r)));
        Aggregator {
            cfg,
            windows: HashMap::new(),
            limiter,
            checked: Instant::now(),
        }
    }

    /// Offers a notification for `r`. Returns it back to be delivered now,
    /// or None when it was folded into the window's aggregate.
    pub fn offer(
        &mut self,
        r: UserId,
        n: Notification,
        token: SettleToken,
        now: Instant,
    ) -> Option<(Notification, SettleToken)> {
        if !foldable(&n) {
            return Some((n, token));
        }
        let throttled = self
            .limiter
            .as_ref()
            .is_some_and(|l| l.check_key(&r).is_err());
        let key = (r, n.kind, n.object.clone().unwrap_or_default());
        let window = self.cfg.window;
        if let Some(w) = self.windows.get_mut(&key) {
            if now.duration_since(w.opened) < window {
                w.count += 1;
                if w.actors.len() < self.cfg.max_actors && !w.actors.contains(&n.actor) {
                    w.actors.push(n.actor);
                }
                if w.count < self.cfg.threshold as u64 && !throttled {
                    return Some((n, token));
                }
                w.newest = n;
                w.tokens.push(token);
                w.dirty = true;
                metrics::counter!("herald_notifications_folded_total").increment(1);
                return None;
            }
        }
        if self.windows.len() >= self.cfg.max_windows && !self.windows.contains_key(&key) {
            return Some((n, token));
        }
        let mut w = Window {
            opened: now,
            first_order: n.order,
            count: 1,
            actors: vec![n.actor],
            newest: n.clone(),
            tokens: Vec::new(),
            dirty: false,
            last_flush: None,
        };
        let out = if throttled {
            w.tokens.push(token);
            w.dirty = true;
            metrics::counter!("herald_notifications_folded_total", "reason" => "throttle")
                .increment(1);
            None
        } else {
            Some((n, token))
        };
        // A closed window still dirty must be emitted first: `due` runs
        // before windows are replaced, see `Worker::process`.
        self.windows.insert(key, w);
        out
    }

    /// Aggregates to (re)emit now: dirty windows whose flush interval has
    /// passed or that are closing. Forgets windows that closed clean.
    pub fn due(&mut self, now: Instant, force: bool) -> Vec<(UserId, Notification, SettleToken)> {
        let mut out = Vec::new();
        let (window, flush) = (self.cfg.window, self.cfg.flush);
        for ((r, kind, object), w) in self.windows.iter_mut() {
            let closing = now.duration_since(w.opened) >= window;
            let ready = w.last_flush.is_none_or(|t| now.duration_since(t) >= flush);
            if w.dirty && (ready || closing || force) {
                let mut n = w.newest.clone();
                n.id = aggregate_id(*r, *kind, object, w.first_order);
                n.actor = w.actors.first().copied().unwrap_or(n.actor);
                n.actors = w.actors.clone();
                n.count = w.count;
                n.text = None;
                if object.is_empty() {
                    n.object = None;
                }
                n.order = w.first_order;
                // Every emission holds every folded token of the window, so
                // replacing an earlier emission on a connection settles
                // nothing that the newer one does not also hold.
                out.push((*r, n, SettleToken::group(w.tokens.clone())));
                w.dirty = false;
                w.last_flush = Some(now);
            }
        }
        if now.duration_since(self.checked) >= Duration::from_millis(100) || force {
            self.checked = now;
            self.windows
                .retain(|_, w| w.dirty || now.duration_since(w.opened) < window);
            if let Some(l) = &self.limiter {
                l.retain_recent();
            }
        }
        out
    }

    /// When `due` next has something to emit, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.dirty)
            .map(|w| match w.last_flush {
                Some(t) => (t + self.cfg.flush).min(w.opened + self.cfg.window),
                None => w.opened,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(actor: UserId, order: u64) -> Notification {
        Notification {
            id: format!("n-{order}"),
            event_id: format!("e-0-{order}"),
            kind: EventKind::Like,
            actor,
            object: Some("post:1".into()),
            text: None,
            ts_ms: order,
            count: 1,
            actors: vec![actor],
            order,
            digest: None,
        }
    }

    #[test]
    fn bursts_fold_into_one_growing_aggregate() {
        let mut a = Aggregator::new(AggregationConfig {
            rate_per_recipient: 0,
            ..AggregationConfig::default()
        });
        let t0 = Instant::now();
        let mut alone = 0;
        for i in 0..100u64 {
            if a.offer(9, like(100 + i, i + 1), SettleToken::detached(), t0)
                .is_some()
            {
                alone += 1;
            }
        }
        assert_eq!(alone, 2, "threshold 3: two go out alone");
        let out = a.due(t0, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.count, 100);
        assert_eq!(out[0].1.actors, vec![100, 101, 102]);
        let id = out[0].1.id.clone();
        // More within the window: the same id, a higher count.
        a.offer(9, like(500, 200), SettleToken::detached(), t0);
        assert!(a.due(t0, false).is_empty(), "flush interval not passed");
        let later = t0 + Duration::from_millis(600);
        let out = a.due(later, false);
        assert_eq!((out[0].1.id.as_str(), out[0].1.count), (id.as_str(), 101));
    }
}
