//! `GET /demo?user=<id>`: a page that shows Herald working, built on the
//! browser client (`clients/js`), served from the binary in development
//! mode only (`websocket.dev_mode`): it connects with `?user=`, which only
//! development mode accepts.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const PAGE: &str = include_str!("demo/index.html");
/// The compiled client (`clients/js/dist`), as published.
const CLIENT: &str = include_str!("../../../clients/js/dist/herald.js");
const MSGPACK: &str = include_str!("../../../clients/js/dist/msgpack.js");

pub fn router() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(client))
        .routes(routes!(client_msgpack))
}

/// The client's MessagePack module (`clients/js/dist/msgpack.js`).
#[utoipa::path(get, path = "/demo/msgpack.js", tag = "operations",
    responses((status = 200, description = "An ES module", content_type = "text/javascript")))]
async fn client_msgpack() -> Response {
    module(MSGPACK)
}

/// The demo page (development mode only).
#[utoipa::path(get, path = "/demo", tag = "operations", operation_id = "demo_page",
    params(("user" = Option<u64>, Query, description = "Connect as this user")),
    responses((status = 200, description = "The page", content_type = "text/html")))]
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// The browser client the demo page loads (`clients/js/dist/herald.js`).
#[utoipa::path(get, path = "/demo/herald.js", tag = "operations",
    responses((status = 200, description = "An ES module", content_type = "text/javascript")))]
async fn client() -> Response {
    module(CLIENT)
}

fn module(text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}
