//! The container backend: one OCI bundle per sandbox, run by crun (where it
//! works) or runc, with `paddock-agent` as PID 1.
//!
//! Each sandbox's directory, `<data>/sandboxes/<id>/`, is a tmpfs sized to
//! its disk limit (so a disk filler hits its own limit), holding:
//! - `rw/`: the overlay's upper and work directories;
//! - `rootfs/`: the overlay (read-only base image below, `rw/upper` above);
//! - `agent.sock` and `agent.id`: the agent's socket, bound here and handed
//!   to the agent already listening (the sandbox sees neither: nothing of
//!   this directory but `rootfs/` is in its mount namespace, so no path the
//!   daemon connects to can be changed from inside), and the sandbox's
//!   identity (mode 0600), which the agent must name in its greeting on
//!   every connection (`paddock_proto::identity`);
//! - `etc/`: the sandbox's own hosts, hostname and resolv.conf;
//! - `bundle/config.json`, `net.json` (its network slot), `init.pid` and
//!   `agent.log` (the OCI runtime's output).

mod etc;
use paddock_host::{cgroup, cmd, net, sealed, seccomp};
mod inroot;
mod spec;
mod syscalls;

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use paddock_core::model::{Isolation, Metrics, SandboxConfig};
use paddock_core::{AgentEndpoint, Error, Instance, Liveness, Result, Runtime};
use uuid::Uuid;

pub use net::NetConfig;

#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub data_dir: PathBuf,
    /// `crun`, `runc` or a path; `None` picks crun where it works.
    pub oci_runtime: Option<String>,
    pub agent_path: PathBuf,
    pub net: NetConfig,
    /// Network namespaces kept wired and ready for the next creates.
    pub net_pool: usize,
    /// Set the host-wide cgroup `favordynmods` flag (see
    /// [`cgroup::favor_dynamic_modifications`]).
    pub tune_cgroups: bool,
}

pub struct ContainerRuntime {
    oci: String,
    /// What to execute for `oci`: its sealed copy when one could be made,
    /// else `oci` itself.
    oci_exe: PathBuf,
    /// Holds the sealed copy open for as long as the backend lives.
    _oci_sealed: Option<sealed::SealedBinary>,
    state_root: PathBuf,
    sandboxes: PathBuf,
    base: PathBuf,
    agent: PathBuf,
    host_binds: Vec<(String, String)>,
    net: std::sync::Arc<net::Network>,
    /// Seccomp filters crun compiled, for the next sandboxes (crun only).
    seccomp: Option<seccomp::Cache>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

fn is_mounted(p: &Path) -> bool {
    !mounted(&[p]).is_empty()
}

/// Which of `paths` are mount points, in their order (one read of
/// mountinfo, which holds every sandbox's mounts).
fn mounted<'a>(paths: &[&'a Path]) -> Vec<&'a Path> {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let points: std::collections::HashSet<&str> =
        m.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    paths
        .iter()
        .copied()
        .filter(|p| points.contains(&*p.to_string_lossy()))
        .collect()
}

/// The host directories that make the default image: /usr, plus /bin,
/// /lib... where they are directories rather than links into /usr; and its
/// /etc, made (or refreshed) next to `base` from the allowed part of the
/// host's (`etc.rs`).
fn host_layout(base: &Path) -> Result<Vec<(String, String)>> {
    let etc = base.with_file_name("host-etc");
    etc::prepare(Path::new("/etc"), &etc)?;
    let mut binds = vec![
        ("/usr".to_string(), "/usr".to_string()),
        (etc.to_string_lossy().into_owned(), "/etc".into()),
    ];
    std::fs::create_dir_all(base).map_err(io("base image"))?;
    for d in [
        "usr",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "workspace",
        "home",
        "var",
        "var/tmp",
        "mnt",
        "opt",
        "srv",
    ] {
        std::fs::create_dir_all(base.join(d)).map_err(io("base image"))?;
    }
    // The agent's mount point, there already: a runtime in a user
    // namespace cannot make it in a directory of the host's root (the
    // probe runs on this base directly; a sandbox's overlay could).
    std::fs::create_dir_all(base.join(".paddock")).map_err(io("base image"))?;
    let agent = base.join(".paddock/paddock-agent");
    if !agent.exists() {
        std::fs::write(&agent, b"").map_err(io("base image"))?;
    }
    use std::os::unix::fs::PermissionsExt;
    for (d, mode) in [("tmp", 0o1777), ("root", 0o700), ("var/tmp", 0o1777)] {
        let p = base.join(d);
        std::fs::create_dir_all(&p).map_err(io("base image"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(io("base image"))?;
    }
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(d);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        let target = base.join(d);
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&host).map_err(io("base image"))?;
            if std::fs::read_link(&target).ok().as_deref() != Some(link.as_path()) {
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target).map_err(io("base image"))?;
            }
        } else if meta.is_dir() {
            std::fs::create_dir_all(&target).map_err(io("base image"))?;
            binds.push((host.to_string_lossy().into(), format!("/{d}")));
        }
    }
    Ok(binds)
}

/// crun needs every v1 controller it knows as a v1 hierarchy; on hybrid
/// hosts hugetlb may sit in the unified hierarchy instead. Move it.
fn prepare_cgroups_for_crun() {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return; // pure v2
    }
    let unified = root.join("unified/cgroup.controllers");
    let has = std::fs::read_to_string(unified).unwrap_or_default();
    if has.split_whitespace().any(|c| c == "hugetlb") && !is_mounted(&root.join("hugetlb")) {
        let target = root.join("hugetlb");
        let _ = std::fs::create_dir_all(&target);
        if let Err(e) = mount(
            Some("cgroup"),
            &target,
            Some("cgroup"),
            MsFlags::empty(),
            Some("hugetlb"),
        ) {
            tracing::warn!("could not mount the hugetlb cgroup v1 hierarchy: {e}");
        }
    }
}

impl ContainerRuntime {
    pub async fn new(cfg: ContainerConfig) -> Result<ContainerRuntime> {
        let sandboxes = cfg.data_dir.join("sandboxes");
        let base = cfg.data_dir.join("images/host");
        std::fs::create_dir_all(&sandboxes).map_err(io("data dir"))?;
        if !cfg.agent_path.is_file() {
            return Err(Error::Unavailable {
                what: "the container backend".into(),
                reason: format!("no agent binary at {}", cfg.agent_path.display()),
            });
        }
        if cfg.tune_cgroups {
            cgroup::favor_dynamic_modifications();
        }
        let host_binds = host_layout(&base)?;
        // The network slots of sandboxes an earlier daemon left running:
        // their ports stay pinned and isolated.
        let existing: Vec<net::Slot> = std::fs::read_dir(&sandboxes)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| Uuid::parse_str(&e.file_name().to_string_lossy()).is_ok())
                    .filter_map(|e| std::fs::read_to_string(e.path().join("net.json")).ok())
                    .filter_map(|t| serde_json::from_str(&t).ok())
                    .collect()
            })
            .unwrap_or_default();
        let net = net::Network::init(cfg.net.clone(), cfg.net_pool, &existing).await?;
        let mut rt = ContainerRuntime {
            oci: String::new(),
            oci_exe: PathBuf::new(),
            _oci_sealed: None,
            state_root: PathBuf::new(),
            sandboxes,
            base,
            agent: cfg.agent_path.clone(),
            host_binds,
            net,
            seccomp: None,
        };
        let candidates: Vec<String> = match &cfg.oci_runtime {
            Some(r) => vec![r.clone()],
            None => vec!["crun".into(), "runc".into()],
        };
        let mut errors = Vec::new();
        for c in candidates {
            if c.ends_with("crun") {
                prepare_cgroups_for_crun();
            }
            rt.oci = c.clone();
            rt.seccomp = c.ends_with("crun").then(seccomp::Cache::default);
            rt._oci_sealed = sealed::SealedBinary::new(&c)
                .inspect_err(|e| tracing::debug!("no sealed copy of {c}: {e}"))
                .ok();
            rt.oci_exe = rt
                ._oci_sealed
                .as_ref()
                .map_or_else(|| PathBuf::from(&c), |s| s.path().to_path_buf());
            rt.state_root = cfg
                .data_dir
                .join("oci")
                .join(Path::new(&c).file_name().unwrap_or_default());
            std::fs::create_dir_all(&rt.state_root).map_err(io("oci state"))?;
            match rt.probe(&cfg.data_dir).await {
                Ok(()) => {
                    tracing::info!("container backend uses {c}");
                    // Addresses of the sandboxes already here are taken
                    // before the pool picks any.
                    if let Ok(rd) = std::fs::read_dir(&rt.sandboxes) {
                        for e in rd.flatten() {
                            if let Ok(id) = Uuid::parse_str(&e.file_name().to_string_lossy()) {
                                if let Some(slot) = rt.slot(id) {
                                    rt.net.reserve(&slot);
                                }
                            }
                        }
                    }
                    rt.net.spawn_refill();
                    return Ok(rt);
                }
                Err(e) => {
                    tracing::info!("{c} does not work here: {e}");
                    errors.push(format!("{c}: {e}"));
                }
            }
        }
        Err(Error::Unavailable {
            what: "the container backend".into(),
            reason: format!("no working OCI runtime ({})", errors.join("; ")),
        })
    }

    /// An empty lower directory, for an image with no layers.
    fn empty_base(&self) -> PathBuf {
        let p = self.base.with_file_name("empty");
        let _ = std::fs::create_dir_all(&p);
        p
    }

    pub fn oci_runtime(&self) -> &str {
        &self.oci
    }

    /// Runs `paddock-agent --version` in a throwaway container with cgroup
    /// limits (in a user namespace of its own when sandboxes get one), to
    /// see that this OCI runtime works on this host as sandboxes need it.
    async fn probe(&self, data_dir: &Path) -> Result<()> {
        if !self.net.cfg.userns {
            return self.probe_with(data_dir, None).await;
        }
        let claims = paddock_host::userns::IdClaims::default();
        let holder = format!("probe-{}", std::process::id());
        let r = claims.claim(&holder)?;
        let map = r.map_line();
        let result = match paddock_host::userns::with_maps(&map, &map) {
            // Joined by the daemon's descriptor, which the OCI runtime
            // (root, a child of the daemon) can open.
            Ok(ns) => {
                use std::os::fd::AsRawFd;
                let path = PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    ns.as_raw_fd()
                ));
                self.probe_with(data_dir, Some((&path, r))).await
            }
            Err(e) => Err(e),
        };
        claims.release(r, &holder);
        result.map_err(|e| match e {
            Error::Internal(m) => Error::Internal(format!(
                "{m} (in a user namespace: `paddock serve --userns off` runs sandboxes without one)"
            )),
            e => e,
        })
    }

    async fn probe_with(
        &self,
        data_dir: &Path,
        userns: Option<(&Path, paddock_host::userns::IdRange)>,
    ) -> Result<()> {
        let dir = data_dir.join("probe");
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        let etc = dir.join("etc");
        for d in [&rootfs, &etc, &dir.join("bundle")] {
            std::fs::create_dir_all(d).map_err(io("probe"))?;
        }
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(etc.join(f), "").map_err(io("probe"))?;
        }
        let config = paddock_core::model::SandboxSpec::default()
            .resolve(&paddock_core::model::Limits::default())?;
        let id = format!("paddock-probe-{}", std::process::id());
        let mut spec = spec::build(&spec::SpecInput {
            id: &id,
            rootfs: &self.base,
            identity: &paddock_proto::identity::Identity::generate().map_err(io("identity"))?,
            etc_dir: &etc,
            agent: &self.agent,
            host_binds: &self.host_binds,
            volumes: &[],
            netns: None,
            userns,
            cgroup: &format!("/paddock/{id}"),
            config: &config,
        })?;
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(vec![
                "/.paddock/paddock-agent".into(),
                "--version".into(),
            ]));
            p.set_cwd("/".into());
        }
        if let Some(r) = spec.root_mut() {
            r.set_readonly(Some(true));
        }
        spec.save(dir.join("bundle/config.json"))
            .map_err(|e| Error::Internal(format!("probe spec: {e}")))?;
        let bundle = dir.join("bundle");
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            cmd::run_exe(
                &self.oci_exe,
                &self.oci,
                &[
                    "--root",
                    &self.state_root.to_string_lossy(),
                    "run",
                    "--bundle",
                    &bundle.to_string_lossy(),
                    &id,
                ],
            ),
        )
        .await
        .map_err(|_| Error::Timeout("probe container".into()))?;
        let _ = cmd::run_exe(
            &self.oci_exe,
            &self.oci,
            &[
                "--root",
                &self.state_root.to_string_lossy(),
                "delete",
                "-f",
                &id,
            ],
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        if out.contains("paddock-agent") {
            Ok(())
        } else {
            Err(Error::Internal(format!("unexpected probe output {out:?}")))
        }
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.sandboxes.join(id.to_string())
    }

    async fn oci(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["--root", self.state_root.to_str().unwrap_or("/run/paddock")];
        full.extend_from_slice(args);
        cmd::run_exe(&self.oci_exe, &self.oci, &full).await
    }

    async fn oci_status(&self, id: Uuid) -> Option<String> {
        let out = self.oci(&["state", &id.to_string()]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["status"].as_str().map(str::to_string)
    }

    /// The host pid of the sandbox's init (the agent), as the OCI runtime
    /// wrote it at its start.
    fn init_pid(&self, id: Uuid) -> Option<u32> {
        std::fs::read_to_string(self.dir(id).join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the sandbox's init process still exists; `None` for a
    /// sandbox this backend does not run.
    fn init_alive(&self, id: Uuid) -> Option<bool> {
        let pid = self.init_pid(id)?;
        // A zombie has exited (nobody reaped it yet: its parent may be the
        // daemon that was killed).
        if !paddock_core::host::process_alive(pid) {
            return Some(false);
        }
        // The pid may have been reused: it must still be in this sandbox's
        // cgroup.
        Some(
            match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
                Ok(cg) => cg.contains(&id.to_string()),
                Err(_) => false,
            },
        )
    }

    /// The network namespace a sandbox runs in, as recorded at creation.
    fn slot(&self, id: Uuid) -> Option<net::Slot> {
        let text = std::fs::read_to_string(self.dir(id).join("net.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// How to reach the sandbox's agent; `None` for a sandbox with no
    /// identity (made by a daemon from before identities, whose agent
    /// listened where the sandbox could change it).
    fn instance(&self, id: Uuid) -> Option<Instance> {
        let text = std::fs::read_to_string(self.identity_file(id)).ok()?;
        Some(Instance {
            agent: AgentEndpoint::Unix {
                path: self.agent_socket(id),
                identity: paddock_core::AgentIdentity(
                    paddock_proto::identity::Identity::from_hex(&text)?.bytes(),
                ),
            },
            ip: self.slot(id).map(|s| IpAddr::V4(s.ip)),
        })
    }

    fn identity_file(&self, id: Uuid) -> PathBuf {
        self.dir(id).join("agent.id")
    }

    /// The sandbox's identity: drawn at its first boot, kept for the next.
    fn identity(&self, id: Uuid) -> Result<paddock_proto::identity::Identity> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.identity_file(id);
        if let Some(known) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| paddock_proto::identity::Identity::from_hex(&t))
        {
            return Ok(known);
        }
        let id = paddock_proto::identity::Identity::generate().map_err(io("identity"))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(id.to_hex().as_bytes()))
            .map_err(io("identity"))?;
        Ok(id)
    }

    /// Mounts the sandbox's filesystem and gives it a network namespace
    /// (first boot only).
    async fn prepare(&self, id: Uuid, config: &SandboxConfig) -> Result<()> {
        let dir = self.dir(id);
        let rw = dir.join("rw");
        let rootfs = dir.join("rootfs");
        // The sandbox's disk is a tmpfs over its whole directory: what it
        // writes, its logs and Paddock's files for it all count against
        // its limit, and the directories below are made on the tmpfs (a
        // mkdir on this kind of host's ext4 takes ~0.6 ms; there were six
        // per create).
        std::fs::create_dir_all(&dir).map_err(io("sandbox dir"))?;
        let size = format!(
            "size={}m,mode=0755",
            disk_size_mb(config.disk_mb, config.memory_mb)
        );
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(size.as_str()),
        )
        .map_err(|e| Error::Internal(format!("mount sandbox disk: {e}")))?;
        for d in [
            &rw.join("upper"),
            &rw.join("work"),
            &rootfs,
            &dir.join("etc"),
            &dir.join("bundle"),
        ] {
            std::fs::create_dir_all(d).map_err(io("sandbox dir"))?;
        }
        // Its network, and with it its user namespace and range of host
        // ids, first: recorded at once, so that a failure below gives them
        // back (the engine destroys a sandbox whose create failed).
        // On a private network: a namespace wired to its bridge (not from
        // the pool, whose namespaces are the default bridge's).
        let mut slot = match &config.network {
            Some(n) => self.net.take_on(n).await?,
            None => self.net.take().await?,
        };
        let record = |slot: &net::Slot| {
            serde_json::to_string(slot)
                .map_err(Error::internal)
                .and_then(|j| std::fs::write(dir.join("net.json"), j).map_err(io("net.json")))
        };
        if let Err(e) = record(&slot) {
            self.net.destroy(&slot).await;
            return Err(e);
        }
        let owner = slot.ids.map(|r| r.base);
        // A snapshot's layers over a named image's (top first), or over
        // the host-based default.
        let mut lowers: Vec<PathBuf> = config.layers.iter().rev().map(PathBuf::from).collect();
        match &config.resolved_image {
            Some(img) if !img.layers.is_empty() => {
                lowers.extend(img.layers.iter().rev().map(PathBuf::from))
            }
            Some(_) => lowers.push(self.empty_base()),
            None => lowers.push(self.base.clone()),
        }
        for l in &lowers {
            if !l.is_dir() {
                return Err(Error::Unavailable {
                    what: "the sandbox's filesystem".into(),
                    reason: format!("layer {} is missing", l.display()),
                });
            }
        }
        // In a user namespace, the layers (root's on the host, shared by
        // every sandbox) are seen through idmapped mounts, as its root's;
        // its upper and work directories, where what it writes goes, are
        // its range's on the host.
        let staged = match slot.ids {
            Some(r) => {
                let ns = paddock_host::userns::open(&slot.netns)?;
                let mut staged = Staged(Vec::new());
                for (i, l) in lowers.iter().enumerate() {
                    let at = dir.join("l").join(i.to_string());
                    std::fs::create_dir_all(&at).map_err(io("layer mount point"))?;
                    paddock_host::userns::idmapped_bind(l, &at, &ns, true)?;
                    staged.0.push(at);
                }
                for d in [rw.join("upper"), rw.join("work")] {
                    std::os::unix::fs::chown(&d, Some(r.base), Some(r.base))
                        .map_err(io("upper directory"))?;
                }
                Some(staged)
            }
            None => None,
        };
        let lower = staged
            .as_ref()
            .map_or(&lowers, |s| &s.0)
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower,
            rw.join("upper").display(),
            rw.join("work").display()
        );
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| Error::Internal(format!("mount rootfs overlay: {e}")))?;
        // The overlay holds its own references to the layers' mounts.
        drop(staged);
        inroot::mkdir_all(&rootfs, &config.cwd, owner).map_err(|e| {
            Error::invalid(
                "cwd",
                format!("{} cannot be made in the image: {e}", config.cwd),
            )
        })?;
        for (i, m) in config.mounts.iter().enumerate() {
            match &m.origin {
                Some(o) if !Path::new(o).is_dir() => {
                    return Err(Error::invalid(
                        format!("mounts[{i}].origin"),
                        format!("{o} is not a directory on the host"),
                    ))
                }
                // A host directory is not bound: its guard covers this
                // directory and serves the host one behind it.
                _ => inroot::mkdir_all(&rootfs, &m.path, owner).map_err(|e| {
                    Error::invalid(
                        format!("mounts[{i}].path"),
                        format!("{} cannot be made in the image: {e}", m.path),
                    )
                })?,
            }
        }

        let ip = slot.ip;
        let host_gateway = config
            .extra_hosts
            .iter()
            .any(|h| h.split_once(':').is_some_and(|(_, a)| a == "host-gateway"));
        if host_gateway {
            // Recorded with the slot: undone when the sandbox goes.
            self.net.allow_host_gateway(&mut slot).await?;
            record(&slot)?;
        }
        let host = spec::hostname(&id.to_string());
        let etc = dir.join("etc");
        let mut hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{host}\n"
        );
        for h in &config.extra_hosts {
            if let Some((name, addr)) = h.split_once(':') {
                let addr = if addr == "host-gateway" {
                    self.net.gateway_of(&slot).to_string()
                } else {
                    addr.to_string()
                };
                hosts.push_str(&format!("{addr}\t{name}\n"));
            }
        }
        if config.network.is_some() {
            // Its peers' names go below this ([`Runtime::set_peers`]).
            std::fs::write(dir.join("hosts.base"), &hosts).map_err(io("hosts"))?;
        }
        std::fs::write(etc.join("hosts"), hosts).map_err(io("hosts"))?;
        std::fs::write(etc.join("hostname"), format!("{host}\n")).map_err(io("hostname"))?;
        std::fs::write(etc.join("resolv.conf"), net::Network::resolv_conf())
            .map_err(io("resolv.conf"))?;
        Ok(())
    }

    /// Where the agent listens; out of the sandbox's sight.
    fn agent_socket(&self, id: Uuid) -> PathBuf {
        self.dir(id).join("agent.sock")
    }

    async fn run(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance> {
        let dir = self.dir(id);
        // The agent's socket is bound here, before the sandbox starts, and
        // handed to the agent as fd 3 (`--preserve-fds 1`, `--listen-fd 3`):
        // the daemon connects at once and its hello waits in the backlog
        // until the agent accepts, instead of polling for the socket on
        // tokio's 1 ms timer (which cost a create ~1 ms at the median).
        let identity = self.identity(id)?;
        let sock = self.agent_socket(id);
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(io("agent socket"))?;
        let slot = self
            .slot(id)
            .ok_or_else(|| Error::Internal(format!("sandbox {id} has no network namespace")))?;
        let netns = slot.path();
        let userns_fd = match slot.ids {
            Some(_) => Some(paddock_host::userns::open(&slot.netns)?),
            None => None,
        };
        let host_binds = match config.resolved_image {
            Some(_) => Vec::new(),
            None => self.host_binds.clone(),
        };
        // In a user namespace, what the sandbox reads of the host's (its
        // /usr and /etc, and its own hosts, hostname and resolv.conf, which
        // the daemon writes) is seen through idmapped mounts: root's files
        // are its root's.
        let (host_binds, etc_dir, _idmapped) = match &userns_fd {
            Some(ns) => {
                let mut staged = Staged(Vec::new());
                let mut stage = |src: &Path, name: String| -> Result<PathBuf> {
                    let at = dir.join("h").join(name);
                    std::fs::create_dir_all(&at).map_err(io("host mount point"))?;
                    paddock_host::userns::idmapped_bind(src, &at, ns, true)?;
                    staged.0.push(at.clone());
                    Ok(at)
                };
                let mut binds = Vec::new();
                for (i, (src, dst)) in host_binds.iter().enumerate() {
                    let at = stage(Path::new(src), i.to_string())?;
                    binds.push((at.to_string_lossy().into_owned(), dst.clone()));
                }
                let etc = stage(&dir.join("etc"), "etc".into())?;
                (binds, etc, staged)
            }
            None => (host_binds, dir.join("etc"), Staged(Vec::new())),
        };
        // Volumes: their directories on the host, idmapped in a user
        // namespace like the rest.
        let mut volumes = Vec::new();
        let mut staged_volumes = Staged(Vec::new());
        for (i, v) in config.volumes.iter().enumerate() {
            let src = match &userns_fd {
                Some(ns) => {
                    let at = dir.join("h").join(format!("v{i}"));
                    std::fs::create_dir_all(&at).map_err(io("volume mount point"))?;
                    paddock_host::userns::idmapped_bind(
                        Path::new(&v.source),
                        &at,
                        ns,
                        v.read_only,
                    )?;
                    staged_volumes.0.push(at.clone());
                    at.to_string_lossy().into_owned()
                }
                None => v.source.clone(),
            };
            inroot::mkdir_all(&dir.join("rootfs"), &v.path, slot.ids.map(|r| r.base)).map_err(
                |e| {
                    Error::invalid(
                        format!("volumes[{i}].path"),
                        format!("{} cannot be made in the image: {e}", v.path),
                    )
                },
            )?;
            volumes.push((src, v.path.clone(), v.read_only));
        }
        let userns = slot
            .ids
            .map(|r| (paddock_host::userns::path(&slot.netns), r));
        let mut spec = spec::build(&spec::SpecInput {
            id: &id.to_string(),
            rootfs: &dir.join("rootfs"),
            identity: &identity,
            etc_dir: &etc_dir,
            agent: &self.agent,
            host_binds: &host_binds,
            volumes: &volumes,
            netns: Some(&netns),
            userns: userns.as_ref().map(|(p, r)| (p.as_path(), *r)),
            cgroup: &cgroup::rel_path(&id),
            config,
        })?;
        // A filter crun compiled for an earlier sandbox with this profile.
        let seccomp = self
            .seccomp
            .as_ref()
            .and_then(|c| Some((c, c.offer(&mut spec)?)));
        // Written aside and renamed: on a start after a stop the sandbox's
        // disk may be full, and then the spec written at its first boot
        // (from the same configuration) serves.
        let config_json = dir.join("bundle/config.json");
        let fresh = dir.join("bundle/config.json.new");
        if let Err(e) = spec
            .save(&fresh)
            .map_err(std::io::Error::other)
            .and_then(|()| std::fs::rename(&fresh, &config_json))
        {
            let _ = std::fs::remove_file(&fresh);
            if !config_json.exists() {
                return Err(Error::Internal(format!("write config.json: {e}")));
            }
            tracing::warn!(sandbox = %id, "config.json kept from the last start: {e}");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .map_err(io("agent log"))?;
        let bundle = dir.join("bundle");
        let pid_file = dir.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let args = [
            self.oci.clone(),
            "--root".into(),
            self.state_root.to_string_lossy().into_owned(),
            "run".into(),
            "-d".into(),
            "--preserve-fds".into(),
            "1".into(),
            "--pid-file".into(),
            pid_file.to_string_lossy().into_owned(),
            "--bundle".into(),
            bundle.to_string_lossy().into_owned(),
            id.to_string(),
        ];
        let t0 = std::time::Instant::now();
        let status = cmd::spawn_wait(&self.oci_exe, &args, &log, listener.as_fd())
            .await
            .map_err(io(&self.oci))?;
        tracing::debug!(sandbox = %id, oci_run = ?t0.elapsed(), "{} run -d", self.oci);
        // The agent holds its own copy.
        drop(listener);
        if let Some((cache, used)) = seccomp {
            let bpf = self.state_root.join(id.to_string()).join("seccomp.bpf");
            cache.settle(used, status.success(), &bpf);
        }
        if !status.success() {
            let tail = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(Error::Internal(format!("{} run failed: {tail}", self.oci)));
        }
        self.instance(id)
            .ok_or_else(|| Error::Internal(format!("sandbox {id}: its identity is gone")))
    }
}

/// Mounts staged in the sandbox's directory where the OCI runtime (or the
/// overlay) picks them up, unmounted once it is done (the sandbox keeps
/// its own copy of each mount).
struct Staged(Vec<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = umount2(p, MntFlags::MNT_DETACH);
            if std::fs::remove_dir(p).is_err() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The host directory `origin` (checked by the engine) for a guard to
/// serve; a host directory is never bound in, only served by its guard.
/// It is opened with `openat2(RESOLVE_NO_SYMLINKS)`: a symlink put anywhere
/// on the path since the check fails the guard instead of being followed,
/// and what is served is the very directory opened, whatever happens to
/// the path meanwhile. In a user namespace (`ids`) it is a detached
/// idmapped copy in which the directory's owner (uid and gid) on the host
/// is the sandbox's root and no other host user is anyone inside: its
/// root reads and writes there as the directory's owner would, what it
/// makes is that owner's on the host, and files of other host users are
/// nobody's to it, out of reach of its capabilities.
fn origin_tree(
    origin: &str,
    ids: Option<paddock_host::userns::IdRange>,
) -> Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(nix::fcntl::AT_FDCWD, origin, how).map_err(|e| {
        Error::forbidden_field(
            "mounts",
            format!("{origin} cannot be opened as a directory without following symlinks: {e}"),
        )
    })?;
    let Some(r) = ids else { return Ok(fd) };
    let st =
        nix::sys::stat::fstat(&fd).map_err(|e| Error::Internal(format!("stat {origin}: {e}")))?;
    let ns = paddock_host::userns::with_maps(
        &format!("{} {} 1\n", st.st_uid, r.base),
        &format!("{} {} 1\n", st.st_gid, r.base),
    )?;
    paddock_host::userns::idmapped_clone(fd.as_fd(), Path::new(origin), &ns, false)
}

#[async_trait]
impl Runtime for ContainerRuntime {
    /// The OCI runtime's name: `crun` or `runc`.
    fn name(&self) -> &str {
        std::path::Path::new(&self.oci)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("crun")
    }

    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    fn capabilities(&self) -> paddock_core::Capabilities {
        paddock_core::Capabilities {
            pause: true,
            fs_snapshot: true,
            fork: true,
            volumes: true,
            shares_host_kernel: true,
            fd_handover: true,
            guarded_mounts: true,
            networks: true,
            ..Default::default()
        }
    }

    async fn ensure_network(&self, id: &str, subnet: Option<&str>) -> Result<String> {
        self.net.ensure_network(id, subnet).await
    }

    async fn remove_network(&self, id: &str) -> Result<()> {
        self.net.remove_network(id).await
    }

    /// Rewrites the sandbox's /etc/hosts (its own lines, then one per
    /// peer), in place: the file is bound into the sandbox read-only, so
    /// its inode must stay.
    async fn set_peers(&self, id: Uuid, peers: &[paddock_core::Peer]) -> Result<()> {
        let dir = self.dir(id);
        let mut hosts = std::fs::read_to_string(dir.join("hosts.base")).map_err(io("hosts"))?;
        if !peers.is_empty() {
            hosts.push_str("# the other sandboxes of its network\n");
        }
        for p in peers {
            let mut names = p.names.clone();
            if let Some(first) = p.names.first() {
                names.insert(1, spec::hostname(first));
            }
            names.dedup();
            hosts.push_str(&format!("{}\t{}\n", p.ip, names.join(" ")));
        }
        std::fs::write(dir.join("etc/hosts"), hosts).map_err(io("hosts"))
    }

    async fn create(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance> {
        if config.image.is_some() && config.resolved_image.is_none() {
            return Err(Error::invalid("image", "the image was not resolved"));
        }
        let t0 = std::time::Instant::now();
        let prepared = self.prepare(id, config).await;
        let t1 = t0.elapsed();
        let inst = match prepared {
            Ok(()) => self.run(id, config).await,
            Err(e) => Err(e),
        };
        self.net.refill();
        let inst = inst?;
        tracing::debug!(sandbox = %id, prepare = ?t1, run = ?(t0.elapsed() - t1), "container created");
        Ok(inst)
    }

    async fn guard(
        &self,
        id: Uuid,
        m: &paddock_core::model::Mount,
        agent: &dyn paddock_core::Agent,
    ) -> Result<()> {
        let pid = self
            .init_pid(id)
            .ok_or_else(|| Error::Internal(format!("sandbox {id} has no init process")))?;
        let ids = self.slot(id).and_then(|s| s.ids);
        let (path, origin) = (m.path.clone(), m.origin.clone());
        let (fuse, target, backing) = tokio::task::spawn_blocking(move || -> Result<_> {
            let target = paddock_host::fuse::open_dir_in(pid, &path)?;
            let backing = match origin {
                None => target.try_clone().map_err(io("guarded mount"))?,
                Some(o) => origin_tree(&o, ids)?,
            };
            Ok((paddock_host::fuse::detached()?, target, backing))
        })
        .await
        .map_err(Error::internal)??;
        let paddock_host::fuse::Detached { dev, mount } = fuse;
        let offset = ids.map_or(0, |r| r.base);
        agent
            .guard(&m.path, &m.acls, offset, Some([dev, backing]))
            .await?;
        tokio::task::spawn_blocking(move || {
            paddock_host::fuse::attach_in(pid, mount.as_fd(), target.as_fd())
        })
        .await
        .map_err(Error::internal)?
    }

    async fn serve_guards(&self, id: Uuid, agent: &dyn paddock_core::Agent) -> Result<()> {
        let conn = agent.registrar().await?;
        let ids = self
            .slot(id)
            .and_then(|s| s.ids)
            .map(|r| (r.base, paddock_host::userns::RANGE));
        std::thread::Builder::new()
            .name("guard-registrar".into())
            .spawn(move || paddock_host::fuse::serve_backings(conn, ids))
            .map_err(io("registrar thread"))?;
        Ok(())
    }

    async fn start(&self, id: Uuid, config: &SandboxConfig) -> Result<Instance> {
        if !is_mounted(&self.dir(id).join("rootfs")) {
            return Err(Error::Conflict(format!(
                "sandbox {id} has no filesystem left to start"
            )));
        }
        let _ = self.oci(&["delete", "-f", &id.to_string()]).await;
        self.run(id, config).await
    }

    async fn stop(&self, id: Uuid) -> Result<()> {
        let sid = id.to_string();
        let _ = self.oci(&["kill", &sid, "KILL"]).await;
        for _ in 0..200 {
            match self.oci_status(id).await.as_deref() {
                Some("running") | Some("paused") | Some("pausing") => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => break,
            }
        }
        let _ = self.oci(&["delete", "-f", &sid]).await;
        Ok(())
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        self.oci(&["pause", &id.to_string()]).await.map(|_| ())
    }

    async fn attach_volume(&self, id: Uuid, m: &paddock_core::model::VolumeMount) -> Result<()> {
        // The recorded init must still be this sandbox's (in its cgroup): a
        // reused pid would put the volume in another process's namespace.
        let pid = match (self.init_alive(id), self.init_pid(id)) {
            (Some(true), Some(pid)) => pid,
            _ => return Err(Error::Conflict(format!("sandbox {id} is not running"))),
        };
        let slot = self.slot(id);
        let owner = slot.as_ref().and_then(|s| s.ids).map(|r| r.base);
        let userns = match slot.as_ref().filter(|s| s.ids.is_some()) {
            Some(s) => Some(paddock_host::userns::open(&s.netns)?),
            None => None,
        };
        let rootfs = self.dir(id).join("rootfs");
        inroot::mkdir_all(&rootfs, &m.path, owner).map_err(|e| {
            Error::invalid(
                "path",
                format!("{} cannot be made in the sandbox: {e}", m.path),
            )
        })?;
        let (source, path, ro) = (PathBuf::from(&m.source), m.path.clone(), m.read_only);
        tokio::task::spawn_blocking(move || {
            paddock_host::volume::attach_in(pid, &rootfs, &source, &path, userns.as_ref(), ro)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn detach_volume(&self, id: Uuid, m: &paddock_core::model::VolumeMount) -> Result<()> {
        // Gone with its processes when its init is (a reused pid is not
        // this sandbox's: nothing of it to unmount).
        let pid = match (self.init_alive(id), self.init_pid(id)) {
            (Some(true), Some(pid)) => pid,
            _ => return Ok(()),
        };
        use std::os::unix::fs::MetadataExt;
        let src = std::fs::metadata(&m.source).map_err(io("volume directory"))?;
        let root = (src.dev(), src.ino());
        let path = m.path.clone();
        // Frozen: nothing inside swaps the path between the check and the
        // unmount.
        self.pause(id).await?;
        let done =
            tokio::task::spawn_blocking(move || paddock_host::volume::detach_in(pid, &path, root))
                .await;
        if let Err(e) = self.resume(id).await {
            tracing::warn!(sandbox = %id, "thaw after a detach: {e}");
        }
        done.map_err(Error::internal)?
    }

    /// Copies the overlay's upper directory (a tmpfs: nothing to flush),
    /// owners shifted back from the sandbox's range, while its processes
    /// are frozen.
    async fn capture(&self, id: Uuid, into: &Path, running: bool) -> Result<u64> {
        let upper = self.dir(id).join("rw").join("upper");
        if !upper.is_dir() {
            return Err(Error::Conflict(format!(
                "sandbox {id} has no filesystem left to capture"
            )));
        }
        let shift = self
            .slot(id)
            .and_then(|s| s.ids)
            .map(|r| paddock_host::layer::Shift {
                base: r.base,
                len: paddock_host::userns::RANGE,
            });
        if running {
            self.pause(id).await?;
        }
        let into = into.to_path_buf();
        let copied = tokio::task::spawn_blocking(move || {
            paddock_host::layer::copy_layer(&upper, &into, shift)
        })
        .await;
        if running {
            // Thawed whatever the copy came to.
            if let Err(e) = self.resume(id).await {
                tracing::warn!(sandbox = %id, "thaw after a capture: {e}");
            }
        }
        match copied.map_err(Error::internal)? {
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(Error::Unavailable {
                what: "snapshot storage".into(),
                reason: "the disk holding the daemon's data is full".into(),
            }),
            Err(e) => Err(Error::Internal(format!("capture of sandbox {id}: {e}"))),
        }
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        self.oci(&["resume", &id.to_string()]).await.map(|_| ())
    }

    async fn destroy(&self, id: Uuid) -> Result<()> {
        let dir = self.dir(id);
        let slot = self.slot(id);
        if self.oci_status(id).await.is_some() {
            if let Err(e) = self.oci(&["delete", "-f", &id.to_string()]).await {
                tracing::warn!(sandbox = %id, "{e}");
            }
        }
        // (`rw` was the disk's mount point before it covered the whole
        // directory: sandboxes made by an older daemon still have it.)
        let (rootfs, rw) = (dir.join("rootfs"), dir.join("rw"));
        for m in mounted(&[&rootfs, &rw, &dir]) {
            if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
                tracing::warn!(sandbox = %id, "umount {}: {e}", m.display());
            }
        }
        if let Some(slot) = slot {
            self.net.recycle(slot).await;
        }
        cgroup::remove(&cgroup::rel_path(&id));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
        }
        Ok(())
    }

    async fn inspect(&self, id: Uuid) -> Result<(Liveness, Option<Instance>)> {
        let Some(inst) = self.instance(id) else {
            // Made before agents had identities: its agent's socket was
            // where the sandbox could replace it. Not to be trusted.
            tracing::warn!(sandbox = %id, "no agent identity (made by an older Paddock): treated as gone");
            return Ok((Liveness::Missing, None));
        };
        // The common case without running the OCI runtime (a process each,
        // which made a restart with 1000 sandboxes take seconds): the init
        // recorded at start still lives in the sandbox's cgroup, and the
        // cgroup is not frozen.
        if self.init_alive(id) == Some(true) {
            match cgroup::frozen(&cgroup::rel_path(&id)) {
                Some(false) => return Ok((Liveness::Running, Some(inst))),
                Some(true) => return Ok((Liveness::Paused, Some(inst))),
                None => {}
            }
        }
        Ok(match self.oci_status(id).await.as_deref() {
            Some("running") => (Liveness::Running, Some(inst)),
            Some("paused") => (Liveness::Paused, Some(inst)),
            _ if is_mounted(&self.dir(id).join("rootfs")) => (Liveness::Stopped, None),
            _ => (Liveness::Missing, None),
        })
    }

    async fn metrics(&self, id: Uuid) -> Result<Metrics> {
        let rel = cgroup::rel_path(&id);
        let slot = self.slot(id);
        let veth = slot.as_ref().map(|s| s.veth.clone()).unwrap_or_default();
        let t0 = std::time::Instant::now();
        let c0 = cgroup::cpu_usage_ns(&rel);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut m = cgroup::sample(&rel, &veth);
        // The disk: the tmpfs over the sandbox's directory (`prepare`).
        if let Ok(fs) = nix::sys::statvfs::statvfs(&self.dir(id)) {
            let block = fs.fragment_size();
            m.disk_limit_bytes = fs.blocks().saturating_mul(block);
            m.disk_bytes = fs
                .blocks()
                .saturating_sub(fs.blocks_free())
                .saturating_mul(block);
        }
        if let Some(s) = &slot {
            // The host end receives what the sandbox sends.
            m.net_tx_bytes = m.net_tx_bytes.saturating_sub(s.rx_base);
            m.net_rx_bytes = m.net_rx_bytes.saturating_sub(s.tx_base);
        }
        if let (Some(c0), Some(c1)) = (c0, cgroup::cpu_usage_ns(&rel)) {
            let wall = t0.elapsed().as_nanos() as f64;
            m.cpu_percent = (c1.saturating_sub(c0)) as f64 * 100.0 / wall;
        }
        if m.memory_limit_bytes == 0 && m.memory_bytes == 0 && m.pids == 0 {
            return Err(Error::Unavailable {
                what: format!("metrics of sandbox {id}"),
                reason: "its cgroup is gone".into(),
            });
        }
        Ok(m)
    }

    async fn alive(&self, ids: &[Uuid]) -> std::collections::HashMap<Uuid, bool> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            // A few file reads each, done on the caller's worker thread: let
            // requests in between (1000 sandboxes make tens of ms a round).
            if i % 32 == 31 {
                tokio::task::yield_now().await;
            }
            if let Some(alive) = self.init_alive(id) {
                out.insert(id, alive);
            }
        }
        out
    }

    async fn gc(&self, keep: &[Uuid]) -> Result<usize> {
        let mut n = 0;
        let mut seen = std::collections::HashSet::new();
        if let Ok(rd) = std::fs::read_dir(&self.sandboxes) {
            for e in rd.flatten() {
                if let Ok(id) = Uuid::parse_str(&e.file_name().to_string_lossy()) {
                    seen.insert(id);
                }
            }
        }
        if let Ok(out) = self.oci(&["list", "-q"]).await {
            for l in out.lines() {
                if let Ok(id) = Uuid::parse_str(l.trim()) {
                    seen.insert(id);
                }
            }
        }
        for id in seen {
            if !keep.contains(&id) {
                self.destroy(id).await?;
                n += 1;
            }
        }
        let kept: Vec<String> = keep
            .iter()
            .filter_map(|id| self.slot(*id))
            .map(|s| s.netns)
            .collect();
        n += self.net.gc(&kept).await;
        Ok(n)
    }

    async fn shutdown(&self) {
        self.net.drain().await;
    }

    async fn teardown(&self) {
        self.net.teardown().await;
    }
}

/// Memory of a sandbox that its files never take (see [`disk_size_mb`]).
const MEMORY_KEPT_MB: i64 = 16;

/// A sandbox's `/dev`, a tmpfs of its own: device nodes take no room.
pub const DEV_MB: i64 = 1;

/// A sandbox's `/dev/shm` in MiB: 64, as Docker gives, or a quarter of the
/// memory of a smaller sandbox.
pub fn shm_size_mb(memory_mb: i64) -> i64 {
    64.min(memory_mb / 4)
}

/// The size of a sandbox's disk, a tmpfs, in MiB: what it asked for, but
/// no more than its memory less [`MEMORY_KEPT_MB`] and its other tmpfs
/// mounts (`/dev/shm`, `/dev`), and no less than a quarter of its memory.
/// A tmpfs page is charged to the memory cgroup of whoever allocates it
/// and cannot be reclaimed (there is no swap), so with a disk larger than
/// its memory a sandbox that filled its disk filled its memory limit: the
/// OOM killer killed the writers, which freed nothing, and then the agent,
/// and the sandbox died. Now a full disk is `ENOSPC` to the writer, and
/// the sandbox keeps memory to run in.
pub fn disk_size_mb(disk_mb: i64, memory_mb: i64) -> i64 {
    let room = memory_mb - MEMORY_KEPT_MB - shm_size_mb(memory_mb) - DEV_MB;
    disk_mb.min(room.max(memory_mb / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_leave_the_sandbox_memory_to_run_in() {
        // The defaults: 512 MiB of memory, 1 GiB of disk asked for.
        assert_eq!(shm_size_mb(512), 64);
        assert_eq!(disk_size_mb(1024, 512), 431);
        assert_eq!(disk_size_mb(100, 512), 100);
        assert_eq!((shm_size_mb(64), disk_size_mb(256, 64)), (16, 31));
        // The smallest sandbox still gets a disk.
        assert_eq!((shm_size_mb(16), disk_size_mb(1024, 16)), (4, 4));
    }
}
