//! The CLI, as people and scripts use it.

mod common;
use common::*;
use std::process::Command;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn create_ls_exec_cp_rm() {
    let d = shared();
    let id = ok(&d.cli(&[
        "create",
        "--label",
        "t=cli",
        "--memory",
        "128",
        "--env",
        "GREETING=hi",
    ]))
    .trim()
    .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let table = ok(&d.cli(&["ls", "--label", "t=cli"]));
    assert!(
        table.contains("STATE") && table.contains(&id) && table.contains("running"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d.cli(&["--json", "ls", "--label", "t=cli"]))).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["config"]["memory_mb"], 128);
    let insp: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["inspect", &id]))).unwrap();
    assert_eq!(insp["config"]["env"]["GREETING"], "hi");
    // The backend it runs on is one `paddock backends` lists, as the default.
    let backend = insp["backend"].as_str().unwrap().to_string();
    let listed = ok(&d.cli(&["backends"]));
    let row = listed
        .lines()
        .find(|l| l.contains(&backend))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains("container") && row.contains("yes") && row.contains("pause"),
        "{listed}"
    );
    let bj: serde_json::Value = serde_json::from_str(&ok(&d.cli(&["--json", "backends"]))).unwrap();
    assert!(
        bj.as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == backend.as_str()),
        "{bj}"
    );

    // exec prints the output and exits with the command's code.
    let out = d.cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo $GREETING; echo e >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");
    assert_eq!(d.cli(&["exec", &id, "--", "true"]).status.code(), Some(0));
    // stdin is passed through.
    let mut child = Command::new(bin())
        .args(["exec", &id, "--", "wc", "-c"])
        .env("PADDOCK_HOST", &d.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"12345").unwrap();
    assert_eq!(
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim(),
        "5"
    );

    // cp both ways.
    let dir = std::env::temp_dir().join(format!("paddock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    ok(&d.cli(&[
        "cp",
        src.to_str().unwrap(),
        &format!("{id}:/workspace/in.txt"),
    ]));
    assert_eq!(
        ok(&d.cli(&["exec", &id, "--", "cat", "/workspace/in.txt"])),
        "copied in\n"
    );
    let back = dir.join("back.txt");
    ok(&d.cli(&[
        "cp",
        &format!("{id}:/workspace/in.txt"),
        back.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    let _ = std::fs::remove_dir_all(&dir);

    // Errors are clear and exit non-zero.
    let out = d.cli(&["exec", "00000000-0000-0000-0000-000000000000", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["create", "--memory", "-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory_mb"));
    let out = Command::new(bin())
        .args(["--host", "http://127.0.0.1:1", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));

    let events = ok(&d.cli(&["events", &id, "--limit", "2"]));
    assert!(
        events.contains("sandbox.created") && events.contains("sandbox.started"),
        "{events}"
    );
    let m = ok(&d.cli(&["--json", "metrics", &id]));
    assert!(m.contains("memory_limit_bytes"));

    assert_eq!(ok(&d.cli(&["rm", &id])).trim(), id);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d.cli(&["--json", "ls", "--label", "t=cli"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 0);
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (scripts/deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn shell_is_a_real_terminal() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, serde_json::json!({}));
    let session = format!("pdsh{}", std::process::id());
    let cmd = format!(
        "PADDOCK_HOST={} {} shell {} --shell /bin/sh",
        d.url,
        bin(),
        sb.id
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    let screen = |s: &str| tmux(&["capture-pane", "-p", "-t", s]);
    eventually(15, || screen(&session).contains('#').then_some(()));
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "stty size; tty; echo $((6*7))",
        "Enter",
    ]);
    eventually(10, || {
        let s = screen(&session);
        (s.contains("40 120") && s.contains("/dev/pts/") && s.contains("42")).then_some(())
    });
    // The window changes size: the shell's terminal follows (SIGWINCH).
    tmux(&["resize-window", "-t", &session, "-x", "100", "-y", "30"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "clear; stty size", "Enter"]);
    eventually(10, || screen(&session).contains("30 100").then_some(()));
    // Raw mode: Ctrl-C goes to the sandbox, not to the CLI.
    tmux(&["send-keys", "-t", &session, "sleep 100", "Enter"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux(&["send-keys", "-t", &session, "C-c", ""]);
    tmux(&["send-keys", "-t", &session, "echo after-interrupt", "Enter"]);
    eventually(10, || {
        screen(&session).contains("after-interrupt\n").then_some(())
    });
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    eventually(10, || (!tmux(&["ls"]).contains(&session)).then_some(()));
}

/// `paddock bench` measures Paddock and its peers in one run: the exec
/// round trip of the peers' own command and of a bare `true`, each alone on the host,
/// the same figures of a peer with Paddock's ratio (and only the figures
/// asked for; its output counted as it streams), and a note for a missing
/// peer.
#[test]
fn bench_measures_paddock_next_to_peers() {
    let d = shared();
    let out = Command::new(bin())
        .args([
            "--json",
            "bench",
            "--only",
            "exec,ws,files",
            "--execs",
            "5",
            "--creates",
            "1",
            "--file-mib",
            "1",
            "--peers",
            "crun,no-such-runtime",
        ])
        .env("PADDOCK_HOST", &d.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("peer no-such-runtime skipped: not installed"),
        "{stderr}"
    );
    let figures: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |figure: &str, peer: &str| {
        figures
            .iter()
            .find(|f| f["figure"] == figure && f["peer"] == peer)
            .unwrap_or_else(|| panic!("no {figure} for {peer} in {figures:?}"))
            .clone()
    };
    // The peers' own `true` (their bundle is the host's busybox), in the
    // sandbox and alone on the host.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("busybox-static on the host (scripts/deps.sh installs it)");
    let ours = find("exec_round_trip", "paddock");
    assert_eq!(ours["command"], format!("{busybox} true"), "{ours}");
    assert_eq!(ours["n"], 5);
    let p50 = ours["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= ours["p99"].as_f64().unwrap(), "{ours}");
    let alone = find("exec_command_alone", "host");
    assert_eq!(alone["command"], ours["command"], "{alone}");
    assert!(alone["p50"].as_f64().unwrap() > 0.0, "{alone}");
    assert!(alone.get("paddock_advantage").is_none(), "{alone}");
    let crun = find("exec_round_trip", "crun");
    let x = crun["paddock_advantage"].as_f64().unwrap();
    let expect = crun["p50"].as_f64().unwrap() / p50;
    assert!((x - expect).abs() < 1e-9, "{crun} against {ours}");
    // And a bare `true` (no libc), the exec path alone: run to exit 0 in
    // the sandbox (the bench fails otherwise), alone on the host and in
    // the peer, with its own ratio.
    let bare = find("exec_round_trip_bare", "paddock");
    assert_eq!(bare["command"], "bare true", "{bare}");
    assert_eq!(bare["n"], 5);
    let alone = find("exec_command_alone_bare", "host");
    assert!(alone["p50"].as_f64().unwrap() > 0.0, "{alone}");
    assert!(alone.get("paddock_advantage").is_none(), "{alone}");
    let crun = find("exec_round_trip_bare", "crun");
    let expect = crun["p50"].as_f64().unwrap() / bare["p50"].as_f64().unwrap();
    let x = crun["paddock_advantage"].as_f64().unwrap();
    assert!((x - expect).abs() < 1e-9, "{crun} against {bare}");
    // A peer measures what --only asks for, and a missing one nothing.
    let theirs: Vec<_> = figures
        .iter()
        .filter(|f| f["peer"] != "paddock" && f["peer"] != "host")
        .map(|f| (f["peer"].as_str().unwrap(), f["figure"].as_str().unwrap()))
        .collect();
    assert_eq!(
        theirs,
        [
            ("crun", "exec_round_trip"),
            ("crun", "exec_round_trip_bare"),
            ("crun", "exec_stdout"),
            ("crun", "upload"),
            ("crun", "download"),
        ],
        "{figures:?}"
    );
    for figure in ["exec_stdout", "upload", "download"] {
        let (ours, theirs) = (find(figure, "paddock"), find(figure, "crun"));
        for f in [&ours, &theirs] {
            assert!(f["p50"].as_f64().unwrap() > 0.0, "{f}");
        }
        // Throughput: how many times more per second.
        let x = ours["p50"].as_f64().unwrap() / theirs["p50"].as_f64().unwrap();
        assert!((theirs["paddock_advantage"].as_f64().unwrap() - x).abs() < 1e-9);
    }
}

/// Issue 20, defect 1: a dynamically linked agent (what `cargo build
/// --release` leaves in target/release) cannot run in images without the
/// host's libc; the daemon refuses it at start, naming it and how to build
/// the static one, instead of booting sandboxes that never answer.
#[test]
fn serve_refuses_a_dynamically_linked_agent() {
    // This test binary is linked against the host's libc, like such a build.
    let dynamic = std::env::current_exe().unwrap();
    let data = std::env::temp_dir().join(format!("paddock-dynagent-{}", std::process::id()));
    let data_s = data.to_string_lossy().into_owned();
    let dynamic_s = dynamic.to_string_lossy().into_owned();
    let (status, err) = serve_briefly(&["--data-dir", &data_s, "--agent", &dynamic_s], 60);
    let _ = Command::new(bin())
        .args(["serve", "--cleanup", "--data-dir"])
        .arg(&data)
        .output();
    let _ = std::fs::remove_dir_all(&data);
    let status = status.unwrap_or_else(|| panic!("the daemon served with a dynamic agent: {err}"));
    assert!(!status.success(), "{err}");
    assert!(err.contains("dynamically linked"), "{err}");
    assert!(err.contains(&dynamic.display().to_string()), "{err}");
    assert!(err.contains("scripts/build.sh"), "{err}");
}
