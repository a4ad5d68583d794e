//! A session channel: the requests that set it up (`pty-req`, `env`),
//! then a shell, a command or the `sftp` subsystem, each through the
//! engine as the sandbox's owner.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use paddock_core::model::{ExecControl, ExecEvent, ExecRequest, Principal, PtySize};
use paddock_core::Engine;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The variables a client may set (`SendEnv`): the terminal and locale.
pub fn env_allowed(name: &str) -> bool {
    name == "TERM" || name == "LANG" || name == "COLORTERM" || name.starts_with("LC_")
}

/// A login shell: the image's bash, else its sh.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi";

/// The most a command line may be (OpenSSH's sshd takes 256 KiB).
const MAX_COMMAND: usize = 256 << 10;

/// What the channel runs.
enum Run {
    Shell,
    Command(String),
}

/// Serves one session channel until it closes.
pub async fn run(
    engine: Arc<Engine>,
    p: Principal,
    id: Uuid,
    mut ch: Channel<Msg>,
    handle: Handle,
) {
    let mut pty: Option<PtySize> = None;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let run = loop {
        match ch.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(size(col_width, row_height));
                if !term.is_empty() && !term.contains('\0') {
                    env.insert("TERM".into(), term);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if env_allowed(&variable_name) && !variable_value.contains('\0') {
                    env.insert(variable_name, variable_value);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Run::Shell,
            Some(ChannelMsg::Exec { command, .. }) => match String::from_utf8(command) {
                Ok(c) if c.len() <= MAX_COMMAND && !c.contains('\0') => break Run::Command(c),
                _ => {
                    let _ = fail(
                        &ch,
                        "the command must be UTF-8 without NUL, at most 256 KiB",
                    )
                    .await;
                    return;
                }
            },
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                crate::sftp::run(engine, p, id, ch).await;
                return;
            }
            // Anything else before the channel runs something (another
            // subsystem was refused by the handler): ignored.
            Some(_) => {}
        }
    };
    let req = match run {
        Run::Shell => ExecRequest {
            shell: Some(LOGIN_SHELL.into()),
            env,
            pty,
            ..Default::default()
        },
        // `ssh box ''`: nothing to run.
        Run::Command(c) if c.trim().is_empty() => {
            let _ = ch.exit_status(0).await;
            let _ = ch.eof().await;
            let _ = ch.close().await;
            return;
        }
        Run::Command(c) => ExecRequest {
            shell: Some(c),
            env,
            pty,
            ..Default::default()
        },
    };
    exec(engine, p, id, ch, handle, req).await;
}

fn size(cols: u32, rows: u32) -> PtySize {
    let clamp = |v: u32, d: u16| match v {
        0 => d,
        v => v.min(u16::MAX as u32) as u16,
    };
    PtySize {
        rows: clamp(rows, 24),
        cols: clamp(cols, 80),
    }
}

/// Tells the client why nothing runs: on stderr, exit status 255 (what
/// OpenSSH's client answers when it cannot reach a host).
async fn fail(ch: &Channel<Msg>, why: &str) -> Result<(), russh::Error> {
    ch.extended_data_bytes(1, Bytes::from(format!("paddock: {why}\r\n")))
        .await?;
    ch.exit_status(255).await?;
    ch.eof().await?;
    ch.close().await
}

/// The number of a signal as SSH names it (RFC 4254 6.10).
fn signal_number(s: &Sig) -> Option<i32> {
    Some(match s {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(n) => match n.as_str() {
            "USR2" => libc::SIGUSR2,
            "WINCH" => libc::SIGWINCH,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            "TSTP" => libc::SIGTSTP,
            _ => return None,
        },
    })
}

/// Runs `req` and relays it: the channel's data, EOF, window changes and
/// signals to the command; its output, then its exit status, to the
/// channel, which is closed after.
async fn exec(
    engine: Arc<Engine>,
    p: Principal,
    id: Uuid,
    ch: Channel<Msg>,
    _handle: Handle,
    req: ExecRequest,
) {
    let (ctl, ctl_rx) = mpsc::channel::<ExecControl>(64);
    let stream = match engine.exec_stream(&p, id, &req, ctl_rx).await {
        Ok(s) => s,
        Err(e) => {
            let _ = fail(&ch, &e.to_string()).await;
            return;
        }
    };
    let (mut rx, tx) = ch.split();
    // The client's side, in a task of its own: the output below may wait
    // for the client's window while the client still sends.
    let input = tokio::spawn(async move {
        let mut closed = false;
        while let Some(m) = rx.wait().await {
            let c = match m {
                ChannelMsg::Data { data } if !closed => ExecControl::Stdin(data),
                ChannelMsg::Eof if !closed => {
                    closed = true;
                    ExecControl::CloseStdin
                }
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => ExecControl::Resize(size(col_width, row_height)),
                ChannelMsg::Signal { signal } => match signal_number(&signal) {
                    Some(n) => ExecControl::Signal(n),
                    None => continue,
                },
                ChannelMsg::Close => break,
                _ => continue,
            };
            if ctl.send(c).await.is_err() {
                return;
            }
        }
        // The client went away: hang up on the command, as sshd does.
        let _ = ctl.send(ExecControl::Signal(libc::SIGHUP)).await;
    });
    let mut stream = std::pin::pin!(stream);
    let mut status: Option<u32> = None;
    while let Some(ev) = stream.next().await {
        let r = match ev {
            Ok(ExecEvent::Stdout(b)) => tx.data_bytes(b).await,
            Ok(ExecEvent::Stderr(b)) => tx.extended_data_bytes(1, b).await,
            Ok(ExecEvent::Started { .. }) => Ok(()),
            Ok(ExecEvent::Exit(r)) => {
                status = Some(match r.signal {
                    // Killed by a signal: 128+n, as a shell reports it.
                    Some(n) if n > 0 => 128 + n as u32,
                    _ => u32::try_from(r.exit_code).unwrap_or(255),
                });
                break;
            }
            Err(e) => {
                let _ = tx
                    .extended_data_bytes(1, Bytes::from(format!("paddock: {e}\r\n")))
                    .await;
                break;
            }
        };
        if r.is_err() {
            // The channel is gone.
            input.abort();
            return;
        }
    }
    let _ = tx.exit_status(status.unwrap_or(255)).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
    input.abort();
}
