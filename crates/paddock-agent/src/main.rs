//! paddock-agent: PID 1 inside every Paddock sandbox.
//!
//! It reaps orphans, optionally starts the sandbox's main process, and
//! serves the agent protocol (see `paddock-proto`) on a unix socket that the
//! daemon reaches from outside. The runtime binds that socket and hands it
//! over already listening, as an inherited fd. Usage:
//!
//! `paddock-agent --listen-fd N [-- MAIN ARGS...]`, with the sandbox's
//! identity in `PADDOCK_AGENT_IDENTITY` (`paddock_proto::identity`): the
//! agent greets every connection with it, and drops it from its
//! environment before it runs anything.

mod exec;
mod files;
mod guard;
mod handover;
mod mainlog;
mod ports;
mod pty;
mod reaper;

use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use paddock_proto::v1::agent_server::{Agent, AgentServer};
use paddock_proto::v1::*;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A download's response metadata: the opened file's size, when it says
/// what a read returns, and where it is (`paddock_proto::READ_*_HEADER`).
fn read_metadata(o: &files::OpenRead) -> tonic::metadata::MetadataMap {
    use std::os::unix::ffi::OsStrExt;
    let mut m = tonic::metadata::MetadataMap::new();
    if let Some(n) = o.size {
        m.insert(paddock_proto::READ_SIZE_HEADER, n.into());
    }
    m.insert_bin(
        paddock_proto::READ_PATH_HEADER,
        tonic::metadata::BinaryMetadataValue::from_bytes(o.resolved.as_os_str().as_bytes()),
    );
    m
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Service {
    reaper: reaper::Reaper,
    boot_unix_ms: u64,
    handovers: std::sync::Arc<handover::Handovers>,
    main_log: mainlog::MainLog,
    guards: guard::Guards,
    /// The main process, while `--hold-main` holds it.
    held: std::sync::Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl Agent for Service {
    async fn hello(&self, _req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: paddock_proto::PROTOCOL_VERSION,
            pid: std::process::id(),
            boot_unix_ms: self.boot_unix_ms,
            features: vec![
                paddock_proto::FEATURE_EXEC_START_HEADER.into(),
                paddock_proto::handover::FEATURE.into(),
                paddock_proto::handover::FEATURE_WRITE.into(),
                paddock_proto::FEATURE_GUARD.into(),
            ],
        }))
    }

    async fn guard(&self, req: Request<GuardRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let rules: Vec<(String, paddock_acl::Access)> = req
            .rules
            .iter()
            .map(|r| {
                let a = match r.access() {
                    acl_rule::Access::Rw => paddock_acl::Access::Rw,
                    acl_rule::Access::Ro => paddock_acl::Access::Ro,
                    acl_rule::Access::Deny => paddock_acl::Access::Deny,
                };
                (r.pattern.clone(), a)
            })
            .collect();
        let acl = paddock_acl::Acl::new(&rules)
            .map_err(|(i, e)| Status::invalid_argument(format!("rules[{i}]: {e}")))?;
        if !req.path.starts_with('/') {
            return Err(Status::invalid_argument("path: must be absolute"));
        }
        let Some(h) = self.handovers.take(&req.fd_token).await? else {
            return if self.guards.set_rules(&req.path, acl) {
                Ok(Response::new(Empty {}))
            } else {
                Err(Status::not_found(format!("{} is not guarded", req.path)))
            };
        };
        let fds = h.receive().await?;
        let [fuse, backing]: [std::os::fd::OwnedFd; 2] = fds.try_into().map_err(|_| {
            Status::invalid_argument(
                "fd_token: the hand-over must carry /dev/fuse and the directory",
            )
        })?;
        self.guards
            .serve(&req.path, acl, req.id_offset, fuse, backing)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    async fn release(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        let main = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        if !main.is_empty() {
            start_main(&self.reaper, &main, &self.main_log)
                .map_err(|e| Status::internal(format!("main process: {e}")))?;
        }
        Ok(Response::new(Empty {}))
    }

    async fn registrar(&self, req: Request<RegistrarRequest>) -> Result<Response<Empty>, Status> {
        let h = self
            .handovers
            .take(&req.into_inner().fd_token)
            .await?
            .ok_or_else(|| Status::invalid_argument("fd_token: required"))?;
        self.guards
            .registrar
            .set(h.into_stream())
            .map_err(|e| Status::internal(format!("registrar: {e}")))?;
        Ok(Response::new(Empty {}))
    }

    type FsDecisionsStream = BoxStream<FsDecision>;

    async fn fs_decisions(
        &self,
        _req: Request<Empty>,
    ) -> Result<Response<Self::FsDecisionsStream>, Status> {
        let d = self.guards.decisions.clone();
        let s = futures::stream::unfold(d, |d| async move {
            let (batch, dropped) = d.next().await;
            let out: Vec<Result<FsDecision, Status>> = batch
                .into_iter()
                .enumerate()
                .map(|(i, x)| {
                    Ok(FsDecision {
                        mount: x.mount,
                        path: x.path,
                        write: x.write,
                        allowed: x.allowed,
                        dropped: if i == 0 { dropped } else { 0 },
                    })
                })
                .collect();
            Some((futures::stream::iter(out), d))
        })
        .flatten();
        Ok(Response::new(Box::pin(s)))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let (tx, mut rx) = mpsc::channel(16);
        let buffered = exec::start(&self.reaper, &self.handovers, req, tx).await?;
        if !buffered {
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        // A buffered exec answers once, when the command is done: wait for
        // that before answering at all, so that the response's headers, its
        // one message and its trailers leave in one write (sent at once,
        // the headers took a write, and a wake of the daemon, of their own).
        let first = rx.recv().await;
        let rest = ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(
            futures::stream::iter(first).chain(rest),
        )))
    }

    type ReadFileStream = BoxStream<FileChunk>;

    async fn read_file(
        &self,
        req: Request<ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let req = req.into_inner();
        let handover = self.handovers.take(&req.fd_token).await?;
        let path = req.path.clone();
        let opened = tokio::task::spawn_blocking(move || files::open_read(&path))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        let meta = read_metadata(&opened);
        let mut f = tokio::fs::File::from_std(opened.file);
        if req.offset > 0 {
            f.seek(std::io::SeekFrom::Start(req.offset))
                .await
                .map_err(|e| files::io_status(e, &req.path))?;
        }
        let respond = |s: Self::ReadFileStream| {
            let mut r = Response::new(s);
            *r.metadata_mut() = meta.clone();
            Ok(r)
        };
        if let Some(h) = handover {
            // A regular file: the daemon reads it from here on (its offset
            // is where the seek left it). A small file costs less sent than
            // handed over: it stays on the call. And only one the daemon
            // takes (`holds_data`, which `size` says): on another
            // filesystem it would refuse what the call can carry.
            use std::os::fd::AsFd;
            let whole = req.offset == 0 && req.limit == 0;
            if whole
                && opened
                    .size
                    .is_some_and(|n| n >= paddock_proto::handover::MIN_FILE)
            {
                h.send(Some(f.as_fd()))?;
                return respond(Box::pin(futures::stream::empty()));
            }
            h.send(None)?;
        }
        let mut remaining = if req.limit == 0 { u64::MAX } else { req.limit };
        let (tx, rx) = mpsc::channel(4);
        let path = req.path.clone();
        tokio::spawn(async move {
            const CHUNK: u64 = 1 << 20;
            while remaining > 0 {
                // Read straight into the buffer that is sent: no copy.
                let mut buf = bytes::BytesMut::with_capacity(remaining.min(CHUNK) as usize);
                let mut limited = (&mut f).take(remaining.min(CHUNK));
                match limited.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        remaining -= n as u64;
                        if tx.send(Ok(FileChunk { data: buf.freeze() })).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(files::io_status(e, &path))).await;
                        break;
                    }
                }
            }
        });
        respond(Box::pin(ReceiverStream::new(rx)))
    }

    async fn write_file(
        &self,
        req: Request<Streaming<WriteFileInput>>,
    ) -> Result<Response<FileInfo>, Status> {
        let mut input = req.into_inner();
        let header = match input.message().await? {
            Some(WriteFileInput {
                msg: Some(write_file_input::Msg::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "write: the first message must be the header",
                ))
            }
        };
        // Taken first: a failure below closes the connection, which tells
        // the daemon to stop waiting for a descriptor.
        let handover = self.handovers.take(&header.fd_token).await?;
        let mut w = files::open_write(
            &header.path,
            header.mode,
            header.mkdir_parents,
            header.atomic,
            header.append,
        )
        .await?;
        // An error below drops `w`, and that leaves nothing of an
        // unfinished write (`Writer`'s `Drop`).
        let fail = |e: std::io::Error| files::io_status(e, &header.path);
        let handed = match handover {
            Some(h) => {
                // `reserve` admits the size against the sandbox's memory and
                // allocates it; the data then passes by the agent.
                let fits = !header.append && header.size >= paddock_proto::handover::MIN_FILE;
                let reserved = fits && w.reserve(header.size).await.map_err(fail)?;
                use std::os::fd::AsFd;
                h.send(reserved.then(|| w.file.as_fd()))?;
                reserved
            }
            None => false,
        };
        // A size announced up front is checked against the sandbox's memory
        // before anything comes on the call (see `Writer::admit`).
        if !handed && header.size > 0 {
            w.admit(header.size, header.size).map_err(fail)?;
        }
        loop {
            match input.message().await? {
                Some(WriteFileInput {
                    msg: Some(write_file_input::Msg::Commit(true)),
                }) => {
                    w.check_reserved().await.map_err(fail)?;
                    break;
                }
                Some(WriteFileInput {
                    msg: Some(write_file_input::Msg::Data(_)),
                }) if handed => {
                    return Err(Status::invalid_argument(
                        "write: data on the call after the file was handed over",
                    ));
                }
                Some(WriteFileInput {
                    msg: Some(write_file_input::Msg::Data(d)),
                }) => w.write(&d).await.map_err(fail)?,
                Some(_) => return Err(Status::invalid_argument("write: a second header")),
                // Cut off (or the sender went away: `?` above): nothing of an
                // atomic write is kept.
                None => {
                    return Err(Status::aborted(
                        "write: the upload ended before it was complete",
                    ))
                }
            }
        }
        Ok(Response::new(w.finish().await?))
    }

    async fn list_dir(
        &self,
        req: Request<PathRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        let path = req.into_inner().path;
        let entries = tokio::task::spawn_blocking(move || files::list(&path))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(ListDirResponse { entries }))
    }

    async fn resolve(
        &self,
        req: Request<PathRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let path = req.into_inner().path;
        let path = tokio::task::spawn_blocking(move || files::resolve(&path))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(ResolveResponse { path }))
    }

    async fn stat(&self, req: Request<PathRequest>) -> Result<Response<FileInfo>, Status> {
        Ok(Response::new(files::stat(&req.into_inner().path)?))
    }

    async fn remove(&self, req: Request<RemoveRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        tokio::task::spawn_blocking(move || files::remove(&r.path, r.recursive))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(Empty {}))
    }

    async fn rename(&self, req: Request<RenameRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        files::rename(&r.from, &r.to)?;
        Ok(Response::new(Empty {}))
    }

    async fn mkdir(&self, req: Request<MkdirRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        files::mkdir(&r.path, r.parents, r.mode)?;
        Ok(Response::new(Empty {}))
    }

    async fn ports(&self, _req: Request<Empty>) -> Result<Response<PortsResponse>, Status> {
        Ok(Response::new(PortsResponse {
            ports: ports::listening(),
        }))
    }

    type MainOutputStream = BoxStream<MainOutputChunk>;

    async fn main_output(
        &self,
        req: Request<MainOutputRequest>,
    ) -> Result<Response<Self::MainOutputStream>, Status> {
        let mut offset = req.into_inner().offset;
        let log = self.main_log.clone();
        // Past the end: the daemon counted another boot's output.
        if log.read(offset).0 < offset {
            offset = 0;
        }
        let s = futures::stream::unfold((log, offset), |(log, offset)| async move {
            loop {
                let (at, data) = log.read(offset);
                if !data.is_empty() {
                    let next = at + data.len() as u64;
                    return Some((Ok(MainOutputChunk { offset: at, data }), (log, next)));
                }
                log.wait_past(at).await;
            }
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn platform(&self, _req: Request<Empty>) -> Result<Response<PlatformInfo>, Status> {
        let u = nix::sys::utsname::uname().map_err(|e| Status::internal(format!("uname: {e}")))?;
        let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
        Ok(Response::new(PlatformInfo {
            sysname: s(u.sysname()),
            nodename: s(u.nodename()),
            release: s(u.release()),
            version: s(u.version()),
            machine: s(u.machine()),
        }))
    }
}

struct Args {
    /// The listening socket the runtime bound for the agent, as this fd.
    listen_fd: i32,
    identity: paddock_proto::identity::Identity,
    /// Open files per process in the sandbox: the agent lowers its own
    /// limit to this before it runs anything (every process inherits it).
    nofile: Option<u64>,
    /// Start the main process only when the daemon says (`Release`), once
    /// it has guarded the sandbox's mounts.
    hold_main: bool,
    /// Start the main process again whenever it exits.
    restart_main: bool,
    main: Vec<String>,
}

/// `--restart-main`: read by `start_main` (also when `Release` starts it).
static RESTART_MAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut listen_fd = None;
    let mut nofile = None;
    let mut hold_main = false;
    let mut restart_main = false;
    let mut main = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen-fd" => {
                let v = it.next().unwrap_or_default();
                listen_fd = Some(v.parse::<i32>().ok().filter(|fd| *fd > 2).ok_or(format!(
                    "--listen-fd: {v:?} is not a file descriptor above 2"
                ))?);
            }
            "--nofile" => {
                let v = it.next().unwrap_or_default();
                nofile = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 16)
                        .ok_or(format!("--nofile: {v:?} is not a count of 16 or more"))?,
                );
            }
            "--hold-main" => hold_main = true,
            "--restart-main" => restart_main = true,
            "--version" => {
                println!("paddock-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--" => {
                main = it.by_ref().collect();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        listen_fd: listen_fd.ok_or("--listen-fd N is required")?,
        identity: std::env::var(paddock_proto::identity::ENV)
            .ok()
            .and_then(|v| paddock_proto::identity::Identity::from_hex(&v))
            .ok_or(format!(
                "{} must hold the sandbox's identity (64 hex digits)",
                paddock_proto::identity::ENV
            ))?,
        nofile,
        hold_main,
        restart_main,
        main,
    })
}

fn main() {
    // Out of the sandbox's reach: not dumpable, so its processes (the same
    // user, without CAP_SYS_PTRACE) can neither ptrace the agent nor read
    // its /proc files: its environment as it started (which held its
    // identity; `remove_var` does not wipe that copy), memory and
    // descriptors (the daemon's side of its log, its sockets).
    // SAFETY: prctl(PR_SET_DUMPABLE) changes only this process's flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let args = parse_args();
    // Nothing the agent runs inherits its identity. (Still single-threaded:
    // no other thread reads the environment.)
    std::env::remove_var(paddock_proto::identity::ENV);
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            eprintln!("paddock-agent: {e}");
            std::process::exit(2);
        }
    };
    if let Some(n) = args.nofile {
        // Lowered here rather than by the OCI runtime: in a user namespace
        // runc sets a container's limits from outside it (prlimit), which
        // needs CAP_SYS_RESOURCE; lowering one's own needs nothing. Never
        // above what the agent has (raising needs the same capability).
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit with a valid, owned struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                let n = n.min(lim.rlim_max);
                lim.rlim_cur = n;
                lim.rlim_max = n;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    eprintln!(
                        "paddock-agent: --nofile {n}: {}",
                        std::io::Error::last_os_error()
                    );
                    std::process::exit(2);
                }
            }
        }
    }
    // A small runtime: the agent is idle most of its life and must stay
    // light (hundreds of sandboxes share one host).
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("paddock-agent: {e}");
        std::process::exit(1);
    }
}

/// Starts the sandbox's main process, its stdout and stderr one pipe that
/// only the agent reads (`mainlog`).
fn start_main(
    reaper: &reaper::Reaper,
    main: &[String],
    log: &mainlog::MainLog,
) -> Result<(), Box<dyn std::error::Error>> {
    start_main_after(reaper, main, log, std::time::Duration::ZERO)
}

/// The pause before a restart: 1 s, doubled (to 30 s) each time the main
/// process lived less than 10 s.
fn next_backoff(last: std::time::Duration, lived: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    if lived >= Duration::from_secs(10) || last.is_zero() {
        Duration::from_secs(1)
    } else {
        (last * 2).min(Duration::from_secs(30))
    }
}

fn start_main_after(
    reaper: &reaper::Reaper,
    main: &[String],
    log: &mainlog::MainLog,
    backoff: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let spawned = {
        let mut cmd = Command::new(&main[0]);
        if let Ok(here) = std::env::current_dir() {
            // By its path: a guard mounted since the agent started covers
            // it, and the agent's own handle is on the directory beneath.
            cmd.current_dir(here);
        }
        cmd.args(&main[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(w.try_clone()?))
            .stderr(Stdio::from(w));
        reaper.spawn(&mut cmd)
        // The command, and with it the agent's copies of the write end,
        // goes here: the pipe ends when the main process's last writer does.
    };
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(r)?;
    let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
    let l = log.clone();
    tokio::spawn(async move {
        l.fill(reader).await;
        let _ = done_tx.send(());
    });
    match spawned {
        Ok((_child, exit)) => {
            let log = log.clone();
            let (reaper, main) = (reaper.clone(), main.to_vec());
            tokio::spawn(async move {
                if let Ok(e) = exit.await {
                    // What it wrote before it ended comes first (a
                    // background process may keep the pipe open: not long).
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), done).await;
                    log.push(format!("[paddock] main process ended: {e:?}\n").as_bytes());
                    if RESTART_MAIN.load(std::sync::atomic::Ordering::Relaxed) {
                        let wait = next_backoff(backoff, started.elapsed());
                        tokio::time::sleep(wait).await;
                        log.push(b"[paddock] main process restarted (restart policy always)\n");
                        if let Err(e) = start_main_after(&reaper, &main, &log, wait) {
                            eprintln!("paddock-agent: restarting the main process: {e}");
                        }
                    }
                }
            });
        }
        Err(e) => {
            eprintln!("paddock-agent: main process {:?}: {e}", main[0]);
            log.push(
                format!("[paddock] main process {:?} did not start: {e}\n", main[0]).as_bytes(),
            );
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let reaper = reaper::Reaper::default();
    reaper.start()?;

    let main_log = mainlog::MainLog::default();
    RESTART_MAIN.store(args.restart_main, std::sync::atomic::Ordering::Relaxed);
    let mut held = Vec::new();
    if args.hold_main {
        held = args.main;
    } else if !args.main.is_empty() {
        start_main(&reaper, &args.main, &main_log)?;
    }

    // SIGTERM ends the sandbox: as PID 1 the kernel then kills the rest.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        term.recv().await;
        std::process::exit(0);
    });

    let fd = args.listen_fd;
    // Not for the commands the agent runs.
    nix::fcntl::fcntl(
        // SAFETY: fd is open for the duration of this call (the runtime
        // passed it in; a bad one fails the fcntl).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("--listen-fd {fd}: {e}"))?;
    // SAFETY: the runtime handed this listening socket to the agent
    // (`--preserve-fds`); nothing else in this process owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let boot_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Hand-over connections (paddock_proto::handover) wait for their
    // calls; the rest are the daemon's HTTP/2 connections, for tonic.
    let handovers = std::sync::Arc::new(handover::Handovers::default());
    let (conns_tx, conns) = mpsc::channel(16);
    let h = handovers.clone();
    let identity = args.identity;
    tokio::spawn(async move {
        loop {
            let mut s = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of descriptors, say: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let (tx, h) = (conns_tx.clone(), h.clone());
            tokio::spawn(async move {
                if paddock_proto::identity::greet(&mut s, &identity)
                    .await
                    .is_err()
                {
                    return;
                }
                match paddock_proto::handover::classify(&mut s).await {
                    Ok(Some(token)) => {
                        if let Ok(s) = s.into_std() {
                            h.put(token, s);
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(paddock_proto::UnixConn::from_tokio(s)).await;
                    }
                    Err(_) => {}
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(paddock_proto::STREAM_WINDOW)
        .initial_connection_window_size(paddock_proto::CONNECTION_WINDOW)
        .max_frame_size(paddock_proto::MAX_FRAME)
        .add_service(
            AgentServer::new(Service {
                reaper,
                boot_unix_ms,
                handovers,
                main_log,
                guards: Default::default(),
                held: std::sync::Mutex::new(held),
            })
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
        )
        .serve_with_incoming(ReceiverStream::new(conns))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_main_process_that_keeps_exiting_is_restarted_ever_later() {
        use std::time::Duration;
        let s = Duration::from_secs;
        assert_eq!(next_backoff(Duration::ZERO, s(0)), s(1));
        assert_eq!(next_backoff(s(1), s(2)), s(2));
        assert_eq!(next_backoff(s(16), s(2)), s(30));
        assert_eq!(next_backoff(s(30), s(2)), s(30));
        // One that ran a while starts over.
        assert_eq!(next_backoff(s(30), s(11)), s(1));
    }

    #[tokio::test]
    async fn hello_announces_the_start_in_metadata() {
        let s = Service {
            reaper: reaper::Reaper::default(),
            boot_unix_ms: 0,
            handovers: Default::default(),
            main_log: Default::default(),
            guards: Default::default(),
            held: Default::default(),
        };
        let h = s
            .hello(Request::new(HelloRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.protocol_version, paddock_proto::PROTOCOL_VERSION);
        for want in [
            paddock_proto::FEATURE_EXEC_START_HEADER,
            paddock_proto::handover::FEATURE,
            paddock_proto::handover::FEATURE_WRITE,
            paddock_proto::FEATURE_GUARD,
        ] {
            assert!(h.features.iter().any(|f| f == want), "{want}");
        }
    }
}
