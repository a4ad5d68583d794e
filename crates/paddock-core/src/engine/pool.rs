//! Warm pools: per image, N sandboxes booted ahead of time, so that a
//! create asking for nothing else is answered by handing one over.
//!
//! A pooled sandbox belongs to [`POOL_OWNER`], which no principal can be,
//! so nobody sees or touches it before it is handed over; nothing runs in
//! it but its agent (and the image's main process). Hand-over rewrites its
//! owner, key, labels and timeouts in one transaction with its
//! `sandbox.created`/`sandbox.started` events (`"warm": true`); it then
//! leaves the pool for good, so a used sandbox is never handed out again.
//! A background task refills each pool while the host has memory to spare
//! (`EngineConfig::warm_pool_min_free_mb`), and after a restart adopts the
//! pooled sandboxes that survived.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{now_ms, Engine};
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::Store;

/// The owner of pooled sandboxes (principals named `paddock:*` are
/// reserved).
pub const POOL_OWNER: &str = "paddock:warm-pool";

/// One pool: sandboxes of `image` (none: the default host image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub image: Option<String>,
    pub size: usize,
}

/// A pool as `GET /v1/pools` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    /// None: the default host image.
    pub image: Option<String>,
    pub size: usize,
    pub ready: usize,
}

#[derive(Default)]
pub(super) struct Pools {
    ready: std::sync::Mutex<HashMap<Option<String>, VecDeque<Uuid>>>,
    refill: tokio::sync::Notify,
}

impl Pools {
    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, VecDeque<Uuid>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, image: &Option<String>) -> usize {
        self.ready().get(image).map_or(0, |q| q.len())
    }

    fn push(&self, image: Option<String>, id: Uuid) {
        self.ready().entry(image).or_default().push_back(id);
    }
}

fn pool_principal() -> Principal {
    Principal {
        id: POOL_OWNER.into(),
    }
}

/// The pool a spec can be served from: one that sets nothing but its
/// image and what can be given at hand-over (key, labels, TTL, idle
/// timeout). Anything else (limits, env, command, mounts, ...) boots a
/// sandbox of its own.
fn pool_image(spec: &SandboxSpec) -> Option<Option<String>> {
    let rest = SandboxSpec {
        key: None,
        labels: Default::default(),
        image: None,
        ttl_secs: None,
        idle_timeout_secs: None,
        ..spec.clone()
    };
    let plain =
        serde_json::to_value(&rest).ok()? == serde_json::to_value(SandboxSpec::default()).ok()?;
    plain.then(|| {
        spec.image
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    })
}

impl Engine {
    fn pool_size(&self, image: &Option<String>) -> Option<usize> {
        self.cfg
            .warm_pools
            .iter()
            .find(|p| &p.image == image)
            .map(|p| p.size)
    }

    pub fn pools(&self) -> Vec<PoolStatus> {
        self.cfg
            .warm_pools
            .iter()
            .map(|p| PoolStatus {
                image: p.image.clone(),
                size: p.size,
                ready: self.pools.count(&p.image),
            })
            .collect()
    }

    /// Hands a pooled sandbox to `p`, if `spec` can be served from a pool
    /// that has one ready. With a key `p` already used, that sandbox
    /// (`false`), as `create` would.
    pub(super) async fn take_warm(
        &self,
        p: &Principal,
        spec: &SandboxSpec,
        config: &SandboxConfig,
    ) -> Result<Option<(Sandbox, bool)>> {
        let Some(image) = pool_image(spec) else {
            return Ok(None);
        };
        if self.pool_size(&image).is_none() {
            return Ok(None);
        }
        let _guard = match &spec.key {
            Some(_) => Some(self.key_lock.lock().await),
            None => None,
        };
        if let Some(k) = &spec.key {
            if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                return Ok(Some((existing, false)));
            }
        }
        loop {
            let next = self
                .pools
                .ready()
                .get_mut(&image)
                .and_then(|q| q.pop_front());
            let Some(id) = next else {
                self.pools.refill.notify_one();
                return Ok(None);
            };
            self.pools.refill.notify_one();
            if !self.live.read().await.contains_key(&id) {
                continue;
            }
            let now = Utc::now();
            let handed = self.store.tx_events(
                |tx| {
                    let mut sb = Store::sandbox_in(tx, id)?;
                    if sb.owner != POOL_OWNER || sb.state != State::Running {
                        return Err(Error::Conflict(format!("pooled sandbox {id} is gone")));
                    }
                    sb.owner = p.id.clone();
                    sb.key = spec.key.clone();
                    sb.labels = spec.labels.clone();
                    sb.config.ttl_secs = config.ttl_secs;
                    sb.config.idle_timeout_secs = config.idle_timeout_secs;
                    sb.expires_at = config.ttl_secs.map(|t| super::expiry(now, t));
                    sb.created_at = now;
                    sb.updated_at = now;
                    sb.last_active_at = now;
                    Store::put_sandbox(tx, &sb)?;
                    let created = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        "sandbox.created",
                        json!({"state": "creating", "isolation": sb.config.isolation, "warm": true}),
                    )?;
                    let started = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        "sandbox.started",
                        json!({"state": "running", "warm": true}),
                    )?;
                    Ok((sb, vec![created, started]))
                },
                |evs| evs.into_iter().for_each(|e| self.bus.publish(e)),
            );
            match handed {
                Ok(sb) => {
                    if let Some(l) = self.live.read().await.get(&id) {
                        l.last_active_ms
                            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::debug!(sandbox = %id, "handed out from the warm pool");
                    return Ok(Some((sb, true)));
                }
                Err(Error::Conflict(_)) => continue,
                Err(e) => {
                    // Still the pool's: keep it, first in line.
                    self.pools.ready().entry(image).or_default().push_front(id);
                    return Err(e);
                }
            }
        }
    }

    /// Adopts the pooled sandboxes that survived a restart (destroying
    /// those no pool wants any more), then keeps every pool full.
    pub fn spawn_pools(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.cfg.warm_pools.is_empty() {
            return None;
        }
        let engine = self.clone();
        Some(tokio::spawn(async move {
            engine.adopt_pooled().await;
            loop {
                let notified = engine.pools.refill.notified();
                match engine.refill_once().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!("warm pool: {e}"),
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }))
    }

    async fn adopt_pooled(&self) {
        let pooled = self
            .list_all(&pool_principal(), &ListQuery::default())
            .unwrap_or_default();
        for sb in pooled {
            let image = sb.config.image.clone();
            let live = self.live.read().await.contains_key(&sb.id);
            let room = self
                .pool_size(&image)
                .is_some_and(|n| self.pools.count(&image) < n);
            if sb.state == State::Running && live && room {
                self.pools.push(image, sb.id);
            } else if let Err(e) = self.destroy_inner(sb, "warm pool").await {
                tracing::warn!("warm pool: {e}");
            }
        }
    }

    /// Boots one sandbox for the emptiest pool short of its size; false
    /// when every pool is full (or the host is short of memory).
    async fn refill_once(self: &Arc<Self>) -> Result<bool> {
        let short = self
            .cfg
            .warm_pools
            .iter()
            .map(|p| (p, self.pools.count(&p.image)))
            .filter(|(p, have)| *have < p.size)
            .min_by_key(|(_, have)| *have)
            .map(|(p, _)| p.image.clone());
        let Some(image) = short else {
            return Ok(false);
        };
        let available_mb =
            crate::host::meminfo_kib(&["MemAvailable"]).map_or(u64::MAX, |m| m[0] / 1024);
        if available_mb < self.cfg.warm_pool_min_free_mb {
            tracing::debug!("warm pool: the host is short of memory; not refilling");
            return Ok(false);
        }
        let spec = SandboxSpec {
            image: image.clone(),
            ..Default::default()
        };
        let (sb, _) = self.create_inner(&pool_principal(), spec, false).await?;
        self.pools.push(image, sb.id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::pool_image;
    use crate::model::SandboxSpec;

    #[test]
    fn only_plain_specs_come_from_a_pool() {
        let plain = SandboxSpec {
            key: Some("k".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            ttl_secs: Some(60),
            idle_timeout_secs: Some(30),
            ..Default::default()
        };
        assert_eq!(pool_image(&plain), Some(None));
        let img = SandboxSpec {
            image: Some(" alpine:3 ".into()),
            ..Default::default()
        };
        assert_eq!(pool_image(&img), Some(Some("alpine:3".into())));
        for other in [
            SandboxSpec {
                memory_mb: Some(128),
                ..Default::default()
            },
            SandboxSpec {
                command: Some(vec!["sleep".into()]),
                ..Default::default()
            },
            SandboxSpec {
                env: [("A".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            SandboxSpec {
                template: Some("t".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(pool_image(&other), None, "{other:?}");
        }
    }
}
