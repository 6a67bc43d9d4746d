//! `GET /v1/users/{id}/presence`: whether a user is connected, and on how
//! many devices. Alone, this node's edge counts them; in a cluster, the
//! presence every edge keeps in Redis, counting only live nodes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::{authorize_for, path_user, respond, Scope};
use crate::Gateway;

pub fn router() -> OpenApiRouter<Arc<Gateway>> {
    OpenApiRouter::new().routes(routes!(presence))
}

/// Whether the user has a WebSocket open now, and how many (devices).
#[utoipa::path(get, path = "/v1/users/{id}/presence", tag = "presence",
    params(("id" = u64, Path, description = "User id (canonical decimal)")),
    responses((status = 200, body = crate::schema::Presence), (status = 400, description = "Invalid input: the field is named", body = crate::schema::ErrorBody), (status = 401, description = "Missing or bad credentials", body = crate::schema::ErrorBody), (status = 403, description = "Credentials without the right", body = crate::schema::ErrorBody), (status = 503, description = "Redis or the log cannot serve now (Retry-After)", body = crate::schema::ErrorBody)),
    security(("bearer" = [])))]
async fn presence(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let user = path_user(&id)?;
        authorize_for(&gw, &headers, Scope::Read, user)?;
        let devices = match (&gw.forwarder, &gw.edge) {
            // Alone: this node holds every connection.
            (None, Some(edge)) => edge.devices(user) as u64,
            _ => gw
                .store
                .presence_devices(user)
                .await
                .map_err(|e| ApiError::store("presence", e))?,
        };
        Ok(json!({"online": devices > 0, "devices": devices}))
    }
    .await;
    respond(r)
}
