//! FUSE filesystems the host mounts into a sandbox for its agent to serve
//! (guarded mounts: a mount's ACL judged on every access).
//!
//! The daemon opens `/dev/fuse` and makes the filesystem with the new
//! mount API (`fsopen("fuse")`, `fsmount`): owned by the host's user
//! namespace, so that the kernel reports host ids to the server and
//! nothing in the sandbox's namespaces may unmount it. A short-lived child
//! enters the sandbox's mount namespace and moves the detached mount onto
//! the directory (`move_mount`): mount namespaces cannot be entered by a
//! process with threads.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use paddock_core::{Error, Result};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Internal(format!("guarded mount: {what}: {e}"))
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A FUSE filesystem attached nowhere yet: the server's end of the
/// connection and the detached mount.
pub struct Detached {
    pub dev: OwnedFd,
    pub mount: OwnedFd,
}

/// Makes a FUSE filesystem any user may use (`allow_other`), whose modes
/// and owners the kernel enforces (`default_permissions`), without setuid
/// files or devices.
pub fn detached() -> Result<Detached> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(err("/dev/fuse"))?;
    let dev = OwnedFd::from(dev);
    let fstype = CString::new("fuse").expect("no NUL");
    // SAFETY: fsopen reads the NUL-terminated name; returns a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(err("fsopen")(last()));
    }
    // SAFETY: fs was just returned by fsopen and is owned by nothing else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |key: &str, value: Option<&str>| -> Result<()> {
        let k = CString::new(key).expect("no NUL");
        let v = value.map(|v| CString::new(v).expect("no NUL"));
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: fsconfig reads the NUL-terminated key and value, which
        // outlive the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vp, 0) };
        if rc != 0 {
            return Err(err(key)(last()));
        }
        Ok(())
    };
    set("source", Some("paddock-guard"))?;
    set("fd", Some(&dev.as_raw_fd().to_string()))?;
    set("rootmode", Some("40000"))?;
    set("user_id", Some("0"))?;
    set("group_id", Some("0"))?;
    set("allow_other", None)?;
    set("default_permissions", None)?;
    // SAFETY: no pointers are passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc != 0 {
        return Err(err("create")(last()));
    }
    // SAFETY: fsmount takes the configured context and flags; returns a
    // new fd or -1.
    let m = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if m < 0 {
        return Err(err("fsmount")(last()));
    }
    // SAFETY: m was just returned by fsmount and is owned by nothing else.
    let mount = unsafe { OwnedFd::from_raw_fd(m as i32) };
    Ok(Detached { dev, mount })
}

/// Opens `path` (absolute, as process `pid` sees it) as a directory,
/// resolved inside that process's root (its symlinks cannot lead out),
/// without following a symlink at its end.
pub fn open_dir_in(pid: u32, path: &str) -> Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let root =
        std::fs::File::open(format!("/proc/{pid}/root")).map_err(err("the sandbox's root"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, Path::new(path.trim_start_matches('/')), how)
        .map_err(|e| Error::Internal(format!("guarded mount: {path} in the sandbox: {e}")))
}

/// Moves the detached `mount` onto `target` (a directory open in process
/// `pid`'s mount namespace) from a child in that namespace.
pub fn attach_in(pid: u32, mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(err("the sandbox's mount namespace"))?;
    let empty = CString::default();
    let (ns_fd, m_fd, t_fd) = (ns.as_raw_fd(), mount.as_raw_fd(), target.as_raw_fd());
    let eptr = empty.as_ptr();
    // SAFETY: the child makes only system calls (setns, move_mount, _exit)
    // on descriptors and a string the parent prepared, touching no lock or
    // allocator state, and exits without unwinding.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(err("fork")(last()));
    }
    if child == 0 {
        // SAFETY: see above; the child only makes system calls and exits.
        unsafe {
            if libc::setns(ns_fd, libc::CLONE_NEWNS) != 0 {
                libc::_exit(100 + *libc::__errno_location() % 100);
            }
            let rc = libc::syscall(
                libc::SYS_move_mount,
                m_fd,
                eptr,
                t_fd,
                eptr,
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            );
            if rc != 0 {
                libc::_exit(*libc::__errno_location() % 100);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is ours.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        if last().kind() != std::io::ErrorKind::Interrupted {
            return Err(err("waitpid")(last()));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        255
    };
    match code {
        0 => Ok(()),
        c if (100..200).contains(&c) => {
            Err(err("setns")(std::io::Error::from_raw_os_error(c - 100)))
        }
        255 => Err(Error::Internal(
            "guarded mount: the child was killed".into(),
        )),
        c => Err(err("move_mount")(std::io::Error::from_raw_os_error(c))),
    }
}
