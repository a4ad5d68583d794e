//! Running commands: buffered, streamed, with stdin, or on a PTY.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_proto::v1::{
    exec_input, exec_output, ExecExit, ExecInput, ExecOutput, ExecStart, ExecStarted,
};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};

use paddock_proto::output::{self, CHUNK, SMALL};

use crate::handover::Handovers;
use crate::pty::{self, Pty};
use crate::reaper::{Exit, Reaper};

const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
/// Largest read from a terminal (its output comes in small pieces).
const PTY_CHUNK: usize = 64 * 1024;

pub type OutTx = mpsc::Sender<Result<ExecOutput, Status>>;

fn out(msg: exec_output::Msg) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { msg: Some(msg) })
}

/// A user to run as: uid, gid and home directory.
struct RunAs {
    uid: u32,
    gid: u32,
    home: Option<String>,
    name: Option<String>,
}

fn lookup_user(spec: &str) -> Result<RunAs, Status> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut found: Option<RunAs> = None;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        if f[0] == user || f[2] == user {
            found = Some(RunAs {
                uid: f[2].parse().unwrap_or(0),
                gid: f[3].parse().unwrap_or(0),
                home: Some(f[5].to_string()),
                name: Some(f[0].to_string()),
            });
            break;
        }
    }
    let mut run_as = match (found, user.parse::<u32>()) {
        (Some(r), _) => r,
        (None, Ok(uid)) => RunAs {
            uid,
            gid: uid,
            home: None,
            name: None,
        },
        (None, Err(_)) => {
            return Err(Status::invalid_argument(format!(
                "user: no user named {user:?} in the sandbox"
            )))
        }
    };
    if let Some(g) = group {
        run_as.gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "user: no group named {g:?} in the sandbox"
                        ))
                    })?
            }
        };
    }
    Ok(run_as)
}

/// Validates the start message and builds the command.
fn build(start: &ExecStart) -> Result<Command, Status> {
    let argv: Vec<String> = if !start.shell.is_empty() {
        vec!["/bin/sh".into(), "-c".into(), start.shell.clone()]
    } else {
        start.argv.clone()
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(Status::invalid_argument(
            "cmd: give a non-empty argv or a shell string",
        ));
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if !start.cwd.is_empty() {
        match std::fs::metadata(&start.cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Status::invalid_argument(format!(
                    "cwd: {} is not a directory",
                    start.cwd
                )))
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "cwd: {} does not exist in the sandbox",
                    start.cwd
                )))
            }
        }
        cmd.current_dir(&start.cwd);
    } else if let Ok(here) = std::env::current_dir() {
        // The agent's own directory by its path, looked up again: a mount
        // guarded since the agent started covers it (the agent's handle
        // is on the directory beneath).
        cmd.current_dir(here);
    }
    if !start.user.is_empty() {
        let u = lookup_user(&start.user)?;
        cmd.uid(u.uid).gid(u.gid);
        // std clears the supplementary groups when root drops to `uid`.
        if let Some(home) = u.home {
            cmd.env("HOME", home);
        }
        if let Some(name) = u.name {
            cmd.env("USER", &name).env("LOGNAME", name);
        }
    }
    for (k, v) in &start.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "env: invalid variable name {k:?}"
            )));
        }
        cmd.env(k, v);
    }
    let pty = start.pty;
    if pty {
        // A session of its own, with the terminal as its controlling one.
        // SAFETY: setsid and ioctl are async-signal-safe; no allocation happens.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        // A process group of its own (signals and timeouts reach the whole
        // group, as with a session). Without a pre_exec hook std spawns with
        // posix_spawn (a vfork: no copy of the agent's page tables), which
        // took a quarter of an exec round trip's CPU.
        cmd.process_group(0);
    }
    Ok(cmd)
}

/// Where a stream of output goes.
enum Sink {
    Stream(OutTx, bool),
    Buffer(Vec<u8>, u64, bool),
}

#[derive(Default)]
struct ReadState {
    /// Waiting on an empty pipe (or finished).
    idle: AtomicBool,
    bytes: AtomicU64,
}

/// Reads output with `read`, which appends to the buffer it is handed and
/// says how much it added, and hands it to `sink` without copying it.
async fn pump<R, F>(
    mut read: R,
    mut sink: Sink,
    state: Arc<ReadState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Sink
where
    R: FnMut(bytes::BytesMut) -> F,
    F: std::future::Future<Output = (bytes::BytesMut, std::io::Result<usize>)>,
{
    let mut buf = bytes::BytesMut::new();
    // Room for the next read: small until the command writes fast (most
    // print little, and a CHUNK for each of their pipes grew and shrank the
    // agent's heap on every exec), doubling while reads fill it.
    let mut want = SMALL;
    loop {
        state.idle.store(true, Ordering::SeqCst);
        // Reuses the allocation when the last chunk has been sent on.
        buf.reserve(want);
        let (b, r) = tokio::select! {
            r = read(buf) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        buf = b;
        let n = match r {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        if n >= want {
            want = (want * 2).min(CHUNK);
        }
        state.idle.store(false, Ordering::SeqCst);
        state.bytes.fetch_add(n as u64, Ordering::SeqCst);
        match &mut sink {
            Sink::Stream(tx, is_err) => {
                let chunk = output::take_chunk(&mut buf);
                let msg = if *is_err {
                    exec_output::Msg::Stderr(chunk)
                } else {
                    exec_output::Msg::Stdout(chunk)
                };
                if tx.send(out(msg)).await.is_err() {
                    break;
                }
            }
            Sink::Buffer(v, cap, truncated) => {
                let room = (*cap as usize).saturating_sub(v.len());
                if n > room {
                    *truncated = true;
                }
                v.extend_from_slice(&buf[..n.min(room)]);
                buf.clear();
            }
        }
    }
    sink
}

enum Stdin {
    Pipe(tokio::net::unix::pipe::Sender),
    Pty(Arc<tokio::io::unix::AsyncFd<OwnedFd>>),
}

impl Stdin {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stdin::Pipe(p) => p.write_all(data).await,
            Stdin::Pty(m) => pty::write_all(m, data).await,
        }
    }
}

fn kill_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe {
        libc::kill(-pid, sig);
    }
}

/// The call's start: in its metadata (see `EXEC_START_HEADER`), or first
/// on its stream. Returns the stream with what follows.
async fn start_of(
    req: Request<Streaming<ExecInput>>,
) -> Result<(ExecStart, Streaming<ExecInput>), Status> {
    let header = req
        .metadata()
        .get_bin(paddock_proto::EXEC_START_HEADER)
        .map(|v| {
            v.to_bytes()
                .map_err(|_| Status::invalid_argument("exec: start header: not base64"))
                .and_then(|b| {
                    ExecStart::decode(b)
                        .map_err(|e| Status::invalid_argument(format!("exec: start header: {e}")))
                })
        });
    let mut input = req.into_inner();
    let start = match header {
        Some(start) => start?,
        None => match input.message().await? {
            Some(ExecInput {
                msg: Some(exec_input::Msg::Start(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "exec: the first message must be `start`",
                ))
            }
        },
    };
    Ok((start, input))
}

/// Starts the command that `input`'s first message describes. Returns once
/// the process is spawned (or failed to); the rest runs in a task that
/// feeds `tx` its output and exit. Returns whether the exec is buffered
/// (one message, the exit with all output, and nothing before it).
pub async fn start(
    reaper: &Reaper,
    handovers: &Handovers,
    req: Request<Streaming<ExecInput>>,
    tx: OutTx,
) -> Result<bool, Status> {
    let (start, mut input) = start_of(req).await?;
    // The daemon reads stdout itself (see `stdout_fd_token`).
    let mut handover = handovers.take(&start.stdout_fd_token).await?;
    let mut cmd = build(&start)?;
    let began = Instant::now();
    let buffered = start.buffered;
    let cap = if start.max_output_bytes == 0 {
        DEFAULT_MAX_OUTPUT
    } else {
        start.max_output_bytes
    };

    let mut pty_master = None;
    // Output pipes' read ends, and copies of their write ends (see
    // `output_pipe`).
    let mut out_pipes: [Option<OwnedFd>; 2] = [None, None];
    let mut held: Vec<OwnedFd> = Vec::new();
    if start.pty {
        let p = Pty::open(start.rows as u16, start.cols as u16)
            .map_err(|e| Status::internal(format!("openpty: {e}")))?;
        let so = |fd: &OwnedFd| pty::dup(fd).map(Stdio::from);
        cmd.stdin(so(&p.slave)?)
            .stdout(so(&p.slave)?)
            .stderr(so(&p.slave)?);
        pty_master = Some(Arc::new(p.master));
        drop(p.slave);
    } else {
        // A command told up front that its input is empty reads /dev/null:
        // no pipe to make, register and close for every buffered exec.
        // Pipes keep the kernel's size: a larger one would count against
        // the pipe memory that every sandbox's root shares
        // (pipe-user-pages-soft is per host uid).
        let stdin = if start.close_stdin && start.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        };
        let (out_r, out_w) = output_pipe(&mut held)?;
        let (err_r, err_w) = output_pipe(&mut held)?;
        cmd.stdin(stdin).stdout(out_w).stderr(err_w);
        // Handed over, the read end is the daemon's alone: the agent
        // never reads stdout (it still holds a write end until the reap,
        // so the daemon sees end-of-file only after the exit).
        let out_r = match handover.take() {
            Some(h) if !buffered => {
                h.send(Some(out_r.as_fd()))?;
                None
            }
            h => {
                handover = h;
                Some(out_r)
            }
        };
        out_pipes = [out_r, Some(err_r)];
    }
    if let Some(h) = handover {
        // A terminal or a buffered exec: output stays on the call.
        h.send(None)?;
    }

    let spawned = reaper.spawn(&mut cmd);
    drop(cmd);
    let (mut child, exit_rx) = match spawned {
        Ok(c) => c,
        Err(e) => {
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "command not found"),
                std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
                _ => (126, "cannot execute"),
            };
            let argv0 = if start.shell.is_empty() {
                start.argv[0].clone()
            } else {
                "/bin/sh".into()
            };
            let msg = format!("paddock: {argv0}: {what}: {e}\n").into_bytes();
            let exit = ExecExit {
                exit_code: code,
                stderr: if buffered {
                    msg.clone().into()
                } else {
                    Default::default()
                },
                duration_us: began.elapsed().as_micros() as u64,
                ..Default::default()
            };
            if !buffered {
                let _ = tx.send(out(exec_output::Msg::Stderr(msg.into()))).await;
            }
            let _ = tx.send(out(exec_output::Msg::Exit(exit))).await;
            return Ok(buffered);
        }
    };
    let pid = child.id() as i32;
    if !buffered {
        let _ = tx
            .send(out(exec_output::Msg::Started(ExecStarted {
                pid: pid as u32,
            })))
            .await;
    }

    // Output readers.
    let mk_sink = |is_err| {
        if buffered {
            Sink::Buffer(Vec::new(), cap, false)
        } else {
            Sink::Stream(tx.clone(), is_err)
        }
    };
    let mut readers = Vec::new();
    let mut states = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stdin: Option<Stdin>;
    if let Some(master) = &pty_master {
        let st = Arc::new(ReadState::default());
        states.push(st.clone());
        let m = master.clone();
        readers.push(tokio::spawn(pump(
            move |mut b: bytes::BytesMut| {
                let m = m.clone();
                async move {
                    let start = b.len();
                    b.resize(start + PTY_CHUNK, 0);
                    let r = pty::read(&m, &mut b[start..]).await;
                    b.truncate(start + *r.as_ref().unwrap_or(&0));
                    (b, r)
                }
            },
            mk_sink(false),
            st,
            stop_rx.clone(),
        )));
        stdin = Some(Stdin::Pty(master.clone()));
    } else {
        for (i, fd) in out_pipes.into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| Status::internal(format!("pipe: {e}")))?;
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let st = Arc::new(ReadState::default());
            states.push(st.clone());
            readers.push(tokio::spawn(pump(
                move |mut b: bytes::BytesMut| {
                    let rx = rx.clone();
                    async move {
                        let r = output::read(&mut *rx.lock().await, &mut b).await;
                        (b, r)
                    }
                },
                mk_sink(i == 1),
                st,
                stop_rx.clone(),
            )));
        }
        stdin = match child.stdin.take() {
            Some(s) => Some(Stdin::Pipe(
                tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(s))
                    .map_err(|e| Status::internal(format!("pipe: {e}")))?,
            )),
            None => None,
        };
    }
    drop(child);

    // Input: initial stdin, then streamed stdin, resize and signals.
    let master_fd = pty_master.as_ref().map(|m| m.get_ref().as_raw_fd());
    let input_task = tokio::spawn(async move {
        let mut stdin = stdin;
        if !start.stdin.is_empty() {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write(&start.stdin).await;
            }
        }
        if start.close_stdin {
            close(&mut stdin).await;
        }
        while let Ok(Some(msg)) = input.message().await {
            match msg.msg {
                Some(exec_input::Msg::Stdin(data)) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(exec_input::Msg::Resize(r)) => {
                    if let Some(fd) = master_fd {
                        let _ = pty::resize(fd, r.rows as u16, r.cols as u16);
                    }
                }
                Some(exec_input::Msg::Signal(sig)) => kill_group(pid, sig),
                Some(exec_input::Msg::CloseStdin(true)) => close(&mut stdin).await,
                _ => {}
            }
        }
        // Keep stdin open if the caller just stopped sending: an open pipe
        // is what an interactive program expects until told otherwise.
        std::future::pending::<()>().await;
        drop(stdin);
    });

    let timeout = (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms));
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let mut timed_out = false;
        tokio::pin!(exit_rx, deadline);
        let exit = loop {
            tokio::select! {
                r = &mut exit_rx => break r.unwrap_or(Exit::Signal(9)),
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    kill_group(pid, libc::SIGKILL);
                }
                _ = tx.closed() => {
                    // The caller went away: nobody will read the result.
                    kill_group(pid, libc::SIGKILL);
                    let _ = exit_rx.await;
                    input_task.abort();
                    for r in readers { r.abort(); }
                    return;
                }
            }
        };
        // The command is gone: let its pipes reach end-of-file.
        drop(held);
        // Drain what the process left in its pipes; stop reading a pipe that
        // a background process keeps open with nothing in it.
        let total = |st: &[Arc<ReadState>]| {
            st.iter()
                .map(|s| s.bytes.load(Ordering::SeqCst))
                .sum::<u64>()
        };
        let mut joined = futures::future::join_all(readers);
        let mut last = total(&states);
        let sinks: Vec<Sink> = loop {
            match tokio::time::timeout(output::DRAIN_IDLE, &mut joined).await {
                Ok(r) => break r.into_iter().filter_map(Result::ok).collect(),
                Err(_) => {
                    let now = total(&states);
                    if now == last && states.iter().all(|s| s.idle.load(Ordering::SeqCst)) {
                        let _ = stop_tx.send(true);
                    }
                    last = now;
                }
            }
        };
        input_task.abort();
        let (code, signal) = match exit {
            Exit::Code(c) => (c, 0),
            Exit::Signal(s) => (128 + s, s),
        };
        let mut msg = ExecExit {
            exit_code: code,
            signal,
            timed_out,
            duration_us: began.elapsed().as_micros() as u64,
            ..Default::default()
        };
        let mut bufs = sinks.into_iter().filter_map(|s| match s {
            Sink::Buffer(v, _, t) => Some((v, t)),
            Sink::Stream(..) => None,
        });
        if buffered {
            if let Some((v, t)) = bufs.next() {
                msg.stdout = v.into();
                msg.stdout_truncated = t;
            }
            if let Some((v, t)) = bufs.next() {
                msg.stderr = v.into();
                msg.stderr_truncated = t;
            }
        }
        let _ = tx.send(out(exec_output::Msg::Exit(msg))).await;
    });
    Ok(buffered)
}

/// A pipe for a command's output: its read end, and its write end for the
/// child. A copy of the write end goes to `held`, which the agent keeps
/// until it has reaped the command. Without it the command's exit closed
/// its stdout and its stderr one after the other, each a wake-up of the
/// agent (which preempted the dying command to read end-of-file) before
/// the one for its exit; now the exit is the one wake-up, and the agent
/// finds both pipes at end-of-file when it closes its copies.
fn output_pipe(held: &mut Vec<OwnedFd>) -> Result<(OwnedFd, Stdio), Status> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Status::internal(format!("pipe: {e}")))?;
    held.push(
        w.try_clone()
            .map_err(|e| Status::internal(format!("pipe: {e}")))?,
    );
    Ok((r, Stdio::from(w)))
}

async fn close(stdin: &mut Option<Stdin>) {
    match stdin.take() {
        Some(Stdin::Pty(m)) => {
            // A terminal has no end-of-file: send ^D as a line discipline would.
            let _ = pty::write_all(&m, &[4]).await;
            *stdin = Some(Stdin::Pty(m));
        }
        Some(Stdin::Pipe(p)) => drop(p),
        None => {}
    }
}
