//! The SSH gateway (`paddock serve --ssh-listen`) with the real OpenSSH
//! client: who gets in (account-wide keys, keys for one sandbox, nobody
//! else), commands with their exit status and streams, a PTY shell with a
//! resize, scp and sftp, and `ssh -L` into the box (and no further).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Rig {
    d: Daemon,
    port: u16,
    dir: PathBuf,
}

fn rig() -> Rig {
    let port = free_port();
    let d = Daemon::start_with("127.0.0.1", &["--ssh-listen", &format!("127.0.0.1:{port}")]);
    let dir = std::env::temp_dir().join(format!("paddock-ssh-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Rig { d, port, dir }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An API key acting as `name`.
fn api_key(d: &Daemon, name: &str) -> String {
    let out = d.cli(&["keys", "create", "--name", name]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("pdk_"))
        .unwrap()
        .to_string()
}

impl Rig {
    /// A new ed25519 key pair; the private key's path.
    fn keygen(&self, name: &str) -> PathBuf {
        let k = self.dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&k)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        k
    }

    fn pubkey(k: &Path) -> String {
        std::fs::read_to_string(k.with_extension("pub")).unwrap()
    }

    /// Registers `k` for the principal of `api`: account-wide, or for
    /// `sandbox`.
    fn register(api: &Api, k: &Path, sandbox: Option<&str>) -> Value {
        let mut body = json!({"public_key": Self::pubkey(k)});
        if let Some(s) = sandbox {
            body["sandbox"] = json!(s);
        }
        let r = api.post("/ssh-keys", body);
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }

    fn ssh_cmd(&self, key: &Path, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(key)
            .args(["-p", &self.port.to_string()])
            .args(common_ssh_opts())
            .arg(format!("{user}@127.0.0.1"))
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ssh -i key user@gateway args...` with `stdin`.
    fn ssh(&self, key: &Path, user: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = self.ssh_cmd(key, user);
        c.args(args);
        run_with_stdin(c, stdin)
    }
}

fn common_ssh_opts() -> [&'static str; 10] {
    [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
    ]
}

fn run_with_stdin(mut c: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut inp = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = inp.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Logged in: the command ran (exit 0, `ok` printed).
fn opens(r: &Rig, key: &Path, user: &str) -> bool {
    let out = r.ssh(key, user, &["echo", "ok"], b"");
    let ok = out.status.success() && text(&out.stdout) == "ok\n";
    if !ok {
        assert_eq!(out.status.code(), Some(255), "{user}: {out:?}");
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "{user}: {out:?}"
        );
    }
    ok
}

/// Who gets in: an account-wide key opens all its owner's boxes (by id
/// or by key), a key registered for one box opens that box only, another
/// principal's key or an unregistered one opens nothing; only public keys
/// are asked for. Each refusal is an attack that worked without its
/// check; refusals land in the audit log.
#[test]
fn ssh_logins_open_only_what_the_key_was_registered_for() {
    let r = rig();
    let (alice, bob) = (
        r.d.api_with_key(&api_key(&r.d, "alice")),
        r.d.api_with_key(&api_key(&r.d, "bob")),
    );
    let a1 = alice.create(json!({"key": "a-one"}));
    let a2 = alice.create(json!({"key": "a-two"}));
    let b1 = bob.create(json!({}));
    let (ka, ks, kb, kx) = (
        r.keygen("alice-all"),
        r.keygen("alice-a1"),
        r.keygen("bob-all"),
        r.keygen("stranger"),
    );
    // Nothing registered yet: nothing opens.
    assert!(!opens(&r, &ka, &a1));
    let reg = Rig::register(&alice, &ka, None);
    assert_eq!(reg["name"], "alice-all");
    assert!(reg["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    Rig::register(&alice, &ks, Some(&a1));
    Rig::register(&bob, &kb, None);

    // Alice's account-wide key: both her boxes, by id or by key.
    assert!(opens(&r, &ka, &a1));
    assert!(opens(&r, &ka, &a2));
    assert!(opens(&r, &ka, "a-two"));
    // Attack: alice's account-wide key on bob's box.
    assert!(!opens(&r, &ka, &b1));
    // Attack: bob's key on alice's box.
    assert!(!opens(&r, &kb, &a1));
    assert!(opens(&r, &kb, &b1));
    // Attack: the key registered for a1 on a2 (same owner).
    assert!(opens(&r, &ks, &a1));
    assert!(!opens(&r, &ks, &a2));
    assert!(!opens(&r, &ks, "a-two"));
    // Attack: a key nobody registered.
    assert!(!opens(&r, &kx, &a1));
    // Garbage as the user name.
    assert!(!opens(&r, &ka, "no-such-box"));
    assert!(!opens(&r, &ka, "00000000-0000-0000-0000-000000000000"));

    // Only public keys are offered as a way in (no password, no
    // keyboard-interactive).
    let out = r.ssh(&kx, &a1, &["-v", "true"], b"");
    let err = text(&out.stderr);
    assert!(
        err.contains("Authentications that can continue: publickey\n")
            || err.contains("Authentications that can continue: publickey\r\n"),
        "{err}"
    );

    // The keys through the API and the CLI.
    let ls = alice.get("/ssh-keys");
    assert_eq!(
        ls.body["ssh_keys"].as_array().unwrap().len(),
        2,
        "{}",
        ls.text
    );
    // (Two keys made within one millisecond list in either order.)
    assert!(
        ls.body["ssh_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["sandbox"] == json!(a1)),
        "{}",
        ls.text
    );
    let bad = alice.post(
        "/ssh-keys",
        json!({"public_key": "ssh-ed25519 AAAA-not-a-key"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("public_key"), "{}", bad.text);
    let foreign = alice.post(
        "/ssh-keys",
        json!({"public_key": Rig::pubkey(&kx), "sandbox": b1}),
    );
    assert_eq!(foreign.status, 400, "{}", foreign.text);
    assert!(foreign.text.contains("sandbox"), "{}", foreign.text);
    // The CLI (the operator, here): add, list, remove.
    let pubfile = kx.with_extension("pub");
    let cli = r.d.cli_ok(&[
        "ssh-keys",
        "add",
        "--name",
        "ops",
        pubfile.to_str().unwrap(),
    ]);
    assert_eq!(cli.trim().len(), 36, "{cli}");
    let cli = r.d.cli_ok(&["ssh-keys", "ls"]);
    assert!(cli.contains("ops") && cli.contains("SHA256:"), "{cli}");
    r.d.cli_ok(&["ssh-keys", "rm", "ops"]);
    assert!(!r.d.cli_ok(&["ssh-keys", "ls"]).contains("ops"));

    // Deleting a key closes the door.
    let id = ls.body["ssh_keys"][1]["id"].as_str().unwrap().to_string();
    assert_eq!(alice.delete(&format!("/ssh-keys/{id}")).status, 204);
    assert!(!opens(&r, &ks, &a1));

    // Refused logins are in the audit log (the operator's view).
    let audit = r.d.api().get("/audit?action=ssh.login&limit=1000");
    let refused = audit.body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", audit.text))
        .iter()
        .filter(|x| x["outcome"] != "ok")
        .count();
    assert!(refused >= 6, "{}", audit.text);
    // A destroyed box opens no more.
    alice.destroy(&a2);
    assert!(!opens(&r, &ka, &a2));
}

/// `ssh box 'cmd'`: its exit status, stdout and stderr apart, stdin
/// piped through with its end; a PTY only when asked for.
#[test]
fn ssh_commands_keep_exit_status_streams_and_stdin() {
    let r = rig();
    let api = r.d.api();
    let id = api.create(json!({}));
    let k = r.keygen("me");
    Rig::register(&api, &k, None);

    let out = r.ssh(&k, &id, &["exit 3"], b"");
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let out = r.ssh(&k, &id, &["echo out; echo err >&2; tty || true"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "out\nnot a tty\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = r.ssh(&k, &id, &["cat"], b"hi\n");
    assert_eq!(text(&out.stdout), "hi\n", "{out:?}");

    // A few MiB through stdin and back: every byte, in order.
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let out = r.ssh(&k, &id, &["sha256sum"], &data);
    assert!(out.status.success(), "{out:?}");
    let mut sum = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        sum.stdin.take().unwrap().write_all(&data).unwrap();
    }
    let want = text(&sum.wait_with_output().unwrap().stdout);
    assert_eq!(text(&out.stdout), want);

    // A signal's exit: 128+n, as a shell reports it.
    let out = r.ssh(&k, &id, &["kill -9 $$"], b"");
    assert_eq!(out.status.code(), Some(137), "{out:?}");

    // The box's own environment: its user, its files.
    let out = r.ssh(
        &k,
        &id,
        &["id -u; cat /etc/hostname >/dev/null && echo seen"],
        b"",
    );
    assert_eq!(text(&out.stdout), "0\nseen\n", "{out:?}");

    // -t: a PTY (stdout and stderr as one terminal).
    let out = r.ssh(&k, &id, &["-tt", "tty"], b"");
    assert!(text(&out.stdout).starts_with("/dev/pts/"), "{out:?}");

    // The command ran as the box's owner through the engine: audited.
    let audit = api.get(&format!(
        "/audit?sandbox={id}&action=sandbox.exec&limit=100"
    ));
    assert!(audit.text.contains("\"via\":\"ssh\""), "{}", audit.text);
}

/// `ssh box`: a login shell on a PTY of the client's size; a resize of
/// the client's terminal reaches it (`window-change`).
#[test]
fn ssh_shell_has_a_pty_that_follows_resizes() {
    let r = rig();
    let api = r.d.api();
    let id = api.create(json!({}));
    let k = r.keygen("me");
    Rig::register(&api, &k, None);
    // The client in a terminal of 30x100 (python's pty), then 50x132.
    let script = r#"
import os, pty, sys, time, struct, fcntl, termios, signal, select
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
def size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
size(30, 100)
out = b""
def read_until(marker, secs=20):
    global out
    end = time.time() + secs
    while marker not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return marker in out
def send(s):
    os.write(fd, s.encode())
send("echo READY$((1+1))\n")
read_until(b"READY2")
send("tty; stty size; echo SIZE1$((2+2))\n")
read_until(b"SIZE14")
size(50, 132)
os.kill(pid, signal.SIGWINCH)
time.sleep(1)
send("stty size; echo SIZE2$((3+3))\n")
read_until(b"SIZE26")
send("exit 7\n")
read_until(b"\x00", 5)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\nEXIT %d\n" % os.waitstatus_to_exitcode(status))
"#;
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).arg("ssh");
    let ssh = r.ssh_cmd(&k, &id);
    c.args(ssh.get_args()).env_remove("SSH_AUTH_SOCK");
    let out = c.output().unwrap();
    let o = text(&out.stdout);
    assert!(o.contains("/dev/pts/"), "{o}");
    assert!(o.contains("30 100"), "{o}");
    assert!(o.contains("50 132"), "{o}");
    assert!(o.contains("EXIT 7"), "{o}");
}

/// scp up and down (SFTP underneath, through the engine's file calls),
/// and an sftp batch: mkdir, put, ls, rename, rm.
#[test]
fn scp_and_sftp_move_files_both_ways() {
    let r = rig();
    let api = r.d.api();
    let id = api.create(json!({}));
    let k = r.keygen("me");
    Rig::register(&api, &k, None);
    let opts = |c: &mut Command| {
        c.arg("-i")
            .arg(&k)
            .args(["-P", &r.port.to_string()])
            .args(common_ssh_opts())
            .env_remove("SSH_AUTH_SOCK");
    };
    let data: Vec<u8> = (0..(5u32 << 20) + 12345)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let up = r.dir.join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let mut c = Command::new("scp");
    opts(&mut c);
    c.arg(&up).arg(format!("{id}@127.0.0.1:/tmp/up.bin"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (status, body) = get_file(&api, &id, "/tmp/up.bin");
    assert_eq!(status, 200);
    assert!(body == data, "the upload's bytes differ");
    // Down again, from a relative path (the box's working directory).
    api.sh(&id, "cp /tmp/up.bin ./rel.bin");
    let down = r.dir.join("down.bin");
    let mut c = Command::new("scp");
    opts(&mut c);
    c.arg(format!("{id}@127.0.0.1:rel.bin")).arg(&down);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::read(&down).unwrap() == data,
        "the download's bytes differ"
    );
    // A file that is not there: scp fails, saying so.
    let mut c = Command::new("scp");
    opts(&mut c);
    c.arg(format!("{id}@127.0.0.1:/nonexistent")).arg(&down);
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("No such file"), "{out:?}");

    let small = r.dir.join("small.txt");
    std::fs::write(&small, "hello sftp\n").unwrap();
    let batch = r.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir /tmp/sd\nput {} /tmp/sd/a.txt\nls -l /tmp/sd\nrename /tmp/sd/a.txt /tmp/sd/b.txt\nls /tmp/sd\nget /tmp/sd/b.txt {}\nrm /tmp/sd/b.txt\nrmdir /tmp/sd\n",
            small.display(),
            r.dir.join("back.txt").display()
        ),
    )
    .unwrap();
    let mut c = Command::new("sftp");
    opts(&mut c);
    c.arg("-b").arg(&batch).arg(format!("{id}@127.0.0.1"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let o = text(&out.stdout);
    assert!(o.contains("a.txt") && o.contains("b.txt"), "{o}");
    assert_eq!(
        std::fs::read_to_string(r.dir.join("back.txt")).unwrap(),
        "hello sftp\n"
    );
    let gone = api.sh(&id, "test -e /tmp/sd && echo there || echo gone");
    assert_eq!(gone["stdout"], "gone\n", "{gone}");
}

/// `ssh -L` reaches a port of the box; a forward to anything else (the
/// host, another principal's box) is refused even with a valid login.
#[test]
fn ssh_local_forward_reaches_the_box_and_nothing_else() {
    let r = rig();
    let (alice, bob) = (
        r.d.api_with_key(&api_key(&r.d, "alice")),
        r.d.api_with_key(&api_key(&r.d, "bob")),
    );
    let a = alice.create_sandbox(json!({}));
    let b = bob.create_sandbox(json!({}));
    let k = r.keygen("alice");
    Rig::register(&alice, &k, None);
    for (api, id, page) in [(&alice, a.id, "alice's page"), (&bob, b.id, "bob's page")] {
        let id = id.to_string();
        api.sh(
            &id,
            &format!("mkdir -p /srv && echo \"{page}\" > /srv/index.html && cd /srv && setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &"),
        );
        eventually(20, || {
            let v = api.sh(&id, "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/\").read().decode())' 2>/dev/null");
            (v["exit_code"] == 0).then_some(())
        });
    }
    let forward = |target: &str| -> (std::process::Child, u16) {
        let lport = free_port();
        let mut c = r.ssh_cmd(&k, &a.id.to_string());
        c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("{lport}:{target}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        (c.spawn().unwrap(), lport)
    };
    let fetch = |lport: u16| -> Option<String> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        http.get(format!("http://127.0.0.1:{lport}/"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    };
    let (mut child, lport) = forward("127.0.0.1:8000");
    let page = eventually(20, || fetch(lport));
    assert_eq!(page, "alice's page\n");
    let _ = child.kill();
    let _ = child.wait();

    // Attack: through alice's login, bob's box by its address, and the
    // daemon's API on the host.
    let bob_ip = b.ip.clone().expect("bob's box has an address");
    let api_port = r.d.listen.rsplit(':').next().unwrap().to_string();
    for target in [
        format!("{bob_ip}:8000"),
        format!("{}:{api_port}", r.d.gateway),
        "example.com:80".to_string(),
    ] {
        let (mut child, lport) = forward(&target);
        // The listener is up at once; each connection is refused by the
        // gateway.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = None;
        while Instant::now() < deadline {
            if let Some(p) = fetch(lport) {
                got = Some(p);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got, None, "{target}: reached through the gateway");
    }
    let _ = bob;
}

/// Bytes that are not SSH, and a client that goes away mid-handshake,
/// leave the gateway serving.
#[test]
fn ssh_gateway_survives_garbage() {
    use std::io::{Read, Write};
    let r = rig();
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 70000][..],
        b"SSH-2.0-x\r\n\xff\xff\xff\xff\x00",
    ] {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", r.port)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(junk);
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    }
    let api = r.d.api();
    let id = api.create(json!({}));
    let k = r.keygen("me");
    Rig::register(&api, &k, None);
    assert!(opens(&r, &k, &id));
}
