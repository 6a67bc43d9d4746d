//! Herald's Redis stores.
//!
//! One multiplexed, auto-reconnecting connection per process; every batch
//! of work is one pipeline. Keys of one user share a hash tag (`{u:ID}`) so
//! a user's keys live on one Redis Cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `h:{u:ID}:followers` | set | who follows ID |
//! | `h:{u:ID}:following` | set | whom ID follows |
//! | `h:{u:ID}:fd` | hash | ID's entries, one per notification sent: compact id -> compact entry (order key first, with its state: waiting (the inbox) or delivered, read or unread); field `""` marks the hash as made |
//! | `h:{u:ID}:ib:dropped` | string | waiting entries the inbox cap dropped since the user's last hello |
//! | `h:{u:ID}:ib` | hash | the inbox of versions before one entry per notification: moved into `fd` (waiting) the first time it is read |
//! | `h:b:FIELD` | string with a TTL | a body shared by many recipients' entries (one event) |
//!
//! The entries hash expires the longer of `redis.inbox_idle_ttl_s` and
//! `feed.retention_days` (30 days each by default) after it was made or its
//! user last connected or read their feed (never, with no idle lifetime);
//! a shared body a day after the longer of the two (each read refreshes
//! it).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `h:{u:ID}:nodes` | hash | node -> incarnation, for each node holding a connection of ID |
//! | `h:{nodes}:alive:NODE`, `h:{nodes}:list` | string with a TTL, set | which nodes are alive (and their incarnation) |
//! | `h:dedup:KEY` | string | event id that first claimed a client key, with a TTL |
//! | `h:celebrities` | set | outboxes on the pull path now: accounts (`ID`) and hot threads (`t:ID`) |
//! | `h:outbox-owners` | set | outboxes that have ever existed (same members) |
//! | `h:{u:ID}:outbox`, `h:{t:ID}:outbox` | sorted set | a celebrity's posts / a hot thread's events (stored notifications), scored by acceptance time |
//! | `h:{u:ID}:seen` | hash | celebrity id or `t:` thread id -> order of the newest outbox entry ID acked; `s:` and either -> when ID started following it; `r` -> order up to which ID marked every pulled post read |
//! | `h:{u:ID}:fr` | set | pulled posts ID marked read in its feed one by one (8-byte hashes of their ids), as long as the feed |
//! | `h:{threads}:ids`, `h:{threads}:names`, `h:{threads}:next` | hash, hash, counter | a hot thread's id by object and back, given when it first becomes hot |
//! | `h:{u:ID}:threads` | hash | object -> when ID subscribed to it (us): where ID starts reading a hot thread |
//! | `h:{u:ID}:prefs` | string | the preference document (JSON), without mutes |
//! | `h:{u:ID}:mutes` | hash | `a:<actor>` / `o:<object>` -> until (ms, 0 = forever) |
//! | `h:{u:ID}:held`, `h:{u:ID}:digest` (+ `:data`) | sorted set + hash | notifications held by quiet hours / collected for a digest |
//! | `h:sched:held:P`, `h:sched:digest:P` | sorted set | users of partition P -> when their bucket is due (ms) |
//! | `h:{lease}:p:P` | string with a TTL | the ingest node holding partition P (`node#incarnation`) |
//! | `h:{lease}:members` | hash | ingest node -> `expiry_ms address` (its membership in the partition group) |
//! | `h:{dlq}`, `h:{dlq}:order` | hash + sorted set | dead letters by id (JSON), and their ids by time |
//! | `h:{dlq}:fence`, `h:{u:ID}:fence`, `h:{t:ID}:fence` | hash | partition -> newest Raft term that wrote dead letters / ID's outbox or released buckets / a thread's outbox (`fence.rs`) |
//! | `h:{fanout}:pos` | hash | partition -> `term offset`: a replicated partition's fan-out position |
//! | `h:os:OBJECT` | sorted set | OBJECT's subscribers: 8-byte big-endian user ids, all scored 0 (paged by range) |

mod batch;
mod bucket;
mod celebrity;
mod cluster_conn;
mod dead;
mod entries;
mod entry_scripts;
mod feed;
mod feed_pull;
mod fence;
mod graph;
mod inbox;
mod key;
mod lease;
mod nodes;
mod outbox;
mod outbox_cache;
mod position;
mod prefs;
mod presence;
mod subscribers;
mod webhook;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use batch::{key_slot, Batch};
pub use bucket::{Bucket, BucketAdd};
pub use celebrity::{CelebrityPolicy, CelebritySet, DEFAULT_OUTBOX_CAP};
pub use dead::DeadLetter;
pub use feed::{FeedCursor, FeedPage};
pub use fence::Fence;
pub use graph::{GraphAnswer, GraphOp};
pub use inbox::InboxSnapshot;
pub(crate) use key::ukey;
pub use lease::{LeaseRole, LeaseView};
pub use nodes::{NodeChange, NodeSet};
pub use outbox::{read_mark, OutboxCursor, OutboxView};
pub use outbox_cache::OutboxCache;
pub use position::Position;
pub use prefs::StoredPrefs;
pub use presence::Subscription;
pub use subscribers::{ThreadRead, ThreadStep, MAX_SUBSCRIBER_PAGE};
pub use webhook::{webhook_field, webhook_rows, webhook_shard, WebhookBatch, MAX_WEBHOOK_BATCH};

/// What the store can fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("stored data for {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{got} of {wanted} redis replicas confirmed the writes in time")]
    NotReplicated { wanted: u32, got: u32 },
}

impl StoreError {
    /// Whether trying again later can succeed: Redis unreachable, slow,
    /// loading, failing over, out of memory. False for answers that will
    /// be the same every time (a key of the wrong type, a script error),
    /// which callers retry a bounded number of times only.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::NotReplicated { .. } => true,
            StoreError::Corrupt { .. } => false,
            StoreError::Redis(e) => redis_transient(e),
        }
    }

    /// A short reason fit for an HTTP body or `/readyz`: what kind of
    /// trouble, never a script's SHA or a key name.
    pub fn public_reason(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "redis did not answer in time",
            StoreError::Corrupt { .. } => "stored data is unreadable",
            StoreError::NotReplicated { .. } => "redis replicas did not confirm the writes",
            StoreError::Redis(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                "redis is unreachable"
            }
            StoreError::Redis(e) => match server_codes(e).first().map(String::as_str) {
                Some("OOM") => "redis is out of memory",
                Some("LOADING") => "redis is loading its dataset",
                Some("BUSY") => "redis is busy running a script",
                Some("MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" | "READONLY") => {
                    "redis is failing over"
                }
                _ => "redis refused the request",
            },
        }
    }
}

/// Error codes Redis answers while a wait can cure them: out of memory (an
/// operator frees or adds memory), a script running, loading its dataset,
/// failing over, a cluster slot moving.
const TRANSIENT_CODES: &[&str] = &[
    "OOM",
    "BUSY",
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "NOREPLICAS",
];

/// Every server error code inside `e`: one for a plain answer, one per
/// failed command of a pipeline or transaction (a transaction aborted by
/// an error queued inside it reports that command's own code).
fn server_codes(e: &redis::RedisError) -> Vec<String> {
    match e.clone().into_server_errors() {
        Some(items) => items.iter().map(|(_, s)| s.code().to_string()).collect(),
        None => e.code().map(str::to_string).into_iter().collect(),
    }
}

/// Transient when the connection failed, or when every command that failed
/// did so with a code a wait can cure (classified item by item: one
/// permanent item makes the whole answer permanent, so the caller can find
/// the record at fault; an `EXECABORT` is judged by the errors that caused
/// it).
fn redis_transient(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.kind(), ErrorKind::Client)
    {
        return true;
    }
    let codes = server_codes(e);
    if codes.is_empty() {
        return e.is_cluster_error();
    }
    codes
        .iter()
        .all(|c| c == "EXECABORT" || TRANSIENT_CODES.contains(&c.as_str()))
        && codes.iter().any(|c| c != "EXECABORT")
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port`); when given,
    /// `url` is not used and every batch is split by hash slot.
    pub cluster_nodes: Vec<String>,
    /// Most notifications kept per inbox; the oldest go first.
    pub inbox_cap: usize,
    /// An inbox expires this long after its first entry or its user's last
    /// connection, whichever is later (None: never).
    pub inbox_idle_ttl: Option<Duration>,
    /// How long a feed keeps what it was sent.
    pub feed_retention: Duration,
    /// Most entries a feed keeps (0: no feed); the oldest go first.
    pub feed_cap: usize,
    /// How long a client idempotency key is remembered.
    pub dedup_ttl: Duration,
    /// Presence entries expire unless refreshed.
    pub presence_ttl: Duration,
    /// Every Redis call fails after this long.
    pub timeout: Duration,
    /// This node's name, written as presence.
    pub node_id: String,
    /// Inbox writes count only once this many Redis replicas confirm them
    /// (`WAIT`, once per pipeline and master); 0: as soon as the master
    /// has them.
    pub wait_replicas: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            inbox_cap: 1000,
            inbox_idle_ttl: Some(Duration::from_secs(30 * 86_400)),
            feed_retention: Duration::from_secs(30 * 86_400),
            feed_cap: 100,
            dedup_ttl: Duration::from_secs(24 * 3600),
            presence_ttl: Duration::from_secs(90),
            timeout: Duration::from_secs(5),
            node_id: "node-1".into(),
            wait_replicas: 0,
        }
    }
}

/// One Redis, or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(std::sync::Arc<cluster_conn::ClusterConn>),
}

impl Conn {
    /// Resolves once a cluster connection in use now is replaced (never
    /// on one Redis).
    fn replaced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        use futures_util::future::Either;
        match self {
            Conn::Cluster(c) => Either::Left(c.replaced()),
            Conn::Single(_) => Either::Right(std::future::pending()),
        }
    }

    /// Records a call's outcome (a cluster connection that keeps failing
    /// is made anew).
    fn observe<T>(
        &self,
        r: &std::result::Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
        started: std::time::Instant,
    ) {
        if let Conn::Cluster(c) = self {
            match r {
                Ok(r) => c.observe(r, started),
                Err(_) => c.failed(started),
            }
        }
    }
}

/// Handle on the Redis stores. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    /// With `wait_replicas`: a connection of its own for inbox writes and
    /// their `WAIT` (which blocks the connection it is sent on until the
    /// replicas answer: on the shared one it would stall everything else).
    inbox_conn: Option<Conn>,
    cfg: StoreConfig,
    /// Users whose entries hash this process wrote lately: what their
    /// next feed write (or park) must also do (set the lifetime, read the
    /// size), one table per path.
    recent: std::sync::Arc<[entry_scripts::Recent; 2]>,
}

impl Store {
    pub async fn connect(cfg: StoreConfig) -> Result<Store> {
        let conn = Self::open(&cfg).await?;
        let inbox_conn = match cfg.wait_replicas {
            0 => None,
            _ => Some(Self::open(&cfg).await?),
        };
        Ok(Store {
            conn,
            inbox_conn,
            cfg,
            recent: Default::default(),
        })
    }

    /// The store whose calls go over the inbox connection (itself when
    /// there is none).
    pub(crate) fn inbox_side(&self) -> Option<Store> {
        let conn = self.inbox_conn.clone()?;
        Some(Store {
            conn,
            inbox_conn: None,
            cfg: self.cfg.clone(),
            recent: self.recent.clone(),
        })
    }

    async fn open(cfg: &StoreConfig) -> Result<Conn> {
        if !cfg.cluster_nodes.is_empty() {
            let client = redis::cluster::ClusterClientBuilder::new(cfg.cluster_nodes.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(3)
                .build()?;
            let conn = cluster_conn::ClusterConn::connect(client, cfg.timeout).await?;
            return Ok(Conn::Cluster(conn));
        }
        let client = redis::Client::open(cfg.url.as_str())?;
        let mcfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(cfg.timeout))
            .set_connection_timeout(Some(cfg.timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let conn =
            tokio::time::timeout(cfg.timeout, client.get_connection_manager_with_config(mcfg))
                .await
                .map_err(|_| StoreError::Timeout(cfg.timeout))??;
        Ok(Conn::Single(conn))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Runs a batch with the store's timeout: one pipeline on one Redis,
    /// one per hash slot on Redis Cluster.
    pub(crate) async fn run<T: redis::FromRedisValue>(&self, batch: &Batch) -> Result<T> {
        let replaced = self.conn.replaced();
        let fut = async {
            match &self.conn {
                Conn::Single(c) => {
                    let mut c = c.clone();
                    batch.whole().query_async(&mut c).await
                }
                Conn::Cluster(c) => batch.run_cluster(&c.get()).await,
            }
        };
        self.call(fut, replaced).await
    }

    /// With `wait_replicas`, waits until that many replicas have every write
    /// this node sent so far to the masters of `keys` (one `WAIT` per
    /// master, on the connection the writes went over); an error when
    /// fewer confirm within the store's timeout (the caller retries: the
    /// writes are idempotent).
    pub(crate) async fn confirm_replicated(&self, keys: &[String]) -> Result<()> {
        let wanted = self.cfg.wait_replicas;
        if wanted == 0 || keys.is_empty() {
            return Ok(());
        }
        // WAIT blocks its connection (the inbox one) until it answers.
        let wait_ms = self
            .cfg
            .timeout
            .as_millis()
            .saturating_sub(100)
            .clamp(1, 1000) as u64;
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(wait_ms);
        let fut = async {
            match &self.conn {
                Conn::Single(c) => {
                    let got: u32 = wait.query_async(&mut c.clone()).await?;
                    Ok::<_, StoreError>(got)
                }
                Conn::Cluster(c) => {
                    use redis::cluster_routing::{
                        Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
                    };
                    // One WAIT per master: keys of one slot share one.
                    let mut slots: Vec<u16> =
                        keys.iter().map(|k| batch::key_slot(k.as_bytes())).collect();
                    slots.sort_unstable();
                    slots.dedup();
                    let waits = slots.into_iter().map(|slot| {
                        let mut c = c.get();
                        let wait = wait.clone();
                        async move {
                            let route =
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                                    Route::new(slot, SlotAddr::Master),
                                ));
                            let v = c.route_command(wait, route).await?;
                            // A node that answers with an error (the old
                            // master, back as a replica: "WAIT cannot be
                            // used with replica instances") confirmed
                            // nothing: retried as unreplicated.
                            if let redis::Value::ServerError(e) = &v {
                                tracing::debug!(error = ?e, "WAIT refused; the writes count as unconfirmed");
                                return Ok::<u32, StoreError>(0);
                            }
                            let got: u32 =
                                redis::from_redis_value(v).map_err(redis::RedisError::from)?;
                            Ok::<u32, StoreError>(got)
                        }
                    });
                    let got = futures_util::future::try_join_all(waits).await?;
                    Ok(got.into_iter().min().unwrap_or(0))
                }
            }
        };
        let got = match tokio::time::timeout(self.cfg.timeout, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(StoreError::Timeout(self.cfg.timeout)),
        };
        if got < wanted {
            return Err(StoreError::NotReplicated { wanted, got });
        }
        Ok(())
    }

    /// Runs a Lua script invocation (all its keys in one slot) with the
    /// store's timeout.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let replaced = self.conn.replaced();
        let fut = async {
            match &self.conn {
                Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
                Conn::Cluster(c) => inv.invoke_async(&mut c.get()).await,
            }
        };
        self.call(fut, replaced).await
    }

    /// Awaits a call with the store's timeout, reporting its outcome to the
    /// cluster connection; a call on a cluster connection that is replaced
    /// meanwhile fails at once (transient: retried on the new one).
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
        replaced: impl std::future::Future<Output = ()>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let r = tokio::select! {
            r = tokio::time::timeout(self.cfg.timeout, fut) => r,
            () = replaced => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the redis cluster connection was replaced",
                );
                return Err(StoreError::Redis(e.into()));
            }
        };
        self.conn.observe(&r, started);
        match r {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(self.cfg.timeout)),
        }
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<()> {
        let mut p = crate::Batch::new();
        p.cmd("PING");
        let _: (String,) = self.run(&p).await?;
        Ok(())
    }

    /// Claims client idempotency keys for events, in one round trip. For
    /// each `(key, event_id)` returns true when this event owns the key: it
    /// is new, or the same event processed again after a restart.
    pub async fn claim_keys(&self, claims: &[(String, String)]) -> Result<Vec<bool>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = crate::Batch::new();
        for (k, ev) in claims {
            p.cmd("SET")
                .arg(format!("h:dedup:{k}"))
                .arg(ev)
                .arg("NX")
                .arg("GET")
                .arg("EX")
                .arg(self.cfg.dedup_ttl.as_secs().max(1));
        }
        let prev: Vec<Option<String>> = self.run(&p).await?;
        Ok(prev
            .into_iter()
            .zip(claims)
            .map(|(prev, (_, ev))| prev.is_none_or(|p| &p == ev))
            .collect())
    }
}
