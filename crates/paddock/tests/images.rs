//! Images from a real registry: Debian's docker-registry on loopback,
//! serving small images built here with umoci and pushed with skopeo.

mod common;
use common::registry::*;
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

struct Env {
    reg: Registry,
    daemon: Daemon,
    work: std::path::PathBuf,
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
        // Statics are never dropped: tear the daemon (its sandboxes,
        // bridge and NAT rules) and the registry down at exit.
        extern "C" fn cleanup() {
            if let Some(e) = E.get() {
                // SAFETY: called once at process exit; nothing uses E after.
                let e = unsafe { std::ptr::read(e as *const Env) };
                let work = e.work.clone();
                drop(e);
                let _ = std::fs::remove_dir_all(work);
            }
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(cleanup) };
        Env { reg, daemon, work }
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
    assert_eq!(la.split(':').count(), 2, "{la}");
    assert_eq!(lb.split(':').count(), 2, "{lb}");
    // In their user namespaces each sandbox sees the cache's layers
    // through idmapped mounts of its own (`<dir>/l/<i>`, detached once the
    // overlay holds them): nothing of a layer is copied there.
    for (id, l) in [(&a.id, &la), (&b.id, &lb)] {
        let dir = e.daemon.data.join("sandboxes").join(id).join("l");
        for (i, p) in l.split(':').enumerate() {
            assert_eq!(std::path::Path::new(p), dir.join(i.to_string()), "{l}");
            assert_eq!(
                std::fs::read_dir(p).map_or(0, |d| d.count()),
                0,
                "{p} holds files"
            );
        }
    }

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

/// A settings file giving `alice:s3cret` for `reg` (reached over HTTP).
fn credentials_file(work: &Path, reg: &Registry) -> std::path::PathBuf {
    let cfg = work.join("config.toml");
    std::fs::write(&cfg, format!(
        "insecure_registries = [\"{a}\"]\n[registry_auth.\"{a}\"]\nusername = \"alice\"\npassword = \"s3cret\"\n",
        a = reg.addr
    )).unwrap();
    cfg
}

/// Without credentials, a pull from `reg` is refused with a clear error.
fn refused_without_credentials(reg: &Registry, image: &str) {
    let anon = Daemon::start_with("127.0.0.1", &["--insecure-registry", &reg.addr]);
    let r = anon.api().post("/images", json!({"reference": image}));
    assert!([401, 403, 503].contains(&r.status), "{}", r.text);
}

#[test]
fn private_registry_with_credentials() {
    let work = std::env::temp_dir().join(format!("paddock-images-auth-{}", std::process::id()));
    let reg = Registry::start_with_auth(&work.join("registry"), Some(("alice", "s3cret")));
    reg.push_busybox(&work, "private/bb:1");
    let image = format!("{}/private/bb:1", reg.addr);

    // No credentials: a clear refusal.
    refused_without_credentials(&reg, &image);

    // Credentials from the settings file.
    let cfg = credentials_file(&work, &reg);
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

#[test]
fn pull_reports_progress() {
    let e = env();
    let api = e.daemon.api();
    let work = std::env::temp_dir().join(format!("paddock-images-{}", std::process::id()));
    e.reg.push_busybox(&work, "test/progress:1");
    let image = format!("{}/test/progress:1", e.reg.addr);
    let r = api.send(
        api.req(reqwest::Method::POST, "/images")
            .header("accept", "text/event-stream")
            .json(&json!({"reference": image})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let events = sse_events(&r.text);
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|(k, _)| k == "progress")
        .map(|(_, v)| v)
        .collect();
    let statuses: Vec<&str> = progress
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"resolving"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"done"), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == "extracted").count(),
        2,
        "two layers downloaded and unpacked: {statuses:?}"
    );
    let last = progress.last().unwrap();
    assert!(last["total"].as_u64().unwrap() > 100_000, "{last}");
    assert_eq!(last["current"], last["total"], "{last}");
    // Byte counts only grow.
    let currents: Vec<u64> = progress
        .iter()
        .map(|p| p["current"].as_u64().unwrap())
        .collect();
    assert!(currents.windows(2).all(|w| w[0] <= w[1]), "{currents:?}");
    let (kind, info) = events.last().unwrap();
    assert_eq!(kind, "pulled");
    assert_eq!(info["layers"], 2);

    // Pulled again: every layer is a cache hit.
    let r = api.send(
        api.req(reqwest::Method::POST, "/images")
            .header("accept", "text/event-stream")
            .json(&json!({"reference": image})),
    );
    let statuses: Vec<String> = sse_events(&r.text)
        .iter()
        .filter(|(k, _)| k == "progress")
        .map(|(_, v)| v["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "cached").count(),
        2,
        "{statuses:?}"
    );
    assert!(!statuses.iter().any(|s| s == "downloading"), "{statuses:?}");

    // A failing pull ends the stream with an `error` event.
    let r = api.send(
        api.req(reqwest::Method::POST, "/images")
            .header("accept", "text/event-stream")
            .json(&json!({"reference": format!("{}/test/progress:nope", e.reg.addr)})),
    );
    let (kind, problem) = sse_events(&r.text).pop().unwrap();
    assert_eq!(kind, "error", "{}", r.text);
    assert_eq!(problem["status"], 404, "{problem}");

    // The CLI pulls through the same stream (its bar is drawn only on a
    // terminal) and reports the image, or the error with a failing status.
    let out = e.daemon.cli(&["images", "pull", &image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sha256:"));
    let out = e.daemon.cli(&[
        "images",
        "pull",
        &format!("{}/test/progress:nope", e.reg.addr),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn template_of_a_registry_image() {
    let e = env();
    let api = e.daemon.api();
    let work = std::env::temp_dir().join(format!("paddock-images-{}", std::process::id()));
    e.reg.push_busybox(&work, "test/templated:1");
    let image = format!("{}/test/templated:1", e.reg.addr);
    let r = api.post(
        "/templates",
        json!({"name": "bb", "image": image, "env": {"T": "1"}, "memory_mb": 300}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // Made with the template, the image was pulled: it is in the cache.
    assert_eq!(
        api.get(&format!("/images/inspect?reference={image}"))
            .status,
        200
    );
    let sb = Sb::new(&api, json!({"template": "bb"}));
    assert_eq!(
        sb.sh("echo $T $GREETING; cat /srv/name")["stdout"],
        "1 from-image\ntest/templated:1\n"
    );
    // Overriding the template's image.
    let other = format!("{}/test/bb:1", e.reg.addr);
    let sb2 = Sb::new(&api, json!({"template": "bb", "image": other}));
    assert_eq!(sb2.sh("cat /srv/name")["stdout"], "test/bb:1\n");
    // A template whose image cannot be pulled is refused, and not stored.
    let r = api.post(
        "/templates",
        json!({"name": "broken", "image": format!("{}/test/none:1", e.reg.addr)}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(api.get("/templates/broken").status, 404);
    assert_eq!(api.delete("/templates/bb").status, 204);
}

/// A token server for the registry's bearer auth: it checks basic
/// credentials and answers with a JWT (RS256, signed by `openssl`, its
/// certificate in the `x5c` header) granting what the scope asks.
fn token_server(dir: &Path, user: &str, pass: &str) -> String {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    sh(&format!(
        "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem \
         -days 2 -subj /CN=paddock-test-token 2>/dev/null && openssl x509 -in cert.pem -outform DER -out cert.der",
        dir.display()
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let cert = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("cert.der")).unwrap());
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") && v.trim() == want {
                        authorized = true;
                    }
                }
            }
            if !authorized {
                let _ = conn.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
            // scope=repository:<name>:<actions>
            let query = request_line.split(' ').nth(1).unwrap_or("").to_string();
            let scope = query
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("scope="))
                .unwrap_or("")
                .replace("%3A", ":")
                .replace("%2F", "/");
            let mut access = Vec::new();
            if let Some(rest) = scope.strip_prefix("repository:") {
                if let Some((name, actions)) = rest.rsplit_once(':') {
                    access.push(json!({"type": "repository", "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>()}));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [cert]});
            let claims = json!({"iss": "paddock-test-issuer", "sub": "alice",
                "aud": "paddock-test", "exp": now + 300, "nbf": now - 10, "iat": now,
                "jti": format!("{now}-{}", access.len()), "access": access});
            let input = format!(
                "{}.{}",
                b64.encode(header.to_string()),
                b64.encode(claims.to_string())
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(dir.join("key.pem"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let sig = child.wait_with_output().unwrap().stdout;
            let token = format!("{input}.{}", b64.encode(sig));
            let body =
                json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    addr
}

#[test]
fn registry_with_bearer_token_auth() {
    let work = std::env::temp_dir().join(format!("paddock-images-token-{}", std::process::id()));
    // Pushed while the registry is open, then served behind token auth.
    let reg = Registry::start(&work.join("registry"));
    reg.push_busybox(&work, "tokened/bb:1");
    reg.down();
    let token = token_server(&work, "alice", "s3cret");
    let config = work.join("registry/config.yml");
    let mut cfg = std::fs::read_to_string(&config).unwrap();
    cfg.push_str(&format!(
        "auth:\n  token:\n    realm: http://{token}/token\n    service: paddock-test\n    issuer: paddock-test-issuer\n    rootcertbundle: {}\n",
        work.join("cert.pem").display()
    ));
    std::fs::write(&config, cfg).unwrap();
    reg.up();
    let image = format!("{}/tokened/bb:1", reg.addr);

    // Without credentials the token server refuses: a clear error.
    refused_without_credentials(&reg, &image);

    // With them, the client trades them for a token and pulls.
    let cfg = credentials_file(&work, &reg);
    let d = Daemon::start_with("127.0.0.1", &["--config", cfg.to_str().unwrap()]);
    let api = d.api();
    let sb = Sb::new(&api, json!({"image": image}));
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "tokened/bb:1\n");
    drop(sb);
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn python_image_runs_python() {
    let e = env();
    let api = e.daemon.api();
    let work = std::env::temp_dir().join(format!("paddock-images-{}", std::process::id()));
    e.reg.push_python(&work, "test/python:3", &[]);
    let sb = Sb::new(
        &api,
        json!({"image": format!("{}/test/python:3", e.reg.addr)}),
    );
    let out = sb.sh("python3 -c 'import json, sys; print(json.dumps({\"v\": sys.version_info[0]}))'; ls /usr/bin");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(
        out["stdout"].as_str().unwrap().starts_with("{\"v\": 3}\n"),
        "{out}"
    );
    // The host's /usr is not there: this really is the image.
    assert!(!out["stdout"].as_str().unwrap().contains("skopeo"), "{out}");
}

#[test]
fn zstd_layers_and_a_multi_arch_index() {
    let e = env();
    let api = e.daemon.api();
    let work = std::env::temp_dir().join(format!("paddock-images-{}", std::process::id()));
    // zstd-compressed layers (recompressed by skopeo).
    let o = work.join("oci-test-bb-1");
    let z = work.join("oci-zstd");
    sh(&format!(
        "rm -rf {z} && skopeo copy --quiet --dest-compress --dest-compress-format zstd oci:{o}:img oci:{z}:img && \
         skopeo copy --quiet --dest-tls-verify=false oci:{z}:img docker://{}/test/zstd:1",
        e.reg.addr,
        o = o.display(),
        z = z.display(),
    ));
    let m = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/test/zstd/manifests/1", e.reg.addr))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("zstd"), "{m}");
    let sb = Sb::new(
        &api,
        json!({"image": format!("{}/test/zstd:1", e.reg.addr)}),
    );
    assert_eq!(sb.sh("cat /srv/second")["stdout"], "layer2\n");
    drop(sb);

    // An index with an arm64 and an amd64 entry: the amd64 one is pulled.
    e.reg.push_busybox(&work, "test/multi:amd64");
    e.reg.push_busybox(&work, "test/multi:arm64");
    let http = reqwest::blocking::Client::new();
    let manifest = |tag: &str| -> (String, u64, String) {
        let r = http
            .get(format!(
                "http://{}/v2/test/multi/manifests/{tag}",
                e.reg.addr
            ))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        let digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        let media = r.headers()["content-type"].to_str().unwrap().to_string();
        let len = r.bytes().unwrap().len() as u64;
        (digest, len, media)
    };
    let (amd, amd_len, amd_media) = manifest("amd64");
    let (arm, arm_len, arm_media) = manifest("arm64");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": arm_media, "digest": arm, "size": arm_len,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": amd_media, "digest": amd, "size": amd_len,
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    let r = http
        .put(format!(
            "http://{}/v2/test/multi/manifests/latest",
            e.reg.addr
        ))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let image = format!("{}/test/multi:latest", e.reg.addr);
    let pulled = api.post("/images", json!({"reference": image}));
    assert_eq!(pulled.status, 200, "{}", pulled.text);
    assert_eq!(pulled.body["digest"], amd.as_str(), "{}", pulled.text);
    let sb = Sb::new(&api, json!({"image": image}));
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "test/multi:amd64\n");
}

#[test]
fn mirror_fallback_cli_and_a_cache_that_survives_restarts() {
    let e = env();
    // The registry's mirror is down: pulls fall back to the registry.
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--insecure-registry",
            &e.reg.addr,
            "--registry-mirror",
            &format!("{}=http://127.0.0.1:1", e.reg.addr),
        ],
    );
    let image = format!("{}/test/bb:1", e.reg.addr);
    let ok = |args: &[&str]| d.cli_ok(args);
    assert!(ok(&["images", "pull", &image]).contains("sha256:"));
    let ls = ok(&["images", "ls"]);
    assert!(ls.contains(&image), "{ls}");
    let listed: serde_json::Value = serde_json::from_str(&ok(&["images", "ls", "--json"])).unwrap();
    assert!(listed.to_string().contains(&image), "{listed}");
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&["images", "inspect", &image])).unwrap();
    assert_eq!(inspected["layers"], 2, "{inspected}");

    // The cache survives a crash of the daemon.
    d.kill9();
    d.restart();
    let api = d.api();
    assert_eq!(
        api.get(&format!("/images/inspect?reference={image}")).body["digest"],
        inspected["digest"]
    );
    let sb = Sb::new(&api, json!({"image": image}));
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "test/bb:1\n");
    drop(sb);

    // rm forgets the reference; prune then removes its layers.
    ok(&["images", "rm", &image]);
    let out = d.cli(&["images", "inspect", &image]);
    assert!(!out.status.success());
    let pruned = ok(&["images", "prune"]);
    assert!(pruned.contains('2'), "{pruned}");
    assert_eq!(
        std::fs::read_dir(d.data.join("images/layers"))
            .unwrap()
            .count(),
        0
    );
}

fn key_of(d: &Daemon, name: &str) -> String {
    let out = d.cli(&["keys", "create", "--name", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn references(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 19, item 10: any key listed, removed and pruned every image in the
/// cache. An image is its puller's: another key neither sees nor removes
/// it, prune is the operator's, and the cache entry goes once nobody holds it.
#[test]
fn images_belong_to_the_principals_that_pulled_them() {
    let e = env();
    let d = &e.daemon;
    let a = d.api_with_key(&key_of(d, "img-a"));
    let b = d.api_with_key(&key_of(d, "img-b"));
    let operator = d.api();
    let image = format!("{}/test/owned:1", e.reg.addr);
    e.reg.push_busybox(&e.work, "test/owned:1");
    let r = a.post("/images", json!({"reference": image}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(references(&a.get("/images")).contains(&image));
    // B sees nothing of it and cannot remove it, nor prune the cache.
    assert!(
        !references(&b.get("/images")).contains(&image),
        "B lists A's image"
    );
    assert_eq!(
        b.get(&format!("/images/inspect?reference={image}")).status,
        404
    );
    let r = b.delete(&format!("/images?reference={image}"));
    assert_eq!(r.status, 404, "B removed A's image: {}", r.text);
    let r = b.post("/images/prune", json!({}));
    assert_eq!(r.status, 403, "B pruned the cache: {}", r.text);
    assert_eq!(
        a.get(&format!("/images/inspect?reference={image}")).status,
        200
    );
    // The operator sees every image.
    assert!(references(&operator.get("/images")).contains(&image));
    // B pulls it too: each holds a claim, and A's removal drops only A's.
    assert_eq!(b.post("/images", json!({"reference": image})).status, 200);
    assert_eq!(a.delete(&format!("/images?reference={image}")).status, 204);
    assert!(!references(&a.get("/images")).contains(&image));
    assert_eq!(
        a.get(&format!("/images/inspect?reference={image}")).status,
        404
    );
    assert!(references(&b.get("/images")).contains(&image));
    assert!(references(&operator.get("/images")).contains(&image));
    // A sandbox from it is B's pull on B's behalf; the last claim gone, the
    // entry goes (the sandbox keeps its layers).
    let sb = Sb::new(&b, json!({"image": image}));
    assert_eq!(b.delete(&format!("/images?reference={image}")).status, 204);
    assert!(!references(&operator.get("/images")).contains(&image));
    assert_eq!(sb.sh("cat /srv/name")["stdout"], "test/owned:1\n");
    drop(sb);
    // Creating from an image is a pull on the caller's behalf: A holds it now.
    let sb = Sb::new(&a, json!({"image": image}));
    drop(sb);
    assert!(references(&a.get("/images")).contains(&image));
    assert!(!references(&b.get("/images")).contains(&image));
    assert_eq!(operator.post("/images/prune", json!({})).status, 200);
}

/// Issue 19, item 10: pulls used the daemon's registry credentials for any
/// key, so any tenant could fetch a private image. The credentials are the
/// operator's (and those the pull policy names); which registries and
/// repositories a principal may pull from is the policy's.
#[test]
fn private_images_need_the_operators_credentials() {
    let work = std::env::temp_dir().join(format!("paddock-images-policy-{}", std::process::id()));
    let reg = Registry::start_with_auth(&work.join("registry"), Some(("alice", "s3cret")));
    reg.push_busybox(&work, "private/bb:1");
    reg.push_busybox(&work, "other/bb:1");
    let image = format!("{}/private/bb:1", reg.addr);
    let other = format!("{}/other/bb:1", reg.addr);
    let cfg = credentials_file(&work, &reg);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[pull_policy]\ncredentials = [\"trusted\"]\n[pull_policy.principals]\nnarrow = [\"{a}/other/**\"]\n",
        a = reg.addr
    ));
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start_with("127.0.0.1", &["--config", cfg.to_str().unwrap()]);
    let b = d.api_with_key(&key_of(&d, "tenant-b"));
    let trusted = d.api_with_key(&key_of(&d, "trusted"));
    let narrow = d.api_with_key(&key_of(&d, "narrow"));
    let operator = d.api();
    // B is refused, naming the image; the operator pulls it.
    let r = b.post("/images", json!({"reference": image}));
    assert_eq!(
        r.status, 403,
        "B pulled a private image with the daemon's credentials: {}",
        r.text
    );
    assert!(r.text.contains("private/bb"), "{}", r.text);
    let r = operator.post("/images", json!({"reference": image}));
    assert_eq!(r.status, 200, "{}", r.text);
    // Cached now, it is still not B's: neither a create nor a pull gets it.
    let r = b.post("/sandboxes", json!({"image": image}));
    assert_eq!(
        r.status, 403,
        "B booted a private image from the cache: {}",
        r.text
    );
    assert_eq!(b.post("/images", json!({"reference": image})).status, 403);
    assert!(!references(&b.get("/images")).contains(&image));
    // A principal the policy gives the credentials.
    let r = trusted.post("/images", json!({"reference": other}));
    assert_eq!(r.status, 200, "{}", r.text);
    // A principal the policy keeps to one repository.
    let r = narrow.post("/images", json!({"reference": image}));
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("private/bb") && r.text.contains("pull policy"),
        "{}",
        r.text
    );
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}
