//! posthog-hogland from PyPI, unmodified, against a real `paddock serve`:
//! its first release (0.1.0, target/pyenv-hogland-0.1.0) and its newest
//! (0.5.0, target/pyenv-hogland-0.5.0), one after the other, against one
//! daemon. Both declare Python 3.12; scripts/pyenv.sh installs them on
//! this machine's 3.11 with `--ignore-requires-python` (they need 3.11's
//! `typing.Self`, nothing newer). tests/python/hogland_test.py drives each
//! SDK's whole surface, sync and async, and reaches a box made with
//! `access_type="ssh-public"` through the SSH gateway with OpenSSH's
//! client and the command the box shows; the other tests here attack the
//! dialect and check scale to zero through the native API and the CLI.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const KID: &str = "paddock-hogland-test";
const ISSUER: &str = "https://issuer.hogland.paddock.test";
const AUDIENCE: &str = "hogland";

#[test]
fn hogland_sdks_against_paddock() {
    let work = std::env::temp_dir().join(format!("paddock-hogland-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let (pem, jwks, cfg) = (
        work.join("key.pem"),
        work.join("jwks.json"),
        work.join("paddock.toml"),
    );
    let v01 = python_in("pyenv-hogland-0.1.0");
    let v05 = python_in("pyenv-hogland-0.5.0");
    oidc_key_pair(&v05, &pem, &jwks, KID);
    std::fs::write(
        &cfg,
        format!(
            "[[oidc]]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = \"{}\"\n",
            jwks.display()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let ssh = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--hogland-listen",
            &addr,
            "--ssh-listen",
            &ssh,
            "--config",
            &cfg.to_string_lossy(),
        ],
    );
    let (alice, bob) = (api_key(&d, "alice"), api_key(&d, "bob"));
    // A snapshot of alice's, named, made through the native API: a create
    // may start from it as `alias:<name>`.
    let api = d.api_with_key(&alice);
    let r = api.post("/sandboxes", json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = api.post(
        &format!("/sandboxes/{id}/exec"),
        json!({"shell": "echo from-alias > /alias.txt"}),
    );
    assert_eq!(r.body["exit_code"], 0, "{}", r.body);
    let r = api.post(
        &format!("/sandboxes/{id}/snapshots"),
        json!({"name": "hog-base"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    api.delete(&format!("/sandboxes/{id}"));
    let pubkey = ssh_keygen(&work, "hogland-test");
    let private_key = work.join("id_ed25519").to_string_lossy().into_owned();

    let url = format!("http://{addr}");
    let pem = pem.to_string_lossy().into_owned();
    for (python, version, run) in [(&v01, "0.1.0", "v01"), (&v05, "0.5.0", "v05")] {
        println!("posthog-hogland {version} ({python})");
        run_sdk_script_with(
            python,
            "hogland_test.py",
            &[
                ("HOG_HOST", &url),
                ("HOG_KEY_ALICE", &alice),
                ("HOG_KEY_BOB", &bob),
                ("HOG_JWT_KEY", &pem),
                ("HOG_JWT_KID", KID),
                ("HOG_JWT_ISSUER", ISSUER),
                ("HOG_JWT_AUDIENCE", AUDIENCE),
                ("HOGLAND_VERSION", version),
                ("HOG_RUN", run),
                ("HOG_SNAPSHOT_ALIAS", "hog-base"),
                ("HOG_SSH_PUBKEY", &pubkey),
                ("HOG_SSH_KEY_FILE", &private_key),
            ],
            "all hogland checks passed",
            &d,
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(work);
}

/// Attacks on the dialect: no credential or a wrong one, another
/// principal's box through every route, the caller's bearer carried into
/// the box by the proxy, a body past the cap held in memory; and the
/// exact answers the SDK depends on (problem details naming the field,
/// text errors before a stream, CR never in a `data:` line).
#[test]
fn hogland_holds_against_its_attacks() {
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with("127.0.0.1", &["--hogland-listen", &addr]);
    let (alice, bob) = (api_key(&d, "alice"), api_key(&d, "bob"));
    let base = format!("http://{addr}/v1");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let call = |m: reqwest::Method, path: &str, k: &str| {
        http.request(m, format!("{base}{path}")).bearer_auth(k)
    };

    // 1. No credential, a wrong one: 401 as problem details.
    for r in [
        http.get(format!("{base}/me")).send().unwrap(),
        call(reqwest::Method::GET, "/me", "pdk_wrong")
            .send()
            .unwrap(),
    ] {
        assert_eq!(r.status(), 401);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json"));
        let b: Value = r.json().unwrap();
        assert_eq!(b["status"], 401, "{b}");
    }

    // 2. Bad bodies: a syntax error is a 400, a field of the wrong type or
    // out of range a 422 naming it.
    let r = call(reqwest::Method::POST, "/hogboxes", &alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    for (body, loc) in [
        (json!({"cpus": "many"}), "body.cpus"),
        (json!({"cpus": 0.1}), "body.cpus"),
        (json!({"memory_mib": 100}), "body.memory_mib"),
        (json!({"env": {"1BAD": "x"}}), "body.env.1BAD"),
        (json!({"ttl_seconds": 30}), "body.ttl_seconds"),
        (
            json!({"access_type": "ssh-public", "ssh_public_key": "not a key"}),
            "body.ssh_public_key",
        ),
        (json!({"access_type": "ssh-public"}), "body.ssh_public_key"),
    ] {
        let r = call(reqwest::Method::POST, "/hogboxes", &alice)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let b: Value = r.json().unwrap();
        assert_eq!(b["errors"][0]["location"], loc, "{body}: {b}");
    }

    let r = call(reqwest::Method::POST, "/hogboxes", &alice)
        .json(&json!({"cpus": 1, "memory_mib": 512}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let exec = |argv: Value| -> Value {
        call(
            reqwest::Method::POST,
            &format!("/hogboxes/{id}/exec"),
            &alice,
        )
        .json(&json!({ "argv": argv }))
        .send()
        .unwrap()
        .json()
        .unwrap()
    };

    // 3. Bob reaches none of alice's box: every route is a 404, the
    // stream's as text (the SDK reads a JSON error before a stream as
    // `ResponseNotRead`).
    for (m, path) in [
        (reqwest::Method::GET, format!("/hogboxes/{id}")),
        (reqwest::Method::DELETE, format!("/hogboxes/{id}")),
        (reqwest::Method::POST, format!("/hogboxes/{id}/pause")),
        (reqwest::Method::POST, format!("/hogboxes/{id}/snapshots")),
        (
            reqwest::Method::GET,
            format!("/hogboxes/{id}/files?path=/etc/hostname"),
        ),
        (reqwest::Method::GET, format!("/hogboxes/{id}/proxy/8000/")),
    ] {
        let r = call(m.clone(), &path, &bob).send().unwrap();
        assert_eq!(r.status(), 404, "{m} {path}");
    }
    let r = call(
        reqwest::Method::POST,
        &format!("/hogboxes/{id}/exec/stream"),
        &bob,
    )
    .json(&json!({"argv": ["true"]}))
    .send()
    .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        exec(json!(["true"]))["exit_code"],
        0,
        "bob's delete left alice's box alone"
    );

    // 4. The proxy does not hand the caller's bearer to the box: a server
    // in it that answers with the headers it got never sees alice's key.
    const ECHO: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = str(self.headers).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers()
        self.wfile.write(b)
http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
"#;
    let r = call(
        reqwest::Method::PUT,
        &format!("/hogboxes/{id}/files?path=/tmp/echo.py"),
        &alice,
    )
    .body(ECHO)
    .send()
    .unwrap();
    assert_eq!(r.status(), 200);
    exec(json!([
        "sh",
        "-c",
        "nohup python3 /tmp/echo.py >/dev/null 2>&1 &"
    ]));
    let seen = eventually(20, || {
        let r = call(
            reqwest::Method::GET,
            &format!("/hogboxes/{id}/proxy/8000/x"),
            &alice,
        )
        .send()
        .ok()?;
        (r.status() == 200).then(|| r.text().unwrap())
    });
    assert!(seen.to_lowercase().contains("host:"), "{seen}");
    assert!(!seen.contains(&alice), "the key reached the box: {seen}");
    assert!(!seen.to_lowercase().contains("authorization"), "{seen}");

    // 5. A file past 64 MiB is refused by its length, before it is read.
    let r = call(
        reqwest::Method::PUT,
        &format!("/hogboxes/{id}/files?path=/tmp/big"),
        &alice,
    )
    .body(vec![0u8; (64 << 20) + 1])
    .send()
    .unwrap();
    assert_eq!(r.status(), 413);
    let r = call(
        reqwest::Method::PUT,
        &format!("/hogboxes/{id}/files?path=relative"),
        &alice,
    )
    .body("x")
    .send()
    .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().unwrap()["errors"][0]["location"],
        "query.path"
    );

    // 6. A streamed chunk with CR: no `data:` line carries one; the exit
    // event's data is an object with `code`; the stream ends after it.
    let r = call(
        reqwest::Method::POST,
        &format!("/hogboxes/{id}/exec/stream"),
        &alice,
    )
    .json(&json!({"argv": ["printf", "a\\r\\nb\\n"]}))
    .send()
    .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().unwrap();
    assert!(!text.contains('\r'), "{text:?}");
    assert!(
        text.contains("event: stdout\ndata: a\ndata: b\ndata: \n\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\n\n") && text.contains("event: exit\ndata: {\"code\":0,"),
        "{text:?}"
    );
    assert!(
        !text.contains("id:") && !text.contains("event: message"),
        "{text:?}"
    );
    drop(d);
}

/// Scale to zero in the native API and the CLI: a sandbox made with
/// `paddock create --idle-hibernate 2s --wake-on-request` stops once idle
/// (its files kept) and a request through the proxy starts it again, held
/// until its server answers; a workspace hibernates into a snapshot and a
/// request to its proxy wakes it into a new sandbox from it.
#[test]
fn idle_hibernate_and_wake_on_request_natively() {
    let d = Daemon::start();
    let out = d.cli(&[
        "create",
        "--idle-hibernate",
        "2s",
        "--wake-on-request",
        "--port",
        "8000",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--directory",
        "/workspace",
    ]);
    let id = stdout_of(&["create"], out).trim().to_string();
    let api = d.api();
    let r = api.post(
        &format!("/sandboxes/{id}/exec"),
        json!({"shell": "echo kept > /workspace/note.txt"}),
    );
    assert_eq!(r.body["exit_code"], 0, "{}", r.body);
    let sb = api.get(&format!("/sandboxes/{id}")).body;
    assert_eq!(sb["config"]["on_idle"], "hibernate", "{sb}");
    assert_eq!(sb["config"]["wake_on_request"], true, "{sb}");
    // Idle: stopped (hibernated), not destroyed.
    eventually(30, || {
        (api.get(&format!("/sandboxes/{id}")).body["state"] == "stopped").then_some(())
    });
    // A request wakes it, and is answered by its server.
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(format!("{}/v1/sandboxes/{id}/proxy/8000/note.txt", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "kept\n");
    assert_eq!(
        api.get(&format!("/sandboxes/{id}")).body["state"],
        "running"
    );
    // A malformed duration is the CLI's error, naming the flag.
    let out = d.cli(&["create", "--idle-hibernate", "ten"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--idle-hibernate"));
    api.delete(&format!("/sandboxes/{id}"));

    // A workspace through the CLI: woken, hibernated into a snapshot, and
    // woken again by a request to its proxy, with its files.
    let out = d.cli(&[
        "workspaces",
        "create",
        "dev",
        "--wake-on-request",
        "--port",
        "8000",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
        "--directory",
        "/workspace",
    ]);
    assert_eq!(stdout_of(&["workspaces", "create"], out).trim(), "dev");
    let first = stdout_of(
        &["workspaces", "wake"],
        d.cli(&["workspaces", "wake", "dev"]),
    )
    .trim()
    .to_string();
    let r = api.post(
        &format!("/sandboxes/{first}/exec"),
        json!({"shell": "echo from-the-first > /workspace/note.txt"}),
    );
    assert_eq!(r.body["exit_code"], 0, "{}", r.body);
    let snap = stdout_of(
        &["workspaces", "hibernate"],
        d.cli(&["workspaces", "hibernate", "dev"]),
    );
    assert!(snap.trim().parse::<uuid::Uuid>().is_ok(), "{snap}");
    assert_eq!(
        api.get(&format!("/sandboxes/{first}")).body["state"],
        "destroyed"
    );
    let ws = api.get("/workspaces/dev").body;
    assert!(ws.get("sandbox").is_none(), "{ws}");
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(format!("{}/v1/workspaces/dev/proxy/8000/note.txt", d.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "from-the-first\n");
    let ws = api.get("/workspaces/dev").body;
    assert_ne!(ws["sandbox"].as_str(), Some(first.as_str()), "{ws}");
    // A fenced delete naming another sandbox is refused.
    let r = api.delete(&format!("/workspaces/dev?expected_sandbox={first}"));
    assert_eq!(r.status, 409, "{}", r.body);
    let out = d.cli(&["workspaces", "rm", "dev"]);
    assert!(out.status.success());
    assert_eq!(api.get("/workspaces/dev").status, 404);
    drop(d);
}
