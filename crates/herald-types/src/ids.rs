//! How Herald names events and notifications.
//!
//! Ids are derived, never random, so that re-processing the same log record
//! after a crash produces the same ids and clients can drop duplicates.

use sha2::{Digest, Sha256};

use crate::UserId;

/// A user id written as text (a path segment, a query parameter, a JSON
/// string): canonical decimal only, the one rule on every input. `"5"`
/// yes; `"+5"`, `"05"`, `" 5"`, `""` and anything past `u64` no.
pub fn parse_user(s: &str) -> Option<UserId> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The id of the event stored at `offset` of `partition`. `scope` is
/// empty on a single node and when partitions are replicated (every
/// replica holds a record at the same offset); in a cluster without
/// replication it is `@<node>`, since every node keeps its own log and
/// offsets (`e-3-17@node-2`).
pub fn event_id(scope: &str, partition: u32, offset: u64) -> String {
    // Sized once and written without the formatting machinery: every
    // accepted event gets one.
    let (mut p, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (p, o) = (p.format(partition), o.format(offset));
    let mut id = String::with_capacity(3 + p.len() + o.len() + scope.len());
    id.push_str("e-");
    id.push_str(p);
    id.push('-');
    id.push_str(o);
    id.push_str(scope);
    id
}

/// Parses an id made by [`event_id`] (the scope is dropped).
pub fn parse_event_id(id: &str) -> Option<(u32, u64)> {
    let rest = id.strip_prefix("e-")?;
    let rest = rest.split_once('@').map_or(rest, |(r, _)| r);
    let (p, o) = rest.split_once('-')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// The producer an event came from, as stored with it: a tag derived from
/// its API key (SHA-256, first 64 bits, hex), so idempotency keys of one
/// producer can never suppress another's. Nothing about the key can be
/// recovered from it.
pub fn producer_scope(api_key: &str) -> String {
    let d = Sha256::new()
        .chain_update(b"herald-producer\0")
        .chain_update(api_key.as_bytes())
        .finalize();
    hex(&d[..8])
}

/// The key that identifies an event for de-duplication: the client's
/// idempotency key when it sent one (hashed to 128 bits with its producer's
/// scope: SHA-256, so neither chance, by the birthday bound at 10 billion
/// events a day, nor a producer choosing keys can make two collide), else
/// the event id.
pub fn dedup_key(scope: Option<&str>, client_id: Option<&str>, event_id: &str) -> String {
    match client_id {
        Some(k) => {
            let d = Sha256::new()
                .chain_update(b"herald-idempotency\0")
                .chain_update(scope.unwrap_or("").as_bytes())
                .chain_update(b"\0")
                .chain_update(k.as_bytes())
                .finalize();
            format!("k{}", hex(&d[..16]))
        }
        None => event_id.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The stable id of the notification `recipient` gets for an event: the same
/// event (or a retry carrying the same client key) always yields the same id.
pub fn notification_id(dedup_key: &str, recipient: UserId) -> String {
    // Built once per recipient: one allocation of the exact size.
    let mut digits = itoa::Buffer::new();
    let r = digits.format(recipient);
    let mut id = String::with_capacity(3 + dedup_key.len() + r.len());
    id.push_str("n-");
    id.push_str(dedup_key);
    id.push('-');
    id.push_str(r);
    id
}

/// The id of a celebrity post's notification: the same for every
/// follower (it is encoded once and pushed to all), stable across
/// redeliveries.
pub fn broadcast_id(dedup_key: &str) -> String {
    format!("n-{dedup_key}-all")
}

/// 64-bit FNV-1a: stable across builds and platforms (unlike
/// `DefaultHasher`), fed piece by piece without building a buffer. The one
/// non-cryptographic hash of the code base (window keys, aggregate ids).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn bytes(mut self, bytes: &[u8]) -> Fnv64 {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv64::default().bytes(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_canonical_decimal() {
        assert_eq!(parse_user("5"), Some(5));
        assert_eq!(parse_user("0"), Some(0));
        assert_eq!(parse_user("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+5",
            "-5",
            "05",
            "007",
            " 5",
            "5 ",
            "5a",
            "18446744073709551616",
            "0x5",
        ] {
            assert_eq!(parse_user(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id(&event_id("", 3, 77)), Some((3, 77)));
        assert_eq!(event_id("", 3, 77), "e-3-77");
        assert_eq!(parse_event_id(&event_id("@node-2", 3, 77)), Some((3, 77)));
        assert_eq!(parse_event_id("x-1-2"), None);
    }

    #[test]
    fn client_keys_give_stable_notification_ids() {
        let a = notification_id(&dedup_key(None, Some("abc"), "e-0-1"), 9);
        let b = notification_id(&dedup_key(None, Some("abc"), "e-4-100"), 9);
        assert_eq!(a, b);
        let c = notification_id(&dedup_key(None, None, "e-0-1"), 9);
        assert_eq!(c, "n-e-0-1-9");
    }

    #[test]
    fn idempotency_keys_are_scoped_per_producer_and_128_bit() {
        let (a, b) = (producer_scope("key-a"), producer_scope("key-b"));
        assert_ne!(a, b);
        let ka = dedup_key(Some(&a), Some("order-1"), "e-0-1");
        let kb = dedup_key(Some(&b), Some("order-1"), "e-0-2");
        assert_ne!(ka, kb, "one producer's key must not suppress another's");
        assert_eq!(ka, dedup_key(Some(&a), Some("order-1"), "e-9-9"));
        assert_eq!(ka.len(), 1 + 32);
    }
}
