//! Between the nodes of a cluster: events travel to the node that owns
//! their partition, and an edge node passes the routes it does not serve to
//! an ingest node.
//!
//! `POST /v1/internal/append` (cluster nodes only, authenticated by
//! `server.cluster_key` in [`CLUSTER_KEY_HEADER`]) takes events the sender
//! already validated and stamped, grouped by partition, appends them to
//! this node's log if it still owns every partition named (else `409
//! not_owner`: the sender looks again and retries), and answers their
//! event ids once they are durable. The sender answers its own client
//! `202` only after that, so `202` means durable on every path.
//!
//! The body is a small binary framing (big-endian): per part, the
//! partition (u32) and the record count (u32), then per record its length
//! (u32) and its bytes (a [`herald_types::LogEvent`] in log encoding).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::ApiError;

/// The header that carries the cluster key on internal requests.
pub const CLUSTER_KEY_HEADER: &str = "x-herald-cluster-key";
/// A forwarded append (or proxied request) fails after this long.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read back from another node.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why a forwarded append did not go through.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// The node no longer owns a partition, or could not be reached: look
    /// up the owner again and retry.
    Retry(String),
    /// The owner refused or failed: answer this to the client.
    Api(ApiError),
}

/// An HTTP client to the other nodes, with the cluster key.
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    key: String,
}

impl Forwarder {
    pub fn new(key: String) -> Forwarder {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(conn);
        Forwarder { client, key }
    }

    /// Whether `got` is this cluster's key (compared in constant time).
    pub fn key_matches(&self, got: Option<&HeaderValue>) -> bool {
        let Some(got) = got else { return false };
        let (a, b) = (got.as_bytes(), self.key.as_bytes());
        !b.is_empty()
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }

    /// Appends `parts` at the node at `addr`; their event ids in order.
    pub(crate) async fn append(
        &self,
        addr: &str,
        parts: &[(u32, Vec<Bytes>)],
    ) -> Result<Vec<String>, ForwardError> {
        let req = axum::http::Request::post(format!("http://{addr}/v1/internal/append"))
            .header(CLUSTER_KEY_HEADER, &self.key)
            .header("content-type", "application/octet-stream")
            .body(Body::from(encode_parts(parts)))
            .map_err(|e| ForwardError::Retry(format!("request to {addr}: {e}")))?;
        let call = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        let (status, body) = match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(ForwardError::Retry(format!("{addr}: {e}"))),
            Err(_) => {
                return Err(ForwardError::Retry(format!(
                    "{addr} did not answer within {FORWARD_TIMEOUT:?}"
                )))
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status == StatusCode::OK {
            return v["ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| i.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .ok_or_else(|| ForwardError::Retry(format!("{addr}: answer without ids")));
        }
        let code = v["error"]["code"].as_str().unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        if status == StatusCode::CONFLICT {
            return Err(ForwardError::Retry(format!("{addr}: {message}")));
        }
        let (code, retry) = match code {
            "storage_full" => ("storage_full", 5),
            "storage_failed" => ("storage_failed", 60),
            _ => ("unavailable", 1),
        };
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            format!("the node owning these events' partition could not take them: {message}"),
        );
        e.retry_after_s = Some(retry);
        Err(ForwardError::Api(e))
    }

    /// Passes `req` on to the node at `addr` and returns its answer (an
    /// edge node serving a route it does not hold).
    pub async fn proxy(&self, addr: &str, mut req: Request) -> Response {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match format!("http://{addr}{pq}").parse::<Uri>() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return ApiError::malformed("unusable request path").into_response(),
        }
        for h in [
            "connection",
            "keep-alive",
            "upgrade",
            "proxy-connection",
            "te",
        ] {
            req.headers_mut().remove(h);
        }
        match tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) => {
                metrics::counter!("herald_proxied_requests_total").increment(1);
                resp.map(Body::new)
            }
            Ok(Err(e)) => unavailable(format!("the ingest node at {addr} failed: {e}")),
            Err(_) => unavailable(format!("the ingest node at {addr} did not answer in time")),
        }
    }
}

/// `503 unavailable` with a short `Retry-After`.
pub fn unavailable(message: String) -> Response {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    e.retry_after_s = Some(1);
    e.into_response()
}

pub(crate) fn encode_parts(parts: &[(u32, Vec<Bytes>)]) -> Bytes {
    let len: usize = parts
        .iter()
        .map(|(_, r)| 8 + r.iter().map(|b| 4 + b.len()).sum::<usize>())
        .sum();
    let mut out = BytesMut::with_capacity(len);
    for (p, records) in parts {
        out.put_u32(*p);
        out.put_u32(records.len() as u32);
        for r in records {
            out.put_u32(r.len() as u32);
            out.put_slice(r);
        }
    }
    out.freeze()
}

/// Reads what [`encode_parts`] wrote; `None` for anything malformed.
pub(crate) fn decode_parts(mut b: Bytes) -> Option<Vec<(u32, Vec<Bytes>)>> {
    let mut parts = Vec::new();
    while b.has_remaining() {
        if b.remaining() < 8 {
            return None;
        }
        let p = b.get_u32();
        let n = b.get_u32() as usize;
        let mut records = Vec::with_capacity(n.min(b.remaining() / 4));
        for _ in 0..n {
            if b.remaining() < 4 {
                return None;
            }
            let len = b.get_u32() as usize;
            if b.remaining() < len {
                return None;
            }
            records.push(b.split_to(len));
        }
        parts.push((p, records));
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_survive_the_framing() {
        let parts = vec![
            (3, vec![Bytes::from_static(b"abc"), Bytes::new()]),
            (0, vec![]),
            (7, vec![Bytes::from(vec![9u8; 300])]),
        ];
        assert_eq!(decode_parts(encode_parts(&parts)), Some(parts));
    }

    #[test]
    fn truncated_framing_is_refused() {
        let b = encode_parts(&[(1, vec![Bytes::from_static(b"hello")])]);
        for cut in 1..b.len() {
            assert_eq!(decode_parts(b.slice(..cut)), None, "cut at {cut}");
        }
        // A count far larger than the body does not allocate for it.
        let mut lie = BytesMut::new();
        lie.put_u32(0);
        lie.put_u32(u32::MAX);
        assert_eq!(decode_parts(lie.freeze()), None);
    }
}
