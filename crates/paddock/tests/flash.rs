//! flash-sandbox 0.1.1 from PyPI, unmodified, against a real `paddock
//! serve`, over HTTP and over gRPC: tests/python/flash_test.py runs both
//! README quick starts and every method, error case and a path-prefixed
//! address. Its image names (`alpine:latest`, `python:3.12-alpine`) are
//! served through a registry mirror on loopback.

mod common;
use common::registry::*;
use common::*;
use std::process::Command;

#[test]
fn flash_sdk_against_paddock() {
    let work = std::env::temp_dir().join(format!("paddock-flash-{}", std::process::id()));
    let reg = Registry::start(&work.join("registry"));
    reg.push_busybox(&work, "library/alpine:latest");
    reg.push_python(&work, "library/python:3.12-alpine", &[]);
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--flash-http-listen",
            &http,
            "--flash-grpc-listen",
            &grpc,
            "--insecure-registry",
            &reg.addr,
            "--registry-mirror",
            &format!("docker.io=http://{}", reg.addr),
        ],
    );
    run_sdk_script(
        "flash_test.py",
        &[
            ("FLASH_HTTP", &http),
            ("FLASH_GRPC", &grpc),
            ("FLASH_REGISTRY", &reg.addr),
        ],
        "all flash checks passed",
        &d,
    );
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

/// The TCP ports `pid` listens on, from /proc/net/tcp (state 0A: LISTEN)
/// and the process's socket inodes.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports
}

#[test]
fn dialect_listeners_are_configurable_and_can_be_off() {
    let (h, g, v, a, o) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--flash-http-listen",
            &format!("127.0.0.1:{h}"),
            "--flash-grpc-listen",
            &format!("127.0.0.1:{g}"),
            "--hiver-listen",
            &format!("127.0.0.1:{v}"),
            "--agenttier-listen",
            &format!("127.0.0.1:{a}"),
            "--hogland-listen",
            &format!("127.0.0.1:{o}"),
        ],
    );
    let native: u16 = d.listen.rsplit(':').next().unwrap().parse().unwrap();
    let mut want = vec![native, h, g, v, a, o];
    want.sort();
    assert_eq!(listening_ports(d.pid()), want);
    drop(d);
    // All off (the harness's default): the native API alone.
    let d = Daemon::start();
    let native: u16 = d.listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listening_ports(d.pid()), vec![native]);
    drop(d);
    // A bad address is refused at start, naming the flag.
    for flag in [
        "--flash-http-listen",
        "--flash-grpc-listen",
        "--hiver-listen",
        "--agenttier-listen",
        "--hogland-listen",
        "--ssh-listen",
        "--boxd-listen",
        "--ingress-listen",
        "--ingress-http-listen",
    ] {
        let out = Command::new(bin())
            .args(["serve", flag, "nowhere", "--listen", "127.0.0.1:1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A port in use is refused at start, naming the flag, before the
    // daemon touches the host (no data dir made, no bridge).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = std::env::temp_dir().join(format!("paddock-taken-{}", std::process::id()));
    let out = Command::new(bin())
        .args(["serve", "--flash-grpc-listen", &addr, "--socket", "off"])
        .args([
            "--hiver-listen",
            "off",
            "--flash-http-listen",
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
            "--listen",
        ])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--flash-grpc-listen") && err.contains(&addr),
        "{err}"
    );
    assert!(!data.exists(), "the data dir was made before the listeners");
}
