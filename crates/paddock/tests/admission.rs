//! Admission: every number a create or an exec brings is range-checked
//! against the operator's ceilings and the host, and every string for the
//! OS is free of NUL bytes; each bad value is a 400 naming the field (and
//! the dialects' invalid-argument errors), never a 500, a panic or an
//! `error` record (issue 19, item 8).

mod common;
use common::*;
use serde_json::{json, Value};

fn refused(api: &Api, path: &str, body: Value, field: &str) {
    let r = api.post(path, body.clone());
    assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
    assert_eq!(r.body["field"], field, "{path} {body}: {}", r.text);
}

/// A raw JSON body (numbers serde_json would not write, such as 2^63).
fn refused_raw(api: &Api, path: &str, body: &str, field: &str) {
    let r = api.send(
        api.req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string()),
    );
    assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
    assert!(
        r.body["field"] == field || r.text.contains(field),
        "{path} {body}: {}",
        r.text
    );
}

#[test]
fn absurd_limits_are_400s_naming_the_field() {
    let hiver = format!("127.0.0.1:{}", free_port());
    let flash = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--hiver-listen",
            &hiver,
            "--flash-http-listen",
            &flash,
            "--max-pids",
            "4096",
        ],
    );
    let api = d.api();
    let cases = [
        (json!({"memory_mb": 10_000_000}), "memory_mb"),
        (json!({"memory_mb": i64::MAX}), "memory_mb"),
        (json!({"cpu": 0.0001}), "cpu"),
        (json!({"cpu": 1e9}), "cpu"),
        (json!({"pids": 1i64 << 62}), "pids"),
        (json!({"pids": 5000}), "pids"),
        (json!({"disk_mb": 1i64 << 40}), "disk_mb"),
        (json!({"ttl_secs": i64::MAX}), "ttl_secs"),
        (json!({"ttl_secs": u64::MAX}), "ttl_secs"),
        (json!({"idle_timeout_secs": u64::MAX}), "idle_timeout_secs"),
        (json!({"usage_events_secs": 0}), "usage_events_secs"),
        (json!({"command": ["sleep", "a\u{0}b"]}), "command"),
        (json!({"env": {"A": "x\u{0}y"}}), "env.A"),
        (json!({"cwd": "/work\u{0}space"}), "cwd"),
        (
            json!({"mounts": [{"path": "/w", "origin": "/tm\u{0}p"}]}),
            "mounts[0].origin",
        ),
    ];
    for (spec, field) in &cases {
        refused(&api, "/sandboxes", spec.clone(), field);
    }
    refused_raw(
        &api,
        "/sandboxes",
        r#"{"memory_mb": 9223372036854775808}"#,
        "memory_mb",
    );
    // Templates take the same checks.
    refused(
        &api,
        "/templates",
        json!({"name": "huge", "memory_mb": 10_000_000}),
        "memory_mb",
    );
    // None of them left a sandbox behind, not even an `error` record.
    let all = api.get("/sandboxes").body;
    assert_eq!(all["sandboxes"].as_array().map(Vec::len), Some(0), "{all}");

    // The dialects answer with their invalid-argument errors.
    let http = reqwest::blocking::Client::new();
    let r = http
        .put(format!("http://{hiver}/controller/v1/sandboxes/huge"))
        .json(&json!({"memory": 10_000_000}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["details"]["field"], "memory", "{body}");
    let r = http
        .put(format!("http://{hiver}/controller/v1/sandboxes/forever"))
        .json(&json!({"ttl": i64::MAX}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["details"]["field"], "ttl", "{body}");
    let r = http
        .post(format!("http://{flash}/sandboxes"))
        .json(&json!({"type": "docker", "image": "python:3.11-slim", "memory_mb": 10_000_000}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "invalid_argument", "{body}");
    assert_eq!(body["field"], "memory_mb", "{body}");
    let r = http
        .post(format!("http://{flash}/sandboxes"))
        .json(&json!({"type": "docker", "image": "python:3.11-slim", "cpu_cores": 0.0001}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["field"], "cpu_cores", "{body}");
    let all = api.get("/sandboxes").body;
    assert_eq!(all["sandboxes"].as_array().map(Vec::len), Some(0), "{all}");
}

#[test]
fn exec_and_logs_numbers_and_nul_bytes_are_400s() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let exec = sb.path("/exec");
    refused(
        &api,
        &exec,
        json!({"cmd": ["sleep", "1"], "timeout": 1e300}),
        "timeout",
    );
    refused(&api, &exec, json!({"cmd": ["echo", "a\u{0}b"]}), "cmd[1]");
    refused(&api, &exec, json!({"cmd": ["ec\u{0}ho"]}), "cmd[0]");
    refused(&api, &exec, json!({"shell": "echo a\u{0}b"}), "shell");
    refused(
        &api,
        &exec,
        json!({"cmd": ["env"], "env": {"A": "x\u{0}"}}),
        "env.A",
    );
    refused(
        &api,
        &exec,
        json!({"cmd": ["pwd"], "cwd": "/tm\u{0}p"}),
        "cwd",
    );
    refused(
        &api,
        &exec,
        json!({"cmd": ["id"], "user": "ro\u{0}ot"}),
        "user",
    );
    refused(
        &api,
        &exec,
        json!({"cmd": ["true"], "max_output_bytes": u64::MAX}),
        "max_output_bytes",
    );
    refused(
        &api,
        &sb.path("/exec/stream"),
        json!({"cmd": ["echo", "a\u{0}b"]}),
        "cmd[1]",
    );
    // The log past its end is empty; past what a file offset holds, a 400.
    let r = api.get(&sb.path("/logs?offset=9223372036854775807"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "");
    let r = api.get(&sb.path("/logs?offset=18446744073709551615"));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "offset", "{}", r.text);
    // The sandbox is unharmed.
    assert_eq!(sb.sh("echo ok")["stdout"], "ok\n");
}
