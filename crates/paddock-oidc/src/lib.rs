//! OIDC JWT verification: bearer tokens from issuers the operator trusts, mapped to an identity.
//!
//! This crate owns the whole path from a bearer string to an [`Identity`]: the issuer
//! configuration ([`IssuerConfig`]) and its checks, the issuers' key sets (a JWKS file read at
//! start-up, or a JWKS URL fetched lazily, cached and refreshed), signature and claim
//! verification, and the mapping of claims to a principal id, e-mail, name and groups. It
//! knows nothing of the rest of Paddock; the daemon decides what a principal may do.
//!
//! Signatures and the registered claims (`iss`, `aud`, `exp`, `nbf`) are checked by the
//! `jsonwebtoken` crate (10.x, `aws_lc_rs` backend, the same aws-lc the workspace's rustls
//! already builds): it is the maintained, widely used JOSE implementation for Rust, parses
//! JWKs into keys (`DecodingKey::from_jwk`), and since 10.3 refuses mistyped `exp`/`nbf`.
//! Writing JOSE verification by hand is how algorithm-confusion bugs are made. Around it this
//! crate adds what the library leaves to its caller: only asymmetric algorithms are accepted
//! (never `none` or `HS*`, even when a key set publishes an `oct` key), a key is chosen by
//! `kid` and key type, `exp` is required, and the identity claims are checked.

mod config;
mod jwks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub use config::IssuerConfig;
use jwks::{KeySet, KeySource, Remote, Timing};

/// The longest bearer token looked at.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// The longest principal claim value.
const MAX_PRINCIPAL_CLAIM_BYTES: usize = 256;
/// The most groups a token may carry.
const MAX_GROUPS: usize = 256;
/// The longest group name.
const MAX_GROUP_BYTES: usize = 256;
/// The longest e-mail or name kept; longer ones are dropped.
const MAX_PROFILE_BYTES: usize = 1024;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The principal id: the issuer's `principal_prefix` followed by [`Identity::subject`].
    pub principal: String,
    /// The value of the issuer's principal claim (`sub` unless configured otherwise).
    pub subject: String,
    /// The e-mail claim, when it is a string.
    pub email: Option<String>,
    /// The name claim, when it is a string.
    pub name: Option<String>,
    /// The groups claim (an array of strings, or one string); empty when absent.
    pub groups: Vec<String>,
    /// The token's issuer, as configured.
    pub issuer: String,
}

/// Why a configuration or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The issuer configuration is unusable (checked by [`Verifier::new`]).
    #[error("OIDC configuration: {0}")]
    Config(String),
    /// The token is refused; the message is fit for a 401 and never holds key material.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer's key set could not be fetched, so the token could not be checked.
    #[error("OIDC key set unavailable: {0}")]
    Unavailable(String),
}

fn invalid(why: impl Into<String>) -> OidcError {
    OidcError::Invalid(why.into())
}

/// One configured issuer, ready to verify with.
struct Issuer {
    config: IssuerConfig,
    keys: KeySource,
    /// Everything but the algorithm, which is set per token.
    validation: Validation,
}

struct Inner {
    issuers: Vec<Issuer>,
    by_iss: HashMap<String, usize>,
}

/// Verifies bearer JWTs against the configured issuers. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|i| &i.config.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Verifier {
    /// Checks the issuers (a non-empty `issuer` and `audience`, exactly one of `jwks_file` /
    /// `jwks_url`, an http(s) URL, principal prefixes that are non-empty, not a prefix of one
    /// another and unable to yield `local` or `paddock:...`) and reads every `jwks_file`.
    /// An empty list gives a verifier that refuses every token.
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Verifier, OidcError> {
        Verifier::with_timing(issuers, jwks::DEFAULT_TIMING)
    }

    fn with_timing(issuers: Vec<IssuerConfig>, timing: Timing) -> Result<Verifier, OidcError> {
        config::check_all(&issuers)?;
        // jsonwebtoken picks its crypto backend from its features; should another crate
        // enable a second backend, it would pick none. Name ours (a no-op when one is set).
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let mut client: Option<reqwest::Client> = None;
        let mut built = Vec::with_capacity(issuers.len());
        let mut by_iss = HashMap::new();
        for config in issuers {
            let keys = match (&config.jwks_file, &config.jwks_url) {
                (Some(path), None) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        OidcError::Config(format!(
                            "OIDC issuer {:?}: reading jwks_file {}: {e}",
                            config.issuer,
                            path.display()
                        ))
                    })?;
                    let set = KeySet::parse(&bytes).map_err(|why| {
                        OidcError::Config(format!(
                            "OIDC issuer {:?}: jwks_file {}: {why}",
                            config.issuer,
                            path.display()
                        ))
                    })?;
                    KeySource::Fixed(Arc::new(set))
                }
                (None, Some(url)) => {
                    check_jwks_url(url).map_err(|why| {
                        OidcError::Config(format!(
                            "OIDC issuer {:?}: jwks_url: {why}",
                            config.issuer
                        ))
                    })?;
                    let client = match &client {
                        Some(c) => c.clone(),
                        None => client.insert(Remote::client()?).clone(),
                    };
                    let refresh = config
                        .jwks_refresh_secs
                        .unwrap_or(config::DEFAULT_JWKS_REFRESH_SECS);
                    KeySource::Remote(Remote::new(
                        url.clone(),
                        Duration::from_secs(refresh),
                        timing,
                        client,
                    ))
                }
                // check_all allows exactly one source.
                _ => unreachable!("issuer checked to have exactly one JWKS source"),
            };
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.set_issuer(&[config.issuer.as_str()]);
            validation.set_audience(&config.audience);
            validation.leeway = config.leeway_secs;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.validate_aud = true;
            by_iss.insert(config.issuer.clone(), built.len());
            built.push(Issuer {
                config,
                keys,
                validation,
            });
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuers: built,
                by_iss,
            }),
        })
    }

    /// Whether no issuer is configured (then every token is refused).
    pub fn is_empty(&self) -> bool {
        self.inner.issuers.is_empty()
    }

    /// Whether `token` has the shape of a JWS compact JWT: three base64url segments separated
    /// by dots (the signature may be empty, so that `alg: none` tokens are recognised, and
    /// refused, as JWTs), the first decoding to a JSON object with a string `alg`. Says
    /// nothing about validity.
    pub fn looks_like_jwt(token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let b64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if header.is_empty()
            || payload.is_empty()
            || ![header, payload, signature].into_iter().all(b64url)
        {
            return false;
        }
        decode_segment(header).is_some_and(|h| h.get("alg").is_some_and(Value::is_string))
    }

    /// Verifies `token` and maps its claims to an [`Identity`].
    ///
    /// The header and the unverified `iss` only choose the issuer's key set and the candidate
    /// keys; the signature, `iss`, `aud`, `exp` (required) and `nbf` (when present, both with
    /// the issuer's leeway) are then verified before any claim is used.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        if self.is_empty() {
            return Err(invalid("no OIDC issuer is configured"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT (three dot-separated parts)"));
        };
        let header =
            decode_segment(header).ok_or_else(|| invalid("token header is not base64url JSON"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("token header has no alg"))?;
        let alg = jwks::accepted_algorithm(alg_name).ok_or_else(|| {
            invalid(format!(
                "token algorithm {} is not accepted (only RS*, PS*, ES256, ES384, EdDSA)",
                printable(alg_name)
            ))
        })?;
        if header.contains_key("crit") {
            return Err(invalid(
                "token header has critical extensions (crit), none of which is supported",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(invalid("token header kid is not a string")),
        };
        let unverified = decode_segment(payload)
            .ok_or_else(|| invalid("token payload is not base64url JSON"))?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("token has no iss claim"))?;
        let issuer = match self.inner.by_iss.get(iss) {
            Some(&i) => &self.inner.issuers[i],
            None => return Err(invalid("token issuer is not trusted")),
        };

        let keys = issuer.keys.keys(kid).await?;
        let candidates = keys.candidates(alg, kid);
        if candidates.is_empty() {
            return Err(invalid(match kid {
                Some(_) => "no key of the issuer has the token's kid and algorithm",
                None => "no key of the issuer fits the token's algorithm",
            }));
        }
        let mut validation = issuer.validation.clone();
        validation.algorithms = vec![alg];
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, &validation) {
                Ok(data) => return issuer.identity(&data.claims),
                // Another key of the set may have signed it.
                Err(e) if is_key_mismatch(e.kind()) => continue,
                Err(e) => return Err(refusal(e.kind())),
            }
        }
        Err(invalid("token signature does not verify"))
    }
}

impl Issuer {
    /// Maps verified claims to an identity.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, OidcError> {
        let c = &self.config;
        let subject = match claims.get(&c.principal_claim) {
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(invalid(format!(
                    "token claim {} is not a string",
                    c.principal_claim
                )))
            }
            None => return Err(invalid(format!("token has no {} claim", c.principal_claim))),
        };
        if subject.is_empty() {
            return Err(invalid(format!(
                "token claim {} is empty",
                c.principal_claim
            )));
        }
        if subject.len() > MAX_PRINCIPAL_CLAIM_BYTES {
            return Err(invalid(format!(
                "token claim {} is longer than {MAX_PRINCIPAL_CLAIM_BYTES} bytes",
                c.principal_claim
            )));
        }
        if subject.chars().any(char::is_control) {
            return Err(invalid(format!(
                "token claim {} has control characters",
                c.principal_claim
            )));
        }
        let principal = format!("{}{subject}", c.principal_prefix);
        // The prefix checks make this unreachable; it stays as the last word.
        if config::is_reserved_principal(&principal) {
            return Err(invalid("token names a reserved principal"));
        }
        Ok(Identity {
            principal,
            subject: subject.clone(),
            email: profile_claim(claims, &c.email_claim),
            name: profile_claim(claims, &c.name_claim),
            groups: groups_claim(claims, &c.groups_claim)?,
            issuer: c.issuer.clone(),
        })
    }
}

/// A display claim: kept when it is a string of sane length without control characters.
fn profile_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name) {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_PROFILE_BYTES
                && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

fn groups_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, OidcError> {
    let items: Vec<&Value> = match claims.get(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(one @ Value::String(_)) => vec![one],
        Some(Value::Array(items)) => items.iter().collect(),
        Some(_) => {
            return Err(invalid(format!(
                "token claim {name} is neither a string nor an array"
            )))
        }
    };
    if items.len() > MAX_GROUPS {
        return Err(invalid(format!(
            "token claim {name} has more than {MAX_GROUPS} groups"
        )));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(g)
                if !g.is_empty()
                    && g.len() <= MAX_GROUP_BYTES
                    && !g.chars().any(char::is_control) =>
            {
                Ok(g.clone())
            }
            Value::String(_) => Err(invalid(format!(
                "token claim {name} has a group that is empty, longer than {MAX_GROUP_BYTES} bytes \
                 or has control characters"
            ))),
            _ => Err(invalid(format!(
                "token claim {name} has a group that is not a string"
            ))),
        })
        .collect()
}

/// Decodes one base64url (unpadded) segment holding a JSON object.
fn decode_segment(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A header value fit to quote back: short and plain, else elided.
fn printable(s: &str) -> String {
    if s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("{s:?}")
    } else {
        "(unprintable)".to_owned()
    }
}

/// Errors meaning "this key did not sign it", after which the next candidate key is tried.
fn is_key_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
    )
}

/// The 401 message for an error jsonwebtoken reported once the signature was good (or the
/// token malformed).
fn refusal(kind: &ErrorKind) -> OidcError {
    invalid(match kind {
        ErrorKind::ExpiredSignature => "token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "token issuer does not match".to_owned(),
        ErrorKind::InvalidAudience => "token audience is not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("token claim {claim} has the wrong type"),
        _ => "token is malformed".to_owned(),
    })
}

/// A JWKS URL must be http(s) with a host and no credentials (which would show in errors).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not carry credentials".to_owned());
    }
    if parsed.scheme() == "http" {
        let loopback = match parsed.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        if !loopback {
            tracing::warn!(
                url,
                "OIDC jwks_url is plain http: its keys can be replaced in transit"
            );
        }
    }
    Ok(())
}
