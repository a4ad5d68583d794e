//! What a daemon holds on the host for as long as it runs, so that two
//! daemons on one host keep out of each other's way: its data dir (a second
//! daemon on it would recover, reap and clean up the first's sandboxes), and
//! its bridge and subnet (the host objects a daemon makes and cleans up, its
//! network namespaces, nftables tables and NAT rules, are named after its
//! bridge and subnet, so a daemon that holds both touches only its own).
//!
//! Each claim is an exclusive `flock` on a file, dropped by the kernel when
//! the process ends however it ends (`kill -9` included), so a claim is
//! never stale. The file says who holds it, for the message a second daemon
//! prints.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;

/// Where claims on host-wide names (bridges, subnets) are kept.
pub const HOST_DIR: &str = "/run/paddock/claims";

/// Held claims; dropping them lets go.
#[derive(Debug)]
pub struct Claims {
    _files: Vec<File>,
}

/// Takes `path` for this process, or says who has it.
fn claim(path: &Path, what: &str, holder: &str) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    // A lock let go a moment ago may still be held by a child forked
    // meanwhile (until it execs and its close-on-exec copy goes): a few
    // tries before naming the holder.
    let mut tries = 0;
    let locked = loop {
        match f.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut who = String::new();
            let _ = f.read_to_string(&mut who);
            let who = who.trim();
            anyhow::bail!(
                "{what} is in use by another paddock serve ({}); stop it, or give this daemon its own{}",
                if who.is_empty() { "its pid is not known yet" } else { who },
                match what.split(' ').next() {
                    Some("bridge") | Some("subnet") => " --bridge and --gateway",
                    _ => " --data-dir",
                }
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{holder}")?;
    Ok(f)
}

/// Claims the data dir, the bridge and the gateway's /16 for this daemon.
pub fn take(data_dir: &Path, bridge: &str, gateway: Ipv4Addr) -> anyhow::Result<Claims> {
    take_in(Path::new(HOST_DIR), data_dir, bridge, gateway)
}

/// A network interface name the kernel takes (at most 15 bytes, no `/`,
/// whitespace or `:`), which also keeps its claim file in [`HOST_DIR`].
fn check_bridge(bridge: &str) -> anyhow::Result<()> {
    let ok = !bridge.is_empty()
        && bridge.len() <= 15
        && bridge != "."
        && bridge != ".."
        && bridge
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        anyhow::bail!(
            "--bridge {bridge:?}: not an interface name (1 to 15 characters, no '/', ':' or spaces)"
        );
    }
    Ok(())
}

fn take_in(
    host_dir: &Path,
    data_dir: &Path,
    bridge: &str,
    gateway: Ipv4Addr,
) -> anyhow::Result<Claims> {
    check_bridge(bridge)?;
    let holder = format!(
        "pid {}, data dir {}",
        std::process::id(),
        data_dir.display()
    );
    let o = gateway.octets();
    let subnet = format!("{}.{}.0.0/16", o[0], o[1]);
    let files = vec![
        claim(
            &data_dir.join("paddock.lock"),
            &format!("data dir {}", data_dir.display()),
            &holder,
        )?,
        claim(
            &host_dir.join(format!("bridge-{bridge}")),
            &format!("bridge {bridge}"),
            &holder,
        )?,
        claim(
            &host_dir.join(format!("subnet-{}.{}.0.0_16", o[0], o[1])),
            &format!("subnet {subnet}"),
            &holder,
        )?,
    ];
    Ok(Claims { _files: files })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims are per open file description: a second open in this process
    /// stands for a second daemon.
    #[test]
    fn a_second_claim_is_refused_naming_the_holder_until_the_first_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let gw = Ipv4Addr::new(10, 88, 0, 1);
        let first = take_in(&host, &a, "pd0", gw).unwrap();
        // The same data dir.
        let e = format!(
            "{:#}",
            take_in(&host, &a, "pd1", Ipv4Addr::new(10, 89, 0, 1)).unwrap_err()
        );
        assert!(e.contains("data dir"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        // Another data dir, the same bridge.
        let e = format!(
            "{:#}",
            take_in(&host, &b, "pd0", Ipv4Addr::new(10, 89, 0, 1)).unwrap_err()
        );
        assert!(e.contains("bridge pd0"), "{e}");
        assert!(e.contains("--bridge"), "{e}");
        // Another bridge, the same subnet.
        let e = format!(
            "{:#}",
            take_in(&host, &b, "pd1", Ipv4Addr::new(10, 88, 7, 1)).unwrap_err()
        );
        assert!(e.contains("subnet 10.88.0.0/16"), "{e}");
        // A name that is no interface (nor a file name in the claims dir).
        for bad in ["../../etc/x", "a/b", "", "..", "way-too-long-name0", "a b"] {
            let e = format!(
                "{:#}",
                take_in(&host, &b, bad, Ipv4Addr::new(10, 90, 0, 1)).unwrap_err()
            );
            assert!(e.contains("not an interface name"), "{bad:?}: {e}");
        }
        // Its own of each.
        let second = take_in(&host, &b, "pd1", Ipv4Addr::new(10, 89, 0, 1)).unwrap();
        drop(second);
        drop(first);
        take_in(&host, &b, "pd0", gw).unwrap();
    }
}
