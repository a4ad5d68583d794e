//! The peers `paddock bench` measures next to Paddock, on the same machine
//! and the same figures: a bare OCI bundle under `crun` (the floor: no
//! image store, no network wiring, no agent) and under `runc`, and
//! `podman` with the same busybox root imported as an image. What a user of
//! them would do: `run -d`, `exec` into it, copy files through `exec` with
//! `cat`. A peer that is not installed is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::bench::{summary, BenchArgs};

/// A peer: a bare OCI runtime with a busybox bundle of its own, or podman
/// with that root imported as an image.
pub struct OciPeer {
    pub name: String,
    bin: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
    podman: bool,
}

const PODMAN_IMAGE: &str = "localhost/paddock-bench-busybox:latest";

/// Where `name` is on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The host's busybox: the peers' bundle is made of it.
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl OciPeer {
    /// Prepares a bundle (rootfs: the host's static busybox) under `work`.
    pub async fn new(name: &str, work: &Path) -> Result<Option<OciPeer>> {
        let Some(bin) = which(name) else {
            return Ok(None);
        };
        let podman = name == "podman";
        let busybox = busybox()
            .context("no /bin/busybox for the peers' bundle (apt-get install busybox-static)")?;
        let dir = work.join(name);
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "tmp", "proc", "dev", "sys", "etc"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        std::fs::copy(&busybox, rootfs.join("bin/busybox"))?;
        crate::bench::write_executable(&rootfs.join("bin/bare-true"), &crate::bench::bare_true())?;
        for applet in ["sh", "true", "cat", "head", "sleep", "yes"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let root = dir.join("state");
        std::fs::create_dir_all(&root)?;
        if podman {
            // Ulimits within this host's hard limits (podman's defaults
            // exceed them), and the root imported as an image.
            std::fs::write(
                root.join("containers.conf"),
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n",
            )?;
            let peer = OciPeer {
                name: name.to_string(),
                bin,
                root,
                bundle,
                podman,
            };
            let tar = dir.join("rootfs.tar");
            let out = Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .output()
                .await?;
            if !out.status.success() {
                bail!("tar: {}", String::from_utf8_lossy(&out.stderr));
            }
            let mut c = peer.cmd();
            c.arg("import").arg(&tar).arg(PODMAN_IMAGE);
            peer.ok(&mut c, "import").await?;
            return Ok(Some(peer));
        }
        let out = Command::new(&bin)
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .await?;
        if !out.status.success() {
            bail!("{name} spec: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["/bin/sleep", "100000"]);
        spec["root"]["readonly"] = false.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(Some(OciPeer {
            name: name.to_string(),
            bin,
            root,
            bundle,
            podman,
        }))
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        if self.podman {
            c.env("CONTAINERS_CONF", self.root.join("containers.conf"));
        } else {
            c.arg("--root").arg(&self.root);
        }
        c
    }

    async fn ok(&self, c: &mut Command, what: &str) -> Result<Vec<u8>> {
        self.succeeded(c.stdin(Stdio::null()).output().await?, what)
    }

    /// `out`'s stdout if the command succeeded, else its stderr as the error.
    fn succeeded(&self, out: std::process::Output, what: &str) -> Result<Vec<u8>> {
        if !out.status.success() {
            bail!(
                "{} {what}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// Runs `argv` in container `id` and counts its stdout as it streams
    /// in, without keeping it (as Paddock's own figures count theirs):
    /// collecting 64 MiB would time the bench's page faults on a growing
    /// buffer, dear on a VM, rather than the way out of the container.
    async fn exec_count(&self, id: &str, argv: &[&str]) -> Result<usize> {
        let mut c = self.cmd();
        c.args(["exec", id])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0;
        loop {
            match stdout.read(&mut buf).await? {
                0 => break,
                k => n += k,
            }
        }
        self.succeeded(child.wait_with_output().await?, "exec")?;
        Ok(n)
    }

    async fn run_d(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        if self.podman {
            c.args([
                "run",
                "-d",
                "--name",
                id,
                PODMAN_IMAGE,
                "/bin/sleep",
                "100000",
            ]);
        } else {
            c.args(["run", "-d", "--bundle"]).arg(&self.bundle).arg(id);
        }
        // The detached container keeps the stdio it was given: a pipe
        // would never see EOF. Its errors go to a file instead.
        let log = self.root.join("run.err");
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let st = c.status().await?;
        if !st.success() {
            bail!(
                "{} run -d: {}",
                self.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        if self.podman {
            c.args(["rm", "-f", "-t", "0", id]);
        } else {
            c.args(["delete", "-f", id]);
        }
        self.ok(&mut c, "delete").await.map(drop)
    }

    async fn exec_out(&self, id: &str, argv: &[&str]) -> Result<Vec<u8>> {
        let mut c = self.cmd();
        c.args(["exec", id]).args(argv);
        self.ok(&mut c, "exec").await
    }

    /// The figures, as `summary` rows named `<figure>` with `peer` set.
    /// Only the groups of figures `a` asks for (create, exec, sse or ws,
    /// files).
    pub async fn measure(&self, a: &BenchArgs) -> Result<Vec<Value>> {
        let (creates, execs, file_mib) = (a.creates, a.execs, a.file_mib);
        let tag = std::process::id();
        let mut figures = Vec::new();
        if a.wants("create") {
            let mut t = Vec::new();
            for i in 0..creates {
                let id = format!("pb-{tag}-{i}");
                let t0 = Instant::now();
                self.run_d(&id).await?;
                t.push(t0.elapsed().as_secs_f64() * 1000.0);
                self.delete(&id).await?;
            }
            figures.push(summary("create_to_ready", "ms", t));
        }
        if a.wants("snapshot") && self.podman {
            self.snapshots(&mut figures).await?;
        }
        let stdout = a.wants("ws") || a.wants("sse");
        if !(a.wants("exec") || stdout || a.wants("files")) {
            return Ok(self.named(figures));
        }

        let id = format!("pb-{tag}-x");
        self.run_d(&id).await?;
        let result = async {
            if a.wants("exec") {
                let t = self.round_trips(&id, "/bin/true", execs).await?;
                figures.push(summary("exec_round_trip", "ms", t));
                // Optional, as Paddock's is: a note, and the rest goes on.
                match self.round_trips(&id, "/bin/bare-true", execs).await {
                    Ok(t) => figures.push(summary("exec_round_trip_bare", "ms", t)),
                    Err(e) => eprintln!(
                        "peer {}: exec round trip of a bare `true`: not measured: {e:#}",
                        self.name
                    ),
                }
            }

            let n = file_mib << 20;
            if stdout {
                self.exec_stdout(&id, n, &mut figures).await?;
            }
            if a.wants("files") {
                self.files(&id, n, &mut figures).await?;
            }
            anyhow::Ok(())
        }
        .await;
        let _ = self.delete(&id).await;
        result?;
        Ok(self.named(figures))
    }

    /// `n` exec round trips of `cmd` in container `id`, in ms, after 5
    /// to warm up.
    async fn round_trips(&self, id: &str, cmd: &str, n: usize) -> Result<Vec<f64>> {
        let mut t = Vec::new();
        for i in 0..n + 5 {
            let t0 = Instant::now();
            self.exec_out(id, &[cmd]).await?;
            if i >= 5 {
                t.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(t)
    }

    fn named(&self, mut figures: Vec<Value>) -> Vec<Value> {
        for f in &mut figures {
            f["peer"] = self.name.clone().into();
        }
        figures
    }

    /// `n` bytes of a command's stdout read through `exec`, 3 times.
    async fn exec_stdout(&self, id: &str, n: usize, figures: &mut Vec<Value>) -> Result<()> {
        self.exec_out(id, &["/bin/sh", "-c", &crate::bench::stdout_source()])
            .await?;
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let got = self
                .exec_count(id, &["/bin/sh", "-c", &crate::bench::stdout_producer(n)])
                .await?;
            if got != n {
                bail!("{}: stdout gave {got} bytes of {n}", self.name);
            }
            rates.push(n as f64 / 1e6 / t0.elapsed().as_secs_f64());
        }
        figures.push(summary("exec_stdout", "MB/s", rates));
        Ok(())
    }

    /// `n` bytes in through an exec's stdin and out through its stdout, 3
    /// times each.
    async fn files(&self, id: &str, n: usize, figures: &mut Vec<Value>) -> Result<()> {
        let data = vec![0x5au8; n];
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let t0 = Instant::now();
            let mut c = self.cmd();
            // podman passes stdin only with -i; crun and runc always do.
            c.arg("exec");
            if self.podman {
                c.arg("-i");
            }
            c.args([id, "/bin/sh", "-c", "cat > /tmp/bench.bin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = c.spawn()?;
            let mut stdin = child.stdin.take().context("stdin")?;
            stdin.write_all(&data).await?;
            drop(stdin);
            self.succeeded(child.wait_with_output().await?, "upload")?;
            up.push(n as f64 / 1e6 / t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let got = self.exec_count(id, &["/bin/cat", "/tmp/bench.bin"]).await?;
            if got != n {
                bail!("{} download: {got} bytes of {n}", self.name);
            }
            down.push(n as f64 / 1e6 / t0.elapsed().as_secs_f64());
        }
        figures.push(summary("upload", "MB/s", up));
        figures.push(summary("download", "MB/s", down));
        Ok(())
    }

    /// What a podman user does for Paddock's snapshot figures: `podman
    /// commit` of a container that wrote 64 MiB (a snapshot), `podman run`
    /// of that image (a create from it), and for a fork of one that wrote
    /// 10 MiB, a commit and then one or ten runs.
    async fn snapshots(&self, figures: &mut Vec<Value>) -> Result<()> {
        let tag = std::process::id();
        let src = format!("pb-{tag}-snap");
        self.run_d(&src).await?;
        let image = |i: usize| format!("localhost/paddock-bench-snap-{tag}-{i}:latest");
        let mut made: Vec<String> = Vec::new();
        let result = async {
            self.exec_out(
                &src,
                &[
                    "/bin/sh",
                    "-c",
                    "dd if=/dev/urandom of=/tmp/big bs=1M count=64 2>/dev/null",
                ],
            )
            .await?;
            let mut snap = Vec::new();
            for i in 0..5 {
                let t0 = Instant::now();
                let mut c = self.cmd();
                c.args(["commit", "-q", &src, &image(i)]);
                self.ok(&mut c, "commit").await?;
                snap.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            figures.push(summary("snapshot_64mib", "ms", snap));
            let mut from = Vec::new();
            for i in 0..5 {
                let id = format!("pb-{tag}-from-{i}");
                let t0 = Instant::now();
                self.run_image(&id, &image(0)).await?;
                from.push(t0.elapsed().as_secs_f64() * 1000.0);
                made.push(id);
            }
            figures.push(summary("create_from_snapshot", "ms", from));
            self.exec_out(
                &src,
                &[
                    "/bin/sh",
                    "-c",
                    "rm /tmp/big && dd if=/dev/urandom of=/tmp/ten bs=1M count=10 2>/dev/null",
                ],
            )
            .await?;
            for count in [1usize, 10] {
                let mut t = Vec::new();
                for round in 0..3 {
                    let img = image(100 + count * 10 + round);
                    let t0 = Instant::now();
                    let mut c = self.cmd();
                    c.args(["commit", "-q", &src, &img]);
                    self.ok(&mut c, "commit").await?;
                    for k in 0..count {
                        let id = format!("pb-{tag}-fork-{count}-{round}-{k}");
                        self.run_image(&id, &img).await?;
                        made.push(id);
                    }
                    t.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                figures.push(summary(&format!("fork_{count}_of_10mib"), "ms", t));
            }
            anyhow::Ok(())
        }
        .await;
        for id in made.iter().chain(std::iter::once(&src)) {
            let _ = self.delete(id).await;
        }
        let mut c = self.cmd();
        c.args(["image", "prune", "-f"]);
        let _ = self.ok(&mut c, "image prune").await;
        for i in (0..5).chain((0..3).flat_map(|r| [110 + r, 200 + r])) {
            let mut c = self.cmd();
            c.args(["rmi", "-f", &image(i)]);
            let _ = self.ok(&mut c, "rmi").await;
        }
        result
    }

    /// `podman run -d` of `image`.
    async fn run_image(&self, id: &str, image: &str) -> Result<()> {
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", id, image, "/bin/sleep", "100000"]);
        let log = self.root.join("run.err");
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if !c.status().await?.success() {
            bail!(
                "{} run -d {image}: {}",
                self.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(())
    }
}
