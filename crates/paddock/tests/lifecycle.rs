//! Sandboxes through the native API: lifecycle, idempotent keys, listing,
//! bad input, TTL and idle timeouts, and no leaks after destroy.

mod common;
use common::*;
use serde_json::json;

#[test]
fn create_inspect_list_destroy() {
    let api = shared().api();
    let r = api.post(
        "/sandboxes",
        json!({"labels": {"team": "a", "t": "lifecycle"}, "memory_mb": 256, "cpu": 0.5}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(r.body["state"], "running");
    assert_eq!(r.body["owner"], "local");
    assert_eq!(r.body["config"]["memory_mb"], 256);
    assert_eq!(r.body["config"]["cpu"], 0.5);
    assert_eq!(r.body["config"]["pids"], 1024);
    // The backend that runs it, one of those the daemon lists.
    let backend = r.body["backend"].as_str().unwrap().to_string();
    let b = api.get("/backends");
    assert_eq!(b.status, 200, "{}", b.text);
    let listed = b.body["backends"].as_array().unwrap();
    let mine = listed
        .iter()
        .find(|x| x["name"] == backend.as_str())
        .unwrap();
    assert!(["crun", "runc"].contains(&backend.as_str()), "{backend}");
    assert_eq!(mine["isolation"], "container");
    assert_eq!(mine["default"], true);
    assert_eq!(mine["capabilities"]["pause"], true);
    assert_eq!(mine["capabilities"]["shares_host_kernel"], true);

    let g = api.get(&format!("/sandboxes/{id}"));
    assert_eq!(g.status, 200);
    assert_eq!(g.body["id"], id.as_str());

    let l = api.get("/sandboxes?labels=t=lifecycle");
    let ids: Vec<&str> = l.body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert_eq!(
        api.get("/sandboxes?labels=t=lifecycle,team=b").body["sandboxes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let running = api.get("/sandboxes?state=running").body;
    assert!(running["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str()));

    let d = api.delete(&format!("/sandboxes/{id}"));
    assert_eq!(d.status, 200);
    assert_eq!(d.body["state"], "destroyed");
    assert_eq!(
        api.get(&format!("/sandboxes/{id}")).body["state"],
        "destroyed"
    );
    assert_eq!(
        api.get("/sandboxes?labels=t=lifecycle").body["sandboxes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let e = api.post(&format!("/sandboxes/{id}/exec"), json!({"cmd": ["true"]}));
    assert_eq!(e.status, 409, "{}", e.text);
}

#[test]
fn pagination() {
    let api = shared().api();
    let sbs: Vec<Sb> = (0..3)
        .map(|_| Sb::new(&api, json!({"labels": {"t": "page"}})))
        .collect();
    let p1 = api.get("/sandboxes?labels=t=page&limit=2");
    assert_eq!(p1.body["sandboxes"].as_array().unwrap().len(), 2);
    let next = p1.body["next"].as_str().expect("a next cursor").to_string();
    let p2 = api.get(&format!("/sandboxes?labels=t=page&limit=2&after={next}"));
    let rest = p2.body["sandboxes"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert!(p2.body.get("next").is_none());
    let mut all: Vec<String> = p1.body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.iter())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    let mut want: Vec<String> = sbs.iter().map(|s| s.id.clone()).collect();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn create_by_key_is_idempotent() {
    let api = shared().api();
    let a = api.post(
        "/sandboxes",
        json!({"key": "idem-key_1", "labels": {"v": "1"}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let _g = Sb {
        api: &api,
        id: a.body["id"].as_str().unwrap().into(),
    };
    // Same key, different labels: the existing sandbox, unchanged.
    let b = api.post(
        "/sandboxes",
        json!({"key": "idem-key_1", "labels": {"v": "2"}}),
    );
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(b.body["labels"]["v"], "1");
    // Concurrent creates with one new key make one sandbox.
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    api.post("/sandboxes", json!({"key": "idem-race"})).body["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    api.destroy(&ids[0]);
    // After destroy the key is free again.
    let c = api.post("/sandboxes", json!({"key": "idem-race"}));
    assert_eq!(c.status, 201);
    assert_ne!(c.body["id"], ids[0].as_str());
    api.destroy(c.body["id"].as_str().unwrap());
}

#[test]
fn bad_input_is_a_clear_4xx_naming_the_field() {
    let api = shared().api();
    let cases = [
        (json!({"memory_mb": -5}), "memory_mb"),
        (json!({"isolation": "vmware"}), "isolation"),
        (json!({"key": "has space"}), "key"),
        (json!({"key": "x".repeat(65)}), "key"),
        (json!({"cwd": "relative/dir"}), "cwd"),
        (json!({"cpu": -1}), "cpu"),
        (json!({"cpu": "lots"}), "cpu"),
        (json!({"pids": 2}), "pids"),
        (json!({"no_such_field": 1}), "no_such_field"),
    ];
    for (body, field) in cases {
        let r = api.post("/sandboxes", body.clone());
        assert!(
            r.status == 400 || r.status == 422,
            "{body}: {} {}",
            r.status,
            r.text
        );
        assert_eq!(r.body["field"], field, "{body}: {}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap().contains(field),
            "{}",
            r.text
        );
        assert_eq!(r.body["status"], r.status);
    }
    // Malformed JSON.
    let r = api.send(
        api.req(reqwest::Method::POST, "/sandboxes")
            .header("content-type", "application/json")
            .body("{"),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // A backend this daemon lacks: a clear error naming it.
    let r = api.post("/sandboxes", json!({"isolation": "microvm"}));
    assert_eq!(r.status, 501, "{}", r.text);
    assert!(r.text.contains("microvm"));
    // Unknown sandboxes.
    let unknown = uuid::Uuid::new_v4();
    for (m, p) in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/exec"),
        ("GET", "/files/list?path=/"),
        ("GET", "/metrics"),
        ("POST", "/touch"),
    ] {
        let rb = api
            .req(m.parse().unwrap(), &format!("/sandboxes/{unknown}{p}"))
            .json(&json!({"cmd": ["true"]}));
        let r = api.send(rb);
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text);
        assert_eq!(r.body["status"], 404);
    }
    assert_eq!(api.get("/sandboxes/not-a-uuid").status, 404);
    assert_eq!(api.get("/sandboxes?state=weird").status, 400);
}

#[test]
fn stop_start_pause_resume() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    assert_eq!(sb.sh("echo kept > /workspace/f")["exit_code"], 0);
    let r = api.post(&sb.path("/stop"), json!({}));
    assert_eq!(r.body["state"], "stopped", "{}", r.text);
    let e = api.post(&sb.path("/exec"), json!({"cmd": ["true"]}));
    assert_eq!(e.status, 409, "{}", e.text);
    assert!(e.body["detail"].as_str().unwrap().contains("stopped"));
    let r = api.post(&sb.path("/start"), json!({}));
    assert_eq!(r.body["state"], "running", "{}", r.text);
    assert_eq!(sb.sh("cat /workspace/f")["stdout"], "kept\n");

    let r = api.post(&sb.path("/pause"), json!({}));
    assert_eq!(r.body["state"], "paused", "{}", r.text);
    assert_eq!(
        api.post(&sb.path("/exec"), json!({"cmd": ["true"]})).status,
        409
    );
    let r = api.post(&sb.path("/resume"), json!({}));
    assert_eq!(r.body["state"], "running", "{}", r.text);
    assert_eq!(sb.sh("echo back")["stdout"], "back\n");
}

#[test]
fn ttl_and_idle_timeout_are_reaped_and_touch_resets_idle() {
    let api = shared().api();
    let ttl = api.create(json!({"ttl_secs": 1}));
    let idle = api.create(json!({"idle_timeout_secs": 2}));
    let busy = api.create(json!({"idle_timeout_secs": 2}));
    // Keep `busy` active past its idle timeout.
    for _ in 0..8 {
        assert_eq!(
            api.post(&format!("/sandboxes/{busy}/touch"), json!({}))
                .status,
            200
        );
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
    eventually(10, || {
        (api.get(&format!("/sandboxes/{ttl}")).body["state"] == "destroyed").then_some(())
    });
    eventually(10, || {
        (api.get(&format!("/sandboxes/{idle}")).body["state"] == "destroyed").then_some(())
    });
    assert_eq!(
        api.get(&format!("/sandboxes/{busy}")).body["state"],
        "running"
    );
    eventually(10, || {
        (api.get(&format!("/sandboxes/{busy}")).body["state"] == "destroyed").then_some(())
    });
}

#[test]
fn destroy_leaves_nothing_behind() {
    // A daemon of its own, so that counts are this test's alone.
    let d = Daemon::start();
    let api = d.api();
    let id = api.create(json!({}));
    let dir = d.data.join("sandboxes").join(&id);
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("net.json")).unwrap()).unwrap();
    let netns = format!("/var/run/netns/{}", net["netns"].as_str().unwrap());
    let veth = format!("/sys/class/net/{}", net["veth"].as_str().unwrap());
    assert!(std::path::Path::new(&netns).exists());
    assert!(std::path::Path::new(&veth).exists());
    assert!(dir.exists());
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&id))
            .count()
    };
    assert!(mounts() >= 2);
    let cgroups = || {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .filter(|c| {
                c.path().join("paddock").join(&id).exists()
                    || c.path().join(format!("paddock/{id}")).exists()
            })
            .count()
    };
    assert!(cgroups() > 0);
    api.destroy(&id);
    // A destroyed sandbox's network namespace goes back to the daemon's
    // bounded pool (at most twice --net-pool, 4 here) or is removed.
    let netns_of_daemon = || {
        std::fs::read_dir("/var/run/netns")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", d.bridge))
            })
            .count()
    };
    let bounded = || {
        let live = api.get("/sandboxes?state=running").body["sandboxes"]
            .as_array()
            .unwrap()
            .len();
        let n = netns_of_daemon();
        assert!(n <= live + 8, "{n} namespaces for {live} live sandboxes");
    };
    bounded();
    // Many creates and destroys do not grow it.
    for _ in 0..12 {
        let id = api.create(json!({}));
        api.destroy(&id);
    }
    bounded();
    assert!(!dir.exists(), "sandbox dir left");
    assert_eq!(mounts(), 0, "mounts left");
    assert_eq!(cgroups(), 0, "cgroups left");
    // Stopping for good (`paddock serve --cleanup`) removes the pool too,
    // and the bridge with its NAT and forwarding rules.
    let prefix = format!("{}-", d.bridge);
    let bridge = std::path::Path::new("/sys/class/net").join(&d.bridge);
    let rules = || {
        ["nat", "filter"]
            .iter()
            .map(|t| {
                let out = std::process::Command::new("iptables")
                    .args(["-t", t, "-S"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.split_whitespace().any(|w| w == d.bridge))
                    .count()
            })
            .sum::<usize>()
    };
    assert!(bridge.exists());
    assert_eq!(rules(), 3, "the daemon's NAT and forwarding rules");
    drop(api);
    d.stop_for_good();
    let left = std::fs::read_dir("/var/run/netns")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert_eq!(left, 0, "network namespaces left after cleanup");
    assert!(!bridge.exists(), "bridge left after cleanup");
    assert_eq!(rules(), 0, "iptables rules left after cleanup");
}

#[test]
fn destroy_during_create_wins() {
    // A daemon of its own: its event stream shows only these sandboxes.
    let d = Daemon::start();
    let api = d.api();
    let events = stream(&api, "/events", None);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(events));
    for _ in 0..5 {
        let api2 = d.api();
        let create = std::thread::spawn(move || api2.post("/sandboxes", json!({})));
        // Destroyed as soon as it is stored, while it still boots.
        let id = loop {
            let line = lines.next().expect("event stream ended").unwrap();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let ev: serde_json::Value = serde_json::from_str(data).unwrap();
            if ev["kind"] == "sandbox.created" {
                break ev["sandbox_id"].as_str().unwrap().to_string();
            }
        };
        let del = api.delete(&format!("/sandboxes/{id}"));
        assert_eq!(del.status, 200, "{}", del.text);
        assert_eq!(del.body["state"], "destroyed", "{}", del.text);
        // The boot finished first (the destroy waited for it): never a
        // sandbox that comes back to life, nor a boot torn down under it.
        let created = create.join().unwrap();
        assert_eq!(created.status, 201, "{}", created.text);
        let now = api.get(&format!("/sandboxes/{id}"));
        assert_eq!(now.body["state"], "destroyed", "{}", now.text);
        let kinds: Vec<String> =
            read_events(stream(&api, &format!("/sandboxes/{id}/events"), None), 3)
                .into_iter()
                .map(|e| e.1["kind"].as_str().unwrap().to_string())
                .collect();
        assert_eq!(
            kinds,
            ["sandbox.created", "sandbox.started", "sandbox.destroyed"],
            "lifecycle events out of order"
        );
        assert!(
            !d.data.join("sandboxes").join(&id).exists(),
            "sandbox dir left"
        );
    }
}
