//! `herald-loadgen`: seeds a follow graph, drives a Herald node with
//! WebSocket clients and events, and reports what happened.

mod chaos;
mod clients;
mod floor;
mod graph;
mod http;
mod ingest;
mod receive;
mod report;
mod run;
mod sample;
mod scenario;
mod send;
mod stats;
mod storage;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use graph::{Graph, GraphSpec};

/// mimalloc: the glibc allocator showed up at ~15% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "herald-loadgen",
    about = "Load generator for Herald (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a power-law follow graph through POST /v1/graph/follows.
    Seed(GraphArgs),
    /// Seed, connect clients, post a workload, report.
    Run(Box<scenario::RunArgs>),
    /// Measure HTTP ingest: events/s made durable (202) with batch posts.
    Ingest(IngestArgs),
    /// Compare runs: each side is a comma-separated list of JSON reports
    /// of one build (medians are taken); writes one HTML page with the
    /// runs overlaid and prints the table of medians and deltas.
    Compare(CompareArgs),
    /// The floor: writer CPU per small frame to many loopback sockets, one
    /// frame per write and several (what a push cannot go below here).
    Floor(FloorArgs),
    /// Redis bytes per waiting notification: offline users' inboxes, and a
    /// post to offline followers (Redis `used_memory` before and after).
    Storage(StorageArgs),
    /// A webhook receiver: counts the notifications Herald's webhook
    /// sends (answering 200, optionally slowly) and reports their rate.
    Receive(ReceiveArgs),
}

#[derive(Args)]
struct ReceiveArgs {
    /// Where to listen (a loopback address).
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
    /// Wait this long before answering each request (a slow receiver).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Stop after this many seconds at most.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Stop once this many seconds pass without a request (after the
    /// first).
    #[arg(long, default_value_t = 5)]
    idle: u64,
}

#[derive(Args)]
struct StorageArgs {
    /// The Herald node (loopback).
    #[arg(long, default_value = "127.0.0.1:7400")]
    target: SocketAddr,
    /// The Redis it uses (loopback), read with INFO memory.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: SocketAddr,
    /// Offline users receiving comments.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Comments each.
    #[arg(long, default_value_t = 10)]
    per_user: u64,
    /// Offline followers of one posting account (below the celebrity
    /// threshold, so the post is written to each inbox; 0 to skip).
    #[arg(long, default_value_t = 5_000)]
    followers: u64,
    /// The post carries a `data` object of about this many bytes (0: none).
    #[arg(long, default_value_t = 0)]
    data_bytes: usize,
}

#[derive(Args)]
struct FloorArgs {
    /// Loopback socket pairs (two open files each).
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Frames written per batch size.
    #[arg(long, default_value_t = 200_000)]
    frames: u64,
    /// Payload bytes per frame (a WebSocket text frame; 3..=65535).
    #[arg(long, default_value_t = 200)]
    frame_bytes: usize,
    /// Frames per write call, comma-separated.
    #[arg(long, default_value = "1,4,16")]
    batches: String,
}

#[derive(Args)]
struct CompareArgs {
    /// Sides: `a1.json,a2.json b1.json,b2.json ...` (the first is the baseline).
    #[arg(required = true, num_args = 2..)]
    sides: Vec<String>,
    /// A label per side, comma-separated (default A, B, ...).
    #[arg(long)]
    labels: Option<String>,
    /// The HTML page to write.
    #[arg(long, default_value = "loadtest/reports/compare.html")]
    out: PathBuf,
}

#[derive(Args)]
struct IngestArgs {
    /// Herald's address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:7400")]
    target: SocketAddr,
    /// Several nodes (comma-separated, loopback): connections are spread
    /// over them in turn (overrides --target).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<SocketAddr>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Events per second over all connections (0: as fast as answered).
    /// Paced: latency counts from each request's scheduled time, so a
    /// node that falls behind shows it.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Args, Clone)]
pub(crate) struct GraphArgs {
    /// Herald's address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub(crate) target: SocketAddr,
    #[arg(long)]
    pub(crate) users: Option<u64>,
    #[arg(long)]
    pub(crate) mean_follows: Option<u64>,
    #[arg(long)]
    pub(crate) celebrities: Option<u64>,
    /// Fraction of users following each celebrity.
    #[arg(long)]
    pub(crate) celebrity_share: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

pub(crate) fn graph_spec(
    a: &GraphArgs,
    users: u64,
    mean: u64,
    celebs: u64,
    share: f64,
) -> GraphSpec {
    GraphSpec {
        users: a.users.unwrap_or(users),
        mean_follows: a.mean_follows.unwrap_or(mean),
        celebrities: a.celebrities.unwrap_or(celebs),
        celebrity_share: a.celebrity_share.unwrap_or(share),
        seed: a.seed,
    }
}

pub(crate) fn check_loopback(a: &SocketAddr) -> anyhow::Result<()> {
    if !a.ip().is_loopback() {
        anyhow::bail!("refusing to load {a}: targets must be loopback addresses");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Command::Seed(g) => {
                check_loopback(&g.target)?;
                let graph = Graph::build(graph_spec(&g, 10_000, 20, 2, 0.2));
                run::seed(g.target, &graph).await?;
                println!(
                    "imported {} follows for {} users",
                    graph.edges.len(),
                    graph.spec.users
                );
                Ok(())
            }
            Command::Run(a) => scenario::run(*a).await,
            Command::Floor(f) => {
                anyhow::ensure!(
                    (1..=9000).contains(&f.connections),
                    "--connections must be 1..=9000 (two open files each)"
                );
                let batches: Vec<usize> = f
                    .batches
                    .split(',')
                    .map(|x| x.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--batches: comma-separated counts")?;
                let rows = floor::run(
                    f.connections,
                    f.frames.clamp(1, 100_000_000),
                    f.frame_bytes,
                    &batches,
                )
                .await?;
                print!(
                    "{}",
                    floor::table(f.connections, f.frame_bytes.clamp(3, 65_535), &rows)
                );
                Ok(())
            }
            Command::Compare(c) => {
                if let Some(dir) = c.out.parent() {
                    std::fs::create_dir_all(dir).ok();
                }
                let table = report::compare::run(&c.sides, c.labels.as_deref(), &c.out)?;
                print!("{table}");
                println!("comparison: {}", c.out.display());
                Ok(())
            }
            Command::Storage(a) => {
                check_loopback(&a.target)?;
                check_loopback(&a.redis)?;
                anyhow::ensure!(
                    (1..=1_000_000).contains(&a.users) && (1..=1000).contains(&a.per_user),
                    "--users 1..=1000000, --per-user 1..=1000"
                );
                storage::run(
                    &a.target.to_string(),
                    &a.redis.to_string(),
                    a.users,
                    a.per_user,
                    a.followers.min(1_000_000),
                    a.data_bytes.min(65_536),
                )
                .await
            }
            Command::Receive(a) => {
                check_loopback(&a.listen)?;
                receive::run(receive::Plan {
                    listen: a.listen,
                    delay: std::time::Duration::from_millis(a.delay_ms.min(600_000)),
                    secs: a.duration.clamp(1, 3600),
                    idle: a.idle.max(1),
                })
                .await
            }
            Command::Ingest(a) => {
                let targets = if a.targets.is_empty() {
                    vec![a.target]
                } else {
                    a.targets.clone()
                };
                for t in &targets {
                    check_loopback(t)?;
                }
                ingest::run(ingest::Plan {
                    targets,
                    connections: a.connections,
                    batch: a.batch,
                    secs: a.duration,
                    rate: a.rate,
                })
                .await
            }
        }
    })
}
