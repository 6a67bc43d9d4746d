//! The JWT matrix: every algorithm, wrong keys, `alg: none`, time claims,
//! audience and issuer, lifetime, JWKS rotation. Test keys were generated
//! with openssl for these tests only (`testkeys/`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_800_000_000;
const RSA_KEY: &str = include_str!("testkeys/rsa.key");
const RSA2_KEY: &str = include_str!("testkeys/rsa2.key");
const EC_KEY: &str = include_str!("testkeys/ec.key");
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

fn keydir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/testkeys")
}

fn cfg() -> JwtConfig {
    JwtConfig {
        secret: Some(SECRET.into()),
        public_key_file: None,
        jwks_file: None,
        jwks_url: None,
        audience: None,
        issuer: None,
        max_lifetime: Duration::from_secs(86_400),
        leeway: Duration::from_secs(30),
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: serde_json::Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 if kid == Some("k2") => {
            EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).expect("rsa2")
        }
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("rsa"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_KEY.as_bytes()).expect("ec"),
        _ => EncodingKey::from_secret(b"x"),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, &claims, &key).expect("sign")
}

fn ok(sub: u64) -> serde_json::Value {
    json!({"sub": sub.to_string(), "iat": NOW - 10, "exp": NOW + 3600})
}

#[test]
fn hs256_rs256_es256_each_with_their_key() {
    let hs = Verifier::new(cfg()).expect("hs");
    assert_eq!(hs.verify(&sign(Algorithm::HS256, None, ok(7)), NOW), Ok(7));
    // A numeric subject works too; a non-canonical one does not.
    let t = sign(Algorithm::HS256, None, json!({"sub": 8, "exp": NOW + 60}));
    assert_eq!(hs.verify(&t, NOW), Ok(8));
    let t = sign(
        Algorithm::HS256,
        None,
        json!({"sub": "007", "exp": NOW + 60}),
    );
    assert_eq!(hs.verify(&t, NOW), Err(AuthError::Subject));

    let mut c = cfg();
    c.secret = None;
    c.public_key_file = Some(keydir().join("rsa.pub"));
    let rs = Verifier::new(c.clone()).expect("rs");
    assert_eq!(rs.verify(&sign(Algorithm::RS256, None, ok(9)), NOW), Ok(9));
    // An HS256 token against an RSA-only node: refused (no key for HS256,
    // so the RSA public key can never be used as an HMAC secret).
    assert!(matches!(
        rs.verify(&sign(Algorithm::HS256, None, ok(9)), NOW),
        Err(AuthError::Algorithm(_))
    ));
    // Signed by another RSA key.
    assert_eq!(
        rs.verify(&sign(Algorithm::RS256, Some("k2"), ok(9)), NOW),
        Err(AuthError::Signature)
    );

    c.public_key_file = Some(keydir().join("ec.pub"));
    let es = Verifier::new(c).expect("es");
    assert_eq!(
        es.verify(&sign(Algorithm::ES256, None, ok(10)), NOW),
        Ok(10)
    );
}

#[test]
fn wrong_secret_and_alg_none_are_refused() {
    let v = Verifier::new(cfg()).expect("hs");
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &ok(1),
        &EncodingKey::from_secret(b"another-secret-another-secret-0000"),
    )
    .expect("sign");
    assert_eq!(v.verify(&other, NOW), Err(AuthError::Signature));
    // alg none, hand-made: header {"alg":"none"}, empty signature.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&ok(1).to_string())
    );
    assert!(v.verify(&none, NOW).is_err());
    assert_eq!(v.verify("not.a.token", NOW), Err(AuthError::Malformed));
}

#[test]
fn time_claims_audience_issuer_and_lifetime() {
    let v = Verifier::new(cfg()).expect("hs");
    let t = |c| sign(Algorithm::HS256, None, c);
    // Expired (past the leeway), and within it.
    assert_eq!(
        v.verify(&t(json!({"sub": "1", "exp": NOW - 100})), NOW),
        Err(AuthError::Expired)
    );
    assert_eq!(
        v.verify(&t(json!({"sub": "1", "exp": NOW - 10})), NOW),
        Ok(1)
    );
    // No exp at all.
    assert!(v.verify(&t(json!({"sub": "1"})), NOW).is_err());
    // nbf in the future; iat in the future.
    assert_eq!(
        v.verify(
            &t(json!({"sub": "1", "exp": NOW + 60, "nbf": NOW + 600})),
            NOW
        ),
        Err(AuthError::NotYet)
    );
    assert_eq!(
        v.verify(
            &t(json!({"sub": "1", "exp": NOW + 900, "iat": NOW + 600})),
            NOW
        ),
        Err(AuthError::NotYet)
    );
    // exp in the year 9999: past the maximum lifetime.
    assert_eq!(
        v.verify(&t(json!({"sub": "1", "exp": 253_402_300_799u64})), NOW),
        Err(AuthError::TooLong(86_400))
    );

    let mut c = cfg();
    c.audience = Some("herald".into());
    c.issuer = Some("https://auth.example".into());
    let v = Verifier::new(c).expect("hs");
    let good = json!({"sub": "1", "exp": NOW + 60, "aud": "herald", "iss": "https://auth.example"});
    assert_eq!(v.verify(&t(good), NOW), Ok(1));
    let bad_aud =
        json!({"sub": "1", "exp": NOW + 60, "aud": "other", "iss": "https://auth.example"});
    assert_eq!(v.verify(&t(bad_aud), NOW), Err(AuthError::Audience));
    let bad_iss = json!({"sub": "1", "exp": NOW + 60, "aud": "herald", "iss": "https://evil"});
    assert_eq!(v.verify(&t(bad_iss), NOW), Err(AuthError::Issuer));
}

#[test]
fn jwks_keys_by_kid_and_rotation_by_replacing_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::copy(keydir().join("jwks1.json"), &path).expect("copy");
    let mut c = cfg();
    c.secret = None;
    c.jwks_file = Some(path.clone());
    let v = Verifier::new(c).expect("jwks");
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("k1"), ok(3)), NOW),
        Ok(3)
    );
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("k2"), ok(3)), NOW),
        Err(AuthError::UnknownKey(Some("k2".into())))
    );
    // Rotate: the file now holds k2 only (a newer modification time).
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(keydir().join("jwks2.json"), &path).expect("copy");
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("k2"), ok(4)), NOW),
        Ok(4)
    );
    assert!(v
        .verify(&sign(Algorithm::RS256, Some("k1"), ok(4)), NOW)
        .is_err());
}

#[test]
fn minted_tokens_verify_and_weak_secrets_are_named() {
    let t = mint_hs256(SECRET, 42, NOW, Duration::from_secs(3600), None, None).expect("mint");
    assert_eq!(Verifier::new(cfg()).expect("hs").verify(&t, NOW), Ok(42));
    assert!(weak_secret("change-me-to-a-long-random-secret", 32).is_some());
    assert!(weak_secret("x", 32).is_some());
    assert_eq!(weak_secret(SECRET, 32), None);
}

/// A JWKS URL on a real local HTTP server: fetched at start; a key
/// rotated in is fetched when a token names it, at most once a minute.
#[tokio::test]
async fn jwks_url_keys_are_fetched_and_refetched_for_an_unknown_key() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let doc = Arc::new(std::sync::Mutex::new(
        std::fs::read_to_string(keydir().join("jwks1.json")).expect("jwks1"),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    {
        let (doc, hits) = (doc.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = doc.lock().unwrap().clone();
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
    }
    let mut c = cfg();
    c.secret = None;
    c.jwks_url = Some(format!("http://{addr}/.well-known/jwks.json"));
    let v = Verifier::new(c).expect("jwks url");
    assert_eq!(v.refresh().await, Ok(1));
    let k1 = sign(Algorithm::RS256, Some("k1"), ok(3));
    assert_eq!(v.verify_fresh(&k1, NOW).await, Ok(3));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The provider rotates to k2: a k2 token fetches the set again.
    *doc.lock().unwrap() = std::fs::read_to_string(keydir().join("jwks2.json")).expect("jwks2");
    let k2 = sign(Algorithm::RS256, Some("k2"), ok(4));
    assert_eq!(v.verify_fresh(&k2, NOW).await, Ok(4));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Another unknown key within the minute: refused without a fetch.
    let k9 = sign(Algorithm::RS256, Some("k9"), ok(5));
    assert_eq!(
        v.verify_fresh(&k9, NOW).await,
        Err(AuthError::UnknownKey(Some("k9".into())))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A bad URL is named.
    let mut c = cfg();
    c.jwks_url = Some("ftp://x".into());
    let e = Verifier::new(c).unwrap_err();
    assert!(e.to_string().contains("auth.jwks_url"), "{e}");
}

#[test]
fn bearer_credentials_are_read_once_for_every_route() {
    assert_eq!(crate::bearer("Bearer abc"), Some("abc"));
    assert_eq!(crate::bearer("bearer  abc "), Some("abc"));
    assert_eq!(crate::bearer("BEARER abc"), Some("abc"));
    assert_eq!(crate::bearer("Bearer "), None);
    assert_eq!(crate::bearer("Basic abc"), None);
    assert_eq!(crate::bearer("Bearerabc"), None);
    assert_eq!(crate::bearer(""), None);
}
