//! [`UnixConn`]: the agent socket, watched by the reactor for reads only.
//!
//! tokio registers every `UnixStream` for readability and writability,
//! edge-triggered. A unix socket reports "writable" each time its peer
//! reads (the kernel wakes the writer's epoll whether or not anyone waits
//! to write), so every answer the daemon read woke the agent, and every
//! request the agent read woke a daemon thread: a context switch on each
//! side per call, for nothing (an exec's round trip on the 2-core test VM
//! had four; docs/benchmarks.md). Here the socket is registered for reads
//! only; a write goes straight to the socket and only a write that finds it
//! full registers a duplicate of the descriptor for writability, dropped
//! again once the write went through.
//!
//! Hand-written rather than a crate: neither tokio nor hyper-util can
//! register a stream for one direction only.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The send buffer each end asks for (Linux grants twice that, capped at
/// twice net.core.wmem_max). The default (net.core.wmem_default, 208 KiB,
/// reported as 416) holds less than two 256 KiB output chunks, so a
/// stream of output or a file waited for room at every ninth write or
/// so. Asking for 2 MiB on a host whose wmem_max is 4 MiB (a 4 MiB
/// buffer), paired runs of `bench --only ws,files` gave exec stdout 806
/// against 622 MB/s (median of ten, faster in seven) and upload 755
/// against 687 (faster in nine of ten); download unchanged. On a stock
/// wmem_max (208 KiB) the buffer stays at the default. Memory is used
/// only while data waits in the socket; HTTP/2 flow control (8 MiB per
/// stream) already bounds what one side has in flight.
pub const SEND_BUFFER: usize = 2 << 20;

/// Asks for [`SEND_BUFFER`], best effort: the kernel grants at most
/// net.core.wmem_max, and where that is below the default the request
/// would shrink the buffer, so the default is kept then.
fn raise_send_buffer(s: &UnixStream) {
    let sock = socket2::SockRef::from(s);
    let Ok(before) = sock.send_buffer_size() else {
        return;
    };
    if before >= 2 * SEND_BUFFER {
        return;
    }
    let _ = sock.set_send_buffer_size(SEND_BUFFER);
    if sock.send_buffer_size().is_ok_and(|now| now < before) {
        // Linux reports twice what it grants; ask for the old grant.
        let _ = sock.set_send_buffer_size(before / 2);
    }
}

/// A connected unix stream for the agent protocol (either end).
pub struct UnixConn {
    read: AsyncFd<UnixStream>,
    /// A duplicate of the descriptor, registered for writability while a
    /// write waits for room.
    write: Option<AsyncFd<OwnedFd>>,
}

impl UnixConn {
    /// Takes a connected stream (made non-blocking here).
    pub fn new(s: UnixStream) -> io::Result<UnixConn> {
        s.set_nonblocking(true)?;
        raise_send_buffer(&s);
        // SAFETY: the stream owns its descriptor, which stays open and the
        // same for as long as the AsyncFd owns the stream.
        let read = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE)? };
        Ok(UnixConn { read, write: None })
    }

    /// Takes a tokio stream (which leaves tokio's reactor first).
    pub fn from_tokio(s: tokio::net::UnixStream) -> io::Result<UnixConn> {
        UnixConn::new(s.into_std()?)
    }

    /// Whether a write is waiting for room (for tests).
    pub fn waits_to_write(&self) -> bool {
        self.write.is_some()
    }

    /// Writes with `op`; on a full socket, waits for room on the
    /// duplicate's registration.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let sock = self.read.get_ref();
        if self.write.is_none() {
            match retry_intr(|| op(sock)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
            let dup = OwnedFd::from(sock.try_clone()?);
            // SAFETY: as in `new`: the OwnedFd keeps its descriptor open
            // and unchanged while the AsyncFd owns it.
            let w = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE)? };
            self.write = Some(w);
        }
        let w = self.write.as_ref().expect("registered above");
        loop {
            let mut guard = ready!(w.poll_write_ready(cx))?;
            match guard.try_io(|_| retry_intr(|| op(sock))) {
                Ok(r) => {
                    // Back to read-only wakes (the registration goes with it).
                    self.write = None;
                    return Poll::Ready(r);
                }
                Err(_would_block) => continue,
            }
        }
    }
}

fn retry_intr<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl AsyncRead for UnixConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            // Read into the buffer's uninitialised room as tokio's own
            // streams do (zeroing it first would cost h2's large reads).
            // SAFETY: only read(2) writes to this memory, and only the
            // bytes it reports are marked initialised below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let read = |s: &AsyncFd<UnixStream>| {
                retry_intr(|| {
                    // SAFETY: the pointer and length describe `unfilled`,
                    // which stays borrowed for the call.
                    let n = unsafe {
                        libc::read(s.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
            };
            match guard.try_io(read) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: wait for the next
                    // wake instead of finding that out with another read
                    // (as tokio's streams do; a wake since is kept).
                    if n > 0 && n < unfilled.len() {
                        guard.clear_ready();
                    }
                    // SAFETY: read(2) initialised these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for UnixConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut s| s.write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

impl AsRawFd for UnixConn {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.read.get_ref().as_raw_fd()
    }
}

impl tonic::transport::server::Connected for UnixConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (UnixConn, UnixConn) {
        let (a, b) = UnixStream::pair().unwrap();
        (UnixConn::new(a).unwrap(), UnixConn::new(b).unwrap())
    }

    #[tokio::test]
    async fn asks_for_a_larger_send_buffer() {
        let size = |s: &UnixStream| socket2::SockRef::from(s).send_buffer_size().unwrap();
        let (plain, _) = UnixStream::pair().unwrap();
        let default = size(&plain);
        let (a, _b) = pair();
        let got = size(a.read.get_ref());
        assert!(got >= default, "{got} < the default {default}");
        // (Not readable in a network namespace of its own.)
        if let Ok(max) = std::fs::read_to_string("/proc/sys/net/core/wmem_max") {
            let max: usize = max.trim().parse().unwrap();
            // Linux reports twice what it grants.
            let want = (2 * SEND_BUFFER.min(max)).max(default);
            assert_eq!(got, want, "wmem_max {max}, default {default}");
        }
    }

    #[tokio::test]
    async fn small_messages_go_both_ways_without_a_write_registration() {
        let (mut a, mut b) = pair();
        for i in 0..100u32 {
            a.write_all(&i.to_le_bytes()).await.unwrap();
            let mut got = [0u8; 4];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(u32::from_le_bytes(got), i);
            b.write_all(b"ok").await.unwrap();
            let mut ok = [0u8; 2];
            a.read_exact(&mut ok).await.unwrap();
            assert_eq!(&ok, b"ok");
            assert!(!a.waits_to_write() && !b.waits_to_write());
        }
    }

    #[tokio::test]
    async fn a_write_larger_than_the_socket_waits_for_the_reader() {
        let (mut a, mut b) = pair();
        // Far more than a unix socket buffers: the writer must wait, and
        // be woken, many times.
        let data: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = b.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let a = writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes arrive in order");
        assert!(!a.waits_to_write(), "the write registration is dropped");
    }

    #[tokio::test]
    async fn a_closed_peer_reads_as_end_of_stream() {
        let (mut a, b) = pair();
        drop(b);
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
        assert!(a.write_all(&[0u8; 1 << 20]).await.is_err());
    }
}
