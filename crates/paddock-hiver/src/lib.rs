//! The hiver-py 0.1.18 dialect (`../shared/protocols/hiver-py.md`): the
//! controller under `/controller/v1` and the per-sandbox API under
//! `/sandbox/{key}/v1`, served on a listener of its own.
//!
//! An adapter: it maps hiver's wire types onto engine calls and engine
//! errors onto hiver's status codes and `{"error": ...}` bodies. hiver has
//! no authentication; its sandboxes belong to the daemon's local principal,
//! so the native API and CLI on loopback see them too.

pub mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use paddock_core::engine::ConfigUpdate;
use paddock_core::model::{
    Event, ExecControl, ExecEvent, ExecRequest, ExecResult, ListQuery, Principal, PtySize, Sandbox,
    State as SbState, WriteOptions,
};
use paddock_core::{Engine, Error};
use paddock_http_kit::sse;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use paddock_core::text::Utf8Chunks;
use paddock_http_kit::{Accept, Guard, Refusal};
use wire::{ascii_json, config_of, HConfig};

/// How long a buffered exec may run before its answer starts trickling
/// whitespace: the SDK reads with a 3 s timeout.
const TRICKLE_AFTER: Duration = Duration::from_millis(1500);
const TRICKLE_EVERY: Duration = Duration::from_millis(1000);

/// Streaming execs by the client's `exec_id`: their sandbox and stdin.
type Execs = Arc<Mutex<HashMap<String, (Uuid, mpsc::Sender<ExecControl>)>>>;

#[derive(Clone)]
pub struct Hiver {
    engine: Arc<Engine>,
    /// Streaming execs by the client's `exec_id`, for their stdin.
    execs: Execs,
}

/// What each route takes as a body, for the guard: JSON, but the upload's
/// multipart form (what the SDK sends), and anything through the port
/// proxy.
fn accept(method: &axum::http::Method, path: &str) -> Accept {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["sandbox", _, "v1", "proxy", ..] => Accept::Proxy,
        ["sandbox", _, "v1", "file"] if method == axum::http::Method::POST => {
            Accept::Only(&["multipart/form-data"])
        }
        _ => Accept::Json,
    }
}

/// The router, behind `guard`: hiver has no authentication, so no web
/// page may drive it (see `paddock_http_kit`).
pub fn router(engine: Arc<Engine>, guard: &Guard) -> Router {
    let h = Hiver {
        engine,
        execs: Arc::default(),
    };
    Router::new()
        .route("/controller/v1/sandboxes", get(list))
        // A key may be the literal `events`: route that path by method.
        .route(
            "/controller/v1/sandboxes/events",
            get(watch).put(create_events),
        )
        .route("/controller/v1/sandboxes/{key}", put(create))
        .route("/controller/v1/shutdown/{key}", post(shutdown))
        .route("/sandbox/{key}/v1/ping", get(ping))
        .route("/sandbox/{key}/v1/ports", get(ports))
        .route(
            "/sandbox/{key}/v1/config",
            get(get_config).put(apply_config),
        )
        .route("/sandbox/{key}/v1/exec", post(exec))
        .route("/sandbox/{key}/v1/exec-stream/{exec_id}", post(exec_stream))
        .route(
            "/sandbox/{key}/v1/exec-stream/{exec_id}/stdin",
            post(exec_stdin),
        )
        .route("/sandbox/{key}/v1/directories", get(directories))
        .route("/sandbox/{key}/v1/file", get(download).post(upload))
        .route("/sandbox/{key}/v1/events", get(events))
        .route("/sandbox/{key}/v1/proxy/{port}", any(proxy_root))
        .route("/sandbox/{key}/v1/proxy/{port}/", any(proxy_root))
        .route("/sandbox/{key}/v1/proxy/{port}/{*rest}", any(proxy))
        .fallback(|| async { err(StatusCode::NOT_FOUND, "no such endpoint".into(), None) })
        .layer(DefaultBodyLimit::disable())
        .layer(guard.layer(accept, |r: Refusal| {
            err(r.status, r.message, Some(r.field.into()))
        }))
        .with_state(h)
}

fn principal() -> Principal {
    Principal::local().via("hiver")
}

// ---- errors ---------------------------------------------------------------

fn err(status: StatusCode, message: String, field: Option<String>) -> Response {
    let mut body = json!({ "error": message });
    if let Some(f) = field {
        body["details"] = json!({ "field": f });
    }
    (status, Json(body)).into_response()
}

struct HError(Error);

impl From<Error> for HError {
    fn from(e: Error) -> HError {
        HError(e)
    }
}

impl IntoResponse for HError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = paddock_http_kit::status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("hiver: {e}");
        }
        match e {
            Error::Invalid { field, reason } | Error::ForbiddenField { field, reason } => {
                let field = wire::hiver_field(&field);
                err(status, format!("{field}: {reason}"), Some(field))
            }
            other => err(status, other.to_string(), None),
        }
    }
}

type HResult<T> = Result<T, HError>;

fn bad(field: &str, reason: impl Into<String>) -> HError {
    HError(Error::invalid(field, reason))
}

/// A JSON body, or the default for an empty one (the SDK sends none at times).
fn body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    field: &str,
) -> HResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad(field, e.to_string()))
}

impl Hiver {
    fn sandbox(&self, key: &str) -> HResult<Sandbox> {
        Ok(self.engine.find(&principal(), key)?)
    }

    /// A running sandbox (the readiness ping answers only then; other
    /// calls leave the check to the engine).
    fn running(&self, key: &str) -> HResult<Sandbox> {
        let sb = self.sandbox(key)?;
        if sb.state != SbState::Running {
            return Err(HError(Error::Conflict(format!(
                "sandbox {key} is {}, not running",
                sb.state.as_str()
            ))));
        }
        Ok(sb)
    }
}

fn key_of(sb: &Sandbox) -> String {
    sb.key.clone().unwrap_or_else(|| sb.id.to_string())
}

fn sandbox_ref(sb: &Sandbox) -> Value {
    json!({ "id": sb.id.to_string(), "key": key_of(sb) })
}

// ---- controller -------------------------------------------------------------

async fn create_events(st: State<Hiver>, body: Bytes) -> HResult<Response> {
    create(st, Path("events".to_string()), body).await
}

/// Get-or-create by key: 201 when made, 200 when it existed (its config
/// unchanged, the body ignored). Answers once the sandbox takes commands.
async fn create(State(h): State<Hiver>, Path(key): Path<String>, body: Bytes) -> HResult<Response> {
    // The engine checks the key.
    let config: HConfig = body_or_default(&body, "config")?;
    let spec = wire::spec_of(&key, &config)?;
    let (sb, created) = h.engine.create(&principal(), spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox_ref(&sb))).into_response())
}

/// The running sandboxes, as a bare array.
async fn list(State(h): State<Hiver>) -> HResult<Json<Value>> {
    let q = ListQuery {
        state: Some(SbState::Running),
        ..Default::default()
    };
    let all = h.engine.list_all(&principal(), &q)?;
    Ok(Json(Value::Array(all.iter().map(sandbox_ref).collect())))
}

/// Stops and removes a sandbox: exactly 204.
async fn shutdown(State(h): State<Hiver>, Path(key): Path<String>) -> HResult<StatusCode> {
    let sb = h.sandbox(&key)?;
    h.engine.destroy(&principal(), sb.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifecycle events of every sandbox from now on: start, stop, die,
/// destroy. Keep-alives every 2 s (the SDK reads with a 5 s timeout).
async fn watch(State(h): State<Hiver>) -> HResult<Response> {
    let after = h.engine.last_event_seq()?;
    let engine = h.engine.clone();
    let s = h.engine.events(&principal(), None, after)?;
    let s = s.filter_map(move |ev| {
        use paddock_core::event::EventData as D;
        let status = match &ev.data {
            D::Started(_) | D::Resumed(_) => Some("start"),
            D::Stopped(_) | D::Paused(_) => Some("stop"),
            D::Died(_) | D::Error(_) => Some("die"),
            D::Destroyed(_) => Some("destroy"),
            _ => None,
        };
        let key = status.map(|_| {
            engine
                .get(&principal(), ev.sandbox_id)
                .map(|sb| key_of(&sb))
                .unwrap_or_else(|_| ev.sandbox_id.to_string())
        });
        async move {
            let data = json!({"id": ev.sandbox_id.to_string(), "key": key?, "status": status?});
            Some(Ok::<_, Infallible>(
                SseEvent::default().data(ascii_json(&data)),
            ))
        }
    });
    Ok(sse::response(s, Some(Duration::from_secs(2))))
}

// ---- per sandbox ------------------------------------------------------------

/// Resets the idle TTL; answers 2xx only while the sandbox takes commands.
async fn ping(State(h): State<Hiver>, Path(key): Path<String>) -> HResult<Json<Value>> {
    let sb = h.running(&key)?;
    h.engine.touch(&principal(), sb.id).await?;
    Ok(Json(json!({})))
}

/// The image's exposed ports (and any the config declares).
async fn ports(State(h): State<Hiver>, Path(key): Path<String>) -> HResult<Json<Value>> {
    let sb = h.sandbox(&key)?;
    Ok(Json(json!(sb.config.ports)))
}

async fn get_config(State(h): State<Hiver>, Path(key): Path<String>) -> HResult<Json<HConfig>> {
    let sb = h.sandbox(&key)?;
    Ok(Json(config_of(&sb.config)))
}

/// Applies a desired config, diffed against the running one: fs (mounts
/// and ACLs), egress, snapshot and ttl change, all or nothing; the fields
/// fixed at creation are kept and named in `changes.warnings`. A rollback
/// is still a 2xx, with `applied: false` and `error`.
async fn apply_config(
    State(h): State<Hiver>,
    Path(key): Path<String>,
    body: Bytes,
) -> HResult<Json<Value>> {
    let sb = h.sandbox(&key)?;
    let desired: HConfig =
        serde_json::from_slice(&body).map_err(|e| bad("config", e.to_string()))?;
    let current = config_of(&sb.config);
    let mut warnings = Vec::new();
    macro_rules! immutable {
        ($($f:ident),*) => {$(
            if desired.$f.is_some() && desired.$f != current.$f {
                warnings.push(format!(
                    "{} is fixed when the sandbox is created; kept {}",
                    stringify!($f),
                    serde_json::to_string(&current.$f).unwrap_or_default()
                ));
            }
        )*};
    }
    immutable!(
        image,
        isolation,
        cpu,
        memory,
        entrypoint,
        cwd,
        tty,
        extra_hosts
    );
    if let Some(env) = &desired.env {
        if Some(env) != current.env.as_ref() && !(env.is_empty() && current.env.is_none()) {
            warnings.push("env is fixed when the sandbox is created; kept the current env".into());
        }
    }
    let rollback = |error: String| {
        Json(json!({
            "applied": false,
            "config": current.clone(),
            "changes": {},
            "error": error,
        }))
    };
    let mounts = match desired.fs.as_deref().map(wire::mounts_of).transpose() {
        Ok(m) => m,
        Err(e) => return Ok(rollback(e.to_string())),
    };
    let ttl = match desired.ttl {
        Some(t) if t < 0 => return Ok(rollback("ttl: must be 0 (never) or more seconds".into())),
        Some(t) => Some((t > 0).then_some(t as u64)),
        None => None,
    };
    let res = h
        .engine
        .update_config(
            &principal(),
            sb.id,
            ConfigUpdate {
                mounts,
                egress: Some(wire::egress_of(&desired.egress)),
                snapshot: Some(wire::snapshot_of(&desired.snapshot)),
                idle_timeout_secs: ttl,
                warnings,
            },
        )
        .await?;
    let mut out = json!({
        "applied": res.applied,
        "config": config_of(&res.sandbox.config),
        "changes": wire::changes_json(&res.changes),
    });
    if let Some(e) = res.error {
        out["error"] = json!(wire::hiver_field(&e));
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct ExecBody {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
}

fn exec_json(r: &ExecResult) -> Value {
    json!({"stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code})
}

/// Buffered exec. The SDK gives up reading after 3 s, so an answer that is
/// not ready within 1.5 s starts with a 200 and a space every second (JSON
/// allows leading whitespace), then the result.
async fn exec(State(h): State<Hiver>, Path(key): Path<String>, body: Bytes) -> HResult<Response> {
    let sb = h.sandbox(&key)?;
    let b: ExecBody = serde_json::from_slice(&body).map_err(|e| bad("command", e.to_string()))?;
    if b.command.trim().is_empty() {
        return Err(bad("command", "must not be empty"));
    }
    let req = ExecRequest {
        shell: Some(b.command),
        cwd: b.cwd,
        env: b.env.unwrap_or_default(),
        ..Default::default()
    };
    let engine = h.engine.clone();
    let mut job = tokio::spawn(async move { engine.exec(&principal(), sb.id, &req).await });
    let joined = |done: Result<paddock_core::Result<ExecResult>, tokio::task::JoinError>| {
        done.map_err(|e| Error::Internal(format!("exec task: {e}")))?
    };
    match tokio::time::timeout(TRICKLE_AFTER, &mut job).await {
        Ok(done) => Ok(Json(exec_json(&joined(done)?)).into_response()),
        Err(_) => {
            let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TRICKLE_EVERY);
                let result = loop {
                    tokio::select! {
                        r = &mut job => break r,
                        _ = tick.tick() => {
                            if tx.send(Ok(Bytes::from_static(b" "))).await.is_err() {
                                job.abort();
                                return;
                            }
                        }
                    }
                };
                let body = match joined(result) {
                    Ok(r) => exec_json(&r),
                    // The status is already sent: the error goes in the body,
                    // in the shape the SDK hands back.
                    Err(e) => {
                        json!({"stdout": "", "stderr": format!("{e}\n"), "exit_code": -1, "error": e.to_string()})
                    }
                };
                let _ = tx.send(Ok(Bytes::from(body.to_string()))).await;
            });
            Ok((
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
                .into_response())
        }
    }
}

#[derive(Deserialize, Default)]
struct ExecStreamBody {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    tty: Option<bool>,
}

/// Removes a streaming exec from the stdin registry when its stream ends.
struct Registered {
    execs: Execs,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn frame(v: Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(ascii_json(&v)))
}

/// Streaming exec: SSE frames `stdout`, `stderr` (merged into stdout with
/// `tty`), then always one `exit`. The exec is registered for stdin before
/// the response's headers go out.
async fn exec_stream(
    State(h): State<Hiver>,
    Path((key, exec_id)): Path<(String, String)>,
    body: Bytes,
) -> HResult<Response> {
    let sb = h.sandbox(&key)?;
    let b: ExecStreamBody = body_or_default(&body, "body")?;
    let tty = b.tty.unwrap_or(false);
    let command = match b.command.filter(|c| !c.trim().is_empty()) {
        Some(c) => c,
        None if sb.config.tty => {
            return Err(HError(Error::Unsupported(
                "attaching to the entrypoint's terminal".into(),
            )))
        }
        None => {
            return Err(bad(
                "command",
                "is required: this sandbox's entrypoint has no terminal to attach to",
            ))
        }
    };
    if exec_id.is_empty() || exec_id.len() > 128 {
        return Err(bad("exec_id", "must be 1-128 characters"));
    }
    let (ctl, ctl_rx) = mpsc::channel(64);
    {
        let mut execs = h.execs.lock().unwrap_or_else(|e| e.into_inner());
        if execs.contains_key(&exec_id) {
            return Err(HError(Error::Conflict(format!(
                "exec {exec_id} is already running"
            ))));
        }
        execs.insert(exec_id.clone(), (sb.id, ctl));
    }
    let guard = Registered {
        execs: h.execs.clone(),
        id: exec_id,
    };
    let req = ExecRequest {
        shell: Some(command),
        cwd: b.cwd,
        env: b.env.unwrap_or_default(),
        pty: tty.then_some(PtySize { rows: 24, cols: 80 }),
        ..Default::default()
    };
    let s = h
        .engine
        .exec_stream(&principal(), sb.id, &req, ctl_rx)
        .await?;
    let out = exec_frames(s, guard);
    Ok(sse::response(out, None))
}

fn exec_frames(
    s: impl Stream<Item = paddock_core::Result<ExecEvent>> + Send + 'static,
    guard: Registered,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    struct St<S> {
        s: std::pin::Pin<Box<S>>,
        out: Utf8Chunks,
        err: Utf8Chunks,
        done: bool,
        _guard: Registered,
    }
    let st = St {
        s: Box::pin(s),
        out: Utf8Chunks::default(),
        err: Utf8Chunks::default(),
        done: false,
        _guard: guard,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let frames: Vec<Value> = match st.s.next().await {
                Some(Ok(ExecEvent::Stdout(b))) => {
                    let t = st.out.push(&b);
                    if t.is_empty() {
                        continue;
                    }
                    vec![json!({"type": "stdout", "text": t})]
                }
                Some(Ok(ExecEvent::Stderr(b))) => {
                    let t = st.err.push(&b);
                    if t.is_empty() {
                        continue;
                    }
                    vec![json!({"type": "stderr", "text": t})]
                }
                Some(Ok(ExecEvent::Started { .. })) => continue,
                Some(Ok(ExecEvent::Exit(r))) => {
                    st.done = true;
                    let mut v = Vec::new();
                    let (o, e) = (st.out.finish(), st.err.finish());
                    if !o.is_empty() {
                        v.push(json!({"type": "stdout", "text": o}));
                    }
                    if !e.is_empty() {
                        v.push(json!({"type": "stderr", "text": e}));
                    }
                    v.push(json!({"type": "exit", "code": r.exit_code}));
                    v
                }
                Some(Err(e)) => {
                    st.done = true;
                    vec![
                        json!({"type": "stderr", "text": format!("paddock: {e}\n")}),
                        json!({"type": "exit", "code": -1}),
                    ]
                }
                None => {
                    st.done = true;
                    vec![json!({"type": "exit", "code": -1})]
                }
            };
            let events: Vec<Result<SseEvent, Infallible>> = frames.into_iter().map(frame).collect();
            return Some((futures::stream::iter(events), st));
        }
    })
    .flatten()
}

#[derive(Deserialize)]
struct StdinBody {
    data: String,
}

async fn exec_stdin(
    State(h): State<Hiver>,
    Path((key, exec_id)): Path<(String, String)>,
    body: Bytes,
) -> HResult<Json<Value>> {
    let sb = h.sandbox(&key)?;
    let b: StdinBody = serde_json::from_slice(&body).map_err(|e| bad("data", e.to_string()))?;
    let ctl = h
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&exec_id)
        .filter(|(id, _)| *id == sb.id)
        .map(|(_, c)| c.clone());
    let Some(ctl) = ctl else {
        return Err(HError(Error::not_found(format!(
            "running exec {exec_id} in sandbox {key}"
        ))));
    };
    ctl.send(ExecControl::Stdin(Bytes::from(b.data)))
        .await
        .map_err(|_| Error::Conflict(format!("exec {exec_id} has finished")))?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

fn path_param(q: &PathQuery) -> HResult<String> {
    match &q.path {
        Some(p) if p.starts_with('/') => Ok(p.clone()),
        Some(_) => Err(bad("path", "must be an absolute path")),
        None => Err(bad("path", "is required")),
    }
}

async fn directories(
    State(h): State<Hiver>,
    Path(key): Path<String>,
    Query(q): Query<PathQuery>,
) -> HResult<Json<Value>> {
    let sb = h.sandbox(&key)?;
    let path = path_param(&q)?;
    let entries = h.engine.list_dir(&principal(), sb.id, &path).await?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| json!({"name": e.name, "path": e.path, "is_dir": e.kind == "dir", "size": e.size}))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

async fn download(
    State(h): State<Hiver>,
    Path(key): Path<String>,
    Query(q): Query<PathQuery>,
) -> HResult<Response> {
    let sb = h.sandbox(&key)?;
    let path = path_param(&q)?;
    let (size, s) = h.engine.read_file(&principal(), sb.id, &path).await?;
    let mut r = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(s.map(|r| r.map_err(std::io::Error::other))),
    )
        .into_response();
    // Without a size (a file of /proc), the body is chunked to its end.
    if let Some(n) = size {
        r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
    }
    Ok(r)
}

/// multipart/form-data: `destination` (one of the mounts) then `file`,
/// streamed into the sandbox as it arrives (an upload may be large).
async fn upload(
    State(h): State<Hiver>,
    Path(key): Path<String>,
    mut form: Multipart,
) -> HResult<Json<Value>> {
    let r = upload_form(&h, &key, &mut form).await;
    if r.is_err() {
        // Read what the client is still sending (bounded), so that it sees
        // the answer instead of a connection reset mid-upload.
        paddock_http_kit::upload::drain(async {
            let mut left = paddock_http_kit::upload::DRAIN_BYTES;
            while let Ok(Some(mut f)) = form.next_field().await {
                while let Ok(Some(c)) = f.chunk().await {
                    left = left.saturating_sub(c.len());
                    if left == 0 {
                        return;
                    }
                }
            }
        })
        .await;
    }
    r
}

async fn upload_form(h: &Hiver, key: &str, form: &mut Multipart) -> HResult<Json<Value>> {
    let sb = h.sandbox(key)?;
    let mut destination: Option<String> = None;
    let mut written = None;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad("body", format!("not valid multipart/form-data: {e}")))?
    {
        match field.name() {
            Some("destination") => {
                destination = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad("destination", e.to_string()))?,
                );
            }
            Some("file") => {
                let destination = destination
                    .as_deref()
                    .ok_or_else(|| bad("destination", "is required, before `file`"))?;
                let path = upload_path(&sb, destination, field.file_name().unwrap_or_default())?;
                let (tx, rx) = mpsc::channel::<paddock_core::Result<Bytes>>(4);
                let engine = h.engine.clone();
                let target = path.clone();
                let write = tokio::spawn(async move {
                    let opts = WriteOptions {
                        mkdir_parents: true,
                        ..Default::default()
                    };
                    let data = tokio_stream::wrappers::ReceiverStream::new(rx);
                    engine
                        .write_file(&principal(), sb.id, &target, &opts, data)
                        .await
                });
                loop {
                    let chunk = match field.chunk().await {
                        Ok(Some(c)) => Ok(c),
                        Ok(None) => break,
                        // An incomplete body: the write is never committed.
                        Err(e) => Err(Error::invalid("file", e.to_string())),
                    };
                    let failed = chunk.is_err();
                    if tx.send(chunk).await.is_err() || failed {
                        break;
                    }
                }
                drop(tx);
                let info = write
                    .await
                    .map_err(|e| Error::Internal(format!("upload task: {e}")))??;
                written = Some((path, info.size));
                break;
            }
            _ => {}
        }
    }
    if destination.is_none() {
        return Err(bad("destination", "is required"));
    }
    let (path, bytes) = written.ok_or_else(|| bad("file", "is required"))?;
    Ok(Json(json!({"path": path, "bytes": bytes})))
}

/// Where an upload of `filename` to `destination` goes: the destination
/// must be one of the sandbox's mounts, the name a plain file name.
fn upload_path(sb: &Sandbox, destination: &str, filename: &str) -> HResult<String> {
    let dest = destination.trim_end_matches('/');
    let mounts = &sb.config.mounts;
    if !mounts.is_empty() && !mounts.iter().any(|m| m.path == dest) {
        let names: Vec<&str> = mounts.iter().map(|m| m.path.as_str()).collect();
        return Err(bad(
            "destination",
            format!(
                "{destination} is not one of this sandbox's mounts ({})",
                names.join(", ")
            ),
        ));
    }
    if filename.is_empty() || filename.contains('/') || filename == "." || filename == ".." {
        return Err(bad("file", format!("{filename:?} is not a file name")));
    }
    Ok(format!("{dest}/{filename}"))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// The engine's event in hiver's shape, for the 12 types 0.1.18 knows; any
/// other kind is left out (0.1.18 tears its stream down on an unknown type).
pub fn hiver_event(ev: &Event) -> Option<Value> {
    use paddock_core::event::EventData as D;
    let mut v = match &ev.data {
        D::ExecRequest(d) => {
            json!({"type": "exec.request", "cwd": d.cwd, "command": d.command})
        }
        D::ExecResponse(d) => json!({"type": "exec.response", "request_id": d.request_id?}),
        D::FsRequest(d) => json!({"type": "fs.request", "access": d.access, "mount": d.mount,
                                  "path": d.path, "operation": d.operation}),
        D::FsResponse(d) => {
            let mut v = json!({"type": "fs.response", "backend": "local",
                               "request_id": d.request_id?, "duration_ms": d.duration_ms});
            if let Some(e) = &d.error {
                v["error"] = json!(e);
            }
            v
        }
        D::ConfigApply(d) => {
            let mut v = json!({"type": "config.apply", "success": d.success,
                               "changes": wire::changes_json(&d.changes)});
            if let Some(e) = &d.error {
                v["errorMessage"] = json!(e);
            }
            v
        }
        D::Stdio(d) => {
            let mut v = json!({"type": "stdio"});
            if let Some(t) = &d.stdout {
                v["stdout"] = json!(t);
            }
            if let Some(t) = &d.stderr {
                v["stderr"] = json!(t);
            }
            v
        }
        D::ResourceUsage(d) => json!({"type": "resource.usage",
            "cpu_percent": d.cpu_percent, "memory_bytes": d.memory_bytes}),
        _ => return None,
    };
    v["id"] = json!(ev.id);
    v["timestamp"] = json!(ev.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    Some(v)
}

/// Activity events, resumable with `lastEventId`; the stream stays open
/// with keep-alives (the SDK's reconnects are few).
async fn events(
    State(h): State<Hiver>,
    Path(key): Path<String>,
    Query(q): Query<EventsQuery>,
) -> HResult<Response> {
    let sb = h.sandbox(&key)?;
    let after = match q.last_event_id.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| bad("lastEventId", format!("{s:?} is not an event id")))?,
    };
    let s = h.engine.events(&principal(), Some(sb.id), after)?;
    let s = s.filter_map(|ev| async move { hiver_event(&ev).map(frame) });
    Ok(sse::response(s, Some(Duration::from_secs(10))))
}

async fn proxy_root(
    st: State<Hiver>,
    Path((key, port)): Path<(String, String)>,
    req: Request,
) -> HResult<Response> {
    forward(st, key, port, String::new(), req).await
}

async fn proxy(
    st: State<Hiver>,
    Path((key, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> HResult<Response> {
    forward(st, key, port, rest, req).await
}

async fn forward(
    State(h): State<Hiver>,
    key: String,
    port: String,
    rest: String,
    req: Request,
) -> HResult<Response> {
    let sb = h.sandbox(&key)?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("port", format!("{port:?} is not a port number")))?;
    let target = h.engine.proxy_target(&principal(), sb.id, port).await?;
    match paddock_http_kit::proxy::forward_to(target, &rest, req).await {
        Ok(r) => Ok(r),
        Err((status, msg)) => Ok(err(status, msg, None)),
    }
}
