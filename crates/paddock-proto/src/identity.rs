//! Which sandbox an agent is: its greeting on every connection.
//!
//! The backend draws a random [`Identity`] for each sandbox, keeps it where
//! only the host can read it, and gives it to the agent at start (the
//! environment variable [`ENV`], which the agent drops before it runs
//! anything). The agent sends [`GREETING`] and its identity as the first
//! bytes of every connection it accepts; the daemon reads them before it
//! sends anything and drops a connection whose identity is not the one it
//! expects. Reaching another sandbox's agent through a path the sandbox
//! could change (a symlink, a renamed socket) then fails instead of running
//! commands in the wrong sandbox.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable that carries the identity (hex) to the agent.
pub const ENV: &str = "PADDOCK_AGENT_IDENTITY";

/// What an agent's greeting starts with, followed by its identity.
pub const GREETING: [u8; 16] = *b"paddock-agent/2\n";

/// How long the daemon waits for an accepted connection's greeting.
pub const WAIT: Duration = Duration::from_secs(10);

/// A sandbox's identity: 32 random bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Identity([u8; 32]);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret: never in logs.
        f.write_str("Identity(..)")
    }
}

impl Identity {
    /// A fresh identity from the kernel's random pool.
    pub fn generate() -> io::Result<Identity> {
        let mut b = [0u8; 32];
        // SAFETY: `b` is a writable buffer of the length passed.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(Identity(b))
    }

    pub fn from_bytes(b: [u8; 32]) -> Identity {
        Identity(b)
    }

    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Identity> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut b = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            b[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(Identity(b))
    }

    /// The greeting the agent sends.
    pub fn greeting(&self) -> [u8; 48] {
        let mut g = [0u8; 48];
        g[..16].copy_from_slice(&GREETING);
        g[16..].copy_from_slice(&self.0);
        g
    }
}

/// The agent's half: greets a connection it accepted.
pub async fn greet<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, id: &Identity) -> io::Result<()> {
    s.write_all(&id.greeting()).await
}

/// The daemon's half: reads the greeting of a connection it opened and
/// checks it names `expected`.
pub async fn expect<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    expected: &Identity,
) -> io::Result<()> {
    let mut g = [0u8; 48];
    tokio::time::timeout(WAIT, s.read_exact(&mut g))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the agent did not greet"))??;
    check(&g, expected)
}

/// Whether `greeting` is the agent's greeting with `expected` in it.
pub fn check(greeting: &[u8; 48], expected: &Identity) -> io::Result<()> {
    if greeting[..16] != GREETING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a paddock agent of this protocol (no greeting)",
        ));
    }
    // Compared in full whatever differs first: how soon a mismatch is
    // found says nothing about the identity.
    let diff = greeting[16..]
        .iter()
        .zip(expected.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the agent that answered is another sandbox's",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    #[test]
    fn hex_round_trip_and_bad_input() {
        let id = Identity::generate().unwrap();
        assert_eq!(Identity::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Identity::from_hex("abc"), None);
        assert_eq!(Identity::from_hex(&"zz".repeat(32)), None);
        assert_ne!(Identity::generate().unwrap(), id);
        assert_eq!(format!("{id:?}"), "Identity(..)");
    }

    #[tokio::test]
    async fn the_daemon_refuses_another_sandboxs_agent() {
        let (mine, theirs) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (mut daemon, mut agent) = UnixStream::pair().unwrap();
        greet(&mut agent, &theirs).await.unwrap();
        let e = expect(&mut daemon, &mine).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);

        let (mut daemon, mut agent) = UnixStream::pair().unwrap();
        greet(&mut agent, &mine).await.unwrap();
        expect(&mut daemon, &mine).await.unwrap();

        // Something that is not an agent: refused, not waited on forever.
        let (mut daemon, mut other) = UnixStream::pair().unwrap();
        other.write_all(&[b'x'; 48]).await.unwrap();
        let e = expect(&mut daemon, &mine).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
