//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the secret's bytes.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::WebhookError;

/// The secret's prefix the specification defines.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest and longest secret (decoded bytes) the specification allows.
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 64;

/// Signs requests with one secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A secret as the specification writes it: `whsec_` + base64 of 24 to
    /// 64 random bytes.
    pub fn new(secret: &str) -> Result<Signer, WebhookError> {
        let bad = |why: &str| WebhookError::Config(format!("webhook.secret: {why}"));
        let b64 = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| bad("must start with whsec_ (then base64 of 24 to 64 random bytes)"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("what follows whsec_ is not base64"))?;
        if !(MIN_SECRET..=MAX_SECRET).contains(&key.len()) {
            return Err(bad(&format!(
                "{} bytes once decoded; must be {MIN_SECRET} to {MAX_SECRET}",
                key.len()
            )));
        }
        Ok(Signer { key })
    }

    /// The `webhook-signature` header's value for one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // A key of any length is accepted by HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let sig = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(sig)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signatures_verify_with_the_reference_package() {
        let s = Signer::new(SECRET).unwrap();
        let body = br#"{"type":"notifications","items":[{"user":2,"notification":{"id":"n-1"}}]}"#;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = s.sign("msg_1", ts, body);
        let reference = standardwebhooks::Webhook::new(SECRET).unwrap();
        assert_eq!(reference.sign("msg_1", ts, body).unwrap(), sig);
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        assert!(reference.verify(body, &h).is_ok());
        let mut tampered = body.to_vec();
        tampered[30] ^= 1;
        assert!(reference.verify(&tampered, &h).is_err());
    }

    #[test]
    fn bad_secrets_are_named() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_%%%",
            "whsec_c2hvcnQ=",
        ] {
            let e = Signer::new(bad).unwrap_err().to_string();
            assert!(e.contains("webhook.secret"), "{e}");
        }
    }
}
