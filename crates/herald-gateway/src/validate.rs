//! Turning a request body into validated events, all or nothing.

use std::cell::RefCell;
use std::sync::Arc;

use herald_types::data::DataError;
use herald_types::{Data, EventKind, LogEvent};
use serde::de::{DeserializeSeed, Deserializer};
use serde_json::{Map, Value};

use crate::body::user_id;
use crate::error::ApiError;

/// Limits on one event's fields (bytes).
pub const MAX_ID: usize = 128;
pub const MAX_OBJECT: usize = 128;
pub const MAX_TEXT: usize = 1000;
pub const MAX_MENTIONS: usize = 100;

/// What a body is held to beyond the fixed limits above (from the
/// gateway's config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events in one batch.
    pub max_batch: usize,
    /// Largest `data`, in bytes of its compact JSON.
    pub max_data: usize,
}

/// The fields of an event besides `data` (read apart, in its own order).
const FIELDS: [&str; 8] = [
    "id",
    "kind",
    "actor",
    "recipient",
    "mentions",
    "object",
    "text",
    "ts_ms",
];

/// Validates a body: one event, or `{"events": [...]}` of at most
/// `max_batch`. The first bad event rejects the whole body.
pub fn events(body: Value, limits: Limits) -> Result<Vec<LogEvent>, ApiError> {
    let max_batch = limits.max_batch;
    let Value::Object(mut top) = body else {
        return Err(ApiError::malformed(
            "body must be an event object or {\"events\": [...]}",
        ));
    };
    if let Some(list) = top.remove("events") {
        if let Some(k) = top.keys().next() {
            return Err(ApiError::field(
                "unknown_field",
                k.clone(),
                format!("unknown field {k:?} beside \"events\""),
            ));
        }
        let Value::Array(list) = list else {
            return Err(ApiError::field(
                "invalid_field",
                "events",
                "events must be an array",
            ));
        };
        if list.is_empty() {
            return Err(ApiError::field(
                "invalid_field",
                "events",
                "events must not be empty",
            ));
        }
        if list.len() > max_batch {
            return Err(ApiError::too_large(format!(
                "batch of {} events exceeds the limit of {max_batch}",
                list.len()
            )));
        }
        list.into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => tree_event(m, limits.max_data).map_err(|e| e.at(i)),
                _ => Err(ApiError::malformed("each event must be an object").at(i)),
            })
            .collect()
    } else {
        Ok(vec![tree_event(top, limits.max_data)?])
    }
}

/// One event object of a value tree, its `data` included.
fn tree_event(mut m: Map<String, Value>, max_data: usize) -> Result<LogEvent, ApiError> {
    let data = match m.remove("data") {
        None => None,
        Some(v) => data(v, max_data)?,
    };
    event(m, data)
}

/// Reads an event's `data` from any deserializer, in its key order: a
/// JSON object (or MessagePack map) of at most `max` bytes once compact,
/// no key twice in one object; `null` is none.
pub(crate) fn data<'de, D: Deserializer<'de>>(
    d: D,
    max: usize,
) -> Result<Option<Arc<Data>>, ApiError> {
    let data = match Data::read(d, max) {
        Ok(None) => return Ok(None),
        Ok(Some(data)) => data,
        Err(e @ (DataError::NotObject | DataError::TooLarge(..))) => {
            return Err(ApiError::field("invalid_field", "data", e.to_string()))
        }
        Err(DataError::Invalid(why)) => {
            return Err(ApiError::field(
                "invalid_field",
                "data",
                format!("data must be a JSON object: {why}"),
            ))
        }
    };
    // The same rule as every other object in a body: a key given twice is
    // refused, never "last one wins".
    let why = RefCell::new(None);
    let strict = crate::strict::Strict { why: &why };
    if strict
        .deserialize(&mut serde_json::Deserializer::from_str(data.json()))
        .is_err()
    {
        let why = why
            .into_inner()
            .map_or_else(|| "data is not valid".to_string(), |e| e.message);
        return Err(ApiError::field(
            "duplicate_key",
            "data",
            format!("in data: {why}"),
        ));
    }
    Ok(Some(Arc::new(data)))
}

fn string(m: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.len() > max {
                Err(ApiError::field(
                    "invalid_field",
                    field,
                    format!("{field} is {} bytes; the limit is {max}", s.len()),
                ))
            } else if s.is_empty() {
                Err(ApiError::field(
                    "invalid_field",
                    field,
                    format!("{field} must not be empty"),
                ))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(ApiError::field(
            "invalid_field",
            field,
            format!("{field} must be a string"),
        )),
    }
}

fn uid(m: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => user_id(v).map(Some).ok_or_else(|| {
            ApiError::field(
                "invalid_field",
                field,
                format!("{field} must be a user id (unsigned 64-bit integer or decimal string)"),
            )
        }),
    }
}

fn missing(field: &str, why: &str) -> ApiError {
    ApiError::field("missing_field", field, format!("{field} is required{why}"))
}

/// Validates one event object (`data` read apart, by [`data`]).
pub fn event(m: Map<String, Value>, data: Option<Arc<Data>>) -> Result<LogEvent, ApiError> {
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(
            "unknown_field",
            k.clone(),
            format!("unknown field {k:?}"),
        ));
    }
    let kind = match m.get("kind") {
        None | Some(Value::Null) => return Err(missing("kind", "")),
        Some(Value::String(s)) => EventKind::parse(s).ok_or_else(|| {
            let known: Vec<&str> = EventKind::declared().iter().map(|k| k.as_str()).collect();
            ApiError::field(
                "invalid_field",
                "kind",
                format!(
                    "unknown kind {s:?}; this node declares {}",
                    known.join(", ")
                ),
            )
        })?,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_field",
                "kind",
                "kind must be a string",
            ))
        }
    };
    let actor = uid(&m, "actor")?.ok_or_else(|| missing("actor", ""))?;
    let recipient = uid(&m, "recipient")?;
    if kind.needs_recipient() && recipient.is_none() {
        return Err(missing("recipient", &format!(" for {}", kind.as_str())));
    }
    if kind.graph_change().is_some() && recipient == Some(actor) {
        return Err(ApiError::field(
            "invalid_field",
            "recipient",
            "a user cannot follow or unfollow themselves",
        ));
    }
    let mentions = match m.get("mentions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            if a.len() > MAX_MENTIONS {
                return Err(ApiError::field(
                    "invalid_field",
                    "mentions",
                    format!("at most {MAX_MENTIONS} mentions"),
                ));
            }
            a.iter()
                .map(|v| {
                    user_id(v).ok_or_else(|| {
                        ApiError::field("invalid_field", "mentions", "mentions must be user ids")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => {
            return Err(ApiError::field(
                "invalid_field",
                "mentions",
                "mentions must be an array",
            ))
        }
    };
    if kind.needs_mentions() && mentions.is_empty() {
        return Err(missing("mentions", &format!(" for {}", kind.as_str())));
    }
    if kind.needs_object() && matches!(m.get("object"), None | Some(Value::Null)) {
        return Err(missing(
            "object",
            &format!(" for {} (its subscribers are told)", kind.as_str()),
        ));
    }
    let client_ts_ms = match m.get("ts_ms") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(_) => {
            return Err(ApiError::field(
                "invalid_field",
                "ts_ms",
                "ts_ms must be an integer",
            ))
        }
    };
    Ok(LogEvent {
        client_id: string(&m, "id", MAX_ID)?,
        scope: None,
        replay_of: None,
        kind,
        actor,
        recipient,
        mentions,
        object: string(&m, "object", MAX_OBJECT)?,
        text: string(&m, "text", MAX_TEXT)?,
        client_ts_ms,
        data,
        accepted_us: 0,
        trace: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    pub(crate) use herald_types::testing::any_json;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any JSON value, as one event or in a batch: events or a clean
        /// error, never a panic.
        #[test]
        fn any_value_is_events_or_a_clean_error(v in any_json()) {
            let _ = events(v.clone(), 100);
            let _ = events(serde_json::Value::Array(vec![v]), 100);
        }

        /// Any bytes, as JSON or MessagePack.
        #[test]
        fn any_bytes_are_a_clean_error_at_worst(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            for enc in [crate::body::Encoding::Json, crate::body::Encoding::MsgPack] {
                if let Ok(v) = crate::body::parse(&b, enc) {
                    let _ = events(v, 100);
                }
            }
        }
    }

    use super::*;
    use serde_json::json;

    /// The tree validator with the default data limit.
    pub(crate) fn events(v: Value, max_batch: usize) -> Result<Vec<LogEvent>, ApiError> {
        super::events(
            v,
            Limits {
                max_batch,
                max_data: herald_types::data::DEFAULT_MAX_DATA_BYTES,
            },
        )
    }

    #[test]
    fn single_and_batch() {
        let one = events(json!({"kind": "like", "actor": 1, "recipient": "2"}), 10).unwrap();
        assert_eq!(one[0].recipient, Some(2));
        let many = events(
            json!({"events": [{"kind": "post", "actor": 1}, {"kind": "mention", "actor": 1, "mentions": [3]}]}),
            10,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
    }

    #[test]
    fn errors_name_index_and_field() {
        let e = events(
            json!({"events": [{"kind": "post", "actor": 1}, {"kind": "like", "actor": 1}]}),
            10,
        )
        .unwrap_err();
        assert_eq!((e.index, e.field.as_deref()), (Some(1), Some("recipient")));
        let e = events(json!({"kind": "poke", "actor": 1}), 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("kind"));
        let e = events(json!({"kind": "post", "actor": -1}), 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("actor"));
        let e = events(json!({"kind": "post", "actor": 1, "colour": 1}), 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = events(
            json!({"kind": "post", "actor": 1, "text": "x".repeat(1001)}),
            10,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("text"));
        let e = events(json!({"kind": "follow", "actor": 1, "recipient": 1}), 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("recipient"));
        let e = events(
            json!({"events": [{"kind": "post", "actor": 1}, {"kind": "post", "actor": 1}]}),
            1,
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
    }
}
