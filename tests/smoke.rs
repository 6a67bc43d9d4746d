//! The load generator's `smoke` scenario against a real node: fails when
//! any notification is lost or duplicated after an ack.

mod support;

use std::process::Command;

use support::{summary_row, Node, Redis};

#[test]
fn loadgen_smoke_loses_nothing() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let loadgen =
        std::path::Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    assert!(
        loadgen.exists(),
        "{} missing: build the workspace first (deploy/test.sh does)",
        loadgen.display()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(&loadgen)
        .args([
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "200",
            "--rate",
            "300",
            "--duration",
            "4",
            "--strict",
        ])
        .args(["--target", &node.addr])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("run herald-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke run failed:\n{stdout}\n{}\nherald log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    assert_eq!(
        summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}"
    );
    assert_eq!(
        summary_row(&stdout, "duplicated after ack").as_deref(),
        Some("0"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: pass"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("smoke.json")).unwrap()).unwrap();
    assert!(report["notifications"]["delivered_live"].as_u64().unwrap() > 0);
    assert!(out_dir.path().join("smoke.html").exists());
}
