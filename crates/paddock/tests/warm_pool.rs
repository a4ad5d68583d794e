//! Warm pools (`paddock serve --warm-pool default=N`, and a template's
//! `warm_pool`): creates that ask for nothing else are handed a sandbox
//! booted ahead of time, never one that was used, and the pool refills in
//! the background and survives a restart.

mod common;
use common::*;
use serde_json::{json, Value};

fn ready(api: &Api) -> u64 {
    let r = api.get("/pools");
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["pools"][0]["ready"].as_u64().unwrap()
}

/// The sandbox's lifecycle events as its owner sees them.
fn lifecycle(api: &Api, id: &str) -> Vec<(i64, Value)> {
    read_events(stream(api, &format!("/sandboxes/{id}/events"), None), 2)
}

fn pooled_dirs(d: &Daemon) -> usize {
    std::fs::read_dir(d.data.join("sandboxes"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn creates_are_served_from_the_warm_pool() {
    let d = Daemon::start_with("127.0.0.1", &["--warm-pool", "default=2"]);
    let api = d.api();
    let pools = api.get("/pools").body;
    assert_eq!(pools["pools"][0]["size"], 2, "{pools}");
    assert!(pools["pools"][0]["image"].is_null(), "{pools}");
    eventually(60, || (ready(&api) == 2).then_some(()));
    // Pooled sandboxes are nobody's: not listed.
    let listed = api.get("/sandboxes").body;
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 0, "{listed}");

    // A plain create gets one, with its key, labels and TTL.
    let r = api.post(
        "/sandboxes",
        json!({"key": "warm-1", "labels": {"t": "warm"}, "ttl_secs": 600}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["state"], "running");
    assert_eq!(r.body["key"], "warm-1");
    assert_eq!(r.body["labels"]["t"], "warm");
    assert_eq!(r.body["config"]["ttl_secs"], 600);
    assert!(r.body["expires_at"].is_string(), "{}", r.text);
    let ev = lifecycle(&api, &a);
    assert_eq!(ev[0].1["kind"], "sandbox.created");
    assert_eq!(ev[0].1["data"]["warm"], true, "{:?}", ev);
    assert_eq!(ev[1].1["kind"], "sandbox.started");
    // It is the caller's now: listed, found by key, and a second create
    // with the key returns it.
    let again = api.post("/sandboxes", json!({"key": "warm-1"}));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["id"], a.as_str());
    assert_eq!(
        api.get("/sandboxes?key=warm-1").body["sandboxes"][0]["id"],
        a.as_str()
    );
    let out = api.sh(&a, "echo used > /workspace/mark; hostname");
    assert_eq!(out["exit_code"], 0, "{out}");

    // A spec the pool cannot serve boots a sandbox of its own.
    let own = api.create(json!({"memory_mb": 128}));
    let ev = lifecycle(&api, &own);
    assert!(ev[0].1["data"]["warm"].is_null(), "{:?}", ev);

    // Drain the pool and beyond: every create succeeds, none is handed a
    // sandbox seen before, and none carries an earlier sandbox's files.
    let mut seen = vec![a.clone(), own.clone()];
    for _ in 0..4 {
        let id = api.create(json!({}));
        assert!(!seen.contains(&id), "{id} handed out twice");
        let out = api.sh(&id, "test -e /workspace/mark && echo dirty || echo clean");
        assert_eq!(out["stdout"], "clean\n");
        seen.push(id);
    }
    api.destroy(&a);
    // Refilled in the background.
    eventually(60, || (ready(&api) == 2).then_some(()));

    // After kill -9 the new daemon adopts the pooled sandboxes it finds
    // instead of booting others.
    let before = pooled_dirs(&d);
    d.kill9();
    d.restart();
    eventually(30, || (ready(&api) == 2).then_some(()));
    assert_eq!(
        pooled_dirs(&d),
        before,
        "the pool was adopted, not rebooted"
    );
    let after = api.create(json!({}));
    let ev = lifecycle(&api, &after);
    assert_eq!(ev[0].1["data"]["warm"], true, "{:?}", ev);
    for id in seen.iter().skip(1).chain([&after]) {
        api.destroy(id);
    }
}

/// The caller's pool of template `name`: (size, ready).
fn template_pool(api: &Api, name: &str) -> Option<(u64, u64)> {
    let r = api.get("/pools");
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["template"] == name)
        .map(|p| (p["size"].as_u64().unwrap(), p["ready"].as_u64().unwrap()))
}

#[test]
fn a_template_keeps_a_warm_pool_of_its_own() {
    let d = Daemon::start();
    let api = d.api();
    // Bad sizes are refused, naming the field.
    for bad in [json!(17), json!(-1), json!("2")] {
        let r = api.post("/templates", json!({"name": "t-bad", "warm_pool": bad}));
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.body["field"], "warm_pool", "{}", r.text);
    }
    let r = api.post(
        "/templates",
        json!({"name": "tw", "env": {"FROM_T": "yes"}, "labels": {"team": "a"},
               "ttl_secs": 900, "warm_pool": 2}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["warm_pool"], 2);
    assert_eq!(api.get("/templates/tw").body["warm_pool"], 2);
    eventually(60, || {
        (template_pool(&api, "tw") == Some((2, 2))).then_some(())
    });
    // Nobody's until handed over: not listed.
    let listed = api.get("/sandboxes").body;
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 0, "{listed}");

    // A create naming the template (and a key, labels) gets one, as the
    // template would have made it.
    let r = api.post(
        "/sandboxes",
        json!({"template": "tw", "key": "tw-1", "labels": {"x": "1"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["template"], "tw", "{}", r.text);
    assert_eq!(
        r.body["labels"],
        json!({"team": "a", "x": "1"}),
        "{}",
        r.text
    );
    assert_eq!(r.body["config"]["ttl_secs"], 900, "{}", r.text);
    assert!(r.body["expires_at"].is_string(), "{}", r.text);
    let ev = lifecycle(&api, &a);
    assert_eq!(ev[0].1["data"]["warm"], true, "{:?}", ev);
    assert_eq!(api.sh(&a, "echo $FROM_T")["stdout"], "yes\n");
    // Anything beyond what a hand-over can give boots one of its own.
    let own = api.create(json!({"template": "tw", "env": {"B": "2"}}));
    let ev = lifecycle(&api, &own);
    assert!(ev[0].1["data"]["warm"].is_null(), "{:?}", ev);
    assert_eq!(api.sh(&own, "echo $FROM_T$B")["stdout"], "yes2\n");
    eventually(60, || {
        (template_pool(&api, "tw") == Some((2, 2))).then_some(())
    });

    // Deleting the template empties its pool: only the two handed-out
    // sandboxes are left on the host.
    assert_eq!(api.delete("/templates/tw").status, 204);
    assert_eq!(template_pool(&api, "tw"), None);
    eventually(30, || (pooled_dirs(&d) == 2).then_some(()));
    for id in [&a, &own] {
        api.destroy(id);
    }

    // A template's TTL starts at hand-over: pooled sandboxes outlive it.
    let r = api.post(
        "/templates",
        json!({"name": "short", "ttl_secs": 2, "warm_pool": 1}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    eventually(60, || {
        (template_pool(&api, "short") == Some((1, 1))).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(template_pool(&api, "short"), Some((1, 1)));
    let r = api.post("/sandboxes", json!({"template": "short"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let s = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(lifecycle(&api, &s)[0].1["data"]["warm"], true);
    assert_eq!(api.sh(&s, "echo alive")["stdout"], "alive\n");
    assert_eq!(api.delete("/templates/short").status, 204);
    // ... and it expires like any other.
    eventually(30, || {
        (api.get(&format!("/sandboxes/{s}")).body["state"] == "destroyed").then_some(())
    });

    // One principal's templates keep at most 32 sandboxes pooled in all.
    for (name, n) in [("p1", 16), ("p2", 16)] {
        let r = api.post("/templates", json!({"name": name, "warm_pool": n}));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = api.post("/templates", json!({"name": "p3", "warm_pool": 1}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "warm_pool", "{}", r.text);
    assert_eq!(api.post("/templates", json!({"name": "p3"})).status, 201);
    for name in ["p1", "p2", "p3"] {
        assert_eq!(api.delete(&format!("/templates/{name}")).status, 204);
    }
    eventually(60, || (pooled_dirs(&d) == 0).then_some(()));
}

#[test]
fn warm_pool_flags_are_checked() {
    for bad in ["default", "default=0", "=3", "img=x", "default=100000"] {
        let out = std::process::Command::new(bin())
            .args(["serve", "--warm-pool", bad, "--listen", "127.0.0.1:1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("--warm-pool"),
            "{bad}: {err}"
        );
    }
}

/// The pooled sandboxes' ids, from the daemon's data dir.
fn pooled_ids(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.data.join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_pooled_sandbox_that_dies_is_replaced() {
    let d = Daemon::start_with("127.0.0.1", &["--warm-pool", "default=2"]);
    let api = d.api();
    eventually(60, || {
        (ready(&api) == 2 && pooled_ids(&d).len() == 2).then_some(())
    });
    let dead = pooled_ids(&d)[0].clone();
    let pid = init_pid(&d.data.join("sandboxes").join(&dead));
    // SAFETY: kill(2) on a pid read from the sandbox's pid file.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The monitor finds it dead and cleans it up; the pool stops counting
    // it and boots another.
    eventually(60, || {
        let ids = pooled_ids(&d);
        (ids.len() == 2 && !ids.contains(&dead) && ready(&api) == 2).then_some(())
    });
    // Both creates are served warm.
    for _ in 0..2 {
        let id = api.create(json!({}));
        assert_ne!(id, dead);
        let ev = lifecycle(&api, &id);
        assert_eq!(ev[0].1["data"]["warm"], true, "{:?}", ev);
        api.destroy(&id);
    }
}
