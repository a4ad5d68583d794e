//! Running the host tools the backend drives (the OCI runtime, `ip`,
//! `iptables`), with their stderr in the error.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use paddock_core::Error;
use tokio::process::Command;

pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_opts(program.as_ref(), program, args).await
}

/// Runs the executable at `exe`, naming it `program` in errors.
pub async fn run_exe(exe: &Path, program: &str, args: &[&str]) -> Result<String, Error> {
    run_opts(exe.as_os_str(), program, args).await
}

async fn run_opts(exe: &OsStr, program: &str, args: &[&str]) -> Result<String, Error> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| Error::Internal(format!("{program}: {e}")))?;
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
