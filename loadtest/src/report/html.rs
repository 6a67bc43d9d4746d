//! The HTML report: one self-contained file (no network, no scripts): a
//! verdict banner, the summary table, charts with axes and units, and the
//! raw JSON collapsed at the end.

use serde_json::Value;

use super::charts::{self, Line, BLUE_, GREEN_, ORANGE_, PURPLE_, RED_};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn series(v: &Value, x: &str, y: &str) -> Vec<(f64, f64)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e[x].as_f64()?, e[y].as_f64()?)))
        .collect()
}

/// Per-second rates from cumulative samples: (t, d(key)/dt).
pub(super) fn rate(samples: &Value, key: &str) -> Vec<(f64, f64)> {
    let pts = series(samples, "t_s", key);
    pts.windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1).max(0.0) / (w[1].0 - w[0].0)))
        .collect()
}

fn line(name: &str, points: Vec<(f64, f64)>, color: plotters::style::RGBColor) -> Line {
    Line {
        name: name.into(),
        points,
        color,
    }
}

fn figure(id: &str, svg: String) -> String {
    format!("<figure data-chart=\"{id}\">{svg}</figure>\n")
}

/// The charts of one run, each in a `<figure data-chart="...">`.
pub(super) fn run_charts(r: &Value) -> String {
    let s = &r["samples"];
    let tl = &r["timeline"];
    let mut out = String::new();
    out.push_str(&figure(
        "throughput",
        charts::lines(
            "Throughput",
            "seconds since start",
            "per second",
            &[
                line("events sent", rate(s, "sent"), BLUE_),
                line("events accepted (202)", rate(s, "accepted"), GREEN_),
                line("notifications delivered", rate(s, "delivered"), ORANGE_),
            ],
        ),
    ));
    out.push_str(&figure(
        "latency-over-time",
        charts::lines(
            "Live delivery latency over time",
            "seconds since sending started",
            "latency (ms)",
            &[
                line("p50", series(tl, "t_s", "p50_ms"), BLUE_),
                line("p90", series(tl, "t_s", "p90_ms"), GREEN_),
                line("p99", series(tl, "t_s", "p99_ms"), ORANGE_),
                line("p99.9", series(tl, "t_s", "p999_ms"), RED_),
            ],
        ),
    ));
    out.push_str(&figure(
        "latency-distribution",
        charts::percentiles(
            "Live delivery latency by percentile",
            &[line("live", series(&r["cdf"], "quantile", "ms"), BLUE_)],
        ),
    ));
    out.push_str(&figure(
        "connections",
        charts::lines(
            "Clients connected",
            "seconds since start",
            "connections",
            &[line("online", series(s, "t_s", "online"), PURPLE_)],
        ),
    ));
    let cpu = series(s, "t_s", "herald_cpu_pct");
    if !cpu.is_empty() {
        out.push_str(&figure(
            "herald-cpu",
            charts::lines(
                "Herald CPU",
                "seconds since start",
                "% of one core",
                &[line("herald", cpu, RED_)],
            ),
        ));
        out.push_str(&figure(
            "herald-memory",
            charts::lines(
                "Herald resident memory",
                "seconds since start",
                "MiB",
                &[line("RSS", series(s, "t_s", "herald_rss_mib"), GREEN_)],
            ),
        ));
    }
    let drains = series(&r["drain_percentiles"], "quantile", "ms");
    if !drains.is_empty() {
        out.push_str(&figure(
            "drain-times",
            charts::percentiles(
                "Inbox drain time by percentile (connect to last queued item)",
                &[line("drains", drains, PURPLE_)],
            ),
        ));
    }
    let receipts = series(&r["celebrity_receipts"], "ms", "followers");
    if !receipts.is_empty() {
        out.push_str(&figure(
            "celebrity-receipts",
            charts::lines(
                "Celebrity post: online followers served over time",
                "ms after the post was sent",
                "followers",
                &[line("followers served", receipts, ORANGE_)],
            ),
        ));
    }
    out
}

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}\
.verdict{padding:.8em 1.2em;border-radius:6px;font-size:1.3em;margin:1em 0}\
.pass{background:#e6f4ea;border:1px solid #34a853}.fail{background:#fce8e6;border:1px solid #d93025}\
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{padding:.3em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
td:first-child,th:first-child{white-space:nowrap;color:#555}figure{margin:1.5em 0}details pre{background:#f6f6f6;padding:1em;overflow:auto}";

/// The whole report page for one run.
pub fn html(r: &super::Report) -> String {
    let verdict = r.verdict;
    // The charts draw from the JSON form, as `compare` does from files.
    let v = serde_json::to_value(r).unwrap_or_default();
    let rows: String = super::rows(r)
        .into_iter()
        .map(|(k, v)| format!("<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v)))
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Herald load report: {scenario}</title>\
<style>{STYLE}</style></head><body>\
<h1>Herald load report: {scenario}</h1>\
<div class=\"verdict {verdict}\" data-verdict=\"{verdict}\"><strong>{upper}</strong>: {reason}</div>\
<table class=\"summary\">{rows}</table>\n{charts}\
<details><summary>Raw report (JSON)</summary><pre>{raw}</pre></details></body></html>",
        scenario = esc(&r.scenario),
        upper = verdict.to_uppercase(),
        reason = esc(&super::verdict_reason(r)),
        charts = run_charts(&v),
        raw = esc(&serde_json::to_string_pretty(&v).unwrap_or_default()),
    )
}
