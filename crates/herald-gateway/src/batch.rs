//! `POST /v1/events` bodies read event by event: one event's JSON value
//! is built, validated into a compact [`LogEvent`] and dropped before the
//! next, so a 4 MiB batch costs its events, not a tree of values 30 times
//! the body. Accepts exactly what [`crate::validate::events`] accepts.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use herald_types::{Data, LogEvent};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Map;

use crate::body::Encoding;
use crate::error::ApiError;
use crate::validate::{event, Limits};

/// Validates a body of one event or `{"events": [...]}` within `limits`.
pub(crate) fn events_from(
    bytes: &[u8],
    enc: Encoding,
    limits: Limits,
) -> Result<Vec<LogEvent>, ApiError> {
    let why = RefCell::new(None);
    let seed = Top { limits, why: &why };
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

macro_rules! refuse_scalars {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Err(self.wrong())
        })*
    };
}

use crate::strict::{duplicate, refuse, Strict};

struct Top<'a> {
    limits: Limits,
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
        let mut data = None;
        let mut batch = None;
        while let Some(k) = m.next_key::<String>()? {
            if single.contains_key(&k)
                || (k == "events" && batch.is_some())
                || (k == "data" && data.is_some())
            {
                return Err(refuse(self.why, duplicate(&k)));
            }
            match k.as_str() {
                "events" => {
                    batch = Some(m.next_value_seed(Events {
                        limits: self.limits,
                        why: self.why,
                    })?)
                }
                "data" => {
                    data = Some(m.next_value_seed(DataSeed {
                        max: self.limits.max_data,
                        index: None,
                        why: self.why,
                    })?)
                }
                _ => {
                    single.insert(k, m.next_value_seed(Strict { why: self.why })?);
                }
            }
        }
        Ok(match batch {
            None => event(single, data.flatten()).map(|e| vec![e]),
            Some(b) => match single
                .keys()
                .next()
                .map(String::as_str)
                .or(data.map(|_| "data"))
            {
                None => Ok(b),
                Some(k) => Err(ApiError::field(
                    "unknown_field",
                    k.to_string(),
                    format!("unknown field {k:?} beside \"events\""),
                )),
            },
        })
    }
}

/// An event's `data`, read in its own key order (see
/// [`crate::validate::data`]); a refusal names the event's index.
struct DataSeed<'a> {
    max: usize,
    index: Option<usize>,
    why: &'a RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<Arc<Data>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        crate::validate::data(d, self.max).map_err(|e| {
            let e = match self.index {
                Some(i) => e.at(i),
                None => e,
            };
            refuse(self.why, e)
        })
    }
}

/// One event of a batch: its fields into a map of values, its `data`
/// apart, then validated; a refusal names its index.
struct EventSeed<'a> {
    max_data: usize,
    index: usize,
    why: &'a RefCell<Option<ApiError>>,
}

impl EventSeed<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        refuse(
            self.why,
            ApiError::malformed("each event must be an object").at(self.index),
        )
    }
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = LogEvent;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LogEvent, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = LogEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<LogEvent, A::Error> {
        let mut fields = Map::new();
        let mut data = None;
        while let Some(k) = m.next_key::<String>()? {
            if fields.contains_key(&k) || (k == "data" && data.is_some()) {
                return Err(refuse(self.why, duplicate(&k)));
            }
            if k == "data" {
                data = Some(m.next_value_seed(DataSeed {
                    max: self.max_data,
                    index: Some(self.index),
                    why: self.why,
                })?);
            } else {
                fields.insert(k, m.next_value_seed(Strict { why: self.why })?);
            }
        }
        event(fields, data.flatten()).map_err(|e| refuse(self.why, e.at(self.index)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<LogEvent, A::Error> {
        Err(self.wrong())
    }

    fn visit_unit<E: de::Error>(self) -> Result<LogEvent, E> {
        Err(self.wrong())
    }

    fn visit_none<E: de::Error>(self) -> Result<LogEvent, E> {
        Err(self.wrong())
    }

    refuse_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
}

struct Events<'a> {
    limits: Limits,
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
        let max = self.limits.max_batch;
        let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(max));
        loop {
            let seed = EventSeed {
                max_data: self.limits.max_data,
                index: out.len(),
                why: self.why,
            };
            if out.len() == max {
                // One more element is refused unread.
                if s.next_element::<de::IgnoredAny>()?.is_some() {
                    let e = ApiError::too_large(format!(
                        "batch of more than {max} events exceeds the limit of {max}"
                    ));
                    return Err(refuse(self.why, e));
                }
                break;
            }
            match s.next_element_seed(seed)? {
                Some(e) => out.push(e),
                None => break,
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
#[path = "batch_tests.rs"]
mod tests;
