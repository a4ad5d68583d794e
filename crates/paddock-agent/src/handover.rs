//! Hand-over connections waiting for the call that names their token
//! (see `paddock_proto::handover`).

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Instant;

use paddock_proto::handover::{self, Token, WAIT};
use tonic::Status;

/// At most this many connections wait at once; beyond that the oldest is
/// closed (the daemon's call for it has most likely failed already; and
/// anything in the sandbox can reach this socket, and fill the list).
const MAX_WAITING: usize = 64;

#[derive(Default)]
pub struct Handovers {
    waiting: Mutex<Vec<(Token, Instant, UnixStream)>>,
    arrived: tokio::sync::Notify,
}

impl Handovers {
    /// A hand-over connection came in.
    pub fn put(&self, token: Token, s: UnixStream) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Ones whose call never came (it failed in the daemon first).
        w.retain(|(_, at, _)| at.elapsed() < WAIT);
        if w.len() >= MAX_WAITING {
            w.remove(0);
        }
        w.push((token, Instant::now(), s));
        drop(w);
        self.arrived.notify_waiters();
    }

    /// The connection for the token a call names, once it is here; none
    /// for a call that names none. A call takes it first thing, so that a
    /// call that fails does not leave its connection waiting.
    pub async fn take(&self, token: &[u8]) -> Result<Option<Handover>, Status> {
        if token.is_empty() {
            return Ok(None);
        }
        let token: Token = token
            .try_into()
            .map_err(|_| Status::invalid_argument("fd_token: must be 16 bytes"))?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = w.iter().position(|(t, _, _)| *t == token) {
                    return Ok(Some(Handover(w.swap_remove(i).2)));
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(Status::deadline_exceeded(
                    "fd_token: no hand-over connection came with this token",
                ));
            }
        }
    }
}

/// A hand-over connection taken by its call.
pub struct Handover(UnixStream);

impl Handover {
    /// Sends `fd`, or with `None` says the data stays on the call.
    pub fn send(self, fd: Option<BorrowedFd<'_>>) -> Result<(), Status> {
        handover::send(&self.0, fd).map_err(|e| Status::unavailable(format!("fd hand-over: {e}")))
    }
}

impl Handover {
    /// The descriptors the daemon sends on it (a hand-over to the agent).
    pub async fn receive(self) -> Result<Vec<std::os::fd::OwnedFd>, Status> {
        let s = tokio::net::UnixStream::from_std(self.0)
            .map_err(|e| Status::internal(format!("fd hand-over: {e}")))?;
        handover::receive_fds(&s)
            .await
            .map_err(|e| Status::unavailable(format!("fd hand-over: {e}")))
    }
}

impl Handover {
    /// The connection itself, kept for what the call sets up.
    pub fn into_stream(self) -> UnixStream {
        self.0
    }
}
