//! Errors: RFC 7807 problem details.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error of the native API (`application/problem+json`), and the
/// `error` event of its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type", default = "about_blank")]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    /// The field of the request at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a create or fork the operator's policies refuse (403): each
    /// rule broken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// One rule of one policy a request breaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    pub policy: String,
    /// `templates`, `max_sandboxes`, `max_ttl_secs`, `max_cpu`,
    /// `max_memory_mb` or `max_disk_mb`.
    pub rule: String,
    /// What the rule allows.
    #[schema(value_type = Object)]
    pub limit: serde_json::Value,
    /// What the request asked for.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub message: String,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.status, self.detail),
            None => write!(f, "{}: {}", self.status, self.detail),
        }
    }
}

impl std::error::Error for Problem {}
