//! The SSH gateway: a stock OpenSSH client reaches a sandbox as
//! `ssh <sandbox id>@host`. Public-key authentication only, against the
//! keys the sandbox's owner registered (`Engine::ssh_login`); then every
//! channel is engine calls made as that owner, carried `via("ssh")`:
//!
//! - a shell (`ssh box`): a login shell with a PTY, `window-change` a
//!   resize ([`session`]);
//! - a command (`ssh box 'cmd'`): `/bin/sh -c`, stdout and stderr apart,
//!   stdin forwarded, its exit status;
//! - the `sftp` subsystem (`sftp`, `scp`): the engine's file calls
//!   ([`sftp`]);
//! - `direct-tcpip` (`ssh -L`): a port of the sandbox, where the engine's
//!   proxy target says it is.
//!
//! The host key (ed25519) is made once and kept in the data dir.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::model::Principal;
use paddock_core::Engine;
use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use uuid::Uuid;

pub mod session;
pub mod sftp;

/// The host key at `path`, made (ed25519, mode 0600) if there is none.
pub fn host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return PrivateKey::from_openssh(&text)
                .with_context(|| format!("SSH host key {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let seed: [u8; 32] = rand::random();
    let mut key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    key.set_comment("paddock");
    let text = key
        .to_openssh(LineEnding::LF)
        .context("encode the SSH host key")?;
    // Written whole under another name, then renamed: a crash leaves no
    // half key behind.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    tracing::info!(
        "made the SSH host key {} ({})",
        path.display(),
        key.public_key().fingerprint(ssh_key::HashAlg::Sha256)
    );
    Ok(key)
}

/// The gateway's settings.
fn config(key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-paddock".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // A refusal takes this long whatever was refused (the time says
        // nothing of why); the first `none` probe of every client is
        // answered at once.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(60)),
        max_auth_attempts: 8,
        nodelay: true,
        ..Default::default()
    }
}

/// Serves SSH on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    key: PrivateKey,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use russh::server::Server as _;
    let mut server = Gateway { engine };
    let running = server.run_on_socket(Arc::new(config(key)), &listener);
    let handle = running.handle();
    tokio::select! {
        r = running => r,
        _ = stop => {
            handle.shutdown("the daemon is stopping".into());
            Ok(())
        }
    }
}

struct Gateway {
    engine: Arc<Engine>,
}

impl russh::server::Server for Gateway {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            engine: self.engine.clone(),
            peer,
            login: None,
            sftp: Default::default(),
        }
    }

    fn handle_session_error(&mut self, e: russh::Error) {
        tracing::debug!("ssh connection: {e}");
    }
}

/// One client connection.
pub struct Connection {
    engine: Arc<Engine>,
    peer: Option<SocketAddr>,
    /// Who logged in, into which sandbox.
    login: Option<(Principal, Uuid)>,
    /// The channels running the `sftp` subsystem.
    sftp: std::collections::HashSet<ChannelId>,
}

/// Host names `ssh -L` may name for the sandbox itself.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let line = match key.public_key.to_openssh() {
            Ok(l) => l,
            Err(_) => return Ok(Auth::reject()),
        };
        match self.engine.ssh_login(user, &line) {
            Ok((p, id)) => {
                tracing::info!(peer = ?self.peer, sandbox = %id, principal = %p.id, "ssh login");
                self.login = Some((p, id));
                Ok(Auth::Accept)
            }
            Err(e) => {
                tracing::info!(peer = ?self.peer, user, "ssh login refused: {e}");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((p, id)) = self.login.clone() else {
            return Ok(()); // dropped: refused
        };
        reply.accept().await;
        tokio::spawn(session::run(
            self.engine.clone(),
            p,
            id,
            channel,
            session.handle(),
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        use russh::ChannelOpenFailure as F;
        let Some((p, id)) = self.login.clone() else {
            return Ok(());
        };
        // Only the sandbox itself: the gateway is no way into the host's
        // or anyone else's network.
        let Ok(port) = u16::try_from(port) else {
            reply.reject(F::ConnectFailed).await;
            return Ok(());
        };
        if !is_loopback_name(host) {
            tracing::info!(sandbox = %id, host, port, "ssh -L refused: only the sandbox's own ports (localhost)");
            reply.reject(F::AdministrativelyProhibited).await;
            return Ok(());
        }
        // Connected apart from the connection's loop, which goes on.
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let target = match engine.proxy_target(&p, id, port).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(sandbox = %id, port, "ssh -L: {e}");
                    reply.reject(F::ConnectFailed).await;
                    return;
                }
            };
            let connect = tokio::net::TcpStream::connect(target);
            let mut tcp = match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(t)) => t,
                _ => {
                    reply.reject(F::ConnectFailed).await;
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            reply.accept().await;
            let mut ch = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut ch, &mut tcp).await;
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if session::env_allowed(name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.sftp.insert(channel);
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// The client is done with an `sftp` channel: it ended well (exit
    /// status 0, which `scp` checks; sent before the channel closes).
    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.sftp.remove(&channel) {
            session.exit_status_request(channel, 0)?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.sftp.remove(&channel);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}
