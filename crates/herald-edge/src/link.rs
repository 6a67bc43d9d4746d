//! A connection's write side, shared by everyone who writes to it.
//!
//! Fan-out's push, a celebrity broadcast and the connection's own task
//! (hello, drained pages, pings, errors, close) all write through the
//! [`Link`]: under its lock, a frame is recorded as pending (when it needs
//! an ack) and written with one non-blocking `write`, or, when the socket
//! cannot take it now (or frames are already waiting, which keeps them in
//! order), appended to the backlog, which the connection's task writes out
//! as the socket becomes writable, several frames per vectored write. No
//! task is woken and nothing is copied per frame on the common path. The
//! lock is never held across an await.

use herald_types::sync::Locked;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use herald_types::{EdgeAnswer, Notification, Refusal, WireFormat};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::pending::{Kind, Pending, PendingMap};
use crate::{frames, Direct, Edge, EdgeMetrics};

/// Most frames given to one vectored write.
const GATHER: usize = 64;

pub(crate) struct Link {
    /// The socket's write half (dropped last, it ends the stream with FIN).
    pub sock: OwnedWriteHalf,
    pub fmt: WireFormat,
    out: Mutex<Out>,
    /// Frames wait in the backlog (read without the lock).
    backlogged: AtomicBool,
    /// Wakes the connection's task: a backlog to write, unacked past the
    /// cap, or a failed write.
    pub wake: Notify,
}

/// What the lock guards.
pub(crate) struct Out {
    /// Sent (or queued) and not acked, by notification id.
    pub unacked: PendingMap,
    /// Frames not yet written, oldest first, with the acceptance time (µs)
    /// of a live notification for the latency histogram (0 for others).
    backlog: VecDeque<(Bytes, u64)>,
    backlog_bytes: usize,
    /// When the backlog last started to fill (for the write timeout).
    since: Option<Instant>,
    /// Before `hello`: frames wait in the backlog, nothing is written.
    held: bool,
    /// The connection is ending: pushes are refused (fan-out stores them).
    closed: bool,
    /// A write failed, or the backlog passed its byte limit.
    broken: bool,
    /// The backlog's first frame is partly written: whatever is written
    /// next must be its rest.
    front_partial: bool,
    /// Frames given to this link so far (the heartbeat skips its ping when
    /// frames went out and the client spoke since the last one).
    pub frames: u64,
}

/// Where a connection's writes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything is written.
    Done,
    /// Frames wait for the socket to become writable.
    Waiting,
    /// A write failed (or the backlog overflowed): the connection ends.
    Broken,
}

impl Link {
    pub fn new(sock: OwnedWriteHalf, fmt: WireFormat) -> Link {
        Link {
            sock,
            fmt,
            out: Mutex::new(Out {
                unacked: PendingMap::default(),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                since: None,
                held: true,
                closed: false,
                broken: false,
                front_partial: false,
                frames: 0,
            }),
            backlogged: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.locked()
    }

    /// Frames wait for the socket (checked without the lock).
    pub fn backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Acquire)
    }

    /// A live notification from fan-out: pending until acked, written now
    /// if the socket takes it. Handed back when the connection is closing
    /// or its backlog is full (fan-out then stores it).
    pub fn push_live(&self, edge: &Edge, d: Box<Direct>) -> Result<(), (Box<Direct>, Refusal)> {
        // Encoded before the lock, in this thread's scratch buffer.
        let scratch = frames::notification_scratch(&d.n, self.fmt);
        let (replaced, wake) = {
            let mut o = self.lock();
            if o.closed {
                return Err((d, Refusal::Offline));
            }
            if o.backlog.len() >= edge.cfg.queue_capacity {
                return Err((d, Refusal::Full));
            }
            let accepted = d.n.order;
            let id = d.n.id.clone();
            let pending = Pending {
                kind: Kind::Live(d),
                sent: Instant::now(),
            };
            // A re-push of something already pending replaces it (same
            // id: a growing aggregate names every record the older one
            // did, so the older one is released).
            let replaced = match o.unacked.insert(id, pending) {
                Some(Pending {
                    kind: Kind::Live(old),
                    ..
                }) => old.settle.acked(),
                _ => None,
            };
            let frame = Frame::Scratch(scratch.frame());
            self.put(&mut o, &edge.metrics, frame, accepted);
            let wake = self.after(&mut o) || o.unacked.len() > edge.cfg.max_unacked;
            (replaced, wake)
        };
        edge.metrics.delivered_live.increment(1);
        if let Some(s) = replaced {
            edge.answers.answer(EdgeAnswer::Settled(s));
        }
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A celebrity's post (one frame shared by every follower). False
    /// when the connection is closing.
    pub fn push_shared(&self, edge: &Edge, f: &crate::celebrity::SharedFrame) -> bool {
        let wake = {
            let mut o = self.lock();
            if o.closed {
                return false;
            }
            if o.unacked.contains_key(&f.id) {
                return true;
            }
            let kind = Kind::Outbox {
                outbox: f.outbox,
                order: f.order,
            };
            o.unacked.insert(
                f.id.clone(),
                Pending {
                    kind,
                    sent: Instant::now(),
                },
            );
            self.put(
                &mut o,
                &edge.metrics,
                Frame::Shared(f.frame(self.fmt)),
                f.order,
            );
            self.after(&mut o)
        };
        edge.metrics.delivered_live.increment(1);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Stored notifications (the inbox, outboxes pulled), oldest first:
    /// those not already pending are recorded and written together.
    /// Returns how many went out.
    pub fn send_stored(
        &self,
        edge: &Edge,
        items: Vec<(Option<herald_types::Outbox>, Notification)>,
    ) -> u64 {
        let (sent, wake) = {
            let mut o = self.lock();
            let sent = self.stage_stored(&mut o, edge, items);
            self.write_out(&mut o);
            (sent, self.after(&mut o))
        };
        if wake {
            self.wake.notify_one();
        }
        sent
    }

    /// The connection starts: `hello`, then the first drained page, then
    /// whatever fan-out pushed while they were read, in that order; from
    /// now on frames are written as they come. Returns how many stored
    /// notifications went out.
    pub fn open(
        &self,
        edge: &Edge,
        hello: Bytes,
        items: Vec<(Option<herald_types::Outbox>, Notification)>,
    ) -> u64 {
        let (sent, wake) = {
            let mut o = self.lock();
            let live = std::mem::take(&mut o.backlog);
            edge.metrics.frames_sent.increment(1);
            o.backlog_bytes += hello.len();
            o.backlog.push_back((hello, 0));
            let sent = self.stage_stored(&mut o, edge, items);
            o.backlog.extend(live);
            o.held = false;
            self.write_out(&mut o);
            (sent, self.after(&mut o))
        };
        if wake {
            self.wake.notify_one();
        }
        sent
    }

    fn stage_stored(
        &self,
        o: &mut Out,
        edge: &Edge,
        items: Vec<(Option<herald_types::Outbox>, Notification)>,
    ) -> u64 {
        if o.closed {
            return 0;
        }
        let now = Instant::now();
        let mut sent = 0;
        // The page's frames in one buffer: one allocation, one entry.
        let mut page = bytes::BytesMut::with_capacity(256 * items.len());
        let mut scratch = Vec::with_capacity(512);
        for (outbox, n) in items {
            if o.unacked.contains_key(&*n.id) {
                continue;
            }
            frames::append_notification(&mut page, &mut scratch, &n, self.fmt);
            let kind = match outbox {
                Some(outbox) => Kind::Outbox {
                    outbox,
                    order: n.order,
                },
                None => Kind::Stored,
            };
            o.unacked.insert(n.id, Pending { kind, sent: now });
            sent += 1;
        }
        if !page.is_empty() {
            o.backlog_bytes += page.len();
            o.backlog.push_back((page.freeze(), 0));
        }
        edge.metrics.frames_sent.increment(sent);
        o.frames += sent;
        sent
    }

    /// Frames that need no ack (hello, ping, pong, errors, close).
    pub fn send(&self, m: &EdgeMetrics, frames: Vec<Bytes>) {
        let wake = {
            let mut o = self.lock();
            m.frames_sent.increment(frames.len() as u64);
            o.frames += frames.len() as u64;
            for f in frames {
                o.backlog_bytes += f.len();
                o.backlog.push_back((f, 0));
            }
            self.write_out(&mut o);
            self.after(&mut o)
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Writes what the backlog holds, as far as the socket takes it.
    pub fn flush(&self) -> Flushed {
        let mut o = self.lock();
        self.write_out(&mut o);
        self.after(&mut o);
        if o.broken {
            Flushed::Broken
        } else if o.backlog.is_empty() {
            Flushed::Done
        } else {
            Flushed::Waiting
        }
    }

    /// When the oldest unwritten frame has waited `timeout` (far away when
    /// nothing waits).
    pub fn write_deadline(&self, timeout: std::time::Duration) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
        if !self.backlogged() {
            return far;
        }
        self.lock()
            .since
            .map_or(far, |t| tokio::time::Instant::from_std(t + timeout))
    }

    /// How long the oldest unwritten frame has waited, if any.
    pub fn waiting_for(&self) -> Option<std::time::Duration> {
        self.lock().since.map(|t| t.elapsed())
    }

    /// The connection ends: pushes are refused from now on; what was
    /// pending is handed back. Frames not yet written are dropped (their
    /// notifications are among the pending), except the rest of one
    /// partly written, so that a close frame written after stays a frame.
    pub fn close(&self) -> PendingMap {
        let mut o = self.lock();
        o.closed = true;
        let keep = o.front_partial;
        let front = if keep { o.backlog.pop_front() } else { None };
        o.backlog.clear();
        o.backlog_bytes = 0;
        if let Some(f) = front {
            o.backlog_bytes = f.0.len();
            o.backlog.push_back(f);
        }
        o.held = false;
        self.after(&mut o);
        std::mem::take(&mut o.unacked)
    }

    /// One frame: written now when nothing waits before it. A frame in
    /// scratch memory is copied only for the part that has to wait.
    fn put(&self, o: &mut Out, m: &EdgeMetrics, frame: Frame<'_>, accepted: u64) {
        m.frames_sent.increment(1);
        o.frames += 1;
        let bytes = frame.as_slice();
        if o.held || o.broken || !o.backlog.is_empty() {
            o.backlog_bytes += bytes.len();
            o.backlog.push_back((frame.tail(0), accepted));
            self.check_limit(o);
            return;
        }
        match self.sock.try_write(bytes) {
            Ok(n) if n == bytes.len() => record(m, accepted),
            Ok(n) => {
                o.backlog_bytes += bytes.len() - n;
                o.backlog.push_back((frame.tail(n), accepted));
                o.front_partial = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                o.backlog_bytes += bytes.len();
                o.backlog.push_back((frame.tail(0), accepted));
            }
            Err(_) => o.broken = true,
        }
    }

    /// Writes the backlog (several frames per vectored write) until it is
    /// empty or the socket would block.
    fn write_out(&self, o: &mut Out) {
        if o.held {
            self.check_limit(o);
            return;
        }
        while !o.backlog.is_empty() && !o.broken {
            let written = {
                let mut bufs = [IoSlice::new(&[]); GATHER];
                let mut k = 0;
                for (f, _) in o.backlog.iter().take(GATHER) {
                    bufs[k] = IoSlice::new(f);
                    k += 1;
                }
                self.sock.try_write_vectored(&bufs[..k])
            };
            match written {
                Ok(0) => o.broken = true,
                Ok(mut w) => {
                    o.backlog_bytes -= w;
                    while w > 0 {
                        let Some(front) = o.backlog.front_mut() else {
                            break;
                        };
                        if w >= front.0.len() {
                            w -= front.0.len();
                            let accepted = front.1;
                            o.backlog.pop_front();
                            o.front_partial = false;
                            if accepted > 0 {
                                latency(accepted);
                            }
                        } else {
                            front.0 = front.0.slice(w..);
                            w = 0;
                            o.front_partial = true;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => o.broken = true,
            }
        }
        self.check_limit(o);
    }

    /// A backlog past the connection's write limit is a consumer too slow
    /// to keep: the connection ends (its pending go to the inbox).
    fn check_limit(&self, o: &mut Out) {
        if o.backlog_bytes > MAX_BACKLOG_BYTES {
            o.broken = true;
        }
    }

    /// Keeps the backlog flag and its age current; true when the
    /// connection's task has something to do.
    fn after(&self, o: &mut Out) -> bool {
        let waiting = !o.backlog.is_empty() && !o.held;
        match (waiting, o.since) {
            (true, None) => o.since = Some(Instant::now()),
            (false, Some(_)) => o.since = None,
            _ => {}
        }
        self.backlogged.store(waiting, Ordering::Release);
        waiting || o.broken
    }
}

/// Most bytes of frames waiting for one slow socket.
const MAX_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// A frame handed to [`Link::put`].
enum Frame<'a> {
    /// Already in a `Bytes` (shared by many connections).
    Shared(Bytes),
    /// In scratch memory: copied only if it has to wait.
    Scratch(&'a [u8]),
}

impl Frame<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Frame::Shared(b) => b,
            Frame::Scratch(s) => s,
        }
    }

    /// What is left from `from` on, as a `Bytes` the backlog can keep.
    fn tail(&self, from: usize) -> Bytes {
        match self {
            Frame::Shared(b) => b.slice(from..),
            Frame::Scratch(s) => Bytes::copy_from_slice(&s[from..]),
        }
    }
}

fn record(m: &EdgeMetrics, accepted: u64) {
    if accepted > 0 {
        let us = herald_types::now_us().saturating_sub(accepted);
        m.latency.record(us as f64 / 1e6);
    }
}

/// Acceptance (gateway's clock, µs) to written, for a frame written from
/// the backlog.
fn latency(accepted: u64) {
    let us = herald_types::now_us().saturating_sub(accepted);
    metrics::histogram!("herald_delivery_latency_seconds").record(us as f64 / 1e6);
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
