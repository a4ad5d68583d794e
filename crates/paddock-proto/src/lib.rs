//! The versioned protocol between the Paddock daemon and `paddock-agent`.
//!
//! Generated from `proto/agent.proto` by tonic. The transport is whatever
//! the backend provides; [`AgentChannel`] covers the unix socket that the
//! container and gVisor backends share with the sandbox.

pub mod v1 {
    tonic::include_proto!("paddock.agent.v1");
}

mod conn;
pub use conn::UnixConn;
pub mod handover;
pub mod identity;
pub mod output;

/// The binary metadata that may carry an exec's `ExecStart` (see the
/// `Exec` rpc in agent.proto), and the agent feature that announces it.
pub const EXEC_START_HEADER: &str = "paddock-exec-start-bin";
pub const FEATURE_EXEC_START_HEADER: &str = "exec-start-header";

/// Response metadata of `ReadFile`: the size of the file the agent opened
/// (from its `fstat`, after following every symlink; absent where the size
/// says nothing of the bytes, such as a file of `/proc`), and the path it
/// opened as the sandbox sees it (binary: a path need not be UTF-8), so
/// that the daemon judges a mount's ACL on the file actually read.
pub const READ_SIZE_HEADER: &str = "paddock-size";
pub const READ_PATH_HEADER: &str = "paddock-path-bin";

/// A request extension: send this call's HEADERS with END_STREAM and no
/// body (its input travels in metadata). [`AgentChannel`] drops the body.
#[derive(Clone, Copy, Debug)]
pub struct HeadersOnly;

/// Protocol version spoken by this build. The daemon refuses an agent whose
/// protocol version differs (an agent is always shipped with its daemon).
pub const PROTOCOL_VERSION: u32 = 2;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::Status;

/// HTTP/2 flow-control windows for the agent channel. The default 64 KiB
/// would cap file transfers far below what a local socket carries.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame either side accepts (the default 16 KiB would cut
/// a 1 MiB file chunk into 64 frames).
pub const MAX_FRAME: u32 = (1 << 20) - 1;

/// The origin every call names (HTTP/2 needs a scheme and an authority;
/// the socket decides where a call goes).
pub const ORIGIN: &str = "http://agent.invalid";

/// A gRPC transport to one agent's unix socket: hyper's HTTP/2 client
/// connection, used directly from the calling task.
///
/// Not tonic's `Channel`: that queues every call through a `tower::Buffer`
/// worker task, and the extra hand-over between tasks (often between the
/// daemon's worker threads) cost a unary agent call about three context
/// switches and a third of a millisecond of CPU on a 2-core VM, more than
/// the agent took to answer (docs/benchmarks.md).
///
/// Connects on first use and again after the connection drops, like a
/// lazy `Channel`; every connection starts with the agent's greeting,
/// checked against the sandbox's identity before any call goes on it
/// ([`identity`]).
#[derive(Clone)]
pub struct AgentChannel {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    identity: identity::Identity,
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while connecting, so that concurrent first calls share one
    /// connection.
    connecting: tokio::sync::Mutex<()>,
}

impl AgentChannel {
    /// A channel that connects on its first call.
    pub fn lazy(path: PathBuf, identity: identity::Identity) -> AgentChannel {
        AgentChannel {
            inner: Arc::new(Inner {
                path,
                identity,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A channel connected now (fails if nobody listens on `path`).
    pub async fn connect(
        path: PathBuf,
        identity: identity::Identity,
    ) -> Result<AgentChannel, Status> {
        let ch = AgentChannel::lazy(path, identity);
        ch.sender().await?;
        Ok(ch)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("agent socket {}: {e}", self.inner.path.display()))
    }

    fn cached(&self) -> Option<http2::SendRequest<Body>> {
        let g = self.inner.sender.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(&self) -> Result<http2::SendRequest<Body>, Status> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let mut s = tokio::net::UnixStream::connect(&self.inner.path)
            .await
            .map_err(|e| self.unavailable(e))?;
        identity::expect(&mut s, &self.inner.identity)
            .await
            .map_err(|e| self.unavailable(e))?;
        let io = UnixConn::from_tokio(s).map_err(|e| self.unavailable(e))?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unavailable(e))?;
        tokio::spawn(async move {
            // Ends when the agent closes the socket or every sender is gone.
            let _ = conn.await;
        });
        *self.inner.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        Ok(tx)
    }
}

impl tower::Service<Request<Body>> for AgentChannel {
    type Response = Response<hyper::body::Incoming>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // HTTP/2 multiplexes: there is always room for another call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if req.extensions().get::<HeadersOnly>().is_some() {
            *req.body_mut() = Body::empty();
        }
        let this = self.clone();
        Box::pin(async move {
            let mut tx = this.sender().await?;
            tx.send_request(req).await.map_err(|e| this.unavailable(e))
        })
    }
}
