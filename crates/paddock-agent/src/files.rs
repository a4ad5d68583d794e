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

/// A file opened for a download: where it is, and how many bytes it holds
/// when its size says so.
pub struct OpenRead {
    pub file: std::fs::File,
    /// The file's size, for a regular file on a filesystem that holds
    /// data; `None` for one whose size says nothing of what a read returns
    /// (a file of `/proc` is 0 bytes long and yet has data; one of `/sys`
    /// says 4096): it is read to its end.
    pub size: Option<u64>,
    /// Where the file is, every symlink followed, as the sandbox sees it.
    pub resolved: PathBuf,
}

/// Opens `path` for reading, following symlinks (inside the sandbox's own
/// root: the agent's `/` is the sandbox's), and refuses whatever is not a
/// regular file. The open never blocks: `O_NONBLOCK` (a FIFO without a
/// writer would otherwise hold it for good), and the type is judged on the
/// opened file (`fstat`), not on the path, which may change in between.
pub fn open_read(path: &str) -> Result<OpenRead, Status> {
    use nix::sys::stat::{fstat, SFlag};
    use std::os::fd::AsRawFd;
    let p = checked(path)?;
    let not_regular = |what: &str| {
        Status::invalid_argument(format!(
            "path: {path} is {what}, not a regular file: only regular files can be downloaded"
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&p)
        .map_err(|e| match e.raw_os_error() {
            // A socket (or a device without a driver) cannot be opened.
            Some(libc::ENXIO) | Some(libc::ENODEV) => not_regular("a socket or a device"),
            _ => io_status(e, path),
        })?;
    let st = fstat(&file).map_err(|e| io_status(e.into(), path))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(not_regular(match kind {
            SFlag::S_IFDIR => "a directory",
            SFlag::S_IFIFO => "a FIFO",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFCHR => "a character device",
            SFlag::S_IFBLK => "a block device",
            _ => "not a file",
        }));
    }
    // Reads of a regular file never block anyway; the flag goes so that
    // the descriptor is an ordinary one wherever it is read.
    // SAFETY: fcntl on a descriptor this function owns; F_SETFL takes an int.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    let size = paddock_proto::handover::holds_data(&file)
        .unwrap_or(false)
        .then_some(st.st_size as u64);
    // /proc/self/fd names the file itself, whatever the path did since.
    let resolved = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
        .filter(|r| r.is_absolute())
        .unwrap_or_else(|| std::fs::canonicalize(&p).unwrap_or(p));
    Ok(OpenRead {
        file,
        size,
        resolved,
    })
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

/// Memory a write leaves to the sandbox's processes when its file's bytes
/// are held in memory, besides what the agent itself may come to hold of
/// the data still to come (see `Writer::admit`).
const MEMORY_SLACK: u64 = 8 << 20;

/// The sandbox's memory limit and how much of it is not held by memory
/// that cannot be reclaimed: the limit less what is used, page cache of
/// files on disks aside. From the agent's own memory cgroup (v1 or v2, as
/// the runtime mounts it, rooted at the sandbox's own group); `None`
/// without one or without a limit.
fn memory_room() -> Option<(u64, u64)> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let (limit, usage, stat, prefix) =
        if let Some(l) = read("/sys/fs/cgroup/memory/memory.limit_in_bytes") {
            (
                l,
                read("/sys/fs/cgroup/memory/memory.usage_in_bytes")?,
                read("/sys/fs/cgroup/memory/memory.stat")?,
                // The hierarchical figures (the group and any below it).
                "total_",
            )
        } else {
            (
                read("/sys/fs/cgroup/memory.max")?,
                read("/sys/fs/cgroup/memory.current")?,
                read("/sys/fs/cgroup/memory.stat")?,
                "",
            )
        };
    // "max" (v2) or a huge number (v1) when there is no limit.
    let limit: u64 = limit.trim().parse().ok().filter(|&l| l < 1 << 62)?;
    let usage: u64 = usage.trim().parse().ok()?;
    let stat_of = |key: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let active = stat_of(&format!("{prefix}active_file"));
    let inactive = stat_of(&format!("{prefix}inactive_file"));
    let held = usage.saturating_sub(active + inactive);
    Some((limit.saturating_sub(held), limit))
}

/// An open write, as the header asked for it.
pub struct Writer {
    pub file: tokio::fs::File,
    pub path: PathBuf,
    pub tmp: Option<PathBuf>,
    pub display: String,
    pub mode: u32,
    /// Bytes allocated from the start for a handed-over write.
    reserved: Option<u64>,
    /// The file's bytes are held in the sandbox's memory.
    memory_backed: bool,
    /// Bytes this write has written.
    written: u64,
    /// Up to how many bytes this write may bring before memory is looked
    /// at again.
    admitted: u64,
    /// This write's share of [`PROMISED`].
    promised: u64,
    /// Finished: nothing for `Drop` to clean up.
    done: bool,
}

/// Bytes admitted to writes of memory-backed files that are not yet
/// charged to the sandbox's memory (not written, not allocated): what two
/// uploads at once must not both count on.
static PROMISED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Taken while a write looks at the memory left and makes its promise.
static ADMISSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What an admission promises at least, so that a write on the call looks
/// at memory once every few MiB rather than for every piece.
const ADMIT_STEP: u64 = 8 << 20;

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
    let mut special = false;
    if let Ok(m) = tokio::fs::metadata(&p).await {
        if m.is_dir() {
            return Err(Status::failed_precondition(format!(
                "{path}: is a directory"
            )));
        }
        // A device, FIFO or socket is written into, not replaced by a
        // file (`/dev/null` is even a mount point in a user namespace,
        // where a rename over it fails).
        special = !m.is_file();
    }
    let (target, tmp) = if atomic && !append && !special {
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
    // Such a file's pages are charged to the sandbox's memory cgroup and
    // cannot be reclaimed (no swap): a file larger than what is left of the
    // memory limit would end in the OOM killer, whose only candidate during
    // an upload is the agent itself (see `Writer::admit`).
    let memory_backed = paddock_proto::handover::memory_backed(&file);
    Ok(Writer {
        file: tokio::fs::File::from_std(file),
        path: p,
        tmp,
        display: path.to_string(),
        mode,
        reserved: None,
        memory_backed,
        written: 0,
        admitted: 0,
        promised: 0,
        done: false,
    })
}

impl Writer {
    /// Syncs an atomic write's temporary and renames it into place. On an
    /// error, `Drop` leaves nothing of it.
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
        self.done = true;
        let meta = tokio::fs::symlink_metadata(&self.path)
            .await
            .map_err(|e| io_status(e, &display))?;
        Ok(info(&self.path, &meta))
    }

    /// Allocates the file's first `size` bytes without changing its size,
    /// before the daemon writes them through a handed-over descriptor:
    /// the allocation is charged to this sandbox (a tmpfs page to the
    /// memory cgroup of whoever allocates it) and refused here when the
    /// sandbox's disk has no room. `Ok(false)` for a file not held in
    /// memory, or one that cannot be allocated (no `fallocate`): the data
    /// then comes on the call.
    pub async fn reserve(&mut self, size: u64) -> std::io::Result<bool> {
        use std::os::fd::AsFd;
        if !self.memory_backed {
            // Elsewhere the call carries it (see `handover::memory_backed`).
            return Ok(false);
        }
        // Handed over, no byte of it passes through the agent.
        self.admit(size, 0)?;
        let fd = self.file.as_fd().try_clone_to_owned()?;
        let r = tokio::task::spawn_blocking(move || {
            use nix::fcntl::{fallocate, FallocateFlags};
            fallocate(&fd, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, size as i64)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        match r {
            Ok(()) => {
                // Allocated, the bytes are charged: no longer a promise.
                self.set_promise(0);
                self.admitted = u64::MAX;
                self.reserved = Some(size);
                Ok(true)
            }
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks that the write may grow to `total` bytes: where its bytes
    /// are held in memory, that they fit in what is left of the sandbox's
    /// memory limit, less [`MEMORY_SLACK`], what other writes were promised
    /// and not yet charged, and what the agent may hold of data still on
    /// its way: up to `in_flight` bytes, at most a stream's HTTP/2 window
    /// (a quarter of the limit for a small sandbox). Promises what it
    /// admits (at least [`ADMIT_STEP`] where there is room), and looks
    /// again only when the write outgrows that.
    pub fn admit(&mut self, total: u64, in_flight: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if !self.memory_backed || total <= self.admitted {
            return Ok(());
        }
        let _turn = ADMISSION.lock().unwrap_or_else(|e| e.into_inner());
        let Some((room, limit)) = memory_room() else {
            self.admitted = u64::MAX;
            return Ok(());
        };
        let others = PROMISED
            .load(Ordering::SeqCst)
            .saturating_sub(self.promised);
        let held = in_flight
            .min(paddock_proto::STREAM_WINDOW as u64)
            .min(limit / 4);
        let free = room.saturating_sub(MEMORY_SLACK + held + others);
        let need = total - self.written;
        if need > free {
            return Err(std::io::Error::new(
                ErrorKind::StorageFull,
                format!(
                    "the sandbox's files are held in its memory, and {} MiB more do not fit \
                     in the {} MiB left of its {} MiB memory limit",
                    need.div_ceil(1 << 20),
                    free >> 20,
                    limit >> 20
                ),
            ));
        }
        let promise = need.max(ADMIT_STEP.min(free));
        self.set_promise(promise);
        self.admitted = self.written + promise;
        Ok(())
    }

    /// Makes this write's share of [`PROMISED`] `n` bytes.
    fn set_promise(&mut self, n: u64) {
        use std::sync::atomic::Ordering;
        if n >= self.promised {
            PROMISED.fetch_add(n - self.promised, Ordering::SeqCst);
        } else {
            PROMISED.fetch_sub(self.promised - n, Ordering::SeqCst);
        }
        self.promised = n;
    }

    /// Writes a piece of the data that comes on the call, once admitted
    /// (with as much again as the call's window may hold: the rest of the
    /// upload's size is not known here).
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let n = data.len() as u64;
        self.admit(self.written + n, u64::MAX)?;
        self.file.write_all(data).await?;
        self.written += n;
        // Written, the bytes are charged: no longer a promise.
        self.set_promise(self.promised.saturating_sub(n));
        Ok(())
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

/// Leaves nothing of a write that did not finish (an error, or a call
/// dropped midway: the daemon reset the stream): an atomic write's
/// temporary is removed; a plain one keeps what was written, and what was
/// allocated past it (a handed-over write) is punched out, as it would
/// hold the sandbox's memory (a tmpfs) or disk for nothing.
impl Drop for Writer {
    fn drop(&mut self) {
        self.set_promise(0);
        if self.done {
            return;
        }
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        } else if let Some(size) = self.reserved {
            use nix::fcntl::{fallocate, FallocateFlags};
            if let Ok(st) = nix::sys::stat::fstat(&self.file) {
                let len = st.st_size as u64;
                if len < size {
                    let _ = fallocate(
                        &self.file,
                        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        len as i64,
                        (size - len) as i64,
                    );
                }
            }
        }
    }
}
