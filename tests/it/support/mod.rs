//! Test harness: a real `redis-server` on a free port, the real `herald`
//! binary against it with its data in a temp dir, HTTP over real sockets and
//! real WebSocket clients.

#![allow(dead_code)]

pub mod collector;
mod infra;
pub mod netns;
pub mod receiver;
#[allow(unused_imports)]
pub use infra::{RedisCluster, Tmpfs};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private redis-server, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    extra: Vec<String>,
}

fn spawn_redis(port: u16, extra: &[&str], dir: &Path) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (the test script installs it)")
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A redis-server with extra arguments (e.g. cluster mode).
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_inner(extra, None)
    }

    /// A redis-server on `port` (a node was told to use it before it ran).
    pub fn start_on(port: u16) -> Redis {
        Redis::start_inner(&[], Some(port))
    }

    fn start_inner(extra: &[&str], fixed: Option<u16>) -> Redis {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = fixed.unwrap_or_else(free_port);
            let child = spawn_redis(port, extra, dir.path());
            let mut r = Redis {
                child,
                port,
                _dir: dir,
                extra: extra.iter().map(|e| e.to_string()).collect(),
            };
            if r.wait_up() {
                return r;
            }
            let _ = r.child.kill();
        }
        panic!("redis-server did not start");
    }

    /// Starts the server again (after [`Redis::kill9`]) on the same port,
    /// with the same arguments and directory (a cluster node keeps its
    /// `nodes.conf`: same id, same slots, its data gone without
    /// persistence).
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn_redis(self.port, &extra, self._dir.path());
        assert!(self.wait_up(), "redis-server did not start again");
    }

    fn wait_up(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.ping() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn ping(&self) -> bool {
        self.cmd("PING")
            .map(|r| r.starts_with("+PONG"))
            .unwrap_or(false)
    }

    /// Sends one inline command and returns the raw reply.
    pub fn cmd(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }
}

impl Redis {
    /// Calls per command since start (`INFO commandstats`).
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let mut out = std::collections::HashMap::new();
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return out;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let _ = s.write_all(b"INFO commandstats\r\n");
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        for line in String::from_utf8_lossy(&raw).lines() {
            // cmdstat_zadd:calls=3,usec=...
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            if let Some(calls) = stats.split(',').find_map(|kv| kv.strip_prefix("calls=")) {
                out.insert(name.to_string(), calls.trim().parse().unwrap_or(0));
            }
        }
        out
    }
}

impl Redis {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the server dies at once.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the server stops answering but keeps its sockets and data.
    pub fn pause(&self) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc_kill(self.child.id() as i32, 19);
        }
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc_kill(self.child.id() as i32, 18);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `herald` process.
pub struct Node {
    child: Option<Child>,
    pub addr: String,
    pub data: PathBuf,
    /// The node's `--data-dir` (the log lives in `log/` under it).
    pub node_dir: PathBuf,
    redis_url: String,
    env: Vec<(String, String)>,
    /// `--listen`: `127.0.0.1:0` unless the node needs a fixed port (peers
    /// that must know each other's address before they start).
    listen: String,
    /// A command the node runs under (`ip netns exec NS`), if any.
    wrap: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml")
}

impl Node {
    /// Starts a node on a fresh data dir; `env` adds HERALD_* overrides.
    pub fn start(redis: &Redis, env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let node_dir = dir.path().join("node");
        Self::start_in(redis, env, dir, node_dir)
    }

    /// A node not started yet, on a fresh temporary data dir.
    fn unstarted(redis_url: &str, env: &[(&str, &str)], listen: String, wrap: Vec<String>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        Node {
            child: None,
            addr: String::new(),
            data: dir.path().to_path_buf(),
            node_dir: dir.path().join("node"),
            redis_url: redis_url.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen,
            wrap,
            _dir: Some(dir),
        }
    }

    /// Starts a node against a Redis URL that may not answer yet, without
    /// waiting for it to become ready; returns once it listens.
    pub fn start_unready(redis_url: &str, env: &[(&str, &str)]) -> Node {
        let mut n = Self::unstarted(redis_url, env, "127.0.0.1:0".into(), Vec::new());
        n.spawn_inner(false);
        n
    }

    /// Starts a node listening on `port` without waiting for it to become
    /// ready (a replica is ready once its partitions have leaders, which
    /// needs its peers); returns once it listens.
    pub fn start_on_port(redis: &Redis, env: &[(&str, &str)], port: u16) -> Node {
        let mut n = Self::unstarted(&redis.url(), env, format!("127.0.0.1:{port}"), Vec::new());
        n.spawn_inner(false);
        n
    }

    /// Starts a node inside network namespace `ns`, listening on `listen`
    /// (an address of that namespace), against `redis_url`, without
    /// waiting for it to become ready.
    pub fn start_in_netns(ns: &str, listen: &str, redis_url: &str, env: &[(&str, &str)]) -> Node {
        let wrap = vec!["ip".into(), "netns".into(), "exec".into(), ns.into()];
        let mut n = Self::unstarted(redis_url, env, listen.to_string(), wrap);
        n.spawn_inner(false);
        n
    }

    /// Waits (up to `wait`) for `/readyz` to answer 200.
    pub fn wait_ready(&self, wait: Duration) {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_blocking(&self.addr, "GET", "/readyz", None, &[]) {
                return;
            }
            if start.elapsed() > wait {
                let r = http_blocking(&self.addr, "GET", "/readyz", None, &[]);
                panic!(
                    "{} never became ready: {r:?}\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Keeps the node's files after the test (debugging).
    pub fn keep_files(&mut self) {
        if let Some(d) = self._dir.take() {
            let _ = d.keep();
        }
    }

    /// Deletes the node's data directory (a stopped node's disk lost).
    pub fn wipe(&self) {
        assert!(self.child.is_none(), "wipe a stopped node only");
        let _ = std::fs::remove_dir_all(&self.node_dir);
    }

    /// Starts a node whose `--data-dir` is `node_dir` (a tmpfs, say); its
    /// own log file goes to `dir`.
    pub fn start_in(
        redis: &Redis,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        node_dir: PathBuf,
    ) -> Node {
        let mut n = Node {
            child: None,
            addr: String::new(),
            data: dir.path().to_path_buf(),
            node_dir,
            redis_url: redis.url(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen: "127.0.0.1:0".into(),
            wrap: Vec::new(),
            _dir: Some(dir),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        self.spawn_inner(true);
    }

    fn spawn_inner(&mut self, wait_ready: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("herald.log"))
            .expect("log file");
        let mut cmd = match self.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_herald"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_herald")),
        };
        cmd.arg("--config")
            .arg(config_path())
            .args(["--listen", &self.listen, "--redis", &self.redis_url])
            .arg("--data-dir")
            .arg(&self.node_dir)
            .env("HERALD_LOG", "info,herald=debug")
            .env("HERALD_LOG__PARTITIONS", "4")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // The node logs to stdout: kept beside its stderr for log_tail.
        let mut copy = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("herald.log"))
            .ok();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.strip_prefix("herald listening: http://") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        self.addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("herald did not start; log:\n{}", self.log_tail());
            }
        };
        self.child = Some(child);
        if !wait_ready {
            return;
        }
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = http_blocking(&self.addr, "GET", "/readyz", None, &[]) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "herald never became ready:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.data.join("herald.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The herald process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGSTOP: the node freezes (its sockets stay open).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child process.
            unsafe {
                libc_kill(c.id() as i32, 19);
            }
        }
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child process.
            unsafe {
                libc_kill(c.id() as i32, 18);
            }
        }
    }

    /// SIGKILL: no shutdown work at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc_kill(c.id() as i32, 15);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        false
    }

    /// Sets (or replaces) a `HERALD_*` variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Drops a `HERALD_*` override for the next start.
    pub fn unset_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// Starts the node again on the same data dir and Redis.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Starts the node again without waiting for `/readyz` (it may not
    /// become ready); returns once it listens.
    pub fn restart_unready(&mut self) {
        self.spawn_inner(false);
    }

    /// The response head (status line and headers, lower-cased) of a POST.
    /// POSTs `body` over a fresh connection; returns the head (lowercase)
    /// and the body as the node sent them.
    pub fn post_raw(&self, path: &str, body: &Value) -> (String, String) {
        self.raw(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// One request with exactly these body bytes over a fresh connection;
    /// the head (lowercase) and the body as the node sent them.
    pub fn raw(&self, method: &str, path: &str, ctype: &str, b: &[u8]) -> (String, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
            b.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(b);
        s.write_all(&req).expect("write");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_ascii_lowercase(), body.to_string())
    }

    pub fn post_head(&self, path: &str, body: &Value) -> String {
        self.post_raw(path, body).0
    }

    pub fn ws_url(&self, user: u64) -> String {
        format!("ws://{}/v1/ws?user={user}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(
            "POST",
            path,
            Some(body.to_string().into_bytes()),
            &[("content-type", "application/json")],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, &[]).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let addr = self.addr.clone();
        let method = method.to_string();
        let path = path.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            http_blocking(&addr, &method, &path, body.as_deref(), &h).expect("http request")
        })
        .await
        .expect("http task")
    }

    /// Posts one like from `actor` to `recipient` and returns its event id.
    pub async fn like(&self, actor: u64, recipient: u64, object: &str) -> String {
        let (s, v) = self
            .post("/v1/events", &serde_json::json!({"kind": "like", "actor": actor, "recipient": recipient, "object": object}))
            .await;
        assert_eq!(s, 202, "{v}");
        v["ids"][0].as_str().expect("event id").to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A minimal HTTP/1.1 client (one request per connection), so tests see
/// exactly what went over the wire.
pub fn http_blocking(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr)?;
    // A deadline, not a measure: generous for a machine busy with other
    // work (a big import takes seconds on a loaded 2-core host).
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    if let Some(b) = body {
        if !chunked
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let (Some(b), true) = (body, chunked) {
        let _ = s.write_all(format!("{:x}\r\n", b.len()).as_bytes());
        let _ = s.write_all(b);
        let _ = s.write_all(b"\r\n0\r\n\r\n");
    } else if let Some(b) = body {
        // The server may answer early (413) and close; that is fine.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, v))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client as an app would be.
pub struct Client {
    pub ws: Ws,
    pub user: u64,
    pub hello: Value,
}

impl Client {
    /// Connects (dev mode) and reads the hello.
    pub async fn connect(node: &Node, user: u64) -> Client {
        Self::connect_with(node, user, None).await
    }

    pub async fn connect_with(node: &Node, user: u64, protocol: Option<&str>) -> Client {
        Self::connect_url(&node.ws_url(user), user, protocol).await
    }

    /// Connects to a WebSocket URL (`ws://host:port/v1/ws?user=ID`).
    pub async fn connect_url(url: &str, user: u64, protocol: Option<&str>) -> Client {
        let mut req = url.into_client_request().expect("request");
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().expect("header"));
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut c = Client {
            ws,
            user,
            hello: Value::Null,
        };
        let hello = c.next().await.expect("hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["user"], user);
        c.hello = hello;
        c
    }

    /// The next notification frame as the node sent it (text or binary
    /// bytes), skipping other frames; None on close or after `WAIT`.
    pub async fn raw_notification(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            let b = match m {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => return None,
                _ => continue,
            };
            let v: Value = serde_json::from_slice(&b)
                .or_else(|_| rmp_serde::from_slice(&b))
                .unwrap_or(Value::Null);
            if v["type"] == "notification" {
                return Some(b);
            }
        }
    }

    /// The next server frame as JSON (MessagePack frames are decoded), or
    /// None on close or after `WAIT`.
    pub async fn next_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
                Message::Binary(b) => return rmp_serde::from_slice(&b).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(WAIT).await
    }

    /// The next notification (skipping other frame types).
    pub async fn notification(&mut self) -> Value {
        loop {
            let v = self
                .next()
                .await
                .expect("expected a notification, got nothing");
            if v["type"] == "notification" {
                return v;
            }
        }
    }

    pub async fn notifications(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.notification().await);
        }
        out
    }

    pub async fn ack(&mut self, ids: &[&str]) {
        let f = serde_json::json!({"type": "ack", "ids": ids});
        self.ws
            .send(Message::text(f.to_string()))
            .await
            .expect("send ack");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Wait for the server's side to finish.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Polls `f` until it returns Some or `WAIT` passes.
/// `PUT /v1/users/{user}/preferences` with `body`; must answer 200.
pub async fn put_prefs(node: &Node, user: u64, body: &Value) {
    let (s, v) = node
        .request(
            "PUT",
            &format!("/v1/users/{user}/preferences"),
            Some(body.to_string().into_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Asserts that a WebSocket to `url` is refused as the contract says: the
/// handshake completes, then the server closes at once with 1008 and an
/// `unauthorized: ...` reason.
pub async fn assert_ws_unauthorized(url: &str) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the handshake completes");
    let first = tokio::time::timeout(WAIT, ws.next()).await;
    match first {
        Ok(Some(Ok(Message::Close(Some(f))))) => {
            assert_eq!(u16::from(f.code), 1008, "{url}: {f:?}");
            assert!(f.reason.starts_with("unauthorized: "), "{url}: {f:?}");
        }
        other => panic!("{url}: not refused ({other:?})"),
    }
}

pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, f).await
}

/// Polls `f` until it returns Some or `wait` passes (for conditions a node
/// reports only after a delay of its own, such as a stall after 10 s).
pub async fn eventually_within<T, F, Fut>(what: &str, wait: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < wait, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually_within`] for tests without a runtime.
pub fn eventually_sync<T>(what: &str, wait: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < wait, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of every sample of metric `name` (any labels) that the node at
/// `addr` reports, if it answers.
pub fn metric_at(addr: &str, name: &str) -> Option<f64> {
    let (_, v) = http_blocking(addr, "GET", "/metrics", None, &[]).ok()?;
    metric_in(v.as_str()?, name)
}

/// [`metric_at`] from a runtime.
pub async fn metric(node: &Node, name: &str) -> Option<f64> {
    let (_, v) = node.get("/metrics").await;
    metric_in(v.as_str()?, name)
}

fn metric_in(text: &str, name: &str) -> Option<f64> {
    let mut any = false;
    let sum = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .inspect(|_| any = true)
        .sum();
    any.then_some(sum)
}

/// Waits until each node at `addrs` sees all of them alive.
pub fn cluster_formed_at(addrs: &[&str]) {
    let n = addrs.len() as f64;
    eventually_sync("every node alive on every node", WAIT * 3, || {
        addrs
            .iter()
            .all(|a| metric_at(a, "herald_relay_nodes_alive") == Some(n))
            .then_some(())
    })
}

/// `replication.peers` for nodes `node-1`, `node-2`, ... at `addrs`.
pub fn peer_list(addrs: &[String]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("\"node-{}={a}\"", i + 1))
        .collect();
    format!("[{}]", list.join(","))
}

/// The settings of replicated node `name` among `peers` (replication 3,
/// fast heartbeats and elections for tests).
pub fn replicated_env(name: &str, peers: &str) -> Vec<(String, String)> {
    [
        ("HERALD_SERVER__CLUSTER", "true"),
        ("HERALD_SERVER__NODE_ID", name),
        ("HERALD_SERVER__CLUSTER_KEY", "test-cluster-key"),
        ("HERALD_LOG__REPLICATION_FACTOR", "3"),
        ("HERALD_REPLICATION__PEERS", peers),
        ("HERALD_REPLICATION__HEARTBEAT_MS", "100"),
        ("HERALD_REPLICATION__ELECTION_MS", "500"),
        ("HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS", "2000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Borrowed pairs of `env`, as the start functions take them.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Whether `user`'s inbox holds a notification of event `event_id` (false
/// while the inbox cannot be read).
pub async fn inbox_has(node: &Node, user: u64, event_id: &str) -> bool {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/inbox?limit=1000"))
        .await;
    s == 200
        && v["notifications"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["event_id"] == event_id))
}

/// How many nodes `node` sees alive (its own included), from its metrics.
pub async fn nodes_alive(node: &Node) -> Option<u64> {
    let (_, m) = node.get("/metrics").await;
    m.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix("herald_relay_nodes_alive "))
        .and_then(|v| v.trim().parse().ok())
}

/// The settings of cluster node `id` on a shared Redis (a dead node's
/// partitions and unanswered pushes move after at most 2 s).
pub fn cluster_env(id: &str) -> Vec<(&str, &str)> {
    vec![
        ("HERALD_SERVER__CLUSTER", "true"),
        ("HERALD_SERVER__NODE_ID", id),
        ("HERALD_SERVER__CLUSTER_KEY", "test-cluster-key"),
        ("HERALD_SERVER__LEASE_TTL_MS", "2000"),
        ("HERALD_FANOUT__REMOTE_ANSWER_TIMEOUT_MS", "2000"),
    ]
}

/// What `c` got before a sentinel like from user 99 (`post:sentinel`)
/// sent after it: nothing, when nothing else was meant for `c`. A "nothing
/// happened" check that waits for a later event instead of a fixed time.
pub async fn before_sentinel(node: &Node, c: &mut Client) -> Vec<Value> {
    let ev = serde_json::json!({"kind": "like", "actor": 99, "recipient": c.user, "object": "post:sentinel"});
    let (s, v) = node.post("/v1/events", &ev).await;
    assert_eq!(s, 202, "{v}");
    let mut before = Vec::new();
    loop {
        let n = c.notification().await;
        if n["object"] == "post:sentinel" {
            return before;
        }
        before.push(n);
    }
}

/// Every record of `node` settled (its fan-out checkpoint can pass them).
pub async fn all_settled(node: &Node) -> bool {
    let (_, m) = node.get("/metrics").await;
    let text = m.as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("herald_fanout_in_flight_records"))
        .collect();
    !lines.is_empty() && lines.iter().all(|l| l.trim_end().ends_with(" 0"))
}

/// Waits until every one of `nodes` sees all of them alive (liveness is
/// announced every second; a push goes only to nodes seen alive).
pub async fn cluster_formed(nodes: &[&Node]) {
    let n = nodes.len() as u64;
    eventually(&format!("{n} nodes alive on every node"), || async {
        for x in nodes {
            if nodes_alive(x).await != Some(n) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Ids of notifications waiting in `user`'s inbox, via the public API.
pub async fn inbox_ids(node: &Node, user: u64) -> Vec<String> {
    let (s, v) = node
        .get(&format!("/v1/users/{user}/inbox?limit=1000"))
        .await;
    assert_eq!(s, 200, "{v}");
    v["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a row of the load generator's terminal summary
/// (`<label>  <value>`).
pub fn summary_row(out: &str, label: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let rest = l.strip_prefix(label)?;
        rest.starts_with("  ").then(|| rest.trim().to_string())
    })
}

/// Runs the load generator (built beside the herald binary) with `args`
/// against `node`, reports in `out`; returns its output.
pub fn loadgen(node: &Node, args: &[&str], out: &Path) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_herald")).with_file_name("herald-loadgen");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first (deploy/test.sh does)",
        bin.display()
    );
    Command::new(&bin)
        .args(args)
        .args(["--target", &node.addr])
        .arg("--out")
        .arg(out)
        .output()
        .expect("run herald-loadgen")
}

/// Starts `n` replicated nodes (`node-1`...) on one Redis, each on its
/// own port and disk, and waits until they serve.
pub fn start_replicated(redis: &Redis, n: usize) -> Vec<Node> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = peer_list(&addrs);
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let env = replicated_env(&format!("node-{}", i + 1), &peers);
            Node::start_on_port(redis, &env_refs(&env), *port)
        })
        .collect();
    keep_logs_and_wait_ready(&mut nodes);
    nodes
}

/// With `KEEP_LOGS` set, keeps the nodes' data directories (printing
/// where: "node data: DIR"); then waits until every node serves.
pub fn keep_logs_and_wait_ready(nodes: &mut [Node]) {
    if std::env::var("KEEP_LOGS").is_ok() {
        for n in nodes.iter_mut() {
            eprintln!("node data: {}", n.data.display());
            n.keep_files();
        }
    }
    for n in nodes.iter() {
        n.wait_ready(Duration::from_secs(60));
    }
}

/// The `replication.peers` value of a cluster started by `start_replicated`.
pub fn peers_of(nodes: &[Node]) -> String {
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    peer_list(&addrs)
}

/// Posts a like from `actor` to `recipient` at any live node, retrying
/// while leadership moves; the event id once answered `202`.
pub async fn like_anywhere(nodes: &[&Node], actor: u64, recipient: u64) -> String {
    let body = serde_json::json!({"kind": "like", "actor": actor, "recipient": recipient, "object": format!("post:{actor}")});
    let start = std::time::Instant::now();
    let mut i = actor as usize;
    loop {
        let n = nodes[i % nodes.len()];
        i += 1;
        let (s, v) = n.post("/v1/events", &body).await;
        if s == 202 {
            return v["ids"][0].as_str().unwrap_or_default().to_string();
        }
        assert!(s == 503 || s == 0, "unexpected answer {s}: {v}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no node took the event in 60 s: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis commands that write (scripts apart).
pub const WRITES: [&str; 14] = [
    "set",
    "del",
    "sadd",
    "srem",
    "hset",
    "hdel",
    "zadd",
    "zrem",
    "zpopmin",
    "zremrangebyrank",
    "xadd",
    "lpush",
    "rpush",
    "incr",
];

/// Calls of `WRITES` commands between two `Redis::command_calls`.
pub fn writes(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> u64 {
    WRITES
        .iter()
        .map(|c| after.get(*c).copied().unwrap_or(0) - before.get(*c).copied().unwrap_or(0))
        .sum()
}
