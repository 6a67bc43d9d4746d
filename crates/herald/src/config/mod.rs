//! The node's configuration: one TOML file, every key overridable by an
//! environment variable `HERALD_<SECTION>__<KEY>` and the common ones by a
//! flag. Precedence: flag, then environment, then file, then default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

mod derive;
mod env;
pub mod kinds;
mod replication;
mod telemetry;
mod webhook;

pub use replication::Replication;
pub use telemetry::Telemetry;
pub use webhook::Webhook;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub http: Http,
    pub auth: Auth,
    pub redis: Redis,
    pub log: Log,
    pub gateway: Gateway,
    pub websocket: WebSocket,
    pub fanout: Fanout,
    pub celebrity: Celebrity,
    pub preferences: Prefs,
    pub aggregation: Aggregation,
    pub digest: DigestCfg,
    pub feed: Feed,
    pub replication: Replication,
    pub webhook: Webhook,
    pub telemetry: Telemetry,
    /// `[kinds.<name>]`: the kinds of event accepted and their rules.
    pub kinds: kinds::Kinds,
}

/// What a node does (`server.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: the single-node default.
    #[default]
    All,
    /// Gateway, log and fan-out workers; no WebSocket connections.
    Ingest,
    /// WebSocket connections only; other HTTP routes are passed on to an
    /// ingest node.
    Edge,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Edge => "edge",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The notification feed (the list behind the bell icon).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Feed {
    /// How long an entry stays listed (days).
    pub retention_days: u64,
    /// Most entries per user (0: no feed is written).
    pub max_per_user: usize,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            retention_days: 30,
            max_per_user: 100,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestCfg {
    pub window_override_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prefs {
    /// Entry lifetime in a cluster (at most 1000 ms).
    pub cache_ttl_ms: u64,
    /// Entry lifetime on a node alone (every change comes through it).
    pub alone_cache_ttl_ms: u64,
    pub cache_entries: usize,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            cache_ttl_ms: 1000,
            alone_cache_ttl_ms: 60_000,
            cache_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    pub data_dir: PathBuf,
    pub node_id: String,
    pub cluster: bool,
    pub shutdown_timeout_ms: u64,
    pub log_format: String,
    /// `all`, `ingest` (gateway, log, fan-out) or `edge` (WebSockets).
    pub role: Role,
    /// Where other nodes reach this node's HTTP (`host:port`); default:
    /// the address it listens on.
    pub advertise: String,
    /// The secret nodes of a cluster present to each other.
    pub cluster_key: String,
    /// How long a partition lease lasts without renewal.
    pub lease_ttl_ms: u64,
}

/// How users' JWTs are verified (WebSockets, and a user's own routes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// HS256 secret (`websocket.jwt_secret` is the same setting, kept for
    /// older configs).
    pub jwt_secret: String,
    /// A PEM public key: RSA (RS256) or EC P-256 (ES256).
    pub jwt_public_key_file: String,
    /// A JWKS file, reloaded when it changes (key rotation).
    pub jwks_file: String,
    /// A JWKS URL (http or https), fetched at start, every 10 minutes and
    /// when a token names an unknown key (at most once a minute).
    pub jwks_url: String,
    pub audience: String,
    pub issuer: String,
    pub max_lifetime_s: u64,
    pub leeway_s: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            audience: String::new(),
            issuer: String::new(),
            max_lifetime_s: 86_400,
            leeway_s: 30,
        }
    }
}

/// The front door's limits and deadlines.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub per_ip_connections: usize,
    pub per_ip_rate: u32,
    pub cors_origins: Vec<String>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            per_ip_connections: 4096,
            per_ip_rate: 1000,
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub timeout_ms: u64,
    pub inbox_cap: usize,
    pub inbox_idle_ttl_s: u64,
    pub dedup_ttl_s: u64,
    pub presence_ttl_s: u64,
    pub wait_replicas: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Replicas of each partition (1: this node's log alone; 3 recommended
    /// in a cluster, with `[replication]`).
    pub replication_factor: usize,
}

/// The largest `gateway.max_data_bytes` accepted.
pub const MAX_DATA_BYTES: usize = 65_536;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Largest event `data`, in bytes of its compact JSON.
    pub max_data_bytes: usize,
    pub max_import_bytes: usize,
    pub api_keys: Vec<String>,
    pub read_keys: Vec<String>,
    pub admin_keys: Vec<String>,
    /// Production without any API key: the backend routes answer anyone.
    /// Refused unless said explicitly (`gateway.open = true`).
    pub open: bool,
    pub rate_per_key: u32,
    pub rate_per_actor: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub max_control_per_s: u32,
    pub max_connections: usize,
    pub max_devices: usize,
    pub cursor_flush_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fanout {
    pub read_max_bytes: usize,
    pub max_in_flight: usize,
    pub checkpoint_ms: u64,
    pub retry_backoff_ms: u64,
    pub remote_answer_timeout_ms: u64,
    pub reset_positions: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:7400".into(),
            data_dir: "./data".into(),
            node_id: "node-1".into(),
            cluster: false,
            role: Role::All,
            advertise: String::new(),
            cluster_key: String::new(),
            lease_ttl_ms: 6000,
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
            inbox_idle_ttl_s: 30 * 86_400,
            dedup_ttl_s: 86_400,
            presence_ttl_s: 90,
            wait_replicas: 0,
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
            replication_factor: 1,
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        let g = herald_gateway::GatewayConfig::default();
        Gateway {
            max_body_bytes: g.max_body_bytes,
            max_batch: g.max_batch,
            max_data_bytes: g.max_data_bytes,
            max_import_bytes: g.max_import_bytes,
            api_keys: Vec::new(),
            read_keys: Vec::new(),
            admin_keys: Vec::new(),
            open: false,
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
            max_control_per_s: 10,
            max_connections: 0,
            max_devices: 5,
            cursor_flush_ms: 10_000,
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
            reset_positions: Vec::new(),
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
        let text = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read config {}", path.display()))
            }
        };
        // The file alone first: its errors name the line.
        if let Err(e) = toml::from_str::<Config>(&text) {
            bail!("config file {}: {e}", path.display());
        }
        let mut table = text
            .parse::<toml::Table>()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        for (section, key, v) in env::overrides(env)? {
            set(&mut table, &section, &key, env_value(&v));
        }
        for (s, k, v) in overrides {
            set(&mut table, s, k, v.clone());
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration set by a HERALD_* variable or a flag")?;
        cfg.validate()?;
        cfg.kinds.declare()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.kinds.rules()?;
        if !["always", "interval", "os"].contains(&self.log.durability.as_str()) {
            bail!("log.durability must be always, interval or os");
        }
        if !["quarantine", "refuse"].contains(&self.log.on_corruption.as_str()) {
            bail!("log.on_corruption must be quarantine or refuse");
        }
        if self.gateway.max_batch == 0 || self.gateway.max_body_bytes == 0 {
            bail!("gateway.max_batch and gateway.max_body_bytes must be positive");
        }
        if !(2..=MAX_DATA_BYTES).contains(&self.gateway.max_data_bytes) {
            bail!(
                "gateway.max_data_bytes must be 2 to {MAX_DATA_BYTES} (every waiting notification stores its event's data once)"
            );
        }
        if self.websocket.max_devices == 0 {
            bail!("websocket.max_devices must be positive");
        }
        if self.websocket.queue_capacity == 0 || self.websocket.max_unacked == 0 {
            bail!("websocket.queue_capacity and websocket.max_unacked must be positive");
        }
        if self.celebrity.threshold == 0 || !(0.0..0.9).contains(&self.celebrity.hysteresis) {
            bail!("celebrity.threshold must be positive and celebrity.hysteresis in [0, 0.9)");
        }
        if self.log.partitions == 0 || self.log.partitions > 4096 {
            bail!("log.partitions must be between 1 and 4096");
        }
        if self.feed.retention_days == 0 || self.feed.retention_days > 3650 {
            bail!("feed.retention_days must be between 1 and 3650");
        }
        if self.feed.max_per_user > 10_000 {
            bail!("feed.max_per_user must be at most 10000 (each page reads the whole feed)");
        }
        if !(1..=1000).contains(&self.preferences.cache_ttl_ms) {
            bail!("preferences.cache_ttl_ms must be between 1 and 1000 (a change is honoured everywhere within a second)");
        }
        if !(1..=3_600_000).contains(&self.preferences.alone_cache_ttl_ms) {
            bail!("preferences.alone_cache_ttl_ms must be between 1 and 3600000");
        }
        let reset = herald_fanout::ResetPositions::parse(&self.fanout.reset_positions)
            .map_err(|e| anyhow::anyhow!("fanout.reset_positions: {e}"))?;
        if let Some(p) = reset.highest().filter(|p| *p >= self.log.partitions) {
            bail!(
                "fanout.reset_positions names partition {p}, but log.partitions is {}",
                self.log.partitions
            );
        }
        if self.redis.wait_replicas > 16 {
            bail!("redis.wait_replicas must be between 0 and 16 (replicas of each master that confirm inbox writes)");
        }
        if self.redis.inbox_cap == 0 {
            bail!("redis.inbox_cap must be positive");
        }
        if self.server.cluster && self.server.node_id.trim().is_empty() {
            bail!("server.cluster needs a server.node_id unique to this node");
        }
        if self.http.header_timeout_ms == 0 || self.http.body_timeout_ms == 0 {
            bail!("http.header_timeout_ms and http.body_timeout_ms must be positive");
        }
        self.check_durations()?;
        self.check_replication()?;
        self.check_webhook()?;
        self.check_telemetry()?;
        for o in &self.http.cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && axum::http::HeaderValue::from_str(o).is_ok()
                    && !o.contains(char::is_whitespace));
            if !ok {
                bail!("http.cors_origins: {o:?} is not an origin (scheme://host[:port], no path or trailing slash) nor \"*\"");
            }
        }
        if self.http.per_ip_connections == 0 {
            bail!("http.per_ip_connections must be positive");
        }
        if self.server.role != Role::All && !self.server.cluster {
            bail!(
                "server.role = {} needs server.cluster = true (a role is a part of a cluster)",
                self.server.role
            );
        }
        if self.server.cluster && self.server.cluster_key.trim().is_empty() {
            bail!("server.cluster needs server.cluster_key: the same secret on every node (nodes hand events to each other with it)");
        }
        if self.server.cluster && self.server.lease_ttl_ms < 1000 {
            bail!("server.lease_ttl_ms must be at least 1000");
        }
        if !self.websocket.dev_mode && !self.jwt_config().enabled() {
            bail!("websocket needs a JWT key (auth.jwt_secret, auth.jwt_public_key_file or auth.jwks_file), or dev_mode = true for local development");
        }
        if !self.websocket.dev_mode {
            self.refuse_weak_secrets()?;
            self.refuse_open_production()?;
        }
        Ok(())
    }
}

impl Config {
    /// Every duration within bounds that keep the node working: none 0
    /// where 0 would spin or never time out, none so long it stops meaning
    /// anything. The error names the key and its bounds.
    fn check_durations(&self) -> anyhow::Result<()> {
        const HOUR: u64 = 3_600_000;
        const DAY: u64 = 24 * HOUR;
        let w = &self.websocket;
        let checks: [(&str, u64, u64, u64); 15] = [
            ("websocket.heartbeat_ms", w.heartbeat_ms, 100, HOUR),
            ("websocket.idle_timeout_ms", w.idle_timeout_ms, 1000, DAY),
            (
                "websocket.write_timeout_ms",
                w.write_timeout_ms,
                100,
                10 * 60_000,
            ),
            ("websocket.ack_timeout_ms", w.ack_timeout_ms, 100, DAY),
            ("websocket.cursor_flush_ms", w.cursor_flush_ms, 10, HOUR),
            ("redis.timeout_ms", self.redis.timeout_ms, 10, 10 * 60_000),
            (
                "fanout.checkpoint_ms",
                self.fanout.checkpoint_ms,
                10,
                60_000,
            ),
            (
                "fanout.retry_backoff_ms",
                self.fanout.retry_backoff_ms,
                1,
                60_000,
            ),
            (
                "fanout.remote_answer_timeout_ms",
                self.fanout.remote_answer_timeout_ms,
                100,
                HOUR,
            ),
            (
                "server.shutdown_timeout_ms",
                self.server.shutdown_timeout_ms,
                100,
                HOUR,
            ),
            (
                "http.header_timeout_ms",
                self.http.header_timeout_ms,
                100,
                HOUR,
            ),
            ("http.body_timeout_ms", self.http.body_timeout_ms, 100, HOUR),
            (
                "log.fsync_interval_ms",
                self.log.fsync_interval_ms,
                1,
                60_000,
            ),
            ("log.segment_ms", self.log.segment_ms, 1000, 30 * DAY),
            (
                "auth.max_lifetime_s",
                self.auth.max_lifetime_s,
                1,
                366 * 86_400,
            ),
        ];
        for (name, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                bail!("{name} = {v} is out of bounds: between {lo} and {hi}");
            }
        }
        if w.idle_timeout_ms <= w.heartbeat_ms {
            bail!(
                "websocket.idle_timeout_ms ({}) must be longer than websocket.heartbeat_ms ({}): a quiet connection would close before its ping",
                w.idle_timeout_ms,
                w.heartbeat_ms
            );
        }
        if self.auth.leeway_s > 3600 {
            bail!(
                "auth.leeway_s = {} is out of bounds: between 0 and 3600",
                self.auth.leeway_s
            );
        }
        Ok(())
    }

    /// No API key of any scope is configured: every backend route (events,
    /// inboxes, admin, `/metrics`) answers requests without credentials.
    pub fn no_api_keys(&self) -> bool {
        let g = &self.gateway;
        g.api_keys.is_empty() && g.read_keys.is_empty() && g.admin_keys.is_empty()
    }

    /// Production without API keys is open to anyone who reaches the port:
    /// refused unless `gateway.open = true` says it is meant (then every
    /// start logs a warning, `run`). `gateway.open` beside keys is refused
    /// too: the keys would close what the setting claims is open.
    fn refuse_open_production(&self) -> anyhow::Result<()> {
        match (self.no_api_keys(), self.gateway.open) {
            (true, false) => bail!(
                "refusing to start in production (websocket.dev_mode = false) with no API key: \
                 POST /v1/events, every inbox, the admin routes and /metrics would answer anyone; \
                 set gateway.api_keys (and read_keys, admin_keys), or gateway.open = true \
                 if the node is meant to be open (behind a gateway that authenticates)"
            ),
            (false, true) => bail!(
                "gateway.open = true but API keys are configured: the keys are required anyway; \
                 remove gateway.open or the keys"
            ),
            _ => Ok(()),
        }
    }

    /// Production (`websocket.dev_mode = false`) refuses placeholder and
    /// short secrets, naming the setting.
    pub fn refuse_weak_secrets(&self) -> anyhow::Result<()> {
        let mut weak = Vec::new();
        let mut check = |name: &str, v: &str, min: usize| {
            if let Some(why) = herald_auth::weak_secret(v, min) {
                weak.push(format!("{name} {why}"));
            }
        };
        if let Some(s) = &self.jwt_config().secret {
            check("auth.jwt_secret", s, 32);
        }
        for (name, list) in [
            ("gateway.api_keys", &self.gateway.api_keys),
            ("gateway.read_keys", &self.gateway.read_keys),
            ("gateway.admin_keys", &self.gateway.admin_keys),
        ] {
            for k in list {
                check(name, k, 16);
            }
        }
        if self.server.cluster {
            check("server.cluster_key", &self.server.cluster_key, 16);
        }
        if !weak.is_empty() {
            bail!(
                "refusing to start in production (websocket.dev_mode = false) with weak secrets: {}; set real ones (for example: openssl rand -hex 32)",
                weak.join("; ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
