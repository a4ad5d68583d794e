//! agenttier from PyPI, unmodified, against a real `paddock serve`: its
//! newest release (0.8.1, target/pyenv) and its first (0.1.1,
//! target/pyenv-agenttier-0.1.1), one after the other, against one daemon.
//! tests/python/agenttier_test.py drives each SDK's whole surface, sync and
//! async: API keys, OIDC tokens (RS256, signed with a key whose JWKS the
//! settings file names), templates, governance policies, audit and, under
//! 0.8.1, clone, files and agent mode. The default image (the host's /usr)
//! holds the python3 the script's commands use.

mod common;
use common::*;
use std::path::Path;

const KID: &str = "paddock-agenttier-test";
const ISSUER: &str = "https://issuer.agenttier.paddock.test";
const AUDIENCE: &str = "paddock-agenttier-test";

/// The settings file: two templates, a policy for a principal and one for
/// a group, and the OIDC issuer whose keys are in `jwks`.
fn settings(jwks: &Path) -> String {
    format!(
        r#"[templates.general-coding]
description = "General coding sandbox"

[templates.small]
description = "A small sandbox"
memory_mb = 256
cpu = 0.5

[[policies]]
name = "limited"
principals = ["limited"]
templates = ["general-coding"]
max_sandboxes = 1
max_ttl_secs = 3600
max_cpu = 1.0
max_memory_mb = 512
max_disk_mb = 1024

[[policies]]
name = "restricted-group"
groups = ["restricted"]
templates = ["small"]

[[oidc]]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{}"
"#,
        jwks.display()
    )
}

#[test]
fn agenttier_sdks_against_paddock() {
    let work = std::env::temp_dir().join(format!("paddock-agenttier-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let (pem, jwks, cfg) = (
        work.join("key.pem"),
        work.join("jwks.json"),
        work.join("paddock.toml"),
    );
    oidc_key_pair(&python(), &pem, &jwks, KID);
    std::fs::write(&cfg, settings(&jwks)).unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--agenttier-listen",
            &addr,
            "--config",
            &cfg.to_string_lossy(),
        ],
    );
    let (alice, bob, limited) = (
        api_key(&d, "alice"),
        api_key(&d, "bob"),
        api_key(&d, "limited"),
    );
    let url = format!("http://{addr}");
    let pem = pem.to_string_lossy().into_owned();
    // The newest release, then the first: one after the other (each
    // removes every sandbox it made), with names of their own besides.
    for (python, version, run) in [
        (python(), "0.8.1", "v08"),
        (python_agenttier_0_1_1(), "0.1.1", "v01"),
    ] {
        println!("agenttier {version} ({python})");
        run_sdk_script_with(
            &python,
            "agenttier_test.py",
            &[
                ("AGENTTIER_URL", &url),
                ("AT_KEY_ALICE", &alice),
                ("AT_KEY_BOB", &bob),
                ("AT_KEY_LIMITED", &limited),
                ("AT_JWT_KEY", &pem),
                ("AT_JWT_KID", KID),
                ("AT_JWT_ISSUER", ISSUER),
                ("AT_JWT_AUDIENCE", AUDIENCE),
                ("AGENTTIER_VERSION", version),
                ("AT_RUN", run),
            ],
            "all agenttier checks passed",
            &d,
        );
    }
    drop(d);
    let _ = std::fs::remove_dir_all(work);
}

/// Attacks on the dialect, each of which worked before its fix: a huge
/// JSON body held in the daemon's memory, a previewed page sharing the
/// API's origin, a cancelled invoke whose command ignores SIGTERM, an
/// install left running by a client that went away, and another
/// principal's sandbox named in the audit log.
#[test]
fn agenttier_holds_against_its_attacks() {
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with("127.0.0.1", &["--agenttier-listen", &addr]);
    let (alice, bob) = (api_key(&d, "alice"), api_key(&d, "bob"));
    let at = format!("http://{addr}/api/v1");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let call = |m: reqwest::Method, path: &str, k: &str| {
        http.request(m, format!("{at}{path}"))
            .header("x-api-key", k)
    };
    let sh = |id: &str, cmd: &str| -> Value {
        call(
            reqwest::Method::POST,
            &format!("/sandboxes/{id}/exec"),
            &alice,
        )
        .json(&json!({"command": cmd, "timeout": 30}))
        .send()
        .unwrap()
        .json()
        .unwrap()
    };

    // 1. A JSON body is read up to 1 MiB, never whole into memory.
    // (Said before the body is sent: the daemon answers and closes.)
    let answer = |length: usize| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /api/v1/sandboxes HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {alice}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        .unwrap();
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&vec![b' '; length]);
        });
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).to_string()
    };
    assert!(answer(4 << 20).ends_with("413"), "{}", answer(4 << 20));

    let r = call(reqwest::Method::POST, "/sandboxes", &alice)
        .json(&json!({"name": "web", "templateRef": {"name": "general-coding"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());

    // 2. A page served through a preview gets an opaque origin, not the
    // API's.
    sh(
        "web",
        "echo hi > /tmp/index.html; nohup python3 -m http.server 8000 --directory /tmp >/dev/null 2>&1 &",
    );
    let r = call(reqwest::Method::POST, "/sandboxes/web/ports", &alice)
        .json(&json!({"port": 8000}))
        .send()
        .unwrap();
    let preview = r.json::<Value>().unwrap()["previewUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let page = eventually(20, || {
        let r = http
            .get(format!("{preview}index.html"))
            .header("x-api-key", &alice)
            .send()
            .ok()?;
        (r.status() == 200).then_some(r)
    });
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("sandbox "), "{csp}");
    assert!(!csp.contains("allow-same-origin"), "{csp}");

    // 3. A cancelled invoke whose command ignores SIGTERM is killed.
    let r = call(reqwest::Method::POST, "/sandboxes/web/configure", &alice)
        .json(&json!({"entrypoint": ["sh", "-c", "trap '' TERM; echo started; exec sleep 977"]}))
        .send()
        .unwrap();
    assert!(r.text().unwrap().contains("event: result"));
    let mut stream = call(reqwest::Method::POST, "/sandboxes/web/invoke", &alice)
        .header("content-type", "application/octet-stream")
        .send()
        .unwrap();
    let mut first = [0u8; 512];
    let n = std::io::Read::read(&mut stream, &mut first).unwrap();
    let text = String::from_utf8_lossy(&first[..n]).to_string();
    let start = text.find("\"invokeId\":\"").unwrap() + 12;
    let invoke = &text[start..start + 32];
    eventually(10, || {
        sh("web", "pgrep -f 'slee[p] 977'")["exitCode"]
            .as_i64()
            .filter(|&c| c == 0)
    });
    let r = call(
        reqwest::Method::POST,
        "/sandboxes/web/invoke/cancel",
        &alice,
    )
    .json(&json!({"invokeId": invoke}))
    .send()
    .unwrap();
    assert_eq!(r.status(), 200);
    let t0 = Instant::now();
    eventually(15, || {
        sh("web", "pgrep -f 'slee[p] 977'")["exitCode"]
            .as_i64()
            .filter(|&c| c == 1)
    });
    assert!(t0.elapsed() < Duration::from_secs(12));
    let rest = std::io::read_to_string(&mut stream).unwrap();
    assert!(rest.contains("\"reason\":\"canceled\""), "{rest}");

    // 4. An install whose client went away goes too.
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let _ = quick
        .post(format!("{at}/sandboxes/web/configure"))
        .header("x-api-key", &alice)
        .json(&json!({"installCommand": ["sleep", "654"]}))
        .send()
        .and_then(|r| r.text());
    eventually(10, || {
        sh("web", "pgrep -f 'slee[p] 654'")["exitCode"]
            .as_i64()
            .filter(|&c| c == 1)
    });

    // 5. An archive of 12000 files: each file's read was dropped before
    // its call ended (reset), and past h2's limit of such resets the
    // agent's connection was closed and the zip cut short.
    sh(
        "web",
        "mkdir -p /workspace/many && cd /workspace/many && for i in $(seq 1 12000); do echo $i > f$i; done",
    );
    let zip = call(
        reqwest::Method::GET,
        "/sandboxes/web/archive?path=/workspace/many",
        &alice,
    )
    .send()
    .unwrap()
    .bytes()
    .unwrap();
    let count = |sig: &[u8]| zip.windows(4).filter(|w| *w == sig).count();
    assert_eq!(count(b"PK\x03\x04"), 12000, "every file's entry");
    assert_eq!(count(b"PK\x05\x06"), 1, "the central directory's end");
    assert_eq!(sh("web", "cat /workspace/many/f7")["stdout"], "7\n");

    // 6. A refused call on another's sandbox does not name it for the
    // caller.
    let r = call(reqwest::Method::POST, "/sandboxes", &bob)
        .json(&json!({"name": "secret", "namespace": "acquisition", "templateRef": {"name": "general-coding"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let bobs = d.api_with_key(&bob).get("/sandboxes").body["sandboxes"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = d.api_with_key(&alice).delete(&format!("/sandboxes/{bobs}"));
    assert_eq!(r.status, 404);
    let log = call(reqwest::Method::GET, "/audit", &alice)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(log.contains(&bobs), "the refusal is recorded: {log}");
    assert!(
        !log.contains("secret") && !log.contains("acquisition"),
        "{log}"
    );
    // 7. A query or path the routes cannot read is a 400 in the SDK's
    // error body, naming what is wrong.
    for path in ["/audit?limit=1e23", "/sandboxes/%FF"] {
        let r = call(reqwest::Method::GET, path, &alice).send().unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    drop(d);
}

/// Without `--require-auth` a loopback agenttier lets requests without
/// credentials in as the operator (the SDK's dev mode); with it, they are
/// 401, and a key still works.
#[test]
fn agenttier_dev_mode_is_closed_by_require_auth() {
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &["--agenttier-listen", &addr, "--require-auth"],
    );
    let alice = api_key(&d, "alice");
    let url = format!("http://{addr}/api/v1/user/me");
    let r = reqwest::blocking::get(&url).unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["error"].is_string(), "{body}");
    let r = reqwest::blocking::Client::new()
        .get(&url)
        .header("x-api-key", &alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().unwrap();
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["isAdmin"], false);
    drop(d);
}
