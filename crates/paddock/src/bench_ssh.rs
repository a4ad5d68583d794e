//! `paddock bench --only ssh`: the round trip of `ssh box true` through
//! the daemon's SSH gateway, and of `ssh localhost true` against the
//! host's own sshd (a private one on a loopback port, started and stopped
//! by the bench), side by side with the same client, key and options.
//! Without OpenSSH's client the figure is skipped; without its server
//! (`/usr/sbin/sshd`), the peer is, with a note.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use paddock_client::wire as w;
use serde_json::Value;

use crate::bench::summary;

const SSHD: &str = "/usr/sbin/sshd";

/// The client's options: no host key checks, this key only, no agent;
/// `extra` before the destination.
fn client(key: &Path, port: u16, dest: &str, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.args(extra)
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "LogLevel=ERROR"])
        // The key exchange the gateway does (OpenSSH's own first choice,
        // sntrup761x25519, costs its server some 90 ms more here): the
        // same work on both sides.
        .args(["-o", "KexAlgorithms=curve25519-sha256"])
        .arg(dest)
        .arg("true")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// `n` timed runs of `ssh ... true` (after 3 untimed), each in ms.
fn round_trips(key: &Path, port: u16, dest: &str, extra: &[&str], n: usize) -> Result<Vec<f64>> {
    let mut t = Vec::new();
    for i in 0..n + 3 {
        let t0 = Instant::now();
        let out = client(key, port, dest, extra).output().context("run ssh")?;
        if !out.status.success() {
            bail!(
                "ssh {dest}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if i >= 3 {
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(t)
}

fn keygen(path: &Path) -> Result<()> {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "paddock-bench", "-f"])
        .arg(path)
        .output()
        .context("run ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A private sshd on a loopback port, killed when dropped.
struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the host's sshd with a config of its own: this key for this
/// user, on a free loopback port.
fn start_sshd(work: &Path, key: &Path) -> Result<(Sshd, u16)> {
    let host_key = work.join("sshd_host_key");
    keygen(&host_key)?;
    let auth = work.join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &auth)?;
    let port = free_port()?;
    let cfg = work.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n\
             AcceptEnv SHLVL\n",
            host_key.display(),
            auth.display(),
            work.join("sshd.pid").display()
        ),
    )?;
    // Its privilege separation directory (the system service makes it).
    std::fs::create_dir_all("/run/sshd")?;
    let child = std::process::Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("sshd.log"))?)
        .spawn()
        .context("start sshd")?;
    let sshd = Sshd(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "sshd did not listen within 10 s: {}",
                std::fs::read_to_string(work.join("sshd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((sshd, port))
}

/// Paddock's figure (`ssh_round_trip`), and the host sshd's beside it
/// when it is there.
pub async fn figures(
    c: &paddock_client::Client,
    gateway: std::net::SocketAddr,
    sandbox: &str,
    n: usize,
) -> Result<(Vec<Value>, Vec<Value>)> {
    if crate::bench_peers::which("ssh").is_none()
        || crate::bench_peers::which("ssh-keygen").is_none()
    {
        bail!("OpenSSH's client (ssh, ssh-keygen) is not installed");
    }
    let work: PathBuf =
        std::env::temp_dir().join(format!("paddock-bench-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let key = work.join("key");
    keygen(&key)?;
    let reg = c
        .add_ssh_key(&w::SshKeyCreate {
            name: Some(format!("paddock-bench-{}", std::process::id())),
            public_key: std::fs::read_to_string(key.with_extension("pub"))?,
            sandbox: Some(sandbox.parse().context("the sandbox's id")?),
        })
        .await?;
    let dest = format!("{sandbox}@{}", gateway.ip());
    let (k, port) = (key.clone(), gateway.port());
    let ours = tokio::task::spawn_blocking(move || round_trips(&k, port, &dest, &[], n)).await?;
    let _ = c.delete_ssh_key(&reg.id.to_string()).await;
    let mut f = summary("ssh_round_trip", "ms", ours?);
    f["command"] = format!(
        "ssh -o KexAlgorithms=curve25519-sha256 -p {} <id>@{} true",
        gateway.port(),
        gateway.ip()
    )
    .into();
    let mut peers = Vec::new();
    if !Path::new(SSHD).is_file() {
        eprintln!("peer sshd skipped: {SSHD} is not installed (apt-get install openssh-server)");
    } else if !nix::unistd::Uid::effective().is_root() {
        eprintln!("peer sshd skipped: a private sshd needs root");
    } else {
        let w2 = work.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<Vec<f64>> {
            let (_sshd, port) = start_sshd(&w2, &key)?;
            // Debian's bash reads ~/.bashrc under sshd (its
            // SSH_SOURCE_BASHRC) unless it is a nested shell: SHLVL=1 keeps
            // the host user's rc files (a pyenv init, say) out of the
            // figure, as the sandbox's `sh -c` reads none.
            round_trips(&key, port, "root@127.0.0.1", &["-o", "SetEnv=SHLVL=1"], n)
        })
        .await?;
        match r {
            Ok(t) => {
                let mut p = summary("ssh_round_trip", "ms", t);
                p["peer"] = "sshd".into();
                p["command"] =
                    "ssh -o KexAlgorithms=curve25519-sha256 -o SetEnv=SHLVL=1 -p <port> root@127.0.0.1 true (the host's sshd, a private one)"
                        .into();
                peers.push(p);
            }
            Err(e) => eprintln!("peer sshd skipped: {e:#}"),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok((vec![f], peers))
}
