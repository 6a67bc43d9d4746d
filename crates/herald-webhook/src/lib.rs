//! The webhook for notifications nobody saw.
//!
//! Fan-out parks a notification here when it goes to a user's inbox and
//! the user's preferences allow the webhook ([`Webhooks::park`]): into a
//! durable queue in Redis, one shard per fan-out partition, before the
//! record it came from settles. The owner of each partition sends its
//! shard: several notifications per `POST` to `webhook.url`, signed as the
//! Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), body
//! `{"type": "notifications", "items": [{"user": ID, "notification": {...}}]}`
//! with each notification the same object as the WebSocket frame. A `2xx`
//! settles a request; anything else (or no answer within
//! `webhook.timeout_ms`) is tried again with exponential backoff and
//! jitter, under the same `webhook-id`, until `webhook.retry_for_s` has
//! passed since the first attempt; then each item becomes a dead letter
//! (`herald dead-letters replay` parks it again).
//!
//! A slow or dead receiver never slows live delivery or fan-out: parking
//! is one Redis write, sending runs on its own tasks with at most
//! `webhook.max_in_flight` requests open, and what waits stays in Redis.

mod deliver;
mod sign;

use herald_types::sync::Locked;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_store::Store;
use herald_types::{Notification, Placement, UserId, WireFormat};

pub use deliver::{https_client, HttpClient};
pub use sign::{Signer, SECRET_PREFIX};

/// Why the webhook cannot be set up, or an item not parked.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] herald_store::StoreError),
}

/// Webhook settings (`[webhook]`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where requests go: `http(s)://host[:port]/path`.
    pub url: hyper::Uri,
    pub signer: Signer,
    /// Most notifications in one request.
    pub batch: usize,
    /// Most requests open at once (per node).
    pub max_in_flight: usize,
    /// A request without an answer in this long has failed.
    pub timeout: Duration,
    /// Retries stop this long after a request's first attempt; its items
    /// become dead letters.
    pub retry_for: Duration,
    /// The first retry's wait; each next one doubles, up to `backoff_max`
    /// (each with jitter: a random 50-100% of it).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `/readyz` reports the backlog once it passes this many
    /// notifications.
    pub backlog_alert: u64,
}

impl WebhookConfig {
    /// Checks a URL as the webhook's: `http://` or `https://` with a host.
    pub fn parse_url(url: &str) -> Result<hyper::Uri, WebhookError> {
        let bad = |why: String| WebhookError::Config(format!("webhook.url {url:?}: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("not a URL ({e})")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("must start with http:// or https://".into()));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host".into()));
        }
        Ok(uri)
    }
}

/// The webhook of one node: parks notifications, sends the shards of the
/// partitions this node owns.
pub struct Webhooks {
    store: Store,
    cfg: WebhookConfig,
    partitions: u32,
    placement: Arc<dyn Placement>,
    /// Something was parked here: the sender looks now, not at its next
    /// round.
    wake: tokio::sync::Notify,
    /// Notifications waiting in the shards this node owns, at the last
    /// count.
    backlog: AtomicU64,
    /// The last failure, for `/readyz`.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Webhooks {
    /// Starts sending what the partitions this node owns hold; parks for
    /// any partition.
    pub fn start(
        store: Store,
        cfg: WebhookConfig,
        partitions: u32,
        placement: Arc<dyn Placement>,
    ) -> Arc<Webhooks> {
        let w = Arc::new(Webhooks {
            store,
            cfg,
            partitions: partitions.max(1),
            placement,
            wake: tokio::sync::Notify::new(),
            backlog: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        });
        tokio::spawn(deliver::run(Arc::downgrade(&w)));
        tokio::spawn(deliver::count_backlog(Arc::downgrade(&w)));
        w
    }

    /// Parks `items` for the webhook (each in its user's shard: user id
    /// modulo the partition count); returns once Redis holds them (then
    /// their records may settle).
    pub async fn park(&self, items: &[(UserId, &Notification)]) -> Result<(), WebhookError> {
        let mut by_shard: std::collections::BTreeMap<u32, Vec<(String, Vec<u8>)>> =
            Default::default();
        for (u, n) in items {
            by_shard
                .entry(self.shard(*u))
                .or_default()
                .push((herald_store::webhook_field(*u, &n.id), item_json(*u, n)));
        }
        self.enqueue(by_shard).await?;
        Ok(())
    }

    fn shard(&self, user: UserId) -> u32 {
        herald_store::webhook_shard(user, self.partitions)
    }

    async fn enqueue(
        &self,
        by_shard: std::collections::BTreeMap<u32, Vec<(String, Vec<u8>)>>,
    ) -> Result<usize, WebhookError> {
        let mut n = 0;
        for (p, rows) in by_shard {
            let new = self.store.webhook_enqueue(p, &rows).await?;
            metrics::counter!("herald_webhook_parked_total").increment(new);
            n += rows.len();
        }
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// What `/readyz` says: `ok`, or the backlog past its bound and the
    /// last failure.
    pub fn health(&self) -> String {
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog <= self.cfg.backlog_alert {
            return "ok".into();
        }
        let last = self
            .last_error
            .locked()
            .clone()
            .unwrap_or_else(|| "none".into());
        format!(
            "{backlog} notifications wait for the webhook (more than webhook.backlog_alert = {}); last failure: {last}",
            self.cfg.backlog_alert
        )
    }

    fn owns(&self, p: u32) -> bool {
        self.placement.owner(p) == herald_types::Owner::Local
    }
}

/// One request item: `{"user": ID, "notification": <the WebSocket frame>}`.
fn item_json(user: UserId, n: &Notification) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"user\":");
    out.extend_from_slice(user.to_string().as_bytes());
    out.extend_from_slice(b",\"notification\":");
    // Writing into memory fails only if memory does.
    let _ = n.write_to(WireFormat::Json, &mut out);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        for ok in [
            "http://127.0.0.1:8080/hooks",
            "https://hooks.example.com/herald",
        ] {
            assert!(WebhookConfig::parse_url(ok).is_ok(), "{ok}");
        }
        for bad in ["ftp://x/y", "127.0.0.1:80/x", "http:///x", "not a url"] {
            let e = WebhookConfig::parse_url(bad).unwrap_err().to_string();
            assert!(e.contains("webhook.url"), "{bad}: {e}");
        }
    }
}
