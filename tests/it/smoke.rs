//! The load generator's `smoke` scenario against a real node: fails when
//! any notification is lost or duplicated after an ack.

use crate::support;

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

/// Two `--failover` runs against the same node: the second's idempotency
/// keys and texts are its own, so Herald does not drop its events as
/// repeats of the first's, and what the first left behind (inboxes) is
/// not counted against it.
#[test]
fn a_second_run_against_the_same_node_is_judged_on_its_own() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    for run in 0..2 {
        let out_dir = tempfile::tempdir().unwrap();
        let out = loadgen(
            &node,
            &[
                "run",
                "--scenario",
                "smoke",
                "--clients",
                "100",
                "--rate",
                "200",
                "--duration",
                "2",
                "--failover",
                "--strict",
            ],
            out_dir.path(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            summary_row(&stdout, "lost").as_deref(),
            Some("0"),
            "run {run}: {stdout}"
        );
        assert_eq!(
            summary_row(&stdout, "unexpected").as_deref(),
            Some("0"),
            "run {run}: {stdout}"
        );
    }
}

/// Declared kinds, data payloads and threads (issue 28 item 4): the
/// generator sends a share of likes as a declared kind, a share of
/// comments as replies in threads with subscribers, every event with a
/// data object, and its verdict counts them like every other
/// notification.
#[test]
fn loadgen_drives_declared_kinds_data_and_threads() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_KINDS__LG_WAVE", r#"{notify = ["recipient"]}"#),
            (
                "HERALD_KINDS__LG_REPLY",
                r#"{notify = ["recipient", "subscribers"]}"#,
            ),
        ],
    );
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
            "--custom-share",
            "0.5",
            "--thread-share",
            "0.5",
            "--data-bytes",
            "256",
            "--strict",
        ],
        out_dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run failed:\n{stdout}\n{}\nherald log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_tail()
    );
    for row in ["lost", "duplicated after ack", "unexpected"] {
        assert_eq!(
            summary_row(&stdout, row).as_deref(),
            Some("0"),
            "{row}: {stdout}"
        );
    }
    // The threads were subscribed through the API.
    let threads = redis.cmd("KEYS h:os:*").unwrap_or_default();
    assert!(threads.starts_with("*10\r\n"), "{threads:?}");
}
