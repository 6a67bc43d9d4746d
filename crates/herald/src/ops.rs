//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct Ops {
    /// None on an edge node.
    pub log: Option<herald_log::Log>,
    /// In a cluster: this node's partition leases.
    pub leases: Option<std::sync::Arc<herald_fanout::Leases>>,
    /// Replicated partitions this node holds.
    pub replicas: Option<std::sync::Arc<herald_raft::Replicas>>,
    /// With keys configured, `/metrics` needs an admin key.
    pub keys: herald_auth::ApiKeys,
    pub store: herald_store::Store,
    pub fanout: herald_fanout::FanoutHealth,
    pub metrics: Option<PrometheusHandle>,
    /// The webhook, when one is configured.
    pub webhooks: Option<std::sync::Arc<herald_webhook::Webhooks>>,
}

/// Installs the Prometheus recorder once per process.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let b = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?;
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            crate::ops_describe::describe();
            crate::ops_describe::register_zeroes();
            Some(handle)
        })
        .clone()
}

pub fn router(ops: Ops) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(render))
        .with_state(ops)
}

/// `200` while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `200` when the node can take and deliver events: the log takes
/// appends, Redis answers, no fan-out worker is stuck. Quarantined log
/// ranges an operator has not acknowledged are shown but do not make the
/// node unready (it works; someone should look).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`{\"ready\": true, \"checks\": {\"log\": \"ok\", \"redis\": \"ok\", ...}}`"),
        (status = 503, description = "Not ready: the failing checks say why")))]
async fn readyz(State(ops): State<Ops>) -> Response {
    let log = match &ops.log {
        Some(l) => l.health().describe(),
        None => "ok".to_string(),
    };
    let redis = match tokio::time::timeout(Duration::from_secs(2), ops.store.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {}", e.public_reason()),
        Err(_) => "unreachable: no answer within 2 s".to_string(),
    };
    let stalls = ops.fanout.stalls();
    let fanout = if stalls.is_empty() {
        "ok".to_string()
    } else {
        stalls.join("; ")
    };
    let cluster = match (&ops.leases, &ops.replicas) {
        (_, Some(r)) => replication_check(r),
        (None, None) => "ok".to_string(),
        (Some(l), None) if l.fresh() => "ok".to_string(),
        (Some(_), None) => {
            "no partition lease round has succeeded lately (is Redis reachable?)".to_string()
        }
    };
    // A damaged journal record may have held acknowledged events: unready
    // until an operator acknowledges it (segment ranges are shown only).
    let mut journal_damaged = false;
    let quarantine = match ops
        .log
        .as_ref()
        .map(|l| l.quarantine())
        .unwrap_or(Ok(Vec::new()))
    {
        Ok(q) => {
            let open: Vec<_> = q.iter().filter(|r| !r.acknowledged).collect();
            journal_damaged = open
                .iter()
                .any(|r| r.partition == herald_log::quarantine::JOURNAL);
            match open.first() {
                None => "ok".to_string(),
                Some(first) => format!(
                    "{} corrupt range(s) quarantined, e.g. {}; see GET /v1/admin/log/quarantine, acknowledge with POST /v1/admin/log/quarantine/ack",
                    open.len(),
                    first.describe()
                ),
            }
        }
        Err(e) => format!("unreadable: {e}"),
    };
    // A webhook backlog past its bound is shown but does not make the
    // node unready (live delivery works; the receiver needs looking at).
    let webhook = ops
        .webhooks
        .as_ref()
        .map_or_else(|| "off".to_string(), |w| w.health());
    let ready =
        log == "ok" && redis == "ok" && fanout == "ok" && cluster == "ok" && !journal_damaged;
    let body = json!({
        "ready": ready,
        "checks": {"log": log, "redis": redis, "fanout": fanout, "cluster": cluster, "quarantine": quarantine, "webhook": webhook},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long a leader may go without a majority's answer before `/readyz`
/// says its partitions lack one.
const QUORUM_LOST_AFTER_MS: u64 = 3000;

/// Replicated partitions: those this node leads without a majority
/// answering it lately, and those it holds with no leader known.
fn replication_check(r: &herald_raft::Replicas) -> String {
    let mut lacking = Vec::new();
    let mut leaderless = Vec::new();
    let mut failed = Vec::new();
    for v in r.view() {
        if v.role == "none" {
            continue;
        }
        if let Some(why) = &v.failed {
            failed.push(format!("partition {}: {why}", v.partition));
            continue;
        }
        if v.role == "leader" && v.quorum_ack_ms.is_none_or(|ms| ms > QUORUM_LOST_AFTER_MS) {
            lacking.push(v.partition.to_string());
        } else if v.leader.is_none() {
            leaderless.push(v.partition.to_string());
        }
    }
    let mut out = Vec::new();
    if !failed.is_empty() {
        out.push(format!(
            "replica stopped ({}); restart the node",
            failed.join("; ")
        ));
    }
    if !lacking.is_empty() {
        out.push(format!(
            "partition(s) {} led here lack a majority of their replicas (writes answer 503 not_enough_replicas)",
            lacking.join(", ")
        ));
    }
    if !leaderless.is_empty() {
        out.push(format!(
            "partition(s) {} have no leader yet (an election is under way)",
            leaderless.join(", ")
        ));
    }
    if out.is_empty() {
        "ok".to_string()
    } else {
        out.join("; ")
    }
}

/// Prometheus text; admin API key only once keys are configured.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
        (status = 401, description = "Keys are configured and this is not an admin key"),
        (status = 403, description = "Not an admin key")),
    security(("bearer" = [])))]
async fn render(State(ops): State<Ops>, headers: axum::http::HeaderMap) -> Response {
    if !ops.keys.is_empty() {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(herald_auth::bearer);
        match key.and_then(|k| ops.keys.scope_of(k)) {
            Some(herald_auth::Scope::Admin) => {}
            Some(_) => {
                return herald_gateway::ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "/metrics needs an admin key (gateway.admin_keys)",
                )
                .into_response()
            }
            None => return herald_gateway::ApiError::unauthorized().into_response(),
        }
    }
    crate::ops_describe::sample_process();
    let mut text = ops.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    if let Some(cpu) = crate::ops_describe::cpu_seconds() {
        use std::fmt::Write;
        let _ = write!(
            text,
            "# HELP process_cpu_seconds_total CPU time of the process (user and system), in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
