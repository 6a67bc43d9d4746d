//! The generator's HTTP/1.1 client, on hyper: one keep-alive connection per
//! `Conn`, one request at a time on it (a pool of `Conn`s gives
//! concurrency), reconnected when the server closes it. Every wait has a
//! timeout.

use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The API key sent with every request (`--api-key`), for nodes that
/// need one; set once at start.
static API_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sends `Authorization: Bearer <key>` on every request from now on.
pub fn set_api_key(key: String) {
    let _ = API_KEY.set(key);
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            sender: None,
        }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .context("connect timeout")??;
        s.set_nodelay(true)?;
        let (sender, conn) = handshake(TokioIo::new(s)).await?;
        // The connection runs until either side closes it.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request and returns (status, body). A kept-alive
    /// connection the server closed is reopened once.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let body = Bytes::copy_from_slice(body);
        let mut last = anyhow!("no attempt");
        for _ in 0..2 {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.addr)
                .header(hyper::header::CONTENT_TYPE, ctype);
            if let Some(k) = API_KEY.get() {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
            }
            let req = req.body(Full::new(body.clone()))?;
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes.to_vec()))
            })
            .await;
            match answer {
                Ok(Ok(r)) => {
                    self.sender = Some(sender);
                    return Ok(r);
                }
                // Closed under us (keep-alive ended): once more, anew.
                Ok(Err(e)) => last = anyhow!("{method} {path}: {e}"),
                Err(_) => {
                    return Err(anyhow!(
                        "{method} {path}: timed out after {REQUEST_TIMEOUT:?}"
                    ))
                }
            }
        }
        Err(last)
    }
}
