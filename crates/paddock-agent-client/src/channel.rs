//! The gRPC transport to one agent: hyper's HTTP/2 client connection over
//! whatever the backend's endpoint is, used directly from the calling task.
//!
//! Not tonic's `Channel`: that queues every call through a `tower::Buffer`
//! worker task, and the extra hand-over between tasks (often between the
//! daemon's worker threads) cost a unary agent call about three context
//! switches and a third of a millisecond of CPU on a 2-core VM, more than
//! the agent took to answer (docs/benchmarks.md).
//!
//! Connects on first use and again after the connection drops, like a lazy
//! `Channel`; every connection starts with the agent's greeting, checked
//! against the sandbox's identity before any call goes on it
//! (`paddock_proto::identity`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paddock_proto::identity::{self, Identity};
use paddock_proto::{UnixConn, CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::Status;

/// Where a channel connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialer {
    Unix(PathBuf),
    /// A VMM's unix socket that speaks Firecracker's hybrid-vsock
    /// handshake, and the guest port to ask for.
    HybridVsock(PathBuf, u32),
    Vsock {
        cid: u32,
        port: u32,
    },
    Tcp(SocketAddr),
}

impl std::fmt::Display for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::Unix(p) => write!(f, "agent socket {}", p.display()),
            Dialer::HybridVsock(p, port) => {
                write!(f, "agent on vsock port {port} of {}", p.display())
            }
            Dialer::Vsock { cid, port } => write!(f, "agent on vsock {cid}:{port}"),
            Dialer::Tcp(a) => write!(f, "agent at {a}"),
        }
    }
}

/// A connection's byte stream, whatever carries it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The longest answer to a hybrid-vsock `CONNECT` (`OK <u32>\n`).
const HYBRID_ANSWER_MAX: usize = 32;

/// Firecracker's hybrid-vsock handshake on a stream to the VMM's socket:
/// `CONNECT <port>\n`, answered `OK <host port>\n` once the guest accepted;
/// anything else (the VMM closes it when nothing listens) is an error. Read
/// a byte at a time: what follows the answer is the agent's.
pub async fn hybrid_vsock_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    port: u32,
) -> io::Result<()> {
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut line = Vec::with_capacity(HYBRID_ANSWER_MAX);
    loop {
        let b = s.read_u8().await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the VMM closed the vsock connection to port {port} (nothing listens?)"),
            )
        })?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > HYBRID_ANSWER_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the VMM's answer to CONNECT is too long",
            ));
        }
    }
    let text = String::from_utf8_lossy(&line);
    match text.strip_prefix("OK ") {
        Some(n) if n.trim().parse::<u32>().is_ok() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the VMM answered {text:?} to CONNECT {port}"),
        )),
    }
}

impl Dialer {
    /// A connection whose greeting named `identity`.
    async fn dial(&self, identity: &Identity) -> io::Result<Box<dyn Io>> {
        match self {
            Dialer::Unix(path) => {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                identity::expect(&mut s, identity).await?;
                Ok(Box::new(UnixConn::from_tokio(s)?))
            }
            Dialer::HybridVsock(path, port) => {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                hybrid_vsock_handshake(&mut s, *port).await?;
                identity::expect(&mut s, identity).await?;
                Ok(Box::new(UnixConn::from_tokio(s)?))
            }
            Dialer::Tcp(addr) => {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                identity::expect(&mut s, identity).await?;
                Ok(Box::new(s))
            }
            Dialer::Vsock { cid, port } => {
                let addr = tokio_vsock::VsockAddr::new(*cid, *port);
                let mut s = tokio_vsock::VsockStream::connect(addr).await?;
                identity::expect(&mut s, identity).await?;
                Ok(Box::new(s))
            }
        }
    }
}

#[derive(Clone)]
pub struct AgentChannel {
    inner: Arc<Inner>,
}

struct Inner {
    dialer: Dialer,
    identity: Identity,
    sender: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while connecting, so that concurrent first calls share one
    /// connection.
    connecting: tokio::sync::Mutex<()>,
}

impl AgentChannel {
    /// A channel that connects on its first call.
    pub fn lazy(dialer: Dialer, identity: Identity) -> AgentChannel {
        AgentChannel {
            inner: Arc::new(Inner {
                dialer,
                identity,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A channel connected now (fails if nobody answers, or not the agent
    /// of `identity`).
    pub async fn connect(dialer: Dialer, identity: Identity) -> Result<AgentChannel, Status> {
        let ch = AgentChannel::lazy(dialer, identity);
        ch.sender().await?;
        Ok(ch)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Status {
        Status::unavailable(format!("{}: {e}", self.inner.dialer))
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
        // Bounded: a VMM or agent that takes the connection and never
        // answers (the hybrid-vsock `OK`, the greeting) must not hold every
        // call to this sandbox behind `connecting`.
        let io = tokio::time::timeout(identity::WAIT, self.inner.dialer.dial(&self.inner.identity))
            .await
            .map_err(|_| self.unavailable(format!("no answer within {:?}", identity::WAIT)))?
            .map_err(|e| self.unavailable(e))?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unavailable(e))?;
        tokio::spawn(async move {
            // Ends when the agent closes the connection or every sender is
            // gone.
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
        if req
            .extensions()
            .get::<paddock_proto::HeadersOnly>()
            .is_some()
        {
            *req.body_mut() = Body::empty();
        }
        let this = self.clone();
        Box::pin(async move {
            let mut tx = this.sender().await?;
            tx.send_request(req).await.map_err(|e| this.unavailable(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(reply: &'static [u8]) -> io::Result<()> {
        let (mut a, mut b) = tokio::io::duplex(256);
        let vmm = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            if reply.is_empty() {
                // Nothing listens on the port: the VMM closes it.
                return None;
            }
            b.write_all(reply).await.unwrap();
            Some(b)
        });
        let r = hybrid_vsock_handshake(&mut a, 1024).await;
        if let (Ok(()), Some(mut b)) = (&r, vmm.await.unwrap()) {
            // What follows the answer is left for the agent's greeting.
            b.write_all(b"G").await.unwrap();
            assert_eq!(a.read_u8().await.unwrap(), b'G');
        }
        r
    }

    #[tokio::test]
    async fn the_hybrid_vsock_handshake() {
        answer(b"OK 1073741824\n").await.unwrap();
        let e = answer(b"NO\n").await.unwrap_err();
        assert!(e.to_string().contains("answered"), "{e}");
        let e = answer(b"OK 1 and much more than an answer holds\n")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        let e = answer(b"").await.unwrap_err();
        assert!(e.to_string().contains("closed"), "{e}");
    }
}
