//! Handing a file descriptor from the agent to the daemon.
//!
//! Where the agent and the daemon share a kernel (containers: the agent's
//! socket is a unix socket on the host), bulk data need not cross the
//! agent protocol at all. For a streamed command's stdout and a file
//! read, the daemon opens a second connection on the agent's socket,
//! sends [`MAGIC`] and a fresh token, and names that token in its gRPC
//! request; the agent sends the descriptor (the stdout pipe's read end,
//! the opened file) back on that connection with `SCM_RIGHTS`, or a bare
//! byte when it keeps the data on the gRPC stream after all (a small file,
//! one that is not a regular file). The daemon then reads the descriptor
//! itself: a byte of output goes pipe → daemon → client, instead of pipe →
//! agent → HTTP/2 → daemon → client (docs/benchmarks.md, session 9).
//! Everything else (exit status, stderr, stdin, errors) stays on the gRPC
//! call. A file write of a known size is handed over the other way round:
//! the agent opens the file, allocates the whole size (`fallocate`) and
//! sends the descriptor; the daemon writes the bytes and then commits on
//! the call. The allocation is what keeps a sandbox's files within its own
//! memory limit: a tmpfs page is charged to the memory cgroup of whoever
//! allocates it, and the daemon's writes then only fill pages the sandbox
//! already paid for ([`FEATURE_WRITE`]).
//!
//! An agent announces it with [`FEATURE`] in `Hello`; backends whose agent
//! runs under another kernel (gVisor's sentry, microVMs) cannot pass
//! descriptors to the host and keep the gRPC path.
//!
//! Hand-written over `sendmsg`/`recvmsg` (nix): no crate does `SCM_RIGHTS`
//! on a tokio unix stream with a hand-over token.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::statfs::{
    fstatfs, FsType, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC,
    XFS_SUPER_MAGIC,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// The feature an agent names in `Hello` when it hands descriptors over.
pub const FEATURE: &str = "fd-handover";

/// The feature an agent names in `Hello` when it also hands over files
/// opened for writing, allocated to the size the daemon announces.
pub const FEATURE_WRITE: &str = "fd-handover-write";

/// What a hand-over connection sends first, in place of HTTP/2's preface
/// (which starts `PRI *`), followed by its [`Token`].
pub const MAGIC: [u8; 16] = *b"paddock-fd/1\0\0\0\0";

/// Names one hand-over; the gRPC request carries the same bytes.
pub type Token = [u8; 16];

/// Files smaller than this stay on the call: for a few bytes a hand-over
/// (a connection, and the daemon's blocking pool) costs more than the
/// agent's copy (a 100-byte PUT took 0.26 ms longer handed over).
pub const MIN_FILE: u64 = 256 * 1024;

/// How long either side waits for the other half of a hand-over.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh token (random: the agent matches connections by it).
pub fn token() -> Token {
    let mut t = [0u8; 16];
    // getrandom(2) from the kernel's pool; never blocks after boot.
    // SAFETY: `t` is a writable buffer of the length passed.
    let n = unsafe { libc::getrandom(t.as_mut_ptr().cast(), t.len(), 0) };
    if n != t.len() as isize {
        // Uniqueness is what matters (the socket is the daemon's and the
        // sandbox's alone): fall back to time and a counter.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        t[..8].copy_from_slice(&now.to_le_bytes());
        t[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    t
}

/// The daemon's half: opens a hand-over connection on the agent socket at
/// `path` and names `token` on it.
pub async fn open(
    path: &Path,
    identity: &crate::identity::Identity,
    token: &Token,
) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path).await?;
    crate::identity::expect(&mut s, identity).await?;
    let mut hello = [0u8; 32];
    hello[..16].copy_from_slice(&MAGIC);
    hello[16..].copy_from_slice(token);
    s.write_all(&hello).await?;
    Ok(s)
}

/// The daemon's half: waits for what the agent sends on `s`: a
/// descriptor, or `None` when the agent keeps the data on the gRPC call.
pub async fn receive(s: &UnixStream) -> io::Result<Option<OwnedFd>> {
    // One descriptor per hand-over; any more are closed as they drop.
    Ok(receive_fds(s).await?.into_iter().next())
}

/// A regular file's status and the type of the filesystem it is on;
/// `None` for anything else (a FIFO, a device, a socket).
fn regular(f: impl AsFd) -> io::Result<Option<(nix::sys::stat::FileStat, FsType)>> {
    use nix::sys::stat::{fstat, SFlag};
    let st = fstat(&f)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    Ok(Some((st, fstatfs(&f)?.filesystem_type())))
}

/// Filesystems whose files hold their bytes in memory, charged to whoever
/// allocates them: tmpfs, and overlayfs (the container backend's root,
/// whose upper layer is a tmpfs).
fn in_memory(fs: FsType) -> bool {
    fs == TMPFS_MAGIC || fs == OVERLAYFS_SUPER_MAGIC
}

/// Whether a file is one the daemon (host root) reads or writes when it is
/// handed over: a regular file on a filesystem that holds data (in memory,
/// or ext4, xfs, btrfs; ext2 and ext3 share ext4's magic). Files of /proc,
/// /sys and the like are regular too, and some of them check the
/// privileges of whoever reads or writes rather than of whoever opened
/// them; a FIFO, a socket or a FUSE or network file could block a reader
/// for good. The agent asks the same before it hands a file over, so that
/// the daemon never refuses what the call could have carried.
pub fn holds_data(f: impl AsFd) -> io::Result<bool> {
    Ok(regular(f)?.is_some_and(|(_, fs)| {
        in_memory(fs) || [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC].contains(&fs)
    }))
}

/// Whether a file's bytes are held in memory (`in_memory`): only such
/// files are handed over for writing (`FEATURE_WRITE`). Elsewhere nothing
/// is gained, and the daemon writing as host root would pass by a disk's
/// quotas and reserved blocks.
pub fn memory_backed(f: impl AsFd) -> bool {
    regular(f).is_ok_and(|r| r.is_some_and(|(_, fs)| in_memory(fs)))
}

/// The daemon's half: a handed-over file to read, checked (`holds_data`).
pub fn data_file(fd: OwnedFd) -> io::Result<std::fs::File> {
    if !holds_data(&fd)? {
        return Err(io::Error::other(
            "the agent handed over something other than a regular file on a filesystem that holds data",
        ));
    }
    Ok(fd.into())
}

/// The daemon's half: a handed-over file to write `size` bytes into,
/// checked: memory-backed (`memory_backed`), empty, and with its `size`
/// bytes allocated, as an agent that follows `FEATURE_WRITE` leaves it. An
/// agent that did not allocate them would have the daemon's writes charged
/// to the daemon's memory instead of the sandbox's (an agent that punches
/// them out after this check still can, within the size of the sandbox's
/// tmpfs mounts).
pub fn write_file(fd: OwnedFd, size: u64) -> io::Result<std::fs::File> {
    let Some((st, _)) = regular(&fd)?.filter(|(_, fs)| in_memory(*fs)) else {
        return Err(io::Error::other(
            "the agent handed over something other than a regular file held in memory",
        ));
    };
    let allocated = (st.st_blocks as u64).saturating_mul(512);
    if st.st_size != 0 || allocated < size {
        return Err(io::Error::other(format!(
            "the agent handed over a file of {} bytes with {allocated} allocated, not an empty one with {size}",
            st.st_size
        )));
    }
    Ok(fd.into())
}

/// One message's descriptors (and its byte).
fn recv_fds(fd: RawFd) -> io::Result<Vec<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    // Room for as many as one message can carry (SCM_MAX_FD): were the
    // control data cut short, the kernel would still install what fit,
    // and an error here would leak them.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut got: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these descriptors in this
            // process for us; nothing else owns them.
            got.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    if msg.bytes == 0 && got.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the agent closed the hand-over without an answer",
        ));
    }
    Ok(got)
}

/// The descriptors the next message of a hand-over carries (from the
/// agent, or the other way round: the daemon's to a guard).
pub async fn receive_fds(s: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let wait = async {
        loop {
            s.readable().await?;
            match s.try_io(Interest::READABLE, || recv_fds(s.as_raw_fd())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no descriptor came on the hand-over",
        ))
    })
}

/// Sends `fds` (at least one) in one message on a hand-over connection.
pub async fn send_fds(s: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let byte = [1u8];
    loop {
        s.writable().await?;
        let r = s.try_io(Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(&byte)];
            let cmsgs = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(
                s.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map(|_| ())
            .map_err(io::Error::from)
        });
        match r {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                continue
            }
            r => return r,
        }
    }
}

/// The agent's half: what a new connection is. `Some(token)` (its first 32
/// bytes consumed) for a hand-over; `None` for anything else (HTTP/2),
/// with nothing consumed.
pub async fn classify(s: &mut UnixStream) -> io::Result<Option<Token>> {
    tokio::time::timeout(WAIT, classify_now(s))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface and no whole hand-over header",
            ))
        })
}

async fn classify_now(s: &mut UnixStream) -> io::Result<Option<Token>> {
    let mut head = [0u8; 32];
    loop {
        s.readable().await?;
        let n = match s.try_io(Interest::READABLE, || {
            socket2::SockRef::from(&*s).peek(as_uninit(&mut head))
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => r?,
        };
        if n == 0 || head[..n.min(16)] != MAGIC[..n.min(16)] {
            return Ok(None);
        }
        if n == 32 {
            break;
        }
        // The start of a hand-over, not all of it yet.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.read_exact(&mut head).await?;
    let mut t = [0u8; 16];
    t.copy_from_slice(&head[16..]);
    Ok(Some(t))
}

fn as_uninit(b: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: u8 and MaybeUninit<u8> have the same layout, and the slice
    // is initialised already (peek only writes bytes into it).
    unsafe { &mut *(b as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

/// The agent's half: sends `fd` on the hand-over connection `s`, or with
/// `None` says the data stays on the gRPC call.
pub fn send(s: &std::os::unix::net::UnixStream, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let byte = [1u8];
    let iov = [io::IoSlice::new(&byte)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    loop {
        // One byte on an empty socket: never short, never blocked.
        match sendmsg::<()>(s.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(|_| ()).map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A hand-over connection as the daemon opens it, and the agent's end,
    /// greeted.
    async fn connected(
        l: &tokio::net::UnixListener,
        path: &Path,
        tok: &Token,
    ) -> (UnixStream, UnixStream) {
        let id = crate::identity::Identity::from_hex(&"ab".repeat(32)).unwrap();
        let agent = async {
            let (mut a, _) = l.accept().await.unwrap();
            crate::identity::greet(&mut a, &id).await.unwrap();
            a
        };
        let (daemon, agent) = tokio::join!(open(path, &id, tok), agent);
        (daemon.unwrap(), agent)
    }

    #[tokio::test]
    async fn a_descriptor_crosses_and_http2_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("pd-handover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();

        // A hand-over: the agent sees the token, sends a pipe's read end.
        let tok = token();
        assert_ne!(tok, token(), "tokens differ");
        let (daemon, mut agent) = connected(&l, &path, &tok).await;
        assert_eq!(classify(&mut agent).await.unwrap(), Some(tok));
        let (r, w) = nix::unistd::pipe().unwrap();
        let agent = agent.into_std().unwrap();
        send(&agent, Some(std::os::fd::AsFd::as_fd(&r))).unwrap();
        drop(r);
        let got = receive(&daemon).await.unwrap().expect("a descriptor");
        std::fs::File::from(w).write_all(b"through").unwrap();
        let mut s = String::new();
        std::fs::File::from(got).read_to_string(&mut s).unwrap();
        assert_eq!(s, "through", "the daemon reads what the writer wrote");

        // No descriptor: the data stays on the call.
        let (daemon, mut agent) = connected(&l, &path, &tok).await;
        assert!(classify(&mut agent).await.unwrap().is_some());
        send(&agent.into_std().unwrap(), None).unwrap();
        assert!(receive(&daemon).await.unwrap().is_none());

        // More descriptors than one: the first is taken, the rest closed.
        // (Told by the pipes: a write to one whose every read end is
        // closed fails with EPIPE; other tests' descriptors come and go.)
        let (daemon, mut agent) = connected(&l, &path, &tok).await;
        assert!(classify(&mut agent).await.unwrap().is_some());
        let (reads, writes): (Vec<OwnedFd>, Vec<OwnedFd>) =
            (0..8).map(|_| nix::unistd::pipe().unwrap()).unzip();
        let raw: Vec<RawFd> = reads.iter().map(|r| r.as_raw_fd()).collect();
        {
            use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
            let iov = [io::IoSlice::new(b"x")];
            let c = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(agent.as_raw_fd(), &iov, &c, MsgFlags::empty(), None).unwrap();
        }
        drop(reads);
        let got = receive(&daemon).await.unwrap().expect("a descriptor");
        for (i, w) in writes.iter().enumerate() {
            let r = nix::unistd::write(w, b"?");
            match i {
                0 => assert_eq!(r, Ok(1), "the first is kept"),
                _ => assert_eq!(r, Err(nix::errno::Errno::EPIPE), "pipe {i} leaked"),
            }
        }
        drop((got, writes, agent));

        // An agent that hangs up without answering: an error, not a hang.
        let (daemon, agent) = connected(&l, &path, &tok).await;
        drop(agent);
        assert!(receive(&daemon).await.is_err());

        // HTTP/2's preface is not consumed.
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let (mut agent, _) = l.accept().await.unwrap();
        assert_eq!(classify(&mut agent).await.unwrap(), None);
        let mut pre = [0u8; 5];
        agent.read_exact(&mut pre).await.unwrap();
        assert_eq!(&pre, b"PRI *");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_data_files_are_read_by_the_daemon() {
        // A file of /proc is "regular", but not data.
        let proc = std::fs::File::open("/proc/self/status").unwrap();
        let e = data_file(proc.into()).unwrap_err();
        assert!(e.to_string().contains("holds data"), "{e}");
        let (r, _w) = nix::unistd::pipe().unwrap();
        let e = data_file(r).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        // A sandbox's files: tmpfs (its disk), overlayfs (its rootfs).
        let shm = std::path::Path::new("/dev/shm").join(format!("pd-data-{}", std::process::id()));
        std::fs::write(&shm, b"data").unwrap();
        let f = std::fs::File::open(&shm).unwrap();
        assert!(data_file(f.into()).is_ok());
        let _ = std::fs::remove_file(&shm);
    }

    #[test]
    fn the_daemon_writes_only_an_empty_allocated_file_held_in_memory() {
        use nix::fcntl::{fallocate, FallocateFlags};
        let path =
            std::path::Path::new("/dev/shm").join(format!("pd-write-{}", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap()
        };
        const SIZE: u64 = 1 << 20;
        // Not allocated: refused (the daemon's writes would be charged to it).
        let e = write_file(open().into(), SIZE).unwrap_err();
        assert!(e.to_string().contains("allocated"), "{e}");
        // Allocated as an agent does: taken.
        let f = open();
        fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, SIZE as i64).unwrap();
        assert!(write_file(f.into(), SIZE).is_ok());
        // Not empty: refused.
        let f = open();
        fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, SIZE as i64).unwrap();
        std::io::Write::write_all(&mut &f, b"x").unwrap();
        assert!(write_file(f.into(), SIZE).is_err());
        let _ = std::fs::remove_file(&path);
        // Not held in memory (a file of /proc), or not a file: refused.
        let proc = std::fs::File::open("/proc/self/status").unwrap();
        assert!(write_file(proc.into(), 0).is_err());
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(write_file(r, 0).is_err());
    }
}
