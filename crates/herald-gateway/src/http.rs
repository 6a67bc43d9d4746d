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
        .and_then(herald_auth::bearer)
        .ok_or_else(ApiError::unauthorized)
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No key is configured: development, every route open.
    Open,
    /// A backend with an API key of a scope.
    Key { key: String, scope: Scope },
    /// A user with a valid JWT.
    User(u64),
}

pub(crate) use herald_auth::Scope;

/// Reads the credentials of a request: an API key, or a user's JWT.
pub(crate) fn principal(gw: &Gateway, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let open = gw.cfg.keys.is_empty();
    let Ok(token) = bearer(headers) else {
        return if open {
            Ok(Principal::Open)
        } else {
            Err(ApiError::unauthorized())
        };
    };
    if let Some(scope) = gw.cfg.keys.scope_of(token) {
        return Ok(Principal::Key {
            key: token.to_string(),
            scope,
        });
    }
    if let (Some(v), 2) = (&gw.cfg.jwt, token.matches('.').count()) {
        return v
            .verify(token, herald_types::now_ms() / 1000)
            .map(Principal::User)
            .map_err(|e| {
                let mut a = ApiError::unauthorized();
                a.message = format!("invalid token: {e}");
                a
            });
    }
    if open {
        Ok(Principal::Open)
    } else {
        Err(ApiError::unauthorized())
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", message)
}

/// A backend route: an API key of at least `need`. Returns the key
/// (empty when open).
pub(crate) fn authorize(
    gw: &Gateway,
    headers: &HeaderMap,
    need: Scope,
) -> Result<String, ApiError> {
    match principal(gw, headers)? {
        Principal::Open => Ok(String::new()),
        Principal::Key { key, scope } if scope >= need => Ok(key),
        Principal::Key { .. } => Err(forbidden(match need {
            Scope::Admin => "this API key has no admin rights (gateway.admin_keys)",
            _ => "this API key is read-only (gateway.read_keys)",
        })),
        Principal::User(_) => Err(forbidden("a user token cannot use this route")),
    }
}

/// A route about one user: an API key of at least `need`, or that user's
/// own token (any other user gets `403`).
pub(crate) fn authorize_for(
    gw: &Gateway,
    headers: &HeaderMap,
    need: Scope,
    user: u64,
) -> Result<(), ApiError> {
    match principal(gw, headers)? {
        Principal::User(u) if u == user => Ok(()),
        Principal::User(_) => Err(forbidden("a user may only act for themselves")),
        _ => authorize(gw, headers, need).map(|_| ()),
    }
}

/// `200` with the JSON value, or the error.
pub(crate) fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => reject(e),
    }
}

/// A JSON answer whose body is already written: notifications are spliced
/// in as their WebSocket frames are, so an event's `data` keeps its bytes
/// and key order.
pub(crate) fn respond_written(r: Result<Vec<u8>, ApiError>) -> Response {
    match r {
        Ok(b) => ([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response(),
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
