//! `[webhook]`: notifications nobody saw, sent to the product's webhook
//! (herald-webhook).

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Config;

/// Where and how notifications that went to the inbox are also sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhook {
    /// `http(s)://host[:port]/path`; empty: no webhook.
    pub url: String,
    /// `whsec_` + base64 of 24 to 64 random bytes (Standard Webhooks).
    pub secret: String,
    /// Most notifications in one request.
    pub batch: usize,
    /// Most requests open at once, per node.
    pub max_in_flight: usize,
    /// A request not answered in this long has failed.
    pub timeout_ms: u64,
    /// A request not answered `2xx` this long after its first attempt is
    /// given up: its notifications become dead letters.
    pub retry_for_s: u64,
    /// First retry's wait; it doubles each time up to `backoff_max_ms`.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// `/readyz` reports the backlog once it passes this many.
    pub backlog_alert: u64,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook {
            url: String::new(),
            secret: String::new(),
            batch: 100,
            max_in_flight: 16,
            timeout_ms: 10_000,
            retry_for_s: 86_400,
            backoff_ms: 1000,
            backoff_max_ms: 600_000,
            backlog_alert: 100_000,
        }
    }
}

impl Config {
    /// The webhook's settings, when a URL is set.
    pub fn webhook_config(&self) -> anyhow::Result<Option<herald_webhook::WebhookConfig>> {
        let w = &self.webhook;
        if w.url.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(herald_webhook::WebhookConfig {
            url: herald_webhook::WebhookConfig::parse_url(w.url.trim())?,
            signer: herald_webhook::Signer::new(w.secret.trim())?,
            batch: w.batch,
            max_in_flight: w.max_in_flight,
            timeout: Duration::from_millis(w.timeout_ms),
            retry_for: Duration::from_secs(w.retry_for_s),
            backoff_min: Duration::from_millis(w.backoff_ms),
            backoff_max: Duration::from_millis(w.backoff_max_ms),
            backlog_alert: w.backlog_alert,
        }))
    }

    pub(super) fn check_webhook(&self) -> anyhow::Result<()> {
        let w = &self.webhook;
        if w.url.trim().is_empty() {
            if !w.secret.trim().is_empty() {
                bail!("webhook.secret is set but webhook.url is empty: set both, or neither");
            }
            return Ok(());
        }
        if w.secret.trim().is_empty() {
            bail!("webhook.url needs webhook.secret (whsec_ + base64 of 24 to 64 random bytes; receivers verify requests with it)");
        }
        if !(1..=herald_store::MAX_WEBHOOK_BATCH).contains(&w.batch) {
            bail!(
                "webhook.batch must be between 1 and {}",
                herald_store::MAX_WEBHOOK_BATCH
            );
        }
        if !(1..=1024).contains(&w.max_in_flight) {
            bail!("webhook.max_in_flight must be between 1 and 1024");
        }
        let checks: [(&str, u64, u64, u64); 4] = [
            ("webhook.timeout_ms", w.timeout_ms, 100, 120_000),
            ("webhook.retry_for_s", w.retry_for_s, 1, 30 * 86_400),
            ("webhook.backoff_ms", w.backoff_ms, 10, 3_600_000),
            ("webhook.backoff_max_ms", w.backoff_max_ms, 10, 86_400_000),
        ];
        for (key, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                bail!("{key} must be between {lo} and {hi} (it is {v})");
            }
        }
        if w.backoff_max_ms < w.backoff_ms {
            bail!("webhook.backoff_max_ms must be at least webhook.backoff_ms");
        }
        self.webhook_config()?;
        Ok(())
    }
}
