//! The notification a user receives, and its two wire encodings.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Data, EventKind, UserId};

/// One notification for one recipient. Serialised as the `notification`
/// object of the WebSocket contract (`type` is added by the encoder).
///
/// Its text fields are shared (`Arc`): the recipients of one event share
/// the event's strings, and the copies made on the way (the feed, the
/// connection's unacked map) cost a reference count, not an allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable: the same notification delivered twice carries the same id.
    pub id: Arc<str>,
    /// The event that caused it (for an aggregate, the newest).
    pub event_id: Arc<str>,
    pub kind: EventKind,
    pub actor: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Arc<str>>,
    /// When Herald accepted the event, in milliseconds since the epoch.
    pub ts_ms: u64,
    pub count: u64,
    pub actors: Arc<[UserId]>,
    /// Ordering key inside the recipient's inbox (microseconds of acceptance);
    /// not part of the wire shape.
    #[serde(skip)]
    pub order: u64,
    /// Set for a digest: then the frame is `{"type": "digest", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<DigestBody>>,
    /// The event's `data` (for an aggregate, the newest event's), shared
    /// by every notification of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Arc<Data>>,
    /// The fan-out span that made it, when its event was traced: the
    /// push's span is its child. Not part of the wire shape nor stored.
    #[serde(skip)]
    pub trace: Option<Arc<crate::TraceContext>>,
    /// An aggregate: the ids of the notifications of its window that went
    /// out on their own, whose feed entries it replaces. Not part of the
    /// wire shape nor stored.
    #[serde(skip)]
    pub supersedes: Option<Arc<[Arc<str>]>>,
}

/// The body of a `digest` message: one summary of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestBody {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub items: Vec<DigestItem>,
}

/// One group of a digest: every notification of one kind about one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestItem {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub count: u64,
    pub actors: Vec<UserId>,
    /// The newest event of the group.
    pub event_id: String,
    /// The newest event's `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Arc<Data>>,
}

#[derive(Serialize)]
struct DigestFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: &'a str,
    window_start_ms: u64,
    window_end_ms: u64,
    count: u64,
    items: &'a [DigestItem],
}

#[derive(Serialize)]
struct TaggedCompact<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: &'a str,
    event_id: &'a str,
    kind: EventKind,
    actor: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: &'a Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: &'a Option<Arc<str>>,
    ts_ms: u64,
    count: u64,
    actors: &'a [UserId],
}

/// How a WebSocket client wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// JSON text frames (the default).
    Json,
    /// MessagePack binary frames (subprotocol `herald.msgpack`).
    MsgPack,
}

impl Notification {
    /// The JSON wire frame as a string.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(160);
        // Writing into a Vec fails only on a serializer error, which plain
        // fields do not raise.
        let _ = self.write_to(WireFormat::Json, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn digest_frame(&self) -> Option<DigestFrame<'_>> {
        self.digest.as_ref().map(|d| DigestFrame {
            ty: "digest",
            id: &self.id,
            window_start_ms: d.window_start_ms,
            window_end_ms: d.window_end_ms,
            count: self.count,
            items: &d.items,
        })
    }

    fn tagged(&self) -> TaggedCompact<'_> {
        TaggedCompact {
            ty: "notification",
            id: &self.id,
            event_id: &self.event_id,
            kind: self.kind,
            actor: self.actor,
            object: &self.object,
            text: &self.text,
            ts_ms: self.ts_ms,
            count: self.count,
            actors: &self.actors,
        }
    }

    /// Writes the wire frame's payload into `w` (no intermediate buffer);
    /// an error is only the writer's. A notification's `data` goes last,
    /// spliced in as it is stored (JSON) or as its cached MessagePack.
    pub fn write_to<W: std::io::Write>(
        &self,
        format: WireFormat,
        w: &mut W,
    ) -> std::io::Result<()> {
        match (format, self.digest_frame(), &self.data) {
            (WireFormat::Json, Some(d), _) => {
                serde_json::to_writer(w, &d).map_err(std::io::Error::other)
            }
            (WireFormat::Json, None, None) => {
                serde_json::to_writer(w, &self.tagged()).map_err(std::io::Error::other)
            }
            (WireFormat::Json, None, Some(data)) => {
                let mut held = HoldLast { w, last: None };
                serde_json::to_writer(&mut held, &self.tagged()).map_err(std::io::Error::other)?;
                // The object's closing brace is held back: the data goes
                // in front of it.
                let w = held.w;
                w.write_all(b",\"data\":")?;
                w.write_all(data.json().as_bytes())?;
                w.write_all(b"}")
            }
            (WireFormat::MsgPack, Some(d), _) => {
                rmp_serde::encode::write_named(w, &d).map_err(std::io::Error::other)
            }
            (WireFormat::MsgPack, None, None) => {
                rmp_serde::encode::write_named(w, &self.tagged()).map_err(std::io::Error::other)
            }
            (WireFormat::MsgPack, None, Some(data)) => {
                let mut one_more = OneMoreField { w, first: true };
                rmp_serde::encode::write_named(&mut one_more, &self.tagged())
                    .map_err(std::io::Error::other)?;
                let w = one_more.w;
                w.write_all(&[0xa4, b'd', b'a', b't', b'a'])?;
                w.write_all(data.msgpack())
            }
        }
    }

    /// The wire frame for this notification.
    pub fn encode(&self, format: WireFormat) -> bytes::Bytes {
        match format {
            WireFormat::Json => bytes::Bytes::from(self.to_json()),
            WireFormat::MsgPack => {
                let mut out = Vec::with_capacity(128);
                let _ = self.write_to(WireFormat::MsgPack, &mut out);
                bytes::Bytes::from(out)
            }
        }
    }

    /// Compact storage form (the relay's pushes, older inbox payloads):
    /// MessagePack with field names, plus the ordering key; `data` as its
    /// JSON text (no transcoding either way).
    pub fn to_storage(&self) -> Vec<u8> {
        let mut n = self.clone();
        let data = n.data.take();
        rmp_serde::to_vec_named(&Stored {
            n,
            order: self.order,
            data,
        })
        .unwrap_or_default()
    }

    pub fn from_storage(bytes: &[u8]) -> Result<Notification, rmp_serde::decode::Error> {
        let s: Stored = rmp_serde::from_slice(bytes)?;
        let mut n = s.n;
        n.order = s.order;
        if s.data.is_some() {
            n.data = s.data;
        }
        Ok(n)
    }
}

/// Passes everything on but the last byte written (a JSON object's
/// closing brace), which it drops at the end.
struct HoldLast<'a, W: std::io::Write> {
    w: &'a mut W,
    last: Option<u8>,
}

impl<W: std::io::Write> std::io::Write for HoldLast<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some((&end, rest)) = buf.split_last() else {
            return Ok(0);
        };
        if let Some(b) = self.last.take() {
            self.w.write_all(&[b])?;
        }
        self.w.write_all(rest)?;
        self.last = Some(end);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Passes everything on, counting one more entry in the map header that
/// comes first (a frame of fewer than 15 fields: a fixmap), so one more
/// key and value can follow.
struct OneMoreField<'a, W: std::io::Write> {
    w: &'a mut W,
    first: bool,
}

impl<W: std::io::Write> std::io::Write for OneMoreField<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some((&head, rest)) = buf.split_first() else {
            return Ok(0);
        };
        if !std::mem::take(&mut self.first) {
            self.w.write_all(buf)?;
            return Ok(buf.len());
        }
        if !(0x80..0x8f).contains(&head) {
            return Err(std::io::Error::other("a frame is not a small map"));
        }
        self.w.write_all(&[head + 1])?;
        self.w.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    n: Notification,
    order: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::data::as_text"
    )]
    data: Option<Arc<Data>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Notification {
        Notification {
            id: "n-e-0-1-2".into(),
            event_id: "e-0-1".into(),
            kind: EventKind::Like,
            actor: 42,
            object: Some("post:7".into()),
            text: None,
            ts_ms: 1,
            count: 1,
            actors: Arc::from([42]),
            order: 99,
            digest: None,
            data: None,
            trace: None,
            supersedes: None,
        }
    }

    #[test]
    fn data_goes_into_both_frames_unchanged() {
        let text = r#"{"url":"app://post/7","emoji":"🎉","n":[1,2.5,null]}"#;
        let mut with = n();
        with.data = Some(Arc::new(Data::from_json_text(text.into())));
        let json = with.encode(WireFormat::Json);
        let plain = n().encode(WireFormat::Json);
        assert_eq!(
            json,
            format!(
                "{},\"data\":{text}}}",
                std::str::from_utf8(&plain[..plain.len() - 1]).unwrap()
            )
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["data"]["emoji"], "🎉");
        let mp = with.encode(WireFormat::MsgPack);
        let v: serde_json::Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(
            v["data"],
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        assert!(mp.ends_with(with.data.as_ref().unwrap().msgpack()));
        // The HTTP shape (serde's own) and storage carry it too.
        assert_eq!(
            serde_json::to_value(&with).unwrap()["data"]["url"],
            "app://post/7"
        );
        assert_eq!(
            Notification::from_storage(&with.to_storage()).unwrap(),
            with
        );
    }

    #[test]
    fn json_has_contract_fields() {
        let v: serde_json::Value = serde_json::from_slice(&n().encode(WireFormat::Json)).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["kind"], "like");
        assert_eq!(v["actor"], 42);
        assert_eq!(v["actors"][0], 42);
        assert!(v.get("order").is_none());
    }

    #[test]
    fn storage_round_trips_with_order() {
        let back = Notification::from_storage(&n().to_storage()).unwrap();
        assert_eq!(back, n());
        assert_eq!(back.order, 99);
    }
}
