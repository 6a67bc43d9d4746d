//! The JSON report's shape, as types: what `report.json` holds (and what
//! the summary, the HTML page and `compare` read back).

use serde::Serialize;

use crate::stats::Sample;

#[derive(Serialize)]
pub struct Report {
    pub scenario: String,
    pub clients: u64,
    pub target_rate: u64,
    pub duration_s: f64,
    pub events: Events,
    pub notifications: Notifications,
    pub latency_live_ms: Latency,
    pub inbox_drain_ms: Drains,
    pub connections: Connections,
    pub herald_rss_kib: Option<Rss>,
    pub straggler_wait_s: f64,
    pub herald_cpu_us_per_notification: Option<f64>,
    pub reconnect_storm_s: Option<f64>,
    pub celebrity_last_online_ms: Option<f64>,
    pub timeline: Vec<Second>,
    pub cdf: Vec<Quantile>,
    pub samples: Vec<Sample>,
    pub drain_percentiles: Vec<Quantile>,
    pub celebrity_receipts: Vec<Receipt>,
    /// The chaos scenario's faults (none in other runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// `pass` or `fail`.
    pub verdict: &'static str,
}

#[derive(Serialize)]
pub struct Events {
    pub sent: u64,
    pub accepted: u64,
    /// None for a run too short to say.
    pub accepted_per_s: Option<f64>,
    pub http_errors: u64,
    pub refused: u64,
}

#[derive(Serialize)]
pub struct Notifications {
    pub expected: u64,
    pub delivered_live: u64,
    pub delivered_inbox: u64,
    pub delivered_per_s: Option<f64>,
    pub lost: u64,
    pub duplicated_after_ack: u64,
    pub unexpected: u64,
    pub in_aggregates: u64,
    /// A few of the lost: the event's sequence number and some recipients.
    pub lost_sample: Vec<LostSample>,
    pub late_over_1s: u64,
}

#[derive(Serialize)]
pub struct LostSample {
    pub seq: u64,
    pub users: Vec<u64>,
}

#[derive(Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
}

#[derive(Serialize)]
pub struct Drains {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize)]
pub struct Connections {
    pub connects: u64,
    pub errors: u64,
}

#[derive(Serialize)]
pub struct Rss {
    pub before_clients: u64,
    pub after_clients: u64,
    pub per_connection_bytes: f64,
}

/// One second of the run's live latencies.
#[derive(Serialize)]
pub struct Second {
    pub t_s: usize,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Serialize)]
pub struct Quantile {
    pub quantile: f64,
    pub ms: f64,
}

/// The k-th follower's receipt of a celebrity post.
#[derive(Serialize)]
pub struct Receipt {
    pub followers: usize,
    pub ms: f64,
}

/// A fault the chaos scenario caused, and how long the node was down.
#[derive(Serialize)]
pub struct Fault {
    /// Seconds into the traffic.
    pub at_s: f64,
    pub fault: &'static str,
    pub down_ms: u64,
    /// After a restart: from the process start to serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_to_serving_ms: Option<u64>,
}
