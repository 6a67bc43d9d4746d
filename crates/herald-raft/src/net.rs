//! Raft messages between nodes: `POST /v1/internal/raft/{partition}/{op}`
//! on the peer's HTTP port, MessagePack bodies, the cluster key in the
//! `x-herald-cluster-key` header. One HTTP client (one connection pool per
//! peer) serves every group on a node, so the groups living on the same
//! nodes share their connections.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use crate::types::{NodeId, Snapshot, TypeConfig, Vote};

/// The header carrying the cluster key (the same as the gateway's).
pub const CLUSTER_KEY_HEADER: &str = "x-herald-cluster-key";
/// Largest answer read back from a peer.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Shared by every group of a node.
#[derive(Clone)]
pub struct Transport {
    client: Client<HttpConnector, Full<Bytes>>,
    key: String,
}

impl Transport {
    pub fn new(key: String) -> Transport {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(conn);
        Transport { client, key }
    }

    /// Asks the node at `addr` what it sees of its replicas.
    pub(crate) async fn get_view(
        &self,
        addr: &str,
        ttl: Duration,
    ) -> Result<crate::view::NodeReport, String> {
        self.call(addr, 0, "view", &(), ttl)
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// Asks the replica of `partition` at `addr` to start no election for
    /// `ms` milliseconds (or until it hears of a newer term): a leader
    /// handing its partition over keeps the other followers from taking
    /// it first.
    pub(crate) async fn pause(&self, addr: &str, partition: u32, ms: u64) -> Result<(), String> {
        self.call::<u64, bool>(addr, partition, "pause", &ms, Duration::from_millis(500))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    /// Asks the replica of `partition` at `addr` to start an election now
    /// (the preferred replica, once the other followers' leases ran out).
    pub(crate) async fn elect(&self, addr: &str, partition: u32) -> Result<(), String> {
        self.call::<bool, bool>(addr, partition, "elect", &true, Duration::from_millis(500))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    /// Sends `msg` to `addr` for `partition`'s `op`; the peer's answer.
    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        addr: &str,
        partition: u32,
        op: &str,
        msg: &Q,
        ttl: Duration,
    ) -> Result<A, CallError> {
        let body = rmp_serde::to_vec_named(msg).map_err(|e| CallError::Local(e.to_string()))?;
        let req = hyper::Request::post(format!("http://{addr}/v1/internal/raft/{partition}/{op}"))
            .header(CLUSTER_KEY_HEADER, &self.key)
            .header("content-type", "application/msgpack")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Local(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Unreachable(e.to_string()))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError::Refused(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )));
            }
            rmp_serde::from_slice(&body).map_err(|e| CallError::Refused(e.to_string()))
        };
        match tokio::time::timeout(ttl, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Unreachable(format!(
                "{addr} did not answer within {ttl:?}"
            ))),
        }
    }
}

#[derive(Debug)]
enum CallError {
    /// Connecting, sending or reading failed, or no answer in time.
    Unreachable(String),
    /// The peer answered, but not with a Raft answer.
    Refused(String),
    /// This side could not build the request.
    Local(String),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::other(match self {
            CallError::Unreachable(m) | CallError::Refused(m) | CallError::Local(m) => m,
        });
        RPCError::Unreachable(Unreachable::new(&e))
    }
}

/// Makes clients to the peers of one group.
pub struct Network {
    pub transport: Transport,
    pub partition: u32,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            transport: self.transport.clone(),
            partition: self.partition,
            target,
            addr: node.addr.clone(),
        }
    }
}

/// One peer of one group.
pub struct Peer {
    transport: Transport,
    partition: u32,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn rpc<Q: Serialize, A: DeserializeOwned>(
        &self,
        op: &str,
        msg: &Q,
        ttl: Duration,
    ) -> RpcResult<A> {
        let answer: Result<A, RaftError<NodeId>> = self
            .transport
            .call(&self.addr, self.partition, op, msg, ttl)
            .await
            .map_err(CallError::into_rpc)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.rpc("append", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.rpc("vote", &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let msg = SnapshotMsg {
            vote,
            meta: snapshot.meta,
            data: *snapshot.snapshot,
        };
        let answer: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self
            .transport
            .call(
                &self.addr,
                self.partition,
                "snapshot",
                &msg,
                option.hard_ttl(),
            )
            .await
            .map_err(|e| {
                let e = std::io::Error::other(format!("{e:?}"));
                StreamingError::Network(NetworkError::new(&e))
            })?;
        answer.map_err(|e| {
            let e = std::io::Error::other(e.to_string());
            StreamingError::Network(NetworkError::new(&e))
        })
    }
}

/// A whole snapshot in one message (a snapshot is only where a log starts).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotMsg {
    pub vote: Vote,
    pub meta: crate::types::SnapshotMeta,
    pub data: crate::types::LogStart,
}
