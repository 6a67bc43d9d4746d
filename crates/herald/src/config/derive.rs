//! The settings of each component, derived from the config file's
//! sections.

use std::time::Duration;

use super::Config;

impl Config {
    pub fn log_config(&self) -> herald_log::LogConfig {
        let durability = match self.log.durability.as_str() {
            "interval" => herald_log::Durability::Interval {
                ms: self.log.fsync_interval_ms.max(1),
                bytes: self.log.fsync_interval_bytes.max(1),
            },
            "os" => herald_log::Durability::Os,
            _ => herald_log::Durability::Always,
        };
        herald_log::LogConfig {
            partitions: self.log.partitions,
            durability,
            segment_bytes: self.log.segment_bytes,
            segment_ms: self.log.segment_ms,
            retention_bytes: (self.log.retention_bytes > 0).then_some(self.log.retention_bytes),
            retention_ms: (self.log.retention_ms > 0).then_some(self.log.retention_ms),
            on_corruption: match self.log.on_corruption.as_str() {
                "refuse" => herald_log::OnCorruption::Refuse,
                _ => herald_log::OnCorruption::Quarantine,
            },
            // A log made on an empty (or wiped) disk starts its offsets at
            // the time: event ids never repeat those of a lost log.
            fresh_base: herald_types::now_us(),
            // Replicated: offsets are the Raft log's, the same on every
            // replica.
            replicated: self.replicated(),
            ..herald_log::LogConfig::default()
        }
    }

    pub fn store_config(&self) -> herald_store::StoreConfig {
        herald_store::StoreConfig {
            url: self.redis.url.clone(),
            cluster_nodes: self.redis.cluster_nodes.clone(),
            inbox_cap: self.redis.inbox_cap,
            inbox_idle_ttl: (self.redis.inbox_idle_ttl_s > 0)
                .then(|| Duration::from_secs(self.redis.inbox_idle_ttl_s)),
            feed_retention: Duration::from_secs(self.feed.retention_days * 86_400),
            feed_cap: self.feed.max_per_user,
            dedup_ttl: Duration::from_secs(self.redis.dedup_ttl_s),
            presence_ttl: Duration::from_secs(self.redis.presence_ttl_s),
            timeout: Duration::from_millis(self.redis.timeout_ms),
            node_id: self.server.node_id.clone(),
            wait_replicas: self.redis.wait_replicas,
        }
    }

    pub fn celebrity_policy(&self) -> herald_store::CelebrityPolicy {
        herald_store::CelebrityPolicy::new(self.celebrity.threshold, self.celebrity.hysteresis)
    }

    pub fn gateway_config(&self) -> herald_gateway::GatewayConfig {
        herald_gateway::GatewayConfig {
            max_body_bytes: self.gateway.max_body_bytes,
            max_batch: self.gateway.max_batch,
            max_data_bytes: self.gateway.max_data_bytes,
            max_import_bytes: self.gateway.max_import_bytes,
            keys: self.api_keys(),
            // Set by the node once the keys are loaded.
            jwt: None,
            rate_per_key: self.gateway.rate_per_key,
            rate_per_actor: self.gateway.rate_per_actor,
            celebrity: self.celebrity_policy(),
            id_scope: self.id_scope(),
            cluster_key: if self.server.cluster {
                self.server.cluster_key.clone()
            } else {
                String::new()
            },
            // A dead owner's lease expires, and a live node takes it
            // within a round; a replicated partition elects a leader
            // within two election timeouts.
            owner_wait: Duration::from_millis(if self.replicated() {
                2 * self.replication.election_ms + 2000
            } else {
                self.server.lease_ttl_ms + 2000
            }),
            webhook: !self.webhook.url.trim().is_empty(),
        }
    }

    /// Suffix of this node's event ids: `@<node>` in a cluster (every node
    /// keeps its own log), empty alone or when partitions are replicated
    /// (every replica holds each record at the same offset).
    pub fn id_scope(&self) -> String {
        if self.server.cluster && !self.replicated() {
            format!("@{}", self.server.node_id)
        } else {
            String::new()
        }
    }

    /// API keys by scope: `read_keys` read, `api_keys` ingest (and read),
    /// `admin_keys` everything.
    pub fn api_keys(&self) -> herald_auth::ApiKeys {
        let g = &self.gateway;
        herald_auth::ApiKeys::new(&g.read_keys, &g.api_keys, &g.admin_keys)
    }

    /// Where users' JWT keys come from.
    pub fn jwt_config(&self) -> herald_auth::JwtConfig {
        let a = &self.auth;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        herald_auth::JwtConfig {
            secret: some(&a.jwt_secret).or_else(|| some(&self.websocket.jwt_secret)),
            public_key_file: some(&a.jwt_public_key_file).map(Into::into),
            jwks_file: some(&a.jwks_file).map(Into::into),
            jwks_url: some(&a.jwks_url),
            audience: some(&a.audience),
            issuer: some(&a.issuer),
            max_lifetime: Duration::from_secs(a.max_lifetime_s.max(1)),
            leeway: Duration::from_secs(a.leeway_s),
        }
    }

    pub fn edge_config(&self, max_connections: usize) -> herald_edge::EdgeConfig {
        let w = &self.websocket;
        herald_edge::EdgeConfig {
            dev_mode: w.dev_mode,
            // Set by the node once the keys are loaded.
            jwt: None,
            queue_capacity: w.queue_capacity,
            max_unacked: w.max_unacked,
            ack_timeout: Duration::from_millis(w.ack_timeout_ms),
            heartbeat_interval: Duration::from_millis(w.heartbeat_ms),
            idle_timeout: Duration::from_millis(w.idle_timeout_ms),
            write_timeout: Duration::from_millis(w.write_timeout_ms),
            drain_limit: self.redis.inbox_cap,
            max_message_bytes: w.max_message_bytes,
            max_control_per_s: w.max_control_per_s,
            max_connections,
            max_devices: w.max_devices,
            cursor_flush: Duration::from_millis(w.cursor_flush_ms.max(100)),
            broadcast_chunk: self.celebrity.broadcast_chunk.max(1),
            outbox_cap: self.celebrity.outbox_cap.max(1),
            incarnation: 0,
            presence: self.server.cluster,
        }
    }

    pub fn fanout_config(&self) -> herald_fanout::FanoutConfig {
        herald_fanout::FanoutConfig {
            read_max_bytes: self.fanout.read_max_bytes,
            max_in_flight: self.fanout.max_in_flight,
            checkpoint_every: Duration::from_millis(self.fanout.checkpoint_ms.max(10)),
            retry_backoff: Duration::from_millis(self.fanout.retry_backoff_ms.clamp(1, 60_000)),
            celebrity: self.celebrity_policy(),
            outbox_cap: self.celebrity.outbox_cap.max(1),
            id_scope: self.id_scope(),
            // Checked by `validate`.
            reset: herald_fanout::ResetPositions::parse(&self.fanout.reset_positions)
                .unwrap_or_default(),
            aggregation: herald_fanout::AggregationConfig {
                window: Duration::from_millis(self.aggregation.window_ms),
                threshold: self.aggregation.threshold.max(2),
                flush: Duration::from_millis(self.aggregation.flush_ms.max(10)),
                max_actors: self
                    .aggregation
                    .max_actors
                    .clamp(1, herald_fanout::MAX_ACTORS),
                rate_per_recipient: self.aggregation.rate_per_recipient,
                ..herald_fanout::AggregationConfig::default()
            },
            ..herald_fanout::FanoutConfig::default()
        }
    }
}
