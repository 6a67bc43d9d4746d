//! Herald's WebSocket edge.
//!
//! `GET /v1/ws` authenticates (a JWT: HS256, RS256 or ES256, keys from
//! config or a JWKS URL; or `?user=` in development mode), registers the
//! connection in a concurrent registry (up to `max_devices` per user; past
//! it the oldest goes), sends `hello`, drains the user's inbox oldest first
//! on one of them, then pushes live notifications handed over by
//! fan-out through [`EdgeHandle`]. It tracks what was sent and not acked: an ack
//! of a live notification settles it; an ack of an inbox entry is reported
//! (`Acked`) and fan-out removes it (the connection reads the inbox again
//! only once that is confirmed); whatever is unacked when the connection ends, or unacked for
//! `ack_timeout`, is reported to fan-out (`Refused`, `Unacked`), which parks
//! it: the edge never writes the inbox. A push is written into the
//! socket by whoever pushes (see `link`); what a socket cannot take waits
//! in a bounded backlog, and when that is full the push is refused and
//! fan-out parks it, so a slow consumer never stalls anyone else. The edge never
//! reads the log.

mod celebrity;
mod conn;
mod devices;
mod drain;
mod frames;
mod handshake;
mod link;
mod pending;
mod reader;
mod scratch;
mod unacked;
mod wire;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use herald_store::Store;
use herald_types::trace;
use herald_types::{
    Answers, EdgeAnswer, EdgeCommand, EdgeHandle, Notification, Refusal, Settle, UserId,
};
use tokio::sync::{watch, Notify};

/// Edge settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Accept `?user=<id>` without a token. Development only.
    pub dev_mode: bool,
    /// Verifies users' JWTs; none disables JWT auth.
    pub jwt: Option<Arc<herald_auth::Verifier>>,
    /// Connections per user on this node; past it the oldest closes (4000).
    pub max_devices: usize,
    /// How often a connection writes the outbox cursors its acks moved
    /// (and on close): at most once per interval, not once per ack.
    pub cursor_flush: Duration,
    /// Notifications queued per connection before fan-out uses the inbox.
    pub queue_capacity: usize,
    /// Most notifications sent and not yet acked per connection; past it
    /// the oldest are moved to the inbox.
    pub max_unacked: usize,
    /// A live notification unacked this long is written to the inbox.
    pub ack_timeout: Duration,
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// A socket write that takes longer closes the connection.
    pub write_timeout: Duration,
    /// Most inbox entries sent on connect (the inbox cap is the natural bound).
    pub drain_limit: usize,
    /// Largest frame accepted from a client.
    pub max_message_bytes: usize,
    /// Control frames (ping, pong) a client may send per second, bursts up
    /// to twice that; past it the connection is closed with 1008 (0: no
    /// limit).
    pub max_control_per_s: u32,
    /// Most connections this node holds.
    pub max_connections: usize,
    /// Followers pushed per slice of a celebrity broadcast before yielding.
    pub broadcast_chunk: usize,
    /// Posts kept per celebrity outbox (the in-memory cache keeps as many).
    pub outbox_cap: usize,
    /// This process's start (ms): presence entries name it, so entries a
    /// crashed node left behind are stale once it restarts.
    pub incarnation: u64,
    /// Record which node holds each user's connections (`h:{u:ID}:nodes`):
    /// only other nodes read it, so a node alone writes none.
    pub presence: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            dev_mode: false,
            jwt: None,
            max_devices: 5,
            cursor_flush: Duration::from_secs(10),
            queue_capacity: 1024,
            max_unacked: 4096,
            ack_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            write_timeout: Duration::from_secs(10),
            drain_limit: 1000,
            max_message_bytes: 64 * 1024,
            max_control_per_s: 10,
            max_connections: 15_000,
            broadcast_chunk: 512,
            outbox_cap: herald_store::DEFAULT_OUTBOX_CAP,
            incarnation: 0,
            presence: true,
        }
    }
}

/// A push and what it answers for (`Settled` once acked or in the inbox).
pub(crate) struct Direct {
    pub n: Notification,
    pub settle: devices::Owed,
}

pub(crate) struct ConnHandle {
    pub id: u64,
    /// Its write side: whoever pushes writes through it.
    pub link: Arc<link::Link>,
    pub poke: Arc<Notify>,
    pub kick: Arc<Notify>,
}

/// Counters touched on every push, registered once.
pub(crate) struct EdgeMetrics {
    pub frames_sent: metrics::Counter,
    pub delivered_live: metrics::Counter,
    pub delivered_inbox: metrics::Counter,
    pub acks: metrics::Counter,
    /// Event accepted (by the gateway) to live frame written (here).
    pub latency: metrics::Histogram,
}

impl EdgeMetrics {
    fn new() -> EdgeMetrics {
        EdgeMetrics {
            frames_sent: metrics::counter!("herald_ws_frames_sent_total"),
            delivered_live: metrics::counter!("herald_notifications_delivered_total", "source" => "live"),
            delivered_inbox: metrics::counter!("herald_notifications_delivered_total", "source" => "inbox"),
            acks: metrics::counter!("herald_acks_total"),
            latency: metrics::histogram!("herald_delivery_latency_seconds"),
        }
    }
}

/// The edge of one node: its connections and their settings.
pub struct Edge {
    pub(crate) metrics: EdgeMetrics,
    pub(crate) cfg: EdgeConfig,
    pub(crate) store: Store,
    /// Each user's connections here, oldest (the primary) first.
    pub(crate) conns: DashMap<UserId, Vec<ConnHandle>>,
    /// Outbox (a celebrity, a hot thread) -> its followers (subscribers)
    /// connected here.
    pub(crate) index: DashMap<herald_types::Outbox, std::collections::HashSet<UserId>>,
    pub(crate) celebrities: Arc<herald_store::CelebritySet>,
    pub(crate) prefs: Arc<herald_prefs::PrefsCache>,
    pub(crate) outboxes: Arc<herald_store::OutboxCache>,
    /// Self-reference for spawned broadcast tasks.
    pub(crate) me: std::sync::Weak<Edge>,
    next_id: AtomicU64,
    open: AtomicUsize,
    closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    /// Where settlement answers go (fan-out's trackers).
    pub(crate) answers: Arc<dyn Answers>,
}

impl Edge {
    pub fn new(
        cfg: EdgeConfig,
        store: Store,
        celebrities: Arc<herald_store::CelebritySet>,
        prefs: Arc<herald_prefs::PrefsCache>,
        answers: Arc<dyn Answers>,
        outboxes: Arc<herald_store::OutboxCache>,
    ) -> Arc<Edge> {
        if cfg.dev_mode {
            tracing::warn!("websocket dev mode is on: ?user=<id> is accepted without a token");
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let edge = Arc::new_cyclic(move |me| Edge {
            metrics: EdgeMetrics::new(),
            cfg,
            store,
            conns: DashMap::new(),
            index: DashMap::new(),
            celebrities,
            outboxes,
            prefs,
            me: me.clone(),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            shutdown,
            shutdown_tx,
            answers,
        });
        // Spawned once the edge exists: a loop started inside
        // `new_cyclic` could tick first, find nothing to upgrade and end
        // for good (which left a node blind to other nodes' celebrities).
        tokio::spawn(celebrity::sync_loop(Arc::downgrade(&edge)));
        edge
    }

    pub fn router(self: &Arc<Self>) -> utoipa_axum::router::OpenApiRouter {
        utoipa_axum::router::OpenApiRouter::new()
            .routes(utoipa_axum::routes!(handshake::upgrade))
            .with_state(self.clone())
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes every connection (their unacked notifications go to the
    /// inbox) and waits up to `timeout` for them to finish.
    pub async fn close_all(&self, timeout: Duration) {
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connections() > 0 {
            let wait = self.closed.notified();
            if self.connections() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                tracing::warn!(
                    open = self.connections(),
                    "connections still open at shutdown"
                );
                break;
            }
        }
    }

    pub(crate) fn opened(&self) -> u64 {
        self.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("herald_connections").increment(1.0);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn finished(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("herald_connections").decrement(1.0);
        self.closed.notify_waiters();
    }
}

impl Edge {
    /// Queues `n` on `user`'s connection, or hands it back.
    fn push(&self, user: UserId, n: Notification, settle: Settle) -> Option<EdgeAnswer> {
        // Traced (its event was): a span for handing it to the user's
        // connections here, with what became of it.
        let mut span = n.trace.as_deref().and_then(|parent| {
            let mut s = trace::start("herald.push", trace::SpanKind::Producer, Some(parent))?;
            s.set("herald.user", user as i64);
            s.set("herald.notification_id", n.id.to_string());
            Some(s)
        });
        let a = self.push_to(user, n, settle);
        if let Some(s) = &mut span {
            let outcome = match &a {
                None => "sent",
                Some(EdgeAnswer::Refused { why, .. }) => match why {
                    Refusal::Offline => "offline",
                    Refusal::Full => "full",
                    Refusal::Unacked => "unacked",
                },
                Some(_) => "other",
            };
            s.set("herald.outcome", outcome);
        }
        a
    }

    fn push_to(&self, user: UserId, n: Notification, settle: Settle) -> Option<EdgeAnswer> {
        let refused = |n: Notification, settle: Settle, why: Refusal| {
            Some(EdgeAnswer::Refused {
                user,
                n,
                settle,
                why,
            })
        };
        let Some(d) = self.conns.get(&user) else {
            return refused(n, settle, Refusal::Offline);
        };
        if d.len() == 1 {
            let direct = Box::new(Direct {
                n,
                settle: devices::Owed::One(settle),
            });
            return match d[0].link.push_live(self, direct) {
                Ok(()) => None,
                Err((d, why)) => match d.settle {
                    devices::Owed::One(settle) => refused(d.n, settle, why),
                    devices::Owed::Copies(_) => None,
                },
            };
        }
        // Several devices: a copy each, one settlement for all.
        let copies = devices::Copies::new(settle, d.len());
        let mut why = Refusal::Offline;
        for h in d.iter() {
            let direct = Box::new(Direct {
                n: n.clone(),
                settle: devices::Owed::Copies(copies.clone()),
            });
            if let Err((_, w)) = h.link.push_live(self, direct) {
                if matches!(w, Refusal::Full) {
                    why = Refusal::Full;
                }
                if let Some(settle) = copies.undelivered() {
                    // No copy went out: fan-out stores it.
                    return refused(n, settle, why);
                }
            }
        }
        None
    }

    /// Tells every user's primary connection here to drain the inbox.
    pub(crate) fn poke_all(&self) {
        let mut n = 0u64;
        for d in self.conns.iter() {
            if let Some(h) = d.value().first() {
                h.poke.notify_one();
                n += 1;
            }
        }
        tracing::info!(users = n, "every connection told to drain its inbox");
    }

    /// Tells `user`'s primary connection here to drain the inbox.
    pub(crate) fn poke(&self, user: UserId) {
        if let Some(h) = self
            .conns
            .get(&user)
            .and_then(|d| d.first().map(|h| h.poke.clone()))
        {
            h.notify_one();
        }
    }
}

impl EdgeHandle for Edge {
    fn devices(&self, user: UserId) -> usize {
        self.conns.get(&user).map_or(0, |d| d.len())
    }

    fn send(&self, cmd: EdgeCommand) -> Option<EdgeAnswer> {
        match cmd {
            EdgeCommand::Push { user, n, settle } => return self.push(user, n, settle),
            EdgeCommand::Poke { user } => self.poke(user),
            EdgeCommand::PokeAll => self.poke_all(),
            EdgeCommand::Broadcast { outbox, n } => celebrity::broadcast(self, outbox, n),
            EdgeCommand::FollowChanged {
                follower,
                outbox,
                follows,
            } => celebrity::follow_changed(self, follower, outbox, follows),
            EdgeCommand::PathChanged {
                outbox,
                object,
                on,
                followers,
            } => celebrity::path_changed(self, outbox, object, on, &followers),
        }
        None
    }
}

pub use handshake::Admission;
