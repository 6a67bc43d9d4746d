//! The harness of the replicated-partition tests: nodes with their own
//! log directory and HTTP listener on loopback, talking real HTTP.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes as AxBytes;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use herald_log::{Log, LogConfig};
use herald_raft::{PeerAddr, ReplicaConfig, Replicas};
use tokio::sync::OnceCell;

pub struct Node {
    pub name: String,
    pub log: Log,
    pub replicas: Arc<Replicas>,
    pub server: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

pub type Slot = Arc<OnceCell<Arc<Replicas>>>;

/// Every request goes here (the node's own router is not in this crate):
/// `/v1/internal/raft/{p}/{op}` is parsed from the path.
pub async fn serve(
    State(slot): State<Slot>,
    uri: axum::http::Uri,
    body: AxBytes,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let bad = || (StatusCode::NOT_FOUND, format!("no route {uri}"));
    let rest = uri
        .path()
        .strip_prefix("/v1/internal/raft/")
        .ok_or_else(bad)?;
    let (p, op) = rest.split_once('/').ok_or_else(bad)?;
    let p: u32 = p.parse().map_err(|_| bad())?;
    let r = slot
        .get()
        .ok_or((StatusCode::SERVICE_UNAVAILABLE, "starting".into()))?;
    r.serve(p, op, &body)
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e))
}

pub fn log_config() -> LogConfig {
    LogConfig {
        partitions: 2,
        replicated: true,
        ..LogConfig::default()
    }
}

pub async fn cluster(n: usize) -> Vec<Node> {
    cluster_with(n, log_config()).await
}

pub async fn cluster_with(n: usize, log_cfg: LogConfig) -> Vec<Node> {
    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.push(PeerAddr {
            name: format!("node-{}", i + 1),
            addr: l.local_addr().unwrap().to_string(),
        });
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        nodes.push(start_node(&peers, i, l, dir, log_cfg.clone()).await);
    }
    nodes
}

/// Starts node `i` of `peers` on listener `l` with its files in `dir`.
pub async fn start_node(
    peers: &[PeerAddr],
    i: usize,
    l: tokio::net::TcpListener,
    dir: tempfile::TempDir,
    log_cfg: LogConfig,
) -> Node {
    start_node_as(&peers[i].name, peers, 1, l, dir, log_cfg).await
}

/// Starts the node `name` with the node set `peers` at `epoch`.
pub async fn start_node_as(
    name: &str,
    peers: &[PeerAddr],
    epoch: u64,
    l: tokio::net::TcpListener,
    dir: tempfile::TempDir,
    log_cfg: LogConfig,
) -> Node {
    let slot: Slot = Arc::new(OnceCell::new());
    let app = axum::Router::new().fallback(serve).with_state(slot.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let log = Log::open(&dir.path().join("log"), log_cfg).unwrap();
    let cfg = ReplicaConfig {
        node: name.to_string(),
        peers: peers.to_vec(),
        epoch,
        factor: 3,
        cluster_key: "k".into(),
        heartbeat: Duration::from_millis(100),
        election: Duration::from_millis(500),
        commit_timeout: Duration::from_secs(3),
        role: "ingest".into(),
    };
    let replicas = Replicas::start(cfg, log.clone(), dir.path().join("raft"))
        .await
        .unwrap();
    let _ = slot.set(replicas.clone());
    Node {
        name: name.to_string(),
        log,
        replicas,
        server,
        _dir: dir,
    }
}

/// Stops `n` (its groups, its listener, its log); its files stay.
pub async fn stop_node(n: Node) -> tempfile::TempDir {
    n.replicas.shutdown().await;
    n.server.abort();
    let _ = n.server.await;
    n.log.close().await.unwrap();
    drop(n.replicas);
    drop(n.log);
    n._dir
}

/// The index of the node leading `p`, waiting up to `within`.
pub async fn leader_of(nodes: &[Node], p: u32, within: Duration) -> usize {
    let start = Instant::now();
    loop {
        if let Some(i) = nodes.iter().position(|n| n.replicas.leading(p).is_some()) {
            return i;
        }
        assert!(
            start.elapsed() < within,
            "no leader for partition {p} in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn recs(tag: &str, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{tag}-{i}"))).collect()
}

/// Waits until `node` holds `want` records in `p`, then returns them.
pub async fn records_on(node: &Node, p: u32, want: usize) -> Vec<(u64, Bytes)> {
    let start = Instant::now();
    loop {
        let got: Vec<(u64, Bytes)> = node
            .log
            .read(p, 0, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r.payload))
            .collect();
        if got.len() >= want {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} holds {} of {want} records of partition {p}",
            node.name,
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records `node` holds in `p`, from the first it still has.
pub fn held(node: &Node, p: u32) -> Vec<(u64, Bytes)> {
    let (start, _) = node.log.bounds(p).unwrap();
    let mut out = Vec::new();
    let mut from = start;
    loop {
        let got = node.log.read(p, from, 1 << 20).unwrap();
        let Some(last) = got.last() else { break };
        from = last.offset + 1;
        out.extend(got.into_iter().map(|r| (r.offset, r.payload)));
    }
    out
}
