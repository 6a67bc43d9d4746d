//! Herald's HTTP API: the ingestion gateway and the read endpoints beside it.
//!
//! `POST /v1/events` validates a body (all or nothing), stamps each event
//! with a monotonic acceptance time, groups the events by partition and
//! appends them to the log in one request; the log's writer folds
//! concurrent requests into one fsync (group commit). `202` is answered only
//! once the events are durable. The graph import, follower count and inbox
//! read endpoints live here too.

mod admin;
mod append;
mod batch;
pub mod body;
mod cluster;
pub mod error;
mod feed;
pub mod forward;
mod http;
mod import;
mod objects;
mod prefs;
mod presence;
mod routes;
pub mod schema;
mod strict;
pub mod validate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald_log::Log;
use herald_store::Store;

pub use error::ApiError;
pub use forward::{Forwarder, CLUSTER_KEY_HEADER};
/// The gateway's part of the OpenAPI document (what an edge node, which
/// proxies these routes, describes too).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let r: utoipa_axum::router::OpenApiRouter<Arc<Gateway>> = routes::router()
        .routes(utoipa_axum::routes!(append::internal_append))
        .routes(utoipa_axum::routes!(append::internal_raft))
        .merge(prefs::router())
        .merge(feed::router())
        .merge(presence::router())
        .merge(objects::router())
        .merge(admin::router());
    r.split_for_parts().1
}

/// Every HTTP route of the gateway, with its OpenAPI description.
pub fn router(gw: Arc<Gateway>) -> utoipa_axum::router::OpenApiRouter {
    routes::router()
        .routes(utoipa_axum::routes!(append::internal_append))
        .routes(utoipa_axum::routes!(append::internal_raft))
        .merge(prefs::router())
        .merge(feed::router())
        .merge(presence::router())
        .merge(objects::router())
        .merge(admin::router())
        .with_state(gw)
}

/// Gateway limits and keys.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest body of `POST /v1/events` (bytes).
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// Largest event `data`, in bytes of its compact JSON.
    pub max_data_bytes: usize,
    /// Largest body of `POST /v1/graph/follows` (bytes).
    pub max_import_bytes: usize,
    /// API keys and their scopes; none configured means every route is
    /// open (development).
    pub keys: herald_auth::ApiKeys,
    /// Verifies users' JWTs: a user may read their own inbox and manage
    /// their own preferences.
    pub jwt: Option<Arc<herald_auth::Verifier>>,
    /// Requests per second allowed per API key (0: unlimited).
    pub rate_per_key: u32,
    /// Events per second allowed per actor (0: unlimited).
    pub rate_per_actor: u32,
    /// Applied to followees after a bulk import.
    pub celebrity: herald_store::CelebrityPolicy,
    /// Suffix of this node's event ids (`@<node>` in a cluster, where
    /// every node keeps its own log; empty alone).
    pub id_scope: String,
    /// The key nodes of a cluster present to each other (empty: this node
    /// neither forwards nor takes forwarded events).
    pub cluster_key: String,
    /// How long an append waits for a partition without a live owner (a
    /// node died and its lease has not expired yet) before `503`.
    pub owner_wait: std::time::Duration,
    /// A webhook is configured: its dead letters can be replayed (parked
    /// for it again).
    pub webhook: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 10_000,
            max_data_bytes: herald_types::data::DEFAULT_MAX_DATA_BYTES,
            max_import_bytes: 64 * 1024 * 1024,
            keys: herald_auth::ApiKeys::default(),
            jwt: None,
            rate_per_key: 0,
            rate_per_actor: 0,
            celebrity: herald_store::CelebrityPolicy::new(10_000, 0.1),
            id_scope: String::new(),
            cluster_key: String::new(),
            owner_wait: std::time::Duration::from_secs(8),
            webhook: false,
        }
    }
}

type KeyedLimiter<K> = governor::DefaultKeyedRateLimiter<K>;

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: u32) -> Option<KeyedLimiter<K>> {
    std::num::NonZeroU32::new(rate)
        .map(|r| governor::RateLimiter::keyed(governor::Quota::per_second(r)))
}

/// Shared state of the HTTP handlers.
pub struct Gateway {
    pub cfg: GatewayConfig,
    pub log: Log,
    pub store: Store,
    pub celebrities: Arc<herald_store::CelebritySet>,
    /// This node's copy of the outboxes read lately (shared with its edge).
    pub outboxes: Arc<herald_store::OutboxCache>,
    pub prefs: Arc<herald_prefs::PrefsCache>,
    /// Who owns each partition (this node, always, when it is alone).
    pub placement: Arc<dyn herald_types::Placement>,
    /// This node's edge, when it holds connections (presence, alone).
    pub edge: Option<Arc<dyn herald_types::EdgeHandle>>,
    /// Every node's edge (this one's and, in a cluster, the others'
    /// through the relay): told of subscriptions to hot threads.
    pub every_edge: Arc<dyn herald_types::EdgeHandle>,
    /// To the other nodes, in a cluster.
    pub forwarder: Option<Forwarder>,
    /// Replicated partitions: appends go through their Raft groups.
    pub replicas: Option<Arc<herald_raft::Replicas>>,
    last_us: AtomicU64,
    key_limiter: Option<KeyedLimiter<String>>,
    actor_limiter: Option<KeyedLimiter<u64>>,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: GatewayConfig,
        log: Log,
        store: Store,
        celebrities: Arc<herald_store::CelebritySet>,
        prefs: Arc<herald_prefs::PrefsCache>,
        placement: Arc<dyn herald_types::Placement>,
        replicas: Option<Arc<herald_raft::Replicas>>,
        edge: Option<Arc<dyn herald_types::EdgeHandle>>,
        every_edge: Arc<dyn herald_types::EdgeHandle>,
        outboxes: Arc<herald_store::OutboxCache>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            replicas,
            edge,
            every_edge,
            forwarder: (!cfg.cluster_key.is_empty())
                .then(|| Forwarder::new(cfg.cluster_key.clone())),
            placement,
            key_limiter: limiter(cfg.rate_per_key),
            actor_limiter: limiter(cfg.rate_per_actor),
            cfg,
            log,
            store,
            celebrities,
            outboxes,
            prefs,
            last_us: AtomicU64::new(0),
        })
    }

    /// Forgets rate-limit state of idle keys and actors (call periodically,
    /// so the limiters' memory stays bounded).
    pub fn housekeeping(&self) {
        if let Some(l) = &self.key_limiter {
            l.retain_recent();
        }
        if let Some(l) = &self.actor_limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Reserves `n` consecutive acceptance times (µs), monotonic on this
    /// node even if the wall clock steps back.
    pub fn stamp(&self, n: u64) -> u64 {
        let now = herald_types::now_us();
        let mut prev = self.last_us.load(Ordering::Relaxed);
        loop {
            let start = now.max(prev + 1);
            match self.last_us.compare_exchange_weak(
                prev,
                start + n - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return start,
                Err(p) => prev = p,
            }
        }
    }
}
