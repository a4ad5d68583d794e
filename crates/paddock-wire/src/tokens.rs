//! Tokens the daemon signs: scoped, expiring, revocable bearers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a token may do, narrower than its principal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenScope {
    /// Nothing that changes anything (no exec, no writes, no lifecycle).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Only these sandboxes of the caller's are seen and acted on (and
    /// none is made); absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<Uuid>>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// Seconds it lives; 0 or absent: a day; at most 30 days.
    #[serde(default)]
    pub ttl_secs: u64,
    /// Nothing that changes anything (no exec, no writes, no lifecycle).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Only these sandboxes of the caller's; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<Uuid>>,
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Its id: what revokes it.
    pub jti: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub scope: TokenScope,
}

/// A token just made: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// The bearer (a JWT the daemon signed).
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/tokens/rotate-key`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyRotated {
    /// The signing key's id from now on.
    pub kid: String,
}
