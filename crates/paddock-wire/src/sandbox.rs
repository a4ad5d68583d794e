//! Sandboxes, templates, pools, backends and events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Container,
    Gvisor,
    Microvm,
}

/// What an idle timeout does to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdleAction {
    /// Destroys it.
    #[default]
    Destroy,
    /// Stops it and keeps its files (scale to zero): `start`, or a request
    /// to its ports when it wakes on request, brings it back.
    Hibernate,
    /// Pauses it, memory kept: `resume`, or a request to its ports when it
    /// wakes on request, brings it back. Traffic on its network counts as
    /// activity.
    Suspend,
}

/// What becomes of a sandbox's main process when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Nothing: the sandbox runs on without it.
    #[default]
    Never,
    /// Started again (after 1 s, doubling to 30 s while it keeps exiting
    /// within 10 s).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller asks for. Absent numbers take the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// A template whose defaults fill in what this spec leaves out.
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
    /// What to capture on shutdown and restore on start (hiver's
    /// snapshot policy).
    #[serde(
        default,
        rename = "snapshot_policy",
        skip_serializing_if = "Option::is_none"
    )]
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
    /// A snapshot to start from (its id or name): its files, and its
    /// configuration for whatever this spec leaves out.
    #[serde(default, rename = "snapshot", skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// Volumes (yours, by name) to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRequest>,
    /// CPU cores reserved under contention, at most `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    /// Memory (MiB) kept from reclaim, at most `memory_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_mb: Option<i64>,
    /// A shell script run once when the sandbox first boots, before the
    /// create answers; one that fails fails the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// What `idle_timeout_secs` does: `destroy` (the default),
    /// `hibernate` (stop, files kept) or `suspend` (pause, memory kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_idle: Option<IdleAction>,
    /// A request to one of its ports through the proxy starts it again
    /// when it is stopped, held until the port answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake_on_request: bool,
    /// What becomes of the main process when it exits: `never` (the
    /// default: the sandbox runs on) or `always` (started again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// A private network of yours to join (its id or name, or `default`:
    /// your default network, made on first use): its sandboxes reach each
    /// other by address and by name (key or id), nothing else reaches
    /// them. None: isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A volume to mount in a sandbox (at create, or `POST
/// /v1/sandboxes/{id}/volumes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    /// The volume's name (or id).
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Read-only (any number of sandboxes); read-write: one at a time.
    #[serde(default)]
    pub read_only: bool,
}

/// A volume mounted in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VolumeMount {
    pub volume: Uuid,
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    /// Unique among yours: 1-64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Its size (MiB, 16 to 1048576): a full volume is `ENOSPC` inside.
    pub size_mb: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Who has a volume mounted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeHolder {
    pub sandbox_id: Uuid,
    pub path: String,
    pub read_only: bool,
}

/// A named, sized filesystem that outlives sandboxes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub size_mb: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// The sandboxes that mount it.
    #[serde(default)]
    pub attached: Vec<VolumeHolder>,
    /// Bytes in use, and bytes it holds (its filesystem's own figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
}

/// `GET /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeList {
    pub volumes: Vec<Volume>,
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Unique among yours: 1-64 of `[A-Za-z0-9_.-]`, starting with a
    /// letter or digit; not `default`. None: unnamed (known by its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A private network: a bridge and subnet of its own; its sandboxes reach
/// each other on any port, by address and by name, and no other sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// `net-<12 hex>`.
    pub id: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its subnet (CIDR).
    pub subnet: String,
    /// `ready`.
    pub status: String,
    /// Your default network (`"network": "default"` joins it).
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/networks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkList {
    pub networks: Vec<Network>,
}

/// `POST /v1/workspaces`: a name whose sandbox scales to zero.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreate {
    /// Unique among yours: 1-63 lower-case letters, digits or `-`.
    pub name: String,
    /// What its sandboxes are made of (no key, snapshot or volumes: its
    /// snapshots are its own).
    #[serde(default)]
    pub spec: SandboxSpec,
    /// A snapshot (id or name) its first sandbox starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What its sandbox's `idle_timeout_secs` does: `hibernate` snapshots
    /// it and destroys it, `destroy` destroys it.
    #[serde(default)]
    pub on_idle: IdleAction,
    /// A request to its proxy wakes it, held until the port answers.
    #[serde(default)]
    pub wake_on_request: bool,
    /// At most 16 entries; keys of `[a-z0-9-_./]`, values of at most 512
    /// bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `PATCH /v1/workspaces/{name}`: each field given replaces.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SandboxSpec>,
    /// `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_idle: Option<IdleAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_on_request: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Refused (409) unless this is its sandbox now (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sandbox: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub spec: SandboxSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its sandbox while awake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Uuid>,
    /// The snapshot its last hibernation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_snapshot: Option<Uuid>,
    pub on_idle: IdleAction,
    pub wake_on_request: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
}

/// A directory of the sandbox the file API may reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// A host directory bound there (absolute, under a root the operator
    /// allows); none: a private directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Checked longest pattern first; no match denies.
    #[serde(default)]
    pub acls: Vec<AclRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Rw,
    Ro,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A glob: `*` within a path segment, `**` across segments; `dir/**`
    /// also matches `dir` itself.
    pub path: String,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressAccess {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
}

/// What an image reference resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

/// A spec with every default applied and every field checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    #[serde(
        default,
        rename = "snapshot_policy",
        skip_serializing_if = "Option::is_none"
    )]
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
    /// Its snapshot layers above the image's, bottom first (a stack
    /// deeper than 8 is flattened into one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// Volumes mounted in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    #[serde(default, skip_serializing_if = "IdleAction::is_destroy")]
    pub on_idle: IdleAction,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake_on_request: bool,
    #[serde(default, skip_serializing_if = "RestartPolicy::is_never")]
    pub restart: RestartPolicy,
    /// The id of the private network it is on; none: isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub id: Uuid,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The template it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub config: SandboxConfig,
    /// The backend that runs it (`crun`, `runc`, ...; see `/v1/backends`).
    pub backend: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// A stored, named image plus sandbox defaults. A sandbox created with
/// `template` takes them, each overridable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// Its owner; `paddock:operator` for the operator's (the settings
    /// file's), which every principal sees.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The defaults: any field of a sandbox spec but `key` and `template`.
    pub defaults: SandboxSpec,
    /// Sandboxes of this template kept booted ahead of time; 0: none.
    #[serde(default)]
    pub warm_pool: usize,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// A warm pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    /// None: the default host image (or, for a template's pool, the
    /// template's).
    pub image: Option<String>,
    /// The template whose sandboxes this pool keeps (yours only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub size: usize,
    pub ready: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolStatus>,
}

/// What a backend can do beyond start, stop and destroy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Bulk file data skips the agent protocol (open descriptors handed
    /// to the daemon).
    pub fd_handover: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackendInfo {
    /// Its name: `crun`, `runc`, `runsc`, `qemu`, ...
    pub name: String,
    pub isolation: Isolation,
    /// Whether creates asking for its isolation get it.
    pub default: bool,
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackendList {
    pub backends: Vec<BackendInfo>,
}

/// A lifecycle or activity event (the `data` of each SSE event of
/// `/v1/events` and `/v1/sandboxes/{id}/events`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Daemon-wide sequence number.
    pub seq: i64,
    /// Per-sandbox id (monotonic within one sandbox).
    pub id: i64,
    pub sandbox_id: Uuid,
    /// `sandbox.created`, `sandbox.started`, `exec.request`, `fs.response`,
    /// `config.apply`, `stdio`, `resource.usage`, ...
    pub kind: String,
    pub time: DateTime<Utc>,
    /// The kind's payload: `state` for state changes, `reason` for a
    /// destroy, `command`/`exit_code` for commands, `path`/`access` for file
    /// operations, ...
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A sandbox's filesystem as it was at one instant (`/v1/snapshots`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// The sandbox's configuration when it was taken: what a sandbox
    /// started from it gets for whatever its spec leaves out.
    pub config: SandboxConfig,
    /// The digest of the layer it added (`sha256:...`).
    pub digest: String,
    /// Bytes of file data in the layer it added.
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

/// `POST /v1/sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Unique among the caller's snapshots: 1-128 of `[A-Za-z0-9_.:-]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Keep the processes' memory too: only backends with
    /// `memory_snapshot` can (a 501 names them otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory: bool,
}

/// `POST /v1/sandboxes/{id}/fork`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many children: 1 to 100.
    #[serde(default = "one")]
    pub count: u32,
    /// Keep the processes' memory too (see `SnapshotRequest::memory`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub memory: bool,
}

fn one() -> u32 {
    1
}

impl Default for ForkRequest {
    fn default() -> Self {
        ForkRequest {
            count: 1,
            memory: false,
        }
    }
}

/// The children of a fork, running.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForkResult {
    pub sandboxes: Vec<Sandbox>,
}
