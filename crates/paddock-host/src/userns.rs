//! User namespaces: each sandbox's own range of host ids.
//!
//! A sandbox's uid and gid 0..65536 are the host's `base..base+65536`
//! ([`IdRange`]), a range no other sandbox holds while it exists, claimed
//! host-wide ([`IdClaims`]: two daemons on one host never share one).
//! The user namespace is made by a process running as the range's root
//! (`base`), so that the namespace is that host user's: the kernel's
//! per-user counts (inotify instances and watches, processes, message
//! queues) are per sandbox. Its network namespace is made inside it (so
//! that the sandbox may mount its own sysfs, and its root may bind low
//! ports there); both are kept by bind mounts of their nsfs files, and
//! the host wires the network from outside as before.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use paddock_core::{Error, Result};

/// Ids per sandbox: 0..65535 inside (`nobody` is 65534).
pub const RANGE: u32 = 65536;
/// The first host id given to sandboxes: 2^30, above any system's users
/// and the usual /etc/subuid ranges, and below 2^31, where tools that
/// read an id as a signed int go wrong.
pub const FIRST: u32 = 1 << 30;
/// How many ranges fit below 2^31.
pub const RANGES: u32 = (1 << 14) - 1;

/// Host-wide record of the ranges in use, one file per range.
pub const CLAIMS_DIR: &str = "/run/paddock/ids";
/// Where user namespaces are kept (bind mounts of their nsfs files).
pub const USERNS_DIR: &str = "/run/paddock/userns";

/// A sandbox's ids on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    /// The host id of the sandbox's root (uid and gid).
    pub base: u32,
}

impl IdRange {
    pub fn nth(n: u32) -> Option<IdRange> {
        (n < RANGES).then(|| IdRange {
            base: FIRST + n * RANGE,
        })
    }

    /// `/proc/<pid>/uid_map` (and gid_map): the whole range from 0.
    pub fn map_line(&self) -> String {
        format!("0 {} {RANGE}\n", self.base)
    }
}

/// The ranges this host's daemons hold: a file per range under
/// [`CLAIMS_DIR`], made with `O_EXCL` and naming its holder (the network
/// namespace it goes with), removed when the sandbox is gone.
pub struct IdClaims {
    dir: PathBuf,
}

impl Default for IdClaims {
    fn default() -> Self {
        IdClaims::new(Path::new(CLAIMS_DIR))
    }
}

impl IdClaims {
    pub fn new(dir: &Path) -> IdClaims {
        IdClaims {
            dir: dir.to_path_buf(),
        }
    }

    fn file(&self, r: IdRange) -> PathBuf {
        self.dir.join(r.base.to_string())
    }

    /// Claims the first free range for `holder`.
    pub fn claim(&self, holder: &str) -> Result<IdRange> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.dir.display())))?;
        for n in 0..RANGES {
            let Some(r) = IdRange::nth(n) else { break };
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.file(r))
            {
                Ok(mut f) => {
                    f.write_all(holder.as_bytes())
                        .map_err(|e| Error::Internal(format!("id range claim: {e}")))?;
                    return Ok(r);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::Internal(format!("id range claim: {e}"))),
            }
        }
        Err(Error::Quota(format!(
            "no free id ranges left ({RANGES} sandboxes hold one each)"
        )))
    }

    /// Who holds `r`, if anyone.
    pub fn holder(&self, r: IdRange) -> Option<String> {
        std::fs::read_to_string(self.file(r)).ok()
    }

    /// Claims `r` for `holder` again (a daemon that restarted, whose
    /// sandbox still has it): an error if another holds it.
    pub fn adopt(&self, r: IdRange, holder: &str) -> Result<()> {
        match self.holder(r) {
            Some(h) if h == holder => Ok(()),
            Some(h) => Err(Error::Conflict(format!(
                "id range {} is held by {h}, not {holder}",
                r.base
            ))),
            None => std::fs::create_dir_all(&self.dir)
                .and_then(|()| std::fs::write(self.file(r), holder))
                .map_err(|e| Error::Internal(format!("id range claim: {e}"))),
        }
    }

    /// Gives `r` back, if `holder` holds it.
    pub fn release(&self, r: IdRange, holder: &str) {
        if self.holder(r).as_deref() == Some(holder) {
            let _ = std::fs::remove_file(self.file(r));
        }
    }

    /// Removes claims whose holder is one of this daemon's namespaces
    /// (`prefix` and 12 hex digits, `net::Network`'s names) and is not in
    /// `keep`; how many. (A daemon on bridge `pd` does not take `pd-x`'s.)
    pub fn gc(&self, prefix: &str, keep: &[String]) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let Ok(h) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let ours = h
                .strip_prefix(prefix)
                .is_some_and(|t| t.len() == 12 && t.bytes().all(|b| b.is_ascii_hexdigit()));
            if ours && !keep.contains(&h) && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Internal(format!("user namespace: {what}: {e}"))
}

/// Makes `dir` a shared mount point, as `ip netns add` does for
/// /run/netns, so that namespaces bound there are seen from every mount
/// namespace.
pub fn share_dir(dir: &Path) -> Result<()> {
    let fail =
        |what: &str, e: nix::Error| Error::Internal(format!("{}: {what}: {e}", dir.display()));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("{}: mkdir: {e}", dir.display())))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, dir, Some("none"), shared, None::<&str>).is_err() {
        mount(
            Some(dir),
            dir,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail("bind", e))?;
        mount(None::<&str>, dir, Some("none"), shared, None::<&str>)
            .map_err(|e| fail("share", e))?;
    }
    Ok(())
}

/// The path of the user namespace kept for `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(USERNS_DIR).join(name)
}

/// A child in new namespaces (`flags`), as host user `as_id` (uid and gid,
/// no supplementary groups) when given, running `sleep` until it is ended
/// (at most a minute, should the daemon die first). `spawn` returns once
/// the child has exec'd: its namespaces exist.
fn spawn_unshared(flags: libc::c_int, as_id: Option<u32>) -> Result<std::process::Child> {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (setgroups, setresgid,
    // setresuid, unshare), touching no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(id) = as_id {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(id, id, id) != 0
                    || libc::setresuid(id, id, id) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| err("spawn")(e.to_string()))
}

/// Makes a user namespace owned by the range's root and mapping 0..65536
/// inside onto the range, and a network namespace it owns; binds them at
/// [`path`]`(name)` and `net_path` (which must not exist).
///
/// A child process runs as the range's root (so that the namespace is
/// that user's), unshares both namespaces and execs `sleep`; once it has,
/// the daemon writes its maps (it holds CAP_SETUID over every namespace),
/// binds its namespaces and ends it.
pub fn create_with_net(r: IdRange, name: &str, net_path: &Path) -> Result<()> {
    static SHARED: std::sync::Once = std::sync::Once::new();
    let mut shared = Ok(());
    SHARED.call_once(|| shared = share_dir(Path::new(USERNS_DIR)));
    shared?;
    let user_path = path(name);
    let mut child = spawn_unshared(libc::CLONE_NEWUSER | libc::CLONE_NEWNET, Some(r.base))?;
    let pid = child.id();
    let result = (|| -> Result<()> {
        let map = r.map_line();
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), &map).map_err(|e| err(f)(e.to_string()))?;
        }
        for (ns, target) in [("user", user_path.as_path()), ("net", net_path)] {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(target)
                .map_err(|e| err("create")(format!("{}: {e}", target.display())))?;
            mount(
                Some(format!("/proc/{pid}/ns/{ns}").as_str()),
                target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| err("bind")(format!("{ns}: {e}")))?;
        }
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    if result.is_err() {
        remove(name);
        let _ = umount2(net_path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(net_path);
    }
    result
}

/// A user namespace with these maps (lines of `/proc/<pid>/uid_map`),
/// for an idmapped mount and nothing else: no process stays in it.
pub fn with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let mut child = spawn_unshared(libc::CLONE_NEWUSER, None)?;
    let pid = child.id();
    let result = std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)
        .map_err(|e| err("uid_map")(e.to_string()))
        .and_then(|()| {
            std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)
                .map_err(|e| err("gid_map")(e.to_string()))
        })
        .and_then(|()| {
            std::fs::File::open(format!("/proc/{pid}/ns/user"))
                .map(OwnedFd::from)
                .map_err(|e| err("open")(e.to_string()))
        });
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Removes the user namespace kept for `name` (it goes once nothing else
/// holds it).
pub fn remove(name: &str) {
    let p = path(name);
    let _ = umount2(&p, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&p);
}

/// Opens the user namespace kept for `name`.
pub fn open(name: &str) -> Result<OwnedFd> {
    let f = std::fs::File::open(path(name)).map_err(|e| err("open")(e.to_string()))?;
    Ok(f.into())
}

/// `open_tree(2)` flags and `mount_setattr(2)` attributes (linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| err("path")(p.display().to_string()))
}

/// Mounts a copy of `src` at `target` (an existing directory or file) whose
/// owners are seen through `userns`: a file the host's uid 0 owns is the
/// namespace's root's, and what its root writes there is the host's root's.
/// For shared, read-only things (image layers, the host's /usr, the
/// sandbox's /etc files), and host directories an operator binds in (as
/// Kubernetes and podman idmap volumes); never for the sandbox's own
/// files, which are its range's on the host. Always nosuid and nodev;
/// read-only when `ro`.
pub fn idmapped_bind(src: &Path, target: &Path, userns: &OwnedFd, ro: bool) -> Result<()> {
    let csrc = cpath(src)?;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new
    // descriptor (or -1); no memory of ours is written.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    attach(idmap_tree(fd, src, Some(userns), ro)?, target)
}

/// Attaches the detached tree at `target`.
fn attach(tree: OwnedFd, target: &Path) -> Result<()> {
    let empty = std::ffi::CString::default();
    let ctarget = cpath(target)?;
    // SAFETY: move_mount reads the two NUL-terminated paths; the tree's
    // descriptor is ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(err("move_mount")(format!(
            "{}: {}",
            target.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// A detached copy of the tree at `src` (an open directory), idmapped
/// through `userns`'s maps, attached nowhere: its descriptor reaches it.
pub fn idmapped_clone(
    src: std::os::fd::BorrowedFd<'_>,
    what: &Path,
    userns: &OwnedFd,
    ro: bool,
) -> Result<OwnedFd> {
    idmap_tree(open_tree_clone(src), what, Some(userns), ro)
}

/// `open_tree(OPEN_TREE_CLONE)` of the tree open at `src`: the detached
/// copy's descriptor, or -1.
fn open_tree_clone(src: std::os::fd::BorrowedFd<'_>) -> i64 {
    let empty = std::ffi::CString::default();
    // SAFETY: open_tree reads the empty NUL-terminated path and clones
    // the tree of the open descriptor; no memory of ours is written.
    unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            src.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | AT_RECURSIVE
                | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    }
}

/// A detached copy of the tree open at `src`, nosuid and nodev (and
/// read-only when `ro`), idmapped by `userns` when given.
pub fn clone_tree(
    src: std::os::fd::BorrowedFd<'_>,
    what: &Path,
    userns: Option<&OwnedFd>,
    ro: bool,
) -> Result<OwnedFd> {
    idmap_tree(open_tree_clone(src), what, userns, ro)
}

/// Idmaps the detached tree `fd` (from open_tree, or -1 for its error).
fn idmap_tree(fd: i64, src: &Path, userns: Option<&OwnedFd>, ro: bool) -> Result<OwnedFd> {
    let empty = std::ffi::CString::default();
    if fd < 0 {
        return Err(err("open_tree")(format!(
            "{}: {}",
            src.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd was just returned by open_tree and is owned by nothing
    // else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if userns.is_some() {
        set |= MOUNT_ATTR_IDMAP;
    }
    if ro {
        set |= MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |ns| ns.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr reads `attr` (size given) and the empty path;
    // both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(err("mount_setattr")(format!(
            "{}: {}",
            src.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_apart_and_below_2_31() {
        let a = IdRange::nth(0).unwrap();
        let b = IdRange::nth(1).unwrap();
        assert_eq!(a.base, 1 << 30);
        assert_eq!(b.base - a.base, RANGE);
        let last = IdRange::nth(RANGES - 1).unwrap();
        assert!(u64::from(last.base) + u64::from(RANGE) <= 1 << 31);
        assert!(IdRange::nth(RANGES).is_none());
        assert_eq!(a.map_line(), "0 1073741824 65536\n");
    }

    #[test]
    fn claims_are_exclusive_and_go_back() {
        let d = tempfile::tempdir().unwrap();
        let c = IdClaims::new(d.path());
        let a = c.claim("br-00000000000a").unwrap();
        let b = c.claim("br-00000000000b").unwrap();
        let other = c.claim("br-x-00000000000c").unwrap();
        assert_ne!(a, b);
        assert!(c.adopt(a, "br-other").is_err());
        c.adopt(a, "br-00000000000a").unwrap();
        c.release(a, "br-zz");
        assert_eq!(c.holder(a).as_deref(), Some("br-00000000000a"));
        c.release(a, "br-00000000000a");
        assert_eq!(c.claim("br-00000000000d").unwrap(), a);
        // Only this daemon's (bridge `br`), not bridge `br-x`'s.
        assert_eq!(c.gc("br-", &["br-00000000000d".into()]), 1);
        assert_eq!(c.holder(b), None);
        assert_eq!(c.holder(a).as_deref(), Some("br-00000000000d"));
        assert_eq!(c.holder(other).as_deref(), Some("br-x-00000000000c"));
    }
}
