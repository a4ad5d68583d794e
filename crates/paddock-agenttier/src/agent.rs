//! 0.8.1's agent mode: `configure` (write files, run an install command,
//! keep an entrypoint; SSE `log`/`result`/`error`) and `invoke` (run the
//! entrypoint with the request body on stdin; SSE `start`/`log`/`exit`),
//! cancelled by id or when the client goes away.
//!
//! What configure keeps (the entrypoint, when, and a hash of its files and
//! install command, so that the same configure again is skipped) is in the
//! sandbox's labels, the engine's. Running invokes are the adapter's: a
//! handle per invoke id, gone when it ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::Response;
use axum::{Extension, Json};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use paddock_core::model::{ExecControl, ExecEvent, WriteOptions};
use paddock_core::Error;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::*;

/// The most a configure's files may come to, and an invoke's body.
const MAX_BODY: usize = 32 << 20;
/// An invoke's default limit (the SDK waits 30 min 30 s).
const DEFAULT_INVOKE_SECS: u64 = 30 * 60;
/// How long a cancelled command has after SIGTERM before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);

/// A running invoke: how to signal it, and whether it was cancelled.
struct Running {
    sandbox: uuid::Uuid,
    owner: String,
    control: mpsc::Sender<ExecControl>,
    canceled: Arc<AtomicBool>,
}

#[derive(Clone, Default)]
pub(crate) struct Invokes(Arc<Mutex<HashMap<String, Running>>>);

impl Invokes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Splits output into lines for `log` events, holding a partial line back
/// until its end (or the end of the stream).
#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn push(&mut self, b: &[u8]) -> Vec<String> {
        self.0.extend_from_slice(b);
        let mut out = Vec::new();
        while let Some(i) = self.0.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.0.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.push(String::from_utf8_lossy(line).into_owned());
        }
        out
    }
    fn finish(&mut self) -> Option<String> {
        (!self.0.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.0)).into_owned())
    }
}

fn event(name: &str, data: serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

fn log(stream: &str, line: String) -> Result<Event, Infallible> {
    event("log", serde_json::json!({ "stream": stream, "data": line }))
}

/// The hash that tells a configure already done: its files and install
/// command.
fn install_hash(files: &[ConfigureFile], install: &[String]) -> String {
    let doc = serde_json::json!({ "files": files, "installCommand": install });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

pub(crate) async fn configure(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    req: Request,
) -> AtResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let body = body_at_most(req.into_body(), MAX_BODY).await?;
    let req: ConfigureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ConfigureRequest::default()
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            AtError::field(StatusCode::BAD_REQUEST, &e.path().to_string(), e.inner())
        })?
    };
    // Every file checked before anything runs.
    let mut files = Vec::with_capacity(req.files.len());
    for (i, f) in req.files.iter().enumerate() {
        if !f.path.starts_with('/') {
            return Err(AtError::field(
                StatusCode::BAD_REQUEST,
                &format!("files[{i}].path"),
                "must be absolute",
            ));
        }
        let bytes = match (&f.content, &f.content_base64) {
            (Some(c), None) => c.clone().into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| {
                    AtError::field(
                        StatusCode::BAD_REQUEST,
                        &format!("files[{i}].contentBase64"),
                        e,
                    )
                })?,
            _ => {
                return Err(AtError::field(
                    StatusCode::BAD_REQUEST,
                    &format!("files[{i}]"),
                    "give content or contentBase64",
                ))
            }
        };
        files.push((f.path.clone(), bytes));
    }
    let entrypoint = if req.entrypoint.is_empty() {
        sb.labels
            .get(ENTRYPOINT)
            .and_then(|e| serde_json::from_str::<Vec<String>>(e).ok())
            .unwrap_or_default()
    } else {
        req.entrypoint.clone()
    };
    // Kept in a label: checked before anything is written.
    let kept = serde_json::to_string(&entrypoint).unwrap_or_default();
    if kept.len() > 1024 {
        return Err(AtError::field(
            StatusCode::BAD_REQUEST,
            "entrypoint",
            "at most 1024 bytes as JSON",
        ));
    }
    let hash = install_hash(&req.files, &req.install_command);
    let skipped = sb.labels.get(INSTALL_HASH) == Some(&hash)
        && sb.state == paddock_core::model::State::Running;
    if sb.state != paddock_core::model::State::Running {
        return Err(AtError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id:?} is {}, not Running", phase(sb.state)),
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let engine = st.engine.clone();
    tokio::spawn(async move {
        let fail = |phase: &str, message: String| {
            event(
                "error",
                serde_json::json!({ "phase": phase, "message": message }),
            )
        };
        if !skipped {
            for (path, bytes) in files {
                let opts = WriteOptions {
                    mkdir_parents: true,
                    atomic: true,
                    size: Some(bytes.len() as u64),
                    ..Default::default()
                };
                let data = futures::stream::once(async move { Ok(Bytes::from(bytes)) });
                if let Err(e) = engine.write_file(&p, sb.id, &path, &opts, data).await {
                    let _ = tx.send(fail("files", format!("{path}: {e}"))).await;
                    return;
                }
            }
            if !req.install_command.is_empty() {
                match run_install(&engine, &p, sb.id, &req.install_command, &tx).await {
                    Ok(0) => {}
                    Ok(code) => {
                        let _ = tx
                            .send(fail(
                                "install",
                                format!("the install command exited with {code}"),
                            ))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(fail("install", e.to_string())).await;
                        return;
                    }
                }
            }
        }
        let now = chrono::Utc::now().to_rfc3339();
        let labels = BTreeMap::from([
            (
                ENTRYPOINT.to_string(),
                Some(serde_json::to_string(&entrypoint).unwrap_or_default()),
            ),
            (CONFIGURED_AT.to_string(), Some(now.clone())),
            (INSTALL_HASH.to_string(), Some(hash.clone())),
        ]);
        if let Err(e) = engine.set_labels(&p, sb.id, labels).await {
            let _ = tx.send(fail("entrypoint", e.to_string())).await;
            return;
        }
        let _ = tx
            .send(event(
                "result",
                serde_json::json!({
                    "lastConfiguredAt": now,
                    "installCommandHash": hash,
                    "entrypoint": entrypoint,
                    // A failed install answers `error` instead.
                    "installExitCode": 0,
                    "skipped": skipped,
                }),
            ))
            .await;
    });
    Ok(paddock_http_kit::sse::response(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Some(paddock_http_kit::sse::KEEP_ALIVE),
    ))
}

/// Runs the install command, its output as `log` lines; its exit code.
async fn run_install(
    engine: &Arc<paddock_core::Engine>,
    p: &Principal,
    id: uuid::Uuid,
    argv: &[String],
    tx: &mpsc::Sender<Result<Event, Infallible>>,
) -> Result<i32, Error> {
    let (control, rx) = mpsc::channel(4);
    let req = ExecRequest {
        cmd: argv.to_vec(),
        timeout: Some(15.0 * 60.0),
        ..Default::default()
    };
    let s = engine.exec_stream(p, id, &req, rx).await?;
    tokio::pin!(s);
    let (mut out, mut err) = (Lines::default(), Lines::default());
    let mut gone = false;
    loop {
        let ev = tokio::select! {
            ev = s.next() => ev,
            // The client went away: the install goes too.
            _ = tx.closed(), if !gone => {
                gone = true;
                let _ = control.send(ExecControl::Signal(9)).await;
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match ev? {
            ExecEvent::Stdout(b) => {
                for l in out.push(&b) {
                    let _ = tx.send(log("stdout", l)).await;
                }
            }
            ExecEvent::Stderr(b) => {
                for l in err.push(&b) {
                    let _ = tx.send(log("stderr", l)).await;
                }
            }
            ExecEvent::Exit(r) => {
                for (name, lines) in [("stdout", &mut out), ("stderr", &mut err)] {
                    if let Some(l) = lines.finish() {
                        let _ = tx.send(log(name, l)).await;
                    }
                }
                if r.timed_out {
                    return Err(Error::Timeout("the install command ran 15 minutes".into()));
                }
                return Ok(r.exit_code);
            }
            ExecEvent::Started { .. } => {}
        }
    }
    Err(Error::internal(
        "the install command's stream ended without its exit",
    ))
}

#[derive(serde::Deserialize)]
pub(crate) struct InvokeParams {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// Sends SIGTERM to an invoke whose client went away (the stream was
/// dropped before its `exit`).
struct OnDrop {
    control: mpsc::Sender<ExecControl>,
    done: Arc<AtomicBool>,
    canceled: Arc<AtomicBool>,
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if !self.done.load(Ordering::SeqCst) {
            self.canceled.store(true, Ordering::SeqCst);
            terminate(self.control.clone());
        }
    }
}

/// SIGTERM now, SIGKILL [`KILL_AFTER`] later (a command gone by then
/// ignores it).
fn terminate(control: mpsc::Sender<ExecControl>) {
    let _ = control.try_send(ExecControl::Signal(libc_sigterm()));
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            tokio::time::sleep(KILL_AFTER).await;
            let _ = control.send(ExecControl::Signal(9)).await;
        });
    }
}

const fn libc_sigterm() -> i32 {
    15
}

pub(crate) async fn invoke(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    Query(q): Query<InvokeParams>,
    req: Request,
) -> AtResult<Response> {
    let sb = st.sandbox(&p, &id)?;
    let mut argv: Vec<String> = sb
        .labels
        .get(ENTRYPOINT)
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    if argv.is_empty() {
        return Err(AtError::new(
            StatusCode::BAD_REQUEST,
            format!("sandbox {id:?} has no entrypoint: configure one first"),
        ));
    }
    let secs = match q.timeout.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => match parse_go_duration(t) {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                return Err(AtError::field(
                    StatusCode::BAD_REQUEST,
                    "timeout",
                    "must be positive",
                ))
            }
            Err(e) => return Err(AtError::field(StatusCode::BAD_REQUEST, "timeout", e)),
        },
        None => DEFAULT_INVOKE_SECS,
    };
    let mut stdin = body_at_most(req.into_body(), MAX_BODY).await?;
    if let Some(prompt) = &q.prompt {
        argv.push(format!("--prompt={prompt}"));
        if stdin.is_empty() {
            stdin = prompt.clone().into_bytes();
        }
    }
    if sb.state != paddock_core::model::State::Running {
        return Err(AtError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id:?} is {}, not Running", phase(sb.state)),
        ));
    }
    let (control, control_rx) = mpsc::channel(8);
    let exec = ExecRequest {
        cmd: argv,
        timeout: Some(secs as f64),
        ..Default::default()
    };
    let started = Instant::now();
    let s = st.engine.exec_stream(&p, sb.id, &exec, control_rx).await?;
    let _ = control.send(ExecControl::Stdin(Bytes::from(stdin))).await;
    let _ = control.send(ExecControl::CloseStdin).await;
    let invoke_id = uuid::Uuid::new_v4().simple().to_string();
    let canceled = Arc::new(AtomicBool::new(false));
    st.invokes.lock().insert(
        invoke_id.clone(),
        Running {
            sandbox: sb.id,
            owner: p.id.clone(),
            control: control.clone(),
            canceled: canceled.clone(),
        },
    );
    // The command is read by a task of its own, which outlives a client
    // that goes away: it signals the command and waits for its exit.
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let done = Arc::new(AtomicBool::new(false));
    let guard = OnDrop {
        control: control.clone(),
        done: done.clone(),
        canceled: canceled.clone(),
    };
    let invokes = st.invokes.clone();
    let iid = invoke_id.clone();
    tokio::spawn(async move {
        let _ = tx
            .send(event("start", serde_json::json!({ "invokeId": iid })))
            .await;
        tokio::pin!(s);
        let (mut out, mut err) = (Lines::default(), Lines::default());
        let mut exit = None;
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ExecEvent::Stdout(b)) => {
                    for l in out.push(&b) {
                        let _ = tx.send(log("stdout", l)).await;
                    }
                }
                Ok(ExecEvent::Stderr(b)) => {
                    for l in err.push(&b) {
                        let _ = tx.send(log("stderr", l)).await;
                    }
                }
                Ok(ExecEvent::Exit(r)) => {
                    exit = Some(Ok(r));
                    break;
                }
                Ok(ExecEvent::Started { .. }) => {}
                Err(e) => {
                    exit = Some(Err(e));
                    break;
                }
            }
        }
        drop(control);
        invokes.lock().remove(&iid);
        for (name, lines) in [("stdout", &mut out), ("stderr", &mut err)] {
            if let Some(l) = lines.finish() {
                let _ = tx.send(log(name, l)).await;
            }
        }
        let ms = started.elapsed().as_millis() as u64;
        let ev = match exit {
            Some(Ok(r)) => {
                let reason = if canceled.load(Ordering::SeqCst) {
                    "canceled"
                } else if r.timed_out {
                    "timeout"
                } else {
                    "completed"
                };
                event(
                    "exit",
                    serde_json::json!({
                        "exitCode": if r.timed_out { 124 } else { r.exit_code },
                        "durationMs": ms,
                        "reason": reason,
                        "invokeId": iid,
                    }),
                )
            }
            Some(Err(e)) => event("error", serde_json::json!({ "message": e.to_string() })),
            None => event(
                "error",
                serde_json::json!({ "message": "the command's stream ended without its exit" }),
            ),
        };
        let _ = tx.send(ev).await;
        done.store(true, Ordering::SeqCst);
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |e| {
        let _ = &guard;
        e
    });
    Ok(paddock_http_kit::sse::response(
        events,
        Some(paddock_http_kit::sse::KEEP_ALIVE),
    ))
}

pub(crate) async fn cancel(
    State(st): State<At>,
    Extension(p): P,
    Path(id): Path<String>,
    Body_(req): Body_<CancelRequest>,
) -> AtResult<Json<serde_json::Value>> {
    let sb = st.sandbox(&p, &id)?;
    let control = {
        let map = st.invokes.lock();
        match map.get(&req.invoke_id) {
            Some(r) if r.sandbox == sb.id && r.owner == p.id => {
                r.canceled.store(true, Ordering::SeqCst);
                Some(r.control.clone())
            }
            _ => None,
        }
    };
    let Some(control) = control else {
        return Err(AtError::new(
            StatusCode::NOT_FOUND,
            format!("invoke {:?} is not running", req.invoke_id),
        ));
    };
    terminate(control);
    Ok(Json(
        serde_json::json!({ "invokeId": req.invoke_id, "canceled": true }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_partial_ones_held() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\nb"), ["a"]);
        assert_eq!(l.push(b"c\r\n\n  d"), ["bc", ""]);
        assert_eq!(l.finish().as_deref(), Some("  d"));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn the_same_files_and_command_hash_alike() {
        let f = |c: &str| ConfigureFile {
            path: "/a".into(),
            content: Some(c.into()),
            content_base64: None,
        };
        let a = install_hash(&[f("x")], &["pip".into()]);
        assert_eq!(a, install_hash(&[f("x")], &["pip".into()]));
        assert_ne!(a, install_hash(&[f("y")], &["pip".into()]));
        assert_ne!(a, install_hash(&[f("x")], &[]));
    }
}
