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

/// The secret a sandbox's agent names in its greeting on every connection,
/// so that the daemon knows which sandbox answers (32 random bytes, drawn by
/// the backend and handed to the agent only).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity(pub [u8; 32]);

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret: never in logs.
        f.write_str("AgentIdentity(..)")
    }
}

/// How the daemon reaches a sandbox's agent. Every connection, whatever its
/// transport, starts with the agent's greeting naming `identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A unix socket on the host, in a directory the sandbox cannot reach
    /// (the container and gVisor backends).
    Unix {
        path: PathBuf,
        identity: AgentIdentity,
    },
    /// Firecracker's and cloud-hypervisor's vsock over a unix socket on the
    /// host: the client sends `CONNECT <port>\n`, the VMM answers
    /// `OK <host port>\n`, and the stream goes on to the agent.
    HybridVsock {
        path: PathBuf,
        port: u32,
        identity: AgentIdentity,
    },
    /// A vsock address (a microVM with vhost-vsock).
    Vsock {
        cid: u32,
        port: u32,
        identity: AgentIdentity,
    },
    /// TCP (a Kubernetes pod's agent on its pod address).
    Tcp {
        addr: std::net::SocketAddr,
        identity: AgentIdentity,
    },
}

impl AgentEndpoint {
    pub fn identity(&self) -> &AgentIdentity {
        match self {
            AgentEndpoint::Unix { identity, .. }
            | AgentEndpoint::HybridVsock { identity, .. }
            | AgentEndpoint::Vsock { identity, .. }
            | AgentEndpoint::Tcp { identity, .. } => identity,
        }
    }
}

impl std::fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentEndpoint::Unix { path, .. } => write!(f, "{}", path.display()),
            AgentEndpoint::HybridVsock { path, port, .. } => {
                write!(f, "{} (vsock port {port})", path.display())
            }
            AgentEndpoint::Vsock { cid, port, .. } => write!(f, "vsock {cid}:{port}"),
            AgentEndpoint::Tcp { addr, .. } => write!(f, "tcp {addr}"),
        }
    }
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
    /// It can guard a mount ([`Runtime::guard`]): judge every access by
    /// the sandbox's processes against the mount's ACL.
    pub guarded_mounts: bool,
    /// It mounts volumes, at create and into running sandboxes.
    pub volumes: bool,
    /// It puts sandboxes on private networks ([`Runtime::ensure_network`]).
    pub networks: bool,
}

/// Another sandbox on a sandbox's network, as its name resolution knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    /// Its names: its id, its hostname, its key.
    pub names: Vec<String>,
}

/// A backend as the native API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

    /// Serves, for a running sandbox's guards, what only the host may do
    /// (a backend sharing the host's kernel registers backing files for
    /// FUSE passthrough), for as long as `agent` keeps the connection.
    /// Called once guards run, and again after a daemon restart; without
    /// it guards still work, through the agent.
    async fn serve_guards(&self, _id: Uuid, _agent: &dyn crate::agent::Agent) -> Result<()> {
        Ok(())
    }

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

    /// Guards the sandbox's mount `m` (its `origin` the host directory the
    /// engine checked), which needs it ([`crate::model::Mount::needs_guard`]):
    /// puts a filesystem over its path that `agent` serves, judging every
    /// access by the mount's rules. For backends with
    /// [`Capabilities::guarded_mounts`].
    async fn guard(
        &self,
        _id: Uuid,
        m: &crate::model::Mount,
        _agent: &dyn crate::agent::Agent,
    ) -> Result<()> {
        Err(Error::invalid(
            "mounts",
            format!(
                "the {} backend cannot enforce the ACL of {} on the sandbox's processes",
                self.name(),
                m.path
            ),
        ))
    }

    /// Copies the sandbox's writable layer (what it wrote over its image
    /// and snapshot layers) into `into`, which does not exist yet, with
    /// owners as the sandbox sees them; a `running` sandbox is frozen for
    /// the copy and thawed after, whatever happens. Returns the bytes of
    /// file data copied. For backends with [`Capabilities::fs_snapshot`].
    async fn capture(&self, _id: Uuid, _into: &std::path::Path, _running: bool) -> Result<u64> {
        Err(self.unsupported("filesystem snapshots"))
    }

    /// Mounts volume `m` (its `source` on the host) at its path in running
    /// sandbox `id`. For backends with [`Capabilities::volumes`]; at
    /// create and start, a sandbox's `volumes` are mounted with the rest.
    async fn attach_volume(&self, _id: Uuid, _m: &crate::model::VolumeMount) -> Result<()> {
        Err(self.unsupported("attaching volumes"))
    }

    /// Unmounts volume `m` from running sandbox `id`.
    async fn detach_volume(&self, _id: Uuid, _m: &crate::model::VolumeMount) -> Result<()> {
        Err(self.unsupported("detaching volumes"))
    }

    /// Sets up private network `id` on the host: a bridge and subnet of its
    /// own, its sandboxes reaching each other and nothing else. `subnet`:
    /// the one recorded for it (after a restart: set up again as it was);
    /// none: a free one. Answers its subnet (CIDR). Idempotent. For
    /// backends with [`Capabilities::networks`]; a create whose config
    /// names the network puts the sandbox on it.
    async fn ensure_network(&self, _id: &str, _subnet: Option<&str>) -> Result<String> {
        Err(self.unsupported("networks"))
    }

    /// Removes network `id` from the host (no sandbox is on it).
    async fn remove_network(&self, _id: &str) -> Result<()> {
        Err(self.unsupported("networks"))
    }

    /// Tells sandbox `id` (on a network) the names of the other sandboxes
    /// on it, replacing what it knew.
    async fn set_peers(&self, _id: Uuid, _peers: &[Peer]) -> Result<()> {
        Ok(())
    }

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
