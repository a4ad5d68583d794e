//! Governance: policies, the audit log and usage.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A policy: whom it applies to (principal ids or groups, globs) and the
/// rules it holds them to. `PUT /v1/policies/{name}` (the operator's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// In a `PUT`, taken from the path.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The templates a create may name (globs); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_mb: Option<i64>,
    /// `config` (the settings file's: not changed through the API) or
    /// `api`. Ignored in a `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `GET /v1/policies`: all of them for the operator, those that apply to
/// the caller for anyone else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<Policy>,
}

/// One call in the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The API that carried it: `api`, `hiver`, `flash`, `agenttier`, ...
    pub via: String,
    /// `sandbox.create`, `sandbox.exec`, `file.write`, `policy.put`, ...
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<uuid::Uuid>,
    /// `ok`, or the kind of error: `not_found`, `conflict`, `invalid`,
    /// `forbidden`, `policy_violation`, ...
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /v1/audit`, newest first; `next` is the `before` of the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// `GET /v1/usage`: what the caller's sandboxes come to (the operator's:
/// everyone's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub total: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    pub by_template: std::collections::BTreeMap<String, usize>,
    pub avg_startup_ms: u64,
    pub startup_samples: usize,
}
