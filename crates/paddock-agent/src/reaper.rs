//! Child bookkeeping for PID 1.
//!
//! As PID 1 the agent inherits every orphan in the sandbox, so it must reap
//! with `waitpid(-1)`. That would steal exit statuses from a per-child wait,
//! so all children are spawned through [`Reaper::spawn`], which registers the
//! pid under the same lock the reaping loop takes: an exit can never be
//! collected before its waiter is registered.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Default, Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<Exit>>>>,
}

impl Reaper {
    /// Starts the reaping loop on SIGCHLD.
    pub fn start(&self) -> std::io::Result<()> {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.reap();
                if sig.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
    }

    fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if let Some(tx) = waiters.remove(&pid.as_raw()) {
                        let _ = tx.send(Exit::Code(code));
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    if let Some(tx) = waiters.remove(&pid.as_raw()) {
                        let _ = tx.send(Exit::Signal(sig as i32));
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    /// Spawns `cmd` and returns the child with a receiver for its exit.
    /// The caller must never `wait` on the child itself.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }
}
