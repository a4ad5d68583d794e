//! Workspaces: names whose sandbox scales to zero. Hibernating one
//! snapshots its sandbox and destroys it; waking one starts a new sandbox
//! from the latest snapshot. Its sandbox's idle timeout can hibernate it,
//! and a request to its ports through a proxy can wake it.

use super::*;

/// How long a woken sandbox's port is waited for before a held request
/// is answered anyway (the proxy then says the port does not answer).
const WAKE_PORT_WAIT: Duration = Duration::from_secs(60);

/// The most workspaces one principal keeps (they hold no sandbox while
/// they sleep, so `max_sandboxes` does not bound them).
pub const MAX_WORKSPACES_PER_OWNER: usize = 256;

impl Engine {
    /// `p`'s workspace of that name (or id); its sandbox as it is now
    /// (one destroyed meanwhile, by its TTL say, is no longer current).
    pub fn get_workspace(&self, p: &Principal, name: &str) -> Result<Workspace> {
        let mut w = self
            .store
            .find_workspace(&p.id, name)?
            .ok_or_else(|| Error::not_found(format!("workspace {name}")))?;
        self.settle_current(&mut w)?;
        Ok(w)
    }

    /// `p`'s workspaces, by name.
    pub fn workspaces(&self, p: &Principal) -> Result<Vec<Workspace>> {
        let mut all = self.store.list_workspaces(Some(&p.id))?;
        for w in &mut all {
            self.settle_current(w)?;
        }
        Ok(all)
    }

    /// A current sandbox that is gone (destroyed or failed) is none.
    fn settle_current(&self, w: &mut Workspace) -> Result<()> {
        if let Some(id) = w.current {
            let gone = match self.store.get_sandbox(id)? {
                Some(sb) => matches!(sb.state, State::Destroyed | State::Error),
                None => true,
            };
            if gone {
                w.current = None;
            }
        }
        Ok(())
    }

    pub async fn create_workspace(
        &self,
        p: &Principal,
        req: WorkspaceRequest,
    ) -> Result<Workspace> {
        self.audited(
            p,
            "workspace.create",
            None,
            serde_json::json!({"name": req.name}),
            async move {
                validate_workspace_name(&req.name)?;
                validate_metadata(&req.metadata)?;
                self.check_workspace_spec(&req.spec)?;
                if self.store.list_workspaces(Some(&p.id))?.len() >= MAX_WORKSPACES_PER_OWNER {
                    return Err(Error::Quota(format!(
                        "at most {MAX_WORKSPACES_PER_OWNER} workspaces each"
                    )));
                }
                if let Some(s) = &req.source {
                    self.get_snapshot(p, s)
                        .map_err(|_| Error::invalid("source", format!("no snapshot {s:?}")))?;
                }
                let now = Utc::now();
                let w = Workspace {
                    id: Uuid::new_v4(),
                    owner: p.id.clone(),
                    name: req.name,
                    spec: req.spec,
                    source: req.source,
                    current: None,
                    latest_snapshot: None,
                    on_idle: req.on_idle,
                    wake_on_request: req.wake_on_request,
                    metadata: req.metadata,
                    created_at: now,
                    updated_at: now,
                };
                self.store.insert_workspace(&w)?;
                Ok(w)
            },
        )
        .await
    }

    /// A workspace's spec: what a sandbox spec may be (checked now, not
    /// at its first wake), less what belongs to one sandbox (a key; its
    /// snapshot is the workspace's). Errors name `spec.<field>`.
    fn check_workspace_spec(&self, spec: &SandboxSpec) -> Result<()> {
        if spec.template.is_none() {
            spec.resolve(&self.cfg.limits).map_err(|e| match e {
                Error::Invalid { field, reason } => Error::invalid(format!("spec.{field}"), reason),
                e => e,
            })?;
        }
        if spec.key.is_some() {
            return Err(Error::invalid(
                "spec.key",
                "a workspace's sandboxes have no key",
            ));
        }
        if spec.from_snapshot.is_some() {
            return Err(Error::invalid(
                "spec.from_snapshot",
                "a workspace starts from its source, then from its latest snapshot",
            ));
        }
        if !spec.volumes.is_empty() {
            return Err(Error::invalid(
                "spec.volumes",
                "a workspace's sandboxes mount no volumes",
            ));
        }
        crate::model::check_labels(&spec.labels)
    }

    pub async fn update_workspace(
        &self,
        p: &Principal,
        name: &str,
        u: WorkspaceUpdate,
    ) -> Result<Workspace> {
        self.audited(
            p,
            "workspace.update",
            None,
            serde_json::json!({"name": name}),
            async move {
                let w = self.get_workspace(p, name)?;
                let _lock = self.lifecycles.lock(w.id).await;
                let mut w = self.get_workspace(p, name)?;
                Self::fence(&w, u.expected_current)?;
                if let Some(c) = u.current {
                    if let Some(id) = c {
                        let sb = self.get(p, id)?;
                        if matches!(sb.state, State::Destroyed | State::Error) {
                            return Err(Error::invalid(
                                "current",
                                format!("sandbox {id} is {}", sb.state.as_str()),
                            ));
                        }
                    }
                    w.current = c;
                }
                if let Some(s) = u.latest_snapshot {
                    if let Some(id) = s {
                        self.get_snapshot(p, &id.to_string())
                            .map_err(|_| Error::invalid("latest_snapshot", "no such snapshot"))?;
                    }
                    w.latest_snapshot = s;
                }
                if let Some(s) = u.source {
                    if let Some(s) = &s {
                        self.get_snapshot(p, s)
                            .map_err(|_| Error::invalid("source", format!("no snapshot {s:?}")))?;
                    }
                    w.source = s;
                }
                if let Some(spec) = u.spec {
                    self.check_workspace_spec(&spec)?;
                    w.spec = spec;
                }
                if let Some(a) = u.on_idle {
                    w.on_idle = a;
                }
                if let Some(b) = u.wake_on_request {
                    w.wake_on_request = b;
                }
                if let Some(m) = u.metadata {
                    validate_metadata(&m)?;
                    w.metadata = m;
                }
                w.updated_at = Utc::now();
                self.store.update_workspace(&w)?;
                Ok(w)
            },
        )
        .await
    }

    /// Refuses (409) unless the workspace's sandbox is the one expected.
    fn fence(w: &Workspace, expected: Option<Option<Uuid>>) -> Result<()> {
        match expected {
            Some(e) if e != w.current => Err(Error::Conflict(format!(
                "workspace {:?}'s sandbox is {}, not {}",
                w.name,
                w.current.map_or("none".into(), |c| c.to_string()),
                e.map_or("none".into(), |c| c.to_string()),
            ))),
            _ => Ok(()),
        }
    }

    /// Deletes a workspace and its sandbox (its snapshots stay, as
    /// snapshots of `p`'s).
    pub async fn delete_workspace(
        &self,
        p: &Principal,
        name: &str,
        expected_current: Option<Option<Uuid>>,
    ) -> Result<()> {
        self.audited(
            p,
            "workspace.delete",
            None,
            serde_json::json!({"name": name}),
            async move {
                let w = self.get_workspace(p, name)?;
                let _lock = self.lifecycles.lock(w.id).await;
                let w = self.get_workspace(p, name)?;
                Self::fence(&w, expected_current)?;
                if let Some(id) = w.current {
                    match self.destroy(p, id).await {
                        Ok(_) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.store.delete_workspace(w.id)?;
                Ok(())
            },
        )
        .await
    }

    /// Snapshots the workspace's sandbox, then destroys it. Nothing to do
    /// when it has none.
    pub async fn hibernate_workspace(
        self: &Arc<Self>,
        p: &Principal,
        name: &str,
    ) -> Result<Workspace> {
        self.audited(
            p,
            "workspace.hibernate",
            None,
            serde_json::json!({"name": name}),
            async move {
                let w = self.get_workspace(p, name)?;
                let _lock = self.lifecycles.lock(w.id).await;
                self.hibernate_locked(p, self.get_workspace(p, name)?).await
            },
        )
        .await
    }

    /// Hibernates `w`, its lifecycle lock held.
    async fn hibernate_locked(
        self: &Arc<Self>,
        p: &Principal,
        mut w: Workspace,
    ) -> Result<Workspace> {
        let Some(current) = w.current else {
            return Ok(w);
        };
        // Frozen first: nothing written after the capture is lost with
        // the sandbox (a sandbox that will not pause is captured frozen
        // for the copy alone).
        if self.get(p, current)?.state == State::Running {
            if let Err(e) = self.pause(p, current).await {
                tracing::warn!(workspace = %w.id, sandbox = %current, "hibernate: pause: {e}");
            }
        }
        let snap = self
            .snapshot(
                p,
                current,
                SnapshotRequest {
                    labels: std::collections::BTreeMap::from([(
                        WORKSPACE_LABEL.to_string(),
                        w.id.to_string(),
                    )]),
                    ..Default::default()
                },
            )
            .await?;
        match self.destroy(p, current).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let previous = w.latest_snapshot.replace(snap.id);
        w.current = None;
        w.updated_at = Utc::now();
        self.store.update_workspace(&w)?;
        // The snapshot before, if the workspace took it and no other
        // workspace starts from it, is superseded.
        if let Some(old) = previous {
            let others = self
                .store
                .list_workspaces(Some(&w.owner))?
                .into_iter()
                .any(|o| {
                    o.id != w.id
                        && (o.latest_snapshot == Some(old)
                            || o.source.as_deref() == Some(&old.to_string()))
                });
            if let (false, Ok(sn)) = (others, self.get_snapshot(p, &old.to_string())) {
                if sn.labels.get(WORKSPACE_LABEL) == Some(&w.id.to_string()) {
                    if let Err(e) = self.delete_snapshot(p, &old.to_string()).await {
                        tracing::warn!(workspace = %w.id, "superseded snapshot {old}: {e}");
                    }
                }
            }
        }
        Ok(w)
    }

    /// Gives the workspace a running sandbox: the current one (started or
    /// resumed if need be), or a new one from its latest snapshot.
    pub async fn wake_workspace(self: &Arc<Self>, p: &Principal, name: &str) -> Result<Workspace> {
        self.audited(
            p,
            "workspace.wake",
            None,
            serde_json::json!({"name": name}),
            // In a task of its own: a caller that goes away must not leave
            // a sandbox booted that the workspace does not know.
            {
                let (this, p, name) = (self.clone(), p.clone(), name.to_string());
                async move {
                    let what = format!("wake of {name}");
                    tokio::spawn(async move { this.wake_inner(&p, &name).await })
                        .await
                        .map_err(|e| Error::internal(format!("{what}: {e}")))?
                }
            },
        )
        .await
    }

    async fn wake_inner(self: &Arc<Self>, p: &Principal, name: &str) -> Result<Workspace> {
        {
            {
                let w = self.get_workspace(p, name)?;
                let _lock = self.lifecycles.lock(w.id).await;
                let mut w = self.get_workspace(p, name)?;
                if let Some(id) = w.current {
                    let sb = self.get(p, id)?;
                    match sb.state {
                        State::Stopped => {
                            self.start(p, id).await?;
                        }
                        State::Paused => {
                            self.resume(p, id).await?;
                        }
                        _ => {}
                    }
                    return Ok(w);
                }
                let mut spec = w.spec.clone();
                spec.labels
                    .insert(WORKSPACE_LABEL.to_string(), w.id.to_string());
                spec.from_snapshot = w
                    .latest_snapshot
                    .map(|s| s.to_string())
                    .or_else(|| w.source.clone());
                spec.on_idle = Some(w.on_idle);
                let (sb, _) = self.create(p, spec).await?;
                w.current = Some(sb.id);
                w.updated_at = Utc::now();
                self.store.update_workspace(&w)?;
                Ok(w)
            }
        }
    }

    /// Where a request to a workspace's port goes: its sandbox, woken
    /// first when it sleeps and the workspace wakes on request (the
    /// request held until the port answers).
    pub async fn workspace_target(
        self: &Arc<Self>,
        p: &Principal,
        name: &str,
        port: u16,
    ) -> Result<SocketAddr> {
        let w = self.get_workspace(p, name)?;
        if let Some(id) = w.current {
            if self.get(p, id)?.state == State::Running {
                return self.proxy_target(p, id, port).await;
            }
        }
        if !w.wake_on_request {
            return Err(Error::Conflict(format!(
                "workspace {name:?} is hibernated (wake it, or let requests wake it)"
            )));
        }
        let w = self.wake_workspace(p, name).await?;
        let id = w
            .current
            .ok_or_else(|| Error::internal(format!("workspace {name}: woken without a sandbox")))?;
        let addr = self.proxy_target(p, id, port).await?;
        wait_for_port(addr, WAKE_PORT_WAIT).await;
        Ok(addr)
    }

    /// The reaper's hibernation of a sandbox idle past its timeout (or,
    /// with `expired`, past its TTL, when it belongs to a workspace): the
    /// workspace hibernates when it is its current sandbox; else the
    /// sandbox stops (files kept), or is destroyed when its TTL lapsed.
    /// Never waits for a workspace's lock: one busy (a wake, a
    /// hibernation) is left for the next pass.
    pub(super) async fn hibernate_idle(self: &Arc<Self>, sb: Sandbox, expired: bool) -> Result<()> {
        let p = Principal::new(sb.owner.clone()).via("reaper");
        let ws = sb
            .labels
            .get(WORKSPACE_LABEL)
            .and_then(|w| w.parse::<Uuid>().ok())
            .map(|w| self.store.workspace(w))
            .transpose()?
            .flatten()
            .filter(|w| w.owner == sb.owner && w.current == Some(sb.id));
        let Some(w) = ws else {
            if expired {
                self.destroy_inner(sb, "ttl").await?;
            } else {
                self.stop(&p, sb.id).await?;
            }
            return Ok(());
        };
        let Some(_lock) = self.lifecycles.try_lock(w.id) else {
            return Ok(());
        };
        // Looked at again under the lock: still its sandbox, still idle.
        let Some(w) = self.store.workspace(w.id)? else {
            return Ok(());
        };
        if w.current != Some(sb.id) {
            return Ok(());
        }
        if !expired {
            let last = self
                .live
                .read()
                .await
                .get(&sb.id)
                .map(|l| l.last_active_ms.load(Ordering::Relaxed));
            let secs = sb.config.idle_timeout_secs.unwrap_or(0) as i64;
            if last.is_some_and(|l| now_ms() - l < secs.saturating_mul(1000)) {
                return Ok(());
            }
        }
        self.audited(
            &p,
            "workspace.hibernate",
            None,
            serde_json::json!({"name": w.name, "reason": if expired { "ttl" } else { "idle" }}),
            self.hibernate_locked(&p, w.clone()),
        )
        .await?;
        Ok(())
    }
}

/// Waits (up to `max`) until something accepts connections at `addr`.
pub(super) async fn wait_for_port(addr: SocketAddr, max: Duration) {
    let until = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < until {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
