//! The HTTP handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_types::{ids, WireFormat};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::append::append;
use crate::body::{encoding, read_limited};
use crate::error::ApiError;
use crate::http::{authorize, authorize_for, path_user, reject, respond, Scope};
use crate::Gateway;

/// Most pairs in one graph import request.
pub const MAX_IMPORT_PAIRS: usize = 1_000_000;
/// Most notifications returned by one inbox read.
pub const MAX_INBOX_LIMIT: usize = 1000;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new()
        .routes(routes!(post_events))
        .routes(routes!(post_follows))
        .routes(routes!(follower_count))
        .routes(routes!(inbox))
}

/// Posts one event or a batch; `202` once every event is durable in the
/// log (all or nothing).
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(description = "JSON, or MessagePack (`application/msgpack`, the same shape); at most 4 MiB and 10,000 events",
        content((crate::schema::EventsBody = "application/json"), (crate::schema::EventsBody = "application/msgpack"))),
    params(("traceparent" = Option<String>, Header, description = "W3C trace context (`00-<trace id>-<span id>-<flags>`). When tracing is on (`telemetry.otlp_endpoint`) and the caller samples, Herald's spans for these events (accepting, fanning out, pushing each notification) join this trace; otherwise ignored.")),
    responses(
        (status = 202, description = "Durable", body = crate::schema::Accepted),
        (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody),
        (status = 413, description = "Body or batch too large", body = crate::schema::ErrorBody),
        (status = 415, description = "Unknown content type", body = crate::schema::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::schema::ErrorBody),
        (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn post_events(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    match accept(&gw, &headers, body).await {
        Ok(ids) => {
            metrics::counter!("herald_events_accepted_total").increment(ids.len() as u64);
            // Written straight from the ids (a `json!` value would copy
            // every id once more).
            let body = crate::schema::Accepted {
                accepted: ids.len(),
                ids,
            };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => reject(e),
    }
}

async fn accept(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Vec<String>, ApiError> {
    // Traced (only when tracing is on): the span ends once the events are
    // durable or refused; each event's record names it as the parent of
    // its fan-out.
    let mut span = if herald_types::trace::enabled() {
        let tp = headers.get("traceparent").and_then(|v| v.to_str().ok());
        herald_types::trace::start_request("herald.ingest", tp)
    } else {
        None
    };
    let r = accept_traced(gw, headers, body, span.as_ref()).await;
    if let Some(s) = &mut span {
        match &r {
            Ok(ids) => s.set("herald.events", ids.len() as i64),
            Err(e) => s.fail(e.code),
        }
    }
    r
}

async fn accept_traced(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Body,
    span: Option<&herald_types::trace::Span>,
) -> Result<Vec<String>, ApiError> {
    let key = authorize(gw, headers, Scope::Ingest)?;
    if let Some(l) = &gw.key_limiter {
        if l.check_key(&key).is_err() {
            return Err(ApiError::rate_limited("API key", 1));
        }
    }
    let enc = encoding(headers)?;
    let bytes = read_limited(headers, body, gw.cfg.max_body_bytes).await?;
    let limits = crate::validate::Limits {
        max_batch: gw.cfg.max_batch,
        max_data: gw.cfg.max_data_bytes,
    };
    let mut events = crate::batch::events_from(&bytes, enc, limits)?;
    if let Some(l) = &gw.actor_limiter {
        for (i, e) in events.iter().enumerate() {
            if l.check_key(&e.actor).is_err() {
                return Err(ApiError::rate_limited("actor", 1).at(i));
            }
        }
    }
    // Idempotency keys are scoped to the producer's API key.
    let scope = (!key.is_empty()).then(|| ids::producer_scope(&key));
    let start = gw.stamp(events.len() as u64);
    let trace = span.map(herald_types::trace::Span::context);
    for (i, e) in events.iter_mut().enumerate() {
        e.accepted_us = start + i as u64;
        e.scope.clone_from(&scope);
        e.trace = trace;
    }
    append(gw, &events).await
}

/// Bulk import of follow pairs (seeding a graph).
#[utoipa::path(post, path = "/v1/graph/follows", tag = "graph",
    request_body(content = crate::schema::Follows, description = "JSON or MessagePack"),
    responses((status = 200, description = "Imported", body = crate::schema::Imported), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody),
        (status = 413, description = "Too many pairs or bytes", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn post_follows(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let key = authorize(&gw, &headers, Scope::Ingest)?;
        // An import is a request like any other of its key's.
        if let Some(l) = &gw.key_limiter {
            if l.check_key(&key).is_err() {
                return Err(ApiError::rate_limited("API key", 1));
            }
        }
        let enc = encoding(&headers)?;
        let bytes = read_limited(&headers, body, gw.cfg.max_import_bytes).await?;
        let pairs = crate::import::parse_follows(&bytes, enc, MAX_IMPORT_PAIRS)?;
        drop(bytes);
        let unavailable = |e: herald_store::StoreError| ApiError::store("follower store", e);
        gw.store.import_follows(&pairs).await.map_err(unavailable)?;
        // Followees may have crossed the celebrity threshold: the distinct
        // followees, without a second list of every pair.
        let n = pairs.len();
        let mut pairs = pairs;
        pairs.sort_unstable_by_key(|p| p.1);
        pairs.dedup_by_key(|p| p.1);
        let followees: Vec<u64> = pairs.iter().map(|p| p.1).collect();
        drop(pairs);
        gw.store
            .refresh_celebrities(&gw.celebrities, gw.cfg.celebrity, &followees)
            .await
            .map_err(unavailable)?;
        Ok(n)
    }
    .await;
    match r {
        Ok(n) => (StatusCode::OK, Json(json!({"imported": n}))).into_response(),
        Err(e) => reject(e),
    }
}

/// How many followers a user has.
#[utoipa::path(get, path = "/v1/users/{id}/followers/count", tag = "graph",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    responses((status = 200, body = crate::schema::FollowerCount), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn follower_count(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        authorize(&gw, &headers, Scope::Read)?;
        let user = path_user(&id)?;
        let n = gw
            .store
            .follower_count(user)
            .await
            .map_err(|e| ApiError::store("follower store", e))?;
        Ok(json!({"user": user, "followers": n}))
    }
    .await;
    respond(r)
}

/// What waits for a user, oldest first; nothing is removed.
#[utoipa::path(get, path = "/v1/users/{id}/inbox", tag = "inbox",
    params(("id" = u64, Path, description = "User id (canonical decimal)"), ("limit" = Option<usize>, Query, description = "1 to 1,000 (default 100)")),
    responses((status = 200, body = crate::schema::Inbox), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn inbox(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Read, user)?;
        let limit = match q.get("limit") {
            None => 100,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_INBOX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "invalid_field",
                        "limit",
                        format!("limit must be 1 to {MAX_INBOX_LIMIT}"),
                    )
                })?,
        };
        let unavailable = |e: herald_store::StoreError| ApiError::store("inbox store", e);
        let snap = gw
            .store
            .inbox_snapshot(user, limit, false)
            .await
            .map_err(unavailable)?;
        let mut out = format!(
            r#"{{"user":{user},"pending":{},"notifications":["#,
            snap.pending
        )
        .into_bytes();
        for (i, n) in snap.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing into a Vec fails only on a serializer error, which
            // the notification's plain fields do not raise.
            let _ = n.write_to(WireFormat::Json, &mut out);
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
    .await;
    crate::http::respond_written(r)
}
