//! The agenttier dialect (SDK 0.1.1 and 0.8.1): its REST API under
//! `/api/v1` on a listener of its own, mapped onto engine calls and nothing
//! else.
//!
//! - A sandbox is named within a namespace; the engine knows it by a key
//!   derived from both ([`wire::key_of`]) and labels that carry them, and
//!   the SDK by an id: the name in `default`, `name.namespace` elsewhere.
//! - Templates are the engine's (the operator's from the settings file,
//!   and the caller's own), served as `ClusterSandboxTemplate`s.
//! - Auth: `X-API-Key` (a Paddock key), `Authorization: Bearer` (a key or
//!   a JWT from an issuer the operator trusts); no header only where the
//!   daemon lets keyless requests in (loopback, behind the guard against
//!   web pages), as the operator.
//! - Policies, the audit log and usage are the engine's; a policy breach is
//!   agenttier's 403 `policy_violation` with one violation per rule.
//! - 0.8.1's agent mode (`configure`, `invoke`) is in `agent.rs`; files and
//!   archives in `files.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use paddock_core::engine::Engine;
use paddock_core::model::{ExecRequest, ListQuery, Principal, Sandbox, SandboxSpec, State as St};
use paddock_core::Error;
use paddock_http_kit::{Accept, Guard};

mod agent;
mod files;
pub mod wire;

use wire::*;

/// Whether requests without credentials are let in (as the operator).
#[derive(Clone)]
pub enum Keyless {
    /// On loopback: let in, behind the guard against web pages.
    Guarded(Guard),
    /// Beyond loopback, or `--require-auth`: 401.
    Refused,
}

#[derive(Clone)]
struct At {
    engine: Arc<Engine>,
    keyless: Keyless,
    invokes: agent::Invokes,
}

// ---- errors ----------------------------------------------------------------

/// An error as agenttier's SDK reads it: `{"error": message}` (plus the
/// field at fault), and for a policy breach `{"error": "policy_violation",
/// "violations": [...]}`.
pub struct AtError(StatusCode, serde_json::Value);

impl AtError {
    fn new(status: StatusCode, msg: impl Into<String>) -> AtError {
        AtError(status, serde_json::json!({ "error": msg.into() }))
    }
    fn field(status: StatusCode, field: &str, msg: impl std::fmt::Display) -> AtError {
        AtError(
            status,
            serde_json::json!({ "error": format!("{field}: {msg}"), "field": field }),
        )
    }
}

impl From<Error> for AtError {
    fn from(e: Error) -> AtError {
        let status = paddock_http_kit::status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
        }
        match &e {
            Error::PolicyViolation(v) => AtError(
                status,
                serde_json::json!({
                    "error": "policy_violation",
                    "message": e.to_string(),
                    "violations": v,
                }),
            ),
            _ => {
                let mut body = serde_json::json!({ "error": e.to_string() });
                if let Some(f) = e.field() {
                    body["field"] = f.into();
                }
                AtError(status, body)
            }
        }
    }
}

impl IntoResponse for AtError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type AtResult<T> = Result<T, AtError>;

/// A JSON body, or a 400 naming what is wrong with it (never a panic).
struct Body_<T>(T);

impl<T, S> axum::extract::FromRequest<S> for Body_<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AtError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AtError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| AtError::new(e.status(), format!("body: {}", e.body_text())))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(Body_)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "body" } else { path.as_str() };
                AtError::field(StatusCode::BAD_REQUEST, field, e.inner())
            })
    }
}

/// An axum extractor of the request's parts whose refusal is a 400 in
/// agenttier's body, naming `$what`.
macro_rules! answered_as_400 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        pub(crate) struct $name<T>(pub T);

        impl<T, S> FromRequestParts<S> for $name<T>
        where
            T: serde::de::DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = AtError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, AtError> {
                axum::extract::$name::<T>::from_request_parts(parts, state)
                    .await
                    .map(|x| $name(x.0))
                    .map_err(|e| AtError::field(StatusCode::BAD_REQUEST, $what, e.body_text()))
            }
        }
    };
}

answered_as_400!(
    /// The query.
    Query,
    "query"
);
answered_as_400!(
    /// The path's parameters.
    Path,
    "path"
);

// ---- auth ------------------------------------------------------------------

/// What each route takes as a body, for the guard (keyless requests only).
fn accept(method: &Method, path: &str) -> Accept {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "sandboxes", _, "ports", _, "preview", ..] => Accept::Proxy,
        ["api", "v1", "sandboxes", _, "files", ..] if method == Method::PUT => {
            Accept::Only(&["application/octet-stream"])
        }
        ["api", "v1", "sandboxes", _, "invoke"] => {
            Accept::Only(&["application/json", "text/plain", "application/octet-stream"])
        }
        _ => Accept::Json,
    }
}

/// The credential a request brings: `X-API-Key` first (as the SDK
/// prefers it), then a bearer token.
/// An `Authorization` header of another scheme is an empty credential
/// (refused), never the absence of one.
fn credential(h: &HeaderMap) -> Option<String> {
    if let Some(k) = h.get("x-api-key") {
        return Some(k.to_str().map(|k| k.trim().to_string()).unwrap_or_default());
    }
    h.get(header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

async fn auth(State(st): State<At>, mut req: Request, next: Next) -> Response {
    let principal = match credential(req.headers()) {
        Some(t) if t.is_empty() => {
            return AtError::new(
                StatusCode::UNAUTHORIZED,
                "send X-API-Key: <key> or Authorization: Bearer <key or token>",
            )
            .into_response()
        }
        Some(t) => match st.engine.authenticate(&t).await {
            Ok(p) => p,
            Err(e) => return AtError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        },
        None => match &st.keyless {
            Keyless::Guarded(g) => {
                if let Err(r) = g.check(&req, accept(req.method(), req.uri().path())) {
                    return AtError::field(r.status, r.field, r.message).into_response();
                }
                Principal::local()
            }
            Keyless::Refused => {
                return AtError::new(
                    StatusCode::UNAUTHORIZED,
                    "credentials are required: X-API-Key or Authorization: Bearer",
                )
                .into_response()
            }
        },
    };
    req.extensions_mut().insert(principal.via("agenttier"));
    next.run(req).await
}

type P = Extension<Principal>;

/// The router: every route under `/api/v1`.
pub fn router(engine: Arc<Engine>, keyless: Keyless) -> Router {
    let st = At {
        engine,
        keyless,
        invokes: Default::default(),
    };
    let api = Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(inspect).delete(terminate))
        .route("/sandboxes/{id}/stop", post(stop))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/exec", post(exec))
        .route("/sandboxes/{id}/ports", get(ports).post(forward_port))
        .route(
            "/sandboxes/{id}/ports/{port}",
            axum::routing::delete(remove_port),
        )
        .route("/sandboxes/{id}/ports/{port}/preview", any(preview_root))
        .route("/sandboxes/{id}/ports/{port}/preview/", any(preview_root))
        .route("/sandboxes/{id}/ports/{port}/preview/{*rest}", any(preview))
        .route("/sandboxes/{id}/clone", post(clone))
        .route("/sandboxes/{id}/files/", get(files::list))
        .route(
            "/sandboxes/{id}/files/{*path}",
            get(files::read).put(files::write),
        )
        .route("/sandboxes/{id}/archive", get(files::archive))
        .route("/sandboxes/{id}/configure", post(agent::configure))
        .route("/sandboxes/{id}/invoke", post(agent::invoke))
        .route("/sandboxes/{id}/invoke/cancel", post(agent::cancel))
        .route("/templates", get(templates))
        .route("/templates/{name}", get(template))
        .route("/user/me", get(me))
        .route("/audit", get(audit))
        .route("/analytics/usage", get(usage));
    Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { AtError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        // JSON bodies are small; uploads, configure and invoke read theirs
        // with limits of their own, previews pass theirs through.
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn_with_state(st.clone(), auth))
        .with_state(st)
}

// ---- sandboxes ---------------------------------------------------------------

impl At {
    /// The sandbox an id names, if it is `p`'s (404 otherwise).
    fn sandbox(&self, p: &Principal, id: &str) -> AtResult<Sandbox> {
        let not_found = || AtError::new(StatusCode::NOT_FOUND, format!("sandbox {id:?} not found"));
        let (ns, name) = parse_id(id).ok_or_else(not_found)?;
        match self.engine.find(p, &key_of(&ns, &name)) {
            Ok(sb) if sb.labels.get(NAME) == Some(&name) => Ok(sb),
            Ok(_) | Err(Error::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A conflict over a name, said with the name (the engine knows its key).
fn taken(e: Error, ns: &str, name: &str) -> AtError {
    match e {
        Error::Conflict(_) | Error::Exists(_) => AtError::new(
            StatusCode::CONFLICT,
            format!("a sandbox named {name:?} already exists in namespace {ns:?}"),
        ),
        e => e.into(),
    }
}

fn check_name(field: &str, v: &str) -> AtResult<()> {
    if valid_name(v) {
        Ok(())
    } else {
        Err(AtError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!(
                "{v:?} is not a valid name: 1-63 lower-case letters, digits or '-', \
                 starting and ending with a letter or digit (RFC 1123)"
            ),
        ))
    }
}

async fn create(
    State(st): State<At>,
    Extension(p): P,
    Body_(req): Body_<CreateRequest>,
) -> AtResult<Response> {
    let ns = req
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    check_name("name", &req.name)?;
    check_name("namespace", &ns)?;
    if let Some(k) = &req.template_ref.kind {
        if !matches!(k.as_str(), "ClusterSandboxTemplate" | "SandboxTemplate") {
            return Err(AtError::field(
                StatusCode::BAD_REQUEST,
                "templateRef.kind",
                format!("{k:?}: ClusterSandboxTemplate or SandboxTemplate"),
            ));
        }
    }
    let template = req.template_ref.name;
    if template.is_empty() {
        return Err(AtError::field(
            StatusCode::BAD_REQUEST,
            "templateRef.name",
            "name a template",
        ));
    }
    // An unknown template is a 404 (the engine's create says 400).
    st.engine.get_template(&p, &template)?;
    let secs = |field: &str, v: Option<String>| -> AtResult<Option<u64>> {
        match v.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => match parse_go_duration(&s) {
                Ok(0) => Err(AtError::field(
                    StatusCode::BAD_REQUEST,
                    field,
                    "must be positive",
                )),
                Ok(n) => Ok(Some(n)),
                Err(e) => Err(AtError::field(StatusCode::BAD_REQUEST, field, e)),
            },
        }
    };
    let ttl_secs = secs("timeout", req.timeout)?;
    let idle_timeout_secs = secs("idleTimeout", req.idle_timeout)?;
    let disk_mb = match req.storage {
        Some(s) => Some(
            parse_quantity_mib(&s.size)
                .map_err(|e| AtError::field(StatusCode::BAD_REQUEST, "storage.size", e))?,
        ),
        None => None,
    };
    let spec = SandboxSpec {
        key: Some(key_of(&ns, &req.name)),
        labels: BTreeMap::from([
            (NAME.to_string(), req.name.clone()),
            (NAMESPACE.to_string(), ns.clone()),
        ]),
        template: Some(template),
        ttl_secs,
        idle_timeout_secs,
        disk_mb,
        ..Default::default()
    };
    let sb = st
        .engine
        .create_new(&p, spec)
        .await
        .map_err(|e| taken(e, &ns, &req.name))?;
    Ok((StatusCode::CREATED, Json(summary(&sb))).into_response())
}

#[derive(serde::Deserialize)]
struct ListParams {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

async fn list(
    State(st): State<At>,
    Extension(p): P,
    Query(q): Query<ListParams>,
) -> AtResult<Json<serde_json::Value>> {
    let all = st.engine.list_all(&p, &ListQuery::default())?;
    let out: Vec<Summary> = all
        .iter()
        .filter(|sb| sb.labels.contains_key(NAME))
        .map(summary)
        .filter(|s| q.namespace.as_ref().is_none_or(|n| &s.namespace == n))
        .filter(|s| q.status.as_ref().is_none_or(|x| s.status == x))
        .collect();
    Ok(Json(serde_json::json!({ "sandboxes": out })))
}

async fn inspect(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
) -> AtResult<Json<Summary>> {
    Ok(Json(summary(&st.sandbox(&p, &id)?)))
}

async fn terminate(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
) -> AtResult<StatusCode> {
    let sb = st.sandbox(&p, &id)?;
    st.engine.destroy(&p, sb.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
) -> AtResult<Json<Summary>> {
    let sb = st.sandbox(&p, &id)?;
    if !matches!(sb.state, St::Running | St::Paused) {
        return Err(AtError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id:?} is {}, not Running", phase(sb.state)),
        ));
    }
    Ok(Json(summary(&st.engine.stop(&p, sb.id).await?)))
}

async fn resume(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
) -> AtResult<Json<Summary>> {
    let sb = st.sandbox(&p, &id)?;
    let sb = match sb.state {
        St::Stopped => st.engine.start(&p, sb.id).await?,
        St::Paused => st.engine.resume(&p, sb.id).await?,
        s => {
            return Err(AtError::new(
                StatusCode::CONFLICT,
                format!("sandbox {id:?} is {}, not Stopped", phase(s)),
            ))
        }
    };
    Ok(Json(summary(&sb)))
}

async fn exec(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    Body_(req): Body_<wire::ExecRequest>,
) -> AtResult<Json<CommandResult>> {
    let sb = st.sandbox(&p, &id)?;
    if req.command.is_empty() {
        return Err(AtError::field(
            StatusCode::BAD_REQUEST,
            "command",
            "must not be empty",
        ));
    }
    let timeout = req.timeout.unwrap_or(30);
    if timeout <= 0 {
        return Err(AtError::field(
            StatusCode::BAD_REQUEST,
            "timeout",
            "must be positive",
        ));
    }
    if sb.state != St::Running {
        return Err(AtError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id:?} is {}, not Running", phase(sb.state)),
        ));
    }
    let r = st
        .engine
        .exec(
            &p,
            sb.id,
            &ExecRequest {
                shell: Some(req.command),
                timeout: Some(timeout as f64),
                ..Default::default()
            },
        )
        .await?;
    let mut out = CommandResult {
        stdout: r.stdout,
        stderr: r.stderr,
        exit_code: r.exit_code,
    };
    if r.timed_out {
        // As `timeout(1)` reports it.
        out.exit_code = 124;
        if !out.stderr.is_empty() && !out.stderr.ends_with('\n') {
            out.stderr.push('\n');
        }
        out.stderr += &format!("command timed out after {timeout}s and was killed\n");
    }
    Ok(Json(out))
}

// ---- ports -----------------------------------------------------------------

/// The base URL the client reached this listener by.
fn base_url(h: &HeaderMap) -> String {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn forwarded(h: &HeaderMap, id: &str, sb: &Sandbox, port: u16) -> ForwardedPort {
    ForwardedPort {
        port,
        protocol: "http",
        preview_url: format!(
            "{}/api/v1/sandboxes/{id}/ports/{port}/preview/",
            base_url(h)
        ),
        internal_url: sb.ip.as_ref().map(|ip| format!("http://{ip}:{port}")),
    }
}

async fn ports(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> AtResult<Json<serde_json::Value>> {
    let sb = st.sandbox(&p, &id)?;
    let out: Vec<ForwardedPort> = sb
        .config
        .ports
        .iter()
        .map(|&port| forwarded(&headers, &id, &sb, port))
        .collect();
    Ok(Json(serde_json::json!({ "ports": out })))
}

fn port_in_range(v: i64) -> AtResult<u16> {
    match u16::try_from(v) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(AtError::field(
            StatusCode::BAD_REQUEST,
            "port",
            format!("{v} is not a port (1-65535)"),
        )),
    }
}

async fn forward_port(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body_(req): Body_<PortRequest>,
) -> AtResult<(StatusCode, Json<ForwardedPort>)> {
    let sb = st.sandbox(&p, &id)?;
    let port = port_in_range(req.port)?;
    match req.protocol.as_deref().unwrap_or("http") {
        "http" | "HTTP" => {}
        other => {
            return Err(AtError::field(
                StatusCode::BAD_REQUEST,
                "protocol",
                format!("{other:?}: only http ports are forwarded (WebSocket upgrades included)"),
            ))
        }
    }
    let sb = st.engine.declare_port(&p, sb.id, port, true).await?;
    Ok((
        StatusCode::CREATED,
        Json(forwarded(&headers, &id, &sb, port)),
    ))
}

async fn remove_port(
    State(st): State<At>,
    Extension(p): P,
    Path((id, port)): Path<(String, String)>,
) -> AtResult<StatusCode> {
    let sb = st.sandbox(&p, &id)?;
    let port: i64 = port
        .parse()
        .map_err(|_| AtError::field(StatusCode::BAD_REQUEST, "port", "not a number"))?;
    let port = port_in_range(port)?;
    st.engine.declare_port(&p, sb.id, port, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn preview_root(
    st: State<At>,
    p: P,
    Path((id, port)): Path<(String, String)>,
    req: Request,
) -> Response {
    preview_to(st, p, id, port, String::new(), req).await
}

async fn preview(
    st: State<At>,
    p: P,
    Path((id, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    preview_to(st, p, id, port, rest, req).await
}

/// A forwarded port, reached through the daemon: only ports forwarded
/// (declared) are.
async fn preview_to(
    State(st): State<At>,
    Extension(p): P,
    id: String,
    port: String,
    rest: String,
    mut req: Request,
) -> Response {
    let r = async {
        let sb = st.sandbox(&p, &id)?;
        let port = port
            .parse::<u16>()
            .map_err(|_| AtError::field(StatusCode::BAD_REQUEST, "port", "not a port"))?;
        if !sb.config.ports.contains(&port) {
            return Err(AtError::new(
                StatusCode::NOT_FOUND,
                format!("port {port} of sandbox {id:?} is not forwarded"),
            ));
        }
        Ok(st.engine.proxy_target(&p, sb.id, port).await?)
    }
    .await;
    let target = match r {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    req.headers_mut().remove("x-api-key");
    match paddock_http_kit::proxy::forward_to(target, &rest, req).await {
        Ok(r) => r,
        Err((status, msg)) => AtError::new(status, msg).into_response(),
    }
}

// ---- clone -----------------------------------------------------------------

async fn clone(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AtResult<(StatusCode, Json<serde_json::Value>)> {
    let req: CloneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CloneRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AtError::field(StatusCode::BAD_REQUEST, "body", e))?
    };
    let sb = st.sandbox(&p, &id)?;
    let ns = sb
        .labels
        .get(NAMESPACE)
        .cloned()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let src = sb.labels.get(NAME).cloned().unwrap_or_default();
    let name = match req.name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => {
            let suffix = format!("-clone-{}", chrono::Utc::now().timestamp());
            let keep = 63 - suffix.len();
            format!(
                "{}{suffix}",
                src[..src.len().min(keep)].trim_end_matches('-')
            )
        }
    };
    check_name("name", &name)?;
    let _ = req.snapshot_class; // The snapshot is the engine's, of any backend.
    let labels = BTreeMap::from([(NAME.to_string(), name.clone())]);
    let child = st
        .engine
        .fork_named(&p, sb.id, &key_of(&ns, &name), labels)
        .await
        .map_err(|e| taken(e, &ns, &name))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "name": id_of(&ns, &name),
            "namespace": ns,
            "sourceSandbox": id,
            "status": phase(child.state),
        })),
    ))
}

// ---- templates, identity ----------------------------------------------------

fn template_of(t: &paddock_core::model::Template) -> Template {
    Template {
        name: t.name.clone(),
        description: t.description.clone(),
        image: t.defaults.image.clone(),
        resource_version: t.created_at.timestamp_millis().to_string(),
        spec: serde_json::to_value(&t.defaults).unwrap_or_default(),
    }
}

async fn templates(State(st): State<At>, Extension(p): P) -> AtResult<Json<serde_json::Value>> {
    let out: Vec<Template> = st
        .engine
        .list_templates(&p)?
        .iter()
        .map(template_of)
        .collect();
    Ok(Json(serde_json::json!({ "templates": out })))
}

async fn template(
    State(st): State<At>,
    Extension(p): P,
    Path(name): Path<String>,
) -> AtResult<Json<Template>> {
    Ok(Json(template_of(&st.engine.get_template(&p, &name)?)))
}

async fn me(Extension(p): P) -> Json<CurrentUser> {
    Json(CurrentUser {
        sub: p.id.clone(),
        email: p.email.clone(),
        name: p.name.clone(),
        groups: p.groups.clone(),
        is_admin: p.is_operator(),
    })
}

// ---- audit, usage ------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditParams {
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(
    State(st): State<At>,
    Extension(p): P,
    Query(q): Query<AuditParams>,
) -> AtResult<Json<serde_json::Value>> {
    // A terminated sandbox's records too: the newest of that name.
    let sandbox = match &q.sandbox_id {
        Some(id) => {
            let (ns, name) = parse_id(id).ok_or_else(|| {
                AtError::new(StatusCode::NOT_FOUND, format!("sandbox {id:?} not found"))
            })?;
            let q = ListQuery {
                key: Some(key_of(&ns, &name)),
                include_destroyed: true,
                ..Default::default()
            };
            match st.engine.list_all(&p, &q)?.into_iter().last() {
                Some(sb) => Some(sb.id),
                None => {
                    return Err(AtError::new(
                        StatusCode::NOT_FOUND,
                        format!("sandbox {id:?} not found"),
                    ))
                }
            }
        }
        None => None,
    };
    let recs = st.engine.audit_log(
        &p,
        &paddock_core::audit::AuditQuery {
            sandbox,
            limit: q.limit.unwrap_or(100).min(1000),
            ..Default::default()
        },
    )?;
    // Names and namespaces of the sandboxes the records are about.
    let mut names: BTreeMap<uuid::Uuid, Option<(String, String)>> = BTreeMap::new();
    let mut out = Vec::with_capacity(recs.len());
    for r in recs {
        let named = match r.sandbox {
            // Named only for the sandbox's owner (a refused call on
            // another's sandbox names its id, nothing more).
            Some(sid) => names
                .entry(sid)
                .or_insert_with(|| {
                    st.engine.get(&p, sid).ok().and_then(|sb| {
                        Some((
                            sb.labels.get(NAMESPACE)?.clone(),
                            sb.labels.get(NAME)?.clone(),
                        ))
                    })
                })
                .clone(),
            None => None,
        };
        let (sandbox_id, sandbox_name, namespace) = match (&named, r.sandbox) {
            (Some((ns, name)), _) => (Some(id_of(ns, name)), Some(name.clone()), Some(ns.clone())),
            (None, Some(sid)) => (Some(sid.to_string()), None, None),
            (None, None) => (None, None, None),
        };
        out.push(AuditEvent {
            timestamp: r.at.to_rfc3339(),
            event_type: r.action,
            sandbox_id,
            sandbox_name,
            namespace,
            user_email: r.email.unwrap_or_else(|| r.principal.clone()),
            details: serde_json::json!({
                "principal": r.principal,
                "via": r.via,
                "outcome": r.outcome,
                "error": r.error,
                "detail": r.detail,
                "seq": r.seq,
            }),
        });
    }
    Ok(Json(serde_json::json!({ "events": out })))
}

async fn usage(State(st): State<At>, Extension(p): P) -> AtResult<Json<UsageAnalytics>> {
    let u = st.engine.usage(&p)?;
    let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
    for (state, n) in u.by_state {
        let ph = St::parse(&state).map_or("Unknown", phase).to_string();
        *by_phase.entry(ph).or_default() += n;
    }
    Ok(Json(UsageAnalytics {
        total_sandboxes: u.total,
        status_breakdown: by_phase,
        template_breakdown: u.by_template,
        avg_startup_ms: u.avg_startup_ms,
        startup_sample_count: u.startup_samples,
    }))
}

/// The body of a request as bytes, at most `max` (413 past it).
pub(crate) async fn body_at_most(body: Body, max: usize) -> AtResult<Vec<u8>> {
    axum::body::to_bytes(body, max)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            AtError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            )
        })
}
