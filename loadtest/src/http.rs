//! A minimal keep-alive HTTP/1.1 client for posting events: one request at
//! a time per connection, a pool of connections for concurrency. Enough for
//! a load generator, without a large dependency.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The API key sent with every request (`--api-key`), for nodes that
/// need one; set once at start.
static API_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sends `Authorization: Bearer <key>` on every request from now on.
pub fn set_api_key(key: String) {
    let _ = API_KEY.set(key);
}

pub struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
        }
    }

    /// Sends one request and returns (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.addr))
                        .await
                        .context("connect timeout")??;
                s.set_nodelay(true)?;
                self.stream = Some(BufReader::new(s));
            }
            match tokio::time::timeout(
                Duration::from_secs(30),
                self.once(method, path, ctype, body),
            )
            .await
            {
                Ok(Ok(r)) => return Ok(r),
                // A kept-alive connection the server closed: retry once.
                Ok(Err(_)) if attempt == 0 => self.stream = None,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.stream = None;
                    bail!("request timed out");
                }
            }
        }
        Err(anyhow!("unreachable"))
    }

    async fn once(
        &mut self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let s = self
            .stream
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        let auth = API_KEY
            .get()
            .map(|k| format!("authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{auth}\r\n",
            self.addr,
            body.len()
        );
        s.get_mut().write_all(head.as_bytes()).await?;
        s.get_mut().write_all(body).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            line.clear();
            s.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        if close {
            self.stream = None;
        }
        Ok((status, buf))
    }
}
