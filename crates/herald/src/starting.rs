//! Starting while Redis is unreachable: the node listens at once and says
//! it is not ready (so an orchestrator sees a live, unready process rather
//! than a crash loop), and connects as soon as Redis answers.
//!
//! Until then every request is answered here: `/healthz` 200, `/readyz`
//! 503 naming Redis, anything else `503 unavailable`; each answer closes
//! its connection, so clients come back to the real router once it runs.

use herald_types::sync::Locked;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Config;

/// The first wait between attempts; doubles up to [`MOST`].
const FIRST: Duration = Duration::from_millis(200);
const MOST: Duration = Duration::from_secs(5);
/// Longest a request to the starting node may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to Redis and reads the celebrity set, retrying with backoff
/// for as long as it takes while answering HTTP as unready. None when
/// `shutdown` completes first.
pub(crate) async fn connect_redis<S: Future<Output = ()> + Unpin>(
    cfg: &Config,
    listener: &TcpListener,
    celebrities: &Arc<herald_store::CelebritySet>,
    shutdown: &mut S,
) -> Option<herald_store::Store> {
    let why = Arc::new(std::sync::Mutex::new(String::from("connecting")));
    let mut backoff = herald_types::Backoff::new(FIRST, MOST);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let wait = backoff.next_wait();
        let r = async {
            let store = herald_store::Store::connect(cfg.store_config()).await?;
            store.load_celebrities(celebrities).await?;
            store.preload_scripts().await?;
            Ok::<_, herald_store::StoreError>(store)
        };
        let outcome = tokio::select! {
            r = r => r,
            _ = &mut *shutdown => return None,
        };
        match outcome {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(attempts = attempt, "redis reachable; starting");
                }
                return Some(store);
            }
            Err(e) => {
                tracing::warn!(url = %cfg.redis.url, error = %e, retry_in_ms = wait.as_millis() as u64, "redis unreachable at start; serving as unready and retrying");
                *why.locked() = format!("unreachable: {} (starting, retrying)", e.public_reason());
            }
        }
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = &mut *shutdown => return None,
                a = listener.accept() => {
                    if let Ok((sock, _)) = a {
                        tokio::spawn(answer(sock, why.clone()));
                    }
                }
            }
        }
    }
}

/// Answers one connection's requests as a node that is not ready yet.
async fn answer(sock: tokio::net::TcpStream, why: Arc<std::sync::Mutex<String>>) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let redis = why.locked().clone();
        async move { Ok::<_, std::convert::Infallible>(unready(req.uri().path(), &redis)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(sock), svc);
    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
}

fn unready(path: &str, redis: &str) -> Response<axum::body::Body> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "checks": {"redis": redis, "log": "not opened yet", "fanout": "not started yet"}}),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            herald_types::error_body(
                "unavailable",
                &format!("the node is starting: redis {redis}"),
                None,
                None,
            ),
        ),
    };
    let mut r = Response::new(axum::body::Body::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}
