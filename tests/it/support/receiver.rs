//! A real HTTP receiver for webhook tests: listens on a loopback port,
//! records every request (headers and body), and answers as the test says
//! (2xx, an error status, slowly, or not at all: the port closed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// Waits this long, then answers 200.
    Slow(Duration),
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// What it was answered.
    pub answered: u16,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// (user, notification id) of each item.
    pub fn items(&self) -> Vec<(u64, String)> {
        self.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                (
                    i["user"].as_u64().expect("user"),
                    i["notification"]["id"].as_str().expect("id").to_string(),
                )
            })
            .collect()
    }

    /// Whether the reference Standard Webhooks package verifies it with
    /// `secret` (and `body` in place of the one received, when given).
    pub fn verifies(&self, secret: &str, body: Option<&[u8]>) -> bool {
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", self.id.parse().expect("id"));
        h.insert("webhook-timestamp", self.timestamp.parse().expect("ts"));
        h.insert("webhook-signature", self.signature.parse().expect("sig"));
        standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .verify(body.unwrap_or(&self.body), &h)
            .is_ok()
    }
}

struct State {
    answer: Answer,
    requests: Vec<Request>,
    /// Requests that arrived, answered or not yet.
    arrived: usize,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a free loopback port, answering `answer`.
    pub async fn start(answer: Answer) -> Receiver {
        let mut r = Receiver {
            port: super::free_port(),
            state: Arc::new(Mutex::new(State {
                answer,
                requests: Vec::new(),
                arrived: 0,
            })),
            task: None,
        };
        r.up().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/herald", self.port)
    }

    pub fn answer(&self, a: Answer) {
        self.state.lock().unwrap().answer = a;
    }

    /// Stops listening: connections to the port are refused.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        self.down();
        // The aborted server's socket may take a moment to close.
        let port = self.port;
        let listener = super::eventually("the receiver's port free again", || async move {
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        let state = self.state.clone();
        let app = axum::Router::new()
            .route("/hooks/herald", axum::routing::post(take))
            .with_state(state);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests arrived so far, answered or still open.
    pub fn arrived(&self) -> usize {
        self.state.lock().unwrap().arrived
    }

    /// Every request answered 2xx so far.
    pub fn delivered(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn take(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<State>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let answer = {
        let mut s = state.lock().unwrap();
        s.arrived += 1;
        s.answer
    };
    let status = match answer {
        Answer::Ok => 200,
        Answer::Status(s) => s,
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    state.lock().unwrap().requests.push(Request {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        content_type: h("content-type"),
        body: body.to_vec(),
        answered: status,
    });
    axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
}
