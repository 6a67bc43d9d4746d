//! `[telemetry]`: distributed tracing, exported by OTLP over HTTP.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Config;

/// Where spans go; none are made while `otlp_endpoint` is empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`):
    /// spans are sent to `<it>/v1/traces` as protobuf. Empty: off.
    pub otlp_endpoint: String,
    /// Share (0 to 1) of `POST /v1/events` requests without a
    /// `traceparent` that start a trace of their own.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// How often waiting spans are sent.
    pub export_interval_ms: u64,
    /// Most spans waiting to be sent; past it, new ones are dropped.
    pub max_queue: usize,
    /// An export not answered in this long has failed (its spans are
    /// dropped, not retried).
    pub timeout_ms: u64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: String::new(),
            sample_ratio: 0.0,
            service_name: "herald".into(),
            export_interval_ms: 5000,
            max_queue: 2048,
            timeout_ms: 10_000,
        }
    }
}

impl Telemetry {
    /// The URL spans are posted to, when tracing is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        Some(if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        })
    }
}

impl Config {
    pub(super) fn check_telemetry(&self) -> anyhow::Result<()> {
        let t = &self.telemetry;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            bail!(
                "telemetry.sample_ratio must be between 0 and 1 (got {})",
                t.sample_ratio
            );
        }
        let Some(url) = t.traces_url() else {
            if t.sample_ratio > 0.0 {
                bail!("telemetry.sample_ratio is set but telemetry.otlp_endpoint is empty: spans would go nowhere");
            }
            return Ok(());
        };
        let ok = match url.parse::<axum::http::Uri>() {
            Ok(u) => matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some(),
            Err(_) => false,
        };
        if !ok {
            bail!("telemetry.otlp_endpoint {:?} is not an http(s) URL (such as http://collector:4318)", t.otlp_endpoint);
        }
        if t.service_name.trim().is_empty() {
            bail!("telemetry.service_name must not be empty");
        }
        if t.export_interval_ms == 0 || t.timeout_ms == 0 || t.max_queue == 0 {
            bail!("telemetry.export_interval_ms, telemetry.timeout_ms and telemetry.max_queue must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ratios() {
        let mut c = Config::default();
        assert!(c.check_telemetry().is_ok());
        assert_eq!(c.telemetry.traces_url(), None);
        c.telemetry.sample_ratio = 0.5;
        assert!(c.check_telemetry().is_err(), "a ratio with nowhere to send");
        c.telemetry.otlp_endpoint = "http://127.0.0.1:4318/".into();
        assert!(c.check_telemetry().is_ok());
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        c.telemetry.otlp_endpoint = "https://otel.example/v1/traces".into();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("https://otel.example/v1/traces")
        );
        for bad in ["collector:4318", "ftp://x", "http://"] {
            c.telemetry.otlp_endpoint = bad.into();
            assert!(c.check_telemetry().is_err(), "{bad}");
        }
        c.telemetry.otlp_endpoint = "http://x:4318".into();
        c.telemetry.sample_ratio = 1.5;
        assert!(c.check_telemetry().is_err());
        c.telemetry.sample_ratio = f64::NAN;
        assert!(c.check_telemetry().is_err());
    }
}
