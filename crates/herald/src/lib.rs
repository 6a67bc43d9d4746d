//! The Herald node: wires the log, the Redis stores, the gateway, the
//! fan-out workers and the WebSocket edge into one process, serves HTTP and
//! WebSocket on one address, and shuts down in order.

pub mod cli;
pub mod config;
mod demo;
mod door;
mod ops;
mod ops_describe;
mod replicated;
mod routes;
mod starting;
mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;

/// Raises the soft open-file limit to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Accept-queue length asked for; the kernel caps it at `net.core.somaxconn`.
/// tokio's default (1024) overflowed in reconnect storms, and each dropped
/// SYN cost its client a 1 s retransmit.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` with a deep accept queue.
pub async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.bind(a).and_then(|_| sock.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("address resolved to nothing")))
}

/// Files kept free for the log, Redis, and everything that is not a client.
const RESERVED_FILES: usize = 1000;

pub use config::Role;

impl Role {
    fn has_log(self) -> bool {
        self != Role::Edge
    }

    fn holds_connections(self) -> bool {
        self != Role::Ingest
    }
}

/// Runs a node on `listener` until `shutdown` completes, then stops in
/// order: stop taking requests, give back partition leases, stop fan-out
/// reading, close connections (their unacked notifications go to the
/// inbox), commit checkpoints, close the log.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut shutdown = Box::pin(shutdown);
    let metrics = ops::install_metrics();
    let telemetry = telemetry::install(&cfg)?;
    let role = cfg.server.role;
    if let Some(w) = open_warning(&cfg) {
        tracing::warn!("{w}");
    }
    let max_conns = connection_capacity(&cfg);
    let celebrities = Arc::new(herald_store::CelebritySet::default());
    let Some(store) = starting::connect_redis(&cfg, &listener, &celebrities, &mut shutdown).await
    else {
        tracing::info!("stopped before redis could be reached");
        return Ok(());
    };
    let prefs = Arc::new(herald_prefs::PrefsCache::new(
        store.clone(),
        prefs_ttl(&cfg),
        cfg.preferences.cache_entries,
        cfg.digest.window_override_ms,
    ));
    // This process's start: presence entries and leases name it, so a
    // restarted node is not mistaken for the one that crashed.
    let incarnation = herald_types::now_ms();
    // In a cluster, partitions are leased in Redis (or, replicated, led
    // by their Raft leader); alone, all are ours.
    let leases = match cfg.server.cluster && !cfg.replicated() {
        true => Some(
            herald_fanout::Leases::start(
                store.clone(),
                cfg.log.partitions,
                incarnation,
                advertise(&cfg, &listener)?,
                Duration::from_millis(cfg.server.lease_ttl_ms),
                role.has_log(),
            )
            .await,
        ),
        false => None,
    };
    let log = match role.has_log() {
        true => Some(open_log(&cfg).await?),
        false => None,
    };
    // The node set: made from `replication.peers` when the cluster first
    // starts, then changed with `herald cluster add/remove`.
    let node_set = match cfg.replicated() {
        true => Some(
            store
                .node_set_or_init(&replicated::pairs(&cfg.replication_peers()?))
                .await
                .context("cannot read the cluster's node set from Redis")?,
        ),
        false => None,
    };
    let replicas = match (&log, &node_set) {
        (Some(log), Some(set)) => {
            let mut rcfg = cfg.replica_config()?;
            rcfg.peers = replicated::peers_of(&set.nodes);
            rcfg.epoch = set.epoch;
            Some(
                herald_raft::Replicas::start(rcfg, log.clone(), cfg.server.data_dir.join("raft"))
                    .await
                    .map_err(|e| anyhow::anyhow!("replicated partitions: {e}"))?,
            )
        }
        _ => None,
    };
    let placement: Arc<dyn herald_types::Placement> = match (&leases, &node_set) {
        (_, Some(set)) => replicated::RaftPlacement::start(
            replicas.clone(),
            set.epoch,
            replicated::peers_of(&set.nodes),
            store.clone(),
        ),
        (Some(l), None) => l.clone(),
        (None, None) => Arc::new(herald_types::placement::Alone),
    };
    // Fan-out's trackers come first: the edge answers settlement to them.
    let fanout_cfg = cfg.fanout_config();
    // Where notifications nobody took go: the inbox, and the webhook
    // when one is configured (sent by the owner of each partition).
    let webhooks = cfg.webhook_config()?.map(|w| {
        herald_webhook::Webhooks::start(store.clone(), w, cfg.log.partitions, placement.clone())
    });
    let sinks = herald_fanout::sink::Sinks::new(store.clone(), prefs.clone(), webhooks.clone());
    // Several nodes: pushes to users connected elsewhere travel over
    // Redis pub/sub (one channel per node), answers come back the same
    // way. Its outgoing queue comes first: settlement sends answers on it.
    let relay_out = cfg.server.cluster.then(herald_fanout::RelayOut::new);
    let settlements = match &log {
        Some(log) => herald_fanout::Settlements::new(
            log,
            &fanout_cfg,
            store.clone(),
            sinks,
            placement.clone(),
            relay_out.as_ref().map(|(out, _)| out.clone()),
        ),
        None => herald_fanout::Settlements::without_log(
            &fanout_cfg,
            store.clone(),
            sinks,
            placement.clone(),
            relay_out.as_ref().map(|(out, _)| out.clone()),
            cfg.log.partitions,
        ),
    };
    let mut edge_cfg = cfg.edge_config(max_conns);
    edge_cfg.incarnation = incarnation;
    let jwt = cfg.jwt_config();
    let verifier = match jwt.enabled() {
        true => Some(Arc::new(
            herald_auth::Verifier::new(jwt).context("cannot load the JWT keys")?,
        )),
        false => None,
    };
    if let Some(v) = &verifier {
        // A JWKS URL: its keys before the first connection, then kept
        // fresh. Unreachable at start: logged; tokens are refused until a
        // fetch succeeds (every unknown key tries again, once a minute).
        if !cfg.auth.jwks_url.is_empty() {
            match v.refresh().await {
                Ok(n) => tracing::info!(keys = n, url = %cfg.auth.jwks_url, "JWKS fetched"),
                Err(e) => {
                    tracing::error!(error = %e, "JWKS not fetched at start; tokens are refused until it is")
                }
            }
        }
        v.keep_fresh();
    }
    edge_cfg.jwt = verifier.clone();
    // The outboxes read lately: the edge's drains and the feed's pages.
    let outboxes = Arc::new(herald_store::OutboxCache::new(
        cfg.celebrity.outbox_cap.max(1),
    ));
    let edge = herald_edge::Edge::new(
        edge_cfg,
        store.clone(),
        celebrities.clone(),
        prefs.clone(),
        settlements.clone(),
        outboxes.clone(),
    );
    let relay = relay_out.map(|out| {
        herald_fanout::Relay::start(
            store.clone(),
            incarnation,
            Duration::from_millis(cfg.fanout.remote_answer_timeout_ms.max(1000)),
            out,
            &settlements,
            edge.clone(),
        )
    });
    // What fan-out parks for users connected here: their connections
    // drain it (alone; in a cluster the relay tells every node).
    if relay.is_none() {
        tokio::spawn({
            let mut parked = settlements.parked();
            let edge = edge.clone();
            async move {
                use herald_types::{EdgeCommand, EdgeHandle};
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match parked.recv().await {
                        Ok(user) => {
                            edge.send(EdgeCommand::Poke { user });
                        }
                        Err(RecvError::Lagged(_)) => {
                            edge.send(EdgeCommand::PokeAll);
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        });
    }
    let gateway = log.as_ref().map(|log| {
        let mut gcfg = cfg.gateway_config();
        gcfg.jwt = verifier.clone();
        herald_gateway::Gateway::new(
            gcfg,
            log.clone(),
            store.clone(),
            celebrities.clone(),
            prefs.clone(),
            placement.clone(),
            replicas.clone(),
            role.holds_connections()
                .then(|| edge.clone() as Arc<dyn herald_types::EdgeHandle>),
            Arc::new(herald_fanout::EveryEdge {
                local: edge.clone(),
                relay: relay.clone(),
            }),
            outboxes,
        )
    });
    let mut fanout = log.as_ref().map(|log| {
        herald_fanout::Fanout::start(
            log.clone(),
            store.clone(),
            edge.clone(),
            celebrities,
            prefs,
            fanout_cfg,
            settlements,
            replicas.clone(),
            relay.clone(),
        )
    });

    let ops_state = ops::Ops {
        log: log.clone(),
        store: store.clone(),
        fanout: fanout.as_ref().map(|f| f.health()).unwrap_or_default(),
        leases: leases.clone(),
        replicas: replicas.clone(),
        keys: cfg.api_keys(),
        metrics,
        webhooks: webhooks.clone(),
    };
    let app = routes::app(&cfg, role, gateway.clone(), &edge, ops_state, placement);
    let housekeeping = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                if let Some(g) = &gateway {
                    g.housekeeping();
                }
            }
        }
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, role = ?role, partitions = cfg.log.partitions, "herald serving");
    for (what, path) in next_steps(&cfg, role) {
        tracing::info!(url = %format!("http://{addr}{path}"), "{what}");
    }
    let door = door::DoorConfig {
        // Every WebSocket is an HTTP connection first; a little more room
        // for plain requests, within the files kept in reserve.
        max_connections: max_conns + RESERVED_FILES / 2,
        per_ip_connections: cfg.http.per_ip_connections,
        per_ip_rate: cfg.http.per_ip_rate,
        header_timeout: Duration::from_millis(cfg.http.header_timeout_ms),
        body_timeout: Duration::from_millis(cfg.http.body_timeout_ms),
        drain_timeout: Duration::from_millis(cfg.server.shutdown_timeout_ms),
        cors_origins: cfg.http.cors_origins.clone(),
    };
    door::serve(listener, app, door, shutdown)
        .await
        .context("http server")?;

    tracing::info!("shutting down: giving back partition leases, stopping fan-out");
    housekeeping.abort();
    if let Some(l) = &leases {
        l.leave().await;
    }
    if let Some(f) = &mut fanout {
        f.stop_reading().await;
    }
    tracing::info!(connections = edge.connections(), "closing connections");
    edge.close_all(Duration::from_millis(cfg.server.shutdown_timeout_ms))
        .await;
    if let Some(f) = &fanout {
        f.commit_final().await;
    }
    if let Some(r) = &replicas {
        r.shutdown().await;
    }
    if let Some(log) = log {
        log.close().await.context("closing the log")?;
    }
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Where other nodes reach this one: `server.advertise`, else the address
/// it listens on (which must then not be a wildcard).
fn advertise(cfg: &Config, listener: &TcpListener) -> anyhow::Result<String> {
    if !cfg.server.advertise.is_empty() {
        return Ok(cfg.server.advertise.clone());
    }
    let a = listener.local_addr()?;
    if a.ip().is_unspecified() {
        anyhow::bail!(
            "listening on {a} (every interface): set server.advertise to the address other nodes reach this one at"
        );
    }
    Ok(a.to_string())
}

/// How long a cached preference entry lives. In a cluster, changes made
/// through other nodes must be seen within a second; alone, every change
/// comes through this node and clears its entry at once, so the entry only
/// ages out for writes that bypass Herald (straight into Redis).
fn prefs_ttl(cfg: &Config) -> Duration {
    let ms = match cfg.server.cluster {
        true => cfg.preferences.cache_ttl_ms.clamp(1, 1000),
        false => cfg.preferences.alone_cache_ttl_ms.clamp(1, 3_600_000),
    };
    Duration::from_millis(ms)
}

/// What to open next, one line each, by role: the demo (development mode),
/// the API's description, the readiness and metrics endpoints.
fn next_steps(cfg: &Config, role: Role) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if cfg.websocket.dev_mode && role.holds_connections() && role.has_log() {
        out.push(("demo page (development mode)", "/demo?user=2"));
    }
    if role.holds_connections() {
        out.push(("websocket", "/v1/ws"));
    }
    out.push(("api description", "/v1/openapi.json"));
    out.push(("readiness", "/readyz"));
    out.push(("metrics (admin key once keys are set)", "/metrics"));
    out
}

/// What an operator must hear at every start when the backend routes are
/// open to anyone: development mode without keys, or production with
/// `gateway.open = true`.
pub fn open_warning(cfg: &Config) -> Option<&'static str> {
    if !cfg.no_api_keys() {
        return None;
    }
    Some(if cfg.websocket.dev_mode {
        "development mode without API keys: every HTTP route answers requests without credentials"
    } else {
        "gateway.open = true: no API key, every HTTP route (events, inboxes, admin, /metrics) answers requests without credentials"
    })
}

/// How many WebSocket connections this process can hold (from the
/// open-file limit, raised to the hard limit, unless configured).
fn connection_capacity(cfg: &Config) -> usize {
    let nofile = raise_nofile_limit() as usize;
    let max_conns = match cfg.websocket.max_connections {
        0 => nofile.saturating_sub(RESERVED_FILES).max(16),
        n => n,
    };
    tracing::info!(
        open_files = nofile,
        max_connections = max_conns,
        "connection capacity"
    );
    max_conns
}

/// Opens (and if need be recovers) the log, reporting what recovery cut
/// or quarantined.
async fn open_log(cfg: &Config) -> anyhow::Result<herald_log::Log> {
    let log_dir = cfg.server.data_dir.join("log");
    let log_cfg = cfg.log_config();
    let log = tokio::task::spawn_blocking(move || herald_log::Log::open(&log_dir, log_cfg))
        .await
        .context("log open task")?
        .context("cannot open the log")?;
    for t in log.truncations() {
        tracing::warn!(segment = %t.path.display(), cut_bytes = t.cut_bytes, reason = %t.reason, "log recovery truncated");
    }
    match log.quarantine() {
        Ok(q) => {
            let open = q.iter().filter(|r| !r.acknowledged).count();
            metrics::gauge!("herald_log_quarantined_ranges").set(open as f64);
            if open > 0 {
                tracing::error!(
                    ranges = open,
                    "the log holds quarantined corrupt ranges; see GET /v1/admin/log/quarantine"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "quarantine reports unreadable"),
    }
    Ok(log)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("signal received");
}
