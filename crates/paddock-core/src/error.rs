use thiserror::Error;

/// Every error the engine reports. Dialect adapters map these onto their
/// own status codes; the engine knows no wire format.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Conflict(String),
    /// A name (or key, or binding) already taken: a conflict that dialects
    /// with a status of its own (gRPC's `ALREADY_EXISTS`) tell apart.
    #[error("{0}")]
    Exists(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} is unavailable: {reason}")]
    Unavailable { what: String, reason: String },
    #[error("{0} is not supported by this daemon")]
    Unsupported(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A request field asks for what the operator does not allow (a host
    /// directory outside the allowed roots): 403, naming the field.
    #[error("{field}: {reason}")]
    ForbiddenField { field: String, reason: String },
    /// A create or fork breaks the operator's policies: one entry per rule
    /// broken (403).
    #[error("policy violation: {}", violations_text(.0))]
    PolicyViolation(Vec<Violation>),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// One rule of one policy that a request breaks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    pub policy: String,
    /// `templates`, `max_sandboxes`, `max_ttl_secs`, `max_cpu`,
    /// `max_memory_mb` or `max_disk_mb`.
    pub rule: String,
    /// What the rule allows.
    pub limit: serde_json::Value,
    /// What the request asked for.
    pub value: serde_json::Value,
    pub message: String,
}

fn violations_text(v: &[Violation]) -> String {
    v.iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn forbidden_field(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::ForbiddenField {
            field: field.into(),
            reason: reason.into(),
        }
    }
    /// The request field an error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } | Error::ForbiddenField { field, .. } => Some(field),
            _ => None,
        }
    }
    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Internal(format!("store: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Internal(format!("store json: {e}"))
    }
}
