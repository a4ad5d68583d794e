//! Unpacking a layer blob into an overlayfs lower directory.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use paddock_core::{Error, Result};

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        what: "image layer".into(),
        reason: format!("{what}: {e}"),
    }
}

/// Unpacks `blob` (tar, gzip or zstd by media type) into `dir`, turning
/// OCI whiteouts into overlayfs ones. Writes `dir.tmp` and renames it.
pub fn unpack_layer(blob: &Path, media_type: &str, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err("create", e))?;
    let mut f = std::fs::File::open(blob).map_err(|e| err("open blob", e))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(|e| err("read blob", e))?;
    std::io::Seek::rewind(&mut f).map_err(|e| err("read blob", e))?;
    let reader: Box<dyn Read> =
        if media_type.ends_with("zstd") || head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
            Box::new(zstd::stream::Decoder::new(f).map_err(|e| err("zstd", e))?)
        } else if media_type.ends_with("gzip") || head[..n.min(2)] == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
    let res = unpack_tar(reader, &tmp);
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Make it durable before it appears under its final name.
    let dir_fd = std::fs::File::open(&tmp).map_err(|e| err("open layer", e))?;
    // SAFETY: syncfs on a descriptor we own for the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir_fd)) } != 0 {
        return Err(err("sync layer", std::io::Error::last_os_error()));
    }
    std::fs::rename(&tmp, dir).map_err(|e| err("rename", e))?;
    Ok(())
}

fn safe_rel(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn unpack_tar(reader: impl Read, dir: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(|e| err("tar", e))? {
        let mut entry = entry.map_err(|e| err("tar", e))?;
        let path = entry.path().map_err(|e| err("tar path", e))?.into_owned();
        let Some(rel) = safe_rel(&path) else { continue };
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        if name == b".wh..wh..opq" {
            let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(|e| err("mkdir", e))?;
            set_opaque(&parent)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(|e| err("mkdir", e))?;
            let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
            whiteout(&target)?;
            continue;
        }
        entry
            .unpack_in(dir)
            .map_err(|e| err(&format!("unpack {}", path.display()), e))?;
    }
    Ok(())
}

fn whiteout(p: &Path) -> Result<()> {
    let _ = std::fs::remove_file(p);
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| err("whiteout", e))?;
    // SAFETY: mknod with a valid NUL-terminated path; a 0/0 character device
    // is how overlayfs marks a deleted entry.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    if rc != 0 {
        return Err(err("whiteout", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_opaque(dir: &Path) -> Result<()> {
    let p = CString::new(dir.as_os_str().as_bytes()).map_err(|e| err("opaque", e))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a one-byte value that live
    // for the call.
    let rc = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(err("opaque", std::io::Error::last_os_error()));
    }
    Ok(())
}
