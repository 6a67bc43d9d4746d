//! The graph import body, `{"follows": [[follower, followee], ...]}`, read
//! straight into pairs (JSON or MessagePack): no tree of values is built,
//! so memory stays at the body plus 16 bytes per pair, and the read stops
//! at the first pair past the limit.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::body::Encoding;
use crate::error::ApiError;

/// Parses an import body of at most `max` pairs.
pub(crate) fn parse_follows(
    bytes: &[u8],
    enc: Encoding,
    max: usize,
) -> Result<Vec<(u64, u64)>, ApiError> {
    let why = RefCell::new(None);
    // The pairs' vector is sized once: JSON gives no length up front, but
    // every pair opens a bracket (ids hold none), so their count bounds it.
    let room = match enc {
        Encoding::Json => bytes
            .iter()
            .filter(|b| **b == b'[')
            .count()
            .saturating_sub(1),
        Encoding::MsgPack => 0,
    };
    let seed = Doc {
        max,
        room: room.min(max),
        why: &why,
    };
    let r = match enc {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(&mut de)
                .map_err(|e| e.to_string())
                .and_then(|v| de.end().map(|_| v).map_err(|e| e.to_string()))
        }
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            match seed.deserialize(&mut de) {
                Ok(_) if (de.get_ref().position() as usize) < bytes.len() => {
                    Err("trailing bytes after the value".to_string())
                }
                Ok(v) => Ok(v),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match (r, why.into_inner()) {
        (Ok(Some(pairs)), _) => Ok(pairs),
        (Ok(None), _) => Err(ApiError::field(
            "missing_field",
            "follows",
            "follows must be an array of pairs",
        )),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(ApiError::malformed(format!(
            "body must be {{\"follows\": [[follower, followee], ...]}}: {e}"
        ))),
    }
}

/// The whole document; `why` receives the precise refusal.
struct Doc<'a> {
    max: usize,
    /// Pairs to make room for before reading (beside the size hint).
    room: usize,
    why: &'a RefCell<Option<ApiError>>,
}

fn refuse<E: de::Error>(why: &RefCell<Option<ApiError>>, e: ApiError) -> E {
    let msg = e.message.clone();
    *why.borrow_mut() = Some(e);
    E::custom(msg)
}

impl<'de> DeserializeSeed<'de> for Doc<'_> {
    type Value = Option<Vec<(u64, u64)>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Doc<'_> {
    type Value = Option<Vec<(u64, u64)>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with \"follows\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = None;
        while let Some(k) = m.next_key::<String>()? {
            if k != "follows" {
                let e = ApiError::field("unknown_field", k.clone(), format!("unknown field {k:?}"));
                return Err(refuse(self.why, e));
            }
            out = Some(m.next_value_seed(Pairs {
                max: self.max,
                room: self.room,
                why: self.why,
            })?);
        }
        Ok(out)
    }
}

struct Pairs<'a> {
    max: usize,
    room: usize,
    why: &'a RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Pairs<'_> {
    type Value = Vec<(u64, u64)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Pairs<'_> {
    type Value = Vec<(u64, u64)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let hint = s.size_hint().unwrap_or(0).max(self.room);
        let mut out = Vec::with_capacity(hint.min(self.max));
        // Grown by half each time, not doubled: the peak stays nearer the
        // pairs' own size.
        let grow = |v: &mut Vec<(u64, u64)>| {
            if v.len() == v.capacity() {
                v.reserve_exact((v.len() / 2).max(1024));
            }
        };
        loop {
            let i = out.len();
            let bad = || {
                ApiError::field(
                    "invalid_field",
                    "follows",
                    "each pair must be [follower, followee] user ids, not equal",
                )
                .at(i)
            };
            let next = match s.next_element::<Pair>() {
                Ok(n) => n,
                Err(_) => return Err(refuse(self.why, bad())),
            };
            let Some(Pair(f, t)) = next else { break };
            if f == t {
                return Err(refuse(self.why, bad()));
            }
            if out.len() == self.max {
                let e = ApiError::too_large(format!(
                    "more than {} pairs; the limit is {} per request",
                    self.max, self.max
                ));
                return Err(refuse(self.why, e));
            }
            grow(&mut out);
            out.push((f, t));
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, _m: A) -> Result<Self::Value, A::Error> {
        let e = ApiError::field(
            "missing_field",
            "follows",
            "follows must be an array of pairs",
        );
        Err(refuse(self.why, e))
    }
}

/// `[follower, followee]`, each a number or a canonical decimal string.
struct Pair(u64, u64);

impl<'de> de::Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pair, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[follower, followee]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Pair, A::Error> {
                let a = s.next_element::<Id>()?;
                let b = s.next_element::<Id>()?;
                let (Some(Id(a)), Some(Id(b))) = (a, b) else {
                    return Err(de::Error::custom("a pair has two ids"));
                };
                if s.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a pair has two ids"));
                }
                Ok(Pair(a, b))
            }
        }
        d.deserialize_seq(V)
    }
}

struct Id(u64);

impl<'de> de::Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v)
                    .map(Id)
                    .map_err(|_| E::custom("not a user id"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                herald_types::ids::parse_user(v)
                    .map(Id)
                    .ok_or_else(|| E::custom("not a user id"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Result<Vec<(u64, u64)>, ApiError> {
        parse_follows(s.as_bytes(), Encoding::Json, 3)
    }

    #[test]
    fn pairs_are_read_with_the_same_errors_as_before() {
        assert_eq!(
            json(r#"{"follows": [[1, 2], ["3", 4]]}"#),
            Ok(vec![(1, 2), (3, 4)])
        );
        assert_eq!(json(r#"{"follows": []}"#), Ok(vec![]));
        let code = |s: &str| json(s).map_err(|e| (e.code, e.index));
        assert_eq!(
            code(r#"{"follows": [[1, 2], [5, 5]]}"#),
            Err(("invalid_field", Some(1)))
        );
        assert_eq!(
            code(r#"{"follows": [[1, 2, 3]]}"#),
            Err(("invalid_field", Some(0)))
        );
        assert_eq!(
            code(r#"{"follows": [["007", 2]]}"#),
            Err(("invalid_field", Some(0)))
        );
        assert_eq!(
            code(r#"{"follows": [[-1, 2]]}"#),
            Err(("invalid_field", Some(0)))
        );
        assert_eq!(code(r#"{"other": 1}"#), Err(("unknown_field", None)));
        assert_eq!(code(r#"{}"#), Err(("missing_field", None)));
        assert_eq!(code(r#"[1]"#), Err(("malformed_body", None)));
        assert_eq!(
            code(r#"{"follows": [[1, 2]]} x"#),
            Err(("malformed_body", None))
        );
        assert_eq!(
            code(r#"{"follows": [[1, 2], [2, 3], [3, 4], [4, 5]]}"#),
            Err(("too_large", None))
        );
    }

    #[test]
    fn message_pack_reads_the_same() {
        let b = rmp_serde::to_vec(&serde_json::json!({"follows": [[1, 2], [3, 4]]}))
            .unwrap_or_default();
        assert_eq!(
            parse_follows(&b, Encoding::MsgPack, 3),
            Ok(vec![(1, 2), (3, 4)])
        );
        let mut t = b.clone();
        t.push(0xc0);
        assert_eq!(
            parse_follows(&t, Encoding::MsgPack, 3).map_err(|e| e.code),
            Err("malformed_body")
        );
    }
}
