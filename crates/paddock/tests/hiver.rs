//! hiver-py 0.1.18 from PyPI, unmodified, against a real `paddock serve`:
//! tests/python/hiver_test.py drives the whole SDK surface. Its image name
//! (`hiversh/python:3.13-alpine`) is served through a registry mirror on
//! loopback, holding a python3 image built here.

mod common;
use common::registry::*;
use common::*;
use std::process::Command;

fn python() -> String {
    std::env::var("PADDOCK_TEST_PYTHON").unwrap_or_else(|_| {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
        p.to_string_lossy().into_owned()
    })
}

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
        ],
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/hiver_test.py");
    let out = Command::new(python())
        .arg(&script)
        .env("HIVER_URL", format!("http://{hiver}"))
        .env("PADDOCK_URL", &d.url)
        .env("PADDOCK_DATA", &d.data)
        .output()
        .expect("the test virtualenv (scripts/pyenv.sh makes it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all hiver checks passed"),
        "hiver_test.py failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(d);
    drop(reg);
    let _ = std::fs::remove_dir_all(work);
}

// That --hiver-listen binds where it is told, can be off, and refuses a bad
// address: tests/flash.rs, dialect_listeners_are_configurable_and_can_be_off.
