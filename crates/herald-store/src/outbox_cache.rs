//! Hot outboxes in memory: a celebrity's (or hot thread's) recent posts, so the reconnect
//! wave after a big post reads them here instead of one Redis round trip
//! per follower. The cache mirrors the Redis outbox: filled from it once,
//! then appended by every broadcast (which follows the Redis write) and
//! trimmed to the same cap.

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use herald_types::{Notification, Outbox as OutboxId};

use crate::{OutboxCursor, Result, Store};

#[derive(Default)]
struct Outbox {
    /// False while the first fill from Redis is in flight: readers go to
    /// Redis, broadcasts still append.
    loaded: bool,
    entries: VecDeque<Arc<Notification>>,
}

/// One node's copy of the outboxes read lately (the edge's drains and
/// the feed's pages share it).
pub struct OutboxCache {
    cap: usize,
    map: DashMap<OutboxId, Outbox>,
}

fn insert_sorted(entries: &mut VecDeque<Arc<Notification>>, n: Arc<Notification>) {
    if entries.iter().any(|e| e.id == n.id) {
        return;
    }
    let at = entries.partition_point(|e| e.order <= n.order);
    entries.insert(at, n);
}

impl OutboxCache {
    pub fn new(cap: usize) -> OutboxCache {
        OutboxCache {
            cap: cap.max(1),
            map: DashMap::new(),
        }
    }

    /// Posts kept per outbox (the outboxes' own cap).
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn trim(&self, o: &mut Outbox) {
        while o.entries.len() > self.cap {
            o.entries.pop_front();
        }
    }

    /// A post just written to `outbox`.
    pub fn append(&self, outbox: OutboxId, n: &Notification) {
        if let Some(mut o) = self.map.get_mut(&outbox) {
            insert_sorted(&mut o.entries, Arc::new(n.clone()));
            let o = &mut *o;
            while o.entries.len() > self.cap {
                o.entries.pop_front();
            }
        }
    }

    /// How many entries come after `after` (a binary search); None when
    /// the outbox is not cached yet.
    pub fn count_after(&self, outbox: OutboxId, after: u64) -> Option<u64> {
        let o = self.map.get(&outbox)?;
        if !o.loaded {
            return None;
        }
        let start = o.entries.partition_point(|n| n.order <= after);
        Some((o.entries.len() - start) as u64)
    }

    /// Shows `f` every entry after `after`, oldest first, without a copy;
    /// false when the outbox is not cached yet.
    pub fn visit(&self, outbox: OutboxId, after: u64, mut f: impl FnMut(&Notification)) -> bool {
        let Some(o) = self.map.get(&outbox) else {
            return false;
        };
        if !o.loaded {
            return false;
        }
        let start = o.entries.partition_point(|n| n.order <= after);
        for n in o.entries.range(start..) {
            f(n);
        }
        true
    }

    /// Entries after `seen` (at most `limit`), or None when the outbox is
    /// not cached yet (the caller reads Redis and may `fill`).
    pub fn read(
        &self,
        outbox: OutboxId,
        seen: Option<u64>,
        limit: usize,
    ) -> Option<Vec<Notification>> {
        let o = self.map.get(&outbox)?;
        if !o.loaded {
            return None;
        }
        let after = seen.unwrap_or(0);
        Some(
            o.entries
                .iter()
                .filter(|n| seen.is_none() || n.order > after)
                .take(limit)
                .map(|n| (**n).clone())
                .collect(),
        )
    }

    /// Marks `outbox` as being filled; false if someone else is on it.
    pub fn start_fill(&self, outbox: OutboxId) -> bool {
        let mut fresh = false;
        self.map.entry(outbox).or_insert_with(|| {
            fresh = true;
            Outbox::default()
        });
        fresh
    }

    /// Completes a fill with the whole Redis outbox, merged with what
    /// broadcasts appended meanwhile.
    pub fn fill(&self, outbox: OutboxId, all: Vec<Notification>) {
        if let Some(mut o) = self.map.get_mut(&outbox) {
            for n in all {
                insert_sorted(&mut o.entries, Arc::new(n));
            }
            o.loaded = true;
            let o = &mut *o;
            self.trim(o);
        }
    }

    /// Gives up a fill that failed.
    pub fn abort_fill(&self, outbox: OutboxId) {
        self.map.remove_if(&outbox, |_, o| !o.loaded);
    }
}

impl Store {
    /// Posts past each cursor (at most `limit` per outbox), each with its
    /// outbox: hot outboxes from `cache`, the rest from Redis in one round
    /// trip (the first reader of a cold outbox fills the cache in the
    /// background).
    pub async fn outboxes_after(
        &self,
        cache: &Arc<OutboxCache>,
        cursors: &[OutboxCursor],
        limit: usize,
    ) -> Result<Vec<(OutboxId, Notification)>> {
        let mut items = Vec::new();
        let mut cold = Vec::new();
        let mut filling = Vec::new();
        for c in cursors {
            match cache.read(c.outbox, c.seen, limit) {
                Some(list) => items.extend(list.into_iter().map(|n| (c.outbox, n))),
                None => {
                    if cache.start_fill(c.outbox) {
                        filling.push(c.outbox);
                    }
                    cold.push(c.clone());
                }
            }
        }
        if !cold.is_empty() {
            match self.outbox_read(&cold, limit).await {
                Ok(list) => items.extend(list),
                Err(e) => {
                    for f in filling {
                        cache.abort_fill(f);
                    }
                    return Err(e);
                }
            }
            self.fill_outboxes(cache, filling);
        }
        metrics::counter!("herald_outbox_reads_total", "source" => "cache")
            .increment((cursors.len() - cold.len()) as u64);
        metrics::counter!("herald_outbox_reads_total", "source" => "redis")
            .increment(cold.len() as u64);
        Ok(items)
    }

    /// Loads whole outboxes into the cache, in the background.
    fn fill_outboxes(&self, cache: &Arc<OutboxCache>, outboxes: Vec<OutboxId>) {
        if outboxes.is_empty() {
            return;
        }
        let (store, cache) = (self.clone(), cache.clone());
        tokio::spawn(async move {
            let cursors: Vec<OutboxCursor> = outboxes
                .iter()
                .map(|&c| OutboxCursor {
                    outbox: c,
                    seen: None,
                    since: None,
                })
                .collect();
            match store.outbox_read(&cursors, cache.cap).await {
                Ok(list) => {
                    for c in outboxes {
                        let mine = list
                            .iter()
                            .filter(|(x, _)| *x == c)
                            .map(|(_, n)| n.clone())
                            .collect();
                        cache.fill(c, mine);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox cache fill failed");
                    for c in outboxes {
                        cache.abort_fill(c);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_types::EventKind;
    const C: OutboxId = OutboxId::User(1);

    fn post(order: u64) -> Notification {
        Notification {
            id: format!("n-{order}").into(),
            event_id: format!("e-{order}").into(),
            kind: EventKind::Post,
            actor: 1,
            object: None,
            text: None,
            ts_ms: order,
            count: 1,
            actors: vec![1].into(),
            order,
            digest: None,
            data: None,
            trace: None,
            supersedes: None,
        }
    }

    #[test]
    fn fills_merge_with_concurrent_appends_and_trim() {
        let c = OutboxCache::new(3);
        assert!(c.read(C, None, 10).is_none());
        assert!(c.start_fill(C));
        assert!(!c.start_fill(C));
        c.append(C, &post(5)); // a broadcast during the fill
        assert!(c.read(C, None, 10).is_none(), "not readable while filling");
        c.fill(C, vec![post(2), post(3), post(5)]);
        let all: Vec<u64> = c
            .read(C, None, 10)
            .unwrap()
            .iter()
            .map(|n| n.order)
            .collect();
        assert_eq!(all, vec![2, 3, 5]);
        c.append(C, &post(7));
        let after: Vec<u64> = c
            .read(C, Some(3), 10)
            .unwrap()
            .iter()
            .map(|n| n.order)
            .collect();
        assert_eq!(after, vec![5, 7], "trimmed to 3 and read after the cursor");
        let mut visited = Vec::new();
        assert!(c.visit(C, 3, |n| visited.push(n.order)));
        assert_eq!(visited, vec![5, 7], "visited after the order, oldest first");
        assert!(!c.visit(OutboxId::Thread(1), 0, |_| {}), "not cached");
        assert_eq!(c.count_after(C, 3), Some(2));
        assert_eq!(c.count_after(C, 0), Some(3));
        assert_eq!(c.count_after(OutboxId::Thread(1), 0), None);
    }
}
