//! The container backend on runc (`--oci-runtime runc`), as on hosts where
//! crun does not work.

mod common;
use common::*;
use serde_json::json;

#[test]
fn sandboxes_run_on_runc_too() {
    let d = Daemon::start_with("127.0.0.1", &["--oci-runtime", "runc"]);
    assert!(d.log().contains("uses runc"), "{}", d.log());
    let api = d.api();
    let sb = Sb::new(&api, json!({"memory_mb": 128}));
    let r = sb.sh("echo $((20+22)); cat /proc/1/comm");
    assert_eq!(r["stdout"], "42\npaddock-agent\n");
    let m = api.get(&sb.path("/metrics")).body;
    assert_eq!(m["memory_limit_bytes"], 128u64 << 20, "{m}");
    // An unknown runtime is a clear error at start.
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--oci-runtime",
            "no-such-runtime",
            "--socket",
            "off",
            "--listen",
            "127.0.0.1:1",
            "--hiver-listen",
            "off",
            "--flash-http-listen",
            "off",
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
            "--data-dir",
        ])
        .arg(d.data.join("other"))
        .args(["--agent"])
        .arg(agent())
        .args(["--bridge", "pdtnone", "--gateway", "10.99.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-runtime"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "pdtnone"])
        .output();
    let _ = std::process::Command::new("iptables")
        .args([
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            "10.99.0.0/16",
            "!",
            "-o",
            "pdtnone",
            "-j",
            "MASQUERADE",
        ])
        .output();
    for dir in ["-i", "-o"] {
        let _ = std::process::Command::new("iptables")
            .args(["-D", "FORWARD", dir, "pdtnone", "-j", "ACCEPT"])
            .output();
    }
}
