//! The port every isolation backend implements.
//!
//! A backend starts, stops, pauses and removes sandboxes and tells the
//! engine how to reach the agent inside. Exec, files and ports never go
//! through it: they go through the agent, the same on every backend.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Isolation, Metrics, SandboxConfig};

/// How the daemon reaches a sandbox's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A unix socket on the host, in a directory the sandbox cannot reach
    /// (the agent got it listening, as a descriptor); the agent's greeting
    /// on every connection must name `identity`.
    Unix {
        path: PathBuf,
        identity: paddock_proto::identity::Identity,
    },
}

/// A sandbox as a backend runs it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub agent: AgentEndpoint,
    /// The sandbox's address as seen from the host, for the port proxy.
    pub ip: Option<IpAddr>,
}

/// What a backend sees when it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running,
    Paused,
    /// Its processes are gone but its filesystem is kept (start brings it back).
    Stopped,
    /// Nothing of it is left.
    Missing,
}

/// What a backend can do beyond start, stop and destroy. An operation a
/// backend lacks answers [`Error::Unsupported`], which each dialect maps to
/// its own "not implemented".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Capabilities {
    /// Freeze and thaw a sandbox's processes.
    pub pause: bool,
    /// Save a sandbox's filesystem and start sandboxes from it.
    pub fs_snapshot: bool,
    /// Save a running sandbox's memory too (restore resumes its processes).
    pub memory_snapshot: bool,
    /// Copy a running sandbox into new ones.
    pub fork: bool,
    /// Its sandboxes run on the host's kernel (containers) rather than a
    /// kernel of their own (gVisor's, a microVM's).
    pub shares_host_kernel: bool,
    /// The agent can hand the daemon open descriptors (a unix socket on the
    /// host), so that bulk data skips the agent protocol.
    pub fd_handover: bool,
}

/// A backend as the native API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BackendInfo {
    /// Its name: `crun`, `runc`, `runsc`, `qemu`, ...
    pub name: String,
    pub isolation: Isolation,
    /// Whether creates asking for its isolation get it.
    pub default: bool,
    pub capabilities: Capabilities,
}

#[async_trait]
pub trait Runtime: Send + Sync {
    /// The backend's name, recorded on each sandbox it runs (`crun`,
    /// `runc`, `runsc`, `qemu`, `docker`, `k8s`, ...): every later call about
    /// the sandbox goes to the backend of that name.
    fn name(&self) -> &str;

    fn isolation(&self) -> Isolation;

    fn capabilities(&self) -> Capabilities;

    /// Creates and starts a sandbox; returns once its agent is starting.
    async fn create(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance>;

    /// Starts a stopped sandbox again, with its filesystem as it was.
    async fn start(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance>;

    /// Ends every process; keeps the filesystem.
    async fn stop(&self, id: Uuid) -> Result<()>;

    /// Freezes the sandbox's processes (capability `pause`).
    async fn pause(&self, _id: Uuid) -> Result<()> {
        Err(self.unsupported("pause"))
    }

    async fn resume(&self, _id: Uuid) -> Result<()> {
        Err(self.unsupported("resume"))
    }

    /// Removes everything the sandbox had: processes, mounts, cgroups,
    /// network. Idempotent.
    async fn destroy(&self, id: Uuid) -> Result<()>;

    /// What is really there now, and how to reach it (after a restart).
    async fn inspect(&self, id: Uuid) -> Result<(Liveness, Option<Instance>)>;

    async fn metrics(&self, id: Uuid) -> Result<Metrics>;

    /// Removes whatever the backend holds for sandboxes not in `keep`.
    async fn gc(&self, keep: &[Uuid]) -> Result<usize>;

    /// Which of `ids` (sandboxes this backend runs) still have their init
    /// process, cheaply: the monitor asks every second, once per backend.
    /// A sandbox missing from the answer is not known to be alive or dead.
    async fn alive(&self, _ids: &[Uuid]) -> HashMap<Uuid, bool> {
        HashMap::new()
    }

    /// Releases what the backend keeps ready for future sandboxes (the
    /// daemon is stopping); running sandboxes are left alone.
    async fn shutdown(&self) {}

    /// Removes what the backend set up on the host for all its sandboxes
    /// (the daemon stops for good, every sandbox is gone).
    async fn teardown(&self) {}

    /// The error for an operation this backend lacks.
    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported(format!("{what} on the {} backend", self.name()))
    }
}
