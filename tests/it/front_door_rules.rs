//! What the front door refuses or adds, against the real binary over raw
//! sockets: transfer codings other than `chunked`, duplicate JSON keys,
//! CORS for the configured origins, and a node started while Redis is
//! down (listening and unready, then ready without a restart).

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{eventually, http_blocking, Node, Redis};

/// Sends `raw` and returns the whole answer (the server closes).
fn exchange(addr: &str, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn only_the_chunked_transfer_coding_is_accepted() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let body = r#"{"kind":"like","actor":1,"recipient":2,"object":"o"}"#;
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let req = |te: &str| {
        format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: {te}\r\nconnection: close\r\n\r\n{chunk}"
        )
    };
    let gz = exchange(&node.addr, &req("gzip, chunked"));
    assert!(gz.starts_with("HTTP/1.1 501"), "{gz}");
    assert!(gz.contains("unsupported_transfer_encoding"), "{gz}");
    let plain = exchange(&node.addr, &req("chunked"));
    assert!(plain.starts_with("HTTP/1.1 202"), "{plain}");
}

#[test]
fn duplicate_keys_are_refused_naming_the_key() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let body =
        br#"{"kind":"comment","actor":1,"recipient":2,"text":"hi","kind":"like","object":"o"}"#;
    let (s, v) = http_blocking(
        &node.addr,
        "POST",
        "/v1/events",
        Some(body),
        &[("content-type", "application/json")],
    )
    .expect("post");
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "duplicate_key", "{v}");
    assert_eq!(v["error"]["field"], "kind", "{v}");
}

#[test]
fn cors_answers_preflight_for_configured_origins_only() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[(
            "HERALD_HTTP__CORS_ORIGINS",
            r#"["https://app.example.com"]"#,
        )],
    );
    let preflight = |origin: &str| {
        exchange(
            &node.addr,
            &format!(
                "OPTIONS /v1/users/2/notifications HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\naccess-control-request-method: GET\r\naccess-control-request-headers: authorization\r\nconnection: close\r\n\r\n"
            ),
        )
        .to_lowercase()
    };
    let ok = preflight("https://app.example.com");
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: https://app.example.com"),
        "{ok}"
    );
    assert!(ok.contains("authorization"), "{ok}");
    let other = preflight("https://evil.example.net");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    // An ordinary request from the origin carries the header too.
    let get = exchange(
        &node.addr,
        "GET /v1/users/2/notifications HTTP/1.1\r\nhost: x\r\norigin: https://app.example.com\r\nconnection: close\r\n\r\n",
    )
    .to_lowercase();
    assert!(get.starts_with("http/1.1 200"), "{get}");
    assert!(
        get.contains("access-control-allow-origin: https://app.example.com"),
        "{get}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_is_down_is_unready_then_serves() {
    let port = support::free_port();
    let node = Node::start_unready(&format!("redis://127.0.0.1:{port}"), &[]);
    let v = eventually("/readyz to say redis is unreachable", || async {
        let (s, v) = node.get("/readyz").await;
        (s == 503).then_some(v)
    })
    .await;
    assert!(
        v["checks"]["redis"].to_string().contains("unreachable"),
        "{v}"
    );
    assert_eq!(node.get("/healthz").await.0, 200);
    let (s, _) = node
        .post(
            "/v1/events",
            &serde_json::json!({"kind":"like","actor":1,"recipient":2,"object":"o"}),
        )
        .await;
    assert_eq!(s, 503);
    let _redis = Redis::start_on(port);
    eventually("/readyz once redis is up", || async {
        (node.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let id = node.like(1, 2, "post:o").await;
    assert!(id.starts_with("e-"), "{id}");
}
