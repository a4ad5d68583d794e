//! API keys: random bearer tokens, stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const TOKEN_PREFIX: &str = "pdk_";

/// Turns a bearer token that is not an API key (an OIDC JWT from an issuer
/// the operator trusts) into a principal. The daemon provides one; the
/// engine knows no token format but its own keys'.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync {
    /// Whether `token` looks like one of this verifier's (so that its
    /// refusal is the answer).
    fn accepts(&self, token: &str) -> bool;
    /// The principal the token stands for, or `Error::Unauthenticated`.
    async fn verify(&self, token: &str) -> crate::error::Result<crate::model::Principal>;
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new key: (id, token). Only the hash of the token is ever stored.
pub fn new_token() -> (String, String) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    (
        id.clone(),
        format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashed() {
        let (id1, t1) = new_token();
        let (id2, t2) = new_token();
        assert_ne!(id1, id2);
        assert_ne!(t1, t2);
        assert!(t1.starts_with("pdk_"));
        assert_eq!(hash_token(&t1).len(), 64);
        assert_ne!(hash_token(&t1), hash_token(&t2));
    }
}
