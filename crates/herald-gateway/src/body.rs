//! Reading request bodies: content type, size limits, JSON or MessagePack.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

/// The body's encoding from `Content-Type` (JSON when absent).
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Encoding::Json);
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "" => Ok(Encoding::Json),
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            Ok(Encoding::MsgPack)
        }
        _ => Err(ApiError::unsupported_type(ct)),
    }
}

/// Reads at most `limit` bytes of body; a `Content-Length` past the limit is
/// refused before anything is read.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::too_large(format!(
                "body of {len} bytes exceeds the limit of {limit} bytes"
            )));
        }
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(format!("body exceeds the limit of {limit} bytes")))
}

/// Parses a body into a JSON value, whatever its encoding.
pub fn parse(bytes: &[u8], enc: Encoding) -> Result<Value, ApiError> {
    match enc {
        Encoding::Json => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}"))),
        Encoding::MsgPack => rmp_serde::from_slice(bytes)
            .map_err(|e| ApiError::malformed(format!("body is not valid MessagePack: {e}"))),
    }
}

/// A user id: a non-negative integer, or a decimal string of one.
pub fn user_id(v: &Value) -> Option<u64> {
    herald_prefs::model::user_id(v)
}
