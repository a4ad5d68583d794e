//! Event streams with resumable ids, and metrics from cgroups.

mod common;
use common::*;
use serde_json::{json, Value};

#[test]
fn sandbox_events_resume_without_gap_or_duplicate() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    for i in 0..5 {
        api.exec(&sb.id, json!({"cmd": ["echo", i.to_string()]}));
    }
    // created, started, 5 execs (a request and a response each).
    let all = read_events(stream(&api, &sb.path("/events"), None), 12);
    let ids: Vec<i64> = all.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    assert_eq!(all[0].1["kind"], "sandbox.created");
    assert_eq!(all[1].1["kind"], "sandbox.started");
    assert_eq!(all[2].1["kind"], "exec.request");
    assert_eq!(all[2].1["data"]["command"], "echo 0");
    assert_eq!(all[3].1["kind"], "exec.response");
    assert_eq!(all[3].1["data"]["request_id"], 3);
    assert_eq!(all[3].1["data"]["exit_code"], 0);
    // Resume after 4: exactly 5..12, then live ones as they happen.
    let resp = stream(&api, &sb.path("/events"), Some(4));
    let api2 = shared().api();
    let id2 = sb.id.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        for _ in 0..3 {
            api2.exec(&id2, json!({"cmd": ["true"]}));
        }
    });
    let rest = read_events(resp, 14);
    writer.join().unwrap();
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        (5..=18).collect::<Vec<_>>()
    );
    // The query form works the same.
    let q = read_events(stream(&api, &sb.path("/events?after=17"), None), 1);
    assert_eq!(q[0].0, 18);
}

#[test]
fn daemon_wide_events_carry_a_global_sequence() {
    // A daemon of its own, so that every event is this test's.
    let d = Daemon::start();
    let api = d.api();
    let a = Sb::new(&api, json!({}));
    let b = Sb::new(&api, json!({}));
    api.exec(&a.id, json!({"cmd": ["true"]}));
    let evs = read_events(stream(&api, "/events", None), 6);
    assert_eq!(
        evs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let kinds: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            (
                e.1["sandbox_id"].as_str().unwrap().to_string(),
                e.1["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds[0], (a.id.clone(), "sandbox.created".into()));
    assert_eq!(kinds[2], (b.id.clone(), "sandbox.created".into()));
    assert_eq!(kinds[4], (a.id.clone(), "exec.request".into()));
    assert_eq!(kinds[5], (a.id.clone(), "exec.response".into()));
    // Per-sandbox ids stay per sandbox.
    assert_eq!(evs[2].1["id"], 1);
    // Resume from 3: 4, 5, then what happens next.
    let resp = stream(&api, "/events", Some(3));
    api.exec(&b.id, json!({"cmd": ["true"]}));
    let rest = read_events(resp, 5);
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );
    assert_eq!(rest[3].1["sandbox_id"], b.id.as_str());
}

#[test]
fn metrics_from_cgroups() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({"memory_mb": 200}));
    // Waits for python to hold its 60 MiB (on a busy host its start alone
    // can take over a second), then starts a busy loop.
    let out = sb.sh(
        "(python3 -c 'import time; x = bytearray(60 << 20); open(\"/tmp/held\", \"w\").close(); time.sleep(30)' &) ; \
         for i in $(seq 300); do [ -e /tmp/held ] && break; sleep 0.1; done; \
         (timeout 2 sh -c 'while :; do :; done' &) ; head -c 1000000 /dev/zero > /workspace/z; \
         test -e /tmp/held",
    );
    assert_eq!(
        out["exit_code"], 0,
        "python did not allocate within 30 s: {out}"
    );
    let m = api.get(&sb.path("/metrics")).body;
    assert_eq!(m["memory_limit_bytes"], 200u64 << 20, "{m}");
    assert!(m["memory_bytes"].as_u64().unwrap() > 50 << 20, "{m}");
    let pct = m["memory_percent"].as_f64().unwrap();
    assert!(pct > 20.0 && pct < 100.0, "{m}");
    assert!(m["pids"].as_u64().unwrap() >= 3, "{m}");
    assert_eq!(m["pids_limit"], 1024);
    assert!(
        m["cpu_percent"].as_f64().unwrap() > 10.0,
        "a busy loop is running: {m}"
    );
    assert!(m["cpu_usage_ns"].as_u64().unwrap() > 0);
    for k in [
        "net_rx_bytes",
        "net_tx_bytes",
        "block_read_bytes",
        "block_write_bytes",
    ] {
        assert!(m[k].is_u64(), "{k}: {m}");
    }
    // The disk (a tmpfs held in memory): 1 GiB asked for by default, but
    // no more than 200 MiB less 16 and /dev/shm's 50 (a quarter) and
    // /dev's 1; the file written above is on it.
    assert_eq!(m["disk_limit_bytes"], 133u64 << 20, "{m}");
    assert!(m["disk_bytes"].as_u64().unwrap() >= 1_000_000, "{m}");
}

#[test]
fn logs_of_the_main_process() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(
        &api,
        json!({"command": ["sh", "-c", "echo started main; echo to-stderr >&2; sleep 600"]}),
    );
    let text = eventually(10, || {
        let r = api.get(&sb.path("/logs"));
        r.text.contains("to-stderr").then_some(r.text)
    });
    assert!(text.contains("started main"), "{text}");
    let out = d.cli(&["logs", &sb.id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("started main"));
}

#[test]
fn cpu_limit_holds() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({"cpu": 0.25}));
    sb.sh("(timeout 5 sh -c 'while :; do :; done' &); (timeout 5 sh -c 'while :; do :; done' &); sleep 1");
    let m = api.get(&sb.path("/metrics")).body;
    let cpu = m["cpu_percent"].as_f64().unwrap();
    // Two busy loops, a quarter of a core: the quota holds them near 25%.
    assert!(cpu > 5.0 && cpu < 45.0, "{m}");
}

#[test]
fn openapi_documents_the_api() {
    let d = shared();
    let doc: Value = reqwest::blocking::get(format!("{}/openapi.json", d.url))
        .unwrap()
        .json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/exec/stream",
        "/v1/sandboxes/{id}/exec/ws",
        "/v1/sandboxes/{id}/files",
        "/v1/sandboxes/{id}/files/list",
        "/v1/sandboxes/{id}/ports",
        "/v1/sandboxes/{id}/metrics",
        "/v1/sandboxes/{id}/events",
        "/v1/events",
        "/v1/sandboxes/{id}/touch",
        "/v1/sandboxes/{id}/logs",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["SandboxSpec"]["properties"]["memory_mb"].is_object());
}
