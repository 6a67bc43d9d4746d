//! Reading request bodies: content type, size limits, JSON or MessagePack.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use std::future::Future;

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
    // A media type is ASCII; anything else is not one we take.
    let Ok(ct) = ct.to_str() else {
        return Err(ApiError::unsupported_type("(not ASCII)"));
    };
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
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit as u64 {
            return Err(ApiError::too_large(format!(
                "body of {len} bytes exceeds the limit of {limit} bytes"
            )));
        }
    }
    // Into one buffer sized from Content-Length: the body is held once,
    // not as chunks and then a copy of them.
    let too_large = || ApiError::too_large(format!("body exceeds the limit of {limit} bytes"));
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e).unwrap_or_else(too_large))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// `408 request_timeout` when a body read failed on its deadline.
fn read_error(e: &axum::Error) -> Option<ApiError> {
    // The deadline error may come wrapped.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<DeadlineExceeded>().is_some()
            || c.to_string() == DeadlineExceeded.to_string()
        {
            return Some(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body did not arrive before the request's deadline",
            ));
        }
        cause = c.source();
    }
    None
}

/// The body of a request did not arrive in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A request body that fails with [`DeadlineExceeded`] once `deadline`
/// has passed, however the bytes trickle in: a slow client cannot hold a
/// request (and its file descriptor) past it.
pub struct Deadline {
    inner: Body,
    deadline: tokio::time::Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    pub fn new(inner: Body, deadline: tokio::time::Instant) -> Deadline {
        Deadline {
            inner,
            deadline,
            sleep: None,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(axum::Error::new(DeadlineExceeded))));
        }
        std::pin::Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Parses a body into a JSON value, whatever its encoding.
pub fn parse(bytes: &[u8], enc: Encoding) -> Result<Value, ApiError> {
    use serde::de::DeserializeSeed;
    let why = std::cell::RefCell::new(None);
    let seed = crate::strict::Strict { why: &why };
    let r = match enc {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(&mut de)
                .and_then(|v| de.end().map(|_| v))
                .map_err(|e| format!("body is not valid JSON: {e}"))
        }
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            match seed.deserialize(&mut de) {
                // One value and nothing after it, as with JSON.
                Ok(_) if (de.get_ref().position() as usize) < bytes.len() => Err(format!(
                    "body is not valid MessagePack: {} trailing bytes after the value",
                    bytes.len() - de.get_ref().position() as usize
                )),
                Ok(v) => Ok(v),
                Err(e) => Err(format!("body is not valid MessagePack: {e}")),
            }
        }
    };
    match (r, why.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(ApiError::malformed(e)),
    }
}

/// A user id: a non-negative integer, or a decimal string of one.
pub fn user_id(v: &Value) -> Option<u64> {
    herald_prefs::model::user_id(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_pack_takes_one_value_and_nothing_after() {
        let one = rmp_serde::to_vec(&serde_json::json!({"kind": "like"})).unwrap_or_default();
        assert!(parse(&one, Encoding::MsgPack).is_ok());
        let mut two = one.clone();
        two.push(0xc0);
        let e = parse(&two, Encoding::MsgPack).expect_err("trailing byte");
        assert_eq!(e.code, "malformed_body");
        assert!(e.message.contains("1 trailing bytes"), "{}", e.message);
    }

    #[test]
    fn a_media_type_that_is_not_ascii_is_refused() {
        let mut h = HeaderMap::new();
        let v = axum::http::HeaderValue::from_bytes(b"application/json\xe9")
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("x"));
        h.insert(header::CONTENT_TYPE, v);
        assert_eq!(encoding(&h).map_err(|e| e.status.as_u16()), Err(415));
    }
}
