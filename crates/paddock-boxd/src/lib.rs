//! The boxd dialect: `boxd.api.v1.BoxdApi` (gRPC over h2c) and its HTTP
//! token exchange (`POST /api/v1/auth/token`) on one port, as boxd's SDK
//! dials them, mapped onto engine calls (`paddock serve --boxd-listen`).
//!
//! A box is a sandbox; its name is the sandbox's key (unique per owner).
//! Every RPC carries `authorization: Bearer <token>`: a session the
//! exchange signed for an API key, a scoped token (`CreateToken`), an API
//! key itself or an OIDC token of a trusted issuer, each through
//! `Engine::authenticate`. Engine errors map onto the status codes the SDK
//! tells apart (`status`). The wire types are the union of the first SDK's
//! proto and the latest's (`proto/boxd.proto`); RPCs not served answer
//! UNIMPLEMENTED.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use paddock_core::engine::Engine;
use paddock_core::model::{
    ExecControl, ExecEvent, ExecRequest, IdleAction, ListQuery, Principal, PtySize, RestartPolicy,
    Sandbox, SandboxSpec, State as St, VolumeRequest, WriteOptions,
};
use paddock_core::Error;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("boxd.api.v1");
}

mod exchange;
mod wire;

use pb::boxd_api_server::{BoxdApi, BoxdApiServer};
use wire::*;

/// The largest `UploadFileStream` (streamed into the file, never held).
const MAX_UPLOAD: u64 = 16 << 30;
/// Stdin goes to a command in pieces of at most this many bytes.
const STDIN_PIECE: usize = 256 << 10;

/// The label every box made through this dialect carries.
pub const BOX_LABEL: &str = "boxd.box";

/// What the operator sets for the dialect.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ingress's zone: boxes are `<name>.<zone>`.
    pub zone: String,
    /// The largest message the server takes (a whole `UploadFile`).
    pub max_message: usize,
    /// Where `CreateCheckoutSession` / `CreateBillingPortalSession` send
    /// people, if the operator has billing; else those calls are
    /// FAILED_PRECONDITION.
    pub checkout_url: Option<String>,
    pub portal_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            zone: "paddock.localhost".into(),
            max_message: 64 << 20,
            checkout_url: None,
            portal_url: None,
        }
    }
}

#[derive(Clone)]
struct Boxd {
    engine: Arc<Engine>,
    opts: Arc<Options>,
}

/// The dialect's routes: the token exchange and the gRPC service.
pub fn router(engine: Arc<Engine>, opts: Options) -> axum::Router {
    let max = opts.max_message;
    let svc = Boxd {
        engine: engine.clone(),
        opts: Arc::new(opts),
    };
    let grpc = BoxdApiServer::new(svc)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let grpc = tonic::service::Routes::new(grpc)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::map_response(too_large_is_exhausted));
    exchange::routes(engine).merge(grpc)
}

/// tonic answers a message past the limit `OUT_OF_RANGE`; boxd's SDK maps
/// `RESOURCE_EXHAUSTED` to its quota error, which is what it is. (Nothing
/// here answers `OUT_OF_RANGE` otherwise.)
async fn too_large_is_exhausted(mut r: axum::response::Response) -> axum::response::Response {
    if r.headers().get("grpc-status").is_some_and(|v| v == "11") {
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    r
}

/// An engine error as the status the SDK maps (§3 of the wire spec).
pub(crate) fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::NotFound { .. } => Status::not_found(msg),
        Error::Exists(_) => Status::already_exists(msg),
        Error::Conflict(_) => Status::failed_precondition(msg),
        Error::Invalid { .. } | Error::ForbiddenField { .. } => Status::invalid_argument(msg),
        Error::Unsupported(_) => Status::unimplemented(msg),
        Error::Quota(_) | Error::PolicyViolation(_) => Status::resource_exhausted(msg),
        Error::Unauthenticated(_) => Status::unauthenticated(msg),
        Error::Forbidden(_) => Status::permission_denied(msg),
        Error::Timeout(_) => Status::deadline_exceeded(msg),
        Error::Unavailable { .. } => Status::unavailable(msg),
        Error::Internal(_) => Status::internal(msg),
    }
}

/// The engine's field names as this wire names them.
fn renamed(e: Error) -> Error {
    const NAMES: &[(&str, &str)] = &[
        ("key", "name"),
        ("image", "image_ref"),
        ("cpu", "config.vcpu"),
        ("memory_mb", "config.memory_bytes"),
        ("disk_mb", "config.disk_bytes"),
        ("ttl_secs", "config.srf.auto_destroy_timeout_secs"),
        ("idle_timeout_secs", "config.srf.auto_suspend_timeout_secs"),
        ("command", "cmd"),
    ];
    match e {
        Error::Invalid { field, reason } => {
            let field = NAMES
                .iter()
                .find(|(a, _)| field == *a)
                .map_or(field.clone(), |(_, b)| b.to_string());
            Error::Invalid { field, reason }
        }
        e => e,
    }
}

fn st(e: Error) -> Status {
    status(renamed(e))
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> R<T> {
    Ok(Response::new(t))
}

impl Boxd {
    async fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let h = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("authorization: Bearer <token> is required"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization: not text"))?;
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization: Bearer <token> is required"))?;
        self.engine
            .authenticate(token)
            .await
            .map(|p| p.via("boxd"))
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    /// A box of `p`'s by id or name (NOT_FOUND otherwise: the SDK's name
    /// fallback turns on it).
    fn find(&self, p: &Principal, r: &str) -> Result<Sandbox, Status> {
        if r.is_empty() {
            return Err(Status::invalid_argument("vm_id: required"));
        }
        match self.engine.find(p, r) {
            Ok(sb) if sb.state != St::Destroyed => Ok(sb),
            Ok(_) | Err(Error::NotFound { .. }) => {
                Err(Status::not_found(format!("VM not found: {r}")))
            }
            Err(e) => Err(status(e)),
        }
    }

    fn url(&self, sb: &Sandbox) -> String {
        self.engine
            .ingress_url(sb, "")
            .unwrap_or_else(|| format!("https://{}.{}", name_of(sb), self.opts.zone))
    }

    fn vm(&self, sb: &Sandbox) -> pb::GetVmResponse {
        let ssh_port = self.engine.ssh_address().map_or(0, |a| a.port() as u32);
        pb::GetVmResponse {
            vm_id: sb.id.to_string(),
            name: name_of(sb),
            image_ref: image_of(sb),
            public_ip: sb.ip.clone().unwrap_or_default(),
            status: status_of(sb.state).into(),
            restart_policy: restart_of(sb).into(),
            disk_bytes: (sb.config.disk_mb.max(0) as u64) << 20,
            auto_suspend_timeout_secs: suspend_of(sb),
            ssh_port,
            vcpu: sb.config.cpu.ceil() as u32,
            memory_bytes: (sb.config.memory_mb.max(0) as u64) << 20,
            created_at: sb.created_at.timestamp(),
            auto_destroy_timeout_secs: sb.config.ttl_secs.unwrap_or(0).min(u32::MAX as u64) as u32,
            labels: user_labels(sb),
            networks: network_of(sb).into_iter().collect(),
            isolated: network_of(sb).is_none(),
            ..Default::default()
        }
    }

    /// What a create's `VmConfig` asks for, onto `spec`; with `defaults`,
    /// boxd's (2 vCPU, 8 GiB, within the operator's ceilings) where it
    /// says nothing.
    fn configure(
        &self,
        p: &Principal,
        spec: &mut SandboxSpec,
        config: Option<&pb::VmConfig>,
        defaults: bool,
    ) -> Result<(), Status> {
        let default = pb::VmConfig::default();
        let c = config.unwrap_or(&default);
        if c.vcpu > 0 {
            spec.cpu = Some(c.vcpu as f64);
        } else if defaults {
            let ceil = self.engine.ceilings(p).map_err(status)?;
            spec.cpu = Some(DEFAULT_VCPU.min(ceil.max_cpu.floor().max(1.0)));
        }
        if c.memory_bytes > 0 {
            spec.memory_mb = Some(mib("config.memory_bytes", c.memory_bytes)?);
        } else if defaults {
            let ceil = self.engine.ceilings(p).map_err(status)?;
            spec.memory_mb = Some(DEFAULT_MEMORY_MB.min(ceil.max_memory_mb));
        }
        if c.disk_bytes > 0 {
            spec.disk_mb = Some(mib("config.disk_bytes", c.disk_bytes)?);
        }
        if let Some(srf) = &c.srf {
            match srf.auto_suspend_timeout_secs {
                // Present and 0: disabled.
                Some(0) => {
                    spec.idle_timeout_secs = None;
                }
                Some(s) => {
                    spec.idle_timeout_secs = Some(s as u64);
                    spec.on_idle = Some(IdleAction::Suspend);
                    spec.wake_on_request = true;
                }
                None => {}
            }
            if srf.auto_destroy_timeout_secs > 0 {
                spec.ttl_secs = Some(srf.auto_destroy_timeout_secs as u64);
            }
        }
        for (i, v) in c.volumes.iter().enumerate() {
            if v.disk_id.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "config.volumes[{i}].disk_id: required"
                )));
            }
            spec.volumes.push(VolumeRequest {
                name: v.disk_id.clone(),
                path: v.mount_path.clone(),
                read_only: v.read_only,
            });
        }
        Ok(())
    }

    /// The proxies a create's `network.proxies` names, and the box's
    /// default one.
    async fn make_proxies(
        &self,
        p: &Principal,
        sb: &Sandbox,
        config: Option<&pb::VmConfig>,
    ) -> Result<(), Status> {
        self.engine
            .set_proxy_port(p, sb.id, "", 0)
            .await
            .map_err(st)?;
        if let Some(n) = config.and_then(|c| c.network.as_ref()) {
            for e in &n.proxies {
                let port = u16::try_from(e.port).map_err(|_| {
                    Status::invalid_argument("config.network.proxies.port: past 65535")
                })?;
                self.engine
                    .create_proxy(p, sb.id, &e.name, port)
                    .await
                    .map_err(st)?;
            }
        }
        Ok(())
    }

    /// A new box: the sandbox made on `network` (a name or id, `default`
    /// the owner's default one; none: isolated), with its proxies.
    async fn create_box(
        &self,
        p: &Principal,
        mut spec: SandboxSpec,
        config: Option<&pb::VmConfig>,
        network: Option<String>,
    ) -> Result<(Sandbox, u64), Status> {
        spec.labels.insert(BOX_LABEL.into(), "1".into());
        set_network(&mut spec, network);
        let t0 = Instant::now();
        let sb = self.engine.create_new(p, spec).await.map_err(st)?;
        let ms = t0.elapsed().as_millis() as u64;
        if let Err(e) = self.make_proxies(p, &sb, config).await {
            let _ = self.engine.destroy(p, sb.id).await;
            return Err(e);
        }
        Ok((sb, ms.max(1)))
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Kills a command whose caller went away (the agent signals its whole
/// process group).
struct KillOnDrop(Option<mpsc::Sender<ExecControl>>);

impl KillOnDrop {
    /// The command exited: nothing to kill.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.try_send(ExecControl::Signal(9));
        }
    }
}

/// The deadline a call carries (`grpc-timeout`: digits and a unit).
fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
#[allow(deprecated)] // `vm_name`: the seed SDK's field, deprecated by 0.2's proto.
impl BoxdApi for Boxd {
    async fn create_vm(&self, req: Request<pb::CreateVmRequest>) -> R<pb::CreateVmResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let name = box_name(&r.name)?;
        let mut spec = SandboxSpec {
            key: Some(name),
            image: (!r.image_ref.is_empty()).then(|| r.image_ref.clone()),
            ..Default::default()
        };
        for (i, e) in r.env.iter().enumerate() {
            if e.key.is_empty() {
                return Err(Status::invalid_argument(format!("env[{i}].key: required")));
            }
            spec.env.insert(e.key.clone(), e.value.clone());
        }
        spec.restart = restart_policy(&r.restart_policy, !r.cmd.is_empty())?;
        if !r.cmd.is_empty() {
            spec.command = Some(r.cmd.clone());
        }
        for (k, v) in &r.labels {
            spec.labels.insert(k.clone(), v.clone());
        }
        let mut network = r.networks.first().cloned();
        self.configure(&p, &mut spec, r.config.as_ref(), true)?;
        if network.is_none() && !r.isolated {
            network = Some("default".into());
        }
        let (sb, ms) = self
            .create_box(&p, spec, r.config.as_ref(), network)
            .await?;
        ok(pb::CreateVmResponse {
            vm_id: sb.id.to_string(),
            name: name_of(&sb),
            public_ip: sb.ip.clone().unwrap_or_default(),
            url: self.url(&sb),
            image: image_of(&sb),
            status: status_of(sb.state).into(),
            boot_time_ms: ms,
            ..Default::default()
        })
    }

    async fn destroy_vm(&self, req: Request<pb::DestroyVmRequest>) -> R<pb::DestroyVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        self.engine.destroy(&p, sb.id).await.map_err(st)?;
        ok(pb::DestroyVmResponse {})
    }

    async fn start_vm(&self, req: Request<pb::StartVmRequest>) -> R<pb::StartVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        match sb.state {
            St::Paused => self.engine.resume(&p, sb.id).await,
            _ => self.engine.start(&p, sb.id).await,
        }
        .map_err(st)?;
        ok(pb::StartVmResponse {})
    }

    async fn stop_vm(&self, req: Request<pb::StopVmRequest>) -> R<pb::StopVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        self.engine.stop(&p, sb.id).await.map_err(st)?;
        ok(pb::StopVmResponse {})
    }

    async fn reboot_vm(&self, req: Request<pb::RebootVmRequest>) -> R<pb::RebootVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        self.engine.stop(&p, sb.id).await.map_err(st)?;
        self.engine.start(&p, sb.id).await.map_err(st)?;
        ok(pb::RebootVmResponse {})
    }

    async fn suspend_vm(&self, req: Request<pb::SuspendVmRequest>) -> R<pb::SuspendVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        let t0 = Instant::now();
        self.engine.pause(&p, sb.id).await.map_err(st)?;
        ok(pb::SuspendVmResponse {
            suspend_us: (t0.elapsed().as_micros() as u64).max(1),
        })
    }

    async fn resume_vm(&self, req: Request<pb::ResumeVmRequest>) -> R<pb::ResumeVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        let t0 = Instant::now();
        self.engine.resume(&p, sb.id).await.map_err(st)?;
        ok(pb::ResumeVmResponse {
            resume_us: (t0.elapsed().as_micros() as u64).max(1),
        })
    }

    async fn get_vm(&self, req: Request<pb::GetVmRequest>) -> R<pb::GetVmResponse> {
        let p = self.principal(&req).await?;
        let sb = self.find(&p, &req.get_ref().vm_id)?;
        ok(self.vm(&sb))
    }

    async fn list_vms(&self, req: Request<pb::ListVmsRequest>) -> R<pb::ListVmsResponse> {
        let p = self.principal(&req).await?;
        let all = self
            .engine
            .list_all(&p, &ListQuery::default())
            .map_err(st)?;
        ok(pb::ListVmsResponse {
            vms: all
                .iter()
                .filter(|sb| sb.state != St::Destroyed)
                .map(|sb| self.vm(sb))
                .collect(),
            ..Default::default()
        })
    }

    async fn fork_vm(&self, req: Request<pb::ForkVmRequest>) -> R<pb::ForkVmResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let src = self.find(&p, &r.source_vm_id)?;
        let name = box_name(&r.name)?;
        let mut labels = BTreeMap::new();
        labels.insert(BOX_LABEL.to_string(), "1".to_string());
        labels.insert(FORKED_FROM.to_string(), src.id.to_string());
        let t0 = Instant::now();
        let sb = self
            .engine
            .fork_named(&p, src.id, &name, labels)
            .await
            .map_err(st)?;
        let ms = t0.elapsed().as_millis() as u64;
        self.make_proxies(&p, &sb, r.config.as_ref()).await?;
        ok(pb::ForkVmResponse {
            vm_id: sb.id.to_string(),
            name: name_of(&sb),
            public_ip: sb.ip.clone().unwrap_or_default(),
            url: self.url(&sb),
            image: image_of(&sb),
            status: status_of(sb.state).into(),
            forked_from: src.id.to_string(),
            boot_time_ms: ms.max(1),
            ..Default::default()
        })
    }

    async fn stream_logs(&self, req: Request<pb::StreamLogsRequest>) -> R<Out<pb::LogChunk>> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, &r.vm_id)?;
        let first = self.engine.logs(&p, sb.id, 0).await.map_err(st)?;
        let (tx, rx) = mpsc::channel::<Result<pb::LogChunk, Status>>(8);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let mut offset = first.len() as u64;
            for c in first.chunks(LOG_CHUNK) {
                if tx
                    .send(Ok(pb::LogChunk { data: c.to_vec() }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                match engine.logs(&p, sb.id, offset).await {
                    Ok(more) if !more.is_empty() => {
                        offset += more.len() as u64;
                        for c in more.chunks(LOG_CHUNK) {
                            if tx
                                .send(Ok(pb::LogChunk { data: c.to_vec() }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    // Destroyed: its log ends here.
                    Err(_) => return,
                }
            }
        });
        ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn exec(&self, req: Request<Streaming<pb::ExecChunk>>) -> R<Out<pb::ExecChunk>> {
        let p = self.principal(&req).await?;
        let timeout = deadline(&req);
        let mut inbound = req.into_inner();
        let init = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the first message names vm_id and command"))?;
        if init.command.is_empty() {
            return Err(Status::invalid_argument("command: required"));
        }
        let sb = self.find(&p, &init.vm_id)?;
        let tty = init.tty;
        let size = |cols: u32, rows: u32| PtySize {
            cols: if cols == 0 {
                80
            } else {
                cols.min(u16::MAX as u32) as u16
            },
            rows: if rows == 0 {
                24
            } else {
                rows.min(u16::MAX as u32) as u16
            },
        };
        let er = ExecRequest {
            shell: Some(init.command.clone()),
            pty: tty.then(|| size(init.cols, init.rows)),
            timeout: timeout.map(|d| d.as_secs_f64().max(0.001)),
            ..Default::default()
        };
        let (ctl, ctl_rx) = mpsc::channel::<ExecControl>(8);
        let s = self
            .engine
            .exec_stream(&p, sb.id, &er, ctl_rx)
            .await
            .map_err(st)?;
        if !init.data.is_empty() {
            let _ = ctl.send(ExecControl::Stdin(Bytes::from(init.data))).await;
        }
        // The caller's frames: stdin, resizes, and its half-close (stdin's
        // EOF, never the end of the call). Frames carry no vm_id: they are
        // this stream's.
        let input = ctl.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(c)) if c.window_change => {
                        if tty {
                            let _ = input.send(ExecControl::Resize(size(c.cols, c.rows))).await;
                        }
                    }
                    Ok(Some(c)) => {
                        // In pieces, through a short queue: what waits for
                        // a command that does not read is bounded.
                        let data = Bytes::from(c.data);
                        let mut at = 0;
                        while at < data.len() {
                            let end = (at + STDIN_PIECE).min(data.len());
                            if input
                                .send(ExecControl::Stdin(data.slice(at..end)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            at = end;
                        }
                    }
                    Ok(None) => {
                        let _ = input.send(ExecControl::CloseStdin).await;
                        return;
                    }
                    // Cancelled: the output side's guard kills it.
                    Err(_) => return,
                }
            }
        });
        // The output, mapped as it comes (no task between: a round trip
        // counts every hop). Dropped by tonic when the caller goes: the
        // guard then kills the command.
        let guard = KillOnDrop(Some(ctl));
        let out =
            futures::stream::unfold((Box::pin(s), Some(guard)), |(mut s, guard)| async move {
                let guard = guard?;
                loop {
                    let chunk = match s.next().await {
                        Some(Ok(ExecEvent::Stdout(b))) if !b.is_empty() => pb::ExecChunk {
                            data: b.to_vec(),
                            ..Default::default()
                        },
                        Some(Ok(ExecEvent::Stderr(b))) if !b.is_empty() => pb::ExecChunk {
                            data: b.to_vec(),
                            is_stderr: true,
                            ..Default::default()
                        },
                        Some(Ok(ExecEvent::Exit(res))) => {
                            guard.disarm();
                            if res.timed_out {
                                let e = Status::deadline_exceeded("the command timed out");
                                return Some((Err(e), (s, None)));
                            }
                            // Last: any frame after it would set the SDK's
                            // exit code again.
                            let code = match res.signal {
                                Some(sig) if res.exit_code < 0 => 128 + sig,
                                _ => res.exit_code,
                            };
                            let exit = pb::ExecChunk {
                                exit_code: code,
                                ..Default::default()
                            };
                            return Some((Ok(exit), (s, None)));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Some((Err(st(e)), (s, None))),
                        None => {
                            let e = Status::internal("the command ended without an exit");
                            return Some((Err(e), (s, None)));
                        }
                    };
                    return Some((Ok(chunk), (s, Some(guard))));
                }
            });
        ok(Box::pin(out))
    }

    async fn upload_file(&self, req: Request<pb::UploadFileRequest>) -> R<pb::UploadFileResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, &r.vm_id)?;
        let n = r.data.len() as u64;
        self.write(&p, &sb, &r.path, vec![Bytes::from(r.data)], n)
            .await?;
        ok(pb::UploadFileResponse { bytes_written: n })
    }

    async fn upload_file_stream(
        &self,
        req: Request<Streaming<pb::UploadFileChunk>>,
    ) -> R<pb::UploadFileResponse> {
        let p = self.principal(&req).await?;
        let mut s = req.into_inner();
        let first = s
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the first chunk names vm_id and path"))?;
        let sb = self.find(&p, &first.vm_id)?;
        absolute(&first.path)?;
        let total = first.total_size;
        if total > MAX_UPLOAD {
            return Err(Status::resource_exhausted(format!(
                "total_size: {total} bytes is past the largest upload ({MAX_UPLOAD} bytes)"
            )));
        }
        // Streamed into the file as the chunks come (never held whole):
        // exactly `total_size` bytes, or the write is abandoned.
        let head = Bytes::from(first.data);
        let seen = head.len() as u64;
        let rest = futures::stream::unfold(Some((s, seen)), move |st| async move {
            let (mut s, seen) = st?;
            match s.message().await {
                Ok(Some(c)) => {
                    let seen = seen + c.data.len() as u64;
                    if seen > total {
                        let e = Error::invalid("total_size", "more bytes came than it said");
                        return Some((Err(e), None));
                    }
                    Some((Ok(Bytes::from(c.data)), Some((s, seen))))
                }
                Ok(None) if seen == total => None,
                Ok(None) => Some((
                    Err(Error::invalid(
                        "total_size",
                        format!("{total} bytes said, {seen} came"),
                    )),
                    None,
                )),
                Err(e) => Some((Err(Error::invalid("data", e.message().to_string())), None)),
            }
        });
        if seen > total {
            return Err(Status::invalid_argument(
                "total_size: more bytes came than it said",
            ));
        }
        let data = futures::stream::once(async move { Ok(head) }).chain(rest);
        let opts = WriteOptions {
            mkdir_parents: true,
            atomic: true,
            size: Some(total),
            ..Default::default()
        };
        self.engine
            .write_file(&p, sb.id, &first.path, &opts, data)
            .await
            .map_err(|e| st(path_field(e)))?;
        ok(pb::UploadFileResponse {
            bytes_written: total,
        })
    }

    async fn download_file(
        &self,
        req: Request<pb::DownloadFileRequest>,
    ) -> R<pb::DownloadFileResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, &r.vm_id)?;
        absolute(&r.path)?;
        let (size, mut s) = self
            .engine
            .read_file(&p, sb.id, &r.path)
            .await
            .map_err(|e| st(path_field(e)))?;
        let max = self.opts.max_message.saturating_sub(1024).max(1);
        if size.is_some_and(|n| n as usize > max) {
            return Err(Status::resource_exhausted(format!(
                "{}: {} bytes is past the largest message ({max} bytes)",
                r.path,
                size.unwrap_or(0)
            )));
        }
        let mut data = Vec::new();
        while let Some(c) = s.next().await {
            data.extend_from_slice(&c.map_err(st)?);
            if data.len() > max {
                return Err(Status::resource_exhausted(format!(
                    "{}: past the largest message ({max} bytes)",
                    r.path
                )));
            }
        }
        ok(pb::DownloadFileResponse { data })
    }

    async fn whoami(&self, req: Request<pb::WhoamiRequest>) -> R<pb::WhoamiResponse> {
        let p = self.principal(&req).await?;
        let keys = self.engine.ssh_keys(&p).map_err(st)?;
        // Made on first use; a caller that may make nothing (a read-only
        // token) or a backend without networks sees none.
        let net_id = match self.engine.default_network(&p).await {
            Ok(n) => n.id,
            Err(_) => String::new(),
        };
        ok(pb::WhoamiResponse {
            user_id: p.id.clone(),
            display_name: p.name.clone().unwrap_or_else(|| p.id.clone()),
            pubkey_fingerprints: keys.into_iter().map(|k| k.fingerprint).collect(),
            default_network_id: net_id,
            billing: Some(self.billing(&p)?),
        })
    }

    async fn get_config(&self, req: Request<pb::GetConfigRequest>) -> R<pb::GetConfigResponse> {
        self.principal(&req).await?;
        ok(pb::GetConfigResponse {
            default_image: DEFAULT_IMAGE.into(),
            zone: self.opts.zone.clone(),
        })
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> R<pb::CreateTokenResponse> {
        let p = self.principal(&req).await?;
        let secs = req.get_ref().expires_in_secs;
        let t = self
            .engine
            .create_token(&p, secs, Default::default())
            .map_err(|e| st(field_as(e, "expires_in", "expires_in_secs")))?;
        ok(pb::CreateTokenResponse {
            token: t.token,
            expires_at: t.info.expires_at.timestamp(),
        })
    }

    async fn list_tokens(&self, req: Request<pb::ListTokensRequest>) -> R<pb::ListTokensResponse> {
        let p = self.principal(&req).await?;
        ok(pb::ListTokensResponse {
            tokens: self
                .engine
                .tokens(&p)
                .map_err(st)?
                .into_iter()
                .map(|t| pb::TokenInfo {
                    jti: t.jti,
                    created_at: t.created_at.timestamp(),
                    expires_at: t.expires_at.timestamp(),
                })
                .collect(),
        })
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> R<pb::RevokeTokenResponse> {
        let p = self.principal(&req).await?;
        self.engine
            .revoke_token(&p, &req.get_ref().jti)
            .map_err(st)?;
        ok(pb::RevokeTokenResponse {})
    }

    async fn create_template(
        &self,
        req: Request<pb::CreateTemplateRequest>,
    ) -> R<pb::CreateTemplateResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let mut spec = SandboxSpec {
            image: (!r.image_ref.is_empty()).then(|| r.image_ref.clone()),
            ..Default::default()
        };
        self.configure(&p, &mut spec, r.config.as_ref(), true)?;
        let t = self
            .engine
            .create_template(&p, &r.name, spec, 0)
            .await
            .map_err(st)?;
        ok(pb::CreateTemplateResponse {
            template_id: t.name.clone(),
            name: t.name,
            status: "ready".into(),
        })
    }

    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> R<pb::ListTemplatesResponse> {
        let p = self.principal(&req).await?;
        let all = self.engine.list_templates(&p).map_err(st)?;
        ok(pb::ListTemplatesResponse {
            templates: all
                .into_iter()
                .map(|t| pb::TemplateInfo {
                    template_id: t.name.clone(),
                    image_ref: t
                        .defaults
                        .image
                        .clone()
                        .unwrap_or_else(|| DEFAULT_IMAGE.into()),
                    vcpu: t.defaults.cpu.map_or(0, |c| c.ceil() as u32),
                    memory_bytes: t.defaults.memory_mb.map_or(0, |m| (m.max(0) as u64) << 20),
                    name: t.name,
                    status: "ready".into(),
                })
                .collect(),
        })
    }

    async fn delete_template(
        &self,
        req: Request<pb::DeleteTemplateRequest>,
    ) -> R<pb::DeleteTemplateResponse> {
        let p = self.principal(&req).await?;
        self.engine
            .delete_template(&p, &req.get_ref().template_id)
            .await
            .map_err(st)?;
        ok(pb::DeleteTemplateResponse {})
    }

    async fn create_vm_from_template(
        &self,
        req: Request<pb::CreateVmFromTemplateRequest>,
    ) -> R<pb::CreateVmFromTemplateResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        // Unknown: NOT_FOUND naming the template, before a name is made.
        self.engine.get_template(&p, &r.template_id).map_err(st)?;
        let mut spec = SandboxSpec {
            key: Some(box_name(&r.name)?),
            template: Some(r.template_id.clone()),
            ..Default::default()
        };
        self.configure(&p, &mut spec, r.config.as_ref(), false)?;
        let (sb, ms) = self
            .create_box(&p, spec, r.config.as_ref(), Some("default".into()))
            .await?;
        ok(pb::CreateVmFromTemplateResponse {
            vm_id: sb.id.to_string(),
            name: name_of(&sb),
            public_ip: sb.ip.clone().unwrap_or_default(),
            url: self.url(&sb),
            status: status_of(sb.state).into(),
            boot_time_ms: ms,
        })
    }

    async fn create_disk(&self, req: Request<pb::CreateDiskRequest>) -> R<pb::CreateDiskResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        if r.size_bytes == 0 {
            return Err(Status::invalid_argument("size_bytes: required (above 0)"));
        }
        let mb = r.size_bytes.div_ceil(1 << 20);
        let v = self
            .engine
            .create_volume(&p, &r.name, mb, BTreeMap::new())
            .await
            .map_err(|e| st(field_as(e, "size_mb", "size_bytes")))?;
        ok(pb::CreateDiskResponse {
            disk_id: v.id.to_string(),
            name: v.name,
            size_bytes: v.size_mb << 20,
            status: "ready".into(),
        })
    }

    async fn list_disks(&self, req: Request<pb::ListDisksRequest>) -> R<pb::ListDisksResponse> {
        let p = self.principal(&req).await?;
        let mut disks = Vec::new();
        for v in self.engine.volumes(&p).map_err(st)? {
            let holders = self
                .engine
                .get_volume(&p, &v.id.to_string())
                .map(|s| s.holders)
                .unwrap_or_default();
            let mut attachments = Vec::new();
            for h in &holders {
                let name = self
                    .engine
                    .get(&p, h.sandbox_id)
                    .map(|sb| name_of(&sb))
                    .unwrap_or_default();
                attachments.push(pb::DiskAttachment {
                    vm_id: h.sandbox_id.to_string(),
                    vm_name: name,
                    mount_path: h.path.clone(),
                    mount_mode: if h.read_only { "ro" } else { "rw" }.into(),
                });
            }
            disks.push(pb::DiskInfo {
                disk_id: v.id.to_string(),
                name: v.name,
                size_bytes: v.size_mb << 20,
                status: if attachments.is_empty() {
                    "ready"
                } else {
                    "attached"
                }
                .into(),
                created_at: v.created_at.timestamp_millis(),
                attachments,
                ..Default::default()
            });
        }
        ok(pb::ListDisksResponse { disks })
    }

    async fn attach_disk(&self, req: Request<pb::AttachDiskRequest>) -> R<pb::AttachDiskResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, &r.vm_id)?;
        // The disk is a thing named, not a field's value: unknown is
        // NOT_FOUND.
        self.engine.get_volume(&p, &r.disk_id).map_err(st)?;
        self.engine
            .attach_volume(
                &p,
                sb.id,
                VolumeRequest {
                    name: r.disk_id,
                    path: r.mount_path,
                    read_only: r.read_only,
                },
            )
            .await
            .map_err(|e| {
                st(field_as(
                    field_as(e, "path", "mount_path"),
                    "name",
                    "disk_id",
                ))
            })?;
        ok(pb::AttachDiskResponse {})
    }

    async fn detach_disk(&self, req: Request<pb::DetachDiskRequest>) -> R<pb::DetachDiskResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, &r.vm_id)?;
        self.engine
            .detach_volume(&p, sb.id, &r.disk_id)
            .await
            .map_err(st)?;
        ok(pb::DetachDiskResponse {})
    }

    async fn destroy_disk(
        &self,
        req: Request<pb::DestroyDiskRequest>,
    ) -> R<pb::DestroyDiskResponse> {
        let p = self.principal(&req).await?;
        self.engine
            .delete_volume(&p, &req.get_ref().disk_id)
            .await
            .map_err(st)?;
        ok(pb::DestroyDiskResponse {})
    }

    async fn list_proxies(
        &self,
        req: Request<pb::ListProxiesRequest>,
    ) -> R<pb::ListProxiesResponse> {
        let p = self.principal(&req).await?;
        let r = req.get_ref();
        let sb = self.find(&p, proxy_vm(&r.vm, &r.vm_name))?;
        let all = self.engine.proxies(&p, sb.id).map_err(st)?;
        ok(pb::ListProxiesResponse {
            proxies: all.iter().map(|x| self.proxy_info(&sb, x)).collect(),
        })
    }

    async fn create_proxy(
        &self,
        req: Request<pb::CreateProxyRequest>,
    ) -> R<pb::CreateProxyResponse> {
        let p = self.principal(&req).await?;
        let r = req.into_inner();
        let sb = self.find(&p, proxy_vm(&r.vm, &r.vm_name))?;
        if r.name.is_empty() {
            return Err(Status::invalid_argument("name: required"));
        }
        let port = u16::try_from(r.port)
            .map_err(|_| Status::invalid_argument(format!("port: {} is past 65535", r.port)))?;
        let x = self
            .engine
            .create_proxy(&p, sb.id, &r.name, port)
            .await
            .map_err(st)?;
        let info = self.proxy_info(&sb, &x);
        ok(pb::CreateProxyResponse {
            name: info.name,
            vm_name: info.vm_name,
            domain: info.domain,
            port: info.port,
        })
    }

    async fn delete_proxy(
        &self,
        req: Request<pb::DeleteProxyRequest>,
    ) -> R<pb::DeleteProxyResponse> {
        let p = self.principal(&req).await?;
        let r = req.get_ref();
        let sb = self.find(&p, proxy_vm(&r.vm, &r.vm_name))?;
        self.engine
            .delete_proxy(&p, sb.id, &r.name)
            .await
            .map_err(st)?;
        ok(pb::DeleteProxyResponse {})
    }

    async fn set_proxy_port(
        &self,
        req: Request<pb::SetProxyPortRequest>,
    ) -> R<pb::SetProxyPortResponse> {
        let p = self.principal(&req).await?;
        let r = req.get_ref();
        let sb = self.find(&p, proxy_vm(&r.vm, &r.vm_name))?;
        let port = match r.port.trim() {
            "" | "auto" => 0,
            s => s.parse::<u16>().map_err(|_| {
                Status::invalid_argument(format!(
                    "port: {s:?} is not a port (0-65535, or \"auto\")"
                ))
            })?,
        };
        self.engine
            .set_proxy_port(&p, sb.id, &r.name, port)
            .await
            .map_err(st)?;
        ok(pb::SetProxyPortResponse {})
    }

    async fn bind_domain(&self, req: Request<pb::BindDomainRequest>) -> R<pb::BindDomainResponse> {
        let p = self.principal(&req).await?;
        let r = req.get_ref();
        let sb = self.find(&p, &r.vm_id)?;
        self.engine
            .bind_domain(&p, &r.domain, sb.id)
            .await
            .map_err(st)?;
        ok(pb::BindDomainResponse {})
    }

    async fn unbind_domain(
        &self,
        req: Request<pb::UnbindDomainRequest>,
    ) -> R<pb::UnbindDomainResponse> {
        let p = self.principal(&req).await?;
        self.engine
            .unbind_domain(&p, &req.get_ref().domain)
            .await
            .map_err(st)?;
        ok(pb::UnbindDomainResponse {})
    }

    async fn list_domains(
        &self,
        req: Request<pb::ListDomainsRequest>,
    ) -> R<pb::ListDomainsResponse> {
        let p = self.principal(&req).await?;
        ok(pb::ListDomainsResponse {
            domains: self
                .engine
                .domains(&p)
                .map_err(st)?
                .into_iter()
                .map(|d| pb::DomainInfo {
                    domain: d.domain,
                    vm_id: d.sandbox.to_string(),
                })
                .collect(),
        })
    }

    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> R<pb::CreateNetworkResponse> {
        let p = self.principal(&req).await?;
        let name = req.get_ref().name.clone();
        let n = self
            .engine
            .create_network(&p, (!name.is_empty()).then_some(name.as_str()))
            .await
            .map_err(st)?;
        ok(pb::CreateNetworkResponse { network_id: n.id })
    }

    async fn list_networks(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> R<pb::ListNetworksResponse> {
        let p = self.principal(&req).await?;
        // The default network is listed too, made if it was not yet (if
        // the caller may).
        let _ = self.engine.default_network(&p).await;
        ok(pb::ListNetworksResponse {
            networks: self
                .engine
                .networks(&p)
                .map_err(st)?
                .into_iter()
                .map(|n| pb::NetworkInfo {
                    network_id: n.id,
                    subnet: n.subnet,
                    status: n.status,
                })
                .collect(),
        })
    }

    async fn list_plans(&self, req: Request<pb::ListPlansRequest>) -> R<pb::ListPlansResponse> {
        let p = self.principal(&req).await?;
        let b = self.billing(&p)?;
        ok(pb::ListPlansResponse {
            plans: vec![pb::PlanInfo {
                tier: b.tier.clone(),
                shape: b.shape.clone(),
                monthly_eur: 0,
                lookup_key: "self-hosted".into(),
                description: format!(
                    "This server's operator's ceilings: {} vCPU and {} MiB per box, {}",
                    b.vcpu,
                    b.memory_bytes >> 20,
                    match b.max_vms {
                        0 => "no limit on boxes".to_string(),
                        n => format!("{n} boxes at most"),
                    }
                ),
                vcpu: b.vcpu,
                memory_bytes: b.memory_bytes,
            }],
        })
    }

    async fn get_billing(&self, req: Request<pb::GetBillingRequest>) -> R<pb::GetBillingResponse> {
        let p = self.principal(&req).await?;
        ok(pb::GetBillingResponse {
            billing: Some(self.billing(&p)?),
        })
    }

    async fn create_checkout_session(
        &self,
        req: Request<pb::CreateCheckoutSessionRequest>,
    ) -> R<pb::CreateCheckoutSessionResponse> {
        self.principal(&req).await?;
        match &self.opts.checkout_url {
            Some(u) => ok(pb::CreateCheckoutSessionResponse {
                checkout_url: u.clone(),
            }),
            None => Err(no_billing()),
        }
    }

    async fn create_billing_portal_session(
        &self,
        req: Request<pb::CreateBillingPortalSessionRequest>,
    ) -> R<pb::CreateBillingPortalSessionResponse> {
        self.principal(&req).await?;
        match &self.opts.portal_url {
            Some(u) => ok(pb::CreateBillingPortalSessionResponse {
                portal_url: u.clone(),
            }),
            None => Err(no_billing()),
        }
    }

    async fn change_shape(
        &self,
        req: Request<pb::ChangeShapeRequest>,
    ) -> R<pb::ChangeShapeResponse> {
        self.principal(&req).await?;
        Err(no_billing())
    }
}

fn no_billing() -> Status {
    Status::failed_precondition(
        "this is a self-hosted Paddock server: it has no billing (its operator's policies set what you may use)",
    )
}

impl Boxd {
    fn billing(&self, p: &Principal) -> Result<pb::BillingInfo, Status> {
        let c = self.engine.ceilings(p).map_err(st)?;
        let vcpu = c.max_cpu.floor().max(0.0) as u32;
        let memory_bytes = (c.max_memory_mb.max(0) as u64) << 20;
        Ok(pb::BillingInfo {
            tier: "self-hosted".into(),
            shape: format!("{vcpu}x{}", memory_bytes >> 30),
            subscription_status: "active".into(),
            max_vms: c.max_sandboxes.unwrap_or(0),
            vcpu,
            memory_bytes,
            ceiling_vcpu: vcpu,
            ceiling_memory_bytes: memory_bytes,
            billing_mode: "self-hosted".into(),
            ..Default::default()
        })
    }

    fn proxy_info(&self, sb: &Sandbox, x: &paddock_core::model::Proxy) -> pb::ProxyInfo {
        let host = self.engine.proxy_host(sb, &x.name).unwrap_or_default();
        pb::ProxyInfo {
            name: x.name.clone(),
            vm_name: name_of(sb),
            domain: host,
            port: x.port as u32,
            is_default: x.name.is_empty(),
            port_display: match x.port {
                0 => "auto".into(),
                n => n.to_string(),
            },
            vm_id: sb.id.to_string(),
            port_mode: if x.port == 0 { "auto" } else { "fixed" }.into(),
            effective_port: x.port as u32,
        }
    }

    /// Writes a whole file (atomically, its directories made).
    async fn write(
        &self,
        p: &Principal,
        sb: &Sandbox,
        path: &str,
        parts: Vec<Bytes>,
        size: u64,
    ) -> Result<(), Status> {
        absolute(path)?;
        let opts = WriteOptions {
            mkdir_parents: true,
            atomic: true,
            size: Some(size),
            ..Default::default()
        };
        let data = futures::stream::iter(parts.into_iter().map(Ok));
        self.engine
            .write_file(p, sb.id, path, &opts, data)
            .await
            .map_err(|e| st(path_field(e)))?;
        Ok(())
    }
}

/// The proxy RPCs name their box by `vm` (0.2) or `vm_name` (0.1, which
/// 0.2 deprecates: read here on purpose).
fn proxy_vm<'a>(vm: &'a str, vm_name: &'a str) -> &'a str {
    if vm.is_empty() {
        vm_name
    } else {
        vm
    }
}

/// A path in a box is absolute (there is no working directory to be
/// relative to).
fn absolute(path: &str) -> Result<(), Status> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "path: {path:?} is not absolute"
        )))
    }
}

fn path_field(e: Error) -> Error {
    field_as(e, "path", "path")
}

fn field_as(e: Error, from: &str, to: &str) -> Error {
    match e {
        Error::Invalid { field, reason } if field == from => Error::Invalid {
            field: to.into(),
            reason,
        },
        e => e,
    }
}

/// A box's restart policy as asked (`""`: always, when there is a main
/// command).
fn restart_policy(v: &str, has_cmd: bool) -> Result<Option<RestartPolicy>, Status> {
    match v {
        "" if has_cmd => Ok(Some(RestartPolicy::Always)),
        "" => Ok(None),
        "always" => Ok(Some(RestartPolicy::Always)),
        "never" => Ok(Some(RestartPolicy::Never)),
        other => Err(Status::invalid_argument(format!(
            "restart_policy: {other:?} is not \"always\" or \"never\""
        ))),
    }
}

#[cfg(test)]
mod tests;
