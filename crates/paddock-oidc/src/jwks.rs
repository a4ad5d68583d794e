//! Key sets: parsing a JWKS document into verification keys, and keeping a remote one fresh.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::OidcError;

/// The largest JWKS document read from a URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one JWKS fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The signature algorithms a token may use: asymmetric ones only, never `none` or `HS*`.
pub(crate) fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One public key of an issuer, with the algorithms it may verify.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The usable signature keys of one JWKS document.
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot verify an accepted
    /// asymmetric signature (symmetric `oct` keys, encryption keys, unknown curves or types,
    /// an `alg` that does not fit the key) are left out; a document left with no key at all is
    /// an error. Error messages never quote key material.
    pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS document (a JSON object with \"keys\"): {e}"))?;
        let total = doc.keys.len();
        let keys: Vec<Key> = doc.keys.into_iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(format!(
                "none of its {total} key(s) is an RSA, EC (P-256, P-384) or Ed25519 signature key"
            ));
        }
        Ok(KeySet { keys })
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys that may have signed a token with this `alg` and `kid`: with a `kid`, only keys
    /// carrying that `kid`; without one, every key that fits the algorithm.
    pub(crate) fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<&Key> {
        self.keys
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .collect()
    }
}

fn usable_key(value: serde_json::Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return None;
        }
    }
    let fitting: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        // A shared secret published in a key set is no key to trust a token with.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithms = match &jwk.common.key_algorithm {
        None => fitting,
        Some(declared) => {
            let alg = accepted_algorithm(&declared.to_string())?;
            if !fitting.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

/// Intervals of the remote key-set cache (shortened in tests).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// The least time between two fetches once a key set is known.
    pub(crate) min_refetch: Duration,
    /// The least time between two fetches while none has succeeded yet.
    pub(crate) failure_backoff: Duration,
}

pub(crate) const DEFAULT_TIMING: Timing = Timing {
    min_refetch: Duration::from_secs(60),
    failure_backoff: Duration::from_secs(5),
};

/// Where an issuer's keys come from.
pub(crate) enum KeySource {
    Fixed(Arc<KeySet>),
    Remote(Remote),
}

impl KeySource {
    /// The key set to verify a token naming `kid` with; for a remote set, fetched first when
    /// there is none yet, when it is due for refresh, or when it lacks `kid` (rate-limited).
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Result<Arc<KeySet>, OidcError> {
        match self {
            KeySource::Fixed(set) => Ok(set.clone()),
            KeySource::Remote(remote) => remote.keys(kid).await,
        }
    }
}

#[derive(Clone, Default)]
struct RemoteState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// A JWKS URL and what was last fetched from it.
pub(crate) struct Remote {
    url: String,
    refresh: Duration,
    timing: Timing,
    client: reqwest::Client,
    state: Mutex<RemoteState>,
    /// Held while fetching, so that concurrent verifications trigger one fetch, not many.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl Remote {
    pub(crate) fn new(
        url: String,
        refresh: Duration,
        timing: Timing,
        client: reqwest::Client,
    ) -> Remote {
        Remote {
            url,
            refresh,
            timing,
            client,
            state: Mutex::new(RemoteState::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn client() -> Result<reqwest::Client, OidcError> {
        reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| OidcError::Config(format!("building the JWKS HTTP client: {e}")))
    }

    fn snapshot(&self) -> RemoteState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether this state calls for a fetch, rate limits aside.
    fn wants_fetch(&self, s: &RemoteState, kid: Option<&str>) -> bool {
        let Some(keys) = &s.keys else { return true };
        let stale = s.fetched_at.is_none_or(|t| t.elapsed() >= self.refresh);
        let unknown_kid = kid.is_some_and(|kid| !keys.has_kid(kid));
        stale || unknown_kid
    }

    /// Whether the rate limits allow a fetch now.
    fn may_fetch(&self, s: &RemoteState) -> bool {
        let gap = if s.keys.is_some() {
            self.timing.min_refetch
        } else {
            self.timing.failure_backoff
        };
        s.last_attempt.is_none_or(|t| t.elapsed() >= gap)
    }

    async fn keys(&self, kid: Option<&str>) -> Result<Arc<KeySet>, OidcError> {
        let snap = self.snapshot();
        if !self.wants_fetch(&snap, kid) {
            if let Some(keys) = snap.keys {
                return Ok(keys);
            }
        }
        let _fetching = self.fetch_lock.lock().await;
        // Another task may have fetched while this one waited.
        let snap = self.snapshot();
        if self.wants_fetch(&snap, kid) && self.may_fetch(&snap) {
            let started = Instant::now();
            let result = self.fetch().await;
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.last_attempt = Some(started);
            match result {
                Ok(set) => {
                    tracing::debug!(url = %self.url, keys = set.keys.len(), "fetched OIDC key set");
                    state.keys = Some(Arc::new(set));
                    state.fetched_at = Some(started);
                    state.last_error = None;
                }
                Err(why) => {
                    tracing::warn!(url = %self.url, error = %why, "fetching OIDC key set failed");
                    state.last_error = Some(why);
                }
            }
        }
        let snap = self.snapshot();
        snap.keys.ok_or_else(|| {
            OidcError::Unavailable(
                snap.last_error
                    .unwrap_or_else(|| format!("the key set at {} is not fetched yet", self.url)),
            )
        })
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let url = &self.url;
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching the key set at {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the key set at {url} answered {}",
                response.status()
            ));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!(
                "the key set at {url} is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the key set at {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "the key set at {url} is larger than {MAX_JWKS_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body).map_err(|why| format!("the key set at {url}: {why}"))
    }
}
