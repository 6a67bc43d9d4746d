//! The verdict: a human summary, a JSON report and a self-contained HTML
//! report (latency over time and a latency CDF as inline SVG).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::run::Outcome;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn json_report(o: &Outcome, scenario: &str) -> Value {
    let s = &o.stats;
    let h = s.live.lock().map(|h| h.clone()).ok();
    let q = |p: f64| {
        h.as_ref()
            .map(|h| ms(h.value_at_quantile(p)))
            .unwrap_or(0.0)
    };
    let d = s.drains.lock().map(|h| h.clone()).ok();
    let dq = |p: f64| {
        d.as_ref()
            .map(|h| ms(h.value_at_quantile(p)))
            .unwrap_or(0.0)
    };
    let accepted = s.events_accepted.load(Ordering::Relaxed);
    let delivered = s.delivered();
    let expected = s.expected.load(Ordering::Relaxed);
    let lost = s.lost();
    let timeline: Vec<Value> = s
        .timeline
        .lock()
        .map(|t| {
            t.iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(i, h)| {
                    json!({"t_s": i, "count": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)),
                           "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max())})
                })
                .collect()
        })
        .unwrap_or_default();
    let cdf: Vec<Value> = h
        .as_ref()
        .map(|h| {
            [
                0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
            ]
            .iter()
            .map(|&p| json!({"quantile": p, "ms": ms(h.value_at_quantile(p))}))
            .collect()
        })
        .unwrap_or_default();
    json!({
        "scenario": scenario,
        "clients": o.spec.clients,
        "target_rate": o.spec.rate,
        "duration_s": o.send_secs,
        "events": {"sent": s.events_sent.load(Ordering::Relaxed), "accepted": accepted,
                   "accepted_per_s": if o.send_secs >= 0.5 { Some(accepted as f64 / o.send_secs) } else { None },
                   "http_errors": s.http_errors.load(Ordering::Relaxed),
                   "refused": s.events_refused.load(Ordering::Relaxed)},
        "notifications": {"expected": expected, "delivered_live": s.delivered_live.load(Ordering::Relaxed),
                          "delivered_inbox": s.delivered_inbox.load(Ordering::Relaxed),
                          "delivered_per_s": if o.send_secs >= 0.5 { Some(delivered as f64 / o.send_secs) } else { None },
                          "lost": lost, "duplicated_after_ack": s.duplicates.load(Ordering::Relaxed),
                          "unexpected": s.unexpected.load(Ordering::Relaxed),
                          "in_aggregates": s.folded.load(Ordering::Relaxed),
                          "lost_sample": s.pending.iter().take(10).map(|e| json!({"seq": *e.key(), "users": e.value().1.iter().take(5).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                          "late_over_1s": s.late.load(Ordering::Relaxed)},
        "latency_live_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                            "max": h.as_ref().map(|h| ms(h.max())).unwrap_or(0.0),
                            "count": h.as_ref().map(|h| h.len()).unwrap_or(0)},
        "inbox_drain_ms": {"count": d.as_ref().map(|h| h.len()).unwrap_or(0), "p50": dq(0.5), "p99": dq(0.99),
                           "max": d.as_ref().map(|h| ms(h.max())).unwrap_or(0.0)},
        "connections": {"connects": s.connects.load(Ordering::Relaxed), "errors": s.connect_errors.load(Ordering::Relaxed)},
        "herald_rss_kib": o.rss_idle_kib.map(|(a, b)| json!({"before_clients": a, "after_clients": b,
            "per_connection_bytes": (b.saturating_sub(a) * 1024) as f64 / o.spec.clients.max(1) as f64})),
        "straggler_wait_s": o.drain_secs,
        "herald_cpu_us_per_notification": o.cpu_us_per_notification,
        "reconnect_storm_s": o.storm_secs,
        "celebrity_last_online_ms": o.celebrity_last_ms,
        "timeline": timeline,
        "cdf": cdf,
        // At-least-once: under faults a notification may come again with
        // the same id after an ack; only the chaos scenario allows that.
        "verdict": if lost == 0
            && s.events_refused.load(Ordering::Relaxed) == 0
            && (s.duplicates.load(Ordering::Relaxed) == 0 || scenario == "chaos")
        { "pass" } else { "fail" },
    })
}

pub fn summary(r: &Value) -> String {
    let n = &r["notifications"];
    let l = &r["latency_live_ms"];
    let mut out = format!(
        "scenario {} | {} clients | {:.1} s\n\
         events: sent {} accepted {} ({:.0}/s), http errors {} (retried), refused {}\n\
         notifications: expected {} live {} inbox {} ({:.0}/s delivered)\n\
         lost {} | duplicated after ack {} | late (>1 s) {} | unexpected {}\n\
         live latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} (n={})\n",
        r["scenario"].as_str().unwrap_or(""),
        r["clients"],
        r["duration_s"].as_f64().unwrap_or(0.0),
        r["events"]["sent"],
        r["events"]["accepted"],
        r["events"]["accepted_per_s"].as_f64().unwrap_or(0.0),
        r["events"]["http_errors"],
        r["events"]["refused"],
        n["expected"],
        n["delivered_live"],
        n["delivered_inbox"],
        n["delivered_per_s"].as_f64().unwrap_or(0.0),
        n["lost"],
        n["duplicated_after_ack"],
        n["late_over_1s"],
        n["unexpected"],
        l["p50"].as_f64().unwrap_or(0.0),
        l["p90"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["p999"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0),
        l["count"],
    );
    let d = &r["inbox_drain_ms"];
    if d["count"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "inbox drains: {} (connect to last queued item) p50 {:.1} ms p99 {:.1} ms max {:.1} ms\n",
            d["count"],
            d["p50"].as_f64().unwrap_or(0.0),
            d["p99"].as_f64().unwrap_or(0.0),
            d["max"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(m) = r["herald_rss_kib"].as_object() {
        out.push_str(&format!(
            "herald RSS: {} KiB before clients, {} KiB after: {:.0} bytes per connection\n",
            m["before_clients"],
            m["after_clients"],
            m["per_connection_bytes"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(c) = r["herald_cpu_us_per_notification"].as_f64() {
        out.push_str(&format!(
            "herald CPU per notification delivered (while sending): {c:.1} us\n"
        ));
    }
    if let Some(s) = r["reconnect_storm_s"].as_f64() {
        out.push_str(&format!(
            "reconnect storm: all queued notifications drained {s:.2} s after the first connect\n"
        ));
    }
    if let Some(ms) = r["celebrity_last_online_ms"].as_f64() {
        out.push_str(&format!(
            "celebrity post: last online follower received it {ms:.1} ms after the send\n"
        ));
    }
    if let Some(f) = r["faults"].as_array() {
        for x in f {
            out.push_str(&format!(
                "fault at {:.1} s: {} (down {} ms)\n",
                x["at_s"].as_f64().unwrap_or(0.0),
                x["fault"].as_str().unwrap_or(""),
                x["down_ms"]
            ));
        }
    }
    out.push_str(&format!(
        "verdict: {}\n",
        r["verdict"].as_str().unwrap_or("")
    ));
    out
}

fn polyline(points: &[(f64, f64)], w: f64, h: f64, xmax: f64, ymax: f64, color: &str) -> String {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| {
            format!(
                "{:.1},{:.1}",
                40.0 + x / xmax.max(1e-9) * (w - 50.0),
                h - 20.0 - y / ymax.max(1e-9) * (h - 30.0)
            )
        })
        .collect();
    format!(
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        pts.join(" ")
    )
}

pub fn html(r: &Value) -> String {
    let (w, h) = (720.0, 280.0);
    let tl = r["timeline"].as_array().cloned().unwrap_or_default();
    let p = |k: &str| -> Vec<(f64, f64)> {
        tl.iter()
            .map(|e| {
                (
                    e["t_s"].as_f64().unwrap_or(0.0),
                    e[k].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let (p50, p99) = (p("p50_ms"), p("p99_ms"));
    let xmax = p99.iter().map(|x| x.0).fold(1.0, f64::max);
    let ymax = p99.iter().map(|x| x.1).fold(1.0, f64::max) * 1.1;
    let cdf: Vec<(f64, f64)> = r["cdf"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["ms"].as_f64().unwrap_or(0.0),
                        e["quantile"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let cmax = cdf.iter().map(|x| x.0).fold(1.0, f64::max);
    let axis = |xl: &str, yl: &str, xmax: f64, ymax: f64| {
        format!(
            r#"<line x1="40" y1="{b}" x2="{r}" y2="{b}" stroke="gray"/><line x1="40" y1="10" x2="40" y2="{b}" stroke="gray"/>
<text x="{r}" y="{t}" text-anchor="end" font-size="11">{xl} (max {xmax:.1})</text><text x="44" y="20" font-size="11">{yl} (max {ymax:.2})</text>"#,
            b = h - 20.0,
            r = w - 10.0,
            t = h - 4.0
        )
    };
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Herald load report</title>
<style>body{{font-family:sans-serif;max-width:780px;margin:2em auto}}pre{{background:#f4f4f4;padding:1em}}</style></head><body>
<h1>Herald load report: {scenario}</h1><pre>{summary}</pre>
<h2>Live latency over time (p50 blue, p99 red)</h2>
<svg width="{w}" height="{h}">{axis1}{l50}{l99}</svg>
<h2>Latency CDF</h2>
<svg width="{w}" height="{h}">{axis2}{lcdf}</svg>
<h2>Raw report</h2><pre>{raw}</pre></body></html>"#,
        scenario = r["scenario"].as_str().unwrap_or(""),
        summary = summary(r),
        axis1 = axis("seconds", "ms", xmax, ymax),
        l50 = polyline(&p50, w, h, xmax, ymax, "#1f77b4"),
        l99 = polyline(&p99, w, h, xmax, ymax, "#d62728"),
        axis2 = axis("ms", "quantile", cmax, 1.0),
        lcdf = polyline(&cdf, w, h, cmax, 1.0, "#2ca02c"),
        raw = serde_json::to_string_pretty(r)
            .unwrap_or_default()
            .replace('<', "&lt;"),
    )
}
