//! Folding bursts: many notifications of one kind about one object reaching
//! one recipient within a window become one notification with `count` and
//! the first `actors` ("Ana and 41 others liked your post").
//!
//! State is per worker: likes, comments and follows are partitioned by
//! recipient, so one worker sees every one of them for a recipient. The
//! first `threshold - 1` notifications of a window go out on their own; the
//! rest fold into an aggregate, re-emitted at most every `flush` while it
//! grows, always with the same id (stable per recipient, kind, object and
//! window) so the client replaces the earlier one. The aggregator holds
//! every folded record (its caller retained them) until the window closes
//! and its last emission has been routed, and every emission names all the
//! window's records, so nothing folded is settled before the aggregate that
//! holds it is. A per-recipient rate
//! limit (governor) sends the excess into aggregates too: throttled, never
//! silently dropped.
//!
//! Windows and the throttle run on event time (the acceptance time each
//! notification carries), not on the time fan-out sees it: a backlog
//! released at once after a Redis outage folds exactly as the same events
//! would have folded had they arrived on time. Wall time only decides when
//! a window's aggregate is emitted.

mod throttle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_types::ids::{fnv1a64, Fnv64};
use herald_types::{EventKind, Notification, RecordRef, Settle, UserId};
use throttle::Throttle;

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
    let h = Fnv64::default().bytes(&r.to_le_bytes());
    // A built-in kind by its code, a declared one by its name: the key
    // (and the aggregate's id made from it) is the same after a restart
    // whatever order kinds were declared in.
    let h = match kind.code() {
        Some(c) => h.bytes(&[c]),
        None => h.bytes(kind.as_str().as_bytes()),
    };
    h.bytes(object.as_bytes()).finish()
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
    /// Puts `a` first (the newest actor leads: "Ana, Bo and 3 others"),
    /// keeping the `max` newest distinct actors.
    fn add(&mut self, a: UserId, max: usize) {
        let keep = max.clamp(1, MAX_ACTORS);
        let n = self.len as usize;
        let at = self.as_slice().iter().position(|&x| x == a);
        // Shift the ones before `a` (or all kept) one place back.
        let end = at.unwrap_or(n.min(keep - 1));
        self.ids.copy_within(0..end, 1);
        self.ids[0] = a;
        if at.is_none() {
            self.len = (n + 1).min(keep) as u8;
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
    /// Records of the folded notifications (held by the aggregator).
    refs: Vec<RecordRef>,
    /// Ids of the window's notifications that went out on their own: the
    /// aggregate supersedes them in the feed.
    singles: Vec<Arc<str>>,
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
    /// Aggregates of windows closed early (by event time) while holding
    /// folded work; `due` hands them out first.
    early: Vec<Emit>,
    throttle: Throttle,
    last_gc: Instant,
}

/// What the aggregator hands on: an aggregate to route (or none), and the
/// records whose aggregator hold ends once it has been routed.
#[derive(Debug)]
pub struct Emit {
    pub user: UserId,
    pub n: Option<Notification>,
    /// Every record the aggregate folds.
    pub settle: Settle,
    /// Holds to release after routing (the window closed).
    pub release: Vec<RecordRef>,
    /// An aggregate (its records may come from earlier batches).
    pub folded: bool,
}

/// The stable id of the aggregate of one window.
pub fn aggregate_id(r: UserId, k: Key, first_order: u64) -> String {
    let h = fnv1a64(format!("{r}|{k}|{first_order}").as_bytes());
    format!("n-agg-{h:016x}-{r}")
}

fn foldable(n: &Notification) -> bool {
    match n.kind.folding() {
        herald_types::Folding::PerObject => n.object.is_some(),
        herald_types::Folding::Always => true,
        herald_types::Folding::Never => false,
    }
}

impl Aggregator {
    pub fn new(cfg: AggregationConfig) -> Aggregator {
        Aggregator {
            throttle: Throttle::new(cfg.rate_per_recipient),
            cfg,
            windows: HashMap::new(),
            opened: VecDeque::new(),
            dirty: HashSet::new(),
            early: Vec::new(),
            last_gc: Instant::now(),
        }
    }

    /// Offers a notification for `r`. Returns it back to be delivered now,
    /// or None when it was folded into a window's aggregate.
    pub fn offer(
        &mut self,
        r: UserId,
        n: Notification,
        settle: Settle,
        now: Instant,
    ) -> Option<(Notification, Settle)> {
        if !foldable(&n) {
            return Some((n, settle));
        }
        let throttled = self.throttle.exceeded(r, n.order);
        let window = self.cfg.window;
        let window_us = window.as_micros() as u64;
        let exact = key(r, n.kind, n.object.as_deref().unwrap_or(""));
        // Open on event time (and not yet closed by `due`).
        let at = n.order;
        let open = |w: &Window| {
            now.duration_since(w.opened) < window
                && at >= w.first_order
                && at - w.first_order < window_us
        };
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
                w.singles.push(n.id.clone());
                return Some((n, settle));
            }
            w.newest = Some(n);
            w.refs.extend_from_slice(settle.refs());
            w.dirty = true;
            self.dirty.insert(k);
            metrics::counter!("herald_notifications_folded_total").increment(1);
            return None;
        }
        if self.windows.len() >= self.cfg.max_windows {
            return Some((n, settle));
        }
        // A window closed by event time that still holds folded work is
        // emitted now, before a new window takes its place. (A notification
        // older than the window's start goes out on its own.)
        if let Some(old) = self.windows.get_mut(&k) {
            if at < old.first_order {
                return Some((n, settle));
            }
            self.early.extend(Self::close(k, old, now));
            self.dirty.remove(&k);
        }
        let mut w = Window {
            recipient: r,
            opened: now,
            first_order: n.order,
            count: 1,
            actors: Actors::one(n.actor),
            newest: None,
            any_object,
            refs: Vec::new(),
            singles: Vec::new(),
            dirty: false,
            last_flush: None,
        };
        let out = if throttled {
            w.newest = Some(n);
            w.refs.extend_from_slice(settle.refs());
            w.dirty = true;
            self.dirty.insert(k);
            metrics::counter!("herald_notifications_folded_total", "reason" => "throttle")
                .increment(1);
            None
        } else {
            w.singles.push(n.id.clone());
            Some((n, settle))
        };
        self.windows.insert(k, w);
        self.opened.push_back((now, k));
        out
    }

    /// A window is over: its last aggregate if it holds unsent folded work,
    /// and the end of the aggregator's holds on its records.
    fn close(k: Key, w: &mut Window, now: Instant) -> Option<Emit> {
        let n = if w.dirty {
            Self::aggregate(k, w, now)
        } else {
            None
        };
        if n.is_none() && w.refs.is_empty() {
            return None;
        }
        let settle = Settle::of(&w.refs);
        Some(Emit {
            user: w.recipient,
            n,
            settle,
            release: std::mem::take(&mut w.refs),
            folded: true,
        })
    }

    /// An emission of a window that stays open.
    fn emit(k: Key, w: &mut Window, now: Instant) -> Option<Emit> {
        let n = Self::aggregate(k, w, now)?;
        Some(Emit {
            user: w.recipient,
            n: Some(n),
            settle: Settle::of(&w.refs),
            release: Vec::new(),
            folded: true,
        })
    }

    fn aggregate(k: Key, w: &mut Window, now: Instant) -> Option<Notification> {
        let mut n = w.newest.clone()?;
        n.id = aggregate_id(w.recipient, k, w.first_order).into();
        n.actor = w.actors.as_slice().first().copied().unwrap_or(n.actor);
        n.actors = Arc::from(w.actors.as_slice());
        n.count = w.count;
        // The newest text stays ("... commented: <the newest comment>"),
        // unless the window folds across objects.
        if w.any_object {
            n.object = None;
            n.text = None;
        }
        if !w.singles.is_empty() {
            n.supersedes = Some(Arc::from(&w.singles[..]));
        }
        n.order = w.first_order;
        w.dirty = false;
        w.last_flush = Some(now);
        // Every emission names every folded record of the window, so
        // replacing an earlier emission on a connection settles nothing
        // that the newer one does not also hold.
        Some(n)
    }

    /// Aggregates to (re)emit now: dirty windows whose flush interval has
    /// passed or that are closing (all of them with `force`). Forgets
    /// windows that closed.
    /// With `force` (the worker stops) every window closes.
    pub fn due(&mut self, now: Instant, force: bool) -> Vec<Emit> {
        let mut out = std::mem::take(&mut self.early);
        if force {
            for (k, w) in self.windows.iter_mut() {
                out.extend(Self::close(*k, w, now));
            }
            self.windows.clear();
            self.opened.clear();
            self.dirty.clear();
            return out;
        }
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
                out.extend(Self::close(k, w, now));
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
            self.throttle.gc();
        }
        out
    }

    /// When `due` next has something to emit, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.early.is_empty() {
            return Some(Instant::now());
        }
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
mod tests;
