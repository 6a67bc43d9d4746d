//! Frames between the edge and its clients, other than notifications.

use std::borrow::Cow;

use bytes::Bytes;
use herald_types::{Notification, UserId, WireFormat};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::wire;

/// Most ids in one ack frame.
pub const MAX_ACK_IDS: usize = 4096;
/// Longest id accepted in an ack.
pub const MAX_ID_LEN: usize = 256;

#[derive(Serialize)]
struct Hello {
    #[serde(rename = "type")]
    ty: &'static str,
    user: UserId,
    pending: u64,
    /// Entries the inbox cap dropped since the last connection (absent
    /// when none).
    #[serde(skip_serializing_if = "is_zero")]
    dropped: u64,
    /// Unread entries of the user's feed.
    unread: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    code: &'a str,
    message: &'a str,
}

/// `{"type": "pong"}`, the answer to a client's ping frame.
pub fn pong(fmt: WireFormat) -> Bytes {
    #[derive(Serialize)]
    struct Pong {
        #[serde(rename = "type")]
        ty: &'static str,
    }
    encode(&Pong { ty: "pong" }, fmt)
}

/// A notification frame of the connection's format.
pub fn notification(n: &Notification, fmt: WireFormat) -> Bytes {
    let mut f = wire::FrameBuf::new(256);
    // Writing into memory fails only if memory does.
    let _ = n.write_to(fmt, &mut f.payload());
    f.seal(opcode(fmt))
}

/// `n`'s frame built in this thread's scratch buffer (a live push: written
/// at once, so no allocation of its own).
pub(crate) fn notification_scratch(n: &Notification, fmt: WireFormat) -> wire::Scratch {
    let mut f = wire::Scratch::take();
    // Writing into memory fails only if memory does.
    let _ = n.write_to(fmt, f.payload());
    f.seal(opcode(fmt));
    f
}

/// Appends `n`'s frame to `out`, its payload built in `scratch` (reused
/// across a page: no allocation per notification).
pub fn append_notification(
    out: &mut bytes::BytesMut,
    scratch: &mut Vec<u8>,
    n: &Notification,
    fmt: WireFormat,
) {
    scratch.clear();
    let _ = n.write_to(fmt, scratch);
    wire::put_frame(out, opcode(fmt), scratch);
}

fn opcode(fmt: WireFormat) -> u8 {
    match fmt {
        WireFormat::Json => wire::OP_TEXT,
        WireFormat::MsgPack => wire::OP_BINARY,
    }
}

fn encode<T: Serialize>(v: &T, fmt: WireFormat) -> Bytes {
    match fmt {
        WireFormat::Json => wire::frame(wire::OP_TEXT, &serde_json::to_vec(v).unwrap_or_default()),
        WireFormat::MsgPack => wire::frame(
            wire::OP_BINARY,
            &rmp_serde::to_vec_named(v).unwrap_or_default(),
        ),
    }
}

pub fn hello(user: UserId, pending: u64, dropped: u64, unread: u64, fmt: WireFormat) -> Bytes {
    encode(
        &Hello {
            ty: "hello",
            user,
            pending,
            dropped,
            unread,
        },
        fmt,
    )
}

pub fn error(code: &str, message: &str, fmt: WireFormat) -> Bytes {
    encode(
        &ErrorFrame {
            ty: "error",
            code,
            message,
        },
        fmt,
    )
}

/// A client frame as sent; strings are borrowed from the frame where they
/// can be (no allocation per acked id).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    ids: Vec<Cow<'a, str>>,
}

/// The ids of an ack: one or two kept inline (the usual ack).
pub type AckIds<'a> = SmallVec<[Cow<'a, str>; 2]>;

/// A client frame the edge understands.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    Ack(AckIds<'a>),
    /// `{"type": "ping"}`: answered `{"type": "pong"}` (browsers cannot
    /// see WebSocket pings, so a client finds a half-dead socket this way).
    Ping,
}

/// Parses a client frame (JSON text or MessagePack binary, whatever the
/// connection's own format).
pub fn parse(data: &[u8], binary: bool) -> Result<ClientFrame<'_>, String> {
    let fast = if binary { None } else { fast_ack(data) };
    let ids = match fast {
        Some(ids) => ids,
        None => {
            let f: Incoming = if binary {
                rmp_serde::from_slice(data).map_err(|e| format!("not a MessagePack frame: {e}"))?
            } else {
                serde_json::from_slice(data).map_err(|e| format!("not a JSON frame: {e}"))?
            };
            if f.ty == "ping" && f.ids.is_empty() {
                return Ok(ClientFrame::Ping);
            }
            if f.ty != "ack" {
                return Err(format!("unknown frame type {:?}", f.ty));
            }
            SmallVec::from_vec(f.ids)
        }
    };
    if ids.len() > MAX_ACK_IDS {
        return Err(format!("at most {MAX_ACK_IDS} ids per ack"));
    }
    if ids.iter().any(|i| i.is_empty() || i.len() > MAX_ID_LEN) {
        return Err(format!("ids must be 1 to {MAX_ID_LEN} bytes"));
    }
    Ok(ClientFrame::Ack(ids))
}

/// The usual JSON ack, exactly `{"type":"ack","ids":["...",...]}` with no
/// spaces and no escapes in the ids, read without the JSON parser. Anything
/// else (`None`) goes to it; where this gives ids, the parser gives the
/// same (a property test checks).
fn fast_ack(data: &[u8]) -> Option<AckIds<'_>> {
    let list = data
        .strip_prefix(br#"{"type":"ack","ids":["#)?
        .strip_suffix(b"]}")?;
    let mut ids = AckIds::new();
    if list.is_empty() {
        return Some(ids);
    }
    for part in list.split(|&b| b == b',') {
        let id = part.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if ids.len() >= MAX_ACK_IDS || id.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        ids.push(Cow::Borrowed(std::str::from_utf8(id).ok()?));
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a client sends, as text or binary: a frame or a clean
        /// error, never a panic.
        #[test]
        fn any_client_bytes_are_a_frame_or_a_clean_error(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b, false);
            let _ = parse(&b, true);
        }

        /// Near-valid frames: the right keys with arbitrary values.
        #[test]
        fn near_valid_frames_never_panic(ty in "[a-z]{0,6}", ids in proptest::collection::vec(".{0,40}", 0..50), n in any::<i64>()) {
            let v = serde_json::json!({"type": ty, "ids": ids, "n": n});
            let _ = parse(v.to_string().as_bytes(), false);
            let _ = parse(&rmp_serde::to_vec_named(&v).unwrap_or_default(), true);
        }
    }

    use super::*;

    /// The JSON parser's reading of a text frame, for comparison.
    fn by_parser(data: &[u8]) -> Option<Vec<String>> {
        let f: Incoming = serde_json::from_slice(data).ok()?;
        (f.ty == "ack").then(|| f.ids.iter().map(|i| i.to_string()).collect())
    }

    proptest! {
        /// Where the fast path reads an ack, the JSON parser reads the same
        /// ids; ids with commas, quotes, escapes or controls in them, and
        /// spaced frames, are left to the parser.
        #[test]
        fn the_fast_ack_reads_what_the_parser_reads(
            ids in proptest::collection::vec("[a-z0-9,\\\\\"\u{1}é -]{0,12}", 0..5),
            spaced in any::<bool>(),
        ) {
            // As a client writes it: "type" first.
            let list = serde_json::to_string(&ids).unwrap();
            let mut text = format!(r#"{{"type":"ack","ids":{list}}}"#);
            if spaced {
                text = text.replace(':', ": ");
            }
            if let Some(fast) = fast_ack(text.as_bytes()) {
                let fast: Vec<String> = fast.iter().map(|i| i.to_string()).collect();
                prop_assert_eq!(Some(fast), by_parser(text.as_bytes()));
            }
            let plain = ids.iter().all(|i| !i.contains([',', '"', '\\', '\u{1}']));
            prop_assert_eq!(fast_ack(text.as_bytes()).is_some(), plain && !spaced);
        }
    }

    #[test]
    fn parses_acks_and_pings_and_refuses_junk() {
        assert_eq!(parse(br#"{"type":"ping"}"#, false), Ok(ClientFrame::Ping));
        assert!(parse(br#"{"type":"ping","ids":["x"]}"#, false).is_err());
        assert_eq!(
            parse(br#"{"type":"ack","ids":["n-1"]}"#, false),
            Ok(ClientFrame::Ack(smallvec::smallvec![Cow::Borrowed("n-1")]))
        );
        assert_eq!(
            parse(br#"{"type":"ack","ids":["n-1","n-2","n-3"]}"#, false),
            Ok(ClientFrame::Ack(smallvec::smallvec![
                Cow::Borrowed("n-1"),
                Cow::Borrowed("n-2"),
                Cow::Borrowed("n-3")
            ]))
        );
        assert!(parse(br#"{"type":"ack","ids":["n-1",""]}"#, false).is_err());
        assert!(parse(br#"{"type":"ack","ids":["n-1"]} "#, false).is_ok());
        assert!(parse(br#"{"type":"ack","ids":["n-1"],"x":1}"#, false).is_err());
        assert!(parse(b"{", false).is_err());
        assert!(parse(br#"{"type":"nope"}"#, false).is_err());
        assert!(parse(br#"{"type":"ack","ids":[""]}"#, false).is_err());
        assert!(parse(b"\xff\x00", true).is_err());
    }
}
