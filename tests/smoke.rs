//! The load generator's `smoke` scenario against a real node: fails when
//! any notification is lost or duplicated after an ack.

mod support;

use support::{loadgen, summary_row, Node, Redis};

#[test]
fn loadgen_smoke_loses_nothing() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = loadgen(
        &node,
        &[
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
        ],
        out_dir.path(),
    );
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
