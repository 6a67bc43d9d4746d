//! The browser client (`clients/js`): its compiled module is what its
//! TypeScript source compiles to, and its own tests (node's test runner,
//! node's WebSocket) pass against a real node.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use support::{Node, Redis};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

#[test]
fn the_compiled_module_is_up_to_date_with_its_source() {
    let dir = client_dir();
    if !dir.join("node_modules/typescript").exists() {
        // deploy/test.sh installs it (npm ci); without it this cannot be checked.
        assert!(
            std::env::var("HERALD_REQUIRE_NODE").is_err(),
            "clients/js/node_modules is missing: run `npm ci` in clients/js"
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("herald-tsc-{}", std::process::id()));
    let status = Command::new("node")
        .current_dir(&dir)
        .args([
            "node_modules/typescript/bin/tsc",
            "-p",
            "tsconfig.json",
            "--outDir",
        ])
        .arg(&out)
        .status()
        .expect("node");
    assert!(status.success(), "tsc failed");
    for f in ["herald.js", "herald.d.ts", "msgpack.js", "msgpack.d.ts"] {
        let fresh = std::fs::read_to_string(out.join(f)).expect("compiled");
        let committed = std::fs::read_to_string(dir.join("dist").join(f)).expect("dist");
        assert!(
            fresh == committed,
            "clients/js/dist/{f} is stale: run `npm run build` in clients/js"
        );
    }
    let _ = std::fs::remove_dir_all(out);
}

const JWT_SECRET: &str = "js-client-test-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_tests_pass_against_a_real_node() {
    let redis = Redis::start();
    // Development mode (`?user=`) with a JWT secret too: the token tests
    // mint their own.
    let node = Node::start(&redis, &[("HERALD_AUTH__JWT_SECRET", JWT_SECRET)]);
    let url = format!("http://{}", node.addr);
    let dir = client_dir();
    // The typed events under `tsc --strict` (test/types.ts: compiled, not
    // run; one line must fail to type-check, and does).
    let tsc = Command::new(dir.join("node_modules/.bin/tsc"))
        .current_dir(&dir)
        .args(["-p", "test/tsconfig.json"])
        .output()
        .expect("tsc runs (deploy/test.sh installs the client's compiler)");
    assert!(
        tsc.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tsc.stdout),
        String::from_utf8_lossy(&tsc.stderr)
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .args([
                "--experimental-websocket",
                "--test",
                "--test-timeout=60000",
                "test/",
            ])
            .env("HERALD_URL", url)
            .env("HERALD_JWT_SECRET", JWT_SECRET)
            .output()
    })
    .await
    .expect("join")
    .expect("node runs (deploy/test.sh installs Node.js)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client tests failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("# pass 12") && text.contains("# fail 0"),
        "{text}"
    );
}
