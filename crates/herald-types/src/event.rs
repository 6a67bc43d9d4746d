//! The event as Herald stores it in its log.

use serde::{Deserialize, Serialize};

/// A user id: an unsigned 64-bit integer.
pub type UserId = u64;

pub use crate::kind::{EventKind, Folding, PartitionBy};

/// A validated event, as written to (and read back from) the log.
///
/// Encoded as MessagePack with field names, so fields can be added later
/// without breaking records already on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// The client's idempotency key, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Which producer sent it ([`crate::ids::producer_scope`] of its API
    /// key; none when the node needs no key): idempotency keys are scoped
    /// to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Set on a dead letter replayed into the log: the id of the event it
    /// first was, so its notifications keep their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    pub kind: EventKind,
    pub actor: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<UserId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The client's own timestamp, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ts_ms: Option<i64>,
    /// The product's own `data`, validated, as JSON text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::data::as_text"
    )]
    pub data: Option<std::sync::Arc<crate::Data>>,
    /// When the gateway accepted the event (microseconds, monotonic per node).
    pub accepted_us: u64,
    /// The span that accepted it, when tracing is on and the request was
    /// traced: fan-out's span for it is that span's child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::TraceContext>,
}

impl LogEvent {
    /// The user whose partition this event belongs to, by its kind's
    /// `partition_by`: the recipient (else the first mention, else the
    /// actor), so one worker sees everything for a recipient; or the actor,
    /// so a post and the actor's follows stay in order.
    pub fn partition_key(&self) -> UserId {
        match self.kind.rules().partition_by {
            PartitionBy::Actor => self.actor,
            PartitionBy::Recipient => self
                .recipient
                .or_else(|| self.mentions.first().copied())
                .unwrap_or(self.actor),
        }
    }

    /// Who is told about this event directly (its kind's `recipient` and
    /// `mentions` rules), excluding the actor, without duplicates, in a
    /// stable order. Followers and subscribers are expanded against their
    /// stores elsewhere.
    pub fn direct_recipients(&self) -> Vec<UserId> {
        let notify = self.kind.rules().notify;
        let mut out: Vec<UserId> = Vec::new();
        let mut push = |u: UserId| {
            if u != self.actor && !out.contains(&u) {
                out.push(u);
            }
        };
        if notify.recipient {
            if let Some(r) = self.recipient {
                push(r);
            }
        }
        if notify.mentions {
            self.mentions.iter().for_each(|&m| push(m));
        }
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Appends what [`LogEvent::encode`] returns to `out` (a batch's
    /// events encoded into one buffer: one allocation, not one per event
    /// and its growth).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // Encoding a plain struct of owned fields into a Vec cannot fail;
        // if it did, nothing of it is left (an empty record, as before).
        if rmp_serde::encode::write_named(out, self).is_err() {
            out.truncate(start);
        }
    }

    /// Every event's record (what [`LogEvent::encode`] returns), all
    /// encoded into one buffer and each a slice of it: one allocation for
    /// a batch instead of several per event.
    pub fn encode_all(events: &[LogEvent]) -> Vec<bytes::Bytes> {
        let mut buf = Vec::with_capacity(events.len() * 256);
        let lens: Vec<usize> = events
            .iter()
            .map(|e| {
                let before = buf.len();
                e.encode_into(&mut buf);
                buf.len() - before
            })
            .collect();
        let mut buf = bytes::Bytes::from(buf);
        lens.into_iter().map(|n| buf.split_to(n)).collect()
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEvent, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// Log partitions when the configuration does not say.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// Maps a user id to one of `partitions` partitions (splitmix64 finaliser,
/// so sequential ids spread evenly).
pub fn partition_for(user: UserId, partitions: u32) -> u32 {
    let mut z = user.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % partitions.max(1) as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> LogEvent {
        LogEvent {
            client_id: None,
            scope: None,
            replay_of: None,
            kind,
            actor: 1,
            recipient: Some(2),
            mentions: vec![3, 1, 2, 3],
            object: None,
            text: None,
            client_ts_ms: None,
            data: Some(std::sync::Arc::new(crate::Data::from_json_text(
                r#"{"z":1,"a":2}"#.into(),
            ))),
            accepted_us: 5,
            trace: None,
        }
    }

    #[test]
    fn recipients_exclude_actor_and_duplicates() {
        assert_eq!(ev(EventKind::Comment).direct_recipients(), vec![2, 3]);
        assert_eq!(ev(EventKind::Mention).direct_recipients(), vec![3, 2]);
        assert_eq!(ev(EventKind::Like).direct_recipients(), vec![2]);
        assert!(ev(EventKind::Unfollow).direct_recipients().is_empty());
        let mut self_like = ev(EventKind::Like);
        self_like.recipient = Some(1);
        assert!(self_like.direct_recipients().is_empty());
    }

    #[test]
    fn encode_round_trips() {
        let e = ev(EventKind::Comment);
        assert_eq!(LogEvent::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn a_batch_encoded_into_one_buffer_gives_each_event_its_own_record() {
        let mut events = vec![
            ev(EventKind::Comment),
            ev(EventKind::Like),
            ev(EventKind::Follow),
        ];
        events[1].text = Some("x".repeat(1000));
        let records = LogEvent::encode_all(&events);
        assert_eq!(records.len(), events.len());
        for (e, r) in events.iter().zip(&records) {
            assert_eq!(&r[..], &e.encode()[..]);
            assert_eq!(&LogEvent::decode(r).unwrap(), e);
        }
        assert!(LogEvent::encode_all(&[]).is_empty());
    }

    #[test]
    fn partitions_spread() {
        let mut counts = [0u32; 8];
        for u in 0..8000 {
            counts[partition_for(u, 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
