//! What the generator observed, shared by every task.

use herald_types::sync::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use dashmap::DashMap;
use hdrhistogram::Histogram;
use serde::Serialize;

/// A foldable event sent to a recipient: (seq, object).
pub type Foldable = (u64, Option<String>);

/// The sequence number of the celebrity scenario's one post.
pub const CELEBRITY_SEQ: u64 = 999_999_999_999;

/// (hash of kind, hash of object): a key without allocations.
type Key2 = (u64, u64);

fn key2(kind: &str, object: &str) -> Key2 {
    (h64(kind), h64(object))
}

/// A fast hasher for the generator's maps (their keys are ids and hashes,
/// not attacker-chosen).
type Fast = foldhash::fast::RandomState;

/// Who is still expected to receive one event. Most events have one
/// recipient: kept inline, taken off with a single lookup.
pub enum Who {
    One(u64),
    Many(HashSet<u64, Fast>),
}

/// One event still expected somewhere: when it was sent, and by whom.
pub struct Expected {
    pub at: Instant,
    pub who: Who,
}

impl Expected {
    pub fn len(&self) -> usize {
        match &self.who {
            Who::One(_) => 1,
            Who::Many(s) => s.len(),
        }
    }

    /// Up to `n` of the recipients still expected.
    pub fn sample(&self, n: usize) -> Vec<u64> {
        match &self.who {
            Who::One(u) => vec![*u],
            Who::Many(s) => s.iter().take(n).copied().collect(),
        }
    }
}

/// What one client (one user) has received, kept by that client's task:
/// the generator must cost little next to what it measures on the same
/// cores, so per-receipt bookkeeping touches no shared map. Ids are stable
/// per recipient (a celebrity post has one id for all), so keys are the
/// id's hash alone.
#[derive(Default)]
pub struct Ledger {
    /// Hash of a notification id -> acked.
    seen: HashMap<u64, bool, Fast>,
    /// (kind, object) -> singles received since the last aggregate of
    /// that key opened (an aggregate's count includes them).
    singles: HashMap<Key2, (u64, Instant), Fast>,
    /// (kind, object) that have their own aggregate: a throttle aggregate
    /// (no object) is not matched against them.
    agg_objects: HashSet<Key2, Fast>,
    /// Hash of an aggregate id -> how many notifications it has accounted
    /// for so far.
    agg_counted: HashMap<u64, u64, Fast>,
}

/// FNV-1a, 64 bits: ids of one recipient do not collide in practice.
fn h64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub struct Stats {
    pub start: Instant,
    /// seq -> (send time, recipients still expected). Tracked per
    /// recipient, so a notification to someone unexpected can never hide
    /// one that was lost.
    pub pending: DashMap<u64, Expected, Fast>,
    /// Events expected, by recipient (index = user id): seq -> send time.
    /// Each recipient's task takes them off its own small map (no shared
    /// map of every event in flight). `pending` holds the celebrity post
    /// and events to users outside 1..=clients.
    solo: Vec<Mutex<HashMap<u64, Instant, Fast>>>,
    /// Entries in `solo`.
    solo_left: AtomicU64,
    /// Notifications for an event the generator did not expect the user to get.
    pub unexpected: AtomicU64,
    /// (recipient, kind) -> (seq, object) of foldable events, in send order,
    /// to account for aggregates ("41 others liked your post").
    pub foldable: DashMap<(u64, String), Vec<Foldable>>,
    /// Notifications delivered inside aggregates.
    pub folded: AtomicU64,
    pub expected: AtomicU64,
    pub delivered_live: AtomicU64,
    pub delivered_inbox: AtomicU64,
    pub duplicates: AtomicU64,
    /// Live deliveries later than 1 s after the send.
    pub late: AtomicU64,
    pub events_sent: AtomicU64,
    pub events_accepted: AtomicU64,
    pub http_errors: AtomicU64,
    /// Events given up on (never accepted): not expected any more.
    pub events_refused: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub online: AtomicU64,
    /// End-to-end latency (µs) of notifications pushed live.
    pub live: Mutex<Histogram<u64>>,
    /// Per-second live latency histograms, for the timeline.
    pub timeline: Mutex<Vec<Histogram<u64>>>,
    /// One sample a second of counters and Herald's CPU and memory.
    pub samples: Mutex<Vec<Sample>>,
    /// Celebrity scenario: each online follower's receipt time (µs after
    /// the post was sent).
    pub celebrity_receipts_us: Mutex<Vec<u64>>,
    /// Time from connect to the last inbox entry received (µs).
    pub drains: Mutex<Histogram<u64>>,
}

/// One second of a run: the counters so far and Herald's CPU and memory.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub sent: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub online: u64,
    /// Herald's CPU over the last second, in % of one core.
    pub herald_cpu_pct: Option<f64>,
    pub herald_rss_mib: Option<f64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.locked()
}

fn hist() -> Histogram<u64> {
    hist_up_to(600_000_000)
}

/// A histogram of values from 1 to `max` at 3 significant figures.
pub(crate) fn hist_up_to(max: u64) -> Histogram<u64> {
    // Bounds hdrhistogram always accepts: low 1, high at least 2, 3 figures.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, max.max(2), 3).expect("constant bounds are valid")
}

impl Stats {
    /// Stats for users 1..=`users`.
    pub fn new(users: u64) -> Stats {
        Stats {
            start: Instant::now(),
            pending: DashMap::with_hasher(Fast::default()),
            solo: (0..=users).map(|_| Mutex::default()).collect(),
            solo_left: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            foldable: DashMap::new(),
            folded: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered_live: AtomicU64::new(0),
            delivered_inbox: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            events_refused: AtomicU64::new(0),
            late: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            events_accepted: AtomicU64::new(0),
            http_errors: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            online: AtomicU64::new(0),
            live: Mutex::new(hist()),
            timeline: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
            celebrity_receipts_us: Mutex::new(Vec::new()),
            drains: Mutex::new(hist()),
        }
    }

    pub fn expect(&self, seq: u64, at: Instant, recipients: &[u64]) {
        if !recipients.is_empty() {
            self.expected
                .fetch_add(recipients.len() as u64, Ordering::Relaxed);
            // The celebrity post is waited for by its seq: kept whole.
            let max = recipients.iter().copied().max().unwrap_or(0);
            if seq != CELEBRITY_SEQ && (max as usize) < self.solo.len() {
                for r in recipients {
                    lock(&self.solo[*r as usize]).insert(seq, at);
                }
                self.solo_left
                    .fetch_add(recipients.len() as u64, Ordering::Relaxed);
                return;
            }
            let who = match recipients {
                [one] => Who::One(*one),
                many => Who::Many(many.iter().copied().collect()),
            };
            self.pending.insert(seq, Expected { at, who });
        }
    }

    /// Remembers which foldable event reached which recipient, so that an
    /// aggregate can be matched to the events it stands for.
    pub fn expect_foldable(&self, seq: u64, kind: &str, object: Option<&str>, recipients: &[u64]) {
        for r in recipients {
            self.foldable
                .entry((*r, kind.to_string()))
                .or_default()
                .push((seq, object.map(str::to_string)));
        }
    }

    /// An aggregate of `count` notifications of `kind` (about `object`, or
    /// any object for a throttle aggregate): the oldest still-pending
    /// matching events of this recipient are counted as delivered. Counts
    /// are cumulative per window, so re-sent aggregates match nothing new
    /// until they grow.
    #[allow(clippy::too_many_arguments)]
    pub fn receive_aggregate(
        &self,
        l: &mut Ledger,
        user: u64,
        id: &str,
        kind: &str,
        object: Option<&str>,
        count: u64,
        from_inbox: bool,
    ) {
        let key = h64(id);
        if l.seen.get(&key) == Some(&true) && l.agg_counted.get(&key) == Some(&count) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        l.seen.insert(key, false);
        // How many notifications this emission adds: the growth since its
        // last emission, or, for the first, its count less the singles of
        // the same key that opened the window.
        let new = match l.agg_counted.insert(key, count) {
            Some(prev) => count.saturating_sub(prev),
            None => {
                let k = key2(kind, object.unwrap_or(""));
                let singles = l.singles.remove(&k).map(|v| v.0).unwrap_or(0);
                count.saturating_sub(singles)
            }
        };
        if let Some(o) = object {
            l.agg_objects.insert(key2(kind, o));
        }
        let Some(list) = self.foldable.get(&(user, kind.to_string())) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut left = new;
        for (seq, obj) in list.iter() {
            if left == 0 {
                break;
            }
            match (object, obj.as_deref()) {
                (Some(o), Some(x)) if o != x => continue,
                (None, Some(x)) if l.agg_objects.contains(&key2(kind, x)) => continue,
                _ => {}
            }
            if self.take(*seq, user).is_some() {
                left -= 1;
                self.folded.fetch_add(1, Ordering::Relaxed);
                if from_inbox {
                    self.delivered_inbox.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.delivered_live.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A notification delivered alone that a later aggregate will count.
    pub fn single(l: &mut Ledger, kind: &str, object: Option<&str>) {
        if matches!(kind, "like" | "comment" | "mention") {
            let now = Instant::now();
            let e = l
                .singles
                .entry(key2(kind, object.unwrap_or("")))
                .or_insert((0, now));
            // Singles older than a burst window belong to an older window.
            if now.duration_since(e.1) > std::time::Duration::from_secs(10) {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    /// Records a notification received; returns false for a duplicate of
    /// something already acked.
    pub fn receive(
        &self,
        l: &mut Ledger,
        user: u64,
        id: &str,
        seq: Option<u64>,
        from_inbox: bool,
    ) -> bool {
        match l.seen.entry(h64(id)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if *e.get() {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                return false;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(false);
            }
        }
        let Some(seq) = seq else { return true };
        let now = Instant::now();
        let Some(at) = self.take(seq, user) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let us = now.saturating_duration_since(at).as_micros() as u64;
        if us > 1_000_000 && !from_inbox {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        if from_inbox {
            self.delivered_inbox.fetch_add(1, Ordering::Relaxed);
        } else if seq == CELEBRITY_SEQ {
            // The celebrity post is timed apart from the unrelated traffic.
            self.delivered_live.fetch_add(1, Ordering::Relaxed);
            {
                let mut r = self.celebrity_receipts_us.locked();
                r.push(us);
            }
        } else {
            self.delivered_live.fetch_add(1, Ordering::Relaxed);
            {
                let mut h = self.live.locked();
                let _ = h.record(us.max(1));
            }
            let sec = now.saturating_duration_since(self.start).as_secs() as usize;
            {
                let mut t = self.timeline.locked();
                while t.len() <= sec {
                    t.push(hist());
                }
                let _ = t[sec].record(us.max(1));
            }
        }
        true
    }

    /// Takes `user` off `seq`'s expected recipients: when it was sent, or
    /// None if `user` was not expected to get it. One lookup for an event
    /// with one recipient; a second only for the last of many.
    fn take(&self, seq: u64, user: u64) -> Option<Instant> {
        if let Some(m) = self.solo.get(user as usize) {
            if let Some(at) = lock(m).remove(&seq) {
                self.solo_left.fetch_sub(1, Ordering::Relaxed);
                return Some(at);
            }
        }
        let only = |_: &u64, e: &Expected| matches!(e.who, Who::One(u) if u == user);
        if let Some((_, e)) = self.pending.remove_if(&seq, only) {
            return Some(e.at);
        }
        let (at, emptied) = {
            let mut e = self.pending.get_mut(&seq)?;
            let at = e.at;
            let Who::Many(set) = &mut e.who else {
                return None;
            };
            if !set.remove(&user) {
                return None;
            }
            (at, set.is_empty())
        };
        if emptied {
            self.pending.remove_if(&seq, |_, e| e.len() == 0);
        }
        Some(at)
    }

    /// These events were never accepted: nobody should expect them.
    pub fn refuse(&self, seqs: &[u64]) {
        for s in seqs {
            self.pending.remove(s);
        }
        // Rare (an error path): every recipient's map is looked through.
        let refused: HashSet<u64, Fast> = seqs.iter().copied().collect();
        for m in &self.solo {
            let mut m = lock(m);
            let before = m.len();
            m.retain(|s, _| !refused.contains(s));
            self.solo_left
                .fetch_sub((before - m.len()) as u64, Ordering::Relaxed);
        }
        self.events_refused
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }

    pub fn acked(l: &mut Ledger, id: &str) {
        if let Some(e) = l.seen.get_mut(&h64(id)) {
            *e = true;
        }
    }

    pub fn delivered(&self) -> u64 {
        self.delivered_live.load(Ordering::Relaxed) + self.delivered_inbox.load(Ordering::Relaxed)
    }

    pub fn lost(&self) -> u64 {
        self.solo_left.load(Ordering::Relaxed)
            + self
                .pending
                .iter()
                .map(|e| e.value().len() as u64)
                .sum::<u64>()
    }

    /// Nothing expected is still missing.
    pub fn all_received(&self) -> bool {
        self.solo_left.load(Ordering::Relaxed) == 0 && self.pending.is_empty()
    }

    /// Notifications still expected, the celebrity post counted once (for
    /// progress lines: cheaper than `lost`).
    pub fn waiting(&self) -> u64 {
        self.solo_left.load(Ordering::Relaxed) + self.pending.len() as u64
    }

    /// Up to `n` events still expected, with up to 5 of their recipients.
    pub fn lost_sample(&self, n: usize) -> Vec<(u64, Vec<u64>)> {
        let mut out: Vec<(u64, Vec<u64>)> = self
            .pending
            .iter()
            .take(n)
            .map(|e| (*e.key(), e.value().sample(5)))
            .collect();
        for (user, m) in self.solo.iter().enumerate() {
            if out.len() >= n {
                break;
            }
            let m = lock(m);
            out.extend(
                m.keys()
                    .take(n - out.len())
                    .map(|s| (*s, vec![user as u64])),
            );
        }
        out
    }

    pub fn p99_ms(&self) -> f64 {
        self.live.locked().value_at_quantile(0.99) as f64 / 1000.0
    }
}
