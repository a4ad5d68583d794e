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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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

/// What `FUSE_DEV_IOC_BACKING_OPEN` takes.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

nix::ioctl_write_ptr!(backing_open, 229, 1, BackingMap);
nix::ioctl_write_ptr!(backing_close, 229, 2, u32);

/// Whether `f` is a descriptor of `/dev/fuse`.
fn is_fuse(f: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(f).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(10, 229)
    })
}

/// Whether the daemon may register `f` for a sandbox whose ids are
/// `ids` (first host id, count; none: the host's own): a regular file
/// owned, as the host sees it, by one of the sandbox's users. The kernel
/// opens a passed-through file with the registrar's credentials (the
/// daemon's), so a file of anyone else is refused; the agent opened it
/// with the caller's access mode first.
fn registrable(f: BorrowedFd<'_>, ids: Option<(u32, u32)>) -> std::result::Result<(), i32> {
    let st = nix::sys::stat::fstat(f).map_err(|e| e as i32)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EINVAL);
    }
    if let Some((base, n)) = ids {
        if st.st_uid < base || st.st_uid - base >= n {
            return Err(libc::EPERM);
        }
    }
    Ok(())
}

/// This thread's credentials, which the kernel keeps with each backing
/// file it registers and does that file's I/O with: the sandbox's root as
/// the file system user (`setfsuid`/`setfsgid`, per thread), and of the
/// capabilities only `CAP_SYS_ADMIN`, which registering needs (no
/// `CAP_DAC_OVERRIDE`, `CAP_FSETID`, `CAP_SYS_RESOURCE`: a sandbox's
/// writes through passthrough get no more than its own would).
fn narrow_credentials(uid: u32) -> std::io::Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two `Data` (version 3) into `d` and may update
    // the header's version; both are ours and outlive the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: setfsgid and setfsuid change only this thread's file system
    // ids (the raw system calls; glibc does not broadcast these).
    unsafe {
        libc::setfsgid(uid);
        libc::setfsuid(uid);
    }
    d[0].effective = 1 << CAP_SYS_ADMIN;
    d[1].effective = 0;
    d[0].inheritable = 0;
    d[1].inheritable = 0;
    // SAFETY: capset reads the header and the two `Data`; it changes this
    // thread's capabilities only.
    if unsafe { libc::syscall(libc::SYS_capset, &h as *const Header, d.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; checks what took.
    let fsuid = unsafe { libc::setfsuid(u32::MAX) } as u32;
    if fsuid != uid {
        return Err(std::io::Error::other(format!(
            "fsuid is {fsuid}, not {uid}"
        )));
    }
    Ok(())
}

/// Serves an agent's registrations of backing files for FUSE passthrough
/// on `conn` until it closes (the agent's end: `Registrar` in its guard).
/// Each request is 16 bytes, `seq: u64, op: u32, arg: u32` (little
/// endian), with descriptors: op 1 registers the file (second descriptor)
/// on the FUSE connection (first); op 2 unregisters backing id `arg` on
/// it. Each answer is `seq: u64, result: i32`: the backing id, 0, or a
/// negative errno.
pub fn serve_backings(conn: std::os::unix::net::UnixStream, ids: Option<(u32, u32)>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::Write;
    if let Err(e) = narrow_credentials(ids.map_or(0, |(base, _)| base)) {
        // Without passthrough rather than with the daemon's credentials.
        tracing::warn!("guard registrar: {e}");
        return;
    }
    let mut conn = conn;
    loop {
        let mut msg = [0u8; 16];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let (n, fds) = {
            let mut iov = [std::io::IoSliceMut::new(&mut msg)];
            let r = match recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => r,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            if let Ok(cmsgs) = r.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these in this
                        // process for this message; nothing else owns them.
                        fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                    }
                }
            }
            (r.bytes, fds)
        };
        if n != 16 {
            return;
        }
        let seq = &msg[..8];
        let op = u32::from_le_bytes(msg[8..12].try_into().expect("4 bytes"));
        let arg = u32::from_le_bytes(msg[12..16].try_into().expect("4 bytes"));
        let result: i32 = match (op, fds.as_slice()) {
            (1, [fuse, file]) if is_fuse(fuse.as_fd()) => {
                match registrable(file.as_fd(), ids) {
                    Err(e) => -e,
                    Ok(()) => {
                        let map = BackingMap {
                            fd: file.as_raw_fd(),
                            flags: 0,
                            padding: 0,
                        };
                        // SAFETY: the ioctl reads `map`, which outlives it,
                        // on a descriptor checked to be /dev/fuse.
                        match unsafe { backing_open(fuse.as_raw_fd(), &map) } {
                            Ok(id) => id,
                            Err(e) => -(e as i32),
                        }
                    }
                }
            }
            (2, [fuse]) if is_fuse(fuse.as_fd()) => {
                // SAFETY: as above; reads `arg`.
                match unsafe { backing_close(fuse.as_raw_fd(), &arg) } {
                    Ok(_) => 0,
                    Err(e) => -(e as i32),
                }
            }
            _ => -libc::EINVAL,
        };
        let mut answer = [0u8; 12];
        answer[..8].copy_from_slice(seq);
        answer[8..].copy_from_slice(&result.to_le_bytes());
        if conn.write_all(&answer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon registers, with its own credentials, only regular files
    /// of the sandbox's users: never another host user's file, nor a
    /// device or directory, nor a descriptor that is not /dev/fuse.
    #[test]
    fn only_the_sandboxs_regular_files_are_registrable() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let base = 1 << 30;
        let open = |p: &Path| std::fs::File::open(p).unwrap();
        std::os::unix::fs::chown(&f, Some(base + 1000), None).unwrap();
        assert_eq!(registrable(open(&f).as_fd(), Some((base, 65536))), Ok(()));
        std::os::unix::fs::chown(&f, Some(4242), None).unwrap();
        assert_eq!(
            registrable(open(&f).as_fd(), Some((base, 65536))),
            Err(libc::EPERM)
        );
        std::os::unix::fs::chown(&f, Some(base + 65536), None).unwrap();
        assert_eq!(
            registrable(open(&f).as_fd(), Some((base, 65536))),
            Err(libc::EPERM)
        );
        // Without a user namespace the sandbox's users are the host's.
        assert_eq!(registrable(open(&f).as_fd(), None), Ok(()));
        assert_eq!(registrable(open(d.path()).as_fd(), None), Err(libc::EINVAL));
        assert_eq!(
            registrable(open(Path::new("/dev/null")).as_fd(), None),
            Err(libc::EINVAL)
        );
        assert!(!is_fuse(open(Path::new("/dev/null")).as_fd()));
        assert!(!is_fuse(open(&f).as_fd()));
    }
}
