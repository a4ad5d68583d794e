//! The engine's domain types.
//!
//! They derive serde because the store keeps them as JSON documents
//! (versioned: `store::SANDBOX_DOC`). No API speaks them as they are: each
//! dialect has its own wire types and converts (the native API's are in
//! `paddock-wire`, mapped in `paddock_api::wire`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// What an idle timeout does to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdleAction {
    /// Destroys it.
    #[default]
    Destroy,
    /// Scales it to zero and keeps its files: a sandbox stops (started
    /// again by `start`, or by a request to its ports when it wakes on
    /// request); a workspace's sandbox is snapshotted and destroyed (its
    /// workspace wakes into a new one from the snapshot).
    Hibernate,
    /// Pauses it, its memory kept (woken by `resume`, or by a request to
    /// its ports when it wakes on request). Its network's traffic counts as
    /// activity besides calls.
    Suspend,
}

/// What becomes of a sandbox's main process when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Nothing: the sandbox runs on without it.
    #[default]
    Never,
    /// Started again (after 1 s, doubling up to 30 s while it keeps
    /// exiting within 10 s).
    Always,
}

impl RestartPolicy {
    pub fn is_never(&self) -> bool {
        *self == RestartPolicy::Never
    }
}

impl IdleAction {
    pub fn is_destroy(&self) -> bool {
        *self == IdleAction::Destroy
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Container,
    Gvisor,
    Microvm,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Gvisor => "gvisor",
            Isolation::Microvm => "microvm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Creating,
    Running,
    Paused,
    Stopped,
    Error,
    Destroyed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Error => "error",
            State::Destroyed => "destroyed",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "creating" => State::Creating,
            "running" => State::Running,
            "paused" => State::Paused,
            "stopped" => State::Stopped,
            "error" => State::Error,
            "destroyed" => State::Destroyed,
            _ => return None,
        })
    }
}

pub const DEFAULT_CPU: f64 = 1.0;
pub const DEFAULT_MEMORY_MB: i64 = 512;
pub const DEFAULT_DISK_MB: i64 = 1024;
pub const DEFAULT_PIDS: i64 = 1024;
/// The smallest CPU share a sandbox may ask for: 1 ms of CPU time per
/// 100 ms period, the least a CFS quota takes.
pub const MIN_CPU: f64 = 0.01;
/// The largest bootstrap script (bytes).
pub const MAX_BOOTSTRAP: usize = 256 << 10;
/// The most output a buffered exec may collect per stream (the daemon
/// holds it in memory until the command ends).
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;

/// The operator's ceilings on what a create or an exec may ask for
/// (`paddock serve --max-*`, or the settings file). Each default is what
/// the host has (memory, cores) or a bound that no sane request reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_cpu: f64,
    pub max_memory_mb: i64,
    pub max_disk_mb: i64,
    pub max_pids: i64,
    pub max_ttl_secs: u64,
    pub max_idle_timeout_secs: u64,
    pub max_exec_timeout_secs: f64,
}

/// The most one principal's create may ask for (the operator's ceilings
/// and the policies that apply to it).
#[derive(Debug, Clone, PartialEq)]
pub struct Ceilings {
    pub max_cpu: f64,
    pub max_memory_mb: i64,
    pub max_disk_mb: i64,
    pub max_ttl_secs: u64,
    pub max_sandboxes: Option<u32>,
    pub max_exec_timeout_secs: f64,
}

/// The default ceiling of `ttl_secs` and `idle_timeout_secs`: 30 days.
pub const DEFAULT_MAX_TTL_SECS: u64 = 30 * 86400;
/// The default ceiling of an exec's `timeout`: 24 hours.
pub const DEFAULT_MAX_EXEC_TIMEOUT_SECS: f64 = 86400.0;
/// The default ceiling of `pids`.
pub const DEFAULT_MAX_PIDS: i64 = 65536;

impl Limits {
    /// The host's cores (what the daemon may run on).
    pub fn host_cpus() -> f64 {
        std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
    }

    /// The host's memory, MiB (`MemTotal`).
    pub fn host_memory_mb() -> i64 {
        crate::host::meminfo_kib(&["MemTotal"])
            .and_then(|v| v.first().copied())
            .filter(|k| *k > 0)
            .map_or(i64::MAX >> 20, |k| (k / 1024) as i64)
    }

    /// Checks the ceilings against each other and the host's capacity;
    /// the message names the setting.
    pub fn check_host(&self) -> std::result::Result<(), String> {
        let (cpus, mem) = (Self::host_cpus(), Self::host_memory_mb());
        if !(self.max_cpu.is_finite() && self.max_cpu >= MIN_CPU && self.max_cpu <= cpus) {
            return Err(format!(
                "max_cpu {} must be from {MIN_CPU} to the host's {cpus} cores",
                self.max_cpu
            ));
        }
        if !(16..=mem).contains(&self.max_memory_mb) {
            return Err(format!(
                "max_memory_mb {} must be from 16 to the host's {mem} MiB",
                self.max_memory_mb
            ));
        }
        if !(1..=mem).contains(&self.max_disk_mb) {
            return Err(format!(
                "max_disk_mb {} must be from 1 to the host's {mem} MiB (a sandbox's disk is held in memory)",
                self.max_disk_mb
            ));
        }
        if !(8..=(1 << 22)).contains(&self.max_pids) {
            return Err(format!(
                "max_pids {} must be from 8 to 4194304 (the kernel's pid_max)",
                self.max_pids
            ));
        }
        // What a timestamp holds, with room to spare.
        let century = 100 * 365 * 86400;
        for (name, v) in [
            ("max_ttl_secs", self.max_ttl_secs),
            ("max_idle_timeout_secs", self.max_idle_timeout_secs),
        ] {
            if !(1..=century).contains(&v) {
                return Err(format!(
                    "{name} {v} must be from 1 to {century} (100 years)"
                ));
            }
        }
        if !(self.max_exec_timeout_secs.is_finite()
            && self.max_exec_timeout_secs >= 1.0
            && self.max_exec_timeout_secs <= century as f64)
        {
            return Err(format!(
                "max_exec_timeout_secs {} must be from 1 to {century} (100 years)",
                self.max_exec_timeout_secs
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        let mem = Self::host_memory_mb();
        Limits {
            max_cpu: Self::host_cpus(),
            max_memory_mb: mem,
            max_disk_mb: mem,
            max_pids: DEFAULT_MAX_PIDS,
            max_ttl_secs: DEFAULT_MAX_TTL_SECS,
            max_idle_timeout_secs: DEFAULT_MAX_TTL_SECS,
            max_exec_timeout_secs: DEFAULT_MAX_EXEC_TIMEOUT_SECS,
        }
    }
}

/// Refuses a string with a NUL byte: no path, argument or variable of the
/// OS can hold one.
pub fn no_nul(field: impl Into<String>, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(Error::invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

/// What a caller asks for. Absent numbers take the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Idempotency key, unique per owner: `[A-Za-z0-9_-]{1,64}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Image reference; none: the host-based default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Default: `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// A template (see [`Template`]) whose defaults fill in what this spec
    /// leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// CPU cores (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// Disk in MiB. The container backend keeps a sandbox's files in its
    /// memory (a tmpfs charged to it), so its disk holds at most
    /// `memory_mb` less 16 MiB and `/dev/shm` (64 MiB, or a quarter of a
    /// smaller memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Directories the file API may reach, each with its ACL. None: the
    /// file API reaches the whole sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Ordered egress rules, first match wins, no match denies. None: all
    /// egress allowed. Stored and returned; enforced once the egress
    /// firewall exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    /// What to capture on shutdown and restore on start. Stored; acted on
    /// once snapshots exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotPolicy>,
    /// `hostname:ip` entries for the sandbox's /etc/hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Run the main process on a terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Record a `resource.usage` event this often (seconds); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_events_secs: Option<u64>,
    /// A snapshot (its id or name) to start from: its files, and its
    /// configuration for whatever this spec leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// Volumes (the caller's, by name) to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRequest>,
    /// CPU cores reserved (a share of the host under contention), at most
    /// `cpu`; none: no reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    /// Memory (MiB) kept from reclaim, at most `memory_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_mb: Option<i64>,
    /// A shell script run once, as root, when the sandbox first boots,
    /// before its create answers (not again at a restart). One that fails
    /// fails the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// What the idle timeout does (default: destroy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_idle: Option<IdleAction>,
    /// A request to one of its ports through the daemon's proxies starts
    /// it again when it is stopped (hibernated), held until the port
    /// answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake_on_request: bool,
    /// What becomes of the main process when it exits (default: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// A private network to join (one of the caller's, by id or name, or
    /// `default`: the caller's default network): its sandboxes reach each
    /// other by address and by name. None: isolated (reaches no other
    /// sandbox, and none reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A volume a sandbox asks to mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRequest {
    /// The volume's name (or id).
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A volume mounted in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub volume: Uuid,
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Its directory on the host, as the volume store mounted it.
    pub source: String,
}

/// A workspace: a name whose sandbox comes and goes (scale to zero). Its
/// sandbox is made from `spec`; hibernating it snapshots that sandbox and
/// destroys it, waking it starts a new one from the latest snapshot (or
/// from `source` before the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    /// What its sandboxes are made of.
    #[serde(default)]
    pub spec: SandboxSpec,
    /// A snapshot (id or name) its first sandbox starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The sandbox it has now, if awake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Uuid>,
    /// The snapshot its last hibernation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_snapshot: Option<Uuid>,
    /// What its sandbox's idle timeout does: destroy it, or hibernate the
    /// workspace.
    #[serde(default)]
    pub on_idle: IdleAction,
    /// A request to its sandbox's ports through the proxy wakes it.
    #[serde(default)]
    pub wake_on_request: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new workspace is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRequest {
    pub name: String,
    #[serde(default)]
    pub spec: SandboxSpec,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub on_idle: IdleAction,
    #[serde(default)]
    pub wake_on_request: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Changes to a workspace: each field given replaces (an inner `None`
/// clears). `expected_current` fences the change: it is refused (409)
/// unless the workspace's sandbox is that one (`Some(None)`: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspaceUpdate {
    pub current: Option<Option<Uuid>>,
    pub latest_snapshot: Option<Option<Uuid>>,
    pub source: Option<Option<String>>,
    pub spec: Option<SandboxSpec>,
    pub on_idle: Option<IdleAction>,
    pub wake_on_request: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub expected_current: Option<Option<Uuid>>,
}

/// The label that ties a sandbox (and a snapshot) to its workspace.
pub const WORKSPACE_LABEL: &str = "paddock.workspace";

/// Workspace names: 1-63 of `[a-z0-9-]`, starting and ending with a letter
/// or digit.
pub fn validate_workspace_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "a workspace name is 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
        ))
    }
}

/// Workspace metadata: at most 16 entries, keys of 1-63 `[a-z0-9-_./]`,
/// values of at most 512 bytes without control characters.
pub fn validate_metadata(m: &BTreeMap<String, String>) -> Result<()> {
    if m.len() > 16 {
        return Err(Error::invalid("metadata", "at most 16 entries"));
    }
    for (k, v) in m {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'_' | b'.' | b'/')
            });
        if !key_ok {
            return Err(Error::invalid(
                format!("metadata.{k}"),
                "keys are 1-63 of lower-case letters, digits, '-', '_', '.' or '/'",
            ));
        }
        if v.len() > 512 || v.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("metadata.{k}"),
                "values are at most 512 bytes, without control characters",
            ));
        }
    }
    Ok(())
}

/// A principal's SSH public key: it opens the SSH gateway to every
/// sandbox of its owner, or only to `sandbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKey {
    pub id: Uuid,
    pub owner: String,
    /// Unique per owner.
    pub name: String,
    /// One authorized_keys line (`ssh-ed25519 AAAA... comment`), as
    /// OpenSSH writes it.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The one sandbox it opens (`None`: every sandbox of its owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A sandbox's published port: what the ingress routes
/// `<name>.<box>.<zone>` (or, for the default proxy, `<box>.<zone>` and the
/// sandbox's bound domains) to. Proxies are explicit: a sandbox has none
/// until its owner makes one; they go with the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proxy {
    pub sandbox: Uuid,
    /// A DNS label; `""` is the sandbox's default proxy.
    pub name: String,
    /// 0: the lowest port the sandbox listens on, found at each request.
    pub port: u16,
    pub created_at: DateTime<Utc>,
}

/// An external domain bound to a sandbox: the ingress routes a request
/// whose `Host` is the domain to the sandbox's default proxy (or, without
/// one, to the lowest port it listens on). Unique daemon-wide; goes with
/// the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainBinding {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub sandbox: Uuid,
    pub owner: String,
    pub created_at: DateTime<Utc>,
}

/// Whether `s` is a DNS label as host names use it: 1-63 of `a-z`, `0-9`
/// and `-`, neither first nor last a hyphen (lowercase only: callers
/// lowercase what is case-insensitive).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A proxy's name as the engine keeps it (`""` for the default proxy,
/// which `default` also names), or a 400 naming `field`.
pub fn proxy_name(field: &str, name: &str) -> Result<String> {
    if name.is_empty() || name == "default" {
        return Ok(String::new());
    }
    if !is_dns_label(name) {
        return Err(Error::invalid(
            field,
            format!("{name:?} is not a DNS label (1-63 of a-z, 0-9 and -, not first or last)"),
        ));
    }
    Ok(name.to_string())
}

/// A domain as bindings keep it: lowercase, without a trailing dot, two
/// labels or more, each a DNS label, at most 253 bytes, not an address;
/// or a 400 naming `field`.
pub fn normalize_domain(field: &str, domain: &str) -> Result<String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(Error::invalid(field, format!("{domain:?}: {why}")));
    if d.is_empty() || d.len() > 253 {
        return bad("a domain name is 1 to 253 bytes");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return bad("an address is not a domain name");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return bad("a domain name has two labels or more (example.com)");
    }
    if let Some(l) = labels.iter().find(|l| !is_dns_label(l)) {
        return bad(&format!(
            "{l:?} is not a DNS label (1-63 of a-z, 0-9 and -, not first or last)"
        ));
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("a top-level domain is not all digits");
    }
    Ok(d)
}

/// The host label a sandbox's key claims, if it can be one: the key
/// lowercased, a DNS label, and neither an id nor the `<port>-<id>` form
/// (which name sandboxes by id: a key must never take them over).
pub fn key_host_label(key: &str) -> Option<String> {
    let l = key.to_ascii_lowercase();
    if !is_dns_label(&l) || Uuid::parse_str(&l).is_ok() || port_id_label(&l).is_some() {
        return None;
    }
    Some(l)
}

/// `<port>-<id>` (E2B's host form): the port (1-65535) and the id.
pub fn port_id_label(label: &str) -> Option<(u16, Uuid)> {
    let (port, id) = label.split_once('-')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
    if id.len() != 36 {
        return None;
    }
    Some((port, Uuid::parse_str(id).ok()?))
}

/// A named, sized filesystem that outlives sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: Uuid,
    pub owner: String,
    /// Unique per owner.
    pub name: String,
    pub size_mb: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// A volume with who mounts it and its use (its filesystem's figures).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeStatus {
    pub volume: Volume,
    pub holders: Vec<VolumeHolder>,
    /// Bytes in use and bytes it holds, if it is mounted on the host.
    pub usage: Option<(u64, u64)>,
}

/// Who has a volume mounted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeHolder {
    pub sandbox_id: Uuid,
    pub path: String,
    pub read_only: bool,
}

/// The smallest and largest volume (MiB).
pub const MIN_VOLUME_MB: u64 = 16;
pub const MAX_VOLUME_MB: u64 = 1 << 20;

/// Volume names: like template names, `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    validate_template_name(name).map_err(|_| {
        Error::invalid(
            "name",
            "a volume name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit",
        )
    })
}

/// A private network of one principal: a bridge and subnet of its own on
/// the host. Its sandboxes reach each other on any port, by address and by
/// name (their key and id); nothing else reaches them, and they reach no
/// other sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// `net-<12 hex>`.
    pub id: String,
    pub owner: String,
    /// Unique per owner; none for the default network and unnamed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its subnet (CIDR), from the daemon's range.
    pub subnet: String,
    /// `ready`.
    pub status: String,
    /// The principal's default network (one each, made on first use).
    #[serde(default)]
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// The name that stands for a principal's default network.
pub const DEFAULT_NETWORK: &str = "default";

/// The most networks one principal may have (its default one included).
pub const MAX_NETWORKS_PER_OWNER: usize = 16;

/// Network names: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`, not `default` (the
/// default network's) and not the shape of an id (`net-` and 12 hex).
pub fn validate_network_name(name: &str) -> Result<()> {
    validate_template_name(name).map_err(|_| {
        Error::invalid(
            "name",
            "a network name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit",
        )
    })?;
    if name == DEFAULT_NETWORK {
        return Err(Error::invalid(
            "name",
            "\"default\" names the default network",
        ));
    }
    if is_network_id(name) {
        return Err(Error::invalid(
            "name",
            "a network name cannot look like a network id (net-<12 hex>)",
        ));
    }
    Ok(())
}

/// Whether `s` has the shape of a network id.
pub fn is_network_id(s: &str) -> bool {
    s.strip_prefix("net-")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A directory of the sandbox the file API may reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// A host directory bound there (absolute); none: a private directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Checked longest pattern first; no match denies.
    #[serde(default)]
    pub acls: Vec<AclRule>,
}

pub use paddock_acl::Access;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A glob: `*` within a path segment, `**` across segments; `dir/**`
    /// also matches `dir` itself.
    pub path: String,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressAccess {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub access: EgressAccess,
    /// Exact, or `*.suffix`, or `*`.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Values injected into matching requests (secrets the sandbox never sees).
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<EgressOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
}

pub use crate::glob::glob_match;
pub use paddock_acl::path_under;

impl Mount {
    /// The access its ACL grants to `path` (under this mount): the rule
    /// with the longest pattern that matches wins; none denies.
    pub fn access(&self, path: &str) -> Access {
        paddock_acl::judge(self.acls.iter().map(|r| (r.path.as_str(), r.access)), path)
    }

    /// Whether processes inside must be judged on every access (the
    /// backend guards the mount): a host directory always (a guard added
    /// to a running sandbox could be passed by a handle taken before it,
    /// and a host directory's rules must hold from the first access); a
    /// private one when some path of it is not read-write for all. A
    /// private mount read-write throughout is a plain directory.
    pub fn needs_guard(&self) -> bool {
        if self.origin.is_some() {
            return true;
        }
        let covered = self.acls.iter().any(|r| {
            r.path
                .strip_suffix("/**")
                .is_some_and(|b| !b.contains(['*', '?']) && path_under(&self.path, b))
        });
        if covered && self.acls.iter().all(|r| r.access == Access::Rw) {
            return false;
        }
        let rules: Vec<(String, Access)> = self
            .acls
            .iter()
            .map(|r| (r.path.clone(), r.access))
            .collect();
        match paddock_acl::Acl::new(&rules) {
            Ok(acl) => {
                acl.access(&self.path) != Access::Rw
                    || acl.uniform_below(&self.path) != Some(Access::Rw)
            }
            Err(_) => true,
        }
    }
}

/// What an image reference resolved to, as the engine and backends need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The manifest's digest.
    pub digest: String,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<u16>,
    /// Compressed size of the layers, bytes.
    pub size: u64,
}

/// How far a pull has come: reported while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullProgress {
    pub reference: String,
    /// `resolving`, `downloading`, `extracting`, `cached` (a layer already
    /// in the cache), `extracted` or `done`.
    pub status: String,
    /// The layer (`sha256:...`) the status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Bytes of layers downloaded or found cached so far, of `total`.
    pub current: u64,
    pub total: u64,
}

/// Where a pull reports its progress.
pub type ProgressFn = std::sync::Arc<dyn Fn(PullProgress) + Send + Sync>;

/// An image in the daemon's cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInfo {
    /// As the caller named it.
    pub reference: String,
    /// What was pulled (after aliases).
    pub resolved: String,
    pub digest: String,
    pub layers: usize,
    pub size: u64,
    pub exposed_ports: Vec<u16>,
}

/// A spec with every default applied and every field checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub image: Option<String>,
    pub isolation: Isolation,
    pub cpu: f64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub pids: i64,
    pub env: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub cwd: String,
    pub ttl_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub ports: Vec<u16>,
    /// The default user of commands (from the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The image's digest and layers, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image: Option<ResolvedImage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_events_secs: Option<u64>,
    /// The snapshot it started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<Uuid>,
    /// Layers above the image's, bottom first: its snapshot's (stored
    /// layer directories, as the backend stacks them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// Volumes mounted in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_mb: Option<i64>,
    /// Run once at its first boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    #[serde(default, skip_serializing_if = "IdleAction::is_destroy")]
    pub on_idle: IdleAction,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake_on_request: bool,
    #[serde(default, skip_serializing_if = "RestartPolicy::is_never")]
    pub restart: RestartPolicy,
    /// The id of the network it is on; none: isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Checks mounts: absolute, without `..`, unique and not nested; ACL
/// patterns under their mount; origins absolute.
pub fn validate_mounts(mounts: &[Mount]) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let f = |x: &str| format!("mounts[{i}].{x}");
        if !m.path.starts_with('/') || m.path.split('/').any(|c| c == "..") || m.path.contains('\0')
        {
            return Err(Error::invalid(
                f("path"),
                "must be an absolute path without '..'",
            ));
        }
        if m.path.trim_end_matches('/').is_empty() {
            return Err(Error::invalid(f("path"), "cannot be /"));
        }
        if let Some(o) = &m.origin {
            no_nul(f("origin"), o)?;
            if !o.starts_with('/') || o.split('/').any(|c| c == "..") {
                return Err(Error::invalid(
                    f("origin"),
                    "must be an absolute host path without '..'",
                ));
            }
        }
        for (j, o) in mounts.iter().enumerate() {
            if i != j && (path_under(&m.path, &o.path) || path_under(&o.path, &m.path)) {
                return Err(Error::invalid(
                    f("path"),
                    format!("{} overlaps mount {}", m.path, o.path),
                ));
            }
        }
        for (j, r) in m.acls.iter().enumerate() {
            no_nul(format!("mounts[{i}].acls[{j}].path"), &r.path)?;
            if let Err(e) = crate::glob::Glob::new(&r.path) {
                return Err(Error::invalid(
                    format!("mounts[{i}].acls[{j}].path"),
                    format!("{}: {e}", r.path),
                ));
            }
            if !path_under(&r.path, &m.path) {
                return Err(Error::invalid(
                    format!("mounts[{i}].acls[{j}].path"),
                    format!("{} is not under the mount {}", r.path, m.path),
                ));
            }
        }
    }
    Ok(())
}

/// Checks egress rules' hosts, methods and ports.
pub fn validate_egress(rules: &[EgressRule]) -> Result<()> {
    for (i, r) in rules.iter().enumerate() {
        let h = r.host.strip_prefix("*.").unwrap_or(&r.host);
        let ok_host = r.host == "*"
            || (!h.is_empty()
                && !h.contains('*')
                && h.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                }));
        if !ok_host {
            return Err(Error::invalid(
                format!("egress[{i}].host"),
                format!("{:?} is not a host, `*.suffix` or `*`", r.host),
            ));
        }
        if r.ports.as_ref().is_some_and(|p| p.contains(&0)) {
            return Err(Error::invalid(
                format!("egress[{i}].ports"),
                "0 is not a port",
            ));
        }
        for m in r.methods.iter().flatten() {
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&m.as_str()) {
                return Err(Error::invalid(
                    format!("egress[{i}].methods"),
                    format!("unknown method {m:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// A snapshot policy's keys and globs, each a 400 naming its field.
pub fn validate_snapshot(s: &SnapshotPolicy) -> Result<()> {
    for (f, k) in [
        ("snapshot.restore_key", &s.restore_key),
        ("snapshot.write_key", &s.write_key),
    ] {
        if let Some(k) = k {
            if !valid_key(k) {
                return Err(Error::invalid(f, "must match [A-Za-z0-9_-]{1,64}"));
            }
        }
    }
    if s.include.as_ref().is_some_and(|i| i.is_empty()) {
        return Err(Error::invalid(
            "snapshot.include",
            "must name at least one path",
        ));
    }
    for (i, g) in s.include.iter().flatten().enumerate() {
        let f = format!("snapshot.include[{i}]");
        no_nul(&f, g)?;
        if !g.starts_with('/') {
            return Err(Error::invalid(f, "must be an absolute path glob"));
        }
        crate::glob::Glob::new(g).map_err(|e| Error::invalid(f, e))?;
    }
    Ok(())
}

impl SandboxConfig {
    /// The mount `path` lies under (the deepest), if any.
    pub fn mount_of(&self, path: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| path_under(path, &m.path))
            .max_by_key(|m| m.path.len())
    }

    /// Applies an image's config: its env under the caller's, its working
    /// directory and main process unless the caller gave their own, its
    /// user, its exposed ports.
    pub fn apply_image(&mut self, spec: &SandboxSpec, img: ResolvedImage) {
        let mut env = std::collections::BTreeMap::new();
        for kv in &img.env {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env.extend(self.env.clone());
        self.env = env;
        if spec.cwd.is_none() {
            if let Some(wd) = &img.working_dir {
                self.cwd = wd.clone();
            }
        }
        if spec.entrypoint.is_none() && spec.command.is_none() {
            self.entrypoint = img.entrypoint.clone();
            self.command = img.cmd.clone();
        } else if spec.entrypoint.is_none() && spec.command.is_some() {
            self.entrypoint = img.entrypoint.clone();
        }
        self.user = img.user.clone();
        for p in &img.exposed_ports {
            if !self.ports.contains(p) {
                self.ports.push(*p);
            }
        }
        self.ports.sort_unstable();
        self.resolved_image = Some(img);
    }
}

pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SandboxSpec {
    /// Applies defaults and checks every field; errors name the field.
    pub fn resolve(&self, limits: &Limits) -> Result<SandboxConfig> {
        if let Some(k) = &self.key {
            if !valid_key(k) {
                return Err(Error::invalid("key", "must match [A-Za-z0-9_-]{1,64}"));
            }
        }
        check_labels(&self.labels)?;
        // The defaults are capped by the operator's ceilings too: a host
        // smaller than a default still takes creates that leave it out.
        let cpu = self.cpu.unwrap_or(DEFAULT_CPU.min(limits.max_cpu));
        if !(cpu.is_finite() && (MIN_CPU..=limits.max_cpu).contains(&cpu)) {
            return Err(Error::invalid(
                "cpu",
                format!("must be from {MIN_CPU} to {} cores", limits.max_cpu),
            ));
        }
        let memory_mb = self
            .memory_mb
            .unwrap_or(DEFAULT_MEMORY_MB.min(limits.max_memory_mb));
        if !(16..=limits.max_memory_mb).contains(&memory_mb) {
            return Err(Error::invalid(
                "memory_mb",
                format!("must be from 16 to {} (MiB)", limits.max_memory_mb),
            ));
        }
        let disk_mb = self
            .disk_mb
            .unwrap_or(DEFAULT_DISK_MB.min(limits.max_disk_mb));
        if !(1..=limits.max_disk_mb).contains(&disk_mb) {
            return Err(Error::invalid(
                "disk_mb",
                format!("must be from 1 to {} (MiB)", limits.max_disk_mb),
            ));
        }
        let pids = self.pids.unwrap_or(DEFAULT_PIDS.min(limits.max_pids));
        if !(8..=limits.max_pids).contains(&pids) {
            return Err(Error::invalid(
                "pids",
                format!("must be from 8 to {}", limits.max_pids),
            ));
        }
        for (field, v, max) in [
            ("ttl_secs", self.ttl_secs, limits.max_ttl_secs),
            (
                "idle_timeout_secs",
                self.idle_timeout_secs,
                limits.max_idle_timeout_secs,
            ),
        ] {
            if v.is_some_and(|v| v > max) {
                return Err(Error::invalid(
                    field,
                    format!("must be at most {max} seconds"),
                ));
            }
        }
        if let Some(u) = self.usage_events_secs {
            if !(1..=86400).contains(&u) {
                return Err(Error::invalid(
                    "usage_events_secs",
                    "must be from 1 to 86400 seconds",
                ));
            }
        }
        if let Some(r) = self.cpu_request {
            if !(r.is_finite() && (MIN_CPU..=cpu).contains(&r)) {
                return Err(Error::invalid(
                    "cpu_request",
                    format!("must be from {MIN_CPU} to the sandbox's cpu ({cpu})"),
                ));
            }
        }
        if let Some(r) = self.memory_request_mb {
            if !(16..=memory_mb).contains(&r) {
                return Err(Error::invalid(
                    "memory_request_mb",
                    format!("must be from 16 to the sandbox's memory_mb ({memory_mb})"),
                ));
            }
        }
        if let Some(b) = &self.bootstrap {
            no_nul("bootstrap", b)?;
            if b.len() > MAX_BOOTSTRAP {
                return Err(Error::invalid(
                    "bootstrap",
                    format!("must be at most {MAX_BOOTSTRAP} bytes"),
                ));
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(Error::invalid(
                    "env",
                    format!("invalid variable name {k:?}"),
                ));
            }
            no_nul(format!("env.{k}"), v)?;
        }
        if let Some(img) = &self.image {
            no_nul("image", img)?;
        }
        let cwd = self.cwd.clone().unwrap_or_else(|| "/workspace".into());
        no_nul("cwd", &cwd)?;
        if !cwd.starts_with('/') {
            return Err(Error::invalid("cwd", "must be an absolute path"));
        }
        if cwd.split('/').any(|c| c == "..") {
            return Err(Error::invalid("cwd", "must not contain '..'"));
        }
        for (field, v) in [("entrypoint", &self.entrypoint), ("command", &self.command)] {
            if let Some(v) = v {
                if v.iter().any(|a| a.contains('\0')) {
                    return Err(Error::invalid(field, "must not contain NUL"));
                }
            }
        }
        if self.ports.contains(&0) {
            return Err(Error::invalid("ports", "0 is not a port"));
        }
        if let Some(img) = &self.image {
            if img.trim().is_empty() {
                return Err(Error::invalid("image", "must not be empty"));
            }
        }
        validate_mounts(&self.mounts)?;
        if let Some(e) = &self.egress {
            validate_egress(e)?;
        }
        if let Some(sn) = &self.snapshot {
            validate_snapshot(sn)?;
        }
        for (i, h) in self.extra_hosts.iter().enumerate() {
            let ok = h.split_once(':').is_some_and(|(n, ip)| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                    && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
            });
            if !ok {
                return Err(Error::invalid(
                    format!("extra_hosts[{i}]"),
                    format!("{h:?} is not hostname:ip"),
                ));
            }
        }
        Ok(SandboxConfig {
            image: self.image.clone(),
            isolation: self.isolation.unwrap_or_default(),
            cpu,
            memory_mb,
            disk_mb,
            pids,
            env: self.env.clone(),
            entrypoint: self.entrypoint.clone(),
            command: self.command.clone(),
            cwd,
            ttl_secs: self.ttl_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            ports: self.ports.clone(),
            user: None,
            resolved_image: None,
            mounts: self.mounts.clone(),
            egress: self.egress.clone(),
            snapshot: self.snapshot.clone(),
            extra_hosts: self.extra_hosts.clone(),
            tty: self.tty,
            usage_events_secs: self.usage_events_secs,
            from_snapshot: None,
            layers: Vec::new(),
            volumes: Vec::new(),
            cpu_request: self.cpu_request,
            memory_request_mb: self.memory_request_mb,
            bootstrap: self.bootstrap.clone(),
            on_idle: self.on_idle.unwrap_or_default(),
            wake_on_request: self.wake_on_request,
            restart: self.restart.unwrap_or_default(),
            // Resolved by the engine (a network is the caller's).
            network: None,
        })
    }
}

impl SandboxSpec {
    /// This spec with what it leaves out taken from a template's defaults:
    /// its own values win; env and labels are merged key by key.
    pub fn with_defaults(self, t: &SandboxSpec) -> SandboxSpec {
        let mut labels = t.labels.clone();
        labels.extend(self.labels);
        let mut env = t.env.clone();
        env.extend(self.env);
        SandboxSpec {
            key: self.key,
            labels,
            image: self.image.or_else(|| t.image.clone()),
            isolation: self.isolation.or(t.isolation),
            template: self.template,
            cpu: self.cpu.or(t.cpu),
            memory_mb: self.memory_mb.or(t.memory_mb),
            disk_mb: self.disk_mb.or(t.disk_mb),
            pids: self.pids.or(t.pids),
            env,
            entrypoint: self.entrypoint.or_else(|| t.entrypoint.clone()),
            command: self.command.or_else(|| t.command.clone()),
            cwd: self.cwd.or_else(|| t.cwd.clone()),
            ttl_secs: self.ttl_secs.or(t.ttl_secs),
            idle_timeout_secs: self.idle_timeout_secs.or(t.idle_timeout_secs),
            ports: or_template(self.ports, &t.ports),
            mounts: or_template(self.mounts, &t.mounts),
            egress: self.egress.or_else(|| t.egress.clone()),
            snapshot: self.snapshot.or_else(|| t.snapshot.clone()),
            extra_hosts: or_template(self.extra_hosts, &t.extra_hosts),
            tty: self.tty || t.tty,
            usage_events_secs: self.usage_events_secs.or(t.usage_events_secs),
            from_snapshot: self.from_snapshot.or_else(|| t.from_snapshot.clone()),
            volumes: or_template(self.volumes, &t.volumes),
            cpu_request: self.cpu_request.or(t.cpu_request),
            memory_request_mb: self.memory_request_mb.or(t.memory_request_mb),
            bootstrap: self.bootstrap.or_else(|| t.bootstrap.clone()),
            on_idle: self.on_idle.or(t.on_idle),
            wake_on_request: self.wake_on_request || t.wake_on_request,
            restart: self.restart.or(t.restart),
            network: self.network.or_else(|| t.network.clone()),
        }
    }
}

/// A list a spec left empty takes the template's.
fn or_template<T: Clone>(mine: Vec<T>, template: &[T]) -> Vec<T> {
    if mine.is_empty() {
        template.to_vec()
    } else {
        mine
    }
}

/// A stored, named image plus sandbox defaults. A sandbox created with
/// `template` takes them, each overridable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub owner: String,
    /// What it is for, in a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The defaults: any field of a sandbox spec but `key` and `template`.
    pub defaults: SandboxSpec,
    /// Sandboxes of this template kept booted ahead of time (a warm pool,
    /// at most `MAX_TEMPLATE_POOL`); 0: none.
    #[serde(default)]
    pub warm_pool: usize,
    pub created_at: DateTime<Utc>,
}

/// The largest warm pool a template may ask for.
pub const MAX_TEMPLATE_POOL: usize = 16;
/// The most sandboxes one principal's templates may keep pooled in all.
pub const MAX_POOLED_PER_OWNER: usize = 32;

/// Labels: keys of 1-128 bytes, values of at most 1024, no NUL bytes, at
/// most 256 of them.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > 256 {
        return Err(Error::invalid("labels", "at most 256 labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 || k.contains('\0') || v.contains('\0') {
            return Err(Error::invalid(
                "labels",
                "keys must be 1-128 bytes and values at most 1024 bytes",
            ));
        }
    }
    Ok(())
}

/// Template names: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn validate_template_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "a template name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit",
        ))
    }
}

impl SandboxConfig {
    /// The main process, if any: entrypoint followed by command.
    pub fn main_process(&self) -> Vec<String> {
        let mut v = self.entrypoint.clone().unwrap_or_default();
        v.extend(self.command.clone().unwrap_or_default());
        v
    }

    /// This configuration as the defaults of a spec (a sandbox started from
    /// a snapshot of it takes what its spec leaves out from here).
    pub fn as_defaults(&self) -> SandboxSpec {
        SandboxSpec {
            key: None,
            labels: BTreeMap::new(),
            image: self.image.clone(),
            isolation: Some(self.isolation),
            template: None,
            cpu: Some(self.cpu),
            memory_mb: Some(self.memory_mb),
            disk_mb: Some(self.disk_mb),
            pids: Some(self.pids),
            env: self.env.clone(),
            entrypoint: self.entrypoint.clone(),
            command: self.command.clone(),
            cwd: Some(self.cwd.clone()),
            ttl_secs: self.ttl_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            ports: self.ports.clone(),
            mounts: self.mounts.clone(),
            egress: self.egress.clone(),
            snapshot: self.snapshot.clone(),
            extra_hosts: self.extra_hosts.clone(),
            tty: self.tty,
            usage_events_secs: self.usage_events_secs,
            from_snapshot: None,
            // A volume is one sandbox's at a time: never taken over.
            volumes: Vec::new(),
            cpu_request: self.cpu_request,
            memory_request_mb: self.memory_request_mb,
            // It ran when that sandbox first booted; one started from a
            // snapshot runs its own spec's, if any.
            bootstrap: None,
            on_idle: Some(self.on_idle),
            wake_on_request: self.wake_on_request,
            restart: Some(self.restart),
            // Its network only when asked for again (it may be gone).
            network: None,
        }
    }
}

/// A sandbox's filesystem as it was at one instant, kept after the
/// sandbox is gone: new sandboxes start from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: Uuid,
    pub owner: String,
    /// Unique per owner; a create may name the snapshot by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub sandbox_id: Uuid,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The sandbox's configuration then, its image resolved; `layers` are
    /// the snapshot's own, bottom first.
    pub config: SandboxConfig,
    /// The digest of its top layer (`sha256:...`), the one it added.
    pub digest: String,
    /// Bytes of file data in its layers.
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// The most layers of snapshots a sandbox stacks above its image: a
/// snapshot that would have more has them flattened into one.
pub const MAX_SNAPSHOT_LAYERS: usize = 8;

/// What a snapshot asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Keep the processes' memory too (backends with `memory_snapshot`).
    #[serde(default)]
    pub memory: bool,
}

/// Snapshot names: 1-128 bytes of `[A-Za-z0-9_.:-]`, starting with a
/// letter or digit.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "a snapshot name is 1-128 of [A-Za-z0-9_.:-], starting with a letter or digit",
        ))
    }
}

/// The name of the snapshot a snapshot policy's key (`restore_key`,
/// `write_key`) stands for, among its owner's: a sandbox created under the
/// policy starts from it; one that goes writes it.
pub fn policy_snapshot_name(key: &str) -> String {
    format!("policy:{key}")
}

/// The most children one fork makes.
pub const MAX_FORK: u32 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: Uuid,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The template it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub config: SandboxConfig,
    /// The backend that runs it (`crun`, `runc`, ...), chosen at create
    /// from its isolation; empty in records from before backends had names
    /// (read as the isolation's default backend).
    #[serde(default)]
    pub backend: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A fork's child until the fork is done (all its children running):
    /// the fork's own id. One left so after a restart is removed: the fork
    /// never answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<Uuid>,
}

/// Who is asking. Open (loopback) daemons use [`Principal::local`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// What owns sandboxes: a key's principal, `oidc:<subject>` for a
    /// token from a trusted issuer, `local` for the operator.
    pub id: String,
    /// From a token's claims, where it had them.
    pub email: Option<String>,
    pub name: Option<String>,
    /// Groups (a token's `groups` claim): what policies may name.
    pub groups: Vec<String>,
    /// The API that carried the call (`api`, `hiver`, `flash`,
    /// `agenttier`, ...), as the audit log records it.
    pub via: &'static str,
    /// What a token narrows the principal to (`None`: all it may do).
    pub scope: Option<crate::tokens::TokenScope>,
    /// The API key the call came with, directly or through a token made
    /// from it (such a token dies with the key).
    pub key: Option<String>,
    /// The token (its `jti`) the call came with, when it is one the daemon
    /// made for a principal: a token made with it dies with it.
    pub token: Option<String>,
}

impl Principal {
    pub fn new(id: impl Into<String>) -> Principal {
        Principal {
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn local() -> Principal {
        Principal::new("local")
    }

    /// The same principal, as carried by API `via`.
    pub fn via(mut self, via: &'static str) -> Principal {
        self.via = via;
        self
    }

    /// The operator: the local principal (loopback without a key, the
    /// unauthenticated dialects). The image cache's prune and the daemon's
    /// registry credentials are the operator's.
    pub fn is_operator(&self) -> bool {
        self.id == "local"
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv; give this or `shell`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// A shell string, run through `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Written to the command's stdin, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Seconds; the command is killed when it runs longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
    /// Per stream, buffered mode; default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

impl ExecRequest {
    /// Checks every field: NUL bytes, paths, and numbers within `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        for (i, a) in self.cmd.iter().enumerate() {
            no_nul(format!("cmd[{i}]"), a)?;
        }
        if let Some(s) = &self.shell {
            no_nul("shell", s)?;
        }
        for (k, v) in &self.env {
            no_nul("env", k)?;
            no_nul(format!("env.{k}"), v)?;
        }
        if let Some(c) = &self.cwd {
            no_nul("cwd", c)?;
        }
        if let Some(u) = &self.user {
            no_nul("user", u)?;
        }
        if let Some(t) = self.timeout {
            if t.is_finite() && t > limits.max_exec_timeout_secs {
                return Err(Error::invalid(
                    "timeout",
                    format!("must be at most {} seconds", limits.max_exec_timeout_secs),
                ));
            }
        }
        if self.max_output_bytes.is_some_and(|m| m > MAX_OUTPUT_BYTES) {
            return Err(Error::invalid(
                "max_output_bytes",
                format!("must be at most {MAX_OUTPUT_BYTES}"),
            ));
        }
        match (&self.shell, self.cmd.is_empty()) {
            (Some(_), false) => {
                return Err(Error::invalid("cmd", "give `cmd` or `shell`, not both"))
            }
            (None, true) => {
                return Err(Error::invalid(
                    "cmd",
                    "give a non-empty `cmd` or a `shell` string",
                ))
            }
            (Some(s), true) if s.is_empty() => {
                return Err(Error::invalid("shell", "must not be empty"))
            }
            _ => {}
        }
        if self.cmd.first().is_some_and(|a| a.is_empty()) {
            return Err(Error::invalid("cmd", "cmd[0] must not be empty"));
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') {
                return Err(Error::invalid("cwd", "must be an absolute path"));
            }
        }
        if let Some(t) = self.timeout {
            if !(t.is_finite() && t > 0.0) {
                return Err(Error::invalid(
                    "timeout",
                    "must be a positive number of seconds",
                ));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(Error::invalid(
                    "env",
                    format!("invalid variable name {k:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The outcome of a finished command.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
}

/// What a running command reports.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    Exit(ExecResult),
}

/// What a caller sends to a running command.
#[derive(Debug, Clone)]
pub enum ExecControl {
    Stdin(bytes::Bytes),
    CloseStdin,
    Resize(PtySize),
    Signal(i32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub path: String,
    /// file, dir, symlink or other
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub modified_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub mode: Option<u32>,
    pub mkdir_parents: bool,
    pub atomic: bool,
    pub append: bool,
    /// The number of bytes the data will bring, when the caller knows it
    /// (an upload's Content-Length): large writes of a known size are
    /// handed to the daemon to write (`paddock_proto::handover`).
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    pub address: String,
    pub protocol: String,
    /// Declared in the sandbox's config (listening or not).
    pub declared: bool,
    pub listening: bool,
}

/// What the sandbox reports of the machine it runs on: uname(2) seen from
/// inside (its own hostname; the kernel that serves it, which under gVisor
/// or a microVM is not the host's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Platform {
    pub system: String,
    pub node: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

/// A lifecycle or activity event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Daemon-wide sequence number.
    pub seq: i64,
    /// Per-sandbox id (monotonic within one sandbox).
    pub id: i64,
    pub sandbox_id: Uuid,
    #[serde(skip)]
    pub owner: String,
    /// Always `data.kind()`: what the event is, as every API names it.
    pub kind: String,
    pub time: DateTime<Utc>,
    pub data: crate::event::EventData,
}

/// Filters for listing sandboxes.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<State>,
    pub labels: BTreeMap<String, String>,
    pub key: Option<String>,
    pub include_destroyed: bool,
    pub limit: usize,
    /// Resume after this id (from a previous page).
    pub after: Option<Uuid>,
}

#[cfg(test)]
mod glob_tests {
    use super::*;

    #[test]
    fn longest_pattern_wins_and_default_denies() {
        let m = Mount {
            path: "/workspace".into(),
            origin: None,
            acls: vec![
                AclRule {
                    path: "/workspace/**".into(),
                    access: Access::Rw,
                },
                AclRule {
                    path: "/workspace/ro/**".into(),
                    access: Access::Ro,
                },
                AclRule {
                    path: "/workspace/ro/hidden/**".into(),
                    access: Access::Deny,
                },
            ],
        };
        assert_eq!(m.access("/workspace/a"), Access::Rw);
        assert_eq!(m.access("/workspace/ro/x"), Access::Ro);
        assert_eq!(m.access("/workspace/ro/hidden/y"), Access::Deny);
        let none = Mount {
            path: "/data".into(),
            origin: None,
            acls: vec![],
        };
        assert_eq!(none.access("/data/x"), Access::Deny);
        assert!(m.needs_guard() && none.needs_guard());
    }

    #[test]
    fn only_a_mount_read_write_throughout_goes_unguarded() {
        let m = |rules: &[(&str, Access)]| Mount {
            path: "/w".into(),
            origin: None,
            acls: rules
                .iter()
                .map(|(p, a)| AclRule {
                    path: p.to_string(),
                    access: *a,
                })
                .collect(),
        };
        use Access::*;
        assert!(!m(&[("/w/**", Rw)]).needs_guard());
        assert!(!m(&[("/**", Rw)]).needs_guard());
        assert!(!m(&[("/w/**", Rw), ("/w/*.txt", Rw)]).needs_guard());
        assert!(m(&[("/w/**", Rw), ("/w/*.env", Deny)]).needs_guard());
        assert!(m(&[("/w/**", Ro)]).needs_guard());
        // Only a part of it is granted; the rest is denied.
        assert!(m(&[("/w/pub/**", Rw)]).needs_guard());
        assert!(m(&[("/w/*", Rw)]).needs_guard());
        // A host directory always.
        let host = Mount {
            origin: Some("/srv/data".into()),
            ..m(&[("/w/**", Rw)])
        };
        assert!(host.needs_guard());
    }

    #[test]
    fn mounts_are_checked() {
        let m = |p: &str| Mount {
            path: p.into(),
            origin: None,
            acls: vec![],
        };
        assert!(validate_mounts(&[m("/a"), m("/b")]).is_ok());
        assert!(validate_mounts(&[m("/a"), m("/a/b")]).is_err());
        assert!(validate_mounts(&[m("rel")]).is_err());
        assert!(validate_mounts(&[m("/a/../b")]).is_err());
        let bad_acl = Mount {
            path: "/a".into(),
            origin: None,
            acls: vec![AclRule {
                path: "/b/**".into(),
                access: Access::Rw,
            }],
        };
        let e = validate_mounts(&[bad_acl]).unwrap_err();
        assert!(matches!(e, Error::Invalid { ref field, .. } if field == "mounts[0].acls[0].path"));
    }
}

#[cfg(test)]
fn test_limits() -> Limits {
    Limits {
        max_cpu: 2.0,
        max_memory_mb: 8192,
        max_disk_mb: 8192,
        ..Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let c = SandboxSpec::default().resolve(&test_limits()).unwrap();
        assert_eq!(c.memory_mb, 512);
        assert_eq!(c.cpu, 1.0);
        assert_eq!(c.pids, 1024);
        assert_eq!(c.cwd, "/workspace");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(SandboxSpec, &str)> = vec![
            (
                SandboxSpec {
                    memory_mb: Some(-1),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                SandboxSpec {
                    key: Some("a b".into()),
                    ..Default::default()
                },
                "key",
            ),
            (
                SandboxSpec {
                    key: Some("x".repeat(65)),
                    ..Default::default()
                },
                "key",
            ),
            (
                SandboxSpec {
                    cwd: Some("rel".into()),
                    ..Default::default()
                },
                "cwd",
            ),
            (
                SandboxSpec {
                    cpu: Some(0.0),
                    ..Default::default()
                },
                "cpu",
            ),
            (
                SandboxSpec {
                    cpu: Some(64.0),
                    ..Default::default()
                },
                "cpu",
            ),
            (
                SandboxSpec {
                    pids: Some(1),
                    ..Default::default()
                },
                "pids",
            ),
            (
                SandboxSpec {
                    ports: vec![0],
                    ..Default::default()
                },
                "ports",
            ),
            (
                SandboxSpec {
                    memory_mb: Some(10_000_000),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                SandboxSpec {
                    memory_mb: Some(i64::MAX),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                SandboxSpec {
                    cpu: Some(0.0001),
                    ..Default::default()
                },
                "cpu",
            ),
            (
                SandboxSpec {
                    pids: Some(1 << 62),
                    ..Default::default()
                },
                "pids",
            ),
            (
                SandboxSpec {
                    disk_mb: Some(1 << 40),
                    ..Default::default()
                },
                "disk_mb",
            ),
            (
                SandboxSpec {
                    ttl_secs: Some(i64::MAX as u64),
                    ..Default::default()
                },
                "ttl_secs",
            ),
            (
                SandboxSpec {
                    idle_timeout_secs: Some(u64::MAX),
                    ..Default::default()
                },
                "idle_timeout_secs",
            ),
            (
                SandboxSpec {
                    cwd: Some("/a\0b".into()),
                    ..Default::default()
                },
                "cwd",
            ),
        ];
        for (spec, field) in cases {
            match spec.resolve(&test_limits()) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn keys() {
        assert!(valid_key("abc-DEF_123"));
        assert!(valid_key(&"a".repeat(64)));
        assert!(!valid_key(""));
        assert!(!valid_key("a/b"));
        assert!(!valid_key("é"));
    }

    #[test]
    fn unknown_isolation_is_rejected_by_name() {
        let e = serde_json::from_str::<SandboxSpec>(r#"{"isolation":"vmware"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn exec_request_validation() {
        let l = test_limits();
        assert!(ExecRequest::default().validate(&l).is_err());
        let r = ExecRequest {
            cmd: vec!["true".into()],
            cwd: Some("tmp".into()),
            ..Default::default()
        };
        assert!(matches!(r.validate(&l), Err(Error::Invalid { field, .. }) if field == "cwd"));
        let r = ExecRequest {
            cmd: vec!["true".into()],
            timeout: Some(-1.0),
            ..Default::default()
        };
        assert!(matches!(r.validate(&l), Err(Error::Invalid { field, .. }) if field == "timeout"));
    }
}

/// A token Paddock signed for a principal, as listed (never the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub jti: String,
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub scope: crate::tokens::TokenScope,
    /// The token it was made with, if it was: revoking that one ends
    /// this one too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A token just made: the only time it is shown.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub info: TokenInfo,
}
