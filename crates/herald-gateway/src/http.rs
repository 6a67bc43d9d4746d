//! What every HTTP handler of the gateway shares: API-key checks, the
//! user id in a path, and turning a result into a response (counting
//! refusals by code).

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::body::user_id;
use crate::error::ApiError;
use crate::Gateway;

/// The key of `Authorization: Bearer <key>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)
}

pub(crate) fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<String, ApiError> {
    if gw.cfg.api_keys.is_empty() {
        return Ok(String::new());
    }
    let key = bearer(headers)?;
    if gw.cfg.api_keys.iter().any(|k| k == key) {
        Ok(key.to_string())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// `200` with the JSON value, or the error.
pub(crate) fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => reject(e),
    }
}

pub(crate) fn reject(e: ApiError) -> Response {
    metrics::counter!("herald_gateway_rejected_total", "code" => e.code).increment(1);
    e.into_response()
}

pub(crate) fn path_user(raw: &str) -> Result<u64, ApiError> {
    user_id(&Value::String(raw.to_string()))
        .ok_or_else(|| ApiError::field("invalid_field", "id", format!("{raw:?} is not a user id")))
}
