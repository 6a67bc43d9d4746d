//! A cache of resolved preferences.
//!
//! Every change made through this node clears its entry at once, and a
//! read that raced a change does not keep what it read: `invalidate`
//! bumps an epoch, and a read that saw the epoch move while it was in
//! Redis drops the entries it cached. So entries may live as long as
//! changes made elsewhere allow: at most a second in a cluster (other
//! nodes' changes are seen within it), longer on a node alone, where
//! every change comes through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use herald_store::Store;
use herald_types::UserId;

use crate::Resolved;

/// Entries live at most `ttl`; past `max_entries` the cache is cleared
/// (a crude but bounded policy: a refill costs one pipeline per batch).
pub struct PrefsCache {
    store: Store,
    ttl: Duration,
    max_entries: usize,
    digest_override_ms: u64,
    /// What a user who never set anything gets (most users): one shared
    /// value instead of one allocation per read.
    default: Arc<Resolved>,
    map: DashMap<UserId, (Instant, Arc<Resolved>)>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
}

impl PrefsCache {
    /// `digest_override_ms` > 0 makes every digest window that long (tests
    /// and demos); it rides with each loaded entry.
    pub fn new(
        store: Store,
        ttl: Duration,
        max_entries: usize,
        digest_override_ms: u64,
    ) -> PrefsCache {
        PrefsCache {
            store,
            ttl,
            max_entries: max_entries.max(1),
            digest_override_ms,
            default: Arc::new(Resolved {
                digest_override_ms,
                ..Resolved::default()
            }),
            map: DashMap::new(),
            epoch: AtomicU64::new(0),
        }
    }

    /// Forgets `user`'s entry (after a change through this node, once it
    /// is in Redis).
    pub fn invalidate(&self, user: UserId) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.remove(&user);
    }

    /// Preferences of `users`, in order: fresh entries from memory, the
    /// rest in one Redis pipeline.
    pub async fn get_many(&self, users: &[UserId]) -> herald_store::Result<Vec<Arc<Resolved>>> {
        let now = Instant::now();
        let mut out: Vec<Option<Arc<Resolved>>> = Vec::with_capacity(users.len());
        let mut missing = Vec::new();
        for (i, u) in users.iter().enumerate() {
            match self.map.get(u) {
                Some(e) if now.duration_since(e.0) < self.ttl => out.push(Some(e.1.clone())),
                _ => {
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if !missing.is_empty() {
            let ids: Vec<UserId> = missing.iter().map(|&i| users[i]).collect();
            let epoch = self.epoch.load(Ordering::SeqCst);
            let stored = self.store.prefs_get_many(&ids).await?;
            if self.map.len() + ids.len() > self.max_entries {
                self.map.clear();
            }
            for (i, s) in missing.into_iter().zip(stored) {
                let r = if s.doc.is_none() && s.mutes.is_empty() {
                    self.default.clone()
                } else {
                    let mut r = Resolved::from_stored(&s);
                    r.digest_override_ms = self.digest_override_ms;
                    Arc::new(r)
                };
                self.map.insert(users[i], (now, r.clone()));
                out[i] = Some(r);
            }
            // A change landed while this read was in Redis: what it read
            // serves this call but is not kept (the change's own removal
            // may have run before these inserts).
            if self.epoch.load(Ordering::SeqCst) != epoch {
                for u in &ids {
                    self.map.remove(u);
                }
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_default()).collect())
    }

    pub async fn get(&self, user: UserId) -> herald_store::Result<Arc<Resolved>> {
        Ok(self.get_many(&[user]).await?.pop().unwrap_or_default())
    }
}
