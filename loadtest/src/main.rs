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
mod send;
mod stats;
mod storage;

use herald_types::sync::Locked;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    Run(Box<RunArgs>),
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
struct GraphArgs {
    /// Herald's address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:7400")]
    target: SocketAddr,
    #[arg(long)]
    users: Option<u64>,
    #[arg(long)]
    mean_follows: Option<u64>,
    #[arg(long)]
    celebrities: Option<u64>,
    /// Fraction of users following each celebrity.
    #[arg(long)]
    celebrity_share: Option<f64>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Smoke,
    Sustained,
    /// One post by a celebrity whom every user follows; time to the last
    /// online follower.
    Celebrity,
    /// Every client offline with queued notifications, then all connect at once.
    ReconnectStorm,
    /// Sustained traffic while the generator kills Herald with SIGKILL and
    /// restarts it several times and stops Redis once (needs --herald-cmd,
    /// and --redis-pid for the Redis fault); lost must be 0.
    Chaos,
    Custom,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    graph: GraphArgs,
    #[arg(long, value_enum, default_value = "smoke")]
    scenario: Scenario,
    /// WebSocket clients (users 1..=N).
    #[arg(long)]
    clients: Option<u64>,
    /// Events per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of sending.
    #[arg(long)]
    duration: Option<u64>,
    /// Weights like,comment,mention,post.
    #[arg(long)]
    mix: Option<String>,
    /// Fraction of clients sent offline per second.
    #[arg(long)]
    churn: Option<f64>,
    /// Celebrity posts per second.
    #[arg(long)]
    celebrity_posts: Option<f64>,
    /// Source addresses 127.0.0.1..=127.0.0.N for client sockets.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Herald's pid, to report its memory per connection.
    #[arg(long)]
    herald_pid: Option<u32>,
    /// Skip seeding (the graph is already imported with the same flags).
    #[arg(long)]
    no_seed: bool,
    /// Where to write report.json and report.html.
    #[arg(long, default_value = "loadtest/reports")]
    out: PathBuf,
    /// Fraction of likes sent to user 1 about three posts (a hot recipient).
    #[arg(long, default_value_t = 0.0)]
    hot_share: f64,
    /// Store preferences for every user before the run (measures the cost
    /// of preference checks).
    #[arg(long)]
    prefs: bool,
    /// Reconnect storm: notifications queued per user.
    #[arg(long, default_value_t = 50)]
    queued: u64,
    /// Exit non-zero unless nothing was lost or duplicated.
    #[arg(long)]
    strict: bool,
    /// Every node of a cluster, comma-separated (loopback addresses):
    /// clients and posts are spread over them, with one verdict. The graph
    /// is imported through the first.
    #[arg(long)]
    targets: Option<String>,
    /// An API key sent with every HTTP request (a node with keys).
    #[arg(long, env = "HERALD_LOADGEN_API_KEY")]
    api_key: Option<String>,
    /// Connect clients with HS256 tokens signed with this secret (a node
    /// outside development mode) instead of `?user=`.
    #[arg(long, env = "HERALD_LOADGEN_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// Nodes may die during the run: events carry idempotency keys and a
    /// refused or failed batch is sent again (to the next target) for up to
    /// 60 s; clients that cannot connect move to the next target.
    #[arg(long)]
    failover: bool,
    /// Chaos: the shell command that runs Herald in the foreground, serving
    /// --target (the generator starts, kills and restarts it).
    #[arg(long)]
    herald_cmd: Option<String>,
    /// Chaos: Redis' pid, stopped once (SIGSTOP) for --redis-pause-ms.
    #[arg(long)]
    redis_pid: Option<u32>,
    #[arg(long, default_value_t = 3000)]
    redis_pause_ms: u64,
    /// Chaos: SIGKILLs of Herald during the traffic.
    #[arg(long, default_value_t = 3)]
    kills: u32,
}

fn graph_spec(a: &GraphArgs, users: u64, mean: u64, celebs: u64, share: f64) -> GraphSpec {
    GraphSpec {
        users: a.users.unwrap_or(users),
        mean_follows: a.mean_follows.unwrap_or(mean),
        celebrities: a.celebrities.unwrap_or(celebs),
        celebrity_share: a.celebrity_share.unwrap_or(share),
        seed: a.seed,
    }
}

fn check_loopback(a: &SocketAddr) -> anyhow::Result<()> {
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
            Command::Run(a) => run_cmd(*a).await,
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

async fn run_cmd(mut a: RunArgs) -> anyhow::Result<()> {
    check_loopback(&a.graph.target)?;
    if let Some(k) = a.api_key.take() {
        http::set_api_key(k);
    }
    if let Some(s) = a.jwt_secret.take() {
        clients::set_jwt_secret(s);
    }
    let targets: Vec<SocketAddr> = match &a.targets {
        Some(list) => list
            .split(',')
            .map(|t| t.trim().parse::<SocketAddr>())
            .collect::<Result<_, _>>()
            .context("--targets: comma-separated host:port")?,
        None => vec![a.graph.target],
    };
    anyhow::ensure!(!targets.is_empty(), "--targets is empty");
    for t in &targets {
        check_loopback(t)?;
    }
    a.graph.target = targets[0];
    // Presets: (users, clients, rate, seconds, churn, celebrity posts/s)
    let (users, clients, rate, secs, churn, celeb) = match a.scenario {
        Scenario::Smoke => (300, 300, 500, 5, 0.02, 0.0),
        Scenario::Sustained => (15_000, 15_000, 20_000, 60, 0.001, 0.0),
        Scenario::Celebrity => (100_000, 15_000, 0, 1, 0.0, 0.0),
        Scenario::ReconnectStorm => (15_000, 15_000, 0, 1, 0.0, 0.0),
        Scenario::Chaos => (2000, 1000, 500, 20, 0.01, 0.2),
        Scenario::Custom => (1000, 1000, 1000, 10, 0.0, 0.0),
    };
    let clients = a.clients.unwrap_or(clients);
    let (celebs, share, mean) = match a.scenario {
        Scenario::Celebrity => (1, 1.0, 0),
        Scenario::ReconnectStorm => (0, 0.0, 0),
        _ => (2, 0.05, 20),
    };
    let spec = graph_spec(
        &a.graph,
        a.graph.users.unwrap_or(users).max(clients),
        mean,
        celebs,
        share,
    );
    let graph = Arc::new(Graph::build(spec.clone()));
    let chaos = a.scenario == Scenario::Chaos;
    // Chaos: the generator owns the Herald process.
    let herald = match (chaos, &a.herald_cmd) {
        (true, Some(cmd)) => {
            std::fs::create_dir_all(&a.out).ok();
            let h = chaos::Herald::start(cmd, &a.out.join("chaos-herald.log"))?;
            chaos::wait_up(a.graph.target, Duration::from_secs(60)).await?;
            Some(Arc::new(std::sync::Mutex::new(h)))
        }
        (true, None) => anyhow::bail!("--scenario chaos needs --herald-cmd"),
        _ => None,
    };
    if !a.no_seed {
        eprintln!(
            "seeding {} follows for {} users",
            graph.edges.len(),
            spec.users
        );
        run::seed(a.graph.target, &graph).await.context("seeding")?;
    }
    let mix = match &a.mix {
        None => [50, 20, 10, 20],
        Some(s) => {
            let v: Vec<u32> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .context("--mix like,comment,mention,post")?;
            anyhow::ensure!(v.len() == 4, "--mix takes four weights");
            [v[0], v[1], v[2], v[3]]
        }
    };
    let rs = run::RunSpec {
        target: targets[0],
        targets: targets.clone(),
        clients,
        rate: a.rate.unwrap_or(rate),
        duration: Duration::from_secs(a.duration.unwrap_or(secs).clamp(1, 3600)),
        mix,
        churn: a.churn.unwrap_or(churn),
        offline: Duration::from_secs(2),
        celebrity_posts: a.celebrity_posts.unwrap_or(celeb),
        grace: Duration::from_secs(15),
        sources: a.sources.max(1),
        herald_pid: if chaos { None } else { a.herald_pid },
        connect_rate: if a.scenario == Scenario::ReconnectStorm {
            0
        } else {
            5000
        },
        storm_queued: if a.scenario == Scenario::ReconnectStorm {
            a.queued
        } else {
            0
        },
        celebrity_post: a.scenario == Scenario::Celebrity,
        set_prefs: a.prefs,
        hot_share: a.hot_share.clamp(0.0, 1.0),
        idempotent: chaos || a.failover,
        retry_for: (chaos || a.failover).then_some(Duration::from_secs(60)),
    };
    let name = match a.scenario {
        Scenario::Smoke => "smoke",
        Scenario::Sustained => "sustained",
        Scenario::Celebrity => "celebrity",
        Scenario::ReconnectStorm => "reconnect-storm",
        Scenario::Chaos => "chaos",
        Scenario::Custom => "custom",
    };
    let (o, faults) = match &herald {
        Some(h) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cs = chaos::ChaosSpec {
                redis_pid: a.redis_pid,
                kills: a.kills,
                redis_pause: Duration::from_millis(a.redis_pause_ms),
            };
            let (h2, target, dur) = (h.clone(), rs.target, rs.duration);
            let faults = tokio::spawn(async move {
                if rx.await.is_err() {
                    return Ok(Vec::new());
                }
                chaos::run_faults(cs, h2, target, dur).await
            });
            let o = run::run(rs, graph, true, Some(tx)).await?;
            let f = faults.await.context("chaos task")??;
            (o, Some(f))
        }
        None => (run::run(rs, graph, true, None).await?, None),
    };
    if let Some(h) = &herald {
        {
            let mut h = h.locked();
            h.stop();
        }
    }
    let mut r = report::json_report(&o, name);
    if let Some(f) = faults {
        r["faults"] = serde_json::json!(f);
    }
    print!("{}", report::summary(&r));
    std::fs::create_dir_all(&a.out).ok();
    let json_path = a.out.join(format!("{name}.json"));
    let html_path = a.out.join(format!("{name}.html"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&r)?)
        .context("writing the JSON report")?;
    std::fs::write(&html_path, report::html(&r)).context("writing the HTML report")?;
    println!("reports: {} {}", json_path.display(), html_path.display());
    if a.strict && r["verdict"] != "pass" {
        anyhow::bail!("verdict: fail (lost or duplicated notifications)");
    }
    Ok(())
}
