//! A fake backend and a fake agent, for the engine's unit tests (and any
//! crate's, with the `testing` feature): no root, no sandboxes, no
//! transport. The agent lives in memory: a command's output is its argv (or
//! script) and a newline, files are a map. [`FakeRuntime`] hands out
//! endpoints that [`FakeConnector`] resolves to its agents; a sandbox it
//! kills or stops has no agent to connect to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::agent::{Agent, AgentConnector, Opened};
use crate::error::{Error, Result};
use crate::model::{
    ExecControl, ExecEvent, ExecRequest, ExecResult, FileInfo, Isolation, Metrics, Platform, Port,
    SandboxConfig, WriteOptions,
};
use crate::runtime::{AgentEndpoint, AgentIdentity, Capabilities, Instance, Liveness, Runtime};

/// The fake agent: in-memory files, commands that echo themselves.
#[derive(Default)]
pub struct FakeAgent {
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Its guards' rules, by mount path (it judges nothing with them).
    pub guards: Mutex<HashMap<String, Vec<crate::model::AclRule>>>,
}

fn info(path: &str, size: u64) -> FileInfo {
    FileInfo {
        name: path.rsplit('/').next().unwrap_or_default().into(),
        path: path.into(),
        kind: "file".into(),
        size,
        mode: 0o644,
        modified_at: Default::default(),
        symlink_target: None,
    }
}

fn no_such(path: &str) -> Error {
    Error::NotFound {
        what: format!("{path}: no such file"),
    }
}

impl FakeAgent {
    fn output(req: &ExecRequest) -> String {
        match &req.shell {
            Some(s) => format!("{s}\n"),
            None => format!("{}\n", req.cmd.join(" ")),
        }
    }
}

#[async_trait]
impl Agent for FakeAgent {
    async fn check(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecResult> {
        Ok(ExecResult {
            exit_code: 0,
            signal: None,
            timed_out: false,
            stdout: Self::output(req),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0.0,
        })
    }

    async fn exec_stream(
        &self,
        req: &ExecRequest,
        _control: mpsc::Receiver<ExecControl>,
    ) -> Result<BoxStream<'static, Result<ExecEvent>>> {
        let r = self.exec(req).await?;
        let out = Bytes::from(r.stdout.clone().into_bytes());
        Ok(futures::stream::iter([Ok(ExecEvent::Stdout(out)), Ok(ExecEvent::Exit(r))]).boxed())
    }

    async fn read_file(&self, path: &str) -> Result<(Opened, BoxStream<'static, Result<Bytes>>)> {
        let data = self.files.lock().unwrap().get(path).cloned();
        let data = data.ok_or_else(|| no_such(path))?;
        let opened = Opened {
            size: Some(data.len() as u64),
            resolved: Some(path.into()),
        };
        Ok((
            opened,
            futures::stream::iter([Ok(Bytes::from(data))]).boxed(),
        ))
    }

    async fn write_file(
        &self,
        path: &str,
        _opts: &WriteOptions,
        mut data: BoxStream<'static, Result<Bytes>>,
    ) -> Result<FileInfo> {
        let mut all = Vec::new();
        while let Some(b) = data.next().await {
            all.extend_from_slice(&b?);
        }
        let size = all.len() as u64;
        self.files.lock().unwrap().insert(path.into(), all);
        Ok(info(path, size))
    }

    async fn list_dir(&self, path: &str) -> Result<Vec<FileInfo>> {
        let dir = path.trim_end_matches('/');
        let files = self.files.lock().unwrap();
        Ok(files
            .iter()
            .filter(|(p, _)| p.rsplit_once('/').map(|(d, _)| d) == Some(dir))
            .map(|(p, d)| info(p, d.len() as u64))
            .collect())
    }

    async fn resolve(&self, path: &str) -> Result<String> {
        Ok(path.into())
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let files = self.files.lock().unwrap();
        match files.get(path) {
            Some(d) => Ok(info(path, d.len() as u64)),
            None => Err(no_such(path)),
        }
    }

    async fn remove(&self, path: &str, _recursive: bool) -> Result<()> {
        self.files.lock().unwrap().remove(path);
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut files = self.files.lock().unwrap();
        let d = files.remove(from).ok_or_else(|| no_such(from))?;
        files.insert(to.into(), d);
        Ok(())
    }

    async fn mkdir(&self, _path: &str, _parents: bool, _mode: Option<u32>) -> Result<()> {
        Ok(())
    }

    async fn ports(&self) -> Result<Vec<Port>> {
        Ok(Vec::new())
    }

    async fn platform(&self) -> Result<Platform> {
        Ok(Platform {
            system: "Fake".into(),
            node: "fake".into(),
            release: "0".into(),
            version: "0".into(),
            machine: "x86_64".into(),
        })
    }

    async fn main_output(&self, _offset: u64) -> Result<BoxStream<'static, Result<(u64, Bytes)>>> {
        // Stays open, as the real one does while the sandbox runs.
        Ok(futures::stream::pending().boxed())
    }

    async fn guard(
        &self,
        path: &str,
        rules: &[crate::model::AclRule],
        _id_offset: u32,
        fds: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> Result<()> {
        let mut g = self.guards.lock().unwrap();
        if fds.is_none() && !g.contains_key(path) {
            return Err(Error::NotFound {
                what: format!("{path} is not guarded"),
            });
        }
        g.insert(path.to_string(), rules.to_vec());
        Ok(())
    }

    async fn fs_decisions(&self) -> Result<BoxStream<'static, Result<crate::agent::FsDecision>>> {
        Ok(futures::stream::pending().boxed())
    }
}

/// The agents of a [`FakeRuntime`], by the path of their endpoint.
type Agents = Arc<Mutex<HashMap<PathBuf, Arc<FakeAgent>>>>;

/// Resolves a [`FakeRuntime`]'s endpoints to its agents: a sandbox that is
/// stopped or dead has none, and connecting fails as with a real one.
pub struct FakeConnector {
    agents: Agents,
}

fn path_of(e: &AgentEndpoint) -> PathBuf {
    match e {
        AgentEndpoint::Unix { path, .. } | AgentEndpoint::HybridVsock { path, .. } => path.clone(),
        other => PathBuf::from(other.to_string()),
    }
}

impl FakeConnector {
    /// The agent of `endpoint` if it is there now.
    pub fn connect_now(&self, endpoint: &AgentEndpoint) -> Result<Arc<dyn Agent>> {
        match self.agents.lock().unwrap().get(&path_of(endpoint)) {
            Some(a) => Ok(a.clone()),
            None => Err(Error::Unavailable {
                what: "sandbox agent".into(),
                reason: format!("no answer on {endpoint}"),
            }),
        }
    }
}

#[async_trait]
impl AgentConnector for FakeConnector {
    async fn connect(
        &self,
        endpoint: &AgentEndpoint,
        _handover: bool,
        _timeout: Duration,
    ) -> Result<Arc<dyn Agent>> {
        self.connect_now(endpoint)
    }

    fn lazy(&self, endpoint: &AgentEndpoint, _handover: bool) -> Result<Arc<dyn Agent>> {
        // A lazy client fails only when used; the fake's agent is there or
        // not now, which the engine's check after a restart then sees.
        self.connect_now(endpoint)
            .or_else(|_| Ok(Arc::new(Gone) as Arc<dyn Agent>))
    }
}

/// An agent that is not there (a lazy client of a dead sandbox).
struct Gone;

fn gone<T>() -> Result<T> {
    Err(Error::Unavailable {
        what: "sandbox agent".into(),
        reason: "not answering".into(),
    })
}

#[async_trait]
impl Agent for Gone {
    async fn check(&self, _: Duration) -> Result<()> {
        gone()
    }
    async fn exec(&self, _: &ExecRequest) -> Result<ExecResult> {
        gone()
    }
    async fn exec_stream(
        &self,
        _: &ExecRequest,
        _: mpsc::Receiver<ExecControl>,
    ) -> Result<BoxStream<'static, Result<ExecEvent>>> {
        gone()
    }
    async fn read_file(&self, _: &str) -> Result<(Opened, BoxStream<'static, Result<Bytes>>)> {
        gone()
    }
    async fn write_file(
        &self,
        _: &str,
        _: &WriteOptions,
        _: BoxStream<'static, Result<Bytes>>,
    ) -> Result<FileInfo> {
        gone()
    }
    async fn list_dir(&self, _: &str) -> Result<Vec<FileInfo>> {
        gone()
    }
    async fn resolve(&self, _: &str) -> Result<String> {
        gone()
    }
    async fn stat(&self, _: &str) -> Result<FileInfo> {
        gone()
    }
    async fn remove(&self, _: &str, _: bool) -> Result<()> {
        gone()
    }
    async fn rename(&self, _: &str, _: &str) -> Result<()> {
        gone()
    }
    async fn mkdir(&self, _: &str, _: bool, _: Option<u32>) -> Result<()> {
        gone()
    }
    async fn ports(&self) -> Result<Vec<Port>> {
        gone()
    }
    async fn platform(&self) -> Result<Platform> {
        gone()
    }
    async fn main_output(&self, _: u64) -> Result<BoxStream<'static, Result<(u64, Bytes)>>> {
        gone()
    }
}

/// One sandbox as the fake backend holds it.
struct FakeSandbox {
    liveness: Liveness,
    instance: Instance,
}

/// What the fake backend was asked, in order, for tests to check.
pub type Calls = Arc<Mutex<Vec<String>>>;

/// A backend that runs nothing: each sandbox is a [`FakeAgent`]. `kill`
/// makes one die as a crashed sandbox would; `fail_creates` makes creates
/// fail.
pub struct FakeRuntime {
    name: String,
    caps: Capabilities,
    sandboxes: Mutex<HashMap<Uuid, FakeSandbox>>,
    agents: Agents,
    pub calls: Calls,
    pub fail_creates: std::sync::atomic::AtomicBool,
    /// Its networks: id → (subnet's third octet, the last host number given).
    networks: Mutex<HashMap<String, (u8, u8)>>,
    /// What each sandbox was last told of its peers.
    peers: Mutex<HashMap<Uuid, Vec<crate::runtime::Peer>>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::named(
            "fake",
            Capabilities {
                pause: true,
                guarded_mounts: true,
                fs_snapshot: true,
                fork: true,
                networks: true,
                ..Default::default()
            },
        )
    }
}

impl FakeRuntime {
    /// A fake backend of this name that can do what `caps` says (without
    /// `pause`, pause and resume answer `Unsupported` as the trait's
    /// defaults do).
    pub fn named(name: &str, caps: Capabilities) -> FakeRuntime {
        FakeRuntime {
            name: name.into(),
            caps,
            sandboxes: Mutex::default(),
            agents: Agents::default(),
            calls: Calls::default(),
            fail_creates: Default::default(),
            networks: Mutex::default(),
            peers: Mutex::default(),
        }
    }

    /// The networks it has set up (ids).
    pub fn network_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.networks.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// What sandbox `id` was last told of its peers: (address, names).
    pub fn peers_of(&self, id: Uuid) -> Vec<(String, Vec<String>)> {
        self.peers
            .lock()
            .unwrap()
            .get(&id)
            .map(|v| {
                v.iter()
                    .map(|p| (p.ip.to_string(), p.names.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The connector that reaches this backend's agents.
    pub fn connector(&self) -> Arc<FakeConnector> {
        Arc::new(FakeConnector {
            agents: self.agents.clone(),
        })
    }

    fn note(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }

    /// The agent of sandbox `id` (its latest boot).
    pub fn agent(&self, id: Uuid) -> Option<Arc<FakeAgent>> {
        let path = PathBuf::from(format!("/fake/{}/{id}.sock", self.name));
        self.agents.lock().unwrap().get(&path).cloned()
    }

    fn boot(&self, id: Uuid) -> Result<Instance> {
        let path = PathBuf::from(format!("/fake/{}/{id}.sock", self.name));
        self.agents
            .lock()
            .unwrap()
            .insert(path.clone(), Arc::new(FakeAgent::default()));
        let instance = Instance {
            agent: AgentEndpoint::Unix {
                path,
                identity: AgentIdentity([7; 32]),
            },
            ip: None,
        };
        self.sandboxes.lock().unwrap().insert(
            id,
            FakeSandbox {
                liveness: Liveness::Running,
                instance: instance.clone(),
            },
        );
        Ok(instance)
    }

    fn drop_agent(&self, s: &FakeSandbox) {
        self.agents
            .lock()
            .unwrap()
            .remove(&path_of(&s.instance.agent));
    }

    /// The sandbox's processes die (its agent goes): as a crash, not a stop.
    pub fn kill(&self, id: Uuid) {
        if let Some(s) = self.sandboxes.lock().unwrap().get_mut(&id) {
            s.liveness = Liveness::Missing;
            self.drop_agent(s);
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

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn create(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance> {
        self.note(format!("create {id}"));
        if self.fail_creates.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Internal("the fake backend was told to fail".into()));
        }
        // On a network: an address of its subnet.
        let ip = match &config.network {
            Some(n) => {
                let mut nets = self.networks.lock().unwrap();
                let (net, last) = nets
                    .get_mut(n)
                    .ok_or_else(|| Error::Internal(format!("no network {n} here")))?;
                *last += 1;
                Some(std::net::IpAddr::from([10, 99, *net, *last]))
            }
            None => None,
        };
        let mut inst = self.boot(id)?;
        if let Some(ip) = ip {
            inst.ip = Some(ip);
            if let Some(s) = self.sandboxes.lock().unwrap().get_mut(&id) {
                s.instance.ip = Some(ip);
            }
        }
        Ok(inst)
    }

    async fn ensure_network(&self, id: &str, subnet: Option<&str>) -> Result<String> {
        self.note(format!("ensure_network {id}"));
        let mut nets = self.networks.lock().unwrap();
        if let Some((n, _)) = nets.get(id) {
            return Ok(format!("10.99.{n}.0/24"));
        }
        let n = match subnet {
            Some(s) => s
                .split('.')
                .nth(2)
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| Error::Internal(format!("subnet {s}")))?,
            None => (1..=250u8)
                .find(|k| !nets.values().any(|(n, _)| n == k))
                .ok_or_else(|| Error::Quota("no free network subnets".into()))?,
        };
        nets.insert(id.to_string(), (n, 1));
        Ok(format!("10.99.{n}.0/24"))
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        self.note(format!("remove_network {id}"));
        self.networks.lock().unwrap().remove(id);
        Ok(())
    }

    async fn set_peers(&self, id: Uuid, peers: &[crate::runtime::Peer]) -> Result<()> {
        self.peers.lock().unwrap().insert(id, peers.to_vec());
        Ok(())
    }

    /// A layer of one file naming the sandbox, noted as "capture <id>
    /// <running>".
    async fn capture(&self, id: Uuid, into: &std::path::Path, running: bool) -> Result<u64> {
        self.note(format!("capture {id} {running}"));
        if !self.sandboxes.lock().unwrap().contains_key(&id) {
            return Err(Error::Conflict(format!("sandbox {id} has no filesystem")));
        }
        std::fs::create_dir_all(into).map_err(Error::internal)?;
        std::fs::write(into.join("from"), id.to_string()).map_err(Error::internal)?;
        Ok(36)
    }

    /// Starts a guard on its agent (no filesystem: descriptors it never
    /// reads), noted as "guard <id> <path>".
    async fn guard(&self, id: Uuid, m: &crate::model::Mount, agent: &dyn Agent) -> Result<()> {
        self.note(format!("guard {id} {}", m.path));
        let null = || std::fs::File::open("/dev/null").map(std::os::fd::OwnedFd::from);
        let fds = [
            null().map_err(Error::internal)?,
            null().map_err(Error::internal)?,
        ];
        agent.guard(&m.path, &m.acls, 0, Some(fds)).await
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
        self.drop_agent(s);
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
        if let Some(s) = self.sandboxes.lock().unwrap().remove(&id) {
            self.drop_agent(&s);
        }
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
        for id in ids {
            self.note(format!("alive {id}"));
        }
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

/// A layer store in a directory: layers named by a digest of their files'
/// names and contents (enough for the engine's tests).
pub struct FakeLayers {
    pub root: std::path::PathBuf,
}

impl crate::layers::Layers for FakeLayers {
    fn stage(&self) -> Result<std::path::PathBuf> {
        Ok(self.root.join(format!(".tmp-{}", Uuid::new_v4())))
    }

    fn commit(&self, staged: &std::path::Path) -> Result<crate::layers::StoredLayer> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut names: Vec<_> = std::fs::read_dir(staged)
            .map_err(Error::internal)?
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        let mut bytes = 0;
        for p in names {
            let data = std::fs::read(&p).map_err(Error::internal)?;
            bytes += data.len() as u64;
            h.update(p.file_name().unwrap().to_string_lossy().as_bytes());
            h.update(&data);
        }
        let hex = hex::encode(h.finalize());
        let dest = self.root.join(&hex);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(staged);
        } else {
            std::fs::rename(staged, &dest).map_err(Error::internal)?;
        }
        Ok(crate::layers::StoredLayer {
            path: dest.to_string_lossy().into_owned(),
            digest: format!("sha256:{hex}"),
            bytes,
        })
    }

    fn flatten(
        &self,
        layers: &[String],
        keep: Option<crate::layers::Keep>,
    ) -> Result<crate::layers::StoredLayer> {
        let staged = self.stage()?;
        std::fs::create_dir_all(&staged).map_err(Error::internal)?;
        for l in layers {
            for e in std::fs::read_dir(l).map_err(Error::internal)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.as_ref().is_none_or(|k| k(&format!("/{name}"))) {
                    std::fs::copy(e.path(), staged.join(&name)).map_err(Error::internal)?;
                }
            }
        }
        self.commit(&staged)
    }

    fn discard(&self, staged: &std::path::Path) {
        let _ = std::fs::remove_dir_all(staged);
    }

    fn gc(&self, keep: &std::collections::HashSet<String>, staged: bool) -> Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.root)
            .map_err(Error::internal)?
            .flatten()
        {
            let p = e.path();
            let tmp = e.file_name().to_string_lossy().starts_with(".tmp-");
            if (tmp && staged) || (!tmp && !keep.contains(&*p.to_string_lossy())) {
                std::fs::remove_dir_all(&p).map_err(Error::internal)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
