//! What a running sandbox shows: its listening ports, platform, proxy
//! targets, metrics and its main process's output.

use super::*;

impl Engine {
    pub async fn ports(&self, p: &Principal, id: Uuid) -> Result<Vec<Port>> {
        let (sb, live) = self.live_for(p, id).await?;
        let listening = live.agent.ports().await?;
        let mut out: Vec<Port> = Vec::new();
        for l in listening {
            let port = l.port;
            if out.iter().any(|o| o.port == port) {
                continue;
            }
            out.push(Port {
                port,
                address: l.address,
                protocol: l.protocol,
                declared: sb.config.ports.contains(&port),
                listening: true,
            });
        }
        for &d in &sb.config.ports {
            if !out.iter().any(|o| o.port == d) {
                out.push(Port {
                    port: d,
                    address: String::new(),
                    protocol: "tcp".into(),
                    declared: true,
                    listening: false,
                });
            }
        }
        out.sort_by_key(|p| p.port);
        Ok(out)
    }

    /// Declares `port` of the sandbox (`exposed`) or takes it back: what
    /// the port list reports as declared and dialects publish (agenttier's
    /// forwarded ports). Taking back one not declared is a 404.
    pub async fn declare_port(
        &self,
        p: &Principal,
        id: Uuid,
        port: u16,
        exposed: bool,
    ) -> Result<Sandbox> {
        let action = if exposed {
            "port.expose"
        } else {
            "port.remove"
        };
        self.audited(
            p,
            action,
            Some(id),
            serde_json::json!({ "port": port }),
            async move {
                if port == 0 {
                    return Err(Error::invalid("port", "0 is not a port"));
                }
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !exposed && !sb.config.ports.contains(&port) {
                    return Err(Error::not_found(format!("port {port} of sandbox {id}")));
                }
                self.store.tx(|tx| {
                    let mut sb = Store::sandbox_in(tx, id)?;
                    sb.config.ports.retain(|&x| x != port);
                    if exposed {
                        sb.config.ports.push(port);
                        sb.config.ports.sort_unstable();
                    }
                    sb.updated_at = Utc::now();
                    Store::put_sandbox(tx, &sb)?;
                    Ok(sb)
                })
            },
        )
        .await
    }

    /// uname(2) as the sandbox sees it, asked of its agent.
    pub async fn platform(&self, p: &Principal, id: Uuid) -> Result<Platform> {
        let (_, live) = self.live_for(p, id).await?;
        live.agent.platform().await
    }

    /// Where the proxy connects for `port` of the sandbox.
    pub async fn proxy_target(&self, p: &Principal, id: Uuid, port: u16) -> Result<SocketAddr> {
        if port == 0 {
            return Err(Error::invalid("port", "0 is not a port"));
        }
        // A request to a port may change anything: not for a read-only
        // token, and only to a scoped token's own sandboxes.
        self.check_scope(p, "sandbox.proxy", Some(id))?;
        // A hibernated sandbox that wakes on request is started, and the
        // request held until its port answers.
        let sb = self.get(p, id)?;
        if sb.config.wake_on_request && matches!(sb.state, State::Stopped | State::Paused) {
            match sb.state {
                State::Stopped => self.start(p, id).await?,
                _ => self.resume(p, id).await?,
            };
            let (_, live) = self.live_for(p, id).await?;
            if let Some(ip) = live.instance.ip {
                let addr = SocketAddr::new(ip, port);
                super::workspaces::wait_for_port(addr, Duration::from_secs(60)).await;
                return Ok(addr);
            }
        }
        let (_, live) = self.live_for(p, id).await?;
        match live.instance.ip {
            Some(ip) => Ok(SocketAddr::new(ip, port)),
            None => Err(Error::Unsupported(
                "a port proxy for this sandbox's backend".into(),
            )),
        }
    }

    pub async fn metrics(&self, p: &Principal, id: Uuid) -> Result<Metrics> {
        let sb = self.get(p, id)?;
        sb.state.check(Action::Metrics, id)?;
        let rt = self.runtime_of(&sb)?;
        match rt.metrics(id).await {
            // Its cgroup is gone: it died and the monitor has not marked
            // it yet (it does within two passes), or a stop is under way.
            // Its state refuses the call.
            Err(Error::Unavailable { reason, .. }) => Err(Error::Conflict(format!(
                "sandbox {id} is not running ({reason}: its processes exited, or it is being stopped)"
            ))),
            r => r,
        }
    }

    pub async fn logs(&self, p: &Principal, id: Uuid, offset: u64) -> Result<Vec<u8>> {
        if offset > i64::MAX as u64 {
            return Err(Error::invalid("offset", "must be at most 2^63-1"));
        }
        let sb = self.get(p, id)?;
        sb.state.check(Action::Logs, id)?;
        Ok(match &self.logs {
            Some(logs) => logs.read(id, offset)?,
            None => Vec::new(),
        })
    }
}
