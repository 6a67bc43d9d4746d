//! The verdict: a terminal summary (an aligned table), a JSON report, and
//! a self-contained HTML report with charts (`html.rs`, drawn with
//! plotters' SVG backend); `compare.rs` overlays several runs.

mod charts;
pub mod compare;
mod html;
mod model;

pub use html::html;

use herald_types::sync::Locked;
use std::sync::atomic::Ordering;

pub use model::*;

use crate::run::Outcome;

/// Quantiles reported for latency distributions (plotted on a
/// 1/(1-q) axis, so the tail is visible).
const PERCENTILES: [f64; 15] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999,
    0.999999, 1.0,
];

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The report as its typed shape.
pub fn report(o: &Outcome, scenario: &str) -> Report {
    let s = &o.stats;
    let h = Some(s.live.locked().clone());
    let q = |p: f64| {
        h.as_ref()
            .map(|h| ms(h.value_at_quantile(p)))
            .unwrap_or(0.0)
    };
    let d = Some(s.drains.locked().clone());
    let dq = |p: f64| {
        d.as_ref()
            .map(|h| ms(h.value_at_quantile(p)))
            .unwrap_or(0.0)
    };
    let accepted = s.events_accepted.load(Ordering::Relaxed);
    let delivered = s.delivered();
    let lost = s.lost();
    let per_s = |n: u64| (o.send_secs >= 0.5).then(|| n as f64 / o.send_secs);
    let timeline: Vec<Second> = s
        .timeline
        .locked()
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(i, h)| Second {
            t_s: i,
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
        .collect();
    let quantiles = |h: &hdrhistogram::Histogram<u64>| -> Vec<Quantile> {
        PERCENTILES
            .iter()
            .map(|&p| Quantile {
                quantile: p,
                ms: ms(h.value_at_quantile(p)),
            })
            .collect()
    };
    let cdf = h.as_ref().map(quantiles).unwrap_or_default();
    let drains = d
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(quantiles)
        .unwrap_or_default();
    let samples = s.samples.locked().clone();
    let mut receipts: Vec<u64> = s.celebrity_receipts_us.locked().clone();
    receipts.sort_unstable();
    // At most 500 points of the receipt curve (every k-th follower).
    let step = (receipts.len() / 500).max(1);
    let receipts: Vec<Receipt> = receipts
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i + 1 == receipts.len())
        .map(|(i, us)| Receipt {
            followers: i + 1,
            ms: ms(*us),
        })
        .collect();
    let refused = s.events_refused.load(Ordering::Relaxed);
    let duplicated = s.duplicates.load(Ordering::Relaxed);
    Report {
        scenario: scenario.to_string(),
        clients: o.spec.clients,
        target_rate: o.spec.rate,
        duration_s: o.send_secs,
        events: Events {
            sent: s.events_sent.load(Ordering::Relaxed),
            accepted,
            accepted_per_s: per_s(accepted),
            http_errors: s.http_errors.load(Ordering::Relaxed),
            refused,
        },
        notifications: Notifications {
            expected: s.expected.load(Ordering::Relaxed),
            delivered_live: s.delivered_live.load(Ordering::Relaxed),
            delivered_inbox: s.delivered_inbox.load(Ordering::Relaxed),
            delivered_per_s: per_s(delivered),
            lost,
            duplicated_after_ack: duplicated,
            unexpected: s.unexpected.load(Ordering::Relaxed),
            in_aggregates: s.folded.load(Ordering::Relaxed),
            lost_sample: s
                .lost_sample(10)
                .into_iter()
                .map(|(seq, users)| LostSample { seq, users })
                .collect(),
            late_over_1s: s.late.load(Ordering::Relaxed),
        },
        latency_live_ms: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.as_ref().map(|h| ms(h.max())).unwrap_or(0.0),
            count: h.as_ref().map(|h| h.len()).unwrap_or(0),
        },
        inbox_drain_ms: Drains {
            count: d.as_ref().map(|h| h.len()).unwrap_or(0),
            p50: dq(0.5),
            p99: dq(0.99),
            max: d.as_ref().map(|h| ms(h.max())).unwrap_or(0.0),
        },
        connections: Connections {
            connects: s.connects.load(Ordering::Relaxed),
            errors: s.connect_errors.load(Ordering::Relaxed),
        },
        herald_rss_kib: o.rss_idle_kib.map(|(a, b)| Rss {
            before_clients: a,
            after_clients: b,
            per_connection_bytes: (b.saturating_sub(a) * 1024) as f64
                / o.spec.clients.max(1) as f64,
        }),
        straggler_wait_s: o.drain_secs,
        herald_cpu_us_per_notification: o.cpu_us_per_notification,
        reconnect_storm_s: o.storm_secs,
        celebrity_last_online_ms: o.celebrity_last_ms,
        timeline,
        cdf,
        samples,
        drain_percentiles: drains,
        celebrity_receipts: receipts,
        faults: Vec::new(),
        // At-least-once: under faults a notification may come again with
        // the same id after an ack; only the chaos scenario allows that.
        verdict: if lost == 0 && refused == 0 && (duplicated == 0 || scenario == "chaos") {
            "pass"
        } else {
            "fail"
        },
    }
}

/// Why the verdict is what it is, in a few words.
pub fn verdict_reason(r: &Report) -> String {
    let n = &r.notifications;
    let mut why = Vec::new();
    for (v, label) in [
        (n.lost, "lost"),
        (n.duplicated_after_ack, "duplicated after ack"),
    ] {
        if v > 0 {
            why.push(format!("{v} {label}"));
        }
    }
    if r.events.refused > 0 {
        why.push(format!("{} events refused", r.events.refused));
    }
    match (r.verdict, why.is_empty()) {
        ("pass", true) => "nothing lost, refused or duplicated".into(),
        ("pass", false) => format!("{} (allowed under faults: same ids)", why.join(", ")),
        _ => why.join(", "),
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

/// A rate, or `-` for a run too short to say.
fn per_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

/// The figures of a report as (label, value) rows, for the terminal and
/// the HTML summary table: what every run has, then what this one measured.
pub fn rows(r: &Report) -> Vec<(String, String)> {
    let mut rows = counted(r);
    rows.extend(measured(r));
    rows.extend(r.faults.iter().map(|f| {
        (
            format!("fault at {:.1} s", f.at_s),
            format!("{} (down {} ms)", f.fault, f.down_ms),
        )
    }));
    rows
}

/// What was sent, delivered, lost, and how fast.
fn counted(r: &Report) -> Vec<(String, String)> {
    let (n, l, e) = (&r.notifications, &r.latency_live_ms, &r.events);
    vec![
        (
            "run".into(),
            format!(
                "{}, {} clients, {} s sending",
                r.scenario,
                r.clients,
                f1(r.duration_s)
            ),
        ),
        (
            "events".into(),
            format!(
                "sent {}, accepted {} ({}/s), http errors {} (retried), refused {}",
                e.sent,
                e.accepted,
                per_s(e.accepted_per_s),
                e.http_errors,
                e.refused
            ),
        ),
        (
            "notifications".into(),
            format!(
                "expected {}, live {}, inbox {} ({}/s delivered), in aggregates {}",
                n.expected,
                n.delivered_live,
                n.delivered_inbox,
                per_s(n.delivered_per_s),
                n.in_aggregates
            ),
        ),
        ("lost".into(), n.lost.to_string()),
        (
            "duplicated after ack".into(),
            n.duplicated_after_ack.to_string(),
        ),
        ("late (> 1 s)".into(), n.late_over_1s.to_string()),
        ("unexpected".into(), n.unexpected.to_string()),
        (
            "live latency ms".into(),
            format!(
                "p50 {}, p90 {}, p99 {}, p99.9 {}, max {} (n = {})",
                f2(l.p50),
                f2(l.p90),
                f2(l.p99),
                f2(l.p999),
                f2(l.max),
                l.count
            ),
        ),
    ]
}

/// The figures only some runs have: drains, memory, CPU, the storm, the
/// celebrity post.
fn measured(r: &Report) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let d = &r.inbox_drain_ms;
    if d.count > 0 {
        rows.push((
            "inbox drains ms".into(),
            format!(
                "{} drains (connect to last queued item): p50 {}, p99 {}, max {}",
                d.count,
                f1(d.p50),
                f1(d.p99),
                f1(d.max)
            ),
        ));
    }
    if let Some(m) = &r.herald_rss_kib {
        let per = if m.after_clients > m.before_clients {
            format!(": {:.0} bytes per connection", m.per_connection_bytes)
        } else {
            " (it fell while clients connected: no per-connection figure)".into()
        };
        rows.push((
            "herald memory".into(),
            format!(
                "{} KiB before clients, {} KiB after{per}",
                m.before_clients, m.after_clients
            ),
        ));
    }
    if let Some(c) = r.herald_cpu_us_per_notification {
        rows.push((
            "herald CPU".into(),
            format!("{c:.1} us per notification delivered (while sending)"),
        ));
    }
    if let Some(s) = r.reconnect_storm_s {
        rows.push((
            "reconnect storm".into(),
            format!("all queued notifications drained {s:.2} s after the first connect"),
        ));
    }
    if let Some(ms) = r.celebrity_last_online_ms {
        rows.push((
            "celebrity post".into(),
            format!("last online follower received it {ms:.1} ms after the send"),
        ));
    }
    rows
}

/// The terminal summary: one aligned row per figure, then the verdict line.
pub fn summary(r: &Report) -> String {
    let rows = rows(r);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out.push_str(&format!("verdict: {} ({})\n", r.verdict, verdict_reason(r)));
    out
}
