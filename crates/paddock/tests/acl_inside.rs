//! Issue 21, item 4: a mount's ACL holds for every process in the
//! sandbox, not only for the file API. A mount whose rules are not
//! read-write throughout is guarded: the agent serves it (FUSE) and judges
//! each access, recording an `fs.request` event per decision.
//!
//! The mount here is a host directory the test fills from the host, so
//! that its denied and read-only files exist before any process inside
//! could be refused making them.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

struct Fixture {
    root: PathBuf,
    d: Daemon,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    let mut fresh = false;
    let f = F.get_or_init(|| {
        fresh = true;
        let root = std::env::temp_dir().join(format!("paddock-acl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let d = Daemon::start_with("127.0.0.1", &["--allow-host-mount", root.to_str().unwrap()]);
        Fixture { root, d }
    });
    if fresh {
        // A static is never dropped: its daemon's network goes at exit.
        clean_up_at_exit(&f.d);
    }
    f
}

/// A fresh host directory for one test, filled with:
/// `pub/` (rw), `ro/file` (ro), `secret/key` and `secret/run.sh` (deny),
/// `x.key` and `pub/dir/a.key` (denied by the glob `/data/**/*.key`).
fn host_dir(name: &str) -> PathBuf {
    let dir = fixture().root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["pub/dir", "ro", "secret"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let write = |p: &str, s: &str, mode: u32| {
        std::fs::write(dir.join(p), s).unwrap();
        std::fs::set_permissions(
            dir.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    };
    write("ro/file", "read only\n", 0o644);
    write("secret/key", "TOPSECRET\n", 0o644);
    write("secret/run.sh", "#!/bin/sh\necho RAN\n", 0o755);
    write("x.key", "KEYFILE\n", 0o644);
    write("pub/dir/a.key", "NESTEDKEY\n", 0o644);
    write("pub/dir/plain", "plain\n", 0o644);
    // Another host user's files: out of reach of the sandbox's root, with
    // or without a guard (the agent opens each file as the caller would
    // before anything may pass through to it).
    write("pub/theirs", "theirs\n", 0o644);
    write("pub/private", "PRIVATE\n", 0o600);
    for f in ["pub/theirs", "pub/private"] {
        std::os::unix::fs::chown(dir.join(f), Some(4242), Some(4242)).unwrap();
    }
    dir
}

fn rules() -> Value {
    json!([
        {"path": "/data/**", "access": "rw"},
        {"path": "/data/ro/**", "access": "ro"},
        {"path": "/data/secret/**", "access": "deny"},
        {"path": "/data/**/*.key", "access": "deny"}
    ])
}

fn guarded<'a>(api: &'a Api, dir: &Path) -> Sb<'a> {
    Sb::new(
        api,
        json!({"mounts": [{"path": "/data", "origin": dir.to_str().unwrap(), "acls": rules()}]}),
    )
}

/// Runs each `(label, command)` and returns the labels of those that
/// succeeded, with the script's whole output for messages.
fn succeeded(sb: &Sb<'_>, cmds: &[(&str, &str)]) -> (Vec<String>, String) {
    let script: String = cmds
        .iter()
        .map(|(l, c)| format!("if ( {c} ) >/tmp/out 2>&1; then echo OK:{l}; cat /tmp/out; fi\n"))
        .collect();
    let r = sb.sh(&script);
    let out = r["stdout"].as_str().unwrap_or_default().to_string();
    let ok = out
        .lines()
        .filter_map(|l| l.strip_prefix("OK:"))
        .map(str::to_string)
        .collect();
    (ok, format!("{r}"))
}

/// Reading a denied path fails through every way in: open, a listing, a
/// symlink, a hard link, a rename out, mmap and exec; and no process
/// writes a read-only one: write, truncate, remove, rename, chmod, link,
/// a shared writable mapping. What is allowed still works, and the host
/// files are as they were.
#[test]
fn a_process_inside_cannot_read_a_deny_path_nor_write_a_ro_one() {
    let dir = host_dir("attacks");
    let api = fixture().d.api();
    let sb = guarded(&api, &dir);
    let mmap_read = "python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); \
                     print(mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)[:5])'";
    let mmap_write = "python3 -c 'import mmap,sys; f=open(sys.argv[1],\"r+b\"); \
                      m=mmap.mmap(f.fileno(),0); m[0:1]=b\"X\"; m.flush()'";
    let attacks = [
        ("cat-secret", "cat /data/secret/key".to_string()),
        ("cat-glob", "cat /data/x.key".into()),
        ("cat-nested-glob", "cat /data/pub/dir/a.key".into()),
        ("ls-secret", "ls /data/secret".into()),
        ("stat-glob", "stat /data/x.key".into()),
        ("exec-secret", "/data/secret/run.sh".into()),
        ("sh-secret", "sh /data/secret/run.sh".into()),
        ("mmap-secret", format!("{mmap_read} /data/secret/key")),
        (
            "symlink-secret",
            "ln -s /data/secret/key /data/pub/l && cat /data/pub/l".into(),
        ),
        (
            "link-secret",
            "ln /data/secret/key /data/pub/hard && cat /data/pub/hard".into(),
        ),
        (
            "mv-secret-out",
            "mv /data/secret/key /data/pub/moved && cat /data/pub/moved".into(),
        ),
        (
            "mv-glob-rename",
            "mv /data/x.key /data/x.txt && cat /data/x.txt".into(),
        ),
        (
            "mv-dir-with-denied",
            "mv /data/pub/dir /data/pub/dir2 && cat /data/pub/dir2/a.key".into(),
        ),
        ("write-ro", "echo changed > /data/ro/file".into()),
        ("append-ro", "echo more >> /data/ro/file".into()),
        ("truncate-ro", "truncate -s 0 /data/ro/file".into()),
        ("rm-ro", "rm /data/ro/file".into()),
        ("mv-ro-out", "mv /data/ro/file /data/pub/taken".into()),
        (
            "mv-into-ro",
            "echo new > /data/pub/n && mv /data/pub/n /data/ro/n".into(),
        ),
        ("create-in-ro", "touch /data/ro/new".into()),
        ("mkdir-in-ro", "mkdir /data/ro/d".into()),
        ("chmod-ro", "chmod 666 /data/ro/file".into()),
        (
            "link-ro",
            "ln /data/ro/file /data/pub/rolink && echo w >> /data/pub/rolink".into(),
        ),
        ("mmap-write-ro", format!("{mmap_write} /data/ro/file")),
        ("create-denied", "echo x > /data/secret/new".into()),
        ("create-denied-glob", "echo x > /data/pub/new.key".into()),
        (
            "write-another-users",
            "echo mine >> /data/pub/theirs".into(),
        ),
        (
            "mmap-write-another-users",
            format!("{mmap_write} /data/pub/theirs"),
        ),
        ("read-another-users-private", "cat /data/pub/private".into()),
    ];
    let cmds: Vec<(&str, &str)> = attacks.iter().map(|(l, c)| (*l, c.as_str())).collect();
    let (ok, out) = succeeded(&sb, &cmds);
    assert!(ok.is_empty(), "these got through: {ok:?}\n{out}");
    assert!(
        !out.contains("TOPSECRET")
            && !out.contains("KEYFILE")
            && !out.contains("NESTEDKEY")
            && !out.contains("PRIVATE"),
        "denied bytes came out: {out}"
    );
    // Listings leave denied files out.
    let r = sb.sh("ls -a /data; ls /data/pub/dir* 2>&1");
    let listing = r["stdout"].as_str().unwrap();
    assert!(listing.contains("secret") && listing.contains("ro"), "{r}");
    assert!(
        !listing.contains("x.key") && !listing.contains("a.key"),
        "{r}"
    );
    // What the rules allow still works.
    let allowed = [
        ("read-ro", "cat /data/ro/file"),
        ("exec-ro-read", "test -r /data/ro/file"),
        ("write-pub", "echo hi > /data/pub/w && cat /data/pub/w"),
        ("rename-pub", "mv /data/pub/w /data/pub/w2"),
        ("mkdir-pub", "mkdir -p /data/pub/a/b && touch /data/pub/a/b/c"),
        ("rename-plain-dir", "mv /data/pub/a /data/pub/a2"),
        ("copy-ro-out", "cp /data/ro/file /data/pub/copy"),
        ("symlink-pub", "ln -s w2 /data/pub/lw && cat /data/pub/lw"),
        ("mmap-pub", "python3 -c 'import mmap; f=open(\"/data/pub/w2\",\"r+b\"); m=mmap.mmap(f.fileno(),0); m[0:1]=b\"H\"'"),
    ];
    let (ok, out) = succeeded(&sb, &allowed);
    for (l, _) in &allowed {
        assert!(ok.iter().any(|o| o == l), "{l} failed:\n{out}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("pub/w2")).unwrap(), "Hi\n");
    // The host's files are as they were.
    assert_eq!(
        std::fs::read_to_string(dir.join("ro/file")).unwrap(),
        "read only\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("secret/key")).unwrap(),
        "TOPSECRET\n"
    );
    assert!(dir.join("x.key").exists() && dir.join("pub/dir/a.key").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("pub/theirs")).unwrap(),
        "theirs\n"
    );
    assert!(!dir.join("pub/hard").exists() && !dir.join("pub/rolink").exists());
    assert_eq!(
        std::fs::metadata(dir.join("ro/file")).unwrap().mode() & 0o777,
        0o644
    );
}

/// Each decision is an `fs.request` event: the denied read of the secret
/// and the allowed write of a public file.
#[test]
fn each_access_decision_is_an_fs_request_event() {
    let dir = host_dir("events");
    let api = fixture().d.api();
    let sb = guarded(&api, &dir);
    sb.sh("cat /data/secret/key; echo hi > /data/pub/ev");
    let want = |ev: &Value, access: &str, path: &str, op: &str| {
        ev["kind"] == "fs.request"
            && ev["data"]["access"] == access
            && ev["data"]["path"] == path
            && ev["data"]["operation"] == op
            && ev["data"]["mount"] == "/data"
    };
    let mut seen = (false, false);
    let mut last = None;
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(seen.0 && seen.1) && std::time::Instant::now() < deadline {
        for (_, e) in read_events_for(&api, &sb, &mut last) {
            seen.0 |= want(&e, "denied", "/data/secret/key", "read");
            seen.1 |= want(&e, "allowed", "/data/pub/ev", "write");
            all.push(e);
        }
    }
    assert!(seen.0 && seen.1, "{seen:?} in {all:#?}");
}

/// The events recorded so far after `last` (the stream is read to what is
/// there, then dropped).
fn read_events_for(api: &Api, sb: &Sb<'_>, last: &mut Option<i64>) -> Vec<(i64, Value)> {
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_millis(1500))
        .build()
        .unwrap();
    let mut rb = http.get(format!("{}{}", api.base, sb.path("/events")));
    if let Some(l) = last {
        rb = rb.header("Last-Event-ID", l.to_string());
    }
    let Ok(resp) = rb.send() else { return vec![] };
    let mut out = Vec::new();
    let mut id = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(resp)) {
        let Ok(line) = line else { break };
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse::<i64>().ok();
        } else if let Some(d) = line.strip_prefix("data: ") {
            if let (Some(i), Ok(v)) = (id.take(), serde_json::from_str(d)) {
                *last = Some(i);
                out.push((i, v));
            }
        }
    }
    out
}

/// The file API and the processes inside agree; what a process writes in
/// the guarded mount belongs, on the host, to the sandbox's range (in a
/// user namespace) and is the caller's inside.
#[test]
fn the_file_api_agrees_and_owners_are_kept() {
    let dir = host_dir("files");
    let api = fixture().d.api();
    let sb = guarded(&api, &dir);
    assert_eq!(get_file(&api, &sb.id, "/data/secret/key").0, 403);
    assert_eq!(get_file(&api, &sb.id, "/data/x.key").0, 403);
    let (status, body) = get_file(&api, &sb.id, "/data/ro/file");
    assert_eq!((status, body.as_slice()), (200, b"read only\n".as_slice()));
    assert_eq!(
        put_file(&api, &sb.id, "/data/pub/up.txt", "", b"uploaded".to_vec()).status,
        201
    );
    assert_eq!(
        sb.sh("cat /data/pub/up.txt")["stdout"],
        "uploaded",
        "an upload is seen inside"
    );
    // Made inside as root: the host directory owner's, as in an
    // unguarded bind.
    sb.sh("echo root > /data/pub/r");
    let owner = std::fs::metadata(&dir).unwrap().uid();
    assert_eq!(std::fs::metadata(dir.join("pub/r")).unwrap().uid(), owner);
    // In a private guarded mount, another user's file is that user's
    // inside, and (in a user namespace) the range's on the host.
    let private = Sb::new(
        &api,
        json!({"mounts": [{"path": "/w", "acls": [
            {"path": "/w/**", "access": "rw"}, {"path": "/w/ro/**", "access": "ro"}]}]}),
    );
    let r = private.sh(
        "mkdir /w/u && chown 1000:1000 /w/u && \
         setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo mine > /w/u/f; mkdir /w/u/d' && \
         stat -c '%u %g %a' /w/u/f /w/u/d && cat /w/u/f",
    );
    assert_eq!(r["stdout"], "1000 1000 644\n1000 1000 755\nmine\n", "{r}");
    let r = private.sh(
        "setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo x > /w/nope'; echo rc=$?",
    );
    assert!(
        !r["stdout"].as_str().unwrap().contains("rc=0"),
        "a user without write permission wrote: {r}"
    );
}

/// A mount's ACL is judged on the file the agent opened (and, the mount
/// guarded, on every lookup the kernel makes for it): a process in the
/// sandbox that swaps a symlink between an allowed and a denied file, so
/// that the path resolves to the allowed one when the daemon asks and to
/// the denied one when the agent opens it, never gets the denied bytes out.
#[test]
fn a_swapped_symlink_does_not_pass_a_mount_acl() {
    let dir = host_dir("swap");
    let api = fixture().d.api();
    let sb = guarded(&api, &dir);
    let r = sb.sh("echo public > /data/pub/ok && ln -s /data/pub/ok /data/pub/link && echo ok");
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "ok", "{r}");
    // Denied outright, and through a link that stays put.
    assert_eq!(get_file(&api, &sb.id, "/data/secret/key").0, 403);
    sb.sh("ln -s /data/secret/key /data/pub/fixed");
    assert_eq!(get_file(&api, &sb.id, "/data/pub/fixed").0, 403);
    // Swapped in a loop, each swap an atomic rename.
    let swapper = api.req(reqwest::Method::POST, &sb.path("/exec")).json(
        &json!({"shell": "cd /data/pub; end=$(($(date +%s)+25)); \
            while [ $(date +%s) -lt $end ]; do \
              ln -sfn /data/secret/key t1; mv -Tf t1 link; \
              ln -sfn /data/pub/ok t2; mv -Tf t2 link; done", "timeout": 40}),
    );
    let bg = std::thread::spawn(move || swapper.send().map(|r| r.status().as_u16()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (mut ok, mut refused) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let (status, body) = get_file_within(&api, &sb.id, "/data/pub/link", 15);
        assert!(
            !String::from_utf8_lossy(&body).contains("TOPSECRET"),
            "a denied file came out through a swapped link (after {ok} allowed, {refused} refused)"
        );
        match status {
            200 => ok += 1,
            403 | 404 => refused += 1,
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&body)),
        }
    }
    let _ = bg.join();
    assert!(
        ok > 0 && refused > 0,
        "the race never ran: {ok} allowed, {refused} refused"
    );
}

/// The main process starts once the mount is guarded, and in it: started
/// in the mount (its working directory), it reaches the directory through
/// the guard, not the one beneath (relative paths included).
#[test]
fn the_main_process_starts_inside_the_guard() {
    let dir = host_dir("main");
    let api = fixture().d.api();
    let sb = Sb::new(
        &api,
        json!({"mounts": [{"path": "/data", "origin": dir.to_str().unwrap(), "acls": rules()}],
               "cwd": "/data",
               "command": ["sh", "-c", "cat secret/key x.key /data/secret/key > /tmp/main.out 2>&1; echo done >> /tmp/main.out; sleep 600"]}),
    );
    let out = eventually(20, || {
        let r = sb.sh("cat /tmp/main.out 2>/dev/null");
        let s = r["stdout"].as_str().unwrap_or_default().to_string();
        s.contains("done").then_some(s)
    });
    assert!(
        !out.contains("TOPSECRET") && !out.contains("KEYFILE"),
        "{out}"
    );
    // A command without a directory of its own starts there too.
    let r = api.exec(&sb.id, json!({"shell": "cat secret/key; pwd"}));
    assert!(!r["stdout"].as_str().unwrap().contains("TOPSECRET"), "{r}");
}

/// A guard outlives its daemon: served by the agent, it holds while the
/// daemon is down (`kill -9`) and after it comes back, which records the
/// decisions made since and serves the guard's passthrough again.
#[test]
fn a_guard_holds_across_a_daemon_kill() {
    let dir = host_dir("restart");
    let d = Daemon::start_with(
        "127.0.0.1",
        &["--allow-host-mount", fixture().root.to_str().unwrap()],
    );
    let api = d.api();
    let id = api.create(
        json!({"mounts": [{"path": "/data", "origin": dir.to_str().unwrap(), "acls": rules()}],
               "command": ["sh", "-c", "sleep 3; cat /data/secret/key > /tmp/while-down 2>&1; \
                            cat /data/ro/file >> /tmp/while-down; sleep 600"]}),
    );
    d.kill9();
    std::thread::sleep(std::time::Duration::from_secs(5));
    d.restart();
    let out = eventually(20, || {
        let r = api.sh(&id, "cat /tmp/while-down 2>/dev/null");
        let s = r["stdout"].as_str().unwrap_or_default().to_string();
        s.contains("read only").then_some(s)
    });
    assert!(
        !out.contains("TOPSECRET"),
        "read while the daemon was down: {out}"
    );
    let r = api.sh(
        &id,
        "cat /data/x.key; echo again > /data/pub/after; cat /data/pub/after",
    );
    assert!(!r["stdout"].as_str().unwrap().contains("KEYFILE"), "{r}");
    assert!(r["stdout"].as_str().unwrap().contains("again"), "{r}");
    // Decisions made while it was down, and since.
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_millis(1500))
        .build()
        .unwrap();
    let mut seen = (false, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(seen.0 && seen.1) && std::time::Instant::now() < deadline {
        let Ok(resp) = http
            .get(format!("{}/sandboxes/{id}/events", api.base))
            .send()
        else {
            continue;
        };
        for line in std::io::BufRead::lines(std::io::BufReader::new(resp)).map_while(Result::ok) {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(e) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if e["kind"] == "fs.request" && e["data"]["access"] == "denied" {
                seen.0 |= e["data"]["path"] == "/data/secret/key";
                seen.1 |= e["data"]["path"] == "/data/x.key";
            }
        }
    }
    assert!(
        seen.0 && seen.1,
        "denials recorded (while down, since): {seen:?}"
    );
    api.destroy(&id);
}

/// A handle on a removed file stays on that file: reopening it (through
/// /proc/self/fd) after another file took its name does not reach the
/// newcomer, which its owner's mode keeps from the holder. And no file a
/// sandbox makes in a host directory is set-user-ID on the host.
#[test]
fn a_removed_files_handle_does_not_reach_its_successor() {
    let dir = host_dir("stale");
    let api = fixture().d.api();
    let sb = Sb::new(
        &api,
        json!({"mounts": [
            {"path": "/w", "acls": [{"path": "/w/**", "access": "rw"}, {"path": "/w/ro/**", "access": "ro"}]},
            {"path": "/data", "origin": dir.to_str().unwrap(), "acls": rules()}]}),
    );
    let r = sb.sh(
        "mkdir -p /w/pub && chmod 777 /w/pub && \
         setpriv --reuid 1000 --regid 1000 --clear-groups sh -c \
           'exec 3<>/w/pub/report; rm /w/pub/report; sleep 0.5; cat /proc/self/fd/3; echo mine >&3' & \
         sleep 0.2; echo ROOTONLY > /w/pub/report; chmod 600 /w/pub/report; wait; \
         echo after; cat /w/pub/report",
    );
    let out = r["stdout"].as_str().unwrap();
    assert!(
        out.ends_with("after\nROOTONLY\n") && out.matches("ROOTONLY").count() == 1,
        "{r}"
    );
    let r = sb.sh(
        "cp /bin/true /data/pub/s && chmod 4755 /data/pub/s; chmod 6755 /data/pub/s; echo done",
    );
    assert!(r["stdout"].as_str().unwrap().contains("done"), "{r}");
    let mode = std::fs::metadata(dir.join("pub/s")).unwrap().mode();
    assert_eq!(mode & 0o6000, 0, "set-ID bits on the host: {mode:o}");
}
