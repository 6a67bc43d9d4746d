//! Hot outboxes in memory: a celebrity's (or hot thread's) recent posts, so the reconnect
//! wave after a big post reads them here instead of one Redis round trip
//! per follower. The cache mirrors the Redis outbox: filled from it once,
//! then appended by every broadcast (which follows the Redis write) and
//! trimmed to the same cap.

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use herald_types::Notification;

#[derive(Default)]
struct Outbox {
    /// False while the first fill from Redis is in flight: readers go to
    /// Redis, broadcasts still append.
    loaded: bool,
    entries: VecDeque<Arc<Notification>>,
}

pub(crate) struct OutboxCache {
    cap: usize,
    map: DashMap<herald_types::Outbox, Outbox>,
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

    fn trim(&self, o: &mut Outbox) {
        while o.entries.len() > self.cap {
            o.entries.pop_front();
        }
    }

    /// A post just written to `outbox`.
    pub fn append(&self, outbox: herald_types::Outbox, n: &Notification) {
        if let Some(mut o) = self.map.get_mut(&outbox) {
            insert_sorted(&mut o.entries, Arc::new(n.clone()));
            let o = &mut *o;
            while o.entries.len() > self.cap {
                o.entries.pop_front();
            }
        }
    }

    /// Entries after `seen` (at most `limit`), or None when the outbox is
    /// not cached yet (the caller reads Redis and may `fill`).
    pub fn read(
        &self,
        outbox: herald_types::Outbox,
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
    pub fn start_fill(&self, outbox: herald_types::Outbox) -> bool {
        let mut fresh = false;
        self.map.entry(outbox).or_insert_with(|| {
            fresh = true;
            Outbox::default()
        });
        fresh
    }

    /// Completes a fill with the whole Redis outbox, merged with what
    /// broadcasts appended meanwhile.
    pub fn fill(&self, outbox: herald_types::Outbox, all: Vec<Notification>) {
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
    pub fn abort_fill(&self, outbox: herald_types::Outbox) {
        self.map.remove_if(&outbox, |_, o| !o.loaded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_types::EventKind;
    const C: herald_types::Outbox = herald_types::Outbox::User(1);

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
    }
}
