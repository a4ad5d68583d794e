//! A fork bomb, a memory hog or a disk filler is held by its sandbox's
//! limits; the daemon and the other sandboxes keep answering.

mod common;
use common::*;
use serde_json::json;

#[test]
fn hostile_workloads_are_contained() {
    let api = shared().api();
    let bystander = Sb::new(&api, json!({}));
    let bomb = Sb::new(&api, json!({"pids": 64}));
    let hog = Sb::new(&api, json!({"memory_mb": 64}));
    let filler = Sb::new(&api, json!({"disk_mb": 32}));

    // Fork bomb: held at the pids limit.
    let r = api.exec(
        &bomb.id,
        json!({"shell": "f() { f | f & }; f; sleep 2; echo survived", "timeout": 5}),
    );
    let m = api.get(&bomb.path("/metrics")).body;
    assert!(m["pids"].as_u64().unwrap() <= 64, "{m}");
    let _ = r;
    assert_eq!(bystander.sh("echo alive")["stdout"], "alive\n");

    // Memory hog: killed by the OOM killer inside its cgroup.
    let r = api.exec(&hog.id, json!({"cmd": ["python3", "-c", "x = bytearray(256 << 20); print('allocated')"], "timeout": 20}));
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(!r["stdout"].as_str().unwrap().contains("allocated"), "{r}");
    assert_eq!(hog.sh("echo still-up")["stdout"], "still-up\n");

    // Disk filler: ENOSPC at its own disk limit.
    let r = api.exec(
        &filler.id,
        json!({"shell": "dd if=/dev/zero of=/workspace/fill bs=1M count=100 2>&1; echo rc=$?"}),
    );
    let out = r["stdout"].as_str().unwrap();
    assert!(out.contains("No space left"), "{r}");
    let size = filler.sh("stat -c %s /workspace/fill")["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(size <= 32 << 20, "{size}");

    // A disk larger than the memory (files are held in memory, a tmpfs):
    // filled, it is ENOSPC to the writer, and the sandbox keeps memory to
    // run in. It used to fill the memory limit instead: the OOM killer
    // killed the writers, which freed nothing, then the agent.
    let roomy = Sb::new(&api, json!({"memory_mb": 64, "disk_mb": 256}));
    let r = api.exec(
        &roomy.id,
        json!({"shell": "head -c 104857600 /dev/zero > /workspace/fill; echo rc=$?"}),
    );
    assert_eq!(r["stdout"], "rc=1\n", "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("No space left"),
        "{r}"
    );
    assert_eq!(roomy.sh("echo still-up")["stdout"], "still-up\n");
    let r = api.exec(
        &roomy.id,
        json!({"cmd": ["python3", "-c", "x = bytearray(4 << 20); print('ok')"]}),
    );
    assert_eq!(r["stdout"], "ok\n", "{r}");

    // Everyone else still answers, and the daemon too.
    assert_eq!(bystander.sh("echo alive")["stdout"], "alive\n");
    assert_eq!(api.get("/sandboxes").status, 200);
    // The bomb's sandbox is destroyed cleanly.
    api.post(&bomb.path("/stop"), json!({}));
}

#[test]
fn sandboxes_are_confined() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    // Capabilities are dropped: no mounts, no raw device access, no modules.
    let r = sb.sh("mount -t tmpfs none /mnt 2>&1; echo rc=$?");
    assert!(
        r["stdout"].as_str().unwrap().contains("rc=32")
            || r["stdout"].as_str().unwrap().contains("ermission denied"),
        "{r}"
    );
    let caps = sb.sh("grep CapEff /proc/self/status")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let eff = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN must be dropped: {caps}");
    assert!(sb.sh("grep NoNewPrivs /proc/self/status")["stdout"]
        .as_str()
        .unwrap()
        .contains('1'));
    assert!(sb.sh("grep Seccomp: /proc/self/status")["stdout"]
        .as_str()
        .unwrap()
        .contains('2'));
    // The filter refuses what capabilities alone would allow (keyctl needs
    // none), in the first sandbox and in a later one, whose filter crun
    // loads ready-made (see paddock-runtime's seccomp.rs).
    let later = Sb::new(&api, json!({}));
    let bundle = shared()
        .data
        .join("sandboxes")
        .join(&later.id)
        .join("bundle/config.json");
    let spec = std::fs::read_to_string(&bundle).unwrap();
    assert!(
        spec.contains("run.oci.seccomp_bpf_data"),
        "a later sandbox gets the filter compiled for the first: {bundle:?}"
    );
    for s in [&sb, &later] {
        let keyctl = "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); \
                      r = libc.syscall(250, 0, -3, 0); print(r, ctypes.get_errno())";
        assert_eq!(
            s.api.exec(&s.id, json!({"cmd": ["python3", "-c", keyctl]}))["stdout"],
            format!("-1 {}\n", libc::EPERM)
        );
    }
    // Its own pid namespace: the agent is PID 1.
    assert_eq!(sb.sh("cat /proc/1/comm")["stdout"], "paddock-agent\n");
    // /usr is read-only; /workspace, /tmp and /root are writable.
    assert_ne!(sb.sh("touch /usr/x")["exit_code"], 0);
    assert_eq!(sb.sh("touch /workspace/x /tmp/x /root/x")["exit_code"], 0);
    // A shell and python3 work with zero setup.
    assert_eq!(sb.sh("python3 -c 'print(6*7)'")["stdout"], "42\n");
}

#[test]
fn a_sandbox_whose_disk_is_full_keeps_logging_and_starts_again() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(
        &api,
        json!({"disk_mb": 16, "command": ["sh", "-c", "while :; do echo tick; sleep 0.1; done"]}),
    );
    let r = sb.sh("dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1; echo rc=$?");
    assert!(
        r["stdout"].as_str().unwrap().contains("No space left"),
        "{r}"
    );
    // Its main process's log is on the host's disk, not the sandbox's: it
    // still grows.
    let log = d.data.join("logs").join(format!("{}.log", sb.id));
    let before = eventually(10, || std::fs::metadata(&log).ok()).len();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let after = std::fs::metadata(&log).unwrap().len();
    assert!(after > before, "the log stopped at {before} bytes");
    // A start after a stop writes its spec again: with the disk full, the
    // one from the first boot serves.
    let r = api.post(&sb.path("/stop"), json!({}));
    assert_eq!(r.body["state"], "stopped", "{}", r.text);
    let r = api.post(&sb.path("/start"), json!({}));
    assert_eq!(r.body["state"], "running", "{}", r.text);
    assert_eq!(sb.sh("echo back")["stdout"], "back\n");
    let text = api.get(&sb.path("/logs")).text;
    assert!(text.contains("tick\n"), "{text}");
}
