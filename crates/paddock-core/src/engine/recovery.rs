//! After a restart: reattaching to the sandboxes the backends still run,
//! marking those that died, and cleaning up what is left; shutdown.

use super::*;

impl Engine {
    /// Serves one sandbox again after a restart, if its backend still has
    /// it in the state the store recorded. A running one gets an agent
    /// client that connects on first use; `verify_agents` asks each agent
    /// later, so that the daemon serves again without waiting on a round
    /// trip to every sandbox.
    pub(super) async fn reattach(&self, sb: &Sandbox, rt: &dyn Runtime) -> Result<bool> {
        match (sb.state, rt.inspect(sb.id).await?) {
            (State::Running, (Liveness::Running, Some(inst))) => {
                let agent = self
                    .agents
                    .lazy(&inst.agent, rt.capabilities().fd_handover)?;
                // The idle clock goes on from where the store left it.
                let at = sb.last_active_at.timestamp_millis();
                self.attach(sb.id, rt.name(), agent, inst, at).await;
                self.watch_guards(sb.id, &sb.config.mounts).await;
                Ok(true)
            }
            // Frozen for a capture when the daemon died: thawed.
            (State::Running, (Liveness::Paused, _)) => {
                rt.resume(sb.id).await?;
                Box::pin(self.reattach(sb, rt)).await
            }
            (State::Paused, (Liveness::Paused, _)) => Ok(false),
            (State::Stopped, (Liveness::Stopped, _)) => Ok(false),
            (state, (seen, _)) => Err(Error::Unavailable {
                what: format!("sandbox {}", sb.id),
                reason: format!(
                    "it was {} but is {seen:?} after the daemon restarted",
                    state.as_str()
                ),
            }),
        }
    }

    /// Finds, after a restart, the sandboxes that are still there and
    /// serves them again; marks and cleans up those that died. Running
    /// ones are checked with their agents in the background
    /// (`verify_agents`), after this returns.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        // Networks first: the sandboxes on them are served again below.
        self.recover_networks().await;
        let mut keep = Vec::new();
        let mut attached = Vec::new();
        for sb in self.store.live_sandboxes()? {
            let Ok(rt) = self.runtime_of(&sb).cloned() else {
                keep.push(sb.id);
                continue;
            };
            match self.reattach(&sb, rt.as_ref()).await {
                Ok(is_attached) => {
                    keep.push(sb.id);
                    if is_attached {
                        attached.push(sb.id);
                        if sb.config.mounts.iter().any(|m| m.needs_guard()) {
                            self.serve_guards_later(rt.clone(), sb.id).await;
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::warn!(sandbox = %sb.id, "not recovered: {msg}");
                    let _life = self.lifecycles.lock(sb.id).await;
                    self.mark_died(rt.as_ref(), sb.id, msg).await?;
                }
            }
        }
        tracing::info!(
            "recovered {} sandboxes ({} running)",
            keep.len(),
            attached.len()
        );
        let this = self.clone();
        tokio::spawn(async move { this.verify_agents(attached).await });
        // A fork the daemon died in never answered: its children go. Then
        // the layers nothing refers to, and what captures left half made.
        self.undo_fork(Uuid::nil()).await;
        match self.collect_volumes().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} volumes no record names"),
            Err(e) => tracing::warn!("collecting volumes: {e}"),
        }
        match self.collect_layers(true).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} snapshot layers nothing refers to"),
            Err(e) => tracing::warn!("collecting snapshot layers: {e}"),
        }
        for rt in self.runtimes.values() {
            match rt.gc(&keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "removed {n} leftover sandboxes of the {} backend",
                    rt.isolation().as_str()
                ),
                Err(e) => tracing::warn!("gc of {} failed: {e}", rt.isolation().as_str()),
            }
        }
        Ok(())
    }

    /// Asks the agents of sandboxes reattached after a restart who they
    /// are, many at once; one that does not answer in time, or speaks
    /// another protocol, is marked dead and cleaned up.
    pub(super) async fn verify_agents(&self, ids: Vec<Uuid>) {
        let checked = futures::stream::iter(ids)
            .map(|id| async move {
                let live = self.live.read().await.get(&id).cloned();
                let r = match &live {
                    Some(l) => l.agent.check(self.cfg.agent_timeout).await,
                    None => Ok(()),
                };
                (id, live, r)
            })
            .buffer_unordered(64);
        futures::pin_mut!(checked);
        while let Some((id, live, r)) = checked.next().await {
            let Err(e) = r else { continue };
            // Only if nothing replaced it meanwhile (a stop, a destroy):
            // judged under its lifecycle lock, compared and removed under
            // the map's.
            let _life = self.lifecycles.lock(id).await;
            let Some(live) = live else { continue };
            let Some(rt) = self.unserve_running(id, Some(&live)).await else {
                continue;
            };
            let msg = format!("its agent did not answer after the daemon restarted: {e}");
            tracing::warn!(sandbox = %id, "{msg}");
            if let Err(e) = self.mark_died(rt.as_ref(), id, msg).await {
                tracing::warn!(sandbox = %id, "{e}");
            }
        }
    }

    /// Destroys every sandbox this daemon's store knows (`paddock serve
    /// --cleanup`), whatever the backends hold beyond that, and what they
    /// set up on the host for sandboxes (the bridge and its NAT rules).
    pub async fn destroy_all(&self) -> Result<usize> {
        let mut n = 0;
        for sb in self.store.live_sandboxes()? {
            self.destroy_inner(sb, "cleanup").await?;
            n += 1;
        }
        for rt in self.runtimes.values() {
            n += rt.gc(&[]).await?;
            rt.shutdown().await;
            rt.teardown().await;
        }
        Ok(n)
    }

    /// Lets the backends release what they keep ready (pools); running
    /// sandboxes are left alone.
    pub async fn shutdown(&self) {
        self.flush_events();
        for rt in self.runtimes.values() {
            rt.shutdown().await;
        }
        // What finished meanwhile.
        self.flush_events();
    }
}
