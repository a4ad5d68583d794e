//! Volumes through the native API and the CLI, against real sandboxes: a
//! volume's data outlives its sandbox and the daemon, its size holds
//! (`ENOSPC` inside, the daemon unharmed), one sandbox writes it at a
//! time, any number read it, and it is mounted into and out of running
//! sandboxes.

mod common;
use common::*;
use serde_json::json;

#[test]
fn a_volume_outlives_its_sandbox_and_the_daemon_and_holds_its_size() {
    let d = Box::leak(Box::new(Daemon::start()));
    clean_up_at_exit(d);
    let api = d.api();
    let r = api.post(
        "/volumes",
        json!({"name": "data", "size_mb": 32, "labels": {"k": "v"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["size_mb"], 32);
    let a = api.create(json!({"volumes": [{"name": "data", "path": "/mnt/data"}]}));
    let w = api.sh(&a, "id -u > /mnt/data/owner; head -c 100000 /dev/urandom > /mnt/data/blob; sha256sum /mnt/data/blob; stat -c %u:%g /mnt/data");
    assert_eq!(w["exit_code"], 0, "{w}");
    let sum = w["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        w["stdout"].as_str().unwrap().ends_with("0:0\n"),
        "root's inside: {w}"
    );

    // Its size holds: a full volume is ENOSPC inside, nothing worse.
    let full = api.sh(
        &a,
        "dd if=/dev/zero of=/mnt/data/fill bs=1M count=64 2>&1; echo rc=$?",
    );
    let out = full["stdout"].as_str().unwrap();
    assert!(
        out.contains("No space left on device") && out.contains("rc=1"),
        "{out}"
    );
    assert_eq!(api.sh(&a, "rm /mnt/data/fill; echo ok")["stdout"], "ok\n");
    let v = api.get("/volumes/data");
    assert_eq!(
        v.body["attached"][0]["sandbox_id"],
        a.as_str(),
        "{}",
        v.text
    );
    assert!(
        v.body["total_bytes"].as_u64().unwrap() <= 32 << 20,
        "{}",
        v.text
    );

    // The sandbox goes; the volume and its data stay, through a kill -9.
    api.destroy(&a);
    assert_eq!(api.get("/volumes/data").body["attached"], json!([]));
    d.kill9();
    d.restart();
    let b = api.create(json!({"volumes": [{"name": "data", "path": "/data", "read_only": true}]}));
    let r = api.sh(&b, "sha256sum /data/blob; touch /data/x 2>&1; true");
    let text = r["stdout"].as_str().unwrap();
    assert!(text.starts_with(&sum[..64]), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    // Deleted only once detached.
    let del = api.delete("/volumes/data");
    assert_eq!(del.status, 409, "{}", del.text);
    assert!(del.text.contains(&b), "{}", del.text);
    api.destroy(&b);
    assert_eq!(api.delete("/volumes/data").status, 204);
    assert_eq!(api.get("/volumes/data").status, 404);
    assert!(!std::fs::read_dir(d.data.join("volumes"))
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".img") }));
}

#[test]
fn one_writer_any_readers_and_mounts_into_running_sandboxes() {
    let d = shared();
    let api = d.api();
    let out = d.cli_ok(&["volumes", "create", "shared-vol", "--size", "16"]);
    assert!(uuid::Uuid::parse_str(out.trim()).is_ok(), "{out}");
    let writer = d
        .cli_ok(&["create", "-v", "shared-vol:/mnt/v"])
        .trim()
        .to_string();
    let ls = d.cli_ok(&["volumes", "ls"]);
    assert!(
        ls.contains("shared-vol") && ls.contains(&format!("{writer}:/mnt/v:rw")),
        "{ls}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["volumes", "inspect", "shared-vol"])).unwrap();
    assert_eq!(shown["size_mb"], 16);
    api.sh(&writer, "echo from-writer > /mnt/v/f");
    // A second writer is refused, naming the first.
    let r = api.post(
        "/sandboxes",
        json!({"volumes": [{"name": "shared-vol", "path": "/v"}]}),
    );
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains(&writer), "{}", r.text);
    // Readers, any number, also mounted into a running sandbox.
    let r1 =
        api.create(json!({"volumes": [{"name": "shared-vol", "path": "/v", "read_only": true}]}));
    let r2 = api.create(json!({}));
    d.cli_ok(&[
        "volumes",
        "attach",
        "shared-vol",
        &r2,
        "--path",
        "/late",
        "--read-only",
    ]);
    assert_eq!(api.sh(&r1, "cat /v/f")["stdout"], "from-writer\n");
    assert_eq!(api.sh(&r2, "cat /late/f")["stdout"], "from-writer\n");
    let att = api.post(
        &format!("/sandboxes/{r2}/volumes"),
        json!({"name": "shared-vol", "path": "/again"}),
    );
    assert_eq!(att.status, 409, "{}", att.text);
    // Not while a process inside works in it (the volume would stay in
    // its hands, recorded free).
    api.sh(
        &r2,
        "cd /late && (setsid sleep 300 > /dev/null 2>&1 &); true",
    );
    let busy = api.delete(&format!("/sandboxes/{r2}/volumes/shared-vol"));
    assert_eq!(busy.status, 409, "{}", busy.text);
    assert!(busy.text.contains("in use"), "{}", busy.text);
    api.sh(
        &r2,
        "pkill -f 'sleep 300'; while pgrep -f 'sleep 300' > /dev/null; do sleep 0.05; done",
    );
    // Out of the running sandbox again; then its writer, and another takes it.
    d.cli_ok(&["volumes", "detach", "shared-vol", &r2]);
    assert_eq!(api.sh(&r2, "ls /late | wc -l")["stdout"], "0\n");
    let det = api.delete(&format!("/sandboxes/{writer}/volumes/shared-vol"));
    assert_eq!(det.status, 200, "{}", det.text);
    assert_eq!(
        api.sh(&writer, "test -e /mnt/v/f; echo $?")["stdout"],
        "1\n"
    );
    let r = api.post(
        &format!("/sandboxes/{r2}/volumes"),
        json!({"name": "shared-vol", "path": "/rw"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        api.sh(&r2, "echo more >> /rw/f && cat /rw/f")["stdout"],
        "from-writer\nmore\n"
    );
    assert_eq!(api.sh(&r1, "cat /v/f")["stdout"], "from-writer\nmore\n");
    for id in [&writer, &r1, &r2] {
        api.destroy(id);
    }
    d.cli_ok(&["volumes", "rm", "shared-vol"]);
}

#[test]
fn bad_volume_requests_are_clear_errors() {
    let d = shared();
    let api = d.api();
    for (body, field) in [
        (json!({"name": "x", "size_mb": 1}), "size_mb"),
        (json!({"name": "x", "size_mb": 1u64 << 40}), "size_mb"),
        (json!({"name": "../x", "size_mb": 16}), "name"),
    ] {
        let r = api.post("/volumes", body);
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
    }
    assert_eq!(
        api.post("/volumes", json!({"name": "dup", "size_mb": 16}))
            .status,
        201
    );
    assert_eq!(
        api.post("/volumes", json!({"name": "dup", "size_mb": 16}))
            .status,
        409
    );
    let r = api.post(
        "/sandboxes",
        json!({"volumes": [{"name": "nope", "path": "/v"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "volumes[0].name");
    for path in ["v", "/proc/x", "/etc/resolv.conf", "/dev"] {
        let r = api.post(
            "/sandboxes",
            json!({"volumes": [{"name": "dup", "path": path}]}),
        );
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.body["field"], "volumes[0].path");
    }
    let r = api.post(
        "/sandboxes",
        json!({"volumes": [{"name": "dup", "path": "/a", "read_only": true}, {"name": "dup", "path": "/b", "read_only": true}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let id = api.create(json!({}));
    let r = api.delete(&format!("/sandboxes/{id}/volumes/dup"));
    assert_eq!(r.status, 404, "{}", r.text);
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        api.post(
            &format!("/sandboxes/{missing}/volumes"),
            json!({"name": "dup", "path": "/v"})
        )
        .status,
        404
    );
    api.destroy(&id);
    assert_eq!(api.delete("/volumes/dup").status, 204);
}
