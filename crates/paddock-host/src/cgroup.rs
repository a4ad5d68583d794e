//! Metrics from cgroups, v1 (per-controller hierarchies) or v2 (unified).

use std::path::{Path, PathBuf};

use paddock_core::model::Metrics;

const ROOT: &str = "/sys/fs/cgroup";

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn v2(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel.trim_start_matches('/'))
}

fn v1(controller: &str, rel: &str) -> PathBuf {
    Path::new(ROOT)
        .join(controller)
        .join(rel.trim_start_matches('/'))
}

/// The cgroup path (relative to a hierarchy root) of a sandbox.
pub fn rel_path(id: &uuid::Uuid) -> String {
    format!("/paddock/{id}")
}

pub fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Whether the sandbox's processes are frozen (paused); None when its
/// cgroup cannot be read.
pub fn frozen(rel: &str) -> Option<bool> {
    if is_v2() {
        let v = std::fs::read_to_string(v2(rel).join("cgroup.freeze")).ok()?;
        Some(v.trim() == "1")
    } else {
        let v = std::fs::read_to_string(v1("freezer", rel).join("freezer.state")).ok()?;
        Some(v.trim() != "THAWED")
    }
}

/// CPU time used so far, in nanoseconds.
pub fn cpu_usage_ns(rel: &str) -> Option<u64> {
    if is_v2() {
        let stat = std::fs::read_to_string(v2(rel).join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    } else {
        read_u64(&v1("cpuacct", rel).join("cpuacct.usage"))
    }
}

/// Everything but the CPU percentage (which needs two samples).
pub fn sample(rel: &str, veth: &str) -> Metrics {
    let mut m = Metrics::default();
    if is_v2() {
        let dir = v2(rel);
        m.memory_bytes = read_u64(&dir.join("memory.current")).unwrap_or(0);
        m.memory_limit_bytes = read_u64(&dir.join("memory.max")).unwrap_or(0);
        m.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        m.pids_limit = read_u64(&dir.join("pids.max")).unwrap_or(0);
        if let Ok(io) = std::fs::read_to_string(dir.join("io.stat")) {
            for tok in io.split_whitespace() {
                if let Some(v) = tok.strip_prefix("rbytes=") {
                    m.block_read_bytes += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = tok.strip_prefix("wbytes=") {
                    m.block_write_bytes += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
    } else {
        m.memory_bytes = read_u64(&v1("memory", rel).join("memory.usage_in_bytes")).unwrap_or(0);
        m.memory_limit_bytes =
            read_u64(&v1("memory", rel).join("memory.limit_in_bytes")).unwrap_or(0);
        m.pids = read_u64(&v1("pids", rel).join("pids.current")).unwrap_or(0);
        m.pids_limit = std::fs::read_to_string(v1("pids", rel).join("pids.max"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        for f in [
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ] {
            if let Ok(s) = std::fs::read_to_string(v1("blkio", rel).join(f)) {
                for l in s.lines() {
                    let p: Vec<&str> = l.split_whitespace().collect();
                    if p.len() == 3 {
                        let v = p[2].parse::<u64>().unwrap_or(0);
                        match p[1] {
                            "Read" => m.block_read_bytes += v,
                            "Write" => m.block_write_bytes += v,
                            _ => {}
                        }
                    }
                }
                break;
            }
        }
    }
    if m.memory_limit_bytes > 0 && m.memory_limit_bytes < (1 << 62) {
        m.memory_percent = m.memory_bytes as f64 * 100.0 / m.memory_limit_bytes as f64;
    }
    // The host end of the veth: what it receives the sandbox sent.
    let net = Path::new("/sys/class/net").join(veth).join("statistics");
    m.net_tx_bytes = read_u64(&net.join("rx_bytes")).unwrap_or(0);
    m.net_rx_bytes = read_u64(&net.join("tx_bytes")).unwrap_or(0);
    m.cpu_usage_ns = cpu_usage_ns(rel).unwrap_or(0);
    m
}

/// Removes a sandbox's cgroup directories if the OCI runtime left any.
pub fn remove(rel: &str) {
    if is_v2() {
        let _ = std::fs::remove_dir(v2(rel));
        return;
    }
    if let Ok(rd) = std::fs::read_dir(ROOT) {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir(e.path().join(rel.trim_start_matches('/')));
        }
    }
}

/// Mounts the cgroup2 hierarchy with `favordynmods` (Linux ≥ 6.0), keeping
/// its other options.
///
/// Moving a process into a cgroup takes the global threadgroup rwsem for
/// writing; by default a writer first waits for an RCU grace period, about
/// 13 ms of every sandbox create on this kind of host. `favordynmods` keeps
/// that semaphore in the mode where writers do not wait, at a small cost to
/// fork and exit. The flag is global, so one hierarchy is enough. Returns
/// whether the flag is set.
pub fn favor_dynamic_modifications() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    for target in [ROOT.to_string(), format!("{ROOT}/unified")] {
        // mountinfo: id parent major:minor root mountpoint mount-opts [tags] - fstype source super-opts
        let Some(line) = info
            .lines()
            .rev()
            .find(|l| l.split(' ').nth(4) == Some(target.as_str()) && l.contains(" - cgroup2 "))
        else {
            continue;
        };
        let (head, tail) = line.split_once(" - ").unwrap_or((line, ""));
        let mount_opts = head.split(' ').nth(5).unwrap_or("");
        let super_opts = tail.split(' ').nth(2).unwrap_or("");
        if super_opts.split(',').any(|o| o == "favordynmods") {
            return true;
        }
        use nix::mount::MsFlags;
        let mut flags = MsFlags::MS_REMOUNT;
        for o in mount_opts.split(',') {
            flags |= match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        let mut data: Vec<&str> = super_opts
            .split(',')
            .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
            .collect();
        data.push("favordynmods");
        let data = data.join(",");
        return match nix::mount::mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            flags,
            Some(data.as_str()),
        ) {
            Ok(()) => {
                tracing::info!("remounted {target} with {data}: faster cgroup moves");
                true
            }
            Err(e) => {
                tracing::info!("could not set favordynmods on {target}: {e}");
                false
            }
        };
    }
    false
}
