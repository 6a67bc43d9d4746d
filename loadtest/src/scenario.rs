//! `herald-loadgen run`: a scenario's preset, the flags over it, the
//! graph, Herald itself for the chaos scenario, the run and its reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use herald_types::sync::Locked;

use crate::graph::Graph;
use crate::report::{self, Fault};
use crate::run::{self, Outcome};
use crate::workload::RunSpec;
use crate::{chaos, check_loopback, clients, graph_spec, http, GraphArgs};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
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
pub struct RunArgs {
    #[command(flatten)]
    pub graph: GraphArgs,
    #[arg(long, value_enum, default_value = "smoke")]
    pub scenario: Scenario,
    /// WebSocket clients (users 1..=N).
    #[arg(long)]
    pub clients: Option<u64>,
    /// Events per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds of sending.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Weights like,comment,mention,post.
    #[arg(long)]
    pub mix: Option<String>,
    /// Fraction of clients sent offline per second.
    #[arg(long)]
    pub churn: Option<f64>,
    /// Celebrity posts per second.
    #[arg(long)]
    pub celebrity_posts: Option<f64>,
    /// Source addresses 127.0.0.1..=127.0.0.N for client sockets.
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Herald's pid, to report its memory per connection.
    #[arg(long)]
    pub herald_pid: Option<u32>,
    /// Skip seeding (the graph is already imported with the same flags).
    #[arg(long)]
    pub no_seed: bool,
    /// Where to write report.json and report.html.
    #[arg(long, default_value = "loadtest/reports")]
    pub out: PathBuf,
    /// Fraction of likes sent to user 1 about three posts (a hot recipient).
    #[arg(long, default_value_t = 0.0)]
    pub hot_share: f64,
    /// Store preferences for every user before the run (measures the cost
    /// of preference checks).
    #[arg(long)]
    pub prefs: bool,
    /// Reconnect storm: notifications queued per user.
    #[arg(long, default_value_t = 50)]
    pub queued: u64,
    /// Exit non-zero unless nothing was lost or duplicated.
    #[arg(long)]
    pub strict: bool,
    /// Every node of a cluster, comma-separated (loopback addresses):
    /// clients and posts are spread over them, with one verdict. The graph
    /// is imported through the first.
    #[arg(long)]
    pub targets: Option<String>,
    /// An API key sent with every HTTP request (a node with keys).
    #[arg(long, env = "HERALD_LOADGEN_API_KEY")]
    pub api_key: Option<String>,
    /// Connect clients with HS256 tokens signed with this secret (a node
    /// outside development mode) instead of `?user=`.
    #[arg(long, env = "HERALD_LOADGEN_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// Nodes may die during the run: events carry idempotency keys and a
    /// refused or failed batch is sent again (to the next target) for up to
    /// 60 s; clients that cannot connect move to the next target.
    #[arg(long)]
    pub failover: bool,
    /// Chaos: the shell command that runs Herald in the foreground, serving
    /// --target (the generator starts, kills and restarts it).
    #[arg(long)]
    pub herald_cmd: Option<String>,
    /// Chaos: Redis' pid, stopped once (SIGSTOP) for --redis-pause-ms.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    #[arg(long, default_value_t = 3000)]
    pub redis_pause_ms: u64,
    /// Every event carries a `data` object of about this many bytes
    /// (0: none; at most the node's `gateway.max_data_bytes`).
    #[arg(long, default_value_t = 0)]
    pub data_bytes: usize,
    /// Send this share of likes (0 to 1) as `--custom-kind`.
    #[arg(long, default_value_t = 0.0)]
    pub custom_share: f64,
    /// A kind the node declares with `notify = ["recipient"]`.
    #[arg(long, default_value = "lg_wave")]
    pub custom_kind: String,
    /// Send this share of comments (0 to 1) as `--thread-kind` replies in
    /// ten threads of twenty subscribers each (subscribed first).
    #[arg(long, default_value_t = 0.0)]
    pub thread_share: f64,
    /// A kind the node declares with `notify = ["recipient", "subscribers"]`.
    #[arg(long, default_value = "lg_reply")]
    pub thread_kind: String,
    /// Chaos: SIGKILLs of Herald during the traffic.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
}

/// What a scenario runs when no flag says otherwise.
struct Preset {
    users: u64,
    clients: u64,
    rate: u64,
    secs: u64,
    churn: f64,
    celebrity_posts: f64,
}

impl Scenario {
    fn preset(self) -> Preset {
        let (users, clients, rate, secs, churn, celebrity_posts) = match self {
            Scenario::Smoke => (300, 300, 500, 5, 0.02, 0.0),
            Scenario::Sustained => (15_000, 15_000, 20_000, 60, 0.001, 0.0),
            Scenario::Celebrity => (100_000, 15_000, 0, 1, 0.0, 0.0),
            Scenario::ReconnectStorm => (15_000, 15_000, 0, 1, 0.0, 0.0),
            Scenario::Chaos => (2000, 1000, 500, 20, 0.01, 0.2),
            Scenario::Custom => (1000, 1000, 1000, 10, 0.0, 0.0),
        };
        Preset {
            users,
            clients,
            rate,
            secs,
            churn,
            celebrity_posts,
        }
    }

    /// The graph's shape: (celebrities, share of users following each,
    /// mean follows).
    fn graph_shape(self) -> (u64, f64, u64) {
        match self {
            Scenario::Celebrity => (1, 1.0, 0),
            Scenario::ReconnectStorm => (0, 0.0, 0),
            _ => (2, 0.05, 20),
        }
    }

    /// The report's name (`<name>.json`, `<name>.html`).
    fn name(self) -> &'static str {
        match self {
            Scenario::Smoke => "smoke",
            Scenario::Sustained => "sustained",
            Scenario::Celebrity => "celebrity",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::Chaos => "chaos",
            Scenario::Custom => "custom",
        }
    }
}

/// Runs a scenario and writes its reports.
pub async fn run(mut a: RunArgs) -> anyhow::Result<()> {
    if let Some(k) = a.api_key.take() {
        http::set_api_key(k);
    }
    if let Some(s) = a.jwt_secret.take() {
        clients::set_jwt_secret(s);
    }
    let targets = targets(&a)?;
    a.graph.target = targets[0];
    let preset = a.scenario.preset();
    let spec = run_spec(&a, &preset, targets)?;
    let graph = Arc::new(build_graph(&a, &preset, spec.clients));
    let herald = start_herald(&a).await?;
    if !a.no_seed {
        eprintln!(
            "seeding {} follows for {} users",
            graph.edges.len(),
            graph.spec.users
        );
        run::seed(a.graph.target, &graph).await.context("seeding")?;
    }
    let (outcome, faults) = drive(&a, spec, graph, herald.as_ref()).await;
    if let Some(h) = &herald {
        h.locked().stop();
    }
    let mut r = report::report(&outcome?, a.scenario.name());
    r.faults = faults;
    print!("{}", report::summary(&r));
    write_reports(&a.out, a.scenario.name(), &r)?;
    if a.strict && r.verdict != "pass" {
        anyhow::bail!("verdict: fail (lost or duplicated notifications)");
    }
    Ok(())
}

/// `--targets`, or `--target` alone; loopback addresses only.
fn targets(a: &RunArgs) -> anyhow::Result<Vec<SocketAddr>> {
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
    Ok(targets)
}

/// `--mix like,comment,mention,post` (default 50,20,10,20).
fn mix(a: &RunArgs) -> anyhow::Result<[u32; 4]> {
    let Some(s) = &a.mix else {
        return Ok([50, 20, 10, 20]);
    };
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--mix like,comment,mention,post")?;
    anyhow::ensure!(v.len() == 4, "--mix takes four weights");
    Ok([v[0], v[1], v[2], v[3]])
}

/// The preset with the flags over it.
fn run_spec(a: &RunArgs, p: &Preset, targets: Vec<SocketAddr>) -> anyhow::Result<RunSpec> {
    let chaos = a.scenario == Scenario::Chaos;
    let storm = a.scenario == Scenario::ReconnectStorm;
    Ok(RunSpec {
        target: targets[0],
        targets,
        clients: a.clients.unwrap_or(p.clients),
        rate: a.rate.unwrap_or(p.rate),
        duration: Duration::from_secs(a.duration.unwrap_or(p.secs).clamp(1, 3600)),
        mix: mix(a)?,
        churn: a.churn.unwrap_or(p.churn),
        offline: Duration::from_secs(2),
        celebrity_posts: a.celebrity_posts.unwrap_or(p.celebrity_posts),
        grace: Duration::from_secs(15),
        sources: a.sources.max(1),
        herald_pid: if chaos { None } else { a.herald_pid },
        connect_rate: if storm { 0 } else { 5000 },
        storm_queued: if storm { a.queued } else { 0 },
        celebrity_post: a.scenario == Scenario::Celebrity,
        set_prefs: a.prefs,
        hot_share: a.hot_share.clamp(0.0, 1.0),
        idempotent: chaos || a.failover,
        retry_for: (chaos || a.failover).then_some(Duration::from_secs(60)),
        data_bytes: a.data_bytes.min(65_536),
        custom: (a.custom_share > 0.0)
            .then(|| (a.custom_kind.clone(), a.custom_share.clamp(0.0, 1.0))),
        thread: (a.thread_share > 0.0)
            .then(|| (a.thread_kind.clone(), a.thread_share.clamp(0.0, 1.0))),
    })
}

/// The follow graph: the scenario's shape, with at least one user per
/// client.
fn build_graph(a: &RunArgs, p: &Preset, clients: u64) -> Graph {
    let (celebs, share, mean) = a.scenario.graph_shape();
    let users = a.graph.users.unwrap_or(p.users).max(clients);
    Graph::build(graph_spec(&a.graph, users, mean, celebs, share))
}

/// Chaos: the generator owns the Herald process (started here, up before
/// the run).
async fn start_herald(a: &RunArgs) -> anyhow::Result<Option<Arc<Mutex<chaos::Herald>>>> {
    match (a.scenario == Scenario::Chaos, &a.herald_cmd) {
        (true, Some(cmd)) => {
            std::fs::create_dir_all(&a.out).ok();
            let h = chaos::Herald::start(cmd, &a.out.join("chaos-herald.log"))?;
            chaos::wait_up(a.graph.target, Duration::from_secs(60)).await?;
            Ok(Some(Arc::new(Mutex::new(h))))
        }
        (true, None) => anyhow::bail!("--scenario chaos needs --herald-cmd"),
        _ => Ok(None),
    }
}

/// The run, with the chaos scenario's faults alongside when Herald is
/// ours: what happened, and the faults it suffered.
async fn drive(
    a: &RunArgs,
    spec: RunSpec,
    graph: Arc<Graph>,
    herald: Option<&Arc<Mutex<chaos::Herald>>>,
) -> (anyhow::Result<Outcome>, Vec<Fault>) {
    let Some(h) = herald else {
        return (run::run(spec, graph, true, None).await, Vec::new());
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cs = chaos::ChaosSpec {
        redis_pid: a.redis_pid,
        kills: a.kills,
        redis_pause: Duration::from_millis(a.redis_pause_ms),
    };
    let (h, target, dur) = (h.clone(), spec.target, spec.duration);
    let faults = tokio::spawn(async move {
        if rx.await.is_err() {
            return Ok(Vec::new());
        }
        chaos::run_faults(cs, h, target, dur).await
    });
    let outcome = run::run(spec, graph, true, Some(tx)).await;
    match faults.await.context("chaos task") {
        Ok(Ok(f)) => (outcome, f),
        Ok(Err(e)) | Err(e) => (outcome.and(Err(e)), Vec::new()),
    }
}

/// `<out>/<name>.json` and `<out>/<name>.html`.
fn write_reports(out: &std::path::Path, name: &str, r: &report::Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).ok();
    let json_path = out.join(format!("{name}.json"));
    let html_path = out.join(format!("{name}.html"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(r)?).context("writing the JSON report")?;
    std::fs::write(&html_path, report::html(r)).context("writing the HTML report")?;
    println!("reports: {} {}", json_path.display(), html_path.display());
    Ok(())
}
