//! Tests with real keys (generated here with aws-lc-rs), real signatures (jsonwebtoken's
//! `encode`) and, for `jwks_url`, a tiny HTTP server on the loopback.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::jwks::Timing;
use crate::{IssuerConfig, OidcError, Verifier};

const ISS: &str = "https://idp.example";
const AUD: &str = "paddock";

// ---------------------------------------------------------------------------------------------
// Keys

/// A private key to sign with and its public JWK (without `kid`).
struct TestKey {
    encoding: EncodingKey,
    public: Value,
    /// The algorithm tokens are signed with by default.
    alg: Algorithm,
}

impl TestKey {
    fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = self.public.clone();
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

/// Reads one DER TLV: (tag, contents, rest).
fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = if input[1] < 0x80 {
        (input[1] as usize, 2)
    } else {
        let n = (input[1] & 0x7f) as usize;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (jsonwebtoken's aws-lc signer
/// takes PKCS#1).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der(pkcs8);
    let (_, _, rest) = der(info); // version
    let (_, _, rest) = der(rest); // algorithm identifier
    let (tag, key, _) = der(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key.to_vec()
}

fn gen_rsa() -> TestKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8: Pkcs8V1Der = pair.as_der().unwrap();
    let encoding = EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(pkcs8.as_ref()));
    let mut public =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap()).unwrap();
    // Leave `alg` off: an RSA key then serves RS* and PS*.
    public.as_object_mut().unwrap().remove("alg");
    TestKey {
        encoding,
        public,
        alg: Algorithm::RS256,
    }
}

fn gen_ec() -> TestKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let public =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap()).unwrap();
    TestKey {
        encoding,
        public,
        alg: Algorithm::ES256,
    }
}

fn gen_ed() -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    TestKey {
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        public: json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        alg: Algorithm::EdDSA,
    }
}

/// RSA key generation is slow in a debug build: two keys, made once.
fn rsa() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(gen_rsa)
}
fn rsa_other() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(gen_rsa)
}

// ---------------------------------------------------------------------------------------------
// Tokens and verifiers

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "exp": now() + 600,
        "iat": now(),
        "email": "alice@example.com",
        "name": "Alice Liddell",
        "groups": ["dev", "ops"],
    })
}

fn sign_with(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key.encoding).unwrap()
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    sign_with(key, key.alg, kid, claims)
}

/// A token put together by hand: any header, any payload, any signature bytes.
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// A JWKS file in a temporary directory (kept alive by the returned guard).
fn jwks_file(keys: &[Value]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(json!({ "keys": keys }).to_string().as_bytes())
        .unwrap();
    (dir, path)
}

fn issuer_with_file(path: &std::path::Path) -> IssuerConfig {
    let mut c = IssuerConfig::new(ISS, vec![AUD.to_owned()]);
    c.jwks_file = Some(path.to_owned());
    c
}

/// A verifier for `ISS` trusting the given JWKs (from a file).
fn verifier_for(keys: &[Value]) -> Verifier {
    let (_dir, path) = jwks_file(keys);
    Verifier::new(vec![issuer_with_file(&path)]).unwrap()
}

/// The standard verifier: the main RSA key under kid `k1`.
fn verifier() -> Verifier {
    verifier_for(&[rsa().jwk(Some("k1"))])
}

#[track_caller]
fn assert_invalid(result: Result<crate::Identity, OidcError>, needle: &str) {
    match result {
        Err(OidcError::Invalid(msg)) => {
            assert!(
                msg.contains(needle),
                "refused, but for {msg:?} rather than {needle:?}"
            )
        }
        other => panic!("expected Invalid({needle:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_config(result: Result<Verifier, OidcError>, needle: &str) {
    match result {
        Err(OidcError::Config(msg)) => {
            assert!(
                msg.contains(needle),
                "Config error {msg:?} does not mention {needle:?}"
            )
        }
        other => panic!("expected Config({needle:?}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Good tokens

#[tokio::test]
async fn good_token_maps_claims() {
    let token = sign(rsa(), Some("k1"), &claims());
    let id = verifier().verify(&token).await.unwrap();
    assert_eq!(id.principal, "oidc:alice");
    assert_eq!(id.subject, "alice");
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.name.as_deref(), Some("Alice Liddell"));
    assert_eq!(id.groups, vec!["dev".to_owned(), "ops".to_owned()]);
    assert_eq!(id.issuer, ISS);
}

#[tokio::test]
async fn groups_may_be_a_single_string_or_absent() {
    let v = verifier();
    let mut c = claims();
    c["groups"] = json!("admins");
    let id = v.verify(&sign(rsa(), Some("k1"), &c)).await.unwrap();
    assert_eq!(id.groups, vec!["admins".to_owned()]);

    let mut c = claims();
    c.as_object_mut().unwrap().remove("groups");
    c.as_object_mut().unwrap().remove("email");
    c.as_object_mut().unwrap().remove("name");
    let id = v.verify(&sign(rsa(), Some("k1"), &c)).await.unwrap();
    assert!(id.groups.is_empty());
    assert_eq!((id.email, id.name), (None, None));
}

#[tokio::test]
async fn groups_must_be_strings_and_at_most_256() {
    let v = verifier();
    let mut c = claims();
    c["groups"] = json!(["dev", 7]);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "not a string");

    let mut c = claims();
    c["groups"] = json!({"dev": true});
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &c)).await,
        "neither a string nor an array",
    );

    let mut c = claims();
    c["groups"] = json!((0..257).map(|i| format!("g{i}")).collect::<Vec<_>>());
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &c)).await,
        "more than 256",
    );

    let mut c = claims();
    c["groups"] = json!((0..256).map(|i| format!("g{i}")).collect::<Vec<_>>());
    assert_eq!(
        v.verify(&sign(rsa(), Some("k1"), &c))
            .await
            .unwrap()
            .groups
            .len(),
        256
    );
}

#[tokio::test]
async fn non_string_email_and_name_are_dropped_not_fatal() {
    let mut c = claims();
    c["email"] = json!(42);
    c["name"] = json!("bad\nname");
    let id = verifier()
        .verify(&sign(rsa(), Some("k1"), &c))
        .await
        .unwrap();
    assert_eq!((id.email, id.name), (None, None));
}

#[tokio::test]
async fn every_accepted_algorithm_family_verifies() {
    let (ec, ed) = (gen_ec(), gen_ed());
    let v = verifier_for(&[rsa().jwk(Some("r")), ec.jwk(Some("e")), ed.jwk(Some("d"))]);
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let id = v.verify(&sign_with(rsa(), alg, Some("r"), &claims())).await;
        assert_eq!(id.unwrap().principal, "oidc:alice", "{alg:?}");
    }
    assert!(
        v.verify(&sign(&ec, Some("e"), &claims())).await.is_ok(),
        "ES256"
    );
    assert!(
        v.verify(&sign(&ed, Some("d"), &claims())).await.is_ok(),
        "EdDSA"
    );
    // Without a kid, every key of a fitting type is tried.
    assert!(
        v.verify(&sign(&ec, None, &claims())).await.is_ok(),
        "ES256 without kid"
    );
    assert!(
        v.verify(&sign(&ed, None, &claims())).await.is_ok(),
        "EdDSA without kid"
    );
    assert!(
        v.verify(&sign(rsa(), None, &claims())).await.is_ok(),
        "RS256 without kid"
    );
}

#[tokio::test]
async fn without_kid_each_fitting_key_is_tried() {
    // The signing key is the second RSA key of the set.
    let v = verifier_for(&[rsa_other().jwk(None), rsa().jwk(None)]);
    assert!(v.verify(&sign(rsa(), None, &claims())).await.is_ok());
    // With a kid, a key without that kid is not used.
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &claims())).await, "kid");
}

#[tokio::test]
async fn kubernetes_service_account_token_verifies() {
    let iss = "https://kubernetes.default.svc.cluster.local";
    let (_dir, path) = jwks_file(&[json!({
        "use": "sig", "kty": "RSA", "kid": "Xz1_k8s-key", "alg": "RS256",
        "n": rsa().public["n"], "e": rsa().public["e"],
    })]);
    let mut config = IssuerConfig::new(iss, vec!["paddock".to_owned()]);
    config.jwks_file = Some(path);
    config.principal_prefix = "k8s:".to_owned();
    let v = Verifier::new(vec![config]).unwrap();
    let t = now();
    let claims = json!({
        "aud": ["https://kubernetes.default.svc.cluster.local", "paddock"],
        "exp": t + 3600, "iat": t, "nbf": t, "iss": iss,
        "jti": "8f0d2c3e-5f1a-4a47-9a0e-1f3c4e2d7b6a",
        "kubernetes.io": {
            "namespace": "ci",
            "node": {"name": "node-1", "uid": "9a3e"},
            "pod": {"name": "runner-7c9f", "uid": "1b2c"},
            "serviceaccount": {"name": "runner", "uid": "4d5e"},
        },
        "sub": "system:serviceaccount:ci:runner",
    });
    let mut header = Header::new(Algorithm::RS256);
    header.typ = None; // Kubernetes sets only alg and kid.
    header.kid = Some("Xz1_k8s-key".to_owned());
    let token = encode(&header, &claims, &rsa().encoding).unwrap();
    assert!(Verifier::looks_like_jwt(&token));
    let id = v.verify(&token).await.unwrap();
    assert_eq!(id.principal, "k8s:system:serviceaccount:ci:runner");
    assert_eq!(id.subject, "system:serviceaccount:ci:runner");
    assert!(id.groups.is_empty());
    assert_eq!(id.issuer, iss);
}

#[tokio::test]
async fn principal_claim_and_prefix_are_configurable() {
    let (_dir, path) = jwks_file(&[rsa().jwk(Some("k1"))]);
    let mut config = issuer_with_file(&path);
    config.principal_claim = "preferred_username".to_owned();
    config.groups_claim = "roles".to_owned();
    config.principal_prefix = "corp/".to_owned();
    let v = Verifier::new(vec![config]).unwrap();
    let mut c = claims();
    c["preferred_username"] = json!("alice.l");
    c["roles"] = json!(["reader"]);
    let id = v.verify(&sign(rsa(), Some("k1"), &c)).await.unwrap();
    assert_eq!(id.principal, "corp/alice.l");
    assert_eq!(id.groups, vec!["reader".to_owned()]);

    c.as_object_mut().unwrap().remove("preferred_username");
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &c)).await,
        "no preferred_username claim",
    );
}

#[tokio::test]
async fn audience_may_be_one_of_several_and_token_aud_an_array() {
    let (_dir, path) = jwks_file(&[rsa().jwk(Some("k1"))]);
    let mut config = issuer_with_file(&path);
    config.audience = vec!["other".to_owned(), AUD.to_owned()];
    let v = Verifier::new(vec![config]).unwrap();
    let mut c = claims();
    c["aud"] = json!(["unrelated", AUD]);
    assert!(v.verify(&sign(rsa(), Some("k1"), &c)).await.is_ok());
    c["aud"] = json!("other");
    assert!(v.verify(&sign(rsa(), Some("k1"), &c)).await.is_ok());
}

#[tokio::test]
async fn several_issuers_each_with_its_own_keys() {
    let (_d1, p1) = jwks_file(&[rsa().jwk(Some("a"))]);
    let (_d2, p2) = jwks_file(&[rsa_other().jwk(Some("b"))]);
    let a = issuer_with_file(&p1);
    let mut b = IssuerConfig::new("https://other.example", vec![AUD.to_owned()]);
    b.jwks_file = Some(p2);
    b.principal_prefix = "other:".to_owned();
    let v = Verifier::new(vec![a, b]).unwrap();
    let mut c = claims();
    c["iss"] = json!("https://other.example");
    let id = v.verify(&sign(rsa_other(), Some("b"), &c)).await.unwrap();
    assert_eq!(id.principal, "other:alice");
    assert_eq!(id.issuer, "https://other.example");
    // Claiming the other issuer does not make its keys trusted for this one.
    assert_invalid(v.verify(&sign(rsa(), Some("a"), &c)).await, "kid");
    assert_invalid(v.verify(&sign(rsa(), None, &c)).await, "signature");
}

// ---------------------------------------------------------------------------------------------
// Refused tokens

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_invalid(
        verifier().verify(&sign(rsa(), Some("k1"), &c)).await,
        "not trusted",
    );
    // Not even a trailing slash is forgiven.
    c["iss"] = json!(format!("{ISS}/"));
    assert_invalid(
        verifier().verify(&sign(rsa(), Some("k1"), &c)).await,
        "not trusted",
    );
    c.as_object_mut().unwrap().remove("iss");
    assert_invalid(
        verifier().verify(&sign(rsa(), Some("k1"), &c)).await,
        "no iss",
    );
    c["iss"] = json!([ISS]);
    assert_invalid(
        verifier().verify(&sign(rsa(), Some("k1"), &c)).await,
        "no iss",
    );
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused() {
    let v = verifier();
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "audience");
    c["aud"] = json!(["someone-else", "another"]);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "audience");
    c["aud"] = json!([]);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "aud");
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "no aud claim");
}

#[tokio::test]
async fn expired_token_is_refused_beyond_the_leeway() {
    let v = verifier();
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "expired");
    // Within the default 60 s leeway it passes ...
    c["exp"] = json!(now() - 20);
    assert!(v.verify(&sign(rsa(), Some("k1"), &c)).await.is_ok());
    // ... and with no leeway it does not.
    let (_dir, path) = jwks_file(&[rsa().jwk(Some("k1"))]);
    let mut config = issuer_with_file(&path);
    config.leeway_secs = 0;
    let strict = Verifier::new(vec![config]).unwrap();
    assert_invalid(strict.verify(&sign(rsa(), Some("k1"), &c)).await, "expired");
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let v = verifier();
    let mut c = claims();
    c["nbf"] = json!(now() + 3600);
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &c)).await,
        "not valid yet",
    );
    c["nbf"] = json!(now() - 10);
    assert!(v.verify(&sign(rsa(), Some("k1"), &c)).await.is_ok());
    // A mistyped nbf is not taken for an absent one.
    c["nbf"] = json!(format!("{}", now() + 3600));
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "nbf");
}

#[tokio::test]
async fn missing_or_mistyped_exp_is_refused() {
    let v = verifier();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "no exp claim");
    c["exp"] = json!("never");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "exp");
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    // Same kid, another key.
    let token = sign(rsa_other(), Some("k1"), &claims());
    assert_invalid(verifier().verify(&token).await, "signature does not verify");
    // A key of the right type but the wrong curve/type altogether.
    let token = sign(&gen_ec(), Some("k1"), &claims());
    assert_invalid(verifier().verify(&token).await, "kid");
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let token = sign(rsa(), Some("k1"), &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["sub"] = json!("root");
    parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
    assert_invalid(
        verifier().verify(&parts.join(".")).await,
        "signature does not verify",
    );
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let token = sign(rsa(), Some("k2"), &claims());
    assert_invalid(verifier().verify(&token).await, "kid");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let token = raw_token(&json!({"alg": "none", "typ": "JWT"}), &claims(), b"");
    assert!(Verifier::looks_like_jwt(&token));
    assert_invalid(verifier().verify(&token).await, "\"none\" is not accepted");
    // Also with a kid that exists and a signature-looking tail.
    let token = raw_token(&json!({"alg": "none", "kid": "k1"}), &claims(), b"sig");
    assert_invalid(verifier().verify(&token).await, "not accepted");
    let token = raw_token(&json!({"alg": "None"}), &claims(), b"");
    assert_invalid(verifier().verify(&token).await, "not accepted");
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let v = verifier();
    let n = URL_SAFE_NO_PAD
        .decode(rsa().public["n"].as_str().unwrap())
        .unwrap();
    let jwk_text = rsa().jwk(Some("k1")).to_string();
    for secret in [n.as_slice(), jwk_text.as_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".to_owned());
            let token = encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
            assert_invalid(v.verify(&token).await, "is not accepted");
        }
    }
}

#[tokio::test]
async fn oct_keys_in_a_key_set_are_never_used() {
    let secret = b"a shared secret that should never be trusted";
    let oct =
        json!({"kty": "oct", "kid": "hmac", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)});
    let v = verifier_for(&[oct.clone(), rsa().jwk(Some("k1"))]);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".to_owned());
    let token = encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
    assert_invalid(v.verify(&token).await, "HS256");
    // A key set holding nothing but an oct key is no key set.
    let (_dir, path) = jwks_file(&[oct]);
    assert_config(
        Verifier::new(vec![issuer_with_file(&path)]),
        "none of its 1 key(s)",
    );
}

#[tokio::test]
async fn declared_key_alg_and_use_are_honoured() {
    let mut rs256_only = rsa().jwk(Some("k1"));
    rs256_only["alg"] = json!("RS256");
    let v = verifier_for(&[rs256_only]);
    assert!(v
        .verify(&sign_with(rsa(), Algorithm::RS256, Some("k1"), &claims()))
        .await
        .is_ok());
    let token = sign_with(rsa(), Algorithm::PS256, Some("k1"), &claims());
    assert_invalid(v.verify(&token).await, "kid and algorithm");

    // An encryption key, or an RSA key declared for HS256, verifies nothing.
    let mut enc = rsa().jwk(Some("k1"));
    enc["use"] = json!("enc");
    let mut confused = rsa().jwk(Some("k2"));
    confused["alg"] = json!("HS256");
    let v = verifier_for(&[enc, confused, rsa_other().jwk(Some("other"))]);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &claims())).await, "kid");
    assert_invalid(v.verify(&sign(rsa(), Some("k2"), &claims())).await, "kid");
}

#[tokio::test]
async fn empty_or_bad_principal_claim_is_refused() {
    let v = verifier();
    let mut c = claims();
    c["sub"] = json!("");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "sub is empty");
    c.as_object_mut().unwrap().remove("sub");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "no sub claim");
    c["sub"] = json!(12345);
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "not a string");
    c["sub"] = json!("alice\u{0}root");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "control");
    c["sub"] = json!("x".repeat(257));
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &c)).await,
        "longer than 256",
    );
    c["sub"] = json!("x".repeat(256));
    assert!(v.verify(&sign(rsa(), Some("k1"), &c)).await.is_ok());
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let v = verifier();
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.x",
        "e30.e30.",
        "eyJhbGciOiJSUzI1NiJ9.%%%.x",
    ] {
        assert!(
            matches!(v.verify(token).await, Err(OidcError::Invalid(_))),
            "{token:?}"
        );
    }
    let token = raw_token(
        &json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]}),
        &claims(),
        b"x",
    );
    assert_invalid(v.verify(&token).await, "crit");
    let token = raw_token(&json!({"alg": "RS256", "kid": 1}), &claims(), b"x");
    assert_invalid(v.verify(&token).await, "kid is not a string");
    assert_invalid(v.verify(&"a".repeat(70_000)).await, "too long");
}

#[tokio::test]
async fn an_empty_verifier_refuses_everything() {
    let v = Verifier::new(Vec::new()).unwrap();
    assert!(v.is_empty());
    assert!(!verifier().is_empty());
    assert_invalid(
        v.verify(&sign(rsa(), Some("k1"), &claims())).await,
        "no OIDC issuer",
    );
}

#[test]
fn reserved_principals_are_recognised() {
    use crate::config::is_reserved_principal;
    assert!(is_reserved_principal("local"));
    assert!(is_reserved_principal("paddock:admin"));
    assert!(!is_reserved_principal("oidc:local"));
    assert!(!is_reserved_principal("localhost"));
    assert!(!is_reserved_principal("oidc:paddock:admin"));
}

#[test]
fn looks_like_jwt_checks_the_shape_only() {
    assert!(Verifier::looks_like_jwt(&sign(
        rsa(),
        Some("k1"),
        &claims()
    )));
    // Expired or not, signed by whom, does not matter here.
    assert!(Verifier::looks_like_jwt(&sign(
        rsa_other(),
        None,
        &json!({"exp": 1})
    )));
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
    assert!(Verifier::looks_like_jwt(&format!("{header}.e30.c2ln")));
    for not in [
        String::new(),
        "pdk_0123456789abcdef".to_owned(),
        format!("{header}.e30"),
        format!("{header}.e30.c2ln.c2ln"),
        format!("{header}..c2ln"),
        ".e30.c2ln".to_owned(),
        format!("{header}.e30.c2l+"),
        format!("{header}=.e30.c2ln"),
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#)),
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":256}"#)),
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(r#"["alg"]"#)),
        "a.b.c".to_owned(),
    ] {
        assert!(!Verifier::looks_like_jwt(&not), "{not:?}");
    }
}

#[test]
fn verifier_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Verifier>();
    fn future_is_send<F: std::future::Future + Send>(_: F) {}
    let v = Verifier::new(Vec::new()).unwrap();
    future_is_send(v.verify("x"));
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn base_config() -> IssuerConfig {
    let mut c = IssuerConfig::new(ISS, vec![AUD.to_owned()]);
    c.jwks_url = Some("https://idp.example/jwks".to_owned());
    c
}

#[test]
fn config_needs_exactly_one_key_source() {
    let (_dir, path) = jwks_file(&[rsa().jwk(Some("k1"))]);
    let mut both = base_config();
    both.jwks_file = Some(path.clone());
    assert_config(Verifier::new(vec![both]), "both jwks_file and jwks_url");
    let mut neither = base_config();
    neither.jwks_url = None;
    assert_config(
        Verifier::new(vec![neither]),
        "neither jwks_file nor jwks_url",
    );
    assert!(Verifier::new(vec![base_config()]).is_ok());
    assert!(Verifier::new(vec![issuer_with_file(&path)]).is_ok());
}

#[test]
fn config_needs_issuer_and_audience() {
    let mut c = base_config();
    c.audience = Vec::new();
    assert_config(Verifier::new(vec![c]), "audience is empty");
    let mut c = base_config();
    c.audience = vec![String::new()];
    assert_config(Verifier::new(vec![c]), "audience has an empty entry");
    let mut c = base_config();
    c.issuer = String::new();
    assert_config(Verifier::new(vec![c]), "issuer is empty");
    let mut c = base_config();
    c.issuer = format!(" {ISS}");
    assert_config(Verifier::new(vec![c]), "white space");
}

#[test]
fn config_prefixes_must_be_distinct_and_not_reserved() {
    let a = base_config();
    let mut b = base_config();
    b.issuer = "https://b.example".to_owned();
    assert_config(Verifier::new(vec![a.clone(), b.clone()]), "overlap");
    b.principal_prefix = "oidc:b:".to_owned();
    assert_config(Verifier::new(vec![a.clone(), b.clone()]), "overlap");
    b.principal_prefix = "b:".to_owned();
    assert!(Verifier::new(vec![a.clone(), b.clone()]).is_ok());
    assert_config(
        Verifier::new(vec![a.clone(), a.clone()]),
        "configured twice",
    );

    for (prefix, why) in [
        ("", "principal_prefix is empty"),
        ("paddock:", "reserved `paddock:`"),
        ("paddock:oidc:", "reserved `paddock:`"),
        ("pad", "reserved `paddock:`"),
        ("lo", "reserved principal `local`"),
        ("a b", "white space"),
    ] {
        let mut c = base_config();
        c.principal_prefix = prefix.to_owned();
        assert_config(Verifier::new(vec![c]), why);
    }
}

#[test]
fn config_checks_urls_refresh_and_leeway() {
    for (url, why) in [
        ("ftp://idp.example/jwks", "not an http or https URL"),
        ("file:///etc/jwks.json", "not an http or https URL"),
        ("idp.example/jwks", "not a URL"),
        ("https://user:pw@idp.example/jwks", "credentials"),
    ] {
        let mut c = base_config();
        c.jwks_url = Some(url.to_owned());
        assert_config(Verifier::new(vec![c]), why);
    }
    let mut c = base_config();
    c.jwks_refresh_secs = Some(0);
    assert_config(Verifier::new(vec![c]), "at least 1");
    let (_dir, path) = jwks_file(&[rsa().jwk(Some("k1"))]);
    let mut c = issuer_with_file(&path);
    c.jwks_refresh_secs = Some(60);
    assert_config(Verifier::new(vec![c]), "only to jwks_url");
    let mut c = base_config();
    c.leeway_secs = 601;
    assert_config(Verifier::new(vec![c]), "leeway_secs");
    let mut c = base_config();
    c.principal_claim = String::new();
    assert_config(Verifier::new(vec![c]), "principal_claim is empty");
}

#[test]
fn bad_jwks_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = issuer_with_file(&dir.path().join("absent.json"));
    assert_config(Verifier::new(vec![missing]), "reading jwks_file");
    for (text, why) in [
        ("not json", "not a JWKS document"),
        (r#"{"kids": []}"#, "not a JWKS document"),
        (r#"{"keys": []}"#, "none of its 0 key(s)"),
        (
            r#"{"keys": [{"kty": "RSA"}, {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}"#,
            "none of its 2",
        ),
    ] {
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, text).unwrap();
        assert_config(Verifier::new(vec![issuer_with_file(&path)]), why);
    }
}

#[test]
fn toml_accepts_audience_as_string_or_array_and_fills_defaults() {
    let one: IssuerConfig = toml::from_str(
        r#"
        issuer = "https://kubernetes.default.svc"
        audience = "paddock"
        jwks_file = "/etc/paddock/k8s-jwks.json"
        "#,
    )
    .unwrap();
    assert_eq!(one.audience, vec!["paddock".to_owned()]);
    assert_eq!(
        one.jwks_file.as_deref(),
        Some(std::path::Path::new("/etc/paddock/k8s-jwks.json"))
    );
    assert_eq!(
        (
            one.principal_claim.as_str(),
            one.email_claim.as_str(),
            one.name_claim.as_str(),
            one.groups_claim.as_str(),
            one.principal_prefix.as_str(),
            one.leeway_secs,
            one.jwks_refresh_secs,
        ),
        ("sub", "email", "name", "groups", "oidc:", 60, None)
    );
    assert_eq!(one, {
        let mut c = IssuerConfig::new("https://kubernetes.default.svc", vec!["paddock".to_owned()]);
        c.jwks_file = Some("/etc/paddock/k8s-jwks.json".into());
        c
    });

    let many: IssuerConfig = toml::from_str(
        r#"
        issuer = "https://login.example.com"
        audience = ["paddock", "https://paddock.example.com"]
        jwks_url = "https://login.example.com/.well-known/jwks.json"
        jwks_refresh_secs = 900
        principal_claim = "preferred_username"
        groups_claim = "roles"
        principal_prefix = "corp:"
        leeway_secs = 30
        "#,
    )
    .unwrap();
    assert_eq!(many.audience.len(), 2);
    assert_eq!(many.jwks_refresh_secs, Some(900));
    assert_eq!(many.leeway_secs, 30);
    // Valid together (the file is not read by this check).
    crate::config::check_all(&[one, many]).unwrap();

    let unknown = toml::from_str::<IssuerConfig>(
        "issuer = \"x\"\naudience = \"y\"\njwks_file = \"z\"\nalgorithms = [\"HS256\"]\n",
    );
    assert!(unknown.unwrap_err().to_string().contains("algorithms"));
    let numeric =
        toml::from_str::<IssuerConfig>("issuer = \"x\"\naudience = 5\njwks_file = \"z\"\n");
    assert!(numeric
        .unwrap_err()
        .to_string()
        .contains("a string or an array of strings"));
    assert!(toml::from_str::<IssuerConfig>("issuer = \"x\"\njwks_file = \"z\"\n").is_err());
}

// ---------------------------------------------------------------------------------------------
// jwks_url

/// A one-route HTTP server on the loopback answering every request with `reply`.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<(u16, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[Value]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new((200, json!({ "keys": keys }).to_string())));
        let (h, r) = (hits.clone(), reply.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = r.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            hits,
            reply,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set(&self, status: u16, keys: &[Value]) {
        *self.reply.lock().unwrap() = (status, json!({ "keys": keys }).to_string());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn url_verifier(url: &str, refresh: Option<u64>, timing: Timing) -> Verifier {
    let mut c = IssuerConfig::new(ISS, vec![AUD.to_owned()]);
    c.jwks_url = Some(url.to_owned());
    c.jwks_refresh_secs = refresh;
    Verifier::with_timing(vec![c], timing).unwrap()
}

const FAST: Timing = Timing {
    min_refetch: Duration::from_millis(300),
    failure_backoff: Duration::from_millis(300),
};

#[tokio::test]
async fn jwks_url_is_fetched_lazily_and_cached() {
    let server = JwksServer::start(&[rsa().jwk(Some("k1"))]).await;
    let v = Verifier::new(vec![{
        let mut c = IssuerConfig::new(ISS, vec![AUD.to_owned()]);
        c.jwks_url = Some(server.url.clone());
        c
    }])
    .unwrap();
    assert_eq!(server.hits(), 0, "nothing is fetched at construction");
    let id = v.verify(&sign(rsa(), Some("k1"), &claims())).await.unwrap();
    assert_eq!(id.principal, "oidc:alice");
    assert_eq!(server.hits(), 1);
    for _ in 0..3 {
        v.clone()
            .verify(&sign(rsa(), Some("k1"), &claims()))
            .await
            .unwrap();
    }
    assert_eq!(server.hits(), 1, "the key set is cached");
    // A bad token does not cost a fetch either.
    assert_invalid(
        v.verify(&sign(rsa_other(), Some("k1"), &claims())).await,
        "signature",
    );
    assert_eq!(server.hits(), 1);
    // With the default timing an unknown kid right after a fetch does not refetch.
    assert_invalid(v.verify(&sign(rsa(), Some("new"), &claims())).await, "kid");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unknown_kid_triggers_one_rate_limited_refetch() {
    let server = JwksServer::start(&[rsa().jwk(Some("k1"))]).await;
    let v = url_verifier(&server.url, None, FAST);
    v.verify(&sign(rsa(), Some("k1"), &claims())).await.unwrap();
    assert_eq!(server.hits(), 1);

    // The issuer rotates in a new key.
    server.set(200, &[rsa().jwk(Some("k1")), rsa_other().jwk(Some("k2"))]);
    let rotated = sign(rsa_other(), Some("k2"), &claims());
    // Too soon after the last fetch: no refetch, refused.
    assert_invalid(v.verify(&rotated).await, "kid");
    assert_eq!(server.hits(), 1);

    tokio::time::sleep(FAST.min_refetch + Duration::from_millis(50)).await;
    let id = v.verify(&rotated).await.unwrap();
    assert_eq!(id.principal, "oidc:alice");
    assert_eq!(server.hits(), 2, "exactly one refetch");
    v.verify(&rotated).await.unwrap();
    assert_eq!(server.hits(), 2);

    // Another unknown kid right away is refused without a fetch.
    assert_invalid(
        v.verify(&sign(rsa_other(), Some("k3"), &claims())).await,
        "kid",
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_verifications_fetch_once() {
    let server = JwksServer::start(&[rsa().jwk(Some("k1"))]).await;
    let v = url_verifier(&server.url, None, FAST);
    let token = sign(rsa(), Some("k1"), &claims());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn key_set_is_refreshed_on_schedule_and_kept_when_refresh_fails() {
    let server = JwksServer::start(&[rsa().jwk(Some("k1"))]).await;
    let timing = Timing {
        min_refetch: Duration::ZERO,
        failure_backoff: Duration::ZERO,
    };
    let v = url_verifier(&server.url, Some(1), timing);
    let token = sign(rsa(), Some("k1"), &claims());
    v.verify(&token).await.unwrap();
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2, "refreshed after jwks_refresh_secs");

    // The issuer is down at the next refresh: the last good keys stay in use.
    server.set(503, &[]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 3);

    // A refresh that drops the key makes its tokens fail.
    server.set(200, &[rsa_other().jwk(Some("k2"))]);
    v.verify(&token).await.unwrap_err();
    assert_eq!(server.hits(), 4);
    assert_invalid(v.verify(&token).await, "kid");
}

#[tokio::test]
async fn unreachable_or_failing_jwks_url_is_unavailable() {
    let server = JwksServer::start(&[]).await;
    server.set(500, &[]);
    let v = url_verifier(&server.url, None, FAST);
    let token = sign(rsa(), Some("k1"), &claims());
    match v.verify(&token).await {
        Err(OidcError::Unavailable(msg)) => assert!(msg.contains("500"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(server.hits(), 1);
    // Within the back-off, no new fetch: the last error again.
    assert!(matches!(
        v.verify(&token).await,
        Err(OidcError::Unavailable(_))
    ));
    assert_eq!(server.hits(), 1);
    // Once the issuer is back (and the back-off over), it recovers.
    server.set(200, &[rsa().jwk(Some("k1"))]);
    tokio::time::sleep(FAST.failure_backoff + Duration::from_millis(50)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2);

    // A document without usable keys is a failed fetch too.
    let junk = JwksServer::start(&[json!({"kty": "oct", "k": "c2VjcmV0"})]).await;
    let v = url_verifier(&junk.url, None, FAST);
    assert!(matches!(
        v.verify(&token).await,
        Err(OidcError::Unavailable(_))
    ));

    // Nothing listening at all.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let v = url_verifier(&format!("http://127.0.0.1:{port}/jwks"), None, FAST);
    assert!(matches!(
        v.verify(&token).await,
        Err(OidcError::Unavailable(_))
    ));
    // A token for an issuer not configured never touches the network.
    let mut c = claims();
    c["iss"] = json!("https://elsewhere.example");
    assert_invalid(v.verify(&sign(rsa(), Some("k1"), &c)).await, "not trusted");
}
