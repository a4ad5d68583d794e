//! The operator's description of one trusted issuer, and the checks on a list of them.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::OidcError;

/// The largest clock-skew allowance accepted, in seconds.
pub(crate) const MAX_LEEWAY_SECS: u64 = 600;

/// One issuer whose tokens are trusted, as written in the daemon's TOML configuration.
///
/// ```toml
/// [[oidc.issuer]]
/// issuer = "https://kubernetes.default.svc"
/// audience = "paddock"                      # or ["paddock", "https://paddock.example"]
/// jwks_file = "/etc/paddock/k8s-jwks.json"  # exactly one of jwks_file / jwks_url
/// principal_prefix = "k8s:"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Must equal the token's `iss` claim exactly.
    pub issuer: String,
    /// The token's `aud` (a string or an array) must contain one of these. In TOML either a
    /// string or an array of strings.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// A JWKS document on disk, read once when the verifier is built.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// An `http(s)` URL serving the JWKS: fetched on first use, cached, fetched again every
    /// `jwks_refresh_secs` and (at most once per minute) when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often a `jwks_url` is fetched again, in seconds (default 3600). Only with `jwks_url`.
    #[serde(default)]
    pub jwks_refresh_secs: Option<u64>,
    /// The claim naming the principal (default `sub`).
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim holding an e-mail address (default `email`).
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// The claim holding a display name (default `name`).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// The claim holding the groups: an array of strings or one string (default `groups`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The principal id is this prefix followed by the principal claim (default `oidc:`).
    #[serde(default = "default_principal_prefix")]
    pub principal_prefix: String,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds (default 60, at most 600).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

/// The refresh interval of a `jwks_url` when `jwks_refresh_secs` is not given.
pub(crate) const DEFAULT_JWKS_REFRESH_SECS: u64 = 3600;

fn default_principal_claim() -> String {
    "sub".to_owned()
}
fn default_email_claim() -> String {
    "email".to_owned()
}
fn default_name_claim() -> String {
    "name".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_principal_prefix() -> String {
    "oidc:".to_owned()
}
fn default_leeway_secs() -> u64 {
    60
}

impl IssuerConfig {
    /// An issuer with the given `iss` and audience, every other field at its default and no
    /// key source yet (set `jwks_file` or `jwks_url`).
    pub fn new(issuer: impl Into<String>, audience: Vec<String>) -> IssuerConfig {
        IssuerConfig {
            issuer: issuer.into(),
            audience,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: None,
            principal_claim: default_principal_claim(),
            email_claim: default_email_claim(),
            name_claim: default_name_claim(),
            groups_claim: default_groups_claim(),
            principal_prefix: default_principal_prefix(),
            leeway_secs: default_leeway_secs(),
        }
    }
}

/// Accepts `"x"` as well as `["x", "y"]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A principal id that would read as a built-in one: `local`, or anything under `paddock:`.
pub(crate) fn is_reserved_principal(principal: &str) -> bool {
    principal == "local" || principal.starts_with("paddock:")
}

/// Checks one issuer on its own; `Err` holds the reason, without the issuer's name.
fn check_one(c: &IssuerConfig) -> Result<(), String> {
    if c.issuer.trim().is_empty() {
        return Err("issuer is empty".into());
    }
    if c.issuer.trim() != c.issuer || has_control(&c.issuer) {
        return Err("issuer has surrounding white space or control characters".into());
    }
    if c.audience.is_empty() {
        return Err("audience is empty".into());
    }
    if c.audience.iter().any(|a| a.trim().is_empty()) {
        return Err("audience has an empty entry".into());
    }
    match (&c.jwks_file, &c.jwks_url) {
        (Some(_), Some(_)) => return Err("both jwks_file and jwks_url are set; set one".into()),
        (None, None) => return Err("neither jwks_file nor jwks_url is set; set one".into()),
        (Some(path), None) => {
            if path.as_os_str().is_empty() {
                return Err("jwks_file is empty".into());
            }
            if c.jwks_refresh_secs.is_some() {
                return Err("jwks_refresh_secs applies only to jwks_url".into());
            }
        }
        (None, Some(_)) => {
            if c.jwks_refresh_secs == Some(0) {
                return Err("jwks_refresh_secs must be at least 1".into());
            }
        }
    }
    for (field, value) in [
        ("principal_claim", &c.principal_claim),
        ("email_claim", &c.email_claim),
        ("name_claim", &c.name_claim),
        ("groups_claim", &c.groups_claim),
    ] {
        if value.is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    let prefix = &c.principal_prefix;
    if prefix.is_empty() {
        return Err("principal_prefix is empty".into());
    }
    if has_control(prefix) || prefix.chars().any(char::is_whitespace) {
        return Err("principal_prefix has white space or control characters".into());
    }
    // Whatever follows the prefix, the principal must not read as `local` or `paddock:...`.
    if prefix.starts_with("paddock:") || "paddock:".starts_with(prefix.as_str()) {
        return Err(format!(
            "principal_prefix {prefix:?} could yield principals under the reserved `paddock:`"
        ));
    }
    if "local".starts_with(prefix.as_str()) {
        return Err(format!(
            "principal_prefix {prefix:?} could yield the reserved principal `local`"
        ));
    }
    if c.leeway_secs > MAX_LEEWAY_SECS {
        return Err(format!("leeway_secs is above {MAX_LEEWAY_SECS}"));
    }
    Ok(())
}

/// Checks the issuers alone and against each other (no file or network access).
pub(crate) fn check_all(issuers: &[IssuerConfig]) -> Result<(), OidcError> {
    for (i, c) in issuers.iter().enumerate() {
        check_one(c).map_err(|why| {
            OidcError::Config(format!("OIDC issuer #{} {:?}: {why}", i + 1, c.issuer))
        })?;
    }
    for (i, a) in issuers.iter().enumerate() {
        for b in &issuers[i + 1..] {
            if a.issuer == b.issuer {
                return Err(OidcError::Config(format!(
                    "OIDC issuer {:?} is configured twice",
                    a.issuer
                )));
            }
            // Distinct is not enough: with `a:` and `a:b:`, `a:` + `b:x` = `a:b:` + `x`.
            let (pa, pb) = (&a.principal_prefix, &b.principal_prefix);
            if pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str()) {
                return Err(OidcError::Config(format!(
                    "OIDC issuers {:?} and {:?}: principal_prefix {pa:?} and {pb:?} overlap \
                     (each issuer needs a prefix that is not a prefix of another's)",
                    a.issuer, b.issuer
                )));
            }
        }
    }
    Ok(())
}
