//! A fake backend and a fake agent, for the engine's unit tests (and any
//! crate's, with the `testing` feature): no root, no sandboxes. The agent is
//! a real server of the agent protocol on a unix socket in a temporary
//! directory, greeting with the sandbox's identity as the real one does, so
//! the engine's client, its checks and its reconnects are the real ones;
//! what it does is small: a command's output is its argv joined by spaces,
//! files live in memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::Stream;
use paddock_proto::identity::Identity;
use paddock_proto::v1 as pb;
use paddock_proto::v1::agent_server::{Agent, AgentServer};
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Isolation, Metrics, SandboxConfig};
use crate::runtime::{AgentEndpoint, Instance, Liveness, Runtime};

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// The fake agent: in-memory files, commands that echo their argv.
#[derive(Default, Clone)]
struct FakeAgent {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

fn info(path: &str, size: u64) -> pb::FileInfo {
    pb::FileInfo {
        name: path.rsplit('/').next().unwrap_or_default().into(),
        path: path.into(),
        kind: "file".into(),
        size,
        mode: 0o644,
        mtime_unix_ms: 0,
        symlink_target: String::new(),
    }
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn hello(
        &self,
        _: Request<pb::HelloRequest>,
    ) -> std::result::Result<Response<pb::HelloResponse>, Status> {
        Ok(Response::new(pb::HelloResponse {
            agent_version: "fake".into(),
            protocol_version: paddock_proto::PROTOCOL_VERSION,
            pid: std::process::id(),
            boot_unix_ms: 0,
            features: vec![],
        }))
    }

    type ExecStream = BoxStream<pb::ExecOutput>;

    async fn exec(
        &self,
        req: Request<Streaming<pb::ExecInput>>,
    ) -> std::result::Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let Some(pb::ExecInput {
            msg: Some(pb::exec_input::Msg::Start(start)),
        }) = input.message().await?
        else {
            return Err(Status::invalid_argument("no start"));
        };
        let text = if start.shell.is_empty() {
            start.argv.join(" ")
        } else {
            start.shell.clone()
        };
        let out = format!("{text}\n").into_bytes();
        let exit = pb::ExecOutput {
            msg: Some(pb::exec_output::Msg::Exit(pb::ExecExit {
                exit_code: 0,
                stdout: if start.buffered {
                    out.clone().into()
                } else {
                    Default::default()
                },
                ..Default::default()
            })),
        };
        let mut msgs = vec![pb::ExecOutput {
            msg: Some(pb::exec_output::Msg::Started(pb::ExecStarted { pid: 2 })),
        }];
        if !start.buffered {
            msgs.push(pb::ExecOutput {
                msg: Some(pb::exec_output::Msg::Stdout(out.into())),
            });
        }
        msgs.push(exit);
        Ok(Response::new(Box::pin(futures::stream::iter(
            msgs.into_iter().map(Ok),
        ))))
    }

    type ReadFileStream = BoxStream<pb::FileChunk>;

    async fn read_file(
        &self,
        req: Request<pb::ReadFileRequest>,
    ) -> std::result::Result<Response<Self::ReadFileStream>, Status> {
        let path = req.into_inner().path;
        let data = self.files.lock().unwrap().get(&path).cloned();
        let data = data.ok_or_else(|| Status::not_found(format!("{path}: no such file")))?;
        let chunk = pb::FileChunk { data: data.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
    }

    async fn write_file(
        &self,
        req: Request<Streaming<pb::WriteFileInput>>,
    ) -> std::result::Result<Response<pb::FileInfo>, Status> {
        let mut input = req.into_inner();
        let (mut path, mut data) = (String::new(), Vec::new());
        while let Some(m) = input.message().await? {
            match m.msg {
                Some(pb::write_file_input::Msg::Header(h)) => path = h.path,
                Some(pb::write_file_input::Msg::Data(d)) => data.extend_from_slice(&d),
                _ => {}
            }
        }
        let size = data.len() as u64;
        self.files.lock().unwrap().insert(path.clone(), data);
        Ok(Response::new(info(&path, size)))
    }

    async fn list_dir(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::ListDirResponse>, Status> {
        let dir = req.into_inner().path.trim_end_matches('/').to_string();
        let files = self.files.lock().unwrap();
        let entries = files
            .iter()
            .filter(|(p, _)| p.rsplit_once('/').map(|(d, _)| d) == Some(dir.as_str()))
            .map(|(p, d)| info(p, d.len() as u64))
            .collect();
        Ok(Response::new(pb::ListDirResponse { entries }))
    }

    async fn stat(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::FileInfo>, Status> {
        let path = req.into_inner().path;
        let files = self.files.lock().unwrap();
        match files.get(&path) {
            Some(d) => Ok(Response::new(info(&path, d.len() as u64))),
            None => Err(Status::not_found(format!("{path}: no such file"))),
        }
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        self.files.lock().unwrap().remove(&req.into_inner().path);
        Ok(Response::new(pb::Empty {}))
    }

    async fn rename(
        &self,
        req: Request<pb::RenameRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let mut files = self.files.lock().unwrap();
        let d = files
            .remove(&r.from)
            .ok_or_else(|| Status::not_found(r.from.clone()))?;
        files.insert(r.to, d);
        Ok(Response::new(pb::Empty {}))
    }

    async fn mkdir(
        &self,
        _: Request<pb::MkdirRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }

    async fn ports(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::PortsResponse>, Status> {
        Ok(Response::new(pb::PortsResponse { ports: vec![] }))
    }

    async fn resolve(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::ResolveResponse>, Status> {
        Ok(Response::new(pb::ResolveResponse {
            path: req.into_inner().path,
        }))
    }

    async fn platform(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::PlatformInfo>, Status> {
        Ok(Response::new(pb::PlatformInfo {
            sysname: "Fake".into(),
            nodename: "fake".into(),
            release: "0".into(),
            version: "0".into(),
            machine: "x86_64".into(),
        }))
    }

    type MainOutputStream = BoxStream<pb::MainOutputChunk>;

    async fn main_output(
        &self,
        _: Request<pb::MainOutputRequest>,
    ) -> std::result::Result<Response<Self::MainOutputStream>, Status> {
        // Stays open, as the real one does while the sandbox runs.
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

/// Serves a fake agent on `path`, greeting each connection with `identity`,
/// until the task is aborted.
fn serve(path: PathBuf, identity: Identity) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let accept = async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                if paddock_proto::identity::greet(&mut s, &identity)
                    .await
                    .is_err()
                {
                    continue;
                }
                if let Ok(c) = paddock_proto::UnixConn::from_tokio(s) {
                    if tx.send(Ok::<_, std::io::Error>(c)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let server = tonic::transport::Server::builder()
            .add_service(AgentServer::new(FakeAgent::default()))
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::select! {
            _ = accept => {}
            _ = server => {}
        }
    }))
}

/// One sandbox as the fake backend holds it.
struct FakeSandbox {
    liveness: Liveness,
    instance: Instance,
    agent: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeSandbox {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            a.abort();
        }
    }
}

/// What the fake backend was asked, in order, for tests to check.
pub type Calls = Arc<Mutex<Vec<String>>>;

/// A backend that runs nothing: each sandbox is a fake agent on a socket
/// in a temporary directory. `kill` makes one die as a crashed sandbox
/// would; `fail_creates` makes creates fail.
pub struct FakeRuntime {
    name: String,
    caps: crate::runtime::Capabilities,
    dir: tempfile::TempDir,
    sandboxes: Mutex<HashMap<Uuid, FakeSandbox>>,
    pub calls: Calls,
    pub fail_creates: std::sync::atomic::AtomicBool,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::named(
            "fake",
            crate::runtime::Capabilities {
                pause: true,
                ..Default::default()
            },
        )
    }
}

impl FakeRuntime {
    /// A fake backend of this name that can do what `caps` says (without
    /// `pause`, pause and resume answer `Unsupported` as the trait's
    /// defaults do).
    pub fn named(name: &str, caps: crate::runtime::Capabilities) -> FakeRuntime {
        FakeRuntime {
            name: name.into(),
            caps,
            dir: tempfile::tempdir().expect("temp dir"),
            sandboxes: Mutex::default(),
            calls: Calls::default(),
            fail_creates: Default::default(),
        }
    }
}

impl FakeRuntime {
    fn note(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }

    fn boot(&self, id: Uuid) -> Result<Instance> {
        let path = self.dir.path().join(format!("{id}.sock"));
        let identity = Identity::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let agent = serve(path.clone(), identity).map_err(|e| Error::Internal(e.to_string()))?;
        let instance = Instance {
            agent: AgentEndpoint::Unix { path, identity },
            ip: None,
        };
        self.sandboxes.lock().unwrap().insert(
            id,
            FakeSandbox {
                liveness: Liveness::Running,
                instance: instance.clone(),
                agent: Some(agent),
            },
        );
        Ok(instance)
    }

    /// The sandbox's processes die (its agent goes): as a crash, not a stop.
    pub fn kill(&self, id: Uuid) {
        if let Some(s) = self.sandboxes.lock().unwrap().get_mut(&id) {
            s.liveness = Liveness::Missing;
            if let Some(a) = s.agent.take() {
                a.abort();
            }
            let AgentEndpoint::Unix { path, .. } = &s.instance.agent;
            let _ = std::fs::remove_file(path);
        }
    }

    /// What the backend holds of `id` now.
    pub fn liveness(&self, id: Uuid) -> Liveness {
        self.sandboxes
            .lock()
            .unwrap()
            .get(&id)
            .map_or(Liveness::Missing, |s| s.liveness)
    }

    /// How many sandboxes it holds.
    pub fn count(&self) -> usize {
        self.sandboxes.lock().unwrap().len()
    }

    fn set(&self, id: Uuid, to: Liveness) -> Result<()> {
        match self.sandboxes.lock().unwrap().get_mut(&id) {
            Some(s) => {
                s.liveness = to;
                Ok(())
            }
            None => Err(Error::not_found(format!("sandbox {id}"))),
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    fn capabilities(&self) -> crate::runtime::Capabilities {
        self.caps
    }

    async fn create(&self, id: Uuid, _config: &SandboxConfig) -> Result<Instance> {
        self.note(format!("create {id}"));
        if self.fail_creates.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Internal("the fake backend was told to fail".into()));
        }
        self.boot(id)
    }

    async fn start(&self, id: Uuid, _config: &SandboxConfig) -> Result<Instance> {
        self.note(format!("start {id}"));
        self.boot(id)
    }

    async fn stop(&self, id: Uuid) -> Result<()> {
        self.note(format!("stop {id}"));
        let mut m = self.sandboxes.lock().unwrap();
        let s = m
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("sandbox {id}")))?;
        s.liveness = Liveness::Stopped;
        if let Some(a) = s.agent.take() {
            a.abort();
        }
        Ok(())
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        if !self.caps.pause {
            return Err(self.unsupported("pause"));
        }
        self.note(format!("pause {id}"));
        self.set(id, Liveness::Paused)
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        if !self.caps.pause {
            return Err(self.unsupported("resume"));
        }
        self.note(format!("resume {id}"));
        self.set(id, Liveness::Running)
    }

    async fn destroy(&self, id: Uuid) -> Result<()> {
        self.note(format!("destroy {id}"));
        self.sandboxes.lock().unwrap().remove(&id);
        Ok(())
    }

    async fn inspect(&self, id: Uuid) -> Result<(Liveness, Option<Instance>)> {
        let m = self.sandboxes.lock().unwrap();
        Ok(match m.get(&id) {
            Some(s) if s.liveness == Liveness::Missing => (Liveness::Missing, None),
            Some(s) => (s.liveness, Some(s.instance.clone())),
            None => (Liveness::Missing, None),
        })
    }

    async fn metrics(&self, id: Uuid) -> Result<Metrics> {
        match self.liveness(id) {
            Liveness::Running | Liveness::Paused => Ok(Metrics::default()),
            _ => Err(Error::Unavailable {
                what: format!("sandbox {id}"),
                reason: "no cgroup".into(),
            }),
        }
    }

    async fn gc(&self, keep: &[Uuid]) -> Result<usize> {
        let mut m = self.sandboxes.lock().unwrap();
        let before = m.len();
        m.retain(|id, _| keep.contains(id));
        Ok(before - m.len())
    }

    async fn alive(&self, ids: &[Uuid]) -> HashMap<Uuid, bool> {
        let m = self.sandboxes.lock().unwrap();
        ids.iter()
            .filter_map(|id| {
                let s = m.get(id)?;
                Some((
                    *id,
                    matches!(s.liveness, Liveness::Running | Liveness::Paused),
                ))
            })
            .collect()
    }
}
