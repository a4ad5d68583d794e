//! Filesystem layers as overlayfs keeps them: a directory tree whose
//! deletions are whiteouts (a character device 0:0) and whose replaced
//! directories carry `trusted.overlay.opaque`. A sandbox's writable layer
//! (an overlay's upper directory) is copied into one ([`copy_layer`]), a
//! stack of them flattened into one ([`merge`]), and each named by its
//! content ([`digest`]).
//!
//! Owners are stored as the sandbox sees them: a sandbox in a user
//! namespace writes its files as its range of host ids, and a copy shifts
//! them back by the range's base (an id outside the range becomes 65534,
//! nobody), so that a layer can be mounted, idmapped, under any range.
//! POSIX ACLs and file capabilities carry ids too and are shifted the same
//! way. Of overlayfs's own attributes only `opaque` is kept (`origin`,
//! `impure` and the rest describe the upper directory they were made in).
//!
//! The source is read without following a symbolic link anywhere, and is
//! expected to be still (a frozen or stopped sandbox's).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The attribute overlayfs marks a replaced directory with.
pub const OPAQUE: &str = "trusted.overlay.opaque";
const NOBODY: u32 = 65534;

/// A layer's content digest (`sha256:<hex>`) and the bytes of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub digest: String,
    pub bytes: u64,
}

/// Host ids a sandbox's ids are shifted by: `base..base + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub base: u32,
    pub len: u32,
}

impl Shift {
    fn id(self, host: u32) -> u32 {
        if host >= self.base && host - self.base < self.len {
            host - self.base
        } else {
            NOBODY
        }
    }
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether `m` is an overlayfs whiteout.
pub fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// The extended attributes of `p` (not followed), by name.
fn xattrs(p: &Path) -> std::io::Result<Vec<(OsString, Vec<u8>)>> {
    let c = cstr(p)?;
    let mut names = vec![0u8; 1024];
    let n = loop {
        // SAFETY: `c` is a NUL-terminated path and `names` a writable
        // buffer of the length passed.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        let mut value = vec![0u8; 256];
        let len = loop {
            // SAFETY: as above; `cname` is NUL-terminated.
            let r = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if r >= 0 {
                break Some(r as usize);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if value.len() < 1 << 16 => value.resize(1 << 16, 0),
                // Gone since it was listed.
                Some(libc::ENODATA) => break None,
                _ => return Err(e),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((OsStr::from_bytes(name).to_os_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn set_xattr(p: &Path, name: &OsStr, value: &[u8]) -> std::io::Result<()> {
    let (c, n) = (cstr(p)?, cstr(Path::new(name))?);
    // SAFETY: NUL-terminated path and name, `value` readable for its length.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// An attribute as it is stored in a layer: `None` to leave it out.
fn keep_xattr(name: &OsStr, value: &[u8], shift: Option<Shift>) -> Option<Vec<u8>> {
    let name = name.to_str()?;
    if name.starts_with("trusted.overlay.") {
        return (name == OPAQUE).then(|| value.to_vec());
    }
    match name {
        "system.posix_acl_access" | "system.posix_acl_default" => {
            let mut v = value.to_vec();
            if let Some(s) = shift {
                // A 4-byte header, then entries of tag (u16), perm (u16)
                // and id (u32); ids of named users (2) and groups (8).
                for e in v.get_mut(4..)?.chunks_exact_mut(8) {
                    let tag = u16::from_le_bytes([e[0], e[1]]);
                    if tag == 2 || tag == 8 {
                        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                        e[4..8].copy_from_slice(&s.id(id).to_le_bytes());
                    }
                }
            }
            Some(v)
        }
        "security.capability" => {
            let mut v = value.to_vec();
            // Version 3 names the root id it applies to (the range's root,
            // read from the host).
            if let (Some(s), 24) = (shift, v.len()) {
                let root = u32::from_le_bytes([v[20], v[21], v[22], v[23]]);
                v[20..24].copy_from_slice(&s.id(root).to_le_bytes());
            }
            Some(v)
        }
        _ if name.starts_with("user.") => Some(value.to_vec()),
        _ => None,
    }
}

fn lchown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

fn set_times(p: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
    let c = cstr(p)?;
    let ts = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: NUL-terminated path, two timespecs as utimensat reads.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

fn mknod(p: &Path, mode: u32, dev: u64) -> std::io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

/// The parts of an open file that hold data, as (offset, length): its
/// holes are skipped (a sparse file of terabytes in a sandbox's tmpfs
/// costs a copy only what it holds).
fn data_segments(f: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut at: i64 = 0;
    let end = size as i64;
    while at < end {
        // SAFETY: lseek on an open descriptor; no memory involved.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // No data past `at`.
                Some(libc::ENXIO) => break,
                // A filesystem without SEEK_DATA: all of it is data.
                Some(libc::EINVAL) if out.is_empty() => return Ok(vec![(0, size)]),
                _ => return Err(std::io::Error::last_os_error()),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        if hole > data {
            out.push((data as u64, (hole - data) as u64));
        }
        at = hole;
    }
    Ok(out)
}

/// Copies one tree into another, entry by entry.
struct Copier {
    shift: Option<Shift>,
    /// Files with more than one link seen so far: (device, inode) → the
    /// copy's path, to link the next ones to.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
    bytes: u64,
}

impl Copier {
    fn new(shift: Option<Shift>) -> Copier {
        Copier {
            shift,
            links: HashMap::new(),
            buf: vec![0; 1 << 20],
            bytes: 0,
        }
    }

    fn ids(&self, m: &std::fs::Metadata) -> (u32, u32) {
        match self.shift {
            Some(s) => (s.id(m.uid()), s.id(m.gid())),
            None => (m.uid(), m.gid()),
        }
    }

    /// Sets what `to` keeps of `from`'s owner, attributes and mode.
    fn meta(&self, from: &Path, to: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
        let (uid, gid) = self.ids(m);
        lchown(to, uid, gid)?;
        for (name, value) in xattrs(from)? {
            if let Some(v) = keep_xattr(&name, &value, self.shift) {
                set_xattr(to, &name, &v)?;
            }
        }
        if !m.file_type().is_symlink() {
            // After the owner: a chown clears set-ID bits.
            std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(m.mode()))?;
        }
        Ok(())
    }

    /// Copies the entry `from` (already looked at: `m`) to `to`, which
    /// does not exist.
    fn entry(&mut self, from: &Path, to: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(to)?;
            self.children(from, to)?;
            self.meta(from, to, m)?;
            return set_times(to, m);
        }
        if m.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                return std::fs::hard_link(first, to);
            }
            self.links.insert((m.dev(), m.ino()), to.to_path_buf());
        }
        if ft.is_file() {
            let mut src = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(from)?;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(to)?;
            // The data only, holes kept.
            use std::io::Seek;
            for (off, len) in data_segments(&src, m.size())? {
                src.seek(std::io::SeekFrom::Start(off))?;
                dst.seek(std::io::SeekFrom::Start(off))?;
                let mut left = len;
                while left > 0 {
                    let want = left.min(self.buf.len() as u64) as usize;
                    let n = match src.read(&mut self.buf[..want]) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    dst.write_all(&self.buf[..n])?;
                    self.bytes += n as u64;
                    left -= n as u64;
                }
            }
            dst.set_len(m.size())?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        } else if ft.is_char_device() && m.rdev() == 0 {
            mknod(to, libc::S_IFCHR, 0)?;
        } else if ft.is_fifo() {
            mknod(to, libc::S_IFIFO | 0o600, 0)?;
        } else {
            // Sockets, and devices a sandbox cannot have made: nothing
            // to keep.
            return Ok(());
        }
        self.meta(from, to, m)?;
        set_times(to, m)
    }

    /// Copies the entries of directory `from` into `to`, sorted.
    fn children(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        for name in sorted_names(from)? {
            let (f, t) = (from.join(&name), to.join(&name));
            let m = std::fs::symlink_metadata(&f)?;
            self.entry(&f, &t, &m)?;
        }
        Ok(())
    }
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Copies the layer (or upper directory) `src` into `dst`, which must not
/// exist; owners shifted back by `shift`. Returns the bytes of file data
/// copied.
pub fn copy_layer(src: &Path, dst: &Path, shift: Option<Shift>) -> std::io::Result<u64> {
    let m = std::fs::symlink_metadata(src)?;
    if !m.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a directory", src.display()),
        ));
    }
    let mut c = Copier::new(shift);
    c.entry(src, dst, &m)?;
    Ok(c.bytes)
}

/// Removes whatever `p` is (a tree too); nothing there is fine.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies `layer` on top of the tree `dst`, as overlayfs would show it,
/// keeping whiteouts and opaque marks (they may hide what is below
/// `dst`'s own layers).
fn apply(c: &mut Copier, layer: &Path, dst: &Path) -> std::io::Result<()> {
    for name in sorted_names(layer)? {
        let (f, t) = (layer.join(&name), dst.join(&name));
        let m = std::fs::symlink_metadata(&f)?;
        let there = std::fs::symlink_metadata(&t).ok();
        if m.is_dir() {
            let opaque = xattrs(&f)?
                .iter()
                .any(|(n, v)| n == OPAQUE && v.as_slice() == b"y");
            match there {
                Some(d) if d.is_dir() && !opaque => {
                    apply(c, &f, &t)?;
                    c.meta(&f, &t, &m)?;
                    set_times(&t, &m)?;
                }
                _ => {
                    remove_any(&t)?;
                    c.entry(&f, &t, &m)?;
                }
            }
        } else {
            remove_any(&t)?;
            c.entry(&f, &t, &m)?;
        }
    }
    Ok(())
}

/// Makes `dst` (which must not exist) one layer that shows what `layers`
/// (bottom first) show stacked. Returns the bytes of file data copied.
pub fn merge(layers: &[PathBuf], dst: &Path) -> std::io::Result<u64> {
    let Some((first, rest)) = layers.split_first() else {
        std::fs::create_dir(dst)?;
        return Ok(0);
    };
    let mut c = Copier::new(None);
    let m = std::fs::symlink_metadata(first)?;
    c.entry(first, dst, &m)?;
    for l in rest {
        // Links are per layer: a later layer's file is a file of its own.
        c.links.clear();
        apply(&mut c, l, dst)?;
        let m = std::fs::symlink_metadata(l)?;
        c.meta(l, dst, &m)?;
        set_times(dst, &m)?;
    }
    Ok(c.bytes)
}

/// The digest of a layer's content: every entry in name order with its
/// kind, mode, owner, modification time, kept attributes and what it holds
/// (a file's bytes, a link's target, the first path of a hard link).
pub fn digest(dir: &Path) -> std::io::Result<Summary> {
    struct Walk {
        h: Sha256,
        buf: Vec<u8>,
        bytes: u64,
        links: HashMap<(u64, u64), Vec<u8>>,
    }
    fn entry(w: &mut Walk, p: &Path, rel: &[u8], m: &std::fs::Metadata) -> std::io::Result<()> {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_char_device() {
            b'c'
        } else if ft.is_fifo() {
            b'p'
        } else {
            b'?'
        };
        w.h.update([kind, 0]);
        w.h.update(rel);
        w.h.update(format!(
            "\0{:o}\0{}\0{}\0{}.{}\0",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        ));
        for (n, v) in xattrs(p)? {
            w.h.update(n.as_bytes());
            w.h.update(b"=");
            w.h.update(hex::encode(v));
            w.h.update(b";");
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = w.links.get(&(m.dev(), m.ino())) {
                w.h.update(b"\0link\0");
                w.h.update(first);
                w.h.update(b"\n");
                return Ok(());
            }
            w.links.insert((m.dev(), m.ino()), rel.to_vec());
        }
        if ft.is_file() {
            w.h.update(format!("\0{}\0", m.size()));
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)?;
            // Its data by offset: holes read as nothing (the same file
            // written densely digests otherwise, which is only a second
            // copy of the same bytes).
            use std::io::Seek;
            for (off, len) in data_segments(&f, m.size())? {
                w.h.update(format!("@{off}+{len}:"));
                f.seek(std::io::SeekFrom::Start(off))?;
                let mut left = len;
                while left > 0 {
                    let want = left.min(w.buf.len() as u64) as usize;
                    let n = match f.read(&mut w.buf[..want]) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    w.h.update(&w.buf[..n]);
                    w.bytes += n as u64;
                    left -= n as u64;
                }
            }
        } else if ft.is_symlink() {
            w.h.update(b"\0");
            w.h.update(std::fs::read_link(p)?.as_os_str().as_bytes());
        } else if ft.is_char_device() {
            w.h.update(format!("\0{}", m.rdev()));
        }
        w.h.update(b"\n");
        if ft.is_dir() {
            for name in sorted_names(p)? {
                let child = p.join(&name);
                let mut r = rel.to_vec();
                r.push(b'/');
                r.extend_from_slice(name.as_bytes());
                let cm = std::fs::symlink_metadata(&child)?;
                entry(w, &child, &r, &cm)?;
            }
        }
        Ok(())
    }
    let mut w = Walk {
        h: Sha256::new(),
        buf: vec![0; 1 << 20],
        bytes: 0,
        links: HashMap::new(),
    };
    let m = std::fs::symlink_metadata(dir)?;
    entry(&mut w, dir, b"", &m)?;
    Ok(Summary {
        digest: format!("sha256:{}", hex::encode(w.h.finalize())),
        bytes: w.bytes,
    })
}

/// Removes from the layer `dir` every entry whose path inside (`/a/b`)
/// `keep` refuses, but the directories on the way to what it keeps (a
/// kept directory keeps all below it). Such a directory loses its opaque
/// mark: restored, it shows the image's other files beside the kept ones.
pub fn retain(dir: &Path, keep: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
    fn walk(dir: &Path, rel: &str, keep: &dyn Fn(&str) -> bool) -> std::io::Result<bool> {
        let mut any = false;
        for name in sorted_names(dir)? {
            let p = dir.join(&name);
            let r = format!("{rel}/{}", name.to_string_lossy());
            if keep(&r) {
                any = true;
                continue;
            }
            let m = std::fs::symlink_metadata(&p)?;
            if m.is_dir() && walk(&p, &r, keep)? {
                any = true;
                let c = cstr(&p)?;
                let n = CString::new(OPAQUE).expect("no NUL");
                // SAFETY: NUL-terminated path and name.
                let rc = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
                if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENODATA)
                {
                    return Err(std::io::Error::last_os_error());
                }
            } else {
                remove_any(&p)?;
            }
        }
        Ok(any)
    }
    walk(dir, "", keep).map(|_| ())
}

/// Flushes the filesystem holding `p` to its disk.
pub fn sync_fs(p: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(p)?;
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open descriptor for the call's duration.
    check(unsafe { libc::syncfs(f.as_raw_fd()) })
}

/// The snapshot layers' store: `<root>/<hex>` per layer, by the digest of
/// its content; captures staged in `<root>/.tmp-<uuid>` until committed.
/// The root is the daemon's alone (mode 0700): layers hold files as a
/// sandbox's root made them, set-user-ID ones included.
pub struct LayerStore {
    root: PathBuf,
}

fn engine_err(what: &str) -> impl Fn(std::io::Error) -> paddock_core::Error + '_ {
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            paddock_core::Error::Unavailable {
                what: "snapshot storage".into(),
                reason: format!("{what}: the disk holding the daemon's data is full"),
            }
        } else {
            paddock_core::Error::Internal(format!("{what}: {e}"))
        }
    }
}

impl LayerStore {
    pub fn new(root: &Path) -> std::io::Result<LayerStore> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        Ok(LayerStore {
            root: root.to_path_buf(),
        })
    }
}

impl paddock_core::Layers for LayerStore {
    fn stage(&self) -> paddock_core::Result<PathBuf> {
        Ok(self.root.join(format!(".tmp-{}", uuid::Uuid::new_v4())))
    }

    fn commit(&self, staged: &Path) -> paddock_core::Result<paddock_core::StoredLayer> {
        let sum = digest(staged).map_err(engine_err("digest of a layer"))?;
        sync_fs(staged).map_err(engine_err("sync of a layer"))?;
        let hex = sum.digest.trim_start_matches("sha256:");
        let dest = self.root.join(hex);
        if dest.exists() {
            // The same content is stored already.
            let _ = std::fs::remove_dir_all(staged);
        } else if let Err(e) = std::fs::rename(staged, &dest) {
            let _ = std::fs::remove_dir_all(staged);
            if !dest.exists() {
                return Err(engine_err("store a layer")(e));
            }
        }
        // The rename itself on disk before the snapshot is recorded.
        std::fs::File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(engine_err("sync the layer store"))?;
        Ok(paddock_core::StoredLayer {
            path: dest.to_string_lossy().into_owned(),
            digest: sum.digest,
            bytes: sum.bytes,
        })
    }

    fn flatten(
        &self,
        layers: &[String],
        keep: Option<paddock_core::layers::Keep>,
    ) -> paddock_core::Result<paddock_core::StoredLayer> {
        let staged = self.stage()?;
        let paths: Vec<PathBuf> = layers.iter().map(PathBuf::from).collect();
        let made = merge(&paths, &staged).and_then(|_| match &keep {
            Some(k) => retain(&staged, &**k),
            None => Ok(()),
        });
        if let Err(e) = made {
            self.discard(&staged);
            return Err(engine_err("flatten layers")(e));
        }
        self.commit(&staged)
    }

    fn discard(&self, staged: &Path) {
        if staged.starts_with(&self.root) {
            let _ = std::fs::remove_dir_all(staged);
        }
    }

    fn gc(
        &self,
        keep: &std::collections::HashSet<String>,
        staged: bool,
    ) -> paddock_core::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.root)
            .map_err(engine_err("list layers"))?
            .flatten()
        {
            let path = e.path();
            let is_staged = e.file_name().to_string_lossy().starts_with(".tmp-");
            // Kept by name (the digest), wherever the data dir was named
            // from when a sandbox recorded it.
            let gone = if is_staged {
                staged
            } else {
                !keep
                    .iter()
                    .any(|k| Path::new(k).file_name() == Some(&e.file_name()))
            };
            if gone {
                remove_any(&path).map_err(engine_err("remove a layer"))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("paddock-layer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn a_copy_keeps_content_owners_links_and_whiteouts() {
        if !root() {
            eprintln!("skipped: needs root (owners, whiteouts, trusted attributes)");
            return;
        }
        let t = tmp("copy");
        let src = t.join("upper");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("d/f"), b"hello").unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::hard_link(src.join("d/f"), src.join("d/g")).unwrap();
        std::os::unix::fs::symlink("../nowhere", src.join("d/l")).unwrap();
        mknod(&src.join("gone"), libc::S_IFCHR, 0).unwrap();
        set_xattr(&src.join("d/e"), OsStr::new(OPAQUE), b"y").unwrap();
        set_xattr(&src.join("d/e"), OsStr::new("trusted.overlay.origin"), b"x").unwrap();
        let base = 1 << 30;
        lchown(&src.join("d/f"), base + 1000, base + 1000).unwrap();
        lchown(&src.join("d/l"), 7, 7).unwrap();
        lchown(&src.join("d"), base, base).unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        // A sparse file: only what it holds is copied.
        let sparse = std::fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(1 << 40).unwrap();
        drop(sparse);
        let dst = t.join("layer");
        let n = copy_layer(&src, &dst, Some(Shift { base, len: 65536 })).unwrap();
        assert_eq!(n, 5);
        let m = std::fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!((m.len(), m.blocks()), (1 << 40, 0));
        assert_eq!(std::fs::read(dst.join("d/f")).unwrap(), b"hello");
        let m = std::fs::symlink_metadata(dst.join("d/f")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o4755));
        assert_eq!(
            m.ino(),
            std::fs::symlink_metadata(dst.join("d/g")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(dst.join("d/l")).unwrap(),
            Path::new("../nowhere")
        );
        assert_eq!(
            std::fs::symlink_metadata(dst.join("d/l")).unwrap().uid(),
            NOBODY
        );
        assert_eq!(std::fs::symlink_metadata(dst.join("d")).unwrap().uid(), 0);
        assert!(is_whiteout(
            &std::fs::symlink_metadata(dst.join("gone")).unwrap()
        ));
        let attrs = xattrs(&dst.join("d/e")).unwrap();
        assert_eq!(attrs, vec![(OsString::from(OPAQUE), b"y".to_vec())]);
        // The same content, the same digest; a byte more, another.
        let copy2 = t.join("again");
        copy_layer(&dst, &copy2, None).unwrap();
        assert_eq!(digest(&dst).unwrap(), digest(&copy2).unwrap());
        std::fs::write(copy2.join("d/f"), b"hello!").unwrap();
        assert_ne!(digest(&dst).unwrap().digest, digest(&copy2).unwrap().digest);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn retain_keeps_what_matches_and_the_way_to_it() {
        if !root() {
            eprintln!("skipped: needs root (trusted attributes)");
            return;
        }
        let t = tmp("retain");
        let l = t.join("l");
        std::fs::create_dir_all(l.join("root/deep")).unwrap();
        std::fs::create_dir_all(l.join("tmp")).unwrap();
        std::fs::write(l.join("root/deep/keep.txt"), b"k").unwrap();
        std::fs::write(l.join("root/drop.bin"), b"d").unwrap();
        std::fs::write(l.join("tmp/x"), b"x").unwrap();
        set_xattr(&l.join("root"), OsStr::new(OPAQUE), b"y").unwrap();
        retain(&l, &|p: &str| p.ends_with(".txt")).unwrap();
        assert!(l.join("root/deep/keep.txt").exists());
        assert!(!l.join("root/drop.bin").exists() && !l.join("tmp").exists());
        assert!(
            xattrs(&l.join("root")).unwrap().is_empty(),
            "no longer opaque"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_merge_shows_the_stack() {
        if !root() {
            eprintln!("skipped: needs root (whiteouts, trusted attributes)");
            return;
        }
        let t = tmp("merge");
        let (a, b, c) = (t.join("a"), t.join("b"), t.join("c"));
        std::fs::create_dir_all(a.join("keep")).unwrap();
        std::fs::create_dir_all(a.join("replaced")).unwrap();
        std::fs::write(a.join("replaced/old"), b"1").unwrap();
        std::fs::write(a.join("keep/x"), b"a").unwrap();
        std::fs::write(a.join("deleted"), b"a").unwrap();
        std::fs::create_dir_all(b.join("keep")).unwrap();
        std::fs::write(b.join("keep/y"), b"b").unwrap();
        mknod(&b.join("deleted"), libc::S_IFCHR, 0).unwrap();
        mknod(&b.join("below"), libc::S_IFCHR, 0).unwrap();
        std::fs::create_dir_all(c.join("replaced")).unwrap();
        set_xattr(&c.join("replaced"), OsStr::new(OPAQUE), b"y").unwrap();
        std::fs::write(c.join("replaced/new"), b"2").unwrap();
        std::fs::write(c.join("keep/x"), b"c").unwrap_err();
        std::fs::create_dir_all(c.join("keep")).unwrap();
        std::fs::write(c.join("keep/x"), b"c").unwrap();
        let out = t.join("out");
        merge(&[a, b, c], &out).unwrap();
        assert_eq!(std::fs::read(out.join("keep/x")).unwrap(), b"c");
        assert_eq!(std::fs::read(out.join("keep/y")).unwrap(), b"b");
        assert!(!out.join("replaced/old").exists());
        assert_eq!(std::fs::read(out.join("replaced/new")).unwrap(), b"2");
        assert!(xattrs(&out.join("replaced"))
            .unwrap()
            .iter()
            .any(|(n, _)| n == OPAQUE));
        // Whiteouts stay: they hide what lies below the merged layers.
        assert!(is_whiteout(
            &std::fs::symlink_metadata(out.join("deleted")).unwrap()
        ));
        assert!(is_whiteout(
            &std::fs::symlink_metadata(out.join("below")).unwrap()
        ));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
