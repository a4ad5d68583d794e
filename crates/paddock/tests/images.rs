//! Images from a real registry: Debian's docker-registry on loopback,
//! serving small images built here with umoci and pushed with skopeo.

mod common;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-ec").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Registry {
    addr: String,
    dir: PathBuf,
    creds: Option<(String, String)>,
    child: std::sync::Mutex<Option<Child>>,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        Self::start_with_auth(dir, None)
    }

    /// A registry that wants `user:password` (htpasswd, bcrypt).
    fn start_with_auth(dir: &Path, creds: Option<(&str, &str)>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(dir).unwrap();
        let mut auth = String::new();
        if let Some((u, p)) = creds {
            let out = Command::new("/usr/bin/python3")
                .args(["-c", &format!("import crypt; print(crypt.crypt('{p}', crypt.mksalt(crypt.METHOD_BLOWFISH)))")])
                .output()
                .unwrap();
            let hash = String::from_utf8(out.stdout).unwrap();
            std::fs::write(dir.join("htpasswd"), format!("{u}:{}\n", hash.trim())).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        std::fs::write(dir.join("config.yml"), format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("data").display())).unwrap();
        let r = Registry {
            addr,
            dir: dir.to_path_buf(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            child: std::sync::Mutex::new(None),
        };
        r.up();
        r
    }

    fn up(&self) {
        let access = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("access.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(access)
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/deps.sh installs it)");
        *self.child.lock().unwrap() = Some(child);
        eventually(20, || {
            std::net::TcpStream::connect(&self.addr).ok().map(|_| ())
        });
    }

    fn down(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Builds a busybox image of two layers and pushes it as `name`.
    fn push_busybox(&self, work: &Path, name: &str) {
        let oci = work.join(format!("oci-{}", name.replace(['/', ':'], "-")));
        let bundle = oci.with_extension("bundle");
        let _ = std::fs::remove_dir_all(&oci);
        let _ = std::fs::remove_dir_all(&bundle);
        let (o, b) = (oci.display(), bundle.display());
        sh(&format!("umoci init --layout {o} && umoci new --image {o}:img && umoci unpack --image {o}:img {b}"));
        sh(&format!("mkdir -p {b}/rootfs/bin {b}/rootfs/etc {b}/rootfs/tmp && cp /bin/busybox {b}/rootfs/bin/ && \
            for c in sh ls cat echo id pwd env sleep wc stat head md5sum test; do ln -sf busybox {b}/rootfs/bin/$c; done && \
            echo 'root:x:0:0:root:/root:/bin/sh' > {b}/rootfs/etc/passwd && echo 'app:x:1000:1000::/home/app:/bin/sh' >> {b}/rootfs/etc/passwd && \
            echo deleted-later > {b}/rootfs/etc/gone && mkdir -p {b}/rootfs/srv && echo keep > {b}/rootfs/srv/keep && \
            umoci repack --image {o}:img {b}"));
        // A second layer: one deletion (a whiteout) and one new file.
        sh(&format!(
            "rm -rf {b} && umoci unpack --image {o}:img {b} && rm {b}/rootfs/etc/gone && \
            echo layer2 > {b}/rootfs/srv/second && echo {name} > {b}/rootfs/srv/name && \
            umoci repack --image {o}:img {b}"
        ));
        sh(&format!("umoci config --image {o}:img --config.env GREETING=from-image --config.workingdir /srv \
            --config.cmd sleep --config.cmd 600 --config.exposedports 8080/tcp --config.user app"));
        let creds = match &self.creds {
            Some((u, p)) => format!("--dest-creds {u}:{p}"),
            None => String::new(),
        };
        sh(&format!(
            "skopeo copy --quiet --dest-tls-verify=false {creds} oci:{o}:img docker://{}/{name}",
            self.addr
        ));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}

struct Env {
    reg: Registry,
    daemon: Daemon,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let work = std::env::temp_dir().join(format!("paddock-images-{}", std::process::id()));
        let reg = Registry::start(&work.join("registry"));
        reg.push_busybox(&work, "test/bb:1");
        reg.push_busybox(&work, "library/mirrored:latest");
        reg.push_busybox(&work, "test/corrupt:1");
        reg.push_busybox(&work, "test/concurrent:1");
        reg.push_busybox(&work, "test/prunable:1");
        let mirror = format!("docker.io=http://{}", reg.addr);
        let daemon = Daemon::start_with(
            "127.0.0.1",
            &[
                "--insecure-registry",
                &reg.addr,
                "--registry-mirror",
                &mirror,
                "--image-alias",
                &format!("alias/of-bb:1={}/test/bb:1", reg.addr),
            ],
        );
        Env { reg, daemon }
    })
}

#[test]
fn pull_run_and_image_config() {
    let e = env();
    let api = e.daemon.api();
    let image = format!("{}/test/bb:1", e.reg.addr);
    let r = api.post("/images", json!({"reference": image}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["layers"], 2);
    assert!(r.body["digest"].as_str().unwrap().starts_with("sha256:"));
    let sb = Sb::new(&api, json!({"image": image, "env": {"MINE": "1"}}));
    let out = sb.sh("pwd; echo $GREETING $MINE; id -u; cat /srv/keep /srv/second; test -e /etc/gone && echo still-there || echo whited-out");
    assert_eq!(
        out["stdout"], "/srv\nfrom-image 1\n1000\nkeep\nlayer2\nwhited-out\n",
        "{out}"
    );
    // Cmd is the main process; ExposedPorts are declared.
    assert!(sb.sh("cat /proc/*/cmdline | tr '\\0' ' '")["stdout"]
        .as_str()
        .unwrap()
        .contains("sleep 600"));
    let ports = api.get(&sb.path("/ports")).body;
    assert!(
        ports["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 8080 && p["declared"] == true),
        "{ports}"
    );
    // The caller overrides the image: user, cwd.
    let r = api.exec(&sb.id, json!({"cmd": ["id", "-u"], "user": "root"}));
    assert_eq!(r["stdout"], "0\n");
    let listed = api.get("/images").body;
    assert!(listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["reference"] == image.as_str()));
}

#[test]
fn cache_hits_need_no_registry_and_share_layers() {
    let e = env();
    let api = e.daemon.api();
    let image = format!("{}/test/bb:1", e.reg.addr);
    api.post("/images", json!({"reference": image}));
    // Two sandboxes of one image: both stack the same cached layer
    // directories, nothing is copied.
    let a = Sb::new(&api, json!({"image": image}));
    let b = Sb::new(&api, json!({"image": image}));
    let lower = |id: &str| -> String {
        let root = e.daemon.data.join("sandboxes").join(id).join("rootfs");
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mi
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(root.to_str().unwrap()))
            .expect("rootfs mount")
            .to_string();
        line.split(',')
            .find_map(|o| o.strip_prefix("lowerdir="))
            .unwrap()
            .to_string()
    };
    let (la, lb) = (lower(&a.id), lower(&b.id));
    assert_eq!(la, lb);
    let cache = e.daemon.data.join("images/layers");
    assert_eq!(la.split(':').count(), 2, "{la}");
    assert!(
        la.split(':')
            .all(|l| std::path::Path::new(l).starts_with(&cache)),
        "{la}"
    );
    a.sh("echo private > /srv/keep");
    assert_eq!(b.sh("cat /srv/keep")["stdout"], "keep\n");
    // An alias resolves to the same image.
    let c = Sb::new(&api, json!({"image": "alias/of-bb:1"}));
    assert_eq!(c.sh("cat /srv/second")["stdout"], "layer2\n");
}

#[test]
fn mirror_serves_docker_hub_names() {
    let e = env();
    let api = e.daemon.api();
    // `mirrored:latest` is docker.io/library/mirrored:latest, fetched
    // through the mirror on loopback.
    let sb = Sb::new(&api, json!({"image": "mirrored:latest"}));
    assert_eq!(sb.sh("cat /srv/keep")["stdout"], "keep\n");
}

#[test]
fn registry_errors_are_clear() {
    let e = env();
    let api = e.daemon.api();
    let r = api.post(
        "/sandboxes",
        json!({"image": format!("{}/test/bb:no-such-tag", e.reg.addr)}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("no-such-tag"),
        "{}",
        r.text
    );
    let r = api.post("/sandboxes", json!({"image": "UPPER/case::bad"}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "image");
    // A registry that does not answer.
    let r = api.post(
        "/images",
        json!({"reference": "127.0.0.1:1/nothing/here:1"}),
    );
    assert!(r.status == 503 || r.status == 502, "{}", r.text);
    // A corrupted blob: refused, and nothing is cached.
    let blobs = e.reg.dir.join("data/docker/registry/v2/blobs/sha256");
    let corrupt = format!("{}/test/corrupt:1", e.reg.addr);
    let manifest: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/test/corrupt/manifests/1", e.reg.addr))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = blobs.join(&layer[..2]).join(&layer).join("data");
    let good = std::fs::read(&data).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    std::fs::write(&data, &bad).unwrap();
    let r = api.post("/images", json!({"reference": corrupt}));
    assert!(r.status >= 500 || r.status == 400, "{}", r.text);
    assert!(r.text.to_lowercase().contains("digest"), "{}", r.text);
    assert!(
        !e.daemon.data.join("images/layers").join(&layer).exists(),
        "a corrupt layer was cached"
    );
    std::fs::write(&data, &good).unwrap();
    let r = api.post("/images", json!({"reference": corrupt}));
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn registry_down_then_back() {
    // A registry of its own, so that stopping it disturbs no other test.
    let work = std::env::temp_dir().join(format!("paddock-images-down-{}", std::process::id()));
    let reg = Registry::start(&work.join("registry"));
    reg.push_busybox(&work, "test/flaky:1");
    let d = Daemon::start_with("127.0.0.1", &["--insecure-registry", &reg.addr]);
    let api = d.api();
    reg.down();
    let r = api.post(
        "/images",
        json!({"reference": format!("{}/test/flaky:1", reg.addr)}),
    );
    assert!(r.status == 503 || r.status == 502, "{}", r.text);
    reg.up();
    let r = api.post(
        "/images",
        json!({"reference": format!("{}/test/flaky:1", reg.addr)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

/// The digest of the n-th layer of `repo:tag` in the test registry.
fn layer_digest(e: &Env, repo: &str, tag: &str, n: usize) -> String {
    let manifest: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/{tag}", e.reg.addr))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    manifest["layers"][n]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn concurrent_pulls_download_once() {
    let e = env();
    let api = e.daemon.api();
    let image = format!("{}/test/concurrent:1", e.reg.addr);
    let layer = layer_digest(e, "test/concurrent", "1", 1);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| api.post("/images", json!({"reference": image})).status))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200, 200, 200]);
    let log = std::fs::read_to_string(e.reg.dir.join("access.log")).unwrap();
    let gets = log
        .lines()
        .filter(|l| l.contains("GET") && l.contains(&format!("/blobs/{layer}")))
        .count();
    assert_eq!(gets, 1, "the layer was downloaded {gets} times");
}

#[test]
fn inspect_rm_and_prune() {
    let e = env();
    let api = e.daemon.api();
    let image = format!("{}/test/prunable:1", e.reg.addr);
    let layer = layer_digest(e, "test/prunable", "1", 1);
    let layer_dir = e
        .daemon
        .data
        .join("images/layers")
        .join(layer.trim_start_matches("sha256:"));
    assert_eq!(api.post("/images", json!({"reference": image})).status, 200);
    let i = api.get(&format!("/images/inspect?reference={image}"));
    assert_eq!(i.status, 200, "{}", i.text);
    assert_eq!(i.body["layers"], 2);
    let sb = Sb::new(&api, json!({"image": image}));
    // Forgotten, but its sandbox still stands on its layers: prune keeps them.
    assert_eq!(
        api.delete(&format!("/images?reference={image}")).status,
        204
    );
    assert_eq!(
        api.get(&format!("/images/inspect?reference={image}"))
            .status,
        404
    );
    assert_eq!(
        api.delete(&format!("/images?reference={image}")).status,
        404
    );
    assert_eq!(api.post("/images/prune", json!({})).status, 200);
    assert!(layer_dir.is_dir(), "prune removed a layer a sandbox uses");
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "test/prunable:1\n");
    drop(sb);
    let r = api.post("/images/prune", json!({}));
    assert!(
        r.body["removed_layers"].as_u64().unwrap() >= 1,
        "{}",
        r.text
    );
    assert!(!layer_dir.exists());
}

#[test]
fn private_registry_with_credentials() {
    let work = std::env::temp_dir().join(format!("paddock-images-auth-{}", std::process::id()));
    let reg = Registry::start_with_auth(&work.join("registry"), Some(("alice", "s3cret")));
    reg.push_busybox(&work, "private/bb:1");
    let image = format!("{}/private/bb:1", reg.addr);

    // No credentials: a clear refusal.
    let anon = Daemon::start_with("127.0.0.1", &["--insecure-registry", &reg.addr]);
    let r = anon.api().post("/images", json!({"reference": image}));
    assert!(
        r.status == 403 || r.status == 401 || r.status == 503,
        "{}",
        r.text
    );
    drop(anon);

    // Credentials from the settings file.
    let cfg = work.join("config.toml");
    std::fs::write(&cfg, format!(
        "insecure_registries = [\"{a}\"]\n[registry_auth.\"{a}\"]\nusername = \"alice\"\npassword = \"s3cret\"\n",
        a = reg.addr
    )).unwrap();
    let d = Daemon::start_with("127.0.0.1", &["--config", cfg.to_str().unwrap()]);
    let api = d.api();
    let sb = Sb::new(&api, json!({"image": image}));
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "private/bb:1\n");
    drop(sb);
    drop(d);

    // Credentials from Docker's client config.
    let docker = work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        // base64 of "alice:s3cret"
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"YWxpY2U6czNjcmV0\"}}}}}}",
            reg.addr
        ),
    )
    .unwrap();
    let d = Daemon::start_with_env(
        "127.0.0.1",
        &["--insecure-registry", &reg.addr],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    let r = d.api().post("/images", json!({"reference": image}));
    assert_eq!(r.status, 200, "{}", r.text);
    drop(d);

    // A settings file with an unknown key is refused at start, naming it.
    std::fs::write(&cfg, "insecure_registry = []\n").unwrap();
    let out = Command::new(bin())
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("insecure_registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}
