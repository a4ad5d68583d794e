//! flash-sandbox's REST/JSON transport: `HTTPClient` of 0.1.1, plus the two
//! calls its README documents on HTTP (`run_python`, `get_platform_info`)
//! in the form later releases send them.
//!
//! Keys are the proto's snake_case names. Errors are JSON objects in the
//! envelope later releases parse (`code`, `message`, `origin`, `outcome`);
//! 0.1.1 keeps the body verbatim as the error's detail and maps 404 to
//! `SandboxNotFoundError`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paddock_core::model::Sandbox;
use paddock_core::Error;
use paddock_http_kit::{Accept, Guard, Refusal};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{exit_code, status_word, type_word, Flash, Start, HTTP_OUTPUT_LIMIT};

/// The REST router, for a listener of its own. Requests under any path
/// prefix (`/v1/service/sandbox/sandboxes/...`) reach the same routes.
/// Behind `guard`: the API has no authentication, so no web page may
/// drive it (see `paddock_http_kit`). Every body is JSON.
pub fn router(flash: Flash, guard: &Guard) -> Router {
    Router::new()
        .route("/sandboxes", post(start).get(list))
        .route("/sandboxes/{id}", get(status).delete(stop))
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route("/sandboxes/{id}/snapshot", post(snapshot))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/run_python", post(run_python))
        .route("/sandboxes/{id}/platform_info", get(platform_info))
        .fallback(|uri: Uri| async move {
            error_body(
                StatusCode::NOT_FOUND,
                "route_not_found",
                format!("no flash-sandbox route for {}", uri.path()),
                None,
            )
        })
        .layer(DefaultBodyLimit::max(16 << 20))
        .layer(guard.layer(|_, _| Accept::Json, refused))
        .with_state(flash)
}

/// Serves the REST API on `listener` until `shutdown`.
pub async fn serve<L>(
    listener: L,
    flash: Flash,
    guard: Guard,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use axum::ServiceExt;
    let app = tower::util::MapRequest::new(router(flash, &guard), unprefix::<axum::body::Body>);
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Whether `path` has the shape of one of this API's routes.
fn is_route(path: &str) -> bool {
    let mut segs = path.trim_start_matches('/').split('/');
    if segs.next() != Some("sandboxes") {
        return false;
    }
    let rest: Vec<&str> = segs.collect();
    match rest.as_slice() {
        [] | [_] => true,
        [_, op] => matches!(
            *op,
            "exec" | "metrics" | "snapshot" | "resume" | "run_python" | "platform_info"
        ),
        _ => false,
    }
}

/// The path from the `/sandboxes` segment on where the rest is a route:
/// what a reverse proxy in front of the daemon would have stripped (its
/// prefix may hold a `sandboxes` segment of its own).
pub fn strip_prefix(path: &str) -> Option<String> {
    if is_route(path) {
        return None;
    }
    path.match_indices("/sandboxes")
        .map(|(i, _)| &path[i..])
        .find(|rest| is_route(rest))
        .map(String::from)
}

/// Rewrites a prefixed request's URI before routing.
pub fn unprefix<B>(req: http::Request<B>) -> http::Request<B> {
    crate::rewrite_path(req, strip_prefix)
}

// ---- errors ---------------------------------------------------------------

/// `outcome`: whether the call may have had an effect (later SDK releases
/// retry only what was `not_dispatched`).
fn error_body(status: StatusCode, code: &str, message: String, field: Option<&str>) -> Response {
    let outcome = match status {
        StatusCode::INTERNAL_SERVER_ERROR
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => "uncertain",
        _ => "not_dispatched",
    };
    let mut body = json!({
        "code": code,
        "message": message,
        "origin": "worker",
        "outcome": outcome,
    });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

/// The guard's refusal in the error envelope.
fn refused(r: Refusal) -> Response {
    let code = match r.status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "forbidden",
    };
    error_body(r.status, code, r.message, Some(r.field))
}

pub struct FError(Error);

impl From<Error> for FError {
    fn from(e: Error) -> FError {
        FError(e)
    }
}

impl IntoResponse for FError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = paddock_http_kit::status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("flash: {e}");
        }
        let code = match &e {
            Error::NotFound { what } if what.starts_with("sandbox") => "sandbox_not_found",
            Error::NotFound { .. } => "not_found",
            Error::Invalid { .. } => "invalid_argument",
            Error::Conflict(_) | Error::Exists(_) => "failed_precondition",
            Error::Unavailable { .. } => "unavailable",
            Error::Unsupported(_) => "not_implemented",
            Error::Quota(_) => "resource_exhausted",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) | Error::ForbiddenField { .. } => "permission_denied",
            Error::PolicyViolation(_) => "policy_violation",
            Error::Timeout(_) => "deadline_exceeded",
            Error::Internal(_) => "internal",
        };
        let field = e.field().map(str::to_string);
        error_body(status, code, e.to_string(), field.as_deref())
    }
}

type FResult<T> = Result<T, FError>;

/// A JSON object body (an empty body reads as `{}`), with the path of a
/// field of the wrong type in the error. A body must say it is JSON: a
/// web page can POST `text/plain` to loopback without asking first, and
/// this API has no authentication.
fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> FResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || m.ends_with("+json")
            });
        if !json {
            return Err(FError(Error::invalid(
                "Content-Type",
                "a request body must be application/json",
            )));
        }
        body
    };
    // serde would take a struct from an array too.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FError(Error::invalid("body", "expected a JSON object")));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if matches!(path.as_str(), "." | "?" | "") {
            "body".to_string()
        } else {
            path
        };
        let reason = if inner.is_syntax() || inner.is_eof() {
            format!("not valid JSON: {inner}")
        } else {
            inner.to_string()
        };
        FError(Error::invalid(field, reason))
    })
}

fn detail(sb: &Sandbox) -> Value {
    json!({
        "id": sb.id.to_string(),
        "status": status_word(sb.state),
        "type": type_word(sb.config.isolation),
        "image": sb.config.image,
        "command": sb.config.main_process(),
        "memory_mb": sb.config.memory_mb,
        "cpu_cores": sb.config.cpu,
        "created_at": sb.created_at,
        "message": sb.message,
    })
}

// ---- handlers -------------------------------------------------------------

#[derive(Deserialize)]
struct StartBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    memory_mb: Option<i64>,
    cpu_cores: Option<f64>,
    kernel_image: Option<String>,
    initrd_path: Option<String>,
    snapshot_path: Option<String>,
    mem_file_path: Option<String>,
}

async fn start(State(f): State<Flash>, headers: HeaderMap, body: Bytes) -> FResult<Response> {
    let b: StartBody = parse(&headers, &body)?;
    let firecracker_fields = [
        ("kernel_image", &b.kernel_image),
        ("initrd_path", &b.initrd_path),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .map(|(k, _)| k)
    .collect();
    let sb = f
        .start(Start {
            kind: b.kind.unwrap_or_default(),
            image: b.image.unwrap_or_default(),
            command: b.command.unwrap_or_default(),
            memory_mb: b.memory_mb.unwrap_or(0),
            cpu_cores: b.cpu_cores.unwrap_or(0.0),
            firecracker_fields,
            snapshot_path: b.snapshot_path,
            mem_file_path: b.mem_file_path,
        })
        .await
        .map_err(|e| match e {
            // Over HTTP a 404 means "no such sandbox" to the SDK.
            Error::NotFound { what } if what.starts_with("image") => {
                Error::invalid("image", format!("{what} not found"))
            }
            Error::NotFound { what } if what.starts_with("snapshot") => {
                Error::invalid("snapshot_path", format!("{what} not found"))
            }
            other => other,
        })?;
    Ok((StatusCode::CREATED, Json(detail(&sb))).into_response())
}

async fn list(State(f): State<Flash>) -> FResult<Json<Value>> {
    let all = f.list()?;
    Ok(Json(
        json!({ "sandboxes": all.iter().map(detail).collect::<Vec<_>>() }),
    ))
}

async fn status(State(f): State<Flash>, Path(id): Path<String>) -> FResult<Json<Value>> {
    Ok(Json(detail(&f.sandbox(&id)?)))
}

async fn stop(State(f): State<Flash>, Path(id): Path<String>) -> FResult<StatusCode> {
    f.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ExecBody {
    command: Option<Vec<String>>,
    /// A shell script (what later releases send for a string command).
    script: Option<String>,
}

async fn exec(
    State(f): State<Flash>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FResult<Json<Value>> {
    let b: ExecBody = parse(&headers, &body)?;
    let argv = b.command.unwrap_or_default();
    if !argv.is_empty() && b.script.is_some() {
        return Err(FError(Error::invalid(
            "command",
            "give `command` or `script`, not both",
        )));
    }
    let r = f.exec(&id, argv, b.script, HTTP_OUTPUT_LIMIT).await?;
    Ok(Json(json!({
        "stdout": r.stdout,
        "stderr": r.stderr,
        "exit_code": exit_code(&r),
        "timed_out": r.timed_out,
        "duration_ms": r.duration_ms,
    })))
}

async fn metrics(State(f): State<Flash>, Path(id): Path<String>) -> FResult<Json<Value>> {
    let m = f.metrics(&id).await?;
    Ok(Json(json!({
        "memory_usage_bytes": m.memory_bytes,
        "memory_limit_bytes": m.memory_limit_bytes,
        "memory_percent": m.memory_percent,
        "cpu_percent": m.cpu_percent,
        "pids_current": m.pids,
        "net_rx_bytes": m.net_rx_bytes,
        "net_tx_bytes": m.net_tx_bytes,
        "block_read_bytes": m.block_read_bytes,
        "block_write_bytes": m.block_write_bytes,
    })))
}

async fn snapshot(State(f): State<Flash>, Path(id): Path<String>) -> FResult<Json<Value>> {
    let snap = f.snapshot(&id).await?;
    Ok(Json(json!({
        "snapshot_path": snap.snapshot_path,
        "mem_file_path": snap.mem_file_path,
    })))
}

async fn resume(State(f): State<Flash>, Path(id): Path<String>) -> FResult<Json<Value>> {
    Ok(Json(detail(&f.resume(&id).await?)))
}

#[derive(Deserialize)]
struct PythonBody {
    code: Option<String>,
}

async fn run_python(
    State(f): State<Flash>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FResult<Json<Value>> {
    let b: PythonBody = parse(&headers, &body)?;
    let code = b
        .code
        .ok_or_else(|| FError(Error::invalid("code", "the Python code is required")))?;
    let r = f.run_python(&id, &code, HTTP_OUTPUT_LIMIT).await?;
    Ok(Json(json!({
        "result": r.stdout,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "exit_code": r.exit_code,
    })))
}

async fn platform_info(State(f): State<Flash>, Path(id): Path<String>) -> FResult<Json<Value>> {
    Ok(Json(json!({ "info": f.platform_info(&id).await? })))
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn prefixes_are_stripped_up_to_the_first_sandboxes_segment() {
        assert_eq!(strip_prefix("/sandboxes"), None);
        assert_eq!(strip_prefix("/sandboxes/x/exec"), None);
        assert_eq!(
            strip_prefix("/v1/service/sandbox/sandboxes").as_deref(),
            Some("/sandboxes")
        );
        assert_eq!(
            strip_prefix("/v1/service/sandbox/sandboxes/ab-1/exec").as_deref(),
            Some("/sandboxes/ab-1/exec")
        );
        // A segment that only starts with "sandboxes" is not one.
        assert_eq!(
            strip_prefix("/p/sandboxesx/sandboxes/1").as_deref(),
            Some("/sandboxes/1")
        );
        // A prefix with a sandboxes segment of its own.
        assert_eq!(
            strip_prefix("/team/sandboxes/api/sandboxes/ab/exec").as_deref(),
            Some("/sandboxes/ab/exec")
        );
        assert_eq!(
            strip_prefix("/team/sandboxes/api/sandboxes").as_deref(),
            Some("/sandboxes")
        );
        assert_eq!(strip_prefix("/nothing/here"), None);
    }
}
