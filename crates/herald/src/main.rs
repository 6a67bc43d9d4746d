//! `herald`: one node, every role, from a config file.

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
    /// The config file (default: config/default.toml).
    #[arg(long)]
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
    let cfg = Config::load(&path, optional, std::env::vars(), &overrides)?;
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
