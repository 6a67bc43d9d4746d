//! The notification a user receives, and its two wire encodings.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{EventKind, UserId};

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
    /// The fan-out span that made it, when its event was traced: the
    /// push's span is its child. Not part of the wire shape nor stored.
    #[serde(skip)]
    pub trace: Option<Arc<crate::TraceContext>>,
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
        match self.digest_frame() {
            Some(d) => serde_json::to_string(&d).unwrap_or_default(),
            None => serde_json::to_string(&self.tagged()).unwrap_or_default(),
        }
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
    /// an error is only the writer's.
    pub fn write_to<W: std::io::Write>(
        &self,
        format: WireFormat,
        w: &mut W,
    ) -> std::io::Result<()> {
        match (format, self.digest_frame()) {
            (WireFormat::Json, Some(d)) => {
                serde_json::to_writer(w, &d).map_err(std::io::Error::other)
            }
            (WireFormat::Json, None) => {
                serde_json::to_writer(w, &self.tagged()).map_err(std::io::Error::other)
            }
            (WireFormat::MsgPack, Some(d)) => {
                rmp_serde::encode::write_named(w, &d).map_err(std::io::Error::other)
            }
            (WireFormat::MsgPack, None) => {
                rmp_serde::encode::write_named(w, &self.tagged()).map_err(std::io::Error::other)
            }
        }
    }

    /// The wire frame for this notification.
    pub fn encode(&self, format: WireFormat) -> bytes::Bytes {
        match format {
            WireFormat::Json => bytes::Bytes::from(self.to_json()),
            WireFormat::MsgPack => bytes::Bytes::from(
                match self.digest_frame() {
                    Some(d) => rmp_serde::to_vec_named(&d),
                    None => rmp_serde::to_vec_named(&self.tagged()),
                }
                .unwrap_or_default(),
            ),
        }
    }

    /// Compact storage form (inbox payloads): MessagePack with field names,
    /// plus the ordering key.
    pub fn to_storage(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(&Stored {
            n: self.clone(),
            order: self.order,
        })
        .unwrap_or_default()
    }

    pub fn from_storage(bytes: &[u8]) -> Result<Notification, rmp_serde::decode::Error> {
        let s: Stored = rmp_serde::from_slice(bytes)?;
        let mut n = s.n;
        n.order = s.order;
        Ok(n)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    n: Notification,
    order: u64,
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
            trace: None,
        }
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
