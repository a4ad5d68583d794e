//! Guarded mounts: a mount's ACL enforced on the sandbox's processes (not
//! only on the file API). The backend puts a filesystem over the mount
//! that the agent serves ([`Runtime::guard`]); the agent judges each
//! access and reports it, and each decision becomes an `fs.request` event.

use super::events::record;
use super::*;
use futures::StreamExt;

impl Engine {
    /// A create whose mounts need guards on a backend that cannot guard
    /// is refused, naming the mount.
    pub(super) fn check_guardable(runtime: &dyn Runtime, mounts: &[Mount]) -> Result<()> {
        if runtime.capabilities().guarded_mounts {
            return Ok(());
        }
        match mounts.iter().position(|m| m.needs_guard()) {
            None => Ok(()),
            Some(i) => Err(Error::invalid(
                format!("mounts[{i}].acls"),
                format!(
                    "the {} backend cannot enforce this ACL on the sandbox's processes; \
                     grant read-write to all of {} or choose another isolation",
                    runtime.name(),
                    mounts[i].path
                ),
            )),
        }
    }

    /// Guards every mount of a booting sandbox that needs it, then lets
    /// its main process start (the agent holds it until then).
    pub(super) async fn guard_mounts(
        &self,
        runtime: &dyn Runtime,
        id: Uuid,
        config: &SandboxConfig,
        agent: &dyn Agent,
    ) -> Result<()> {
        let mut any = false;
        for m in config.mounts.iter().filter(|m| m.needs_guard()) {
            runtime.guard(id, m, agent).await?;
            any = true;
        }
        if any {
            if let Err(e) = runtime.serve_guards(id, agent).await {
                tracing::warn!(sandbox = %id, "guards without passthrough: {e}");
            }
            agent.release_main().await?;
        }
        Ok(())
    }

    /// Records the decisions of a running sandbox's guards as `fs.request`
    /// events, for as long as its agent answers (once per attachment).
    pub(super) async fn watch_guards(&self, id: Uuid, mounts: &[Mount]) {
        if !mounts.iter().any(|m| m.needs_guard()) {
            return;
        }
        let Some(live) = self.live.read().await.get(&id).cloned() else {
            return;
        };
        if live.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(Some(sb)) = self.store.get_sandbox(id) else {
            return;
        };
        let (store, bus, owner) = (self.store.clone(), self.bus.clone(), sb.owner);
        tokio::spawn(async move {
            let stream = match live.agent.fs_decisions().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(sandbox = %id, "guard decisions: {e}");
                    live.watching.store(false, Ordering::SeqCst);
                    return;
                }
            };
            let mut batches = stream.ready_chunks(256);
            while let Some(batch) = batches.next().await {
                let mut events = Vec::with_capacity(batch.len());
                for d in batch {
                    let Ok(d) = d else { break };
                    if d.dropped > 0 {
                        tracing::warn!(sandbox = %id, dropped = d.dropped,
                            "guard decisions lost while none was recorded");
                    }
                    events.push(EventData::FsRequest(ev::FsRequested {
                        access: if d.allowed { "allowed" } else { "denied" }.into(),
                        mount: d.mount,
                        path: d.path,
                        operation: if d.write { "write" } else { "read" }.into(),
                    }));
                }
                let (store, bus, owner) = (store.clone(), bus.clone(), owner.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    for e in events {
                        record(&store, &bus, id, &owner, e);
                    }
                })
                .await;
            }
            live.watching.store(false, Ordering::SeqCst);
        });
    }

    /// A running sandbox's guards after its mounts changed from `old` to
    /// `new`: each takes its mount's new rules, a mount that now needs a
    /// guard gets one, and a guard whose mount is gone lets everything
    /// through (the mount's ACL no longer applies).
    pub(super) async fn regard(&self, sb: &Sandbox, old: &[Mount], new: &[Mount]) -> Result<()> {
        let Some(live) = self.live.read().await.get(&sb.id).cloned() else {
            // Not running: it boots with the new mounts.
            return Ok(());
        };
        let was = |m: &Mount| old.iter().any(|o| o.path == m.path && o.needs_guard());
        let changed = |m: &Mount| {
            old.iter()
                .find(|o| o.path == m.path)
                .is_none_or(|o| o.acls != m.acls)
        };
        let to_guard: Vec<&Mount> = new
            .iter()
            .filter(|m| (was(m) || m.needs_guard()) && changed(m))
            .collect();
        let gone: Vec<&Mount> = old
            .iter()
            .filter(|o| o.needs_guard() && !new.iter().any(|m| m.path == o.path))
            .collect();
        if to_guard.is_empty() && gone.is_empty() {
            return Ok(());
        }
        if sb.state == State::Paused {
            // Its agent is frozen with the rest of it.
            return Err(Error::Conflict(format!(
                "sandbox {} is paused: resume it to change the rules of its guarded mounts",
                sb.id
            )));
        }
        let rt = self.runtime_of(sb)?.clone();
        let agent = live.agent.as_ref();
        for m in to_guard {
            match agent.guard(&m.path, &m.acls, 0, None).await {
                Ok(()) => {}
                Err(Error::NotFound { .. }) if m.needs_guard() => {
                    Self::check_guardable(rt.as_ref(), std::slice::from_ref(m))?;
                    let first = !old.iter().any(|o| o.needs_guard());
                    rt.guard(sb.id, m, agent).await?;
                    if first {
                        if let Err(e) = rt.serve_guards(sb.id, agent).await {
                            tracing::warn!(sandbox = %sb.id, "guards without passthrough: {e}");
                        }
                    }
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for o in gone {
            let open = [AclRule {
                path: format!("{}/**", o.path.trim_end_matches('/')),
                access: Access::Rw,
            }];
            match agent.guard(&o.path, &open, 0, None).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.watch_guards(sb.id, new).await;
        Ok(())
    }

    /// After a restart: the backend serves a running sandbox's guards
    /// again (in the background: recovery does not wait on agents).
    pub(super) async fn serve_guards_later(&self, rt: Arc<dyn Runtime>, id: Uuid) {
        let Some(live) = self.live.read().await.get(&id).cloned() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = rt.serve_guards(id, live.agent.as_ref()).await {
                tracing::warn!(sandbox = %id, "guards without passthrough: {e}");
            }
        });
    }
}
