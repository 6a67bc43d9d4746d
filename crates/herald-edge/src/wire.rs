//! The WebSocket on the raw TCP socket.
//!
//! Server frames are written by Herald itself (RFC 6455 §5.2: unmasked,
//! one header in front of the payload), so that whoever has a frame (fan-out
//! pushing a notification, a celebrity broadcast, the connection's own
//! task) writes it straight into the socket with one non-blocking `write`,
//! without waking the connection's task or copying it into a per-connection
//! buffer. Client frames are read by `reader.rs`, also Herald's own.

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Longest frame header: 2 bytes and a 64-bit length.
const MAX_HEADER: usize = 10;

/// One final, unmasked server frame around `payload`.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(MAX_HEADER + payload.len());
    put_frame(&mut b, opcode, payload);
    b.freeze()
}

/// Builds one frame in place: the payload is written after room for the
/// longest header, then the header is put right in front of it (no copy).
pub(crate) struct FrameBuf(BytesMut);

impl FrameBuf {
    pub fn new(capacity: usize) -> FrameBuf {
        let mut b = BytesMut::with_capacity(MAX_HEADER + capacity);
        b.put_bytes(0, MAX_HEADER);
        FrameBuf(b)
    }

    /// Where the payload goes.
    pub fn payload(&mut self) -> bytes::buf::Writer<&mut BytesMut> {
        (&mut self.0).writer()
    }

    /// The frame: header and payload, one `Bytes`.
    pub fn seal(self, opcode: u8) -> Bytes {
        let mut b = self.0;
        let len = b.len() - MAX_HEADER;
        let mut h = [0u8; MAX_HEADER];
        let n = header(opcode, len, &mut h);
        let start = MAX_HEADER - n;
        b[start..MAX_HEADER].copy_from_slice(&h[..n]);
        b.freeze().slice(start..)
    }
}

/// A frame built in a reused buffer: the same layout as [`FrameBuf`], for
/// a frame that is usually written at once and never kept (a live push):
/// no allocation per frame; only a frame the socket does not take at once
/// is copied into a `Bytes` of its own.
pub(crate) struct Scratch(Vec<u8>, usize);

impl Scratch {
    /// A spare buffer of this thread's (`scratch.rs`), emptied.
    pub fn take() -> Scratch {
        let mut b = crate::scratch::take();
        b.clear();
        b.resize(MAX_HEADER, 0);
        Scratch(b, 0)
    }

    /// Where the payload goes.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Puts the header in front of the payload.
    pub fn seal(&mut self, opcode: u8) {
        let len = self.0.len() - MAX_HEADER;
        let mut h = [0u8; MAX_HEADER];
        let n = header(opcode, len, &mut h);
        self.1 = MAX_HEADER - n;
        self.0[self.1..MAX_HEADER].copy_from_slice(&h[..n]);
    }

    /// The sealed frame.
    pub fn frame(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        crate::scratch::give(std::mem::take(&mut self.0));
    }
}

/// Appends one frame to `out` (several frames in one buffer).
pub(crate) fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let mut h = [0u8; MAX_HEADER];
    let n = header(opcode, payload.len(), &mut h);
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// A final, unmasked header for `len` bytes of payload; its length.
fn header(opcode: u8, len: usize, h: &mut [u8; MAX_HEADER]) -> usize {
    h[0] = 0x80 | opcode;
    match len {
        n if n < 126 => {
            h[1] = n as u8;
            2
        }
        n if n <= usize::from(u16::MAX) => {
            h[1] = 126;
            h[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    }
}

/// A close frame with `code` and `reason` (reason cut to fit 125 bytes on
/// a character boundary).
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tungstenite::protocol::frame::FrameHeader;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every frame written here is what tungstenite (the reference
        /// reader, used by the tests' clients) reads back: final, unmasked,
        /// the same opcode and payload, the header as long as it says.
        #[test]
        fn frames_parse_back_as_written(len in prop_oneof![0usize..130, 65_530usize..65_545, 70_000usize..70_010], op in prop_oneof![Just(OP_TEXT), Just(OP_BINARY), Just(OP_PING)]) {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let f = frame(op, &payload);
            let mut cur = std::io::Cursor::new(&f[..]);
            let (h, plen) = FrameHeader::parse(&mut cur).expect("parses").expect("complete");
            prop_assert!(h.is_final);
            prop_assert!(h.mask.is_none());
            prop_assert_eq!(u8::from(h.opcode), op);
            prop_assert_eq!(plen as usize, len);
            let at = cur.position() as usize;
            prop_assert_eq!(&f[at..], &payload[..]);
        }
    }

    #[test]
    fn close_frames_carry_the_code_and_fit_125_bytes() {
        let f = close(4000, &"é".repeat(100));
        assert_eq!(f[0], 0x88);
        assert!(f[1] as usize <= 125, "control frame payload too long");
        assert_eq!(&f[2..4], &4000u16.to_be_bytes());
        assert!(
            std::str::from_utf8(&f[4..]).is_ok(),
            "reason cut inside a character"
        );
    }
}
