//! Volumes as loop-mounted ext4 images: `<root>/<id>.img`, a sparse file of
//! the volume's size, mounted at `<root>/<id>/`.
//!
//! Why a filesystem image and not a project quota: the size holds on any
//! host filesystem (this host's data dir is an ext4 without the `project`
//! feature, which cannot be turned on while it is mounted), a full volume
//! is the kernel's own `ENOSPC` inside the sandbox and never the daemon's
//! error, the image is one file to copy or hand a microVM as a disk, and
//! it costs only the blocks written. The image's root directory is owned
//! by root (0:0), as the sandbox sees it through an idmapped mount.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_core::{Error, Result};
use uuid::Uuid;

pub struct LoopVolumes {
    root: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::Internal(format!("{:?}: {e}", cmd.get_program())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::Unavailable {
                what: "volume storage".into(),
                reason: format!("{what}: the disk holding the daemon's data is full"),
            }
        } else {
            Error::Internal(format!("{what}: {e}"))
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    m.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

impl LoopVolumes {
    pub fn new(root: &Path) -> std::io::Result<LoopVolumes> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        Ok(LoopVolumes {
            root: root.to_path_buf(),
        })
    }

    fn image(&self, id: Uuid) -> PathBuf {
        self.root.join(format!("{id}.img"))
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn mount(&self, id: Uuid) -> Result<PathBuf> {
        let dir = self.dir(id);
        if is_mount_point(&dir) {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(io("volume mount point"))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
            .arg(self.image(id))
            .arg(&dir))?;
        Ok(dir)
    }

    /// Unmounts every volume (the daemon stops for good).
    pub fn unmount_all(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if is_mount_point(&e.path()) {
                    let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

impl paddock_core::VolumeStore for LoopVolumes {
    fn create(&self, id: Uuid, size_mb: u64) -> Result<String> {
        let img = self.image(id);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&img)
            .map_err(io("volume image"))?;
        f.set_len(size_mb << 20).map_err(io("volume image"))?;
        drop(f);
        let made = run(Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "root_owner=0:0,lazy_itable_init=1,nodiscard",
            ])
            .arg(&img))
        .and_then(|()| self.mount(id));
        match made {
            Ok(dir) => Ok(dir.to_string_lossy().into_owned()),
            Err(e) => {
                let _ = std::fs::remove_file(&img);
                let _ = std::fs::remove_dir(self.dir(id));
                Err(e)
            }
        }
    }

    fn source(&self, id: Uuid) -> Result<String> {
        if !self.image(id).is_file() {
            return Err(Error::not_found(format!("volume {id}'s data")));
        }
        Ok(self.mount(id)?.to_string_lossy().into_owned())
    }

    fn usage(&self, id: Uuid) -> Option<(u64, u64)> {
        let dir = self.dir(id);
        if !is_mount_point(&dir) {
            return None;
        }
        let s = nix::sys::statvfs::statvfs(&dir).ok()?;
        let bs = s.fragment_size() as u64;
        let total = s.blocks() as u64 * bs;
        Some((total - s.blocks_free() as u64 * bs, total))
    }

    fn remove(&self, id: Uuid) -> Result<()> {
        let dir = self.dir(id);
        if is_mount_point(&dir) {
            nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::Internal(format!("unmount volume {id}: {e}")))?;
        }
        let _ = std::fs::remove_dir(&dir);
        match std::fs::remove_file(self.image(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove volume")(e)),
            _ => Ok(()),
        }
    }

    fn gc(&self, keep: &[Uuid]) -> Result<usize> {
        let mut n = 0;
        let rd = std::fs::read_dir(&self.root).map_err(io("volumes"))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(id) = Uuid::parse_str(name.trim_end_matches(".img")) else {
                continue;
            };
            if !keep.contains(&id) && name.ends_with(".img") {
                self.remove(id)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Mounts the host directory `source` at `path` in the running sandbox
/// whose init is `pid` (made there first, as `owner` when given),
/// idmapped by `userns` when the sandbox has one, read-only when `ro`.
pub fn attach_in(
    pid: u32,
    rootfs: &Path,
    source: &Path,
    path: &str,
    userns: Option<&std::os::fd::OwnedFd>,
    ro: bool,
) -> Result<()> {
    let _ = rootfs;
    let src = std::fs::File::open(source).map_err(io("volume directory"))?;
    let tree = crate::userns::clone_tree(src.as_fd(), source, userns, ro)?;
    let target = crate::fuse::open_dir_in(pid, path)?;
    crate::fuse::attach_in(pid, tree.as_fd(), target.as_fd())
}

/// What `openat2` takes.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// Unmounts `path` in the mount namespace of process `pid`, only if it is
/// the mount of the volume whose root is `(dev, ino)`, reached without any
/// symbolic link; not lazily (a volume still in use is `EBUSY`, a 409).
/// The caller keeps the sandbox frozen meanwhile, so that nothing inside
/// can swap the path between the check and the unmount.
pub fn detach_in(pid: u32, path: &str, root: (u64, u64)) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(io("the sandbox's mount namespace"))?;
    let cpath =
        std::ffi::CString::new(path).map_err(|_| Error::invalid("path", "NUL in a path"))?;
    let (ns_fd, p) = (ns.as_raw_fd(), cpath.as_ptr());
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    let how_ptr = &how as *const OpenHow;
    // SAFETY: the child makes only system calls (setns, openat2, fstat,
    // close, umount2, _exit) on a descriptor, a string and a struct the
    // parent prepared, touching no lock or allocator state, and exits
    // without unwinding.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io("fork")(std::io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: see above.
        unsafe {
            if libc::setns(ns_fd, libc::CLONE_NEWNS) != 0 {
                libc::_exit(100 + *libc::__errno_location() % 100);
            }
            let fd = libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                p,
                how_ptr,
                std::mem::size_of::<OpenHow>(),
            );
            if fd < 0 {
                libc::_exit(*libc::__errno_location() % 100);
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd as i32, &mut st) != 0 {
                libc::_exit(*libc::__errno_location() % 100);
            }
            libc::close(fd as i32);
            if (st.st_dev, st.st_ino) != root {
                // Not the volume's mount: nothing to unmount there.
                libc::_exit(99);
            }
            if libc::umount2(p, libc::UMOUNT_NOFOLLOW) != 0 {
                libc::_exit(*libc::__errno_location() % 100);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is ours.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io("waitpid")(e));
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(99) => Err(Error::Conflict(format!(
            "{path} in the sandbox is not the volume's mount"
        ))),
        Some(c) if c == libc::EBUSY => Err(Error::Conflict(format!(
            "the volume at {path} is in use (a process's open files or working directory)"
        ))),
        Some(c) if (100..200).contains(&c) => {
            Err(io("setns")(std::io::Error::from_raw_os_error(c - 100)))
        }
        Some(c) => Err(io("unmount the volume")(std::io::Error::from_raw_os_error(
            c,
        ))),
        None => Err(Error::Internal(
            "unmount the volume: the child was killed".into(),
        )),
    }
}
