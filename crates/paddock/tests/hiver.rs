//! hiver-py 0.1.18 from PyPI, unmodified, against a real `paddock serve`:
//! tests/python/hiver_test.py drives the whole SDK surface. Its image name
//! (`hiversh/python:3.13-alpine`) is served through a registry mirror on
//! loopback, holding a python3 image built here.

mod common;
use common::registry::*;
use common::*;

#[test]
fn hiver_sdk_against_paddock() {
    let work = std::env::temp_dir().join(format!("paddock-hiver-{}", std::process::id()));
    let reg = Registry::start(&work.join("registry"));
    reg.push_python(&work, "hiversh/python:3.13-alpine", &[8080]);
    let port = free_port();
    let hiver = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(
        "127.0.0.1",
        &[
            "--hiver-listen",
            &hiver,
            "--insecure-registry",
            &reg.addr,
            "--registry-mirror",
            &format!("docker.io=http://{}", reg.addr),
            // hiver_test.py binds a directory under /tmp (fs[].origin).
            "--allow-host-mount",
            "/tmp",
        ],
    );
    run_sdk_script(
        "hiver_test.py",
        &[("HIVER_URL", &format!("http://{hiver}"))],
        "all hiver checks passed",
        &d,
    );
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

// That --hiver-listen binds where it is told, can be off, and refuses a bad
// address: tests/flash.rs, dialect_listeners_are_configurable_and_can_be_off.
