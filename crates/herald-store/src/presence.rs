//! Presence: which nodes hold a connection of a user (several devices may
//! sit on several nodes), and which nodes are alive. An entry names the
//! node's incarnation (its start time), so entries a crashed node left
//! behind are recognised as stale once it is gone or has restarted.

use std::collections::HashMap;
use std::time::Duration;

use herald_types::UserId;

use tokio::sync::mpsc;

use crate::{ukey, Result, Store, StoreError};

const NODES: &str = "h:{nodes}:list";

fn alive_key(node: &str) -> String {
    format!("h:{{nodes}}:alive:{node}")
}

impl Store {
    /// This node holds `devices` connections of `user` (one or more).
    pub async fn presence_add(&self, user: UserId, incarnation: u64, devices: usize) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("HSET")
            .arg(ukey(user, "nodes"))
            .arg(&self.cfg.node_id)
            .arg(incarnation)
            .ignore();
        p.cmd("HSET")
            .arg(ukey(user, "devs"))
            .arg(&self.cfg.node_id)
            .arg(devices)
            .ignore();
        self.run::<()>(&p).await
    }

    /// This node holds no connection of `user` any more.
    pub async fn presence_remove(&self, user: UserId) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("HDEL")
            .arg(ukey(user, "nodes"))
            .arg(&self.cfg.node_id)
            .ignore();
        p.cmd("HDEL")
            .arg(ukey(user, "devs"))
            .arg(&self.cfg.node_id)
            .ignore();
        self.run::<()>(&p).await
    }

    /// How many connections of `user` the live nodes hold (entries of
    /// nodes that are gone, or restarted since, are not counted).
    pub async fn presence_devices(&self, user: UserId) -> Result<u64> {
        let alive = self.nodes_alive().await?;
        let mut p = crate::Batch::new();
        p.cmd("HGETALL").arg(ukey(user, "nodes"));
        p.cmd("HGETALL").arg(ukey(user, "devs"));
        let (nodes, devs): (HashMap<String, u64>, HashMap<String, u64>) = self.run(&p).await?;
        Ok(nodes
            .iter()
            .filter(|(node, inc)| alive.get(*node) == Some(*inc))
            .map(|(node, _)| devs.get(node).copied().unwrap_or(1).max(1))
            .sum())
    }

    /// For each user, the nodes (and incarnations) that say they hold one
    /// of its connections; one round trip.
    pub async fn presence_of(&self, users: &[UserId]) -> Result<Vec<Vec<(String, u64)>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for u in users {
            p.cmd("HGETALL").arg(ukey(*u, "nodes"));
        }
        let maps: Vec<HashMap<String, u64>> = self.run(&p).await?;
        Ok(maps.into_iter().map(|m| m.into_iter().collect()).collect())
    }

    /// Says this node is alive (with its incarnation) for `ttl`. Returns
    /// whether it still was: false when the key had expired (or named
    /// another incarnation), so other nodes took this one for dead since
    /// the last call.
    pub async fn node_alive(&self, incarnation: u64, ttl: Duration) -> Result<bool> {
        let mut p = crate::Batch::new();
        p.cmd("SET")
            .arg(alive_key(&self.cfg.node_id))
            .arg(incarnation)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .arg("GET");
        p.cmd("SADD").arg(NODES).arg(&self.cfg.node_id).ignore();
        let (was,): (Option<u64>,) = self.run(&p).await?;
        Ok(was == Some(incarnation))
    }

    /// The Redis Cluster's current epoch as one of its nodes reports it
    /// (every failover raises it); `None` on a single Redis.
    pub async fn cluster_epoch(&self) -> Result<Option<u64>> {
        if !matches!(self.conn, crate::Conn::Cluster(_)) {
            return Ok(None);
        }
        let mut p = crate::Batch::new();
        p.cmd("CLUSTER").arg("INFO");
        let (info,): (String,) = self.run(&p).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
            .and_then(|v| v.trim().parse().ok()))
    }

    /// The nodes alive now, with their incarnations.
    pub async fn nodes_alive(&self) -> Result<HashMap<String, u64>> {
        let mut p = crate::Batch::new();
        p.cmd("SMEMBERS").arg(NODES);
        let (nodes,): (Vec<String>,) = self.run(&p).await?;
        if nodes.is_empty() {
            return Ok(HashMap::new());
        }
        let mut p = crate::Batch::new();
        for n in &nodes {
            p.cmd("GET").arg(alive_key(n));
        }
        let incs: Vec<Option<u64>> = self.run(&p).await?;
        Ok(nodes
            .into_iter()
            .zip(incs)
            .filter_map(|(n, i)| Some((n, i?)))
            .collect())
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }
}

impl Store {
    /// Publishes each (channel, message), one round trip.
    pub async fn publish(&self, msgs: &[(String, Vec<u8>)]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        // Sharded pub/sub on Redis Cluster: a message goes to the one shard
        // that owns its channel, not to every node of the cluster.
        let cmd = if self.cfg.cluster_nodes.is_empty() {
            "PUBLISH"
        } else {
            "SPUBLISH"
        };
        let mut p = crate::Batch::new();
        for (ch, m) in msgs {
            p.cmd(cmd).arg(ch).arg(m).ignore();
        }
        self.run::<()>(&p).await
    }

    /// Subscribes to `channel` on its own connection: on Redis Cluster a
    /// sharded subscription (`SSUBSCRIBE`, on the shard that owns the
    /// channel; redis-rs keeps it across reconnects and failovers), else a
    /// plain one.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription> {
        if self.cfg.cluster_nodes.is_empty() {
            let client = redis::Client::open(self.cfg.url.as_str())?;
            let mut pubsub = tokio::time::timeout(self.cfg.timeout, client.get_async_pubsub())
                .await
                .map_err(|_| StoreError::Timeout(self.cfg.timeout))??;
            pubsub.subscribe(channel).await?;
            return Ok(Subscription {
                inner: Inner::Plain(Box::new(pubsub)),
            });
        }
        let (tx, rx) = mpsc::channel::<Vec<u8>>(SUBSCRIPTION_QUEUE);
        let sender = move |p: redis::PushInfo| -> std::result::Result<(), ()> {
            if p.kind == redis::PushKind::SMessage {
                if let Some(redis::Value::BulkString(b)) = p.data.into_iter().nth(1) {
                    if tx.try_send(b).is_err() {
                        tracing::warn!("relay subscription queue full; a message was dropped");
                    }
                }
            }
            Ok(())
        };
        let client = redis::cluster::ClusterClientBuilder::new(self.cfg.cluster_nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .connection_timeout(self.cfg.timeout)
            .response_timeout(self.cfg.timeout)
            .build()?;
        let mut conn = tokio::time::timeout(self.cfg.timeout, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Timeout(self.cfg.timeout))??;
        tokio::time::timeout(self.cfg.timeout, conn.ssubscribe(channel))
            .await
            .map_err(|_| StoreError::Timeout(self.cfg.timeout))??;
        Ok(Subscription {
            inner: Inner::Sharded {
                rx,
                _conn: Box::new(conn),
            },
        })
    }
}

/// Messages received and not yet handled; past it they are dropped (a
/// push then times out at its sender and goes to the inbox).
const SUBSCRIPTION_QUEUE: usize = 100_000;

/// A subscription to one pub/sub channel on its own connection.
pub struct Subscription {
    inner: Inner,
}

enum Inner {
    Plain(Box<redis::aio::PubSub>),
    Sharded {
        rx: mpsc::Receiver<Vec<u8>>,
        /// Kept open: it carries the subscription.
        _conn: Box<redis::cluster_async::ClusterConnection>,
    },
}

impl Subscription {
    /// The next message's payload; None when the connection ended.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        use futures_util::StreamExt;
        match &mut self.inner {
            Inner::Plain(p) => p
                .on_message()
                .next()
                .await
                .map(|m| m.get_payload_bytes().to_vec()),
            Inner::Sharded { rx, .. } => rx.recv().await,
        }
    }
}
