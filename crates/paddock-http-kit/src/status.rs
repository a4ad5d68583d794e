//! The HTTP status of each engine error. Dialects wrap it in their own
//! bodies (problem+json, hiver's `{"error": ...}`, flash's envelope) and
//! may answer differently where their SDK needs it; this is the default.

use http::StatusCode;
use paddock_core::Error;

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict(_) | Error::Exists(_) => StatusCode::CONFLICT,
        Error::Invalid { .. } => StatusCode::BAD_REQUEST,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) | Error::ForbiddenField { .. } | Error::PolicyViolation(_) => {
            StatusCode::FORBIDDEN
        }
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status() {
        for (e, s) in [
            (Error::not_found("x"), 404),
            (Error::Conflict("x".into()), 409),
            (Error::invalid("f", "x"), 400),
            (Error::Unsupported("x".into()), 501),
            (Error::Quota("x".into()), 429),
            (Error::Unauthenticated("x".into()), 401),
            (Error::Forbidden("x".into()), 403),
            (Error::PolicyViolation(vec![]), 403),
            (Error::Timeout("x".into()), 504),
            (Error::Internal("x".into()), 500),
        ] {
            assert_eq!(status_of(&e).as_u16(), s, "{e:?}");
        }
    }
}
