//! The flash-sandbox 0.1.1 dialect (`../shared/protocols/flash-sandbox.md`):
//! one logical API on two transports, REST/JSON ([`http`]) and a plaintext
//! gRPC `sandbox.SandboxService` ([`grpc`]), each on a listener of its own.
//!
//! An adapter: [`Flash`] maps the dialect's calls onto engine calls, and
//! each transport maps engine errors onto its own status codes. Both accept
//! a path prefix in front of every route (a reverse proxy's
//! `/v1/service/sandbox`), as the SDK's `address=` sends it. flash has no
//! authentication; its sandboxes belong to the daemon's local principal, so
//! the native API and CLI on loopback see them too.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use paddock_core::model::{
    ExecRequest, ExecResult, Isolation, ListQuery, Metrics, Principal, Sandbox, SandboxSpec, State,
};
use paddock_core::{Engine, Error, Result};

/// The largest output a gRPC exec answer carries per stream: the SDK's
/// channel refuses messages over 4 MiB.
pub const GRPC_OUTPUT_LIMIT: u64 = (2 << 20) - 4096;
/// The largest output an HTTP exec answer carries per stream.
pub const HTTP_OUTPUT_LIMIT: u64 = 16 << 20;

/// `start_sandbox`'s arguments, from either transport.
#[derive(Debug, Default, Clone)]
pub struct Start {
    pub kind: String,
    pub image: String,
    pub command: Vec<String>,
    /// 0: the daemon's default.
    pub memory_mb: i64,
    /// 0: the daemon's default.
    pub cpu_cores: f64,
    /// Firecracker-only fields of the HTTP transport, by name, when given.
    pub firecracker_fields: Vec<&'static str>,
    /// A snapshot to start from (what `snapshot_sandbox` answered as its
    /// `snapshot_path`), and its memory file (none on this host's backends).
    pub snapshot_path: Option<String>,
    pub mem_file_path: Option<String>,
}

/// Where a snapshot's files are.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub snapshot_path: String,
    pub mem_file_path: String,
}

/// What a `run_python` call produced.
#[derive(Debug, Clone)]
pub struct PythonRun {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

#[derive(Clone)]
pub struct Flash {
    engine: Arc<Engine>,
}

fn principal() -> Principal {
    Principal::local().via("flash")
}

/// The request with its path replaced by what `strip` makes of it (the
/// query kept): how both transports drop a reverse proxy's prefix.
pub(crate) fn rewrite_path<B>(
    mut req: ::http::Request<B>,
    strip: impl Fn(&str) -> Option<String>,
) -> ::http::Request<B> {
    let Some(path) = strip(req.uri().path()) else {
        return req;
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = ::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// flash's name for a field the engine names differently.
pub fn flash_field(engine_field: &str) -> &str {
    match engine_field {
        "cpu" => "cpu_cores",
        "cmd" | "shell" => "command",
        "isolation" => "type",
        other => other,
    }
}

/// The engine error with flash's field names.
pub fn rename_fields(e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => Error::Invalid {
            field: flash_field(&field).to_string(),
            reason,
        },
        other => other,
    }
}

/// flash's status word for a sandbox state (its SDKs know `running`,
/// `stopped`, `created`, `paused`).
pub fn status_word(s: State) -> &'static str {
    match s {
        State::Creating => "created",
        State::Running => "running",
        State::Paused => "paused",
        State::Stopped => "stopped",
        State::Error => "error",
        State::Destroyed => "destroyed",
    }
}

/// flash's type name for an isolation.
pub fn type_word(i: Isolation) -> &'static str {
    match i {
        Isolation::Container => "docker",
        Isolation::Gvisor => "gvisor",
        Isolation::Microvm => "firecracker",
    }
}

fn isolation_of(kind: &str) -> Result<Isolation> {
    match kind.to_ascii_lowercase().as_str() {
        // proto3 cannot tell an empty type from none: the default backend.
        "" | "docker" | "container" | "oci" => Ok(Isolation::Container),
        "gvisor" | "runsc" => Ok(Isolation::Gvisor),
        "firecracker" | "microvm" | "vm" => Ok(Isolation::Microvm),
        other => Err(Error::invalid(
            "type",
            format!("unknown sandbox type {other:?}: use docker, gvisor or firecracker"),
        )),
    }
}

/// A missing backend, said in flash's words (the engine names isolations).
fn missing_backend(e: Error, kind: &str) -> Error {
    match e {
        Error::Unsupported(what) => Error::Unsupported(format!("sandbox type {kind:?}: {what}")),
        other => other,
    }
}

impl Flash {
    pub fn new(engine: Arc<Engine>) -> Flash {
        Flash { engine }
    }

    /// A live (not destroyed) sandbox by id (or key).
    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        if id.is_empty() {
            return Err(Error::invalid("id", "a sandbox id is required"));
        }
        let sb = self.engine.find(&principal(), id)?;
        if sb.state == State::Destroyed {
            return Err(Error::not_found(format!(
                "sandbox {id} (it was stopped and removed)"
            )));
        }
        Ok(sb)
    }

    /// Creates a sandbox and answers once it takes commands.
    pub async fn start(&self, s: Start) -> Result<Sandbox> {
        let isolation = isolation_of(&s.kind)?;
        // A memory file: only a backend that keeps memory could restore
        // it (an empty one, as `snapshot_sandbox` answers, is none).
        if s.mem_file_path.as_deref().is_some_and(|m| !m.is_empty()) {
            return Err(Error::Unsupported(
                "mem_file_path: restoring a sandbox's memory (the container backend keeps \
                 files only; the gVisor and microVM backends will keep memory)"
                    .into(),
            ));
        }
        let from = s.snapshot_path.filter(|p| !p.is_empty());
        for f in &s.firecracker_fields {
            if isolation != Isolation::Microvm {
                return Err(Error::invalid(
                    *f,
                    "applies to firecracker sandboxes only".to_string(),
                ));
            }
        }
        // proto3 cannot tell 0 from unset: 0 is the daemon's default. The
        // engine checks the rest (image, limits, NUL in argv).
        // A snapshot brings its own image (its layers lie on it): the
        // SDK's required `image` gives way.
        let spec = SandboxSpec {
            image: if from.is_some() { None } else { Some(s.image) },
            from_snapshot: from,
            isolation: Some(isolation),
            command: (!s.command.is_empty()).then_some(s.command),
            memory_mb: (s.memory_mb != 0).then_some(s.memory_mb),
            cpu: (s.cpu_cores != 0.0).then_some(s.cpu_cores),
            labels: [("dialect".to_string(), "flash".to_string())].into(),
            ..Default::default()
        };
        let kind = if s.kind.is_empty() { "docker" } else { &s.kind };
        let (sb, _) = self
            .engine
            .create(&principal(), spec)
            .await
            .map_err(|e| missing_backend(rename_fields(e), kind))?;
        Ok(sb)
    }

    /// `stop_sandbox`: stops and removes.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let sb = self.sandbox(id)?;
        self.engine.destroy(&principal(), sb.id).await?;
        Ok(())
    }

    /// Every sandbox the local principal has.
    pub fn list(&self) -> Result<Vec<Sandbox>> {
        self.engine.list_all(&principal(), &ListQuery::default())
    }

    /// Runs `argv` (or a shell script) and collects its output, each stream
    /// up to `limit` bytes; what was cut is said at the end of stderr.
    pub async fn exec(
        &self,
        id: &str,
        argv: Vec<String>,
        script: Option<String>,
        limit: u64,
    ) -> Result<ExecResult> {
        if argv.is_empty() && script.is_none() {
            return Err(Error::invalid("command", "a command is required"));
        }
        if argv.first().is_some_and(|a| a.is_empty()) {
            return Err(Error::invalid("command", "the program name is empty"));
        }
        let sb = self.sandbox(id)?;
        let req = ExecRequest {
            cmd: argv,
            shell: script,
            max_output_bytes: Some(limit),
            ..Default::default()
        };
        let mut r = self
            .engine
            .exec(&principal(), sb.id, &req)
            .await
            .map_err(rename_fields)?;
        for (cut, name) in [
            (r.stdout_truncated, "stdout"),
            (r.stderr_truncated, "stderr"),
        ] {
            if cut {
                r.stderr
                    .push_str(&format!("\n[paddock: {name} truncated at {limit} bytes]\n"));
            }
        }
        Ok(r)
    }

    /// Cgroup figures of the sandbox.
    pub async fn metrics(&self, id: &str) -> Result<Metrics> {
        let sb = self.sandbox(id)?;
        self.engine.metrics(&principal(), sb.id).await
    }

    /// Runs Python code with the image's `python3` (or `python`).
    pub async fn run_python(&self, id: &str, code: &str, limit: u64) -> Result<PythonRun> {
        if code.contains('\0') {
            return Err(Error::invalid("code", "must not contain NUL"));
        }
        for python in ["python3", "python"] {
            let r = self
                .exec(
                    id,
                    vec![python.into(), "-c".into(), code.into()],
                    None,
                    limit,
                )
                .await?;
            // The agent answers 127 when the program is not on PATH.
            if r.exit_code == 127 && r.stderr.starts_with("paddock: ") {
                continue;
            }
            return Ok(PythonRun {
                exit_code: exit_code(&r),
                stdout: r.stdout,
                stderr: r.stderr,
            });
        }
        Err(Error::Conflict(format!(
            "sandbox {id} has no python3 or python on its PATH: run_python needs an image with Python"
        )))
    }

    /// uname(2) from inside the sandbox, as the JSON text flash's
    /// `get_platform_info` returns (Python's `platform.uname()` keys).
    pub async fn platform_info(&self, id: &str) -> Result<String> {
        let sb = self.sandbox(id)?;
        let p = self.engine.platform(&principal(), sb.id).await?;
        Ok(serde_json::json!({
            "system": p.system,
            "node": p.node,
            "release": p.release,
            "version": p.version,
            "machine": p.machine,
            "processor": p.machine,
        })
        .to_string())
    }

    /// Snapshots a sandbox's filesystem (frozen only for the copy, so it
    /// runs on): `snapshot_path` is the snapshot's id, which `start` takes
    /// back; `mem_file_path` is empty (containers keep no memory).
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let sb = self.sandbox(id)?;
        let snap = self
            .engine
            .snapshot(&principal(), sb.id, Default::default())
            .await?;
        Ok(Snapshot {
            snapshot_path: snap.id.to_string(),
            mem_file_path: String::new(),
        })
    }

    /// Resumes a paused sandbox (or starts a stopped one); a running one
    /// (a snapshot left it so) is already resumed.
    pub async fn resume(&self, id: &str) -> Result<Sandbox> {
        let sb = self.sandbox(id)?;
        match sb.state {
            State::Paused => self.engine.resume(&principal(), sb.id).await,
            State::Stopped => self.engine.start(&principal(), sb.id).await,
            State::Running => Ok(sb),
            other => Err(Error::Conflict(format!(
                "sandbox {} is {}: nothing to resume",
                sb.id,
                status_word(other)
            ))),
        }
    }
}

/// The shell's exit code: 128 + the signal for a killed command.
pub fn exit_code(r: &ExecResult) -> i32 {
    match r.signal {
        Some(sig) if sig > 0 => 128 + sig,
        _ => r.exit_code,
    }
}
