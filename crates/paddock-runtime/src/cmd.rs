//! Running the host tools the backend drives (the OCI runtime, `ip`,
//! `iptables`), with their stderr in the error.

use std::process::Stdio;

use paddock_core::Error;
use tokio::process::Command;

pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_opts(program, args, None, false).await
}

/// Runs at low CPU priority: background work (refilling a pool) must not
/// slow down the work a caller waits for.
pub async fn run_background(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    run_opts(program, args, stdin, true).await
}

async fn run_opts(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    background: bool,
) -> Result<String, Error> {
    let mut cmd = Command::new(program);
    if background {
        // SAFETY: setpriority is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 15);
                Ok(())
            });
        }
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Internal(format!("{program}: {e}")))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        w.write_all(input.as_bytes())
            .await
            .map_err(|e| Error::Internal(format!("{program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Internal(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Internal(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
