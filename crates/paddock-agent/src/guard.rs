//! Guarded mounts: a mount's ACL enforced on every process of the sandbox.
//!
//! The daemon mounts a FUSE filesystem over the mount's path (from the
//! host, so that nothing in the sandbox can unmount it) and hands the
//! agent `/dev/fuse` and the directory it covers; the agent serves every
//! access to it here, judging each against the mount's rules
//! ([`paddock_acl`]) and recording the decision for the daemon's
//! `fs.request` events. What is allowed is done on the covered directory,
//! which only the agent (not dumpable: out of its processes' reach) still
//! holds.
//!
//! - A path is judged by where it is in the mount, as the kernel walks it
//!   one name at a time: symlinks are the kernel's to follow, so a link
//!   leads to its target's rules, never past them.
//! - A denied file cannot be looked up (`EACCES`) and is left out of
//!   listings; a denied directory can be passed through (a rule may allow
//!   something below it) but not listed. Opening for reading needs `ro`;
//!   opening for writing, truncating, creating, removing, renaming, linking
//!   and changing attributes need `rw`, on every path they touch.
//! - A hard link needs its source writable too (else the new name would
//!   write a read-only file); a directory moves only where the rules treat
//!   all below it alike at both ends ([`paddock_acl::Acl::uniform_below`]),
//!   else `EXDEV`, and `mv` copies file by file, each judged.
//! - Permissions (modes, owners) are the kernel's (`default_permissions`),
//!   on the owners the agent reports: the sandbox's ids plus `offset`, as
//!   the host sees them (the filesystem is mounted from the host).
//! - Every backing operation starts from the covered directory with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (or at a single name of a
//!   parent opened so), so no symlink made inside leads the agent out.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use paddock_acl::{Access, Acl};

/// How long the kernel may keep names and attributes.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// Decisions kept while nobody listens; older ones are dropped (counted).
const KEPT: usize = 4096;

/// One access decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub mount: String,
    pub path: String,
    pub write: bool,
    pub allowed: bool,
}

/// Decisions on their way to the daemon.
#[derive(Default)]
pub struct Decisions {
    q: Mutex<(VecDeque<Decision>, u64)>,
    more: tokio::sync::Notify,
}

impl Decisions {
    fn push(&self, d: Decision) {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        if q.0.len() >= KEPT {
            q.0.pop_front();
            q.1 += 1;
        }
        q.0.push_back(d);
        drop(q);
        self.more.notify_one();
    }

    /// What has come since the last call (waits for something), and how
    /// many were dropped before it.
    pub async fn next(&self) -> (Vec<Decision>, u64) {
        loop {
            {
                let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
                if !q.0.is_empty() {
                    let dropped = std::mem::take(&mut q.1);
                    return (q.0.drain(..).collect(), dropped);
                }
            }
            self.more.notified().await;
        }
    }
}

/// The agent's way to the daemon for FUSE passthrough (a reader's reads
/// and writes go to the backing file, not through the agent): registering
/// a backing file (`FUSE_DEV_IOC_BACKING_OPEN`) needs `CAP_SYS_ADMIN` in
/// the host's user namespace, so the daemon does it on a connection it
/// hands over (`Registrar`); messages as `paddock_host::fuse` serves them.
/// Without a daemon (none yet, or it is restarting), files open without
/// passthrough.
#[derive(Default)]
pub struct Registrar {
    conn: Mutex<Option<std::os::unix::net::UnixStream>>,
    seq: std::sync::atomic::AtomicU64,
}

const REGISTER: u32 = 1;
const UNREGISTER: u32 = 2;

impl Registrar {
    pub fn set(&self, s: std::os::unix::net::UnixStream) -> std::io::Result<()> {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        Ok(())
    }

    /// The backing id of `file` on the FUSE connection `fuse`.
    fn register(
        &self,
        fuse: std::os::fd::BorrowedFd<'_>,
        file: std::os::fd::BorrowedFd<'_>,
    ) -> Option<u32> {
        self.call(REGISTER, 0, &[fuse, file])
            .filter(|r| *r > 0)
            .map(|r| r as u32)
    }

    fn unregister(&self, fuse: std::os::fd::BorrowedFd<'_>, id: u32) {
        let _ = self.call(UNREGISTER, id, &[fuse]);
    }

    /// One request and its answer; a connection that fails is dropped.
    fn call(&self, op: u32, arg: u32, fds: &[std::os::fd::BorrowedFd<'_>]) -> Option<i32> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::Read;
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let s = g.as_mut()?;
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        msg[8..12].copy_from_slice(&op.to_le_bytes());
        msg[12..].copy_from_slice(&arg.to_le_bytes());
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let sent = sendmsg::<()>(
            s.as_raw_fd(),
            &[std::io::IoSlice::new(&msg)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        let mut answer = [0u8; 12];
        let ok = matches!(sent, Ok(16)) && s.read_exact(&mut answer).is_ok();
        if !ok || answer[..8] != seq.to_le_bytes() {
            *g = None;
            return None;
        }
        Some(i32::from_le_bytes(answer[8..].try_into().ok()?))
    }
}

/// How an inode's files are open: through the agent (its pages cached), or
/// passed through to the backing file under one backing id. The kernel
/// refuses to mix the two on an inode while it is open.
enum Io {
    Cached(u32),
    Passthrough { id: u32, opens: u32 },
}

type Rules = Arc<RwLock<Arc<Acl>>>;

/// The mounts this agent guards, by path.
#[derive(Default)]
pub struct Guards {
    by_path: Arc<Mutex<HashMap<String, Rules>>>,
    pub decisions: Arc<Decisions>,
    pub registrar: Arc<Registrar>,
}

impl Guards {
    /// New rules for the guard at `path`; false when there is none.
    pub fn set_rules(&self, path: &str, acl: Acl) -> bool {
        let g = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(path) {
            Some(r) => {
                *r.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acl);
                true
            }
            None => false,
        }
    }

    /// Serves the FUSE connection `fuse` for the mount at `path` over the
    /// directory `backing`, in a thread of its own, until the kernel ends
    /// it (the mount is gone).
    pub fn serve(
        &self,
        path: &str,
        acl: Acl,
        offset: u32,
        fuse: OwnedFd,
        backing: OwnedFd,
    ) -> std::io::Result<()> {
        let rules: Rules = Arc::new(RwLock::new(Arc::new(acl)));
        {
            let mut g = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
            if g.contains_key(path) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{path} is guarded already"),
                ));
            }
            g.insert(path.to_string(), rules.clone());
        }
        let dev = fuse.try_clone()?;
        let root_id = id_of(&nix::sys::stat::fstat(&backing)?);
        let fs = GuardFs {
            dev,
            registrar: self.registrar.clone(),
            passthrough: false,
            io: Mutex::new(HashMap::new()),
            mount: path.trim_end_matches('/').to_string(),
            rules,
            offset,
            root: backing,
            decisions: self.decisions.clone(),
            st: Mutex::new(State::new(root_id)),
            files: Mutex::new(HashMap::new()),
        };
        let by_path = self.by_path.clone();
        let path = path.to_string();
        std::thread::Builder::new()
            .name("guard".into())
            .spawn(move || {
                let mut config = fuser::Config::default();
                config.acl = fuser::SessionACL::All;
                // Two: a read's copies overlap the next request's (the
                // kernel reads ahead). Every operation judges a path and
                // acts on that same path, so that concurrent ones cannot
                // lead an access past its rules.
                // (One descriptor for both: cloning it opens /dev/fuse,
                // which the sandbox has not.)
                config.n_threads = Some(2);
                match fuser::Session::from_fd(fs, fuse, fuser::SessionACL::All, config) {
                    Ok(s) => {
                        if let Err(e) = s.run() {
                            eprintln!("paddock-agent: guard of {path}: {e}");
                        }
                    }
                    Err(e) => eprintln!("paddock-agent: guard of {path}: {e}"),
                }
                by_path
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&path);
            })?;
        Ok(())
    }
}

struct Node {
    /// Relative to the mount; empty for its root.
    path: PathBuf,
    lookups: u64,
    /// The file it is (device, inode): checked on the file reached by
    /// `path` before anything is done to it, so that a node whose name now
    /// leads elsewhere (removed, renamed over, changed on the host) acts on
    /// nothing (`ESTALE`), not on the file that took its place.
    id: (u64, u64),
    /// Removed or replaced: no name leads to it any more.
    gone: bool,
}

fn id_of(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

struct Entry {
    name: OsString,
    ino: u64,
    kind: FileType,
}

struct State {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    dirs: HashMap<u64, Vec<Entry>>,
    next_fh: u64,
}

impl State {
    fn new(root: (u64, u64)) -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: PathBuf::new(),
                lookups: 1,
                id: root,
                gone: false,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), ROOT);
        State {
            nodes,
            by_path,
            next_ino: ROOT + 1,
            dirs: HashMap::new(),
            next_fh: 1,
        }
    }

    /// The node for the file `id` at `path`, looked up once more; a node
    /// of another file there before is gone.
    fn node(&mut self, path: PathBuf, id: (u64, u64)) -> u64 {
        if let Some(&ino) = self.by_path.get(&path) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if n.id == id && !n.gone {
                    n.lookups += 1;
                    return ino;
                }
                if ino != ROOT {
                    n.gone = true;
                }
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_path.insert(path.clone(), ino);
        self.nodes.insert(
            ino,
            Node {
                path,
                lookups: 1,
                id,
                gone: false,
            },
        );
        ino
    }

    /// No name leads to the node at `path` any more.
    fn unlinked(&mut self, path: &Path) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.gone = true;
            }
        }
    }

    /// Everything at or under `from` is now under `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let affected: Vec<(u64, PathBuf)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.path.starts_with(from))
            .map(|(i, n)| (*i, n.path.clone()))
            .collect();
        for (_, old) in &affected {
            self.by_path.remove(old);
        }
        for (ino, old) in affected {
            let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = new;
            }
        }
    }
}

struct GuardFs {
    /// The FUSE connection (for the daemon to register backing files on).
    dev: OwnedFd,
    registrar: Arc<Registrar>,
    /// The kernel took `FUSE_PASSTHROUGH`.
    passthrough: bool,
    /// By inode, how its open files are served.
    io: Mutex<HashMap<u64, Io>>,
    /// The mount's path in the sandbox, which its rules name.
    mount: String,
    rules: Rules,
    offset: u32,
    /// The directory the mount covers.
    root: OwnedFd,
    decisions: Arc<Decisions>,
    st: Mutex<State>,
    /// Open files by handle, with their inode.
    files: Mutex<HashMap<u64, (Arc<File>, u64)>>,
}

fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn kind(mode: u32) -> FileType {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => FileType::Directory,
        SFlag::S_IFLNK => FileType::Symlink,
        SFlag::S_IFIFO => FileType::NamedPipe,
        SFlag::S_IFSOCK => FileType::Socket,
        SFlag::S_IFCHR => FileType::CharDevice,
        SFlag::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

/// A mode the agent sets: never set-user-ID (the guard's mount is nosuid,
/// but a host directory's files are host files, owned on the host by the
/// directory's owner), set-group-ID only on a directory (where it means
/// the group its entries take).
fn safe_mode(mode: u32, file_type: u32) -> u32 {
    let dir = file_type & libc::S_IFMT == libc::S_IFDIR;
    let mut m = mode & 0o7777 & !libc::S_ISUID;
    if !dir {
        m &= !libc::S_ISGID;
    }
    m
}

fn parent_and_name(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent()?, rel.file_name()?))
}

type R<T> = Result<T, Errno>;

impl GuardFs {
    fn acl(&self) -> Arc<Acl> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn abs(&self, rel: &Path) -> String {
        if rel.as_os_str().is_empty() {
            self.mount.clone()
        } else {
            format!("{}/{}", self.mount, rel.to_string_lossy())
        }
    }

    fn record(&self, rel: &Path, write: bool, allowed: bool) {
        self.decisions.push(Decision {
            mount: self.mount.clone(),
            path: self.abs(rel),
            write,
            allowed,
        });
    }

    /// Judges a `write` (or read) of `rel`, records it, and refuses with
    /// `EACCES` what the rules do not allow.
    fn judge(&self, rel: &Path, write: bool) -> R<()> {
        let allowed = self.acl().access(&self.abs(rel)).allows(write);
        self.record(rel, write, allowed);
        if allowed {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    fn path_of(&self, ino: INodeNo) -> R<PathBuf> {
        self.node_of(ino).map(|(p, _)| p)
    }

    /// A live node's path and file.
    fn node_of(&self, ino: INodeNo) -> R<(PathBuf, (u64, u64))> {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        match st.nodes.get(&ino.0) {
            Some(n) if !n.gone => Ok((n.path.clone(), n.id)),
            _ => Err(Errno::ESTALE),
        }
    }

    /// `fd` is the node's file.
    fn same(fd: &impl AsFd, id: (u64, u64)) -> R<FileStat> {
        let st = nix::sys::stat::fstat(fd).map_err(errno)?;
        if id_of(&st) == id {
            Ok(st)
        } else {
            Err(Errno::ESTALE)
        }
    }

    /// The node's file, opened `O_PATH` without following a symlink at
    /// its name, and checked to be it.
    fn pin(&self, rel: &Path, id: (u64, u64)) -> R<(OwnedFd, FileStat)> {
        let fd = match parent_and_name(rel) {
            None => self.root.try_clone().map_err(io_errno)?,
            Some((p, n)) => {
                let d = self.dir(p)?;
                nix::fcntl::openat(
                    &d,
                    n,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?
            }
        };
        let st = Self::same(&fd, id)?;
        Ok((fd, st))
    }

    /// Opens `rel` beneath the covered directory, no symlink followed.
    fn open_rel(&self, rel: &Path, flags: OFlag, mode: Mode) -> R<OwnedFd> {
        let p: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        nix::fcntl::openat2(self.root.as_fd(), p, how).map_err(errno)
    }

    fn dir(&self, rel: &Path) -> R<OwnedFd> {
        self.open_rel(rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
    }

    fn lstat(&self, rel: &Path) -> R<FileStat> {
        match parent_and_name(rel) {
            None => nix::sys::stat::fstat(&self.root).map_err(errno),
            Some((parent, name)) => {
                let d = self.dir(parent)?;
                nix::sys::stat::fstatat(&d, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(errno)
            }
        }
    }

    fn attr(&self, ino: u64, st: &FileStat) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: self.host_id(st.st_uid),
            gid: self.host_id(st.st_gid),
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// An owner as the host sees it. One the sandbox cannot name (the
    /// overflow id, 65534: another host user's file in a host directory)
    /// stays the host's 65534, which is no one in the sandbox: its nobody
    /// must not pass as that file's owner.
    fn host_id(&self, id: u32) -> u32 {
        if id == 65534 {
            id
        } else {
            id.saturating_add(self.offset)
        }
    }

    /// The caller's ids in the sandbox.
    fn caller(&self, req: &Request) -> (u32, u32) {
        let inner = |id: u32| id.checked_sub(self.offset).unwrap_or(65534);
        (inner(req.uid()), inner(req.gid()))
    }

    /// A name just made in `parent` becomes the caller's, with `mode`
    /// (the agent's own umask does not apply).
    fn give(&self, req: &Request, d: &OwnedFd, name: &OsStr, mode: Option<u32>) -> R<()> {
        use nix::fcntl::AtFlags;
        let (uid, gid) = self.caller(req);
        let pst = nix::sys::stat::fstat(d).map_err(errno)?;
        // In a set-group-ID directory the group is the directory's.
        let gid = (pst.st_mode & libc::S_ISGID == 0).then_some(gid);
        match nix::unistd::fchownat(
            d,
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            gid.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            // A host directory's idmapped view holds its owner only: what
            // anyone makes there is that owner's (the sandbox's root).
            Err(nix::errno::Errno::EOVERFLOW | nix::errno::Errno::EINVAL) => {}
            r => r.map_err(errno)?,
        }
        if let Some(m) = mode {
            nix::sys::stat::fchmodat(
                d,
                name,
                Mode::from_bits_truncate(m),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    fn entry_of(&self, rel: PathBuf) -> R<FileAttr> {
        let st = self.lstat(&rel)?;
        let ino = self
            .st
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .node(rel, id_of(&st));
        Ok(self.attr(ino, &st))
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> R<PathBuf> {
        if name.as_bytes().contains(&b'/') || name == ".." || name == "." {
            return Err(Errno::EINVAL);
        }
        Ok(self.path_of(parent)?.join(name))
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        let rel = self.child(parent, name)?;
        let st = self.lstat(&rel)?;
        let is_dir = kind(st.st_mode) == FileType::Directory;
        if !is_dir && self.acl().access(&self.abs(&rel)) == Access::Deny {
            self.record(&rel, false, false);
            return Err(Errno::EACCES);
        }
        let ino = self
            .st
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .node(rel, id_of(&st));
        Ok(self.attr(ino, &st))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> R<FileAttr> {
        use nix::fcntl::AtFlags;
        let (rel, id) = self.node_of(ino)?;
        self.judge(&rel, true)?;
        // Everything below is done to this very file, by its descriptor
        // (through /proc/self/fd where a call takes only a path): the
        // name may lead elsewhere by the time each call runs.
        let (fd, st) = self.pin(&rel, id)?;
        let is_link = kind(st.st_mode) == FileType::Symlink;
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if let Some(size) = size {
            match fh.and_then(|f| self.file(f)) {
                Some(f) => f.set_len(size).map_err(io_errno)?,
                None if kind(st.st_mode) == FileType::RegularFile => {
                    let how = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                    let w = nix::fcntl::open(by_fd.as_str(), how, Mode::empty()).map_err(errno)?;
                    Self::same(&w, id)?;
                    File::from(w).set_len(size).map_err(io_errno)?;
                }
                None => return Err(Errno::EINVAL),
            }
        }
        if uid.is_some() || gid.is_some() {
            let inner = |id: u32| id.checked_sub(self.offset).ok_or(Errno::EINVAL);
            nix::unistd::fchownat(
                &fd,
                "",
                uid.map(inner).transpose()?.map(nix::unistd::Uid::from_raw),
                gid.map(inner).transpose()?.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let (Some(m), false) = (mode, is_link) {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                by_fd.as_str(),
                Mode::from_bits_truncate(safe_mode(m, st.st_mode)),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        if (atime.is_some() || mtime.is_some()) && !is_link {
            use nix::sys::time::TimeSpec;
            let spec = |t: Option<TimeOrNow>| match t {
                None => TimeSpec::UTIME_OMIT,
                Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
                Some(TimeOrNow::SpecificTime(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64)
                }
            };
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                by_fd.as_str(),
                &spec(atime),
                &spec(mtime),
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        let st = nix::sys::stat::fstat(&fd).map_err(errno)?;
        Ok(self.attr(ino.0, &st))
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<File>> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .map(|(f, _)| f.clone())
    }

    fn keep(&self, f: File, ino: u64) -> FileHandle {
        let fh = {
            let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
            st.next_fh += 1;
            st.next_fh
        };
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, (Arc::new(f), ino));
        FileHandle(fh)
    }

    /// How a new open of `ino` on backing file `f` is served: the backing
    /// id to pass it through with, or none (cached, through the agent).
    fn open_io(&self, ino: u64, f: &File) -> Option<u32> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        match io.get_mut(&ino) {
            Some(Io::Cached(n)) => {
                *n += 1;
                return None;
            }
            Some(Io::Passthrough { id, opens }) => {
                *opens += 1;
                return Some(*id);
            }
            None => {}
        }
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        let id = if self.passthrough && regular {
            self.registrar.register(self.dev.as_fd(), f.as_fd())
        } else {
            None
        };
        io.insert(
            ino,
            match id {
                Some(id) => Io::Passthrough { id, opens: 1 },
                None => Io::Cached(1),
            },
        );
        id
    }

    /// A file of `ino` closed; its backing id goes with its last.
    fn close_io(&self, ino: u64) {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let (last, id) = match io.get_mut(&ino) {
            Some(Io::Cached(n)) => {
                *n = n.saturating_sub(1);
                (*n == 0, None)
            }
            Some(Io::Passthrough { id, opens }) => {
                *opens = opens.saturating_sub(1);
                (*opens == 0, Some(*id))
            }
            None => (false, None),
        };
        if last {
            io.remove(&ino);
            drop(io);
            if let Some(id) = id {
                self.registrar.unregister(self.dev.as_fd(), id);
            }
        }
    }

    fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> R<(FileHandle, Option<u32>)> {
        let (rel, id) = self.node_of(ino)?;
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        self.judge(&rel, write)?;
        // The kernel keeps the offset (appends included); the agent
        // writes where it is told.
        let keep =
            libc::O_ACCMODE | libc::O_SYNC | libc::O_DSYNC | libc::O_DIRECT | libc::O_NOATIME;
        let oflags =
            OFlag::from_bits_truncate(flags.0 & keep) | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        // Opened by the agent with the caller's access mode: a file the
        // agent may not open so is not passed through either (the kernel
        // opens a passed-through file with the daemon's credentials).
        let fd = self.open_rel(&rel, oflags, Mode::empty())?;
        Self::same(&fd, id)?;
        let f = File::from(fd);
        let id = self.open_io(ino.0, &f);
        Ok((self.keep(f, ino.0), id))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> R<(FileAttr, FileHandle)> {
        let rel = self.child(parent, name)?;
        self.judge(&rel, true)?;
        let (p, n) = parent_and_name(&rel).ok_or(Errno::EINVAL)?;
        let d = self.dir(p)?;
        let keep = libc::O_ACCMODE | libc::O_EXCL | libc::O_SYNC | libc::O_DSYNC | libc::O_DIRECT;
        let oflags = OFlag::from_bits_truncate(flags & keep)
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK;
        let m = safe_mode(mode & !umask, libc::S_IFREG);
        let fd = nix::fcntl::openat(&d, n, oflags, Mode::from_bits_truncate(m)).map_err(errno)?;
        self.give(req, &d, n, None)?;
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(m)).map_err(errno)?;
        let st = nix::sys::stat::fstat(&fd).map_err(errno)?;
        let ino = self
            .st
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .node(rel, id_of(&st));
        {
            let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
            match io.get_mut(&ino) {
                Some(Io::Cached(n)) => *n += 1,
                // Not while it is passed through elsewhere: made anew
                // under the same name, after an unlink say.
                Some(Io::Passthrough { .. }) => return Err(Errno::EBUSY),
                None => {
                    io.insert(ino, Io::Cached(1));
                }
            }
        }
        Ok((self.attr(ino, &st), self.keep(File::from(fd), ino)))
    }

    /// Makes a name with `make` (in the parent's directory), judged as a
    /// write, then gives it to the caller.
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: Option<u32>,
        make: impl FnOnce(&OwnedFd, &OsStr) -> nix::Result<()>,
    ) -> R<FileAttr> {
        let rel = self.child(parent, name)?;
        self.judge(&rel, true)?;
        let (p, n) = parent_and_name(&rel).ok_or(Errno::EINVAL)?;
        let d = self.dir(p)?;
        make(&d, n).map_err(errno)?;
        self.give(req, &d, n, mode)?;
        self.entry_of(rel)
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> R<()> {
        let rel = self.child(parent, name)?;
        self.judge(&rel, true)?;
        let (p, n) = parent_and_name(&rel).ok_or(Errno::EINVAL)?;
        let d = self.dir(p)?;
        let flag = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(&d, n, flag).map_err(errno)?;
        self.st
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unlinked(&rel);
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        self.judge(&from, true)?;
        self.judge(&to, true)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let is_dir = |rel: &Path| {
            self.lstat(rel)
                .map(|s| kind(s.st_mode) == FileType::Directory)
        };
        let moves_dir = is_dir(&from)? || (exchange && is_dir(&to)?);
        if moves_dir {
            let acl = self.acl();
            let alike = |rel: &Path| acl.uniform_below(&self.abs(rel)) == Some(Access::Rw);
            if !alike(&from) || !alike(&to) {
                return Err(Errno::EXDEV);
            }
        }
        let (fp, fname) = parent_and_name(&from).ok_or(Errno::EINVAL)?;
        let (tp, tname) = parent_and_name(&to).ok_or(Errno::EINVAL)?;
        let (fd, td) = (self.dir(fp)?, self.dir(tp)?);
        let rflags = nix::fcntl::RenameFlags::from_bits_truncate(flags.bits());
        nix::fcntl::renameat2(&fd, fname, &td, tname, rflags).map_err(errno)?;
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if exchange {
            let tmp = PathBuf::from("\0exchange");
            st.moved(&to, &tmp);
            st.moved(&from, &to);
            st.moved(&tmp, &from);
        } else {
            st.unlinked(&to);
            st.moved(&from, &to);
        }
        Ok(())
    }

    fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> R<FileAttr> {
        let (src, id) = self.node_of(ino)?;
        let to = self.child(newparent, newname)?;
        // The new name writes the same file: the source must be writable.
        self.judge(&src, true)?;
        self.judge(&to, true)?;
        let (tp, tn) = parent_and_name(&to).ok_or(Errno::EINVAL)?;
        // This very file, by its descriptor (a link through /proc/self/fd
        // needs no capability, unlike AT_EMPTY_PATH).
        let (fd, _) = self.pin(&src, id)?;
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let td = self.dir(tp)?;
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            by_fd.as_str(),
            &td,
            tn,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(errno)?;
        self.entry_of(to)
    }

    fn do_opendir(&self, ino: INodeNo) -> R<FileHandle> {
        let rel = self.path_of(ino)?;
        self.judge(&rel, false)?;
        let fd = self.open_rel(&rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(errno)?;
        let acl = self.acl();
        let mut entries = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(errno)?;
            let name = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
            let kind = match e.file_type() {
                Some(nix::dir::Type::Directory) => FileType::Directory,
                Some(nix::dir::Type::Symlink) => FileType::Symlink,
                Some(nix::dir::Type::Fifo) => FileType::NamedPipe,
                Some(nix::dir::Type::Socket) => FileType::Socket,
                Some(nix::dir::Type::CharacterDevice) => FileType::CharDevice,
                Some(nix::dir::Type::BlockDevice) => FileType::BlockDevice,
                _ => FileType::RegularFile,
            };
            // A denied file is not there for the sandbox.
            if kind != FileType::Directory
                && name != "."
                && name != ".."
                && acl.access(&self.abs(&rel.join(&name))) == Access::Deny
            {
                continue;
            }
            entries.push(Entry {
                name,
                ino: e.ino(),
                kind,
            });
        }
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.next_fh += 1;
        let fh = st.next_fh;
        st.dirs.insert(fh, entries);
        Ok(FileHandle(fh))
    }
}

macro_rules! answer {
    ($reply:ident, $r:expr, |$v:pat_param| $ok:expr) => {
        match $r {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

/// A file's pages stay cached from one open to the next
/// (`FOPEN_KEEP_CACHE`); with `FUSE_AUTO_INVAL_DATA` the kernel drops them
/// when it sees the file changed (its size or mtime, at most [`TTL`] old):
/// a host directory may change behind the agent.
const OPENED: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

impl Filesystem for GuardFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_AUTO_INVAL_DATA);
        // Backing files may be on an overlay (the sandbox's root): depth 2.
        self.passthrough = config
            .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
            .is_ok()
            && config.set_max_stack_depth(2).is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer!(reply, self.do_lookup(parent, name), |a| reply.entry(
            &TTL,
            &a,
            Generation(0)
        ));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == ROOT {
            return;
        }
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let gone = match st.nodes.get_mut(&ino.0) {
            Some(n) => {
                n.lookups = n.lookups.saturating_sub(nlookup);
                n.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(n) = st.nodes.remove(&ino.0) {
                if st.by_path.get(&n.path) == Some(&ino.0) {
                    st.by_path.remove(&n.path);
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|f| self.file(f)) {
            Some(f) => nix::sys::stat::fstat(f.as_fd()).map_err(errno),
            None => self.node_of(ino).and_then(|(rel, id)| {
                let st = self.lstat(&rel)?;
                if id_of(&st) == id {
                    Ok(st)
                } else {
                    Err(Errno::ESTALE)
                }
            }),
        };
        answer!(reply, r, |st| reply.attr(&TTL, &self.attr(ino.0, &st)));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh);
        answer!(reply, r, |a| reply.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.path_of(ino).and_then(|rel| {
            let (p, n) = parent_and_name(&rel).ok_or(Errno::EINVAL)?;
            let d = self.dir(p)?;
            nix::fcntl::readlinkat(&d, n).map_err(errno)
        });
        answer!(reply, r, |t| reply.data(t.as_bytes()));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
        if ![SFlag::S_IFREG, SFlag::S_IFIFO, SFlag::S_IFSOCK].contains(&kind) {
            return reply.error(Errno::EPERM);
        }
        let m = safe_mode(mode & !umask, kind.bits());
        let r = self.make(req, parent, name, Some(m), |d, n| {
            nix::sys::stat::mknodat(d, n, kind, Mode::from_bits_truncate(m), rdev as u64)
        });
        answer!(reply, r, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let m = safe_mode(mode & !umask, libc::S_IFDIR);
        let r = self.make(req, parent, name, Some(m), |d, n| {
            nix::sys::stat::mkdirat(d, n, Mode::from_bits_truncate(m))
        });
        answer!(reply, r, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(reply, self.remove(parent, name, false), |()| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(reply, self.remove(parent, name, true), |()| reply.ok());
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.make(req, parent, link_name, None, |d, n| {
            nix::unistd::symlinkat(target, d, n)
        });
        answer!(reply, r, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.do_rename(parent, name, newparent, newname, flags);
        answer!(reply, r, |()| reply.ok());
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        answer!(reply, self.do_link(ino, newparent, newname), |a| reply
            .entry(&TTL, &a, Generation(0)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino, flags) {
            Err(e) => reply.error(e),
            Ok((fh, None)) => reply.opened(fh, OPENED),
            Ok((fh, Some(id))) => {
                // SAFETY: `id` is a backing id of this session, registered
                // by the daemon and closed only when the inode's last file
                // is released (`close_io`); `into_raw` keeps the wrapper
                // from closing it here.
                let backing = unsafe { reply.wrap_backing(id) };
                reply.opened_passthrough(fh, FopenFlags::empty(), &backing);
                let _ = backing.into_raw();
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        thread_local! {
            /// Each thread's read buffer, kept: zeroing a fresh MiB for
            /// every request cost a tenth of a first read's throughput.
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let buf = &mut buf[..size];
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return reply.error(io_errno(e)),
                }
            }
            reply.data(&buf[..n]);
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        answer!(
            reply,
            f.write_all_at(data, offset).map_err(io_errno),
            |()| { reply.written(data.len() as u32) }
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let gone = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        if let Some((_, ino)) = gone {
            self.close_io(ino);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        answer!(reply, r.map_err(io_errno), |()| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer!(reply, self.do_opendir(ino), |fh| reply
            .opened(fh, FopenFlags::empty()));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entries) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino.max(1)), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.st
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dirs
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::fstatvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.do_create(req, parent, name, mode, umask, flags);
        answer!(reply, r, |(a, fh)| reply.created(
            &TTL,
            &a,
            Generation(0),
            fh,
            OPENED
        ));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        // SAFETY: fallocate on a descriptor this filesystem owns (kept
        // alive by `f`), with plain integer arguments.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, length as i64) };
        if r == 0 {
            reply.ok()
        } else {
            reply.error(io_errno(std::io::Error::last_os_error()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_move_every_node_below() {
        let mut st = State::new((0, 1));
        let a = st.node("d".into(), (0, 2));
        let b = st.node("d/x".into(), (0, 3));
        let c = st.node("d/x/y".into(), (0, 4));
        let other = st.node("dd".into(), (0, 5));
        st.moved(Path::new("d"), Path::new("e/f"));
        assert_eq!(st.nodes[&a].path, Path::new("e/f"));
        assert_eq!(st.nodes[&b].path, Path::new("e/f/x"));
        assert_eq!(st.nodes[&c].path, Path::new("e/f/x/y"));
        assert_eq!(st.nodes[&other].path, Path::new("dd"));
        assert_eq!(st.by_path[Path::new("e/f/x/y")], c);
        assert!(!st.by_path.contains_key(Path::new("d/x")));
        // Another file under a known name: the old node is gone, and acts
        // on nothing.
        let d2 = st.node("dd".into(), (0, 9));
        assert_ne!(d2, other);
        assert!(st.nodes[&other].gone && !st.nodes[&d2].gone);
        st.unlinked(Path::new("e/f/x/y"));
        assert!(st.nodes[&c].gone);
        assert_eq!(
            st.node("e/f".into(), (0, 2)),
            a,
            "the same file keeps its node"
        );
    }

    #[test]
    fn modes_never_set_uid_and_set_gid_only_on_directories() {
        assert_eq!(safe_mode(0o4755, libc::S_IFREG), 0o755);
        assert_eq!(safe_mode(0o2755, libc::S_IFREG), 0o755);
        assert_eq!(safe_mode(0o6775, libc::S_IFDIR), 0o2775);
        assert_eq!(safe_mode(0o1777, libc::S_IFDIR), 0o1777);
    }

    #[test]
    fn decisions_are_kept_bounded_and_counted() {
        let d = Decisions::default();
        for i in 0..KEPT + 10 {
            d.push(Decision {
                mount: "/w".into(),
                path: format!("/w/{i}"),
                write: false,
                allowed: true,
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (got, dropped) = rt.block_on(d.next());
        assert_eq!(dropped, 10);
        assert_eq!(got.len(), KEPT);
        assert_eq!(got[0].path, "/w/10");
    }
}
