//! `GET /v1/ws`: who is connecting, whether this node takes them, and the
//! WebSocket handshake (RFC 6455 §4.2), done here so that the connection
//! keeps the raw TCP socket (see `wire`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use herald_types::{UserId, WireFormat};

use crate::{conn, wire, Edge, EdgeConfig};

/// A refusal before the upgrade, in the API's one error shape.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = herald_types::error_body(code, message, None, None);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What the front door decided about the TCP connection a request came
/// on (a request extension): over its address's limits, and a hold on the
/// connection's slot that an upgraded WebSocket keeps until it closes.
#[derive(Clone)]
pub struct Admission {
    pub limited: bool,
    pub hold: Arc<dyn std::any::Any + Send + Sync>,
}

/// Close code for a connection over its address's limits.
const CLOSE_TOO_MANY: u16 = 4029;
/// Close code for a missing, bad or expired token (policy violation).
const CLOSE_UNAUTHORIZED: u16 = 1008;

/// The subprotocol that selects MessagePack frames.
const MSGPACK: &str = "herald.msgpack";

/// The WebSocket: live notifications, the inbox drained at connect, acks.
/// Frames and close codes: `docs/asyncapi.yaml`.
#[utoipa::path(get, path = "/v1/ws", tag = "websocket",
    params(
        ("token" = Option<String>, Query, description = "The user's JWT (or `Authorization: Bearer`)"),
        ("user" = Option<u64>, Query, description = "Development mode only: connect as this user")),
    responses(
        (status = 101, description = "Upgraded: the server sends `hello`, then notifications; a missing, bad or expired token is upgraded too, then closed at once with 1008 and the reason (`unauthorized: ...`)"),
        (status = 400, description = "Not a WebSocket upgrade"),
        (status = 503, description = "At the connection limit, shutting down, or not an edge node")),
    security(("bearer" = []), ("token" = [])))]
pub(crate) async fn upgrade(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    admission: Option<axum::Extension<Admission>>,
    mut req: axum::extract::Request,
) -> Response {
    let key = match websocket_key(&headers) {
        Ok(k) => k,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let hold = admission.as_ref().map(|a| a.hold.clone());
    if admission.as_ref().is_some_and(|a| a.limited) {
        // Over its address's limits: the handshake completes so that the
        // client reads why, then the socket closes with 4029.
        metrics::counter!("herald_ws_refused_total", "reason" => "address_limit").increment(1);
        let write_timeout = edge.cfg.write_timeout;
        tokio::spawn(async move {
            if let Some((mut sock, _)) = take_socket(on_upgrade).await {
                let bye = wire::close(CLOSE_TOO_MANY, "too many connections from this address");
                let _ = tokio::time::timeout(write_timeout, sock.write_all(&bye)).await;
            }
            drop(hold);
        });
        return switching(&key, None);
    }
    let user = match authenticate(&edge.cfg, &headers, &q).await {
        Ok(u) => u,
        Err(e) => {
            // The handshake completes and the socket closes with 1008 and
            // the reason: a browser sees an HTTP 401 only as close 1006,
            // which a client cannot tell from a network failure.
            metrics::counter!("herald_ws_refused_total", "reason" => "auth").increment(1);
            let write_timeout = edge.cfg.write_timeout;
            let reason = format!("unauthorized: {e}");
            tokio::spawn(async move {
                if let Some((mut sock, _)) = take_socket(on_upgrade).await {
                    let bye = wire::close(CLOSE_UNAUTHORIZED, &reason);
                    let _ = tokio::time::timeout(write_timeout, sock.write_all(&bye)).await;
                }
                drop(hold);
            });
            return switching(&key, None);
        }
    };
    if *edge.shutdown.borrow() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is shutting down",
        );
    }
    if edge.connections() >= edge.cfg.max_connections {
        metrics::counter!("herald_ws_refused_total", "reason" => "capacity").increment(1);
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node is at its connection limit",
        );
    }
    let msgpack = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == MSGPACK);
    let fmt = if msgpack {
        WireFormat::MsgPack
    } else {
        WireFormat::Json
    };
    tokio::spawn(async move {
        if let Some((sock, early)) = take_socket(on_upgrade).await {
            conn::serve(edge, sock, early, user, fmt).await;
        }
        drop(hold);
    });
    switching(&key, msgpack.then_some(MSGPACK))
}

/// The client's `Sec-WebSocket-Key`, once the request is a WebSocket
/// upgrade (version 13).
fn websocket_key(h: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("not a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    match h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if !k.trim().is_empty() => Ok(k.trim().to_string()),
        _ => Err("Sec-WebSocket-Key is missing"),
    }
}

/// `101 Switching Protocols`.
fn switching(key: &str, protocol: Option<&'static str>) -> Response {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    r
}

/// The TCP socket under the upgraded HTTP connection, and any bytes the
/// client sent after its request that HTTP had already read (copied out:
/// the buffer they sit in is HTTP's whole read buffer, not kept for the
/// connection's life).
async fn take_socket(on: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Vec<u8>)> {
    let up = match on.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade did not complete");
            return None;
        }
    };
    match up.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some((parts.io.into_inner(), parts.read_buf.to_vec())),
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP socket; closed");
            None
        }
    }
}

async fn authenticate(
    cfg: &EdgeConfig,
    headers: &HeaderMap,
    q: &std::collections::HashMap<String, String>,
) -> Result<UserId, herald_auth::AuthError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(herald_auth::bearer)
        .map(str::to_string);
    if let Some(token) = bearer.or_else(|| q.get("token").cloned()) {
        let Some(v) = &cfg.jwt else {
            return Err(herald_auth::AuthError::NotConfigured);
        };
        return v.verify_fresh(&token, herald_types::now_ms() / 1000).await;
    }
    if cfg.dev_mode {
        if let Some(u) = q.get("user") {
            return herald_types::ids::parse_user(u)
                .ok_or_else(|| herald_auth::AuthError::BadUser(u.clone()));
        }
    }
    Err(herald_auth::AuthError::Missing)
}
