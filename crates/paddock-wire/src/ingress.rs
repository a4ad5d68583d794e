//! The ingress: sandboxes' proxies and bound domains
//! (`paddock serve --ingress-listen`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One of a sandbox's proxies: the ingress routes `<name>.<box>.<zone>`
/// (the default proxy: `<box>.<zone>` and bound domains) to its port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Proxy {
    /// A DNS label; `default` is the sandbox's default proxy.
    pub name: String,
    /// 0: the lowest port the sandbox listens on, found at each request.
    pub port: u16,
    /// Where the ingress serves it (absent while the ingress is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /v1/sandboxes/{id}/proxies`: the default first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProxyList {
    pub proxies: Vec<Proxy>,
}

/// `POST /v1/sandboxes/{id}/proxies`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyCreate {
    /// A DNS label (1-63 of a-z, 0-9 and -); absent, `""` or `default`:
    /// the default proxy.
    #[serde(default)]
    pub name: String,
    /// 0 or absent: the lowest port the sandbox listens on.
    #[serde(default)]
    pub port: u16,
}

/// `PUT /v1/sandboxes/{id}/proxies/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyPort {
    /// 0: the lowest port the sandbox listens on.
    pub port: u16,
}

/// An external domain bound to a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Domain {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub sandbox: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /v1/domains`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<Domain>,
}

/// `POST /v1/domains`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainBind {
    /// A DNS name of two labels or more, outside the ingress's zone.
    pub domain: String,
    /// A sandbox of the caller's, by id.
    pub sandbox: Uuid,
}

/// `GET /v1/ingress`: where the ingress is and what to trust.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ingress {
    /// Whether the daemon runs an ingress; the rest is absent otherwise.
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `https` or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Paddock's CA (PEM), when the ingress's certificates are its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}
