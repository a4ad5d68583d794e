//! `paddock bench`: measures a running daemon through its native API, as a
//! client would see it: create-to-ready (cold, and from a warm pool when the
//! daemon keeps one), exec round trip, exec stdout throughput, file upload
//! and download throughput, and host memory per idle sandbox; then the same
//! figures for peers on this machine (`bench_peers`), with Paddock's ratio
//! to each.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use paddock_client::wire as w;
use paddock_client::{Endpoint, Upload};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Sandboxes created one after another for create-to-ready.
    #[arg(long, default_value_t = 30)]
    pub creates: usize,
    /// Exec round trips of `true`, twice: the host's busybox `true`, as
    /// the peers run it (where the sandbox has it), and a bare `true`
    /// without libc, the exec path alone.
    #[arg(long, default_value_t = 300)]
    pub execs: usize,
    /// MiB moved each way for the file figures.
    #[arg(long, default_value_t = 64)]
    pub file_mib: usize,
    /// Idle sandboxes held at once for the density figure (0: skip).
    #[arg(long, default_value_t = 300)]
    pub density: usize,
    /// Sandboxes created at once for the concurrent-create figure (0: skip).
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// Also measure this image: create-to-ready from the cache, and pulls
    /// with nothing cached (the daemon must reach its registry).
    #[arg(long)]
    pub image: Option<String>,
    /// Peers measured next to Paddock on this machine (run the bench where
    /// the daemon runs): a bare busybox OCI bundle under crun or runc,
    /// podman with that root as an image; comma-separated, `none` for
    /// none. Missing ones are skipped with a note.
    #[arg(long, default_value = "crun,runc,podman")]
    pub peers: String,
    /// Only these groups of figures, comma-separated: create, warm, exec,
    /// sse, ws (exec stdout through either), files, acl, snapshot, wake,
    /// ingress, concurrent, image, density, ssh, boxd, restart (default:
    /// all but restart).
    #[arg(long, value_delimiter = ',', value_parser = ["create", "warm", "exec", "sse", "ws", "files", "acl", "snapshot", "wake", "ingress", "concurrent", "image", "density", "ssh", "boxd", "restart"])]
    pub only: Vec<String>,
    /// The daemon's SSH gateway (`serve --ssh-listen`), for the `ssh`
    /// figures: `ssh box true` there, and `ssh localhost true` against a
    /// private host sshd beside it.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub ssh: std::net::SocketAddr,
    /// The daemon's boxd dialect (`serve --boxd-listen`), for the `boxd`
    /// figures: `true` through its gRPC Exec stream beside the native
    /// API's exec.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub boxd: std::net::SocketAddr,
    /// Round trips each way for the `boxd` figures.
    #[arg(long, default_value_t = 200)]
    pub boxd_runs: usize,
    /// Requests each way for the `ingress` figures.
    #[arg(long, default_value_t = 300)]
    pub ingress_runs: usize,
    /// Round trips for the `ssh` figures.
    #[arg(long, default_value_t = 30)]
    pub ssh_runs: usize,
}

impl BenchArgs {
    pub(crate) fn wants(&self, group: &str) -> bool {
        if self.only.is_empty() {
            // Restarting the daemon is asked for by name only.
            return group != "restart";
        }
        self.only.iter().any(|g| g == group)
    }
}

/// Runs `cmd` on the host `n` times (spawned and waited for, as the agent
/// does in a sandbox); each run in ms.
fn command_alone(cmd: &[String], n: usize) -> Result<Vec<f64>> {
    use std::process::{Command, Stdio};
    let mut t = Vec::new();
    for i in 0..n + 20 {
        let t0 = Instant::now();
        let st = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", cmd.join(" ")))?;
        if !st.success() {
            bail!("{}: {st}", cmd.join(" "));
        }
        if i >= 20 {
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(t)
}

/// Where the bare `true` goes: in a sandbox, and in the peers' root as
/// `/bin/bare-true`.
pub(crate) const BARE_TRUE: &str = "/tmp/paddock-bench-bare-true";

/// A `true` with nothing but `exit(0)`: a 129-byte static x86-64 ELF, one
/// loaded page, no libc. The exec figures run it next to busybox's `true`
/// because on a VM a libc's start-up can outweigh the exec path being
/// measured (glibc's costs ~0.5 ms where every CPUID traps to the
/// hypervisor); with this one, what is timed is the exec path alone, the
/// same command in Paddock and in every peer. Made here rather than built:
/// the bench needs no toolchain, and the bytes are few enough to read.
pub(crate) fn bare_true() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    // mov eax, 60 (exit); xor edi, edi (status 0); syscall
    const CODE: [u8; 9] = [0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    let size = (EHDR + PHDR) as u64 + CODE.len() as u64;
    let mut e = Vec::with_capacity(size as usize);
    // ELF header: magic, 64-bit, little-endian, version 1, System V ABI.
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    e.extend_from_slice(&1u32.to_le_bytes()); // e_version
    e.extend_from_slice(&(BASE + (EHDR + PHDR) as u64).to_le_bytes()); // e_entry
    e.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&EHDR.to_le_bytes()); // e_ehsize
    e.extend_from_slice(&PHDR.to_le_bytes()); // e_phentsize
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx

    // One PT_LOAD, read and execute, mapping the whole file at BASE.
    e.extend_from_slice(&1u32.to_le_bytes()); // p_type
    e.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    e.extend_from_slice(&size.to_le_bytes()); // p_filesz
    e.extend_from_slice(&size.to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    e.extend_from_slice(&CODE);
    debug_assert_eq!(e.len() as u64, size);
    e
}

/// The exec figures of the bare `true` (`bare_true`): its round trip in
/// sandbox `id`, and its floor alone on the host (`exec_figures`).
async fn exec_bare(
    api: &Api,
    id: &str,
    execs: usize,
    say: &dyn Fn(&str),
) -> Result<(Value, Option<Value>)> {
    if !cfg!(target_arch = "x86_64") {
        bail!("the bare `true` is an x86-64 program");
    }
    let exe = Upload {
        mode: Some(0o755),
        ..Default::default()
    };
    api.c
        .upload(id, BARE_TRUE, &exe, bare_true())
        .await
        .with_context(|| format!("uploading {BARE_TRUE}"))?;
    say(&format!(
        "exec round trip: {execs} × a bare `true` (no libc)"
    ));
    // On the host, from a file of its own (kept until the floor is taken).
    let dir = tempfile::tempdir()?;
    let on_host = dir.path().join("bare-true");
    write_executable(&on_host, &bare_true())?;
    let cmd = [BARE_TRUE.to_string()];
    let floor = vec![on_host.display().to_string()];
    exec_figures(api, id, &cmd, floor, execs, "_bare", "bare true").await
}

/// An exec figure, `exec_round_trip{suffix}`: `execs` round trips of `cmd`
/// in sandbox `id`; and its floor, `exec_command_alone{suffix}` (peer
/// `host`, none where it could not run): `floor`, the same command,
/// spawned by the bench on its own machine (the daemon's, when peers are
/// measured), no sandbox: every contender's floor. Both name their
/// command as `shown`.
async fn exec_figures(
    api: &Api,
    id: &str,
    cmd: &[String],
    floor: Vec<String>,
    execs: usize,
    suffix: &str,
    shown: &str,
) -> Result<(Value, Option<Value>)> {
    let t = api.round_trips(id, cmd, execs).await?;
    let mut f = summary(&format!("exec_round_trip{suffix}"), "ms", t);
    f["command"] = shown.into();
    let alone = match tokio::task::spawn_blocking(move || command_alone(&floor, execs)).await? {
        Ok(t) => {
            let mut f = summary(&format!("exec_command_alone{suffix}"), "ms", t);
            f["command"] = shown.into();
            f["peer"] = "host".into();
            Some(f)
        }
        Err(e) => {
            eprintln!("`{shown}` alone: not measured: {e:#}");
            None
        }
    };
    Ok((f, alone))
}

/// Writes an executable file (mode 755).
pub(crate) fn write_executable(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where the stdout figures keep their source text inside a sandbox.
const STDOUT_SOURCE: &str = "/tmp/paddock-bench-stdout";
const STDOUT_SOURCE_LEN: usize = 1 << 20;

/// A shell command that makes the stdout figures' source: 1 MiB of text
/// in lines of 80 characters. Run once, before timing.
pub(crate) fn stdout_source() -> String {
    format!(
        "yes {} | head -c {STDOUT_SOURCE_LEN} > {STDOUT_SOURCE}",
        "x".repeat(79)
    )
}

/// A shell command writing `n` bytes of text to stdout: `cat` of the
/// source (`stdout_source`) as many times as it takes. One process that
/// writes 128 KiB at a time from the page cache, so that the figure
/// measures the way out of the sandbox rather than the producer (`yes |
/// head -c` alone tops out near 250 MB/s on this 2-core VM).
pub(crate) fn stdout_producer(n: usize) -> String {
    let whole = n / STDOUT_SOURCE_LEN;
    let mut cmd = String::from("cat");
    for _ in 0..whole {
        cmd.push(' ');
        cmd.push_str(STDOUT_SOURCE);
    }
    let rest = n % STDOUT_SOURCE_LEN;
    if whole == 0 {
        cmd = format!("head -c {rest} {STDOUT_SOURCE}");
    } else if rest > 0 {
        cmd.push_str(&format!("; head -c {rest} {STDOUT_SOURCE}"));
    }
    cmd
}

pub(crate) fn summary(name: &str, unit: &str, mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"figure": name, "unit": unit, "n": v.len(), "p50": pct(&v, 0.5), "p99": pct(&v, 0.99),
           "min": v.first(), "max": v.last()})
}

/// Host memory that sandboxes cost, KiB, read on the daemon's host:
/// what their cgroups are charged (the agent, its page tables, the
/// writable layer on tmpfs, charged kernel objects), plus kernel memory no
/// cgroup is charged for (unreclaimable slab, kernel stacks, page tables),
/// plus the daemon's own resident memory. MemFree is no use here: this VM
/// hands free pages back to its host, so it moves on its own.
fn sandbox_memory_kib() -> Result<u64> {
    let kernel: u64 = paddock_core::host::meminfo_kib(&["SUnreclaim", "KernelStack", "PageTables"])
        .context("read /proc/meminfo")?
        .iter()
        .sum();
    let mut cgroups = 0u64;
    for root in ["/sys/fs/cgroup/memory/paddock", "/sys/fs/cgroup/paddock"] {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                for f in ["memory.usage_in_bytes", "memory.current"] {
                    if let Ok(v) = std::fs::read_to_string(e.path().join(f)) {
                        cgroups += v.trim().parse::<u64>().unwrap_or(0) / 1024;
                        break;
                    }
                }
            }
        }
    }
    let mut daemon = 0u64;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if args.len() > 1 && args[0].ends_with(b"paddock") && args[1] == b"serve" {
                let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                daemon += st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(kernel + cgroups + daemon)
}

/// Seconds `dd` says it took (`... copied, 0.0198 s, 3.4 GB/s`).
fn dd_seconds(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.contains(" copied, "))?
        .split(", ")
        .find_map(|p| p.strip_suffix(" s")?.trim().parse().ok())
}

/// A file read in a sandbox through a guarded mount (its ACL judged on
/// every access: the agent's FUSE filesystem) and from a plain directory
/// of the same filesystem (the sandbox's root), `dd` to /dev/null with
/// 1 MiB blocks, alternately, 7 times each after one read of each to warm
/// the page cache: MB/s. Run as root, also the guarded read with the
/// host's page cache dropped first: what a first read through the agent
/// costs.
async fn guarded_read(api: &Api, mib: usize) -> Result<Vec<Value>> {
    eprintln!("file read: {mib} MiB through a guarded mount and plain, 7 times each");
    let rule = |path: &str, access| w::AclRule {
        path: path.into(),
        access,
    };
    let spec = w::SandboxSpec {
        env: [("PADDOCK_BENCH".to_string(), "1".to_string())].into(),
        mounts: vec![w::Mount {
            path: "/guarded".into(),
            origin: None,
            acls: vec![
                rule("/guarded/**", w::Access::Rw),
                rule("/guarded/**/*.key", w::Access::Deny),
            ],
        }],
        ..bench_spec()
    };
    let id = api.create_spec(&spec).await?;
    let run = async {
        api.exec(
            &id,
            w::ExecRequest::shell(format!(
                "mkdir -p /plain && head -c {mib}M /dev/zero > /plain/f && cp /plain/f /guarded/f \
                 && cat /plain/f /guarded/f > /dev/null"
            )),
        )
        .await?;
        let read = |path: &'static str| {
            let id = id.clone();
            async move {
                let r = api
                    .exec(
                        &id,
                        w::ExecRequest::shell(format!("dd if={path} of=/dev/null bs=1M 2>&1")),
                    )
                    .await?;
                let secs =
                    dd_seconds(&r.stdout).with_context(|| format!("dd said {:?}", r.stdout))?;
                Ok::<_, anyhow::Error>((mib << 20) as f64 / 1e6 / secs.max(1e-6))
            }
        };
        let (mut plain, mut guarded, mut first) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..7 {
            plain.push(read("/plain/f").await?);
            guarded.push(read("/guarded/f").await?);
            // The host's page cache dropped (where this process may): the
            // guard's copy of the file goes, the sandbox's root (memory)
            // stays, and the read goes through the agent.
            if std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok() {
                first.push(read("/guarded/f").await?);
            }
        }
        let mut out = vec![
            summary("file_read_plain", "MB/s", plain),
            summary("file_read_guarded", "MB/s", guarded),
        ];
        if !first.is_empty() {
            out.push(summary("file_read_guarded_first", "MB/s", first));
        }
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    api.destroy(&id).await?;
    run
}

/// Snapshots and forks: a snapshot of a sandbox with 64 MiB written, a
/// create from it against a plain cold create, and forks of a sandbox
/// with 10 MiB written into 1 and into 10 children; ms.
async fn snapshot_figures(api: &Api) -> Result<Vec<Value>> {
    eprintln!(
        "snapshots: 64 MiB written, 7 snapshots; creates from one; forks of 10 MiB into 1 and 10"
    );
    let id = api.create().await?;
    let run = async {
        api.exec(&id, w::ExecRequest::shell("head -c 64M /dev/urandom > /workspace/big"))
            .await?;
        let (mut snap, mut snaps) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t0 = Instant::now();
            let s = api.c.snapshot(&id, &Default::default()).await?;
            snap.push(t0.elapsed().as_secs_f64() * 1000.0);
            snaps.push(s.id.to_string());
        }
        let (mut from, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let spec = w::SandboxSpec {
                from_snapshot: Some(snaps[0].clone()),
                ..bench_spec()
            };
            let t0 = Instant::now();
            let c = api.create_spec(&spec).await?;
            from.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&c).await?;
            let t0 = Instant::now();
            let c = api.create().await?;
            plain.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&c).await?;
        }
        for s in &snaps {
            api.c.delete_snapshot(s).await?;
        }
        api.exec(&id, w::ExecRequest::shell("rm /workspace/big && head -c 10M /dev/urandom > /workspace/ten"))
            .await?;
        let mut forks = Vec::new();
        for count in [1u32, 10] {
            let mut t = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                let kids = api
                    .c
                    .fork(&id, &w::ForkRequest { count, memory: false })
                    .await?;
                t.push(t0.elapsed().as_secs_f64() * 1000.0);
                for k in kids.sandboxes {
                    api.destroy(&k.id.to_string()).await?;
                }
            }
            forks.push(summary(&format!("fork_{count}_of_10mib"), "ms", t));
        }
        let ratio = median(&from) / median(&plain).max(1e-9);
        let mut out = vec![
            summary("snapshot_64mib", "ms", snap),
            summary("create_from_snapshot", "ms", from),
            summary("create_plain_beside_it", "ms", plain),
            json!({"figure": "create_from_snapshot_vs_plain", "unit": "x", "n": 10, "p50": ratio, "p99": ratio}),
        ];
        out.extend(forks);
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    api.destroy(&id).await?;
    run
}

/// Scale to zero: a workspace whose sandbox serves HTTP (busybox httpd,
/// its main process) hibernated, then woken by a request to its proxy;
/// the time to that request's answer, beside a plain create from the same
/// snapshot (the floor a wake cannot beat).
async fn wake_figures(api: &Api) -> Result<Vec<Value>> {
    eprintln!(
        "wake: a hibernated workspace woken by a request, 10 times; creates from its snapshot"
    );
    let name = format!("bench-wake-{}", std::process::id());
    let spec = w::SandboxSpec {
        ports: vec![8000],
        command: Some(
            ["busybox", "httpd", "-f", "-p", "8000", "-h", "/workspace"]
                .map(String::from)
                .to_vec(),
        ),
        ..bench_spec()
    };
    api.c
        .create_workspace(&w::WorkspaceCreate {
            name: name.clone(),
            spec: spec.clone(),
            wake_on_request: true,
            ..Default::default()
        })
        .await?;
    let run = async {
        let ws = api.c.wake_workspace(&name).await?;
        let id = ws.sandbox.context("woken without a sandbox")?.to_string();
        api.exec(&id, w::ExecRequest::shell("echo hi > /workspace/index.html"))
            .await?;
        let (mut wake, mut from) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let ws = api.c.hibernate_workspace(&name).await?;
            let snap = ws.latest_snapshot.context("no snapshot")?.to_string();
            let t0 = Instant::now();
            let r = api
                .c
                .send(api.c.request(
                    reqwest::Method::GET,
                    &format!("/workspaces/{name}/proxy/8000/index.html"),
                ))
                .await?;
            let body = r.text().await?;
            wake.push(t0.elapsed().as_secs_f64() * 1000.0);
            if body != "hi\n" {
                bail!("the woken workspace answered {body:?}");
            }
            let spec = w::SandboxSpec {
                from_snapshot: Some(snap),
                ..spec.clone()
            };
            let t0 = Instant::now();
            let c = api.create_spec(&spec).await?;
            from.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&c).await?;
        }
        let over = median(&wake) - median(&from);
        Ok::<_, anyhow::Error>(vec![
            summary("wake_on_request_to_answer", "ms", wake),
            summary("create_from_its_snapshot", "ms", from),
            json!({"figure": "wake_over_create_from_snapshot", "unit": "ms", "n": 10, "p50": over, "p99": over}),
        ])
    }
    .await;
    api.c.delete_workspace(&name).await?;
    run
}

/// The same small request (a 3-byte page from busybox httpd in a sandbox)
/// through the ingress (HTTPS, `<box>.<zone>`, Paddock's CA trusted) and
/// through the native API's path proxy (`/v1/sandboxes/{id}/proxy/8000/`),
/// alternating, each over a kept-alive connection; and their ratio.
async fn ingress_figures(api: &Api, host: &str, runs: usize) -> Result<Vec<Value>> {
    let info = api.c.ingress().await?;
    let (true, Some(zone), Some(port), Some(scheme)) =
        (info.enabled, info.zone, info.port, info.scheme)
    else {
        bail!("the daemon runs no ingress (paddock serve --ingress-listen)");
    };
    eprintln!("ingress: {runs} requests through {scheme} <box>.{zone} and through the path proxy");
    let spec = w::SandboxSpec {
        command: Some(
            ["busybox", "httpd", "-f", "-p", "8000", "-h", "/workspace"]
                .map(String::from)
                .to_vec(),
        ),
        ..bench_spec()
    };
    let id = api.create_spec(&spec).await?;
    let run = async {
        api.exec(&id, w::ExecRequest::shell("echo hi > /workspace/index.html"))
            .await?;
        api.c.create_proxy(&id, "", 8000).await?;
        let name = format!("{id}.{zone}");
        let ip: std::net::IpAddr = url_host(host)?
            .parse()
            .context("--host names no address")?;
        let mut b = reqwest::Client::builder()
            .resolve(&name, std::net::SocketAddr::new(ip, port))
            .pool_max_idle_per_host(1);
        if let Some(pem) = &info.ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        let ing = b.build()?;
        let ing_url = format!("{scheme}://{name}:{port}/index.html");
        let (mut via_ingress, mut via_path) = (Vec::new(), Vec::new());
        let path = format!("/sandboxes/{id}/proxy/8000/index.html");
        // Until httpd listens.
        let until = Instant::now() + Duration::from_secs(10);
        while !api
            .c
            .send(api.c.request(reqwest::Method::GET, &path))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > until {
                bail!("httpd in the sandbox did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in 0..runs + 20 {
            let t0 = Instant::now();
            let body = ing.get(&ing_url).send().await?.error_for_status()?.text().await?;
            let t_ing = t0.elapsed().as_secs_f64() * 1000.0;
            if body != "hi\n" {
                bail!("the ingress answered {body:?}");
            }
            let t0 = Instant::now();
            let r = api.c.send(api.c.request(reqwest::Method::GET, &path)).await?;
            let body = r.text().await?;
            let t_path = t0.elapsed().as_secs_f64() * 1000.0;
            if body != "hi\n" {
                bail!("the path proxy answered {body:?}");
            }
            if i >= 20 {
                via_ingress.push(t_ing);
                via_path.push(t_path);
            }
        }
        let ratio = median(&via_ingress) / median(&via_path);
        Ok::<_, anyhow::Error>(vec![
            summary("ingress_request", "ms", via_ingress),
            summary("path_proxy_request", "ms", via_path),
            json!({"figure": "ingress_over_path_proxy", "unit": "x", "n": runs, "p50": ratio, "p99": ratio}),
        ])
    }
    .await;
    api.destroy(&id).await?;
    run
}

/// The host of a URL (`http://127.0.0.1:7070` → `127.0.0.1`).
fn url_host(url: &str) -> Result<String> {
    let u = reqwest::Url::parse(url).with_context(|| format!("--host {url}"))?;
    Ok(u.host_str()
        .context("--host has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What a user would do without Paddock: `cp -a` of a writable layer
/// held in memory (a tmpfs, as a sandbox's is) to the disk, then a sync
/// of that disk: 64 MiB as a snapshot, 10 MiB once and ten times as
/// forks.
fn copy_peer() -> Result<Vec<Value>> {
    eprintln!("peer cp -a: a tmpfs layer copied to disk and synced");
    let src =
        std::path::Path::new("/dev/shm").join(format!("paddock-bench-{}", std::process::id()));
    let dst =
        std::path::Path::new("/var/tmp").join(format!("paddock-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst)?;
    let sh = |script: &str| -> Result<()> {
        let st = std::process::Command::new("sh")
            .arg("-ec")
            .arg(script)
            .status()?;
        if !st.success() {
            bail!("{script}: {st}");
        }
        Ok(())
    };
    let (s, d) = (src.display(), dst.display());
    let result = (|| {
        sh(&format!("mkdir -p {s}/l64 {s}/l10 && head -c 64M /dev/urandom > {s}/l64/big && head -c 10M /dev/urandom > {s}/l10/ten"))?;
        let time = |n: usize, layer: &str| -> Result<Vec<f64>> {
            let mut t = Vec::new();
            for i in 0..5 {
                let t0 = Instant::now();
                let mut script = String::new();
                for j in 0..n {
                    script.push_str(&format!("cp -a {s}/{layer} {d}/{i}-{j} && "));
                }
                script.push_str(&format!("sync -f {d}"));
                sh(&script)?;
                t.push(t0.elapsed().as_secs_f64() * 1000.0);
                sh(&format!("rm -rf {d}/*"))?;
            }
            Ok(t)
        };
        let mut out = Vec::new();
        for (name, n, layer) in [
            ("snapshot_64mib", 1, "l64"),
            ("fork_1_of_10mib", 1, "l10"),
            ("fork_10_of_10mib", 10, "l10"),
        ] {
            let mut f = summary(name, "ms", time(n, layer)?);
            f["peer"] = "cp -a".into();
            out.push(f);
        }
        Ok(out)
    })();
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&dst);
    result
}

/// The bench's calls, over the typed client.
/// A bench sandbox's spec: labelled, so that one left behind is told apart.
fn bench_spec() -> w::SandboxSpec {
    w::SandboxSpec {
        labels: [("paddock-bench".to_string(), "1".to_string())].into(),
        ..Default::default()
    }
}

struct Api {
    c: paddock_client::Client,
}

impl Api {
    /// A cold create: the env keeps it off any warm pool.
    async fn create(&self) -> Result<String> {
        let spec = w::SandboxSpec {
            env: [("PADDOCK_BENCH".to_string(), "1".to_string())].into(),
            ..bench_spec()
        };
        self.create_spec(&spec).await
    }

    /// A create a warm pool of the default image can serve.
    async fn create_plain(&self) -> Result<String> {
        self.create_spec(&bench_spec()).await
    }

    async fn create_spec(&self, spec: &w::SandboxSpec) -> Result<String> {
        let (sb, created) = self.c.create(spec).await.context("create")?;
        if !created {
            bail!("create: the daemon answered an existing sandbox {}", sb.id);
        }
        Ok(sb.id.to_string())
    }

    /// One `true` through the exec API; its round trip in ms.
    async fn exec_true(&self, id: &str) -> Result<f64> {
        self.exec_cmd(id, &["true".to_string()]).await
    }

    /// One command through the exec API; its round trip in ms.
    async fn exec_cmd(&self, id: &str, cmd: &[String]) -> Result<f64> {
        let t0 = Instant::now();
        self.exec(id, w::ExecRequest::cmd(cmd.iter().cloned()))
            .await?;
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    }

    /// `n` round trips of `cmd` in sandbox `id`, in ms, after 20 to warm
    /// up.
    async fn round_trips(&self, id: &str, cmd: &[String], n: usize) -> Result<Vec<f64>> {
        let mut t = Vec::new();
        for i in 0..n + 20 {
            let ms = self.exec_cmd(id, cmd).await?;
            if i >= 20 {
                t.push(ms);
            }
        }
        Ok(t)
    }

    /// The `true` the exec figures run in sandbox `id`: the peers' own (the
    /// host's static busybox, which the default image, the host's /usr,
    /// has too), or the image's `true` where it has no such file (told on
    /// stderr). The default image's `/usr/bin/true` is dynamically linked
    /// and costs 0.1-0.2 ms more to start on a VM where that is dear.
    async fn true_command(&self, id: &str) -> Result<Vec<String>> {
        let Some(bb) = crate::bench_peers::busybox() else {
            eprintln!("exec figures run `true`: no busybox on this host");
            return Ok(vec!["true".into()]);
        };
        let cmd = vec![bb.display().to_string(), "true".to_string()];
        let r = self
            .c
            .exec(id, &w::ExecRequest::cmd(cmd.iter().cloned()))
            .await?;
        match r.exit_code {
            0 => Ok(cmd),
            127 => {
                eprintln!(
                    "exec figures run `true`: the sandbox has no {}",
                    bb.display()
                );
                Ok(vec!["true".into()])
            }
            _ => bail!("exec {}: {r:?}", cmd.join(" ")),
        }
    }

    /// A buffered exec that must exit 0; its result.
    async fn exec(&self, id: &str, req: w::ExecRequest) -> Result<w::ExecResult> {
        let r = self.c.exec(id, &req).await?;
        if r.exit_code != 0 {
            bail!("exec {req:?}: {r:?}");
        }
        Ok(r)
    }

    /// `n` bytes of stdout through the WebSocket exec (binary frames);
    /// MB/s of payload.
    async fn exec_stdout_ws(&self, id: &str, n: usize) -> Result<f64> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let t0 = Instant::now();
        let mut ws = self.c.exec_socket(id).await?;
        let start = serde_json::to_string(&w::ExecRequest::shell(stdout_producer(n)))?;
        ws.send(Message::Text(start.into())).await?;
        let mut got = 0usize;
        while let Some(m) = ws.next().await {
            match m? {
                Message::Binary(b) if b.first() == Some(&w::WS_STDOUT) => got += b.len() - 1,
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    if v["type"] == "exit" {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        if got != n {
            bail!("exec stdout over WebSocket: {got} bytes of {n}");
        }
        Ok(n as f64 / 1e6 / t0.elapsed().as_secs_f64())
    }

    /// `n` bytes of stdout through the streaming exec API; MB/s of payload.
    /// The events are read here rather than through the client's
    /// `exec_stream`, which makes a String of every chunk: the figure is
    /// the daemon's, not a client's decoding.
    async fn exec_stdout_sse(&self, id: &str, n: usize) -> Result<f64> {
        use futures::StreamExt;
        let t0 = Instant::now();
        let req = w::ExecRequest::shell(stdout_producer(n));
        let r = self
            .c
            .send(
                self.c
                    .request(
                        reqwest::Method::POST,
                        &format!("/sandboxes/{id}/exec/stream"),
                    )
                    .json(&req),
            )
            .await?;
        let mut body = r.bytes_stream();
        let (mut got, mut buf, mut event) = (0usize, Vec::new(), Vec::new());
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
            // Whole lines only; the rest waits for the next chunk.
            let mut start = 0;
            while let Some(end) = memchr::memchr(b'\n', &buf[start..]) {
                let line = &buf[start..start + end];
                start += end + 1;
                if let Some(e) = line.strip_prefix(b"event: ") {
                    event = e.to_vec();
                } else if let Some(d) = line.strip_prefix(b"data: ") {
                    if event == b"stdout" {
                        #[derive(serde::Deserialize)]
                        struct Data<'a> {
                            #[serde(borrow)]
                            data: std::borrow::Cow<'a, str>,
                        }
                        got += serde_json::from_slice::<Data>(d)?.data.len();
                    }
                }
            }
            buf.drain(..start);
        }
        if got != n {
            bail!("exec stdout: {got} bytes of {n}");
        }
        Ok(n as f64 / 1e6 / t0.elapsed().as_secs_f64())
    }

    async fn destroy(&self, id: &str) -> Result<()> {
        self.c.destroy(id).await?;
        Ok(())
    }
}

/// The inodes of the TCP sockets (v4 and v6) listening on `port`, or on
/// any port, as `/proc/<pid>/fd` links name them.
fn listening_sockets(port: Option<u16>) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            let listening = f.get(3) == Some(&"0A");
            let on_port = port.is_none()
                || f.get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == port;
            if listening && on_port {
                if let Some(i) = f.get(9) {
                    inodes.push(format!("socket:[{i}]"));
                }
            }
        }
    }
    inodes
}

/// Which of `sockets` process `pid` holds.
fn held_by(pid: u32, sockets: &[String]) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|t| {
            sockets
                .iter()
                .find(|i| t.as_os_str() == i.as_str())
                .cloned()
        })
        .collect()
}

/// The pid of the process listening on `port` (TCP, IPv4 or IPv6), read
/// from /proc: the bench runs where the daemon runs.
fn listener_pid(port: u16) -> Result<u32> {
    let inodes = listening_sockets(Some(port));
    for proc_dir in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !held_by(pid, &inodes).is_empty() {
            return Ok(pid);
        }
    }
    bail!("no process on this host listens on port {port}: run the restart figure where the daemon runs")
}

/// Kills the daemon with SIGKILL and starts it again with the same command
/// line, environment and working directory (its output goes to a file in
/// the temp dir); returns the seconds until its API answered, and until
/// every one of `ids` answered an exec, and that file (the daemon runs on
/// after the bench).
async fn restart_daemon(api: &Api, ids: &[String]) -> Result<(f64, f64, std::path::PathBuf)> {
    use std::os::unix::process::CommandExt;
    let url = reqwest::Url::parse(api.c.endpoint().base()).context("--host")?;
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    if !local {
        bail!("the restart figure kills and starts the daemon on this machine: give --host on loopback");
    }
    let port = url.port_or_known_default().context("--host has no port")?;
    let pid = listener_pid(port)?;
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let split = |b: Vec<u8>| -> Vec<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt;
        b.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| std::ffi::OsString::from_vec(s.to_vec()))
            .collect()
    };
    let argv = split(std::fs::read(proc_dir.join("cmdline"))?);
    let env = split(std::fs::read(proc_dir.join("environ"))?);
    let cwd = std::fs::read_link(proc_dir.join("cwd"))?;
    if argv.len() < 2 || argv[1] != "serve" {
        bail!(
            "the process on port {port} (pid {pid}) is not `paddock serve`: {:?}",
            argv
        );
    }
    // The program as it was started (its /proc exe may name a binary
    // rebuilt since), relative paths against the daemon's directory.
    let program = std::path::Path::new(&argv[0]);
    let exe = if program.is_relative() && program.components().count() > 1 {
        cwd.join(program)
    } else {
        program.to_path_buf()
    };
    let log =
        std::env::temp_dir().join(format!("paddock-bench-restart-{}.log", std::process::id()));
    let out = std::fs::File::create(&log)?;
    // Every port it listens on (its API, the dialects' listeners).
    let ports = held_by(pid, &listening_sockets(None));
    // SAFETY: kill(2) on a pid read just above; nothing is shared.
    if unsafe { libc::kill(pid as i32, libc::SIGKILL) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    // Gone, or a zombie its parent has not reaped, and its listening
    // sockets closed: the leader shows as a zombie while its other threads
    // still exit holding the shared descriptor table (with 1000 sandboxes
    // up, long enough for the new daemon's bind to fail).
    let gone_by = Instant::now() + Duration::from_secs(10);
    loop {
        let open = listening_sockets(None);
        if !paddock_core::host::process_alive(pid) && !ports.iter().any(|p| open.contains(p)) {
            break;
        }
        if Instant::now() > gone_by {
            bail!("10 s after SIGKILL pid {pid} still runs or still listens");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&argv[1..])
        .env_clear()
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    for kv in &env {
        let kv = kv.to_string_lossy();
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.spawn().context("start the daemon again")?;
    let deadline = t0 + Duration::from_secs(120);
    loop {
        let up = api.c.healthz().await.is_ok();
        if up {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not answer within 120 s (log: {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let serving = t0.elapsed().as_secs_f64();
    // Each sandbox until it answers (a daemon may serve before it has
    // reattached every sandbox).
    futures::future::try_join_all(ids.iter().map(|id| async move {
        loop {
            match api.exec_true(id).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }))
    .await?;
    Ok((serving, t0.elapsed().as_secs_f64(), log))
}

pub async fn run(host: String, key: Option<String>, json_out: bool, a: BenchArgs) -> Result<i32> {
    let api = Api {
        c: paddock_client::Client::new(Endpoint::Url(host.clone()), key),
    };
    let url = host.clone();
    let mut figures = Vec::new();
    let say = |s: &str| {
        if !json_out {
            eprintln!("{s}");
        }
    };

    if a.wants("create") {
        say(&format!(
            "create-to-ready: {} sandboxes, one after another",
            a.creates
        ));
        let (mut t, mut ids) = (Vec::new(), Vec::new());
        for _ in 0..a.creates {
            let t0 = Instant::now();
            ids.push(api.create().await?);
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        figures.push(summary("create_to_ready", "ms", t));
        let mut t = Vec::new();
        for id in ids {
            let t0 = Instant::now();
            api.destroy(&id).await?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        figures.push(summary("destroy", "ms", t));
        say("create-to-ready with a destroy between creates");
        let mut t = Vec::new();
        for _ in 0..a.creates {
            let t0 = Instant::now();
            let id = api.create().await?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&id).await?;
        }
        figures.push(summary("create_to_ready_between_destroys", "ms", t));
    }

    // With a warm pool of the default image (`serve --warm-pool
    // default=N`): creates handed a pooled sandbox, each once the pool has
    // one ready again.
    let default_pool = |pools: w::PoolList| {
        pools
            .pools
            .into_iter()
            .find(|p| p.image.is_none() && p.template.is_none())
    };
    let pool = default_pool(api.c.pools().await?);
    if let Some(pool) = pool.filter(|_| a.wants("warm")) {
        say(&format!(
            "create-to-ready from the warm pool (size {})",
            pool.size
        ));
        let mut t = Vec::new();
        for _ in 0..a.creates {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ready = default_pool(api.c.pools().await?).map_or(0, |p| p.ready);
                if ready > 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the warm pool did not refill within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let t0 = Instant::now();
            let id = api.create_plain().await?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&id).await?;
        }
        figures.push(summary("create_to_ready_warm", "ms", t));
    }

    let one = ["exec", "sse", "ws", "files"].iter().any(|g| a.wants(g));
    let id = if one {
        api.create().await?
    } else {
        String::new()
    };
    if a.wants("sse") || a.wants("ws") {
        api.exec(&id, w::ExecRequest::shell(stdout_source()))
            .await?;
    }
    // Figures of the host itself, no sandbox: shown with the peers, no ratio.
    let mut host = Vec::new();
    if a.wants("exec") {
        let cmd = api.true_command(&id).await?;
        let shown = cmd.join(" ");
        say(&format!("exec round trip: {} × `{shown}`", a.execs));
        let (f, alone) = exec_figures(&api, &id, &cmd, cmd.clone(), a.execs, "", &shown).await?;
        figures.push(f);
        host.extend(alone);

        // The same with a command that costs next to nothing (`bare_true`):
        // the exec path alone. Optional, as the busybox `true` is: where it
        // cannot run, a note and no figure, the rest of the bench goes on.
        match exec_bare(&api, &id, a.execs, &say).await {
            Ok((f, alone)) => {
                figures.push(f);
                host.extend(alone);
            }
            Err(e) => eprintln!("exec round trip of a bare `true`: not measured: {e:#}"),
        }
    }

    for (group, figure, through) in [
        ("sse", "exec_stdout_sse", "the SSE stream"),
        ("ws", "exec_stdout", "the WebSocket"),
    ] {
        if !a.wants(group) {
            continue;
        }
        say(&format!(
            "exec stdout: {} MiB through {through}, 3 times",
            a.file_mib
        ));
        let n = a.file_mib << 20;
        let mut rates = Vec::new();
        for _ in 0..3 {
            rates.push(match group {
                "ws" => api.exec_stdout_ws(&id, n).await?,
                _ => api.exec_stdout_sse(&id, n).await?,
            });
        }
        figures.push(summary(figure, "MB/s", rates));
    }

    if a.wants("files") {
        say(&format!("files: {} MiB up and down, 5 times", a.file_mib));
        let data = bytes::Bytes::from(vec![0x5au8; a.file_mib << 20]);
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t0 = Instant::now();
            api.c
                .upload(
                    &id,
                    "/workspace/bench.bin",
                    &Upload::default(),
                    data.clone(),
                )
                .await?;
            up.push(data.len() as f64 / 1e6 / t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let r = api.c.download(&id, "/workspace/bench.bin").await?;
            // Counted as it streams in (as `curl -o /dev/null` would):
            // keeping it would time the client's page faults on a fresh
            // 64 MiB buffer.
            let mut n = 0;
            let mut body = r.bytes_stream();
            while let Some(chunk) = futures::StreamExt::next(&mut body).await {
                n += chunk?.len();
            }
            if n != data.len() {
                bail!("download returned {n} bytes of {}", data.len());
            }
            down.push(n as f64 / 1e6 / t0.elapsed().as_secs_f64());
        }
        figures.push(summary("upload", "MB/s", up));
        figures.push(summary("download", "MB/s", down));
    }
    if one {
        api.destroy(&id).await?;
    }

    if a.wants("acl") {
        figures.extend(guarded_read(&api, a.file_mib).await?);
    }

    let mut ssh_peers = Vec::new();
    if a.wants("ssh") {
        say(&format!(
            "ssh round trip: {} × `ssh box true` through {}, and `ssh localhost true` to the host's sshd",
            a.ssh_runs, a.ssh
        ));
        let id = api.create().await?;
        match crate::bench_ssh::figures(&api.c, a.ssh, &id, a.ssh_runs).await {
            Ok((ours, peers)) => {
                figures.extend(ours);
                ssh_peers = peers;
            }
            Err(e) => eprintln!("ssh round trip: not measured: {e:#}"),
        }
        api.destroy(&id).await?;
    }

    let mut snapshot_peers = Vec::new();
    if a.wants("snapshot") {
        figures.extend(snapshot_figures(&api).await?);
        match tokio::task::spawn_blocking(copy_peer).await? {
            Ok(fs) => snapshot_peers = fs,
            Err(e) => eprintln!("peer cp -a skipped: {e:#}"),
        }
    }

    if a.wants("wake") {
        figures.extend(wake_figures(&api).await?);
    }

    if a.wants("ingress") {
        figures.extend(ingress_figures(&api, &url, a.ingress_runs).await?);
    }

    if a.wants("boxd") {
        say(&format!(
            "boxd exec round trip: {} × `true` through {}'s gRPC Exec and through the native API",
            a.boxd_runs, a.boxd
        ));
        let id = api.create().await?;
        match crate::bench_boxd::figures(&api.c, a.boxd, &id, a.boxd_runs).await {
            Ok(fs) => figures.extend(fs),
            Err(e) => eprintln!("boxd exec round trip: not measured: {e:#}"),
        }
        api.destroy(&id).await?;
    }

    if a.concurrent > 0 && a.wants("concurrent") {
        say(&format!("{} creates at once", a.concurrent));
        let t0 = Instant::now();
        let each = futures::future::join_all((0..a.concurrent).map(|_| async {
            let t = Instant::now();
            let id = api.create().await?;
            Ok::<_, anyhow::Error>((id, t.elapsed().as_secs_f64() * 1000.0))
        }))
        .await;
        let took = t0.elapsed().as_secs_f64();
        let mut t = Vec::new();
        let mut ids = Vec::new();
        let mut failed = None;
        for r in each {
            match r {
                Ok((id, ms)) => {
                    ids.push(id);
                    t.push(ms);
                }
                Err(e) => failed = Some(e),
            }
        }
        futures::future::join_all(ids.iter().map(|id| api.destroy(id))).await;
        if let Some(e) = failed {
            return Err(e.context("a concurrent create failed"));
        }
        figures.push(json!({"figure": "concurrent_creates_all_ready", "unit": "s", "n": a.concurrent, "p50": took, "p99": took}));
        figures.push(summary("concurrent_create_each", "ms", t));
    }

    if let Some(image) = a.image.as_ref().filter(|_| a.wants("image")) {
        say(&format!(
            "image {image}: pulls with an empty cache, then creates from it"
        ));
        let mut rates = Vec::new();
        for _ in 0..3 {
            // Not cached yet is fine: the pull below is what is timed.
            match api.c.remove_image(image).await {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
            api.c.prune_images().await?;
            let t0 = Instant::now();
            let info = api
                .c
                .pull(image)
                .await
                .with_context(|| format!("pull {image}"))?;
            rates.push(info.size as f64 / 1e6 / t0.elapsed().as_secs_f64());
        }
        figures.push(summary("image_pull", "MB/s", rates));
        let mut t = Vec::new();
        for _ in 0..a.creates {
            let t0 = Instant::now();
            let spec = w::SandboxSpec {
                image: Some(image.clone()),
                ..bench_spec()
            };
            let id = api
                .create_spec(&spec)
                .await
                .with_context(|| format!("create from {image}"))?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            api.destroy(&id).await?;
        }
        figures.push(summary("create_to_ready_cached_image", "ms", t));
    }

    if a.density > 0 && (a.wants("density") || a.wants("restart")) {
        say(&format!("density: {} idle sandboxes at once", a.density));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = sandbox_memory_kib()?;
        let mut ids = Vec::new();
        let t0 = Instant::now();
        for _ in 0..a.density {
            ids.push(api.create().await?);
        }
        let took = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = sandbox_memory_kib()?;
        let per = (after.saturating_sub(before)) as f64 / 1024.0 / a.density as f64;
        // Every one still answers.
        let cmd = match ids.first() {
            Some(id) => api.true_command(id).await?,
            None => vec!["true".into()],
        };
        let mut t = Vec::new();
        for id in &ids {
            t.push(api.exec_cmd(id, &cmd).await?);
        }
        figures.push(json!({"figure": "host_memory_per_idle_sandbox", "unit": "MiB", "n": a.density, "p50": per, "p99": per}));
        let mut f = summary("exec_round_trip_at_density", "ms", t);
        f["command"] = cmd.join(" ").into();
        figures.push(f);
        figures.push(json!({"figure": "sequential_creates_at_density", "unit": "s", "n": a.density, "p50": took, "p99": took}));
        if a.wants("restart") {
            say(&format!(
                "restart: kill -9 the daemon with {} sandboxes up, start it again",
                a.density
            ));
            let (serving, all, log) = restart_daemon(&api, &ids).await?;
            say(&format!(
                "restart: the daemon started again runs on; its output goes to {}",
                log.display()
            ));
            figures.push(json!({"figure": "restart_to_serving", "unit": "s", "n": a.density, "p50": serving, "p99": serving}));
            figures.push(json!({"figure": "restart_to_all_answering", "unit": "s", "n": a.density, "p50": all, "p99": all}));
        }
        for id in ids {
            api.destroy(&id).await?;
        }
    }

    for f in &mut figures {
        f["peer"] = "paddock".into();
    }
    figures.extend(host);
    figures.extend(snapshot_peers);
    figures.extend(ssh_peers);
    let work = std::env::temp_dir().join(format!("paddock-bench-{}", std::process::id()));
    // Peers have these figures only.
    let peer_figures = ["create", "exec", "sse", "ws", "files", "snapshot"];
    for name in a
        .peers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .filter(|_| peer_figures.iter().any(|g| a.wants(g)))
    {
        match crate::bench_peers::OciPeer::new(name, &work).await {
            Ok(Some(peer)) => {
                say(&format!("peer {name}: a busybox OCI bundle, run -d / exec"));
                match peer.measure(&a).await {
                    Ok(fs) => figures.extend(fs),
                    Err(e) => eprintln!("peer {name} skipped: {e:#}"),
                }
            }
            // Told also under --json (on stderr): a figure that is
            // missing should say why.
            Ok(None) => eprintln!("peer {name} skipped: not installed"),
            Err(e) => eprintln!("peer {name} skipped: {e:#}"),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    // Paddock's advantage over each peer on the same figure: how many times
    // faster (time: peer / paddock; throughput: paddock / peer).
    let ours: std::collections::HashMap<String, f64> = figures
        .iter()
        .filter(|f| f["peer"] == "paddock")
        .filter_map(|f| Some((f["figure"].as_str()?.to_string(), f["p50"].as_f64()?)))
        .collect();
    for f in &mut figures {
        if f["peer"] == "paddock" {
            continue;
        }
        let (Some(name), Some(theirs)) = (f["figure"].as_str(), f["p50"].as_f64()) else {
            continue;
        };
        if let Some(&mine) = ours.get(name) {
            let x = if f["unit"] == "ms" {
                theirs / mine
            } else {
                mine / theirs
            };
            f["paddock_advantage"] = json!(x);
        }
    }

    if json_out {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_header(vec![
                "FIGURE",
                "PEER",
                "UNIT",
                "N",
                "P50",
                "P99",
                "PADDOCK VS PEER (P50)",
            ]);
        for f in &figures {
            t.add_row(vec![
                f["figure"].as_str().unwrap_or("").to_string(),
                f["peer"].as_str().unwrap_or("").to_string(),
                f["unit"].as_str().unwrap_or("").to_string(),
                f["n"].to_string(),
                format!("{:.2}", f["p50"].as_f64().unwrap_or(f64::NAN)),
                format!("{:.2}", f["p99"].as_f64().unwrap_or(f64::NAN)),
                f["paddock_advantage"]
                    .as_f64()
                    .map(|x| match x >= 1.0 {
                        true => format!("{x:.1}x faster"),
                        false => format!("{:.1}x slower", 1.0 / x),
                    })
                    .unwrap_or_default(),
            ]);
        }
        println!("{t}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn dd_seconds_reads_dds_summary() {
        let out = "64+0 records in\n64+0 records out\n67108864 bytes (67 MB, 64 MiB) copied, 0.0198 s, 3.4 GB/s\n";
        assert_eq!(dd_seconds(out), Some(0.0198));
        assert_eq!(dd_seconds("nothing"), None);
    }

    #[test]
    fn bare_true_runs_and_exits_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bare-true");
        let elf = bare_true();
        assert_eq!(elf.len(), 129);
        write_executable(&path, &elf).unwrap();
        let st = std::process::Command::new(&path).status().unwrap();
        assert!(st.success(), "{st}");
        // Its last instruction, the `syscall`, is what ends it: without
        // those two bytes it runs on into zeros and dies of a signal.
        write_executable(&path, &elf[..elf.len() - 2]).unwrap();
        let st = std::process::Command::new(&path).status();
        assert!(!matches!(&st, Ok(s) if s.success()), "{st:?}");
    }
}
