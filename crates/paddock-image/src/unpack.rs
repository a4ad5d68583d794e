//! Unpacking a layer blob into an overlayfs lower directory.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use paddock_core::{Error, Result};

fn err(what: &str, e: impl std::error::Error) -> Error {
    // tar's errors keep the cause in their source.
    let mut reason = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        reason.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Unavailable {
        what: "image layer".into(),
        reason,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;

    /// A layer: a file, a whiteout of `gone`, an opaque `opaque/` with one
    /// new file in it.
    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add("etc/", b"");
        add("opaque/", b"");
        add("etc/hello", b"hi\n");
        add(".wh.gone", b"");
        add("opaque/.wh..wh..opq", b"");
        add("opaque/new", b"new\n");
        b.into_inner().unwrap()
    }

    fn check(root: &tempfile::TempDir) {
        let dir = &root.path().join("layer");
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/hello")).unwrap(),
            "hi\n"
        );
        let gone = std::fs::symlink_metadata(dir.join("gone")).unwrap();
        assert!(gone.file_type().is_char_device());
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&gone), 0);
        assert!(!dir.join(".wh.gone").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("opaque/new")).unwrap(),
            "new\n"
        );
        assert!(!dir.join("opaque/.wh..wh..opq").exists());
        let p = CString::new(dir.join("opaque").as_os_str().as_bytes()).unwrap();
        let mut v = [0u8; 4];
        // SAFETY: getxattr into a buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                v.as_mut_ptr().cast(),
                v.len(),
            )
        };
        assert_eq!(n, 1, "opaque xattr: {}", std::io::Error::last_os_error());
        assert_eq!(v[0], b'y');
    }

    /// Unpacks into `layer` of a temporary directory, removed when the
    /// returned guard drops.
    fn unpack(name: &str, blob: &[u8], media: &str) -> tempfile::TempDir {
        let root = tempfile::Builder::new()
            .prefix(&format!("paddock-unpack-{name}-"))
            .tempdir()
            .unwrap();
        std::fs::write(root.path().join("blob"), blob).unwrap();
        let dir = root.path().join("layer");
        unpack_layer(&root.path().join("blob"), media, &dir).unwrap();
        assert!(!dir.with_extension("tmp").exists());
        root
    }

    #[test]
    fn plain_gzip_and_zstd_layers_with_whiteouts() {
        let tar = layer_tar();
        check(&unpack(
            "plain",
            &tar,
            "application/vnd.oci.image.layer.v1.tar",
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        check(&unpack(
            "gzip",
            &gz,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ));
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        check(&unpack(
            "zstd",
            &zst,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ));
        // Sniffed from the bytes when the media type says nothing.
        check(&unpack("sniffed", &zst, "application/octet-stream"));
    }

    #[test]
    fn a_broken_layer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut gz = layer_tar();
        gz.truncate(700);
        let zst = zstd::stream::encode_all(&gz[..], 3).unwrap();
        std::fs::write(root.join("blob"), &zst[..zst.len() - 5]).unwrap();
        let dir = root.join("layer");
        assert!(unpack_layer(
            &root.join("blob"),
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &dir
        )
        .is_err());
        assert!(!dir.exists());
        assert!(!dir.with_extension("tmp").exists());
    }
}
