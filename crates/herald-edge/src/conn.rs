//! One WebSocket connection's life.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use herald_types::{EdgeAnswer, Notification, Settle, UserId, WireFormat};
use tokio::sync::{mpsc, Notify};

use crate::frames::{self, ClientFrame};
use crate::{ConnHandle, Delivery, Direct, Edge};

/// Most live notifications taken from the queue per socket flush.
const COALESCE: usize = 64;
/// Most client frames handled (already read, without waiting) before
/// their acks are applied together.
const READ_BATCH: usize = 64;

/// Backoff between drain retries while Redis does not answer.
const SYNC_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(250);
const SYNC_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// A timer that is not armed.
const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

/// What a sent, unacked notification is, which says what its ack does.
pub(crate) enum Kind {
    /// Pushed live by fan-out: the ack answers `Settled`. Kept whole so it
    /// can be written to the inbox if the ack never comes.
    Live(Box<Direct>),
    /// From the inbox: the ack removes it there.
    Stored,
    /// A celebrity's post (outbox): the ack advances the read cursor.
    Outbox { celebrity: UserId, order: u64 },
}

/// Acks of the frames read together, applied at once.
#[derive(Default)]
pub(crate) struct Acks {
    /// Live notifications acked: fan-out's records to settle.
    settled: Vec<Settle>,
    /// Inbox entries (or unknown ids) to remove from the inbox.
    remove: Vec<String>,
}

pub(crate) struct Pending {
    pub kind: Kind,
    pub sent: Instant,
}

pub(crate) struct Conn {
    pub edge: Arc<Edge>,
    /// This connection's id on the node.
    id: u64,
    pub user: UserId,
    pub fmt: WireFormat,
    sink: SplitSink<WebSocket, Message>,
    pub unacked: HashMap<String, Pending>,
    last_seen: Instant,
    /// Outbox cursors acked and not yet written to Redis (celebrity, order
    /// of the newest entry acked): written at most once per
    /// `cursor_flush` and on close, never once per ack.
    pub cursors: Vec<(UserId, u64)>,
    cursors_at: Instant,
}

/// Why frames could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailed {
    /// Not written within `write_timeout` (a slow consumer).
    Timeout,
    /// The socket failed.
    Socket,
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
        }
    }
}

pub async fn serve(edge: Arc<Edge>, socket: WebSocket, user: UserId, fmt: WireFormat) {
    let id = edge.opened();
    let (tx, mut rx) = mpsc::channel::<Delivery>(edge.cfg.queue_capacity);
    let poke = Arc::new(Notify::new());
    let kick = Arc::new(Notify::new());
    let handle = ConnHandle {
        id,
        tx,
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
    if let Err(e) = edge.store.presence_add(user, edge.cfg.incarnation).await {
        tracing::warn!(user, error = %e, "presence not recorded");
    }
    let (sink, mut stream) = socket.split();
    let mut c = Conn {
        edge: edge.clone(),
        id,
        user,
        fmt,
        sink,
        unacked: HashMap::new(),
        last_seen: Instant::now(),
        cursors: Vec::new(),
        cursors_at: Instant::now(),
    };
    let end = c.run(&mut stream, &mut rx, &poke, &kick).await;
    tracing::debug!(user, reason = end.as_str(), "connection ended");
    metrics::counter!("herald_ws_closed_total", "reason" => end.as_str()).increment(1);
    let code = match end {
        End::Replaced => Some((4000, "replaced: the user has too many connections")),
        End::Shutdown => Some((1001, "server shutting down")),
        End::Idle => Some((1001, "idle timeout")),
        End::TooBig => Some((1009, "frame too big")),
        End::BadUtf8 => Some((1007, "invalid UTF-8")),
        _ => None,
    };
    if let Some((code, reason)) = code {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(edge.cfg.write_timeout, c.sink.send(frame)).await;
    }
    let last = edge.unregister(user, id);
    if last {
        edge.unindex(user);
    }
    c.settle_on_close(&mut rx).await;
    if last && !edge.conns.contains_key(&user) {
        if let Err(e) = edge.store.presence_remove(user).await {
            tracing::debug!(user, error = %e, "presence not cleared");
        }
    }
    edge.finished();
}

/// What a failed read means for the connection: a frame the client should
/// be told about (closed with 1009 or 1007), or a socket that is gone.
fn read_error(e: axum::Error) -> End {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => End::TooBig,
        Some(tungstenite::Error::Utf8(_)) => End::BadUtf8,
        _ => End::SocketError,
    }
}

impl Conn {
    async fn run(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        rx: &mut mpsc::Receiver<Delivery>,
        poke: &Notify,
        kick: &Notify,
    ) -> End {
        let mut shutdown = self.edge.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return End::Shutdown;
        }
        let mut unsynced = match self.greet().await {
            Ok(unsynced) => unsynced,
            Err(e) => return e,
        };
        let mut sync_backoff = SYNC_RETRY_MIN;
        let sync_retry = tokio::time::sleep(if unsynced { sync_backoff } else { FAR });
        tokio::pin!(sync_retry);
        let cfg = self.edge.cfg.clone();
        // Long-lived futures are pinned once, not rebuilt on every wake-up:
        // a busy connection goes round this loop once per batch.
        let kicked = kick.notified();
        tokio::pin!(kicked);
        let poked = poke.notified();
        tokio::pin!(poked);
        let stopping = shutdown.changed();
        tokio::pin!(stopping);
        // One timer for heartbeats, idle checks and the ack-timeout sweep.
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
                d = rx.recv() => {
                    // The queue closes when the registry let go of this
                    // connection: shutting down, or replaced (the user's
                    // oldest past the device limit).
                    let Some(first) = d else {
                        return if *self.edge.shutdown.borrow() {
                            End::Shutdown
                        } else {
                            End::Replaced
                        };
                    };
                    let mut batch = vec![first];
                    while batch.len() < COALESCE {
                        match rx.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.push_live(batch).await {
                        return e;
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
                            None => break Some(End::ClientClosed),
                            Some(Err(e)) => break Some(read_error(e)),
                            Some(Ok(Message::Close(_))) => break Some(End::ClientClosed),
                            Some(Ok(Message::Text(t))) => self.on_frame(t.as_bytes(), false, &mut acks).await,
                            Some(Ok(Message::Binary(b))) => self.on_frame(&b, true, &mut acks).await,
                            Some(Ok(_)) => {}
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
                    self.apply_acks(acks).await;
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
                            sync_backoff = SYNC_RETRY_MIN;
                            sync_retry.as_mut().reset(tokio::time::Instant::now() + sync_backoff);
                        }
                    }
                }
                _ = &mut sync_retry, if unsynced => {
                    match self.resync().await {
                        Err(e) => return e,
                        Ok(true) => unsynced = false,
                        Ok(false) => {
                            sync_backoff = (sync_backoff * 2).min(SYNC_RETRY_MAX);
                            sync_retry.as_mut().reset(tokio::time::Instant::now() + sync_backoff);
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

    /// Sends hello (the count waiting) and the first drain. One round trip
    /// gives both; the outboxes of followed celebrities take two more. When
    /// Redis does not answer, hello says 0 and the caller retries the drain
    /// with backoff until it works (no reconnect needed): `Ok(true)` means
    /// that retry is owed.
    async fn greet(&mut self) -> Result<bool, End> {
        if !self.edge.is_primary(self.user, self.id) {
            // Another connection of this user here drains the inbox; this
            // one gets live pushes (and the drain if it becomes primary).
            let unread = self.edge.store.feed_unread(self.user).await;
            let unread = unread.unwrap_or_default();
            let hello = frames::hello(self.user, 0, 0, unread, self.fmt);
            if self.send(vec![hello]).await.is_err() {
                return Err(End::SlowWrite);
            }
            return Ok(false);
        }
        let waiting = self.read_waiting(true).await;
        let unsynced = waiting.is_none();
        let (snap, pulled) = waiting.unwrap_or_default();
        let total = snap.pending + pulled.len() as u64;
        let hello = frames::hello(self.user, total, snap.dropped, snap.unread, self.fmt);
        if self.send(vec![hello]).await.is_err() {
            return Err(End::SlowWrite);
        }
        self.send_merged(snap.items, pulled).await?;
        Ok(unsynced)
    }

    /// The periodic tick: idle timeout, heartbeat ping, ack-timeout sweep.
    async fn housekeep(&mut self, last_ping: &mut Instant) -> Result<(), End> {
        let (idle, heartbeat) = (self.edge.cfg.idle_timeout, self.edge.cfg.heartbeat_interval);
        if self.last_seen.elapsed() > idle {
            return Err(End::Idle);
        }
        if last_ping.elapsed() >= heartbeat {
            *last_ping = Instant::now();
            if self
                .send(vec![Message::Ping(bytes::Bytes::new())])
                .await
                .is_err()
            {
                return Err(End::SlowWrite);
            }
        }
        self.sweep().await;
        if self.cursors_at.elapsed() >= self.edge.cfg.cursor_flush {
            self.flush_cursors().await;
        }
        Ok(())
    }

    /// Feeds frames and flushes once, within the write timeout.
    pub(crate) async fn send(&mut self, msgs: Vec<Message>) -> Result<(), SendFailed> {
        let n = msgs.len() as u64;
        let sink = &mut self.sink;
        let fut = async move {
            for m in msgs {
                sink.feed(m).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(self.edge.cfg.write_timeout, fut).await {
            Ok(Ok(())) => {
                self.edge.metrics.frames_sent.increment(n);
                Ok(())
            }
            Ok(Err(_)) => Err(SendFailed::Socket),
            Err(_) => Err(SendFailed::Timeout),
        }
    }

    async fn push_live(&mut self, batch: Vec<Delivery>) -> Result<(), End> {
        let now = Instant::now();
        let mut msgs = Vec::with_capacity(batch.len());
        // Acceptance times (µs) of what is written, for the latency
        // histogram once the write succeeded.
        let mut accepted: Vec<u64> = Vec::with_capacity(batch.len());
        for d in batch {
            match d {
                Delivery::Direct(d) => {
                    msgs.push(frames::notification(&d.n, self.fmt));
                    accepted.push(d.n.order);
                    let id = d.n.id.clone();
                    let kind = Kind::Live(d);
                    // A re-push of something already pending replaces it
                    // (same id: a growing aggregate names every record the
                    // older one did, so the older one is released).
                    if let Some(old) = self.unacked.insert(id, Pending { kind, sent: now }) {
                        if let Kind::Live(o) = old.kind {
                            if let Some(s) = o.settle.acked() {
                                self.edge.answers.answer(EdgeAnswer::Settled(s));
                            }
                        }
                    }
                }
                Delivery::Shared(f) => {
                    if self.unacked.contains_key(&f.id) {
                        continue;
                    }
                    msgs.push(f.message(self.fmt));
                    accepted.push(f.order);
                    let kind = Kind::Outbox {
                        celebrity: f.celebrity,
                        order: f.order,
                    };
                    self.unacked
                        .insert(f.id.clone(), Pending { kind, sent: now });
                }
            }
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let n = msgs.len() as u64;
        self.send(msgs).await.map_err(|_| End::SlowWrite)?;
        self.edge.metrics.delivered_live.increment(n);
        let now_us = herald_types::now_us();
        for a in accepted {
            // Acceptance time is the gateway's clock; across nodes a skew
            // shows here (never negative).
            let us = now_us.saturating_sub(a);
            self.edge.metrics.latency.record(us as f64 / 1e6);
        }
        if self.unacked.len() > self.edge.cfg.max_unacked {
            self.spill_oldest().await;
        }
        Ok(())
    }

    /// One client frame: an ack's ids are sorted into `acks` (applied by
    /// `apply_acks` once every frame already read was handled).
    async fn on_frame(&mut self, data: &[u8], binary: bool, acks: &mut Acks) {
        match frames::parse(data, binary) {
            Ok(ClientFrame::Ack(ids)) => {
                self.edge.metrics.acks.increment(ids.len() as u64);
                for id in ids {
                    match self.unacked.remove(&id).map(|p| p.kind) {
                        Some(Kind::Live(d)) => acks.settled.extend(d.settle.acked()),
                        Some(Kind::Outbox { celebrity, order }) => {
                            match self.cursors.iter_mut().find(|(c, _)| *c == celebrity) {
                                Some(e) => e.1 = e.1.max(order),
                                None => self.cursors.push((celebrity, order)),
                            }
                        }
                        Some(Kind::Stored) | None => acks.remove.push(id),
                    }
                }
                // A drained page leaves a large, empty map behind.
                if self.unacked.is_empty() && self.unacked.capacity() > 64 {
                    self.unacked.shrink_to(8);
                }
            }
            Err(why) => {
                metrics::counter!("herald_ws_bad_frames_total").increment(1);
                let _ = self
                    .send(vec![frames::error("bad_frame", &why, self.fmt)])
                    .await;
            }
        }
    }

    /// Applies the acks of the frames read together: one answer to
    /// fan-out for the live ones, one inbox write for the stored ones.
    async fn apply_acks(&mut self, acks: Acks) {
        if !acks.settled.is_empty() {
            self.edge.answers.settled(acks.settled);
        }
        if !acks.remove.is_empty() {
            if let Err(e) = self.edge.store.inbox_remove(self.user, &acks.remove).await {
                tracing::warn!(user = self.user, error = %e, "ack not applied to inbox; will redeliver");
            }
        }
    }

    /// Writes the outbox cursors acked since the last write (one pipeline);
    /// kept for the next try when Redis does not answer.
    pub(crate) async fn flush_cursors(&mut self) {
        self.cursors_at = Instant::now();
        if self.cursors.is_empty() {
            return;
        }
        match self.edge.store.outbox_seen(self.user, &self.cursors).await {
            Ok(()) => self.cursors.clear(),
            Err(e) => {
                tracing::warn!(user = self.user, error = %e, "outbox cursors not written; retrying later")
            }
        }
    }

    /// Moves live notifications unacked past the ack timeout to the inbox.
    async fn sweep(&mut self) {
        let timeout = self.edge.cfg.ack_timeout;
        let late: Vec<String> = self
            .unacked
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Live(..)) && p.sent.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        self.move_to_inbox(late).await;
    }

    async fn spill_oldest(&mut self) {
        let mut live: Vec<(&String, Instant)> = self
            .unacked
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Live(..)))
            .map(|(id, p)| (id, p.sent))
            .collect();
        live.sort_by_key(|(_, t)| *t);
        let excess = self.unacked.len().saturating_sub(self.edge.cfg.max_unacked);
        let ids: Vec<String> = live
            .into_iter()
            .take(excess)
            .map(|(id, _)| id.clone())
            .collect();
        self.move_to_inbox(ids).await;
    }

    /// Writes these live notifications to the inbox; they stay pending as
    /// inbox entries, and are answered `Settled` once the write succeeded.
    async fn move_to_inbox(&mut self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        // Copies another device still holds, or acked, are only dropped
        // here; the others are written and then settled.
        let mut write: Vec<(String, Box<Direct>)> = Vec::new();
        for id in &ids {
            if let Some(p) = self.unacked.get_mut(id) {
                if let Kind::Live(_) = p.kind {
                    if let Kind::Live(d) = std::mem::replace(&mut p.kind, Kind::Stored) {
                        write.push((id.clone(), d));
                    }
                }
            }
        }
        let mut owed: Vec<(String, Notification, Settle)> = Vec::new();
        for (id, d) in write {
            let Direct { n, settle } = *d;
            match settle.dropped() {
                Some(s) => owed.push((id, n, s)),
                None => {
                    self.unacked.remove(&id);
                }
            }
        }
        if owed.is_empty() {
            return;
        }
        let items: Vec<(UserId, &Notification)> =
            owed.iter().map(|(_, n, _)| (self.user, n)).collect();
        match self.edge.store.inbox_push(&items).await {
            Ok(_) => {
                metrics::counter!("herald_notifications_total", "route" => "ack_timeout")
                    .increment(owed.len() as u64);
                // The inbox has them now: pending as inbox entries.
                self.edge
                    .answers
                    .settled(owed.into_iter().map(|(_, _, s)| s).collect());
            }
            Err(e) => {
                // Kept as inbox entries to the client; written in the
                // background like a closed connection's leftovers.
                tracing::warn!(user = self.user, error = %e, "moving unacked to inbox failed; retrying in the background");
                self.edge.spill(
                    self.user,
                    owed.into_iter().map(|(_, n, s)| (n, s)).collect(),
                );
            }
        }
    }

    /// The connection is over: everything live that was not acked, and
    /// everything still queued, goes to the inbox.
    async fn settle_on_close(&mut self, rx: &mut mpsc::Receiver<Delivery>) {
        rx.close();
        self.flush_cursors().await;
        let mut left: Vec<(Notification, Settle)> = Vec::new();
        // Copies another device of the user still holds (or acked) are
        // only dropped; the last copy nobody acked is stored.
        while let Ok(d) = rx.try_recv() {
            // Shared (celebrity) frames stay in their outbox: nothing to do.
            if let Delivery::Direct(d) = d {
                let Direct { n, settle } = *d;
                if let Some(s) = settle.dropped() {
                    left.push((n, s));
                }
            }
        }
        for (_, p) in self.unacked.drain() {
            if let Kind::Live(d) = p.kind {
                let Direct { n, settle } = *d;
                if let Some(s) = settle.dropped() {
                    left.push((n, s));
                }
            }
        }
        // Copies another node handed over go back to it: it stores them
        // unless another device of the user acked the same notification.
        let (remote, left): (Vec<_>, Vec<_>) = left
            .into_iter()
            .partition(|(_, s)| matches!(s, Settle::Remote(_)));
        for (n, settle) in remote {
            self.edge.answers.answer(herald_types::EdgeAnswer::Refused {
                user: self.user,
                n,
                settle,
                why: herald_types::Refusal::Offline,
            });
        }
        if left.is_empty() {
            return;
        }
        metrics::counter!("herald_notifications_total", "route" => "queued_on_close")
            .increment(left.len() as u64);
        let items: Vec<(UserId, &Notification)> =
            left.iter().map(|(n, _)| (self.user, n)).collect();
        match self.edge.store.inbox_push(&items).await {
            Ok(_) => {
                drop(items);
                self.edge
                    .answers
                    .settled(left.into_iter().map(|(_, s)| s).collect());
                // A newer connection for this user may have drained already.
                self.edge.poke(self.user);
            }
            Err(e) => {
                // Redis is down: the edge keeps retrying in the background
                // until the inbox has them; their records stay unsettled
                // until then, never pinned for the life of the process.
                tracing::warn!(user = self.user, error = %e, "writing unacked to inbox failed; retrying in the background");
                drop(items);
                self.edge.spill(self.user, left);
            }
        }
    }
}
