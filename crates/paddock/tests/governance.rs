//! Policies, the audit log and usage, through the native API, the CLI and
//! the keyless dialects (hiver, flash): the engine's rules answer in every
//! dialect's own error shape, and every call lands in the audit log with
//! the API that carried it.

mod common;
use common::*;
use serde_json::{json, Value};

fn key(d: &Daemon, name: &str) -> String {
    let out = d.cli(&["keys", "create", "--name", name]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("pdk_"))
        .unwrap()
        .to_string()
}

#[test]
fn policies_hold_in_every_dialect_and_every_call_is_audited() {
    let dir = std::env::temp_dir().join(format!("paddock-gov-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    // The keyless operator (`local`) is held to templates and memory.
    std::fs::write(
        &cfg,
        r#"
[templates.tiny]
description = "A tiny sandbox"
memory_mb = 256

[[policies]]
name = "ops"
principals = ["local"]
templates = ["general-coding", "tiny"]
max_memory_mb = 512
"#,
    )
    .unwrap();
    let (hiver, flash) = (free_port(), free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--hiver-listen",
            &format!("127.0.0.1:{hiver}"),
            "--flash-http-listen",
            &format!("127.0.0.1:{flash}"),
        ],
    );
    let api = d.api();

    // The settings file's policy, listed with its source.
    let ls: Value = serde_json::from_str(&d.cli_ok(&["--json", "policies", "ls"])).unwrap();
    assert_eq!(ls[0]["name"], "ops", "{ls}");
    assert_eq!(ls[0]["source"], "config", "{ls}");

    // Native API: problem+json with one violation per rule broken.
    let r = api.post("/sandboxes", json!({"memory_mb": 1024}));
    assert_eq!(r.status, 403, "{}", r.text);
    let rules: Vec<&str> = r.body["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["templates", "max_memory_mb"], "{}", r.text);
    assert_eq!(r.body["violations"][1]["limit"], 512);
    assert_eq!(r.body["violations"][1]["value"], 1024);

    // hiver: its {"error": ...} body, 403.
    let http = reqwest::blocking::Client::new();
    let r = http
        .put(format!(
            "http://127.0.0.1:{hiver}/controller/v1/sandboxes/gov"
        ))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("policy"), "{body}");
    // flash: its envelope, code policy_violation.
    let r = http
        .post(format!("http://127.0.0.1:{flash}/sandboxes"))
        .json(&json!({"type": "docker", "image": "alpine:latest"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "policy_violation", "{body}");

    // From an operator's template, within the rules: made, with the
    // template's defaults.
    let id = d
        .cli_ok(&["create", "--template", "tiny"])
        .trim()
        .to_string();
    let sb = api.get(&format!("/sandboxes/{id}"));
    assert_eq!(sb.body["config"]["memory_mb"], 256, "{}", sb.text);
    let t = api.get("/templates/tiny");
    assert_eq!(t.body["description"], "A tiny sandbox", "{}", t.text);
    assert_eq!(t.body["owner"], "paddock:operator", "{}", t.text);

    // Policies through the API are the operator's: a key's principal may
    // not write one; the operator may, and it holds at once.
    let bob = key(&d, "bob");
    let as_bob = d.api_with_key(&bob);
    let r = as_bob.req(reqwest::Method::PUT, "/policies/mine");
    let r = as_bob.send(r.json(&json!({"principals": ["bob"]})));
    assert_eq!(r.status, 403, "{}", r.text);
    d.cli_ok(&[
        "policies",
        "set",
        "bobcap",
        "--principal",
        "bob",
        "--max-sandboxes",
        "0",
    ]);
    let r = as_bob.post("/sandboxes", json!({}));
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["violations"][0]["rule"], "max_sandboxes");
    assert_eq!(r.body["violations"][0]["policy"], "bobcap");
    // Bob sees the policy that holds him, not the operator's.
    let bl = as_bob.get("/policies");
    assert_eq!(
        bl.body["policies"].as_array().unwrap().len(),
        1,
        "{}",
        bl.text
    );
    // The settings file's cannot be removed through the API.
    let out = d.cli(&["policies", "rm", "ops"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("settings file"));
    d.cli_ok(&["policies", "rm", "bobcap"]);
    let r = as_bob.post("/sandboxes", json!({}));
    assert_eq!(r.status, 201, "{}", r.text);
    let bobs = r.body["id"].as_str().unwrap().to_string();

    // The audit log: the operator's calls through each API, refusals with
    // their outcome; bob's own only for bob.
    let log: Value = serde_json::from_str(&d.cli_ok(&["--json", "audit", "-n", "100"])).unwrap();
    let log = log.as_array().unwrap();
    let has = |via: &str, action: &str, outcome: &str| {
        log.iter()
            .any(|r| r["via"] == via && r["action"] == action && r["outcome"] == outcome)
    };
    assert!(has("api", "sandbox.create", "policy_violation"), "{log:?}");
    assert!(
        has("hiver", "sandbox.create", "policy_violation"),
        "{log:?}"
    );
    assert!(
        has("flash", "sandbox.create", "policy_violation"),
        "{log:?}"
    );
    assert!(has("api", "sandbox.create", "ok"), "{log:?}");
    assert!(has("api", "policy.put", "ok"), "{log:?}");
    assert!(has("api", "policy.delete", "conflict"), "{log:?}");
    assert!(log.iter().any(|r| r["principal"] == "bob"), "{log:?}");
    let mine = as_bob.get("/audit");
    let recs = mine.body["records"].as_array().unwrap();
    assert!(!recs.is_empty());
    assert!(
        recs.iter().all(|r| r["principal"] == "bob"),
        "{}",
        mine.text
    );
    // One sandbox's records, by its id.
    let one = api.get(&format!("/audit?sandbox={id}"));
    let recs = one.body["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{}", one.text);
    assert_eq!(recs[0]["sandbox"], id.as_str());
    // Usage counts the caller's sandboxes.
    let u = as_bob.get("/usage");
    assert_eq!(u.body["total"], 1, "{}", u.text);
    assert_eq!(u.body["startup_samples"], 1, "{}", u.text);
    let r = api.get("/audit?limit=0");
    assert_eq!(r.status, 400, "{}", r.text);

    api.destroy(&id);
    as_bob.destroy(&bobs);
    drop(d);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_policy_in_the_settings_file_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("paddock-gov-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, "[[policies]]\nname = \"x\"\nmax_cpu = 1\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("principals"), "{err}");
    assert!(!dir.join("data").exists());
    let _ = std::fs::remove_dir_all(dir);
}
