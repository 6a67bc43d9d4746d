//! The reader against frames encoded by tungstenite as a client would
//! send them, fed whole, byte by byte and in random cuts.
use super::*;
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// A client frame, masked with `key`, as tungstenite writes it.
fn client(op: OpCode, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        opcode: op,
        mask: Some(key),
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    Frame::from_payload(header, payload.to_vec().into())
        .format(&mut out)
        .expect("format");
    out
}

fn text(fin: bool, p: &[u8]) -> Vec<u8> {
    client(OpCode::Data(Data::Text), fin, p, [1, 2, 3, 4])
}

fn binary(fin: bool, p: &[u8]) -> Vec<u8> {
    client(OpCode::Data(Data::Binary), fin, p, [9, 8, 7, 6])
}

fn cont(fin: bool, p: &[u8]) -> Vec<u8> {
    client(OpCode::Data(Data::Continue), fin, p, [0xff, 0, 0x80, 1])
}

fn ping(p: &[u8]) -> Vec<u8> {
    client(OpCode::Control(Control::Ping), true, p, [5, 5, 5, 5])
}

fn close(p: &[u8]) -> Vec<u8> {
    client(OpCode::Control(Control::Close), true, p, [7, 1, 7, 1])
}

/// Everything `bytes` holds, fed in pieces of `cut` bytes the way the
/// reader does: a piece read while nothing is buffered is parsed where it
/// was read (`take_from`), else appended to the buffer. The same bytes fed
/// only through the buffer must give the same answer.
fn parse(bytes: &[u8], cut: usize, max: usize) -> Result<Vec<Incoming>, ReadError> {
    let direct = parse_with(bytes, cut, max, true);
    assert_eq!(
        direct,
        parse_with(bytes, cut, max, false),
        "direct and buffered reads differ"
    );
    direct
}

fn parse_with(
    bytes: &[u8],
    cut: usize,
    max: usize,
    direct: bool,
) -> Result<Vec<Incoming>, ReadError> {
    let mut p = Parser::new(max, &[]);
    let mut out = Vec::new();
    for piece in bytes.chunks(cut.max(1)) {
        if direct && p.buf.is_empty() {
            let mut read = piece.to_vec();
            if let Some(m) = p.take_from(&mut read)? {
                out.push(m);
            }
        } else {
            p.room().extend_from_slice(piece);
        }
        while let Some(m) = p.next()? {
            out.push(m);
        }
    }
    Ok(out)
}

fn data(binary: bool, p: &[u8]) -> Incoming {
    Incoming::Data {
        binary,
        payload: p.into(),
    }
}

#[test]
fn messages_come_out_whole_however_the_bytes_arrive() {
    let long = vec![b'x'; 70_000];
    let mut bytes = text(true, br#"{"type":"ack","ids":["n-1"]}"#);
    bytes.extend(binary(true, &[0, 1, 2, 255]));
    // "é" split across two fragments, a ping between them.
    bytes.extend(text(false, &[b'a', 0xc3]));
    bytes.extend(ping(b"hi"));
    bytes.extend(cont(true, &[0xa9, b'b']));
    bytes.extend(text(true, &long));
    bytes.extend(text(true, b""));
    bytes.extend(close(&[0x03, 0xe8, b'o', b'k']));
    let want = vec![
        data(false, br#"{"type":"ack","ids":["n-1"]}"#),
        data(true, &[0, 1, 2, 255]),
        Incoming::Ping(b"hi"[..].into()),
        data(false, "aéb".as_bytes()),
        data(false, &long),
        data(false, b""),
        Incoming::Close(Some(1000)),
    ];
    for cut in [1, 2, 3, 7, 100, 4096, bytes.len()] {
        assert_eq!(parse(&bytes, cut, 1 << 20).unwrap(), want, "cut {cut}");
    }
}

#[test]
fn frames_that_break_the_rfc_are_refused() {
    let mut unmasked = text(true, b"hi");
    unmasked[1] &= 0x7f;
    unmasked.drain(2..6);
    let mut rsv = text(true, b"hi");
    rsv[0] |= 0x40;
    let mut opcode3 = text(true, b"hi");
    opcode3[0] = 0x83;
    let mut long_ping = client(OpCode::Control(Control::Ping), true, &[0; 126], [1; 4]);
    let fragmented_ping = client(OpCode::Control(Control::Ping), false, b"x", [1; 4]);
    let mut new_text_inside = text(false, b"a");
    new_text_inside.extend(text(true, b"b"));
    let cases: Vec<(&str, Vec<u8>, ReadError)> = vec![
        ("unmasked", unmasked, ReadError::Protocol),
        ("reserved bit", rsv, ReadError::Protocol),
        ("opcode 3", opcode3, ReadError::Protocol),
        (
            "ping of 126 bytes",
            std::mem::take(&mut long_ping),
            ReadError::Protocol,
        ),
        ("fragmented ping", fragmented_ping, ReadError::Protocol),
        ("continuation alone", cont(true, b"x"), ReadError::Protocol),
        (
            "text inside a fragmented message",
            new_text_inside,
            ReadError::Protocol,
        ),
        (
            "text not UTF-8",
            text(true, &[0xc3, 0x28]),
            ReadError::BadUtf8,
        ),
        ("close of 1 byte", close(&[3]), ReadError::Protocol),
        (
            "close 1005 (may not be sent)",
            close(&[0x03, 0xed]),
            ReadError::Protocol,
        ),
        (
            "close reason not UTF-8",
            close(&[0x03, 0xe8, 0xff]),
            ReadError::Protocol,
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(parse(&bytes, bytes.len(), 1 << 20), Err(want), "{what}");
    }
}

#[test]
fn a_message_over_the_limit_is_refused_from_its_header() {
    // Only the header of a 1 MiB frame: refused before any payload.
    let header = &text(true, &vec![0; 1 << 20])[..14];
    assert_eq!(parse(header, 14, 64 * 1024), Err(ReadError::TooBig));
    // The limit counts every fragment of a message.
    let mut two = text(false, &[b'a'; 600]);
    two.extend(cont(true, &[b'b'; 600]));
    assert_eq!(parse(&two, two.len(), 1000), Err(ReadError::TooBig));
    assert!(parse(&two, two.len(), 1200).is_ok());
}

#[test]
fn an_idle_parser_holds_no_buffer() {
    let bytes = text(true, b"{}");
    let mut p = Parser::new(1024, &[]);
    p.room().extend_from_slice(&bytes);
    assert_eq!(p.next().unwrap(), Some(data(false, b"{}")));
    assert_eq!(p.buf.capacity(), 0);
}

#[test]
fn a_read_of_one_frame_is_parsed_where_it_was_read() {
    let mut p = Parser::new(1024, &[]);
    let mut read = text(true, b"{}");
    assert_eq!(p.take_from(&mut read).unwrap(), Some(data(false, b"{}")));
    assert_eq!(p.buf.capacity(), 0);
    // Two frames and a half: the first comes out, the rest waits.
    let mut read = text(true, b"a");
    read.extend(text(true, b"b"));
    let third = text(true, b"c");
    read.extend(&third[..3]);
    assert_eq!(p.take_from(&mut read).unwrap(), Some(data(false, b"a")));
    assert_eq!(p.next().unwrap(), Some(data(false, b"b")));
    assert_eq!(p.next().unwrap(), None);
    p.room().extend_from_slice(&third[3..]);
    assert_eq!(p.next().unwrap(), Some(data(false, b"c")));
    assert_eq!(p.buf.capacity(), 0);
}

proptest! {
    #[test]
    fn any_client_messages_round_trip(
        msgs in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..400), 1usize..4, any::<[u8; 4]>()),
            1..12),
        cut in 1usize..64,
    ) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for (is_binary, payload, parts, key) in msgs {
            // Text must be UTF-8: use a lossy copy.
            let payload = if is_binary {
                payload
            } else {
                String::from_utf8_lossy(&payload).into_owned().into_bytes()
            };
            let op = if is_binary { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Text) };
            // Split on byte boundaries only for binary (text fragments
            // may cut a character; that is fine for the reader too).
            let size = payload.len().div_ceil(parts).max(1);
            let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(size).collect() };
            for (i, c) in chunks.iter().enumerate() {
                let fin = i + 1 == chunks.len();
                let op = if i == 0 { op } else { OpCode::Data(Data::Continue) };
                bytes.extend(client(op, fin, c, key));
            }
            want.push(Incoming::Data { binary: is_binary, payload: payload[..].into() });
        }
        prop_assert_eq!(parse(&bytes, cut, 1 << 20).unwrap(), want);
    }

    #[test]
    fn any_bytes_are_messages_or_a_clean_error(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 1usize..40) {
        let _ = parse(&bytes, cut, 4096);
    }
}
