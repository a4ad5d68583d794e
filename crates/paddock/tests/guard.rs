//! Web pages may not drive the listeners that serve without a key (issue
//! 19, item 3): each test here performs an attack a page in a browser on
//! this host can make (DNS rebinding, with its own `Host`; cross-site
//! requests, with its `Origin`; bodies a form or a `fetch` without CORS
//! preflight sends), against a real daemon, and checks it is refused and
//! had no effect; and that what the SDKs and the CLI send still works,
//! over TCP and the unix socket.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

/// One daemon with every dialect on, and `box.test` allowed.
struct Guarded {
    d: Daemon,
    /// The native API's address.
    native: String,
    hiver: String,
    flash_http: String,
    flash_grpc: String,
}

fn guarded() -> &'static Guarded {
    static G: OnceLock<Guarded> = OnceLock::new();
    let mut fresh = false;
    let g = G.get_or_init(|| {
        fresh = true;
        let hiver = format!("127.0.0.1:{}", free_port());
        let flash_http = format!("127.0.0.1:{}", free_port());
        let flash_grpc = format!("127.0.0.1:{}", free_port());
        let d = Daemon::start_with(
            "127.0.0.1",
            &[
                "--hiver-listen",
                &hiver,
                "--flash-http-listen",
                &flash_http,
                "--flash-grpc-listen",
                &flash_grpc,
                "--allowed-host",
                "box.test",
            ],
        );
        Guarded {
            native: d.url.trim_start_matches("http://").to_string(),
            d,
            hiver,
            flash_http,
            flash_grpc,
        }
    });
    if fresh {
        clean_up_at_exit(&g.d);
    }
    g
}

/// An HTTP/1.1 exchange written out byte for byte, as a browser would
/// send it (its `Host`, `Origin` and content type); the status and body.
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_string());
    }
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// How many sandboxes of the local principal have `key`.
fn with_key(g: &Guarded, key: &str) -> usize {
    let r = g.d.api().get(&format!("/sandboxes?key={key}"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["sandboxes"].as_array().unwrap().len()
}

#[test]
fn native_api_refuses_a_rebound_host_and_cross_site_requests() {
    let g = guarded();
    let spec = r#"{"key": "rebound"}"#;
    // A page on evil.example, its name rebound to 127.0.0.1.
    for host in [
        "evil.example",
        &format!("evil.example:{}", g.d.url.rsplit(':').next().unwrap()),
    ] {
        let (status, body) = raw(
            &g.native,
            "POST",
            "/v1/sandboxes",
            &[("Host", host), JSON],
            spec,
        );
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("\"field\":\"Host\""), "{body}");
    }
    // A rebound page may set any header, but a key it does not have.
    let (status, body) = raw(
        &g.native,
        "POST",
        "/v1/sandboxes",
        &[
            ("Host", "evil.example"),
            ("Authorization", "Basic eDp5"),
            JSON,
        ],
        spec,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &g.native,
        "POST",
        "/v1/sandboxes",
        &[
            ("Host", "evil.example"),
            ("Authorization", "Bearer nope"),
            JSON,
        ],
        spec,
    );
    assert_eq!(status, 401, "{body}");
    // Cross-site: a foreign Origin, a script's fetch from a page the API's
    // own port proxy serves, a form's body.
    let (status, body) = raw(
        &g.native,
        "POST",
        "/v1/sandboxes",
        &[("Host", &g.native), ("Origin", "http://evil.example"), JSON],
        spec,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &g.native,
        "POST",
        "/v1/sandboxes",
        &[("Host", &g.native), ("Sec-Fetch-Mode", "cors"), JSON],
        spec,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        with_key(g, "rebound"),
        0,
        "a refused request created a sandbox"
    );
    // HTTP/1.1 without a Host.
    let (status, body) = raw(&g.native, "POST", "/v1/sandboxes", &[JSON], spec);
    assert_eq!(status, 400, "{body}");
    // What a client sends still works: loopback by address or name, and an
    // allowed name, any port; a page on a loopback origin.
    let port = g.d.url.rsplit(':').next().unwrap().to_string();
    for (i, host) in [
        g.native.clone(),
        format!("localhost:{port}"),
        format!("BOX.test:{port}"),
        format!("[::1]:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = raw(
            &g.native,
            "POST",
            "/v1/sandboxes",
            &[("Host", host), ("Origin", "http://localhost:3000"), JSON],
            &format!(r#"{{"key": "fine-{i}"}}"#),
        );
        assert_eq!(status, 201, "{host}: {body}");
        let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        g.d.api().destroy(&id);
    }
}

#[test]
fn native_upload_takes_only_octet_stream_without_a_key() {
    let g = guarded();
    let api = g.d.api();
    let sb = Sb::new(&api, json!({}));
    let path = format!("/v1/sandboxes/{}/files?path=/workspace/x", sb.id);
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
    ] {
        let (status, body) = raw(
            &g.native,
            "PUT",
            &path,
            &[("Host", &g.native), ("Content-Type", ct)],
            "data",
        );
        assert_eq!(status, 415, "{ct}: {body}");
    }
    let (status, body) = raw(&g.native, "PUT", &path, &[("Host", &g.native)], "data");
    assert_eq!(status, 415, "{body}");
    assert_eq!(sb.sh("test -e /workspace/x; echo $?")["stdout"], "1\n");
    let r = put_file(&api, &sb.id, "/workspace/x", "", b"data".to_vec());
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn native_websocket_exec_refuses_a_foreign_origin() {
    let g = guarded();
    let api = g.d.api();
    let sb = Sb::new(&api, json!({}));
    let url = format!("ws://{}/v1/sandboxes/{}/exec/ws", g.native, sb.id);
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a page on evil.example opened a WebSocket exec"),
    }
    // A loopback origin may.
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut()
        .insert("origin", "http://127.0.0.1:3000".parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    assert_eq!(resp.status(), 101);
    let _ = ws.close(None);
}

/// hiver's controller and sandbox API: no key ever.
#[test]
fn hiver_refuses_rebinding_cross_site_exec_and_form_upload() {
    let g = guarded();
    let port = g.hiver.rsplit(':').next().unwrap().to_string();
    let evil = format!("evil.example:{port}");
    let mount = r#"{"fs":[{"mount":"/workspace","acls":[{"path":"/workspace/**","access":"rw"}],"backend":"local"}]}"#;
    // Rebinding: create.
    let (status, body) = raw(
        &g.hiver,
        "PUT",
        "/controller/v1/sandboxes/hv-evil",
        &[("Host", &evil), JSON],
        mount,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert_eq!(
        with_key(g, "hv-evil"),
        0,
        "a rebound page created a sandbox"
    );
    // The SDK's create.
    let (status, body) = raw(
        &g.hiver,
        "PUT",
        "/controller/v1/sandboxes/hv-guard",
        &[("Host", &g.hiver), JSON],
        mount,
    );
    assert_eq!(status, 201, "{body}");
    let exec = "/sandbox/hv-guard/v1/exec";
    let run = |script: &str| -> Value {
        let (status, body) = raw(
            &g.hiver,
            "POST",
            exec,
            &[("Host", &format!("localhost:{port}")), JSON],
            &json!({ "command": script }).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(body.trim()).unwrap_or_else(|_| json!(body))
    };
    // Rebinding: exec.
    let pwn = json!({"command": "touch /workspace/rebound"}).to_string();
    let (status, body) = raw(&g.hiver, "POST", exec, &[("Host", &evil), JSON], &pwn);
    assert_eq!(status, 403, "{body}");
    // Cross-site: a text/plain POST (no preflight) from a foreign origin,
    // and the same from no origin at all.
    let pwn = json!({"command": "touch /workspace/cross-site"}).to_string();
    let (status, body) = raw(
        &g.hiver,
        "POST",
        exec,
        &[
            ("Host", &g.hiver),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        &pwn,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &g.hiver,
        "POST",
        exec,
        &[("Host", &g.hiver), ("Content-Type", "text/plain")],
        &pwn,
    );
    assert_eq!(status, 415, "{body}");
    // Cross-site: a form's multipart upload, and a form posted from a page
    // on the same origin (the port proxy's).
    let form =
        "--b\r\nContent-Disposition: form-data; name=\"destination\"\r\n\r\n/workspace\r\n--b\r\n\
                Content-Disposition: form-data; name=\"file\"; filename=\"formed\"\r\n\
                Content-Type: text/plain\r\n\r\npwned\r\n--b--\r\n";
    let multipart = ("Content-Type", "multipart/form-data; boundary=b");
    let (status, body) = raw(
        &g.hiver,
        "POST",
        "/sandbox/hv-guard/v1/file",
        &[
            ("Host", &g.hiver),
            ("Origin", "http://evil.example"),
            multipart,
        ],
        form,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &g.hiver,
        "POST",
        "/sandbox/hv-guard/v1/file",
        &[("Host", &g.hiver), ("Origin", "null"), multipart],
        form,
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(
        &g.hiver,
        "POST",
        "/sandbox/hv-guard/v1/file",
        &[
            ("Host", &g.hiver),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Site", "same-origin"),
            multipart,
        ],
        form,
    );
    assert_eq!(status, 403, "{body}");
    let out = run("ls /workspace");
    assert_eq!(out["stdout"], "", "a refused request left files: {out}");
    // The SDK's upload (multipart, no Origin) and exec, through an allowed name.
    let (status, body) = raw(
        &g.hiver,
        "POST",
        "/sandbox/hv-guard/v1/file",
        &[("Host", &g.hiver), multipart],
        form,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw(
        &g.hiver,
        "POST",
        exec,
        &[("Host", &format!("box.test:{port}")), JSON],
        r#"{"command": "cat /workspace/formed"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pwned"), "{body}");
    let (status, _) = raw(
        &g.hiver,
        "POST",
        "/controller/v1/shutdown/hv-guard",
        &[("Host", &g.hiver)],
        "",
    );
    assert_eq!(status, 204);
}

#[test]
fn flash_http_refuses_a_rebound_host() {
    let g = guarded();
    let port = g.flash_http.rsplit(':').next().unwrap().to_string();
    let (status, body) = raw(
        &g.flash_http,
        "POST",
        "/sandboxes",
        &[("Host", &format!("evil.example:{port}")), JSON],
        r#"{"type": "docker", "image": ""}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"field\":\"Host\""), "{body}");
    let (status, body) = raw(
        &g.flash_http,
        "POST",
        "/sandboxes",
        &[
            ("Host", &g.flash_http),
            ("Origin", "http://evil.example"),
            JSON,
        ],
        r#"{"type": "docker", "image": ""}"#,
    );
    assert_eq!(status, 403, "{body}");
    // What the SDK sends.
    let (status, body) = raw(
        &g.flash_http,
        "GET",
        "/sandboxes",
        &[("Host", &format!("localhost:{port}"))],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw(
        &g.flash_http,
        "GET",
        "/sandboxes/missing",
        &[("Host", &format!("box.test:{port}"))],
        "",
    );
    assert_eq!(status, 404, "{body}");
}

/// gRPC: the `:authority` the client names, checked as a Host.
#[test]
fn flash_grpc_refuses_a_rebound_authority() {
    let g = guarded();
    let script = r#"
import sys, grpc
target, authority = sys.argv[1], sys.argv[2]
opts = [("grpc.default_authority", authority)] if authority else []
ch = grpc.insecure_channel(target, options=opts)
call = ch.unary_unary("/sandbox.SandboxService/GetStatus",
                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    call(b"\n\x07missing", timeout=30)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;
    let call = |authority: &str| -> String {
        let out = Command::new(python())
            .args(["-c", script, &g.flash_grpc, authority])
            .stdin(Stdio::null())
            .output()
            .expect("the test virtualenv");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let port = g.flash_grpc.rsplit(':').next().unwrap();
    let evil = call(&format!("evil.example:{port}"));
    assert!(evil.starts_with("PERMISSION_DENIED"), "{evil}");
    // The default authority (the target) and localhost reach the service.
    for a in ["", &format!("localhost:{port}")] {
        let ok = call(a);
        assert!(ok.starts_with("NOT_FOUND"), "{a}: {ok}");
    }
}

/// The CLI finds the daemon's unix socket by itself; the socket is
/// 0660 and keyless; `--require-auth` makes keyless loopback TCP a 401;
/// a stale socket is replaced at the next start.
#[test]
fn unix_socket_and_require_auth() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let group = "nogroup";
    let gid = nix::unistd::Group::from_name(group)
        .unwrap()
        .expect("group nogroup")
        .gid
        .as_raw();
    let d = Daemon::start_with("127.0.0.1", &["--require-auth", "--socket-group", group]);
    let m = std::fs::metadata(d.socket()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o7777, 0o660);
    assert_eq!((m.uid(), m.gid()), (0, gid));
    // Keyless TCP on loopback: refused.
    let r = d.api().get("/sandboxes");
    assert_eq!(r.status, 401, "{}", r.text);
    let key = d.cli_ok(&["keys", "create", "--name", "guard"]);
    let r = d.api_with_key(key.trim()).get("/sandboxes");
    assert_eq!(r.status, 200, "{}", r.text);
    // The CLI over the socket: no --host, found as the default.
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env_remove("PADDOCK_HOST")
            .env_remove("PADDOCK_API_KEY")
            .env("PADDOCK_SOCKET", d.socket())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        stdout_of(args, out)
    };
    let id = cli(&["create", "--label", "t=socket"]).trim().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(
        cli(&["exec", &id, "--", "echo", "over the socket"]),
        "over the socket\n"
    );
    let host = format!("unix://{}", d.socket().display());
    assert!(cli(&["--host", &host, "ls"]).contains(&id));
    // Killed, the daemon leaves its socket; the next one replaces it.
    d.kill9();
    assert!(d.socket().exists());
    d.restart();
    assert!(cli(&["ls"]).contains(&id));
    cli(&["rm", &id]);
}
