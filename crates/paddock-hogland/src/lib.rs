//! The posthog-hogland dialect (SDK 0.1.0 and 0.5.0): its REST API under
//! `/v1` on a listener of its own, mapped onto engine calls and nothing
//! else.
//!
//! - A box is a sandbox (its id is the sandbox's); what the create asked
//!   for that the engine does not keep (kind, tags, the disk's throttles)
//!   rides in labels, so that `spec` echoes it.
//! - Auth: `Authorization: Bearer` with a Paddock API key or a JWT from an
//!   issuer the operator trusts; nothing else (the SDK always sends one).
//! - Errors are problem details (`application/problem+json`) with
//!   `errors[]` naming the field for a 422; on the streaming exec they are
//!   plain text, which the SDK can read before the stream (§2).
//! - One server serves both versions: a 0.1.0 client (by its
//!   `User-Agent`) is never sent what its models reject.
//! - Pens (0.5.0) are the engine's workspaces (`pens.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use paddock_core::engine::Engine;
use paddock_core::model::{
    ExecControl, ExecEvent, ExecRequest, ListQuery, Principal, Sandbox, SandboxSpec,
    SnapshotRequest, State as St, WriteOptions,
};
use paddock_core::Error;
use tokio::sync::mpsc;

mod pens;
pub mod wire;

use wire::*;

#[derive(Clone)]
struct Hog {
    engine: Arc<Engine>,
}

/// Labels that carry what the engine does not keep.
pub const BOX: &str = "hogland.box";
const KIND: &str = "hogland.kind";
const NAME: &str = "hogland.name";
const TAGS: &str = "hogland.tags";
const ACCESS: &str = "hogland.access";
const SSH_KEY: &str = "hogland.ssh_key";
const CPUS_ASKED: &str = "hogland.cpus";
const DISK_ASKED: &str = "hogland.disk_gib";
const DISK_IOPS_L: &str = "hogland.disk_iops";
const DISK_MBPS_L: &str = "hogland.disk_mbps";
const NET_MBPS_L: &str = "hogland.net_mbps";
const WEB_PORT: &str = "hogland.web_port";
const SNAPSHOT: &str = "hogland.snapshot";
const TTL_ASKED: &str = "hogland.ttl";

// ---- errors ----------------------------------------------------------------

/// A problem (RFC 7807, as Huma writes them). `plain` answers it as text
/// instead (the streaming exec's errors, §2).
pub struct Problem {
    status: StatusCode,
    detail: String,
    errors: Vec<ErrorDetail>,
    plain: bool,
}

impl Problem {
    fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            errors: Vec::new(),
            plain: false,
        }
    }

    fn invalid(errors: Vec<ErrorDetail>) -> Problem {
        Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "validation failed".into(),
            errors,
            plain: false,
        }
    }

    fn field(location: &str, message: impl Into<String>) -> Problem {
        Problem::invalid(vec![ErrorDetail::new(location, message)])
    }

    fn not_found(what: impl std::fmt::Display) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    fn plain(mut self) -> Problem {
        self.plain = true;
        self
    }
}

/// Where an engine field is, on hogland's wire (a workspace's
/// `spec.<field>` is a pen's `body.spec.<field>`).
fn location(field: &str) -> String {
    if let Some(f) = field.strip_prefix("spec.") {
        let inner = location(f);
        return format!(
            "body.spec.{}",
            inner.strip_prefix("body.").unwrap_or(&inner)
        );
    }
    let f = match field {
        "cpu" => "cpus",
        "memory_mb" => "memory_mib",
        "disk_mb" => "disk_gib",
        "cpu_request" => "cpu_request",
        "memory_request_mb" => "memory_request_mib",
        "ttl_secs" => "ttl_seconds",
        "cmd" | "shell" => "argv",
        "timeout" => "timeout_seconds",
        "cwd" => "workdir",
        "path" => return "query.path".into(),
        f => f,
    };
    format!("body.{f}")
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        let status = paddock_http_kit::status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
        }
        match &e {
            // A range the engine checks is a 422 naming the field.
            Error::Invalid { field, reason } => Problem::field(&location(field), reason.clone()),
            Error::Quota(_) => Problem::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            Error::PolicyViolation(v) => {
                let mut p = Problem::new(StatusCode::FORBIDDEN, e.to_string());
                p.errors = v
                    .iter()
                    .map(|v| {
                        let field = match v.rule.as_str() {
                            "max_cpu" => "cpus",
                            "max_memory_mb" => "memory_mib",
                            "max_disk_mb" => "disk_gib",
                            "max_ttl_secs" => "ttl_seconds",
                            _ => "policy",
                        };
                        ErrorDetail::new(format!("body.{field}"), v.message.clone()).with(&v.value)
                    })
                    .collect();
                p
            }
            _ => Problem::new(status, e.to_string()),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        if self.plain {
            return (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                self.detail,
            )
                .into_response();
        }
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            body["errors"] = serde_json::to_value(&self.errors).unwrap_or_default();
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

type HResult<T> = Result<T, Problem>;

/// A JSON body: syntax errors are 400, a field of the wrong type a 422
/// naming it.
struct Body_<T>(T);

impl<T, S> axum::extract::FromRequest<S> for Body_<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::new(e.status(), format!("body: {}", e.body_text())))?;
        parse_body(&bytes).map(Body_)
    }
}

/// A JSON body: a syntax error is a 400, a field of the wrong type a 422
/// naming it (`body.<path>`).
fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> HResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::new(StatusCode::BAD_REQUEST, format!("body: {inner}"));
        }
        let path = e.path().to_string();
        let loc = if path == "." {
            "body".to_string()
        } else {
            format!("body.{path}")
        };
        Problem::field(&loc, inner.to_string())
    })
}

/// A page's size: 50 by default (or 0), 1 to 1000.
pub(crate) fn page_limit(limit: Option<i64>) -> HResult<usize> {
    match limit {
        None | Some(0) => Ok(50),
        Some(n @ 1..=1000) => Ok(n as usize),
        Some(n) => Err(Problem::invalid(vec![ErrorDetail::new(
            "query.limit",
            "expected from 1 to 1000",
        )
        .with(n)])),
    }
}

/// Query and path extractors whose refusal is a 422 naming the part.
macro_rules! answered_as_422 {
    ($name:ident, $what:literal) => {
        pub(crate) struct $name<T>(pub T);

        impl<T, S> FromRequestParts<S> for $name<T>
        where
            T: serde::de::DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = Problem;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Problem> {
                axum::extract::$name::<T>::from_request_parts(parts, state)
                    .await
                    .map(|x| $name(x.0))
                    .map_err(|e| Problem::field($what, e.body_text()))
            }
        }
    };
}

answered_as_422!(Query, "query");
answered_as_422!(Path, "path");

// ---- auth ------------------------------------------------------------------

async fn auth(State(st): State<Hog>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <API key or token>",
        )
        .into_response();
    };
    match st.engine.authenticate(token).await {
        Ok(p) => {
            // A proxied request carries the caller's credential no further.
            req.extensions_mut().insert(p.via("hogland"));
            next.run(req).await
        }
        Err(e) => Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    }
}

type P = Extension<Principal>;

/// The router: every route under `/v1`.
pub fn router(engine: Arc<Engine>) -> Router {
    let st = Hog { engine };
    let v1 = Router::new()
        .route("/me", get(me))
        .route("/limits", get(limits))
        .route("/hogboxes", post(create).get(list))
        .route("/hogboxes/{id}", get(inspect).delete(delete))
        .route("/hogboxes/{id}/pause", post(pause))
        .route("/hogboxes/{id}/resume", post(resume))
        .route("/hogboxes/{id}/snapshots", post(snapshot))
        .route("/hogboxes/{id}/exec", post(exec))
        .route("/hogboxes/{id}/exec/stream", post(exec_stream))
        .route(
            "/hogboxes/{id}/files",
            get(read_file)
                .put(write_file)
                .layer(DefaultBodyLimit::max(MAX_FILE as usize + 1)),
        )
        .route("/hogboxes/{id}/proxy/{port}", any(proxy_root))
        .route("/hogboxes/{id}/proxy/{port}/", any(proxy_root))
        .route("/hogboxes/{id}/proxy/{port}/{*rest}", any(proxy))
        .route("/hogboxes/{id}/web", any(web_root))
        .route("/hogboxes/{id}/web/", any(web_root))
        .route("/hogboxes/{id}/web/{*rest}", any(web))
        .merge(pens::routes());
    Router::new()
        .nest("/v1", v1)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such endpoint") })
        // JSON bodies are small; files read theirs with a limit of their
        // own, proxies pass theirs through.
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn_with_state(st.clone(), auth))
        .with_state(st)
}

// ---- boxes -----------------------------------------------------------------

fn status_of(s: St) -> &'static str {
    match s {
        St::Creating => "starting",
        St::Running => "running",
        St::Paused => "paused",
        St::Stopped => "stopped",
        St::Error => "failed",
        St::Destroyed => "destroyed",
    }
}

/// The base URL the client reached this listener by.
fn base_url(h: &HeaderMap) -> String {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn client(h: &HeaderMap) -> ClientVersion {
    ClientVersion::of(h.get(header::USER_AGENT).and_then(|v| v.to_str().ok()))
}

fn label<T: std::str::FromStr>(sb: &Sandbox, k: &str) -> Option<T> {
    sb.labels.get(k).and_then(|v| v.parse().ok())
}

/// The env a box's caller set: the sandbox's less what its image brought.
fn callers_env(sb: &Sandbox) -> BTreeMap<String, String> {
    let image: BTreeMap<&str, &str> = sb
        .config
        .resolved_image
        .as_ref()
        .map(|i| i.env.iter().filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    sb.config
        .env
        .iter()
        .filter(|(k, v)| image.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What a box was asked to be.
pub(crate) fn spec_of(sb: &Sandbox) -> BoxSpec {
    let c = &sb.config;
    BoxSpec {
        cpus: label(sb, CPUS_ASKED).unwrap_or(c.cpu),
        memory_mib: c.memory_mb,
        disk_gib: label(sb, DISK_ASKED).unwrap_or((c.disk_mb / 1024).max(DISK_GIB.0)),
        disk_class: "mirrored",
        disk_iops: label(sb, DISK_IOPS_L).unwrap_or(0),
        disk_mbps: label(sb, DISK_MBPS_L).unwrap_or(0),
        net_mbps: label(sb, NET_MBPS_L).unwrap_or(0.0),
        access_type: sb
            .labels
            .get(ACCESS)
            .and_then(|a| Access::parse(a))
            .map(Access::as_str),
        bootstrap: c.bootstrap.clone(),
        ttl_seconds: label(sb, TTL_ASKED),
        env: callers_env(sb),
        tags: sb
            .labels
            .get(TAGS)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        name: sb.labels.get(NAME).cloned(),
        kind: sb.labels.get(KIND).cloned(),
        snapshot_id: sb.labels.get(SNAPSHOT).cloned(),
        ssh_public_key: sb.labels.get(SSH_KEY).cloned(),
        cpu_request: c.cpu_request,
        memory_request_mib: c.memory_request_mb,
        web_port: label(sb, WEB_PORT),
    }
}

impl Hog {
    fn view(&self, h: &HeaderMap, sb: &Sandbox) -> BoxView {
        let v = client(h);
        let spec = spec_of(sb).for_client(v);
        let ssh = spec.access_type.is_some_and(|a| a != "none");
        BoxView {
            id: sb.id.to_string(),
            status: status_of(sb.state),
            created_at: sb.created_at,
            updated_at: sb.updated_at,
            expires_at: sb.expires_at,
            last_used_at: sb.last_active_at,
            fail_reason: (sb.state == St::Error).then(|| sb.message.clone().unwrap_or_default()),
            node: "paddock".into(),
            owner_id: sb.owner.clone(),
            public_ip: None,
            // The gateway's command, when it runs (`--ssh-listen`).
            ssh_command: if ssh {
                self.engine.ssh_command(sb)
            } else {
                None
            },
            web_url: spec
                .web_port
                .map(|_| format!("{}/v1/hogboxes/{}/web/", base_url(h), sb.id)),
            spec,
        }
    }

    /// `p`'s box of that id (404 otherwise, and for a sandbox that is not
    /// a box: other dialects' have specs hogland's models reject).
    fn sandbox(&self, p: &Principal, id: &str) -> HResult<Sandbox> {
        let not_found = || Problem::not_found(format_args!("hogbox {id:?}"));
        let uuid = id.parse::<uuid::Uuid>().map_err(|_| not_found())?;
        match self.engine.get(p, uuid) {
            Ok(sb) if sb.labels.contains_key(BOX) && sb.state != St::Destroyed => Ok(sb),
            Ok(_) | Err(Error::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The engine's spec of a box, and its labels. `prefix` locates errors
/// (`body`, or `body.spec` for a pen).
pub(crate) fn sandbox_spec(
    engine: &Engine,
    p: &Principal,
    req: &CreateBox,
    prefix: &str,
) -> HResult<SandboxSpec> {
    let errs = req.check(prefix);
    if !errs.is_empty() {
        return Err(Problem::invalid(errs));
    }
    let access = req.access();
    if let Some(k) = &req.ssh_public_key {
        paddock_core::engine::check_ssh_public_key(k).map_err(|e| {
            let msg = match e {
                Error::Invalid { reason, .. } => reason,
                e => e.to_string(),
            };
            Problem::field(&format!("{prefix}.ssh_public_key"), msg)
        })?;
    } else if access != Access::None && req.snapshot_id.is_none() {
        return Err(Problem::field(
            &format!("{prefix}.ssh_public_key"),
            format!("access_type {} needs an ssh_public_key", access.as_str()),
        ));
    }
    let tags = match &req.tags {
        Some(t) => {
            let json = serde_json::to_string(t).unwrap_or_default();
            if json.len() > 1000 {
                return Err(Problem::field(
                    &format!("{prefix}.tags"),
                    "expected at most 1000 bytes of tags in all",
                ));
            }
            Some(json)
        }
        None => None,
    };
    // CPUs and disk beyond what the host has are the host's: a CPU cap of
    // 4 cores on 2, or a disk larger than the memory that holds it, is no
    // cap at all. The spec echoes what was asked.
    let limits = engine.limits();
    let cpus = req.cpus.unwrap_or(DEFAULT_CPUS);
    let disk_gib = req.disk_gib.unwrap_or(DEFAULT_DISK_GIB);
    let mut labels = BTreeMap::from([(BOX.to_string(), "1".to_string())]);
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            labels.insert(k.to_string(), v);
        }
    };
    put(KIND, req.kind.clone());
    put(NAME, req.name.clone());
    put(TAGS, tags);
    put(ACCESS, Some(access.as_str().to_string()));
    put(
        SSH_KEY,
        req.ssh_public_key.as_ref().map(|k| k.trim().to_string()),
    );
    put(CPUS_ASKED, Some(cpus.to_string()));
    put(DISK_ASKED, Some(disk_gib.to_string()));
    put(DISK_IOPS_L, req.disk_iops.map(|v| v.to_string()));
    put(DISK_MBPS_L, req.disk_mbps.map(|v| v.to_string()));
    put(NET_MBPS_L, req.net_mbps.map(|v| v.to_string()));
    put(WEB_PORT, req.web_port.map(|v| v.to_string()));
    put(SNAPSHOT, req.snapshot_id.clone());
    put(TTL_ASKED, req.ttl_seconds.map(|v| v.to_string()));
    let _ = p;
    Ok(SandboxSpec {
        labels,
        cpu: Some(cpus.min(limits.max_cpu)),
        memory_mb: req.memory_mib.or(if req.snapshot_id.is_some() {
            None
        } else {
            Some(DEFAULT_MEMORY_MIB)
        }),
        disk_mb: Some((disk_gib * 1024).min(limits.max_disk_mb)),
        env: req.env.clone().unwrap_or_default(),
        ttl_secs: Some(match req.ttl_seconds {
            None | Some(0) => DEFAULT_TTL,
            Some(t) => t as u64,
        }),
        bootstrap: req.bootstrap.clone(),
        cpu_request: req.cpu_request.map(|r| r.min(cpus.min(limits.max_cpu))),
        memory_request_mb: req.memory_request_mib,
        ports: req.web_port.map(|p| vec![p as u16]).unwrap_or_default(),
        ..Default::default()
    })
}

async fn create(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Body_(req): Body_<CreateBox>,
) -> HResult<Response> {
    let mut spec = sandbox_spec(&st.engine, &p, &req, "body")?;
    if let Some(s) = &req.snapshot_id {
        let r =
            snapshot_ref(s).ok_or_else(|| Problem::not_found(format_args!("snapshot {s:?}")))?;
        let sn = st
            .engine
            .get_snapshot(&p, &r)
            .map_err(|_| Problem::not_found(format_args!("snapshot {s:?}")))?;
        // A restore takes the snapshot's size, or says the same.
        let mut errs = Vec::new();
        if req.cpus.is_some_and(|c| (c - label_cpus(&sn)).abs() > 1e-9) {
            errs.push(ErrorDetail::new(
                "body.cpus",
                format!(
                    "the snapshot's box has {} cpus: omit cpus or give the same",
                    label_cpus(&sn)
                ),
            ));
        }
        if req.memory_mib.is_some_and(|m| m != sn.config.memory_mb) {
            errs.push(ErrorDetail::new(
                "body.memory_mib",
                format!(
                    "the snapshot's box has {} MiB: omit memory_mib or give the same",
                    sn.config.memory_mb
                ),
            ));
        }
        if !errs.is_empty() {
            return Err(Problem::invalid(errs));
        }
        if req.cpus.is_none() {
            spec.cpu = Some(sn.config.cpu);
            spec.labels
                .insert(CPUS_ASKED.into(), label_cpus(&sn).to_string());
        }
        if req.disk_gib.is_none() {
            spec.disk_mb = Some(sn.config.disk_mb);
            if let Some(d) = sn.labels.get(DISK_ASKED) {
                spec.labels.insert(DISK_ASKED.into(), d.clone());
            }
        }
        spec.from_snapshot = Some(sn.id.to_string());
    }
    let (sb, _) = st.engine.create(&p, spec).await?;
    // The key opens this box through the SSH gateway.
    if let (true, Some(k)) = (req.access() != Access::None, &req.ssh_public_key) {
        if let Err(e) = st
            .engine
            .add_ssh_key(&p, Some(format!("hogbox-{}", sb.id)), k, Some(sb.id))
        {
            let _ = st.engine.destroy(&p, sb.id).await;
            return Err(e.into());
        }
    }
    Ok((StatusCode::CREATED, Json(st.view(&headers, &sb))).into_response())
}

/// The CPUs a snapshot's box was asked for (kept on the snapshot's
/// labels), else its configuration's.
fn label_cpus(sn: &paddock_core::model::Snapshot) -> f64 {
    sn.labels
        .get(CPUS_ASKED)
        .and_then(|v| v.parse().ok())
        .unwrap_or(sn.config.cpu)
}

async fn inspect(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HResult<Json<BoxView>> {
    Ok(Json(st.view(&headers, &st.sandbox(&p, &id)?)))
}

#[derive(serde::Deserialize)]
struct ListParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn list(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Query(q): Query<ListParams>,
) -> HResult<Json<BoxList>> {
    let limit = page_limit(q.limit)?;
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            c.parse::<uuid::Uuid>()
                .map_err(|_| Problem::field("query.cursor", "not a cursor this server gave"))?,
        ),
        None => None,
    };
    let state = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => match [
            St::Creating,
            St::Running,
            St::Paused,
            St::Stopped,
            St::Error,
        ]
        .into_iter()
        .find(|x| status_of(*x) == s)
        {
            Some(x) => Some(x),
            // A status no box has: none.
            None => {
                return Ok(Json(BoxList {
                    items: Vec::new(),
                    next_cursor: None,
                }))
            }
        },
    };
    let mut labels = BTreeMap::from([(BOX.to_string(), "1".to_string())]);
    if let Some(k) = q.kind.filter(|k| !k.is_empty()) {
        labels.insert(KIND.to_string(), k);
    }
    let mut page = st.engine.list(
        &p,
        &ListQuery {
            state,
            labels,
            limit,
            after,
            ..Default::default()
        },
    )?;
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(BoxList {
        next_cursor: more
            .then(|| page.last().map(|sb| sb.id.to_string()))
            .flatten(),
        items: page.iter().map(|sb| st.view(&headers, sb)).collect(),
    }))
}

async fn delete(
    State(st): State<Hog>,
    Extension(p): P,
    Path(id): Path<String>,
) -> HResult<StatusCode> {
    let sb = st.sandbox(&p, &id)?;
    st.engine.destroy(&p, sb.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HResult<Json<BoxView>> {
    let sb = st.sandbox(&p, &id)?;
    let sb = st.engine.pause(&p, sb.id).await?;
    Ok(Json(st.view(&headers, &sb)))
}

async fn resume(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HResult<Json<BoxView>> {
    let sb = st.sandbox(&p, &id)?;
    let sb = match sb.state {
        St::Stopped => st.engine.start(&p, sb.id).await?,
        _ => st.engine.resume(&p, sb.id).await?,
    };
    Ok(Json(st.view(&headers, &sb)))
}

pub(crate) fn record(
    sn: &paddock_core::model::Snapshot,
    spec: BoxSpec,
    total_ms: u64,
    usage: Option<Usage>,
) -> SnapshotRecord {
    SnapshotRecord {
        id: snapshot_id(sn.id),
        box_id: sn.sandbox_id.to_string(),
        created_at: sn.created_at,
        s3_bucket: "paddock-layers".into(),
        s3_prefix: sn.digest.clone(),
        size_bytes: sn.size_bytes,
        spec,
        owner_id: sn.owner.clone(),
        restore_count: 0,
        total_ms,
        usage,
    }
}

async fn snapshot(
    State(st): State<Hog>,
    Extension(p): P,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HResult<Json<SnapshotRecord>> {
    let sb = st.sandbox(&p, &id)?;
    // What the box used until now (best effort: a paused box has no
    // fresh figures on every backend).
    let usage = st.engine.metrics(&p, sb.id).await.ok().map(|m| {
        let age = (chrono::Utc::now() - sb.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        let cpu_usec = m.cpu_usage_ns / 1000;
        Usage {
            billed_cpu_usec: cpu_usec,
            billed_memory_mib_seconds: (sb.config.memory_mb as f64 * age) as u64,
            cpu_coverage_seconds: age,
            cpu_usage_usec: cpu_usec,
            memory_coverage_seconds: age,
            rss_mib_seconds: ((m.memory_bytes >> 20) as f64 * age) as u64,
        }
    });
    let t0 = Instant::now();
    // The box's asked-for size goes with the snapshot, for restores.
    let mut labels = BTreeMap::new();
    for k in [CPUS_ASKED, DISK_ASKED] {
        if let Some(v) = sb.labels.get(k) {
            labels.insert(k.to_string(), v.clone());
        }
    }
    let sn = st
        .engine
        .snapshot(
            &p,
            sb.id,
            SnapshotRequest {
                labels,
                ..Default::default()
            },
        )
        .await?;
    let spec = spec_of(&sb).for_client(client(&headers));
    let usage = usage.filter(|_| client(&headers) == ClientVersion::Current);
    Ok(Json(record(
        &sn,
        spec,
        t0.elapsed().as_millis() as u64,
        usage,
    )))
}

// ---- exec ------------------------------------------------------------------

/// The engine's request for an exec body; timeout 0 or none is the most
/// the spec allows (6 h) on the batch endpoint, none on the stream.
fn exec_request(b: ExecBody, batch: bool) -> HResult<ExecRequest> {
    let errs = b.check();
    if !errs.is_empty() {
        return Err(Problem::invalid(errs));
    }
    let timeout = match b.timeout_seconds {
        Some(t) if t > 0 => Some(t as f64),
        _ if batch => Some(MAX_EXEC_TIMEOUT as f64),
        _ => None,
    };
    Ok(ExecRequest {
        cmd: b.argv,
        env: b.env.unwrap_or_default(),
        cwd: b.workdir,
        timeout,
        max_output_bytes: batch.then_some(MAX_OUTPUT),
        ..Default::default()
    })
}

/// A box that takes commands: running (a paused or stopped one is a 409).
fn runnable(sb: &Sandbox) -> HResult<()> {
    if sb.state == St::Running {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::CONFLICT,
            format!("hogbox {} is {}, not running", sb.id, status_of(sb.state)),
        ))
    }
}

/// How long a batch exec may run before its answer's headers go out and
/// whitespace keeps the connection alive (0.1.0 reads with a 30 s
/// timeout between bytes; JSON allows leading whitespace).
const BATCH_HEADERS_AFTER: Duration = Duration::from_secs(20);
const BATCH_KEEPALIVE: Duration = Duration::from_secs(15);

fn exec_answer(r: paddock_core::model::ExecResult) -> ExecResponse {
    ExecResponse {
        exit_code: if r.timed_out {
            -1
        } else {
            match r.signal {
                Some(_) if r.exit_code == 0 => -1,
                _ => r.exit_code as i64,
            }
        },
        stdout: r.stdout,
        stderr: r.stderr,
        duration_ms: r.duration_ms.max(0.0) as u64,
        timed_out: r.timed_out,
    }
}

async fn exec(
    State(st): State<Hog>,
    Extension(p): P,
    Path(id): Path<String>,
    Body_(body): Body_<ExecBody>,
) -> HResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let req = exec_request(body, true)?;
    runnable(&sb)?;
    let engine = st.engine.clone();
    // In a task of its own: the command runs to its end (or timeout)
    // whether or not the client waits.
    let mut run = tokio::spawn(async move { engine.exec(&p, sb.id, &req).await });
    match tokio::time::timeout(BATCH_HEADERS_AFTER, &mut run).await {
        Ok(r) => {
            let r = r.map_err(|e| Problem::from(Error::internal(e)))??;
            Ok(Json(exec_answer(r)).into_response())
        }
        Err(_) => {
            // Long: 200 now, a space every so often, the answer at the end
            // (an error then is the spec's exit code -1).
            let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(BATCH_KEEPALIVE);
                tick.tick().await;
                let r = loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = tick.tick() => {
                            if tx.send(Ok(Bytes::from_static(b" "))).await.is_err() {
                                // The client left; the command still ends.
                            }
                        }
                    }
                };
                let answer = match r {
                    Ok(Ok(r)) => exec_answer(r),
                    Ok(Err(e)) => ExecResponse {
                        exit_code: -1,
                        stdout: String::new(),
                        stderr: e.to_string(),
                        duration_ms: 0,
                        timed_out: false,
                    },
                    Err(e) => ExecResponse {
                        exit_code: -1,
                        stdout: String::new(),
                        stderr: e.to_string(),
                        duration_ms: 0,
                        timed_out: false,
                    },
                };
                let _ = tx
                    .send(Ok(Bytes::from(
                        serde_json::to_vec(&answer).unwrap_or_default(),
                    )))
                    .await;
            });
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
                .into_response())
        }
    }
}

/// SIGKILLs a streamed command whose client went away before its exit.
struct KillOnDrop {
    control: Option<mpsc::Sender<ExecControl>>,
}

impl KillOnDrop {
    /// The command exited: nothing to kill.
    fn disarm(mut self) {
        self.control = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.control.take() {
            let _ = c.try_send(ExecControl::Signal(9));
        }
    }
}

/// How often a silent stream says it is alive (the SDK reads with a 30 s
/// timeout between bytes).
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

async fn exec_stream(
    State(st): State<Hog>,
    Extension(p): P,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match exec_stream_inner(st, p, id, body).await {
        Ok(r) => r,
        // Text, not JSON: the SDK can read it before the stream (§2).
        Err(e) => e.plain().into_response(),
    }
}

async fn exec_stream_inner(st: Hog, p: Principal, id: String, body: Bytes) -> HResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let body: ExecBody = parse_body(&body)?;
    let req = exec_request(body, false)?;
    runnable(&sb)?;
    let (control, control_rx) = mpsc::channel(8);
    let started = Instant::now();
    let s = st.engine.exec_stream(&p, sb.id, &req, control_rx).await?;
    let _ = control.send(ExecControl::CloseStdin).await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let guard = KillOnDrop {
        control: Some(control),
    };
    tokio::spawn(async move {
        tokio::pin!(s);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(STREAM_KEEPALIVE);
        tick.tick().await;
        let exit = loop {
            let ev = tokio::select! {
                ev = s.next() => ev,
                // The client left: the guard kills the command.
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                        return; // The client left: the guard kills the command.
                    }
                    continue;
                }
            };
            let frame = match ev {
                Some(Ok(ExecEvent::Stdout(b))) => ("stdout", take_utf8(&mut out, &b)),
                Some(Ok(ExecEvent::Stderr(b))) => ("stderr", take_utf8(&mut err, &b)),
                Some(Ok(ExecEvent::Exit(r))) => break Ok(r),
                Some(Ok(ExecEvent::Started { .. })) => continue,
                Some(Err(e)) => break Err(e),
                None => {
                    break Err(Error::internal(
                        "the command's stream ended without its exit",
                    ))
                }
            };
            if frame.1.is_empty() {
                continue;
            }
            tick.reset();
            if tx
                .send(Ok(Bytes::from(sse_event(frame.0, &frame.1))))
                .await
                .is_err()
            {
                return;
            }
        };
        guard.disarm();
        // What an incomplete character left behind.
        for (kind, rest) in [("stdout", &out), ("stderr", &err)] {
            if !rest.is_empty() {
                let text = String::from_utf8_lossy(rest).into_owned();
                let _ = tx.send(Ok(Bytes::from(sse_event(kind, &text)))).await;
            }
        }
        let (code, ms) = match exit {
            Ok(r) => (
                exec_answer(r.clone()).exit_code,
                r.duration_ms.max(0.0) as u64,
            ),
            Err(e) => {
                let _ = tx
                    .send(Ok(Bytes::from(sse_event("stderr", &e.to_string()))))
                    .await;
                (-1, started.elapsed().as_millis() as u64)
            }
        };
        let _ = tx
            .send(Ok(Bytes::from(format!(
                "event: exit\ndata: {}\n\n",
                serde_json::json!({"code": code, "duration_ms": ms})
            ))))
            .await;
        // Dropping `tx` ends the body: the stream closes right after exit.
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

// ---- files -----------------------------------------------------------------

#[derive(serde::Deserialize)]
struct FileParams {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mkdir: Option<String>,
}

fn file_path(q: &FileParams) -> HResult<String> {
    match q.path.as_deref() {
        None | Some("") => Err(Problem::field("query.path", "expected an absolute path")),
        Some(p) if !p.starts_with('/') => Err(Problem::invalid(vec![ErrorDetail::new(
            "query.path",
            "expected an absolute path",
        )
        .with(p)])),
        Some(p) => Ok(p.to_string()),
    }
}

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("a file may be at most {MAX_FILE} bytes (64 MiB)"),
    )
}

async fn read_file(
    State(st): State<Hog>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<FileParams>,
) -> HResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let path = file_path(&q)?;
    runnable(&sb)?;
    let (size, stream) = st.engine.read_file(&p, sb.id, &path).await?;
    if size.is_some_and(|n| n > MAX_FILE) {
        return Err(too_large());
    }
    // A file that grows past the cap as it is read is cut off there.
    let mut seen = 0u64;
    let stream = stream.map(move |c| {
        let c = c.map_err(std::io::Error::other)?;
        seen += c.len() as u64;
        if seen > MAX_FILE {
            return Err(std::io::Error::other("the file grew past 64 MiB"));
        }
        Ok(c)
    });
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(n) = size {
        r = r.header(header::CONTENT_LENGTH, n);
    }
    r.body(Body::from_stream(stream))
        .map_err(|e| Problem::from(Error::internal(e)))
}

async fn write_file(
    State(st): State<Hog>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<FileParams>,
    req: Request,
) -> HResult<Json<FileWritten>> {
    let sb = st.sandbox(&p, &id)?;
    let upload = paddock_http_kit::upload::Upload::new(req.into_body());
    let path = match file_path(&q) {
        Ok(p) => p,
        Err(e) => {
            upload.drain().await;
            return Err(e);
        }
    };
    let mode = match q.mode.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o7777 => Some(v),
            _ => {
                upload.drain().await;
                return Err(Problem::invalid(vec![ErrorDetail::new(
                    "query.mode",
                    "expected an octal mode (0644)",
                )
                .with(m)]));
            }
        },
        None => None,
    };
    let mkdir = matches!(q.mkdir.as_deref(), Some("true" | "1"));
    if upload.size.is_some_and(|n| n > MAX_FILE) {
        upload.drain().await;
        return Err(too_large());
    }
    if let Err(e) = runnable(&sb) {
        upload.drain().await;
        return Err(e);
    }
    let mut seen = 0u64;
    let data = upload.stream("body").map(move |c| {
        let c = c?;
        seen += c.len() as u64;
        if seen > MAX_FILE {
            return Err(Error::Quota(format!("a file larger than {MAX_FILE} bytes")));
        }
        Ok(c)
    });
    let opts = WriteOptions {
        mode,
        mkdir_parents: mkdir,
        atomic: true,
        size: upload.size,
        ..Default::default()
    };
    match st.engine.write_file(&p, sb.id, &path, &opts, data).await {
        Ok(info) => Ok(Json(FileWritten {
            bytes_written: info.size,
        })),
        Err(Error::Quota(_)) => {
            upload.drain().await;
            Err(too_large())
        }
        Err(e) => {
            upload.drain().await;
            Err(e.into())
        }
    }
}

// ---- proxy, web ---------------------------------------------------------------

async fn proxy_root(
    st: State<Hog>,
    p: P,
    Path((id, port)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy_to(st, p, id, Some(port), String::new(), req).await
}

async fn proxy(
    st: State<Hog>,
    p: P,
    Path((id, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    proxy_to(st, p, id, Some(port), rest, req).await
}

async fn web_root(st: State<Hog>, p: P, Path(id): Path<String>, req: Request) -> Response {
    proxy_to(st, p, id, None, String::new(), req).await
}

async fn web(
    st: State<Hog>,
    p: P,
    Path((id, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy_to(st, p, id, None, rest, req).await
}

/// A box's port (its `web_port` with none), reached through the daemon
/// with the caller's bearer, which goes no further.
async fn proxy_to(
    State(st): State<Hog>,
    Extension(p): P,
    id: String,
    port: Option<String>,
    rest: String,
    req: Request,
) -> Response {
    let r = async {
        let sb = st.sandbox(&p, &id)?;
        let port = match port {
            Some(s) => paddock_http_kit::proxy::parse_port(&s)
                .map_err(|(_, m)| Problem::field("path.port", m))?,
            None => label::<u16>(&sb, WEB_PORT)
                .ok_or_else(|| Problem::not_found(format_args!("a web_port of hogbox {id:?}")))?,
        };
        Ok::<_, Problem>(st.engine.proxy_target(&p, sb.id, port).await?)
    }
    .await;
    match r {
        Ok(target) => forward(target, &rest, req).await,
        Err(e) => e.into_response(),
    }
}

/// Forwards a request to a box's address, its credential dropped.
pub(crate) async fn forward(
    target: std::net::SocketAddr,
    rest: &str,
    mut req: Request,
) -> Response {
    req.headers_mut().remove(header::AUTHORIZATION);
    match paddock_http_kit::proxy::forward_to(target, rest, req).await {
        Ok(r) => r,
        Err((status, msg)) => Problem::new(status, msg).into_response(),
    }
}

// ---- identity, limits -----------------------------------------------------------

async fn me(State(st): State<Hog>, Extension(p): P) -> HResult<Json<Me>> {
    let boxes = st.engine.list_all(
        &p,
        &ListQuery {
            labels: BTreeMap::from([(BOX.to_string(), "1".to_string())]),
            ..Default::default()
        },
    )?;
    let snaps = st.engine.snapshots(&p)?;
    // The principal's first trace here: its oldest box or snapshot ever.
    let first = st
        .engine
        .list(
            &p,
            &ListQuery {
                include_destroyed: true,
                limit: 1,
                ..Default::default()
            },
        )?
        .first()
        .map(|sb| sb.created_at);
    let created_at = [first, snaps.first().map(|s| s.created_at)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(chrono::Utc::now);
    Ok(Json(Me {
        email: p.email.clone().unwrap_or_default(),
        name: p.name.clone(),
        is_admin: p.is_operator(),
        box_count: boxes.len() as u64,
        snapshot_count: snaps.len() as u64,
        created_at,
        id: p.id,
    }))
}

async fn limits(State(st): State<Hog>, Extension(p): P) -> HResult<Json<Limits>> {
    let c = st.engine.ceilings(&p)?;
    let limits = st.engine.limits();
    // CPUs and disk past the host's are capped at the host (see
    // `sandbox_spec`); a policy's ceiling is a ceiling.
    let policy_cpu = if c.max_cpu < limits.max_cpu {
        c.max_cpu
    } else {
        CPUS.1
    };
    let policy_disk = if c.max_disk_mb < limits.max_disk_mb {
        (c.max_disk_mb / 1024) as f64
    } else {
        DISK_GIB.1 as f64
    };
    let mem = (c.max_memory_mb.min(MEMORY_MIB.1)) as f64;
    Ok(Json(Limits {
        access_type: vec!["ssh-public", "ssh-private", "none"],
        disk_class: vec!["mirrored"],
        cpus: NumericLimit::new(CPUS.0, policy_cpu.max(CPUS.0)),
        memory_mib: NumericLimit::new(MEMORY_MIB.0 as f64, mem.max(MEMORY_MIB.0 as f64)),
        disk_gib: NumericLimit::new(DISK_GIB.0 as f64, policy_disk.max(DISK_GIB.0 as f64)),
        disk_iops: NumericLimit::new(DISK_IOPS.0 as f64, DISK_IOPS.1 as f64),
        disk_mbps: NumericLimit::new(DISK_MBPS.0 as f64, DISK_MBPS.1 as f64),
        net_mbps: NumericLimit::new(NET_MBPS.0, NET_MBPS.1),
        cpu_request: NumericLimit::new(CPUS.0, policy_cpu.max(CPUS.0)),
        memory_request_mib: NumericLimit::new(MEMORY_MIB.0 as f64, mem.max(MEMORY_MIB.0 as f64)),
    }))
}
