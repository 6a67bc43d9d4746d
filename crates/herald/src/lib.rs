//! The Herald node: wires the log, the Redis stores, the gateway, the
//! fan-out workers and the WebSocket edge into one process, serves HTTP and
//! WebSocket on one address, and shuts down in order.

pub mod cli;
pub mod config;
mod ops;

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

/// Runs a node on `listener` until `shutdown` completes, then stops in
/// order: stop taking requests, stop fan-out reading, close connections
/// (their unacked notifications go to the inbox), commit checkpoints, close
/// the log.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = ops::install_metrics();
    let max_conns = connection_capacity(&cfg);
    let log = open_log(&cfg).await?;
    let store = herald_store::Store::connect(cfg.store_config())
        .await
        .with_context(|| format!("cannot connect to redis at {}", cfg.redis.url))?;
    let celebrities = Arc::new(herald_store::CelebritySet::default());
    store
        .load_celebrities(&celebrities)
        .await
        .context("cannot read the celebrity set from redis")?;
    let prefs = Arc::new(herald_prefs::PrefsCache::new(
        store.clone(),
        Duration::from_millis(cfg.preferences.cache_ttl_ms.clamp(1, 1000)),
        cfg.preferences.cache_entries,
        cfg.digest.window_override_ms,
    ));
    let gateway = herald_gateway::Gateway::new(
        cfg.gateway_config(),
        log.clone(),
        store.clone(),
        celebrities.clone(),
        prefs.clone(),
    );
    // Fan-out's trackers come first: the edge answers settlement to them.
    let fanout_cfg = cfg.fanout_config();
    let settlements = herald_fanout::Settlements::new(&log, &fanout_cfg, store.clone());
    // This process's start: presence entries name it, so a restarted node
    // is not mistaken for the one that crashed.
    let incarnation = herald_types::now_ms();
    let mut edge_cfg = cfg.edge_config(max_conns);
    edge_cfg.incarnation = incarnation;
    let edge = herald_edge::Edge::new(
        edge_cfg,
        store.clone(),
        celebrities.clone(),
        prefs.clone(),
        settlements.clone(),
    );
    // Several nodes: pushes to users connected elsewhere travel over
    // Redis pub/sub (one channel per node), answers come back the same way.
    let _relay = cfg.server.cluster.then(|| {
        let url = cfg
            .redis
            .cluster_nodes
            .first()
            .cloned()
            .unwrap_or_else(|| cfg.redis.url.clone());
        let r = herald_fanout::Relay::start(
            store.clone(),
            url,
            incarnation,
            Duration::from_millis(cfg.fanout.remote_answer_timeout_ms.max(1000)),
            &settlements,
        );
        r.set_edge(edge.clone());
        r
    });
    let mut fanout = herald_fanout::Fanout::start(
        log.clone(),
        store.clone(),
        edge.clone(),
        celebrities,
        prefs,
        fanout_cfg,
        settlements,
    );

    let app = herald_gateway::router(gateway.clone())
        .merge(edge.router())
        .merge(ops::router(ops::Ops {
            log: log.clone(),
            store: store.clone(),
            fanout: fanout.health(),
            metrics,
        }))
        .fallback(|| async {
            herald_gateway::ApiError::not_found("no such route; see docs/API.md")
        })
        .method_not_allowed_fallback(|| async { method_not_allowed() });
    let housekeeping = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                gateway.housekeeping();
            }
        }
    });
    tracing::info!(addr = %listener.local_addr()?, partitions = log.partitions(), "herald serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("http server")?;

    tracing::info!("shutting down: stopping fan-out");
    housekeeping.abort();
    fanout.stop_reading().await;
    tracing::info!(connections = edge.connections(), "closing connections");
    edge.close_all(Duration::from_millis(cfg.server.shutdown_timeout_ms))
        .await;
    fanout.commit_final().await;
    log.close().await.context("closing the log")?;
    tracing::info!("shutdown complete");
    Ok(())
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

fn method_not_allowed() -> herald_gateway::ApiError {
    herald_gateway::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see docs/API.md",
    )
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
