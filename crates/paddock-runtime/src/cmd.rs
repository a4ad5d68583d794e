//! Running the host tools the backend drives (the OCI runtime, `ip`,
//! `iptables`), with their stderr in the error.

use std::process::Stdio;

use paddock_core::Error;
use tokio::process::Command;

pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_stdin(program, args, None).await
}

pub async fn run_stdin(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let mut cmd = Command::new(program);
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
