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

use std::collections::{HashMap, HashSet, VecDeque};
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

/// A window's key: a 64-bit hash of (recipient, kind, object). No
/// allocation per notification; a collision would only merge two windows.
type Key = u64;

fn key(r: UserId, kind: EventKind, object: &str) -> Key {
    // FNV-1a over (r, kind, object) without building a buffer.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = r.to_le_bytes();
    for b in bytes
        .iter()
        .chain(std::iter::once(&(kind as u8)))
        .chain(object.as_bytes())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first few actors of a window, inline (no allocation per window).
#[derive(Clone, Copy, Default)]
struct Actors {
    ids: [UserId; MAX_ACTORS],
    len: u8,
}

/// Most actors an aggregate lists.
pub const MAX_ACTORS: usize = 8;

impl Actors {
    fn one(a: UserId) -> Actors {
        let mut x = Actors::default();
        x.ids[0] = a;
        x.len = 1;
        x
    }
    fn as_slice(&self) -> &[UserId] {
        &self.ids[..self.len as usize]
    }
    fn add(&mut self, a: UserId, max: usize) {
        let n = self.len as usize;
        if n < max.min(MAX_ACTORS) && !self.as_slice().contains(&a) {
            self.ids[n] = a;
            self.len += 1;
        }
    }
}

struct Window {
    recipient: UserId,
    opened: Instant,
    /// Order (µs) of the window's first notification: the aggregate's place.
    first_order: u64,
    count: u64,
    actors: Actors,
    /// The newest folded notification (set once something folds).
    newest: Option<Notification>,
    /// Whether this is a throttle window (folds across objects).
    any_object: bool,
    /// Tokens of the folded notifications.
    tokens: Vec<SettleToken>,
    dirty: bool,
    last_flush: Option<Instant>,
}

pub struct Aggregator {
    cfg: AggregationConfig,
    windows: HashMap<Key, Window>,
    /// Windows in opening order, to close them without scanning.
    opened: VecDeque<(Instant, Key)>,
    /// Windows with folded notifications not yet emitted.
    dirty: HashSet<Key>,
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    last_gc: Instant,
}

/// The stable id of the aggregate of one window.
pub fn aggregate_id(r: UserId, k: Key, first_order: u64) -> String {
    let h = fnv1a64(format!("{r}|{k}|{first_order}").as_bytes());
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
            opened: VecDeque::new(),
            dirty: HashSet::new(),
            limiter,
            last_gc: Instant::now(),
        }
    }

    /// Offers a notification for `r`. Returns it back to be delivered now,
    /// or None when it was folded into a window's aggregate.
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
        let window = self.cfg.window;
        let exact = key(r, n.kind, n.object.as_deref().unwrap_or(""));
        let open = |w: &Window| now.duration_since(w.opened) < window;
        // Past the recipient's rate, notifications of a kind fold together
        // whatever their object ("Ana and 14 others liked your posts"),
        // unless a window for their own object is open.
        let (k, any_object) = if throttled && !self.windows.get(&exact).is_some_and(open) {
            (key(r, n.kind, "\u{0}*"), true)
        } else {
            (exact, false)
        };
        if let Some(w) = self.windows.get_mut(&k).filter(|w| open(w)) {
            w.count += 1;
            w.actors.add(n.actor, self.cfg.max_actors);
            if w.count < self.cfg.threshold as u64 && !throttled {
                return Some((n, token));
            }
            w.newest = Some(n);
            w.tokens.push(token);
            w.dirty = true;
            self.dirty.insert(k);
            metrics::counter!("herald_notifications_folded_total").increment(1);
            return None;
        }
        if self.windows.len() >= self.cfg.max_windows {
            return Some((n, token));
        }
        // A closed window still holding folded work is emitted by `due`
        // before it can be replaced: close it now if needed.
        if let Some(old) = self.windows.get(&k) {
            if old.dirty {
                return Some((n, token));
            }
        }
        let mut w = Window {
            recipient: r,
            opened: now,
            first_order: n.order,
            count: 1,
            actors: Actors::one(n.actor),
            newest: None,
            any_object,
            tokens: Vec::new(),
            dirty: false,
            last_flush: None,
        };
        let out = if throttled {
            w.newest = Some(n);
            w.tokens.push(token);
            w.dirty = true;
            self.dirty.insert(k);
            metrics::counter!("herald_notifications_folded_total", "reason" => "throttle")
                .increment(1);
            None
        } else {
            Some((n, token))
        };
        self.windows.insert(k, w);
        self.opened.push_back((now, k));
        out
    }

    fn emit(k: Key, w: &mut Window, now: Instant) -> Option<(UserId, Notification, SettleToken)> {
        let mut n = w.newest.clone()?;
        n.id = aggregate_id(w.recipient, k, w.first_order);
        n.actor = w.actors.as_slice().first().copied().unwrap_or(n.actor);
        n.actors = w.actors.as_slice().to_vec();
        n.count = w.count;
        n.text = None;
        if w.any_object {
            n.object = None;
        }
        n.order = w.first_order;
        w.dirty = false;
        w.last_flush = Some(now);
        // Every emission holds every folded token of the window, so
        // replacing an earlier emission on a connection settles nothing
        // that the newer one does not also hold.
        Some((w.recipient, n, SettleToken::group(w.tokens.clone())))
    }

    /// Aggregates to (re)emit now: dirty windows whose flush interval has
    /// passed or that are closing (all of them with `force`). Forgets
    /// windows that closed.
    pub fn due(&mut self, now: Instant, force: bool) -> Vec<(UserId, Notification, SettleToken)> {
        let mut out = Vec::new();
        let (window, flush) = (self.cfg.window, self.cfg.flush);
        // Close expired windows, oldest first, emitting what they hold.
        while let Some(&(at, k)) = self.opened.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.opened.pop_front();
            if let Some(w) = self.windows.get_mut(&k) {
                if w.opened != at {
                    continue; // replaced by a newer window
                }
                if w.dirty {
                    out.extend(Self::emit(k, w, now));
                }
                self.windows.remove(&k);
                self.dirty.remove(&k);
            }
        }
        let ready: Vec<Key> = self
            .dirty
            .iter()
            .copied()
            .filter(|k| {
                self.windows.get(k).is_some_and(|w| {
                    force || w.last_flush.is_none_or(|t| now.duration_since(t) >= flush)
                })
            })
            .collect();
        for k in ready {
            self.dirty.remove(&k);
            if let Some(w) = self.windows.get_mut(&k) {
                out.extend(Self::emit(k, w, now));
            }
        }
        if now.duration_since(self.last_gc) >= Duration::from_secs(5) {
            self.last_gc = now;
            if let Some(l) = &self.limiter {
                l.retain_recent();
            }
        }
        out
    }

    /// When `due` next has something to emit, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.dirty
            .iter()
            .filter_map(|k| self.windows.get(k))
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
