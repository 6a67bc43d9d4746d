//! Distributed tracing against a real OTLP/HTTP collector on loopback: a
//! `traceparent` sent with `POST /v1/events` comes back as one trace of
//! three spans (accepting, fanning out, pushing the frame), each the child
//! of the one before and the first the child of the caller's; callers
//! that do not sample, or send none, make no spans.

use crate::support;

use serde_json::json;
use support::collector::Collector;
use support::{eventually, Client, Node, Redis};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

async fn post_traced(node: &Node, traceparent: Option<&str>, recipient: u64, object: &str) {
    let body = json!({"kind": "comment", "actor": 9, "recipient": recipient, "object": object, "text": "hi"});
    let mut headers = vec![("content-type", "application/json")];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    let (s, v) = node
        .request(
            "POST",
            "/v1/events",
            Some(serde_json::to_vec(&body).unwrap()),
            &headers,
        )
        .await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_is_followed_from_the_request_to_the_pushed_frame() {
    let redis = Redis::start();
    let collector = Collector::start().await;
    let url = collector.url();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_TELEMETRY__OTLP_ENDPOINT", url.as_str()),
            ("HERALD_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
            ("HERALD_TELEMETRY__SERVICE_NAME", "herald-test"),
        ],
    );
    let mut online = Client::connect(&node, 5).await;
    // Not sampled by the caller, and no traceparent at all: no spans.
    let unsampled = format!("00-{}-{CALLER}-00", "1".repeat(32));
    post_traced(&node, Some(&unsampled), 5, "post:unsampled").await;
    post_traced(&node, None, 5, "post:untraced").await;
    post_traced(&node, Some("not a traceparent"), 5, "post:malformed").await;
    // Sampled: traced end to end.
    let sampled = format!("00-{TRACE}-{CALLER}-01");
    post_traced(&node, Some(&sampled), 5, "post:traced").await;
    let frames = online.notifications(4).await;
    let traced = frames
        .iter()
        .find(|f| f["object"] == "post:traced")
        .expect("the traced notification arrived");
    // The frame itself is the contract's, no trace fields in it.
    assert!(traced.get("trace").is_none(), "{traced}");
    let spans = eventually("three spans of the trace at the collector", || async {
        let t = collector.trace(TRACE);
        (t.len() >= 3).then_some(t)
    })
    .await;
    let by = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
    };
    let ingest = by("herald.ingest");
    let fanout = by("herald.fanout");
    let push = by("herald.push");
    assert_eq!(ingest.parent, CALLER, "the caller's span is the parent");
    assert_eq!(fanout.parent, ingest.span_id);
    assert_eq!(push.parent, fanout.span_id);
    assert_eq!(ingest.service, "herald-test");
    assert_eq!(ingest.attr("herald.events"), Some("1"));
    assert_eq!(fanout.attr("herald.recipients"), Some("1"));
    assert_eq!(push.attr("herald.outcome"), Some("sent"));
    assert_eq!(
        push.attr("herald.notification_id"),
        traced["id"].as_str(),
        "the push span names the frame it sent"
    );
    assert_eq!(push.attr("herald.user"), Some("5"));
    // The three untraced requests came first; their spans, had any been
    // made, were sent with or before these.
    let other: Vec<_> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != TRACE)
        .collect();
    assert!(other.is_empty(), "spans of untraced requests: {other:?}");

    // Offline: the push span says so (the notification went to the inbox).
    online.close().await;
    let second = format!("00-{}-{CALLER}-01", "2".repeat(32));
    post_traced(&node, Some(&second), 5, "post:offline").await;
    let push = eventually("the offline push span", || async {
        collector
            .trace(&"2".repeat(32))
            .into_iter()
            .find(|s| s.name == "herald.push")
    })
    .await;
    assert_eq!(push.attr("herald.outcome"), Some("offline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_crosses_to_the_node_that_holds_the_connection() {
    let redis = Redis::start();
    let collector = Collector::start().await;
    let url = collector.url();
    let env = |id: &'static str| {
        let mut e = support::cluster_env(id);
        e.push(("HERALD_TELEMETRY__OTLP_ENDPOINT", url.as_str()));
        e.push(("HERALD_TELEMETRY__EXPORT_INTERVAL_MS", "100"));
        e
    };
    let a = Node::start(&redis, &env("node-a"));
    let b = Node::start(&redis, &env("node-b"));
    // A device on each node: whichever owns the partition, one copy is
    // pushed where it was made and one crosses to the other node.
    let mut on_a = Client::connect(&a, 6).await;
    let mut on_b = Client::connect(&b, 6).await;
    eventually("both nodes alive and both devices present", || async {
        let (_, p) = a.get("/v1/users/6/presence").await;
        (support::nodes_alive(&a).await == Some(2)
            && support::nodes_alive(&b).await == Some(2)
            && p["devices"].as_u64() == Some(2))
        .then_some(())
    })
    .await;
    let tp = format!("00-{TRACE}-{CALLER}-01");
    post_traced(&a, Some(&tp), 6, "post:both").await;
    let n_a = on_a.notification().await;
    let n_b = on_b.notification().await;
    assert_eq!(n_a["id"], n_b["id"]);
    let spans = eventually("a push span from each node", || async {
        let t = collector.trace(TRACE);
        (t.iter().filter(|s| s.name == "herald.push").count() >= 2).then_some(t)
    })
    .await;
    let fanout = spans
        .iter()
        .find(|s| s.name == "herald.fanout")
        .expect("a fan-out span");
    let pushes: Vec<_> = spans.iter().filter(|s| s.name == "herald.push").collect();
    let mut nodes: Vec<&str> = pushes.iter().map(|p| p.instance.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node-a", "node-b"], "{pushes:?}");
    for p in &pushes {
        assert_eq!(p.parent, fanout.span_id, "{p:?}");
        assert_eq!(p.attr("herald.outcome"), Some("sent"), "{p:?}");
    }
}
