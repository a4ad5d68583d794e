//! Directories made inside a sandbox's root filesystem by the daemon, as
//! host root, without following the root's symlinks out of it.
//!
//! An image is anybody's: its `/workspace` can be a symlink to `/etc`,
//! and `create_dir_all(rootfs.join("workspace/x"))` would then make
//! `/etc/x` on the host. Every step here resolves inside the root
//! (`openat2` with `RESOLVE_IN_ROOT`: an absolute link or `..` stays in
//! it), as the sandbox itself would see the path.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

fn open_in(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(
        root,
        if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        },
        how,
    )
}

/// `mkdir -p path` inside `root`, every component resolved inside it; the
/// directories it makes are `owner`'s (uid and gid; the sandbox's root on
/// the host, so that its root owns them inside its user namespace).
pub fn mkdir_all(root: &Path, path: &str, owner: Option<u32>) -> io::Result<()> {
    let rootfd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut sofar = PathBuf::new();
    for c in Path::new(path).components() {
        let name = match c {
            Component::Normal(n) => n,
            Component::ParentDir => {
                sofar.push("..");
                continue;
            }
            _ => continue,
        };
        let parent = open_in(&rootfd, &sofar)?;
        match mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                if let Some(id) = owner {
                    nix::unistd::fchownat(
                        &parent,
                        name,
                        Some(id.into()),
                        Some(id.into()),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                }
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        sofar.push(name);
    }
    // What the path names now is a directory inside the root.
    open_in(&rootfd, &sofar)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_in_the_image_does_not_lead_out_of_the_root() {
        let base = std::env::temp_dir().join(format!("pd-inroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // The image's /workspace points at a host directory, absolutely and
        // by `..`.
        std::os::unix::fs::symlink(&outside, root.join("workspace")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("up")).unwrap();
        for p in ["/workspace/made", "/up/made", "/../outside/made"] {
            let _ = mkdir_all(&root, p, None);
            assert!(!outside.join("made").exists(), "{p} made a host directory");
        }
        // Inside the root, links resolve as the sandbox sees them.
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("link")).unwrap();
        mkdir_all(&root, "/link/a/b", None).unwrap();
        assert!(root.join("real/a/b").is_dir());
        mkdir_all(&root, "/plain/dir", None).unwrap();
        assert!(root.join("plain/dir").is_dir());
        // Made for a sandbox's root: its owner's, what was there stays.
        use std::os::unix::fs::MetadataExt;
        mkdir_all(&root, "/plain/dir/owned", Some(1 << 30)).unwrap();
        let m = std::fs::metadata(root.join("plain/dir/owned")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1 << 30, 1 << 30));
        assert_eq!(std::fs::metadata(root.join("plain/dir")).unwrap().uid(), 0);
        let _ = std::fs::remove_dir_all(&base);
    }
}
