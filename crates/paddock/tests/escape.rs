//! Attacks from inside a sandbox on what the daemon reaches as host root:
//! the agent's socket (a sandbox that redirected its own socket to another
//! sandbox's agent had the daemon run its commands there) and the main
//! process's log (a host file the sandbox could write, past its disk
//! limit, and rewrite).

mod common;
use common::*;
use serde_json::json;

/// The hostname Paddock gives a sandbox (`sb-` and 12 hex digits of its id).
fn hostname(id: &str) -> String {
    format!("sb-{}", &id.replace('-', "")[..12])
}

#[test]
fn a_sandbox_cannot_redirect_the_daemon_to_another_sandboxs_agent() {
    let d = Daemon::start();
    let api = d.api();
    let x = Sb::new(&api, json!({}));
    let y = Sb::new(&api, json!({}));
    sb_write_marker(&y, "y-secret");
    // X's root knows where the data dir is (its mounts say so) and tries
    // every place the daemon has connected to: the socket it shared with
    // the sandbox and the one beside it on the host.
    let data = d.data.display().to_string();
    let attack = format!(
        "mkdir -p /run/paddock; \
         mv /run/paddock/agent.sock /run/paddock/real.sock 2>/dev/null; \
         ln -sf {data}/sandboxes/{y}/run/agent.sock /run/paddock/agent.sock; \
         ln -sf {data}/sandboxes/{y}/agent.sock /run/paddock/agent2.sock; \
         grep -c paddock /proc/self/mountinfo; true",
        y = y.id
    );
    x.sh(&attack);
    // Whatever it changed, the next exec, and the first after a restart
    // (which connects anew), runs in X.
    for round in ["before", "after a restart"] {
        let r = x.sh("hostname; cat /workspace/marker 2>/dev/null; echo end");
        assert_eq!(
            r["stdout"],
            format!("{}\nend\n", hostname(&x.id)),
            "{round}: an exec on X ran elsewhere: {r}"
        );
        if round == "before" {
            d.restart();
        }
    }
    // Y was not written through X.
    assert_eq!(
        y.sh("cat /workspace/marker")["stdout"],
        "y-secret",
        "Y's files"
    );
    // The identity the agent proves itself with is not left to commands.
    let env = x.sh("env; cat /proc/self/environ | tr '\\0' '\\n'")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!env.contains("PADDOCK_AGENT_IDENTITY"), "{env}");
    // Nothing of the daemon's side of the channel is in the sandbox: no
    // socket to move (the attack's own symlinks are all it finds).
    let r = x.sh("for f in /run/paddock/* /run/*; do [ -S \"$f\" ] && echo socket $f; done; true");
    assert_eq!(r["stdout"], "", "{r}");
}

/// What the host keeps of a sandbox's main-process output, in bytes.
fn log_bytes_on_host(d: &Daemon, id: &str) -> u64 {
    std::fs::read_dir(d.data.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(id))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn sb_write_marker(sb: &Sb, text: &str) {
    let r = sb.sh(&format!("printf {text} > /workspace/marker"));
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn the_main_log_is_neither_writable_from_inside_nor_unbounded() {
    let d = Daemon::start_with("127.0.0.1", &["--log-max-mb", "1"]);
    let api = d.api();
    let sb = Sb::new(
        &api,
        json!({"disk_mb": 64, "command": ["sh", "-c", "echo started main; sleep 600"]}),
    );
    eventually(10, || {
        api.get(&sb.path("/logs"))
            .text
            .contains("started main")
            .then_some(())
    });
    // The attack: write (past the 64 MiB disk) into the log, and rewrite
    // what the main process said.
    let r = sb.sh(
        "dd if=/dev/zero of=/run/paddock/main.log bs=1M count=100 2>&1; \
         echo forged > /run/paddock/main.log; true",
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let text = api.get(&sb.path("/logs")).text;
    let head = &text[..text.len().min(200)];
    assert!(text.starts_with("started main\n"), "{head:?}");
    assert!(!text.contains("forged"), "{head:?}");
    // Whatever else it writes to (its agent's descriptors, the main
    // process's pipe among them: that is the main process speaking), the
    // host keeps at most the cap.
    sb.sh("for f in /proc/1/fd/*; do dd if=/dev/zero of=$f bs=1M count=8 2>/dev/null; done; true");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let on_host = log_bytes_on_host(&d, &sb.id);
    assert!(
        on_host <= 1 << 20,
        "the sandbox wrote {on_host} bytes into its log on the host"
    );
}

#[test]
fn a_chatty_main_process_stays_within_the_log_cap() {
    let d = Daemon::start_with("127.0.0.1", &["--log-max-mb", "1"]);
    let api = d.api();
    // 20 MB of output, then a last line.
    let sb = Sb::new(
        &api,
        json!({"command": ["sh", "-c",
            "yes 0123456789abcdef0123456789abcdef | head -c 20000000; echo; echo the-end; sleep 600"]}),
    );
    let text = eventually(60, || {
        let t = api.get(&sb.path("/logs")).text;
        t.contains("the-end").then_some(t)
    });
    let on_host = log_bytes_on_host(&d, &sb.id);
    assert!(on_host <= (1 << 20) + 64, "{on_host} bytes on the host");
    assert!(text.len() as u64 <= 1 << 20, "{} bytes read", text.len());
    // What is kept is the latest output, whole lines but perhaps the first.
    assert!(text.ends_with("the-end\n"), "{}", &text[text.len() - 80..]);
    assert!(text
        .lines()
        .rev()
        .nth(2)
        .unwrap()
        .starts_with("0123456789abcdef"));
}

/// The agent (PID 1) is out of its sandbox's reach: a process inside, of
/// the same user, reads neither its starting environment (which held its
/// identity) nor its memory, cannot open or resolve its descriptors (its
/// log on the host among them), and cannot ptrace it.
#[test]
fn the_agent_is_out_of_its_sandboxs_reach() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    // PTRACE_SEIZE (0x4206) attaches without stopping the agent.
    let script = "tr '\\0' '\\n' < /proc/1/environ 2>/dev/null | grep -c PADDOCK_AGENT_IDENTITY; \
         readlink /proc/1/fd/1 2>/dev/null && echo fd-read; \
         (echo forged >> /proc/1/fd/1) 2>/dev/null && echo fd-written; \
         head -c 1 /proc/1/mem >/dev/null 2>&1 && echo mem-read; \
         python3 -c 'import ctypes; l=ctypes.CDLL(None); print(\"ptrace\", l.ptrace(0x4206, 1, 0, 0))'";
    let r = api.exec(&sb.id, json!({"shell": script, "timeout": 20}));
    let out = r["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("0\n"),
        "the agent's identity is readable: {r}"
    );
    assert!(
        !out.contains("fd-read"),
        "an agent descriptor's target is readable: {r}"
    );
    assert!(
        !out.contains("fd-written"),
        "an agent descriptor is writable: {r}"
    );
    assert!(!out.contains("mem-read"), "{r}");
    assert!(out.contains("ptrace -1"), "PID 1 was attached: {r}");
}
