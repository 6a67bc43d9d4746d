//! Client frames off the socket (RFC 6455 §5): Herald's own reader, as
//! `wire.rs` is its own writer. A message is read straight from the
//! socket's read half into one buffer, unmasked in place and handed out
//! as a slice; no per-read zeroing, no waker plumbing between two streams.
//!
//! Checked as the RFC asks of a server: every client frame masked, no
//! reserved bits (no extension is negotiated), known opcodes only,
//! control frames whole and at most 125 bytes, continuations only inside
//! a fragmented message, text valid UTF-8 once whole, close codes that may
//! be sent. A message over `max` bytes is refused from its header, before
//! its payload is read.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedReadHalf;

use crate::wire::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole text (valid UTF-8) or binary message.
    Data {
        binary: bool,
        payload: Payload,
    },
    Ping(Payload),
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A message over the size limit (close 1009).
    TooBig,
    /// A text message that is not UTF-8 (close 1007).
    BadUtf8,
    /// A frame that breaks RFC 6455 (close 1002).
    Protocol,
    /// The socket ended without a close frame.
    Eof,
    /// The socket failed.
    Socket,
}

/// Parses client frames out of bytes as they arrive.
#[derive(Default)]
pub(crate) struct Parser {
    /// Bytes read and not yet parsed (allocated only while some wait).
    buf: BytesMut,
    /// A fragmented message so far: (binary, payload).
    partial: Option<(bool, Vec<u8>)>,
    max: usize,
}

impl Parser {
    pub fn new(max: usize, early: &[u8]) -> Parser {
        Parser {
            buf: BytesMut::from(early),
            partial: None,
            max: max.max(125),
        }
    }

    /// The next whole message from the bytes already read, if there is one.
    pub fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(frame) = self.frame()? else {
                return Ok(None);
            };
            if let Some(m) = frame {
                return Ok(Some(m));
            }
        }
    }

    /// One frame from the buffer: `None` when it is not all here yet;
    /// `Some(None)` for a fragment that does not end its message.
    #[allow(clippy::type_complexity)]
    fn frame(&mut self) -> Result<Option<Option<Incoming>>, ReadError> {
        match step(&mut self.buf[..], &mut self.partial, self.max)? {
            Step::More(total) => {
                if total > self.buf.len() {
                    self.buf.reserve(total - self.buf.len());
                }
                Ok(None)
            }
            Step::Frame { used, msg } => {
                self.buf.advance(used);
                if self.buf.is_empty() {
                    // Nothing waits: the connection holds no buffer.
                    self.buf = BytesMut::new();
                }
                Ok(Some(msg))
            }
        }
    }

    /// The first message in `input`, bytes just read while the parser's
    /// own buffer was empty (the usual case: one frame per read), parsed
    /// where they are; whatever follows it is kept for [`Parser::next`].
    pub fn take_from(&mut self, mut input: &mut [u8]) -> Result<Option<Incoming>, ReadError> {
        debug_assert!(self.buf.is_empty());
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match step(input, &mut self.partial, self.max)? {
                Step::More(total) => {
                    self.buf = BytesMut::with_capacity(total.max(input.len()));
                    self.buf.extend_from_slice(input);
                    return Ok(None);
                }
                Step::Frame { used, msg } => {
                    input = &mut input[used..];
                    if let Some(m) = msg {
                        if !input.is_empty() {
                            self.buf.extend_from_slice(input);
                        }
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    /// Room to read into (a read never needs more than a frame's worth
    /// at a time; a bigger frame reserved its own size already).
    fn room(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(2048);
        }
        &mut self.buf
    }
}

/// What one frame at the start of some bytes comes to.
enum Step {
    /// Not all here: this many bytes make the frame (0: header unknown).
    More(usize),
    /// A frame of `used` bytes; its message if it ends one.
    Frame { used: usize, msg: Option<Incoming> },
}

/// Parses (and unmasks in place) the frame at the start of `b`.
fn step(
    b: &mut [u8],
    partial: &mut Option<(bool, Vec<u8>)>,
    max: usize,
) -> Result<Step, ReadError> {
    if b.len() < 2 {
        return Ok(Step::More(0));
    }
    let (fin, rsv, op) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
    let (masked, len7) = (b[1] & 0x80 != 0, u64::from(b[1] & 0x7f));
    if rsv != 0 || !masked {
        return Err(ReadError::Protocol);
    }
    let control = op & 0x8 != 0;
    match op {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(ReadError::Protocol),
    }
    if control && (!fin || len7 > 125) {
        return Err(ReadError::Protocol);
    }
    let (len, at) = match len7 {
        126 if b.len() < 4 => return Ok(Step::More(0)),
        126 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() < 10 => return Ok(Step::More(0)),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            let n = u64::from_be_bytes(n);
            if n >> 63 != 0 {
                return Err(ReadError::Protocol);
            }
            (n, 10)
        }
        n => (n, 2),
    };
    // Refused from the header: a large message is never buffered.
    let before = partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
    if before.saturating_add(len) > max as u64 {
        return Err(ReadError::TooBig);
    }
    let len = len as usize;
    let total = at + 4 + len;
    if b.len() < total {
        return Ok(Step::More(total));
    }
    let mut key = [0u8; 4];
    key.copy_from_slice(&b[at..at + 4]);
    let payload = &mut b[at + 4..total];
    unmask(payload, key);
    let msg = match op {
        OP_PING => Some(Incoming::Ping(Payload::from(&payload[..]))),
        OP_PONG => Some(Incoming::Pong),
        OP_CLOSE => Some(Incoming::Close(close_code(payload)?)),
        OP_CONTINUATION => {
            let Some((binary, mut so_far)) = partial.take() else {
                return Err(ReadError::Protocol);
            };
            so_far.extend_from_slice(payload);
            if fin {
                Some(data(binary, Payload::Heap(so_far))?)
            } else {
                *partial = Some((binary, so_far));
                None
            }
        }
        _ => {
            if partial.is_some() {
                return Err(ReadError::Protocol);
            }
            let binary = op == OP_BINARY;
            if fin {
                Some(data(binary, Payload::from(&payload[..]))?)
            } else {
                *partial = Some((binary, payload.to_vec()));
                None
            }
        }
    };
    Ok(Step::Frame { used: total, msg })
}

/// A message's payload: inline when small (an ack), else on the heap.
pub(crate) enum Payload {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Vec<u8>),
}

/// Payload bytes kept inline (an ack of one or two ids fits).
const INLINE: usize = 126;

impl From<&[u8]> for Payload {
    fn from(p: &[u8]) -> Payload {
        if p.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..p.len()].copy_from_slice(p);
            Payload::Inline {
                len: p.len() as u8,
                buf,
            }
        } else {
            Payload::Heap(p.to_vec())
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline { len, buf } => &buf[..*len as usize],
            Payload::Heap(v) => v,
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

fn data(binary: bool, payload: Payload) -> Result<Incoming, ReadError> {
    if !binary && std::str::from_utf8(&payload).is_err() {
        return Err(ReadError::BadUtf8);
    }
    Ok(Incoming::Data { binary, payload })
}

/// A close frame's code: none, or one a peer may send (RFC 6455 §7.4),
/// with a UTF-8 reason.
fn close_code(p: &[u8]) -> Result<Option<u16>, ReadError> {
    match p.len() {
        0 => return Ok(None),
        1 => return Err(ReadError::Protocol),
        _ => {}
    }
    let code = u16::from_be_bytes([p[0], p[1]]);
    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !allowed || std::str::from_utf8(&p[2..]).is_err() {
        return Err(ReadError::Protocol);
    }
    Ok(Some(code))
}

fn unmask(p: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key);
    let mut chunks = p.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ k;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// The connection's reader: its socket's read half and a parser.
pub(crate) struct Reader {
    sock: OwnedReadHalf,
    parser: Parser,
}

impl Reader {
    pub fn new(sock: OwnedReadHalf, early: &[u8], max: usize) -> Reader {
        Reader {
            sock,
            parser: Parser::new(max, early),
        }
    }

    /// The next message. Cancel-safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(m) = self.parser.next()? {
                return Ok(m);
            }
            if self.parser.buf.is_empty() {
                let (sock, parser) = (&mut self.sock, &mut self.parser);
                if let Some(m) = std::future::poll_fn(|cx| read_direct(sock, parser, cx)).await? {
                    return Ok(m);
                }
                continue;
            }
            match self.sock.read_buf(self.parser.room()).await {
                Ok(0) => return Err(ReadError::Eof),
                Err(_) => return Err(ReadError::Socket),
                Ok(_) => {}
            }
        }
    }
}

/// Bytes read at once into a scratch buffer (`scratch.rs`: one per
/// thread in use, so a read costs the connection no allocation and an idle
/// one no memory). A read that returns fewer
/// has drained the socket (the runtime then waits for readiness without
/// another `recvfrom`).
const SCRATCH_LEN: usize = 4096;

/// One read into a scratch buffer of this thread's, parsed there within the
/// same poll (nothing is held across a wait).
fn read_direct(
    sock: &mut OwnedReadHalf,
    parser: &mut Parser,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<Option<Incoming>, ReadError>> {
    use std::task::Poll;
    crate::scratch::with(|s| {
        // Read into the spare capacity: nothing to zero first, whatever
        // the buffer last held.
        s.clear();
        s.reserve(SCRATCH_LEN);
        let mut rb = tokio::io::ReadBuf::uninit(&mut s.spare_capacity_mut()[..SCRATCH_LEN]);
        match std::pin::Pin::new(sock).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(ReadError::Socket)),
            Poll::Ready(Ok(())) => {
                if rb.filled().is_empty() {
                    return Poll::Ready(Err(ReadError::Eof));
                }
                Poll::Ready(parser.take_from(rb.filled_mut()))
            }
        }
    })
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
