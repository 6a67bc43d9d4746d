//! `POST /v1/events` bodies read event by event: one event's JSON value
//! is built, validated into a compact [`LogEvent`] and dropped before the
//! next, so a 4 MiB batch costs its events, not a tree of values 30 times
//! the body. Accepts exactly what [`crate::validate::events`] accepts.

use std::cell::RefCell;
use std::fmt;

use herald_types::LogEvent;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::body::Encoding;
use crate::error::ApiError;
use crate::validate::event;

/// Validates a body of one event or `{"events": [...]}` of at most `max`.
pub(crate) fn events_from(
    bytes: &[u8],
    enc: Encoding,
    max: usize,
) -> Result<Vec<LogEvent>, ApiError> {
    let why = RefCell::new(None);
    let seed = Top { max, why: &why };
    let r = match enc {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(&mut de)
                .map_err(|e| format!("body is not valid JSON: {e}"))
                .and_then(|v| {
                    de.end()
                        .map(|_| v)
                        .map_err(|e| format!("body is not valid JSON: {e}"))
                })
        }
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            match seed.deserialize(&mut de) {
                Ok(_) if (de.get_ref().position() as usize) < bytes.len() => {
                    Err("body is not valid MessagePack: trailing bytes after the value".into())
                }
                Ok(v) => Ok(v),
                Err(e) => Err(format!("body is not valid MessagePack: {e}")),
            }
        }
    };
    match (r, why.into_inner()) {
        (Ok(v), _) => v,
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(ApiError::malformed(e)),
    }
}

use crate::strict::{duplicate, refuse, Strict};

struct Top<'a> {
    max: usize,
    why: &'a RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Result<Vec<LogEvent>, ApiError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Result<Vec<LogEvent>, ApiError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or {\"events\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut single = Map::new();
        let mut batch = None;
        while let Some(k) = m.next_key::<String>()? {
            if single.contains_key(&k) || (k == "events" && batch.is_some()) {
                return Err(refuse(self.why, duplicate(&k)));
            }
            if k == "events" {
                batch = Some(m.next_value_seed(Events {
                    max: self.max,
                    why: self.why,
                })?);
            } else {
                single.insert(k, m.next_value_seed(Strict { why: self.why })?);
            }
        }
        Ok(match batch {
            None => event(single).map(|e| vec![e]),
            Some(b) => match single.keys().next() {
                None => Ok(b),
                Some(k) => Err(ApiError::field(
                    "unknown_field",
                    k.clone(),
                    format!("unknown field {k:?} beside \"events\""),
                )),
            },
        })
    }
}

macro_rules! refuse_scalars {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Err(self.wrong())
        })*
    };
}

struct Events<'a> {
    max: usize,
    why: &'a RefCell<Option<ApiError>>,
}

impl Events<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        refuse(
            self.why,
            ApiError::field("invalid_field", "events", "events must be an array"),
        )
    }
}

impl<'de> DeserializeSeed<'de> for Events<'_> {
    type Value = Vec<LogEvent>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Events<'_> {
    type Value = Vec<LogEvent>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(self.max));
        while let Some(v) = s.next_element_seed(Strict { why: self.why })? {
            let i = out.len();
            if i == self.max {
                let e = ApiError::too_large(format!(
                    "batch of more than {} events exceeds the limit of {}",
                    self.max, self.max
                ));
                return Err(refuse(self.why, e));
            }
            let e = match v {
                Value::Object(m) => event(m).map_err(|e| e.at(i)),
                _ => Err(ApiError::malformed("each event must be an object").at(i)),
            };
            match e {
                Ok(e) => out.push(e),
                Err(e) => return Err(refuse(self.why, e)),
            }
        }
        if out.is_empty() {
            let e = ApiError::field("invalid_field", "events", "events must not be empty");
            return Err(refuse(self.why, e));
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.wrong())
    }

    refuse_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;
    use crate::validate::events;
    use proptest::prelude::*;

    fn both(
        b: &[u8],
        enc: Encoding,
    ) -> (
        Result<Vec<LogEvent>, ApiError>,
        Result<Vec<LogEvent>, ApiError>,
    ) {
        let tree = parse(b, enc).and_then(|v| events(v, 3));
        (events_from(b, enc, 3), tree)
    }

    #[test]
    fn the_same_answers_as_the_tree() {
        for body in [
            r#"{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}"#,
            r#"{"events": [{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}]}"#,
            r#"{"events": []}"#,
            r#"{"events": 5}"#,
            r#"{"events": [5]}"#,
            r#"{"events": [{"kind": "like"}]}"#,
            r#"{"events": [{"kind": "like", "actor": 1, "recipient": 2, "object": "o"}], "x": 1}"#,
            r#"[1]"#,
            r#"{"kind": "like", "actor": 1, "recipient": 2, "object": "o"} x"#,
        ] {
            let (s, t) = both(body.as_bytes(), Encoding::Json);
            assert_eq!(
                s.as_ref().map_err(|e| (e.code, e.index)),
                t.as_ref().map_err(|e| (e.code, e.index)),
                "{body}"
            );
        }
        let four = r#"{"events": [{"kind": "follow", "actor": 1, "recipient": 2}, {"kind": "follow", "actor": 1, "recipient": 3}, {"kind": "follow", "actor": 1, "recipient": 4}, {"kind": "follow", "actor": 1, "recipient": 5}]}"#;
        let (s, t) = both(four.as_bytes(), Encoding::Json);
        assert_eq!(s.map_err(|e| e.code), Err("too_large"));
        assert_eq!(t.map_err(|e| e.code), Err("too_large"));
    }

    /// A key given twice is refused, naming it, at the top, inside a
    /// batch's event and deeper, in JSON and in MessagePack; never "last
    /// one wins".
    #[test]
    fn duplicate_keys_are_refused_naming_the_key() {
        for body in [
            r#"{"kind": "comment", "actor": 1, "recipient": 2, "kind": "like", "object": "o"}"#,
            r#"{"events": [{"kind": "comment", "actor": 1, "recipient": 2, "kind": "like"}]}"#,
            r#"{"events": [{"kind": "follow", "actor": 1, "recipient": 2}], "events": [{"kind": "follow", "actor": 1, "recipient": 3}]}"#,
        ] {
            let (s, t) = both(body.as_bytes(), Encoding::Json);
            for r in [s, t] {
                let e = r.expect_err(body);
                assert_eq!(e.code, "duplicate_key", "{body}");
                assert_eq!(
                    e.field.as_deref(),
                    Some(if body.matches("\"events\"").count() == 2 {
                        "events"
                    } else {
                        "kind"
                    })
                );
            }
        }
        // MessagePack: a map of two entries both named "kind".
        let mut b = vec![0x83];
        for (k, v) in [("kind", "comment"), ("kind", "like")] {
            b.push(0xa0 | k.len() as u8);
            b.extend_from_slice(k.as_bytes());
            b.push(0xa0 | v.len() as u8);
            b.extend_from_slice(v.as_bytes());
        }
        b.extend_from_slice(&[0xa5, b'a', b'c', b't', b'o', b'r', 0x01]);
        let (s, t) = both(&b, Encoding::MsgPack);
        for r in [s, t] {
            let e = r.expect_err("msgpack");
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("duplicate_key", Some("kind"))
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the body, read as a stream or as a tree: accepted the
        /// same, or refused by both.
        #[test]
        fn accepts_exactly_what_the_tree_accepts(v in crate::validate::tests::any_json(), wrap in any::<bool>()) {
            let v = if wrap { serde_json::json!({"events": [v]}) } else { v };
            for enc in [Encoding::Json, Encoding::MsgPack] {
                let b = match enc {
                    Encoding::Json => v.to_string().into_bytes(),
                    Encoding::MsgPack => rmp_serde::to_vec(&v).unwrap_or_default(),
                };
                let (s, t) = both(&b, enc);
                prop_assert_eq!(s.is_ok(), t.is_ok(), "{}", v);
                if let (Ok(s), Ok(t)) = (s, t) {
                    prop_assert_eq!(s, t);
                }
            }
        }
    }
}
