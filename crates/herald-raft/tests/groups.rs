//! Three replicas of a two-partition log, each with its own log directory
//! and HTTP listener on loopback, talking real HTTP: proposals commit on a
//! majority at the same offsets everywhere, a leader's loss elects another
//! that keeps every committed record, and a minority commits nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes as AxBytes;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use herald_log::{Log, LogConfig};
use herald_raft::{PeerAddr, ReplicaConfig, ReplicaError, Replicas};
use tokio::sync::OnceCell;

struct Node {
    name: String,
    log: Log,
    replicas: Arc<Replicas>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

type Slot = Arc<OnceCell<Arc<Replicas>>>;

/// Every request goes here (the node's own router is not in this crate):
/// `/v1/internal/raft/{p}/{op}` is parsed from the path.
async fn serve(
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

async fn cluster(n: usize) -> Vec<Node> {
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
        let slot: Slot = Arc::new(OnceCell::new());
        let app = axum::Router::new().fallback(serve).with_state(slot.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            &dir.path().join("log"),
            LogConfig {
                partitions: 2,
                replicated: true,
                ..LogConfig::default()
            },
        )
        .unwrap();
        let cfg = ReplicaConfig {
            node: peers[i].name.clone(),
            peers: peers.clone(),
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
        nodes.push(Node {
            name: peers[i].name.clone(),
            log,
            replicas,
            server,
            _dir: dir,
        });
    }
    nodes
}

/// The index of the node leading `p`, waiting up to `within`.
async fn leader_of(nodes: &[Node], p: u32, within: Duration) -> usize {
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

fn recs(tag: &str, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{tag}-{i}"))).collect()
}

/// Waits until `node` holds `want` records in `p`, then returns them.
async fn records_on(node: &Node, p: u32, want: usize) -> Vec<(u64, Bytes)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_commit_on_a_majority_and_survive_the_leaders_loss() {
    let mut nodes = cluster(3).await;
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    // Producers folded into entries: each gets its own first offset.
    let mut firsts = Vec::new();
    for k in 0..20 {
        firsts.push(
            nodes[l]
                .replicas
                .propose(0, recs(&format!("a{k}"), 5))
                .await
                .unwrap(),
        );
    }
    assert_eq!(firsts[0], 0);
    assert!(firsts.windows(2).all(|w| w[1] == w[0] + 5), "{firsts:?}");
    // A follower refuses to propose and names the leader.
    let f = (l + 1) % 3;
    let start = Instant::now();
    loop {
        match nodes[f].replicas.propose(0, recs("x", 1)).await {
            Err(ReplicaError::NotLeader {
                leader: Some(p), ..
            }) => {
                assert_eq!(p.name, nodes[l].name);
                break;
            }
            Err(ReplicaError::NotLeader { leader: None, .. }) => {}
            other => panic!("a follower proposed: {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the follower never learnt its leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every replica holds the same records at the same offsets.
    let on_leader = records_on(&nodes[l], 0, 100).await;
    for n in &nodes {
        assert_eq!(records_on(n, 0, 100).await, on_leader, "{} differs", n.name);
    }

    // The leader goes (its groups stop, its listener closes).
    let gone = nodes.remove(l);
    gone.replicas.shutdown().await;
    gone.server.abort();
    let started = Instant::now();
    let l2 = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    let first = nodes[l2].replicas.propose(0, recs("b", 3)).await.unwrap();
    eprintln!("a new leader took writes after {:?}", started.elapsed());
    assert_eq!(first, 100, "the new leader continues the offsets");
    for n in &nodes {
        let got = records_on(n, 0, 103).await;
        assert_eq!(
            &got[..100],
            &on_leader[..],
            "{} lost committed records",
            n.name
        );
        assert_eq!(got[100].1, Bytes::from("b-0"));
    }

    // One replica alone is a minority: nothing commits, and it says so.
    let last = nodes.remove(l2);
    last.replicas.shutdown().await;
    last.server.abort();
    let alone = &nodes[0];
    let r = alone.replicas.propose(0, recs("c", 1)).await;
    assert!(
        matches!(
            r,
            Err(ReplicaError::NotLeader { .. }) | Err(ReplicaError::NotEnoughReplicas { .. })
        ),
        "a minority committed: {r:?}"
    );
    let held = records_on(alone, 0, 103).await;
    assert!(
        held.iter().all(|(_, b)| !b.starts_with(b"c-")),
        "a minority wrote"
    );
    alone.replicas.shutdown().await;
    drop(gone.log);
}
