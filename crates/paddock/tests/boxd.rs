//! boxd 0.1.5.dev25 from PyPI, unmodified (target/pyenv-boxd-0.1.5.dev25,
//! scripts/pyenv.sh), against a real `paddock serve` speaking the boxd
//! dialect: gRPC `boxd.api.v1.BoxdApi` over h2c and the HTTP token exchange
//! on one port (`--boxd-listen`), and the TLS ingress (`--ingress-listen`,
//! `--zone`). tests/python/boxd_test.py drives the SDK's whole surface, sync
//! and async, with a busybox image from a registry on loopback, three
//! principals (alice, bob, and carol held to one sandbox by a policy) and
//! the ingress reached with SNI, `Host` and the daemon's CA. The other tests
//! here attack the exchange and the gRPC service without the SDK.

mod common;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::registry::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ZONE: &str = "paddock.test";
/// alice's policy's `max_sandboxes`: the script's `max_vms`.
const ALICE_MAX_VMS: u32 = 40;
/// The server's gRPC receive limit (a `write_file` past it is refused with
/// `RESOURCE_EXHAUSTED`, one under it kept whole).
const MAX_MESSAGE: u64 = 64 << 20;
const VENV: &str = "pyenv-boxd-0.1.5.dev25";

/// The settings file: alice held to `ALICE_MAX_VMS` sandboxes, carol to one
/// of at most 512 MiB (the quota and policy refusals).
fn settings() -> String {
    format!(
        r#"# Paddock's CA signs for bound domains under example.test (the
# script's) only.
[ingress]
mint_domains = ["example.test"]

[[policies]]
name = "alice-plan"
principals = ["alice"]
max_sandboxes = {ALICE_MAX_VMS}

[[policies]]
name = "carol-plan"
principals = ["carol"]
max_sandboxes = 1
max_memory_mb = 512
"#
    )
}

/// The ingress's CA, which the daemon writes under its data dir.
fn ingress_ca(d: &Daemon) -> String {
    let ca = d.data.join("ingress-ca.pem");
    eventually(20, || ca.is_file().then_some(()));
    ca.to_string_lossy().into_owned()
}

fn exchange_url(addr: &str) -> String {
    format!("http://{addr}/api/v1/auth/token")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A token for `key` from the exchange (asserting a 200 and its shape).
fn token_for(addr: &str, key: &str) -> String {
    let r = http()
        .post(exchange_url(addr))
        .json(&json!({ "api_key": key }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().unwrap();
    b["token"].as_str().expect("token").to_string()
}

#[test]
fn boxd_sdk_against_paddock() {
    let work = std::env::temp_dir().join(format!("paddock-boxd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let reg = Registry::start(&work.join("registry"));
    reg.push_busybox(&work, "boxd/busybox:1");
    let image = format!("{}/boxd/busybox:1", reg.addr);
    let cfg = work.join("paddock.toml");
    std::fs::write(&cfg, settings()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let ingress = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--boxd-listen",
            &addr,
            "--ingress-listen",
            &ingress,
            "--zone",
            ZONE,
            "--config",
            &cfg.to_string_lossy(),
            "--insecure-registry",
            &reg.addr,
        ],
    );
    let (alice, bob, carol) = (
        api_key(&d, "alice"),
        api_key(&d, "bob"),
        api_key(&d, "carol"),
    );
    // An SSH key of alice's, through the native API: whoami lists its
    // fingerprint.
    let r = d.api_with_key(&alice).post(
        "/ssh-keys",
        json!({"name": "laptop", "public_key": ssh_keygen(&work, "boxd-test")}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let fingerprint = r.body["fingerprint"].as_str().unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let ca = ingress_ca(&d);
    run_sdk_script_with(
        &python_in(VENV),
        "boxd_test.py",
        &[
            ("BOXD_API_URL", &format!("http://{addr}")),
            ("BOXD_EXCHANGE_URL", &exchange_url(&addr)),
            ("BOXD_API_KEY", &alice),
            ("PADDOCK_BOB_KEY", &bob),
            ("PADDOCK_CAROL_KEY", &carol),
            ("PADDOCK_ALICE_MAX_VMS", &ALICE_MAX_VMS.to_string()),
            ("PADDOCK_ALICE_FINGERPRINT", &fingerprint),
            ("PADDOCK_INGRESS", &ingress),
            ("PADDOCK_INGRESS_CA", &ca),
            ("PADDOCK_ZONE", ZONE),
            ("PADDOCK_IMAGE", &image),
            ("PADDOCK_BOXD_MAX_MESSAGE", &MAX_MESSAGE.to_string()),
        ],
        "all boxd checks passed",
        &d,
    );
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

/// Unary, server-streaming and bidirectional calls with the metadata of
/// each case, through the SDK's generated stubs (grpcio): the status code
/// of each call, by case, as JSON. A case `[metadata, true]` makes only
/// the harmless Whoami.
const GRPC_PROBE: &str = r#"
import json, sys, grpc
from boxd._generated import api_pb2 as pb, api_pb2_grpc as rpc
target, cases = sys.argv[1], json.loads(sys.argv[2])
out = {}
with grpc.insecure_channel(target) as ch:
    s = rpc.BoxdApiStub(ch)
    calls = [
        lambda md: s.Whoami(pb.WhoamiRequest(), metadata=md, timeout=20),
        lambda md: s.ListVms(pb.ListVmsRequest(), metadata=md, timeout=20),
        lambda md: s.CreateVm(pb.CreateVmRequest(name="intruder"), metadata=md, timeout=20),
        lambda md: s.CreateToken(pb.CreateTokenRequest(expires_in_secs=60), metadata=md, timeout=20),
        lambda md: list(s.StreamLogs(pb.StreamLogsRequest(vm_id="intruder"), metadata=md, timeout=20)),
        lambda md: list(s.Exec(iter([pb.ExecChunk(vm_id="intruder", command="true")]), metadata=md, timeout=20)),
    ]
    for name, (md, whoami_only) in cases.items():
        codes = []
        for call in calls[:1] if whoami_only else calls:
            try:
                call([tuple(x) for x in md])
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        out[name] = codes
print(json.dumps(out))
"#;

fn grpc_probe(addr: &str, cases: Value) -> Value {
    let out = Command::new(python_in(VENV))
        .args(["-c", GRPC_PROBE, addr, &cases.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/pyenv.sh makes it)", python_in(VENV)));
    assert!(
        out.status.success(),
        "grpc probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Attacks on the exchange and the gRPC service that need no SDK: a wrong
/// key, bodies that are not an object, a browser page on another origin
/// reading a token, calls without a bearer or with a forged one or one a
/// different Paddock signed; and a token that outlives a restart (the
/// signing key is kept in the data dir).
#[test]
fn boxd_holds_against_its_attacks() {
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with("127.0.0.1", &["--boxd-listen", &addr]);
    let alice = api_key(&d, "alice");
    let url = exchange_url(&addr);
    let http = http();

    // 1. The exchange: a good key, a wrong one, malformed bodies.
    let t0 = now();
    let r = http
        .post(&url)
        .json(&json!({ "api_key": alice }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let b: Value = r.json().unwrap();
    let exp = b["expires_at"].as_f64().expect("expires_at: a number");
    assert!(
        exp > t0 + 600.0 && exp < t0 + 8.0 * 86400.0,
        "expires_at in unix seconds, more than 10 minutes away: {b}"
    );
    let token = b["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    for key in ["pdk_wrong", "", "x"] {
        let r = http
            .post(&url)
            .json(&json!({ "api_key": key }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "api_key {key:?}");
    }
    for body in [
        "[1, 2]",
        "\"pdk_x\"",
        "null",
        "42",
        "{not json",
        "{}",
        "{\"api_key\": 5}",
    ] {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "body {body}");
    }
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .unwrap();
    assert!(
        r.status().is_client_error(),
        "a 2 MiB body: a 4xx ({})",
        r.status()
    );
    let r = http.get(&url).send().unwrap();
    assert_eq!(r.status(), 405, "GET on the exchange");

    // 2. A page on another origin cannot read a token: no CORS grant to
    // it, neither on the POST nor on its preflight.
    let evil = "https://evil.example";
    let r = http
        .post(&url)
        .header("Origin", evil)
        .json(&json!({ "api_key": alice }))
        .send()
        .unwrap();
    let acao = r
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        acao.as_deref() != Some("*") && acao.as_deref() != Some(evil),
        "the exchange's answer to {evil} is readable by its page: {acao:?}"
    );
    let r = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", evil)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .unwrap();
    let acao = r
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        acao.as_deref() != Some("*") && acao.as_deref() != Some(evil),
        "the preflight from {evil} is granted: {acao:?}"
    );

    // 3. gRPC without a bearer, with garbage, another scheme, an empty
    // one, alg none, and a token another Paddock signed: UNAUTHENTICATED
    // on unary, server-streaming and bidirectional calls alike.
    let other_addr = format!("127.0.0.1:{}", free_port());
    let other = Daemon::start_with("127.0.0.1", &["--boxd-listen", &other_addr]);
    let foreign = token_for(&other_addr, &api_key(&other, "alice"));
    drop(other);
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let bearer = |t: &str| json!([["authorization", format!("Bearer {t}")]]);
    let codes = grpc_probe(
        &addr,
        json!({
            "no authorization": [[], false],
            "garbage": [bearer("garbage"), false],
            "an empty bearer": [bearer(""), false],
            "another scheme": [[["authorization", "Basic YWxpY2U6cGRr"]], false],
            "alg none": [bearer(&alg_none), false],
            "a token of another Paddock": [bearer(&foreign), false],
            "alice's token": [bearer(&token), true],
        }),
    );
    for (case, got) in codes.as_object().unwrap() {
        let got: Vec<&str> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        if case == "alice's token" {
            assert_eq!(got, ["OK"], "{case}");
        } else {
            assert!(
                got.iter().all(|c| *c == "UNAUTHENTICATED"),
                "{case}: every call UNAUTHENTICATED: {got:?}"
            );
        }
    }
    for api in [d.api(), d.api_with_key(&alice)] {
        let r = api.get("/sandboxes");
        assert_eq!(
            r.body["sandboxes"].as_array().map(|a| a.len()),
            Some(0),
            "no call without a valid token made a box: {}",
            r.text
        );
    }

    // 4. The signing key is the data dir's: a token outlives a restart.
    d.restart();
    let codes = grpc_probe(&addr, json!({"after a restart": [bearer(&token), true]}));
    assert_eq!(
        codes["after a restart"],
        json!(["OK"]),
        "a token from before the restart"
    );
}
