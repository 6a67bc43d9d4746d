//! Operator commands: `herald dead-letters list|replay` and `herald
//! cluster status` (over a running node's HTTP API), `herald
//! check-config`, `herald token`.

use std::time::Duration;

use anyhow::{bail, Context};

/// Where and how to reach the node.
pub struct Target {
    /// `host:port` of the node.
    pub addr: String,
    /// An admin API key, when the node needs one.
    pub key: Option<String>,
}

impl Target {
    /// `url` (`http://host:port`) or the config's listen address; `key` or
    /// the config's first admin key.
    pub fn new(
        url: Option<&str>,
        key: Option<&str>,
        cfg: &crate::Config,
    ) -> anyhow::Result<Target> {
        let addr = match url {
            Some(u) => u
                .strip_prefix("http://")
                .with_context(|| format!("{u:?}: only http:// URLs are supported"))?
                .trim_end_matches('/')
                .to_string(),
            None => cfg.server.listen.clone(),
        };
        let key = key
            .map(String::from)
            .or_else(|| cfg.gateway.admin_keys.first().cloned());
        Ok(Target { addr, key })
    }

    /// One request (hyper, on a runtime of its own); returns the status
    /// and the JSON body (or the body as a string when it is not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the client's runtime")?;
        rt.block_on(self.call_async(method, path, body))
    }

    async fn call_async(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        use http_body_util::{BodyExt, Full};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body)))
            .context("request not built")?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let call = async {
            let resp = client
                .request(req)
                .await
                .with_context(|| format!("cannot reach a node at {}", self.addr))?;
            let status = resp.status().as_u16();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("the node's answer was cut short: {e}"))?
                .to_bytes();
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            });
            Ok::<_, anyhow::Error>((status, v))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .with_context(|| format!("no answer from {} within {CALL_TIMEOUT:?}", self.addr))?
    }
}

/// Longest wait for a node's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// `herald dead-letters list`: prints one line per dead letter.
pub fn dead_letters_list(t: &Target, limit: usize) -> anyhow::Result<()> {
    let (s, v) = t.call(
        "GET",
        &format!("/v1/admin/dead-letters?limit={limit}"),
        None,
    )?;
    if s != 200 {
        bail!("the node answered {s}: {v}");
    }
    let list = v["dead_letters"].as_array().cloned().unwrap_or_default();
    for d in &list {
        let what = if d["webhook"].is_object() {
            &d["webhook"]
        } else {
            &d["event"]
        };
        println!(
            "{}\tpartition {}\toffset {}\t{}\t{}",
            d["id"].as_str().unwrap_or("?"),
            d["partition"],
            d["offset"],
            d["reason"].as_str().unwrap_or(""),
            what
        );
    }
    println!("{} shown of {}", list.len(), v["total"]);
    Ok(())
}

/// Whether `id` has the shape of a dead-letter id: `dl-<partition>-<offset>`
/// (with `@<node>` in a cluster without replication), or a webhook item's
/// `dl-wh-<user>/<notification id>`.
fn dead_letter_id(id: &str) -> bool {
    if let Some(item) = id.strip_prefix("dl-wh-") {
        return item
            .split_once('/')
            .is_some_and(|(u, n)| u.parse::<u64>().is_ok() && !n.is_empty());
    }
    id.strip_prefix("dl-")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(p, o)| {
            let o = o
                .split_once('@')
                .map_or(o, |(o, node)| if node.is_empty() { "" } else { o });
            p.parse::<u32>().is_ok() && o.parse::<u64>().is_ok()
        })
}

#[cfg(test)]
#[test]
fn dead_letter_ids_are_recognised() {
    for ok in ["dl-3-17", "dl-3-17@node-2", "dl-wh-42/n-e-1-5@node-1"] {
        assert!(dead_letter_id(ok), "{ok}");
    }
    for bad in ["dl-x-1", "dl-3-", "dl-3-1@", "dl-wh-x/n", "dl-wh-4/", "17"] {
        assert!(!dead_letter_id(bad), "{bad}");
    }
}

/// `herald dead-letters replay`: appends them to the log again.
pub fn dead_letters_replay(t: &Target, ids: &[String], all: bool) -> anyhow::Result<()> {
    let body = match (all, ids.is_empty()) {
        (true, true) => serde_json::json!({"all": true}),
        (false, false) => serde_json::json!({ "ids": ids }),
        _ => bail!("give either --all or one or more ids"),
    };
    let malformed: Vec<&String> = ids.iter().filter(|i| !dead_letter_id(i)).collect();
    if !malformed.is_empty() {
        bail!(
            "not dead-letter ids (dl-<partition>-<offset> or dl-wh-<user>/<notification id>, as `herald dead-letters list` shows them): {}",
            malformed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let (s, v) = t.call("POST", "/v1/admin/dead-letters/replay", Some(&body))?;
    if s != 200 {
        bail!("the node answered {s}: {v}");
    }
    let replayed = v["replayed"].as_u64().unwrap_or(0);
    println!("replayed {replayed}");
    if !all && (replayed as usize) < ids.len() {
        bail!(
            "{} of the {} ids given were not found (already replayed, or never dead letters; see `herald dead-letters list`)",
            ids.len() - replayed as usize,
            ids.len()
        );
    }
    Ok(())
}

/// `herald check-config`: the config loaded and validated (done by the
/// caller), and the JWT keys it names readable.
pub fn check_config(cfg: &crate::Config) -> anyhow::Result<()> {
    let jwt = cfg.jwt_config();
    if jwt.enabled() {
        herald_auth::Verifier::new(jwt).context("JWT keys")?;
    }
    println!(
        "config ok: role {}, cluster {}, {} partitions, {} API keys, dev_mode {}",
        cfg.server.role,
        cfg.server.cluster,
        cfg.log.partitions,
        cfg.gateway.api_keys.len() + cfg.gateway.read_keys.len() + cfg.gateway.admin_keys.len(),
        cfg.websocket.dev_mode
    );
    if let Some(w) = crate::open_warning(cfg) {
        println!("warning: {w}");
    }
    Ok(())
}

/// `herald token --user ID --ttl 1h`: an HS256 token signed with the
/// configured secret.
pub fn token(cfg: &crate::Config, user: u64, ttl: &str) -> anyhow::Result<()> {
    let jwt = cfg.jwt_config();
    let Some(secret) = &jwt.secret else {
        bail!("herald token needs auth.jwt_secret (HS256); RS256/ES256 tokens come from the holder of the private key");
    };
    let ttl = parse_ttl(ttl)?;
    if ttl > jwt.max_lifetime {
        bail!(
            "--ttl {} s is longer than auth.max_lifetime_s ({} s): the node would refuse the token",
            ttl.as_secs(),
            jwt.max_lifetime.as_secs()
        );
    }
    let now = herald_types::now_ms() / 1000;
    let t = herald_auth::mint_hs256(
        secret,
        user,
        now,
        ttl,
        jwt.audience.as_deref(),
        jwt.issuer.as_deref(),
    )?;
    println!("{t}");
    Ok(())
}

/// `90`, `90s`, `30m`, `1h`, `7d`.
fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .with_context(|| format!("--ttl {s:?}: a number with s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {s:?}: the unit must be s, m, h or d"),
    };
    if n == 0 {
        bail!("--ttl must be positive");
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// `herald cluster status`: `GET /v1/admin/cluster` as two tables.
pub fn cluster_status(t: &Target) -> anyhow::Result<()> {
    let (status, v) = t.call("GET", "/v1/admin/cluster", None)?;
    if status != 200 {
        bail!("the node answered {status}: {v}");
    }
    print!("{}", cluster_tables(&v));
    Ok(())
}

/// `herald cluster add NAME ADDR`: `POST /v1/admin/cluster/nodes`.
pub fn cluster_add(t: &Target, name: &str, addr: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({"name": name, "addr": addr});
    let (status, v) = t.call("POST", "/v1/admin/cluster/nodes", Some(&body))?;
    node_set_answer(status, &v, &format!("{name} added"))
}

/// `herald cluster remove NAME`: `DELETE /v1/admin/cluster/nodes/NAME`.
pub fn cluster_remove(t: &Target, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/admin/cluster/nodes/{}", url_segment(name));
    let (status, v) = t.call("DELETE", &path, None)?;
    node_set_answer(status, &v, &format!("{name} removed"))
}

/// A path segment with everything but unreserved characters escaped.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn node_set_answer(status: u16, v: &serde_json::Value, done: &str) -> anyhow::Result<()> {
    if status != 200 {
        bail!(
            "the node answered {status}: {}",
            v["error"]["message"]
                .as_str()
                .map_or_else(|| v.to_string(), String::from)
        );
    }
    let nodes: Vec<String> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{}={}",
                n["id"].as_str().unwrap_or("?"),
                n["addr"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let what = match v["changed"].as_bool() {
        Some(false) => "unchanged (already so)".to_string(),
        _ => done.to_string(),
    };
    println!(
        "{what}; node set epoch {}: {}",
        v["epoch"],
        nodes.join(", ")
    );
    println!("replicas move in the background: watch `herald cluster status`");
    Ok(())
}

/// The text `herald cluster status` prints for a cluster view.
pub fn cluster_tables(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let list = |x: &serde_json::Value| {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let mut out = String::new();
    let _ = writeln!(out, "seen from {}", v["node"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "{:<16} {:<22} {:<8} ALIVE", "NODE", "ADDRESS", "ROLE");
    for n in v["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<8} {}",
            n["id"].as_str().unwrap_or("?"),
            n["addr"].as_str().unwrap_or(""),
            n["role"].as_str().unwrap_or("?"),
            if n["alive"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<10} {:<16} {:<6} {:<30} {:<30} COMMITTED",
        "PARTITION", "LEADER", "TERM", "REPLICAS", "IN SYNC"
    );
    for p in v["partitions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:<6} {:<30} {:<30} {}",
            p["partition"],
            p["leader"].as_str().unwrap_or("(none)"),
            p["term"],
            list(&p["replicas"]),
            list(&p["in_sync"]),
            p["committed"]
        );
    }
    out
}
