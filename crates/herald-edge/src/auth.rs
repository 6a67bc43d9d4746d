//! WebSocket authentication: HS256 JWTs, and a development mode.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a JWT in Authorization: Bearer or ?token=")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm (HS256 only)")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token subject is not a user id")]
    Subject,
    #[error("token auth is not configured on this node")]
    NotConfigured,
    #[error("user {0:?} is not a user id")]
    BadUser(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: serde_json::Value,
    exp: Option<u64>,
}

/// Verifies an HS256 JWT with `secret` and returns its subject as a user id.
/// `exp` is required.
pub fn verify_jwt(token: &str, secret: &[u8], now_s: u64) -> Result<u64, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Malformed)?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::Signature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(c.as_bytes());
    mac.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Malformed)?;
    match claims.exp {
        Some(exp) if exp > now_s => {}
        _ => return Err(AuthError::Expired),
    }
    match claims.sub {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or(AuthError::Subject)
}

/// Makes an HS256 JWT (for tests, tools and the load generator).
pub fn make_jwt(sub: u64, exp_s: u64, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let c = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","exp":{exp_s}}}"#));
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(c.as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{c}.{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = make_jwt(7, 2000, b"k");
        assert_eq!(verify_jwt(&t, b"k", 1000), Ok(7));
        assert_eq!(verify_jwt(&t, b"other", 1000), Err(AuthError::Signature));
        assert_eq!(verify_jwt(&t, b"k", 3000), Err(AuthError::Expired));
        assert_eq!(verify_jwt("a.b", b"k", 0), Err(AuthError::Malformed));
        let mut tampered = t.clone();
        tampered.insert(40, 'x');
        assert!(verify_jwt(&tampered, b"k", 1000).is_err());
    }
}
