//! Per-user key names, built without a heap allocation.
//!
//! Every command of the hot path names a per-user key (`h:{u:ID}:what`,
//! the hash tag keeping one user's keys in one cluster slot). Building them
//! with `format!` cost an allocation and a free per command; a [`Key`]
//! holds the name inline (any `what` too long for the inline buffer falls
//! back to a `String`).

use std::fmt;
use std::ops::Deref;

/// Longest name kept inline: `h:{u:` + 20 digits + `}:` + 29 bytes.
const INLINE: usize = 56;

/// A key name, inline when it fits.
#[derive(Clone)]
pub(crate) enum Key {
    Inline { buf: [u8; INLINE], len: u8 },
    Heap(String),
}

/// `h:{u:<user>}:<what>`.
pub(crate) fn ukey(user: u64, what: &str) -> Key {
    let mut digits = itoa::Buffer::new();
    let id = digits.format(user).as_bytes();
    let parts: [&[u8]; 4] = [b"h:{u:", id, b"}:", what.as_bytes()];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > INLINE {
        return Key::Heap(format!("h:{{u:{user}}}:{what}"));
    }
    let mut buf = [0u8; INLINE];
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Key::Inline {
        buf,
        len: total as u8,
    }
}

impl Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Built only from `&str` parts cut at their ends: valid UTF-8.
            Key::Inline { buf, len } => {
                std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default()
            }
            Key::Heap(s) => s,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl redis::ToRedisArgs for Key {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        out.write_arg(self.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_format() {
        for (u, w) in [
            (0, "fd"),
            (u64::MAX, "ib:dropped"),
            (42, "digest:data"),
            (7, ""),
        ] {
            assert_eq!(&*ukey(u, w), format!("h:{{u:{u}}}:{w}"));
        }
        let long = "x".repeat(40);
        let k = ukey(u64::MAX, &long);
        assert!(matches!(k, Key::Heap(_)));
        assert_eq!(&*k, format!("h:{{u:{}}}:{long}", u64::MAX));
    }
}
