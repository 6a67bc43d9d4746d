//! Preference and mute endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use herald_prefs::{parse_document, Invalid, Mute, Resolved};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{encoding, parse, read_limited};
use crate::error::ApiError;
use crate::http::{authorize_for, path_user, respond, Scope};
use crate::Gateway;

/// Largest preferences or mutes body.
pub const MAX_PREFS_BODY: usize = 1024 * 1024;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new()
        .routes(routes!(get_prefs, put_prefs))
        .routes(routes!(add_mute, remove_mute))
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::field(e.code, e.field, e.message)
}

fn unavailable(e: herald_store::StoreError) -> ApiError {
    ApiError::store("preference store", e)
}

async fn current(gw: &Gateway, user: u64) -> Result<Value, ApiError> {
    let stored = gw
        .store
        .prefs_get_many(&[user])
        .await
        .map_err(unavailable)?;
    let r = stored
        .first()
        .map(Resolved::from_stored)
        .unwrap_or_default();
    Ok(r.to_api(herald_types::now_ms()))
}

/// The user's preferences, with the mutes in force.
#[utoipa::path(get, path = "/v1/users/{id}/preferences", tag = "preferences",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    responses((status = 200, body = crate::schema::Preferences), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn get_prefs(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Read, user)?;
        current(&gw, user).await
    }
    .await;
    respond(r)
}

/// Replaces the user's preference document; its `muted_actors` and
/// `muted_objects` replace the mutes (without an end time).
#[utoipa::path(put, path = "/v1/users/{id}/preferences", tag = "preferences",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    request_body(content = crate::schema::Preferences),
    responses((status = 200, body = crate::schema::Preferences), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn put_prefs(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Ingest, user)?;
        let enc = encoding(&headers)?;
        let bytes = read_limited(&headers, body, MAX_PREFS_BODY).await?;
        let doc = parse_document(&parse(&bytes, enc)?).map_err(invalid)?;
        let mut mutes: Vec<(String, u64)> = doc
            .muted_actors
            .iter()
            .map(|&a| (Mute::Actor(a).key(), 0))
            .collect();
        mutes.extend(
            doc.muted_objects
                .iter()
                .map(|o| (Mute::Object(o.clone()).key(), 0)),
        );
        gw.store
            .prefs_put(user, &doc.prefs.to_json(), &mutes)
            .await
            .map_err(unavailable)?;
        gw.prefs.invalidate(user);
        current(&gw, user).await
    }
    .await;
    respond(r)
}

/// `{"actor": id}` or `{"object": "..."}`, and for adding, `until_ms`.
fn mute_key(v: &Value, adding: bool) -> Result<(String, Option<u64>), ApiError> {
    let m = v.as_object().ok_or_else(|| {
        ApiError::malformed("body must be {\"actor\": id} or {\"object\": \"...\"}")
    })?;
    let allowed: &[&str] = if adding {
        &["actor", "object", "until_ms"]
    } else {
        &["actor", "object"]
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::field(
            "unknown_field",
            k.clone(),
            format!("unknown field {k:?}"),
        ));
    }
    let key =
        match (m.get("actor"), m.get("object")) {
            (Some(a), None) => Mute::Actor(herald_prefs::model::user_id(a).ok_or_else(|| {
                ApiError::field("invalid_field", "actor", "actor must be a user id")
            })?)
            .key(),
            (None, Some(o)) => Mute::Object(
                herald_prefs::model::object(o, "object")
                    .map_err(invalid)?
                    .to_string(),
            )
            .key(),
            _ => {
                return Err(ApiError::field(
                    "missing_field",
                    "actor",
                    "exactly one of actor or object is required",
                ))
            }
        };
    let until = match m.get("until_ms") {
        _ if !adding => 0,
        None | Some(Value::Null) => 0,
        Some(v) => {
            let u = v.as_u64().ok_or_else(|| {
                ApiError::field("invalid_field", "until_ms", "until_ms must be a time in ms")
            })?;
            if u <= herald_types::now_ms() {
                return Err(ApiError::field(
                    "invalid_field",
                    "until_ms",
                    "until_ms is in the past",
                ));
            }
            u
        }
    };
    Ok((key, Some(until)))
}

async fn change_mute(
    gw: &Gateway,
    headers: &HeaderMap,
    id: &str,
    body: Body,
    adding: bool,
) -> Result<Value, ApiError> {
    let user = path_user(id)?;
    authorize_for(gw, headers, Scope::Ingest, user)?;
    let enc = encoding(headers)?;
    let bytes = read_limited(headers, body, MAX_PREFS_BODY).await?;
    let (key, until) = mute_key(&parse(&bytes, enc)?, adding)?;
    gw.store
        .mute_set(user, &key, if adding { until } else { None })
        .await
        .map_err(unavailable)?;
    gw.prefs.invalidate(user);
    current(gw, user).await
}

/// Mutes an actor or an object, optionally until a time.
#[utoipa::path(post, path = "/v1/users/{id}/mutes", tag = "preferences",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    request_body(content = crate::schema::Mute),
    responses((status = 200, body = crate::schema::Preferences), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn add_mute(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(change_mute(&gw, &headers, &id, body, true).await)
}

/// Removes a mute.
#[utoipa::path(delete, path = "/v1/users/{id}/mutes", tag = "preferences",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    request_body(content = crate::schema::Mute),
    responses((status = 200, body = crate::schema::Preferences), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn remove_mute(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(change_mute(&gw, &headers, &id, body, false).await)
}
