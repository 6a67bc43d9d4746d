//! The Redis Cluster connection, rebuilt when it stops working.
//!
//! After a master without a replica was killed and started again under
//! traffic, redis-rs's cluster connection was seen to time out every call
//! to it for minutes (its connection to the restarted node never came
//! back), while a new connection worked at once. So calls report their
//! outcome here: once calls have kept failing with timeouts or connection
//! errors for [`REBUILD_AFTER`] (a streak ends only after [`QUIET`] without
//! such a failure: successes to the healthy masters do not end it), a new
//! connection is made in the background and replaces the old one for every
//! clone of the store. During a real outage the attempt fails and is tried
//! again at most every [`RETRY_EVERY`].

use herald_types::sync::{Locked, Shared};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// Failing this long makes a new connection.
const REBUILD_AFTER: Duration = Duration::from_secs(3);
/// A streak of failures ends after this long without one (longer than
/// the gap between two calls that each wait out their timeout and a
/// retry's backoff, or a wedged connection's streak never grows).
const QUIET: Duration = Duration::from_secs(5);
/// Rebuilds at most this often (a rebuild made during a failover may get
/// the old map; the next one, after it, gets the new).
const RETRY_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct ClusterConn {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    streak: Mutex<Streak>,
    rebuilding: AtomicBool,
    timeout: Duration,
}

#[derive(Default)]
struct Streak {
    since: Option<Instant>,
    last: Option<Instant>,
    rebuilt: Option<Instant>,
}

impl ClusterConn {
    pub(crate) async fn connect(
        client: ClusterClient,
        timeout: Duration,
    ) -> crate::Result<Arc<ClusterConn>> {
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| crate::StoreError::Timeout(timeout))??;
        Ok(Arc::new(ClusterConn {
            client,
            current: RwLock::new(conn),
            streak: Mutex::new(Streak::default()),
            rebuilding: AtomicBool::new(false),
            timeout,
        }))
    }

    /// The connection to use now (a cheap handle).
    pub(crate) fn get(&self) -> ClusterConnection {
        self.current.reading().clone()
    }

    /// Records a call's outcome; may start a rebuild.
    pub(crate) fn observe<T>(self: &Arc<Self>, r: &Result<T, redis::RedisError>) {
        let Err(e) = r else { return };
        if !(e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) {
            return;
        }
        self.failed();
    }

    /// A call timed out (the store's own deadline) or lost its connection.
    pub(crate) fn failed(self: &Arc<Self>) {
        let now = Instant::now();
        let due = {
            let mut s = self.streak.locked();
            if s.last.is_none_or(|l| now.duration_since(l) > QUIET) {
                s.since = Some(now);
            }
            s.last = Some(now);
            let long = s
                .since
                .is_some_and(|t| now.duration_since(t) >= REBUILD_AFTER);
            let spaced = s
                .rebuilt
                .is_none_or(|t| now.duration_since(t) >= RETRY_EVERY);
            if long && spaced {
                s.rebuilt = Some(now);
            }
            long && spaced
        };
        if due && !self.rebuilding.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.rebuild().await });
        }
    }

    async fn rebuild(self: Arc<Self>) {
        tracing::warn!("redis cluster calls keep failing; making a new connection");
        match tokio::time::timeout(self.timeout, self.client.get_async_connection()).await {
            Ok(Ok(c)) => {
                *self.current.writing() = c;
                *self.streak.locked() = Streak {
                    rebuilt: Some(Instant::now()),
                    ..Streak::default()
                };
                metrics::counter!("herald_redis_reconnects_total").increment(1);
                tracing::info!("redis cluster connection made anew");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis cluster connection could not be made; trying again later")
            }
            Err(_) => tracing::warn!("redis cluster connection timed out; trying again later"),
        }
        self.rebuilding.store(false, Ordering::Release);
    }
}
