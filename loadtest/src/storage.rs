//! `herald-loadgen storage`: Redis bytes per waiting notification.
//!
//! Against a node and the Redis it uses (empty, or at least quiet): reads
//! `used_memory`, makes `users` offline users each receive `per_user`
//! comments (short texts), waits until every inbox holds them, reads
//! `used_memory` again; then one post by an account with `followers`
//! offline followers. Prints bytes per waiting notification for both
//! shapes (everything included: keys, structures, indexes, and the feed
//! entry each notification also gets), and the split between inbox and
//! feed from `MEMORY USAGE` of a sample of users' keys.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Conn;

/// `used_memory` of the Redis at `addr`, from `INFO memory`.
async fn used_memory(addr: &str) -> anyhow::Result<u64> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("redis connect timeout")??;
    s.write_all(b"INFO memory\r\n").await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[got..])).await??;
        if n == 0 {
            break;
        }
        got += n;
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
        {
            if text.contains("mem_fragmentation") || got > 2000 {
                return Ok(v);
            }
        }
    }
    bail!("no used_memory in INFO memory from {addr}")
}

/// One Redis command (arguments without spaces), its first reply line.
async fn redis_cmd(addr: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("redis connect timeout")??;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    // A bulk string's text is on the next line.
    Ok(match first.starts_with('$') {
        true => lines.next().unwrap_or("").to_string(),
        false => first.to_string(),
    })
}

/// Mean `MEMORY USAGE` of `h:{u:ID}:<suffix>` over up to 200 of `users`.
async fn key_bytes(addr: &str, users: &[u64], suffix: &str) -> anyhow::Result<f64> {
    let step = (users.len() / 200).max(1);
    let (mut sum, mut n) = (0u64, 0u64);
    for u in users.iter().step_by(step) {
        let r = redis_cmd(
            addr,
            &[
                "MEMORY",
                "USAGE",
                &format!("h:{{u:{u}}}:{suffix}"),
                "SAMPLES",
                "0",
            ],
        )
        .await?;
        if let Some(v) = r.strip_prefix(':').and_then(|v| v.parse::<u64>().ok()) {
            sum += v;
            n += 1;
        }
    }
    Ok(if n == 0 { 0.0 } else { sum as f64 / n as f64 })
}

/// The encoding Redis chose for `h:{u:ID}:<suffix>`.
async fn encoding(addr: &str, user: u64, suffix: &str) -> String {
    redis_cmd(
        addr,
        &["OBJECT", "ENCODING", &format!("h:{{u:{user}}}:{suffix}")],
    )
    .await
    .unwrap_or_default()
}

/// The inbox size of `user`, through the node's API.
pub(crate) async fn pending(conn: &mut Conn, user: u64) -> anyhow::Result<u64> {
    let (s, body) = conn
        .request(
            "GET",
            &format!("/v1/users/{user}/inbox?limit=1"),
            "application/json",
            b"",
        )
        .await?;
    if s != 200 {
        bail!("GET inbox of {user}: {s}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["pending"].as_u64().unwrap_or(0))
}

async fn post(conn: &mut Conn, events: &[serde_json::Value]) -> anyhow::Result<()> {
    for chunk in events.chunks(1000) {
        let body = serde_json::json!({ "events": chunk }).to_string();
        let (s, b) = conn
            .request("POST", "/v1/events", "application/json", body.as_bytes())
            .await?;
        if s != 202 {
            bail!("POST /v1/events: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

/// Waits until `user`'s inbox holds `want` entries (bounded).
async fn wait_for(conn: &mut Conn, user: u64, want: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if pending(conn, user).await? >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("user {user}'s inbox never reached {want}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(
    target: &str,
    redis: &str,
    users: u64,
    per_user: u64,
    followers: u64,
    data_bytes: usize,
) -> anyhow::Result<()> {
    let mut conn = Conn::new(target);
    // Users 10,000,000 + i: far from anything a seeded graph uses.
    let base = 10_000_000u64;
    let before = used_memory(redis).await?;
    let mut events = Vec::new();
    for k in 0..per_user {
        for u in 0..users {
            events.push(serde_json::json!({
                "kind": "comment", "actor": base + users + 1 + k, "recipient": base + u,
                "object": format!("post:{u}:{k}"), "text": "a short comment, thirty-four bytes",
            }));
        }
    }
    let t = Instant::now();
    post(&mut conn, &events).await?;
    drop(events);
    for u in [0, users / 2, users - 1] {
        wait_for(&mut conn, base + u, per_user).await?;
    }
    // The last partitions settle: wait for the memory to stop growing.
    let mut after = used_memory(redis).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = used_memory(redis).await?;
        if now <= after {
            break;
        }
        after = now;
    }
    let n = users * per_user;
    println!(
        "inboxes: {users} offline users x {per_user} comments = {n} waiting notifications in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "  redis used_memory grew {} bytes: {:.0} bytes per waiting notification with its feed entry",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / n as f64
    );
    let sample: Vec<u64> = (0..users).map(|u| base + u).collect();
    let fd = key_bytes(redis, &sample, "fd").await?;
    // A separate inbox hash only exists on versions before one entry per
    // notification (0 here otherwise).
    let ib = key_bytes(redis, &sample, "ib").await?;
    println!(
        "  MEMORY USAGE per user: entries (inbox and feed) {fd:.0} bytes ({:.0} per waiting notification, {}); separate inbox hash {ib:.0} bytes ({:.0} per waiting notification)",
        fd / per_user as f64,
        encoding(redis, base, "fd").await.trim_start_matches('+'),
        ib / per_user as f64,
    );
    if followers == 0 {
        return Ok(());
    }
    // One post by an account with `followers` offline followers.
    let author = base + 5_000_000;
    let fbase = base + 6_000_000;
    let pairs: Vec<[u64; 2]> = (0..followers).map(|i| [fbase + i, author]).collect();
    for chunk in pairs.chunks(100_000) {
        let body = serde_json::json!({ "follows": chunk }).to_string();
        let (s, b) = conn
            .request(
                "POST",
                "/v1/graph/follows",
                "application/json",
                body.as_bytes(),
            )
            .await?;
        if s != 200 {
            bail!("import: {s} {}", String::from_utf8_lossy(&b));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = used_memory(redis).await?;
    let mut big = serde_json::json!({
        "kind": "post", "actor": author, "object": "post:big",
        "text": "a post of a hundred bytes, give or take: its body is stored once for all its followers",
    });
    if data_bytes > 0 {
        big["data"] = crate::workload::data_payload(data_bytes, 1);
    }
    post(&mut conn, &[big]).await?;
    for f in [0, followers / 2, followers - 1] {
        wait_for(&mut conn, fbase + f, 1).await?;
    }
    let mut after = used_memory(redis).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = used_memory(redis).await?;
        if now <= after {
            break;
        }
        after = now;
    }
    let with = if data_bytes > 0 {
        format!(" with {data_bytes} bytes of data")
    } else {
        String::new()
    };
    println!(
        "post: 1 post{with} to {followers} offline followers: redis grew {} bytes, {:.0} bytes per follower (inbox and feed entry)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / followers as f64
    );
    Ok(())
}
