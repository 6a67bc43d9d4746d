//! Object subscriptions (who follows a thread): `PUT` and `DELETE
//! /v1/objects/{object}/subscribers` with `{"users": [ids]}`, and `GET`
//! a page of them. A kind whose `notify` includes `subscribers` tells
//! every subscriber of its event's object but the actor.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{encoding, parse, read_limited, user_id};
use crate::error::ApiError;
use crate::http::{authorize, respond, Scope};
use crate::validate::MAX_OBJECT;
use crate::Gateway;

/// Users in one `PUT` or `DELETE`.
pub const MAX_USERS_PER_CHANGE: usize = 10_000;

/// Largest body of a change (10,000 ids as decimal strings fit).
const MAX_CHANGE_BYTES: usize = 512 * 1024;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new().routes(routes!(subscribe, unsubscribe, subscribers))
}

/// The path's object: what events name as `object` (1 to 128 bytes).
fn object(raw: &str) -> Result<&str, ApiError> {
    if raw.is_empty() || raw.len() > MAX_OBJECT {
        return Err(ApiError::field(
            "invalid_field",
            "object",
            format!("object must be 1 to {MAX_OBJECT} bytes"),
        ));
    }
    Ok(raw)
}

/// `{"users": [ids]}`: 1 to 10,000 user ids, nothing else.
fn users(v: &Value) -> Result<Vec<u64>, ApiError> {
    let bad = |why: &str| ApiError::field("invalid_field", "users", why.to_string());
    let m = v
        .as_object()
        .ok_or_else(|| ApiError::malformed("body must be {\"users\": [ids]}"))?;
    if let Some(k) = m.keys().find(|k| *k != "users") {
        return Err(ApiError::field(
            "unknown_field",
            k.clone(),
            format!("unknown field {k:?}"),
        ));
    }
    let list = m
        .get("users")
        .ok_or_else(|| ApiError::field("missing_field", "users", "users is required"))?
        .as_array()
        .ok_or_else(|| bad("users must be an array of user ids"))?;
    if list.is_empty() || list.len() > MAX_USERS_PER_CHANGE {
        return Err(bad(&format!(
            "users must hold 1 to {MAX_USERS_PER_CHANGE} ids"
        )));
    }
    list.iter()
        .map(|u| user_id(u).ok_or_else(|| bad("users must be user ids")))
        .collect()
}

async fn change(
    gw: &Gateway,
    headers: &HeaderMap,
    raw: &str,
    body: Body,
    add: bool,
) -> Result<Value, ApiError> {
    authorize(gw, headers, Scope::Ingest)?;
    let object = object(raw)?;
    let enc = encoding(headers)?;
    let bytes = read_limited(headers, body, MAX_CHANGE_BYTES).await?;
    let users = users(&parse(&bytes, enc)?)?;
    let unavailable = |e: herald_store::StoreError| ApiError::store("subscriber store", e);
    let n = if add {
        let at = herald_types::now_us();
        gw.store.subscribe_object(object, &users, at).await
    } else {
        gw.store.unsubscribe_object(object, &users).await
    }
    .map_err(unavailable)?;
    // A thread on the pull path: every edge indexes (or forgets) those of
    // them connected to it, so they hear its next post live.
    if let Some(t) = gw.celebrities.hot_thread(object) {
        for &follower in &users {
            gw.every_edge
                .send(herald_types::EdgeCommand::FollowChanged {
                    follower,
                    outbox: herald_types::Outbox::Thread(t),
                    follows: add,
                });
        }
    }
    Ok(json!({ "subscribers": n }))
}

/// Subscribes users to an object (a thread): events of kinds that notify
/// `subscribers` reach them.
#[utoipa::path(put, path = "/v1/objects/{object}/subscribers", tag = "objects",
    params(("object" = String, Path, description = "The object, as events name it (percent-encoded)")),
    request_body(content = crate::schema::Users, description = "JSON or MessagePack"),
    responses((status = 200, body = crate::schema::Subscribers), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn subscribe(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Body,
) -> Response {
    respond(change(&gw, &headers, &raw, body, true).await)
}

/// Unsubscribes users from an object.
#[utoipa::path(delete, path = "/v1/objects/{object}/subscribers", tag = "objects",
    params(("object" = String, Path, description = "The object, as events name it (percent-encoded)")),
    request_body(content = crate::schema::Users, description = "JSON or MessagePack"),
    responses((status = 200, body = crate::schema::Subscribers), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 413, description = "Body too large", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn unsubscribe(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Body,
) -> Response {
    respond(change(&gw, &headers, &raw, body, false).await)
}

/// A page of an object's subscribers, in id order.
#[utoipa::path(get, path = "/v1/objects/{object}/subscribers", tag = "objects",
    params(("object" = String, Path, description = "The object, as events name it (percent-encoded)"),
        ("limit" = Option<usize>, Query, description = "1 to 1,000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "A previous page's `next`")),
    responses((status = 200, body = crate::schema::SubscriberPage), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn subscribers(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        authorize(&gw, &headers, Scope::Read)?;
        let object = object(&raw)?;
        let max = herald_store::MAX_SUBSCRIBER_PAGE;
        let limit = match q.get("limit") {
            None => 100,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "invalid_field",
                        "limit",
                        format!("limit must be 1 to {max}"),
                    )
                })?,
        };
        let after = match q.get("cursor") {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                ApiError::field(
                    "invalid_field",
                    "cursor",
                    "cursor must be a previous page's \"next\"",
                )
            })?),
        };
        let (users, next) = gw
            .store
            .subscribers_page(object, after, limit)
            .await
            .map_err(|e| ApiError::store("subscriber store", e))?;
        Ok(json!({"users": users, "next": next.map(|u| u.to_string())}))
    }
    .await;
    respond(r)
}
