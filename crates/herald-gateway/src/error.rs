//! The one error shape of the HTTP API.
//!
//! `{"error": {"code": "...", "message": "...", "index": I, "field": "..."}}`
//! Codes are stable and never reused.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            index: None,
            field: None,
            retry_after_s: None,
        }
    }

    /// A 400 about one field (of one event, when `index` is given).
    pub fn field(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, code, message);
        e.field = Some(field.into());
        e
    }

    pub fn at(mut self, index: usize) -> ApiError {
        self.index = Some(index);
        self
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unsupported_type(ct: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {ct:?} is not supported; use application/json or application/msgpack"
            ),
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key (Authorization: Bearer <key>)",
        )
    }

    pub fn rate_limited(what: &str, retry_after_s: u64) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{what} rate limit exceeded"),
        );
        e.retry_after_s = Some(retry_after_s.max(1));
        e
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// `503 unavailable` for a Redis failure behind `what` ("feed store",
    /// ...): the body says what kind of trouble (out of memory,
    /// unreachable, ...) and never Redis internals (script SHAs, keys,
    /// commands); the whole error goes to the log.
    pub fn store(what: &str, e: herald_store::StoreError) -> ApiError {
        tracing::warn!(store = what, error = %e, "redis call failed");
        let mut a = ApiError::unavailable(format!("{what} unavailable: {}", e.public_reason()));
        a.retry_after_s = Some(1);
        a
    }

    /// Why the log refused an append, as the contract names it: a full
    /// disk (`storage_full`, retry soon: nothing was kept), a log that can
    /// no longer be trusted (`storage_failed`: an operator must look), or
    /// anything else (`unavailable`).
    pub fn from_log(e: &herald_log::LogError) -> ApiError {
        use herald_log::LogError as L;
        let (code, retry) = match e {
            L::DiskFull { .. } => ("storage_full", 5),
            L::Poisoned(_) | L::Io { .. } | L::ReadOnly { .. } | L::CorruptSegment { .. } => {
                ("storage_failed", 60)
            }
            _ => ("unavailable", 1),
        };
        let mut a = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            format!("events could not be made durable: {e}"),
        );
        a.retry_after_s = Some(retry);
        a
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            herald_types::error_body(self.code, &self.message, self.index, self.field.as_deref())
                .to_string();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}
