//! The event as Herald stores it in its log.

use serde::{Deserialize, Serialize};

/// A user id: an unsigned 64-bit integer.
pub type UserId = u64;

/// The kinds of activity a product posts to Herald.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Like,
    Comment,
    Mention,
    Follow,
    Unfollow,
    Post,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Like,
        EventKind::Comment,
        EventKind::Mention,
        EventKind::Follow,
        EventKind::Unfollow,
        EventKind::Post,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Like => "like",
            EventKind::Comment => "comment",
            EventKind::Mention => "mention",
            EventKind::Follow => "follow",
            EventKind::Unfollow => "unfollow",
            EventKind::Post => "post",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    // Every rule of a kind lives here, with exhaustive matches: adding a
    // kind makes the compiler list each place that must decide about it.

    /// Whether this kind needs a `recipient`.
    pub fn needs_recipient(self) -> bool {
        match self {
            EventKind::Like | EventKind::Comment | EventKind::Follow | EventKind::Unfollow => true,
            EventKind::Mention | EventKind::Post => false,
        }
    }

    /// Whether this kind needs a non-empty `mentions`.
    pub fn needs_mentions(self) -> bool {
        match self {
            EventKind::Mention => true,
            EventKind::Like
            | EventKind::Comment
            | EventKind::Follow
            | EventKind::Unfollow
            | EventKind::Post => false,
        }
    }

    /// What the event does to the follow graph: `Some(true)` adds the edge
    /// actor -> recipient, `Some(false)` removes it.
    pub fn graph_change(self) -> Option<bool> {
        match self {
            EventKind::Follow => Some(true),
            EventKind::Unfollow => Some(false),
            EventKind::Like | EventKind::Comment | EventKind::Mention | EventKind::Post => None,
        }
    }

    /// Whether anyone is ever notified of it (an unfollow only changes the
    /// graph).
    pub fn notifies(self) -> bool {
        match self {
            EventKind::Unfollow => false,
            EventKind::Like
            | EventKind::Comment
            | EventKind::Mention
            | EventKind::Follow
            | EventKind::Post => true,
        }
    }

    /// Whether its recipients are the actor's followers (else the event's
    /// direct recipients).
    pub fn to_followers(self) -> bool {
        match self {
            EventKind::Post => true,
            EventKind::Like
            | EventKind::Comment
            | EventKind::Mention
            | EventKind::Follow
            | EventKind::Unfollow => false,
        }
    }

    /// How bursts of it fold into aggregates.
    pub fn folding(self) -> Folding {
        match self {
            EventKind::Like | EventKind::Comment | EventKind::Mention => Folding::PerObject,
            EventKind::Follow => Folding::Always,
            EventKind::Unfollow | EventKind::Post => Folding::Never,
        }
    }
}

/// How notifications of a kind fold ("Ana and 41 others ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folding {
    /// Bursts about the same object fold (an event without an object
    /// does not).
    PerObject,
    /// Bursts to the same recipient fold.
    Always,
    Never,
}

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
    /// The user whose partition this event belongs to: the recipient for
    /// direct events, so one worker sees everything for a recipient; the
    /// actor for posts, so a post and the actor's follows stay in order.
    pub fn partition_key(&self) -> UserId {
        match self.kind {
            EventKind::Post => self.actor,
            EventKind::Mention => self.mentions.first().copied().unwrap_or(self.actor),
            EventKind::Like | EventKind::Comment | EventKind::Follow | EventKind::Unfollow => {
                self.recipient.unwrap_or(self.actor)
            }
        }
    }

    /// Who is told about this event, excluding the actor, without duplicates,
    /// in a stable order. Posts are expanded against the follower store
    /// elsewhere; this returns the direct recipients only.
    pub fn direct_recipients(&self) -> Vec<UserId> {
        let mut out: Vec<UserId> = Vec::new();
        let mut push = |u: UserId| {
            if u != self.actor && !out.contains(&u) {
                out.push(u);
            }
        };
        match self.kind {
            EventKind::Like | EventKind::Follow => {
                if let Some(r) = self.recipient {
                    push(r);
                }
            }
            EventKind::Comment => {
                if let Some(r) = self.recipient {
                    push(r);
                }
                self.mentions.iter().for_each(|&m| push(m));
            }
            EventKind::Mention => self.mentions.iter().for_each(|&m| push(m)),
            EventKind::Unfollow | EventKind::Post => {}
        }
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        // Encoding a plain struct of owned fields into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
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
    fn partitions_spread() {
        let mut counts = [0u32; 8];
        for u in 0..8000 {
            counts[partition_for(u, 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
