//! `herald`: one node, in the role its config gives it, from a config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use herald::Config;

/// mimalloc: the glibc allocator showed up at ~15% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Real-time notification fan-out node"
)]
struct Args {
    /// The config file (default: config/default.toml); before or after
    /// the subcommand.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// HTTP and WebSocket address (server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Where the log and checkpoints live (server.data_dir).
    #[arg(long)]
    data_dir: Option<String>,
    /// The Redis URL (redis.url).
    #[arg(long)]
    redis: Option<String>,
    /// What this node does (server.role): all (default), ingest (gateway,
    /// log, fan-out) or edge (WebSocket connections); ingest and edge need
    /// server.cluster = true.
    #[arg(long, value_parser = ["all", "ingest", "edge"])]
    role: Option<String>,
    /// Where a partition starts when its fan-out checkpoint is damaged or
    /// missing while it holds records: P=earliest (deliver again what the
    /// log holds), P=latest (skip it), or all=...; repeatable. Without it
    /// such a partition waits and /readyz says why
    /// (fanout.reset_positions).
    #[arg(long = "reset-position", value_name = "P=earliest|latest")]
    reset_position: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Checks the configuration (and loads the JWT keys) without starting:
    /// exit 0 with a summary, or 1 naming what is wrong. Production
    /// (websocket.dev_mode = false) refuses placeholder and short secrets.
    CheckConfig,
    /// Mints an HS256 token for a user with auth.jwt_secret (development
    /// and tests; production tokens come from your own auth service).
    Token {
        /// The user id (the token's subject).
        #[arg(long)]
        user: u64,
        /// Lifetime: seconds, or with a unit (90s, 30m, 1h, 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Inspect or replay dead letters of a running node (its admin API).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// The node (default: the config's server.listen).
        #[arg(long, global = true)]
        url: Option<String>,
        /// An admin API key (default: the config's first gateway.admin_keys).
        #[arg(long, global = true)]
        key: Option<String>,
    },
    /// The cluster as a running node sees it (GET /v1/admin/cluster).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        /// The node (default: the config's server.listen).
        #[arg(long, global = true)]
        url: Option<String>,
        /// An admin API key (default: the config's first gateway.admin_keys).
        #[arg(long, global = true)]
        key: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum ClusterAction {
    /// Nodes (alive or not) and, per partition, its leader, term, replicas
    /// in sync and committed offset, as tables.
    Status,
    /// Adds an ingest node to the node set (start it first): replicas
    /// move onto it while appends go on.
    Add {
        /// Its server.node_id.
        name: String,
        /// host:port of its HTTP listener, as the other nodes reach it.
        addr: String,
    },
    /// Removes an ingest node from the node set: its replicas move to the
    /// others; stop it once `cluster status` lists it in no partition.
    Remove {
        /// Its server.node_id.
        name: String,
    },
}

#[derive(clap::Subcommand, Debug)]
enum DeadLetterAction {
    /// Lists the oldest dead letters.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Appends dead letters to the log again (they keep their event ids).
    Replay {
        /// Replay every dead letter (up to 10,000 per call).
        #[arg(long)]
        all: bool,
        /// Dead-letter ids (dl-<partition>-<offset>).
        ids: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (path, optional) = match &args.config {
        Some(p) => (p.clone(), false),
        None => (PathBuf::from("config/default.toml"), true),
    };
    let mut overrides = Vec::new();
    let s = |v: &String| toml::Value::String(v.clone());
    if let Some(v) = &args.listen {
        overrides.push(("server", "listen", s(v)));
    }
    if let Some(v) = &args.data_dir {
        overrides.push(("server", "data_dir", s(v)));
    }
    if let Some(v) = &args.redis {
        overrides.push(("redis", "url", s(v)));
    }
    if let Some(v) = &args.role {
        overrides.push(("server", "role", s(v)));
    }
    if !args.reset_position.is_empty() {
        let list = args.reset_position.iter().map(s).collect();
        overrides.push(("fanout", "reset_positions", toml::Value::Array(list)));
    }
    let cfg = Config::load(&path, optional, std::env::vars(), &overrides)?;
    match &args.command {
        Some(Command::CheckConfig) => return herald::cli::check_config(&cfg),
        Some(Command::Token { user, ttl }) => return herald::cli::token(&cfg, *user, ttl),
        _ => {}
    }
    if let Some(Command::DeadLetters { action, url, key }) = &args.command {
        let t = herald::cli::Target::new(url.as_deref(), key.as_deref(), &cfg)?;
        return match action {
            DeadLetterAction::List { limit } => herald::cli::dead_letters_list(&t, *limit),
            DeadLetterAction::Replay { all, ids } => {
                herald::cli::dead_letters_replay(&t, ids, *all)
            }
        };
    }
    if let Some(Command::Cluster { action, url, key }) = &args.command {
        let t = herald::cli::Target::new(url.as_deref(), key.as_deref(), &cfg)?;
        return match action {
            ClusterAction::Status => herald::cli::cluster_status(&t),
            ClusterAction::Add { name, addr } => herald::cli::cluster_add(&t, name, addr),
            ClusterAction::Remove { name } => herald::cli::cluster_remove(&t, name),
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt().with_env_filter(filter);
    if cfg.server.log_format == "json" {
        sub.json().init();
    } else {
        sub.init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = herald::listen(&cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
        let addr = listener.local_addr()?;
        println!("herald listening: http://{addr}  ws://{addr}/v1/ws");
        herald::run(cfg, listener, herald::signal()).await
    })
}
