//! The port to a sandbox's agent: what the engine asks of it. The client
//! that speaks the agent protocol, and the transports it speaks it over
//! (a unix socket, Firecracker's hybrid vsock, vsock, TCP), live in
//! `paddock-agent-client`; the engine knows neither. Tests give the engine
//! an in-memory agent ([`crate::testing`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::model::{
    AclRule, ExecControl, ExecEvent, ExecRequest, ExecResult, FileInfo, Platform, Port,
    WriteOptions,
};
use crate::runtime::AgentEndpoint;

/// What the agent opened for a download.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// Bytes the download carries; `None` when only reading to the end
    /// tells (a file of `/proc`).
    pub size: Option<u64>,
    /// The path opened, every symlink followed, as the sandbox sees it
    /// (`None` from an agent that does not say).
    pub resolved: Option<String>,
}

/// One sandbox's agent.
#[async_trait]
pub trait Agent: Send + Sync {
    /// Asks the agent who it is, within `timeout`, and checks that it
    /// speaks this daemon's protocol.
    async fn check(&self, timeout: Duration) -> Result<()>;

    /// Runs a command to completion and returns its collected output.
    async fn exec(&self, req: &ExecRequest) -> Result<ExecResult>;

    /// Starts a command and streams its events; `control` carries stdin,
    /// resizes and signals to it.
    async fn exec_stream(
        &self,
        req: &ExecRequest,
        control: mpsc::Receiver<ExecControl>,
    ) -> Result<BoxStream<'static, Result<ExecEvent>>>;

    /// Opens a file for download: what was opened, and its bytes (at most
    /// `size` of them when it is known).
    async fn read_file(&self, path: &str) -> Result<(Opened, BoxStream<'static, Result<Bytes>>)>;

    /// Writes `data` to `path`. An error of `data` (the client went away)
    /// ends the write without committing it, and is what the caller hears.
    async fn write_file(
        &self,
        path: &str,
        opts: &WriteOptions,
        data: BoxStream<'static, Result<Bytes>>,
    ) -> Result<FileInfo>;

    async fn list_dir(&self, path: &str) -> Result<Vec<FileInfo>>;

    /// `path` with every symlink followed, as the sandbox sees it.
    async fn resolve(&self, path: &str) -> Result<String>;

    async fn stat(&self, path: &str) -> Result<FileInfo>;

    async fn remove(&self, path: &str, recursive: bool) -> Result<()>;

    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<()>;

    /// The TCP ports something listens on (`declared` false).
    async fn ports(&self) -> Result<Vec<Port>>;

    /// uname(2) inside the sandbox.
    async fn platform(&self) -> Result<Platform>;

    /// The main process's output from `offset` on: `(offset of the chunk,
    /// bytes)`, the offset past the one asked for when the agent no longer
    /// held what came between. Ends when the agent goes.
    async fn main_output(&self, offset: u64) -> Result<BoxStream<'static, Result<(u64, Bytes)>>>;

    /// Guards the mount at `path`: every access by a process of the
    /// sandbox is judged by `rules`. With `fds` (`/dev/fuse` of a FUSE
    /// filesystem mounted, or about to be, over `path`, and the directory
    /// it covers) the agent starts serving it; without, the guard already
    /// there takes the new rules ([`Error::NotFound`] if there is none).
    /// `id_offset`: the sandbox's ids as the host sees them, less its own.
    async fn guard(
        &self,
        _path: &str,
        _rules: &[AclRule],
        _id_offset: u32,
        _fds: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> Result<()> {
        Err(Error::Unsupported("this agent cannot guard mounts".into()))
    }

    /// Starts the main process the agent holds until its mounts are
    /// guarded.
    async fn release_main(&self) -> Result<()> {
        Ok(())
    }

    /// A connection the agent keeps to ask the daemon, over it, for what
    /// its guards cannot do themselves (registering backing files for
    /// FUSE passthrough); the backend serves it.
    async fn registrar(&self) -> Result<std::os::unix::net::UnixStream> {
        Err(Error::Unsupported("this agent cannot guard mounts".into()))
    }

    /// The guards' access decisions as they are made, until dropped.
    async fn fs_decisions(&self) -> Result<BoxStream<'static, Result<FsDecision>>> {
        Err(Error::Unsupported("this agent cannot guard mounts".into()))
    }
}

/// An access by a process of a sandbox to a guarded mount, as judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsDecision {
    pub mount: String,
    pub path: String,
    pub write: bool,
    pub allowed: bool,
    /// Decisions lost before this one (the agent kept the latest only).
    pub dropped: u64,
}

/// How the engine reaches agents: from a backend's endpoint to an [`Agent`].
#[async_trait]
pub trait AgentConnector: Send + Sync {
    /// Connects, retrying until `timeout` (the agent may still be
    /// starting), and checks who answers. `handover`: the backend can pass
    /// descriptors between the agent and the daemon (its
    /// `Capabilities::fd_handover`), so bulk data may skip the protocol.
    async fn connect(
        &self,
        endpoint: &AgentEndpoint,
        handover: bool,
        timeout: Duration,
    ) -> Result<Arc<dyn Agent>>;

    /// An agent that connects on first use, without asking anything yet:
    /// for a daemon coming back to many sandboxes at once, which checks
    /// them with [`Agent::check`] once it serves again.
    fn lazy(&self, endpoint: &AgentEndpoint, handover: bool) -> Result<Arc<dyn Agent>>;
}
