//! Operator routes under `/v1/admin/`: dead letters (list, replay) and the
//! log's quarantine (list, acknowledge).
//!
//! Open like every route when the node needs no API key (development);
//! otherwise only keys listed in `gateway.admin_keys` are let in.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use herald_store::DeadLetter;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::append::append;
use crate::body::{encoding, parse, read_limited};
use crate::error::ApiError;
use crate::http::respond;
use crate::Gateway;

/// Most dead letters listed or replayed at once.
pub const MAX_DEAD_LETTERS_PAGE: usize = 10_000;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new()
        .routes(routes!(list_dead))
        .routes(routes!(replay_dead))
        .routes(routes!(list_quarantine))
        .routes(routes!(ack_quarantine))
        .routes(routes!(crate::cluster::cluster))
        .routes(routes!(crate::cluster::add_node))
        .routes(routes!(crate::cluster::remove_node))
}

fn authorize_admin(gw: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    crate::http::authorize(gw, headers, crate::http::Scope::Admin).map(|_| ())
}

fn store_down(e: herald_store::StoreError) -> ApiError {
    ApiError::store("dead-letter store", e)
}

/// Records fan-out could not process after bounded retries.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin",
    params(("limit" = Option<usize>, Query, description = "Most returned")),
    responses((status = 200, body = crate::schema::DeadLetters), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn list_dead(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let r = async {
        authorize_admin(&gw, &headers)?;
        let limit = match q.get("limit") {
            None => 100,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_DEAD_LETTERS_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::field(
                        "invalid_field",
                        "limit",
                        format!("limit must be 1..={MAX_DEAD_LETTERS_PAGE}"),
                    ))
                }
            },
        };
        let list = gw.store.dead_letter_list(limit).await.map_err(store_down)?;
        let total = gw.store.dead_letter_count().await.map_err(store_down)?;
        let items: Vec<Value> = list.iter().map(render).collect();
        Ok(json!({"dead_letters": items, "total": total}))
    }
    .await;
    respond(r)
}

fn render(d: &DeadLetter) -> Value {
    let mut v = json!({
        "id": d.id,
        "partition": d.partition,
        "offset": d.offset,
        "reason": d.reason,
        "at_ms": d.at_ms,
        "event": d.event.as_ref().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)),
    });
    if let Some(w) = &d.webhook {
        v["webhook"] = w.clone();
    }
    v
}

/// Processes dead letters again.
#[utoipa::path(post, path = "/v1/admin/dead-letters/replay", tag = "admin",
    request_body(content = crate::schema::Replay),
    responses((status = 200, body = crate::schema::Replayed), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn replay_dead(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let r = async {
        authorize_admin(&gw, &headers)?;
        let enc = encoding(&headers)?;
        let bytes = read_limited(&headers, body, 1 << 20).await?;
        let v = parse(&bytes, enc)?;
        let bad =
            || ApiError::malformed("body must be {\"ids\": [\"dl-...\", ...]} or {\"all\": true}");
        let Value::Object(m) = v else {
            return Err(bad());
        };
        let list = match (m.get("ids"), m.get("all")) {
            (Some(Value::Array(ids)), None) => {
                if ids.len() > MAX_DEAD_LETTERS_PAGE {
                    return Err(ApiError::too_large(format!(
                        "at most {MAX_DEAD_LETTERS_PAGE} ids per replay"
                    )));
                }
                let ids: Option<Vec<String>> =
                    ids.iter().map(|i| i.as_str().map(String::from)).collect();
                let ids = ids.ok_or_else(|| {
                    ApiError::field("invalid_field", "ids", "ids must be strings")
                })?;
                gw.store.dead_letter_get(&ids).await.map_err(store_down)?
            }
            (None, Some(Value::Bool(true))) => gw
                .store
                .dead_letter_list(MAX_DEAD_LETTERS_PAGE)
                .await
                .map_err(store_down)?,
            _ => return Err(bad()),
        };
        // Webhook items are parked for the webhook again (when one is
        // configured; otherwise they stay listed).
        let (hooks, list): (Vec<_>, Vec<_>) = list.into_iter().partition(|d| d.webhook.is_some());
        let mut hook_ids = Vec::new();
        if gw.cfg.webhook && !hooks.is_empty() {
            let items: Vec<Value> = hooks.iter().filter_map(|d| d.webhook.clone()).collect();
            for (p, rows) in herald_store::webhook_rows(&items, gw.log.partitions()) {
                gw.store
                    .webhook_enqueue(p, &rows)
                    .await
                    .map_err(store_down)?;
            }
            hook_ids = hooks.into_iter().map(|d| d.id).collect();
            gw.store
                .dead_letter_remove(&hook_ids)
                .await
                .map_err(store_down)?;
            tracing::info!(count = hook_ids.len(), "webhook dead letters parked again");
        }
        // Undecodable records cannot be replayed; they stay listed.
        let (ids, events): (Vec<String>, Vec<herald_types::LogEvent>) = list
            .into_iter()
            .filter_map(|d| {
                let mut e = d.event?;
                // The replay keeps the id it first had, so its
                // notifications keep theirs.
                if e.replay_of.is_none() {
                    e.replay_of = Some(herald_types::ids::event_id(
                        &gw.cfg.id_scope,
                        d.partition,
                        d.offset,
                    ));
                }
                Some((d.id, e))
            })
            .unzip();
        if !events.is_empty() {
            append(&gw, &events).await?;
            gw.store
                .dead_letter_remove(&ids)
                .await
                .map_err(store_down)?;
            tracing::info!(count = ids.len(), "dead letters replayed");
        }
        Ok(json!({"replayed": ids.len() + hook_ids.len()}))
    }
    .await;
    respond(r)
}

/// Log ranges moved aside by recovery, not yet acknowledged.
#[utoipa::path(get, path = "/v1/admin/log/quarantine", tag = "admin",
    responses((status = 200, description = "Quarantine reports", body = serde_json::Value), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn list_quarantine(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let r = async {
        authorize_admin(&gw, &headers)?;
        let q = gw
            .log
            .quarantine()
            .map_err(|e| ApiError::unavailable(format!("quarantine unreadable: {e}")))?;
        let v = serde_json::to_value(&q).unwrap_or(Value::Null);
        Ok(json!({ "quarantine": v }))
    }
    .await;
    respond(r)
}

/// Acknowledges the quarantine reports (they leave `/readyz`).
#[utoipa::path(post, path = "/v1/admin/log/quarantine/ack", tag = "admin",
    responses((status = 200, description = "Acknowledged", body = serde_json::Value), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn ack_quarantine(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let r = async {
        authorize_admin(&gw, &headers)?;
        let n = gw
            .log
            .acknowledge_quarantine()
            .map_err(|e| ApiError::unavailable(format!("quarantine not acknowledged: {e}")))?;
        tracing::info!(count = n, "quarantine acknowledged by an operator");
        metrics::gauge!("herald_log_quarantined_ranges").set(0.0);
        Ok(json!({ "acknowledged": n }))
    }
    .await;
    respond(r)
}
