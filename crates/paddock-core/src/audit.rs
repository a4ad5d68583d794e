//! The audit log: every mutating call of every API, who made it, through
//! which API, on which sandbox, when, and how it ended. Records are kept in
//! the store's `audit` table; the engine writes them with the next
//! transaction that writes events, or within a few milliseconds
//! ([`crate::store::Store::defer_audit`]), so that an exec costs no
//! transaction of its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its place in the log (0 until written).
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The API that carried the call (`api`, `hiver`, `flash`,
    /// `agenttier`, ...).
    pub via: String,
    /// What was asked: `sandbox.create`, `sandbox.exec`, `file.write`, ...
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Uuid>,
    /// `ok`, or the kind of error that refused it ([`Error::kind`]).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What else is worth keeping (a template, a duration, a path).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Which records a read returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this principal's (none: everyone's, for the operator).
    pub principal: Option<String>,
    pub sandbox: Option<Uuid>,
    /// Actions starting with this (`sandbox.` for every sandbox action).
    pub action: Option<String>,
    /// Records before this `seq` (a page's last).
    pub before: Option<i64>,
    pub limit: usize,
}

impl Error {
    /// A short name of the kind of error: what the audit log records as a
    /// refused call's outcome.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) | Error::Exists(_) => "conflict",
            Error::Invalid { .. } => "invalid",
            Error::Unavailable { .. } => "unavailable",
            Error::Unsupported(_) => "unsupported",
            Error::Quota(_) => "quota",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) | Error::ForbiddenField { .. } => "forbidden",
            Error::PolicyViolation(_) => "policy_violation",
            Error::Timeout(_) => "timeout",
            Error::Internal(_) => "internal",
        }
    }
}
