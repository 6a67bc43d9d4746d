//! An event's `data`: the product's own JSON object (a deep link, an
//! image, a reaction), carried unchanged from the event to every
//! notification it makes.
//!
//! Kept as compact JSON text in the producer's key order, validated once
//! at the gateway ([`Data::from_json_text`] trusts what was validated).
//! JSON frames splice the text in as it is; MessagePack frames get the
//! same object transcoded once per [`Data`] (cached), so neither a push
//! nor a drained entry parses it per recipient. Numbers keep their value
//! (integers exactly; floats as 64-bit), strings and key order their
//! bytes (escaped as JSON's compact form escapes them: `\u00e9` arrives
//! as `é`); a MessagePack map's integer keys become strings, as a JSON
//! object's keys are.

use std::sync::OnceLock;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default limit on `data`, in bytes of its compact JSON form
/// (`gateway.max_data_bytes`).
pub const DEFAULT_MAX_DATA_BYTES: usize = 4096;

/// Why a `data` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataError {
    #[error("data must be a JSON object")]
    NotObject,
    #[error("data is {0} bytes; the limit is {1}")]
    TooLarge(usize, usize),
    #[error("data is not valid: {0}")]
    Invalid(String),
}

/// One event's data, shared by its notifications (behind an `Arc`).
#[derive(Debug)]
pub struct Data {
    json: Box<str>,
    msgpack: OnceLock<Box<[u8]>>,
}

impl PartialEq for Data {
    fn eq(&self, o: &Data) -> bool {
        self.json == o.json
    }
}

impl Clone for Data {
    fn clone(&self) -> Data {
        Data::from_json_text(self.json.to_string())
    }
}

impl Data {
    /// Data already validated (read back from the log or Redis).
    pub fn from_json_text(json: String) -> Data {
        Data {
            json: json.into_boxed_str(),
            msgpack: OnceLock::new(),
        }
    }

    /// Reads `data` from any serde format (JSON or MessagePack), keeping
    /// its key order: a JSON object of at most `max` bytes once compact,
    /// with string keys (MessagePack maps too); `null` is no data.
    pub fn read<'de, D: Deserializer<'de>>(d: D, max: usize) -> Result<Option<Data>, DataError> {
        let mut out = Vec::new();
        serde_transcode::transcode(d, &mut serde_json::Serializer::new(&mut out))
            .map_err(|e| DataError::Invalid(e.to_string()))?;
        if out == b"null" {
            return Ok(None);
        }
        if out.first() != Some(&b'{') {
            return Err(DataError::NotObject);
        }
        if out.len() > max {
            return Err(DataError::TooLarge(out.len(), max));
        }
        let json = String::from_utf8(out).map_err(|e| DataError::Invalid(e.to_string()))?;
        Ok(Some(Data::from_json_text(json)))
    }

    /// The compact JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The same object as MessagePack (a map, keys in the same order),
    /// transcoded on first use.
    pub fn msgpack(&self) -> &[u8] {
        self.msgpack.get_or_init(|| {
            let mut out = Vec::with_capacity(self.json.len());
            let mut de = serde_json::Deserializer::from_str(&self.json);
            // Validated JSON transcodes; were it not, the frame carries an
            // empty map rather than failing the push.
            match serde_transcode::transcode(
                &mut de,
                &mut rmp_serde::Serializer::new(&mut out).with_struct_map(),
            ) {
                Ok(()) => out.into_boxed_slice(),
                Err(_) => Box::new([0x80]),
            }
        })
    }
}

/// JSON (human-readable formats): the text as it is; MessagePack: the
/// object transcoded.
impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(&self.json);
        if s.is_human_readable() {
            let raw: &serde_json::value::RawValue =
                serde::Deserialize::deserialize(&mut de).map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        } else {
            serde_transcode::Transcoder::new(&mut de).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Data, D::Error> {
        Data::read(d, usize::MAX)
            .and_then(|d| d.ok_or(DataError::NotObject))
            .map_err(D::Error::custom)
    }
}

/// `Option<Arc<Data>>` kept as its JSON text in a string (the log's
/// records): written and read back without transcoding.
pub mod as_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Data;

    pub fn serialize<S: Serializer>(d: &Option<Arc<Data>>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(d.json()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Data>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|t| Arc::new(Data::from_json_text(t))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        r#"{"z":1,"a":[true,null,-2,1.5,"é\n"],"m":{"k":"v"},"big":18446744073709551615}"#;

    #[test]
    fn json_in_json_out_byte_for_byte_in_key_order() {
        let d = Data::read(&mut serde_json::Deserializer::from_str(TEXT), 4096)
            .unwrap()
            .unwrap();
        assert_eq!(d.json(), TEXT);
        assert_eq!(serde_json::to_string(&d).unwrap(), TEXT);
    }

    #[test]
    fn msgpack_round_trips_through_the_stored_text() {
        let d = Data::from_json_text(TEXT.into());
        let mp = d.msgpack().to_vec();
        let back = Data::read(&mut rmp_serde::Deserializer::new(&mp[..]), 4096)
            .unwrap()
            .unwrap();
        assert_eq!(back.json(), TEXT);
        assert_eq!(back.msgpack(), &mp[..]);
        // Serialized by serde into MessagePack: the same bytes.
        assert_eq!(rmp_serde::to_vec(&d).unwrap(), mp);
    }

    #[test]
    fn refusals_are_clear() {
        let read = |s: &str, max| {
            Data::read(&mut serde_json::Deserializer::from_str(s), max)
                .map(|d| d.map(|d| d.json().to_string()))
        };
        assert_eq!(read("null", 100), Ok(None));
        assert_eq!(read("[1]", 100), Err(DataError::NotObject));
        assert_eq!(read("\"x\"", 100), Err(DataError::NotObject));
        assert_eq!(
            read(r#"{"a":"0123456789"}"#, 10),
            Err(DataError::TooLarge(18, 10))
        );
        assert!(matches!(read("{\"a\":", 100), Err(DataError::Invalid(_))));
        // A MessagePack map's integer key becomes a string (a JSON
        // object's keys are); binary is refused.
        let mp = [0x81, 0x01, 0x02];
        let d = Data::read(&mut rmp_serde::Deserializer::new(&mp[..]), 100).unwrap();
        assert_eq!(d.unwrap().json(), r#"{"1":2}"#);
        let mp = [0x81, 0xc4, 0x01, 0x00, 0x02];
        assert!(matches!(
            Data::read(&mut rmp_serde::Deserializer::new(&mp[..]), 100),
            Err(DataError::Invalid(_))
        ));
    }
}
