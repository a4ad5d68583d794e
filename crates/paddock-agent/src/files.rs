//! File operations, answered from inside the sandbox's own root.
//!
//! The agent runs with the sandbox's root as its `/`, so a path cannot name
//! anything outside it; `..` components are refused anyway so that a caller
//! gets a clear error rather than a surprising path.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use paddock_proto::v1::FileInfo;
use tonic::Status;

pub fn io_status(e: std::io::Error, path: &str) -> Status {
    let msg = format!("{path}: {e}");
    match e.kind() {
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Status::permission_denied(msg)
        }
        ErrorKind::InvalidFilename | ErrorKind::FileTooLarge => Status::invalid_argument(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::InvalidInput | ErrorKind::InvalidData => Status::invalid_argument(msg),
        ErrorKind::DirectoryNotEmpty | ErrorKind::IsADirectory | ErrorKind::NotADirectory => {
            Status::failed_precondition(msg)
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Status::resource_exhausted(msg),
        _ => Status::internal(msg),
    }
}

/// Checks a path from the caller and makes it absolute (relative paths are
/// taken from the agent's working directory).
pub fn checked(path: &str) -> Result<PathBuf, Status> {
    if path.is_empty() {
        return Err(Status::invalid_argument("path: must not be empty"));
    }
    if path.contains('\0') {
        return Err(Status::invalid_argument("path: must not contain NUL"));
    }
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Status::invalid_argument(format!(
            "path: {path:?} must not contain '..'"
        )));
    }
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .unwrap_or_else(|_| "/".into())
            .join(p))
    }
}

pub fn info(path: &Path, meta: &std::fs::Metadata) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    };
    FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        path: path.to_string_lossy().into_owned(),
        kind: kind.into(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime_unix_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        symlink_target: if ft.is_symlink() {
            std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        },
    }
}

/// Follows every symlink of `path`: the longest prefix that exists is
/// canonicalised, the components after it are appended as they are.
pub fn resolve(path: &str) -> Result<String, Status> {
    let p = checked(path)?;
    let mut existing = p.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(c) => {
                let mut out = c;
                for r in rest.iter().rev() {
                    out.push(r);
                }
                return Ok(out.to_string_lossy().into_owned());
            }
            Err(_) => match (
                existing.file_name().map(|n| n.to_os_string()),
                existing.parent(),
            ) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => return Ok(p.to_string_lossy().into_owned()),
            },
        }
    }
}

pub fn stat(path: &str) -> Result<FileInfo, Status> {
    let p = checked(path)?;
    let meta = std::fs::symlink_metadata(&p).map_err(|e| io_status(e, path))?;
    Ok(info(&p, &meta))
}

pub fn list(path: &str) -> Result<Vec<FileInfo>, Status> {
    let p = checked(path)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&p).map_err(|e| io_status(e, path))? {
        let entry = entry.map_err(|e| io_status(e, path))?;
        let ep = entry.path();
        if let Ok(meta) = std::fs::symlink_metadata(&ep) {
            out.push(info(&ep, &meta));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn remove(path: &str, recursive: bool) -> Result<(), Status> {
    let p = checked(path)?;
    if p == Path::new("/") {
        return Err(Status::invalid_argument("path: refusing to remove /"));
    }
    let meta = std::fs::symlink_metadata(&p).map_err(|e| io_status(e, path))?;
    let r = if meta.is_dir() {
        if recursive {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_dir(&p)
        }
    } else {
        std::fs::remove_file(&p)
    };
    r.map_err(|e| io_status(e, path))
}

pub fn rename(from: &str, to: &str) -> Result<(), Status> {
    let f = checked(from)?;
    let t = checked(to)?;
    std::fs::rename(&f, &t).map_err(|e| io_status(e, &format!("{from} -> {to}")))
}

pub fn mkdir(path: &str, parents: bool, mode: u32) -> Result<(), Status> {
    let p = checked(path)?;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(parents);
    std::os::unix::fs::DirBuilderExt::mode(&mut b, if mode == 0 { 0o755 } else { mode });
    b.create(&p).map_err(|e| io_status(e, path))
}

/// An open write, as the header asked for it.
pub struct Writer {
    pub file: tokio::fs::File,
    pub path: PathBuf,
    pub tmp: Option<PathBuf>,
    pub display: String,
    pub mode: u32,
    /// Bytes allocated from the start for a handed-over write.
    pub reserved: Option<u64>,
}

pub async fn open_write(
    path: &str,
    mode: u32,
    parents: bool,
    atomic: bool,
    append: bool,
) -> Result<Writer, Status> {
    let p = checked(path)?;
    let mode = if mode == 0 { 0o644 } else { mode & 0o7777 };
    if let Some(parent) = p.parent() {
        if parents {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_status(e, path))?;
        }
    }
    if let Ok(m) = tokio::fs::metadata(&p).await {
        if m.is_dir() {
            return Err(Status::failed_precondition(format!(
                "{path}: is a directory"
            )));
        }
    }
    let (target, tmp) = if atomic && !append {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = p.with_file_name(format!(
            ".{name}.paddock-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        (tmp.clone(), Some(tmp))
    } else {
        (p.clone(), None)
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).mode(mode);
    if append {
        opts.append(true);
    } else {
        opts.truncate(true);
    }
    let file = tokio::task::spawn_blocking(move || opts.open(&target))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| io_status(e, path))?;
    Ok(Writer {
        file: tokio::fs::File::from_std(file),
        path: p,
        tmp,
        display: path.to_string(),
        mode,
        reserved: None,
    })
}

impl Writer {
    pub async fn finish(mut self) -> Result<FileInfo, Status> {
        use tokio::io::AsyncWriteExt;
        let display = self.display.clone();
        self.file
            .flush()
            .await
            .map_err(|e| io_status(e, &display))?;
        if let Some(tmp) = &self.tmp {
            self.file
                .sync_all()
                .await
                .map_err(|e| io_status(e, &display))?;
            tokio::fs::set_permissions(tmp, std::fs::Permissions::from_mode(self.mode))
                .await
                .map_err(|e| io_status(e, &display))?;
            tokio::fs::rename(tmp, &self.path)
                .await
                .map_err(|e| io_status(e, &display))?;
        }
        let meta = tokio::fs::symlink_metadata(&self.path)
            .await
            .map_err(|e| io_status(e, &display))?;
        Ok(info(&self.path, &meta))
    }

    pub async fn abort(self) {
        if let Some(tmp) = self.tmp {
            let _ = tokio::fs::remove_file(tmp).await;
        } else if let Some(size) = self.reserved {
            // What was allocated past what got written would hold the
            // sandbox's memory (a tmpfs) or disk for nothing.
            use std::os::fd::AsFd;
            if let (Ok(fd), Ok(meta)) = (
                self.file.as_fd().try_clone_to_owned(),
                self.file.metadata().await,
            ) {
                let len = meta.len();
                if len < size {
                    let _ = tokio::task::spawn_blocking(move || {
                        use nix::fcntl::{fallocate, FallocateFlags};
                        fallocate(
                            &fd,
                            FallocateFlags::FALLOC_FL_PUNCH_HOLE
                                | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                            len as i64,
                            (size - len) as i64,
                        )
                    })
                    .await;
                }
            }
        }
    }

    /// Allocates the file's first `size` bytes without changing its size,
    /// before the daemon writes them through a handed-over descriptor:
    /// the allocation is charged to this sandbox (a tmpfs page to the
    /// memory cgroup of whoever allocates it) and refused here when the
    /// sandbox's disk has no room. `Ok(false)` when the file cannot be
    /// allocated (not a regular file, a filesystem without `fallocate`):
    /// the data then comes on the call.
    pub async fn reserve(&mut self, size: u64) -> std::io::Result<bool> {
        use std::os::fd::AsFd;
        if !self.file.metadata().await?.is_file() {
            return Ok(false);
        }
        let fd = self.file.as_fd().try_clone_to_owned()?;
        let r = tokio::task::spawn_blocking(move || {
            use nix::fcntl::{fallocate, FallocateFlags};
            fallocate(&fd, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, size as i64)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        match r {
            Ok(()) => {
                self.reserved = Some(size);
                Ok(true)
            }
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// After a hand-over: whether the daemon wrote all it announced.
    pub async fn check_reserved(&self) -> std::io::Result<()> {
        if let Some(size) = self.reserved {
            let len = self.file.metadata().await?.len();
            if len != size {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{len} bytes written of the {size} announced"),
                ));
            }
        }
        Ok(())
    }
}
