//! The main process's output, held for the daemon.
//!
//! The main process writes its stdout and stderr into one pipe whose read
//! end only the agent holds; the agent keeps the last [`KEEP`] bytes of it
//! in memory and sends them to the daemon on the `MainOutput` call, which
//! stores them on the host. Nothing of it is a file inside the sandbox: a
//! process there can neither rewrite what was said nor grow the host's
//! copy past the daemon's cap. While no daemon follows (it is restarting),
//! output beyond [`KEEP`] drops its oldest bytes instead of blocking the
//! writer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// How much output the agent holds for a daemon that has not read it yet.
pub const KEEP: usize = 1 << 20;

/// Largest chunk sent in one message.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Held {
    bytes: VecDeque<u8>,
    /// The offset, in the whole output, of `bytes[0]`.
    start: u64,
}

/// The output held so far; cheap to clone.
#[derive(Clone)]
pub struct MainLog {
    held: Arc<Mutex<Held>>,
    /// The offset just past the last byte held.
    end: watch::Sender<u64>,
}

impl Default for MainLog {
    fn default() -> Self {
        MainLog {
            held: Default::default(),
            end: watch::channel(0).0,
        }
    }
}

impl MainLog {
    pub fn push(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = {
            let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
            h.bytes.extend(data);
            let over = h.bytes.len().saturating_sub(KEEP);
            if over > 0 {
                h.bytes.drain(..over);
                h.start += over as u64;
            }
            h.start + h.bytes.len() as u64
        };
        self.end.send_replace(end);
    }

    /// What is held from `offset` on (at most [`CHUNK`] bytes), with the
    /// offset it starts at: later than `offset` when that was dropped.
    pub fn read(&self, offset: u64) -> (u64, Bytes) {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let from = offset.max(h.start);
        let skip = (from - h.start) as usize;
        if skip >= h.bytes.len() {
            return (h.start + h.bytes.len() as u64, Bytes::new());
        }
        let n = (h.bytes.len() - skip).min(CHUNK);
        let out: Vec<u8> = h.bytes.range(skip..skip + n).copied().collect();
        (from, Bytes::from(out))
    }

    /// Waits until something past `offset` is held.
    pub async fn wait_past(&self, offset: u64) {
        let mut rx = self.end.subscribe();
        let _ = rx.wait_for(|end| *end > offset).await;
    }

    /// Reads `r` (the pipe's read end) into the log until its end.
    pub async fn fill(&self, mut r: tokio::net::unix::pipe::Receiver) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => self.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_last_mib_and_says_where_it_starts() {
        let log = MainLog::default();
        assert_eq!(log.read(0), (0, Bytes::new()));
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(log.read(0), (0, Bytes::from_static(b"hello world")));
        assert_eq!(log.read(6), (6, Bytes::from_static(b"world")));
        assert_eq!(log.read(11), (11, Bytes::new()));
        assert_eq!(log.read(99), (11, Bytes::new()));
        // Past KEEP, the oldest bytes go: a reader that asks for them is
        // told where what is left begins.
        log.push(&vec![b'x'; KEEP]);
        let (at, b) = log.read(0);
        assert_eq!(at, 11);
        assert_eq!(b.len(), CHUNK);
        assert!(b.iter().all(|c| *c == b'x'));
    }

    #[tokio::test]
    async fn a_reader_wakes_when_output_comes() {
        let log = MainLog::default();
        let l = log.clone();
        let waiter = tokio::spawn(async move {
            l.wait_past(0).await;
            l.read(0)
        });
        tokio::task::yield_now().await;
        log.push(b"late");
        let (at, b) = waiter.await.unwrap();
        assert_eq!((at, &b[..]), (0, &b"late"[..]));
    }
}
