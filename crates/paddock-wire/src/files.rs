//! Files, ports, metrics and the platform.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    pub name: String,
    pub path: String,
    /// file, dir, symlink or other
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub modified_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirListing {
    pub path: String,
    pub entries: Vec<FileInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Port {
    pub port: u16,
    pub address: String,
    pub protocol: String,
    /// Declared in the sandbox's config (listening or not).
    pub declared: bool,
    pub listening: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortList {
    pub ports: Vec<Port>,
}

/// What the sandbox reports of the machine it runs on: uname(2) seen from
/// inside (its own hostname; the kernel that serves it, which under gVisor
/// or a microVM is not the host's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Platform {
    pub system: String,
    pub node: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metrics {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub memory_percent: f64,
    pub cpu_percent: f64,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Bytes used on the sandbox's disk, and its size: what it holds at
    /// most, which the container backend caps by its memory (`disk_mb`).
    #[serde(default)]
    pub disk_bytes: u64,
    #[serde(default)]
    pub disk_limit_bytes: u64,
}
