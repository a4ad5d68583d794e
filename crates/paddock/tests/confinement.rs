//! What a sandbox's root cannot do to the kernel or read of the host, tried
//! as an attacker would: new namespaces (a user namespace of its own gave
//! full capabilities, and nf_tables with them), io_uring and system calls
//! the seccomp profile does not name; and the host's `/etc` (the daemon's
//! config with its registry passwords, other services' secrets, host
//! accounts). And what programs need still works.

mod common;
use common::*;
use serde_json::{json, Value};

/// Runs `script` with the sandbox's python3 (the host's /usr) and parses
/// the JSON object it prints last.
fn probe(sb: &Sb, script: &str) -> Value {
    let r = sb.api.exec(
        &sb.id,
        json!({"cmd": ["python3", "-c", script], "timeout": 30}),
    );
    let out = r["stdout"].as_str().unwrap();
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("probe output ({e}): {r}"))
}

/// Calls system calls through libc's `syscall` and reports, for each, its
/// result and errno.
const SYSCALL_PROBE: &str = r#"
import ctypes, json, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno()]
out = {}
SIGCHLD, NEWUSER, NEWNET = 17, 0x10000000, 0x40000000

def reap(pid):
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)

# clone(2) into a new user and network namespace: with uid 0 mapped to
# itself the child holds every capability there, and nf_tables with them.
r = call(56, NEWUSER | NEWNET | SIGCHLD, 0, 0, 0, 0)
if r[0] == 0:
    try:
        for f, v in [("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")]:
            with open("/proc/self/" + f, "w") as fh:
                fh.write(v)
        os.execv("/usr/sbin/nft", ["nft", "add", "table", "ip", "paddock_escape"])
    finally:
        os._exit(99)
if r[0] > 0:
    r.append(reap(r[0]))
out["clone_newuser"] = r

# clone3(2) with the same flags (struct clone_args, version 0: 64 bytes).
args = ctypes.create_string_buffer(struct.pack("<8Q", NEWUSER | NEWNET, 0, 0, 0, SIGCHLD, 0, 0, 0))
r = call(435, ctypes.addressof(args), 64)
if r[0] == 0:
    os._exit(0)
if r[0] > 0:
    r.append(reap(r[0]))
out["clone3"] = r

# A plain clone (a fork) is allowed.
r = call(56, SIGCHLD, 0, 0, 0, 0)
if r[0] == 0:
    os._exit(7)
if r[0] > 0:
    r.append(reap(r[0]))
out["clone_plain"] = r

out["unshare_newuser"] = call(272, NEWUSER)
params = ctypes.create_string_buffer(120)
out["io_uring_setup"] = call(425, 8, ctypes.addressof(params))
# kcmp(2): the kernel has it, the profile does not name it.
out["kcmp"] = call(312, os.getpid(), os.getpid(), 0, 0, 0)
# listmount(2) (Linux 6.8): newer than the profile's libseccomp.
out["listmount"] = call(458, 0, 0, 0, 0)
# No such system call anywhere.
out["nr_1000"] = call(1000)
print(json.dumps(out))
"#;

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;

#[test]
fn namespaces_io_uring_and_unnamed_syscalls_are_refused() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let out = probe(&sb, SYSCALL_PROBE);
    println!("{out}");
    let refused = |name: &str, errnos: &[i64]| {
        let r = &out[name];
        assert_eq!(r[0], -1, "{name} was not refused: {out}");
        let e = r[1].as_i64().unwrap();
        assert!(
            errnos.contains(&e),
            "{name}: errno {e}, want {errnos:?}: {out}"
        );
    };
    refused("clone_newuser", &[EPERM]);
    refused("clone3", &[ENOSYS]);
    refused("unshare_newuser", &[EPERM]);
    refused("io_uring_setup", &[EPERM]);
    refused("kcmp", &[EPERM, ENOSYS]);
    refused("listmount", &[EPERM, ENOSYS]);
    refused("nr_1000", &[EPERM, ENOSYS]);
    assert_eq!(out["clone_plain"][2], 7, "a fork works: {out}");

    // The same from the shell, with util-linux's unshare (unshare(2)).
    let r = sb.sh("unshare -Urn nft add table ip paddock_escape && echo ESCAPED");
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(!r["stdout"].as_str().unwrap().contains("ESCAPED"), "{r}");
}

/// System calls that programs, the agent and the tests' tools need, under
/// the profile.
const NEEDED_PROBE: &str = r#"
import ctypes, json, os, select, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno()]
out = {}
# subprocess (vfork/clone after clone3's ENOSYS), threads.
out["subprocess"] = subprocess.run(["sh", "-c", "echo ok"], capture_output=True).stdout.decode()
t = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
t.start(); t.join()
with open("/tmp/falloc", "wb") as f:
    os.posix_fallocate(f.fileno(), 0, 1 << 20)
    out["fallocate"] = os.fstat(f.fileno()).st_size
a, b = socket.socketpair()
socket.send_fds(a, [b"fd"], [b.fileno()])
msg, fds, _, _ = socket.recv_fds(b, 16, 1)
out["scm_rights"] = len(fds)
out["memfd"] = os.memfd_create("x") >= 0
out["pidfd"] = os.pidfd_open(os.getpid()) >= 0
path = ctypes.create_string_buffer(b"/")
out["faccessat2"] = call(439, -100, ctypes.addressof(path), 0, 0x200)
out["close_range"] = call(436, 1000, 1010, 0)
statx = ctypes.create_string_buffer(256)
out["statx"] = call(332, -100, ctypes.addressof(path), 0, 0x7ff, ctypes.addressof(statx))
ep = select.epoll()
events = ctypes.create_string_buffer(12)
zero = ctypes.create_string_buffer(16)
out["epoll_pwait2"] = call(441, ep.fileno(), ctypes.addressof(events), 1, ctypes.addressof(zero), 0, 0)
print(json.dumps(out))
"#;

#[test]
fn what_programs_need_is_allowed() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let out = probe(&sb, NEEDED_PROBE);
    println!("{out}");
    assert_eq!(out["subprocess"], "ok\n", "{out}");
    assert_eq!(out["thread"], "ran", "{out}");
    assert_eq!(out["fallocate"], 1 << 20, "{out}");
    assert_eq!(out["scm_rights"], 1, "{out}");
    assert_eq!(out["memfd"], true, "{out}");
    assert_eq!(out["pidfd"], true, "{out}");
    for call in ["faccessat2", "close_range", "statx", "epoll_pwait2"] {
        assert_eq!(out[call], json!([0, 0]), "{call}: {out}");
    }
    // A busybox applet, bash and sh.
    let r = sb.sh("busybox echo bb && bash -c 'echo $((6*7))' && sh -c 'echo ok'");
    assert_eq!(r["stdout"], "bb\n42\nok\n", "{r}");
}

/// Host files the test makes, removed when dropped.
struct HostFiles(Vec<std::path::PathBuf>);

impl Drop for HostFiles {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
        }
    }
}

fn secret_file(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn host_etc_secrets_are_not_visible() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut made = HostFiles(Vec::new());
    let marker = std::path::PathBuf::from(format!("/etc/paddock-test-{tag}"));
    secret_file(&marker, &format!("marker-{tag}"));
    made.0.push(marker.clone());
    let conf_dir = std::path::Path::new("/etc/paddock");
    if !conf_dir.exists() {
        std::fs::create_dir(conf_dir).unwrap();
        made.0.push(conf_dir.to_path_buf());
    }
    let conf = conf_dir.join(format!("{tag}.toml"));
    secret_file(&conf, &format!("password = \"{tag}\"\n"));
    made.0.push(conf.clone());

    // A daemon started after the files exist, and the shared one.
    let d = Daemon::start();
    for api in [d.api(), shared().api()] {
        let sb = Sb::new(&api, json!({}));
        for p in [marker.to_str().unwrap(), conf.to_str().unwrap()] {
            let r = sb.sh(&format!("cat {p}"));
            assert_ne!(r["exit_code"], 0, "{p} is readable: {r}");
            assert!(!r["stdout"].as_str().unwrap().contains(&tag), "{r}");
        }
        // Nothing of the daemon's config directory, nor other secrets.
        let r = sb.sh(&format!(
            "ls -a /etc/paddock /etc/shadow /etc/gshadow /etc/ssh /etc/ssl/private /etc/sudoers /etc/postgresql /etc/pip.conf /etc/npmrc; grep -rl {tag} /etc"
        ));
        assert_eq!(r["stdout"], "", "{r}");
        // Host accounts beyond the base ones are not listed.
        let passwd = sb.sh("cat /etc/passwd")["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        for line in std::fs::read_to_string("/etc/passwd").unwrap().lines() {
            let f: Vec<&str> = line.split(':').collect();
            let uid: u32 = f.get(2).and_then(|u| u.parse().ok()).unwrap_or(0);
            if (100..65534).contains(&uid) {
                assert!(
                    !passwd.lines().any(|l| l.starts_with(&format!("{}:", f[0]))),
                    "host account {} is visible:\n{passwd}",
                    f[0]
                );
            }
        }

        // What programs need is there.
        let ok = |cmd: &str, want: &str| {
            let r = sb.sh(cmd);
            assert_eq!(r["exit_code"], 0, "{cmd}: {r}");
            assert!(r["stdout"].as_str().unwrap().contains(want), "{cmd}: {r}");
        };
        ok("python3 -c 'import ssl, json; print(1)'", "1");
        ok(
            "python3 -c 'import ssl; p = ssl.get_default_verify_paths(); print(open(p.openssl_cafile).read().count(\"BEGIN CERT\") > 10)'",
            "True",
        );
        ok("id", "uid=0(root) gid=0(root)");
        ok("id nobody", "uid=65534(nobody)");
        ok("getent passwd root", "root:x:0:0:");
        ok("getent group nogroup", "nogroup:x:65534:");
        ok("ls /etc/ssl/certs | head", "");
        ok(
            "test -s /etc/ssl/certs/ca-certificates.crt && echo bundle",
            "bundle",
        );
        ok("sh -c 'echo ok'", "ok");
        ok("bash -lc 'echo login-ok'", "login-ok");
        ok("echo x | awk '{print \"awk-\" $1}'", "awk-x");
        ok("cat /etc/os-release", "ID=");
        ok("ldconfig -p | head -2", "libs found");
        ok("cat /etc/hostname", "sb-");
        ok("cat /etc/hosts", "localhost");
        ok("cat /etc/resolv.conf", "nameserver");
    }
    drop(made);
}
