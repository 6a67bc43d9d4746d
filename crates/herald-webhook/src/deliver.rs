//! Sending the shards this node owns: forms requests from what is ready,
//! sends them (at most `max_in_flight` at once), settles on `2xx`, retries
//! with backoff, dead-letters what outlives `retry_for`.

use herald_types::sync::Locked;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_store::{DeadLetter, WebhookBatch};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::Webhooks;

/// Every shard is looked at this often even when nothing was parked here
/// (retries come due; another node parked; ownership moved).
const ROUND: Duration = Duration::from_millis(500);
/// How often the backlog is counted.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// Longest answer body read (only its first bytes are logged).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The node's client for outgoing HTTP: the webhook, and the tracing
/// exporter.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// `http://` and `https://` (rustls, the Mozilla roots bundled); connects
/// within `timeout` (at most 5 s), keeps idle connections 30 s.
pub fn https_client(timeout: Duration) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
    conn.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(conn);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(https)
}

/// A request id, unique across nodes and restarts: `msg_` + 128 random
/// bits.
fn new_id() -> String {
    format!("msg_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The sender: runs until the node drops its [`Webhooks`].
pub(crate) async fn run(w: Weak<Webhooks>) {
    let Some(first) = w.upgrade() else { return };
    let slots = Arc::new(Semaphore::new(first.cfg.max_in_flight.max(1)));
    let http = https_client(first.cfg.timeout);
    drop(first);
    loop {
        let Some(hooks) = w.upgrade() else { return };
        let mut failed = false;
        for p in 0..hooks.partitions {
            if !hooks.owns(p) {
                continue;
            }
            if let Err(e) = shard(&hooks, &http, &slots, p).await {
                if !failed {
                    tracing::warn!(partition = p, error = %e, "webhook queue unreadable; trying again");
                }
                failed = true;
            }
        }
        let wake = async { hooks.wake.notified().await };
        let _ = tokio::time::timeout(ROUND, wake).await;
    }
}

/// Sends what shard `p` holds now: due retries first, then new requests
/// while items are ready; waits for a free slot before each.
async fn shard(
    hooks: &Arc<Webhooks>,
    http: &HttpClient,
    slots: &Arc<Semaphore>,
    p: u32,
) -> herald_store::Result<()> {
    let lease = || herald_types::now_ms() + 2 * hooks.cfg.timeout.as_millis() as u64 + 1000;
    let free = slots.available_permits().max(1);
    for b in hooks.store.webhook_claim(p, free, lease()).await? {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        tokio::spawn(send(hooks.clone(), http.clone(), b, slot));
    }
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let Some(b) = hooks
            .store
            .webhook_take(p, hooks.cfg.batch, &new_id(), lease())
            .await?
        else {
            return Ok(());
        };
        tokio::spawn(send(hooks.clone(), http.clone(), b, slot));
    }
}

/// One attempt at one request, and what follows from its answer.
async fn send(
    hooks: Arc<Webhooks>,
    http: HttpClient,
    b: WebhookBatch,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let items: Vec<&[u8]> = b.bodies.iter().flatten().map(Vec::as_slice).collect();
    if items.is_empty() {
        // Its items were settled another way (replayed, or a copy sent).
        let _ = hooks.store.webhook_done(&b).await;
        return;
    }
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 40);
    body.extend_from_slice(br#"{"type":"notifications","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    let started = Instant::now();
    let outcome = post(&hooks, &http, &b.id, body).await;
    metrics::histogram!("herald_webhook_request_seconds").record(started.elapsed().as_secs_f64());
    let n = items.len() as u64;
    match outcome {
        Ok(()) => {
            metrics::counter!("herald_webhook_sent_total").increment(n);
            metrics::counter!("herald_webhook_requests_total", "outcome" => "ok").increment(1);
            let age = herald_types::now_ms().saturating_sub(b.first_ms);
            metrics::histogram!("herald_webhook_delivery_seconds").record(age as f64 / 1000.0);
            settle(&hooks, &b).await;
        }
        Err(why) => {
            metrics::counter!("herald_webhook_requests_total", "outcome" => "failed").increment(1);
            *hooks.last_error.locked() = Some(why.clone());
            failed(&hooks, b, n, why).await;
        }
    }
}

/// Forgets a settled request, retrying while Redis does not answer (its
/// lease would otherwise send it again: a duplicate under the same id).
async fn settle(hooks: &Webhooks, b: &WebhookBatch) {
    let mut wait = herald_types::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for _ in 0..10 {
        match hooks.store.webhook_done(b).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, id = %b.id, "a delivered webhook request could not be marked done; retrying");
                wait.sleep().await;
            }
        }
    }
}

/// The wait before attempt `attempts + 1`: doubling from `backoff_min`
/// up to `backoff_max`, a random 50-100% of it.
pub(crate) fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    herald_types::backoff::jitter(herald_types::Backoff::nth(min, max, attempts))
}

async fn failed(hooks: &Webhooks, mut b: WebhookBatch, n: u64, why: String) {
    let now = herald_types::now_ms();
    let wait = backoff(hooks.cfg.backoff_min, hooks.cfg.backoff_max, b.attempts);
    let deadline = b.first_ms + hooks.cfg.retry_for.as_millis() as u64;
    if now + wait.as_millis() as u64 > deadline {
        tracing::warn!(id = %b.id, attempts = b.attempts + 1, notifications = n, reason = %why, "webhook request given up after its retry budget; its notifications are dead letters");
        let letters: Vec<DeadLetter> = b
            .fields
            .iter()
            .zip(&b.bodies)
            .filter_map(|(f, body)| {
                let item: serde_json::Value = serde_json::from_slice(body.as_ref()?).ok()?;
                Some(DeadLetter {
                    id: DeadLetter::webhook_id_for(f),
                    partition: b.partition,
                    offset: 0,
                    reason: format!("webhook: {why} (after {} attempts)", b.attempts + 1),
                    at_ms: now as i64,
                    event: None,
                    raw_hex: None,
                    webhook: Some(item),
                })
            })
            .collect();
        match hooks.store.dead_letters_put_webhook(&letters).await {
            Ok(()) => {
                metrics::counter!("herald_webhook_dead_lettered_total")
                    .increment(letters.len() as u64);
                settle(hooks, &b).await;
            }
            // The request stays leased: tried again when its lease ends.
            Err(e) => {
                tracing::warn!(error = %e, id = %b.id, "webhook dead letters not written; the request is tried again")
            }
        }
        return;
    }
    metrics::counter!("herald_webhook_retried_total").increment(n);
    tracing::debug!(id = %b.id, attempts = b.attempts + 1, wait_ms = wait.as_millis() as u64, reason = %why, "webhook request failed; retrying");
    b.attempts += 1;
    if let Err(e) = hooks
        .store
        .webhook_retry(&b, now + wait.as_millis() as u64)
        .await
    {
        // Its lease ends later: then it is sent again.
        tracing::warn!(error = %e, id = %b.id, "webhook retry not scheduled; the request is tried again when its lease ends");
    }
}

/// One signed `POST`; `Ok` on a `2xx` within the timeout.
async fn post(hooks: &Webhooks, http: &HttpClient, id: &str, body: Vec<u8>) -> Result<(), String> {
    let ts = (herald_types::now_ms() / 1000) as i64;
    let sig = hooks.cfg.signer.sign(id, ts, &body);
    let req = hyper::Request::post(hooks.cfg.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", "herald-webhook")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request not built: {e}"))?;
    let call = async {
        let resp = http
            .request(req)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = resp.status();
        // The body is read (so the connection can be used again) and its
        // first bytes kept for the log.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    };
    match tokio::time::timeout(hooks.cfg.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} ms",
            hooks.cfg.timeout.as_millis()
        )),
    }
}

/// Counts what waits in the shards this node owns, for the gauge and
/// `/readyz`.
pub(crate) async fn count_backlog(w: Weak<Webhooks>) {
    loop {
        tokio::time::sleep(COUNT_EVERY).await;
        let Some(hooks) = w.upgrade() else { return };
        let mut total = 0;
        for p in 0..hooks.partitions {
            if hooks.owns(p) {
                total += hooks.store.webhook_backlog(p).await.unwrap_or(0);
            }
        }
        hooks.backlog.store(total, Ordering::Relaxed);
        metrics::gauge!("herald_webhook_backlog").set(total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for a in 0..30 {
            let full = (100u64 << a.min(20)).min(10_000);
            let w = backoff(min, max, a).as_millis() as u64;
            assert!(w >= full / 2 && w <= full, "attempt {a}: {w} ms of {full}");
        }
    }
}
