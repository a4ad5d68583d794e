//! The OCI runtime spec (config.json) of a sandbox.
//!
//! Written as JSON for readability and parsed into `oci_spec::runtime::Spec`,
//! which checks its shape, before it is saved.

use std::path::Path;

use paddock_core::model::SandboxConfig;
use paddock_core::{Error, Result};
use serde_json::{json, Value};

/// Capabilities a sandbox keeps (Docker's default set less MKNOD and
/// NET_RAW: no raw or packet sockets, so no forged frames; ping works
/// through ICMP echo sockets, which `ping_group_range` opens to all).
pub const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths masked from the sandbox: runc's defaults plus secrets under /etc
/// (the default image's /etc has none of them, `etc.rs`; an image's own
/// are masked too).
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub struct SpecInput<'a> {
    pub id: &'a str,
    pub rootfs: &'a Path,
    /// What the agent names in its greeting (given in its environment,
    /// which it drops before it runs anything).
    pub identity: &'a paddock_proto::identity::Identity,
    pub etc_dir: &'a Path,
    pub agent: &'a Path,
    /// Host directories bound read-only (host path, sandbox path).
    pub host_binds: &'a [(String, String)],
    /// Volumes (host path, sandbox path, read-only).
    pub volumes: &'a [(String, String, bool)],
    pub netns: Option<&'a Path>,
    /// The sandbox's user namespace (kept by the daemon, owner of `netns`)
    /// and its range of host ids; none: the host's.
    pub userns: Option<(&'a Path, paddock_host::userns::IdRange)>,
    pub cgroup: &'a str,
    pub config: &'a SandboxConfig,
}

fn bind(src: &str, dst: &str, ro: bool) -> Value {
    let mut opts = vec!["rbind", "nosuid", "nodev"];
    if ro {
        opts.push("ro");
    }
    json!({"destination": dst, "type": "bind", "source": src, "options": opts})
}

pub fn build(i: &SpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let c = i.config;
    let mut args = vec![
        "/.paddock/paddock-agent".to_string(),
        // agent.sock, bound by the runtime before the sandbox starts
        // (`run`), outside the sandbox's filesystem.
        "--listen-fd".into(),
        "3".into(),
        // Open files per process, sized to the sandbox's memory (each costs
        // kernel memory, charged to it): 32 per MiB, from 1024 to 65536,
        // and never above the daemon's own limit. Set by the agent (see
        // its `--nofile`), not the OCI runtime.
        "--nofile".into(),
        nofile(c.memory_mb).to_string(),
    ];
    let main = c.main_process();
    if !main.is_empty() && c.mounts.iter().any(|m| m.needs_guard()) {
        // Until the engine has guarded them (after the runtime is done).
        args.push("--hold-main".into());
    }
    if !main.is_empty() && c.restart == paddock_core::model::RestartPolicy::Always {
        args.push("--restart-main".into());
    }
    if !main.is_empty() {
        args.push("--".into());
        args.extend(main);
    }
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
        "TERM=xterm".into(),
        "LANG=C.UTF-8".into(),
        format!("HOSTNAME={}", hostname(i.id)),
        format!("PADDOCK_SANDBOX_ID={}", i.id),
    ];
    for (k, v) in &c.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    env.retain(|e| !e.starts_with(&format!("{}=", paddock_proto::identity::ENV)));
    env.push(format!(
        "{}={}",
        paddock_proto::identity::ENV,
        i.identity.to_hex()
    ));

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        // Both tmpfs mounts are held in the sandbox's memory, like its disk
        // (`disk_size_mb`), and sized with it.
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", format!("size={}m", crate::DEV_MB)]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777",
                           format!("size={}m", crate::shm_size_mb(c.memory_mb))]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for (src, dst) in i.host_binds {
        mounts.push(bind(src, dst, true));
    }
    let etc = |f: &str| i.etc_dir.join(f).to_string_lossy().into_owned();
    mounts.push(bind(&etc("hosts"), "/etc/hosts", true));
    mounts.push(bind(&etc("hostname"), "/etc/hostname", true));
    mounts.push(bind(&etc("resolv.conf"), "/etc/resolv.conf", true));
    for (src, dst, ro) in i.volumes {
        mounts.push(bind(src, dst, *ro));
    }
    // Host directories the caller asked for are not bound: each is served
    // by its guard (`Runtime::guard`), after the OCI runtime is done.
    mounts.push(bind(
        &i.agent.to_string_lossy(),
        "/.paddock/paddock-agent",
        true,
    ));

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match i.netns {
        Some(p) => namespaces.push(json!({"type": "network", "path": p})),
        None => namespaces.push(json!({"type": "network"})),
    }
    // The maps are the namespace's own (the daemon wrote them); runc wants
    // them named in the config too.
    let maps = i.userns.map(|(p, r)| {
        namespaces.push(json!({"type": "user", "path": p}));
        json!([{"containerID": 0, "hostID": r.base, "size": paddock_host::userns::RANGE}])
    });

    let period: u64 = 100_000;
    let memory = (c.memory_mb as u64) << 20;
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": c.cwd,
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
                "inheritable": [], "ambient": []
            },
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        },
        "root": {"path": i.rootfs, "readonly": false},
        "hostname": hostname(i.id),
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroup,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": (c.cpu * period as f64).round() as i64, "period": period},
                "pids": {"limit": c.pids}
            },
            "namespaces": namespaces,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "seccomp": crate::syscalls::profile()
        }
    });
    // Reservations below the limits: a share of the CPUs under contention
    // (1024 per core, as cgroup v1 counts them; crun maps it to v2's
    // weight) and memory kept from reclaim.
    if let Some(r) = c.cpu_request {
        spec["linux"]["resources"]["cpu"]["shares"] = json!(((r * 1024.0).round() as u64).max(2));
    }
    if let Some(r) = c.memory_request_mb {
        spec["linux"]["resources"]["memory"]["reservation"] = json!((r as u64) << 20);
    }
    if let Some(m) = maps {
        spec["linux"]["uidMappings"] = m.clone();
        spec["linux"]["gidMappings"] = m;
    }
    serde_json::from_value(spec).map_err(|e| Error::Internal(format!("OCI spec: {e}")))
}

/// Open files per process in a sandbox of `memory_mb`.
pub fn nofile(memory_mb: i64) -> u64 {
    (memory_mb.max(0) as u64 * 32).clamp(1024, 65536)
}

pub fn hostname(id: &str) -> String {
    format!("sb-{}", &id.replace('-', "")[..12.min(id.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::model::SandboxSpec;

    #[test]
    fn spec_has_limits_and_isolation() {
        let cfg = SandboxSpec {
            memory_mb: Some(256),
            cpu: Some(0.5),
            command: Some(vec!["sleep".into(), "1".into()]),
            ..Default::default()
        }
        .resolve(&paddock_core::model::Limits {
            max_cpu: 2.0,
            ..Default::default()
        })
        .unwrap();
        let spec = build(&SpecInput {
            id: "6f1c4a8e-0000-4000-8000-000000000000",
            rootfs: Path::new("/tmp/r"),
            identity: &paddock_proto::identity::Identity::generate().unwrap(),
            etc_dir: Path::new("/tmp/etc"),
            agent: Path::new("/usr/local/bin/paddock-agent"),
            host_binds: &[("/usr".into(), "/usr".into())],
            volumes: &[],
            netns: Some(Path::new("/var/run/netns/x")),
            userns: None,
            cgroup: "/paddock/x",
            config: &cfg,
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 256u64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 1024);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        let args: Vec<String> = serde_json::from_value(v["process"]["args"].clone()).unwrap();
        assert_eq!(&args[args.len() - 3..], ["--", "sleep", "1"]);
        let ns: Vec<String> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        for want in ["pid", "ipc", "uts", "mount", "cgroup", "network"] {
            assert!(ns.iter().any(|n| n == want), "{want} missing from {ns:?}");
        }
        assert!(!v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"));
    }
}
