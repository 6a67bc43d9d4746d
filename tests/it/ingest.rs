//! The HTTP contract: validation, limits, auth, graph import, inbox reads
//! and the operations endpoints.

use crate::support;

use serde_json::json;
use support::{inbox_ids, Client, Node, Redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_event_is_refused_whole() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let mut c = Client::connect(&node, 2).await;
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"events": [
                {"kind": "like", "actor": 1, "recipient": 2, "object": "post:bad-batch"},
                {"kind": "like", "actor": 1, "recipient": 2, "object": "post:bad-batch"},
                {"kind": "like", "actor": 1}
            ]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["index"], 2);
    assert_eq!(v["error"]["field"], "recipient");
    assert_eq!(v["error"]["code"], "missing_field");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("recipient"));
    // Nothing of it is delivered: the next notification is a later one.
    node.like(1, 2, "post:after").await;
    let n = c.notification().await;
    assert_eq!(n["object"], "post:after");

    for (body, field) in [
        (json!({"kind": "wave", "actor": 1}), "kind"),
        (json!({"kind": "post", "actor": "x"}), "actor"),
        (
            json!({"kind": "post", "actor": 1, "text": "t".repeat(1001)}),
            "text",
        ),
        (
            json!({"kind": "post", "actor": 1, "id": "i".repeat(129)}),
            "id",
        ),
        (json!({"kind": "post", "actor": 1, "extra": true}), "extra"),
        (json!({"kind": "mention", "actor": 1}), "mentions"),
        (
            json!({"kind": "follow", "actor": 1, "recipient": 1}),
            "recipient",
        ),
    ] {
        let (s, v) = node.post("/v1/events", &body).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    let (s, v) = node
        .request(
            "POST",
            "/v1/events",
            Some(b"{\"kind\":".to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("malformed_body"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_content_types_and_keys() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_GATEWAY__MAX_BATCH", "3"),
            ("HERALD_GATEWAY__MAX_BODY_BYTES", "2048"),
            ("HERALD_GATEWAY__API_KEYS", "[\"k1\"]"),
        ],
    );
    let auth = ("authorization", "Bearer k1");
    let ct = ("content-type", "application/json");
    let post = |body: Vec<u8>, headers: Vec<(&'static str, &'static str)>| {
        let node = &node;
        async move {
            node.request("POST", "/v1/events", Some(body), &headers)
                .await
        }
    };
    let one = json!({"kind": "post", "actor": 1}).to_string().into_bytes();
    // No key, wrong key: 401.
    let (s, v) = post(one.clone(), vec![ct]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = post(one.clone(), vec![ct, ("authorization", "Bearer nope")]).await;
    assert_eq!(s, 401);
    let (s, v) = post(one.clone(), vec![ct, auth]).await;
    assert_eq!(s, 202, "{v}");
    // Too many events: 413.
    let four = json!({"events": [{"kind": "post", "actor": 1}, {"kind": "post", "actor": 1}, {"kind": "post", "actor": 1}, {"kind": "post", "actor": 1}]});
    let (s, v) = post(four.to_string().into_bytes(), vec![ct, auth]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("too_large")));
    // Body too large, announced by Content-Length: refused before reading.
    let (s, _) = post(vec![b' '; 10], vec![ct, auth, ("content-length", "100000")]).await;
    assert_eq!(s, 413);
    // Body too large without a length announced (chunked): cut at the limit.
    let big = json!({"kind": "post", "actor": 1, "text": "x".repeat(3000)})
        .to_string()
        .into_bytes();
    let (s, _) = post(big, vec![ct, auth, ("transfer-encoding", "chunked")]).await;
    assert_eq!(s, 413);
    let small = json!({"kind": "post", "actor": 1}).to_string().into_bytes();
    let (s, _) = post(small, vec![ct, auth, ("transfer-encoding", "chunked")]).await;
    assert_eq!(s, 202);
    // Unknown content type: 415.
    let (s, v) = post(one.clone(), vec![("content-type", "text/plain"), auth]).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // The node still serves.
    let (s, _) = post(one, vec![ct, auth]).await;
    assert_eq!(s, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_import_counts_and_inbox_reads() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, v) = node
        .post(
            "/v1/graph/follows",
            &json!({"follows": [[1, 100], ["2", 100], [3, 100], [1, 200]]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["imported"], 4);
    let (_, v) = node.get("/v1/users/100/followers/count").await;
    assert_eq!(v, json!({"user": 100, "followers": 3}));
    let (s, v) = node
        .post("/v1/graph/follows", &json!({"follows": [[1, 2], [5, 5]]}))
        .await;
    assert_eq!((s, v["error"]["index"].as_u64()), (400, Some(1)));
    let (s, _) = node.get("/v1/users/abc/followers/count").await;
    assert_eq!(s, 400);

    // A post reaches every imported follower's inbox.
    let (s, _) = node
        .post(
            "/v1/events",
            &json!({"kind": "post", "actor": 100, "object": "post:x"}),
        )
        .await;
    assert_eq!(s, 202);
    for u in [1, 2, 3] {
        support::eventually("post in inbox", || async {
            (inbox_ids(&node, u).await.len() == 1).then_some(())
        })
        .await;
    }
    let (_, v) = node.get("/v1/users/1/inbox?limit=1").await;
    assert_eq!(v["pending"], 1);
    assert_eq!(v["notifications"][0]["kind"], "post");
    assert_eq!(v["notifications"][0]["object"], "post:x");
    let (s, v) = node.get("/v1/users/1/inbox?limit=0").await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("limit")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, _) = node.get("/healthz").await;
    assert_eq!(s, 200);
    let (s, v) = node.get("/v1/nope").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, v) = node.get("/v1/events").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (s, v) = node.get("/readyz").await;
    assert_eq!((s, v["ready"].as_bool()), (200, Some(true)), "{v}");
    for check in ["log", "redis", "fanout", "quarantine"] {
        assert_eq!(v["checks"][check], "ok", "{v}");
    }
    let _c = Client::connect(&node, 1).await;
    node.like(2, 1, "post:m").await;
    let (s, v) = node.get("/metrics").await;
    assert_eq!(s, 200);
    let text = v.as_str().unwrap_or_default().to_string();
    for name in [
        "herald_events_accepted_total",
        "herald_connections",
        "herald_log_append_seconds",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    drop(redis);
    let (s, v) = node.get("/readyz").await;
    assert_eq!((s, v["ready"].as_bool()), (503, Some(false)), "{v}");
    let redis = v["checks"]["redis"].as_str().unwrap_or_default();
    assert!(redis.starts_with("unreachable"), "{v}");
    assert_eq!(v["checks"]["log"], "ok", "{v}");
}
