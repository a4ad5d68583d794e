//! The port every isolation backend implements.
//!
//! A backend starts, stops, pauses and removes sandboxes and tells the
//! engine how to reach the agent inside. Exec, files and ports never go
//! through it: they go through the agent, the same on every backend.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
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

#[async_trait]
pub trait Runtime: Send + Sync {
    fn isolation(&self) -> Isolation;

    /// Creates and starts a sandbox; returns once its agent is starting.
    async fn create(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance>;

    /// Starts a stopped sandbox again, with its filesystem as it was.
    async fn start(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance>;

    /// Ends every process; keeps the filesystem.
    async fn stop(&self, id: Uuid) -> Result<()>;

    async fn pause(&self, id: Uuid) -> Result<()>;

    async fn resume(&self, id: Uuid) -> Result<()>;

    /// Removes everything the sandbox had: processes, mounts, cgroups,
    /// network. Idempotent.
    async fn destroy(&self, id: Uuid) -> Result<()>;

    /// What is really there now, and how to reach it (after a restart).
    async fn inspect(&self, id: Uuid) -> Result<(Liveness, Option<Instance>)>;

    async fn metrics(&self, id: Uuid) -> Result<Metrics>;

    /// Removes whatever the backend holds for sandboxes not in `keep`.
    async fn gc(&self, keep: &[Uuid]) -> Result<usize>;

    /// Whether the sandbox's init process still exists, cheaply (it is
    /// asked every second for every running sandbox); `None`: unknown.
    async fn alive(&self, _id: Uuid) -> Option<bool> {
        None
    }

    /// Releases what the backend keeps ready for future sandboxes (the
    /// daemon is stopping); running sandboxes are left alone.
    async fn shutdown(&self) {}

    /// Removes what the backend set up on the host for all its sandboxes
    /// (the daemon stops for good, every sandbox is gone).
    async fn teardown(&self) {}
}
