//! The HTTP routes a node serves, and its OpenAPI document
//! (`GET /v1/openapi.json`), generated from the same route declarations:
//! every route is registered through `utoipa_axum`'s `routes!`, which takes
//! its path and method from the handler's `#[utoipa::path]`, so a route
//! cannot be served without being described (`tests/it/openapi.rs` checks
//! both ways against a running node).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::{demo, ops, Role};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Real-time social notification fan-out. Events in (`POST /v1/events`), notifications out over the WebSocket `GET /v1/ws` (frames: docs/asyncapi.yaml), the feed, preferences, operations. Errors share one body: `{\"error\": {\"code\", \"message\", \"index\"?, \"field\"?}}`.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "events", description = "What the product posts"),
        (name = "feed", description = "The list behind the bell icon"),
        (name = "inbox", description = "What waits for offline users"),
        (name = "preferences", description = "Modes, digests, quiet hours, mutes"),
        (name = "graph", description = "Follows"),
        (name = "websocket", description = "Live delivery"),
        (name = "presence", description = "Who is connected now"),
        (name = "objects", description = "Object subscriptions: who follows a thread"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "admin", description = "Dead letters, quarantine (admin keys)"),
        (name = "cluster", description = "Between nodes only"),
    )
)]
struct Base;

/// The document's frame: info, tags, the bearer scheme (API key or JWT).
fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    // OpenAPI 3.1 wants the SPDX identifier (or a URL) beside the name.
    doc.info.license = Some(
        utoipa::openapi::LicenseBuilder::new()
            .name("Apache-2.0")
            .identifier(Some("Apache-2.0"))
            .build(),
    );
    let c = doc.components.get_or_insert_with(Default::default);
    c.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (backends; scopes read, ingest, admin) or a user's JWT (their own inbox, feed and preferences)",
                ))
                .build(),
        ),
    );
    c.add_security_scheme(
        "token",
        SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Query(
            utoipa::openapi::security::ApiKeyValue::with_description(
                "token",
                "A user's JWT as a query parameter (WebSocket clients that cannot set headers)",
            ),
        )),
    );
    c.add_security_scheme(
        "cluster_key",
        SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
            utoipa::openapi::security::ApiKeyValue::with_description(
                "x-herald-cluster-key",
                "server.cluster_key: between the nodes of a cluster only",
            ),
        )),
    );
    doc.servers = Some(vec![utoipa::openapi::server::Server::new(
        "http://127.0.0.1:7400",
    )]);
    doc
}

/// This document: OpenAPI 3.1, generated at start from the routes.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json")))]
async fn openapi_json(State(doc): State<Arc<String>>) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()).into_response()
}

/// On an ingest node, the WebSocket is elsewhere.
#[utoipa::path(get, path = "/v1/ws", tag = "websocket", operation_id = "websocket_wrong_role",
    responses((status = 503, description = "`wrong_role`: an ingest node holds no WebSocket; connect to an edge node")),
    security(("bearer" = []), ("token" = [])))]
async fn wrong_role() -> herald_gateway::ApiError {
    herald_gateway::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "wrong_role",
        "this is an ingest node: it holds no WebSocket connections; connect to an edge node",
    )
}

fn method_not_allowed() -> herald_gateway::ApiError {
    herald_gateway::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see GET /v1/openapi.json",
    )
}

/// The HTTP routes a node of `role` serves.
pub(crate) fn app(
    cfg: &Config,
    role: Role,
    gateway: Option<Arc<herald_gateway::Gateway>>,
    edge: &Arc<herald_edge::Edge>,
    ops_state: ops::Ops,
    placement: Arc<dyn herald_types::Placement>,
) -> axum::Router {
    let mut app = OpenApiRouter::with_openapi(base()).merge(ops::router(ops_state));
    if let Some(g) = gateway {
        app = app.merge(herald_gateway::router(g));
    }
    if role.holds_connections() {
        app = app.merge(edge.router());
        if cfg.websocket.dev_mode {
            app = app.merge(demo::router());
        }
    } else {
        app = app.routes(routes!(wrong_role));
    }
    let doc_route = OpenApiRouter::<Arc<String>>::new().routes(routes!(openapi_json));
    let (doc_router, doc_part) = doc_route.split_for_parts();
    let (router, mut doc) = app.split_for_parts();
    doc.merge(doc_part);
    if role == Role::Edge {
        // An edge serves the whole contract (it proxies the rest).
        doc.merge(herald_gateway::api_doc());
    }
    let json = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".into()));
    let app = router.merge(doc_router.with_state(json));
    if role == Role::Edge {
        // Every other route: to an ingest node, as it was asked.
        let fwd = Arc::new(herald_gateway::Forwarder::new(
            cfg.server.cluster_key.clone(),
        ));
        return app.fallback(move |req: axum::extract::Request| {
            let (fwd, placement) = (fwd.clone(), placement.clone());
            async move {
                match placement.any_ingest() {
                    Some(addr) => fwd.proxy(&addr, req).await,
                    None => herald_gateway::forward::unavailable(
                        "no ingest node is alive to serve this route".into(),
                    ),
                }
            }
        });
    }
    app.fallback(|| async {
        herald_gateway::ApiError::not_found("no such route; see GET /v1/openapi.json")
    })
    .method_not_allowed_fallback(|| async { method_not_allowed() })
    .layer(axum::middleware::from_fn(timed))
}

/// Records each request's time to answer, by route template, method and
/// status class (`herald_http_request_seconds`).
async fn timed(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!("herald_http_request_seconds", "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    resp
}
