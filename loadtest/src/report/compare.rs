//! `herald-loadgen compare`: several runs side by side. Each side is one or
//! more JSON reports of the same build (medians are taken across them);
//! the output is a table of medians and deltas against the first side, and
//! one HTML page with the runs' charts overlaid.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::charts::{self, Line};
use super::html::{rate, STYLE};

/// A figure compared across sides: (label, path in the report, lower is better).
const METRICS: [(&str, &str, bool); 14] = [
    ("events accepted /s", "/events/accepted_per_s", false),
    (
        "notifications delivered /s",
        "/notifications/delivered_per_s",
        false,
    ),
    ("live p50 (ms)", "/latency_live_ms/p50", true),
    ("live p90 (ms)", "/latency_live_ms/p90", true),
    ("live p99 (ms)", "/latency_live_ms/p99", true),
    ("live p99.9 (ms)", "/latency_live_ms/p999", true),
    ("live max (ms)", "/latency_live_ms/max", true),
    (
        "herald CPU per notification (us)",
        "/herald_cpu_us_per_notification",
        true,
    ),
    (
        "herald bytes per connection",
        "/herald_rss_kib/per_connection_bytes",
        true,
    ),
    ("lost", "/notifications/lost", true),
    (
        "duplicated after ack",
        "/notifications/duplicated_after_ack",
        true,
    ),
    ("late (> 1 s)", "/notifications/late_over_1s", true),
    ("reconnect storm (s)", "/reconnect_storm_s", true),
    (
        "celebrity last receipt (ms)",
        "/celebrity_last_online_ms",
        true,
    ),
];

pub struct Side {
    pub label: String,
    pub runs: Vec<Value>,
}

/// Loads each side from a comma-separated list of report files.
pub fn load(specs: &[String], labels: Option<&str>) -> anyhow::Result<Vec<Side>> {
    let names: Vec<String> = match labels {
        Some(l) => l.split(',').map(|s| s.trim().to_string()).collect(),
        None => (0..specs.len())
            .map(|i| ((b'A' + i as u8) as char).to_string())
            .collect(),
    };
    anyhow::ensure!(specs.len() >= 2, "compare needs at least two sides");
    anyhow::ensure!(
        names.len() == specs.len(),
        "--labels needs one label per side"
    );
    let mut sides = Vec::new();
    for (spec, label) in specs.iter().zip(names) {
        let mut runs = Vec::new();
        for f in spec.split(',').filter(|f| !f.is_empty()) {
            let bytes = std::fs::read(f).with_context(|| format!("reading {f}"))?;
            let v: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{f} is not a report"))?;
            runs.push(v);
        }
        anyhow::ensure!(!runs.is_empty(), "side {label} has no report");
        sides.push(Side { label, runs });
    }
    Ok(sides)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Rows: metric, then per side "median (runs...)", then deltas vs side 1.
pub fn table(sides: &[Side]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (label, path, lower_better) in METRICS {
        let meds: Vec<Option<f64>> = sides
            .iter()
            .map(|s| {
                median(
                    s.runs
                        .iter()
                        .filter_map(|r| r.pointer(path)?.as_f64())
                        .collect(),
                )
            })
            .collect();
        if meds.iter().all(Option::is_none) {
            continue;
        }
        let mut row = vec![label.to_string()];
        for (s, m) in sides.iter().zip(&meds) {
            let runs: Vec<String> = s
                .runs
                .iter()
                .filter_map(|r| r.pointer(path)?.as_f64())
                .map(fmt)
                .collect();
            row.push(match m {
                Some(m) if runs.len() > 1 => format!("{} ({})", fmt(*m), runs.join(", ")),
                Some(m) => fmt(*m),
                None => "-".into(),
            });
        }
        for m in &meds[1..] {
            row.push(match (meds[0], m) {
                (Some(a), Some(b)) if a != 0.0 => {
                    let pct = (b - a) / a * 100.0;
                    let better = if lower_better { pct < 0.0 } else { pct > 0.0 };
                    let word = if pct.abs() < 0.5 {
                        "same"
                    } else if better {
                        "better"
                    } else {
                        "worse"
                    };
                    format!("{pct:+.1}% ({word})")
                }
                (Some(a), Some(b)) => format!("{:+}", b - a),
                _ => "-".into(),
            });
        }
        rows.push(row);
    }
    rows
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn header(sides: &[Side]) -> Vec<String> {
    let mut h = vec!["figure (median of runs)".to_string()];
    h.extend(
        sides
            .iter()
            .map(|s| format!("{} ({} runs)", s.label, s.runs.len())),
    );
    h.extend(
        sides[1..]
            .iter()
            .map(|s| format!("{} vs {}", s.label, sides[0].label)),
    );
    h
}

/// The table aligned for a terminal.
pub fn text(sides: &[Side]) -> String {
    let mut all = vec![header(sides)];
    all.extend(table(sides));
    let cols = all[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            all.iter()
                .map(|r| r.get(c).map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &all {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One HTML page: the table, then each chart with every run overlaid.
pub fn html(sides: &[Side]) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let head: String = header(sides)
        .iter()
        .map(|h| format!("<th>{}</th>", esc(h)))
        .collect();
    let body: String = table(sides)
        .iter()
        .map(|r| {
            let cells: String = r.iter().map(|c| format!("<td>{}</td>", esc(c))).collect();
            format!("<tr>{cells}</tr>")
        })
        .collect();
    let mut pct = Vec::new();
    let mut p99 = Vec::new();
    let mut thr = Vec::new();
    let mut k = 0;
    for (si, s) in sides.iter().enumerate() {
        for (ri, r) in s.runs.iter().enumerate() {
            let name = format!("{} run {}", s.label, ri + 1);
            let color = charts::palette(si * 2 + (ri % 2));
            k += 1;
            let pts = |v: &Value, x: &str, y: &str| -> Vec<(f64, f64)> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e[x].as_f64()?, e[y].as_f64()?)))
                    .collect()
            };
            pct.push(Line {
                name: name.clone(),
                points: pts(&r["cdf"], "quantile", "ms"),
                color,
            });
            p99.push(Line {
                name: name.clone(),
                points: pts(&r["timeline"], "t_s", "p99_ms"),
                color,
            });
            thr.push(Line {
                name,
                points: rate(&r["samples"], "delivered"),
                color,
            });
        }
    }
    let _ = k;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Herald load comparison</title>\
<style>{STYLE}</style></head><body><h1>Herald load comparison</h1>\
<table class=\"compare\"><tr>{head}</tr>{body}</table>\
<figure data-chart=\"latency-distribution\">{a}</figure>\
<figure data-chart=\"p99-over-time\">{b}</figure>\
<figure data-chart=\"throughput\">{c}</figure></body></html>",
        a = charts::percentiles("Live delivery latency by percentile", &pct),
        b = charts::lines(
            "Live p99 over time",
            "seconds since sending started",
            "latency (ms)",
            &p99
        ),
        c = charts::lines(
            "Notifications delivered",
            "seconds since start",
            "per second",
            &thr
        ),
    )
}

/// Writes the comparison page and returns the terminal table.
pub fn run(specs: &[String], labels: Option<&str>, out: &Path) -> anyhow::Result<String> {
    let sides = load(specs, labels)?;
    std::fs::write(out, html(&sides)).with_context(|| format!("writing {}", out.display()))?;
    Ok(text(&sides))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(p99: f64, cpu: f64) -> Value {
        json!({"latency_live_ms": {"p99": p99}, "herald_cpu_us_per_notification": cpu,
               "notifications": {"lost": 0}})
    }

    #[test]
    fn medians_and_deltas() {
        let sides = vec![
            Side {
                label: "base".into(),
                runs: vec![run(300.0, 34.0), run(340.0, 35.0), run(390.0, 39.0)],
            },
            Side {
                label: "after".into(),
                runs: vec![run(320.0, 34.5), run(250.0, 33.8), run(330.0, 36.0)],
            },
        ];
        let t = table(&sides);
        let p99 = t.iter().find(|r| r[0] == "live p99 (ms)").expect("p99 row");
        assert!(p99[1].starts_with("340 "), "{p99:?}");
        assert!(p99[2].starts_with("320 "), "{p99:?}");
        assert!(p99[3].contains("better"), "{p99:?}");
        assert!(text(&sides).contains("after vs base"));
        assert!(html(&sides).contains("data-chart=\"latency-distribution\""));
    }
}
