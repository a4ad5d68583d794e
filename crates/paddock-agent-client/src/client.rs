//! The daemon's side of the agent protocol: [`AgentClient`], the engine's
//! [`Agent`] over gRPC on an [`AgentChannel`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use paddock_core::agent::{Agent, Opened};
use paddock_core::error::{Error, Result};
use paddock_core::model::{
    ExecControl, ExecEvent, ExecRequest, ExecResult, FileInfo, Platform, Port, WriteOptions,
};
use paddock_core::AgentEndpoint;
use paddock_proto::identity::Identity;
use paddock_proto::v1::{self as pb, agent_client::AgentClient as Grpc};
use paddock_proto::{handover, output};
use tokio::sync::mpsc;

use crate::channel::{AgentChannel, Dialer};
use crate::from_agent;

#[derive(Clone)]
pub struct AgentClient {
    grpc: Grpc<AgentChannel>,
    /// The agent takes a buffered exec's start in the call's metadata
    /// (it said so in Hello; unknown until then, so not assumed).
    start_in_header: Arc<AtomicBool>,
    /// The agent's unix socket and identity, for hand-over connections:
    /// `None` when its backend cannot pass descriptors (another transport,
    /// or a kernel of its own).
    handover_path: Option<Arc<std::path::PathBuf>>,
    identity: Identity,
    /// The agent hands stdout pipes and files over (Hello said so, and the
    /// backend can).
    fd_handover: Arc<AtomicBool>,
    /// The agent hands over files opened for writing too.
    fd_handover_write: Arc<AtomicBool>,
}

/// Largest encoded `ExecStart` sent as metadata (base64 makes it a third
/// larger; the agent's HTTP/2 server takes 16 KiB of headers). A larger
/// one (a long stdin, say) goes on the stream as before.
const START_HEADER_MAX: usize = 4096;

fn to_result(e: pb::ExecExit) -> ExecResult {
    ExecResult {
        exit_code: e.exit_code,
        signal: (e.signal != 0).then_some(e.signal),
        timed_out: e.timed_out,
        stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
        stdout_truncated: e.stdout_truncated,
        stderr_truncated: e.stderr_truncated,
        duration_ms: e.duration_us as f64 / 1000.0,
    }
}

pub fn file_info(f: pb::FileInfo) -> FileInfo {
    use chrono::TimeZone;
    FileInfo {
        name: f.name,
        path: f.path,
        kind: f.kind,
        size: f.size,
        mode: f.mode,
        modified_at: chrono::Utc
            .timestamp_millis_opt(f.mtime_unix_ms)
            .single()
            .unwrap_or_default(),
        symlink_target: (!f.symlink_target.is_empty()).then_some(f.symlink_target),
    }
}

impl AgentClient {
    /// Connects, retrying until `timeout` (the agent may still be starting),
    /// and checks the protocol version. `handover`: the backend can pass
    /// descriptors (only over a unix socket).
    pub async fn connect(
        endpoint: &AgentEndpoint,
        handover: bool,
        timeout: Duration,
    ) -> Result<AgentClient> {
        let deadline = Instant::now() + timeout;
        let (dialer, identity, handover_path) = dialer_of(endpoint, handover);
        let mut delay = Duration::from_micros(100);
        let mut last: Option<String> = None;
        loop {
            let attempt = async {
                let ch = AgentChannel::connect(dialer.clone(), identity)
                    .await
                    .map_err(|e| e.message().to_string())?;
                let client = AgentClient::over(ch, handover_path.clone(), identity);
                client.hello().await.map(|h| (client, h))
            };
            // An agent that takes the connection and never answers (its
            // socket is bound before it starts) is given up at the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            // Cut off at the deadline, the last attempt's own error says
            // more than the deadline (another sandbox's agent, say).
            let answer = tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(last
                        .take()
                        .unwrap_or_else(|| format!("no answer within {timeout:?}")))
                });
            match answer {
                Ok((client, hello)) => {
                    Self::check_version(&hello)?;
                    return Ok(client);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Unavailable {
                        what: "sandbox agent".into(),
                        reason: format!("no answer on {endpoint}: {e}"),
                    })
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(2));
                }
            }
        }
    }

    /// A client that connects on first use, without asking the agent
    /// anything yet: for a daemon coming back to many sandboxes at once,
    /// which checks them with `check` after it serves again.
    pub fn lazy(endpoint: &AgentEndpoint, handover: bool) -> AgentClient {
        let (dialer, identity, handover_path) = dialer_of(endpoint, handover);
        AgentClient::over(
            AgentChannel::lazy(dialer, identity),
            handover_path,
            identity,
        )
    }

    /// Asks the agent who it is, within `timeout`, and checks that it
    /// speaks this daemon's protocol.
    pub async fn check(&self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.hello()).await {
            Ok(Ok(hello)) => Self::check_version(&hello),
            Ok(Err(e)) => Err(Error::Unavailable {
                what: "sandbox agent".into(),
                reason: e,
            }),
            Err(_) => Err(Error::Unavailable {
                what: "sandbox agent".into(),
                reason: format!("no answer within {timeout:?}"),
            }),
        }
    }

    fn over(
        ch: AgentChannel,
        handover_path: Option<std::path::PathBuf>,
        identity: Identity,
    ) -> AgentClient {
        let origin = tonic::codegen::http::Uri::from_static(paddock_proto::ORIGIN);
        AgentClient {
            grpc: Grpc::with_origin(ch, origin)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
            start_in_header: Arc::new(AtomicBool::new(false)),
            handover_path: handover_path.map(Arc::new),
            identity,
            fd_handover: Arc::new(AtomicBool::new(false)),
            fd_handover_write: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A hand-over connection and its token, if the agent hands over and
    /// the connection opens (else the call goes without: it may still get
    /// through, past a full backlog say).
    async fn handover(&self) -> Option<(tokio::net::UnixStream, handover::Token)> {
        if !self.fd_handover.load(Ordering::Relaxed) {
            return None;
        }
        let path = self.handover_path.as_ref()?;
        let token = handover::token();
        match handover::open(path, &self.identity, &token).await {
            Ok(conn) => Some((conn, token)),
            Err(e) => {
                tracing::debug!("hand-over connection to {}: {e}", path.display());
                None
            }
        }
    }

    async fn hello(&self) -> std::result::Result<pb::HelloResponse, String> {
        self.grpc
            .clone()
            .hello(pb::HelloRequest {
                daemon_version: env!("CARGO_PKG_VERSION").into(),
                protocol_version: paddock_proto::PROTOCOL_VERSION,
            })
            .await
            .map(|r| {
                let hello = r.into_inner();
                self.note_features(&hello);
                hello
            })
            .map_err(|e| e.message().to_string())
    }

    /// Remembers what the agent said it understands.
    fn note_features(&self, hello: &pb::HelloResponse) {
        let has = |f: &str| hello.features.iter().any(|x| x == f);
        self.start_in_header.store(
            has(paddock_proto::FEATURE_EXEC_START_HEADER),
            Ordering::Relaxed,
        );
        let can = self.handover_path.is_some() && handover_allowed();
        self.fd_handover
            .store(has(handover::FEATURE) && can, Ordering::Relaxed);
        self.fd_handover_write
            .store(has(handover::FEATURE_WRITE) && can, Ordering::Relaxed);
    }

    fn check_version(hello: &pb::HelloResponse) -> Result<()> {
        if hello.protocol_version != paddock_proto::PROTOCOL_VERSION {
            return Err(Error::Unavailable {
                what: "sandbox agent".into(),
                reason: format!(
                    "agent {} speaks protocol {}, this daemon speaks {}",
                    hello.agent_version,
                    hello.protocol_version,
                    paddock_proto::PROTOCOL_VERSION
                ),
            });
        }
        Ok(())
    }

    fn start_msg(req: &ExecRequest, buffered: bool) -> pb::ExecInput {
        let pty = req.pty.unwrap_or_default();
        pb::ExecInput {
            msg: Some(pb::exec_input::Msg::Start(pb::ExecStart {
                argv: req.cmd.clone(),
                shell: req.shell.clone().unwrap_or_default(),
                env: req.env.clone().into_iter().collect(),
                cwd: req.cwd.clone().unwrap_or_default(),
                user: req.user.clone().unwrap_or_default(),
                timeout_ms: req.timeout.map(|t| (t * 1000.0).ceil() as u64).unwrap_or(0),
                pty: req.pty.is_some(),
                rows: pty.rows as u32,
                cols: pty.cols as u32,
                buffered,
                max_output_bytes: req.max_output_bytes.unwrap_or(0),
                stdin: req.stdin.clone().unwrap_or_default().into_bytes().into(),
                close_stdin: buffered || req.stdin.is_some(),
                stdout_fd_token: Default::default(),
            })),
        }
    }

    /// The call for a buffered exec: its start in metadata and no body
    /// when the agent takes that (one HEADERS frame, one write, one wake
    /// of the agent; with a body hyper sends the DATA frame from a task of
    /// its own, often a write and a wake later), else on the stream.
    fn buffered_call(
        &self,
        start: pb::ExecInput,
    ) -> tonic::Request<futures::stream::Iter<std::vec::IntoIter<pb::ExecInput>>> {
        use prost::Message;
        if self.start_in_header.load(Ordering::Relaxed) {
            if let Some(pb::exec_input::Msg::Start(s)) = &start.msg {
                if s.encoded_len() <= START_HEADER_MAX {
                    let mut r = tonic::Request::new(futures::stream::iter(Vec::new()));
                    let mut v = tonic::metadata::MetadataValue::from_bytes(&s.encode_to_vec());
                    // Never indexed by HPACK: each start differs, and would
                    // push the headers that repeat out of the dynamic table
                    // (its stdin and env are no one's business either).
                    v.set_sensitive(true);
                    r.metadata_mut()
                        .insert_bin(paddock_proto::EXEC_START_HEADER, v);
                    r.extensions_mut().insert(paddock_proto::HeadersOnly);
                    return r;
                }
            }
        }
        tonic::Request::new(futures::stream::iter(vec![start]))
    }

    /// Runs a command to completion and returns its collected output.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult> {
        let start = Self::start_msg(req, true);
        let mut grpc = self.grpc.clone();
        let mut out = grpc
            .exec(self.buffered_call(start))
            .await
            .map_err(|e| from_agent(e, "cmd"))?
            .into_inner();
        while let Some(msg) = out.message().await.map_err(|e| from_agent(e, "cmd"))? {
            match msg.msg {
                Some(pb::exec_output::Msg::Exit(e)) => return Ok(to_result(e)),
                Some(pb::exec_output::Msg::Error(e)) => return Err(Error::invalid("cmd", e)),
                _ => {}
            }
        }
        Err(Error::Unavailable {
            what: "sandbox agent".into(),
            reason: "the command's stream ended without an exit status".into(),
        })
    }

    /// Starts a command and streams its events; `control` carries stdin,
    /// resizes and signals to it.
    pub async fn exec_stream(
        &self,
        req: &ExecRequest,
        control: mpsc::Receiver<ExecControl>,
    ) -> Result<impl Stream<Item = Result<ExecEvent>> + Send + 'static> {
        let mut start = Self::start_msg(req, false);
        // Not for a terminal: its output is one stream, read by the agent.
        let handover = match req.pty {
            None => self.handover().await,
            Some(_) => None,
        };
        if let (Some((_, token)), Some(pb::exec_input::Msg::Start(s))) = (&handover, &mut start.msg)
        {
            s.stdout_fd_token = token.to_vec().into();
        }
        let input = futures::stream::iter([start])
            .chain(tokio_stream::wrappers::ReceiverStream::new(control).map(control_msg));
        let mut grpc = self.grpc.clone();
        let out = grpc
            .exec(input)
            .await
            .map_err(|e| from_agent(e, "cmd"))?
            .into_inner();
        let pipe = match handover {
            Some((conn, _)) => match handover::receive(&conn).await.map_err(handover_error)? {
                Some(fd) => Some(
                    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(handover_error)?,
                ),
                None => None,
            },
            None => None,
        };
        Ok(merge_stdout(out, pipe))
    }

    /// Downloads a file: what the agent opened (its size, when that says
    /// what a read returns, and its path with every symlink followed) and
    /// its bytes, at most `size` of them when it is known.
    pub async fn read_file(
        &self,
        path: &str,
    ) -> Result<(Opened, futures::stream::BoxStream<'static, Result<Bytes>>)> {
        let handover = self.handover().await;
        let mut grpc = self.grpc.clone();
        let resp = grpc
            .read_file(pb::ReadFileRequest {
                path: path.into(),
                offset: 0,
                limit: 0,
                fd_token: handover
                    .as_ref()
                    .map(|(_, t)| t.to_vec().into())
                    .unwrap_or_default(),
            })
            .await
            .map_err(|e| from_agent(e, "path"))?;
        let md = resp.metadata();
        let mut opened = Opened {
            size: md
                .get(paddock_proto::READ_SIZE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            resolved: md
                .get_bin(paddock_proto::READ_PATH_HEADER)
                .and_then(|v| v.to_bytes().ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        };
        let mut s = resp.into_inner();
        if let Some((conn, _)) = handover {
            if let Some(fd) = handover::receive(&conn).await.map_err(handover_error)? {
                let f = handover::data_file(fd).map_err(handover_error)?;
                // The call's own (empty) stream read to its end: one dropped
                // before would be reset, and a connection that resets more
                // than h2's limit of streams within its window is closed.
                tokio::spawn(async move { while let Some(Ok(_)) = s.next().await {} });
                // The daemon's own look at what it reads.
                let len = f.metadata().map_err(handover_error)?.len();
                opened.size = Some(len);
                return Ok((
                    opened,
                    read_handed_over(f, path.to_string()).take_bytes(len),
                ));
            }
        }
        let s = s.map(|c| c.map(|c| c.data).map_err(|e| from_agent(e, "path")));
        Ok(match opened.size {
            Some(n) => (opened, s.take_bytes(n)),
            None => (opened, s.boxed()),
        })
    }

    pub async fn write_file<S>(&self, path: &str, opts: &WriteOptions, data: S) -> Result<FileInfo>
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        // A write of a known size large enough to be worth it is handed
        // over (`handover::FEATURE_WRITE`): the agent allocates the file
        // and sends it, and the bytes go straight in from here.
        let size = opts.size.filter(|&n| {
            !opts.append
                && n >= handover::MIN_FILE
                && self.fd_handover_write.load(Ordering::Relaxed)
        });
        let handover = match size {
            Some(_) => self.handover().await,
            None => None,
        };
        let header = pb::WriteFileInput {
            msg: Some(pb::write_file_input::Msg::Header(pb::WriteFileHeader {
                path: path.into(),
                mode: opts.mode.unwrap_or(0),
                mkdir_parents: opts.mkdir_parents,
                atomic: opts.atomic,
                append: opts.append,
                fd_token: handover
                    .as_ref()
                    .map(|(_, t)| t.to_vec().into())
                    .unwrap_or_default(),
                size: opts.size.unwrap_or(0),
            })),
        };
        let commit = pb::WriteFileInput {
            msg: Some(pb::write_file_input::Msg::Commit(true)),
        };
        let (tx, rx) = mpsc::channel::<pb::WriteFileInput>(4);
        let input =
            futures::stream::iter([header]).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut grpc = self.grpc.clone();
        let call = grpc.write_file(input);
        // Feeds the call. A body error (the client went away mid-upload)
        // must not look like a clean end of file: the input then ends
        // without `commit`, the agent keeps nothing of an atomic write, and
        // the body's error is what the caller hears.
        let path2 = path.to_string();
        let feed = async move {
            let mut data = Box::pin(data);
            if let (Some((conn, _)), Some(size)) = (handover, size) {
                match handover::receive(&conn).await {
                    Ok(Some(fd)) => {
                        let f = handover::write_file(fd, size).map_err(handover_error)?;
                        write_handed_over(f, &mut data, size, &path2).await?;
                        let _ = tx.send(commit).await;
                        return Ok(());
                    }
                    Ok(None) => {}
                    // The agent closed it: it refused the write, and the
                    // call says why.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(handover_error(e)),
                }
            }
            while let Some(b) = data.next().await {
                let msg = pb::WriteFileInput {
                    msg: Some(pb::write_file_input::Msg::Data(b?)),
                };
                if tx.send(msg).await.is_err() {
                    // The call ended: its answer says why.
                    return Ok(());
                }
            }
            let _ = tx.send(commit).await;
            Ok::<(), Error>(())
        };
        // The call's answer ends the upload: once the agent has refused it
        // (or is gone), the rest of the body is not fed on (the API drains
        // it). The feeder's error comes first when both are there: a body
        // that broke off makes the agent's "ended before it was complete".
        tokio::pin!(call, feed);
        let res = tokio::select! {
            biased;
            fed = &mut feed => {
                fed?;
                call.await
            }
            res = &mut call => res,
        };
        Ok(file_info(
            res.map_err(|e| from_agent(e, "path"))?.into_inner(),
        ))
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<FileInfo>> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .list_dir(pb::PathRequest { path: path.into() })
            .await
            .map_err(|e| from_agent(e, "path"))?;
        Ok(r.into_inner().entries.into_iter().map(file_info).collect())
    }

    /// Where `path` leads once its symlinks are followed.
    pub async fn resolve(&self, path: &str) -> Result<String> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .resolve(pb::PathRequest { path: path.into() })
            .await
            .map_err(|e| from_agent(e, "path"))?;
        Ok(r.into_inner().path)
    }

    pub async fn stat(&self, path: &str) -> Result<FileInfo> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .stat(pb::PathRequest { path: path.into() })
            .await
            .map_err(|e| from_agent(e, "path"))?;
        Ok(file_info(r.into_inner()))
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.remove(pb::RemoveRequest {
            path: path.into(),
            recursive,
        })
        .await
        .map_err(|e| from_agent(e, "path"))?;
        Ok(())
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.rename(pb::RenameRequest {
            from: from.into(),
            to: to.into(),
        })
        .await
        .map_err(|e| from_agent(e, "path"))?;
        Ok(())
    }

    pub async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.mkdir(pb::MkdirRequest {
            path: path.into(),
            parents,
            mode: mode.unwrap_or(0),
        })
        .await
        .map_err(|e| from_agent(e, "path"))?;
        Ok(())
    }

    pub async fn ports(&self) -> Result<Vec<Port>> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .ports(pb::Empty {})
            .await
            .map_err(|e| from_agent(e, "ports"))?;
        Ok(r.into_inner()
            .ports
            .into_iter()
            .map(|p| Port {
                port: p.port as u16,
                address: p.address,
                protocol: p.protocol,
                declared: false,
                listening: true,
            })
            .collect())
    }

    /// uname(2) inside the sandbox.
    pub async fn platform(&self) -> Result<Platform> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .platform(pb::Empty {})
            .await
            .map_err(|e| match e.code() {
                tonic::Code::Unimplemented => Error::Unsupported(
                    "platform info from this sandbox's agent, which predates it (recreate the \
                     sandbox)"
                        .into(),
                ),
                _ => from_agent(e, "platform"),
            })?
            .into_inner();
        Ok(Platform {
            system: r.sysname,
            node: r.nodename,
            release: r.release,
            version: r.version,
            machine: r.machine,
        })
    }

    /// The main process's output from `offset` on, as the agent sends it:
    /// `(offset of the chunk, bytes)`, the offset past the one asked for
    /// when the agent no longer held what came between. Ends when the
    /// agent goes (the sandbox stops).
    pub async fn main_output(
        &self,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<(u64, Bytes)>> + Send + 'static> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .main_output(pb::MainOutputRequest { offset })
            .await
            .map_err(|e| from_agent(e, "main output"))?;
        Ok(r.into_inner().map(|c| {
            c.map(|c| (c.offset, c.data))
                .map_err(|e| from_agent(e, "main output"))
        }))
    }
}

impl AgentClient {
    /// See [`Agent::guard`]. The descriptors go on a hand-over connection
    /// of their own (whatever `PADDOCK_FD_HANDOVER` says: they are not
    /// data that could take the protocol instead).
    pub async fn guard(
        &self,
        path: &str,
        rules: &[paddock_core::model::AclRule],
        id_offset: u32,
        fds: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> Result<()> {
        use paddock_core::model::Access;
        use std::os::fd::AsFd;
        let rules = rules
            .iter()
            .map(|r| pb::AclRule {
                pattern: r.path.clone(),
                access: match r.access {
                    Access::Rw => pb::acl_rule::Access::Rw,
                    Access::Ro => pb::acl_rule::Access::Ro,
                    Access::Deny => pb::acl_rule::Access::Deny,
                } as i32,
            })
            .collect();
        let mut req = pb::GuardRequest {
            path: path.to_string(),
            rules,
            fd_token: Bytes::new(),
            id_offset,
        };
        let mut conn = None;
        if let Some(fds) = &fds {
            let (c, token) = self.handover_for("guarded mounts").await?;
            handover::send_fds(&c, &[fds[0].as_fd(), fds[1].as_fd()])
                .await
                .map_err(handover_error)?;
            req.fd_token = Bytes::copy_from_slice(&token);
            conn = Some(c);
        }
        let mut grpc = self.grpc.clone();
        let r = grpc.guard(req).await;
        drop(conn);
        r.map(|_| ()).map_err(|e| match e.code() {
            tonic::Code::Unimplemented => Error::Unsupported(
                "guarded mounts with this sandbox's agent, which predates them (recreate the \
                 sandbox)"
                    .into(),
            ),
            _ => from_agent(e, "mounts"),
        })
    }

    /// A hand-over connection for `what`, whatever `PADDOCK_FD_HANDOVER`
    /// says (descriptors a guard needs, not data that could take the
    /// protocol instead).
    async fn handover_for(&self, what: &str) -> Result<(tokio::net::UnixStream, handover::Token)> {
        let at = self.handover_path.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("{what} on an agent out of the host's reach"))
        })?;
        let token = handover::token();
        let c = handover::open(at, &self.identity, &token)
            .await
            .map_err(handover_error)?;
        Ok((c, token))
    }

    /// See [`Agent::registrar`]: a hand-over connection the agent keeps.
    pub async fn registrar(&self) -> Result<std::os::unix::net::UnixStream> {
        let (c, token) = self.handover_for("a registrar").await?;
        let mut grpc = self.grpc.clone();
        grpc.registrar(pb::RegistrarRequest {
            fd_token: Bytes::copy_from_slice(&token),
        })
        .await
        .map_err(|e| from_agent(e, "registrar"))?;
        let s = c.into_std().map_err(handover_error)?;
        s.set_nonblocking(false).map_err(handover_error)?;
        Ok(s)
    }

    pub async fn release_main(&self) -> Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.release(pb::Empty {})
            .await
            .map(|_| ())
            .map_err(|e| from_agent(e, "main process"))
    }

    pub async fn fs_decisions(
        &self,
    ) -> Result<impl Stream<Item = Result<paddock_core::agent::FsDecision>> + Send + 'static> {
        let mut grpc = self.grpc.clone();
        let r = grpc
            .fs_decisions(pb::Empty {})
            .await
            .map_err(|e| from_agent(e, "fs decisions"))?;
        Ok(r.into_inner().map(|d| {
            d.map(|d| paddock_core::agent::FsDecision {
                mount: d.mount,
                path: d.path,
                write: d.write,
                allowed: d.allowed,
                dropped: d.dropped,
            })
            .map_err(|e| from_agent(e, "fs decisions"))
        }))
    }
}

/// `PADDOCK_FD_HANDOVER=off` in the daemon's environment keeps all data
/// on the agent protocol, as with backends that cannot hand over: for
/// tests of that path and for comparing the two (docs/benchmarks.md).
fn handover_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("PADDOCK_FD_HANDOVER").map_or(true, |v| v != "off"))
}

fn handover_error(e: std::io::Error) -> Error {
    Error::Unavailable {
        what: "sandbox agent".into(),
        reason: format!("fd hand-over: {e}"),
    }
}

/// A daemon-side error reading or writing a handed-over file, as the
/// agent would have reported it.
fn file_error(e: std::io::Error, path: &str) -> Error {
    use std::io::ErrorKind;
    let msg = format!("{path}: {e}");
    match e.kind() {
        ErrorKind::InvalidInput => Error::invalid("path", msg),
        _ => Error::Internal(format!("agent: {msg}")),
    }
}

/// Largest piece of a handed-over file or pipe read, or of a handed-over
/// file written, at once.
const READ_CHUNK: usize = 1 << 20;

/// Writes exactly `size` bytes of `data` into a handed-over file: in
/// pieces of up to [`READ_CHUNK`], each on the blocking pool while the next
/// one comes in (a thread held for a whole upload would let slow clients
/// use up the pool).
async fn write_handed_over<S>(f: std::fs::File, data: &mut S, size: u64, path: &str) -> Result<()>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let f = Arc::new(f);
    let write = |pieces: Vec<Bytes>| {
        let f = f.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for p in pieces {
                (&*f).write_all(&p)?;
            }
            Ok::<(), std::io::Error>(())
        })
    };
    let wait = |h: tokio::task::JoinHandle<std::io::Result<()>>| async move {
        h.await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|e| file_error(e, path))
    };
    let mut writing = None;
    let (mut pieces, mut piled, mut written) = (Vec::new(), 0usize, 0u64);
    let fed: Result<()> = async {
        let mut broke = None;
        loop {
            // What came before a body that broke off is written too, as
            // on the call: a plain (not atomic) write keeps it.
            let next = match data.next().await.transpose() {
                Ok(n) => n,
                Err(e) => {
                    broke = Some(e);
                    None
                }
            };
            let end = next.is_none();
            if let Some(b) = next {
                written += b.len() as u64;
                if written > size {
                    // Past what the agent allocated (HTTP framing makes
                    // this impossible for an upload with a length).
                    return Err(Error::invalid(
                        "body",
                        format!("longer than the {size} bytes announced"),
                    ));
                }
                piled += b.len();
                pieces.push(b);
            }
            if piled >= READ_CHUNK || (end && !pieces.is_empty()) {
                // In order: the previous piece is written before this one.
                if let Some(h) = writing.take() {
                    wait(h).await?;
                }
                writing = Some(write(std::mem::take(&mut pieces)));
                piled = 0;
            }
            if end {
                return broke.map_or(Ok(()), Err);
            }
        }
    }
    .await;
    // Never returns with a piece still being written: the agent cleans up
    // after an upload that failed, and a late write would land after that.
    let wrote = match writing {
        Some(h) => wait(h).await,
        None => Ok(()),
    };
    fed?;
    wrote?;
    if written < size {
        return Err(Error::invalid(
            "body",
            format!("the upload broke off after {written} of {size} bytes"),
        ));
    }
    Ok(())
}

/// A handed-over file, read here in pieces on the blocking pool.
fn read_handed_over(
    f: std::fs::File,
    path: String,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    let f = Arc::new(f);
    futures::stream::unfold(Some(f), move |f| {
        let path = path.clone();
        async move {
            let f = f?;
            let f2 = f.clone();
            let r = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buf = bytes::BytesMut::zeroed(READ_CHUNK);
                let n = (&*f2).read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf.freeze())
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match r {
                Ok(b) if b.is_empty() => None,
                Ok(b) => Some((Ok(b), Some(f))),
                Err(e) => Some((Err(file_error(e, &path)), None)),
            }
        }
    })
}

/// The command's events from the agent, with stdout read from the
/// handed-over pipe (when there is one) instead. The exit comes last:
/// after the pipe's end-of-file, or once it has stayed empty for
/// `output::DRAIN_IDLE` after the exit (a background process holds it open).
fn merge_stdout(
    out: tonic::Streaming<pb::ExecOutput>,
    pipe: Option<tokio::net::unix::pipe::Receiver>,
) -> impl Stream<Item = Result<ExecEvent>> + Send + 'static {
    struct St {
        out: tonic::Streaming<pb::ExecOutput>,
        pipe: Option<tokio::net::unix::pipe::Receiver>,
        buf: bytes::BytesMut,
        exit: Option<ExecResult>,
        /// The agent's stream has ended.
        ended: bool,
        /// The agent's first message (`started`, or why not) came: the pipe
        /// is read only after it, so that output never precedes `started`.
        heard: bool,
    }
    let st = St {
        out,
        pipe,
        buf: bytes::BytesMut::new(),
        exit: None,
        ended: false,
        heard: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.pipe.is_none() {
                if let Some(exit) = st.exit.take() {
                    st.ended = true;
                    return Some((Ok(ExecEvent::Exit(exit)), st));
                }
                if st.ended {
                    return None;
                }
            }
            let after_exit = st.exit.is_some() || st.ended;
            if st.buf.capacity() - st.buf.len() < output::SMALL {
                st.buf.reserve(output::CHUNK);
            }
            tokio::select! {
                r = async {
                    let p = st.pipe.as_mut().expect("checked by the guard");
                    output::read(p, &mut st.buf).await
                }, if st.pipe.is_some() && st.heard => match r {
                    Ok(n) if n > 0 => {
                        let chunk = output::take_chunk(&mut st.buf);
                        return Some((Ok(ExecEvent::Stdout(chunk)), st));
                    }
                    Ok(_) => st.pipe = None,
                    Err(e) => {
                        st.pipe = None;
                        return Some((Err(handover_error(e)), st));
                    }
                },
                m = st.out.message(), if !after_exit => {
                    st.heard = true;
                    match m {
                        Err(e) => {
                            st.ended = true;
                            st.pipe = None;
                            return Some((Err(from_agent(e, "cmd")), st));
                        }
                        Ok(None) => st.ended = true,
                        Ok(Some(m)) => match m.msg {
                            Some(pb::exec_output::Msg::Started(s)) => {
                                return Some((Ok(ExecEvent::Started { pid: s.pid }), st))
                            }
                            Some(pb::exec_output::Msg::Stdout(b)) => {
                                return Some((Ok(ExecEvent::Stdout(b)), st))
                            }
                            Some(pb::exec_output::Msg::Stderr(b)) => {
                                return Some((Ok(ExecEvent::Stderr(b)), st))
                            }
                            Some(pb::exec_output::Msg::Exit(e)) => st.exit = Some(to_result(e)),
                            Some(pb::exec_output::Msg::Error(e)) => {
                                st.ended = true;
                                st.pipe = None;
                                return Some((Err(Error::invalid("cmd", e)), st));
                            }
                            None => {}
                        },
                    }
                }
                _ = tokio::time::sleep(output::DRAIN_IDLE), if after_exit => st.pipe = None,
            }
        }
    })
}

fn control_msg(c: ExecControl) -> pb::ExecInput {
    use pb::exec_input::Msg;
    let msg = match c {
        ExecControl::Stdin(b) => Msg::Stdin(b),
        ExecControl::CloseStdin => Msg::CloseStdin(true),
        ExecControl::Resize(s) => Msg::Resize(pb::Resize {
            rows: s.rows as u32,
            cols: s.cols as u32,
        }),
        ExecControl::Signal(n) => Msg::Signal(n),
    };
    pb::ExecInput { msg: Some(msg) }
}

/// How to reach `endpoint`, its identity, and the unix socket hand-over
/// connections go to (when the backend can pass descriptors: only a unix
/// socket carries them).
fn dialer_of(
    endpoint: &AgentEndpoint,
    handover: bool,
) -> (Dialer, Identity, Option<std::path::PathBuf>) {
    let identity = Identity::from_bytes(endpoint.identity().0);
    match endpoint {
        AgentEndpoint::Unix { path, .. } => (
            Dialer::Unix(path.clone()),
            identity,
            handover.then(|| path.clone()),
        ),
        AgentEndpoint::HybridVsock { path, port, .. } => {
            (Dialer::HybridVsock(path.clone(), *port), identity, None)
        }
        AgentEndpoint::Vsock { cid, port, .. } => (
            Dialer::Vsock {
                cid: *cid,
                port: *port,
            },
            identity,
            None,
        ),
        AgentEndpoint::Tcp { addr, .. } => (Dialer::Tcp(*addr), identity, None),
    }
}

#[async_trait::async_trait]
impl Agent for AgentClient {
    async fn check(&self, timeout: Duration) -> Result<()> {
        AgentClient::check(self, timeout).await
    }

    async fn exec(&self, req: &ExecRequest) -> Result<ExecResult> {
        AgentClient::exec(self, req).await
    }

    async fn exec_stream(
        &self,
        req: &ExecRequest,
        control: mpsc::Receiver<ExecControl>,
    ) -> Result<futures::stream::BoxStream<'static, Result<ExecEvent>>> {
        Ok(AgentClient::exec_stream(self, req, control).await?.boxed())
    }

    async fn read_file(
        &self,
        path: &str,
    ) -> Result<(Opened, futures::stream::BoxStream<'static, Result<Bytes>>)> {
        AgentClient::read_file(self, path).await
    }

    async fn write_file(
        &self,
        path: &str,
        opts: &WriteOptions,
        data: futures::stream::BoxStream<'static, Result<Bytes>>,
    ) -> Result<FileInfo> {
        AgentClient::write_file(self, path, opts, data).await
    }

    async fn list_dir(&self, path: &str) -> Result<Vec<FileInfo>> {
        AgentClient::list_dir(self, path).await
    }

    async fn resolve(&self, path: &str) -> Result<String> {
        AgentClient::resolve(self, path).await
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        AgentClient::stat(self, path).await
    }

    async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        AgentClient::remove(self, path, recursive).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        AgentClient::rename(self, from, to).await
    }

    async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<()> {
        AgentClient::mkdir(self, path, parents, mode).await
    }

    async fn ports(&self) -> Result<Vec<Port>> {
        AgentClient::ports(self).await
    }

    async fn platform(&self) -> Result<Platform> {
        AgentClient::platform(self).await
    }

    async fn main_output(
        &self,
        offset: u64,
    ) -> Result<futures::stream::BoxStream<'static, Result<(u64, Bytes)>>> {
        Ok(AgentClient::main_output(self, offset).await?.boxed())
    }

    async fn guard(
        &self,
        path: &str,
        rules: &[paddock_core::model::AclRule],
        id_offset: u32,
        fds: Option<[std::os::fd::OwnedFd; 2]>,
    ) -> Result<()> {
        AgentClient::guard(self, path, rules, id_offset, fds).await
    }

    async fn release_main(&self) -> Result<()> {
        AgentClient::release_main(self).await
    }

    async fn registrar(&self) -> Result<std::os::unix::net::UnixStream> {
        AgentClient::registrar(self).await
    }

    async fn fs_decisions(
        &self,
    ) -> Result<futures::stream::BoxStream<'static, Result<paddock_core::agent::FsDecision>>> {
        Ok(AgentClient::fs_decisions(self).await?.boxed())
    }
}

/// Reads a stream to its end and drops what comes, for at most 10 s and
/// 64 MiB (an agent could send for ever).
async fn drain(mut s: futures::stream::BoxStream<'static, Result<Bytes>>) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut left: usize = 64 << 20;
        while let Some(Ok(b)) = s.next().await {
            left = left.saturating_sub(b.len());
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

/// Ends a byte stream after `n` bytes: a download whose size went out
/// first never sends more than that (the file may have grown since).
trait TakeBytes {
    fn take_bytes(self, n: u64) -> futures::stream::BoxStream<'static, Result<Bytes>>;
}

impl<S> TakeBytes for S
where
    S: Stream<Item = Result<Bytes>> + Send + 'static,
{
    fn take_bytes(self, n: u64) -> futures::stream::BoxStream<'static, Result<Bytes>> {
        futures::stream::unfold((self.boxed(), n), |(mut s, left)| async move {
            if left == 0 {
                // What is left (none, or what the file grew by) is read and
                // dropped, within bounds, so that the call ends rather than
                // being reset (see `read_file`).
                tokio::spawn(drain(s));
                return None;
            }
            match s.next().await? {
                Ok(mut b) => {
                    let keep = (b.len() as u64).min(left);
                    b.truncate(keep as usize);
                    Some((Ok(b), (s, left - keep)))
                }
                Err(e) => Some((Err(e), (s, 0))),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(start_in_header: bool) -> AgentClient {
        let c = AgentClient::lazy(
            &AgentEndpoint::Unix {
                path: "/nonexistent.sock".into(),
                identity: paddock_core::AgentIdentity(Identity::generate().unwrap().bytes()),
            },
            true,
        );
        c.start_in_header.store(start_in_header, Ordering::Relaxed);
        c
    }

    fn req(stdin: &str) -> ExecRequest {
        serde_json::from_value(serde_json::json!({"cmd": ["cat"], "stdin": stdin})).unwrap()
    }

    #[tokio::test]
    async fn a_small_start_travels_in_metadata_with_no_body() {
        use futures::StreamExt;
        use prost::Message;
        let start = AgentClient::start_msg(&req("hi"), true);
        let r = client(true).buffered_call(start.clone());
        assert!(r.extensions().get::<paddock_proto::HeadersOnly>().is_some());
        let v = r
            .metadata()
            .get_bin(paddock_proto::EXEC_START_HEADER)
            .unwrap();
        assert!(v.is_sensitive(), "kept out of HPACK's table");
        let got = pb::ExecStart::decode(v.to_bytes().unwrap()).unwrap();
        let Some(pb::exec_input::Msg::Start(want)) = start.msg else {
            unreachable!()
        };
        assert_eq!(got, want);
        assert_eq!(r.into_inner().count().await, 0, "the stream is empty");
    }

    #[test]
    fn hello_tells_whether_the_agent_takes_the_start_in_metadata() {
        let c = client(false);
        let mut hello = pb::HelloResponse {
            features: vec![
                "something-else".into(),
                paddock_proto::FEATURE_EXEC_START_HEADER.into(),
            ],
            ..Default::default()
        };
        c.note_features(&hello);
        assert!(c.start_in_header.load(Ordering::Relaxed));
        // An older agent (no features): back to the stream.
        hello.features.clear();
        c.note_features(&hello);
        assert!(!c.start_in_header.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_large_start_or_an_older_agent_uses_the_stream() {
        use futures::StreamExt;
        let big = "x".repeat(START_HEADER_MAX + 1);
        for (c, stdin) in [(client(true), big.as_str()), (client(false), "hi")] {
            let r = c.buffered_call(AgentClient::start_msg(&req(stdin), true));
            assert!(r.extensions().get::<paddock_proto::HeadersOnly>().is_none());
            assert!(r
                .metadata()
                .get_bin(paddock_proto::EXEC_START_HEADER)
                .is_none());
            assert_eq!(
                r.into_inner().count().await,
                1,
                "the start is on the stream"
            );
        }
    }
}
