//! One WebSocket connection's life: greeting and draining, reading the
//! client's frames, heartbeats and timeouts, writing out a backlog the
//! socket could not take at once. Pushes do not go through this task:
//! they are written by whoever pushes, through the connection's
//! [`Link`](crate::link::Link).

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use herald_types::{UserId, WireFormat};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::link::{Flushed, Link};
use crate::pending::Acks;
use crate::reader::{Incoming, ReadError, Reader};
use crate::wire;
use crate::{frames, ConnHandle, Edge};

/// Most client frames handled (already read, without waiting) before
/// their acks are applied together.
const READ_BATCH: usize = 64;

/// Backoff between drain retries while Redis does not answer.
const SYNC_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(250);
const SYNC_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// A timer that is not armed.
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

pub(crate) struct Conn {
    pub edge: Arc<Edge>,
    /// This connection's id on the node.
    id: u64,
    pub user: UserId,
    pub link: Arc<Link>,
    last_seen: Instant,
    /// Outbox cursors acked and not yet written to Redis (outbox, order
    /// of the newest entry acked): written at most once per
    /// `cursor_flush` and on close, never once per ack.
    pub cursors: Vec<(herald_types::Outbox, u64)>,
    pub cursors_at: Instant,
    /// Removals of acked inbox entries fan-out has not confirmed yet: the
    /// inbox is read again only once they are done (bounded by fan-out's
    /// removal queue; finished ones are pruned as new ones come).
    pub removals: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// The link's frame count at the last heartbeat.
    frames_at_beat: u64,
    /// What is left of the client's allowance of control frames.
    pub(crate) control: ControlBudget,
}

/// A token bucket for a client's control frames (ping, pong): refilled at
/// `rate` per second up to `2 * rate`. A client past it is closed (1008):
/// each ping costs the node a pong write, and a flood of them would take a
/// core from everyone else. Hand-written: 16 bytes in the connection, no
/// clock or allocation of a rate-limiter crate per connection.
pub(crate) struct ControlBudget {
    tokens: f32,
    at: Instant,
}

impl ControlBudget {
    fn new(rate: u32) -> ControlBudget {
        ControlBudget {
            tokens: 2.0 * rate as f32,
            at: Instant::now(),
        }
    }

    /// Takes one frame's token; false when the client is past its rate.
    pub(crate) fn take(&mut self, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f32() * rate as f32;
        self.at = now;
        self.tokens = (self.tokens + refill).min(2.0 * rate as f32);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Why a connection ended (for logs and metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    ClientClosed,
    Replaced,
    Shutdown,
    Idle,
    SlowWrite,
    SocketError,
    /// A frame over `max_message_bytes`.
    TooBig,
    /// A text frame that is not UTF-8.
    BadUtf8,
    /// A frame that breaks RFC 6455 (unmasked, reserved bits, ...).
    Protocol,
    /// More control frames than `websocket.max_control_per_s` allows.
    ControlFlood,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Replaced => "replaced",
            End::Shutdown => "shutdown",
            End::Idle => "idle",
            End::SlowWrite => "slow_write",
            End::SocketError => "socket_error",
            End::TooBig => "frame_too_big",
            End::BadUtf8 => "invalid_utf8",
            End::Protocol => "protocol_error",
            End::ControlFlood => "control_flood",
        }
    }

    /// The close frame the server sends, if any.
    fn close_code(self) -> Option<(u16, &'static str)> {
        match self {
            End::Replaced => Some((4000, "replaced: the user has too many connections")),
            End::Shutdown => Some((1001, "server shutting down")),
            End::Idle => Some((1001, "idle timeout")),
            End::TooBig => Some((1009, "frame too big")),
            End::BadUtf8 => Some((1007, "invalid UTF-8")),
            End::Protocol => Some((1002, "protocol error")),
            End::ControlFlood => Some((1008, "too many control frames")),
            _ => None,
        }
    }
}

pub async fn serve(
    edge: Arc<Edge>,
    sock: TcpStream,
    early: Vec<u8>,
    user: UserId,
    fmt: WireFormat,
) {
    let (read_half, write_half) = sock.into_split();
    let mut stream = Reader::new(read_half, &early, edge.cfg.max_message_bytes);
    drop(early);
    let id = edge.opened();
    let link = Arc::new(Link::new(write_half, fmt));
    let poke = Arc::new(Notify::new());
    let kick = Arc::new(Notify::new());
    let handle = ConnHandle {
        id,
        link: link.clone(),
        poke: poke.clone(),
        kick: kick.clone(),
    };
    if let Some(oldest) = edge.register(user, handle) {
        // Past the user's device limit: the oldest connection goes, and
        // the next oldest, now primary, drains the inbox.
        oldest.kick.notify_one();
        edge.poke(user);
    }
    // Presence is written before the first drain: a node that writes this
    // user's inbox after the drain read it then sees the presence and
    // pokes this node (see fan-out's route).
    if edge.cfg.presence {
        let devices = edge.conns.get(&user).map_or(1, |d| d.len());
        if let Err(e) = edge
            .store
            .presence_add(user, edge.cfg.incarnation, devices)
            .await
        {
            tracing::debug!(user, error = %e, "presence not recorded");
        }
    }
    let mut c = Conn {
        edge: edge.clone(),
        id,
        user,
        link: link.clone(),
        last_seen: Instant::now(),
        cursors: Vec::new(),
        cursors_at: Instant::now(),
        removals: Vec::new(),
        frames_at_beat: 0,
        control: ControlBudget::new(edge.cfg.max_control_per_s),
    };
    let end = c.run(&mut stream, &poke, &kick).await;
    tracing::debug!(user, reason = end.as_str(), "connection ended");
    metrics::counter!("herald_ws_closed_total", "reason" => end.as_str()).increment(1);
    // From here pushes are refused (fan-out stores them), so nothing is
    // written after the close frame.
    let pending = link.close();
    if let Some((code, reason)) = end.close_code() {
        link.send(&edge.metrics, vec![wire::close(code, reason)]);
        let _ = tokio::time::timeout(edge.cfg.write_timeout, c.write_out()).await;
    }
    // While registered this connection stays the user's primary here, so
    // a reconnect drains only once the entries it acked are removed.
    c.removed().await;
    let last = edge.unregister(user, id);
    if last {
        edge.unindex(user);
    }
    c.settle_on_close(pending).await;
    if edge.cfg.presence {
        let left = edge.conns.get(&user).map_or(0, |d| d.len());
        let r = if last && left == 0 {
            edge.store.presence_remove(user).await
        } else {
            edge.store
                .presence_add(user, edge.cfg.incarnation, left.max(1))
                .await
        };
        if let Err(e) = r {
            tracing::debug!(user, error = %e, "presence not updated");
        }
    }
    edge.finished();
}

/// What a failed read means for the connection: a frame the client should
/// be told about (closed with 1009, 1007 or 1002), or a socket that is gone.
fn read_error(e: ReadError) -> End {
    match e {
        ReadError::TooBig => End::TooBig,
        ReadError::BadUtf8 => End::BadUtf8,
        ReadError::Protocol => End::Protocol,
        ReadError::Eof => End::ClientClosed,
        ReadError::Socket => End::SocketError,
    }
}

impl Conn {
    async fn run(&mut self, stream: &mut Reader, poke: &Notify, kick: &Notify) -> End {
        let mut shutdown = self.edge.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return End::Shutdown;
        }
        let mut unsynced = match self.greet().await {
            Ok(unsynced) => unsynced,
            Err(e) => return e,
        };
        let mut sync_backoff = herald_types::Backoff::new(SYNC_RETRY_MIN, SYNC_RETRY_MAX);
        let sync_retry = tokio::time::sleep(if unsynced {
            sync_backoff.next_wait()
        } else {
            FAR
        });
        tokio::pin!(sync_retry);
        let cfg = self.edge.cfg.clone();
        let link = self.link.clone();
        // Long-lived futures are pinned once, not rebuilt on every wake-up.
        let kicked = kick.notified();
        tokio::pin!(kicked);
        let poked = poke.notified();
        tokio::pin!(poked);
        let woken = link.wake.notified();
        tokio::pin!(woken);
        let stopping = shutdown.changed();
        tokio::pin!(stopping);
        // One timer for heartbeats, idle checks, the ack-timeout sweep and
        // the write timeout.
        let period = cfg
            .heartbeat_interval
            .min(cfg.ack_timeout / 4)
            .max(std::time::Duration::from_millis(100));
        let mut housekeeping = tokio::time::interval(period);
        housekeeping.reset();
        let mut last_ping = Instant::now();
        loop {
            tokio::select! {
                _ = &mut kicked => return End::Replaced,
                _ = &mut stopping => return End::Shutdown,
                _ = &mut woken => {
                    woken.set(link.wake.notified());
                    if link.flush() == Flushed::Broken {
                        return End::SlowWrite;
                    }
                    if link.lock().unacked.len() > cfg.max_unacked {
                        self.spill_oldest().await;
                    }
                }
                r = tokio::time::timeout_at(link.write_deadline(cfg.write_timeout), link.sock.writable()), if link.backlogged() => {
                    match r {
                        // A frame waited past the write timeout: a consumer
                        // too slow to keep.
                        Err(_) => return End::SlowWrite,
                        Ok(Err(_)) => return End::SocketError,
                        Ok(Ok(())) => {
                            if link.flush() == Flushed::Broken {
                                return End::SocketError;
                            }
                        }
                    }
                }
                msg = stream.next() => {
                    self.last_seen = Instant::now();
                    // Every frame already read is handled before the acks
                    // are applied: one inbox write for all of them.
                    let mut acks = Acks::default();
                    let mut next = msg;
                    let mut read = 0;
                    let end = loop {
                        match next {
                            Err(e) => break Some(read_error(e)),
                            Ok(Incoming::Close(code)) => {
                                // The client's close is answered with its own code.
                                let reply = match code {
                                    Some(code) => wire::close(code, ""),
                                    None => wire::frame(wire::OP_CLOSE, &[]),
                                };
                                link.send(&self.edge.metrics, vec![reply]);
                                let _ = tokio::time::timeout(cfg.write_timeout, self.write_out()).await;
                                break Some(End::ClientClosed);
                            }
                            Ok(Incoming::Ping(_) | Incoming::Pong)
                                if !self.control.take(cfg.max_control_per_s) =>
                            {
                                break Some(End::ControlFlood);
                            }
                            Ok(Incoming::Ping(p)) => {
                                link.send(&self.edge.metrics, vec![wire::frame(wire::OP_PONG, &p)]);
                            }
                            Ok(Incoming::Data { binary, payload }) => self.on_frame(&payload, binary, &mut acks),
                            Ok(Incoming::Pong) => {}
                        }
                        read += 1;
                        if read == READ_BATCH {
                            break None;
                        }
                        match stream.next().now_or_never() {
                            Some(m) => next = m,
                            None => break None,
                        }
                    };
                    self.apply_acks(acks);
                    if let Some(e) = end {
                        return e;
                    }
                }
                _ = &mut poked => {
                    poked.set(poke.notified());
                    match self.resync().await {
                        Err(e) => return e,
                        Ok(true) => {}
                        Ok(false) if unsynced => {}
                        Ok(false) => {
                            unsynced = true;
                            sync_backoff.reset();
                            sync_retry.as_mut().reset(tokio::time::Instant::now() + sync_backoff.next_wait());
                        }
                    }
                }
                _ = &mut sync_retry, if unsynced => {
                    match self.resync().await {
                        Err(e) => return e,
                        Ok(true) => unsynced = false,
                        Ok(false) => {
                            sync_retry.as_mut().reset(tokio::time::Instant::now() + sync_backoff.next_wait());
                        }
                    }
                }
                _ = housekeeping.tick() => {
                    if let Err(e) = self.housekeep(&mut last_ping).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Writes out the backlog, waiting for the socket as needed (bounded
    /// by the caller's timeout).
    async fn write_out(&self) {
        loop {
            match self.link.flush() {
                Flushed::Done | Flushed::Broken => return,
                Flushed::Waiting => {
                    if self.link.sock.writable().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends hello (the count waiting) and the first drain. One round trip
    /// gives both; the outboxes of followed celebrities take two more. When
    /// Redis does not answer, hello says 0 and the caller retries the drain
    /// with backoff until it works (no reconnect needed): `Ok(true)` means
    /// that retry is owed. Live pushes that arrive meanwhile wait behind
    /// hello.
    async fn greet(&mut self) -> Result<bool, End> {
        let fmt = self.link.fmt;
        if !self.edge.is_primary(self.user, self.id) {
            // Another connection of this user here drains the inbox; this
            // one gets live pushes (and the drain if it becomes primary).
            let unread = self.feed_unread().await.unwrap_or_default();
            let hello = frames::hello(self.user, 0, 0, unread, fmt);
            self.link.open(&self.edge, hello, Vec::new());
            return Ok(false);
        }
        let waiting = self.read_waiting(true).await;
        let unsynced = waiting.is_none();
        let (snap, pulled) = waiting.unwrap_or_default();
        let total = snap.pending + pulled.len() as u64;
        let hello = frames::hello(self.user, total, snap.dropped, snap.unread, fmt);
        let items = crate::drain::merged(snap.items, pulled);
        let sent = self.link.open(&self.edge, hello, items);
        self.edge.metrics.delivered_inbox.increment(sent);
        Ok(unsynced)
    }

    /// The periodic tick: idle timeout, heartbeat ping, write timeout,
    /// ack-timeout sweep, outbox cursors.
    async fn housekeep(&mut self, last_ping: &mut Instant) -> Result<(), End> {
        let cfg = &self.edge.cfg;
        if self.last_seen.elapsed() > cfg.idle_timeout {
            return Err(End::Idle);
        }
        if self
            .link
            .waiting_for()
            .is_some_and(|w| w > cfg.write_timeout)
        {
            return Err(End::SlowWrite);
        }
        if last_ping.elapsed() >= cfg.heartbeat_interval {
            *last_ping = Instant::now();
            // Frames went out and the client spoke since the last beat:
            // both ends are known alive, a ping would only cost two
            // syscalls a side. Otherwise, ping.
            let frames = self.link.lock().frames;
            let both_ways =
                frames != self.frames_at_beat && self.last_seen.elapsed() < cfg.heartbeat_interval;
            if !both_ways {
                self.link
                    .send(&self.edge.metrics, vec![wire::frame(wire::OP_PING, &[])]);
            }
            // The ping itself counts from the next beat on.
            self.frames_at_beat = self.link.lock().frames;
        }
        self.sweep().await;
        if self.cursors_at.elapsed() >= self.edge.cfg.cursor_flush {
            self.flush_cursors().await;
        }
        Ok(())
    }
}
