//! The Redis Cluster connection, rebuilt when it stops working.
//!
//! After a master without a replica was killed and started again under
//! traffic, redis-rs's cluster connection was seen to time out every call
//! to it for minutes (its connection to the restarted node never came
//! back), while a new connection worked at once. So calls report their
//! outcome here: once calls have kept failing with timeouts or connection
//! errors for [`REBUILD_AFTER`] (a streak ends only after [`QUIET`] without
//! such a failure: successes to the healthy masters do not end it; it
//! starts when its first failing call was made, so one call that waited
//! out the store's timeout is enough), a new connection is made in the
//! background and replaces the old one for every clone of the store.
//! During a real outage the attempt fails and is tried again at most every
//! [`RETRY_EVERY`].

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
/// How often the connection is probed, and how long a probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Rebuilds at most this often (a rebuild made during a failover may get
/// the old map; the next one, after it, gets the new).
const RETRY_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct ClusterConn {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    streak: Mutex<Streak>,
    rebuilding: AtomicBool,
    timeout: Duration,
    /// Moves on each time the connection is replaced: calls still waiting
    /// on the old one give up then (see [`ClusterConn::replaced`]).
    generation: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Streak {
    since: Option<Instant>,
    last: Option<Instant>,
    rebuilt: Option<Instant>,
}

impl Streak {
    /// Notes a failure of a call made at `started`, seen at `now`; answers
    /// whether to make a new connection now.
    fn failed(&mut self, started: Instant, now: Instant) -> bool {
        let started = started.min(now);
        match self.last {
            // A call that waited out its timeout shows the connection
            // failing since it was made.
            Some(l) if now.duration_since(l) <= QUIET => {
                self.since = Some(self.since.map_or(started, |t| t.min(started)));
            }
            _ => self.since = Some(started),
        }
        self.last = Some(now);
        let long = self
            .since
            .is_some_and(|t| now.duration_since(t) >= REBUILD_AFTER);
        let spaced = self
            .rebuilt
            .is_none_or(|t| now.duration_since(t) >= RETRY_EVERY);
        if long && spaced {
            self.rebuilt = Some(now);
        }
        long && spaced
    }
}

impl ClusterConn {
    pub(crate) async fn connect(
        client: ClusterClient,
        timeout: Duration,
    ) -> crate::Result<Arc<ClusterConn>> {
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| crate::StoreError::Timeout(timeout))??;
        let me = Arc::new(ClusterConn {
            client,
            current: RwLock::new(conn),
            streak: Mutex::new(Streak::default()),
            rebuilding: AtomicBool::new(false),
            timeout,
            generation: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(watch(Arc::downgrade(&me)));
        Ok(me)
    }

    /// The connection to use now (a cheap handle).
    pub(crate) fn get(&self) -> ClusterConnection {
        self.current.reading().clone()
    }

    /// Resolves once the connection current now has been replaced: a call
    /// made on it before (a wedged connection answers nothing) fails then
    /// instead of waiting out its timeout, and its caller's retry goes to
    /// the new one. Take it before [`ClusterConn::get`].
    pub(crate) fn replaced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.generation.subscribe();
        async move {
            // A sender gone (the store dropped) never replaces anything.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Records the outcome of a call made at `started`; may start a
    /// rebuild.
    pub(crate) fn observe<T>(self: &Arc<Self>, r: &Result<T, redis::RedisError>, started: Instant) {
        let Err(e) = r else { return };
        if !(e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) {
            return;
        }
        self.failed(started);
    }

    /// A call made at `started` timed out (the store's own deadline) or
    /// lost its connection.
    pub(crate) fn failed(self: &Arc<Self>, started: Instant) {
        let due = self.streak.locked().failed(started, Instant::now());
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
                self.generation.send_modify(|g| *g += 1);
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

/// Pings the cluster through the current connection every
/// [`PROBE_EVERY`]: a `PING` not answered within [`PROBE_TIMEOUT`] is a
/// failure like a call's, so a connection that stopped answering every
/// call is made anew about [`REBUILD_AFTER`] after it stopped, whether or
/// not calls are being made, rather than after calls waited out the
/// store's (longer) timeout. Errors (a master refusing connections during
/// a failover) are not counted here: calls report them.
async fn watch(conn: std::sync::Weak<ClusterConn>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(me) = conn.upgrade() else { return };
        let mut c = me.get();
        let started = Instant::now();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<redis::Value>(&mut c);
        if tokio::time::timeout(PROBE_TIMEOUT, ping).await.is_err() {
            tracing::debug!("redis cluster ping not answered in time");
            me.failed(started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_that_waited_out_its_timeout_makes_a_new_connection() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Streak::default();
        // Made at 0, timed out after 5 s: failing for 5 s already.
        assert!(s.failed(at(0), at(5_000)));
        // The next rebuild waits RETRY_EVERY, however long calls fail.
        assert!(!s.failed(at(1_000), at(6_000)));
        assert!(s.failed(at(5_500), at(10_500)));
    }

    #[test]
    fn quick_errors_make_a_new_connection_only_after_failing_for_a_while() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Streak::default();
        // Refused at once, every half second.
        for ms in (0..3_000).step_by(500) {
            assert!(!s.failed(at(ms), at(ms)), "at {ms} ms");
        }
        assert!(s.failed(at(3_000), at(3_000)));
        // After QUIET without a failure, a new streak starts.
        let later = 3_000 + QUIET.as_millis() as u64 + 100;
        let mut s2 = Streak::default();
        assert!(!s2.failed(at(0), at(0)));
        assert!(!s2.failed(at(later), at(later)), "a new streak");
    }
}
