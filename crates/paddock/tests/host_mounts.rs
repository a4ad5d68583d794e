//! Host directories (`mounts[].origin`, hiver's `fs[].origin`) are bound
//! only from roots the operator allows, never `/`, the data dir or the
//! host's own directories, resolved before the check and opened without
//! following symlinks when bound (issue 19, item 2).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// A PUT to hiver's controller, as its SDK sends a get-or-create.
fn hiver_create(hiver: &str, key: &str, config: Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .put(format!("http://{hiver}/controller/v1/sandboxes/{key}"))
        .json(&config)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// What a sandbox made by a request that should have been refused exposes
/// (for the failure message), and it is destroyed.
fn leaked(api: &Api, body: &Value) -> String {
    let Some(id) = body["id"].as_str() else {
        return String::new();
    };
    let r = api.post(
        &format!("/sandboxes/{id}/exec"),
        json!({"shell": "head -c 200 /host/etc/shadow"}),
    );
    api.delete(&format!("/sandboxes/{id}"));
    r.text
}

#[test]
fn host_root_and_unlisted_dirs_are_refused_without_allowed_roots() {
    let hiver = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with("127.0.0.1", &["--hiver-listen", &hiver]);
    let api = d.api();
    // The attack: the host's root, read-write, then /etc/shadow from inside.
    let r = api.post(
        "/sandboxes",
        json!({"mounts": [{"path": "/host", "origin": "/"}]}),
    );
    assert_eq!(
        r.status,
        403,
        "a / mount must be refused: {} (exec inside read: {})",
        r.text,
        leaked(&api, &r.body)
    );
    assert_eq!(r.body["field"], "mounts[0].origin", "{}", r.text);
    // No allowed roots: any host directory is refused.
    let dir = std::env::temp_dir().join(format!("paddock-hm-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let r = api.post(
        "/sandboxes",
        json!({"mounts": [{"path": "/w", "origin": dir.to_str().unwrap()}]}),
    );
    assert_eq!(r.status, 403, "{} {}", r.text, leaked(&api, &r.body));
    assert_eq!(r.body["field"], "mounts[0].origin", "{}", r.text);
    // Nor through a template.
    let r = api.post(
        "/templates",
        json!({"name": "hostroot", "mounts": [{"path": "/host", "origin": "/"}]}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    // hiver's fs[].origin, as its SDK sends it.
    let (status, body) = hiver_create(
        &hiver,
        "hostroot",
        json!({"fs": [{"backend": "local", "mount": "/host", "origin": "/"}]}),
    );
    assert_eq!(status, 403, "hiver: {body}");
    assert_eq!(body["details"]["field"], "fs[0].origin", "{body}");
    // Nothing was made, not even an `error` record.
    let all = api.get("/sandboxes").body;
    assert_eq!(all["sandboxes"].as_array().map(Vec::len), Some(0), "{all}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn only_directories_inside_allowed_roots_are_bound() {
    // The allowed root holds the daemon's data dir (both under the temp
    // dir): that one must still be refused.
    let tmp = std::env::temp_dir();
    let work = tmp.join(format!("paddock-hm-{}", std::process::id()));
    let sub = work.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("from-host.txt"), "host file\n").unwrap();
    let escape = work.join("escape");
    let _ = std::fs::remove_file(&escape);
    std::os::unix::fs::symlink("/", &escape).unwrap();
    let hiver = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--hiver-listen",
            &hiver,
            "--allow-host-mount",
            tmp.to_str().unwrap(),
        ],
    );
    let api = d.api();

    // A subdirectory of an allowed root: bound read-write.
    let sb = Sb::new(
        &api,
        json!({"mounts": [{"path": "/mnt/h", "origin": sub.to_str().unwrap(),
                           "acls": [{"path": "/mnt/h/**", "access": "rw"}]}]}),
    );
    let r = sb.sh("cat /mnt/h/from-host.txt && echo inside > /mnt/h/new.txt");
    assert_eq!(r["stdout"], "host file\n", "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(
        std::fs::read_to_string(sub.join("new.txt")).unwrap(),
        "inside\n"
    );

    let refused = |origin: &Path, why: &str| {
        let r = api.post(
            "/sandboxes",
            json!({"mounts": [{"path": "/host", "origin": origin.to_str().unwrap()}]}),
        );
        assert_eq!(
            r.status,
            403,
            "{why}: {} (exec inside read: {})",
            r.text,
            leaked(&api, &r.body)
        );
        assert_eq!(r.body["field"], "mounts[0].origin", "{}", r.text);
    };
    refused(&escape, "a symlink in the allowed root pointing to /");
    refused(&escape.join("etc"), "a path through that symlink");
    refused(Path::new("/"), "the host's root");
    refused(Path::new("/etc"), "/etc");
    refused(&d.data, "the data dir");
    refused(&d.data.join("sandboxes"), "inside the data dir");
    refused(&tmp, "a directory holding the data dir");
    let (status, body) = hiver_create(
        &hiver,
        "escape",
        json!({"fs": [{"backend": "local", "mount": "/host", "origin": escape.to_str().unwrap()}]}),
    );
    assert_eq!(status, 403, "hiver: {body}");
    assert_eq!(body["details"]["field"], "fs[0].origin", "{body}");

    // The path is checked at create; swapped for a symlink afterwards, the
    // next start must not follow it.
    let moved = work.join("sub-moved");
    let r = api.post(&sb.path("/stop"), json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    std::fs::rename(&sub, &moved).unwrap();
    std::os::unix::fs::symlink("/", &sub).unwrap();
    let r = api.post(&sb.path("/start"), json!({}));
    if r.status == 200 {
        let e = sb.sh("head -c 100 /mnt/h/etc/shadow");
        panic!("a start through a swapped-in symlink bound the host's root: {e}");
    }
    assert!(r.status < 500 || r.status == 503, "{}", r.text);
    drop(sb);
    drop(d);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn forbidden_allowed_roots_stop_the_daemon_at_start() {
    for root in ["/", "/etc", "/proc/self"] {
        let data = std::env::temp_dir().join(format!("paddock-hm-start-{}", std::process::id()));
        let out = std::process::Command::new(bin())
            .args(["serve", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(["--hiver-listen", "off", "--flash-http-listen", "off"])
            .args([
                "--flash-grpc-listen",
                "off",
                "--agenttier-listen",
                "off",
                "--hogland-listen",
                "off",
                "--boxd-listen",
                "off",
                "--ssh-listen",
                "off",
                "--ingress-listen",
                "off",
                "--socket",
                "off",
                "--data-dir",
            ])
            .arg(&data)
            .args(["--agent"])
            .arg(agent())
            .args(["--allow-host-mount", root])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{root}: {err}");
        assert!(err.contains("allowed host mount"), "{root}: {err}");
        let _ = std::fs::remove_dir_all(&data);
    }
}
