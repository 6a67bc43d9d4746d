//! Who is asking: a user with a JWT (WebSocket connections, and a user's
//! own inbox and preferences over HTTP), or a backend with an API key of a
//! scope (`read`, `ingest`, `admin`).
//!
//! JWTs are verified with the `jsonwebtoken` crate: HS256 with a shared
//! secret, RS256 or ES256 with a PEM public key, or any of them with keys
//! from a JWKS file (picked by `kid`, reloaded when the file changes).
//! `exp` is required; `nbf` and `iat` are checked when present, with a
//! small leeway; `aud` and `iss` when configured; and a token may not live
//! longer than `max_lifetime`. `alg: none` and algorithms the configured
//! keys do not match are refused.

mod keys;
mod remote;

use herald_types::sync::{Locked, Shared};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use herald_types::UserId;

pub use keys::{ApiKeys, Scope};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a JWT in Authorization: Bearer or ?token=")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm {0} is not accepted here")]
    Algorithm(String),
    #[error("no key for this token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYet,
    #[error("token audience does not match")]
    Audience,
    #[error("token issuer does not match")]
    Issuer,
    #[error("token lifetime exceeds the limit of {0} s")]
    TooLong(u64),
    #[error("token subject is not a user id")]
    Subject,
    #[error("token auth is not configured on this node")]
    NotConfigured,
    #[error("user {0:?} is not a user id")]
    BadUser(String),
    #[error("auth configuration: {0}")]
    Config(String),
}

/// Where JWT keys come from, and what a token must say.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// A PEM public key (RSA: RS256; EC P-256: ES256).
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`), keys picked by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (an identity provider's `.well-known/jwks.json`): fetched
    /// at start, every 10 minutes, and when a token names an unknown key
    /// (at most once a minute).
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Longest allowed `exp - iat` (or `exp - now` without `iat`).
    pub max_lifetime: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl JwtConfig {
    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
            || self.public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: serde_json::Value,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
}

/// Keys of a JWKS: (kid, algorithm, key).
pub(crate) type JwkKeys = Vec<(Option<String>, Algorithm, DecodingKey)>;

/// A JWKS file and when it was read.
struct Jwks {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: std::time::Instant,
    keys: JwkKeys,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs.is_some())
            .field("pem", &self.pem.as_ref().map(|(a, _)| *a))
            .field("jwks", &self.cfg.jwks_file)
            .finish()
    }
}

/// Verifies user tokens.
pub struct Verifier {
    cfg: JwtConfig,
    hs: Option<DecodingKey>,
    pem: Option<(Algorithm, DecodingKey)>,
    jwks: Option<Mutex<Jwks>>,
    remote: Option<remote::Remote>,
}

/// How often a JWKS file's modification time is looked at.
const JWKS_CHECK: Duration = Duration::from_secs(1);

impl Verifier {
    pub fn new(cfg: JwtConfig) -> Result<Verifier, AuthError> {
        let hs = cfg
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let pem = match &cfg.public_key_file {
            None => None,
            Some(p) => {
                let b = std::fs::read(p)
                    .map_err(|e| AuthError::Config(format!("{}: {e}", p.display())))?;
                if let Ok(k) = DecodingKey::from_rsa_pem(&b) {
                    Some((Algorithm::RS256, k))
                } else if let Ok(k) = DecodingKey::from_ec_pem(&b) {
                    Some((Algorithm::ES256, k))
                } else {
                    return Err(AuthError::Config(format!(
                        "{}: not an RSA or EC public key in PEM",
                        p.display()
                    )));
                }
            }
        };
        let jwks = match &cfg.jwks_file {
            None => None,
            Some(p) => Some(Mutex::new(read_jwks(p)?)),
        };
        let remote = match &cfg.jwks_url {
            None => None,
            Some(u) => Some(remote::Remote::new(u)?),
        };
        Ok(Verifier {
            cfg,
            hs,
            pem,
            jwks,
            remote,
        })
    }

    /// Fetches the JWKS URL's keys now (at start: call before serving);
    /// how many it holds. Without a URL, nothing.
    pub async fn refresh(&self) -> Result<usize, AuthError> {
        match &self.remote {
            Some(r) => r.fetch().await,
            None => Ok(0),
        }
    }

    /// Keeps the JWKS URL's keys fresh: fetched again every 10 minutes
    /// (a failure keeps the keys in use, logged).
    pub fn keep_fresh(self: &std::sync::Arc<Self>) {
        if self.remote.is_none() {
            return;
        }
        let v = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(remote::REFRESH_EVERY).await;
                let Some(v) = v.upgrade() else { return };
                match v.refresh().await {
                    Ok(n) => tracing::debug!(keys = n, "JWKS fetched"),
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS not fetched; keeping the keys in use")
                    }
                }
            }
        });
    }

    /// [`Verifier::verify`], and when the token names a key the JWKS URL's
    /// set does not hold: the set fetched again (at most once a minute)
    /// and the token tried once more (a key the provider just rotated in).
    pub async fn verify_fresh(&self, token: &str, now_s: u64) -> Result<UserId, AuthError> {
        match self.verify(token, now_s) {
            Err(AuthError::UnknownKey(kid)) => match &self.remote {
                Some(r) if r.may_refetch() => {
                    match r.fetch().await {
                        Ok(n) => tracing::info!(keys = n, ?kid, "JWKS fetched for an unknown key"),
                        Err(e) => tracing::warn!(error = %e, "JWKS not fetched"),
                    }
                    self.verify(token, now_s)
                }
                _ => Err(AuthError::UnknownKey(kid)),
            },
            r => r,
        }
    }

    /// The user a token names, if it is valid now (`now_s`: Unix seconds).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<UserId, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let alg = header.alg;
        let key = self.key_for(alg, header.kid.as_deref())?;
        let mut v = Validation::new(alg);
        v.leeway = self.cfg.leeway.as_secs();
        // Time claims are checked below against `now_s` (one clock for
        // every check, and testable).
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims = ["exp".to_string()].into_iter().collect();
        match &self.cfg.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.cfg.issuer {
            v.set_issuer(&[i]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYet,
                K::InvalidAudience => AuthError::Audience,
                K::InvalidIssuer => AuthError::Issuer,
                K::InvalidSignature => AuthError::Signature,
                K::InvalidAlgorithm => AuthError::Algorithm(format!("{alg:?}")),
                K::MissingRequiredClaim(_) => AuthError::Expired,
                _ => AuthError::Malformed,
            }
        })?;
        let c = data.claims;
        let leeway = self.cfg.leeway.as_secs();
        if c.exp + leeway <= now_s {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now_s + leeway) {
            return Err(AuthError::NotYet);
        }
        if let Some(iat) = c.iat {
            if iat > now_s + leeway {
                return Err(AuthError::NotYet);
            }
        }
        let from = c.iat.unwrap_or(now_s);
        let max = self.cfg.max_lifetime.as_secs();
        if c.exp.saturating_sub(from) > max + leeway {
            return Err(AuthError::TooLong(max));
        }
        match c.sub {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => herald_types::ids::parse_user(&s),
            _ => None,
        }
        .ok_or(AuthError::Subject)
    }

    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        match alg {
            Algorithm::HS256 => {
                if let Some(k) = &self.hs {
                    return Ok(k.clone());
                }
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                if let Some((a, k)) = &self.pem {
                    if *a == alg {
                        return Ok(k.clone());
                    }
                }
            }
            other => return Err(AuthError::Algorithm(format!("{other:?}"))),
        }
        if let Some(r) = &self.remote {
            let keys = r.keys.reading();
            if let Some((_, _, key)) = keys
                .iter()
                .find(|(k, a, _)| *a == alg && (kid.is_none() || k.as_deref() == kid))
            {
                return Ok(key.clone());
            }
            if self.jwks.is_none() {
                return Err(AuthError::UnknownKey(kid.map(String::from)));
            }
        }
        let Some(jwks) = &self.jwks else {
            return Err(AuthError::Algorithm(format!("{alg:?}")));
        };
        let mut j = jwks.locked();
        if j.checked.elapsed() >= JWKS_CHECK {
            j.checked = std::time::Instant::now();
            let modified = std::fs::metadata(&j.path).and_then(|m| m.modified()).ok();
            if modified != j.modified {
                match read_jwks(&j.path) {
                    Ok(fresh) => {
                        tracing::info!(path = %j.path.display(), keys = fresh.keys.len(), "JWKS reloaded");
                        *j = fresh;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS not reloaded; keeping the keys in use")
                    }
                }
            }
        }
        j.keys
            .iter()
            .find(|(k, a, _)| *a == alg && (kid.is_none() || k.as_deref() == kid))
            .map(|(_, _, key)| key.clone())
            .ok_or_else(|| AuthError::UnknownKey(kid.map(String::from)))
    }
}

/// The keys of a JWKS document (`{"keys": [...]}`); keys of other types
/// are skipped.
pub(crate) fn parse_jwks(text: &str) -> Result<JwkKeys, String> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for k in &set.keys {
        let alg = match &k.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => continue,
        };
        let key = DecodingKey::from_jwk(k).map_err(|e| e.to_string())?;
        keys.push((k.common.key_id.clone(), alg, key));
    }
    Ok(keys)
}

fn read_jwks(path: &std::path::Path) -> Result<Jwks, AuthError> {
    let bad = |e: String| AuthError::Config(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let keys = parse_jwks(&text).map_err(bad)?;
    Ok(Jwks {
        path: path.to_path_buf(),
        modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        checked: std::time::Instant::now(),
        keys,
    })
}

#[derive(Serialize)]
struct MintClaims {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
}

/// An HS256 token for `user`, valid `ttl` from `now_s` (`herald token`).
pub fn mint_hs256(
    secret: &str,
    user: UserId,
    now_s: u64,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> Result<String, AuthError> {
    let claims = MintClaims {
        sub: user.to_string(),
        iat: now_s,
        exp: now_s + ttl.as_secs(),
        aud: audience.map(String::from),
        iss: issuer.map(String::from),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Config(e.to_string()))
}

/// Why a secret may not be used in production: a placeholder, or too
/// short to resist guessing.
/// The credentials of an `Authorization: Bearer <credentials>` value (the
/// scheme is case-insensitive, as RFC 7235 says); none for another scheme
/// or empty credentials.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn weak_secret(value: &str, min_len: usize) -> Option<String> {
    let v = value.to_ascii_lowercase();
    if ["change-me", "changeme", "placeholder", "example"]
        .iter()
        .any(|p| v.contains(p))
    {
        return Some("is a placeholder".into());
    }
    if value.len() < min_len {
        return Some(format!("is shorter than {min_len} characters"));
    }
    None
}

#[cfg(test)]
mod tests;
