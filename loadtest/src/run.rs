//! Driving a run, step by step: preferences, the storm's backlog,
//! clients, senders, the paced traffic, the stragglers, the figures.

use herald_types::procfs;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clients::{self, ClientSpec, Cmd};
use crate::graph::Graph;
use crate::http::Conn;
use crate::send::{self, Batch};
use crate::stats::Stats;
use crate::workload::{self, Planned, RunSpec, Workload};

pub struct Outcome {
    pub stats: Arc<Stats>,
    pub spec: RunSpec,
    pub send_secs: f64,
    pub rss_idle_kib: Option<(u64, u64)>,
    pub drain_secs: f64,
    /// Herald CPU (user+sys) per notification delivered while sending.
    pub cpu_us_per_notification: Option<f64>,
    /// Storm: connect of the first client to the last queued item received.
    pub storm_secs: Option<f64>,
    /// Celebrity post: send to the last online receipt.
    pub celebrity_last_ms: Option<f64>,
}

/// `n` in at most 6 characters: 999, 15.2k, 1.21M.
fn si(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// Bulk-imports the graph through the public API.
pub async fn seed(target: SocketAddr, graph: &Graph) -> anyhow::Result<()> {
    let mut conn = Conn::new(&target.to_string());
    for chunk in graph.edges.chunks(50_000) {
        let pairs: Vec<[u64; 2]> = chunk.iter().map(|&(a, b)| [a, b]).collect();
        let body = serde_json::to_vec(&json!({ "follows": pairs }))?;
        let (s, b) = conn
            .request("POST", "/v1/graph/follows", "application/json", &body)
            .await?;
        if s != 200 {
            bail!("graph import failed: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

/// Runs a workload; `traffic` hears when sending starts (the chaos
/// scenario times its faults from there).
pub async fn run(
    spec: RunSpec,
    graph: Arc<Graph>,
    progress: bool,
    traffic: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<Outcome> {
    let stats = Arc::new(Stats::new(spec.clients));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = crate::sample::spawn(stats.clone(), spec.herald_pid, stop_rx.clone());
    let rss_before = herald_rss(&spec);
    if spec.set_prefs {
        set_preferences(&spec).await?;
    }
    if spec.thread.is_some() {
        subscribe_threads(&spec).await?;
    }
    if spec.storm_queued > 0 {
        queue_storm(&spec, &stats).await?;
    }
    let t_conn = Instant::now();
    let clients = Clients::connect(&spec, &stats, &stop_rx).await?;
    let storm_secs = match spec.storm_queued {
        0 => None,
        _ => Some(wait_storm(&stats, t_conn).await),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_before.zip(herald_rss(&spec));

    // Senders: a few keep-alive connections fed with batches.
    let (batch_tx, senders) = send::start(&spec, stats.clone());
    if let Some(tx) = traffic {
        let _ = tx.send(());
    }
    let mut work = Workload::new(&spec, graph);
    let cpu0 = herald_cpu(&spec);
    let delivered0 = stats.delivered();
    let celebrity = match work.celebrity_post() {
        Some(post) if spec.celebrity_post => Some(celebrity_post(&spec, post, &stats, &batch_tx)?),
        _ => None,
    };
    let start = Instant::now();
    send_traffic(&spec, &mut work, &stats, &batch_tx, &clients, progress).await?;
    let celebrity_last_ms = match celebrity {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    let send_secs = start.elapsed().as_secs_f64();
    drop(batch_tx);
    for s in senders {
        let _ = s.await;
    }
    let drain_secs = wait_stragglers(&spec, &stats).await;
    let cpu_us_per_notification =
        cpu_per_notification(cpu0, herald_cpu(&spec), stats.delivered() - delivered0);
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    clients.join().await;
    Ok(Outcome {
        stats,
        spec,
        send_secs,
        rss_idle_kib: rss,
        drain_secs,
        cpu_us_per_notification,
        storm_secs,
        celebrity_last_ms,
    })
}

fn herald_rss(spec: &RunSpec) -> Option<u64> {
    spec.herald_pid
        .and_then(|p| procfs::rss_kib(procfs::Pid::Other(p)))
}

fn herald_cpu(spec: &RunSpec) -> Option<u64> {
    spec.herald_pid
        .and_then(|p| procfs::cpu_ticks(procfs::Pid::Other(p)))
}

/// Herald CPU (user + system) per notification delivered between the two
/// readings.
fn cpu_per_notification(before: Option<u64>, after: Option<u64>, delivered: u64) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if delivered > 0 => {
            Some(b.saturating_sub(a) as f64 / procfs::ticks_per_second() * 1e6 / delivered as f64)
        }
        _ => None,
    }
}

/// Gives every user stored preferences (a mute of an actor that never
/// acts), so that a run measures the cost of reading them.
async fn set_preferences(spec: &RunSpec) -> anyhow::Result<()> {
    eprintln!("setting preferences for {} users", spec.clients);
    let mut conn = Conn::new(&spec.target.to_string());
    for user in 1..=spec.clients {
        let body = br#"{"muted_actors": [4000000000], "kinds": {"follow": "realtime"}}"#;
        let (s, b) = conn
            .request(
                "PUT",
                &format!("/v1/users/{user}/preferences"),
                "application/json",
                body,
            )
            .await?;
        if s != 200 {
            bail!(
                "setting preferences failed: {s} {}",
                String::from_utf8_lossy(&b)
            );
        }
    }
    Ok(())
}

/// Subscribes each thread's subscribers (`workload::threads`) through the
/// API (a PUT adds: a node reused by a run with another client count
/// keeps the earlier subscribers too).
async fn subscribe_threads(spec: &RunSpec) -> anyhow::Result<()> {
    let mut conn = Conn::new(&spec.target.to_string());
    for (object, subs) in workload::threads(spec.clients) {
        let path = format!("/v1/objects/{object}/subscribers");
        let body = serde_json::to_vec(&json!({ "users": subs }))?;
        let (s, b) = conn
            .request("PUT", &path, "application/json", &body)
            .await?;
        if s != 200 {
            bail!("subscribing {object}: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

/// Queues `storm_queued` likes for every user while they are offline and
/// waits until Herald has written them all to the inboxes.
async fn queue_storm(spec: &RunSpec, stats: &Stats) -> anyhow::Result<()> {
    eprintln!(
        "queueing {} notifications for each of {} offline users",
        spec.storm_queued, spec.clients
    );
    let mut conn = Conn::new(&spec.target.to_string());
    let planned = workload::storm(spec.clients, spec.storm_queued, 1_000_000_000);
    let now = Instant::now();
    for p in &planned {
        stats.expect(p.seq, now, &p.recipients);
    }
    for chunk in planned.chunks(1000) {
        let events: Vec<&Value> = chunk.iter().map(|p| &p.event).collect();
        let body = serde_json::to_vec(&json!({ "events": events }))?;
        let (s, b) = conn
            .request("POST", "/v1/events", "application/json", &body)
            .await?;
        if s != 202 {
            bail!("queueing failed: {s} {}", String::from_utf8_lossy(&b));
        }
        stats
            .events_accepted
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        stats
            .events_sent
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for user in [1, spec.clients / 2 + 1, spec.clients] {
        while crate::storage::pending(&mut conn, user).await? < spec.storm_queued {
            if Instant::now() > deadline {
                bail!("inboxes never filled");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Every client's task and the channel that commands it.
struct Clients {
    cmds: Vec<mpsc::Sender<Cmd>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Connects a client for each of users 1..=clients, at most
    /// `connect_rate` a second, and waits until all are online.
    async fn connect(
        spec: &RunSpec,
        stats: &Arc<Stats>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Clients> {
        let mut cmds = Vec::new();
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        let addrs = Arc::new(spec.targets.clone());
        for user in 1..=spec.clients {
            let (tx, rx) = mpsc::channel(4);
            cmds.push(tx);
            let cs = ClientSpec {
                addrs: addrs.clone(),
                first: (user as usize) % spec.targets.len().max(1),
                user,
                source: 1 + (user % spec.sources.max(1) as u64) as u8,
            };
            tasks.push(tokio::spawn(clients::run(
                cs,
                stats.clone(),
                rx,
                stop.clone(),
            )));
            if spec.connect_rate > 0 && user % 100 == 0 {
                let due = Duration::from_secs_f64(user as f64 / spec.connect_rate as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while stats.online.load(Ordering::Relaxed) < spec.clients {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} clients connected",
                    stats.online.load(Ordering::Relaxed),
                    spec.clients
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Clients { cmds, tasks })
    }

    /// Sends client `i` offline for `for_`, unless it is busy.
    fn offline(&self, i: usize, for_: Duration) {
        if let Some(c) = self.cmds.get(i) {
            let _ = c.try_send(Cmd::Offline(for_));
        }
    }

    /// Waits (5 s at most each) for the clients to stop.
    async fn join(self) {
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// The storm: seconds from the first connect to the last queued
/// notification received (60 s at most).
async fn wait_storm(stats: &Stats, t_conn: Instant) -> f64 {
    let limit = Instant::now() + Duration::from_secs(60);
    while !stats.all_received() && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t_conn.elapsed().as_secs_f64()
}

/// Sends the celebrity scenario's post one second into the traffic (at
/// once without traffic); the task answers when its last online follower
/// got it, in ms after the send.
fn celebrity_post(
    spec: &RunSpec,
    post: Planned,
    stats: &Arc<Stats>,
    batch_tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<JoinHandle<Option<f64>>> {
    eprintln!(
        "celebrity {} posts to {} online followers",
        post.event["actor"],
        post.recipients.len()
    );
    let body = serde_json::to_vec(&json!({ "events": [post.event] }))?;
    let (stats, tx) = (stats.clone(), batch_tx.clone());
    let delay = if spec.rate > 0 {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    Ok(tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        stats.expect(post.seq, sent, &post.recipients);
        tx.send(Batch {
            body,
            seqs: vec![post.seq],
        })
        .await
        .ok()?;
        let limit = Instant::now() + Duration::from_secs(30);
        while stats.pending.contains_key(&post.seq) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Some(sent.elapsed().as_secs_f64() * 1000.0)
    }))
}

/// The paced traffic: every 10 ms, the events due (their recipients
/// expected), the churn's clients sent offline, a progress row a second.
async fn send_traffic(
    spec: &RunSpec,
    work: &mut Workload,
    stats: &Stats,
    batch_tx: &mpsc::Sender<Batch>,
    clients: &Clients,
    progress: bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_tick = start;
    while start.elapsed() < spec.duration && work.sends() {
        let now = Instant::now();
        let dt = now.duration_since(last_tick).as_secs_f64();
        last_tick = now;
        let planned = work.due(start.elapsed(), dt);
        for i in work.churn(dt) {
            clients.offline(i, spec.offline);
        }
        send_planned(&planned, now, stats, batch_tx).await?;
        if progress && Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            progress_row(start, stats);
        }
        tokio::time::sleep(tick).await;
    }
    Ok(())
}

/// Expects each planned event's recipients, then hands the events to the
/// senders in requests of at most 1,000.
async fn send_planned(
    planned: &[Planned],
    now: Instant,
    stats: &Stats,
    batch_tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    if planned.is_empty() {
        return Ok(());
    }
    for p in planned {
        stats.expect(p.seq, now, &p.recipients);
        if p.foldable {
            if let Some(kind) = p.event["kind"].as_str() {
                stats.expect_foldable(p.seq, kind, p.event["object"].as_str(), &p.recipients);
            }
        }
    }
    stats
        .events_sent
        .fetch_add(planned.len() as u64, Ordering::Relaxed);
    for chunk in planned.chunks(1000) {
        let events: Vec<&Value> = chunk.iter().map(|p| &p.event).collect();
        let body = serde_json::to_vec(&json!({ "events": events }))?;
        let seqs = chunk.iter().map(|p| p.seq).collect();
        batch_tx
            .send(Batch { body, seqs })
            .await
            .context("senders gone")?;
    }
    Ok(())
}

/// One terminal row (< 80 columns).
fn progress_row(start: Instant, stats: &Stats) {
    eprintln!(
        "[{:>4.0}s] online {:>6} sent {:>6} ok {:>6} got {:>6} p99 {:>6.1}ms wait {:>6}",
        start.elapsed().as_secs_f64(),
        si(stats.online.load(Ordering::Relaxed)),
        si(stats.events_sent.load(Ordering::Relaxed)),
        si(stats.events_accepted.load(Ordering::Relaxed)),
        si(stats.delivered()),
        stats.p99_ms(),
        si(stats.waiting())
    );
}

/// Waits for stragglers: everything expected, or the grace period; the
/// seconds it took.
async fn wait_stragglers(spec: &RunSpec, stats: &Stats) -> f64 {
    let t = Instant::now();
    while t.elapsed() < spec.grace && !stats.all_received() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed().as_secs_f64()
}
