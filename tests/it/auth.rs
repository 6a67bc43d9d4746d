//! Who may do what, against the real binary: each key scope against each
//! kind of route, a user's JWT on their own and on another user's inbox
//! and preferences, `/metrics` for admins only, and production refusing
//! placeholder secrets at start (and in `herald check-config`).

use crate::support;

use std::process::Command;

use serde_json::json;
use support::{config_path, Node, Redis};

const READ: &str = "read-key-0123456789abcdef";
const INGEST: &str = "ingest-key-0123456789abcdef";
const ADMIN: &str = "admin-key-0123456789abcdef";
const SECRET: &str = "a-test-secret-of-forty-characters-000000";

fn token(user: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(config_path())
        .args(["token", "--user", &user.to_string(), "--ttl", "10m"])
        .env("HERALD_AUTH__JWT_SECRET", SECRET)
        .output()
        .expect("herald token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn call(
    node: &Node,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> u16 {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map(|b| b.to_string());
    let (s, _) = node
        .request(method, path, body.map(String::into_bytes), &headers)
        .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_users_acting_for_themselves() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_GATEWAY__READ_KEYS", &format!("[\"{READ}\"]")),
            ("HERALD_GATEWAY__API_KEYS", &format!("[\"{INGEST}\"]")),
            ("HERALD_GATEWAY__ADMIN_KEYS", &format!("[\"{ADMIN}\"]")),
            ("HERALD_AUTH__JWT_SECRET", SECRET),
        ],
    );
    let like = json!({"kind": "like", "actor": 1, "recipient": 5, "object": "post:1"});
    let prefs = json!({"default": "realtime"});
    let (u5, u6) = (token(5), token(6));
    // (method, path, body, [none, read, ingest, admin, user 5, user 6])
    let cases: Vec<(&str, &str, Option<serde_json::Value>, [u16; 6])> = vec![
        (
            "POST",
            "/v1/events",
            Some(like.clone()),
            [401, 403, 202, 202, 403, 403],
        ),
        (
            "POST",
            "/v1/graph/follows",
            Some(json!({"follows": [[1, 2]]})),
            [401, 403, 200, 200, 403, 403],
        ),
        (
            "GET",
            "/v1/users/5/followers/count",
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            "/v1/users/5/inbox",
            None,
            [401, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/users/5/preferences",
            None,
            [401, 200, 200, 200, 200, 403],
        ),
        (
            "PUT",
            "/v1/users/5/preferences",
            Some(prefs.clone()),
            [401, 403, 200, 200, 200, 403],
        ),
        (
            "POST",
            "/v1/users/5/mutes",
            Some(json!({"actor": 9})),
            [401, 403, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/admin/dead-letters",
            None,
            [401, 403, 403, 200, 403, 403],
        ),
        ("GET", "/metrics", None, [401, 403, 403, 200, 401, 401]),
    ];
    let who: [Option<&str>; 6] = [
        None,
        Some(READ),
        Some(INGEST),
        Some(ADMIN),
        Some(&u5),
        Some(&u6),
    ];
    for (method, path, body, want) in cases {
        for (w, expect) in who.iter().zip(want) {
            let got = call(&node, method, path, *w, body.clone()).await;
            assert_eq!(
                got,
                expect,
                "{method} {path} as {:?}",
                w.map(|k| &k[..8.min(k.len())])
            );
        }
    }
    // A token of another secret, or expired, is refused with the reason.
    let (s, v) = node
        .request(
            "GET",
            "/v1/users/5/inbox",
            None,
            &[("authorization", "Bearer a.b.c")],
        )
        .await;
    assert_eq!(s, 401, "{v}");
}

#[test]
fn production_refuses_placeholder_secrets() {
    let check = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
        c.arg("--config")
            .arg(config_path())
            .arg("check-config")
            .env("HERALD_WEBSOCKET__DEV_MODE", "false");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("herald check-config")
    };
    let out = check(&[(
        "HERALD_AUTH__JWT_SECRET",
        "change-me-to-a-long-random-secret-please",
    )]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.jwt_secret is a placeholder"), "{err}");
    let out = check(&[("HERALD_AUTH__JWT_SECRET", "x")]);
    assert!(!out.status.success());
    let out = check(&[
        ("HERALD_AUTH__JWT_SECRET", SECRET),
        ("HERALD_GATEWAY__API_KEYS", "[\"short\"]"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.api_keys is shorter than 16"), "{err}");
    let keys = format!("[\"{INGEST}\"]");
    let out = check(&[
        ("HERALD_AUTH__JWT_SECRET", SECRET),
        ("HERALD_GATEWAY__API_KEYS", &keys),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--config` is taken after the subcommand too.
#[test]
fn check_config_takes_config_after_the_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("check-config")
        .arg("--config")
        .arg(config_path())
        .output()
        .expect("herald check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
}

/// Production with no API key would answer anyone on every backend route:
/// refused by `check-config` and at start, unless `gateway.open = true`
/// says it is meant (then a warning, at every start and in `check-config`).
#[test]
fn production_without_api_keys_is_refused_unless_stated_open() {
    let herald = |sub: Option<&str>, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
        c.arg("--config")
            .arg(config_path())
            .args(["--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1"])
            .env("HERALD_WEBSOCKET__DEV_MODE", "false")
            .env("HERALD_AUTH__JWT_SECRET", SECRET);
        if let Some(s) = sub {
            c.arg(s);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("herald")
    };
    for sub in [Some("check-config"), None] {
        let out = herald(sub, &[]);
        assert!(!out.status.success(), "{sub:?} must refuse");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("with no API key"), "{sub:?}: {err}");
        assert!(err.contains("gateway.open"), "{sub:?}: {err}");
    }
    let out = herald(Some("check-config"), &[("HERALD_GATEWAY__OPEN", "true")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("warning: gateway.open = true"), "{stdout}");
    let keys = format!("[\"{ADMIN}\"]");
    let out = herald(
        Some("check-config"),
        &[
            ("HERALD_GATEWAY__OPEN", "true"),
            ("HERALD_GATEWAY__ADMIN_KEYS", &keys),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.open = true but API keys"), "{err}");
}

/// A node stated open starts, warns in its log, and serves without keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_node_stated_open_warns_at_start() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_WEBSOCKET__DEV_MODE", "false"),
            ("HERALD_AUTH__JWT_SECRET", SECRET),
            ("HERALD_GATEWAY__OPEN", "true"),
        ],
    );
    // The start-up log (copied from the node's stdout as it comes) warns,
    // and says what to open next.
    let next = format!("http://{}/v1/openapi.json", node.addr);
    support::eventually("the start-up lines in the log", || async {
        let log = node.log_tail();
        (log.contains("gateway.open = true") && log.contains(&next)).then_some(())
    })
    .await;
    assert_eq!(
        call(&node, "GET", "/v1/users/5/inbox", None, None).await,
        200
    );
}

/// The load generator drives a node configured as in production: API
/// keys, no development mode, users with their own tokens.
#[test]
fn the_load_generator_drives_a_production_config_node() {
    let redis = Redis::start();
    let node = Node::start(
        &redis,
        &[
            ("HERALD_GATEWAY__API_KEYS", &format!("[\"{INGEST}\"]")),
            ("HERALD_AUTH__JWT_SECRET", SECRET),
            ("HERALD_WEBSOCKET__DEV_MODE", "false"),
        ],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let run = support::loadgen(
        &node,
        &[
            "run",
            "--scenario",
            "smoke",
            "--clients",
            "100",
            "--rate",
            "100",
            "--duration",
            "3",
            "--strict",
            "--api-key",
            INGEST,
            "--jwt-secret",
            SECRET,
        ],
        out.path(),
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        support::summary_row(&stdout, "lost").as_deref(),
        Some("0"),
        "{stdout}"
    );
}

/// What operators alert on exists from the start (at 0), and the process
/// CPU time is a counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_operators_alert_on_exist_from_the_start() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let (s, m) = node.request("GET", "/metrics", None, &[]).await;
    assert_eq!(s, 200);
    let text = m
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| m.to_string());
    for line in [
        "herald_dead_letters_total 0",
        "herald_fanout_redis_errors_total 0",
        "# TYPE process_cpu_seconds_total counter",
        "herald_webhook_dead_lettered_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    let build = format!(
        "herald_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build), "{build} missing");
    // Each answered request is timed by its route template.
    node.get("/v1/users/7/inbox").await;
    let (_, m) = node.request("GET", "/metrics", None, &[]).await;
    let text = m.as_str().map(str::to_string).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.starts_with("herald_http_request_seconds_count{")
                && l.contains("route=\"/v1/users/{id}/inbox\"")
                && l.contains("method=\"GET\"")
                && l.contains("status=\"2xx\"")),
        "no request timing for the inbox route:\n{}",
        text.lines()
            .filter(|l| l.contains("http_request"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
