//! The load generator's chaos scenario, short form: traffic while the
//! generator kills Herald with SIGKILL and restarts it twice and stops
//! Redis once. Fails when any accepted event's notification is lost.
//! (A longer run is recorded in docs/FAULTS.md.)

use crate::support;

use std::process::Command;

use support::{free_port, summary_row, Redis};

#[test]
fn chaos_loses_nothing() {
    let redis = Redis::start();
    let loadgen =
        std::path::Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    assert!(
        loadgen.exists(),
        "{} missing: build the workspace first",
        loadgen.display()
    );
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let herald_cmd = format!(
        "{} --config {} --listen 127.0.0.1:{port} --redis {} --data-dir {}",
        env!("CARGO_BIN_EXE_herald"),
        support::config_path().display(),
        redis.url(),
        data.path().join("node").display()
    );
    let out = Command::new(&loadgen)
        .args([
            "run",
            "--scenario",
            "chaos",
            "--clients",
            "300",
            "--rate",
            "300",
        ])
        .args([
            "--duration",
            "8",
            "--kills",
            "2",
            "--redis-pause-ms",
            "1500",
            "--strict",
        ])
        .args(["--target", &format!("127.0.0.1:{port}")])
        .args(["--redis-pid", &redis.pid().to_string()])
        .args(["--herald-cmd", &herald_cmd])
        .arg("--out")
        .arg(data.path().join("out"))
        .output()
        .expect("run herald-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let herald_log =
        std::fs::read_to_string(data.path().join("out/chaos-herald.log")).unwrap_or_default();
    let tail: Vec<&str> = herald_log.lines().rev().take(30).collect();
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{}\nherald log (last lines, newest first):\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail.join("\n")
    );
    assert_eq!(
        summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}"
    );
    assert!(stdout.contains("refused 0"), "{stdout}");
    assert_eq!(
        stdout.matches("herald SIGKILL + restart").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("redis SIGSTOP"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("out/chaos.json")).expect("report"))
            .expect("json");
    assert_eq!(report["verdict"], "pass");
    assert!(
        report["notifications"]["expected"].as_u64().unwrap_or(0) > 1000,
        "{report}"
    );
}
