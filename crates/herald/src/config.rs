//! The node's configuration: one TOML file, every key overridable by an
//! environment variable `HERALD_<SECTION>__<KEY>` and the common ones by a
//! flag. Precedence: flag, then environment, then file, then default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub redis: Redis,
    pub log: Log,
    pub gateway: Gateway,
    pub websocket: WebSocket,
    pub fanout: Fanout,
    pub celebrity: Celebrity,
    pub preferences: Prefs,
    pub aggregation: Aggregation,
    pub digest: DigestCfg,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestCfg {
    pub window_override_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregation {
    pub window_ms: u64,
    pub threshold: u32,
    pub flush_ms: u64,
    pub max_actors: usize,
    pub rate_per_recipient: u32,
}

impl Default for Aggregation {
    fn default() -> Self {
        let d = herald_fanout::AggregationConfig::default();
        Aggregation {
            window_ms: d.window.as_millis() as u64,
            threshold: d.threshold,
            flush_ms: d.flush.as_millis() as u64,
            max_actors: d.max_actors,
            rate_per_recipient: d.rate_per_recipient,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prefs {
    pub cache_ttl_ms: u64,
    pub cache_entries: usize,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            cache_ttl_ms: 1000,
            cache_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Celebrity {
    pub threshold: u64,
    pub hysteresis: f64,
    pub outbox_cap: usize,
    pub broadcast_chunk: usize,
}

impl Default for Celebrity {
    fn default() -> Self {
        Celebrity {
            threshold: 10_000,
            hysteresis: 0.1,
            outbox_cap: herald_store::DEFAULT_OUTBOX_CAP,
            broadcast_chunk: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    pub data_dir: PathBuf,
    pub node_id: String,
    pub cluster: bool,
    pub shutdown_timeout_ms: u64,
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub timeout_ms: u64,
    pub inbox_cap: usize,
    pub dedup_ttl_s: u64,
    pub presence_ttl_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub partitions: u32,
    pub durability: String,
    pub fsync_interval_ms: u64,
    pub fsync_interval_bytes: u64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_bytes: u64,
    pub retention_ms: u64,
    pub on_corruption: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_import_bytes: usize,
    pub api_keys: Vec<String>,
    pub admin_keys: Vec<String>,
    pub rate_per_key: u32,
    pub rate_per_actor: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    pub dev_mode: bool,
    pub jwt_secret: String,
    pub queue_capacity: usize,
    pub max_unacked: usize,
    pub ack_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub idle_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fanout {
    pub read_max_bytes: usize,
    pub max_in_flight: usize,
    pub checkpoint_ms: u64,
    pub retry_backoff_ms: u64,
    pub remote_answer_timeout_ms: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:7400".into(),
            data_dir: "./data".into(),
            node_id: "node-1".into(),
            cluster: false,
            shutdown_timeout_ms: 10_000,
            log_format: "text".into(),
        }
    }
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            timeout_ms: 5000,
            inbox_cap: 1000,
            dedup_ttl_s: 86_400,
            presence_ttl_s: 90,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            partitions: herald_types::event::DEFAULT_PARTITIONS,
            durability: "always".into(),
            fsync_interval_ms: 5,
            fsync_interval_bytes: 8 << 20,
            segment_bytes: 128 << 20,
            segment_ms: 3_600_000,
            retention_bytes: 0,
            retention_ms: 7 * 24 * 3_600_000,
            on_corruption: "quarantine".into(),
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        let g = herald_gateway::GatewayConfig::default();
        Gateway {
            max_body_bytes: g.max_body_bytes,
            max_batch: g.max_batch,
            max_import_bytes: g.max_import_bytes,
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            rate_per_key: 0,
            rate_per_actor: 0,
        }
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            dev_mode: false,
            jwt_secret: String::new(),
            queue_capacity: 1024,
            max_unacked: 4096,
            ack_timeout_ms: 30_000,
            heartbeat_ms: 15_000,
            idle_timeout_ms: 45_000,
            write_timeout_ms: 10_000,
            max_message_bytes: 64 * 1024,
            max_connections: 0,
        }
    }
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout {
            read_max_bytes: 256 * 1024,
            max_in_flight: 100_000,
            checkpoint_ms: 200,
            retry_backoff_ms: 200,
            remote_answer_timeout_ms: 45_000,
        }
    }
}

/// Parses an environment value as a TOML value when it is one (numbers,
/// booleans, arrays), else takes it as a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set(table: &mut toml::Table, section: &str, key: &str, v: toml::Value) {
    let s = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = s {
        t.insert(key.to_string(), v);
    }
}

impl Config {
    /// Loads `path` (a missing file is an error unless `optional`), applies
    /// `HERALD_*` variables from `env`, then `overrides` (section, key, value).
    pub fn load(
        path: &Path,
        optional: bool,
        env: impl Iterator<Item = (String, String)>,
        overrides: &[(&str, &str, toml::Value)],
    ) -> anyhow::Result<Config> {
        let mut table = match std::fs::read_to_string(path) {
            Ok(s) => s
                .parse::<toml::Table>()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read config {}", path.display()))
            }
        };
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("HERALD_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            set(
                &mut table,
                &section.to_lowercase(),
                &key.to_lowercase(),
                env_value(&v),
            );
        }
        for (s, k, v) in overrides {
            set(&mut table, s, k, v.clone());
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !["always", "interval", "os"].contains(&self.log.durability.as_str()) {
            bail!("log.durability must be always, interval or os");
        }
        if !["quarantine", "refuse"].contains(&self.log.on_corruption.as_str()) {
            bail!("log.on_corruption must be quarantine or refuse");
        }
        if self.gateway.max_batch == 0 || self.gateway.max_body_bytes == 0 {
            bail!("gateway.max_batch and gateway.max_body_bytes must be positive");
        }
        if self.websocket.queue_capacity == 0 || self.websocket.max_unacked == 0 {
            bail!("websocket.queue_capacity and websocket.max_unacked must be positive");
        }
        if self.celebrity.threshold == 0 || !(0.0..0.9).contains(&self.celebrity.hysteresis) {
            bail!("celebrity.threshold must be positive and celebrity.hysteresis in [0, 0.9)");
        }
        if self.redis.inbox_cap == 0 {
            bail!("redis.inbox_cap must be positive");
        }
        if self.server.cluster && self.server.node_id.trim().is_empty() {
            bail!("server.cluster needs a server.node_id unique to this node");
        }
        if !self.websocket.dev_mode && self.websocket.jwt_secret.is_empty() {
            bail!("websocket needs jwt_secret, or dev_mode = true for local development");
        }
        Ok(())
    }

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
            durability,
            segment_bytes: self.log.segment_bytes,
            segment_ms: self.log.segment_ms,
            retention_bytes: (self.log.retention_bytes > 0).then_some(self.log.retention_bytes),
            retention_ms: (self.log.retention_ms > 0).then_some(self.log.retention_ms),
            on_corruption: match self.log.on_corruption.as_str() {
                "refuse" => herald_log::OnCorruption::Refuse,
                _ => herald_log::OnCorruption::Quarantine,
            },
            ..herald_log::LogConfig::default()
        }
    }

    pub fn store_config(&self) -> herald_store::StoreConfig {
        herald_store::StoreConfig {
            url: self.redis.url.clone(),
            cluster_nodes: self.redis.cluster_nodes.clone(),
            inbox_cap: self.redis.inbox_cap,
            dedup_ttl: Duration::from_secs(self.redis.dedup_ttl_s),
            presence_ttl: Duration::from_secs(self.redis.presence_ttl_s),
            timeout: Duration::from_millis(self.redis.timeout_ms),
            node_id: self.server.node_id.clone(),
        }
    }

    pub fn celebrity_policy(&self) -> herald_store::CelebrityPolicy {
        herald_store::CelebrityPolicy::new(self.celebrity.threshold, self.celebrity.hysteresis)
    }

    pub fn gateway_config(&self) -> herald_gateway::GatewayConfig {
        herald_gateway::GatewayConfig {
            max_body_bytes: self.gateway.max_body_bytes,
            max_batch: self.gateway.max_batch,
            max_import_bytes: self.gateway.max_import_bytes,
            api_keys: self.gateway.api_keys.clone(),
            admin_keys: self.gateway.admin_keys.clone(),
            rate_per_key: self.gateway.rate_per_key,
            rate_per_actor: self.gateway.rate_per_actor,
            celebrity: self.celebrity_policy(),
            id_scope: self.id_scope(),
        }
    }

    /// Suffix of this node's event ids: `@<node>` in a cluster (every node
    /// keeps its own log), empty alone.
    pub fn id_scope(&self) -> String {
        if self.server.cluster {
            format!("@{}", self.server.node_id)
        } else {
            String::new()
        }
    }

    pub fn edge_config(&self, max_connections: usize) -> herald_edge::EdgeConfig {
        let w = &self.websocket;
        herald_edge::EdgeConfig {
            dev_mode: w.dev_mode,
            jwt_secret: (!w.jwt_secret.is_empty()).then(|| w.jwt_secret.clone()),
            queue_capacity: w.queue_capacity,
            max_unacked: w.max_unacked,
            ack_timeout: Duration::from_millis(w.ack_timeout_ms),
            heartbeat_interval: Duration::from_millis(w.heartbeat_ms),
            idle_timeout: Duration::from_millis(w.idle_timeout_ms),
            write_timeout: Duration::from_millis(w.write_timeout_ms),
            drain_limit: self.redis.inbox_cap,
            max_message_bytes: w.max_message_bytes,
            max_connections,
            broadcast_chunk: self.celebrity.broadcast_chunk.max(1),
            outbox_cap: self.celebrity.outbox_cap.max(1),
            incarnation: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_flags_override_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "[log]\npartitions = 4\n[websocket]\ndev_mode = true\n").unwrap();
        let env = vec![
            ("HERALD_LOG__PARTITIONS".to_string(), "6".to_string()),
            (
                "HERALD_REDIS__URL".to_string(),
                "redis://127.0.0.1:1".to_string(),
            ),
            (
                "HERALD_GATEWAY__API_KEYS".to_string(),
                "[\"a\", \"b\"]".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(
            &p,
            false,
            env.into_iter(),
            &[(
                "server",
                "listen",
                toml::Value::String("127.0.0.1:1".into()),
            )],
        )
        .unwrap();
        assert_eq!(c.log.partitions, 6);
        assert_eq!(c.redis.url, "redis://127.0.0.1:1");
        assert_eq!(c.gateway.api_keys, vec!["a", "b"]);
        assert_eq!(c.server.listen, "127.0.0.1:1");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "[log]\npartitons = 4\n").unwrap();
        assert!(Config::load(&p, false, std::iter::empty(), &[]).is_err());
        std::fs::write(
            &p,
            "[log]\ndurability = \"sometimes\"\n[websocket]\ndev_mode = true\n",
        )
        .unwrap();
        assert!(Config::load(&p, false, std::iter::empty(), &[]).is_err());
    }
}
