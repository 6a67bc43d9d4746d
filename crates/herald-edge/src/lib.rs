//! Herald's WebSocket edge.
//!
//! `GET /v1/ws` authenticates (HS256 JWT, or `?user=` in development mode),
//! registers the connection in a concurrent registry (one connection per
//! user: a newer one replaces the older), sends `hello`, drains the user's
//! inbox oldest first, then pushes live notifications handed over by
//! fan-out through [`EdgeHandle`]. It tracks what was sent and not acked: an ack
//! of a live notification settles it; an ack of an inbox entry removes it
//! from Redis; whatever is unacked when the connection ends, or unacked for
//! `ack_timeout`, is written to the inbox. Each connection has a bounded
//! queue; when it is full, fan-out writes to the inbox instead, so a slow
//! consumer never stalls anyone else. The edge never reads the log.

mod celebrity;
mod conn;
mod devices;
mod drain;
mod frames;
mod outbox_cache;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use herald_store::Store;
use herald_types::{
    Answers, EdgeAnswer, EdgeCommand, EdgeHandle, Notification, Refusal, Settle, UserId, WireFormat,
};
use tokio::sync::{mpsc, watch, Notify};

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
    /// Most connections this node holds.
    pub max_connections: usize,
    /// Followers pushed per slice of a celebrity broadcast before yielding.
    pub broadcast_chunk: usize,
    /// Posts kept per celebrity outbox (the in-memory cache keeps as many).
    pub outbox_cap: usize,
    /// This process's start (ms): presence entries name it, so entries a
    /// crashed node left behind are stale once it restarts.
    pub incarnation: u64,
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
            max_connections: 15_000,
            broadcast_chunk: 512,
            outbox_cap: herald_store::DEFAULT_OUTBOX_CAP,
            incarnation: 0,
        }
    }
}

/// What fan-out hands a connection. Kept one pointer wide (a push is
/// boxed with its settle, a shared frame is an `Arc`): tokio allocates a
/// block of 32 slots per channel up front, which was ~6 KB per connection
/// with the notification inline.
pub(crate) enum Delivery {
    Direct(Box<Direct>),
    /// A celebrity's post, encoded once for every follower.
    Shared(Arc<celebrity::SharedFrame>),
}

/// A push and what it answers for (`Settled` once acked or in the inbox).
pub(crate) struct Direct {
    pub n: Notification,
    pub settle: devices::Owed,
}

pub(crate) struct ConnHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Delivery>,
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
    /// Celebrity -> its followers connected here.
    pub(crate) index: DashMap<UserId, std::collections::HashSet<UserId>>,
    pub(crate) celebrities: Arc<herald_store::CelebritySet>,
    pub(crate) prefs: Arc<herald_prefs::PrefsCache>,
    pub(crate) outboxes: outbox_cache::OutboxCache,
    /// Self-reference for spawned broadcast tasks.
    pub(crate) me: std::sync::Weak<Edge>,
    next_id: AtomicU64,
    open: AtomicUsize,
    closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    /// Unacked work of closed connections waiting for Redis to come back.
    spill_tx: mpsc::Sender<Spill>,
    /// Where settlement answers go (fan-out's trackers).
    pub(crate) answers: Arc<dyn Answers>,
}

/// What a closed connection could not write to the inbox (Redis did not
/// answer): retried in the background until written, then settled.
pub(crate) struct Spill {
    user: UserId,
    items: Vec<(Notification, Settle)>,
}

/// Closed connections' leftovers waiting for Redis; past it, the records
/// stay unsettled until restart (processed again then).
const SPILL_QUEUE: usize = 10_000;

impl Edge {
    pub fn new(
        cfg: EdgeConfig,
        store: Store,
        celebrities: Arc<herald_store::CelebritySet>,
        prefs: Arc<herald_prefs::PrefsCache>,
        answers: Arc<dyn Answers>,
    ) -> Arc<Edge> {
        if cfg.dev_mode {
            tracing::warn!("websocket dev mode is on: ?user=<id> is accepted without a token");
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let cfg_outbox_cap = cfg.outbox_cap;
        let (spill_tx, spill_rx) = mpsc::channel(SPILL_QUEUE);
        let spill_store = store.clone();
        Arc::new_cyclic(move |me| {
            tokio::spawn(celebrity::sync_loop(me.clone()));
            tokio::spawn(spill_loop(
                spill_store,
                spill_rx,
                me.clone(),
                answers.clone(),
            ));
            Edge {
                metrics: EdgeMetrics::new(),
                cfg,
                store,
                conns: DashMap::new(),
                index: DashMap::new(),
                celebrities,
                outboxes: outbox_cache::OutboxCache::new(cfg_outbox_cap),
                prefs,
                me: me.clone(),
                next_id: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                closed: Notify::new(),
                shutdown,
                shutdown_tx,
                spill_tx,
                answers,
            }
        })
    }

    /// Hands a closed connection's leftovers to the background writer.
    pub(crate) fn spill(&self, user: UserId, items: Vec<(Notification, Settle)>) {
        let n = items.len();
        if let Err(e) = self.spill_tx.try_send(Spill { user, items }) {
            tracing::error!(
                user,
                notifications = n,
                "background inbox writer is full; these records are processed again after restart"
            );
            metrics::counter!("herald_spill_overflow_total").increment(n as u64);
            let s = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
            };
            for (_, settle) in s.items {
                self.answers.answer(EdgeAnswer::Failed(settle));
            }
        }
    }

    pub fn router(self: &Arc<Self>) -> utoipa_axum::router::OpenApiRouter {
        utoipa_axum::router::OpenApiRouter::new()
            .routes(utoipa_axum::routes!(upgrade))
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
            let direct = Direct {
                n,
                settle: devices::Owed::One(settle),
            };
            let (d, why) = match d[0].tx.try_send(Delivery::Direct(Box::new(direct))) {
                Ok(()) => return None,
                Err(mpsc::error::TrySendError::Full(d)) => (d, Refusal::Full),
                Err(mpsc::error::TrySendError::Closed(d)) => (d, Refusal::Offline),
            };
            return match d {
                Delivery::Direct(d) => match d.settle {
                    devices::Owed::One(settle) => refused(d.n, settle, why),
                    devices::Owed::Copies(_) => None,
                },
                Delivery::Shared(_) => None,
            };
        }
        // Several devices: a copy each, one settlement for all.
        let copies = devices::Copies::new(settle, d.len());
        let mut why = Refusal::Offline;
        for h in d.iter() {
            let direct = Direct {
                n: n.clone(),
                settle: devices::Owed::Copies(copies.clone()),
            };
            match h.tx.try_send(Delivery::Direct(Box::new(direct))) {
                Ok(()) => {}
                Err(e) => {
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        why = Refusal::Full;
                    }
                    if let Some(settle) = copies.undelivered() {
                        // No copy went out: fan-out stores it.
                        return refused(n, settle, why);
                    }
                }
            }
        }
        None
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
    fn send(&self, cmd: EdgeCommand) -> Option<EdgeAnswer> {
        match cmd {
            EdgeCommand::Push { user, n, settle } => return self.push(user, n, settle),
            EdgeCommand::Poke { user } => self.poke(user),
            EdgeCommand::Broadcast { celebrity, n } => celebrity::broadcast(self, celebrity, n),
            EdgeCommand::FollowChanged {
                follower,
                celebrity,
                follows,
            } => celebrity::follow_changed(self, follower, celebrity, follows),
            EdgeCommand::CelebrityChanged {
                user,
                celebrity,
                followers,
            } => celebrity::celebrity_changed(self, user, celebrity, &followers),
        }
        None
    }
}

/// Writes closed connections' leftovers to their inboxes, retrying with
/// backoff while Redis does not answer; each settles once written.
async fn spill_loop(
    store: Store,
    mut rx: mpsc::Receiver<Spill>,
    edge: std::sync::Weak<Edge>,
    answers: Arc<dyn Answers>,
) {
    let min = Duration::from_millis(200);
    while let Some(s) = rx.recv().await {
        let mut backoff = min;
        loop {
            let items: Vec<(UserId, &Notification)> =
                s.items.iter().map(|(n, _)| (s.user, n)).collect();
            match store.inbox_push(&items).await {
                Ok(_) => {
                    metrics::counter!("herald_notifications_total", "route" => "queued_after_outage")
                        .increment(items.len() as u64);
                    break;
                }
                Err(e) => {
                    if backoff == min {
                        tracing::warn!(user = s.user, error = %e, "inbox still unavailable for a closed connection's notifications; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // The inbox has them: settled.
        let user = s.user;
        answers.settled(s.items.into_iter().map(|(_, settle)| settle).collect());
        // The user may have reconnected meanwhile.
        if let Some(edge) = edge.upgrade() {
            edge.poke(user);
        }
    }
}

/// A refusal before the upgrade, in the API's one error shape.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = herald_types::error_body(code, message, None, None);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What the front door decided about the TCP connection a request came
/// on (a request extension): over its address's limits, and a hold on the
/// connection's slot that an upgraded WebSocket keeps until it closes.
#[derive(Clone)]
pub struct Admission {
    pub limited: bool,
    pub hold: Arc<dyn std::any::Any + Send + Sync>,
}

/// Close code for a connection over its address's limits.
const CLOSE_TOO_MANY: u16 = 4029;

/// The WebSocket: live notifications, the inbox drained at connect, acks.
/// Frames and close codes: `docs/asyncapi.yaml`.
#[utoipa::path(get, path = "/v1/ws", tag = "websocket",
    params(
        ("token" = Option<String>, Query, description = "The user's JWT (or `Authorization: Bearer`)"),
        ("user" = Option<u64>, Query, description = "Development mode only: connect as this user")),
    responses(
        (status = 101, description = "Upgraded: the server sends `hello`, then notifications"),
        (status = 401, description = "Missing or bad token"),
        (status = 503, description = "At the connection limit, shutting down, or not an edge node")))]
async fn upgrade(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    admission: Option<axum::Extension<Admission>>,
    ws: WebSocketUpgrade,
) -> Response {
    let hold = admission.as_ref().map(|a| a.hold.clone());
    if admission.as_ref().is_some_and(|a| a.limited) {
        // Over its address's limits: the handshake completes so that the
        // client reads why, then the socket closes with 4029.
        metrics::counter!("herald_ws_refused_total", "reason" => "address_limit").increment(1);
        return ws.on_upgrade(move |mut socket| async move {
            use axum::extract::ws::{CloseFrame, Message};
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: CLOSE_TOO_MANY,
                    reason: "too many connections from this address".into(),
                })))
                .await;
            drop(hold);
        });
    }
    let user = match authenticate(&edge.cfg, &headers, &q) {
        Ok(u) => u,
        Err(e) => {
            metrics::counter!("herald_ws_refused_total", "reason" => "auth").increment(1);
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
        }
    };
    if *edge.shutdown.borrow() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is shutting down",
        );
    }
    if edge.connections() >= edge.cfg.max_connections {
        metrics::counter!("herald_ws_refused_total", "reason" => "capacity").increment(1);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is at its connection limit",
        );
    }
    // Frames of one flush (a drained page, a burst to one user) are
    // gathered up to WRITE_GATHER bytes per socket write instead of one
    // write each; the buffer keeps that capacity for the connection's life.
    let ws = ws
        .protocols(["herald.msgpack"])
        .read_buffer_size(2 * 1024)
        .write_buffer_size(WRITE_GATHER)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(edge.cfg.max_message_bytes)
        .max_frame_size(edge.cfg.max_message_bytes);
    let fmt = if ws.selected_protocol().is_some() {
        WireFormat::MsgPack
    } else {
        WireFormat::Json
    };
    ws.on_upgrade(move |socket| async move {
        conn::serve(edge, socket, user, fmt).await;
        drop(hold);
    })
}

/// Bytes of frames gathered into one socket write (a drained page of 50
/// is 3 writes instead of 50).
const WRITE_GATHER: usize = 4 * 1024;

fn authenticate(
    cfg: &EdgeConfig,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
) -> Result<UserId, herald_auth::AuthError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string());
    if let Some(token) = bearer.or_else(|| q.get("token").cloned()) {
        let Some(v) = &cfg.jwt else {
            return Err(herald_auth::AuthError::NotConfigured);
        };
        return v.verify(&token, herald_types::now_ms() / 1000);
    }
    if cfg.dev_mode {
        if let Some(u) = q.get("user") {
            return herald_types::ids::parse_user(u)
                .ok_or_else(|| herald_auth::AuthError::BadUser(u.clone()));
        }
    }
    Err(herald_auth::AuthError::Missing)
}
