//! The load generator's HTML report as a person sees it: a short run,
//! rendered by headless Chromium (Debian's package, installed by the
//! project's scripts). Every chart is there, the verdict banner reads pass,
//! the page logs no console error; the screenshot is kept in
//! `target/test-artifacts/` to look at.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Node, Redis};

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(c).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("chromium is not installed: deploy/ensure-deps.sh installs Debian's chromium");
}

fn headless(args: &[&str], page: &Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--enable-logging=stderr", "--v=0"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn the_html_report_renders_every_chart() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let loadgen = Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    let out = tempfile::tempdir().expect("tempdir");
    let pid = node.pid().expect("herald pid").to_string();
    let run = Command::new(&loadgen)
        .args([
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "100",
            "--rate",
            "200",
        ])
        .args([
            "--duration",
            "3",
            "--target",
            &node.addr,
            "--herald-pid",
            &pid,
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("herald-loadgen");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = out.path().join("smoke.html");
    let dom = headless(&["--dump-dom"], &page);
    let html = String::from_utf8_lossy(&dom.stdout);
    for chart in [
        "throughput",
        "latency-over-time",
        "latency-distribution",
        "connections",
        "herald-cpu",
        "herald-memory",
    ] {
        let tag = format!("data-chart=\"{chart}\"");
        assert!(
            html.contains(&tag),
            "chart {chart} missing from the rendered page"
        );
    }
    assert!(html.matches("<svg").count() >= 6, "charts are not SVG");
    assert!(html.contains("data-verdict=\"pass\""), "no pass banner");
    assert!(
        html.contains("seconds since start") && html.contains("latency (ms)"),
        "axes lack units"
    );
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !log.lines()
            .any(|l| l.contains("CONSOLE") && l.contains("ERROR")),
        "console errors:\n{log}"
    );
    // The screenshot, to look at (and to refresh docs/ with).
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("load-report.png");
    let s = headless(
        &[
            "--window-size=1000,2400",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.len() > 20_000 && png.starts_with(b"\x89PNG"),
        "screenshot is not a picture"
    );
}
