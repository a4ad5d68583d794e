//! Schemathesis (pinned in tests/python/requirements.txt) fuzzes the native
//! API from its own `/openapi.json` on a loopback daemon: no request may
//! answer 5xx, and every status must be one the document lists (issue 19,
//! item 8). Bounded in examples and time so that it takes a minute or two
//! on a 2-core machine.
//!
//! Left out, each for a reason:
//! - `GET /v1/events` and `GET /v1/sandboxes/{id}/events`: event streams,
//!   which stay open for as long as the client reads (by design);
//! - `GET /v1/sandboxes/{id}/exec/ws`: a WebSocket upgrade, which an HTTP
//!   fuzzer cannot speak;
//! - `GET /v1/sandboxes/{id}/logs`: with `follow=true` it streams for as
//!   long as the sandbox lives (its offsets are tested in admission.rs);
//! - `/v1/sandboxes/{id}/proxy/{port}/{rest}`: a reverse proxy into the
//!   sandbox, which answers 502 Bad Gateway (documented) when nothing
//!   listens on the port, as a gateway should;
//! - `POST /v1/images`: a pull, which reaches registries. Creates and
//!   templates that name an image would pull too: the daemon's registry
//!   traffic goes to a dead proxy on loopback, so those fail at once and
//!   nothing leaves the machine.
//!
//! And three kinds of value, dropped by a hook: creates (and templates)
//! asking for an isolation other than `container`, which this daemon
//! answers 501 by design (no such backend; tests/lifecycle.rs and the SDK
//! tests expect it), snapshots and forks asking to keep memory (`"memory":
//! true`, 501 by design on containers; tests/snapshots.rs), and those
//! naming an image, which with no registry
//! reachable answer 503 (pulls are tested against a loopback registry in
//! images.rs).

mod common;
use common::*;

/// Drops generated creates that ask for a backend this daemon lacks or an
/// image (no registry is reachable), and captures that ask for memory.
const HOOKS: &str = r#"
import schemathesis

@schemathesis.hook
def filter_body(ctx, body):
    if not isinstance(body, dict):
        return True
    return (body.get("isolation") in (None, "container") and body.get("image") is None
            and body.get("memory") is not True)

# Every phase's cases (the coverage phase's bodies pass no body filter).
@schemathesis.hook
def filter_case(ctx, case):
    body = case.body
    return not (isinstance(body, dict) and body.get("memory") is True)
"#;

#[test]
fn native_api_survives_schemathesis() {
    let st = std::path::Path::new(&python())
        .parent()
        .unwrap()
        .join("schemathesis");
    assert!(
        st.exists(),
        "{} missing: run scripts/pyenv.sh (PADDOCK_TEST_PYTHON names its python)",
        st.display()
    );
    // Registry traffic (an image a generated create names) goes nowhere.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let d = Daemon::start_with_env(
        "127.0.0.1",
        &[],
        &[
            ("HTTPS_PROXY", &dead),
            ("HTTP_PROXY", &dead),
            ("https_proxy", &dead),
            ("http_proxy", &dead),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    let report = d.data.with_extension("schemathesis");
    let hooks_dir = d.data.with_extension("hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    std::fs::write(hooks_dir.join("paddock_st_hooks.py"), HOOKS).unwrap();
    let out = std::process::Command::new(&st)
        .args(["run", &format!("{}/openapi.json", d.url)])
        .args(["--url", &d.url])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "12", "--max-time", "150"])
        .args(["--request-timeout", "30", "--workers", "2"])
        .args(["--seed", "19", "--no-shrink"])
        .args(["--exclude-operation-id", "all_events"])
        .args(["--exclude-operation-id", "sandbox_events"])
        .args(["--exclude-operation-id", "exec_ws"])
        .args(["--exclude-operation-id", "pull_image"])
        .args(["--exclude-operation-id", "logs"])
        .args(["--exclude-operation-id", "proxy"])
        .args(["--suppress-health-check", "all", "--warnings", "off"])
        .env("SCHEMATHESIS_HOOKS", "paddock_st_hooks")
        .env("PYTHONPATH", &hooks_dir)
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(&report, &text);
    assert!(
        out.status.success(),
        "schemathesis found failures (daemon log: {}):\n{text}",
        d.data.with_extension("log").display()
    );
}
