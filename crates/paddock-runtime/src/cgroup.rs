//! Metrics from cgroups, v1 (per-controller hierarchies) or v2 (unified).

use std::path::{Path, PathBuf};

use paddock_core::model::Metrics;

const ROOT: &str = "/sys/fs/cgroup";

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
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

/// CPU time used so far, in nanoseconds.
pub fn cpu_usage_ns(rel: &str) -> Option<u64> {
    if is_v2() {
        let stat = std::fs::read_to_string(
            Path::new(ROOT)
                .join(rel.trim_start_matches('/'))
                .join("cpu.stat"),
        )
        .ok()?;
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
        let dir = Path::new(ROOT).join(rel.trim_start_matches('/'));
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
        let _ = std::fs::remove_dir(Path::new(ROOT).join(rel.trim_start_matches('/')));
        return;
    }
    if let Ok(rd) = std::fs::read_dir(ROOT) {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir(e.path().join(rel.trim_start_matches('/')));
        }
    }
}
