//! Tokens Paddock signs itself: JWTs (EdDSA, Ed25519) for a session
//! exchanged from an API key, and for scoped tokens a principal hands out.
//!
//! The signing keys live in a directory of the data dir (`<kid>.pk8`,
//! mode 0600, PKCS#8). The newest signs; every key younger than
//! `ROTATE_AFTER + MAX_LIFETIME` verifies, so a rotation (every
//! `ROTATE_AFTER`, or when the operator asks) drops no token still valid.
//! The engine checks what a signature cannot: whether the token was
//! revoked, and whether the API key it came from still stands
//! (`engine/tokens.rs`).

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The issuer every token of Paddock's names.
pub const ISSUER: &str = "paddock";
/// How long a signing key signs before a new one takes over.
pub const ROTATE_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// The longest a token may live (a scoped token's `ttl` is capped here).
pub const MAX_LIFETIME_SECS: u64 = 30 * 86400;

/// What a token may do, narrower than its principal: read only (no call
/// that changes anything, no exec), and/or only these sandboxes (nothing
/// else is seen, and nothing is made).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenScope {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<Uuid>>,
}

impl TokenScope {
    pub fn is_full(&self) -> bool {
        !self.read_only && self.sandboxes.is_none()
    }

    /// This scope narrowed by `other` (what a scoped token may hand on).
    pub fn narrowed(&self, other: &TokenScope) -> TokenScope {
        let sandboxes = match (&self.sandboxes, &other.sandboxes) {
            (None, x) | (x, None) => x.clone(),
            (Some(a), Some(b)) => Some(a.iter().filter(|id| b.contains(id)).copied().collect()),
        };
        TokenScope {
            read_only: self.read_only || other.read_only,
            sandboxes,
        }
    }

    pub fn allows_sandbox(&self, id: Uuid) -> bool {
        self.sandboxes.as_ref().is_none_or(|s| s.contains(&id))
    }
}

/// What a token of Paddock's says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal.
    pub sub: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// `session` (exchanged from an API key) or `token` (made by a
    /// principal, listed and revocable).
    pub kind: String,
    /// The API key it came from, if it did: the token dies with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The token it was made with, if it was (it dies with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "TokenScope::is_full")]
    pub scope: TokenScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

struct SigningKey {
    kid: String,
    created: DateTime<Utc>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The signing keys.
pub struct KeyRing {
    dir: Option<PathBuf>,
    /// Newest last.
    keys: RwLock<Vec<SigningKey>>,
}

fn load(path: &Path) -> Result<SigningKey> {
    use aws_lc_rs::signature::KeyPair;
    let der =
        std::fs::read(path).map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| Error::internal(format!("{}: not an Ed25519 key: {e}", path.display())))?;
    let kid = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let created = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    Ok(SigningKey {
        kid,
        created,
        encoding: EncodingKey::from_ed_der(&der),
        decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
    })
}

fn generate(dir: Option<&Path>) -> Result<SigningKey> {
    use aws_lc_rs::signature::KeyPair;
    let pkcs8 =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| Error::internal(format!("token key: {e}")))?;
    let der = pkcs8.as_ref().to_vec();
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| Error::internal(format!("token key: {e}")))?;
    let kid = format!("pk-{}", &Uuid::new_v4().simple().to_string()[..16]);
    if let Some(dir) = dir {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = dir.join(format!(".{kid}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
        f.write_all(&der)
            .and_then(|_| f.sync_all())
            .and_then(|_| std::fs::rename(&tmp, dir.join(format!("{kid}.pk8"))))
            .map_err(|e| Error::internal(format!("token key {kid}: {e}")))?;
    }
    Ok(SigningKey {
        kid,
        created: Utc::now(),
        encoding: EncodingKey::from_ed_der(&der),
        decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
    })
}

impl KeyRing {
    /// The keys kept in `dir` (made 0700 if missing); `None`: in memory
    /// only (tests).
    pub fn open(dir: Option<&Path>) -> Result<KeyRing> {
        let mut keys = Vec::new();
        if let Some(dir) = dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
            let rd = std::fs::read_dir(dir)
                .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pk8") {
                    keys.push(load(&p)?);
                }
            }
        }
        keys.sort_by_key(|k| k.created);
        let ring = KeyRing {
            dir: dir.map(Path::to_path_buf),
            keys: RwLock::new(keys),
        };
        ring.prune();
        Ok(ring)
    }

    /// A new signing key, from now on the one that signs.
    pub fn rotate(&self) -> Result<String> {
        let k = generate(self.dir.as_deref())?;
        let kid = k.kid.clone();
        self.keys.write().unwrap().push(k);
        self.prune();
        Ok(kid)
    }

    /// Drops the keys no valid token can have been signed with (each
    /// signs for `ROTATE_AFTER` at most, and its tokens live
    /// `MAX_LIFETIME_SECS` at most).
    fn prune(&self) {
        let horizon = Utc::now()
            - ROTATE_AFTER
            - chrono::TimeDelta::seconds(MAX_LIFETIME_SECS as i64)
            - chrono::TimeDelta::hours(1);
        let mut keys = self.keys.write().unwrap();
        let n = keys.len();
        // The newest always stays; one older retires when the next one is
        // past the horizon.
        let mut keep = vec![true; n];
        for i in 0..n.saturating_sub(1) {
            if keys[i + 1].created < horizon {
                keep[i] = false;
            }
        }
        let mut i = 0;
        keys.retain(|k| {
            let kept = keep[i];
            i += 1;
            if !kept {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_file(dir.join(format!("{}.pk8", k.kid)));
                }
            }
            kept
        });
    }

    /// The key that signs now, rotating it first when it is due.
    fn current_kid(&self) -> Result<String> {
        {
            let keys = self.keys.read().unwrap();
            if let Some(k) = keys.last() {
                if Utc::now() - k.created < ROTATE_AFTER {
                    return Ok(k.kid.clone());
                }
            }
        }
        self.rotate()
    }

    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let kid = self.current_kid()?;
        let keys = self.keys.read().unwrap();
        let k = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| Error::internal("the token key went away"))?;
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid);
        jsonwebtoken::encode(&h, claims, &k.encoding)
            .map_err(|e| Error::internal(format!("token: {e}")))
    }

    /// Whether `token` is one of ours by its header (a key id we have).
    pub fn knows(&self, token: &str) -> bool {
        match jsonwebtoken::decode_header(token) {
            Ok(h) => h.kid.is_some_and(|kid| {
                kid.starts_with("pk-") && self.keys.read().unwrap().iter().any(|k| k.kid == kid)
            }),
            Err(_) => false,
        }
    }

    /// The claims of a token we signed that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let bad = |why: &str| Error::Unauthenticated(format!("token: {why}"));
        let h = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        if h.alg != Algorithm::EdDSA {
            return Err(bad("not signed by this daemon"));
        }
        let kid = h.kid.ok_or_else(|| bad("no key id"))?;
        let keys = self.keys.read().unwrap();
        let k = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| bad("signed with a key this daemon does not have"))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        match jsonwebtoken::decode::<Claims>(token, &k.decoding, &v) {
            Ok(d) => Ok(d.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(bad("expired")),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(bad("bad signature")),
                _ => Err(bad(&e.to_string())),
            },
        }
    }

    /// The key ids, oldest first.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap()
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            jti: "j1".into(),
            iat: now,
            exp: now + exp_in,
            kind: "token".into(),
            key: None,
            parent: None,
            scope: TokenScope {
                read_only: true,
                sandboxes: None,
            },
            email: None,
            name: None,
            groups: vec![],
        }
    }

    #[test]
    fn signs_verifies_and_rotates_without_dropping_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(Some(dir.path())).unwrap();
        let t1 = ring.sign(&claims(60)).unwrap();
        assert!(ring.knows(&t1));
        assert_eq!(ring.verify(&t1).unwrap().sub, "alice");
        assert!(ring.verify(&t1).unwrap().scope.read_only);
        ring.rotate().unwrap();
        let t2 = ring.sign(&claims(60)).unwrap();
        assert_ne!(
            jsonwebtoken::decode_header(&t1).unwrap().kid,
            jsonwebtoken::decode_header(&t2).unwrap().kid
        );
        // Both keys verify, also after a restart (read from the dir).
        let again = KeyRing::open(Some(dir.path())).unwrap();
        assert_eq!(again.kids().len(), 2);
        assert!(again.verify(&t1).is_ok() && again.verify(&t2).is_ok());
        // Expired, tampered, foreign: refused.
        let old = ring.sign(&claims(-60)).unwrap();
        assert!(matches!(ring.verify(&old), Err(Error::Unauthenticated(_))));
        let mut forged = t2.clone();
        forged.pop();
        forged.push(if t2.ends_with('A') { 'B' } else { 'A' });
        assert!(ring.verify(&forged).is_err());
        let other = KeyRing::open(None).unwrap();
        let foreign = other.sign(&claims(60)).unwrap();
        assert!(!ring.knows(&foreign));
        assert!(ring.verify(&foreign).is_err());
        // An unsigned token ("alg": "none") is never ours.
        let parts: Vec<&str> = t2.split('.').collect();
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT","kid":"x"}"#),
            parts[1]
        );
        assert!(ring.verify(&none).is_err());
    }

    fn base64_url(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn scopes_narrow() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let s = TokenScope {
            read_only: false,
            sandboxes: Some(vec![a, b]),
        };
        let n = s.narrowed(&TokenScope {
            read_only: true,
            sandboxes: Some(vec![b]),
        });
        assert!(n.read_only);
        assert_eq!(n.sandboxes, Some(vec![b]));
        assert!(!n.allows_sandbox(a));
        assert!(TokenScope::default().allows_sandbox(a));
        assert_eq!(s.narrowed(&TokenScope::default()), s);
    }
}
