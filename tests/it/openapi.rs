//! `GET /v1/openapi.json` describes exactly the routes a node serves:
//! every path and method in the document is routed (the node answers it
//! with something other than its no-such-route or wrong-method error), and
//! every route in the code is registered through `utoipa_axum::routes!`,
//! which takes path and method from the handler's `#[utoipa::path]` (no
//! plain axum `.route(` anywhere in the crates).

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{http_blocking, Node, Redis};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_route_in_the_code_is_declared_for_the_document() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(files.len() > 50, "found {} files", files.len());
    let mut plain = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let plain_route = [".route(\"", ".route_service(", ".nest(", "axum::routing"]
                .iter()
                .any(|p| code.contains(p));
            if plain_route {
                plain.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        plain.is_empty(),
        "routes registered outside utoipa_axum::routes! (not in the OpenAPI document):\n{}",
        plain.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, doc) = node.get("/v1/openapi.json").await;
    assert_eq!(s, 200, "{doc}");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = Vec::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path.replace("{id}", "5");
            let addr = node.addr.clone();
            let m = method.to_uppercase();
            let body: Option<&[u8]> = (m != "GET").then_some(b"{}");
            let (status, v) = tokio::task::spawn_blocking(move || {
                http_blocking(
                    &addr,
                    &m,
                    &concrete,
                    body,
                    &[("content-type", "application/json")],
                )
            })
            .await
            .expect("join")
            .expect("http");
            let code = v["error"]["code"].as_str().unwrap_or("");
            let message = v["error"]["message"].as_str().unwrap_or("");
            assert!(
                !(status == 404 && message.starts_with("no such route")),
                "{method} {path} is documented but not routed"
            );
            assert!(
                !(status == 405 || code == "method_not_allowed"),
                "{method} {path} is documented but that method is not routed"
            );
            checked.push(format!("{method} {path}"));
        }
    }
    // The contract's routes are all there.
    for want in [
        "post /v1/events",
        "get /v1/users/{id}/notifications",
        "post /v1/users/{id}/notifications/read",
        "get /v1/users/{id}/preferences",
        "put /v1/users/{id}/preferences",
        "post /v1/users/{id}/mutes",
        "delete /v1/users/{id}/mutes",
        "post /v1/graph/follows",
        "get /v1/users/{id}/followers/count",
        "get /v1/users/{id}/inbox",
        "get /v1/ws",
        "get /healthz",
        "get /readyz",
        "get /metrics",
        "get /v1/admin/dead-letters",
        "post /v1/admin/dead-letters/replay",
        "get /v1/openapi.json",
        "get /demo",
    ] {
        assert!(
            checked.iter().any(|c| c == want),
            "{want} missing from {checked:?}"
        );
    }
    // A route that is not there is refused as such (the check above can fail).
    let (s, v): (u16, Value) = node.get("/v1/nothing-here").await;
    assert_eq!(s, 404);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("no such route"));
    // Schemas are referenced and present.
    assert!(
        doc["components"]["schemas"]["FeedPage"].is_object(),
        "{}",
        doc["components"]
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The Kubernetes pods pass Pod Security "restricted" and name a
/// versioned image; Prometheus scrapes with the admin key, not with
/// annotations that would be answered 401.
#[test]
fn the_kubernetes_files_are_restricted_and_versioned() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s");
    for f in ["edge.yaml", "ingest.yaml"] {
        let text = std::fs::read_to_string(dir.join(f)).expect("manifest");
        for needed in [
            "runAsNonRoot: true",
            "seccompProfile: { type: RuntimeDefault }",
            "allowPrivilegeEscalation: false",
            "capabilities: { drop: [\"ALL\"] }",
            &format!("image: herald:{}", env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.contains(needed), "{f}: no {needed:?}");
        }
        assert!(!text.contains(":latest"), "{f}: an unversioned image");
        assert!(
            !text.contains("prometheus.io/scrape"),
            "{f}: scrape annotations cannot send the admin key"
        );
    }
    let monitor = std::fs::read_to_string(dir.join("servicemonitor.yaml")).expect("monitor");
    assert!(monitor.contains("key: METRICS_TOKEN"), "{monitor}");
    let secret = std::fs::read_to_string(dir.join("config.yaml")).expect("config");
    assert!(
        secret.contains("METRICS_TOKEN:"),
        "the secret lacks METRICS_TOKEN"
    );
}

/// `promtool` (installed by deploy/test.sh) on what operators load: the
/// alert rules, and a running node's `/metrics` text (types, names, help).
/// The dashboard has its node and role variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_rules_and_the_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose");
    let promtool = |args: &[&str], stdin: Option<&[u8]>| {
        use std::io::Write;
        let mut c = std::process::Command::new("promtool")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs (deploy/test.sh installs the prometheus package)");
        if let Some(b) = stdin {
            c.stdin.take().expect("stdin").write_all(b).expect("write");
        }
        drop(c.stdin.take());
        c.wait_with_output().expect("promtool")
    };
    let rules = root.join("herald-rules.yml");
    let out = promtool(&["check", "rules", rules.to_str().expect("path")], None);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    node.get("/v1/users/1/inbox").await;
    let (s, m) = node.request("GET", "/metrics", None, &[]).await;
    assert_eq!(s, 200);
    let text = m.as_str().map(str::to_string).unwrap_or_default();
    assert!(text.contains("herald_build_info"), "{text}");
    let out = promtool(&["check", "metrics"], Some(text.as_bytes()));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/dashboards/herald.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["node", "role"]);
}

/// What validators and linters check: unique operation ids, a server,
/// security declared on every route but the public ones, MessagePack
/// declared where it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_passes_what_linters_check() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, doc) = node.get("/v1/openapi.json").await;
    assert_eq!(s, 200, "{doc}");
    assert!(
        doc["servers"].as_array().is_some_and(|s| !s.is_empty()),
        "no servers"
    );
    let public = [
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
        "/demo",
        "/demo/herald.js",
        "/demo/msgpack.js",
    ];
    let mut ids = std::collections::BTreeSet::new();
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(
                ids.insert(id.clone()),
                "operationId {id:?} twice ({method} {path})"
            );
            if public.contains(&path.as_str()) {
                continue;
            }
            let sec = op["security"].as_array();
            assert!(
                sec.is_some_and(|s| !s.is_empty()),
                "{method} {path} declares no security"
            );
            for req in sec.into_iter().flatten() {
                for name in req.as_object().expect("requirement").keys() {
                    assert!(
                        schemes.contains_key(name),
                        "{method} {path}: unknown scheme {name}"
                    );
                }
            }
        }
    }
    let body = &doc["paths"]["/v1/events"]["post"]["requestBody"]["content"];
    assert!(body.get("application/msgpack").is_some(), "{body}");
    assert!(body.get("application/json").is_some(), "{body}");
}

/// The reference validators (installed by deploy/test.sh into
/// tests/validators): `@asyncapi/parser` accepts docs/asyncapi.yaml and
/// swagger-parser the OpenAPI document a node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_validators_accept_both_contracts() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, doc) = node.get("/v1/openapi.json").await;
    assert_eq!(s, 200, "{doc}");
    let dir = tempfile::tempdir().expect("tempdir");
    let openapi = dir.path().join("openapi.json");
    std::fs::write(&openapi, doc.to_string()).expect("write");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("node")
        .current_dir(root.join("tests/validators"))
        .arg("validate.mjs")
        .arg(root.join("docs/asyncapi.yaml"))
        .arg(&openapi)
        .output()
        .expect("node runs (deploy/test.sh installs Node.js and the validators)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("valid"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
