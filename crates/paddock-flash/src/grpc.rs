//! flash-sandbox's gRPC transport: `sandbox.SandboxService` over plaintext
//! HTTP/2, as `SandboxClient` of 0.1.1 calls it. Engine errors become
//! standard status codes (`NOT_FOUND`, `INVALID_ARGUMENT` naming the field,
//! `UNIMPLEMENTED` for what this daemon cannot do, ...).

use paddock_core::Error;
use tonic::{Code, Request, Response, Status};

use crate::{exit_code, status_word, Flash, Start, GRPC_OUTPUT_LIMIT};

pub mod pb {
    tonic::include_proto!("sandbox");
}

use paddock_http_kit::{Accept, Guard, Refusal};
use pb::sandbox_service_server::{SandboxService, SandboxServiceServer};

/// The content types of gRPC requests.
const GRPC: &[&str] = &["application/grpc", "application/grpc+proto"];
use pb::*;

/// The service, for a tonic server of its own (see [`unprefix`]).
pub fn service(flash: Flash) -> SandboxServiceServer<Flash> {
    SandboxServiceServer::new(flash)
}

/// Serves the service on `listener` (plaintext HTTP/2) until `shutdown`.
/// Every call passes `guard` first (its `:authority` and any `Origin`;
/// tonic itself takes only `application/grpc`): the service has no
/// authentication (see `paddock_http_kit`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    flash: Flash,
    guard: Guard,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let refused = |r: Refusal| {
        let status = match r.status {
            http::StatusCode::BAD_REQUEST => Status::invalid_argument(r.message),
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE => Status::unimplemented(r.message),
            _ => Status::permission_denied(r.message),
        };
        status.into_http()
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(guard.layer(|_, _| Accept::Only(GRPC), refused))
        .layer(tower::util::MapRequestLayer::new(unprefix))
        .add_service(service(flash))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// A gRPC path is `/package.Service/Method`; a reverse proxy's prefix in
/// front of it (`/v1/service/sandbox/sandbox.SandboxService/StartSandbox`,
/// as the SDK's `address=` sends it) is dropped before routing.
pub fn strip_prefix(path: &str) -> Option<String> {
    let mut segs = path.trim_start_matches('/').rsplitn(3, '/');
    let method = segs.next()?;
    let service = segs.next()?;
    segs.next()?;
    Some(format!("/{service}/{method}"))
}

pub fn unprefix<B>(req: http::Request<B>) -> http::Request<B> {
    crate::rewrite_path(req, strip_prefix)
}

/// The status for an engine error.
pub fn status_of(e: Error) -> Status {
    let code = match &e {
        Error::NotFound { .. } => Code::NotFound,
        Error::Invalid { .. } => Code::InvalidArgument,
        Error::Conflict(_) | Error::Exists(_) => Code::FailedPrecondition,
        Error::Unavailable { .. } => Code::Unavailable,
        Error::Unsupported(_) => Code::Unimplemented,
        Error::Quota(_) => Code::ResourceExhausted,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::Forbidden(_) | Error::ForbiddenField { .. } | Error::PolicyViolation(_) => {
            Code::PermissionDenied
        }
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Internal(_) => {
            tracing::error!("flash grpc: {e}");
            Code::Internal
        }
    };
    Status::new(code, e.to_string())
}

type GResult<T> = Result<Response<T>, Status>;

/// What an answer's strings may take in all: the SDK's channel refuses
/// messages over 4 MiB.
const GRPC_MESSAGE_BUDGET: usize = (4 << 20) - (64 << 10);

/// The first `max` bytes of `s`, cut at a character boundary.
fn head(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Output, once decoded, can outgrow the agent's byte cap (an invalid byte
/// becomes a 3-byte U+FFFD): cut both streams to the message budget, stdout
/// first, and say so at the end of stderr.
fn fit_message(mut stdout: String, mut stderr: String) -> (String, String) {
    if stdout.len() + stderr.len() <= GRPC_MESSAGE_BUDGET {
        return (stdout, stderr);
    }
    let note = "\n[paddock: output cut to fit a 4 MiB gRPC message]\n";
    let room = GRPC_MESSAGE_BUDGET - note.len();
    // stdout keeps at least half the room if it needs it; stderr the rest.
    let out_share = stdout.len().min(room / 2);
    head(&mut stderr, room - out_share);
    head(&mut stdout, room - stderr.len());
    stderr.push_str(note);
    (stdout, stderr)
}

/// The last `max` bytes of `s`, cut at a character boundary: a status
/// message travels in HTTP/2 trailers, which clients bound (8 KiB).
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut at = s.len() - max;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

#[tonic::async_trait]
impl SandboxService for Flash {
    async fn start_sandbox(&self, req: Request<StartRequest>) -> GResult<StartResponse> {
        let r = req.into_inner();
        let sb = self
            .start(Start {
                kind: r.r#type,
                image: r.image,
                command: r.command,
                memory_mb: r.memory_mb,
                cpu_cores: r.cpu_cores,
                firecracker_fields: Vec::new(),
                snapshot_path: None,
                mem_file_path: None,
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(StartResponse {
            id: sb.id.to_string(),
        }))
    }

    async fn stop_sandbox(&self, req: Request<StopRequest>) -> GResult<StopResponse> {
        self.stop(&req.into_inner().id).await.map_err(status_of)?;
        Ok(Response::new(StopResponse {}))
    }

    async fn exec_command(&self, req: Request<ExecRequest>) -> GResult<ExecResponse> {
        let r = req.into_inner();
        let out = self
            .exec(&r.id, r.command, None, GRPC_OUTPUT_LIMIT)
            .await
            .map_err(status_of)?;
        let code = exit_code(&out);
        let (stdout, stderr) = fit_message(out.stdout, out.stderr);
        Ok(Response::new(ExecResponse {
            exit_code: code,
            stdout,
            stderr,
        }))
    }

    async fn get_status(&self, req: Request<StatusRequest>) -> GResult<StatusResponse> {
        let id = req.into_inner().id;
        let sb = self.sandbox(&id).map_err(status_of)?;
        Ok(Response::new(StatusResponse {
            id: sb.id.to_string(),
            status: status_word(sb.state).into(),
        }))
    }

    async fn get_metrics(&self, req: Request<MetricsRequest>) -> GResult<MetricsResponse> {
        let m = self
            .metrics(&req.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(MetricsResponse {
            memory_usage_bytes: m.memory_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            memory_percent: m.memory_percent,
            cpu_percent: m.cpu_percent,
            pids_current: m.pids,
            net_rx_bytes: m.net_rx_bytes,
            net_tx_bytes: m.net_tx_bytes,
            block_read_bytes: m.block_read_bytes,
            block_write_bytes: m.block_write_bytes,
        }))
    }

    async fn snapshot_sandbox(&self, req: Request<SnapshotRequest>) -> GResult<SnapshotResponse> {
        let s = self
            .snapshot(&req.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(SnapshotResponse {
            snapshot_path: s.snapshot_path,
            mem_file_path: s.mem_file_path,
        }))
    }

    async fn resume_sandbox(&self, req: Request<ResumeRequest>) -> GResult<ResumeResponse> {
        self.resume(&req.into_inner().id).await.map_err(status_of)?;
        Ok(Response::new(ResumeResponse {}))
    }

    async fn run_python(&self, req: Request<RunPythonRequest>) -> GResult<RunPythonResponse> {
        let r = req.into_inner();
        let out = Flash::run_python(self, &r.id, &r.code, GRPC_OUTPUT_LIMIT)
            .await
            .map_err(status_of)?;
        if out.exit_code != 0 {
            // The answer carries stdout only: a failure is a status, with
            // the end of stderr (the traceback) in its message.
            return Err(Status::new(
                Code::Unknown,
                format!(
                    "python exited with status {}:\n{}",
                    out.exit_code,
                    tail(&out.stderr, 1000)
                ),
            ));
        }
        Ok(Response::new(RunPythonResponse { result: out.stdout }))
    }

    async fn get_platform_info(
        &self,
        req: Request<GetPlatformInfoRequest>,
    ) -> GResult<GetPlatformInfoResponse> {
        let info = self
            .platform_info(&req.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(GetPlatformInfoResponse { info }))
    }
}

#[cfg(test)]
mod tests {
    use super::{fit_message, status_of, strip_prefix, tail};

    #[test]
    fn a_policy_breach_is_permission_denied_naming_the_rule() {
        let e = paddock_core::Error::PolicyViolation(vec![paddock_core::error::Violation {
            policy: "ops".into(),
            rule: "max_memory_mb".into(),
            limit: 512.into(),
            value: 1024.into(),
            message: "1024 MiB of memory; policy \"ops\" allows at most 512".into(),
        }]);
        let s = status_of(e);
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("at most 512"), "{}", s.message());
    }

    #[test]
    fn prefixes_are_dropped_from_method_paths() {
        assert_eq!(strip_prefix("/sandbox.SandboxService/StartSandbox"), None);
        assert_eq!(
            strip_prefix("/v1/service/sandbox/sandbox.SandboxService/StartSandbox").as_deref(),
            Some("/sandbox.SandboxService/StartSandbox")
        );
        assert_eq!(
            strip_prefix("/p/sandbox.SandboxService/GetStatus").as_deref(),
            Some("/sandbox.SandboxService/GetStatus")
        );
        assert_eq!(strip_prefix("/x"), None);
    }

    #[test]
    fn answers_fit_a_grpc_message() {
        let big = "\u{fffd}".repeat(2 << 20);
        let (o, e) = fit_message(big.clone(), big);
        assert!(o.len() + e.len() <= 4 << 20);
        assert!(e.ends_with("4 MiB gRPC message]\n"));
        let (o, e) = fit_message("a".into(), "b".into());
        assert_eq!((o.as_str(), e.as_str()), ("a", "b"));
    }

    #[test]
    fn tails_cut_at_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé✓", 2), "");
        assert_eq!(tail("aé✓", 3), "✓");
    }
}
