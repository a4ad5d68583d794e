//! Issue 21: a sandbox's root is not the host's. Each sandbox runs in a
//! user namespace of its own with a range of unprivileged host ids.
//!
//! `PADDOCK_TEST_USERNS=off` runs these against a daemon started with
//! `--userns off`, to see them fail while sandboxes run as the host's root.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use serde_json::json;

/// The first host id of sandbox ranges (`paddock_host::userns::FIRST`).
const FIRST: u32 = 1 << 30;

fn daemon(extra: &[&str]) -> Daemon {
    let mode = std::env::var("PADDOCK_TEST_USERNS").unwrap_or_else(|_| "on".into());
    let mut args = vec!["--userns", mode.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_with("127.0.0.1", &args)
}

/// `0 <base> 65536`: the sandbox's uid map.
fn uid_base(sb: &Sb<'_>) -> u32 {
    let r = sb.sh("cat /proc/self/uid_map");
    let f: Vec<u32> = r["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "{r}");
    assert_eq!(f[0], 0, "{r}");
    assert_eq!(
        f[2], 65536,
        "uid 0..65535 inside, not the host's whole range: {r}"
    );
    f[1]
}

#[test]
fn root_inside_is_an_unprivileged_range_on_the_host() {
    let d = daemon(&[]);
    let api = d.api();
    let a = Sb::new(&api, json!({}));
    let b = Sb::new(&api, json!({}));
    let (ba, bb) = (uid_base(&a), uid_base(&b));
    assert!(ba >= FIRST && bb >= FIRST, "{ba} {bb}");
    assert!(ba.abs_diff(bb) >= 65536, "ranges overlap: {ba} {bb}");
    let gid = a.sh("cat /proc/self/gid_map");
    assert!(
        gid["stdout"].as_str().unwrap().contains(&format!(" {ba} ")),
        "{gid}"
    );

    // Root inside; the image's files (the host's /usr, root's on the host)
    // are root's inside, through idmapped mounts, not nobody's.
    let r = a.sh("id -u; stat -c %u:%g /usr/bin/env / /etc/hosts; touch /made-here && mkdir -p /workspace/d && echo x > /workspace/d/f");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "0\n0:0\n0:0\n0:0\n", "{r}");

    // What it writes is its range's on the host.
    let upper = d.data.join("sandboxes").join(&a.id).join("rw/upper");
    for p in ["made-here", "workspace/d", "workspace/d/f"] {
        let m = std::fs::metadata(upper.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (ba, ba), "{p}");
    }

    // The same through the file API (the agent writes as the sandbox's
    // root) and for a user of the image.
    let f = put_file(&api, &a.id, "/workspace/api.txt", "", b"via api".to_vec());
    assert_eq!(f.status, 201, "{}", f.text);
    let m = std::fs::metadata(upper.join("workspace/api.txt")).unwrap();
    assert_eq!(m.uid(), ba);
    let r = api.exec(
        &a.id,
        json!({"cmd": ["sh", "-c", "id -u; touch /tmp/by-nobody"], "user": "65534"}),
    );
    assert_eq!(r["stdout"], "65534\n", "{r}");
    let m = std::fs::metadata(upper.join("tmp/by-nobody")).unwrap();
    assert_eq!(m.uid(), ba + 65534);

    // The range goes with the sandbox: a restart of the daemon keeps it.
    d.restart();
    let api = d.api();
    let again = api.sh(&a.id, "cat /proc/self/uid_map");
    assert!(
        again["stdout"].as_str().unwrap().contains(&ba.to_string()),
        "{again}"
    );
    let r = api.sh(&a.id, "touch /after-restart && stat -c %u /after-restart");
    assert_eq!(r["stdout"], "0\n", "{r}");
    drop((a, b));
}

/// A capability inside does nothing outside the sandbox's namespaces: in
/// a host directory bound in, its root is the directory's owner and no
/// one else; with CAP_DAC_OVERRIDE and CAP_CHOWN it still cannot read
/// another host user's file there nor take it over. (With `--userns off`
/// it reads it.)
#[test]
fn capabilities_inside_do_nothing_on_host_files() {
    let root = std::env::temp_dir().join(format!("paddock-userns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // The host dir holds a file of another host user, 0600.
    let private = shared.join("private.txt");
    std::fs::write(&private, "not yours\n").unwrap();
    std::os::unix::fs::chown(&private, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let d = daemon(&["--allow-host-mount", root.to_str().unwrap()]);
    let api = d.api();
    let sb = Sb::new(
        &api,
        json!({"mounts": [{"path": "/mnt/h", "origin": shared.to_str().unwrap(),
                           "acls": [{"path": "/mnt/h/**", "access": "rw"}]}]}),
    );
    let r = sb.sh(
        "cat /mnt/h/private.txt; echo rc=$?; chown 0:0 /mnt/h/private.txt; echo rc=$?; \
         chmod 666 /mnt/h/private.txt; echo rc=$?",
    );
    let out = r["stdout"].as_str().unwrap();
    assert!(!out.contains("not yours"), "read a host file: {r}");
    assert_eq!(out.matches("rc=1").count(), 3, "{r}");
    let m = std::fs::metadata(&private).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (4242, 0o600));
    // As the directory's owner (the host's root here), it writes there.
    let r = sb.sh("echo new > /mnt/h/new.txt && stat -c %u /mnt/h/new.txt /mnt/h/private.txt");
    assert_eq!(r["stdout"], "0\n65534\n", "{r}");
    assert_eq!(std::fs::metadata(shared.join("new.txt")).unwrap().uid(), 0);
    drop(sb);
    let _ = std::fs::remove_dir_all(&root);
}

/// Per-user kernel limits are per sandbox: one sandbox holding every
/// inotify instance its user may have leaves another's untouched.
#[test]
fn one_sandbox_exhausting_inotify_leaves_another_untouched() {
    let d = daemon(&[]);
    let api = d.api();
    let hog = Sb::new(&api, json!({}));
    let other = Sb::new(&api, json!({}));
    // Holds instances until none is left, then says how many it got.
    let script = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 100000:
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
open('/tmp/count', 'w').write(str(len(fds)))
sys.stdout.flush()
time.sleep(600)
"#;
    put_file(&api, &hog.id, "/tmp/hog.py", "", script.as_bytes().to_vec());
    hog.sh("(python3 /tmp/hog.py >/dev/null 2>&1 &) ; true");
    let n: u64 = eventually(30, || {
        let r = hog.sh("cat /tmp/count 2>/dev/null");
        r["stdout"].as_str().unwrap().trim().parse().ok()
    });
    assert!(n >= 1, "the hog got no instance at all");
    let probe = r#"python3 -c "
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
print('ok' if fd >= 0 else 'errno %d' % ctypes.get_errno())
""#;
    let r = hog.sh(probe);
    assert_ne!(r["stdout"], "ok\n", "the hog's limit is not reached: {r}");
    let r = other.sh(probe);
    assert_eq!(
        r["stdout"], "ok\n",
        "the neighbour lost inotify ({n} held next door): {r}"
    );
}

/// The sandbox's root binds low ports in its network namespace (which its
/// user namespace owns), and its sysfs is its own: the host's interfaces
/// are not listed.
#[test]
fn low_ports_and_its_own_sysfs() {
    let d = daemon(&[]);
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    let r = sb.sh(
        "python3 -c \"import socket; s=socket.socket(); s.bind(('0.0.0.0', 80)); print('bound')\"; \
         ls /sys/class/net | tr '\\n' ' '",
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("bound\n"), "{r}");
    let nets: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(nets.contains(&"eth0") && nets.contains(&"lo"), "{r}");
    assert!(
        !nets
            .iter()
            .any(|n| n.starts_with("pv") || *n == d.bridge.as_str()),
        "the host's interfaces are visible: {r}"
    );
}
