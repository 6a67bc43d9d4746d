//! Tracing export: when `telemetry.otlp_endpoint` is set, an
//! OpenTelemetry tracer provider sends Herald's spans (see
//! `herald_types::trace`) by OTLP over HTTP (protobuf), in batches from a
//! bounded queue on the SDK's own thread. Nothing is installed otherwise.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::Config;

/// Longest collector answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The exporter's HTTP client: the SDK calls it from its own thread, so
/// each request runs on the node's runtime and is awaited from there.
#[derive(Debug)]
struct OnRuntime {
    rt: tokio::runtime::Handle,
    http: herald_webhook::HttpClient,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(&self, req: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let timeout = self.timeout;
        let task = self.rt.spawn(async move {
            let (parts, body) = req.into_parts();
            let req = Request::from_parts(parts, Full::new(body));
            let sent = async {
                let resp = http.request(req).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?;
                Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
            };
            tokio::time::timeout(timeout, sent)
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))?
        });
        task.await?
    }
}

/// The installed provider: flushes and stops at [`Telemetry::shutdown`].
pub struct Telemetry(SdkTracerProvider);

/// Installs the exporter and turns tracing on, when configured.
pub fn install(cfg: &Config) -> anyhow::Result<Option<Telemetry>> {
    let t = &cfg.telemetry;
    let Some(url) = t.traces_url() else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(t.timeout_ms);
    let client = OnRuntime {
        rt: tokio::runtime::Handle::current(),
        http: herald_webhook::https_client(timeout),
        timeout,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url.clone())
        .with_timeout(timeout)
        .build()
        .context("the OTLP exporter")?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(t.max_queue)
                .with_max_export_batch_size(t.max_queue.min(512))
                .with_scheduled_delay(Duration::from_millis(t.export_interval_ms))
                .build(),
        )
        .build();
    let mut resource = Resource::builder().with_service_name(t.service_name.clone());
    if !cfg.server.node_id.trim().is_empty() {
        resource = resource.with_attribute(KeyValue::new(
            "service.instance.id",
            cfg.server.node_id.trim().to_string(),
        ));
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    herald_types::trace::enable(t.sample_ratio);
    tracing::info!(url = %url, sample_ratio = t.sample_ratio, "tracing on: spans exported by OTLP");
    Ok(Some(Telemetry(provider)))
}

impl Telemetry {
    /// Sends what is waiting, then stops (bounded by the export timeout).
    pub async fn shutdown(self) {
        let provider = self.0;
        let r = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "tracing export did not finish cleanly");
        }
    }
}
