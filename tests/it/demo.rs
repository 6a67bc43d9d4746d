//! The demo page (`/demo`, development mode) as a person uses it, in
//! Debian's Chromium driven through the DevTools protocol: notifications
//! arrive live with an unread badge, one is marked read, a preference is
//! changed and the next events follow it, older entries page in, and two
//! tabs share one connection. Screenshots are kept in
//! `target/test-artifacts/`.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{http_blocking, Client, Node, Redis};
use tokio_tungstenite::tungstenite::Message;

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(c).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("chromium is not installed: deploy/ensure-deps.sh installs Debian's chromium");
}

struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("tempdir");
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1280,860",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromium");
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// Opens a tab on `url`.
    async fn open(&self, url: &str) -> Tab {
        let addr = format!("127.0.0.1:{}", self.port);
        let path = format!("/json/new?{url}");
        let (s, v) = tokio::task::spawn_blocking(move || {
            http_blocking(&addr, "PUT", &path, None, &[]).expect("devtools http")
        })
        .await
        .expect("join");
        assert_eq!(s, 200, "{v}");
        let ws = v["webSocketDebuggerUrl"].as_str().expect("debugger url");
        let (ws, _) = tokio_tungstenite::connect_async(ws).await.expect("cdp");
        Tab { ws, next_id: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Tab {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Tab {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let m = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(m.to_string().into()))
            .await
            .expect("cdp send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("cdp answer in time")
                .expect("cdp open")
                .expect("cdp frame");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("cdp json");
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (bounded) until `expr` is true; returns how long it took.
    async fn until(&mut self, what: &str, expr: &str, within: Duration) -> Duration {
        let t = Instant::now();
        while self.eval(expr).await != Value::Bool(true) {
            if t.elapsed() >= within {
                let page = self
                    .eval("JSON.stringify({ready: document.body.dataset.ready, items: document.querySelectorAll('li[data-notification-id]').length, state: document.getElementById('state')?.textContent, toast: document.getElementById('toast')?.textContent, url: location.href})")
                    .await;
                panic!("{what}: not within {within:?}; the page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.elapsed()
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let b64 = r["data"].as_str().expect("png");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        std::fs::write(dir.join(name), base64_decode(b64)).expect("write png");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (val(c) as u32) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn shown(id: &str) -> String {
    format!("!!document.querySelector('[data-notification-id=\"{id}\"]')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_notifications_live_and_follows_preferences() {
    let redis = Redis::start();
    let node = Node::start(&redis, &[]);
    let browser = Browser::start();
    let base = format!("http://{}", node.addr);
    // Some history to page back through, delivered (and acked) on
    // another device: in the feed, not waiting in the inbox.
    for i in 0..24u64 {
        node.like(100 + i, 2, &format!("post:old{i}")).await;
    }
    let mut phone = Client::connect(&node, 2).await;
    let old = phone.notifications(24).await;
    let ids: Vec<&str> = old.iter().filter_map(|n| n["id"].as_str()).collect();
    phone.ack(&ids).await;
    phone.close().await;
    support::eventually("the inbox drained", || async {
        let (_, v) = node.get("/v1/users/2/inbox").await;
        (v["pending"] == 0).then_some(())
    })
    .await;
    let mut tab = browser.open(&format!("{base}/demo?user=2")).await;
    tab.until(
        "page ready",
        "document.body.dataset.ready === 'true' && document.querySelectorAll('li[data-notification-id]').length === 20",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        tab.eval("document.getElementById('more').hidden").await,
        false
    );
    tab.eval("document.getElementById('older').click()").await;
    tab.until(
        "older entries",
        "document.querySelectorAll('li[data-notification-id]').length === 24",
        Duration::from_secs(5),
    )
    .await;
    tab.until(
        "live",
        "document.getElementById('state').dataset.state === 'open'",
        Duration::from_secs(5),
    )
    .await;
    tab.eval("document.getElementById('read-all').click()")
        .await;
    tab.until(
        "all read",
        "document.getElementById('badge').hidden",
        Duration::from_secs(5),
    )
    .await;

    // A new event: on the page within a second, badge 1.
    let (s, v) = node
        .post(
            "/v1/events",
            &json!({"kind": "comment", "actor": 42, "recipient": 2, "object": "post:7", "text": "Great photo from the lake!"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = format!("n-{}-2", v["ids"][0].as_str().expect("id"));
    let took = tab
        .until("the new notification", &shown(&id), Duration::from_secs(1))
        .await;
    eprintln!("on the page {} ms after the 202", took.as_millis());
    assert_eq!(
        tab.eval("document.getElementById('badge').textContent")
            .await,
        "1"
    );
    tab.screenshot("demo-live.png").await;

    // Marked read on the page: the badge goes, the feed agrees.
    tab.eval(&format!(
        "document.querySelector('[data-notification-id=\"{id}\"] .mark-read').click()"
    ))
    .await;
    tab.until(
        "read",
        &format!(
            "document.getElementById('badge').hidden && document.querySelector('[data-notification-id=\"{id}\"]').dataset.read === 'true'"
        ),
        Duration::from_secs(5),
    )
    .await;
    let (_, feed) = node.get("/v1/users/2/notifications?limit=1").await;
    assert_eq!(feed["unread"], 0, "{feed}");
    assert_eq!(feed["notifications"][0]["read"], true, "{feed}");

    // Mute user 42 in the preferences form: their next like never shows,
    // another user's does.
    tab.eval(
        "document.getElementById('mute-actor').value = '42'; document.getElementById('prefs').requestSubmit()",
    )
    .await;
    tab.until(
        "preferences saved",
        "document.body.dataset.prefsSaved === '1'",
        Duration::from_secs(5),
    )
    .await;
    let muted = node.like(42, 2, "post:8").await;
    let other = node.like(43, 2, "post:8").await;
    tab.until(
        "the other user's like",
        &shown(&format!("n-{other}-2")),
        Duration::from_secs(2),
    )
    .await;
    // Both likes are for user 2, so one partition in order: had the muted
    // one been sent, it would have been shown before the other.
    assert_eq!(
        tab.eval(&shown(&format!("n-{muted}-2"))).await,
        false,
        "the muted user's like was shown"
    );
    tab.screenshot("demo-preferences.png").await;

    // A second tab of the same user shares the first one's connection.
    let mut tab2 = browser.open(&format!("{base}/demo?user=2")).await;
    tab2.until(
        "second tab ready",
        "document.body.dataset.ready === 'true'",
        Duration::from_secs(15),
    )
    .await;
    let third = node.like(44, 2, "post:9").await;
    let id3 = shown(&format!("n-{third}-2"));
    tab.until("first tab", &id3, Duration::from_secs(2)).await;
    tab2.until("second tab", &id3, Duration::from_secs(2)).await;
    let (_, metrics) = tokio::task::spawn_blocking({
        let addr = node.addr.clone();
        move || {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            use std::io::{Read, Write};
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            .expect("write");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            ((), out)
        }
    })
    .await
    .expect("join");
    let conns = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_connections "))
        .unwrap_or("?")
        .trim()
        .to_string();
    assert_eq!(conns, "1", "two tabs, one connection");
}
