//! The compact form of a notification kept in Redis (inbox and feed
//! entries, shared bodies).
//!
//! Memory in Redis is what Herald costs at scale, so an entry stores only
//! what cannot be derived: the recipient is the key's, the notification id
//! is the hash field (its recipient suffix dropped, numbers and hashes in
//! binary), the event id is derived from the id when they agree, the time
//! from the order key, a single actor's count and actor list from the
//! actor. A typical comment (34-byte text) is about 58 bytes, which keeps a
//! user's hash in Redis' listpack encoding under its default limits.
//!
//! An entry (hash value) is `[flags][order: u64 big-endian][body]`, or, when
//! the body is shared by many recipients, `[flags | SHARED][order][name]`
//! where `name` is the shared body's name. A body is `[flags][kind][actor]
//! [ts delta][object?][text?][count, actors?][event id?][digest?][data?]`, numbers
//! as LEB128 varints and strings length-prefixed; `kind` is a built-in
//! kind's code (0-5), or `0xff` and a declared kind's name, so entries
//! keep their meaning whatever the configuration declares later. The
//! order sits at a fixed place so Lua scripts can sort and trim without
//! decoding the rest. Orders are microseconds (far below 2^56), so the
//! order's top byte is free for the entry's state: [`WAITING`] (not yet
//! delivered: the entry is in the user's inbox as well as their feed).

use std::sync::Arc;

use crate::{Data, DigestBody, EventKind, Notification, UserId};

const OBJECT: u8 = 1;
const TEXT: u8 = 1 << 1;
const COUNTED: u8 = 1 << 2;
const DIGEST: u8 = 1 << 3;
const EVENT_ID: u8 = 1 << 4;
/// Feed entries only: the user has read it.
pub const READ: u8 = 1 << 5;
/// The body lives elsewhere, once for every recipient.
pub const SHARED: u8 = 1 << 6;
/// The body ends with the event's `data` (compact JSON).
const DATA: u8 = 1 << 7;
/// In the order's top byte (an entry's second byte): the entry waits to
/// be delivered (the user's inbox); cleared when it is acked.
pub const WAITING: u8 = 1 << 7;
/// The bits of an order kept in an entry (the top byte is its state).
pub const ORDER_MASK: u64 = (1 << 56) - 1;

/// Why stored bytes could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("entry ends early")]
    Truncated,
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("text is not UTF-8")]
    Utf8,
    #[error("bad digest body: {0}")]
    Digest(String),
    #[error("entry names a shared body that was not given")]
    NoBody,
}

// Field tags: how a notification id is written as a hash field.
const F_RAW: u8 = 0;
const F_EVENT: u8 = 1;
const F_KEY: u8 = 2;
const F_AGG: u8 = 3;
const F_DIGEST: u8 = 4;

/// Whether a field names an aggregate (whose id is sent again as it grows).
pub fn is_aggregate_field(f: &[u8]) -> bool {
    f.first() == Some(&F_AGG)
}

/// The hash field of notification `id` in `recipient`'s inbox or feed.
/// Every id maps to a field and back ([`id_from_field`]); the common shapes
/// take 3 to 17 bytes instead of 12 to 60.
pub fn field(id: &str, recipient: UserId) -> Vec<u8> {
    compact_field(id, recipient).unwrap_or_else(|| {
        let mut f = Vec::with_capacity(id.len() + 1);
        f.push(F_RAW);
        f.extend_from_slice(id.as_bytes());
        f
    })
}

fn compact_field(id: &str, r: UserId) -> Option<Vec<u8>> {
    let mut buf = [0u8; 20];
    let rs = decimal(r, &mut buf);
    let mut f = Vec::with_capacity(18);
    if let Some(rest) = id.strip_prefix("d-") {
        let end = rest.strip_prefix(rs)?.strip_prefix('-')?;
        f.push(F_DIGEST);
        put_var(&mut f, canonical(end)?);
    } else {
        let dedup = id.strip_prefix("n-")?.strip_suffix(rs)?.strip_suffix('-')?;
        if let Some(h) = dedup.strip_prefix("agg-") {
            f.push(F_AGG);
            put_hex(&mut f, h, 8)?;
        } else if let Some(h) = dedup.strip_prefix('k') {
            f.push(F_KEY);
            put_hex(&mut f, h, 16)?;
        } else {
            let rest = dedup.strip_prefix("e-")?;
            let (nums, scope) = match rest.split_once('@') {
                // "e-1-2@" would not come back with its '@'.
                Some((_, "")) => return None,
                Some((n, s)) => (n, s),
                None => (rest, ""),
            };
            let (p, o) = nums.split_once('-')?;
            let p = u32::try_from(canonical(p)?).ok()?;
            f.push(F_EVENT);
            put_var(&mut f, p as u64);
            put_var(&mut f, canonical(o)?);
            f.extend_from_slice(scope.as_bytes());
        }
    }
    // Only ids that come back exactly are compacted (by construction: the
    // numbers are canonical, hex is lower-case; the tests check it).
    debug_assert_eq!(id_from_field(&f, r).as_deref(), Some(id));
    Some(f)
}

/// `v` in decimal, in `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// The notification id a field stands for (None for bytes no field has).
pub fn id_from_field(f: &[u8], r: UserId) -> Option<String> {
    let (&tag, rest) = f.split_first()?;
    let mut c = Cursor(rest);
    Some(match tag {
        F_RAW => String::from_utf8(rest.to_vec()).ok()?,
        F_EVENT => {
            let p = c.var().ok()?;
            let o = c.var().ok()?;
            let scope = std::str::from_utf8(c.0).ok()?;
            let mut s = String::with_capacity(48 + scope.len());
            s.push_str("n-");
            push_event_id(&mut s, p, o, scope);
            s.push('-');
            s.push_str(decimal(r, &mut [0; 20]));
            s
        }
        F_KEY if rest.len() == 16 => format!("n-k{}-{r}", hex(rest)),
        F_AGG if rest.len() == 8 => format!("n-agg-{}-{r}", hex(rest)),
        F_DIGEST => {
            let end = c.var().ok()?;
            c.0.is_empty().then_some(())?;
            format!("d-{r}-{end}")
        }
        _ => return None,
    })
}

/// The event id a field implies (that of `n-e-3-17@a-42` is `e-3-17@a`),
/// when it implies one.
fn implied_event_id(f: &[u8]) -> Option<String> {
    let (&F_EVENT, rest) = f.split_first()? else {
        return None;
    };
    let mut c = Cursor(rest);
    let p = c.var().ok()?;
    let o = c.var().ok()?;
    let scope = std::str::from_utf8(c.0).ok()?;
    let mut s = String::with_capacity(44 + scope.len());
    push_event_id(&mut s, p, o, scope);
    Some(s)
}

/// Whether `event_id` is the one the field implies, compared piece by
/// piece in place (no allocation: this runs for every entry written).
fn implies_event_id(f: &[u8], event_id: &str) -> bool {
    let (&F_EVENT, rest) = f.split_first().unwrap_or((&0, &[])) else {
        return false;
    };
    let mut c = Cursor(rest);
    let (Ok(p), Ok(o)) = (c.var(), c.var()) else {
        return false;
    };
    let Ok(scope) = std::str::from_utf8(c.0) else {
        return false;
    };
    let mut b = [0; 20];
    let Some(rest) = event_id
        .strip_prefix("e-")
        .and_then(|r| r.strip_prefix(decimal(p, &mut b)))
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_prefix(decimal(o, &mut b)))
    else {
        return false;
    };
    match rest.strip_prefix('@') {
        Some(s) => !scope.is_empty() && s == scope,
        None => scope.is_empty() && rest.is_empty(),
    }
}

/// `e-P-O`, or `e-P-O@scope`, appended to `s` (what `format!` would
/// write, without its machinery: a drained page decodes two ids per entry).
fn push_event_id(s: &mut String, p: u64, o: u64, scope: &str) {
    let mut b = [0; 20];
    s.push_str("e-");
    s.push_str(decimal(p, &mut b));
    s.push('-');
    s.push_str(decimal(o, &mut b));
    if !scope.is_empty() {
        s.push('@');
        s.push_str(scope);
    }
}

/// A self-contained entry for `n` in `recipient`'s hash.
pub fn entry(n: &Notification, recipient: UserId) -> Vec<u8> {
    entry_in(n, &field(&n.id, recipient))
}

/// [`entry`] for a field already derived (`f` is `field(&n.id, r)`): one
/// allocation, the entry itself.
pub fn entry_in(n: &Notification, f: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + n.text.as_ref().map_or(0, |t| t.len()));
    v.push(0);
    v.extend_from_slice(&(n.order & ORDER_MASK).to_be_bytes());
    v[0] = put_body(n, f, &mut v);
    v
}

/// An entry whose body is the shared body `name`.
pub fn shared_entry(order: u64, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + name.len());
    v.push(SHARED);
    v.extend_from_slice(&(order & ORDER_MASK).to_be_bytes());
    v.extend_from_slice(name);
    v
}

/// The body of `n` as every recipient whose field derives the same way
/// would store it (`f` is its field in one of them): recipients of one
/// event share it.
pub fn body(n: &Notification, f: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + n.text.as_ref().map_or(0, |t| t.len()));
    b.push(0);
    b[0] = put_body(n, f, &mut b);
    b
}

/// Appends the body after its flags byte (already in `b`); the flags.
fn put_body(n: &Notification, f: &[u8], b: &mut Vec<u8>) -> u8 {
    let mut flags = 0u8;
    match n.kind.code() {
        Some(c) => b.push(c),
        None => {
            b.push(KIND_BY_NAME);
            put_str(b, n.kind.as_str().as_bytes());
        }
    }
    put_var(b, n.actor);
    let ts_delta = (n.ts_ms as i64).wrapping_sub((n.order / 1000) as i64);
    put_var(b, zigzag(ts_delta));
    if let Some(o) = &n.object {
        flags |= OBJECT;
        put_str(b, o.as_bytes());
    }
    if let Some(t) = &n.text {
        flags |= TEXT;
        put_str(b, t.as_bytes());
    }
    if n.count != 1 || n.actors[..] != [n.actor] {
        flags |= COUNTED;
        put_var(b, n.count);
        put_var(b, n.actors.len() as u64);
        for a in n.actors.iter() {
            put_var(b, *a);
        }
    }
    if !implies_event_id(f, &n.event_id) {
        flags |= EVENT_ID;
        put_str(b, n.event_id.as_bytes());
    }
    if let Some(d) = &n.digest {
        flags |= DIGEST;
        put_str(b, &rmp_serde::to_vec(d).unwrap_or_default());
    }
    if let Some(d) = &n.data {
        flags |= DATA;
        put_str(b, d.json().as_bytes());
    }
    flags
}

/// The order key of an entry (its first 9 bytes, without the state).
pub fn order_of(entry: &[u8]) -> Option<u64> {
    let o: [u8; 8] = entry.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(o) & ORDER_MASK)
}

/// Whether an entry waits to be delivered (is in the user's inbox).
pub fn is_waiting(entry: &[u8]) -> bool {
    entry.len() >= 9 && entry[1] & WAITING != 0
}

/// Marks an entry as waiting to be delivered.
pub fn set_waiting(entry: &mut [u8]) {
    if entry.len() >= 9 {
        entry[1] |= WAITING;
    }
}

/// Whether an entry is marked read.
pub fn is_read(entry: &[u8]) -> bool {
    entry.first().is_some_and(|f| f & READ != 0)
}

/// The shared body an entry points at, if it does.
pub fn shared_name(entry: &[u8]) -> Option<&[u8]> {
    (entry.first()? & SHARED != 0).then(|| entry.get(9..))?
}

/// Reads an entry back into the notification `recipient` was sent; `shared`
/// is the body when the entry points at one.
pub fn decode(
    f: &[u8],
    entry: &[u8],
    shared: Option<&[u8]>,
    recipient: UserId,
) -> Result<Notification, CompactError> {
    let order = order_of(entry).ok_or(CompactError::Truncated)?;
    let (flags, rest) = if entry[0] & SHARED != 0 {
        let b = shared.ok_or(CompactError::NoBody)?;
        let (&fl, rest) = b.split_first().ok_or(CompactError::Truncated)?;
        (fl, rest)
    } else {
        (entry[0], &entry[9..])
    };
    let id = id_from_field(f, recipient).ok_or(CompactError::Truncated)?;
    let mut c = Cursor(rest);
    let kind = match c.byte()? {
        KIND_BY_NAME => {
            let name = std::str::from_utf8(c.bytes()?).map_err(|_| CompactError::Utf8)?;
            EventKind::recall(name).ok_or(CompactError::Kind(KIND_BY_NAME))?
        }
        k => EventKind::from_code(k).ok_or(CompactError::Kind(k))?,
    };
    let actor = c.var()?;
    let ts_ms = ((order / 1000) as i64).wrapping_add(unzigzag(c.var()?)) as u64;
    let object = (flags & OBJECT != 0).then(|| c.string()).transpose()?;
    let text = (flags & TEXT != 0).then(|| c.string()).transpose()?;
    let (count, actors) = if flags & COUNTED != 0 {
        let count = c.var()?;
        let n = c.var()? as usize;
        let mut actors = Vec::with_capacity(n.min(c.0.len()));
        for _ in 0..n {
            actors.push(c.var()?);
        }
        (count, actors)
    } else {
        (1, Vec::from([actor]))
    };
    let event_id = if flags & EVENT_ID != 0 {
        c.string()?
    } else {
        implied_event_id(f).unwrap_or_default().into()
    };
    let digest = if flags & DIGEST != 0 {
        let raw = c.bytes()?;
        let d: DigestBody =
            rmp_serde::from_slice(raw).map_err(|e| CompactError::Digest(e.to_string()))?;
        Some(Box::new(d))
    } else {
        None
    };
    let data = if flags & DATA != 0 {
        let b = c.bytes()?;
        let json = std::str::from_utf8(b).map_err(|_| CompactError::Utf8)?;
        Some(Arc::new(Data::from_json_text(json.to_string())))
    } else {
        None
    };
    Ok(Notification {
        id: id.into(),
        event_id,
        kind,
        actor,
        object,
        text,
        ts_ms,
        count,
        actors: actors.into(),
        order,
        digest,
        data,
        trace: None,
        supersedes: None,
    })
}

/// The kind byte of a declared kind, whose name follows: the six built-in
/// kinds are 0-5.
const KIND_BY_NAME: u8 = 0xff;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_var(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    put_var(b, s.len() as u64);
    b.extend_from_slice(s);
}

/// Lower-case hex of exactly `n` bytes, else None.
fn put_hex(b: &mut Vec<u8>, h: &str, n: usize) -> Option<()> {
    let lower = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if h.len() != n * 2 || !h.bytes().all(lower) {
        return None;
    }
    for i in 0..n {
        b.push(u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok()?);
    }
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Only canonical decimal (what `format!` writes) maps to a number.
fn canonical(s: &str) -> Option<u64> {
    crate::ids::parse_user(s)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, CompactError> {
        let (&b, rest) = self.0.split_first().ok_or(CompactError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn var(&mut self) -> Result<u64, CompactError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CompactError::Truncated)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CompactError> {
        let n = self.var()? as usize;
        if n > self.0.len() {
            return Err(CompactError::Truncated);
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(s)
    }

    fn string(&mut self) -> Result<Arc<str>, CompactError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(Arc::from)
            .map_err(|_| CompactError::Utf8)
    }
}

#[cfg(test)]
mod tests;
