//! Extractors whose rejections are problem+json naming the field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body; a bad one is a 400 that says which field was wrong.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => {
                let text = e.body_text();
                // axum reports "Failed to deserialize ...: <path>: <reason>".
                let detail = text
                    .split_once("target type: ")
                    .map(|(_, d)| d.to_string())
                    .unwrap_or(text);
                let field = detail
                    .split_once(": ")
                    .map(|(f, _)| f.to_string())
                    .filter(|f| !f.contains(' '));
                let mut p = Problem::new(StatusCode::BAD_REQUEST, detail);
                if let Some(f) = field {
                    p = p.field(f);
                } else if let Some(f) = detail_field(&p.0.detail) {
                    p = p.field(f);
                }
                Err(p)
            }
        }
    }
}

pub(crate) fn detail_field(d: &str) -> Option<String> {
    // serde: "unknown field `foo`, expected ..." / "missing field `bar`"
    let start = d.find('`')? + 1;
    let end = start + d[start..].find('`')?;
    (d.contains("field")).then(|| d[start..end].to_string())
}

/// Query parameters; a bad one is a 400 naming it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => {
                let text = e.body_text();
                let detail = text
                    .split_once("string: ")
                    .map(|(_, d)| d.to_string())
                    .unwrap_or(text);
                let mut p = Problem::new(StatusCode::BAD_REQUEST, detail.clone());
                if let Some(f) = detail_field(&detail) {
                    p = p.field(f);
                }
                Err(p)
            }
        }
    }
}

/// A JSON body that may be left out (empty, or only whitespace): then
/// `T::default()`.
pub struct JsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("the body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| JsonOrEmpty(v))
    }
}
