//! Bodies read into JSON values with duplicate keys refused (JSON and
//! MessagePack alike). `serde_json::Value` keeps the last of two equal
//! keys, so `{"kind": "comment", "kind": "like"}` would be stored as a like
//! while a producer's own validator may have read the first: the request
//! is refused with `400 duplicate_key` naming the key instead.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// A value of any shape, refusing a map that names a key twice (at any
/// depth); the refusal is left in `why`.
#[derive(Clone, Copy)]
pub(crate) struct Strict<'a> {
    pub why: &'a RefCell<Option<ApiError>>,
}

/// The refusal for `key` given twice in one object.
pub(crate) fn duplicate(key: &str) -> ApiError {
    ApiError::field(
        "duplicate_key",
        key.to_string(),
        format!("key {key:?} appears more than once in one object"),
    )
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = s.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(refuse(self.why, duplicate(&k)));
            }
            let v = m.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Leaves `e` for the caller and stops the deserializer.
pub(crate) fn refuse<E: de::Error>(why: &RefCell<Option<ApiError>>, e: ApiError) -> E {
    let msg = e.message.clone();
    *why.borrow_mut() = Some(e);
    E::custom(msg)
}
