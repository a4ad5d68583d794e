//! A sealed in-memory copy of the OCI runtime's binary.
//!
//! crun and runc guard against a container overwriting their binary
//! (CVE-2019-5736) by copying themselves into a sealed memfd, or by
//! bind-mounting themselves read-only, and re-executing on every call. The
//! bind mount's unmount waits for an expedited RCU grace period, a few
//! milliseconds of every create. Both skip that step when the binary they run
//! from already is a fully sealed memfd, so the daemon makes that copy once
//! and runs the runtime from it: the same protection, paid once.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The seals crun and runc look for (`RUNC_MEMFD_SEALS`).
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A sealed copy of a binary, executable through `/proc/<pid>/fd/<n>`.
#[derive(Debug)]
pub struct SealedBinary {
    /// Kept open: `path` names it through /proc.
    _fd: OwnedFd,
    path: PathBuf,
}

impl SealedBinary {
    /// Copies the binary named `program` (a path, or a name looked up in
    /// `PATH`) into a sealed memfd.
    pub fn new(program: &str) -> std::io::Result<SealedBinary> {
        let source = which(program).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{program} not found"))
        })?;
        let bytes = std::fs::read(&source)?;
        let name = c"paddock-oci-runtime";
        // SAFETY: `name` is a valid NUL-terminated string; the returned fd,
        // if any, is owned by nothing else.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd returned by memfd_create above.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = File::from(fd.try_clone()?);
        file.write_all(&bytes)?;
        // SAFETY: fcntl on an fd we own, with an integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ));
        Ok(SealedBinary { _fd: fd, path })
    }

    /// The path to execute, valid while this value lives (it holds the
    /// memfd open).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_runs_and_cannot_be_written() {
        let s = SealedBinary::new("true").unwrap();
        let st = std::process::Command::new(s.path()).status().unwrap();
        assert!(st.success());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(s.path())
            .unwrap();
        assert!(
            f.write_all(b"x").is_err(),
            "a sealed memfd refused the write"
        );
        // SAFETY: fcntl on an fd the SealedBinary owns.
        let seals = unsafe { libc::fcntl(s._fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals, SEALS);
    }
}
