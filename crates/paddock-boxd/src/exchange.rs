//! boxd's token exchange, `POST /api/v1/auth/token {"api_key": "..."}`:
//! a Paddock API key for a session token the daemon signs
//! (`Engine::exchange_key`), answered `{"token", "expires_at"}` (unix
//! seconds). HTTP/1.1 on the gRPC port, as the SDK's URLs have it. No CORS
//! headers: no web page reads what it answers.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use paddock_core::engine::Engine;
use serde_json::json;

pub fn routes(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/v1/auth/token", post(exchange))
        // Read whole (a client still writing when refused sees a broken
        // pipe, not the 413): far past any key, bounded.
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(engine)
}

fn answer(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// The API key in a body, or what is wrong with it.
pub fn api_key_of(body: &[u8]) -> Result<String, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let o = v
        .as_object()
        .ok_or("the body is not a JSON object {\"api_key\": ...}")?;
    match o.get("api_key") {
        // An empty key is a key that opens nothing (401), not bad input.
        Some(serde_json::Value::String(k)) => Ok(k.clone()),
        Some(_) => Err("api_key: not a string"),
        None => Err("api_key: required"),
    }
}

async fn exchange(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let key = match api_key_of(&body) {
        Ok(k) => k,
        Err(e) => return answer(StatusCode::BAD_REQUEST, e),
    };
    match engine.exchange_key(&key) {
        Ok(t) => (
            StatusCode::OK,
            axum::Json(json!({
                "token": t.token,
                "expires_at": t.info.expires_at.timestamp(),
            })),
        )
            .into_response(),
        Err(paddock_core::Error::Unauthenticated(_)) => {
            answer(StatusCode::UNAUTHORIZED, "invalid or expired API key")
        }
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
