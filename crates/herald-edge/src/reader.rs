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
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole text (valid UTF-8) or binary message.
    Data {
        binary: bool,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
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

    /// One frame: `None` when it is not all here yet; `Some(None)` for a
    /// fragment that does not end its message.
    #[allow(clippy::type_complexity)]
    fn frame(&mut self) -> Result<Option<Option<Incoming>>, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
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
            126 if b.len() < 4 => return Ok(None),
            126 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() < 10 => return Ok(None),
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
        let before = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
        if before.saturating_add(len) > self.max as u64 {
            return Err(ReadError::TooBig);
        }
        let len = len as usize;
        let total = at + 4 + len;
        if b.len() < total {
            self.buf.reserve(total - b.len());
            return Ok(None);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&b[at..at + 4]);
        self.buf.advance(at + 4);
        let mut payload = self.buf.split_to(len);
        unmask(&mut payload, key);
        if self.buf.is_empty() {
            // Nothing waits: the next read starts a fresh, small buffer
            // (an idle connection holds none).
            self.buf = BytesMut::new();
        }
        let m = match op {
            OP_PING => Some(Incoming::Ping(payload.to_vec())),
            OP_PONG => Some(Incoming::Pong),
            OP_CLOSE => Some(Incoming::Close(close_code(&payload)?)),
            OP_CONTINUATION => {
                let Some((binary, mut so_far)) = self.partial.take() else {
                    return Err(ReadError::Protocol);
                };
                so_far.extend_from_slice(&payload);
                if fin {
                    Some(data(binary, so_far)?)
                } else {
                    self.partial = Some((binary, so_far));
                    None
                }
            }
            _ => {
                if self.partial.is_some() {
                    return Err(ReadError::Protocol);
                }
                let binary = op == OP_BINARY;
                if fin {
                    Some(data(binary, payload.to_vec())?)
                } else {
                    self.partial = Some((binary, payload.to_vec()));
                    None
                }
            }
        };
        Ok(Some(m))
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

fn data(binary: bool, payload: Vec<u8>) -> Result<Incoming, ReadError> {
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
            match self.sock.read_buf(self.parser.room()).await {
                Ok(0) => return Err(ReadError::Eof),
                Err(_) => return Err(ReadError::Socket),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
