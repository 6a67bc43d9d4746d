//! The WebSocket clients: connect, read, ack like a real app, go offline
//! and come back when told.

use herald_types::sync::Locked;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::Stats;

/// Commands to one client.
#[derive(Debug, Clone, Copy)]
pub enum Cmd {
    /// Disconnect, stay away this long, reconnect.
    Offline(Duration),
}

/// A server frame, borrowed from the received bytes where it can be.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    pending: Option<u64>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default)]
    count: Option<u64>,
}

/// The sequence number this run put in `text` ("lg:<run>:<seq>"); None for
/// anything else (an earlier run's notification is not this run's).
fn seq_of(text: Option<&str>) -> Option<u64> {
    let rest = text?.strip_prefix("lg:")?;
    let (run, seq) = rest.split_once(':')?;
    if run != crate::workload::run_tag() {
        return None;
    }
    seq.parse().ok()
}

/// With `--jwt-secret`: clients connect with an HS256 token of their own
/// (as in production) instead of `?user=` (development mode).
static JWT_SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn set_jwt_secret(secret: String) {
    let _ = JWT_SECRET.set(secret);
}

fn ws_url(addr: SocketAddr, user: u64) -> String {
    match JWT_SECRET.get() {
        Some(secret) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match herald_auth::mint_hs256(secret, user, now, Duration::from_secs(3600), None, None)
            {
                Ok(t) => format!("ws://{addr}/v1/ws?token={t}"),
                Err(_) => format!("ws://{addr}/v1/ws?user={user}"),
            }
        }
        None => format!("ws://{addr}/v1/ws?user={user}"),
    }
}

pub struct ClientSpec {
    /// Every node; the client starts at `first` and moves to the next
    /// when it cannot connect (a node died).
    pub addrs: Arc<Vec<SocketAddr>>,
    pub first: usize,
    pub user: u64,
    /// Source addresses 127.0.0.1 .. 127.0.0.<sources>.
    pub source: u8,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(spec: &ClientSpec, addr: SocketAddr) -> anyhow::Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, spec.source)),
        0,
    ))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), sock.connect(addr)).await??;
    stream.set_nodelay(true)?;
    let url = ws_url(addr, spec.user);
    // A small read buffer: tungstenite zero-fills its whole read buffer
    // (128 KiB by default) on every read, which dominated the generator's CPU.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(url, stream, Some(cfg)),
    )
    .await??;
    Ok(ws)
}

/// Runs one client until `stop` turns true; returns after closing.
pub async fn run(
    spec: ClientSpec,
    stats: Arc<Stats>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = herald_types::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut at = spec.first;
    // This user's receipts, across reconnects.
    let mut ledger = crate::stats::Ledger::default();
    'outer: while !*stop.borrow() {
        let connected_at = Instant::now();
        let addr = spec.addrs[at % spec.addrs.len().max(1)];
        let mut ws = match connect(&spec, addr).await {
            Ok(ws) => ws,
            Err(_) => {
                stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                at += 1;
                // Full jitter: thousands of clients do not retry in step.
                let jitter = (spec.user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64
                    / (1u64 << 24) as f64;
                tokio::time::sleep(backoff.next_wait().mul_f64(0.5 + jitter / 2.0)).await;
                continue;
            }
        };
        backoff.reset();
        stats.connects.fetch_add(1, Ordering::Relaxed);
        stats.online.fetch_add(1, Ordering::Relaxed);
        let mut inbox_left = 0u64;
        let mut acks: Vec<String> = Vec::new();
        // Acks go out 20 ms after the first unacked receipt (no idle timers:
        // thousands of clients must not wake up for nothing).
        let mut ack_due: Option<tokio::time::Instant> = None;
        let mut offline_for = None;
        loop {
            tokio::select! {
                           m = ws.next() => {
                               let Some(Ok(m)) = m else { break };
                               let data = match &m {
                                   Message::Text(t) => t.as_bytes(),
                                   Message::Binary(b) => &b[..],
                                   _ => continue,
                               };
                               let Ok(f) = serde_json::from_slice::<Frame>(data) else { continue };
                               match &*f.ty {
                                   "hello" => inbox_left = f.pending.unwrap_or(0),
                                   "notification" => {
                                       let from_inbox = inbox_left > 0;
                                       if from_inbox {
                                           inbox_left -= 1;
                                           if inbox_left == 0 {
                                               {
            let mut h = stats.drains.locked();
                                                   let _ = h.record(connected_at.elapsed().as_micros().max(1) as u64);
                                               }
                                           }
                                       }
                                       if let Some(id) = f.id {
                                           if id.starts_with("n-agg-") {
                                               // A folded burst: it stands for `count`
                                               // notifications of its kind (and object).
                                               stats.receive_aggregate(
                                                   &mut ledger,
                                                   spec.user,
                                                   &id,
                                                   f.kind.as_deref().unwrap_or(""),
                                                   f.object.as_deref(),
                                                   f.count.unwrap_or(1),
                                                   from_inbox,
                                               );
                                           } else {
                                               if stats.receive(&mut ledger, spec.user, &id, seq_of(f.text.as_deref()), from_inbox) {
                                                   Stats::single(&mut ledger, f.kind.as_deref().unwrap_or(""), f.object.as_deref());
                                               }
                                           }
                                           acks.push(id.into_owned());
                                           if ack_due.is_none() {
                                               ack_due = Some(tokio::time::Instant::now() + Duration::from_millis(20));
                                           }
                                       }
                                   }
                                   _ => {}
                               }
                           }
                           _ = async { tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)).await }, if ack_due.is_some() => {
                               ack_due = None;
                               if send_acks(&mut ws, &mut ledger, &mut acks).await.is_err() {
                                   break;
                               }
                           }
                           c = cmds.recv() => {
                               if let Some(Cmd::Offline(d)) = c {
                                   offline_for = Some(d);
                               }
                               break;
                           }
                           _ = stop.changed() => break,
                       }
        }
        let _ = send_acks(&mut ws, &mut ledger, &mut acks).await;
        // Give the acks a moment to land before closing.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _ = ws.close(None).await;
        stats.online.fetch_sub(1, Ordering::Relaxed);
        if let Some(d) = offline_for {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => break 'outer,
            }
        }
    }
}

async fn send_acks(
    ws: &mut Ws,
    ledger: &mut crate::stats::Ledger,
    acks: &mut Vec<String>,
) -> anyhow::Result<()> {
    if acks.is_empty() {
        return Ok(());
    }
    let frame = serde_json::json!({"type": "ack", "ids": acks});
    ws.send(Message::text(frame.to_string())).await?;
    for id in acks.drain(..) {
        Stats::acked(ledger, &id);
    }
    Ok(())
}
