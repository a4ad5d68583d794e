//! The client commands: they speak the native API, as any client would.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use futures::{SinkExt, StreamExt};
use paddock_client::wire as w;
use paddock_client::{Endpoint, ListFilter, PullEvent, Upload, Verb};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a sandbox (and print its id).
    Create {
        #[arg(long)]
        key: Option<String>,
        /// Take defaults from this template (flags override them).
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        spec: Box<SpecArgs>,
        /// The main process.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List sandboxes.
    Ls {
        #[arg(long)]
        state: Option<String>,
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
    },
    /// Show one sandbox.
    Inspect {
        id: String,
    },
    /// Run a command; prints its output and exits with its exit code.
    Exec {
        id: String,
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Allocate a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell in the sandbox.
    Shell {
        id: String,
        #[arg(long, default_value = "/bin/bash")]
        shell: String,
    },
    /// Copy files: `paddock cp ./local ID:/path` or `paddock cp ID:/path ./local`.
    Cp {
        src: String,
        dst: String,
    },
    /// Destroy sandboxes.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop a sandbox (its filesystem is kept).
    Stop {
        id: String,
    },
    /// Start a stopped sandbox.
    Start {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// The main process's output.
    Logs {
        id: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Lifecycle and activity events (one sandbox, or all).
    Events {
        id: Option<String>,
        /// Resume after this event id.
        #[arg(long)]
        after: Option<i64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Resource usage from cgroups.
    Metrics {
        id: String,
    },
    /// Ports listening in the sandbox.
    Ports {
        id: String,
    },
    /// Images in the daemon's cache.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// The backends the daemon runs sandboxes on, and what each can do.
    Backends,
    /// Templates: a named image plus sandbox defaults.
    #[command(subcommand)]
    Templates(TemplatesCmd),
    /// Snapshot a sandbox's filesystem (and print the snapshot's id).
    Snapshot {
        id: String,
        /// A name to find it by (unique among yours).
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
        /// Keep the processes' memory too (backends that can).
        #[arg(long)]
        memory: bool,
    },
    /// Snapshots: list, inspect, remove.
    #[command(subcommand)]
    Snapshots(SnapshotsCmd),
    /// Volumes: named, sized filesystems that outlive sandboxes.
    #[command(subcommand)]
    Volumes(VolumesCmd),
    /// Private networks: sandboxes on one reach each other by address and
    /// by name, and no other sandbox.
    #[command(subcommand)]
    Networks(NetworksCmd),
    /// Workspaces: names whose sandbox scales to zero (hibernated into a
    /// snapshot, woken from it).
    #[command(subcommand)]
    Workspaces(WorkspacesCmd),
    /// The audit log: every mutating call, who made it, through which API,
    /// and how it ended (newest first; yours, or everyone's for the
    /// operator).
    Audit {
        /// Only this sandbox's (id or key).
        #[arg(long)]
        sandbox: Option<String>,
        /// Only actions starting with this (`sandbox.`, `file.write`).
        #[arg(long)]
        action: Option<String>,
        /// Only this principal's (the operator's view).
        #[arg(long)]
        principal: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
    /// What your sandboxes come to (everyone's for the operator).
    Usage,
    /// Governance policies: list, set, remove.
    #[command(subcommand)]
    Policies(PoliciesCmd),
    /// Your SSH public keys, which open the SSH gateway (`paddock serve
    /// --ssh-listen`): list, add, remove.
    #[command(subcommand)]
    SshKeys(SshKeysCmd),
    /// Bearer tokens the daemon signs for you, scoped and expiring: make,
    /// list, revoke (and, for the operator, rotate the signing key).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// A sandbox's proxies, which the ingress (`paddock serve
    /// --ingress-listen`) publishes: list, create, set a port, remove.
    #[command(subcommand)]
    Proxies(ProxiesCmd),
    /// External domains bound to your sandboxes (the ingress routes them
    /// to the sandbox's default proxy): list, bind, unbind.
    #[command(subcommand)]
    Domains(DomainsCmd),
    /// The ingress: `ca` prints Paddock's CA (PEM) for clients to trust,
    /// `info` where it listens.
    #[command(subcommand)]
    Ingress(IngressCmd),
    /// Open a shell in a sandbox (or run a command) through the SSH
    /// gateway: runs `ssh -p PORT ID@HOST [-- COMMAND]` with your ssh.
    Ssh {
        /// The sandbox's id or key.
        id: String,
        /// The gateway's address (`paddock serve --ssh-listen`).
        #[arg(long, default_value = "127.0.0.1:2222", env = "PADDOCK_SSH")]
        gateway: std::net::SocketAddr,
        /// Print the ssh command instead of running it.
        #[arg(long)]
        print: bool,
        /// Arguments for ssh before the destination (`-i KEY`, `-L ...`).
        #[arg(long = "ssh-arg", value_name = "ARG", allow_hyphen_values = true)]
        ssh_args: Vec<String>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy a running sandbox into new ones (and print their ids).
    Fork {
        id: String,
        /// How many copies (1-100).
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Keep the processes' memory too (backends that can).
        #[arg(long)]
        memory: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Make a token and print it (the only time it is shown).
    Create {
        /// How long it lives (`90s`, `1h`, `7d`; default a day, 30 days
        /// at most).
        #[arg(long, value_parser = duration_secs)]
        ttl: Option<u64>,
        /// It changes nothing: no exec, no writes, no lifecycle.
        #[arg(long)]
        read_only: bool,
        /// Only this sandbox (id or key; repeat for more): nothing else
        /// is seen, and no sandbox is made.
        #[arg(long = "sandbox", value_name = "ID")]
        sandboxes: Vec<String>,
    },
    /// Your standing tokens (never the tokens themselves).
    Ls,
    /// Revoke tokens by id (`jti`): refused from then on.
    Revoke { jtis: Vec<String> },
    /// A new signing key (the operator's); tokens already made stay valid.
    RotateKey,
}

#[derive(Subcommand, Debug)]
pub enum SshKeysCmd {
    Ls,
    /// Register a public key (`paddock ssh-keys add ~/.ssh/id_ed25519.pub`;
    /// `-` reads it from stdin) and print its id.
    Add {
        /// A `.pub` file, or `-`.
        file: String,
        /// Default: the key's comment, else its fingerprint.
        #[arg(long)]
        name: Option<String>,
        /// The one sandbox (id or key) the key opens; default: all yours.
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// Remove keys, by id or name.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProxiesCmd {
    /// The sandbox's proxies (by id or key) with their URLs.
    Ls { id: String },
    /// Publish a port under a name (`default`: `<box>.<zone>`; port 0 or
    /// none: the lowest port the sandbox listens on); prints the URL.
    Create {
        id: String,
        #[arg(default_value = "default")]
        name: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Point a proxy at another port (`default` is made when missing).
    SetPort { id: String, name: String, port: u16 },
    /// Remove proxies by name.
    Rm {
        id: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DomainsCmd {
    Ls,
    /// Bind a domain to a sandbox (id or key).
    Bind {
        domain: String,
        sandbox: String,
    },
    /// Unbind domains.
    Unbind {
        #[arg(required = true)]
        domains: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum IngressCmd {
    /// Paddock's CA certificate (PEM), which signs the ingress's
    /// certificates: `paddock ingress ca > ca.pem; curl --cacert ca.pem`.
    Ca,
    /// Where the ingress listens and its zone.
    Info,
}

#[derive(Subcommand, Debug)]
pub enum PoliciesCmd {
    /// The policies (all for the operator; those that apply to you else).
    Ls,
    /// Write a policy (the operator's call), replacing one of that name.
    Set {
        name: String,
        /// A principal it applies to (glob); repeatable.
        #[arg(long = "principal")]
        principals: Vec<String>,
        /// A group it applies to (glob); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A template creates may name (glob); repeatable. None: any.
        #[arg(long = "template")]
        templates: Vec<String>,
        #[arg(long)]
        max_sandboxes: Option<u32>,
        #[arg(long)]
        max_ttl_secs: Option<u64>,
        #[arg(long)]
        max_cpu: Option<f64>,
        #[arg(long)]
        max_memory_mb: Option<i64>,
        #[arg(long)]
        max_disk_mb: Option<i64>,
    },
    /// Remove policies written through the API.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumesCmd {
    /// Make a volume (and print its id).
    Create {
        name: String,
        /// MiB (16 to 1048576).
        #[arg(long)]
        size: u64,
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
    },
    Ls,
    /// By id or name.
    Inspect {
        id: String,
    },
    /// Delete volumes and their data (refused while mounted).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Mount a volume in a sandbox: `paddock volumes attach VOLUME ID --path /mnt/data`.
    Attach {
        volume: String,
        sandbox: String,
        #[arg(long)]
        path: String,
        #[arg(long)]
        read_only: bool,
    },
    /// Unmount a volume from a sandbox.
    Detach {
        volume: String,
        sandbox: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworksCmd {
    /// Make a private network (and print its id); `paddock create
    /// --network NAME` puts a sandbox on it.
    Create {
        /// Unique among yours (none: known by its id).
        #[arg(long)]
        name: Option<String>,
    },
    Ls,
    /// By id or name (`default`: your default network).
    Inspect {
        id: String,
    },
    /// Delete networks (refused while a sandbox is on one).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkspacesCmd {
    /// Make one: `paddock workspaces create dev --idle-hibernate 10m
    /// --wake-on-request --port 8000 -- python3 -m http.server 8000`. Its
    /// sandbox comes with `wake`, or a request to its proxy.
    Create {
        name: String,
        /// The snapshot (id or name) its first sandbox starts from.
        #[arg(long)]
        source: Option<String>,
        #[arg(long = "meta", value_name = "K=V")]
        metadata: Vec<String>,
        #[command(flatten)]
        spec: Box<SpecArgs>,
        /// The main process of its sandboxes.
        #[arg(last = true)]
        command: Vec<String>,
    },
    Ls,
    Inspect {
        name: String,
    },
    /// Snapshot its sandbox, then destroy it.
    Hibernate {
        name: String,
    },
    /// Give it a running sandbox (from its latest snapshot when it sleeps).
    Wake {
        name: String,
    },
    /// Delete workspaces and their sandboxes (their snapshots stay).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotsCmd {
    Ls,
    /// By id or name.
    Inspect {
        id: String,
    },
    /// Delete snapshots (by id or name); sandboxes started from them stay.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// What a sandbox (or a template's defaults) is made of.
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    cpu: Option<f64>,
    /// MiB
    #[arg(long, allow_negative_numbers = true)]
    memory: Option<i64>,
    /// MiB
    #[arg(long, allow_negative_numbers = true)]
    disk: Option<i64>,
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    #[arg(long)]
    cwd: Option<String>,
    /// Seconds until it is destroyed.
    #[arg(long)]
    ttl: Option<u64>,
    /// Seconds of inactivity until it is destroyed.
    #[arg(long, conflicts_with_all = ["idle_hibernate", "idle_suspend"])]
    idle_timeout: Option<u64>,
    /// Inactivity (`90s`, `10m`, `2h`) after which it is hibernated:
    /// stopped, its files kept, until `start` or (with
    /// `--wake-on-request`) a request to one of its ports.
    #[arg(long, value_name = "DURATION", value_parser = duration_secs,
          conflicts_with = "idle_suspend")]
    idle_hibernate: Option<u64>,
    /// Inactivity (no calls and no traffic on its network) after which it
    /// is suspended: paused, its memory kept, until `resume` or (with
    /// `--wake-on-request`) a request to one of its ports.
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    idle_suspend: Option<u64>,
    /// Start the main process again whenever it exits (`always`), or
    /// leave the sandbox running without it (`never`, the default).
    #[arg(long, value_name = "POLICY", value_parser = ["always", "never"])]
    restart: Option<String>,
    /// Started again by a request to one of its ports through the
    /// proxy when it is stopped, the request held until the port answers.
    #[arg(long)]
    wake_on_request: bool,
    /// A shell script run once when it first boots, before the create
    /// answers.
    #[arg(long, value_name = "SCRIPT")]
    bootstrap: Option<String>,
    /// CPU cores reserved under contention (at most --cpu).
    #[arg(long)]
    cpu_request: Option<f64>,
    /// Memory (MiB) kept from reclaim (at most --memory).
    #[arg(long)]
    memory_request: Option<i64>,
    #[arg(long = "port")]
    ports: Vec<u16>,
    #[arg(long)]
    isolation: Option<String>,
    /// Start from this snapshot (its id or name): its files, and its
    /// settings for what the flags leave out.
    #[arg(long)]
    snapshot: Option<String>,
    /// Mount a volume: `NAME:/path[:ro]` (repeatable).
    #[arg(long = "volume", short = 'v', value_name = "NAME:PATH[:ro]")]
    volumes: Vec<String>,
    /// Join a private network of yours (its id or name, or `default`):
    /// its sandboxes reach each other by address and by name. Without
    /// it: isolated.
    #[arg(long)]
    network: Option<String>,
}

/// Seconds in `90`, `90s`, `10m`, `2h` or `1d`.
fn duration_secs(v: &str) -> std::result::Result<u64, String> {
    let (n, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{v:?}: a number with s, m, h or d (10m)")),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{v:?}: a positive number with s, m, h or d (10m)"))
}

/// `NAME:/path[:ro]`.
fn volume_arg(v: &str) -> Result<w::VolumeRequest> {
    let parts: Vec<&str> = v.split(':').collect();
    let (name, path, read_only) = match parts.as_slice() {
        [n, p] => (n, p, false),
        [n, p, "ro"] => (n, p, true),
        [n, p, "rw"] => (n, p, false),
        _ => bail!("--volume {v:?}: NAME:/path or NAME:/path:ro"),
    };
    Ok(w::VolumeRequest {
        name: name.to_string(),
        path: path.to_string(),
        read_only,
    })
}

impl SpecArgs {
    /// The spec, with only what was given.
    fn to_spec(&self, command: &[String]) -> Result<w::SandboxSpec> {
        let isolation =
            match &self.isolation {
                Some(i) => Some(serde_json::from_value::<w::Isolation>(json!(i)).map_err(
                    |_| anyhow::anyhow!("--isolation {i:?}: container, gvisor or microvm"),
                )?),
                None => None,
            };
        Ok(w::SandboxSpec {
            image: self.image.clone(),
            cpu: self.cpu,
            memory_mb: self.memory,
            disk_mb: self.disk,
            cwd: self.cwd.clone(),
            ttl_secs: self.ttl,
            idle_timeout_secs: self
                .idle_timeout
                .or(self.idle_hibernate)
                .or(self.idle_suspend),
            on_idle: match (self.idle_hibernate, self.idle_suspend) {
                (Some(_), _) => Some(w::IdleAction::Hibernate),
                (_, Some(_)) => Some(w::IdleAction::Suspend),
                _ => None,
            },
            restart: self.restart.as_deref().map(|r| match r {
                "always" => w::RestartPolicy::Always,
                _ => w::RestartPolicy::Never,
            }),
            wake_on_request: self.wake_on_request,
            bootstrap: self.bootstrap.clone(),
            cpu_request: self.cpu_request,
            memory_request_mb: self.memory_request,
            isolation,
            labels: kv(&self.labels, "label")?,
            env: kv(&self.env, "env")?,
            ports: self.ports.clone(),
            command: (!command.is_empty()).then(|| command.to_vec()),
            from_snapshot: self.snapshot.clone(),
            volumes: self
                .volumes
                .iter()
                .map(|v| volume_arg(v))
                .collect::<Result<_>>()?,
            network: self.network.clone(),
            ..Default::default()
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TemplatesCmd {
    /// Store a template (its image is pulled now).
    Create {
        name: String,
        #[command(flatten)]
        spec: Box<SpecArgs>,
        /// The main process of sandboxes made from it.
        #[arg(last = true)]
        command: Vec<String>,
    },
    Ls,
    Inspect {
        name: String,
    },
    /// Delete a template (sandboxes made from it stay).
    Rm {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    Ls,
    /// Pull an image into the daemon's cache.
    Pull {
        reference: String,
    },
    Inspect {
        reference: String,
    },
    /// Forget an image (its layers stay until a prune).
    Rm {
        reference: String,
    },
    /// Remove cached layers that no image and no sandbox needs.
    Prune,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key; the token is shown once.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
        /// Who the key acts as (sandboxes belong to their principal).
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    Ls {
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Revoke a key by id or name.
    Revoke {
        key: String,
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
}

pub fn keys(cmd: KeysCmd, json_out: bool) -> Result<()> {
    let open = |d: &PathBuf| -> Result<paddock_core::store::Store> {
        std::fs::create_dir_all(d)?;
        Ok(paddock_core::store::Store::open(&d.join("paddock.db"))?)
    };
    match cmd {
        KeysCmd::Create {
            name,
            principal,
            data_dir,
        } => {
            let store = open(&data_dir)?;
            let (id, token) = paddock_core::auth::new_token();
            let principal = principal.unwrap_or_else(|| name.clone());
            if principal.starts_with("paddock:") {
                anyhow::bail!("principal {principal:?}: names starting with paddock: are reserved");
            }
            store.insert_key(
                &id,
                &name,
                &principal,
                &paddock_core::auth::hash_token(&token),
            )?;
            if json_out {
                println!(
                    "{}",
                    json!({"id": id, "name": name, "principal": principal, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!("key {id} ({name}) acts as {principal:?}; the token is not shown again");
            }
        }
        KeysCmd::Ls { data_dir } => {
            let keys = open(&data_dir)?.list_keys()?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let mut t = table(&["ID", "NAME", "PRINCIPAL", "CREATED", "REVOKED"]);
                for k in keys {
                    t.add_row(vec![
                        k.id,
                        k.name,
                        k.principal,
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
        }
        KeysCmd::Revoke { key, data_dir } => {
            if !open(&data_dir)?.revoke_key(&key)? {
                bail!("no active key {key:?}");
            }
            eprintln!("revoked {key}");
        }
    }
    Ok(())
}

fn table(headers: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(headers.to_vec());
    t
}

fn kv(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {s:?}: use K=V"))
        })
        .collect()
}

/// Where the CLI reaches the daemon: `--host` (or `PADDOCK_HOST`) if
/// given (`unix:///PATH` for a socket); else the daemon's unix socket if
/// it exists and we may open it (`PADDOCK_SOCKET`, default
/// /run/paddock.sock), as docker does; else the default TCP listener.
pub fn endpoint(host: Option<String>) -> Endpoint {
    match host {
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) => Endpoint::Socket(PathBuf::from(p)),
            None => Endpoint::Url(h.trim_end_matches('/').to_string()),
        },
        None => {
            let sock = std::env::var_os("PADDOCK_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(crate::serve::DEFAULT_SOCKET));
            use nix::unistd::{access, AccessFlags};
            match access(&sock, AccessFlags::R_OK | AccessFlags::W_OK) {
                Ok(()) => Endpoint::Socket(sock),
                Err(_) => Endpoint::Url("http://127.0.0.1:7070".into()),
            }
        }
    }
}

/// The client commands, over `paddock_client`.
pub struct Client {
    api: paddock_client::Client,
    json: bool,
}

/// Prints a value as pretty JSON.
fn pretty<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

impl Client {
    pub fn new(host: Endpoint, key: Option<String>, json: bool) -> Client {
        Client {
            api: paddock_client::Client::new(host, key),
            json,
        }
    }

    /// Pulls through the streaming form of `POST /images`, drawing a
    /// progress bar on stderr (when it is a terminal); returns the image.
    async fn pull_with_progress(&self, reference: &str) -> Result<w::ImageInfo> {
        let stream = self.api.pull_stream(reference).await?;
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("resolving {reference}"));
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(PullEvent::Progress(p)) => {
                    bar.set_length(p.total);
                    bar.set_position(p.current);
                    let layer: String = p
                        .layer
                        .as_deref()
                        .map(|l| l.trim_start_matches("sha256:").chars().take(12).collect())
                        .unwrap_or_default();
                    bar.set_message(format!("{} {layer}", p.status));
                }
                Ok(PullEvent::Pulled(info)) => {
                    bar.finish_and_clear();
                    return Ok(info);
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e.into());
                }
            }
        }
        bar.abandon();
        bail!("the daemon closed the pull stream without a result")
    }

    /// `f` of each id, its id printed when done (not under --json), its
    /// error said otherwise; whether all went well.
    async fn each<'a, F, Fut>(&self, ids: &'a [String], f: F) -> bool
    where
        F: Fn(&'a str) -> Fut,
        Fut: std::future::Future<Output = paddock_client::Result<()>>,
    {
        let mut ok = true;
        for id in ids {
            match f(id).await {
                Ok(()) if !self.json => println!("{id}"),
                Ok(()) => {}
                Err(e) => {
                    eprintln!("{id}: {e}");
                    ok = false;
                }
            }
        }
        ok
    }

    fn print_sandboxes(&self, list: &[w::Sandbox]) {
        let mut t = table(&["ID", "STATE", "KEY", "IMAGE", "CPU", "MEMORY", "CREATED"]);
        for s in list {
            t.add_row(vec![
                s.id.to_string(),
                s.state.to_string(),
                s.key.clone().unwrap_or_default(),
                s.config.image.clone().unwrap_or_else(|| "(host)".into()),
                s.config.cpu.to_string(),
                format!("{} MiB", s.config.memory_mb),
                s.created_at.to_rfc3339(),
            ]);
        }
        println!("{t}");
    }

    pub async fn run(&self, cmd: ClientCmd) -> Result<i32> {
        match cmd {
            ClientCmd::Create {
                key,
                template,
                spec,
                command,
            } => {
                let mut spec = spec.to_spec(&command)?;
                spec.key = key;
                spec.template = template;
                let (sb, _) = self.api.create(&spec).await?;
                if self.json {
                    pretty(&sb)?;
                } else {
                    println!("{}", sb.id);
                }
            }
            ClientCmd::Ls { state, labels } => {
                let state = match state {
                    Some(s) => {
                        Some(serde_json::from_value::<w::State>(json!(s)).map_err(|_| {
                            anyhow::anyhow!(
                            "--state {s:?}: creating, running, paused, stopped, error or destroyed"
                        )
                        })?)
                    }
                    None => None,
                };
                let filter = ListFilter {
                    state,
                    labels: kv(&labels, "label")?.into_iter().collect(),
                    limit: Some(1000),
                    ..Default::default()
                };
                let v = self.api.list(&filter).await?;
                if self.json {
                    pretty(&v.sandboxes)?;
                } else {
                    self.print_sandboxes(&v.sandboxes);
                }
            }
            ClientCmd::Inspect { id } => pretty(&self.api.get(&id).await?)?,
            ClientCmd::Rm { ids } => {
                let mut failed = 0;
                for id in ids {
                    match self.api.destroy(&id).await {
                        Ok(_) => println!("{id}"),
                        Err(e) => {
                            eprintln!("paddock: {id}: {e}");
                            failed += 1;
                        }
                    }
                }
                return Ok(if failed > 0 { 1 } else { 0 });
            }
            ClientCmd::Stop { id } => self.lifecycle(&id, Verb::Stop).await?,
            ClientCmd::Start { id } => self.lifecycle(&id, Verb::Start).await?,
            ClientCmd::Pause { id } => self.lifecycle(&id, Verb::Pause).await?,
            ClientCmd::Resume { id } => self.lifecycle(&id, Verb::Resume).await?,
            ClientCmd::Exec {
                id,
                env,
                cwd,
                user,
                timeout,
                tty,
                command,
            } => {
                let req = w::ExecRequest {
                    env: kv(&env, "env")?,
                    cwd,
                    user,
                    timeout,
                    ..w::ExecRequest::cmd(command)
                };
                return self.interactive(&id, req, tty).await;
            }
            ClientCmd::Shell { id, shell } => {
                let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
                let req = w::ExecRequest {
                    env: [("TERM".to_string(), term)].into(),
                    ..w::ExecRequest::cmd([shell, "-l".into()])
                };
                return self.interactive(&id, req, true).await;
            }
            ClientCmd::Cp { src, dst } => self.cp(&src, &dst).await?,
            ClientCmd::Logs { id, follow } => {
                let mut resp = self.api.logs(&id, 0, follow).await?;
                let mut out = std::io::stdout();
                while let Some(chunk) = resp.chunk().await? {
                    out.write_all(&chunk)?;
                    out.flush()?;
                }
            }
            ClientCmd::Events { id, after, limit } => {
                let stream = self.api.events(id.as_deref(), after).await?;
                let mut stream = std::pin::pin!(stream);
                let mut seen = 0usize;
                while let Some(ev) = stream.next().await {
                    let ev = ev?;
                    if self.json {
                        println!("{}", serde_json::to_string(&ev)?);
                    } else {
                        println!(
                            "{:>6} {} {} {:<18} {}",
                            if id.is_some() { ev.id } else { ev.seq },
                            ev.time.to_rfc3339(),
                            ev.sandbox_id,
                            ev.kind,
                            ev.data
                        );
                    }
                    std::io::stdout().flush()?;
                    seen += 1;
                    if limit.is_some_and(|l| seen >= l) {
                        return Ok(0);
                    }
                }
            }
            ClientCmd::Metrics { id } => {
                let m = self.api.metrics(&id).await?;
                if self.json {
                    pretty(&m)?;
                } else {
                    let mut t = table(&["METRIC", "VALUE"]);
                    if let serde_json::Value::Object(o) = serde_json::to_value(&m)? {
                        for (k, val) in o {
                            t.add_row(vec![k, val.to_string()]);
                        }
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Templates(TemplatesCmd::Create {
                name,
                spec,
                command,
            }) => {
                let t = self
                    .api
                    .create_template(&name, &spec.to_spec(&command)?, 0)
                    .await?;
                if self.json {
                    pretty(&t)?;
                } else {
                    println!("{}", t.name);
                }
            }
            ClientCmd::Templates(TemplatesCmd::Ls) => {
                let v = self.api.templates().await?;
                if self.json {
                    pretty(&v.templates)?;
                } else {
                    let mut t = table(&["NAME", "IMAGE", "CPU", "MEMORY", "CREATED"]);
                    for i in v.templates {
                        let d = &i.defaults;
                        let or = |v: Option<String>, dflt: &str| v.unwrap_or_else(|| dflt.into());
                        t.add_row(vec![
                            i.name.clone(),
                            or(d.image.clone(), "(host)"),
                            or(d.cpu.map(|c| c.to_string()), "-"),
                            or(d.memory_mb.map(|m| m.to_string()), "-"),
                            i.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Templates(TemplatesCmd::Inspect { name }) => {
                pretty(&self.api.template(&name).await?)?
            }
            ClientCmd::Templates(TemplatesCmd::Rm { name }) => {
                self.api.delete_template(&name).await?;
                if !self.json {
                    println!("{name}");
                }
            }
            ClientCmd::Snapshot {
                id,
                name,
                labels,
                memory,
            } => {
                let req = w::SnapshotRequest {
                    name,
                    labels: kv(&labels, "label")?,
                    memory,
                };
                let sn = self.api.snapshot(&id, &req).await?;
                if self.json {
                    pretty(&sn)?;
                } else {
                    println!("{}", sn.id);
                }
            }
            ClientCmd::Audit {
                sandbox,
                action,
                principal,
                limit,
            } => {
                let mut q = vec![("limit", limit.to_string())];
                for (k, v) in [
                    ("sandbox", sandbox),
                    ("action", action),
                    ("principal", principal),
                ] {
                    if let Some(v) = v {
                        q.push((k, v));
                    }
                }
                let v = self.api.audit(&q).await?;
                if self.json {
                    pretty(&v.records)?;
                } else {
                    let mut t =
                        table(&["TIME", "PRINCIPAL", "VIA", "ACTION", "SANDBOX", "OUTCOME"]);
                    for r in v.records {
                        t.add_row(vec![
                            r.at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                            r.principal,
                            r.via,
                            r.action,
                            r.sandbox.map(|s| s.to_string()).unwrap_or_default(),
                            match r.error {
                                Some(e) => format!(
                                    "{}: {}",
                                    r.outcome,
                                    e.chars().take(80).collect::<String>()
                                ),
                                None => r.outcome,
                            },
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Usage => {
                let u = self.api.usage().await?;
                if self.json {
                    pretty(&u)?;
                } else {
                    println!("sandboxes: {}", u.total);
                    for (k, n) in &u.by_state {
                        println!("  {k}: {n}");
                    }
                    println!(
                        "mean create: {} ms over {}",
                        u.avg_startup_ms, u.startup_samples
                    );
                }
            }
            ClientCmd::Policies(PoliciesCmd::Ls) => {
                let v = self.api.policies().await?;
                if self.json {
                    pretty(&v.policies)?;
                } else {
                    let mut t = table(&["NAME", "SOURCE", "APPLIES TO", "RULES"]);
                    for x in v.policies {
                        let mut who: Vec<String> = x.principals.clone();
                        who.extend(x.groups.iter().map(|g| format!("group:{g}")));
                        let mut rules = Vec::new();
                        if let Some(ts) = &x.templates {
                            rules.push(format!("templates={}", ts.join(",")));
                        }
                        for (k, v) in [
                            ("max_sandboxes", x.max_sandboxes.map(|v| v.to_string())),
                            ("max_ttl_secs", x.max_ttl_secs.map(|v| v.to_string())),
                            ("max_cpu", x.max_cpu.map(|v| v.to_string())),
                            ("max_memory_mb", x.max_memory_mb.map(|v| v.to_string())),
                            ("max_disk_mb", x.max_disk_mb.map(|v| v.to_string())),
                        ] {
                            if let Some(v) = v {
                                rules.push(format!("{k}={v}"));
                            }
                        }
                        t.add_row(vec![
                            x.name,
                            x.source.unwrap_or_default(),
                            who.join(" "),
                            rules.join(" "),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Policies(PoliciesCmd::Set {
                name,
                principals,
                groups,
                templates,
                max_sandboxes,
                max_ttl_secs,
                max_cpu,
                max_memory_mb,
                max_disk_mb,
            }) => {
                let x = self
                    .api
                    .put_policy(&w::Policy {
                        name,
                        principals,
                        groups,
                        templates: (!templates.is_empty()).then_some(templates),
                        max_sandboxes,
                        max_ttl_secs,
                        max_cpu,
                        max_memory_mb,
                        max_disk_mb,
                        source: None,
                    })
                    .await?;
                if self.json {
                    pretty(&x)?;
                } else {
                    println!("{}", x.name);
                }
            }
            ClientCmd::SshKeys(SshKeysCmd::Ls) => {
                let v = self.api.ssh_keys().await?;
                if self.json {
                    pretty(&v.ssh_keys)?;
                } else {
                    let mut t = table(&["ID", "NAME", "FINGERPRINT", "SANDBOX", "CREATED"]);
                    for k in v.ssh_keys {
                        t.add_row(vec![
                            k.id.to_string(),
                            k.name,
                            k.fingerprint,
                            k.sandbox.map_or_else(|| "(all)".into(), |s| s.to_string()),
                            k.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::SshKeys(SshKeysCmd::Add {
                file,
                name,
                sandbox,
            }) => {
                let public_key = if file == "-" {
                    let mut s = String::new();
                    tokio::io::stdin().read_to_string(&mut s).await?;
                    s
                } else {
                    std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?
                };
                let sandbox = match sandbox {
                    Some(s) => Some(self.api.get(&s).await?.id),
                    None => None,
                };
                let k = self
                    .api
                    .add_ssh_key(&w::SshKeyCreate {
                        name,
                        public_key,
                        sandbox,
                    })
                    .await?;
                if self.json {
                    pretty(&k)?;
                } else {
                    println!("{}", k.id);
                }
            }
            ClientCmd::Tokens(TokensCmd::Create {
                ttl,
                read_only,
                sandboxes,
            }) => {
                let mut ids = Vec::new();
                for s in &sandboxes {
                    ids.push(self.api.get(s).await?.id);
                }
                let t = self
                    .api
                    .create_token(&w::TokenCreate {
                        ttl_secs: ttl.unwrap_or(0),
                        read_only,
                        sandboxes: (!ids.is_empty()).then_some(ids),
                    })
                    .await?;
                if self.json {
                    pretty(&t)?;
                } else {
                    println!("{}", t.token);
                    eprintln!(
                        "token {} expires {}",
                        t.info.jti,
                        t.info.expires_at.to_rfc3339()
                    );
                }
            }
            ClientCmd::Tokens(TokensCmd::Ls) => {
                let v = self.api.tokens().await?;
                if self.json {
                    pretty(&v.tokens)?;
                } else {
                    let mut t = table(&["JTI", "SCOPE", "CREATED", "EXPIRES"]);
                    for k in v.tokens {
                        let mut scope = Vec::new();
                        if k.scope.read_only {
                            scope.push("read-only".to_string());
                        }
                        if let Some(s) = &k.scope.sandboxes {
                            scope.push(format!("{} sandboxes", s.len()));
                        }
                        t.add_row(vec![
                            k.jti,
                            if scope.is_empty() {
                                "(all)".into()
                            } else {
                                scope.join(", ")
                            },
                            k.created_at.to_rfc3339(),
                            k.expires_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Proxies(ProxiesCmd::Ls { id }) => {
                let sb = self.api.get(&id).await?;
                let v = self.api.proxies(&sb.id.to_string()).await?;
                if self.json {
                    pretty(&v.proxies)?;
                } else {
                    let mut t = table(&["NAME", "PORT", "URL", "CREATED"]);
                    for p in v.proxies {
                        t.add_row(vec![
                            p.name,
                            match p.port {
                                0 => "auto".into(),
                                n => n.to_string(),
                            },
                            p.url.unwrap_or_else(|| "(ingress off)".into()),
                            p.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Tokens(TokensCmd::Revoke { jtis }) => {
                if !self.each(&jtis, |n| self.api.revoke_token(n)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Tokens(TokensCmd::RotateKey) => {
                let k = self.api.rotate_token_key().await?;
                if self.json {
                    pretty(&k)?;
                } else {
                    println!("{}", k.kid);
                }
            }
            ClientCmd::Proxies(ProxiesCmd::Create { id, name, port }) => {
                let sb = self.api.get(&id).await?;
                let p = self
                    .api
                    .create_proxy(&sb.id.to_string(), &name, port)
                    .await?;
                if self.json {
                    pretty(&p)?;
                } else {
                    println!("{}", p.url.unwrap_or(p.name));
                }
            }
            ClientCmd::Proxies(ProxiesCmd::SetPort { id, name, port }) => {
                let sb = self.api.get(&id).await?;
                let p = self
                    .api
                    .set_proxy_port(&sb.id.to_string(), &name, port)
                    .await?;
                if self.json {
                    pretty(&p)?;
                } else {
                    println!("{}", p.url.unwrap_or(p.name));
                }
            }
            ClientCmd::Proxies(ProxiesCmd::Rm { id, names }) => {
                let sb = self.api.get(&id).await?.id.to_string();
                if !self.each(&names, |n| self.api.delete_proxy(&sb, n)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Domains(DomainsCmd::Ls) => {
                let v = self.api.domains().await?;
                if self.json {
                    pretty(&v.domains)?;
                } else {
                    let mut t = table(&["DOMAIN", "SANDBOX", "CREATED"]);
                    for d in v.domains {
                        t.add_row(vec![
                            d.domain,
                            d.sandbox.to_string(),
                            d.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Domains(DomainsCmd::Bind { domain, sandbox }) => {
                let sb = self.api.get(&sandbox).await?;
                let d = self.api.bind_domain(&domain, sb.id).await?;
                if self.json {
                    pretty(&d)?;
                } else {
                    println!("{}", d.domain);
                }
            }
            ClientCmd::Domains(DomainsCmd::Unbind { domains }) => {
                if !self.each(&domains, |d| self.api.unbind_domain(d)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Ingress(cmd) => {
                let i = self.api.ingress().await?;
                match cmd {
                    _ if self.json => pretty(&i)?,
                    IngressCmd::Ca => match i.ca_pem {
                        Some(pem) => print!("{pem}"),
                        None => {
                            eprintln!("the ingress is off, or serves the operator's certificate");
                            return Ok(1);
                        }
                    },
                    IngressCmd::Info => match (i.enabled, i.zone, i.port, i.scheme) {
                        (true, Some(z), Some(p), Some(s)) => {
                            println!("zone {z}, {s} on port {p}")
                        }
                        _ => println!("the ingress is off"),
                    },
                }
            }
            ClientCmd::SshKeys(SshKeysCmd::Rm { ids }) => {
                if !self.each(&ids, |n| self.api.delete_ssh_key(n)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Ssh {
                id,
                gateway,
                print,
                ssh_args,
                command,
            } => {
                let sb = self.api.get(&id).await?;
                let mut argv = vec!["ssh".to_string()];
                if gateway.port() != 22 {
                    argv.extend(["-p".to_string(), gateway.port().to_string()]);
                }
                argv.extend(ssh_args);
                argv.push(format!("{}@{}", sb.id, gateway.ip()));
                if !command.is_empty() {
                    argv.push("--".into());
                    argv.extend(command);
                }
                if print {
                    println!("{}", argv.join(" "));
                } else {
                    let status = std::process::Command::new(&argv[0])
                        .args(&argv[1..])
                        .status()
                        .context("run ssh")?;
                    return Ok(status.code().unwrap_or(255));
                }
            }
            ClientCmd::Policies(PoliciesCmd::Rm { names }) => {
                if !self.each(&names, |n| self.api.delete_policy(n)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Snapshots(SnapshotsCmd::Ls) => {
                let v = self.api.snapshots().await?;
                if self.json {
                    pretty(&v.snapshots)?;
                } else {
                    let mut t = table(&["ID", "NAME", "SANDBOX", "IMAGE", "SIZE", "CREATED"]);
                    for sn in v.snapshots {
                        t.add_row(vec![
                            sn.id.to_string(),
                            sn.name.clone().unwrap_or_default(),
                            sn.sandbox_id.to_string(),
                            sn.config.image.clone().unwrap_or_else(|| "(host)".into()),
                            human_bytes(sn.size_bytes),
                            sn.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Snapshots(SnapshotsCmd::Inspect { id }) => {
                pretty(&self.api.get_snapshot(&id).await?)?
            }
            ClientCmd::Snapshots(SnapshotsCmd::Rm { ids }) => {
                if !self.each(&ids, |id| self.api.delete_snapshot(id)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Volumes(VolumesCmd::Create { name, size, labels }) => {
                let v = self
                    .api
                    .create_volume(&w::VolumeCreate {
                        name,
                        size_mb: size,
                        labels: kv(&labels, "label")?,
                    })
                    .await?;
                if self.json {
                    pretty(&v)?;
                } else {
                    println!("{}", v.id);
                }
            }
            ClientCmd::Volumes(VolumesCmd::Ls) => {
                let v = self.api.volumes().await?;
                if self.json {
                    pretty(&v.volumes)?;
                } else {
                    let mut t = table(&["ID", "NAME", "SIZE", "USED", "ATTACHED", "CREATED"]);
                    for vol in v.volumes {
                        let attached: Vec<String> = vol
                            .attached
                            .iter()
                            .map(|h| {
                                let mode = if h.read_only { "ro" } else { "rw" };
                                format!("{}:{}:{mode}", h.sandbox_id, h.path)
                            })
                            .collect();
                        t.add_row(vec![
                            vol.id.to_string(),
                            vol.name.clone(),
                            format!("{} MiB", vol.size_mb),
                            vol.used_bytes.map(human_bytes).unwrap_or_default(),
                            attached.join(", "),
                            vol.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Volumes(VolumesCmd::Inspect { id }) => pretty(&self.api.volume(&id).await?)?,
            ClientCmd::Volumes(VolumesCmd::Rm { ids }) => {
                if !self.each(&ids, |id| self.api.delete_volume(id)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Volumes(VolumesCmd::Attach {
                volume,
                sandbox,
                path,
                read_only,
            }) => {
                let sb = self
                    .api
                    .attach_volume(
                        &sandbox,
                        &w::VolumeRequest {
                            name: volume,
                            path,
                            read_only,
                        },
                    )
                    .await?;
                if self.json {
                    pretty(&sb)?;
                }
            }
            ClientCmd::Volumes(VolumesCmd::Detach { volume, sandbox }) => {
                let sb = self.api.detach_volume(&sandbox, &volume).await?;
                if self.json {
                    pretty(&sb)?;
                }
            }
            ClientCmd::Networks(NetworksCmd::Create { name }) => {
                let n = self.api.create_network(&w::NetworkCreate { name }).await?;
                if self.json {
                    pretty(&n)?;
                } else {
                    println!("{}", n.id);
                }
            }
            ClientCmd::Networks(NetworksCmd::Ls) => {
                let v = self.api.networks().await?;
                if self.json {
                    pretty(&v.networks)?;
                } else {
                    let mut t = table(&["ID", "NAME", "SUBNET", "STATUS", "CREATED"]);
                    for n in v.networks {
                        let name = match (&n.name, n.is_default) {
                            (Some(name), _) => name.clone(),
                            (None, true) => "(default)".into(),
                            (None, false) => String::new(),
                        };
                        t.add_row(vec![
                            n.id.clone(),
                            name,
                            n.subnet.clone(),
                            n.status.clone(),
                            n.created_at.to_rfc3339(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Networks(NetworksCmd::Inspect { id }) => {
                pretty(&self.api.network(&id).await?)?
            }
            ClientCmd::Networks(NetworksCmd::Rm { ids }) => {
                if !self.each(&ids, |id| self.api.delete_network(id)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Workspaces(WorkspacesCmd::Create {
                name,
                source,
                metadata,
                spec,
                command,
            }) => {
                let spec = spec.to_spec(&command)?;
                let req = w::WorkspaceCreate {
                    name,
                    source,
                    on_idle: spec.on_idle.unwrap_or_default(),
                    wake_on_request: spec.wake_on_request,
                    metadata: kv(&metadata, "meta")?,
                    spec,
                };
                let ws = self.api.create_workspace(&req).await?;
                if self.json {
                    pretty(&ws)?;
                } else {
                    println!("{}", ws.name);
                }
            }
            ClientCmd::Workspaces(WorkspacesCmd::Ls) => {
                let v = self.api.workspaces().await?;
                if self.json {
                    pretty(&v.workspaces)?;
                } else {
                    let mut t = table(&["NAME", "SANDBOX", "LATEST SNAPSHOT", "ON IDLE", "WAKE"]);
                    for ws in v.workspaces {
                        t.add_row(vec![
                            ws.name.clone(),
                            ws.sandbox.map_or("-".into(), |s| s.to_string()),
                            ws.latest_snapshot.map_or("-".into(), |s| s.to_string()),
                            format!("{:?}", ws.on_idle).to_lowercase(),
                            if ws.wake_on_request {
                                "on request"
                            } else {
                                "manual"
                            }
                            .into(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Workspaces(WorkspacesCmd::Inspect { name }) => {
                pretty(&self.api.workspace(&name).await?)?
            }
            ClientCmd::Workspaces(WorkspacesCmd::Hibernate { name }) => {
                let ws = self.api.hibernate_workspace(&name).await?;
                if self.json {
                    pretty(&ws)?;
                } else {
                    println!(
                        "{}",
                        ws.latest_snapshot.map_or("-".into(), |s| s.to_string())
                    );
                }
            }
            ClientCmd::Workspaces(WorkspacesCmd::Wake { name }) => {
                let ws = self.api.wake_workspace(&name).await?;
                if self.json {
                    pretty(&ws)?;
                } else {
                    println!("{}", ws.sandbox.map_or("-".into(), |s| s.to_string()));
                }
            }
            ClientCmd::Workspaces(WorkspacesCmd::Rm { names }) => {
                if !self.each(&names, |n| self.api.delete_workspace(n)).await {
                    return Ok(1);
                }
            }
            ClientCmd::Fork { id, count, memory } => {
                let v = self
                    .api
                    .fork(&id, &w::ForkRequest { count, memory })
                    .await?;
                if self.json {
                    pretty(&v.sandboxes)?;
                } else {
                    for sb in v.sandboxes {
                        println!("{}", sb.id);
                    }
                }
            }
            ClientCmd::Backends => {
                let v = self.api.backends().await?;
                if self.json {
                    pretty(&v.backends)?;
                } else {
                    let mut t = table(&["NAME", "ISOLATION", "DEFAULT", "CAN"]);
                    for b in v.backends {
                        let c = b.capabilities;
                        let can: Vec<&str> = [
                            (c.pause, "pause"),
                            (c.fs_snapshot, "fs snapshot"),
                            (c.memory_snapshot, "memory snapshot"),
                            (c.fork, "fork"),
                            (c.shares_host_kernel, "shares host kernel"),
                            (c.fd_handover, "fd handover"),
                        ]
                        .into_iter()
                        .filter_map(|(yes, what)| yes.then_some(what))
                        .collect();
                        t.add_row(vec![
                            b.name,
                            serde_json::to_value(b.isolation)?
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            if b.default { "yes" } else { "" }.to_string(),
                            can.join(", "),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Images(ImagesCmd::Ls) => {
                let v = self.api.images().await?;
                if self.json {
                    pretty(&v.images)?;
                } else {
                    let mut t = table(&["REFERENCE", "DIGEST", "LAYERS", "SIZE"]);
                    for i in v.images {
                        t.add_row(vec![
                            i.reference,
                            i.digest.chars().take(19).collect(),
                            i.layers.to_string(),
                            format!("{:.1} MB", i.size as f64 / 1e6),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Images(ImagesCmd::Pull { reference }) => {
                let v = self.pull_with_progress(&reference).await?;
                if self.json {
                    pretty(&v)?;
                } else {
                    println!("{} {}", v.reference, v.digest);
                }
            }
            ClientCmd::Images(ImagesCmd::Inspect { reference }) => {
                pretty(&self.api.inspect_image(&reference).await?)?
            }
            ClientCmd::Images(ImagesCmd::Rm { reference }) => {
                self.api.remove_image(&reference).await?;
                println!("{reference}");
            }
            ClientCmd::Images(ImagesCmd::Prune) => {
                let v = self.api.prune_images().await?;
                if self.json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!("removed {} layers", v.removed_layers);
                }
            }
            ClientCmd::Ports { id } => {
                let v = self.api.ports(&id).await?;
                if self.json {
                    pretty(&v.ports)?;
                } else {
                    let mut t = table(&["PORT", "ADDRESS", "LISTENING", "DECLARED"]);
                    for p in v.ports {
                        t.add_row(vec![
                            p.port.to_string(),
                            p.address,
                            p.listening.to_string(),
                            p.declared.to_string(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        Ok(0)
    }

    async fn lifecycle(&self, id: &str, verb: Verb) -> Result<()> {
        let sb = self.api.lifecycle(id, verb).await?;
        if self.json {
            pretty(&sb)?;
        } else {
            println!("{} {}", sb.id, sb.state);
        }
        Ok(())
    }

    async fn cp(&self, src: &str, dst: &str) -> Result<()> {
        let remote = |s: &str| -> Option<(String, String)> {
            let (id, path) = s.split_once(':')?;
            (!id.is_empty() && path.starts_with('/')).then(|| (id.to_string(), path.to_string()))
        };
        match (remote(src), remote(dst)) {
            (None, Some((id, path))) => {
                let f = tokio::fs::File::open(src)
                    .await
                    .with_context(|| format!("open {src}"))?;
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    f.metadata().await?.permissions().mode() & 0o7777
                };
                let body = reqwest::Body::wrap_stream(file_stream(f));
                let opts = Upload {
                    mode: Some(mode),
                    ..Default::default()
                };
                let info = self.api.upload(&id, &path, &opts, body).await?;
                if self.json {
                    println!("{}", serde_json::to_string(&info)?);
                }
            }
            (Some((id, path)), None) => {
                let mut resp = self.api.download(&id, &path).await?;
                let mut f: Box<dyn Write> = if dst == "-" {
                    Box::new(std::io::stdout())
                } else {
                    let target = if std::path::Path::new(dst).is_dir() {
                        std::path::Path::new(dst)
                            .join(std::path::Path::new(&path).file_name().unwrap_or_default())
                    } else {
                        PathBuf::from(dst)
                    };
                    Box::new(
                        std::fs::File::create(&target)
                            .with_context(|| format!("create {}", target.display()))?,
                    )
                };
                while let Some(chunk) = resp.chunk().await? {
                    f.write_all(&chunk)?;
                }
                f.flush()?;
            }
            _ => bail!("give exactly one side as ID:/absolute/path"),
        }
        Ok(())
    }

    /// Runs a command over the WebSocket exec: output to our stdout and
    /// stderr, our stdin to it, and (with a terminal) raw mode and resizes.
    async fn interactive(&self, id: &str, mut req: w::ExecRequest, tty: bool) -> Result<i32> {
        let ws = self.api.exec_socket(id).await?;
        let (mut sink, mut stream) = ws.split();
        let raw = tty && crossterm::tty::IsTty::is_tty(&std::io::stdin());
        if tty {
            let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
            req.pty = Some(w::PtySize { rows, cols });
        }
        let text = |m: &w::WsControl| Message::Text(json!(m).to_string().into());
        sink.send(Message::Text(serde_json::to_string(&req)?.into()))
            .await?;
        let _guard = if raw {
            crossterm::terminal::enable_raw_mode()?;
            Some(RawGuard)
        } else {
            None
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
        // stdin
        let tx_in = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx_in.send(text(&w::WsControl::Eof)).await;
                        break;
                    }
                    Ok(n) => {
                        if tx_in
                            .send(Message::Binary(buf[..n].to_vec().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        // window size changes
        if raw {
            let tx_w = tx.clone();
            tokio::spawn(async move {
                let Ok(mut sig) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while sig.recv().await.is_some() {
                    if let Ok((cols, rows)) = crossterm::terminal::size() {
                        let m = w::WsControl::Resize { rows, cols };
                        if tx_w.send(text(&m)).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
        drop(tx);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        while let Some(msg) = stream.next().await {
            match msg? {
                Message::Binary(b) if !b.is_empty() => {
                    if b[0] == w::WS_STDERR {
                        stderr.write_all(&b[1..])?;
                        stderr.flush()?;
                    } else {
                        stdout.write_all(&b[1..])?;
                        stdout.flush()?;
                    }
                }
                Message::Text(t) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).unwrap_or(serde_json::Value::Null);
                    match v["type"].as_str() {
                        Some("exit") => {
                            drop(_guard);
                            let r: w::ExecResult = serde_json::from_value(v)?;
                            if r.timed_out {
                                eprintln!("paddock: the command timed out");
                            }
                            return Ok(r.exit_code);
                        }
                        Some("error") => {
                            drop(_guard);
                            let p: w::Problem = serde_json::from_value(v)?;
                            bail!("{}", p.detail);
                        }
                        _ => {}
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        bail!("the connection closed before the command exited")
    }
}

struct RawGuard;

impl Drop for RawGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// A file as a stream of 1 MiB chunks, for a streamed upload.
fn file_stream(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = Vec::with_capacity(1 << 20);
        match f.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(bytes::Bytes::from(buf)), Some(f))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Bytes as a person reads them: `512 B`, `3.2 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}
