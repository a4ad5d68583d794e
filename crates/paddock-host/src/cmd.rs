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

/// Runs `program` with `input` on its stdin (`nft -f /dev/stdin`: a
/// ruleset applied as one transaction).
pub async fn run_input(program: &str, args: &[&str], input: &str) -> Result<String, Error> {
    use tokio::io::AsyncWriteExt;
    let err = |e: std::io::Error| Error::Internal(format!("{program}: {e}"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await.map_err(err)?;
    }
    let out = child.wait_with_output().await.map_err(err)?;
    finished(program, args, out)
}

/// A finished command's stdout, or an error with its stderr.
fn finished(program: &str, args: &[&str], out: std::process::Output) -> Result<String, Error> {
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
    finished(program, args, out)
}

/// Runs `exe` (`args[0]` its name) with stdin from /dev/null, stdout and
/// stderr to `log`, and `fd3` as its fd 3, and waits for it.
///
/// posix_spawn, not `Command` with a `pre_exec` hook: a hook makes std fork
/// the daemon (copying its page tables, then copy-on-write faults in the
/// daemon), which made `crun run` ~4 ms slower at the median on this VM;
/// posix_spawn's file actions place fd 3 without one.
pub async fn spawn_wait(
    exe: &Path,
    args: &[String],
    log: &std::fs::File,
    fd3: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = spawn(exe, args, log, fd3)?;
    tokio::task::spawn_blocking(move || loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                return Ok(std::process::ExitStatus::from_raw(code << 8))
            }
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
                return Ok(std::process::ExitStatus::from_raw(sig as i32))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

fn spawn(
    exe: &Path,
    args: &[String],
    log: &std::fs::File,
    fd3: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<nix::unistd::Pid> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};

    let cstr = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let devnull = std::fs::File::open("/dev/null")?;
    let mut fa = PosixSpawnFileActions::init()?;
    fa.add_dup2(devnull.as_raw_fd(), 0)?;
    fa.add_dup2(log.as_raw_fd(), 1)?;
    fa.add_dup2(log.as_raw_fd(), 2)?;
    // dup2 onto itself clears close-on-exec as well (glibc ≥ 2.29).
    fa.add_dup2(fd3.as_raw_fd(), 3)?;
    let mut attr = PosixSpawnAttr::init()?;
    // As std does: no blocked signals, and SIGPIPE (ignored by the
    // daemon) back to its default.
    attr.set_sigmask(&nix::sys::signal::SigSet::empty())?;
    let mut dfl = nix::sys::signal::SigSet::empty();
    dfl.add(nix::sys::signal::Signal::SIGPIPE);
    attr.set_sigdefault(&dfl)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let argv = args
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(posix_spawn(exe, &fa, &attr, &argv, &envp)?)
}
