//! Snapshots and forks through the native API and the CLI, against real
//! sandboxes: a snapshot restores byte for byte and outlives its sandbox
//! and the daemon, stacks (deletions too) and flattens past its depth, a
//! fork's children diverge, and bad input or a full disk is a clear error
//! that leaves the sandbox as it was.

mod common;
use common::*;
use serde_json::json;

/// Files of every kind, with owners and modes: what a snapshot must keep.
const WRITE: &str = "set -e
mkdir -p /workspace/tree/sub
head -c 1048576 /dev/urandom > /workspace/tree/random
printf 'line one\\n\\nline three' > /workspace/tree/sub/text
chmod 0640 /workspace/tree/sub/text
chown 1000:1000 /workspace/tree/sub/text
ln -s sub/text /workspace/tree/link
ln /workspace/tree/random /workspace/tree/hard
mkfifo /workspace/tree/fifo
chmod 4755 /workspace/tree/random
touch -d '2001-02-03 04:05:06' /workspace/tree/sub/text
echo base > /workspace/doomed";

/// What `WRITE` made, as a line per file: kind, mode, owner, links, mtime
/// (a directory's size and links are its filesystem's: an overlay's
/// directory spread over layers counts one link; and its time changes
/// when a file is added to it, as the stacking part does), then the
/// contents' digests.
const LOOK: &str = "cd /workspace/tree && for f in random sub/text link hard fifo; do
stat -c '%n %F %a %u:%g %h %Y' \"$f\"; done; stat -c '%n %F %a %u:%g' sub;
sha256sum random sub/text; readlink link";

#[test]
fn a_snapshot_restores_byte_for_byte_stacks_and_outlives_its_sandbox() {
    let d = shared();
    let api = d.api();
    let parent = api.create(json!({"labels": {"t": "snap"}}));
    let w = api.sh(&parent, WRITE);
    assert_eq!(w["exit_code"], 0, "{w}");
    let before = api.sh(&parent, LOOK)["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        before.contains("random regular file 4755 0:0 2 "),
        "{before}"
    );

    let r = api.post(
        &format!("/sandboxes/{parent}/snapshots"),
        json!({"name": "snap-first", "labels": {"k": "v"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let snap = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["sandbox_id"], parent.as_str());
    assert_eq!(r.body["labels"]["k"], "v");
    assert!(r.body["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        r.body["size_bytes"].as_u64().unwrap() >= 1 << 20,
        "{}",
        r.text
    );
    // The parent runs on, thawed, and writes on.
    assert_eq!(
        api.sh(&parent, "echo more > /workspace/later")["exit_code"],
        0
    );
    // A second snapshot of that name is a conflict.
    let dup = api.post(
        &format!("/sandboxes/{parent}/snapshots"),
        json!({"name": "snap-first"}),
    );
    assert_eq!(dup.status, 409, "{}", dup.text);
    // Recorded as an event of the sandbox.
    // (created, started, two commands' request and response, then it.)
    let evs = read_events(
        stream(&api, &format!("/sandboxes/{parent}/events"), None),
        7,
    );
    let kinds: Vec<&str> = evs
        .iter()
        .map(|(_, e)| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[6], "sandbox.snapshot", "{kinds:?}");
    assert_eq!(evs[6].1["data"]["snapshot_id"], snap.as_str());

    // The parent goes; the snapshot stays, by id and by name.
    api.destroy(&parent);
    assert_eq!(api.get(&format!("/snapshots/{snap}")).status, 200);
    let by_name = api.get("/snapshots/snap-first");
    assert_eq!(by_name.body["id"], snap.as_str(), "{}", by_name.text);
    let listed = api.get("/snapshots");
    assert!(listed.body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == snap.as_str()));

    // A sandbox from it has the files as they were, its own config
    // taken from the snapshot where the create leaves it out.
    let child = api.create_sandbox(json!({"snapshot": "snap-first", "cpu": 0.5}));
    assert_eq!(
        child.config.from_snapshot.map(|u| u.to_string()),
        Some(snap.clone())
    );
    assert_eq!(child.config.cpu, 0.5);
    let child = child.id.to_string();
    assert_eq!(api.sh(&child, LOOK)["stdout"].as_str().unwrap(), before);
    let later = api.sh(&child, "test -e /workspace/later; echo $?");
    assert_eq!(
        later["stdout"], "1\n",
        "written after the snapshot: not in it"
    );

    // A snapshot of a sandbox from a snapshot stacks: a deletion holds.
    api.sh(
        &child,
        "rm /workspace/doomed && echo new > /workspace/tree/sub/added",
    );
    let r2 = api.post(&format!("/sandboxes/{child}/snapshots"), json!({}));
    assert_eq!(r2.status, 201, "{}", r2.text);
    assert_eq!(
        r2.body["config"]["layers"].as_array().unwrap().len(),
        2,
        "{}",
        r2.text
    );
    let grand = api.create(json!({"snapshot": r2.body["id"]}));
    let g = api.sh(
        &grand,
        "test -e /workspace/doomed; echo $?; cat /workspace/tree/sub/added",
    );
    assert_eq!(g["stdout"], "1\nnew\n", "{g}");
    assert_eq!(api.sh(&grand, LOOK)["stdout"].as_str().unwrap(), before);

    // Deleting a snapshot leaves the sandboxes made from it whole.
    let del = api.delete(&format!("/snapshots/{snap}"));
    assert_eq!(del.status, 204, "{}", del.text);
    assert_eq!(api.get(&format!("/snapshots/{snap}")).status, 404);
    assert_eq!(
        api.sh(&child, "cat /workspace/tree/sub/text")["stdout"],
        "line one\n\nline three"
    );
    let gone = api.post("/sandboxes", json!({"snapshot": snap}));
    assert_eq!(gone.status, 404, "{}", gone.text);
    for id in [&child, &grand] {
        api.destroy(id);
    }
    api.delete(&format!("/snapshots/{}", r2.body["id"].as_str().unwrap()));
}

#[test]
fn a_long_chain_is_flattened_and_still_shows_every_change() {
    let d = shared();
    let api = d.api();
    let mut id = api.create(json!({}));
    let mut snaps = Vec::new();
    for i in 0..10 {
        api.sh(
            &id,
            &format!(
                "echo {i} > /workspace/n{i}; rm -f /workspace/n{}",
                i.max(1) - 1
            ),
        );
        let r = api.post(&format!("/sandboxes/{id}/snapshots"), json!({}));
        assert_eq!(r.status, 201, "{}", r.text);
        let depth = r.body["config"]["layers"].as_array().unwrap().len();
        assert!(depth <= 8, "{depth} layers at step {i}");
        snaps.push(r.body["id"].as_str().unwrap().to_string());
        let next = api.create(json!({"snapshot": r.body["id"]}));
        api.destroy(&id);
        id = next;
    }
    let files = api.sh(&id, "cd /workspace && ls n* && cat n9");
    assert_eq!(files["stdout"], "n9\n9\n", "{files}");
    api.destroy(&id);
    for s in snaps {
        api.delete(&format!("/snapshots/{s}"));
    }
}

#[test]
fn fork_children_start_alike_and_diverge() {
    let d = shared();
    let api = d.api();
    let parent = api.create(json!({"labels": {"t": "fork"}, "memory_mb": 256}));
    api.sh(&parent, "echo shared > /workspace/f");
    let r = api.post(&format!("/sandboxes/{parent}/fork"), json!({"count": 3}));
    assert_eq!(r.status, 201, "{}", r.text);
    let kids: Vec<String> = r.body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["state"], "running");
            assert_eq!(s["config"]["memory_mb"], 256);
            assert_eq!(s["labels"]["t"], "fork");
            s["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kids.len(), 3);
    for (i, k) in kids.iter().enumerate() {
        assert_eq!(api.sh(k, "cat /workspace/f")["stdout"], "shared\n");
        api.sh(k, &format!("echo {i} > /workspace/mine"));
    }
    for (i, k) in kids.iter().enumerate() {
        assert_eq!(api.sh(k, "cat /workspace/mine")["stdout"], format!("{i}\n"));
    }
    // The parent runs on, untouched by its children.
    let p = api.sh(&parent, "test -e /workspace/mine; echo $?");
    assert_eq!(p["stdout"], "1\n");
    // Through the CLI too.
    let out = d.cli_ok(&["fork", &parent, "-n", "2"]);
    let cli_kids: Vec<&str> = out.lines().collect();
    assert_eq!(cli_kids.len(), 2, "{out}");
    assert_eq!(
        api.sh(cli_kids[0], "cat /workspace/f")["stdout"],
        "shared\n"
    );
    for k in kids.iter().map(String::as_str).chain(cli_kids) {
        api.destroy(k);
    }
    api.destroy(&parent);
}

#[test]
fn bad_snapshot_and_fork_requests_are_clear_errors() {
    let d = shared();
    let api = d.api();
    let id = api.create(json!({}));
    for n in [0, 101] {
        let r = api.post(&format!("/sandboxes/{id}/fork"), json!({"count": n}));
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["field"], "count", "{}", r.text);
    }
    // Memory cannot be kept by containers: 501 naming who can.
    for path in ["snapshots", "fork"] {
        let r = api.post(&format!("/sandboxes/{id}/{path}"), json!({"memory": true}));
        assert_eq!(r.status, 501, "{}", r.text);
        assert!(
            r.text.contains("gVisor") && r.text.contains("microVM"),
            "{}",
            r.text
        );
    }
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        api.post(&format!("/sandboxes/{missing}/snapshots"), json!({}))
            .status,
        404
    );
    assert_eq!(
        api.post(&format!("/sandboxes/{missing}/fork"), json!({}))
            .status,
        404
    );
    assert_eq!(api.get(&format!("/snapshots/{missing}")).status, 404);
    assert_eq!(api.delete(&format!("/snapshots/{missing}")).status, 404);
    let bad = api.post(
        &format!("/sandboxes/{id}/snapshots"),
        json!({"name": "../x"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.body["field"], "name");
    let unknown = api.post(&format!("/sandboxes/{id}/snapshots"), json!({"nmae": "x"}));
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    // A snapshot's image is the one its layers lie on.
    let s = api.post(&format!("/sandboxes/{id}/snapshots"), json!({}));
    assert_eq!(s.status, 201, "{}", s.text);
    let sid = s.body["id"].as_str().unwrap();
    let other = api.post("/sandboxes", json!({"snapshot": sid, "image": "busybox"}));
    assert_eq!(other.status, 400, "{}", other.text);
    assert_eq!(other.body["field"], "image");
    // A stopped sandbox is captured as it is, no freeze needed.
    assert_eq!(
        api.post(&format!("/sandboxes/{id}/stop"), json!({})).status,
        200
    );
    let st = api.post(&format!("/sandboxes/{id}/snapshots"), json!({}));
    assert_eq!(st.status, 201, "{}", st.text);
    // A destroyed one cannot be.
    api.destroy(&id);
    let r = api.post(&format!("/sandboxes/{id}/snapshots"), json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    for sn in [sid, st.body["id"].as_str().unwrap()] {
        api.delete(&format!("/snapshots/{sn}"));
    }
}

#[test]
fn snapshots_survive_kill9_and_a_full_disk_leaves_the_sandbox_running() {
    let d = Box::leak(Box::new(Daemon::start()));
    clean_up_at_exit(d);
    let api = d.api();
    let id = api.create(json!({"memory_mb": 256}));
    api.sh(&id, "head -c 2000000 /dev/urandom > /workspace/data; sha256sum /workspace/data > /workspace/sum");
    let sum = api.sh(&id, "cat /workspace/sum")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.cli_ok(&["snapshot", &id, "--name", "kept"]);
    let snap = out.trim().to_string();
    assert!(d.cli_ok(&["snapshots", "ls"]).contains(&snap));

    // What a capture cut short leaves behind, and a frozen sandbox (the
    // daemon killed while it copied): gone, and thawed, after a restart.
    let layers = d.data.join("images").join("snapshots");
    std::fs::create_dir_all(layers.join(".tmp-cut-short/d")).unwrap();
    d.kill9();
    let oci_root = std::fs::read_dir(d.data.join("oci"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rt = oci_root.file_name().unwrap().to_string_lossy().to_string();
    let o = std::process::Command::new(&rt)
        .arg("--root")
        .arg(&oci_root)
        .args(["pause", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.restart();
    assert!(!layers.join(".tmp-cut-short").exists());
    let again = api.sh(&id, "sha256sum /workspace/data");
    assert_eq!(again["stdout"].as_str().unwrap(), sum, "thawed and serving");
    let child = d
        .cli_ok(&["create", "--snapshot", "kept"])
        .trim()
        .to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["snapshots", "inspect", "kept"])).unwrap();
    assert_eq!(shown["id"], snap.as_str());
    assert_eq!(
        api.sh(&child, "sha256sum /workspace/data")["stdout"]
            .as_str()
            .unwrap(),
        sum
    );

    // The layer store's disk full: a clear error, nothing listed, the
    // sandbox running as it was.
    let small = layers.to_string_lossy().to_string();
    registry::sh(&format!(
        "mount -t tmpfs -o size=1m,mode=0700 paddock-test-full {small}"
    ));
    let r = api.post(
        &format!("/sandboxes/{id}/snapshots"),
        json!({"name": "too-big"}),
    );
    registry::sh(&format!("umount {small}"));
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("full"), "{}", r.text);
    assert_eq!(api.get("/snapshots/too-big").status, 404);
    assert_eq!(
        api.get(&format!("/sandboxes/{id}")).body["state"],
        "running"
    );
    assert_eq!(
        api.sh(&id, "echo alive > /workspace/x && cat /workspace/x")["stdout"],
        "alive\n"
    );
    // And the snapshot from before the restart still restores.
    let c2 = api.create(json!({"snapshot": snap}));
    assert_eq!(
        api.sh(&c2, "sha256sum /workspace/data")["stdout"]
            .as_str()
            .unwrap(),
        sum
    );
    assert_eq!(d.cli_ok(&["snapshots", "rm", "kept"]).trim(), "kept");
    assert_eq!(api.get(&format!("/snapshots/{snap}")).status, 404);
}
