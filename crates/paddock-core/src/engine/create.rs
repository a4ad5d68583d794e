//! Creating a sandbox: idempotent by key per owner, checked against the
//! operator's limits and host-mount roots, booted on its backend and its
//! agent attached.

use super::*;

impl Engine {
    /// Checks each mount's host directory against the operator's policy
    /// and keeps it resolved (403 naming the field when refused).
    pub(super) fn check_origins(&self, mounts: &mut [Mount]) -> Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if let Some(o) = &m.origin {
                m.origin = Some(
                    self.cfg
                        .host_mounts
                        .check(&format!("mounts[{i}].origin"), o)?,
                );
            }
        }
        Ok(())
    }

    /// Creates a sandbox and returns once it takes commands. With a key that
    /// `p` already used, returns that sandbox unchanged and `false`.
    pub async fn create(
        self: &Arc<Self>,
        p: &Principal,
        spec: SandboxSpec,
    ) -> Result<(Sandbox, bool)> {
        let mut detail = serde_json::json!({ "template": spec.template, "key": spec.key });
        let t0 = std::time::Instant::now();
        let r = match self.check_scope(p, "sandbox.create", None) {
            Ok(()) => self.create_inner(p, spec, true).await,
            Err(e) => Err(e),
        };
        if let Ok((_, true)) = &r {
            detail["duration_ms"] = serde_json::json!(t0.elapsed().as_millis() as u64);
        }
        let sandbox = r.as_ref().ok().map(|(sb, _)| sb.id);
        self.audit(p, "sandbox.create", sandbox, r.as_ref().err(), detail);
        r
    }

    /// `create`, but a key `p` already used is a conflict (409) rather
    /// than that sandbox: for APIs where a key is a name that must be new.
    pub async fn create_new(self: &Arc<Self>, p: &Principal, spec: SandboxSpec) -> Result<Sandbox> {
        let key = spec.key.clone();
        match self.create(p, spec).await? {
            (sb, true) => Ok(sb),
            (_, false) => Err(Error::Exists(format!(
                "a sandbox named {:?} already exists",
                key.unwrap_or_default()
            ))),
        }
    }

    /// `create`; with `warm`, a spec a warm pool can serve is handed a
    /// pooled sandbox instead of booting one.
    pub(super) async fn create_inner(
        self: &Arc<Self>,
        p: &Principal,
        spec: SandboxSpec,
        warm: bool,
    ) -> Result<(Sandbox, bool)> {
        let template = match &spec.template {
            Some(name) => Some(self.template_for(p, name)?.ok_or_else(|| {
                Error::invalid("template", format!("no template named {name:?}"))
            })?),
            None => None,
        };
        let pool = if warm {
            self.pool_key(p, &spec, template.as_ref())
        } else {
            None
        };
        let spec = match &template {
            Some(t) => spec.with_defaults(&t.defaults),
            None => spec,
        };
        // (A pool boots as its own principal: it may not name the owner's
        // snapshots, volumes or policy files; templates with them keep no
        // pool.)
        if p.id == pool::POOL_OWNER && super::templates::owns_things(&spec) {
            return Err(Error::invalid(
                "template",
                "a warm pool cannot boot a template that names snapshots, volumes or a snapshot policy",
            ));
        }
        // Held from the snapshot's lookup until the sandbox that uses its
        // layers is recorded: no collection may take them meanwhile.
        let _layers_kept = if spec.from_snapshot.is_some() || spec.snapshot.is_some() {
            Some(self.layer_gc.read().await)
        } else {
            None
        };
        // A snapshot's configuration fills in what is still left out; its
        // image is the one its layers lie on.
        let snapshot = match &spec.from_snapshot {
            Some(s) => Some(
                self.store
                    .find_snapshot(&p.id, s)?
                    .ok_or_else(|| Error::not_found(format!("snapshot {s}")))?,
            ),
            None => None,
        };
        let spec = match &snapshot {
            Some(sn) => {
                if spec.image.is_some() && spec.image != sn.config.image {
                    return Err(Error::invalid(
                        "image",
                        format!(
                            "a sandbox started from snapshot {} runs its image ({})",
                            sn.id,
                            sn.config.image.as_deref().unwrap_or("the default image")
                        ),
                    ));
                }
                if spec.isolation.is_some_and(|i| i != sn.config.isolation) {
                    return Err(Error::invalid(
                        "isolation",
                        format!(
                            "a sandbox started from snapshot {} runs as a {}",
                            sn.id,
                            sn.config.isolation.as_str()
                        ),
                    ));
                }
                spec.with_defaults(&sn.config.as_defaults())
            }
            None => spec,
        };
        let mut config = spec.resolve(&self.cfg.limits)?;
        self.check_origins(&mut config.mounts)?;
        let runtime = self.runtime(config.isolation)?.clone();
        Self::check_guardable(runtime.as_ref(), &config.mounts)?;
        if snapshot.is_some() && !runtime.capabilities().fs_snapshot {
            return Err(runtime.unsupported("starting from a snapshot"));
        }
        // With a key, an existing sandbox is returned before any pull.
        if let Some(k) = &spec.key {
            if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                return Ok((existing, false));
            }
        }
        // The operator's policies, on what the create comes to.
        let max = self.check_policies(p, spec.template.as_deref(), &mut config, 1)?;
        // A named image is pulled on the caller's behalf (the pull policy,
        // a claim), also when a warm pool holds it booted. A snapshot's is
        // on disk already, resolved as it was when the snapshot was taken.
        let mut image = None;
        if let (Some(reference), None) = (&config.image, &snapshot) {
            image = Some(self.image_for(p, reference).await?);
        }
        if let Some(pool) = pool {
            if let Some(out) = self.take_warm(p, pool, &spec, &config, &max).await? {
                return Ok(out);
            }
        }
        if let Some(img) = image {
            config.apply_image(&spec, img);
        }
        if let Some(sn) = snapshot {
            config.resolved_image = sn.config.resolved_image;
            config.user = sn.config.user;
            config.layers = sn.config.layers;
            config.from_snapshot = Some(sn.id);
        }
        // A snapshot policy's restore_key: the files it kept last time.
        if config.from_snapshot.is_none() && runtime.capabilities().fs_snapshot {
            config.layers = self.policy_layers(p, &config)?;
        }
        if !spec.volumes.is_empty() {
            if !runtime.capabilities().volumes {
                return Err(runtime.unsupported("volumes"));
            }
            config.volumes = self.resolve_volumes(p, &spec.volumes, &config).await?;
        }
        if let Some(n) = &spec.network {
            config.network = Some(self.resolve_network(p, n, runtime.as_ref()).await?);
        }
        self.launch(p, &spec, config, runtime, None, &max).await
    }

    /// Stores a new sandbox of `config` (`creating`) and boots it; with a
    /// key `p` already used, returns that sandbox unchanged and `false`.
    /// A fork's children carry `fork_of` until the fork is done.
    pub(super) async fn launch(
        self: &Arc<Self>,
        p: &Principal,
        spec: &SandboxSpec,
        config: SandboxConfig,
        runtime: Arc<dyn Runtime>,
        fork_of: Option<Uuid>,
        max: &Option<(u32, String)>,
    ) -> Result<(Sandbox, bool)> {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let sb = Sandbox {
            id,
            owner: p.id.clone(),
            key: spec.key.clone(),
            labels: spec.labels.clone(),
            template: spec.template.clone(),
            expires_at: config.ttl_secs.map(|t| expiry(now, t)),
            config,
            backend: runtime.name().to_string(),
            state: State::Creating,
            message: None,
            created_at: now,
            updated_at: now,
            last_active_at: now,
            ip: None,
            fork_of,
        };
        let life = {
            let _guard = match &spec.key {
                Some(_) => Some(self.key_lock.lock().await),
                None => None,
            };
            if let Some(k) = &spec.key {
                if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                    return Ok((existing, false));
                }
            }
            // Taken before the sandbox is stored, held until its boot is
            // done (after the key lock, as a pool's hand-over takes them).
            let life = self.lifecycles.lock(id).await;
            self.store.tx_events(
                |tx| {
                    Self::held_check(tx, &p.id, max)?;
                    Store::check_volumes(tx, id, &sb.config.volumes)?;
                    if let Some(n) = &sb.config.network {
                        Store::check_network(tx, n)?;
                    }
                    Store::put_sandbox(tx, &sb)?;
                    let ev = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        EventData::created(sb.config.isolation, false),
                    )?;
                    Ok(((), vec![ev]))
                },
                |evs| self.bus.publish_all(evs),
            )?;
            life
        };
        // Booted in a task of its own: a caller that goes away (a client
        // timing out) must not leave the sandbox half made, `creating`
        // for ever.
        let engine = self.clone();
        let config = sb.config.clone();
        tokio::spawn(async move {
            let _life = life;
            engine.finish_create(runtime, id, config).await
        })
        .await
        .map_err(|e| Error::internal(format!("create {id}: {e}")))?
        .map(|sb| (sb, true))
    }

    /// Boots a stored `creating` sandbox: `running`, or `error` and torn down.
    pub(super) async fn finish_create(
        &self,
        runtime: Arc<dyn Runtime>,
        id: Uuid,
        config: SandboxConfig,
    ) -> Result<Sandbox> {
        let booted = match self.boot(&runtime, id, &config, false).await {
            Ok(ip) => match &config.bootstrap {
                Some(script) => self.bootstrap(id, &config, script).await.map(|_| ip),
                None => Ok(ip),
            },
            Err(e) => Err(e),
        };
        match booted {
            Ok(ip) => {
                let sb = self.transition(id, EventData::started(), |s| {
                    s.state = State::Running;
                    s.ip = ip;
                })?;
                // Its peers learn its name, and it theirs, before the
                // create answers.
                if let Some(n) = &config.network {
                    self.refresh_peers(n).await;
                }
                Ok(sb)
            }
            Err(e) => {
                self.live.write().await.remove(&id);
                let msg = e.to_string();
                let _ = runtime.destroy(id).await;
                let _ = self.transition(id, EventData::error(&msg), |s| {
                    s.state = State::Error;
                    s.message = Some(msg.clone());
                });
                Err(e)
            }
        }
    }

    /// Runs a sandbox's bootstrap script at its first boot (for at most
    /// [`BOOTSTRAP_TIMEOUT`]): an exit other
    /// than 0 fails the create, naming the field.
    async fn bootstrap(&self, id: Uuid, config: &SandboxConfig, script: &str) -> Result<()> {
        let live = self.live.read().await.get(&id).cloned();
        let Some(live) = live else {
            return Err(Error::internal(format!(
                "sandbox {id}: no agent after boot"
            )));
        };
        let r = live
            .agent
            .exec(&ExecRequest {
                shell: Some(script.to_string()),
                user: config.user.clone(),
                timeout: Some(
                    self.cfg
                        .limits
                        .max_exec_timeout_secs
                        .min(BOOTSTRAP_TIMEOUT.as_secs_f64()),
                ),
                ..Default::default()
            })
            .await?;
        if r.exit_code == 0 && !r.timed_out {
            return Ok(());
        }
        let tail: String = {
            let e = r.stderr.trim_end();
            let start = e.char_indices().rev().nth(511).map_or(0, |(i, _)| i);
            e[start..].to_string()
        };
        Err(Error::invalid(
            "bootstrap",
            if r.timed_out {
                "timed out".to_string()
            } else {
                format!("exited {}: {tail}", r.exit_code)
            },
        ))
    }

    /// Starts (or restarts) the runtime side and connects the agent.
    pub(super) async fn boot(
        &self,
        runtime: &Arc<dyn Runtime>,
        id: Uuid,
        config: &SandboxConfig,
        restart: bool,
    ) -> Result<Option<String>> {
        if let Some(logs) = &self.logs {
            // The agent about to start counts its output from 0.
            logs.new_boot(id)?;
        }
        let instance = if restart {
            runtime.start(id, config).await?
        } else {
            runtime.create(id, config).await?
        };
        let t0 = std::time::Instant::now();
        let handover = runtime.capabilities().fd_handover;
        let agent = self
            .agents
            .connect(&instance.agent, handover, self.cfg.agent_timeout)
            .await?;
        tracing::debug!(sandbox = %id, connect = ?t0.elapsed(), "agent connected");
        self.guard_mounts(runtime.as_ref(), id, config, agent.as_ref())
            .await?;
        self.attach(id, runtime.name(), agent, instance.clone(), now_ms())
            .await;
        self.watch_guards(id, &config.mounts).await;
        Ok(instance.ip.map(|ip| ip.to_string()))
    }

    /// Serves a sandbox's agent; its idle clock starts at `active_ms`.
    pub(super) async fn attach(
        &self,
        id: Uuid,
        backend: &str,
        agent: Arc<dyn Agent>,
        instance: Instance,
        active_ms: i64,
    ) {
        let _wake = Wake(&self.attached);
        self.live.write().await.insert(
            id,
            Arc::new(Live {
                agent,
                backend: backend.to_string(),
                instance,
                last_active_ms: AtomicI64::new(active_ms),
                persisted_active_ms: AtomicI64::new(active_ms),
                net_bytes: Default::default(),
                watching: Default::default(),
            }),
        );
    }
}

/// The longest a bootstrap script runs before its create fails: the
/// create (and a workspace's wake) waits for it.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);
