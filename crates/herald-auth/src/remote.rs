//! Keys from a JWKS URL (`auth.jwks_url`): fetched at start, again every
//! [`REFRESH_EVERY`], and when a token names a key the set does not hold
//! (at most once per [`MIN_REFETCH`], so tokens with made-up `kid`s cannot
//! make Herald hammer the identity provider).

use herald_types::sync::{Locked, Shared};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::{AuthError, JwkKeys};

/// A fetched set is replaced this often even when no token asks.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// An unknown `kid` fetches the set again at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// A fetch not done in this long has failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub(crate) struct Remote {
    pub(crate) url: hyper::Uri,
    pub(crate) keys: RwLock<JwkKeys>,
    /// When an unknown key last fetched the set (or tried).
    last: Mutex<Option<Instant>>,
    client: HttpsClient,
}

impl Remote {
    pub(crate) fn new(url: &str) -> Result<Remote, AuthError> {
        let bad = |why: &str| AuthError::Config(format!("auth.jwks_url {url:?}: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("must be http(s)://host/path"));
        }
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(FETCH_TIMEOUT));
        conn.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(conn);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Remote {
            url: uri,
            keys: RwLock::new(Vec::new()),
            last: Mutex::new(None),
            client,
        })
    }

    /// Whether an unknown key may fetch the set now (and marks it so).
    pub(crate) fn may_refetch(&self) -> bool {
        let mut last = self.last.locked();
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Fetches the set and puts it in place; how many keys it holds.
    pub(crate) async fn fetch(&self) -> Result<usize, AuthError> {
        let bad = |why: String| AuthError::Config(format!("JWKS from {}: {why}", self.url));
        let call = async {
            let resp = self
                .client
                .get(self.url.clone())
                .await
                .map_err(|e| bad(e.to_string()))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| bad(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(bad(format!("answered {status}")));
            }
            let text = String::from_utf8(body.to_vec()).map_err(|e| bad(e.to_string()))?;
            crate::parse_jwks(&text).map_err(&bad)
        };
        let keys = tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| bad(format!("no answer within {FETCH_TIMEOUT:?}")))??;
        let n = keys.len();
        *self.keys.writing() = keys;
        Ok(n)
    }
}
