//! After `kill -9` of the daemon, a new one on the same data dir serves the
//! sandboxes that still run, and marks and cleans up those that died.

mod common;
use common::*;
use serde_json::json;

#[test]
fn daemon_restart_keeps_running_sandboxes() {
    let d = Daemon::start();
    let api = d.api();
    let keep = api.create(json!({"key": "survivor"}));
    let dead = api.create(json!({}));
    let stopped = api.create(json!({}));
    api.sh(&keep, "echo state > /workspace/f; (sleep 600 &)");
    assert_eq!(
        api.post(&format!("/sandboxes/{stopped}/stop"), json!({}))
            .status,
        200
    );

    let dead_net: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.data.join("sandboxes").join(&dead).join("net.json")).unwrap(),
    )
    .unwrap();
    let dead_netns = format!("/var/run/netns/{}", dead_net["netns"].as_str().unwrap());
    assert!(std::path::Path::new(&dead_netns).exists());
    d.kill9();
    // While the daemon is down, one sandbox's processes die.
    let oci_root = std::fs::read_dir(d.data.join("oci"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rt = oci_root.file_name().unwrap().to_string_lossy().to_string();
    let out = std::process::Command::new(&rt)
        .arg("--root")
        .arg(&oci_root)
        .args(["kill", &dead, "KILL"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(10, || {
        let o = std::process::Command::new(&rt)
            .arg("--root")
            .arg(&oci_root)
            .args(["state", &dead])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .contains("stopped")
            .then_some(())
    });

    d.restart();
    // The survivor is served again, with its files and processes.
    assert_eq!(
        api.get(&format!("/sandboxes/{keep}")).body["state"],
        "running"
    );
    assert_eq!(api.sh(&keep, "cat /workspace/f")["stdout"], "state\n");
    assert!(
        api.sh(&keep, "pgrep -c sleep || ps -e | grep -c sleep")["stdout"]
            .as_str()
            .unwrap()
            .trim()
            != "0"
    );
    // Creating by the same key finds it.
    assert_eq!(
        api.post("/sandboxes", json!({"key": "survivor"})).body["id"],
        keep.as_str()
    );
    // The dead one is marked, and its resources are gone.
    let g = api.get(&format!("/sandboxes/{dead}")).body;
    assert_eq!(g["state"], "error", "{g}");
    assert!(g["message"].as_str().unwrap().contains("restart"), "{g}");
    assert!(!d.data.join("sandboxes").join(&dead).exists());
    assert!(!std::path::Path::new(&dead_netns).exists());
    // The stopped one is still stopped and starts again.
    assert_eq!(
        api.get(&format!("/sandboxes/{stopped}")).body["state"],
        "stopped"
    );
    assert_eq!(
        api.post(&format!("/sandboxes/{stopped}/start"), json!({}))
            .body["state"],
        "running"
    );
    // A new sandbox does not collide with the survivors' addresses.
    let fresh = api.create(json!({}));
    let ips: Vec<String> = [&keep, &stopped, &fresh]
        .iter()
        .map(|i| {
            api.get(&format!("/sandboxes/{i}")).body["ip"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_ne!(ips[0], ips[2]);
    assert_ne!(ips[1], ips[2]);
    for i in [&keep, &stopped, &fresh] {
        api.destroy(i);
    }
}

#[test]
fn a_sandbox_whose_init_dies_is_marked_and_cleaned_up() {
    let d = shared();
    let api = d.api();
    let id = api.create(json!({}));
    let dir = d.data.join("sandboxes").join(&id);
    let pid = init_pid(&dir);
    // SAFETY: kill(2) on a pid we just read; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let sb = eventually(10, || {
        let sb = api.get(&format!("/sandboxes/{id}")).body;
        (sb["state"] == "error").then_some(sb)
    });
    assert!(sb["message"].as_str().unwrap().contains("exited"), "{sb}");
    let r = api.post(&format!("/sandboxes/{id}/exec"), json!({"cmd": ["true"]}));
    assert_eq!(r.status, 409, "{}", r.text);
    eventually(10, || (!dir.exists()).then_some(()));
    api.destroy(&id);
}

#[test]
fn an_agent_that_does_not_answer_after_a_restart_is_marked_dead() {
    let d = Daemon::start();
    let api = d.api();
    let live = api.create(json!({}));
    let mute = api.create(json!({}));
    let dir = d.data.join("sandboxes").join(&mute);
    let pid = init_pid(&dir);
    d.kill9();
    // Its agent still exists but answers nothing.
    // SAFETY: kill(2) on a pid we just read; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    d.restart();
    // The daemon serves without waiting on the mute agent: the other
    // sandbox answers at once.
    assert_eq!(api.sh(&live, "echo ok")["stdout"], "ok\n");
    // The mute one is marked once its agent fails to answer (10 s).
    let sb = eventually(40, || {
        let sb = api.get(&format!("/sandboxes/{mute}")).body;
        (sb["state"] == "error").then_some(sb)
    });
    assert!(
        sb["message"].as_str().unwrap().contains("did not answer"),
        "{sb}"
    );
    eventually(10, || (!dir.exists()).then_some(()));
    api.destroy(&live);
}

/// Issue 20, defect 3: a second daemon on the first one's data dir, or with
/// its own data dir but the first one's bridge or subnet, stops at start
/// with an error naming what is taken, and leaves the first daemon's
/// sandboxes and their network namespaces alone (it used to remove them as
/// "leftovers").
#[test]
fn a_second_daemon_does_not_take_the_first_ones_data_dir_bridge_or_subnet() {
    let d = Daemon::start();
    let api = d.api();
    let id = api.create(json!({}));
    let net: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.data.join("sandboxes").join(&id).join("net.json")).unwrap(),
    )
    .unwrap();
    let netns = format!("/var/run/netns/{}", net["netns"].as_str().unwrap());
    let own = std::env::temp_dir().join(format!("paddock-second-{}", std::process::id()));
    let data = d.data.to_string_lossy().into_owned();
    let own_s = own.to_string_lossy().into_owned();
    // Another subnet no daemon of this test holds.
    let other_gw = "10.87.0.1";
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--data-dir",
                &data,
                "--bridge",
                "pdsecond",
                "--gateway",
                other_gw,
            ],
            "data dir",
        ),
        (
            &[
                "--data-dir",
                &own_s,
                "--bridge",
                &d.bridge,
                "--gateway",
                other_gw,
            ],
            &format!("bridge {}", d.bridge),
        ),
        (
            &[
                "--data-dir",
                &own_s,
                "--bridge",
                "pdsecond",
                "--gateway",
                &d.gateway,
            ],
            "subnet",
        ),
    ];
    let agent = agent().to_string_lossy().into_owned();
    for (args, taken) in cases {
        let mut full = vec!["--agent", agent.as_str()];
        full.extend_from_slice(args);
        let (status, text) = serve_briefly(&full, 60);
        let _ = std::process::Command::new(bin())
            .args([
                "serve",
                "--cleanup",
                "--data-dir",
                &own_s,
                "--bridge",
                "pdsecond",
            ])
            .args(["--gateway", other_gw])
            .output();
        let status = status.unwrap_or_else(|| panic!("{args:?}: a second daemon served: {text}"));
        assert!(!status.success(), "{args:?}: {text}");
        assert!(
            text.contains(taken) && text.contains("in use by another paddock serve"),
            "{args:?}: {text}"
        );
        // The first daemon's sandbox and its namespace are as they were.
        assert!(
            std::path::Path::new(&netns).exists(),
            "{args:?} removed {netns}: {text}"
        );
        assert_eq!(api.sh(&id, "echo still")["stdout"], "still\n", "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&own);
}
