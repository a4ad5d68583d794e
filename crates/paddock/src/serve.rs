//! `paddock serve`: wires the store, the backends, the engine and the API.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use paddock_core::{Engine, EngineConfig, Runtime};
use paddock_runtime::{ContainerConfig, ContainerRuntime, NetConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the native API. Not loopback: every request needs an API key.
    #[arg(long, default_value = "127.0.0.1:7070", env = "PADDOCK_LISTEN")]
    pub listen: SocketAddr,
    /// Address of the hiver-py dialect (its SDK's default gateway URL is
    /// http://localhost:10000), or `off`. It has no authentication: keep it
    /// on loopback.
    #[arg(long, default_value = "127.0.0.1:10000", env = "PADDOCK_HIVER_LISTEN",
          value_parser = listen_or_off)]
    pub hiver_listen: Listen,
    /// Address of the flash-sandbox dialect's REST API (its SDK's default
    /// port is 8080), or `off`. No authentication: keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:8080", env = "PADDOCK_FLASH_HTTP_LISTEN",
          value_parser = listen_or_off)]
    pub flash_http_listen: Listen,
    /// Address of the flash-sandbox dialect's gRPC service (plaintext
    /// HTTP/2; its SDK's default port is 50051), or `off`. No
    /// authentication: keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:50051", env = "PADDOCK_FLASH_GRPC_LISTEN",
          value_parser = listen_or_off)]
    pub flash_grpc_listen: Listen,
    /// Address of the agenttier dialect's REST API (`/api/v1`), or `off`.
    /// It takes API keys (`X-API-Key`, `Authorization: Bearer`) and tokens
    /// of the issuers the settings file trusts (`[[oidc]]`); requests
    /// without one only on loopback without `--require-auth`.
    #[arg(long, default_value = "127.0.0.1:8090", env = "PADDOCK_AGENTTIER_LISTEN",
          value_parser = listen_or_off)]
    pub agenttier_listen: Listen,
    /// Address of the posthog-hogland dialect's REST API (`/v1`:
    /// hogboxes and pens), or `off`. Every request needs
    /// `Authorization: Bearer` with an API key or a token of an issuer the
    /// settings file trusts.
    #[arg(long, default_value = "127.0.0.1:8091", env = "PADDOCK_HOGLAND_LISTEN",
          value_parser = listen_or_off)]
    pub hogland_listen: Listen,
    /// Address of the boxd dialect (gRPC `boxd.api.v1.BoxdApi` over h2c
    /// and its token exchange `POST /api/v1/auth/token`, on one port: the
    /// SDK's 9443), or `off`. Every RPC needs a bearer: a token the
    /// exchange signed for an API key, a scoped token, an API key, or a
    /// token of an issuer the settings file trusts.
    #[arg(long, default_value = "127.0.0.1:9443", env = "PADDOCK_BOXD_LISTEN",
          value_parser = listen_or_off)]
    pub boxd_listen: Listen,
    /// Address of the SSH gateway (`ssh <sandbox id>@host`: shells,
    /// commands, scp/sftp, `ssh -L`), or `off`. Public-key logins only,
    /// with the keys principals register (`paddock ssh-keys add`).
    #[arg(long, default_value = "127.0.0.1:2222", env = "PADDOCK_SSH_LISTEN",
          value_parser = listen_or_off)]
    pub ssh_listen: Listen,
    /// Address of the ingress (HTTPS), or `off`: requests routed by `Host`
    /// to sandboxes' proxies (`<name>.<box>.<zone>`, `<box>.<zone>`), to
    /// bound domains' sandboxes, and E2B-style `<port>-<id>.<zone>` (any
    /// port, the owner's bearer only). Certificates: `[ingress] cert/key`
    /// in the settings file, else minted by Paddock's own CA
    /// (`<data-dir>/ingress-ca.pem`; `paddock ingress ca` prints it).
    #[arg(long, default_value = "127.0.0.1:8443", env = "PADDOCK_INGRESS_LISTEN",
          value_parser = listen_or_off)]
    pub ingress_listen: Listen,
    /// Address of the ingress over plain HTTP besides (or, with
    /// `--ingress-listen off`, instead of) HTTPS, or `off` (the default).
    #[arg(long, default_value = "off", env = "PADDOCK_INGRESS_HTTP_LISTEN",
          value_parser = listen_or_off)]
    pub ingress_http_listen: Listen,
    /// The ingress's DNS zone: sandboxes are `<box>.<zone>`. Point a
    /// wildcard record (`*.<zone>`, `*.*.<zone>`) at the ingress;
    /// `*.localhost` resolves to loopback on most systems.
    #[arg(long, default_value = "paddock.localhost", env = "PADDOCK_ZONE", value_parser = zone)]
    pub zone: String,
    /// The native API's unix socket (mode 0660, owned by root and
    /// `--socket-group`), or `off`. Requests on it need no key: the file's
    /// permissions are the authentication. The CLI uses it when it exists.
    #[arg(long, default_value = DEFAULT_SOCKET, env = "PADDOCK_SOCKET")]
    pub socket: String,
    /// The group that may open the unix socket besides root.
    #[arg(long, value_name = "NAME")]
    pub socket_group: Option<String>,
    /// A host name (or address) the loopback listeners answer to besides
    /// 127.0.0.0/8, [::1] and localhost, any port; repeatable. Requests
    /// without a key naming another `Host` or `Origin` are refused (a guard
    /// against DNS rebinding and cross-site requests from web pages).
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// Demand an API key on the native API's TCP listener even on loopback
    /// (the unix socket still needs none).
    #[arg(long)]
    pub require_auth: bool,
    #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// crun, runc or a path (default: crun where it works, else runc).
    #[arg(long, env = "PADDOCK_OCI_RUNTIME")]
    pub oci_runtime: Option<String>,
    /// Which backend a create of an isolation gets, `ISOLATION=BACKEND`
    /// (`container=runc`; repeatable). Default: the first of each isolation
    /// (`GET /v1/backends` lists them).
    #[arg(long = "default-backend", value_parser = parse_default_backend)]
    pub default_backends: Vec<(paddock_core::model::Isolation, String)>,
    /// The paddock-agent binary (default: next to this binary).
    #[arg(long, env = "PADDOCK_AGENT")]
    pub agent: Option<PathBuf>,
    /// Host bridge for sandbox networking.
    #[arg(long, default_value = "paddock0")]
    pub bridge: String,
    /// The bridge's address; sandboxes get addresses in its /16.
    #[arg(long, default_value = "10.88.0.1")]
    pub gateway: std::net::Ipv4Addr,
    /// A port of the gateway address that every sandbox may reach (TCP and
    /// UDP), for a host service offered to sandboxes; repeatable. Sandboxes
    /// reach no other host service, bar DNS and replies.
    #[arg(long = "host-port", value_name = "PORT")]
    pub host_ports: Vec<u16>,
    /// Seconds between reaper passes (TTL and idle timeouts).
    #[arg(long, default_value_t = 1.0)]
    pub reap_interval: f64,
    /// Settings file (TOML): insecure_registries = [..], [registry_mirrors],
    /// [image_aliases], [registry_auth."HOST"] username/password,
    /// [pull_policy] default/credentials and [pull_policy.principals].
    /// allowed_host_mounts = [..], max_cpu, max_memory_mb, max_disk_mb,
    /// max_pids, max_ttl_secs, max_idle_timeout_secs, max_exec_timeout_secs.
    #[arg(
        long,
        env = "PADDOCK_CONFIG",
        default_value = "/etc/paddock/config.toml"
    )]
    pub config: PathBuf,
    /// A registry reached over plain HTTP (`HOST:PORT`); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A mirror for a registry, tried first: `docker.io=http://127.0.0.1:5000`; repeatable.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<String>,
    /// Pull another reference for this one: `FROM=TO`; repeatable.
    #[arg(long = "image-alias", value_name = "FROM=TO")]
    pub image_aliases: Vec<String>,
    /// Network namespaces kept wired for the next creates.
    #[arg(long, default_value_t = 4)]
    pub net_pool: usize,
    /// Keep N sandboxes of an image booted ahead of time, so that a create
    /// asking for that image and nothing else (bar key, labels, TTL and
    /// idle timeout) is answered at once: `IMAGE=N`, or `default=N` for the
    /// default host image; repeatable. Off by default.
    #[arg(long = "warm-pool", value_name = "IMAGE=N", value_parser = warm_pool)]
    pub warm_pools: Vec<paddock_core::engine::PoolConfig>,
    /// Warm pools are not refilled while the host has less memory
    /// available (MiB).
    #[arg(long, default_value_t = 1024)]
    pub warm_pool_min_free_mb: u64,
    /// Leave the host's cgroup mounts as they are. By default the daemon sets
    /// the kernel's `favordynmods` flag on the cgroup2 mount, which takes
    /// about 13 ms off every create (moving a process into a cgroup otherwise
    /// waits for an RCU grace period).
    #[arg(long)]
    pub no_tune_cgroups: bool,
    /// Each sandbox in a user namespace of its own, its root a range of
    /// unprivileged host ids (`on`, the default); `off` runs sandboxes as
    /// the host's root with fewer capabilities (for comparison).
    #[arg(long, value_enum, default_value = "on")]
    pub userns: OnOff,
    /// Days the audit log keeps its records (0: for ever).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(0..=36500))]
    pub audit_retention_days: u64,
    /// The most of one sandbox's main-process output kept on the host
    /// (`<data-dir>/logs`), in MiB: its log is rotated at half of it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1048576))]
    pub log_max_mb: u64,
    /// A host directory whose subdirectories (and itself) sandboxes may have
    /// bound in (`mounts[].origin`, hiver's `fs[].origin`); repeatable.
    /// None by default. Never `/`, the data dir, `/proc`, `/sys`, `/dev`,
    /// `/etc`, `/root`, `/var/lib/paddock` or inside them.
    #[arg(long = "allow-host-mount", value_name = "DIR")]
    pub allow_host_mounts: Vec<PathBuf>,
    /// The most CPU cores a sandbox may ask for (default: the host's).
    #[arg(long)]
    pub max_cpu: Option<f64>,
    /// The most memory a sandbox may ask for, MiB (default: the host's).
    #[arg(long)]
    pub max_memory_mb: Option<i64>,
    /// The largest disk a sandbox may ask for, MiB (default: the host's memory).
    #[arg(long)]
    pub max_disk_mb: Option<i64>,
    /// The most processes a sandbox may ask for (default: 65536).
    #[arg(long)]
    pub max_pids: Option<i64>,
    /// The longest TTL a sandbox may ask for, seconds (default: 30 days).
    #[arg(long)]
    pub max_ttl_secs: Option<u64>,
    /// The longest idle timeout, seconds (default: 30 days).
    #[arg(long)]
    pub max_idle_timeout_secs: Option<u64>,
    /// The longest timeout of a command, seconds (default: 24 hours).
    #[arg(long)]
    pub max_exec_timeout_secs: Option<f64>,
    /// Destroy every sandbox of this data dir and remove the bridge and NAT
    /// rules the daemon set up for them, then exit (no server).
    #[arg(long)]
    pub cleanup: bool,
}

/// The settings file; every key is optional.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub registry_mirrors: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub image_aliases: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub registry_auth: std::collections::BTreeMap<String, Credentials>,
    /// As `--allowed-host`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub pull_policy: PullPolicyConfig,
    /// Host directories sandboxes may have bound in (with --allow-host-mount).
    #[serde(default)]
    pub allowed_host_mounts: Vec<PathBuf>,
    /// Ceilings on what a sandbox asks for (a flag wins over its key).
    #[serde(default)]
    pub max_cpu: Option<f64>,
    #[serde(default)]
    pub max_memory_mb: Option<i64>,
    #[serde(default)]
    pub max_disk_mb: Option<i64>,
    #[serde(default)]
    pub max_pids: Option<i64>,
    #[serde(default)]
    pub max_ttl_secs: Option<u64>,
    #[serde(default)]
    pub max_idle_timeout_secs: Option<u64>,
    #[serde(default)]
    pub max_exec_timeout_secs: Option<f64>,
    /// The operator's templates, by name, which every principal sees
    /// (`general-coding` is there unless this redefines it).
    #[serde(default)]
    pub templates: std::collections::BTreeMap<String, TemplateConfig>,
    /// Governance policies (`[[policies]]`), evaluated at every create.
    #[serde(default)]
    pub policies: Vec<paddock_core::policy::Policy>,
    /// Token issuers the daemon trusts (`[[oidc]]`): a bearer token one of
    /// them signed stands for `principal_prefix` + its subject.
    #[serde(default)]
    pub oidc: Vec<paddock_oidc::IssuerConfig>,
    /// `[ingress]`: the operator's certificate for the ingress.
    #[serde(default)]
    pub ingress: IngressFileConfig,
    /// `[boxd]`: where boxd's billing calls send people, if the operator
    /// bills (else they answer FAILED_PRECONDITION).
    #[serde(default)]
    pub boxd: BoxdFileConfig,
}

/// `[ingress]`: `cert` (a PEM chain) and `key` (PEM) the ingress serves
/// for every name instead of minting its own (it must cover
/// `*.<zone>` and `*.*.<zone>`, and bound domains).
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct IngressFileConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Domains the operator vouches for: Paddock's CA signs for a bound
    /// domain only under one of these (anyone may bind any name, and
    /// clients trust the CA). Others are served with the operator's
    /// `cert`, or not over HTTPS.
    #[serde(default)]
    pub mint_domains: Vec<String>,
}

/// `[boxd]`: `checkout_url` and `portal_url`, what boxd's
/// `CreateCheckoutSession` and `CreateBillingPortalSession` answer.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct BoxdFileConfig {
    pub checkout_url: Option<String>,
    pub portal_url: Option<String>,
}

fn zone(s: &str) -> Result<String, String> {
    paddock_core::engine::host_name(s)
        .filter(|z| z.parse::<std::net::IpAddr>().is_err())
        .ok_or_else(|| format!("{s:?} is not a DNS name"))
}

/// `[templates.NAME]`: what a create from the template gets unless it
/// says otherwise.
#[derive(serde::Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub description: Option<String>,
    pub image: Option<String>,
    pub cpu: Option<f64>,
    pub memory_mb: Option<i64>,
    pub disk_mb: Option<i64>,
    pub pids: Option<i64>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub command: Option<Vec<String>>,
    pub ttl_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The template every daemon has unless its settings file redefines it
/// (agenttier's README creates from it).
pub const DEFAULT_TEMPLATE: &str = "general-coding";

/// The operator's templates: the settings file's, and `general-coding`
/// (the default image: a shell, Python 3, the host's tools) unless the
/// file has one; each checked as a create would be.
fn operator_templates(
    file: &FileConfig,
    limits: &paddock_core::model::Limits,
) -> anyhow::Result<Vec<paddock_core::model::Template>> {
    let mut all = file.templates.clone();
    all.entry(DEFAULT_TEMPLATE.into())
        .or_insert(TemplateConfig {
            description: Some(
                "A coding sandbox on the default image: a shell, Python 3 and the host's tools, \
             files in /workspace"
                    .into(),
            ),
            ..Default::default()
        });
    let mut out = Vec::new();
    for (name, t) in all {
        paddock_core::model::validate_template_name(&name)
            .map_err(|e| anyhow::anyhow!("[templates.{name}]: {e}"))?;
        let defaults = paddock_core::model::SandboxSpec {
            image: t.image,
            cpu: t.cpu,
            memory_mb: t.memory_mb,
            disk_mb: t.disk_mb,
            pids: t.pids,
            env: t.env,
            cwd: t.cwd,
            command: t.command,
            ttl_secs: t.ttl_secs,
            idle_timeout_secs: t.idle_timeout_secs,
            ports: t.ports,
            labels: t.labels,
            ..Default::default()
        };
        defaults
            .resolve(limits)
            .map_err(|e| anyhow::anyhow!("[templates.{name}]: {e}"))?;
        out.push(paddock_core::model::Template {
            name,
            owner: paddock_core::engine::OPERATOR_TEMPLATES.into(),
            description: t.description,
            defaults,
            warm_pool: 0,
            created_at: Default::default(),
        });
    }
    Ok(out)
}

/// The operator's ceilings: a flag, else the settings file, else the
/// default; checked against the host's capacity.
fn limits(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<paddock_core::model::Limits> {
    let d = paddock_core::model::Limits::default();
    let l = paddock_core::model::Limits {
        max_cpu: args.max_cpu.or(file.max_cpu).unwrap_or(d.max_cpu),
        max_memory_mb: args
            .max_memory_mb
            .or(file.max_memory_mb)
            .unwrap_or(d.max_memory_mb),
        max_disk_mb: args
            .max_disk_mb
            .or(file.max_disk_mb)
            .unwrap_or(d.max_disk_mb),
        max_pids: args.max_pids.or(file.max_pids).unwrap_or(d.max_pids),
        max_ttl_secs: args
            .max_ttl_secs
            .or(file.max_ttl_secs)
            .unwrap_or(d.max_ttl_secs),
        max_idle_timeout_secs: args
            .max_idle_timeout_secs
            .or(file.max_idle_timeout_secs)
            .unwrap_or(d.max_idle_timeout_secs),
        max_exec_timeout_secs: args
            .max_exec_timeout_secs
            .or(file.max_exec_timeout_secs)
            .unwrap_or(d.max_exec_timeout_secs),
    };
    l.check_host().map_err(anyhow::Error::msg)?;
    Ok(l)
}

/// `[pull_policy]`: which registries and repositories each principal (a
/// key's principal, by default its name) may pull from, as globs over
/// `registry/repository` (`*` within a segment, `**` across), and who
/// besides the operator may use the daemon's registry credentials.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct PullPolicyConfig {
    /// For principals not in `principals`; absent: any (anonymous) pull.
    pub default: Option<Vec<String>>,
    #[serde(default)]
    pub credentials: Vec<String>,
    #[serde(default)]
    pub principals: std::collections::BTreeMap<String, Vec<String>>,
}

fn parse_default_backend(s: &str) -> Result<(paddock_core::model::Isolation, String), String> {
    let (iso, name) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: use ISOLATION=BACKEND, e.g. container=runc"))?;
    let iso: paddock_core::model::Isolation = serde_json::from_value(serde_json::json!(iso))
        .map_err(|_| format!("{iso:?}: not an isolation (container, gvisor, microvm)"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: name a backend"));
    }
    Ok((iso, name.to_string()))
}

/// Where the daemon's unix socket is, and the CLI looks for it.
pub const DEFAULT_SOCKET: &str = "/run/paddock.sock";

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

fn load_config(path: &std::path::Path, explicit: bool) -> anyhow::Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Credentials from Docker's client config (`$DOCKER_CONFIG/config.json`
/// or `~/.docker/config.json`): `auths.HOST.auth` is base64 of `user:pass`.
fn docker_credentials() -> std::collections::HashMap<String, (String, String)> {
    use base64::Engine as _;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let Some(text) = dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok()) else {
        return Default::default();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for (host, entry) in v["auths"].as_object().cloned().unwrap_or_default() {
        let decoded = entry["auth"]
            .as_str()
            .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            let host = if host == "index.docker.io" {
                "docker.io"
            } else {
                host
            };
            out.insert(host.to_string(), (u.to_string(), p.to_string()));
        }
    }
    out
}

/// A dialect's listener: an address, or none (`off`).
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub Option<SocketAddr>);

fn listen_or_off(s: &str) -> Result<Listen, String> {
    match s {
        "off" | "" => Ok(Listen(None)),
        addr => addr
            .parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| format!("{addr:?} is not ADDR:PORT or off")),
    }
}

fn warm_pool(s: &str) -> Result<paddock_core::engine::PoolConfig, String> {
    let (image, n) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: use IMAGE=N (or default=N)"))?;
    let size = n
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| format!("{s:?}: N must be 1 to 1000"))?;
    let image = image.trim();
    if image.is_empty() {
        return Err(format!("{s:?}: name an image, or default"));
    }
    Ok(paddock_core::engine::PoolConfig {
        image: (image != "default").then(|| image.to_string()),
        size,
    })
}

/// Raises the soft open-files limit to the hard one: the daemon holds a
/// connection per sandbox.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The daemon's listeners, bound before anything else.
struct Listeners {
    native: tokio::net::TcpListener,
    socket: Option<(tokio::net::UnixListener, SocketFile)>,
    hiver: Option<tokio::net::TcpListener>,
    flash_http: Option<tokio::net::TcpListener>,
    flash_grpc: Option<tokio::net::TcpListener>,
    agenttier: Option<tokio::net::TcpListener>,
    hogland: Option<tokio::net::TcpListener>,
    boxd: Option<tokio::net::TcpListener>,
    ssh: Option<tokio::net::TcpListener>,
    ingress: Option<tokio::net::TcpListener>,
    ingress_http: Option<tokio::net::TcpListener>,
}

/// Sends each write at once: streams (SSE, WebSocket) write small frames
/// back to back, and Nagle's algorithm would hold the second one until the
/// client's delayed ACK (up to 40 ms).
fn no_delay(
    l: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    l.tap_io(set as fn(&mut tokio::net::TcpStream))
}

async fn bind(addr: SocketAddr, flag: &str, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag}: listen on {addr}"))?;
    tracing::info!("serving {what} on {addr}");
    Ok(l)
}

/// A dialect's listener, if it is not off. Dialects have no
/// authentication: beyond loopback, say so.
async fn bind_dialect(
    listen: Listen,
    flag: &str,
    what: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = listen.0 else {
        return Ok(None);
    };
    let l = bind(addr, flag, what).await?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "{flag} {addr}: {what} has no authentication; anyone who reaches this address can run sandboxes"
        );
    }
    Ok(Some(l))
}

/// The native API's unix socket's file, removed when dropped if it is
/// still this one.
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the unix socket at `path`, mode 0660, owned by root (the daemon)
/// and `group`: in a new directory only the daemon can enter, then renamed
/// into place, so that nobody reaches it before its mode is set, and a
/// stale socket is replaced. A socket another daemon still answers on is an
/// error.
fn bind_socket(
    path: &std::path::Path,
    group: Option<&str>,
) -> anyhow::Result<(tokio::net::UnixListener, SocketFile)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let what = || format!("--socket {}", path.display());
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("--socket-group {name}"))?
                .with_context(|| format!("--socket-group {name}: no such group"))?
                .gid,
        ),
        None => None,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{}: another daemon answers on it", what());
    }
    let dir = path.parent().with_context(what)?;
    std::fs::create_dir_all(dir).with_context(what)?;
    let tmp = tempfile::Builder::new()
        .prefix(".paddock-sock")
        .tempdir_in(dir)
        .with_context(what)?;
    let staged = tmp.path().join("s");
    let listener = tokio::net::UnixListener::bind(&staged).with_context(what)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660)).with_context(what)?;
    if gid.is_some() {
        nix::unistd::chown(&staged, None, gid).with_context(what)?;
    }
    std::fs::rename(&staged, path).with_context(what)?;
    let m = std::fs::symlink_metadata(path).with_context(what)?;
    tracing::info!("serving the native API on {}", path.display());
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        },
    ))
}

async fn bind_all(args: &ServeArgs) -> anyhow::Result<Listeners> {
    Ok(Listeners {
        native: bind(args.listen, "--listen", "the native API").await?,
        hiver: bind_dialect(args.hiver_listen, "--hiver-listen", "the hiver-py dialect").await?,
        flash_http: bind_dialect(
            args.flash_http_listen,
            "--flash-http-listen",
            "the flash-sandbox dialect (HTTP)",
        )
        .await?,
        flash_grpc: bind_dialect(
            args.flash_grpc_listen,
            "--flash-grpc-listen",
            "the flash-sandbox dialect (gRPC)",
        )
        .await?,
        agenttier: match args.agenttier_listen.0 {
            Some(addr) => Some(bind(addr, "--agenttier-listen", "the agenttier dialect").await?),
            None => None,
        },
        hogland: match args.hogland_listen.0 {
            Some(addr) => Some(bind(addr, "--hogland-listen", "the hogland dialect").await?),
            None => None,
        },
        boxd: match args.boxd_listen.0 {
            Some(addr) => Some(bind(addr, "--boxd-listen", "the boxd dialect").await?),
            None => None,
        },
        ssh: match args.ssh_listen.0 {
            Some(addr) => Some(bind(addr, "--ssh-listen", "the SSH gateway").await?),
            None => None,
        },
        ingress: match args.ingress_listen.0 {
            Some(addr) => Some(bind(addr, "--ingress-listen", "the ingress (HTTPS)").await?),
            None => None,
        },
        ingress_http: match args.ingress_http_listen.0 {
            Some(addr) => Some(bind(addr, "--ingress-http-listen", "the ingress (HTTP)").await?),
            None => None,
        },
        // Last: a taken port is named before the socket is touched.
        socket: match args.socket.as_str() {
            "off" | "" => None,
            p => Some(bind_socket(
                std::path::Path::new(p),
                args.socket_group.as_deref(),
            )?),
        },
    })
}

pub async fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    raise_nofile();
    // The settings file, then every listener: a bad setting or a taken
    // port fails the start before the daemon touches the host.
    let file = load_config(
        &args.config,
        std::env::var_os("PADDOCK_CONFIG").is_some()
            || args.config != std::path::Path::new("/etc/paddock/config.toml"),
    )?;
    let mut allowed_hosts = file.allowed_hosts.clone();
    allowed_hosts.extend(args.allowed_hosts.iter().cloned());
    let guard = paddock_http_kit::Guard::new(&allowed_hosts).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Checked before anything is bound or made: a bad setting fails the
    // start alone.
    let limits = limits(&args, &file)?;
    let templates = operator_templates(&file, &limits)?;
    let mut seen = std::collections::HashSet::new();
    for p in &file.policies {
        p.validate()
            .map_err(|e| anyhow::anyhow!("[[policies]] {:?}: {e}", p.name))?;
        if !seen.insert(p.name.clone()) {
            anyhow::bail!("[[policies]]: two policies named {:?}", p.name);
        }
    }
    let policies = file.policies.clone();
    let ingress_cert = match (&file.ingress.cert, &file.ingress.key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => anyhow::bail!("[ingress]: give both cert and key, or neither"),
    };
    for (name, u) in [
        ("checkout_url", &file.boxd.checkout_url),
        ("portal_url", &file.boxd.portal_url),
    ] {
        if let Some(u) = u {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048 {
                anyhow::bail!("[boxd] {name}: {u:?} is not an http(s) URL");
            }
        }
    }
    let mut mint_domains = Vec::new();
    for d in &file.ingress.mint_domains {
        match paddock_core::engine::host_name(d) {
            Some(n) if n.contains('.') => mint_domains.push(n),
            _ => anyhow::bail!("[ingress] mint_domains: {d:?} is not a domain (a.b at least)"),
        }
    }
    let verifier = match file.oidc.is_empty() {
        true => None,
        false => Some(
            paddock_oidc::Verifier::new(file.oidc.clone())
                .map_err(|e| anyhow::anyhow!("[[oidc]]: {e}"))?,
        ),
    };
    let listeners = match args.cleanup {
        true => None,
        false => Some(bind_all(&args).await?),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    // Absolute, without symlinks: mount points under it are found in
    // /proc/self/mountinfo by this path.
    args.data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("resolve {}", args.data_dir.display()))?;
    let globs = file
        .pull_policy
        .default
        .iter()
        .flatten()
        .map(|g| ("default", g));
    let globs = globs.chain(
        file.pull_policy
            .principals
            .iter()
            .flat_map(|(who, gs)| gs.iter().map(move |g| (who.as_str(), g))),
    );
    for (who, g) in globs {
        paddock_core::glob::Glob::new(g)
            .map_err(|e| anyhow::anyhow!("[pull_policy] {who}: pattern {g:?}: {e}"))?;
    }
    let mut roots = file.allowed_host_mounts.clone();
    roots.extend(args.allow_host_mounts.iter().cloned());
    let host_mounts = paddock_core::hostmount::HostMounts::new(&roots, Some(&args.data_dir))
        .map_err(anyhow::Error::msg)?;
    if !roots.is_empty() {
        tracing::info!(roots = ?host_mounts.allowed(), "host directories under these roots may be mounted");
    }
    let agent = crate::agent_bin::find(args.agent.clone())?;
    // After the settings are checked (their errors say more than a taken
    // bridge) and before anything of the data dir or the host is touched:
    // a second daemon on the same data dir, bridge or subnet stops here.
    let _claims = crate::claims::take(&args.data_dir, &args.bridge, args.gateway)?;
    let store = Arc::new(paddock_core::store::Store::open(
        &args.data_dir.join("paddock.db"),
    )?);
    let container = ContainerRuntime::new(ContainerConfig {
        data_dir: args.data_dir.clone(),
        oci_runtime: args.oci_runtime.clone(),
        agent_path: agent.clone(),
        net: NetConfig {
            bridge: args.bridge.clone(),
            gateway: args.gateway,
            host_ports: args.host_ports.clone(),
            userns: args.userns == OnOff::On,
        },
        net_pool: if args.cleanup { 0 } else { args.net_pool },
        tune_cgroups: !args.no_tune_cgroups,
    })
    .await?;
    tracing::info!(oci = container.oci_runtime(), agent = %agent.display(), "container backend ready");
    let runtimes: Vec<Arc<dyn Runtime>> = vec![Arc::new(container)];
    let pair = |s: &String, what: &str| -> anyhow::Result<(String, String)> {
        s.split_once('=')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .with_context(|| format!("{what} {s:?}: use A=B"))
    };
    let mut insecure = file.insecure_registries.clone();
    insecure.extend(args.insecure_registries.iter().cloned());
    let mut mirrors: Vec<(String, String)> = file.registry_mirrors.into_iter().collect();
    for m in &args.registry_mirrors {
        mirrors.push(pair(m, "--registry-mirror")?);
    }
    let mut aliases: std::collections::HashMap<String, String> =
        file.image_aliases.into_iter().collect();
    for a in &args.image_aliases {
        let (k, v) = pair(a, "--image-alias")?;
        aliases.insert(k, v);
    }
    let pull_policy = paddock_core::engine::PullPolicy {
        principals: file.pull_policy.principals.into_iter().collect(),
        default: file.pull_policy.default,
        credentials: file.pull_policy.credentials,
    };
    let mut auth = docker_credentials();
    for (host, c) in file.registry_auth {
        auth.insert(host, (c.username, c.password));
    }
    let images = paddock_image::ImageStore::new(
        &args.data_dir.join("images"),
        paddock_image::ImageSettings {
            insecure,
            mirrors,
            aliases,
            auth,
        },
    )?;
    let engine = Engine::new(
        store,
        runtimes,
        Some(Arc::new(images)),
        Arc::new(paddock_agent_client::Connector),
        EngineConfig {
            reap_interval: std::time::Duration::from_secs_f64(args.reap_interval.max(0.05)),
            warm_pools: args.warm_pools.clone(),
            warm_pool_min_free_mb: args.warm_pool_min_free_mb,
            log_dir: Some(args.data_dir.join("logs")),
            log_max_bytes: args.log_max_mb << 20,
            pull_policy,
            default_backends: args.default_backends.iter().cloned().collect(),
            templates,
            policies,
            audit_retention: (args.audit_retention_days > 0)
                .then(|| std::time::Duration::from_secs(args.audit_retention_days * 86400)),
            limits,
            host_mounts,
            ..Default::default()
        },
    )?;
    if let Some(v) = verifier {
        engine.set_token_verifier(Arc::new(crate::oidc::Tokens(v)));
    }
    // The keys the daemon signs its own tokens with (sessions, scoped
    // tokens), rotated on schedule, kept across restarts.
    engine.set_token_keys(paddock_core::tokens::KeyRing::open(Some(
        &args.data_dir.join("token-keys"),
    ))?);
    engine.set_layers(Arc::new(paddock_host::layer::LayerStore::new(
        &args.data_dir.join("images").join("snapshots"),
    )?));
    let volumes = Arc::new(paddock_host::volume::LoopVolumes::new(
        &args.data_dir.join("volumes"),
    )?);
    engine.set_volumes(volumes.clone());
    let Some(ls) = listeners else {
        let n = engine.destroy_all().await?;
        // Volumes stay, unmounted from the host.
        volumes.unmount_all();
        eprintln!("destroyed {n} sandboxes");
        return Ok(());
    };
    engine.recover().await?;
    engine.spawn_reaper();
    engine.spawn_monitor();
    engine.spawn_pools();
    let keyless = if !args.listen.ip().is_loopback() {
        tracing::info!("listening beyond loopback: every request needs an API key");
        paddock_api::Keyless::Refused
    } else if args.require_auth {
        tracing::info!(
            "--require-auth: every request on {} needs an API key",
            args.listen
        );
        paddock_api::Keyless::Refused
    } else {
        paddock_api::Keyless::Guarded(guard.clone())
    };
    let app = paddock_api::router(paddock_api::AppState {
        engine: engine.clone(),
        keyless,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(
        axum::serve(no_delay(ls.native), app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    // Kept until the end, when dropping it removes the socket's file.
    let mut _socket_file = None;
    if let Some((l, file)) = ls.socket {
        _socket_file = Some(file);
        let app = paddock_api::router(paddock_api::AppState {
            engine: engine.clone(),
            keyless: paddock_api::Keyless::Local,
        });
        servers.spawn(
            axum::serve(l, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    if let Some(l) = ls.agenttier {
        let open = l.local_addr().is_ok_and(|a| a.ip().is_loopback()) && !args.require_auth;
        let keyless = if open {
            paddock_agenttier::Keyless::Guarded(guard.clone())
        } else {
            paddock_agenttier::Keyless::Refused
        };
        servers.spawn(
            axum::serve(
                no_delay(l),
                paddock_agenttier::router(engine.clone(), keyless),
            )
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
        );
    }
    if let Some(l) = ls.hogland {
        servers.spawn(
            axum::serve(no_delay(l), paddock_hogland::router(engine.clone()))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    if let Some(l) = ls.boxd {
        let opts = paddock_boxd::Options {
            zone: args.zone.trim_end_matches('.').to_ascii_lowercase(),
            checkout_url: file.boxd.checkout_url.clone(),
            portal_url: file.boxd.portal_url.clone(),
            ..Default::default()
        };
        servers.spawn(
            axum::serve(no_delay(l), paddock_boxd::router(engine.clone(), opts))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    if let Some(l) = ls.ssh {
        let key = paddock_ssh::host_key(&args.data_dir.join("ssh_host_ed25519_key"))?;
        if let Ok(addr) = l.local_addr() {
            engine.set_ssh_address(addr);
        }
        servers.spawn(paddock_ssh::serve(
            l,
            engine.clone(),
            key,
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(l) = ls.hiver {
        servers.spawn(
            axum::serve(no_delay(l), paddock_hiver::router(engine.clone(), &guard))
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    let flash = paddock_flash::Flash::new(engine.clone());
    if let Some(l) = ls.flash_http {
        let f = flash.clone();
        servers.spawn(paddock_flash::http::serve(
            no_delay(l),
            f,
            guard.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(l) = ls.flash_grpc {
        let f = flash.clone();
        let stop = stopped(stop_rx.clone());
        let g = guard.clone();
        servers.spawn(async move {
            paddock_flash::grpc::serve(l, f, g, stop)
                .await
                .map_err(std::io::Error::other)
        });
    }
    if ls.ingress.is_some() || ls.ingress_http.is_some() {
        let tls = match &ls.ingress {
            Some(_) => {
                let (cfg, ca) = paddock_ingress::tls::server_config(
                    engine.clone(),
                    &args.data_dir,
                    ingress_cert
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path())),
                    &mint_domains,
                )
                .map_err(|e| anyhow::anyhow!("the ingress's TLS: {e}"))?;
                if let Some(ca) = &ca {
                    tracing::info!(
                        "the ingress's certificates are signed by Paddock's CA {} (clients trust it; `paddock ingress ca` prints it)",
                        ca.path.display()
                    );
                }
                Some((cfg, ca))
            }
            None => None,
        };
        let (port, scheme) = match (&ls.ingress, &ls.ingress_http) {
            (Some(l), _) => (l.local_addr()?.port(), "https"),
            (None, Some(l)) => (l.local_addr()?.port(), "http"),
            _ => unreachable!(),
        };
        engine.set_ingress(paddock_core::engine::IngressConfig {
            zone: args.zone.clone(),
            port,
            scheme,
            ca_pem: tls
                .as_ref()
                .and_then(|(_, ca)| ca.as_ref().map(|c| c.pem.clone())),
        });
        tracing::info!(zone = %args.zone, "the ingress routes <name>.<box>.{0}, <box>.{0}, <port>-<id>.{0} and bound domains", args.zone);
        if let (Some(l), Some((cfg, _))) = (ls.ingress, tls) {
            servers.spawn(paddock_ingress::serve_tls(
                l,
                engine.clone(),
                cfg,
                stopped(stop_rx.clone()),
            ));
        }
        if let Some(l) = ls.ingress_http {
            servers.spawn(paddock_ingress::serve_http(
                l,
                engine.clone(),
                stopped(stop_rx.clone()),
            ));
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("signal handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
        r = servers.join_next() => {
            if let Some(Ok(Err(e))) = r {
                return Err(e.into());
            }
        }
    }
    let _ = stop_tx.send(true);
    // Streams (events, SSE) never end on their own: give requests in
    // flight a moment, then go on.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    engine.shutdown().await;
    Ok(())
}

/// A switch given as `on` or `off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}
