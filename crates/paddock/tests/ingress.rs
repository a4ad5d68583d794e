//! The ingress (`paddock serve --ingress-listen`): requests routed by
//! `Host` to sandboxes' proxies, bound domains and `<port>-<id>` names,
//! through a real HTTPS client (curl) that verifies the ingress's
//! certificates against Paddock's CA, and a WebSocket through the plain
//! HTTP listener; the takeovers a second principal would try.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

const ZONE: &str = "paddock.test";

/// Answers every GET with its port, path and headers as JSON, on each
/// port it is given.
const HEADERS_SERVER: &str = r#"
import http.server, json, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({"port": self.server.server_port, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
for p in sys.argv[1:]:
    s = http.server.ThreadingHTTPServer(("0.0.0.0", int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
threading.Event().wait()
"#;

struct Rig {
    d: Daemon,
    https: u16,
    http: u16,
    ca: PathBuf,
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        let (https, http) = (free_port(), free_port());
        // Paddock's CA signs for bound domains under example.test only.
        let cfg = std::env::temp_dir().join(format!("paddock-ingress-{}.toml", std::process::id()));
        std::fs::write(&cfg, "[ingress]\nmint_domains = [\"example.test\"]\n").unwrap();
        let d = Daemon::start_with(
            "127.0.0.1",
            &[
                "--config",
                &cfg.to_string_lossy(),
                "--ingress-listen",
                &format!("127.0.0.1:{https}"),
                "--ingress-http-listen",
                &format!("127.0.0.1:{http}"),
                "--zone",
                ZONE,
            ],
        );
        let ca = d.data.join("ingress-ca.pem");
        Rig { d, https, http, ca }
    })
}

/// `curl` over HTTPS to `host` (resolved to the ingress), verifying the
/// certificate against Paddock's CA: (status, body); status 0 when curl
/// failed (its stderr as the body).
fn curl(r: &Rig, host: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(&r.ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", r.https))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", r.https))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return (0, String::from_utf8_lossy(&out.stderr).to_string());
    }
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A sandbox of `api`'s with key `key`, serving HEADERS_SERVER on 3000
/// and 8080 and the WebSocket echo on 9001.
fn serving<'a>(api: &'a Api, key: &str) -> Sb<'a> {
    let sb = Sb::new(api, json!({"key": key}));
    for (path, body) in [
        ("/workspace/h.py", HEADERS_SERVER),
        ("/workspace/ws.py", WS_ECHO),
    ] {
        let put = api.send(
            api.req(
                reqwest::Method::PUT,
                &sb.path(&format!("/files?path={path}")),
            )
            .header("content-type", "application/octet-stream")
            .body(body),
        );
        assert_eq!(put.status, 201, "{}", put.text);
    }
    sb.sh("(python3 /workspace/h.py 3000 8080 >/dev/null 2>&1 &); (python3 /workspace/ws.py >/dev/null 2>&1 &)");
    eventually(15, || {
        let p = api.get(&sb.path("/ports")).body;
        let ports: Vec<u64> = p["ports"]
            .as_array()?
            .iter()
            .filter(|x| x["listening"] == true)
            .filter_map(|x| x["port"].as_u64())
            .collect();
        [3000, 8080, 9001]
            .iter()
            .all(|x| ports.contains(x))
            .then_some(())
    });
    sb
}

#[test]
fn named_default_auto_and_bound_domains_over_verified_https() {
    let r = rig();
    let alice_key = api_key(&r.d, "alice-routes");
    let alice = r.d.api_with_key(&alice_key);
    let sb = serving(&alice, "web");
    // No proxy yet: the name reaches nothing.
    assert_eq!(curl(r, &format!("web.{ZONE}"), "/", &[]).0, 404);
    let p = alice.post(&sb.path("/proxies"), json!({"name": "api", "port": 8080}));
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.body["url"], format!("https://api.web.{ZONE}:{}", r.https));
    let p = alice.post(&sb.path("/proxies"), json!({}));
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(
        (p.body["name"].as_str(), p.body["port"].as_u64()),
        (Some("default"), Some(0))
    );
    let list = alice.get(&sb.path("/proxies")).body;
    assert_eq!(list["proxies"][0]["name"], "default");
    assert_eq!(list["proxies"][1]["name"], "api");

    // Named: its port, the client's Host kept, X-Forwarded-* set.
    let (st, body) = curl(r, &format!("api.web.{ZONE}"), "/x?y=1", &[]);
    assert_eq!(st, 200, "{body}");
    let b = json_of(&body);
    assert_eq!(b["port"], 8080);
    assert_eq!(b["path"], "/x?y=1");
    assert_eq!(b["headers"]["host"], format!("api.web.{ZONE}:{}", r.https));
    assert_eq!(b["headers"]["x-forwarded-proto"], "https");
    assert_eq!(b["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        b["headers"]["x-forwarded-host"],
        format!("api.web.{ZONE}:{}", r.https)
    );
    // Default, auto: the lowest port it listens on; by key and by id.
    for host in [
        format!("web.{ZONE}"),
        format!("{}.{ZONE}", sb.id),
        format!("WEB.{ZONE}"),
    ] {
        let (st, body) = curl(r, &host, "/", &[]);
        assert_eq!(st, 200, "{host}: {body}");
        assert_eq!(json_of(&body)["port"], 3000, "{host}");
    }
    // A port set later.
    let p = alice.send(
        alice
            .req(reqwest::Method::PUT, &sb.path("/proxies/default"))
            .json(&json!({"port": 8080})),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(
        json_of(&curl(r, &format!("web.{ZONE}"), "/", &[]).1)["port"],
        8080
    );
    // A bound domain: the default proxy.
    let b = alice.post(
        "/domains",
        json!({"domain": "App.Example.TEST.", "sandbox": sb.id}),
    );
    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(b.body["domain"], "app.example.test");
    let (st, body) = curl(r, "app.example.test", "/", &[]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(json_of(&body)["port"], 8080);
    assert_eq!(
        alice.get("/domains").body["domains"][0]["domain"],
        "app.example.test"
    );
    // A domain the operator does not vouch for: anyone may bind it, and
    // the plain listener routes it, but Paddock's CA (which clients
    // trust) signs nothing for it: no certificate for github.com.
    let g = alice.post(
        "/domains",
        json!({"domain": "github.com", "sandbox": sb.id}),
    );
    assert_eq!(g.status, 201, "{}", g.text);
    let (st, body) = curl(r, "github.com", "/", &[]);
    assert_eq!(st, 0, "Paddock's CA signed github.com: {body}");
    assert_eq!(alice.delete("/domains/github.com").status, 204);
    // Unknown names in the zone: 404; deeper than any route, no
    // certificate (the handshake fails).
    for host in [format!("nope.{ZONE}"), format!("x.web.{ZONE}")] {
        assert_eq!(curl(r, &host, "/", &[]).0, 404, "{host}");
    }
    assert_eq!(curl(r, &format!("a.b.c.{ZONE}"), "/", &[]).0, 0);
    let (st, _) = curl(
        r,
        &format!("web.{ZONE}"),
        "/",
        &["-H", &format!("Host: a.b.c.{ZONE}")],
    );
    assert_eq!(st, 404);
    // The CA is what verified all this: without it curl refuses.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--resolve"])
        .arg(format!("web.{ZONE}:{}:127.0.0.1", r.https))
        .arg(format!("https://web.{ZONE}:{}/", r.https))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl trusted a certificate it should not have"
    );
    // `paddock ingress ca` prints it.
    let pem = r.d.cli_ok(&["ingress", "ca"]);
    assert_eq!(pem, std::fs::read_to_string(&r.ca).unwrap());
    // The CLI's proxies and domains.
    let out =
        r.d.cli_ok(&["--api-key", &alice_key, "proxies", "ls", &sb.id]);
    assert!(out.contains("api") && out.contains("8080"), "{out}");
    // Gone with the sandbox.
    drop(sb);
    assert_eq!(curl(r, &format!("web.{ZONE}"), "/", &[]).0, 404);
    assert_eq!(curl(r, "app.example.test", "/", &[]).0, 421);
    assert!(alice.get("/domains").body["domains"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn port_by_id_needs_the_owners_bearer_which_the_sandbox_never_sees() {
    let r = rig();
    let alice_key = api_key(&r.d, "alice-ports");
    let bob_key = api_key(&r.d, "bob-ports");
    let alice = r.d.api_with_key(&alice_key);
    let sb = serving(&alice, "ports");
    let host = format!("8080-{}.{ZONE}", sb.id);
    let nobody = format!("8080-{}.{ZONE}", uuid::Uuid::new_v4());
    // Without a bearer: 401, whether or not the sandbox exists.
    assert_eq!(curl(r, &host, "/", &[]).0, 401);
    assert_eq!(curl(r, &nobody, "/", &[]).0, 401);
    // A forged one: 401.
    let forged = "Authorization: Bearer pdk_000000000000_00";
    assert_eq!(curl(r, &host, "/", &["-H", forged]).0, 401);
    // Another principal's: 404, as for a sandbox that is not there.
    let bob = format!("Authorization: Bearer {bob_key}");
    assert_eq!(curl(r, &host, "/", &["-H", &bob]).0, 404);
    assert_eq!(curl(r, &nobody, "/", &["-H", &bob]).0, 404);
    // The owner's: any port, and the bearer stays with the ingress.
    let mine = format!("Authorization: Bearer {alice_key}");
    let (st, body) = curl(r, &host, "/", &["-H", &mine]);
    assert_eq!(st, 200, "{body}");
    let b = json_of(&body);
    assert_eq!(b["port"], 8080);
    assert!(b["headers"].get("authorization").is_none(), "{b}");
    let (st, body) = curl(r, &format!("3000-{}.{ZONE}", sb.id), "/", &["-H", &mine]);
    assert_eq!((st, json_of(&body)["port"].clone()), (200, json!(3000)));
}

#[test]
fn nobody_takes_over_another_principals_names_or_domains() {
    let r = rig();
    let alice = r.d.api_with_key(&api_key(&r.d, "alice-takeover"));
    let bob = r.d.api_with_key(&api_key(&r.d, "bob-takeover"));
    let a = serving(&alice, "shop");
    assert_eq!(
        alice
            .post(&a.path("/proxies"), json!({"port": 3000}))
            .status,
        201
    );
    assert_eq!(
        alice
            .post(
                "/domains",
                json!({"domain": "shop.example.test", "sandbox": a.id})
            )
            .status,
        201
    );
    let b = serving(&bob, "shop");
    assert_eq!(
        bob.post(&b.path("/proxies"), json!({"port": 8080})).status,
        201
    );
    // Bob's box of the same key is reached by its id; the name stays alice's.
    let list = bob.get(&b.path("/proxies")).body;
    assert_eq!(
        list["proxies"][0]["url"],
        format!("https://{}.{ZONE}:{}", b.id, r.https)
    );
    assert_eq!(
        json_of(&curl(r, &format!("shop.{ZONE}"), "/", &[]).1)["port"],
        3000
    );
    assert_eq!(
        json_of(&curl(r, &format!("{}.{ZONE}", b.id), "/", &[]).1)["port"],
        8080
    );
    // Boxes keyed as alice's id, or as her `<port>-<id>`: her names stay hers.
    for key in [a.id.clone(), format!("3000-{}", a.id)] {
        let s = Sb::new(&bob, json!({"key": key}));
        assert_eq!(
            bob.post(&s.path("/proxies"), json!({"port": 1})).status,
            201
        );
    }
    assert_eq!(
        json_of(&curl(r, &format!("{}.{ZONE}", a.id), "/", &[]).1)["port"],
        3000
    );
    assert_eq!(curl(r, &format!("3000-{}.{ZONE}", a.id), "/", &[]).0, 401);
    // Alice's domain: bob can neither bind nor unbind it.
    let t = bob.post(
        "/domains",
        json!({"domain": "shop.example.test", "sandbox": b.id}),
    );
    assert_eq!(t.status, 409, "{}", t.text);
    assert_eq!(bob.delete("/domains/shop.example.test").status, 404);
    assert_eq!(
        json_of(&curl(r, "shop.example.test", "/", &[]).1)["port"],
        3000
    );
    // Nor touch her proxies, nor bind a domain to her box.
    assert_eq!(bob.get(&a.path("/proxies")).status, 404);
    assert_eq!(
        bob.post(&a.path("/proxies"), json!({"name": "x", "port": 1}))
            .status,
        404
    );
    assert_eq!(bob.delete(&a.path("/proxies/default")).status, 404);
    assert_eq!(
        bob.post(
            "/domains",
            json!({"domain": "bob.example.test", "sandbox": a.id})
        )
        .status,
        404
    );
}

#[test]
fn foreign_hosts_are_refused_and_websockets_go_through() {
    let r = rig();
    let alice = r.d.api_with_key(&api_key(&r.d, "alice-ws"));
    let sb = serving(&alice, "wsbox");
    assert_eq!(
        alice
            .post(&sb.path("/proxies"), json!({"name": "echo", "port": 9001}))
            .status,
        201
    );
    // DNS rebinding or an address: 421, before anything else.
    let (st, _) = curl(
        r,
        &format!("echo.wsbox.{ZONE}"),
        "/",
        &["-H", "Host: evil.example"],
    );
    assert_eq!(st, 421);
    let plain = |host: &str| {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/", r.http))
            .header("host", host)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(plain(&format!("127.0.0.1:{}", r.http)), 421);
    assert_eq!(plain(&format!("{ZONE}.evil.example")), 421);
    // A WebSocket echo through the ingress (its plain HTTP listener).
    let tcp = std::net::TcpStream::connect(("127.0.0.1", r.http)).unwrap();
    let req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://echo.wsbox.{ZONE}:{}/echo",
        r.http
    ))
    .unwrap();
    let (mut ws, resp) = tungstenite::client(req, tcp).unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tungstenite::Message::Text(
        "ping through the ingress".into(),
    ))
    .unwrap();
    let m = ws.read().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "ping through the ingress");
}

#[test]
fn bad_input_is_a_400_naming_the_field() {
    let r = rig();
    let alice = r.d.api_with_key(&api_key(&r.d, "alice-bad"));
    let sb = Sb::new(&alice, json!({}));
    for (body, field) in [
        (json!({"name": "Not_A_Label", "port": 1}), "name"),
        (json!({"name": "-x", "port": 1}), "name"),
        (json!({"name": "a".repeat(64), "port": 1}), "name"),
        (json!({"name": "ok", "port": 70000}), "port"),
        (json!({"name": "ok", "port": -1}), "port"),
    ] {
        let p = alice.post(&sb.path("/proxies"), body.clone());
        assert_eq!(p.status, 400, "{body}: {}", p.text);
        assert!(p.text.contains(field), "{body}: {}", p.text);
    }
    assert_eq!(
        alice
            .post(&sb.path("/proxies"), json!({"name": "ok", "port": 1}))
            .status,
        201
    );
    assert_eq!(
        alice
            .post(&sb.path("/proxies"), json!({"name": "ok", "port": 2}))
            .status,
        409
    );
    for d in [
        "nodot",
        "a..b.test",
        "10.0.0.1",
        &format!("x.{ZONE}"),
        "under_score.test",
        "*.wild.test",
    ] {
        let p = alice.post("/domains", json!({"domain": d, "sandbox": sb.id}));
        assert_eq!(p.status, 400, "{d}: {}", p.text);
        assert_eq!(p.body["field"], "domain", "{d}: {}", p.text);
    }
    let p = alice.post(
        "/domains",
        json!({"domain": "x.test", "sandbox": uuid::Uuid::new_v4()}),
    );
    assert_eq!(p.status, 404, "{}", p.text);
    assert_eq!(
        alice
            .get(&format!("/sandboxes/{}/proxies", uuid::Uuid::new_v4()))
            .status,
        404
    );
    assert_eq!(alice.delete(&sb.path("/proxies/nope")).status, 404);
}
