//! RFC 7807 problem details (`paddock_wire::Problem`), and the mapping of
//! engine errors onto them.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use paddock_core::Error;
use serde::Serialize;

/// A problem this API answers with: the wire's [`paddock_wire::Problem`].
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Problem(pub Box<paddock_wire::Problem>);

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem(Box::new(paddock_wire::Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            violations: Vec::new(),
        }))
    }

    pub fn field(mut self, f: impl Into<String>) -> Problem {
        self.0.field = Some(f.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

pub use paddock_http_kit::status_of;

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        let status = status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
        }
        let mut p = Problem::new(status, e.to_string());
        if let Error::PolicyViolation(v) = &e {
            p.0.violations = v
                .iter()
                .map(|v| paddock_wire::Violation {
                    policy: v.policy.clone(),
                    rule: v.rule.clone(),
                    limit: v.limit.clone(),
                    value: v.value.clone(),
                    message: v.message.clone(),
                })
                .collect();
        }
        match e.field() {
            Some(field) => p.field(field),
            None => p,
        }
    }
}

pub type ApiResult<T> = Result<T, Problem>;
