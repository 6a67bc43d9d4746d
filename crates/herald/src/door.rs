//! The front door: accepting TCP connections with limits and deadlines,
//! and serving HTTP/1.1 (and WebSocket upgrades) on them.
//!
//! - The node holds at most `max_connections` connections; past it a new
//!   one is closed as soon as it is accepted.
//! - Per client address: at most `per_ip_connections` open and
//!   `per_ip_rate` new ones per second (burst `per_ip_connections`). A
//!   connection over either limit is still served, briefly: every HTTP
//!   request on it is answered `429 too_many_connections`, a WebSocket
//!   upgrade is completed and closed with code 4029, and the connection is
//!   closed.
//! - Deadlines: the request head (headers) must arrive within
//!   `header_timeout`, and the same deadline bounds an idle keep-alive
//!   connection between requests; a request body must arrive within
//!   `body_timeout` of the request's start (`408 request_timeout`),
//!   however it trickles in. A slow client never holds a descriptor past
//!   its deadline. Upgraded WebSockets have their own heartbeat and idle
//!   timeout (the edge's).

use herald_types::sync::Locked;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Limits and deadlines of the front door (`[http]` in the config).
#[derive(Debug, Clone)]
pub struct DoorConfig {
    pub max_connections: usize,
    pub per_ip_connections: usize,
    pub per_ip_rate: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long shutdown waits for in-flight HTTP requests.
    pub drain_timeout: Duration,
    /// Browser origins answered with CORS headers (`http.cors_origins`;
    /// `*` for any); empty: no CORS.
    pub cors_origins: Vec<String>,
}

/// The CORS layer for `origins` (checked at start by the config): preflight
/// requests answered, responses to those origins carrying the headers.
/// Credentials are bearer tokens, never cookies, so no
/// `Access-Control-Allow-Credentials`.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Answers `501 unsupported_transfer_encoding` to a request whose body
/// comes in a transfer coding other than `chunked` alone (`gzip, chunked`,
/// say): hyper would pass the still-encoded bytes on as the body. The
/// connection is closed, its body unread.
async fn refuse_transfer_codings(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let other = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .any(|c| !c.eq_ignore_ascii_case("chunked"));
    if !other {
        return next.run(req).await;
    }
    let e = herald_gateway::ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "unsupported_transfer_encoding",
        "only the chunked transfer coding is accepted (send Content-Length, or Transfer-Encoding: chunked)",
    );
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Open connections, in total and per address.
struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place in [`Counts`]; given back when dropped
/// (by the HTTP connection, and by the WebSocket it became, whichever
/// ends last).
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        let mut m = self.counts.per_ip.locked();
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
        metrics::gauge!("herald_http_connections").decrement(1.0);
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting and waits up to `drain_timeout` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: DoorConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts {
        total: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
    });
    let burst = NonZeroU32::new(cfg.per_ip_connections.clamp(1, u32::MAX as usize) as u32)
        .unwrap_or(NonZeroU32::MIN);
    let rate = NonZeroU32::new(cfg.per_ip_rate)
        .map(|r| governor::RateLimiter::keyed(governor::Quota::per_second(r).allow_burst(burst)));
    let mut app = app
        .layer(axum::middleware::from_fn(refuse_transfer_codings))
        .layer(axum::middleware::from_fn(refuse_limited));
    if !cfg.cors_origins.is_empty() {
        app = app.layer(cors(&cfg.cors_origins));
    }
    // Shutdown: connections finish the request in hand and close; `alive`
    // counts the connection tasks still running.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alive = Arc::new(());
    let mut forget = tokio::time::interval(Duration::from_secs(60));
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (or a similar passing failure):
                    // wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = forget.tick() => {
                if let Some(r) = &rate {
                    r.retain_recent();
                }
                continue;
            }
            _ = &mut shutdown => break,
        };
        if counts.total.load(Ordering::Relaxed) >= cfg.max_connections {
            metrics::counter!("herald_http_refused_total", "reason" => "capacity").increment(1);
            drop(sock);
            continue;
        }
        let ip = peer.ip();
        let open_here = {
            let mut m = counts.per_ip.locked();
            let n = m.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        counts.total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("herald_http_connections").increment(1.0);
        let slot: Arc<dyn std::any::Any + Send + Sync> = Arc::new(Slot {
            counts: counts.clone(),
            ip,
        });
        let limited = open_here > cfg.per_ip_connections
            || rate.as_ref().is_some_and(|r| r.check_key(&ip).is_err());
        if limited {
            metrics::counter!("herald_http_refused_total", "reason" => "address_limit")
                .increment(1);
        }
        let _ = sock.set_nodelay(true);
        let admission = herald_edge::Admission {
            limited,
            hold: slot.clone(),
        };
        let app = app.clone();
        let body_timeout = cfg.body_timeout;
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let deadline = tokio::time::Instant::now() + body_timeout;
            let mut req =
                req.map(|b| Body::new(herald_gateway::body::Deadline::new(Body::new(b), deadline)));
            req.extensions_mut().insert(admission.clone());
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .serve_connection(TokioIo::new(sock), svc)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let mut conn = Box::pin(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "http connection ended with an error");
            }
            drop((slot, alive));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let until = tokio::time::Instant::now() + cfg.drain_timeout;
    while Arc::strong_count(&alive) > 1 {
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                connections = Arc::strong_count(&alive) - 1,
                "HTTP connections still open at the end of the drain timeout"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Answers `429` to every request of a connection over its address's
/// limits, except a WebSocket upgrade (the edge closes it with 4029).
async fn refuse_limited(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let limited = req
        .extensions()
        .get::<herald_edge::Admission>()
        .is_some_and(|a| a.limited);
    if !limited || req.uri().path() == "/v1/ws" {
        return next.run(req).await;
    }
    let mut e = herald_gateway::ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        "too many connections, or new connections, from this address",
    );
    e.retry_after_s = Some(1);
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
