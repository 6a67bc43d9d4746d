//! What a run sends: its tag, its spec, and its events, each with the
//! clients it should reach, drawn from a seeded RNG over the follow graph.
//! Nothing here does I/O; `run.rs` sends what this plans.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::graph::{Graph, Rng};

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
    /// Every event carries `data` of this many bytes (0: none).
    pub data_bytes: usize,
    /// This share of likes goes as this declared kind (the node declares
    /// it with `notify = ["recipient"]`).
    pub custom: Option<(String, f64)>,
    /// This share of comments goes as this declared kind, a reply in one
    /// of [`THREADS`] threads whose subscribers hear of it (the node
    /// declares it with `notify = ["recipient", "subscribers"]`).
    pub thread: Option<(String, f64)>,
}

/// Threads of the `--thread-kind` workload, and subscribers of each.
pub const THREADS: u64 = 10;
const THREAD_SUBSCRIBERS: u64 = 20;

/// Each thread's object and subscribers (the same for the same clients).
pub fn threads(clients: u64) -> Vec<(String, Vec<u64>)> {
    let mut rng = Rng::new(0x7487_ead5 ^ clients);
    (0..THREADS)
        .map(|t| {
            let mut subs: Vec<u64> = (0..THREAD_SUBSCRIBERS)
                .map(|_| rng.below(clients.max(1)) + 1)
                .collect();
            subs.sort_unstable();
            subs.dedup();
            (format!("post:thread{t}"), subs)
        })
        .collect()
}

/// An event's `data` of `bytes` bytes once compact (at least its link):
/// a deep link naming the event, padded to size.
pub fn data_payload(bytes: usize, seq: u64) -> Value {
    let url = format!("app://lg/{seq}");
    // {"url":"...","pad":"..."}
    let fixed = r#"{"url":"","pad":""}"#.len() + url.len();
    json!({"url": url, "pad": "x".repeat(bytes.saturating_sub(fixed))})
}

/// One event to send, and the clients it should reach.
pub struct Planned {
    pub seq: u64,
    pub event: Value,
    pub recipients: Vec<u64>,
    /// A like, comment or mention: it may arrive folded into an aggregate.
    pub foldable: bool,
}

/// The traffic of a run: events at the spec's rate, celebrity posts at
/// theirs, and which clients go offline, tick by tick.
pub struct Workload {
    rng: Rng,
    spec: RunSpec,
    graph: Arc<Graph>,
    threads: Vec<(String, Vec<u64>)>,
    celebs: Vec<u64>,
    seq: u64,
    celeb_credit: f64,
    churn_credit: f64,
}

impl Workload {
    pub fn new(spec: &RunSpec, graph: Arc<Graph>) -> Workload {
        Workload {
            rng: Rng::new(graph.spec.seed ^ 0xABCD),
            threads: if spec.thread.is_some() {
                threads(spec.clients)
            } else {
                Vec::new()
            },
            spec: spec.clone(),
            celebs: graph.celebrities(),
            graph,
            seq: 0,
            celeb_credit: 0.0,
            churn_credit: 0.0,
        }
    }

    /// Whether the run sends anything at all while its duration lasts.
    pub fn sends(&self) -> bool {
        self.spec.rate > 0 || self.spec.celebrity_posts > 0.0 || self.spec.churn > 0.0
    }

    /// The events due `elapsed` into the run at the spec's rate, then the
    /// celebrity posts owed for the last `dt` seconds.
    pub fn due(&mut self, elapsed: Duration, dt: f64) -> Vec<Planned> {
        let due = (elapsed.as_secs_f64() * self.spec.rate as f64) as u64;
        let mut out = Vec::new();
        while self.seq < due {
            self.seq += 1;
            let event = make_event(&mut self.rng, &self.spec, self.seq);
            let foldable = matches!(event["kind"].as_str(), Some("like" | "comment" | "mention"));
            out.push(self.plan(self.seq, event, foldable));
        }
        self.celeb_credit += self.spec.celebrity_posts * dt;
        while self.celeb_credit >= 1.0 && !self.celebs.is_empty() {
            self.celeb_credit -= 1.0;
            self.seq += 1;
            let actor = self.celebs[self.rng.below(self.celebs.len() as u64) as usize];
            let event = self.post(actor, self.seq, &format!("post:c{}", self.seq));
            out.push(self.plan(self.seq, event, false));
        }
        out
    }

    /// The clients (indexes into 0..clients) to send offline for the last
    /// `dt` seconds of churn.
    pub fn churn(&mut self, dt: f64) -> Vec<usize> {
        self.churn_credit += self.spec.churn * self.spec.clients as f64 * dt;
        let mut out = Vec::new();
        while self.churn_credit >= 1.0 {
            self.churn_credit -= 1.0;
            out.push(self.rng.below(self.spec.clients.max(1)) as usize);
        }
        out
    }

    /// The celebrity scenario's one post, by the first celebrity (none
    /// without celebrities).
    pub fn celebrity_post(&self) -> Option<Planned> {
        let actor = *self.celebs.first()?;
        let seq = crate::stats::CELEBRITY_SEQ;
        let event = self.post(actor, seq, "post:celebrity");
        Some(self.plan(seq, event, false))
    }

    fn post(&self, actor: u64, seq: u64, object: &str) -> Value {
        let mut ev = json!({"kind": "post", "actor": actor, "object": object, "text": format!("lg:{}:{seq}", run_tag())});
        if self.spec.idempotent {
            ev["id"] = json!(format!("lg-{}-{seq}", run_tag()));
        }
        if self.spec.data_bytes > 0 {
            ev["data"] = data_payload(self.spec.data_bytes, seq);
        }
        ev
    }

    fn plan(&self, seq: u64, event: Value, foldable: bool) -> Planned {
        let mut recipients = recipients(&self.graph, &event, self.spec.clients);
        let kind = event["kind"].as_str().unwrap_or("");
        let actor = event["actor"].as_u64().unwrap_or(0);
        let mut tell = |u: u64| {
            if u != actor && u <= self.spec.clients && !recipients.contains(&u) {
                recipients.push(u);
            }
        };
        if self.spec.custom.as_ref().is_some_and(|(k, _)| k == kind) {
            tell(event["recipient"].as_u64().unwrap_or(0));
        }
        if self.spec.thread.as_ref().is_some_and(|(k, _)| k == kind) {
            tell(event["recipient"].as_u64().unwrap_or(0));
            let object = event["object"].as_str().unwrap_or("");
            for (_, subs) in self.threads.iter().filter(|(o, _)| o == object) {
                subs.iter().for_each(|&u| tell(u));
            }
        }
        Planned {
            seq,
            event,
            recipients,
            foldable,
        }
    }
}

/// The reconnect storm's backlog: `per_user` likes for every client, from
/// `first_seq` on (each reaches its one recipient).
pub fn storm(clients: u64, per_user: u64, first_seq: u64) -> Vec<Planned> {
    let mut seq = first_seq;
    let mut out = Vec::new();
    for round in 0..per_user {
        for user in 1..=clients {
            seq += 1;
            let actor = user % clients + 1;
            out.push(Planned {
                seq,
                event: json!({"kind": "like", "actor": actor, "recipient": user, "object": format!("post:s{round}"), "text": format!("lg:{}:{seq}", run_tag())}),
                recipients: vec![user],
                foldable: false,
            });
        }
    }
    out
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
    if spec.data_bytes > 0 {
        ev["data"] = data_payload(spec.data_bytes, seq);
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
            let like = match &spec.custom {
                Some((k, share)) if rng.f64() < *share => k.as_str(),
                _ => "like",
            };
            json!({"kind": like, "actor": actor, "recipient": other(rng), "object": object, "text": text})
        }
        1 => match &spec.thread {
            Some((k, share)) if rng.f64() < *share => {
                let thread = format!("post:thread{}", rng.below(THREADS));
                json!({"kind": k, "actor": actor, "recipient": other(rng), "object": thread, "text": text})
            }
            _ => {
                json!({"kind": "comment", "actor": actor, "recipient": other(rng), "mentions": [other(rng)], "object": object, "text": text})
            }
        },
        2 => {
            json!({"kind": "mention", "actor": actor, "mentions": [other(rng), other(rng)], "object": object, "text": text})
        }
        _ => json!({"kind": "post", "actor": actor, "object": object, "text": text}),
    }
}
