//! Driving a run: seed, connect, send, churn, wait, verdict.

use herald_types::procfs;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::clients::{self, ClientSpec, Cmd};
use crate::graph::{Graph, Rng};
use crate::http::Conn;
use crate::stats::Stats;

/// This run's tag, different for every run of the generator: it is in
/// every event's text (`lg:<run>:<seq>`) and idempotency key
/// (`lg-<run>-<seq>`), so a second run against the same node is not taken
/// for retries of the first (Herald drops repeated keys), and
/// notifications left from earlier runs (inboxes, graphs seeded before)
/// are not counted in this run's verdict.
pub fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let x = t ^ (u64::from(std::process::id()) << 40);
        format!("{:x}", x & 0xffff_ffff_ffff)
    })
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub target: SocketAddr,
    /// Every node of a cluster (the target alone for one node): clients
    /// and senders are spread over them.
    pub targets: Vec<SocketAddr>,
    /// Clients for users 1..=clients.
    pub clients: u64,
    pub rate: u64,
    pub duration: Duration,
    /// Mix weights: like, comment, mention, post.
    pub mix: [u32; 4],
    /// Fraction of clients sent offline per second.
    pub churn: f64,
    pub offline: Duration,
    /// Celebrity posts per second during the run (0: none).
    pub celebrity_posts: f64,
    /// How long to wait for stragglers after sending stops.
    pub grace: Duration,
    pub sources: u8,
    pub herald_pid: Option<u32>,
    /// Clients connected per second (0: all at once).
    pub connect_rate: u64,
    /// Reconnect storm: queue this many notifications per user while every
    /// client is offline, then connect them all at once (0: no storm).
    pub storm_queued: u64,
    /// Send one post by the first celebrity right after connecting.
    pub celebrity_post: bool,
    /// Fraction of likes sent to user 1 about one of three posts (a hot
    /// recipient: exercises burst folding and the throttle).
    pub hot_share: f64,
    /// Give every user stored preferences first (a mute of an actor that
    /// never acts), to measure the cost of preference checks.
    pub set_prefs: bool,
    /// Events carry idempotency keys (`lg-<run>-<seq>`).
    pub idempotent: bool,
    /// Retry a refused or failed batch this long before giving up on it
    /// (none: one attempt).
    pub retry_for: Option<Duration>,
}

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
pub fn si(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// Queues `per_user` likes for every user while they are offline and waits
/// until Herald has written them all to the inboxes.
async fn queue_storm(spec: &RunSpec, stats: &Stats) -> anyhow::Result<()> {
    let mut conn = Conn::new(&spec.target.to_string());
    let mut seq = 1_000_000_000u64;
    let mut events = Vec::new();
    for round in 0..spec.storm_queued {
        for user in 1..=spec.clients {
            seq += 1;
            let actor = user % spec.clients + 1;
            events.push(json!({"kind": "like", "actor": actor, "recipient": user, "object": format!("post:s{round}"), "text": format!("lg:{}:{seq}", run_tag())}));
            stats.expect(seq, Instant::now(), &[user]);
        }
    }
    for chunk in events.chunks(1000) {
        let body = serde_json::to_vec(&json!({ "events": chunk }))?;
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
        loop {
            let (_, b) = conn
                .request(
                    "GET",
                    &format!("/v1/users/{user}/inbox?limit=1"),
                    "application/json",
                    b"",
                )
                .await?;
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            if v["pending"].as_u64().unwrap_or(0) >= spec.storm_queued {
                break;
            }
            if Instant::now() > deadline {
                bail!("inboxes never filled");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
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

fn recipients(graph: &Graph, ev: &Value, clients: u64) -> Vec<u64> {
    let actor = ev["actor"].as_u64().unwrap_or(0);
    let mut out: Vec<u64> = Vec::new();
    let mut push = |u: u64| {
        if u != actor && u <= clients && !out.contains(&u) {
            out.push(u);
        }
    };
    match ev["kind"].as_str() {
        Some("like") => push(ev["recipient"].as_u64().unwrap_or(0)),
        Some("comment") => {
            push(ev["recipient"].as_u64().unwrap_or(0));
            for m in ev["mentions"].as_array().into_iter().flatten() {
                push(m.as_u64().unwrap_or(0));
            }
        }
        Some("mention") => {
            for m in ev["mentions"].as_array().into_iter().flatten() {
                push(m.as_u64().unwrap_or(0));
            }
        }
        Some("post") => {
            let mut v: Vec<u64> = graph
                .followers_of(actor)
                .iter()
                .copied()
                .filter(|&u| u != actor && u <= clients)
                .collect();
            v.sort_unstable();
            v.dedup();
            return v;
        }
        _ => {}
    }
    out
}

fn make_event(rng: &mut Rng, spec: &RunSpec, seq: u64) -> Value {
    let n = spec.clients.max(2);
    let actor = rng.below(n) + 1;
    let total: u32 = spec.mix.iter().sum::<u32>().max(1);
    let mut pick = rng.below(total as u64) as u32;
    let mut kind = 3;
    for (i, w) in spec.mix.iter().enumerate() {
        if pick < *w {
            kind = i;
            break;
        }
        pick -= w;
    }
    let mut ev = pick_event(rng, spec, seq, actor, kind);
    if spec.idempotent {
        ev["id"] = json!(format!("lg-{}-{seq}", run_tag()));
    }
    ev
}

fn pick_event(rng: &mut Rng, spec: &RunSpec, seq: u64, actor: u64, kind: usize) -> Value {
    let n = spec.clients.max(2);
    let other = |rng: &mut Rng| rng.below(n) + 1;
    let text = format!("lg:{}:{seq}", run_tag());
    let object = format!("post:{}", rng.below(1_000_000));
    if kind == 0 && spec.hot_share > 0.0 && rng.f64() < spec.hot_share {
        let hot = format!("post:hot{}", rng.below(3));
        let actor = if actor == 1 { 2 } else { actor };
        return json!({"kind": "like", "actor": actor, "recipient": 1, "object": hot, "text": text});
    }
    match kind {
        0 => {
            json!({"kind": "like", "actor": actor, "recipient": other(rng), "object": object, "text": text})
        }
        1 => {
            json!({"kind": "comment", "actor": actor, "recipient": other(rng), "mentions": [other(rng)], "object": object, "text": text})
        }
        2 => {
            json!({"kind": "mention", "actor": actor, "mentions": [other(rng), other(rng)], "object": object, "text": text})
        }
        _ => json!({"kind": "post", "actor": actor, "object": object, "text": text}),
    }
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
    let rss_before = spec
        .herald_pid
        .and_then(|p| procfs::rss_kib(procfs::Pid::Other(p)));
    if spec.set_prefs {
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
    }
    if spec.storm_queued > 0 {
        eprintln!(
            "queueing {} notifications for each of {} offline users",
            spec.storm_queued, spec.clients
        );
        queue_storm(&spec, &stats).await?;
    }

    // Connect every client, at a bounded rate.
    let mut cmd_txs = Vec::new();
    let mut tasks = Vec::new();
    let t_conn = Instant::now();
    let addrs = Arc::new(spec.targets.clone());
    for user in 1..=spec.clients {
        let (tx, rx) = mpsc::channel(4);
        cmd_txs.push(tx);
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
            stop_rx.clone(),
        )));
        if spec.connect_rate > 0 && user % 100 == 0 {
            let due = Duration::from_secs_f64(user as f64 / spec.connect_rate as f64);
            if let Some(wait) = due.checked_sub(t_conn.elapsed()) {
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
    // Storm: wait for every queued notification (bounded).
    let storm_secs = (spec.storm_queued > 0).then_some(t_conn);
    let storm_secs = match storm_secs {
        Some(t) => {
            let limit = Instant::now() + Duration::from_secs(60);
            while !stats.all_received() && Instant::now() < limit {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(t.elapsed().as_secs_f64())
        }
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = spec
        .herald_pid
        .and_then(|p| procfs::rss_kib(procfs::Pid::Other(p)));
    let rss = rss_before.zip(rss_after);

    // Senders: a few keep-alive connections fed with batches.
    let (batch_tx, senders) = crate::send::start(&spec, stats.clone());
    if let Some(tx) = traffic {
        let _ = tx.send(());
    }

    let mut rng = Rng::new(graph.spec.seed ^ 0xABCD);
    let celebs = graph.celebrities();
    let cpu0 = spec
        .herald_pid
        .and_then(|p| procfs::cpu_ticks(procfs::Pid::Other(p)));
    let delivered0 = stats.delivered();
    // The celebrity post goes out one second into the traffic (at once
    // without traffic); a task times its last online receipt.
    let celebrity_task = match (spec.celebrity_post, celebs.first()) {
        (true, Some(&actor)) => {
            let seq = crate::stats::CELEBRITY_SEQ;
            let mut ev = json!({"kind": "post", "actor": actor, "object": "post:celebrity", "text": format!("lg:{}:{seq}", run_tag())});
            if spec.idempotent {
                ev["id"] = json!(format!("lg-{}-{seq}", run_tag()));
            }
            let r = recipients(&graph, &ev, spec.clients);
            eprintln!("celebrity {actor} posts to {} online followers", r.len());
            let body = serde_json::to_vec(&json!({ "events": [ev] }))?;
            let (stats, tx) = (stats.clone(), batch_tx.clone());
            let delay = if spec.rate > 0 {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            Some(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let sent = Instant::now();
                stats.expect(seq, sent, &r);
                tx.send(crate::send::Batch {
                    body,
                    seqs: vec![seq],
                })
                .await
                .ok()?;
                let limit = Instant::now() + Duration::from_secs(30);
                while stats.pending.contains_key(&seq) && Instant::now() < limit {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(sent.elapsed().as_secs_f64() * 1000.0)
            }))
        }
        _ => None,
    };
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let mut seq = 0u64;
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    let mut celeb_credit = 0.0f64;
    let mut churn_credit = 0.0f64;
    let mut last_tick = Instant::now();
    while start.elapsed() < spec.duration
        && spec.rate + (spec.celebrity_posts as u64) + (spec.churn > 0.0) as u64 > 0
    {
        let due = (start.elapsed().as_secs_f64() * spec.rate as f64) as u64;
        let mut events = Vec::new();
        let mut seqs = Vec::new();
        let now = Instant::now();
        while seq < due {
            seq += 1;
            seqs.push(seq);
            let ev = make_event(&mut rng, &spec, seq);
            let r = recipients(&graph, &ev, spec.clients);
            stats.expect(seq, now, &r);
            if let Some(kind @ ("like" | "comment" | "mention")) = ev["kind"].as_str() {
                stats.expect_foldable(seq, kind, ev["object"].as_str(), &r);
            }
            events.push(ev);
        }
        let dt = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        celeb_credit += spec.celebrity_posts * dt;
        while celeb_credit >= 1.0 && !celebs.is_empty() {
            celeb_credit -= 1.0;
            seq += 1;
            let actor = celebs[rng.below(celebs.len() as u64) as usize];
            let mut ev = json!({"kind": "post", "actor": actor, "object": format!("post:c{seq}"), "text": format!("lg:{}:{seq}", run_tag())});
            if spec.idempotent {
                ev["id"] = json!(format!("lg-{}-{seq}", run_tag()));
            }
            seqs.push(seq);
            let r = recipients(&graph, &ev, spec.clients);
            stats.expect(seq, now, &r);
            events.push(ev);
        }
        churn_credit += spec.churn * spec.clients as f64 * dt;
        while churn_credit >= 1.0 {
            churn_credit -= 1.0;
            let i = rng.below(cmd_txs.len() as u64) as usize;
            let _ = cmd_txs[i].try_send(Cmd::Offline(spec.offline));
        }
        if !events.is_empty() {
            stats
                .events_sent
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            for (chunk, seqs) in events.chunks(1000).zip(seqs.chunks(1000)) {
                let body = serde_json::to_vec(&json!({ "events": chunk }))?;
                let seqs = seqs.to_vec();
                batch_tx
                    .send(crate::send::Batch { body, seqs })
                    .await
                    .context("senders gone")?;
            }
        }
        if progress && Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            // One terminal row (< 80 columns).
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
        tokio::time::sleep(tick).await;
    }
    let celebrity_last_ms = match celebrity_task {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    let send_secs = start.elapsed().as_secs_f64();
    drop(batch_tx);
    for s in senders {
        let _ = s.await;
    }
    // Wait for stragglers: everything expected, or the grace period.
    let t_drain = Instant::now();
    while t_drain.elapsed() < spec.grace && !stats.all_received() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_secs = t_drain.elapsed().as_secs_f64();
    let cpu1 = spec
        .herald_pid
        .and_then(|p| procfs::cpu_ticks(procfs::Pid::Other(p)));
    let delivered = stats.delivered() - delivered0;
    let cpu_us_per_notification = match (cpu0, cpu1) {
        (Some(a), Some(b)) if delivered > 0 => {
            Some((b - a) as f64 / procfs::ticks_per_second() * 1e6 / delivered as f64)
        }
        _ => None,
    };
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
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
