//! One lifecycle change at a time per sandbox.
//!
//! A sandbox's boot, a stop, start, pause, resume or destroy, a hand-over
//! from a warm pool and a death the monitor finds each hold the sandbox's
//! lock and judge the state they find under it, so two changes never
//! interleave (a destroy during a create waits for the boot and then tears
//! it down; a death found while the owner stops the sandbox leaves
//! `stopped` alone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::*;

type Map = HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>;

/// The locks of the sandboxes someone holds or waits for; an entry goes
/// with its last holder, so the map stays as small as the changes under
/// way.
#[derive(Default)]
pub(super) struct Lifecycles {
    map: Arc<Mutex<Map>>,
}

/// A sandbox's lifecycle lock, held until dropped.
pub(super) struct LifeGuard {
    id: Uuid,
    map: Arc<Mutex<Map>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

fn lock(map: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lifecycles {
    fn entry(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.map).entry(id).or_default().clone()
    }

    fn guard(&self, id: Uuid, held: tokio::sync::OwnedMutexGuard<()>) -> LifeGuard {
        LifeGuard {
            id,
            map: self.map.clone(),
            held: Some(held),
        }
    }

    /// Waits for sandbox `id`'s lock.
    pub(super) async fn lock(&self, id: Uuid) -> LifeGuard {
        let held = self.entry(id).lock_owned().await;
        self.guard(id, held)
    }

    /// Sandbox `id`'s lock if nobody holds it.
    pub(super) fn try_lock(&self, id: Uuid) -> Option<LifeGuard> {
        // Failing, the entry stays: its holder's guard removes it.
        let held = self.entry(id).try_lock_owned().ok()?;
        Some(self.guard(id, held))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl Drop for LifeGuard {
    fn drop(&mut self) {
        // Under the map's lock nobody can take a new handle: if the map's
        // and this guard's are the only ones, nobody waits, and the entry
        // goes. A waiter whose future was dropped (its caller gave up)
        // leaves without such a check: entries nobody holds or waits for
        // any more (the map's handle only) go here too, with whichever
        // guard drops next. The map holds only the changes under way, so
        // the sweep is short.
        let mut map = lock(&self.map);
        map.retain(|id, m| {
            let others = if *id == self.id { 2 } else { 1 };
            Arc::strong_count(m) > others
        });
        drop(self.held.take());
    }
}

impl Engine {
    pub async fn destroy(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.destroy",
            Some(id),
            serde_json::Value::Null,
            async move {
                let sb = self.get(p, id)?;
                self.destroy_inner(sb, "deleted").await
            },
        )
        .await
    }

    /// Destroys `sb` as it is when its lifecycle lock is free; if it has
    /// changed hands since the caller read it (a pooled sandbox handed
    /// out), leaves it alone and returns it as it is.
    pub(super) async fn destroy_inner(&self, sb: Sandbox, reason: &str) -> Result<Sandbox> {
        let done = self.destroy_locked(sb, reason).await?;
        // Its snapshot layers go once nothing else refers to them (after
        // its lifecycle lock: every capture takes that before `layer_gc`).
        if !done.config.layers.is_empty() && done.state == State::Destroyed {
            if let Err(e) = self.collect_layers(false).await {
                tracing::warn!("collecting snapshot layers: {e}");
            }
        }
        Ok(done)
    }

    async fn destroy_locked(&self, sb: Sandbox, reason: &str) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(sb.id).await;
        let sb = match self.store.get_sandbox(sb.id)? {
            Some(now) if now.owner == sb.owner => now,
            Some(now) => return Ok(now),
            None => return Err(Error::not_found(format!("sandbox {}", sb.id))),
        };
        if !sb.state.check(Action::Destroy, sb.id)? {
            return Ok(sb);
        }
        // (Not for a fork's child undone: it never was anyone's.)
        if let (Some(_), Ok(rt), false) = (
            &sb.config.snapshot,
            self.runtime_of(&sb),
            reason == "fork failed",
        ) {
            // Its snapshot policy's files kept before it goes (a failure
            // is logged: the sandbox goes all the same).
            if let Err(e) = self.write_policy_snapshot(&rt.clone(), &sb).await {
                tracing::warn!(sandbox = %sb.id, "its snapshot policy's files were not kept: {e}");
            }
        }
        self.live.write().await.remove(&sb.id);
        if let Ok(rt) = self.runtime_of(&sb) {
            rt.destroy(sb.id).await?;
        }
        if let Some(logs) = &self.logs {
            logs.remove(sb.id);
        }
        let done = self.transition(sb.id, EventData::destroyed(reason), |s| {
            s.state = State::Destroyed;
            s.ip = None;
        })?;
        if let Some(n) = &sb.config.network {
            self.refresh_peers(n).await;
        }
        Ok(done)
    }

    pub async fn stop(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.stop",
            Some(id),
            serde_json::Value::Null,
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !sb.state.check(Action::Stop, id)? {
                    return Ok(sb);
                }
                self.live.write().await.remove(&id);
                self.runtime_of(&sb)?.stop(id).await?;
                self.transition(id, EventData::stopped(), |s| {
                    s.state = State::Stopped;
                })
            },
        )
        .await
    }

    pub async fn start(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.start",
            Some(id),
            serde_json::Value::Null,
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !sb.state.check(Action::Start, id)? {
                    return Ok(sb);
                }
                let rt = self.runtime_of(&sb)?.clone();
                // The operator's allowed roots may have changed since the create
                // (a restart with another config): a host directory no longer under
                // one is not bound again (403 naming the mount).
                let mut config = sb.config.clone();
                self.check_origins(&mut config.mounts)?;
                // Volumes mounted on the host again (after a reboot, say).
                if let (false, Some(store)) = (config.volumes.is_empty(), self.volumes.get()) {
                    for v in &mut config.volumes {
                        let (store, id) = (store.clone(), v.volume);
                        v.source = tokio::task::spawn_blocking(move || store.source(id))
                            .await
                            .map_err(Error::internal)??;
                    }
                }
                let ip = self.boot(&rt, id, &config, true).await?;
                self.transition(id, EventData::started(), |s| {
                    s.state = State::Running;
                    s.ip = ip;
                    s.last_active_at = Utc::now();
                })
            },
        )
        .await
    }

    pub async fn pause(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.pause",
            Some(id),
            serde_json::Value::Null,
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !sb.state.check(Action::Pause, id)? {
                    return Ok(sb);
                }
                self.runtime_of(&sb)?.pause(id).await?;
                self.transition(id, EventData::paused(), |s| {
                    s.state = State::Paused;
                })
            },
        )
        .await
    }

    pub async fn resume(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.resume",
            Some(id),
            serde_json::Value::Null,
            async move {
                let _life = self.lifecycles.lock(id).await;
                let sb = self.get(p, id)?;
                if !sb.state.check(Action::Resume, id)? {
                    return Ok(sb);
                }
                let rt = self.runtime_of(&sb)?.clone();
                rt.resume(id).await?;
                if !self.live.read().await.contains_key(&id) {
                    if let (_, Some(inst)) = rt.inspect(id).await? {
                        let handover = rt.capabilities().fd_handover;
                        let agent = self
                            .agents
                            .connect(&inst.agent, handover, self.cfg.agent_timeout)
                            .await?;
                        self.attach(id, rt.name(), agent, inst, now_ms()).await;
                    }
                }
                self.transition(id, EventData::resumed(), |s| {
                    s.state = State::Running;
                    s.last_active_at = Utc::now();
                })
            },
        )
        .await
    }

    /// Resets the idle clock (and nothing else).
    /// Sets labels of a sandbox (`None`: removes it), all at once.
    pub async fn set_labels(
        &self,
        p: &Principal,
        id: Uuid,
        labels: std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<Sandbox> {
        let keys: Vec<&String> = labels.keys().collect();
        let detail = serde_json::json!({ "labels": keys });
        self.audited(p, "sandbox.labels", Some(id), detail, async move {
            let _life = self.lifecycles.lock(id).await;
            self.get(p, id)?;
            self.store.tx(|tx| {
                let mut sb = Store::sandbox_in(tx, id)?;
                for (k, v) in &labels {
                    match v {
                        Some(v) => sb.labels.insert(k.clone(), v.clone()),
                        None => sb.labels.remove(k),
                    };
                }
                crate::model::check_labels(&sb.labels)?;
                sb.updated_at = Utc::now();
                Store::put_sandbox(tx, &sb)?;
                Ok(sb)
            })
        })
        .await
    }

    pub async fn touch(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        // Not audited (a keep-alive, called often), but a change: not for
        // a read-only token.
        self.check_scope(p, "sandbox.touch", Some(id))?;
        let sb = self.get(p, id)?;
        sb.state.check(Action::Touch, id)?;
        let now = now_ms();
        if let Some(l) = self.live.read().await.get(&id) {
            l.last_active_ms.store(now, Ordering::Relaxed);
            l.persisted_active_ms.store(now, Ordering::Relaxed);
        }
        self.persist_active(id, now)?;
        self.get(p, id)
    }

    /// Extends a sandbox's TTL to `secs` from now (the hiver `ping`).
    pub async fn extend_ttl(&self, p: &Principal, id: Uuid, secs: u64) -> Result<Sandbox> {
        self.audited(
            p,
            "sandbox.extend_ttl",
            Some(id),
            serde_json::json!({"secs": secs}),
            async move {
                if secs > self.cfg.limits.max_ttl_secs {
                    return Err(Error::invalid(
                        "ttl_secs",
                        format!("must be at most {} seconds", self.cfg.limits.max_ttl_secs),
                    ));
                }
                let sb = self.get(p, id)?;
                sb.state.check(Action::ExtendTtl, id)?;
                self.transition(id, EventData::Ttl(ev::TtlSet { ttl_secs: secs }), |s| {
                    s.expires_at = Some(expiry(Utc::now(), secs));
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_no_entry_left() {
        let l = Arc::new(Lifecycles::default());
        let id = Uuid::new_v4();
        let first = l.lock(id).await;
        assert!(l.try_lock(id).is_none(), "held: try_lock must fail");
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                let _g = l.lock(id).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        assert_eq!(l.len(), 0, "entry left after the last holder");
        let g = l.try_lock(id).expect("free again");
        assert_eq!(l.len(), 1);
        drop(g);
        assert_eq!(l.len(), 0);
        // A failed try_lock leaves nothing behind either.
        let g = l.lock(id).await;
        assert!(l.try_lock(id).is_none());
        drop(g);
        assert_eq!(l.len(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_entry() {
        let l = Arc::new(Lifecycles::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = l.lock(a).await;
        // Waits behind `first`, is woken by its release, and is dropped
        // before it is polled again: nobody checks its entry then.
        let mut waiter = Box::pin(l.lock(a));
        assert!(futures::poll!(&mut waiter).is_pending());
        drop(first);
        drop(waiter);
        assert_eq!(l.len(), 1, "the abandoned entry stays until a guard drops");
        drop(l.lock(b).await);
        assert_eq!(l.len(), 0, "another sandbox's guard swept it");
    }
}
